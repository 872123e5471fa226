"""Inverted-file nearest-neighbour search (IVF-Flat, as in faiss) in torch.

The memory bank is clustered by a few k-means iterations into ``n_lists``
lists. A query is compared exactly with the bank patches of its ``n_probe``
nearest lists only, so a search costs about ``n_probe / n_lists`` of the
exact one. Queries probing the same list are processed together as one
matrix product, so no Python loop runs over queries.
"""

import numpy as np
import torch

_KMEANS_ITERATIONS = 10


def build_ivf(bank, n_lists, rng):
    """Cluster ``bank`` (m, d) float32 tensor; return (centroids, assignment)."""
    n_lists = int(min(n_lists, len(bank)))
    centroids = bank[torch.from_numpy(rng.choice(len(bank), n_lists, replace=False))].clone()
    for _ in range(_KMEANS_ITERATIONS):
        assignment = _nearest_centroid(bank, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, bank)
        counts = torch.bincount(assignment, minlength=n_lists).to(bank.dtype)
        filled = counts > 0
        # Empty lists keep their previous centroid.
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids, _nearest_centroid(bank, centroids)


def _nearest_centroid(points, centroids):
    norms = centroids.square().sum(1)
    return torch.addmm(norms, points, centroids.T, alpha=-2.0).argmin(1)


def search_ivf(queries, bank, centroids, assignment, n_probe):
    """Approximate nearest bank row for each query: (distance, index) tensors."""
    n_probe = int(min(n_probe, len(centroids)))
    centroid_norms = centroids.square().sum(1)
    probes = torch.addmm(centroid_norms, queries, centroids.T, alpha=-2.0).topk(n_probe, largest=False).indices
    best = torch.full((len(queries),), float("inf"))
    best_index = torch.zeros(len(queries), dtype=torch.int64)
    bank_norms = bank.square().sum(1)
    for lst in torch.unique(probes).tolist():
        members = torch.nonzero(assignment == lst).squeeze(1)
        asking = torch.nonzero((probes == lst).any(1)).squeeze(1)
        if members.numel() == 0 or asking.numel() == 0:
            continue
        partial = torch.addmm(bank_norms[members], queries[asking], bank[members].T, alpha=-2.0)
        value, arg = partial.min(1)
        better = value < best[asking]
        best[asking[better]] = value[better]
        best_index[asking[better]] = members[arg[better]]
    distance = (queries - bank[best_index]).norm(dim=1)
    return distance, best_index


def default_n_lists(n_bank):
    """About sqrt(n) lists with at least 64 patches each, as faiss suggests."""
    return max(1, min(int(np.sqrt(n_bank)), n_bank // 64))
