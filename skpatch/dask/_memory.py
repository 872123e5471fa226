"""The memory bank as a composable coreset (Malkomes et al., NeurIPS 2015).

Each position chunk runs :class:`~skpatch.WeightedCoreset`'s phases on its
kept patches (:meth:`~skpatch.WeightedCoreset.project`,
:meth:`~skpatch.WeightedCoreset.select` of ``oversample`` times its share of
:meth:`~skpatch.WeightedCoreset.bank_size`); one worker selects again on the
union of those centres (their projected points only), and the client builds
the bank with :meth:`~skpatch.WeightedCoreset.set_memory_bank`, as ``fit``
does.
"""

import numpy as np

from .._coreset import ALL_REMOVED
from .._threads import torch_threads
from ._partitions import block_starts, delayed_task


def fit_coreset(coreset, features, kept, weights, client, oversample, working_memory):
    """Local greedy k-center per position chunk, then greedy k-center on their union.

    A composable coreset needs only some partition of the patches; the
    position chunks of the shuffle are one, and are already where the
    kept mask and weights are. The merge sees only the local centres'
    projected points (the selection runs on them); the full features of
    the chosen centres are then fetched from the local coresets, and the
    bank and its search index are built here, on the client.
    """
    from sklearn.utils import check_random_state

    n_images, n_patches, n_features = features.shape
    rng = check_random_state(coreset.random_state)
    # The single-process projection: the first draw from the same seed.
    projection = coreset.projection_matrix(n_features, rng)
    widths = features.chunks[1]
    seeds = rng.randint(np.iinfo(np.int32).max, size=len(widths) + 1)
    blocks = features.to_delayed().reshape(-1)
    kept_blocks = [None] * len(blocks) if kept is None else kept.to_delayed().reshape(-1)
    weight_blocks = [None] * len(blocks) if weights is None else weights.to_delayed().reshape(-1)
    local = client.compute([
        delayed_task(local_coreset)(
            block, kb, wb, int(start), n_patches, projection, oversample, coreset, int(seed), working_memory
        )
        for block, kb, wb, start, seed in zip(blocks, kept_blocks, weight_blocks, block_starts(widths), seeds)
    ])
    points = [client.submit(projected_part, part, pure=False) for part in local]
    chosen, sizes, rng = client.submit(
        merge_coresets, points, n_images, n_patches, coreset, int(seeds[-1]), working_memory, pure=False
    ).result()
    # The chosen centres' indices, features and weights, part by part.
    ends = np.cumsum(sizes)
    owner = np.searchsorted(ends, chosen, side="right")
    rows = [chosen[owner == i] - (ends[i] - sizes[i]) for i in range(len(local))]
    parts = client.gather(
        [client.submit(part_rows, part, r, pure=False) for part, r in zip(local, rows) if r.size]
    )
    del local, points
    order = np.argsort(owner, kind="stable")  # chosen, grouped by part as fetched
    indices = np.empty(chosen.size, np.int64)
    bank = np.empty((chosen.size, n_features), np.float32)
    bank_weights = np.empty(chosen.size, np.float32)
    indices[order] = np.concatenate([part[0] for part in parts])
    bank[order] = np.concatenate([part[1] for part in parts])
    bank_weights[order] = np.concatenate([part[2] for part in parts])
    with torch_threads(coreset.n_jobs):
        return coreset.set_memory_bank(indices, bank, bank_weights, n_patches, rng)


# -- worker tasks ---------------------------------------------------------------------


def local_coreset(features, kept, weights, start, n_patches, projection, oversample, coreset, seed, working_memory):
    """A position chunk's greedy k-center centres.

    Returns their flat training indices (``image * n_patches + position``),
    projected points, features and weights.
    """
    from sklearn import config_context

    features = np.asarray(features)
    n_images, width, n_features = features.shape
    flat = features.reshape(-1, n_features)
    candidates = np.arange(len(flat)) if kept is None else np.flatnonzero(np.asarray(kept).reshape(-1))
    w = np.ones(len(flat), np.float32) if weights is None else np.asarray(weights, np.float32).reshape(-1)
    if candidates.size == 0:
        dim = n_features if projection is None else projection.shape[1]
        return (np.empty(0, np.int64), np.empty((0, dim), np.float32),
                np.empty((0, n_features), np.float32), np.empty(0, np.float32))
    rng = np.random.RandomState(seed)
    with config_context(working_memory=working_memory), torch_threads(coreset.n_jobs):
        points = coreset.project(flat, candidates, projection).numpy()
        n_local = coreset.bank_size(n_images, width, candidates.size, scale=oversample)
        chosen = coreset.select(points, n_local, rng)
    rows = candidates[chosen]
    image, position = np.divmod(rows, width)
    flat_index = image.astype(np.int64) * n_patches + start + position
    return flat_index, points[chosen], np.ascontiguousarray(flat[rows], dtype=np.float32), w[rows]


def projected_part(part):
    """A local coreset's projected points (all the merge needs)."""
    return part[1]


def part_rows(part, rows):
    """Flat indices, features and weights of a local coreset's ``rows``."""
    return part[0][rows], part[2][rows], part[3][rows]


def merge_coresets(points, n_images, n_patches, coreset, seed, working_memory):
    """Greedy k-center on the union of the local centres' projected points.

    Returns the chosen positions in the union (the local coresets in
    order), the size of each local coreset and the random state after the
    selection, which builds the bank's search index.
    """
    from sklearn import config_context

    sizes = np.array([len(part) for part in points], dtype=np.int64)
    points = np.concatenate(points)
    if len(points) == 0:
        raise ValueError(ALL_REMOVED)
    rng = np.random.RandomState(seed)
    with config_context(working_memory=working_memory), torch_threads(coreset.n_jobs):
        chosen = coreset.select(points, coreset.bank_size(n_images, n_patches, len(points)), rng)
    return np.asarray(chosen, dtype=np.int64), sizes, rng
