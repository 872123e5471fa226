"""API contracts shared by SoftPatchClassifier and SoftPatchSegmenter."""

import pickle

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import FunctionTransformer

from skpatch import (
    BaggedCoreset,
    NoiseDiscriminator,
    PatchFeaturizer,
    SoftPatchClassifier,
    SoftPatchSegmenter,
    WeightedCoreset,
)
from skpatch.metrics import image_auroc_scorer

ESTIMATORS = [SoftPatchClassifier, SoftPatchSegmenter]


def _small(cls, **params):
    est = cls(random_state=0, **params).set_params(featurizer__image_size=64, featurizer__embed_dim=64)
    return est if params.get("denoise") == "passthrough" else est.set_params(denoise__n_neighbors=4)


@pytest.fixture(scope="module")
def data():
    from skpatch.datasets import make_defects

    X, y, masks = make_defects(36, image_size=64, kind="object", defect_ratio=1 / 3, random_state=0)
    return X[y == 0][:16], X, y, masks


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_nested_params_on_default_steps(cls):
    est = cls()
    params = est.get_params()
    assert "denoise__threshold" in params and "memory__sampling_ratio" in params
    assert "featurizer__backbone" in params
    est.set_params(denoise__threshold=0.3, memory__sampling_ratio=0.05)
    assert isinstance(est.denoise, NoiseDiscriminator) and est.denoise.threshold == 0.3
    # The classifier's default memory is one bank, the segmenter's a bagged one.
    memory = WeightedCoreset if cls is SoftPatchClassifier else BaggedCoreset
    assert type(est.memory) is memory and est.memory.sampling_ratio == 0.05
    assert cls().denoise is None  # no shared default object was mutated
    cloned = clone(est)
    assert cloned.denoise is not est.denoise and cloned.get_params()["denoise__threshold"] == 0.3


def test_default_discriminators_differ_by_task():
    clf, seg = SoftPatchClassifier().get_params(), SoftPatchSegmenter().get_params()
    keys = ("denoise__threshold", "denoise__n_neighbors", "denoise__max_shift", "denoise__dilation")
    assert tuple(clf[k] for k in keys) == (0.15, 6, 0, 1)
    assert tuple(seg[k] for k in keys) == (0.15, "auto", 2, 1)
    assert NoiseDiscriminator().dilation == 0  # the papers' removal, outside the estimators


def test_segmenter_aligns_shifted_training_images():
    """The estimator passes its patch grid on: the shifts are those of the grid."""
    from skpatch.datasets import make_defect_dataset

    boards = make_defect_dataset(10, 2, image_size=64, kind="board", variation=3.0, random_state=0)
    seg = SoftPatchSegmenter(random_state=0).set_params(
        featurizer__image_size=64, featurizer__embed_dim=32
    ).fit(boards.train_images)
    denoise = seg.named_steps["denoise"]
    assert denoise.shifts_.shape == (10, 2) and (denoise.shifts_ != 0).any()
    assert np.abs(denoise.shifts_).max() <= 2


def test_invalid_params_raise():
    with pytest.raises(ValueError, match="contamination"):
        SoftPatchClassifier(contamination=0.9).fit(np.zeros((3, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="Invalid parameter"):
        SoftPatchClassifier().set_params(denoise__lof_k=3)
    with pytest.raises(ValueError, match="passthrough"):
        SoftPatchClassifier(denoise="passthrough").set_params(denoise__threshold=0.1)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_pickle_round_trip_gives_identical_scores(cls, data):
    train, X, _, _ = data
    est = _small(cls).fit(train)
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(est.score_samples(X[:6]), restored.score_samples(X[:6]))
    np.testing.assert_array_equal(est.predict(X[:6]), restored.predict(X[:6]))


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_deterministic_given_random_state(cls, data):
    train, X, _, _ = data
    a = _small(cls).fit(train).score_samples(X[:4])
    b = _small(cls).fit(train).score_samples(X[:4])
    np.testing.assert_array_equal(a, b)


def test_classifier_api_and_signs(data):
    train, X, y, _ = data
    clf = _small(SoftPatchClassifier).fit(train)
    scores = clf.score_samples(X)
    assert scores.shape == (len(X),)
    assert np.all(scores <= 0)  # negated distances
    np.testing.assert_allclose(clf.decision_function(X), scores - clf.offset_)
    labels = clf.predict(X)
    assert set(np.unique(labels)) <= {-1, 1}
    np.testing.assert_array_equal(labels == -1, clf.decision_function(X) < 0)
    # Defective images (y == 1) score lower, i.e. less normal.
    assert scores[y == 1].mean() < scores[y == 0].mean()
    assert image_auroc_scorer(clf, X, y) > 0.9
    assert clf.pipeline_.named_steps["coreset"] is clf.named_steps["coreset"]


def test_contamination_sets_fraction_flagged_in_training(data):
    train, _, _, _ = data
    clf = _small(SoftPatchClassifier, contamination=0.25)
    labels = clf.fit_predict(train)
    assert np.mean(labels == -1) == pytest.approx(0.25, abs=1 / len(train))
    np.testing.assert_array_equal(labels, np.where(clf.train_scores_ < clf.offset_, -1, 1))
    # In-sample scores let every training patch match itself: predict on the
    # training set flags (almost) nothing, which is why fit_predict differs.
    assert np.mean(clf.predict(train) == -1) < 0.1


def test_noisy_training_softpatch_beats_patchcore(data):
    """Defective images in training: PatchCore memorises them, SoftPatch does not."""
    train, X, y, _ = data
    noisy = np.concatenate([train, X[y == 1]])  # overlap setting
    soft = _small(SoftPatchClassifier, denoise=NoiseDiscriminator(threshold=0.15, n_neighbors=4)).fit(noisy)
    core = _small(SoftPatchClassifier, denoise="passthrough").fit(noisy)
    assert image_auroc_scorer(soft, X, y) > image_auroc_scorer(core, X, y) + 0.1


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_anomaly_maps_and_their_scores(cls, data):
    """anomaly_maps is public on both estimators (the command line reads maps
    and scores from one call): maps at the input's size, scores as
    score_samples reads them."""
    import torch
    import torch.nn.functional as F

    train, X, _, _ = data
    est = _small(cls).fit(train)
    big = np.repeat(np.repeat(X[:3], 2, axis=1), 2, axis=2)[:, :96, :112]
    maps, scores = est.anomaly_maps(big, return_scores=True)
    np.testing.assert_array_equal(est.anomaly_maps(big), maps)
    assert maps.shape == (3, 96, 112) and maps.dtype == np.float32
    if cls is SoftPatchSegmenter:
        np.testing.assert_array_equal(maps, -est.score_samples(big))
        np.testing.assert_array_equal(scores, maps.reshape(3, -1).max(axis=1))
    else:
        np.testing.assert_array_equal(scores, -est.score_samples(big))
        # The patch anomaly, bilinearly upsampled and not smoothed: its
        # largest value is at most the image score (image_score_k=1).
        assert (maps.reshape(3, -1).max(axis=1) <= scores).all()
        patch = -est.pipeline_[-1].score_samples(est.pipeline_[:-1].transform(big)).reshape(3, 8, 8)
        expected = F.interpolate(torch.from_numpy(patch)[:, None], size=(96, 112), mode="bilinear")[:, 0]
        np.testing.assert_allclose(maps, expected.numpy(), rtol=1e-6)


def test_passthrough_is_plain_patchcore(data):
    train, X, _, _ = data
    clf = _small(SoftPatchClassifier, denoise="passthrough").fit(train)
    features = clf.pipeline_[0].transform(X[:3])
    bank = WeightedCoreset(random_state=0).fit(clf.pipeline_[0].transform(train))
    np.testing.assert_array_equal(clf.named_steps["coreset"].memory_weights_, 1)
    np.testing.assert_allclose(clf.score_samples(X[:3]), bank.score_samples(features).min(axis=(1, 2)), rtol=1e-6)


def test_segmenter_maps_masks_and_sizes(data):
    train, X, y, masks = data
    seg = _small(SoftPatchSegmenter).fit(train)
    maps = seg.score_samples(X)
    assert maps.shape == X.shape[:3] and maps.dtype == np.float32
    np.testing.assert_array_equal(seg.anomaly_maps(X[:2]), -maps[:2])
    pred = seg.predict(X[:4])
    assert pred.dtype == bool and pred.shape == (4, 64, 64)
    # Defect pixels are more anomalous than the rest.
    assert (-maps)[masks].mean() > (-maps)[~masks].mean()
    # Maps come back at each input's resolution, whatever the training size.
    big = np.repeat(np.repeat(X[:2], 2, axis=1), 3, axis=2)
    assert seg.score_samples(big).shape == (2, 128, 192)


def test_grid_search_with_cache_pays_cnn_once(data, tmp_path, monkeypatch):
    train, X, y, _ = data
    from skpatch import PatchFeaturizer

    calls = {"n": 0}
    original = PatchFeaturizer.transform

    def counting(self, images):
        calls["n"] += 1
        return original(self, images)

    monkeypatch.setattr(PatchFeaturizer, "transform", counting)
    Xall = np.concatenate([train, X])
    yall = np.concatenate([np.zeros(len(train), int), y])
    split = [(np.arange(len(train)), np.arange(len(train), len(Xall)))]
    grid = GridSearchCV(
        _small(SoftPatchClassifier, cache=str(tmp_path)),
        {"denoise__method": ["lof", "gaussian"], "denoise__threshold": [0.05, 0.2]},
        scoring=image_auroc_scorer, cv=split, refit=False,
    ).fit(Xall, yall)
    assert len(grid.cv_results_["params"]) == 4
    # Uncached: 4 candidates x (train + test) = 8 transforms; cached: 2.
    assert calls["n"] == 2


def test_cache_computes_each_discriminator_score_once(data, tmp_path, monkeypatch):
    train, X, _, _ = data
    from skpatch import _outlier_scores
    from skpatch import _discriminator

    calls = []
    for name in ("lof_scores", "mahalanobis_scores"):
        original = getattr(_outlier_scores, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(_discriminator, name, counting)
    cached, plain = [], []
    for method in ("lof", "gaussian", "softpatch+"):
        for threshold in (0.05, 0.2):
            params = {"denoise__method": method, "denoise__threshold": threshold}
            est = _small(SoftPatchClassifier, cache=str(tmp_path)).set_params(**params).fit(train)
            cached.append(est.score_samples(X))
            before = len(calls)
            plain.append(_small(SoftPatchClassifier).set_params(**params).fit(train).score_samples(X))
            del calls[before:]  # count the cached fits only
    # One chunk of positions here: each score computed once for all six fits.
    assert sorted(calls) == ["lof_scores", "mahalanobis_scores"]
    for a, b in zip(cached, plain):
        np.testing.assert_array_equal(a, b)
    # With a projection, the seed is part of the key: seed 0 twice, then seed 1.
    for seed in (0, 0, 1):
        _small(SoftPatchClassifier, cache=str(tmp_path)).set_params(
            random_state=seed, denoise__n_components=16
        ).fit(train)
    assert calls.count("lof_scores") == 3


def test_cache_with_unseeded_projection_still_fits(data, tmp_path):
    train, X, _, _ = data
    est = SoftPatchClassifier(cache=str(tmp_path)).set_params(
        featurizer__image_size=64, featurizer__embed_dim=64, denoise__n_neighbors=4,
        denoise__n_components=16, memory__random_state=0,
    )
    assert est.fit(train).score_samples(X).shape == (len(X),)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_bad_images_raise_clear_errors(cls, data):
    train, _, _, _ = data
    with pytest.raises(ValueError, match="Tabular"):
        _small(cls).fit(np.zeros((5, 10)))
    with pytest.raises(ValueError, match="NaN"):
        _small(cls).fit(np.full((3, 32, 32, 3), np.nan, np.float32))
    est = _small(cls).fit(train[:4])
    with pytest.raises(ValueError, match="same size"):
        est.score_samples([train[0], train[0][:32]])


def test_not_fitted():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        SoftPatchClassifier().score_samples(np.zeros((1, 32, 32, 3), np.uint8))


def test_fit_predict_finds_defective_training_images(data):
    """Leave-one-image-out training scores rank the batch's defective images."""
    from skpatch.metrics import image_auroc

    train, X, y, _ = data
    batch = np.concatenate([train, X[y == 1][:4]])
    truth = np.r_[np.zeros(len(train), int), np.ones(4, int)]
    clf = _small(SoftPatchClassifier, denoise="passthrough")
    labels = clf.fit_predict(batch)
    assert labels.shape == (len(batch),) and set(np.unique(labels)) <= {-1, 1}
    honest = image_auroc(truth, -clf.train_scores_)
    in_sample = image_auroc(truth, -clf.score_samples(batch))
    # In-sample, each defect matches itself (PatchCore in its own bank);
    # leave-one-image-out it does not.
    assert honest > 0.9 and honest > in_sample + 0.05


@pytest.mark.parametrize("memory", [WeightedCoreset, BaggedCoreset])
def test_segmenter_fit_predict_masks_training_defects(data, memory):
    train, X, y, masks = data
    batch = np.concatenate([train, X[y == 1][:3]])
    seg = _small(SoftPatchSegmenter, denoise="passthrough", memory=memory())
    predicted = seg.fit_predict(batch)
    assert predicted.shape == batch.shape[:3] and predicted.dtype == bool
    defect = masks[y == 1][:3]
    honest = predicted[len(train):]
    in_sample = seg.predict(batch[len(train):])
    # Held out, most defect pixels are found, far more often than other pixels.
    assert honest[defect].mean() > 0.8
    assert honest[defect].mean() > 2 * honest[~defect].mean()
    if memory is WeightedCoreset:
        # In-sample, one bank lets the defects match themselves; the bagged
        # median ignores the members that hold them, in-sample too.
        assert honest[defect].mean() > in_sample[defect].mean() + 0.1


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_unusable_cache_folder_is_a_clear_error(cls, data, tmp_path):
    train, _, _, _ = data
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="cache="):
        _small(cls, cache=str(a_file)).fit(train[:4])
    with pytest.raises(ValueError, match="cache="):
        _small(cls, cache=str(a_file / "below")).fit(train[:4])


@pytest.mark.parametrize("cls", ESTIMATORS)
@pytest.mark.parametrize("method", ["score_samples", "decision_function", "predict"])
def test_not_fitted_comes_before_input_validation(cls, method):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        getattr(cls(), method)(np.zeros((5, 10)))


@pytest.mark.parametrize("k", [1, 3, 10**6])
def test_image_score_is_mean_of_k_largest_patch_scores(k, data):
    train, X, _, _ = data
    clf = _small(SoftPatchClassifier, denoise="passthrough", image_score_k=k).fit(train)
    features = clf.pipeline_[0].transform(X[:3])
    patch_anomaly = -WeightedCoreset(random_state=0).fit(clf.pipeline_[0].transform(train)).score_samples(features)
    patch_anomaly = patch_anomaly.reshape(len(patch_anomaly), -1)
    top = np.sort(patch_anomaly, axis=1)[:, -min(k, patch_anomaly.shape[1]):]
    np.testing.assert_allclose(clf.score_samples(X[:3]), -top.mean(axis=1), rtol=1e-5)


@pytest.mark.parametrize("memory", [WeightedCoreset(), WeightedCoreset(search="brute"), BaggedCoreset()])
def test_image_scores_are_the_maxima_of_the_patch_maps(memory, data, monkeypatch):
    """With image_score_k=1 the classifier asks a memory step that has
    min_score_samples for the maxima (the pruned search), and gets the
    maxima of the maps it would otherwise have computed."""
    train, X, _, _ = data
    clf = _small(SoftPatchClassifier, memory=memory).fit(train)
    maps, expected = clf.anomaly_maps(X[:6], return_scores=True)
    calls = []
    step = clf.pipeline_[-1]
    if hasattr(step, "min_score_samples"):
        original = step.min_score_samples
        monkeypatch.setattr(step, "min_score_samples", lambda F: calls.append(len(F)) or original(F))
    np.testing.assert_allclose(clf.score_samples(X[:6]), -expected, rtol=1e-6)
    assert calls == ([6] if hasattr(step, "min_score_samples") else [])


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_large_collections_are_scored_in_blocks_with_the_same_results(cls, data, monkeypatch, tmp_path):
    from sklearn import config_context

    from skpatch import PatchFeaturizer

    train, X, _, _ = data
    X = X[:35]  # a last, partial block
    est = _small(cls).set_params(featurizer__batch_size=4).fit(train)
    expected = est.score_samples(X) if cls is SoftPatchClassifier else est.anomaly_maps(X)
    patch_maps = est._patch_anomaly(X)
    calls = []
    transform = PatchFeaturizer.transform
    monkeypatch.setattr(PatchFeaturizer, "transform", lambda self, X: calls.append(len(X)) or transform(self, X))
    # 8x8 patches of 64 float32 dims = 16 KiB per image: 0.1 MiB holds 6, rounded to one batch of 4.
    with config_context(working_memory=0.1):
        blocked = est.score_samples(X) if cls is SoftPatchClassifier else est.anomaly_maps(X)
        assert calls == [4] * 8 + [3]
        np.testing.assert_array_equal(blocked, expected)
        # A plain list, as the command line passes it to the patch maps.
        np.testing.assert_array_equal(est._patch_anomaly(list(X)), patch_maps)
    # With a feature cache the whole collection is one cached call, as before.
    calls.clear()
    est.set_params(cache=str(tmp_path))
    with config_context(working_memory=0.1):
        est.score_samples(X)
    assert calls == [len(X)]


def test_blocked_scoring_names_bad_files_by_their_position(data, tmp_path):
    from PIL import Image
    from sklearn import config_context

    train, X, _, _ = data
    est = _small(SoftPatchClassifier).set_params(featurizer__batch_size=4).fit(train)
    paths = []
    for i, image in enumerate(X[:12]):
        paths.append(str(tmp_path / f"{i:02d}.png"))
        Image.fromarray(image).save(paths[-1])
    with open(paths[9], "r+b") as file:  # the header (and size) stay readable, the pixels do not
        file.truncate(80)
    with config_context(working_memory=0.1), pytest.raises(ValueError, match=r"image 9 from .*09\.png"):
        est.score_samples(paths)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_offset_ignores_images_without_support_in_the_bank(cls, data):
    # A bank of one patch comes from one image: that image's leave-one-image-out
    # score is infinite; offset_ must stay finite (it was NaN) and say why.
    good = data[0]
    est = _small(cls, memory=WeightedCoreset()).set_params(memory__sampling_ratio=1e-4)
    with pytest.warns(UserWarning, match="infinite.*memory__sampling_ratio"):
        est.fit(good[:2])
    assert est.pipeline_[-1].memory_bank_.shape[0] == 1
    assert np.isfinite(est.offset_)
    assert np.isfinite(est.decision_function(good[2:4])).all()
    with pytest.raises(ValueError, match="offset_ cannot be computed"):
        est._set_thresholds(np.full(4, np.inf))


class _RowsFeaturizer(PatchFeaturizer):
    """A featurizer of one's own that returns rows of patches (n, h * w, d)."""

    def transform(self, X):
        features = super().transform(X)
        return features.reshape(len(features), -1, features.shape[-1])


class _WrongGridFeaturizer(_RowsFeaturizer):
    """One patch more per image than its feature_shape_ holds."""

    def transform(self, X):
        features = super().transform(X)
        return np.concatenate([features, features[:, :1]], axis=1)


class _CacheOnlyDenoise(TransformerMixin, BaseEstimator):
    """A denoise step whose fit takes cache= but not features_key=."""

    def fit(self, X, y=None, cache=None):
        self.got_cache_ = cache is not None
        return self

    def transform(self, X):
        return X


def test_a_featurizer_returning_rows_is_put_on_its_grid(data):
    """On a non-square grid (8 x 12) the discriminator's dilation needs the
    grid: rows of patches are put on the featurizer's feature_shape_."""
    train, X, _, _ = data
    grid = _small(SoftPatchClassifier).set_params(featurizer__image_size=(64, 96)).fit(train)
    rows = _small(SoftPatchClassifier, featurizer=_RowsFeaturizer()).set_params(featurizer__image_size=(64, 96))
    rows.fit(train)
    assert rows.named_steps["featurizer"].feature_shape_ == (8, 12)
    np.testing.assert_array_equal(rows.score_samples(X[:4]), grid.score_samples(X[:4]))
    wrong = _small(SoftPatchClassifier, featurizer=_WrongGridFeaturizer(image_size=64, embed_dim=64))
    with pytest.raises(ValueError, match=r"returned 65 patches per image, but its feature_shape_ \(8, 8\) holds 64"):
        wrong.fit(train)


def test_a_denoise_step_gets_the_cache_only_if_it_takes_cache_and_features_key(data, tmp_path):
    train, X, _, _ = data
    clf = SoftPatchClassifier(_small(SoftPatchClassifier).featurizer, _CacheOnlyDenoise(), random_state=0,
                              cache=str(tmp_path))
    clf.set_params(featurizer__image_size=64, featurizer__embed_dim=64).fit(train)
    assert clf.named_steps["denoise"].got_cache_ is False
    assert clf.score_samples(X[:2]).shape == (2,)


def _first_half_of_the_channels(features):
    return np.ascontiguousarray(features[..., : features.shape[-1] // 2])


class _HalfChannelsDiscriminator(NoiseDiscriminator):
    """A discriminator that also keeps half the channels (WeightedPatches out)."""

    def fit_transform(self, X, y=None, **params):
        return super().fit_transform(_first_half_of_the_channels(X), **params)

    def transform(self, X):
        return super().transform(_first_half_of_the_channels(X))


@pytest.mark.parametrize(
    "denoise",
    [
        pytest.param(lambda: _HalfChannelsDiscriminator(n_neighbors=4), id="discriminator"),  # WeightedPatches out
        pytest.param(lambda: FunctionTransformer(_first_half_of_the_channels), id="transformer"),  # an array out
    ],
)
def test_held_out_scores_search_what_a_transforming_denoise_step_handed_on(denoise, data):
    """train_scores_ come from the features the memory step was fitted on:
    a denoise step that transforms them hands on its output."""
    train, X, _, _ = data
    clf = SoftPatchClassifier(denoise=denoise(), random_state=0)
    clf.set_params(featurizer__image_size=64, featurizer__embed_dim=64).fit(train)
    memory = clf.named_steps["coreset"]
    assert memory.n_features_in_ == 32
    features = _first_half_of_the_channels(clf.named_steps["featurizer"].transform(train))
    held_out = memory.score_held_out(features, np.arange(len(train))).min(axis=(1, 2))
    np.testing.assert_array_equal(clf.train_scores_, held_out)
    assert clf.score_samples(X[:2]).shape == (2,)
