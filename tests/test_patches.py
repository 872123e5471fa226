import numpy as np
import pytest

from sklearn.base import clone

from skpatch import BaggedCoreset, NoiseDiscriminator, WeightedCoreset, WeightedPatches
from skpatch._patches import check_patch_features


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_non_finite_features_are_refused(bad, dtype):
    X = np.zeros((2, 5, 3), dtype=dtype)
    X[1, 4, 2] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_patch_features(X)


def test_finite_features_whose_sum_overflows_are_accepted():
    """The one-pass check (a finite sum) falls back to the element-wise one
    when finite values overflow the sum."""
    X = np.full((2, 5, 3), np.finfo(np.float32).max, dtype=np.float32)
    with np.errstate(over="ignore"):
        assert not np.isfinite(X.sum())
    features, _, _ = check_patch_features(X)
    assert features is X


def test_float16_features_are_checked_by_a_sum_that_does_not_overflow(monkeypatch):
    """A float16 running sum overflows on ordinary features (200,000 halves);
    the check sums in float32, so it needs no element-wise pass."""
    X = np.full((200, 1000, 1), 0.5, dtype=np.float16)
    calls = []
    original = np.isfinite
    monkeypatch.setattr(np, "isfinite", lambda a: calls.append(np.shape(a)) or original(a))
    check_patch_features(X)
    assert calls == [()]  # only the sum's


def test_features_on_their_grid_are_rows_of_patches_with_the_grid():
    """(n, h, w, d) features carry their grid: the steps read them as the
    row-major (n, h * w, d) rows, and the memory steps score them in the
    shape they came in."""
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(12, 3, 5, 8)).astype(np.float32)
    rows = grid.reshape(12, 15, 8)
    patches = WeightedPatches(grid, np.ones((12, 15)), np.ones((12, 15), bool))
    assert patches.grid_shape == (3, 5) and patches.features.shape == (12, 15, 8)
    assert np.shares_memory(patches.features, grid)
    assert WeightedPatches(rows, np.ones((12, 15)), np.ones((12, 15), bool)).grid_shape is None
    for memory in (WeightedCoreset(random_state=0), BaggedCoreset(3, max_samples=0.5, random_state=0)):
        on_grid = clone(memory).fit(grid[:10])
        by_rows = clone(memory).fit(rows[:10])
        np.testing.assert_array_equal(on_grid.score_samples(grid[10:]), by_rows.score_samples(rows[10:]).reshape(2, 3, 5))
        held_out = on_grid.score_held_out(grid[:4], np.arange(4))
        assert held_out.shape == (4, 3, 5)
        np.testing.assert_array_equal(held_out, by_rows.score_held_out(rows[:4], np.arange(4)).reshape(4, 3, 5))


def test_the_discriminator_reads_the_grid_from_the_features():
    """A non-square grid needs grid_shape with rows of patches, and nothing
    (or the same grid_shape) with features on their grid."""
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(12, 3, 5, 8)).astype(np.float32)
    rows = grid.reshape(12, 15, 8)
    disc = NoiseDiscriminator(n_neighbors=3, threshold=0.1, max_shift=1, dilation=1, random_state=0)
    with pytest.raises(ValueError, match="not a square grid"):
        clone(disc).fit(rows)
    expected = clone(disc).fit(rows, grid_shape=(3, 5))
    for fitted in (clone(disc).fit(grid), clone(disc).fit(grid, grid_shape=(3, 5))):
        np.testing.assert_array_equal(fitted.kept_, expected.kept_)
        np.testing.assert_array_equal(fitted.weights_, expected.weights_)
    with pytest.raises(ValueError, match=r"differs from the patch grid \(3, 5\)"):
        clone(disc).fit(grid, grid_shape=(5, 3))
    fitted = clone(disc)
    assert fitted.fit_transform(grid).grid_shape == (3, 5)
    assert fitted.transform(grid[:2]).shape == (2, 3, 5, 8)  # test features pass unchanged
