import numpy as np
import pytest
import torch

from skpatch._alignment import estimate_shifts, shift_grids, unshift_scores


def _crops(rng, offsets, grid=(9, 11), margin=3, dim=6):
    """Images cut from one canvas of distinct patch features at known offsets."""
    h, w = grid
    canvas = rng.normal(size=(h + 2 * margin, w + 2 * margin, dim)).astype(np.float32)
    images = [
        canvas[margin + dy : margin + dy + h, margin + dx : margin + dx + w].reshape(h * w, dim)
        for dy, dx in offsets
    ]
    return torch.from_numpy(np.stack(images))


def test_estimate_shifts_recovers_known_offsets(rng):
    # Image i shows the canvas moved by offsets[i]: shifts must undo that,
    # up to one shift common to all images (the frame is arbitrary).
    offsets = rng.integers(-2, 3, size=(15, 2))
    offsets[:8] = 0  # most images unshifted: the median template is theirs
    shifts = estimate_shifts(_crops(rng, offsets), (9, 11), max_shift=2)
    aligned = shifts + offsets
    assert (aligned == aligned[0]).all()
    assert (shifts[:8] == 0).all()


def test_aligned_grids_match_the_canvas(rng):
    offsets = np.array([[0, 0]] * 6 + [[1, -2], [-2, 1], [2, 2]])
    Z = _crops(rng, offsets)
    shifts = estimate_shifts(Z, (9, 11), max_shift=2)
    grids = shift_grids(Z, shifts, (9, 11)).reshape(len(offsets), 9, 11, -1)
    # Away from the clamped edges every aligned image shows the same content.
    inner = grids[:, 2:-2, 2:-2]
    assert torch.equal(inner, inner[:1].expand_as(inner))


def test_zero_max_shift_and_tiny_grids_do_not_shift(rng):
    Z = _crops(rng, [[0, 0], [1, 1], [-1, 0]], grid=(2, 7))
    assert (estimate_shifts(Z, (2, 7), max_shift=2) == 0).all()  # 2 rows: no room
    assert (estimate_shifts(Z, (2, 7), max_shift=0) == 0).all()


def test_unshift_returns_each_score_to_its_patch(rng):
    h, w = 6, 7
    shifts = np.array([[0, 0], [1, -1], [-2, 2]])
    own = torch.arange(3 * h * w, dtype=torch.float32).reshape(3, h * w, 1)
    common = shift_grids(own, shifts, (h, w))[..., 0].numpy()
    back = unshift_scores(common, shifts, (h, w)).reshape(3, h, w)
    expected = own[..., 0].numpy().reshape(3, h, w)
    # Patches that stayed inside the common frame get their own score back.
    for i, (dy, dx) in enumerate(shifts):
        rows = slice(max(dy, 0), h + min(dy, 0))
        cols = slice(max(dx, 0), w + min(dx, 0))
        np.testing.assert_array_equal(back[i, rows, cols], expected[i, rows, cols])


def test_ties_keep_the_smallest_shift():
    Z = torch.ones((4, 25, 3))  # every shift matches equally well
    assert (estimate_shifts(Z, (5, 5), max_shift=2) == 0).all()


@pytest.mark.parametrize("grid", [(9, 11), (11, 9)])
def test_shift_grids_gathers_rows_and_columns(grid, rng):
    h, w = grid
    Z = torch.from_numpy(rng.normal(size=(1, h * w, 2)).astype(np.float32))
    out = shift_grids(Z, np.array([[1, 2]]), grid).reshape(h, w, 2)
    np.testing.assert_array_equal(out[0, 0].numpy(), Z.reshape(h, w, 2)[1, 2].numpy())
    np.testing.assert_array_equal(out[-1, -1].numpy(), Z.reshape(h, w, 2)[-1, -1].numpy())  # clamped


def test_align_runs_the_passes_on_any_storage(rng):
    """estimate_shifts is align on one tensor; align with the median and the
    best shifts computed per chunk (as skpatch.dask does) gives the same."""
    from skpatch._alignment import align, best_shifts, position_median

    offsets = rng.integers(-2, 3, size=(10, 2))
    Z = _crops(rng, offsets)

    def median(shifts):  # per chunk of positions
        shifted = shift_grids(Z, shifts, (9, 11))
        return torch.cat([position_median(shifted[:, s : s + 20]) for s in range(0, 99, 20)])

    def best(template, candidates):  # per chunk of images
        return np.concatenate([best_shifts(Z[s : s + 3], template, (9, 11), candidates) for s in range(0, 10, 3)])

    assert np.array_equal(align(10, (9, 11), 2, median=median, best=best), estimate_shifts(Z, (9, 11), 2))
