"""Approximate greedy k-center selection on CPU in bounded time and memory.

Greedy k-center (Gonzalez, 1985; PatchCore's coreset) repeatedly adds the
point farthest from the points chosen so far. Done naively, each of the ``k``
steps updates the distances of all ``n`` points, ``O(k n d)`` memory traffic:
minutes on a CPU for PatchCore-sized banks.

Here the (projected) points are first split into compact cells by a k-d tree
(recursive median splits along the widest coordinate). The greedy order is
kept global - every step takes the point farthest from the centres chosen in
its own cell - but a new centre only updates the distances within its cell,
so one step costs ``O(n / n_cells * d)``. A centre can therefore sit close to
one in a neighbouring cell; coverage is never worse than running the greedy
inside each cell. ``n_cells=1`` is the exact greedy algorithm.
"""

import numpy as np
import torch


def kd_cells(points, n_cells):
    """Split row indices of ``points`` into ``n_cells`` (a power of two) compact cells."""
    cells = [torch.arange(points.shape[0])]
    while len(cells) < n_cells:
        split = []
        for idx in cells:
            if idx.numel() < 2:
                split.append(idx)
                continue
            sub = points[idx]
            axis = int(torch.argmax(sub.amax(0) - sub.amin(0)))
            order = torch.argsort(sub[:, axis], stable=True)
            half = idx.numel() // 2
            split.extend([idx[order[:half]], idx[order[half:]]])
        cells = split
    return [idx for idx in cells if idx.numel() > 0]


def greedy_kcenter(points, n_select, *, n_cells=1, rng, progress=None):
    """Indices of ``n_select`` rows of ``points`` chosen by (cell-local) greedy k-center.

    Parameters
    ----------
    points : torch.Tensor of shape (n, d), float32
        Usually randomly projected features.
    n_select : int
        Number of centres, 1 <= n_select <= n.
    n_cells : int
        Power of two; 1 runs the exact greedy algorithm.
    rng : numpy.random.RandomState
        Chooses the first centre of every cell.
    progress : callable or None
        Called with the number of newly selected centres, for progress bars.

    Returns
    -------
    selected : ndarray of shape (n_select,), dtype int64
        Row indices, in selection order.
    """
    n = points.shape[0]
    n_cells = int(min(n_cells, max(1, n_select)))
    cells = kd_cells(points, n_cells)
    cell_points = [points[idx] for idx in cells]
    cell_norms = [p.square().sum(1) for p in cell_points]
    selected = []
    min_dist, best_value, best_index = [], np.empty(len(cells)), np.empty(len(cells), dtype=np.int64)
    # One random first centre per cell (the excluded patches are not in `points`).
    for c, (idx, pts, norms) in enumerate(zip(cells, cell_points, cell_norms)):
        first = int(rng.randint(idx.numel()))
        selected.append(int(idx[first]))
        dist = _squared_distances(pts, norms, pts[first])
        min_dist.append(dist)
        best_value[c], best_index[c] = _argmax(dist)
    if progress is not None:
        progress(len(selected))
    while len(selected) < n_select:
        c = int(np.argmax(best_value))
        if best_value[c] <= 0:
            # Every remaining point coincides with a centre: pick any unselected points.
            return _fill_duplicates(np.asarray(selected), n, n_select)
        local = best_index[c]
        selected.append(int(cells[c][local]))
        dist = _squared_distances(cell_points[c], cell_norms[c], cell_points[c][local])
        torch.minimum(min_dist[c], dist, out=min_dist[c])
        best_value[c], best_index[c] = _argmax(min_dist[c])
        if progress is not None:
            progress(1)
    return np.asarray(selected[:n_select], dtype=np.int64)


def _squared_distances(points, norms, center):
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, clamped against rounding below 0.
    return (norms - 2.0 * (points @ center) + center.square().sum()).clamp_min_(0.0)


def _argmax(values):
    value, index = values.max(0)
    return float(value), int(index)


def _fill_duplicates(selected, n, n_select):
    remaining = np.setdiff1d(np.arange(n), selected, assume_unique=False)
    return np.concatenate([selected, remaining[: n_select - len(selected)]]).astype(np.int64)
