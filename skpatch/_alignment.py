"""Align the patch grids of training images by whole-position shifts.

Parts that sit a little differently in each image (a board shifted by a few
pixels, a bottle not quite centred) put different content at the same patch
position, and a per-position outlier score then flags normal patches. These
helpers estimate, for each image, the integer shift of its patch grid that
best matches a robust template of all images (the per-position median), and
move grids and scores between the image's own frame and that common frame.

Shifts are whole grid positions; positions moved in from outside the grid
repeat the nearest edge patch (edge clamping).
"""

import numpy as np
import torch

# Passes of (template, shifts): the first template is unaligned; the second
# pass matches against a template of aligned grids. More passes changed no
# shift on the benchmark sets.
N_PASSES = 2


def estimate_shifts(Z, grid_shape, max_shift):
    """Integer shift ``(dy, dx)`` of each image's grid onto the common frame.

    Parameters
    ----------
    Z : torch.Tensor of shape (n_images, n_patches, n_dims)
        Patch features, row-major over ``grid_shape``.
    grid_shape : tuple of (int, int)
    max_shift : int
        Largest shift tried along each axis, in grid positions.

    Returns
    -------
    shifts : ndarray of shape (n_images, 2), dtype int
        Image ``i``'s patch at ``q + shifts[i]`` sits at position ``q`` of the
        common frame. Each image takes the shift with the smallest mean
        distance to the template (the per-position median of the images,
        aligned by the previous pass) over the positions that every shift
        keeps inside the grid; ties go to the smallest shift (zero first).
    """
    return align(
        Z.shape[0], grid_shape, max_shift,
        median=lambda shifts: position_median(shift_grids(Z, shifts, grid_shape)),
        best=lambda template, candidates: best_shifts(Z, template, grid_shape, candidates),
    )


def align(n_images, grid_shape, max_shift, *, median, best):
    """The passes of :func:`estimate_shifts`, wherever the grids are held.

    :func:`estimate_shifts` runs them on one tensor; :mod:`skpatch.dask`
    runs them on grids spread over workers (the median on position chunks,
    the best shifts on image chunks).

    Parameters
    ----------
    n_images : int
    grid_shape : tuple of (int, int)
    max_shift : int
    median : callable
        ``median(shifts)``: :func:`position_median` of the grids shifted by
        ``shifts`` (:func:`shift_grids`), a tensor ``(n_patches, n_dims)``.
    best : callable
        ``best(template, candidates)``: :func:`best_shifts` of every image,
        an ndarray ``(n_images, 2)``.

    Returns
    -------
    shifts : ndarray of shape (n_images, 2), dtype int
        As :func:`estimate_shifts`.
    """
    shifts = np.zeros((n_images, 2), dtype=np.int64)
    candidates = shift_candidates(grid_shape, max_shift)
    if len(candidates) == 1:
        return shifts
    for _ in range(N_PASSES):
        template = inner_template(median(shifts), grid_shape, max_shift)
        shifts = best(template, candidates)
    return shifts


def shift_candidates(grid_shape, max_shift):
    """All shifts tried, smallest first (so that ties keep the smallest)."""
    h, w = grid_shape
    r = min(int(max_shift), (h - 1) // 2, (w - 1) // 2)
    return sorted(
        ((dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)),
        key=lambda s: (abs(s[0]) + abs(s[1]), abs(s[0]), s),
    )


def position_median(Z):
    """Median over images at every position, ``(n_patches, n_dims)``.

    The lower of the two middle values for an even number of images (torch's
    median), so that it is the same whether computed at once or per chunk of
    positions.
    """
    return Z.median(dim=0).values


def inner_template(median, grid_shape, max_shift):
    """The median's positions that every candidate shift keeps in the grid."""
    h, w = grid_shape
    r = max(abs(dy) for dy, _ in shift_candidates(grid_shape, max_shift))
    return median.reshape(h, w, -1)[r : h - r, r : w - r]


def best_shifts(Z, template, grid_shape, candidates):
    """Each image's candidate shift closest to ``template`` (images are independent)."""
    h, w = grid_shape
    r = max(abs(dy) for dy, _ in candidates)
    grids = Z.reshape(Z.shape[0], h, w, -1)
    costs = torch.stack(
        [
            (grids[:, r + dy : h - r + dy, r + dx : w - r + dx] - template).norm(dim=-1).mean(dim=(1, 2))
            for dy, dx in candidates
        ],
        dim=1,
    )
    # argmin returns the first minimum: the smallest shift among ties.
    return np.asarray(candidates, dtype=np.int64)[costs.argmin(dim=1).numpy()].reshape(-1, 2)


def _clamped_index(grid_shape, shifts):
    """Flat source index of every (image, position) after shifting by ``shifts``."""
    h, w = grid_shape
    rows = np.arange(h)[None, :, None] + shifts[:, 0, None, None]
    cols = np.arange(w)[None, None, :] + shifts[:, 1, None, None]
    index = np.clip(rows, 0, h - 1) * w + np.clip(cols, 0, w - 1)
    return torch.from_numpy(index.reshape(len(shifts), h * w))


def shift_grids(Z, shifts, grid_shape):
    """``Z`` in the common frame: ``out[i, q] = Z[i, clamp(q + shifts[i])]``."""
    index = _clamped_index(grid_shape, shifts)
    return torch.gather(Z, 1, index[..., None].expand(-1, -1, Z.shape[2]))


def unshift_scores(scores, shifts, grid_shape):
    """Scores of the common frame back in each image's own frame.

    ``scores[i, q]`` belongs to image ``i``'s patch ``q + shifts[i]``; a patch
    that the shift moved out of the common frame takes the score of the
    nearest position that stayed in.
    """
    index = _clamped_index(grid_shape, -np.asarray(shifts))
    return np.take_along_axis(scores, index.numpy(), axis=1)
