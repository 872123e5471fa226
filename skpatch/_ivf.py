"""Inverted-file nearest-neighbour search in torch, exact or approximate.

The memory bank is clustered by a few k-means iterations into lists (as
faiss's IVF-Flat). A query is first compared with the bank patches of its
``n_probe`` nearest lists. That alone is the approximate search. The exact
search then uses the triangle inequality: no patch of list ``j`` (centroid
``c_j``, radius ``r_j`` = distance of its farthest member) can be closer to
query ``q`` than ``||q - c_j|| - r_j``, so only lists whose bound is below the
best distance found so far are searched as well. The result is the
brute-force nearest neighbour; on patch features the two rounds touch a few
percent of the bank.

Queries asking for the same list are processed together as one matrix
product, so no Python loop runs over queries.
"""

import numpy as np
import torch

_KMEANS_ITERATIONS = 5
# k-means is trained on at most this many bank patches per list (the lists
# only steer the search; the exact search is exact whatever their quality).
_TRAIN_PER_LIST = 32
# Relative slack on the pruning bound, against float32 rounding in the
# expanded distances ||q||^2 - 2 q.c + ||c||^2 (a list is searched when in
# doubt, so the slack costs time, never exactness).
_BOUND_SLACK = 1e-4


def default_n_lists(n_bank):
    """About ``2 sqrt(n)`` lists with at least 32 patches each."""
    return max(1, min(int(round(2 * np.sqrt(n_bank))), n_bank // 32))


def build_ivf(bank, n_lists, rng):
    """Cluster ``bank`` (m, d) float32 tensor; return (centroids, assignment, radii).

    k-means is trained on a seeded sample of at most 32 rows per list, then
    every row is assigned to its nearest centroid; a list's radius is the
    largest distance of its rows to the centroid.
    """
    n_lists = int(min(n_lists, len(bank)))
    n_train = min(len(bank), _TRAIN_PER_LIST * n_lists)
    train = bank if n_train == len(bank) else bank[torch.from_numpy(np.sort(rng.choice(len(bank), n_train, replace=False)))]
    centroids = train[torch.from_numpy(rng.choice(len(train), n_lists, replace=False))].clone()
    for _ in range(_KMEANS_ITERATIONS):
        assignment = _nearest_centroid(train, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, train)
        counts = torch.bincount(assignment, minlength=n_lists).to(bank.dtype)
        filled = counts > 0
        # Empty lists keep their previous centroid.
        centroids[filled] = sums[filled] / counts[filled, None]
    assignment = _nearest_centroid(bank, centroids)
    radii = torch.zeros(n_lists, dtype=bank.dtype)
    radii.scatter_reduce_(0, assignment, (bank - centroids[assignment]).norm(dim=1), "amax")
    return centroids, assignment, radii


def _nearest_centroid(points, centroids):
    norms = centroids.square().sum(1)
    out = torch.empty(len(points), dtype=torch.int64)
    step = max(1, 2**24 // max(1, len(centroids)))  # 64 MB of distances at a time
    for start in range(0, len(points), step):
        block = points[start : start + step]
        out[start : start + step] = torch.addmm(norms, block, centroids.T, alpha=-2.0).argmin(1)
    return out


class InvertedLists:
    """A bank whose rows are sorted by list, searched list by list.

    Parameters
    ----------
    bank : tensor of shape (m, d)
        Rows grouped by list: list ``j`` is ``bank[offsets[j]:offsets[j + 1]]``.
    centroids : tensor of shape (n_lists, d)
    radii : tensor of shape (n_lists,)
        Largest distance of a list's rows to its centroid.
    offsets : sequence of n_lists + 1 ints
    groups : tensor of shape (m,) or None
        Group (training image) of every row, for searches that exclude a
        query's own group.
    """

    def __init__(self, bank, centroids, radii, offsets, groups=None):
        self.bank = bank
        self.groups = groups
        self.norms = bank.square().sum(1)
        self.centroids = centroids
        self.centroid_norms = centroids.square().sum(1)
        self.radii = radii
        self.offsets = [int(o) for o in offsets]

    def search(self, queries, n_probe, exact=True, exclude=None):
        """Nearest bank row of each query: (distance, index) tensors.

        With ``exact=False`` only the ``n_probe`` nearest lists are searched.
        ``exclude`` (a tensor of shape (n,), needs ``groups``) gives each query
        a group whose rows it may not match: the search then returns the
        nearest row of another group, and distance ``inf`` (index 0) when
        there is none.
        """
        n = len(queries)
        n_probe = int(min(n_probe, len(self.centroids)))
        query_norms = queries.square().sum(1)
        # Squared distances to the centroids, by the expansion (float32 rounding
        # is accounted for by the slack below).
        centroid_sq = torch.addmm(self.centroid_norms, queries, self.centroids.T, alpha=-2.0)
        centroid_sq.add_(query_norms[:, None])
        probes = centroid_sq.topk(n_probe, largest=False, sorted=False).indices
        best = torch.full((n,), float("inf"))
        best_index = torch.zeros(n, dtype=torch.int64)
        pairs = torch.arange(n).repeat_interleave(n_probe), probes.reshape(-1)
        self._search_pairs(queries, *pairs, best, best_index, exclude)
        if exact and len(self.centroids) > n_probe:
            # A query whose probed lists held only excluded rows has no best
            # yet (inf): every list's bound is below it, so all are searched.
            distance = torch.where(
                torch.isinf(best), best, (queries - self.bank[best_index]).norm(dim=1)
            )
            slack = _BOUND_SLACK * (query_norms[:, None] + self.centroid_norms[None, :])
            bound = (centroid_sq - slack).clamp_min_(0.0).sqrt_().sub_(self.radii[None, :])
            bound.scatter_(1, probes, float("inf"))
            query, lst = torch.nonzero(bound <= distance[:, None] * (1 + _BOUND_SLACK), as_tuple=True)
            self._search_pairs(queries, query, lst, best, best_index, exclude)
        # The winner's distance is recomputed directly: the expansion loses
        # precision for near-duplicates.
        distance = (queries - self.bank[best_index]).norm(dim=1)
        return torch.where(torch.isinf(best), best, distance), best_index

    def _search_pairs(self, queries, query, lst, best, best_index, exclude=None):
        """Update ``best`` (partial squared distances) over (query, list) pairs."""
        if query.numel() == 0:
            return
        order = torch.argsort(lst, stable=True)
        query, lst = query[order], lst[order]
        lists, counts = torch.unique_consecutive(lst, return_counts=True)
        start = 0
        for j, count in zip(lists.tolist(), counts.tolist()):
            asking = query[start : start + count]
            start += count
            lo, hi = self.offsets[j], self.offsets[j + 1]
            if hi == lo:
                continue
            # ||q - m||^2 - ||q||^2 = ||m||^2 - 2 q.m: the same argmin.
            partial = torch.addmm(self.norms[lo:hi], queries[asking], self.bank[lo:hi].T, alpha=-2.0)
            if exclude is not None:
                own = exclude[asking][:, None] == self.groups[None, lo:hi]
                partial.masked_fill_(own, float("inf"))
            value, arg = partial.min(1)
            index = lo + arg
            current = best[asking]
            # Ties go to the lower bank index, as in a brute-force argmin.
            better = (value < current) | ((value == current) & (index < best_index[asking]))
            best[asking[better]] = value[better]
            best_index[asking[better]] = index[better]
