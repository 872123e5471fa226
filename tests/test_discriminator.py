import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.neighbors import LocalOutlierFactor

from skpatch import NoiseDiscriminator, WeightedPatches
from skpatch._outlier_scores import global_ranks, lof_scores, mahalanobis_scores

METHODS = ["nearest", "lof", "gaussian", "softpatch+"]


def _planted(rng, n_images=30, n_patches=12, dim=8):
    X = rng.normal(size=(n_images, n_patches, dim)).astype(np.float32)
    X[min(7, n_images - 1), 5] += 8.0  # one defective patch: image 7, position 5
    return X


def test_lof_matches_sklearn_per_position(rng):
    Z = rng.normal(size=(4, 25, 5))
    ours = lof_scores(torch.from_numpy(Z), 6).numpy()
    for p in range(4):
        lof = LocalOutlierFactor(n_neighbors=6).fit(Z[p])
        np.testing.assert_allclose(ours[p], -lof.negative_outlier_factor_, rtol=1e-6)


def test_ledoit_wolf_mahalanobis_matches_numpy(rng):
    Z = rng.normal(size=(3, 15, 20)) * rng.uniform(0.5, 2, size=20)  # n < d
    ours = mahalanobis_scores(torch.from_numpy(Z)).numpy()
    for p in range(3):
        centred = Z[p] - Z[p].mean(0)
        alpha = ledoit_wolf_shrinkage(centred, assume_centered=True)
        cov = centred.T @ centred / len(centred)
        mu = np.trace(cov) / cov.shape[0]
        shrunk = (1 - alpha) * cov + (alpha * mu + 1e-6 * (mu + 1e-12)) * np.eye(cov.shape[0])
        expected = np.sqrt(np.einsum("ij,jk,ik->i", centred, np.linalg.inv(shrunk), centred))
        np.testing.assert_allclose(ours[p], expected, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_ranks_planted_patch_highest(method, rng):
    X = _planted(rng)
    disc = NoiseDiscriminator(method, threshold=0.01, n_neighbors=5, random_state=0).fit(X)
    assert np.unravel_index(np.argmax(disc.scores_), disc.scores_.shape) == (7, 5)
    assert not disc.kept_[7, 5]


@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.25, 0.5])
def test_threshold_removes_exact_fraction(threshold, rng):
    X = _planted(rng)
    disc = NoiseDiscriminator(threshold=threshold, n_neighbors=5).fit(X)
    assert (~disc.kept_).sum() == int(np.floor(threshold * X.shape[0] * X.shape[1]))
    if threshold > 0:
        assert disc.scores_[~disc.kept_].min() >= disc.scores_[disc.kept_].max()


def test_fit_transform_contract(rng):
    X = _planted(rng)
    disc = NoiseDiscriminator(n_neighbors=5)
    out = disc.fit_transform(X)
    assert isinstance(out, WeightedPatches)
    assert out.features is X
    np.testing.assert_array_equal(out.kept, disc.kept_)
    np.testing.assert_array_equal(out.weights, disc.weights_)
    # At prediction time the features pass through untouched.
    test = X[:3].copy()
    assert disc.transform(test) is test


def test_weights(rng):
    X = _planted(rng)
    lof = NoiseDiscriminator("lof", n_neighbors=5).fit(X)
    np.testing.assert_allclose(lof.weights_, lof.scores_, rtol=1e-6)
    gauss = NoiseDiscriminator("gaussian").fit(X)
    assert np.median(gauss.weights_) == pytest.approx(1.0, rel=1e-5)
    hard = NoiseDiscriminator("lof", n_neighbors=5, soft_weights=False).fit(X)
    assert np.all(hard.weights_ == 1)


def test_n_neighbors_is_used_not_ignored(rng):
    X = _planted(rng)
    a = NoiseDiscriminator("lof", n_neighbors=3).fit(X).scores_
    b = NoiseDiscriminator("lof", n_neighbors=10).fit(X).scores_
    assert not np.allclose(a, b)


def test_n_neighbors_too_large_warns(rng):
    X = _planted(rng, n_images=5)
    with pytest.warns(UserWarning, match="n_neighbors = 4"):
        disc = NoiseDiscriminator(n_neighbors=10).fit(X)
    assert disc.n_neighbors_ == 4


def test_chunking_does_not_change_scores(rng):
    import sklearn

    X = _planted(rng, n_patches=40)
    full = NoiseDiscriminator("softpatch+", n_neighbors=5).fit(X)
    with sklearn.config_context(working_memory=0.001):  # one position per chunk
        chunked = NoiseDiscriminator("softpatch+", n_neighbors=5).fit(X)
    np.testing.assert_allclose(full.scores_, chunked.scores_, rtol=1e-6)


def test_projection_is_seeded(rng):
    X = rng.normal(size=(12, 6, 64)).astype(np.float32)
    a = NoiseDiscriminator(n_components=8, n_neighbors=4, random_state=0).fit(X).scores_
    b = NoiseDiscriminator(n_components=8, n_neighbors=4, random_state=0).fit(X).scores_
    c = NoiseDiscriminator(n_components=8, n_neighbors=4, random_state=1).fit(X).scores_
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=40))
def test_global_ranks_properties(values):
    scores = torch.tensor(values, dtype=torch.float64)
    ranks = global_ranks(scores).numpy()
    assert np.all((ranks > 0) & (ranks <= 1))
    order = np.argsort(values)
    assert np.all(np.diff(ranks[order]) >= -1e-12)  # monotone
    values = np.asarray(values)
    for v in np.unique(values):
        assert np.ptp(ranks[values == v]) < 1e-12  # ties share a rank


@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros((4, 5)), "shape"),
        (np.full((4, 5, 3), np.nan), "NaN"),
        (np.zeros((1, 5, 3), np.float32), "at least 2"),
    ],
)
def test_bad_input(X, match):
    with pytest.raises(ValueError, match=match):
        NoiseDiscriminator().fit(X)


def test_transform_checks_feature_count(rng):
    disc = NoiseDiscriminator(n_neighbors=3).fit(_planted(rng))
    with pytest.raises(ValueError, match="features per patch"):
        disc.transform(np.zeros((2, 12, 5), np.float32))


@pytest.mark.parametrize("method", ["lof", "nearest"])
def test_n_neighbors_auto_finds_recurring_defects(method, rng):
    # The same defect at the same position in 8 of 30 images: with 6
    # neighbours those 8 patches look like a dense normal cluster; with half
    # the images as neighbours each of them has normal patches among its own.
    X = rng.normal(size=(30, 12, 8)).astype(np.float32)
    X[:8, 5] += 8.0 + 0.1 * rng.normal(size=(8, 8)).astype(np.float32)
    threshold = 8 / X[..., 0].size
    fixed = NoiseDiscriminator(method, threshold=threshold, n_neighbors=6).fit(X)
    auto = NoiseDiscriminator(method, threshold=threshold, n_neighbors="auto").fit(X)
    assert auto.n_neighbors_ == 15
    assert not auto.kept_[:8, 5].any()
    assert fixed.kept_[:8, 5].any()


def test_n_neighbors_auto_is_half_the_images(rng):
    for n_images in (2, 3, 11):
        disc = NoiseDiscriminator(n_neighbors="auto").fit(_planted(rng, n_images=n_images))
        assert disc.n_neighbors_ == max(1, n_images // 2)


def _shifted_parts(rng, n_images=24, grid=(8, 8), dim=6):
    """Images of one layout, each moved by up to 2 positions; image 5 has a
    part in the wrong place (its patch (4, 4) shows content from elsewhere)."""
    h, w = grid
    canvas = rng.normal(size=(h + 4, w + 4, dim)).astype(np.float32)
    offsets = rng.integers(-2, 3, size=(n_images, 2))
    offsets[: n_images // 2] = 0
    X = np.stack([canvas[2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w] for dy, dx in offsets])
    X = X + 0.05 * rng.normal(size=X.shape).astype(np.float32)
    X[5, 4, 4] = canvas[0, 0]
    return X.reshape(n_images, h * w, dim), offsets


@pytest.mark.parametrize("method", ["nearest", "lof"])
def test_max_shift_aligns_shifted_images(method, rng):
    X, offsets = _shifted_parts(rng)
    defect = 5 * 64 + 4 * 8 + 4
    aligned = NoiseDiscriminator(method, max_shift=2, n_components=None).fit(X)
    assert int(np.argmax(aligned.scores_)) == defect
    assert ((aligned.shifts_ + offsets) == (aligned.shifts_ + offsets)[0]).all()
    # Unaligned, every position holds different content in shifted images.
    plain = NoiseDiscriminator(method, n_components=None).fit(X)
    assert int(np.argmax(plain.scores_)) != defect
    assert (plain.shifts_ == 0).all()


def test_max_shift_needs_the_grid(rng):
    X = rng.normal(size=(6, 12, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="grid_shape=\\(h, w\\)"):
        NoiseDiscriminator(max_shift=1, n_neighbors=2).fit(X)
    with pytest.raises(ValueError, match="does not hold the 12 patches"):
        NoiseDiscriminator(max_shift=1, n_neighbors=2).fit(X, grid_shape=(3, 5))
    disc = NoiseDiscriminator(max_shift=1, n_neighbors=2).fit(X, grid_shape=(3, 4))
    assert disc.shifts_.shape == (6, 2)
    # Without max_shift a non-square grid needs no shape.
    NoiseDiscriminator(n_neighbors=2).fit(X)


def test_max_shift_with_a_projection_and_chunks(rng):
    X, _ = _shifted_parts(rng, dim=40)
    full = NoiseDiscriminator(max_shift=2, n_components=16, random_state=0).fit(X)
    from sklearn import config_context

    with config_context(working_memory=0.01):  # a few positions per chunk
        chunked = NoiseDiscriminator(max_shift=2, n_components=16, random_state=0).fit(X)
    np.testing.assert_array_equal(full.scores_, chunked.scores_)
    np.testing.assert_array_equal(full.shifts_, chunked.shifts_)


@pytest.mark.parametrize("dilation, block", [(1, (slice(1, 4), slice(2, 5))), (2, (slice(0, 5), slice(1, 6)))])
def test_dilation_grows_each_removed_patch_within_its_own_image(dilation, block):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 5 * 7, 4))
    X[3, 2 * 7 + 3] += 50.0  # one far outlier at row 2, column 3 of image 3's 5 x 7 grid
    params = dict(threshold=1.5 / (8 * 35), random_state=0)
    cut = NoiseDiscriminator(**params).fit(X, grid_shape=(5, 7))
    grown = NoiseDiscriminator(dilation=dilation, **params).fit(X, grid_shape=(5, 7))
    assert (~cut.kept_).sum() == 1 and not cut.kept_[3, 2 * 7 + 3]
    expected = np.zeros((8, 5, 7), dtype=bool)
    expected[(3, *block)] = True
    np.testing.assert_array_equal(~grown.kept_.reshape(8, 5, 7), expected)
    # The cut itself and the scores and weights do not change.
    assert grown.score_threshold_ == cut.score_threshold_
    np.testing.assert_array_equal(grown.scores_, cut.scores_)
    np.testing.assert_array_equal(grown.weights_, cut.weights_)


def test_dilation_zero_is_the_plain_cut():
    X = np.random.default_rng(1).normal(size=(8, 16, 3))
    plain = NoiseDiscriminator(random_state=0).fit(X)
    zero = NoiseDiscriminator(dilation=0, random_state=0).fit(X)
    np.testing.assert_array_equal(plain.kept_, zero.kept_)
    with pytest.raises(ValueError, match="dilation"):
        NoiseDiscriminator(dilation=-1).fit(X)


def test_dilation_needs_the_patch_grid():
    """Without grid_shape a non-square patch count has no grid to grow the removal on."""
    X = np.random.default_rng(2).normal(size=(8, 12, 3))
    with pytest.raises(ValueError, match="dilation needs the patch grid"):
        NoiseDiscriminator(dilation=1, random_state=0).fit(X)
    fitted = NoiseDiscriminator(dilation=1, random_state=0).fit(X, grid_shape=(3, 4))
    assert fitted.kept_.shape == (8, 12)


# -- the phases of fit (what skpatch.dask runs where the features are) ----------------


@pytest.mark.parametrize("method, max_shift", [("lof", 0), ("softpatch+", 1), ("nearest", 1)])
def test_fit_is_its_phases(method, max_shift, rng):
    X = rng.normal(size=(12, 25, 16)).astype(np.float32)
    params = dict(threshold=0.1, n_neighbors=4, n_components=8, max_shift=max_shift, dilation=1, random_state=0)
    fitted = NoiseDiscriminator(method, **params).fit(X)
    disc = NoiseDiscriminator(method, **params)
    grid = disc.begin_fit(X.shape)
    raw, shifts = disc.raw_scores(X, grid)
    assert tuple(raw) == disc.raw_score_names() and all(r.dtype == np.float32 for r in raw.values())
    disc.fit_from_raw(raw, grid, shifts)
    for name in ("n_features_in_", "n_neighbors_", "shifts_", "scores_", "kept_", "weights_", "score_threshold_"):
        assert np.array_equal(getattr(disc, name), getattr(fitted, name)), name


def test_score_positions_of_a_range_are_the_grids_scores(rng):
    """Each position is scored on its own: a range of positions (a Dask
    worker's chunk) gets the scores the whole grid gets there."""
    X = rng.normal(size=(10, 20, 16)).astype(np.float32)
    disc = NoiseDiscriminator("softpatch+", n_neighbors=3, n_components=8, random_state=0)
    disc.begin_fit(X.shape)
    projection = disc.projection_matrix(16)
    whole = disc.score_positions(X, projection=projection)
    part = disc.score_positions(X[:, 7:13], projection=projection)
    projected = disc.score_positions(torch.from_numpy(X[:, 7:13]) @ projection)
    for name in ("lof", "gaussian"):
        assert np.array_equal(part[name], whole[name][:, 7:13])
        assert np.array_equal(projected[name], whole[name][:, 7:13])
    assert disc.projection_matrix(8) is None and NoiseDiscriminator(n_components=None).projection_matrix(16) is None


def test_keep_mask_breaks_ties_by_position():
    from skpatch._discriminator import keep_mask

    scores = np.array([[1, 3, 3], [3, 0, 2]], dtype=np.float32)
    kept, value = keep_mask(scores, 0.34)  # removes 2 of the three 3s: the later ones
    assert kept.tolist() == [[True, True, False], [False, True, True]] and value == 3.0
    kept, value = keep_mask(scores, 0.0)
    assert kept.all() and value == float("inf")


def test_begin_fit_needs_two_images():
    with pytest.raises(ValueError, match="at least 2 training images"):
        NoiseDiscriminator().begin_fit((1, 4, 8))


def test_fit_caches_raw_scores_under_the_features_key(tmp_path):
    import joblib

    from skpatch import NoiseDiscriminator

    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 16, 8)).astype(np.float32)
    memory = joblib.Memory(tmp_path, verbose=0)
    plain = NoiseDiscriminator(threshold=0.1, random_state=0).fit_transform(X)
    first = NoiseDiscriminator(threshold=0.1, random_state=0).fit_transform(X, cache=memory, features_key="x")
    entries = len(list(tmp_path.rglob("output.pkl")))
    assert entries > 0
    # A new threshold reuses the cached raw scores (no new entry): same
    # scores_, another cut.
    again = NoiseDiscriminator(threshold=0.3, random_state=0).fit(X, cache=memory, features_key="x")
    assert len(list(tmp_path.rglob("output.pkl"))) == entries
    np.testing.assert_array_equal(first.weights, plain.weights)
    np.testing.assert_array_equal(first.kept, plain.kept)
    np.testing.assert_array_equal(again.scores_, NoiseDiscriminator(threshold=0.3, random_state=0).fit(X).scores_)
    assert again.kept_.sum() < first.kept.sum()


@pytest.mark.parametrize("kwargs", [{"cache": "somewhere"}, {"features_key": "x"}])
def test_cache_and_features_key_go_together(kwargs):
    from skpatch import NoiseDiscriminator

    X = np.zeros((4, 4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="cache and features_key go together"):
        NoiseDiscriminator().fit(X, **kwargs)
