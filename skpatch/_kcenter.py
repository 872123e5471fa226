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

Since a centre only touches its own cell, the global loop is a merge of
the cells' own greedy sequences, whose farthest-point distances never
increase. The cells are therefore advanced in blocks of steps, always the
cell with the largest pending distance next, until no pending distance can
enter the ``k`` largest recorded; the ``k`` largest are then kept. This
selects the same centres as the one-step-at-a-time loop with a fraction of
its Python overhead, and a cell's points stay in the CPU cache for a block.
"""

import heapq

import numpy as np
import torch

# Rows looked at to choose a cell's widest coordinate.
_AXIS_SAMPLE = 1024


def kd_cells(points, n_cells):
    """Split row indices of ``points`` (n, d) into ``n_cells`` (a power of two) compact cells.

    Each split halves a cell at the median of its widest coordinate; the
    widest coordinate is judged on at most 1024 evenly spaced rows, so a
    split only reads one column of the cell.
    """
    points = points.numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    cells = [np.arange(points.shape[0])]
    while len(cells) < n_cells:
        split = []
        for idx in cells:
            if idx.size < 2:
                split.append(idx)
                continue
            sample = points[idx[:: max(1, idx.size // _AXIS_SAMPLE)]]
            axis = int(np.argmax(sample.max(0) - sample.min(0)))
            half = idx.size // 2
            order = np.argpartition(points[idx, axis], half, kind="introselect")
            split.extend([idx[order[:half]], idx[order[half:]]])
        cells = split
    return [idx for idx in cells if idx.size > 0]


def greedy_kcenter(points, n_select, *, n_cells=1, rng, progress=None):
    """Indices of ``n_select`` rows of ``points`` chosen by (cell-local) greedy k-center.

    Parameters
    ----------
    points : torch.Tensor or ndarray of shape (n, d), float32
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
        Row indices, grouped by cell.

    Notes
    -----
    Because a centre only updates distances in its own cell, the global
    greedy loop (always take the cell whose farthest point is farthest) is a
    merge of the cells' own greedy sequences, whose farthest-point distances
    never increase. So the cell with the largest pending distance is
    advanced by a block of steps at a time (numpy distance updates on its
    cached points), and the ``n_select`` largest distances over all
    sequences are kept: the same selection as the sequential loop. It stops
    once no cell's pending distance can exceed the ``n_select``-th largest
    recorded so far, which only rises as sequences grow.
    """
    n = points.shape[0]
    # kd_cells makes a power of two cells, each with a first centre: never
    # more than n_select (3 centres with n_cells=4 used to give 4 centres).
    n_cells = 1 << (int(min(n_cells, max(1, n_select))).bit_length() - 1)
    points = points.numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    cells = kd_cells(points, n_cells)
    cell_points = [np.ascontiguousarray(points[idx]) for idx in cells]
    cell_norms = [(p * p).sum(1) for p in cell_points]
    n_more = n_select - len(cells)
    # One random first centre per cell (the excluded patches are not in `points`).
    picks = [[int(rng.randint(idx.size))] for idx in cells]
    min_dist = [_distances_to(p, q, f[0]) for p, q, f in zip(cell_points, cell_norms, picks)]
    values = [[] for _ in cells]  # farthest distance before each further pick
    if progress is not None:
        progress(len(cells))
    block = max(16, -(-n_more // (4 * len(cells))))
    heads = [(-float(d.max()), c) for c, d in enumerate(min_dist)]
    heapq.heapify(heads)
    top = []  # min-heap of the n_more largest distances recorded
    reported = 0
    while heads and n_more > 0:
        head, c = heads[0]
        # Stop when no cell's next distance can make the cut (distances in a
        # cell never increase), or every point coincides with a centre.
        if -head <= 0 or (len(top) == n_more and -head < top[0]):
            break
        new_values, new_picks = _extend(cell_points[c], cell_norms[c], min_dist[c], block)
        values[c].extend(new_values)
        picks[c].extend(new_picks)
        for v in new_values:
            if len(top) < n_more:
                heapq.heappush(top, v)
            elif v > top[0]:
                heapq.heapreplace(top, v)
        heapq.heapreplace(heads, (-float(min_dist[c].max()), c))
        if progress is not None and reported < n_more:
            step = min(block, n_more - reported)
            progress(step)
            reported += step
    # The n_more largest distances over all sequences (ties: lower cell first,
    # as the sequential loop's argmax does); zero distances are duplicates.
    flat_values = np.concatenate([np.asarray(v, dtype=np.float64) for v in values] + [np.empty(0)])
    flat_cells = np.concatenate([np.full(len(v), c) for c, v in enumerate(values)] + [np.empty(0, dtype=int)])
    flat_steps = np.concatenate([np.arange(len(v)) for v in values] + [np.empty(0, dtype=int)])
    order = np.lexsort((flat_steps, flat_cells, -flat_values))[:n_more]
    order = order[flat_values[order] > 0]
    taken = np.zeros(len(cells), dtype=np.int64)
    np.maximum.at(taken, flat_cells[order], flat_steps[order] + 1)
    selected = np.concatenate([idx[np.asarray(p[: 1 + t])] for idx, p, t in zip(cells, picks, taken)])
    if progress is not None and reported < n_more:
        progress(n_more - reported)
    if len(selected) < n_select:
        # Every remaining point coincides with a centre: pick any unselected points.
        return _fill_duplicates(selected, n, n_select)
    return selected.astype(np.int64)


def _distances_to(points, norms, index, out=None):
    """Squared distances of ``points`` to one of them, ``points[index]``."""
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, in place in ``out``.
    out = np.dot(points, points[index], out=out)
    out *= -2.0
    out += norms
    out += norms[index]
    out[index] = 0.0  # exactly, despite rounding
    return out


def _extend(points, norms, min_dist, n_steps):
    """Run ``n_steps`` more greedy steps inside one cell (``min_dist`` in place).

    Returns the farthest distance before each step and the point it picked.
    """
    values = np.empty(n_steps, dtype=np.float64)
    picks = np.empty(n_steps, dtype=np.int64)
    dist = np.empty_like(min_dist)
    for step in range(n_steps):
        pick = int(min_dist.argmax())
        values[step], picks[step] = min_dist[pick], pick
        np.minimum(min_dist, _distances_to(points, norms, pick, out=dist), out=min_dist)
    return values.tolist(), picks.tolist()


def _fill_duplicates(selected, n, n_select):
    remaining = np.setdiff1d(np.arange(n), selected, assume_unique=False)
    return np.concatenate([selected, remaining[: n_select - len(selected)]]).astype(np.int64)
