"""Per-position outlier scores, batched over patch positions in torch.

Each function takes ``Z`` of shape ``(n_positions, n_images, n_features)``:
for every patch position, the patches of all training images at that
position. Scores have shape ``(n_positions, n_images)``; higher means more
unusual at that position. No Python loop runs over positions.
"""

import torch

# 1e-10 keeps the density finite when k neighbours coincide (as in sklearn's LOF).
_EPS = 1e-10


def _pairwise_distances(Z):
    """Euclidean distances within each position, self-distance set to +inf."""
    distances = torch.cdist(Z, Z)
    distances.diagonal(dim1=-2, dim2=-1).fill_(float("inf"))
    return distances


def knn_distance_scores(Z, n_neighbors):
    """Mean distance to the ``n_neighbors`` nearest other images."""
    knn = _pairwise_distances(Z).topk(n_neighbors, dim=-1, largest=False).values
    return knn.mean(dim=-1)


def lof_scores(Z, n_neighbors):
    """Local outlier factor (Breunig et al., 2000), as sklearn computes it.

    Returns ``-negative_outlier_factor_`` of
    :class:`sklearn.neighbors.LocalOutlierFactor` fitted on each position.
    """
    knn_dist, knn_idx = _pairwise_distances(Z).topk(n_neighbors, dim=-1, largest=False)
    # k-distance of every point: distance to its k-th neighbour.
    k_distance = knn_dist[..., -1]
    # reach-dist_k(a, b) = max(k-distance(b), d(a, b)) for b in N_k(a).
    neighbour_k_distance = torch.gather(
        k_distance.unsqueeze(1).expand(-1, k_distance.shape[1], -1), 2, knn_idx
    )
    reach_dist = torch.maximum(knn_dist, neighbour_k_distance)
    lrd = 1.0 / (reach_dist.mean(dim=-1) + _EPS)
    neighbour_lrd = torch.gather(lrd.unsqueeze(1).expand(-1, lrd.shape[1], -1), 2, knn_idx)
    return neighbour_lrd.mean(dim=-1) / lrd


def mahalanobis_scores(Z, shrinkage="auto"):
    """Mahalanobis distance to each position's Gaussian.

    The covariance is shrunk towards a scaled identity (the ridge term),
    ``(1 - a) S + a * tr(S) / d * I``, with ``a`` from the Ledoit-Wolf formula
    when ``shrinkage="auto"``; with fewer images than dimensions the plain
    sample covariance is singular and every image would look equally far.
    """
    n = Z.shape[1]
    centred = Z - Z.mean(dim=1, keepdim=True)
    cov = centred.transpose(1, 2) @ centred / n
    mu = cov.diagonal(dim1=-2, dim2=-1).mean(dim=-1)  # tr(S) / d
    if shrinkage == "auto":
        alpha = _ledoit_wolf_shrinkage(centred, cov, mu)
    else:
        alpha = torch.full_like(mu, float(shrinkage))
    # A tiny floor keeps constant positions (zero variance) factorisable.
    ridge = alpha * mu + 1e-6 * (mu + 1e-12)
    shrunk = (1.0 - alpha)[:, None, None] * cov
    shrunk.diagonal(dim1=-2, dim2=-1).add_(ridge[:, None])
    chol = torch.linalg.cholesky(shrunk)
    # ||L^-1 (x - mean)|| is the Mahalanobis distance.
    whitened = torch.linalg.solve_triangular(chol, centred.transpose(1, 2), upper=False)
    return whitened.square().sum(dim=1).sqrt()


def _ledoit_wolf_shrinkage(centred, cov, mu):
    """Batched Ledoit-Wolf shrinkage, the formula of sklearn.covariance."""
    n, d = centred.shape[1], centred.shape[2]
    squared_norms = centred.square().sum(dim=-1)  # (P, n)
    # beta_ = sum_ij (X2^T X2)_ij = sum_k ||x_k||^4 ; delta_ = ||X^T X||_F^2 / n^2
    beta_ = squared_norms.square().sum(dim=-1)
    delta_ = cov.square().sum(dim=(-2, -1))
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * cov.diagonal(dim1=-2, dim2=-1).sum(dim=-1) + d * mu.square()) / d
    beta = torch.minimum(beta, delta)
    return torch.where(delta > 0, beta / delta.clamp_min(1e-30), torch.zeros_like(delta)).clamp(0.0, 1.0)


def global_ranks(scores):
    """Ranks of all entries scaled to (0, 1]; ties get their average rank."""
    flat = scores.reshape(-1)
    order = torch.argsort(flat, stable=True)
    ranks = torch.empty_like(flat)
    ranks[order] = torch.arange(1, flat.numel() + 1, dtype=flat.dtype)
    # Average ranks over ties so equal scores are treated alike.
    unique, inverse = torch.unique(flat, return_inverse=True)
    if unique.numel() < flat.numel():
        sums = torch.zeros_like(unique).index_add_(0, inverse, ranks)
        counts = torch.zeros_like(unique).index_add_(0, inverse, torch.ones_like(ranks))
        ranks = (sums / counts)[inverse]
    return (ranks / flat.numel()).reshape(scores.shape)
