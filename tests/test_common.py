"""Common checks of the six public estimators, adapted to images.

scikit-learn's common checks (:mod:`sklearn.utils.estimator_checks`) feed
estimators 2-D arrays ``(n_samples, n_features)``. No public skpatch estimator
takes 2-D input: :class:`SoftPatchClassifier`, :class:`SoftPatchSegmenter` and
:class:`PatchFeaturizer` take image collections ``(n_images, H, W, C)`` (a
2-D array is refused as "tabular data"), and :class:`NoiseDiscriminator` and
:class:`WeightedCoreset` take patch features ``(n_images, n_patches,
n_features)`` (its position structure is what they model). All five are
therefore tagged ``two_d_array=False, three_d_array=True``, and for such
estimators scikit-learn (1.9.1 here) yields one check only,
``check_estimator_cloneable``, and skips every other one with a
``SkipTestWarning``.

So, as nilearn does for its images, this module

1. runs :func:`~sklearn.utils.estimator_checks.parametrize_with_checks` on
   the five estimators (that is, ``check_estimator_cloneable``), and asserts
   that this is all scikit-learn runs, so that a scikit-learn release that
   runs more checks on such tags is noticed here;
2. calls directly the checks of scikit-learn's list that need no data
   (``SKLEARN_CHECKS_WITHOUT_DATA``): parameters, tags, repr, init;
3. lists every other check that scikit-learn would run on a 2-D estimator
   of the same kind, with the reason it cannot run and the image check
   below that replaces it where one does (``SKLEARN_CHECKS_NOT_RUN``); a
   test asserts that the list is complete;
4. writes image equivalents of the checks that matter, parametrized over
   the five estimators, each fed the input it takes.

No check is expected to fail: ``EXPECTED_FAILED_CHECKS`` is empty.

The estimators are fitted a few times each (module-scoped fixtures), on 8
tiny 32 px images or 8 x 16 patch features of 24 dimensions.
"""

import functools
import pickle
import re
import warnings
from dataclasses import dataclass, field
from typing import Callable

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone, is_outlier_detector
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

import skpatch
from skpatch import (
    BaggedCoreset,
    NoiseDiscriminator,
    PatchFeaturizer,
    SoftPatchClassifier,
    SoftPatchSegmenter,
    WeightedCoreset,
)
from skpatch.datasets import make_defects

N_TRAIN = 8
IMAGE_SIZE = 32
N_PATCHES, N_DIMS = 16, 24

# Scores of one image computed alone and within a batch may differ in the
# last bits: the CPU convolution picks its algorithm by batch size, which
# rounds differently (2e-6 of the score range seen). Everything else is
# compared bit for bit.
BATCH_RTOL = 1e-5


def _small_pipeline(cls):
    est = cls(random_state=0, device="cpu")
    return est.set_params(
        featurizer__image_size=IMAGE_SIZE, featurizer__embed_dim=16, denoise__n_neighbors=3
    )


def _images():
    X, _, _ = make_defects(16, image_size=IMAGE_SIZE, kind="object", defect_ratio=0.25, random_state=0)
    return X[:N_TRAIN], X[N_TRAIN : N_TRAIN + 6]


def _features():
    rng = np.random.default_rng(0)
    # float16-representable values: the same content in float16, 32 and 64.
    train = rng.normal(size=(N_TRAIN, N_PATCHES, N_DIMS)).astype(np.float16).astype(np.float32)
    test = rng.normal(size=(5, N_PATCHES, N_DIMS)).astype(np.float16).astype(np.float32)
    train[2, 5] += 6.0  # an outlying training patch, so the removal has something to find
    return train, test


@dataclass
class Case:
    """One public estimator, its data and how to read its results."""

    name: str
    make: Callable
    data: Callable
    # Results at prediction time: scores, maps or features of test data.
    output: Callable
    # Fitted arrays that a refit must reproduce.
    state: Callable
    methods: tuple
    takes_images: bool
    _cache: dict = field(default_factory=dict, repr=False)

    def cached(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    @property
    def train(self):
        return self.cached("data", self.data)[0]

    @property
    def test(self):
        return self.cached("data", self.data)[1]

    @property
    def fitted(self):
        return self.cached("fitted", lambda: self.make().fit(self.train))


CASES = [
    Case(
        "SoftPatchClassifier",
        functools.partial(_small_pipeline, SoftPatchClassifier),
        _images,
        lambda est, X: est.score_samples(X),
        lambda est: {"train_scores_": est.train_scores_, "offset_": est.offset_},
        ("score_samples", "decision_function", "predict", "anomaly_maps"),
        True,
    ),
    Case(
        "SoftPatchSegmenter",
        functools.partial(_small_pipeline, SoftPatchSegmenter),
        _images,
        lambda est, X: est.score_samples(X),
        lambda est: {
            "offset_": est.offset_,
            "bank": np.concatenate([m.memory_bank_ for m in est.named_steps["coreset"].estimators_]),
        },
        ("score_samples", "decision_function", "predict", "anomaly_maps"),
        True,
    ),
    Case(
        "PatchFeaturizer",
        lambda: PatchFeaturizer(image_size=IMAGE_SIZE, embed_dim=16, device="cpu"),
        _images,
        lambda est, X: est.transform(X),
        lambda est: {"feature_shape_": est.feature_shape_, "mean_": est.mean_, "std_": est.std_},
        ("transform",),
        True,
    ),
    Case(
        "NoiseDiscriminator",
        # n_components < N_DIMS: the seeded projection is in play.
        lambda: NoiseDiscriminator(threshold=0.1, n_neighbors=3, n_components=8, random_state=0),
        _features,
        lambda est, X: est.transform(X),
        lambda est: {"scores_": est.scores_, "weights_": est.weights_, "kept_": est.kept_},
        ("transform",),
        False,
    ),
    Case(
        "WeightedCoreset",
        lambda: WeightedCoreset(sampling_ratio=0.25, projection_dim=8, random_state=0, device="cpu"),
        _features,
        lambda est, X: est.score_samples(X),
        lambda est: {"memory_bank_": est.memory_bank_, "sample_indices_": est.sample_indices_},
        ("score_samples", "kneighbors"),
        False,
    ),
    Case(
        "BaggedCoreset",
        lambda: BaggedCoreset(4, max_samples=0.25, sampling_ratio=0.25, projection_dim=8, random_state=0, device="cpu"),
        _features,
        lambda est, X: est.score_samples(X),
        lambda est: {
            "banks": np.concatenate([m.memory_bank_ for m in est.estimators_]),
            "samples": np.concatenate(est.estimators_samples_),
        },
        ("score_samples",),
        False,
    ),
]
ESTIMATOR_CASES = [c for c in CASES if c.name.startswith("SoftPatch")]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def case(request):
    return request.param


@pytest.fixture(scope="module", params=ESTIMATOR_CASES, ids=lambda c: c.name)
def estimator_case(request):
    return request.param


def _params_hash(est):
    return joblib.hash(est.get_params(deep=True))


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


def _assert_batch_close(alone, in_batch):
    scale = float(np.abs(in_batch).max()) or 1.0
    np.testing.assert_allclose(alone, in_batch, rtol=0, atol=BATCH_RTOL * scale)


# ---------------------------------------------------------------------------
# scikit-learn's own checks
# ---------------------------------------------------------------------------

# Keyed by estimator class name: check name -> reason. None is expected to fail.
EXPECTED_FAILED_CHECKS = {c.name: {} for c in CASES}

# Checks of scikit-learn's API list that take no data; called directly below.
SKLEARN_CHECKS_WITHOUT_DATA = [
    "check_estimator_tags_renamed",
    "check_valid_tag_types",
    "check_estimator_repr",
    "check_no_attributes_set_in_init",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_mixin_order",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
]

_TWO_D = "feeds 2-D (n_samples, n_features) arrays, which no skpatch estimator takes"
# Every other check scikit-learn 1.9 would run on a 2-D estimator of the same
# kind (by name; a check run in several variants is listed once): why it
# cannot run here, and what replaces it.
SKLEARN_CHECKS_NOT_RUN = {
    "check_fit_score_takes_y": f"{_TWO_D}; every fit and fit_predict takes y=None",
    "check_estimators_overwrite_params": f"{_TWO_D}; see test_fit_does_not_change_params",
    "check_dont_overwrite_parameters": f"{_TWO_D}; see test_fit_does_not_change_params",
    "check_estimators_fit_returns_self": f"{_TWO_D}; the fixtures use est.fit(X) as the fitted estimator",
    "check_readonly_memmap_input": f"{_TWO_D}; see test_read_only_and_memmap_inputs",
    "check_estimators_unfitted": f"{_TWO_D}; see test_not_fitted_comes_before_input_validation",
    "check_n_features_in_after_fitting": f"{_TWO_D}; see test_input_size_contract",
    "check_positive_only_tag_during_fit": f"{_TWO_D}; no estimator has the positive_only tag",
    "check_estimators_dtypes": f"{_TWO_D}; see test_dtype_invariance",
    "check_complex_data": f"{_TWO_D}; complex images are refused (tests/test_bad_inputs.py)",
    "check_dtype_object": f"{_TWO_D}; object arrays are refused (tests/test_bad_inputs.py)",
    "check_estimators_empty_data_messages": f"{_TWO_D}; empty inputs are refused (tests/test_bad_inputs.py)",
    "check_pipeline_consistency": f"{_TWO_D}; see test_same_random_state_same_results",
    "check_estimators_nan_inf": f"{_TWO_D}; NaN and inf are refused (tests/test_bad_inputs.py)",
    "check_estimator_sparse_tag": "sparse matrices are 2-D; no estimator takes them",
    "check_estimator_sparse_array": "sparse matrices are 2-D; no estimator takes them",
    "check_estimator_sparse_matrix": "sparse matrices are 2-D; no estimator takes them",
    "check_estimators_pickle": f"{_TWO_D}; see test_pickle_round_trip and test_model_file_round_trip",
    "check_array_api_input": "array-API namespaces are not among the accepted image collections",
    "check_f_contiguous_array_estimator": f"{_TWO_D}; see test_read_only_and_memmap_inputs (a strided view)",
    "check_outlier_contamination": f"{_TWO_D}; contamination is validated by _parameter_constraints",
    "check_outliers_fit_predict": (
        f"{_TWO_D}; fit_predict scores leave-one-image-out, so it is not fit(X).predict(X) "
        "on purpose (tests/test_estimators.py)"
    ),
    "check_outliers_train": f"{_TWO_D}; see test_classifier_outlier_api and test_segmenter_contract",
    "check_classifier_data_not_an_array": f"{_TWO_D}; lists of images are accepted (tests/test_images.py)",
    "check_non_transformer_estimators_n_iter": "no iterative solver (no max_iter)",
    "check_methods_sample_order_invariance": f"{_TWO_D}; see test_batch_composition_and_order",
    "check_methods_subset_invariance": f"{_TWO_D}; see test_batch_composition_and_order",
    "check_fit2d_1sample": f"{_TWO_D}; a single image is tests/test_bad_inputs.py's business",
    "check_fit2d_1feature": _TWO_D,
    "check_dict_unchanged": f"{_TWO_D}; see test_predict_does_not_change_the_fitted_estimator",
    "check_fit_idempotent": f"{_TWO_D}; see test_fitting_twice_gives_the_same_result",
    "check_fit_check_is_fitted": f"{_TWO_D}; see test_clone_gives_an_unfitted_equal",
    "check_n_features_in": f"{_TWO_D}; see test_input_size_contract",
    "check_fit1d": f"{_TWO_D}; 1-D input is refused (tests/test_bad_inputs.py)",
    "check_fit2d_predict1d": f"{_TWO_D}; see test_input_size_contract",
    "check_transformer_data_not_an_array": f"{_TWO_D}; lists of images are accepted (tests/test_images.py)",
    "check_transformer_general": f"{_TWO_D}; see test_fitting_twice_gives_the_same_result",
    "check_transformers_unfitted": f"{_TWO_D}; see test_not_fitted_comes_before_input_validation",
    "check_transformer_n_iter": "no iterative solver (no max_iter)",
    "check_transformer_preserve_dtypes": f"{_TWO_D}; NoiseDiscriminator.transform returns X itself (test_dtype_invariance)",
}


def _instances():
    return [c.make() for c in CASES]


@parametrize_with_checks(_instances(), expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS[type(est).__name__])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def _check_name(check):
    check = getattr(check, "func", check)
    return getattr(check, "__name__", repr(check))


def _yielded_checks(est):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SkipTestWarning of 3-D estimators
        return [_check_name(check) for _, check in estimator_checks.estimator_checks_generator(est)]


@pytest.mark.parametrize("est", _instances(), ids=lambda e: type(e).__name__)
def test_sklearn_runs_only_the_cloneable_check(est):
    tags = get_tags(est)
    assert not tags.input_tags.two_d_array and tags.input_tags.three_d_array
    # If a scikit-learn release runs more checks on 3-D estimators, the lists
    # in this module need a look.
    assert _yielded_checks(est) == ["check_estimator_cloneable"]


@pytest.mark.parametrize("est", _instances(), ids=lambda e: type(e).__name__)
def test_every_sklearn_check_is_run_or_listed_with_a_reason(est, monkeypatch):
    """Every check scikit-learn would run on a 2-D estimator of this kind is
    run here or listed in SKLEARN_CHECKS_NOT_RUN with a reason."""
    real_get_tags = estimator_checks.get_tags

    def as_if_2d(estimator):
        tags = real_get_tags(estimator)
        tags.input_tags.two_d_array = True
        return tags

    monkeypatch.setattr(estimator_checks, "get_tags", as_if_2d)
    would_run = set(_yielded_checks(est)) - {"check_estimator_cloneable"}
    unlisted = would_run - set(SKLEARN_CHECKS_WITHOUT_DATA) - set(SKLEARN_CHECKS_NOT_RUN)
    assert not unlisted, f"checks neither run nor listed with a reason: {sorted(unlisted)}"
    assert all(SKLEARN_CHECKS_NOT_RUN[name] for name in would_run & set(SKLEARN_CHECKS_NOT_RUN))


@pytest.mark.parametrize("check_name", SKLEARN_CHECKS_WITHOUT_DATA)
@pytest.mark.parametrize("est", _instances(), ids=lambda e: type(e).__name__)
def test_sklearn_checks_without_data(est, check_name):
    check = getattr(estimator_checks, check_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        check(type(est).__name__, est)


# ---------------------------------------------------------------------------
# Image equivalents
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def refits(case):
    """A second instance fitted twice, with its parameters before and after."""

    def compute():
        est = case.make()
        before = _params_hash(est)
        est.fit(case.train)
        after = _params_hash(est)
        first = (case.state(est), case.output(est, case.test))
        est.fit(case.train)
        second = (case.state(est), case.output(est, case.test))
        return {"before": before, "after": after, "first": first, "second": second}

    return case.cached("refits", compute)


def test_fit_does_not_change_params(case, refits):
    assert refits["before"] == refits["after"]
    # A fitted estimator's (deep) parameters are still those of a fresh one.
    assert _params_hash(case.fitted) == _params_hash(case.make())


def test_fitting_twice_gives_the_same_result(refits):
    (state_a, out_a), (state_b, out_b) = refits["first"], refits["second"]
    _assert_same_state(state_a, state_b)
    np.testing.assert_array_equal(out_a, out_b)


def test_same_random_state_same_results(case, refits):
    state, output = refits["first"]  # another instance, built the same way
    _assert_same_state(case.state(case.fitted), state)
    np.testing.assert_array_equal(case.output(case.fitted, case.test), output)


def test_clone_gives_an_unfitted_equal(case):
    fitted = case.fitted
    cloned = clone(fitted)
    assert _params_hash(cloned) == _params_hash(fitted)
    with pytest.raises(NotFittedError):
        check_is_fitted(cloned)
    # Step parameters are cloned too, not shared with the fitted estimator.
    for name, value in fitted.get_params(deep=False).items():
        if hasattr(value, "get_params"):
            assert cloned.get_params(deep=False)[name] is not value
    fitted_attributes = [k for k in vars(cloned) if k.endswith("_") and not k.startswith("_")]
    assert not fitted_attributes


def test_predict_does_not_change_the_fitted_estimator(case):
    fitted = case.fitted
    before = joblib.hash(case.state(fitted)), sorted(vars(fitted))
    for method in case.methods:
        getattr(fitted, method)(case.test if method != "kneighbors" else case.test[0])
    assert (joblib.hash(case.state(fitted)), sorted(vars(fitted))) == before


NOT_IMAGES = [np.zeros((5, 10)), ["not an image"], "text"]


def test_not_fitted_comes_before_input_validation(case):
    est = case.make()
    for method in case.methods:
        for bad in NOT_IMAGES:
            with pytest.raises(NotFittedError):
                getattr(est, method)(bad)


def test_input_size_contract(case):
    fitted = case.fitted
    if not case.takes_images:
        assert fitted.n_features_in_ == N_DIMS
        shorter = np.ascontiguousarray(case.test[:, :, : N_DIMS - 4])
        method = getattr(fitted, case.methods[0])
        with pytest.raises(ValueError, match=f"20 features per patch, but {case.name} was fitted with {N_DIMS}"):
            method(shorter)
        return
    # Images of another size are resized to the featurizer's image_size
    # (PatchFeaturizer.transform): the training size is no constraint.
    other = np.repeat(np.repeat(case.test[:2], 2, axis=1), 3, axis=2)[:, :40, :56]
    out = case.output(fitted, other)
    expected = {
        "SoftPatchClassifier": (2,),
        "SoftPatchSegmenter": (2, 40, 56),  # maps at the input's resolution
        "PatchFeaturizer": (2, 4, 4, 16),  # on its 4 x 4 patch grid
    }[case.name]
    assert out.shape == expected and np.isfinite(out).all()
    # But the images of one collection must share one size.
    with pytest.raises(ValueError, match="same size"):
        case.output(fitted, [case.test[0], other[0]])
    with pytest.raises(ValueError, match="channels"):
        case.output(fitted, case.test[..., :2])


def test_batch_composition_and_order(case):
    fitted, X = case.fitted, case.test
    batch = case.output(fitted, X)
    for i in (0, len(X) - 1):
        _assert_batch_close(case.output(fitted, X[i : i + 1])[0], batch[i])
    _assert_batch_close(case.output(fitted, X[1:4]), batch[1:4])
    order = np.random.default_rng(0).permutation(len(X))
    _assert_batch_close(case.output(fitted, X[order]), batch[order])
    if case.name == "NoiseDiscriminator":
        # Its results are those of fit, per position over the training images:
        # permuting them permutes every patch score (distances are summed in
        # another order, hence the tolerance), weight and keep flag.
        order = np.random.default_rng(1).permutation(N_TRAIN)
        permuted = case.make().fit(case.train[order])
        state = case.state(fitted)
        _assert_batch_close(permuted.scores_, state["scores_"][order])
        _assert_batch_close(permuted.weights_, state["weights_"][order])
        np.testing.assert_array_equal(permuted.kept_, state["kept_"][order])
        assert not state["kept_"][2, 5]  # the planted outlier is found


def test_dtype_invariance(case):
    fitted, X = case.fitted, case.test
    reference = case.output(fitted, X)
    if case.takes_images:
        # uint8 is divided by 255 in float32; X / 255 in float64 is rounded
        # to float32 afterwards: the same images up to float32 rounding.
        variants = {"float32": (X / 255).astype(np.float32), "float64": X / 255.0}
        for dtype, images in variants.items():
            np.testing.assert_allclose(
                case.output(fitted, images), reference, rtol=0,
                atol=1e-6 * float(np.abs(reference).max()), err_msg=dtype,
            )
    else:
        # The features hold float16 values: the same content in every dtype,
        # all computed in float32, hence bit-identical.
        for dtype in (np.float16, np.float64):
            out = case.output(fitted, X.astype(dtype))
            np.testing.assert_array_equal(out, reference, err_msg=str(dtype))
        refit = case.make().fit(case.train.astype(np.float64))
        _assert_same_state(case.state(refit), case.state(fitted))


def test_read_only_and_memmap_inputs(case, tmp_path, monkeypatch):
    train_path, test_path = tmp_path / "train.npy", tmp_path / "test.npy"
    np.save(train_path, case.train)
    np.save(test_path, case.test)
    train = np.load(train_path, mmap_mode="r")
    test = np.load(test_path, mmap_mode="r")
    assert isinstance(train, np.memmap) and not train.flags.writeable
    read_only = np.array(case.test)
    read_only.flags.writeable = False
    # torch.from_numpy on a read-only array warns that writing to it is
    # undefined (once per process, so the warning cannot be caught reliably):
    # check the arrays it is given instead.
    from_numpy = torch.from_numpy

    def writable_only(array):
        assert array.flags.writeable, "torch.from_numpy on a read-only array"
        return from_numpy(array)

    monkeypatch.setattr(torch, "from_numpy", writable_only)
    est = case.make().fit(train)
    on_memmap = case.output(est, test)
    on_read_only = case.output(est, read_only)
    monkeypatch.undo()
    _assert_same_state(case.state(est), case.state(case.fitted))
    reference = case.output(case.fitted, case.test)
    np.testing.assert_array_equal(on_memmap, reference)
    np.testing.assert_array_equal(on_read_only, reference)
    np.testing.assert_array_equal(np.load(train_path), case.train)  # the file is untouched


def test_pickle_round_trip(case):
    restored = pickle.loads(pickle.dumps(case.fitted))
    _assert_same_state(case.state(restored), case.state(case.fitted))
    np.testing.assert_array_equal(case.output(restored, case.test), case.output(case.fitted, case.test))


def test_model_file_round_trip(estimator_case, tmp_path):
    fitted, X = estimator_case.fitted, estimator_case.test
    fitted.save(tmp_path / "model.skpatch")
    loaded = skpatch.load(tmp_path / "model.skpatch")
    assert type(loaded) is type(fitted)
    assert _params_hash(loaded) == _params_hash(fitted)
    _assert_same_state(estimator_case.state(loaded), estimator_case.state(fitted))
    for method in ("score_samples", "decision_function", "predict"):
        np.testing.assert_array_equal(getattr(loaded, method)(X), getattr(fitted, method)(X), err_msg=method)


def test_classifier_outlier_api():
    (case,) = [c for c in CASES if c.name == "SoftPatchClassifier"]
    clf, X = case.fitted, case.test
    assert is_outlier_detector(clf)
    scores = clf.score_samples(X)
    assert scores.shape == (len(X),) and np.all(scores <= 0)  # negated distances
    decision = clf.decision_function(X)
    np.testing.assert_array_equal(decision, scores - clf.offset_)
    labels = clf.predict(X)
    assert labels.dtype.kind == "i" and set(np.unique(labels)) <= {-1, 1}
    np.testing.assert_array_equal(labels == -1, decision < 0)
    # offset_ is the threshold on the training scores (higher = more normal).
    assert np.all(clf.train_scores_ <= 0) and np.isfinite(clf.offset_)


def test_segmenter_contract():
    """What SoftPatchSegmenter's docstrings and tags say."""
    (case,) = [c for c in CASES if c.name == "SoftPatchSegmenter"]
    seg, X = case.fitted, case.test
    tags = get_tags(seg)
    assert tags.input_tags.three_d_array and not tags.input_tags.two_d_array
    assert not tags.non_deterministic
    maps = seg.score_samples(X)
    assert maps.shape == X.shape[:3] and maps.dtype == np.float32
    np.testing.assert_array_equal(seg.anomaly_maps(X), -maps)
    decision = seg.decision_function(X)
    np.testing.assert_array_equal(decision, maps - seg.offset_)
    # predict returns masks like ground-truth masks (True = defect), as its
    # docstring says, not the -1 / +1 labels of scikit-learn's outlier
    # detectors, so it is not tagged as one.
    assert tags.estimator_type is None and not is_outlier_detector(seg)
    masks = seg.predict(X)
    assert masks.dtype == bool and masks.shape == X.shape[:3]
    np.testing.assert_array_equal(masks, decision < 0)


def test_check_names_are_sklearn_checks():
    """The lists above name checks that exist (a typo would hide a check)."""
    for name in [*SKLEARN_CHECKS_WITHOUT_DATA, *SKLEARN_CHECKS_NOT_RUN]:
        assert hasattr(estimator_checks, re.sub(r"\(.*\)$", "", name)), name
