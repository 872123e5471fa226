import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from skpatch import BaggedCoreset, NoiseDiscriminator, SoftPatchClassifier, WeightedCoreset
from skpatch._bagging import _deal
from skpatch.datasets import make_defects


def _features(n_images=20, n_patches=16, n_dims=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_images, n_patches, n_dims)).astype(np.float32)


@pytest.mark.parametrize(
    "n_images, n_estimators, max_samples, r",
    [(20, 5, 0.2, 1), (23, 10, 0.3, 3), (11, 4, 0.5, 2), (100, 10, 0.45, 5), (9, 3, 1.0, 3), (30, 10, 0.25, 3)],
)
def test_every_image_is_dealt_to_the_same_number_of_members(n_images, n_estimators, max_samples, r):
    for seed in range(50):
        membership = _deal(n_images, n_estimators, max_samples, np.random.RandomState(seed))
        np.testing.assert_array_equal(membership.sum(axis=0), r)  # rounded half up
        sizes = membership.sum(axis=1)
        assert sizes.max() - sizes.min() <= 2


def test_members_without_images_are_left_out_with_a_warning():
    X = _features(3, 16)
    with pytest.warns(UserWarning, match="Only 6 of the 10 members"):
        bag = BaggedCoreset(10, max_samples=0.2, random_state=0).fit(X)
    assert len(bag.estimators_) == len(bag.estimators_samples_) == 6
    assert np.isfinite(bag.score_held_out(X, [0, 1, 2])).all()


def test_members_add_up_to_one_coreset_of_the_same_ratio():
    X = _features(40, 25)
    bag = BaggedCoreset(8, max_samples=0.25, sampling_ratio=0.1, random_state=0).fit(X)
    single = WeightedCoreset(sampling_ratio=0.1, random_state=0).fit(X)
    total = sum(len(m.memory_bank_) for m in bag.estimators_)
    # Each member rounds its own share up: at most one patch more per member.
    assert len(single.memory_bank_) <= total <= len(single.memory_bank_) + len(bag.estimators_)
    for member, samples in zip(bag.estimators_, bag.estimators_samples_):
        assert member.memory_images_.max() < len(samples)


def test_a_defect_in_one_training_image_is_not_memorised():
    X = _features(20, 16)
    X[3, 5] += 8.0  # a defect patch in training image 3 only
    bag = BaggedCoreset(10, max_samples=0.2, sampling_ratio=0.5, random_state=0).fit(X)
    single = WeightedCoreset(sampling_ratio=0.5, random_state=0).fit(X)
    test = X[3:4].copy()  # the same image at test time
    # One bank holds the defect, so it matches itself; the median over the
    # members ignores the 2 of 10 that hold it.
    assert -single.score_samples(test)[0, 5] < 1e-3
    normal = -bag.score_samples(X[:3])
    assert -bag.score_samples(test)[0, 5] > 2 * normal.max()


def test_out_of_bag_scores_use_only_the_members_that_did_not_see_the_image():
    X = _features(12, 9)
    bag = BaggedCoreset(6, max_samples=1 / 3, sampling_ratio=0.5, aggregate="mean", random_state=1).fit(X)
    images = np.array([0, 5, 11])
    held_out = bag.score_held_out(X[images], images)
    for row, image in enumerate(images):
        others = [m for m, s in zip(bag.estimators_, bag.estimators_samples_) if image not in s]
        assert 0 < len(others) < len(bag.estimators_)
        expected = np.mean([m.score_samples(X[image : image + 1])[0] for m in others], axis=0)
        np.testing.assert_allclose(held_out[row], expected, rtol=1e-6)
    # In-sample scores of those images are lower (their own patches match).
    assert (held_out < bag.score_samples(X[images]) - 1e-6).any()


def test_images_that_every_member_saw_are_scored_leave_one_out():
    X = _features(6, 9)
    bag = BaggedCoreset(3, max_samples=1.0, sampling_ratio=0.5, random_state=0).fit(X)
    assert all(len(s) == 6 for s in bag.estimators_samples_)
    held_out = bag.score_held_out(X[:2], [0, 1])
    expected = np.median([m.score_held_out(X[:2], [0, 1]) for m in bag.estimators_], axis=0)
    np.testing.assert_allclose(held_out, expected, rtol=1e-6)


def test_weights_and_removal_reach_the_members():
    X = _features(20, 16)
    X[4, 2] += 10.0
    patches = NoiseDiscriminator(threshold=0.05, n_neighbors=5, random_state=0).fit_transform(X)
    bag = BaggedCoreset(4, max_samples=0.25, sampling_ratio=1.0, random_state=0).fit(patches)
    for member, samples in zip(bag.estimators_, bag.estimators_samples_):
        image, patch = np.divmod(member.sample_indices_, 16)
        assert patches.kept[samples[image], patch].all()
        np.testing.assert_array_equal(member.memory_weights_, patches.weights[samples[image], patch])


def test_deterministic_and_pickles():
    X = _features()
    a = BaggedCoreset(5, max_samples=0.2, random_state=3).fit(X)
    b = clone(a).fit(X)
    np.testing.assert_array_equal(a.score_samples(X[:2]), b.score_samples(X[:2]))
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(a.score_samples(X[:2]), c.score_samples(X[:2]))


@pytest.mark.parametrize("params, match", [({"n_estimators": 0}, "n_estimators"), ({"max_samples": 0.0}, "max_samples"), ({"aggregate": "max"}, "aggregate")])
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        BaggedCoreset(**params).fit(_features())


def _small_classifier(**params):
    clf = SoftPatchClassifier(memory=BaggedCoreset(4, max_samples=0.25), random_state=0, device="cpu")
    clf.set_params(featurizer__image_size=32, featurizer__embed_dim=16, denoise__n_neighbors=3)
    return clf.set_params(**params)


def test_classifier_with_a_bagged_memory_uses_out_of_bag_train_scores():
    X, y, _ = make_defects(24, image_size=32, kind="object", defect_ratio=0.25, random_state=0)
    clf = _small_classifier(denoise="passthrough").fit(X)
    bag = clf.named_steps["coreset"]
    features = clf.named_steps["featurizer"].transform(X)
    oob = bag.score_held_out(features, np.arange(len(X))).min(axis=(1, 2))  # -max anomaly
    np.testing.assert_allclose(clf.train_scores_, oob, rtol=1e-6)
    assert clf.fit_predict(X).shape == (24,)


def test_grid_search_over_the_bag():
    X, y, _ = make_defects(20, image_size=32, kind="object", defect_ratio=0.3, random_state=1)
    from skpatch.metrics import get_anomaly_scorer

    grid = GridSearchCV(
        _small_classifier(denoise="passthrough"),
        {"memory__n_estimators": [2, 4], "memory__max_samples": [0.25, 0.5]},
        scoring=get_anomaly_scorer("image_auroc"), cv=2,
    ).fit(X, y)
    assert set(grid.best_params_) == {"memory__n_estimators", "memory__max_samples"}


def test_bad_bag_parameter_is_refused_before_the_cnn(monkeypatch):
    from skpatch import PatchFeaturizer

    def boom(*args, **kwargs):
        raise AssertionError("the CNN ran")

    monkeypatch.setattr(PatchFeaturizer, "fit_transform", boom)
    X, _, _ = make_defects(6, image_size=32, random_state=0)
    with pytest.raises(ValueError, match="n_estimators"):
        _small_classifier(memory__n_estimators=0).fit(X)
    with pytest.raises(ValueError, match="threshold"):
        _small_classifier(denoise__threshold=1.5).fit(X)


def test_a_user_memory_step_without_constraints_is_accepted():
    from sklearn.base import BaseEstimator

    class Memory(BaseEstimator):
        def __init__(self, k=1):
            self.k = k

        def fit(self, X, y=None):
            self.n_features_in_ = X.features.shape[2] if hasattr(X, "features") else X.shape[2]
            return self

        def score_samples(self, X):
            return -np.abs(X).mean(axis=2)

    X, _, _ = make_defects(6, image_size=32, random_state=0)
    clf = _small_classifier(memory=Memory())
    with pytest.warns(UserWarning, match="score_held_out"):
        clf.fit(X)
    assert clf.score_samples(X).shape == (6,)


def test_contamination_estimate_counts_what_fit_predict_flags():
    clf = SoftPatchClassifier()
    anomaly = np.array([1.0, 1.1, 0.9, 1.05, 5.0, np.inf])
    with pytest.warns(UserWarning, match="infinite") as record:
        clf._set_thresholds(anomaly)
    assert len(record) == 1
    flagged = np.mean(-anomaly - clf.offset_ < 0)
    assert clf.contamination_estimate_ == pytest.approx(flagged) == pytest.approx(2 / 6)


def _brute_nearest_per_bank(queries, banks):
    """Per bank: squared-distance argmin (first of equal values) and its distance."""
    index, distance = [], []
    for bank in banks:
        d2 = ((queries[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(2)
        arg = d2.argmin(1)
        index.append(arg)
        distance.append(np.sqrt(d2[np.arange(len(queries)), arg]))
    return np.stack(index, 1), np.stack(distance, 1)


def test_grouped_lists_find_each_banks_exact_nearest_row():
    import torch

    from skpatch._ivf import build_grouped_lists

    rng = np.random.default_rng(0)
    banks = [rng.normal(size=(n, 6)).astype(np.float32) for n in (300, 250, 400)]
    banks[1][200] = banks[1][7]  # a duplicate: the lower rank wins
    queries = np.concatenate([rng.normal(size=(300, 6)), banks[1][[7]]]).astype(np.float32)
    lists, order = build_grouped_lists(banks, np.random.RandomState(0))
    distance, index = lists.search(torch.from_numpy(queries), n_probe=1)
    starts = np.cumsum([0] + [len(b) for b in banks])[:-1]
    local = order[index.numpy()] - starts[None, :]
    expected_index, expected_distance = _brute_nearest_per_bank(queries, banks)
    np.testing.assert_array_equal(local, expected_index)
    np.testing.assert_allclose(distance.numpy(), expected_distance, rtol=1e-5, atol=1e-5)
    assert local[-1, 1] == 7
    # The probed list alone misses many nearest rows: the pruned second
    # round is what makes the search exact.
    probed = lists.centroids.numpy()
    nearest_list = ((queries[:, None] - probed[None]) ** 2).sum(2).argmin(1)
    row_list = np.searchsorted(np.asarray(lists.offsets), index.numpy(), side="right") - 1
    assert (row_list != nearest_list[:, None]).mean() > 0.2


def test_grouped_lists_break_ties_across_lists_by_rank():
    import torch

    from skpatch._ivf import GroupedInvertedLists

    # One bank: rank 0 at (-1, 0), rank 1 at (1, 0), each alone in a list.
    # Queries (0, y) are as far from both: rank 0 wins, whichever
    # list is probed first.
    rows = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    lists = GroupedInvertedLists(
        rows, rows.clone(), torch.zeros(2), [0, 1, 2], torch.zeros(2, dtype=torch.int64), torch.tensor([1, 0]), 1
    )
    for query in ([0.0, 0.0], [0.0, 0.5], [0.0, -2.0]):
        distance, index = lists.search(torch.tensor([query]), n_probe=1)
        assert index.item() == 1
        assert abs(distance.item() - np.hypot(1.0, query[1])) < 1e-6


def test_exact_bag_scores_equal_each_member_searched_alone():
    X = _features(40, 64)
    bag = BaggedCoreset(5, max_samples=0.4, sampling_ratio=0.5, random_state=0).fit(X)
    lists, _ = bag._shared_lists("cpu")
    assert len(lists.centroids) > bag.n_probe
    per_member = np.stack([-m.score_samples(X[:6]) for m in bag.estimators_])
    np.testing.assert_allclose(bag._member_anomaly(X[:6]), per_member, rtol=1e-6)
    np.testing.assert_allclose(bag.score_samples(X[:6]), -np.median(per_member, axis=0), rtol=1e-6)
    # The cache is not pickled, and is rebuilt identically.
    again = pickle.loads(pickle.dumps(bag))
    assert not hasattr(again, "_lists_cache")
    np.testing.assert_array_equal(again.score_samples(X[:6]), bag.score_samples(X[:6]))


def test_grouped_lists_search_every_list_for_a_group_without_a_probed_row():
    import torch

    from skpatch._ivf import GroupedInvertedLists

    # Group 1's only row is in list 1; a query probing list 0 alone must
    # still find it (its best is inf after the probe, so nothing is pruned).
    rows = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0]])
    lists = GroupedInvertedLists(
        rows, torch.tensor([[0.05, 0.0], [10.0, 0.0]]), torch.tensor([0.05, 0.0]), [0, 2, 3],
        torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), 2,
    )
    distance, index = lists.search(torch.tensor([[0.0, 0.0]]), n_probe=1)
    assert index.tolist() == [[0, 2]]
    np.testing.assert_allclose(distance.numpy(), [[0.0, 10.0]])


def test_a_refit_bag_scores_with_its_new_members():
    X1 = _features(20, 16, seed=0)
    X2 = _features(20, 16, seed=1) + 5.0
    bag = BaggedCoreset(3, max_samples=1 / 3, sampling_ratio=0.5, random_state=0)
    bag.fit(X1).score_samples(X1[:2])  # builds the shared lists of the first fit
    refit = bag.fit(X2).score_samples(X1[:2])
    fresh = BaggedCoreset(3, max_samples=1 / 3, sampling_ratio=0.5, random_state=0).fit(X2)
    np.testing.assert_array_equal(refit, fresh.score_samples(X1[:2]))
