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
# Query-row pairs up to which a few queries are searched by one product with
# the whole bank (64 MiB of float32 distances) rather than list by list.
_BRUTE_FORCE_PAIRS = 2**24
# Queries per block of the bounds' first round (their products with the
# medoids: 8 MiB for 256 lists).
_ROUND_ONE_QUERIES = 8192
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
    return centroids, assignment, _radii(bank, centroids, assignment)


def list_radii(bank, centroids, offsets):
    """Radii of the lists of a bank grouped by list (numpy in, numpy out).

    The same computation as :func:`build_ivf`'s, for a bank whose rows
    changed (rounded) after the lists were built.
    """
    bank, centroids = torch.from_numpy(np.asarray(bank)), torch.from_numpy(np.asarray(centroids))
    counts = torch.from_numpy(np.diff(np.asarray(offsets)))
    assignment = torch.repeat_interleave(torch.arange(len(centroids)), counts)
    return _radii(bank, centroids, assignment).numpy()


def _radii(bank, centroids, assignment):
    """Largest distance of each list's rows to its centroid (0 for an empty list)."""
    radii = torch.zeros(len(centroids), dtype=bank.dtype)
    radii.scatter_reduce_(0, assignment, (bank - centroids[assignment]).norm(dim=1), "amax")
    return radii


def _nearest_centroid(points, centroids):
    norms = centroids.square().sum(1)
    out = torch.empty(len(points), dtype=torch.int64)
    step = max(1, 2**24 // max(1, len(centroids)))  # 64 MB of distances at a time
    for start in range(0, len(points), step):
        block = points[start : start + step]
        out[start : start + step] = torch.addmm(norms, block, centroids.T, alpha=-2.0).argmin(1)
    return out


def nearest_rows(queries, bank, norms, exclude=None, groups=None):
    """Nearest row of ``bank`` for each query, by one product with the whole bank.

    ``norms`` are the rows' squared norms. Ties go to the lower row. With
    ``exclude`` (one group per query) and ``groups`` (one per row), rows of
    the query's own group are skipped, and a query with no other row gets
    distance ``inf`` (row 0). Returns (distance, index) tensors; the
    distance is computed directly (the expansion loses precision for
    near-duplicates).
    """
    # ||q - m||^2 = ||q||^2 - 2 q.m + ||m||^2; the ||q||^2 term does not move the argmin.
    partial = torch.addmm(norms, queries, bank.T, alpha=-2.0)
    if exclude is not None:
        partial.masked_fill_(exclude[:, None] == groups[None, :], float("inf"))
    best, arg = partial.min(1)
    distance = (queries - bank[arg]).norm(dim=1)
    return torch.where(torch.isinf(best), best, distance), arg


def _squared_norms(rows):
    """Squared row norms (several times faster than ``square().sum(1)``; they
    only enter bounds, which carry a slack for rounding)."""
    return torch.linalg.vector_norm(rows, dim=1).square_()


def _probe(queries, centroids, centroid_norms, n_probe):
    """Squared query norms, squared distances to the centroids (by the
    expansion) and the ``n_probe`` nearest lists of each query."""
    query_norms = _squared_norms(queries)
    centroid_sq = torch.addmm(centroid_norms, queries, centroids.T, alpha=-2.0)
    centroid_sq.add_(query_norms[:, None])
    probes = centroid_sq.topk(n_probe, largest=False, sorted=False).indices
    return query_norms, centroid_sq, probes


def _unpruned_pairs(centroid_sq, query_norms, centroid_norms, radii, probes, threshold):
    """(query, list) pairs not probed yet whose bound ``||q - c_j|| - r_j`` is
    not above the query's ``threshold`` distance (with a float32 slack)."""
    slack = _BOUND_SLACK * (query_norms[:, None] + centroid_norms[None, :])
    bound = (centroid_sq - slack).clamp_min_(0.0).sqrt_().sub_(radii[None, :])
    bound.scatter_(1, probes, float("inf"))
    return torch.nonzero(bound <= threshold[:, None] * (1 + _BOUND_SLACK), as_tuple=True)


def _by_list(query, lst):
    """``(list, queries asking it)`` for each list named in the pairs."""
    order = torch.argsort(lst, stable=True)
    query, lst = query[order], lst[order]
    lists, counts = torch.unique_consecutive(lst, return_counts=True)
    return zip(lists.tolist(), torch.split(query, counts.tolist()))


class _ListsOfRows:
    """A bank whose rows are grouped by list, with what both searches need:
    the rows' squared norms and the lists' centroids, their squared norms,
    radii and row offsets."""

    def __init__(self, bank, centroids, radii, offsets):
        self.bank = bank
        self.norms = bank.square().sum(1)
        self.centroids = centroids
        self.centroid_norms = centroids.square().sum(1)
        self.radii = radii
        self.offsets = [int(o) for o in offsets]


class InvertedLists(_ListsOfRows):
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
        super().__init__(bank, centroids, radii, offsets)
        self.groups = groups
        self._medoids = None

    def medoids(self):
        """The row nearest to each non-empty list's centroid, and that list:
        two int64 tensors of the same length."""
        if self._medoids is None:
            rows, owners = [], []
            for j, (lo, hi) in enumerate(zip(self.offsets[:-1], self.offsets[1:])):
                if hi > lo:
                    rows.append(lo + int((self.bank[lo:hi] - self.centroids[j]).square().sum(1).argmin()))
                    owners.append(j)
            device = self.bank.device
            self._medoids = (
                torch.tensor(rows, dtype=torch.int64, device=device),
                torch.tensor(owners, dtype=torch.int64, device=device),
            )
        return self._medoids

    def search_lists(self, queries, lists):
        """Nearest row of each query among the rows of its own lists.

        ``lists`` is a (n, k) tensor of list indices per query. Returns the
        (distance, index) tensors, the distance computed directly.
        """
        _, best_index = self._best_in_lists(queries, lists)
        return (queries - self.bank[best_index]).norm(dim=1), best_index

    def _best_in_lists(self, queries, lists, exclude=None):
        """Best partial squared distance and row of each query over its own
        lists (a (n, k) tensor of list indices); ``inf`` (row 0) where none."""
        n, k = lists.shape
        best = torch.full((n,), float("inf"), device=queries.device)
        best_index = torch.zeros(n, dtype=torch.int64, device=queries.device)
        query = torch.arange(n, device=queries.device).repeat_interleave(k)
        self._search_pairs(queries, query, lists.reshape(-1), best, best_index, exclude)
        return best, best_index

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
        # Squared distances to the centroids by the expansion (float32
        # rounding is accounted for by the bound's slack).
        query_norms, centroid_sq, probes = _probe(queries, self.centroids, self.centroid_norms, n_probe)
        best, best_index = self._best_in_lists(queries, probes, exclude)
        if exact and len(self.centroids) > n_probe:
            # A query whose probed lists held only excluded rows has no best
            # yet (inf): every list's bound is below it, so all are searched.
            distance = torch.where(
                torch.isinf(best), best, (queries - self.bank[best_index]).norm(dim=1)
            )
            query, lst = _unpruned_pairs(centroid_sq, query_norms, self.centroid_norms, self.radii, probes, distance)
            self._search_pairs(queries, query, lst, best, best_index, exclude)
        # The winner's distance is recomputed directly: the expansion loses
        # precision for near-duplicates.
        distance = (queries - self.bank[best_index]).norm(dim=1)
        return torch.where(torch.isinf(best), best, distance), best_index

    def search_brute_force(self, queries):
        """Nearest bank row of each query by products with the whole bank:
        the exact search's result (ties to the lower index), without lists."""
        step = max(1, _BRUTE_FORCE_PAIRS // len(self.bank))
        distance = torch.empty(len(queries), device=queries.device)
        index = torch.empty(len(queries), dtype=torch.int64, device=queries.device)
        for start in range(0, len(queries), step):
            block = slice(start, start + step)
            distance[block], index[block] = nearest_rows(queries[block], self.bank, self.norms)
        return distance, index

    def _search_pairs(self, queries, query, lst, best, best_index, exclude=None):
        """Update ``best`` (partial squared distances) over (query, list) pairs."""
        if query.numel() == 0:
            return
        for j, asking in _by_list(query, lst):
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


def image_max_weighted_distance(lists, queries, weights, n_per_image, n_probe, n_candidates=4):
    """Largest ``distance to the nearest row x that row's weight`` of each image.

    Equal to the maximum over each image's queries of the exact search's
    weighted distance, without searching every query: a query whose weighted
    distance provably cannot exceed the largest one already known for its
    image is left out. An upper bound on a query's nearest distance is its
    distance to any row; times the largest weight, it bounds the query's
    weighted distance. Three rounds, each on fewer queries:

    1. the distances to one row per list (the row nearest the centroid),
       computed for every query as one matrix product, bound every query;
       the ``n_candidates`` queries of each image with the largest estimate
       are searched exactly, which sets a known maximum per image;
    2. the queries whose bound is above their image's known maximum search
       the lists of their ``n_probe`` nearest of those rows: a tighter
       bound, and new candidates;
    3. those still above it are searched exactly.

    On patch features of one product the known maximum is near the true one
    after round 1, and fewer than 1% of the queries reach round 3.

    Parameters
    ----------
    lists : InvertedLists
    queries : tensor of shape (n_images * n_per_image, d)
        Image by image.
    weights : tensor of shape (m,)
        Non-negative weight of each bank row.
    n_per_image : int
    n_probe : int
    n_candidates : int, default=4
        Queries per image searched exactly in each of the first two rounds.

    Returns
    -------
    maxima : tensor of shape (n_images,)
    """
    n = len(queries)
    n_images = n // n_per_image
    device = queries.device
    image = torch.arange(n_images, device=device).repeat_interleave(n_per_image)
    # Rounding: a skipped query's directly computed weighted distance is at
    # most its bound times (1 + float32 error), far below this slack.
    largest_weight = weights.max() * (1 + _BOUND_SLACK)
    known = torch.full((n_images,), -float("inf"), device=device)
    resolved = torch.zeros(n, dtype=torch.bool, device=device)

    def search_exactly(which):
        which = which[~resolved[which]]
        if which.numel() == 0:
            return
        if which.numel() * len(lists.bank) <= _BRUTE_FORCE_PAIRS:
            # The candidates lie far from the bank, where the bounds prune
            # few lists: one product with the whole bank is then cheaper.
            distance, index = lists.search_brute_force(queries[which])
        else:
            distance, index = lists.search(queries[which], n_probe, exact=True)
        known.scatter_reduce_(0, image[which], distance * weights[index], "amax")
        resolved[which] = True

    def candidates(estimate):
        """The ``n_candidates`` queries of each image with the largest finite estimate."""
        k = min(n_candidates, n_per_image)
        top = estimate.view(n_images, n_per_image).topk(k, dim=1)
        which = top.indices + torch.arange(n_images, device=device)[:, None] * n_per_image
        return which[torch.isfinite(top.values)]

    # Round 1: distance to each list's row nearest its centroid, by the
    # expansion, raised by the slack so that it stays an upper bound.
    medoids, owners = lists.medoids()
    query_norms = _squared_norms(queries)
    k = min(n_probe, len(medoids))
    # The n_probe nearest medoids of every query, block by block (a block's
    # products stay small; only their k smallest are kept, for round 2).
    nearest_value = torch.empty((n, k), device=device)
    nearest = torch.empty((n, k), dtype=torch.int64, device=device)
    medoid_rows, medoid_norms = lists.bank[medoids].T.contiguous(), lists.norms[medoids]
    for start in range(0, n, _ROUND_ONE_QUERIES):
        block = slice(start, start + _ROUND_ONE_QUERIES)
        partial = torch.addmm(medoid_norms, queries[block], medoid_rows, alpha=-2.0)
        nearest_value[block], nearest[block] = partial.topk(k, dim=1, largest=False, sorted=True)
    value, arg = nearest_value[:, 0], nearest[:, 0]
    slack = _BOUND_SLACK * (query_norms + lists.norms[medoids][arg])
    bound = (value + query_norms + slack).clamp_min_(0.0).sqrt_()
    search_exactly(candidates(bound * weights[medoids][arg]))
    # Round 2: the queries still in doubt search the lists of their n_probe
    # nearest medoids (the medoids stand in for the centroids here, which
    # spares another product).
    doubt = torch.nonzero(bound * largest_weight > known[image]).squeeze(1)
    doubt = doubt[~resolved[doubt]]
    if doubt.numel():
        distance, index = lists.search_lists(queries[doubt], owners[nearest[doubt]])
        estimate = torch.full((n,), -float("inf"), device=device)
        estimate[doubt] = distance * weights[index]
        search_exactly(candidates(estimate))
        # Round 3: the exact search of every query whose bound still reaches
        # its image's known maximum.
        search_exactly(doubt[distance * largest_weight > known[image[doubt]]])
    return known


class GroupedInvertedLists(_ListsOfRows):
    """Inverted lists over the rows of several banks, searched for the
    nearest row *of each bank* in one pass.

    The rows of all the banks (groups) share one set of lists, so that a
    query computes its distances to the centroids once and each list it
    searches costs one matrix product, whatever the number of banks; the
    product's columns are then reduced to one minimum per bank. The exact
    search prunes a list when its triangle-inequality bound is above the
    query's best distance in *every* bank, so each bank's result is its
    exact (brute-force) nearest row, as if it were searched alone.

    Parameters
    ----------
    bank : tensor of shape (m, d)
        Rows grouped by list, and within a list by group (then by
        ``ties``): list ``j`` is ``bank[offsets[j]:offsets[j + 1]]``.
    centroids : tensor of shape (n_lists, d)
    radii : tensor of shape (n_lists,)
    offsets : sequence of n_lists + 1 ints
    groups : tensor of shape (m,) of int64
        The bank (0 .. n_groups - 1) each row belongs to.
    ties : tensor of shape (m,) of int64
        Rank of each row inside its own bank: of two rows at the same
        distance, the lower rank wins, as in a brute-force argmin over
        that bank.
    n_groups : int
    """

    def __init__(self, bank, centroids, radii, offsets, groups, ties, n_groups):
        super().__init__(bank, centroids, radii, offsets)
        self.largest_norm = self.norms.max()
        self.ties = ties
        self.n_groups = int(n_groups)
        # Each list's rows as a (n_groups, width) table of positions in the
        # list, padded with the position one past its end (an inf column):
        # one gather and one min then give every group's nearest row.
        self.layouts = []
        for lo, hi in zip(self.offsets[:-1], self.offsets[1:]):
            counts = torch.bincount(groups[lo:hi], minlength=self.n_groups)
            width = max(1, int(counts.max())) if hi > lo else 1
            layout = torch.full((self.n_groups, width), hi - lo, dtype=torch.int64, device=bank.device)
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.arange(hi - lo, device=bank.device) - starts[groups[lo:hi]]
            layout[groups[lo:hi], rank] = torch.arange(hi - lo, device=bank.device)
            self.layouts.append(layout)
        # The row of each (group, rank): the search keeps ranks, not rows.
        self.rows = torch.zeros((self.n_groups, int(ties.max()) + 1), dtype=torch.int64, device=bank.device)
        self.rows[groups, ties] = torch.arange(len(bank), device=bank.device)

    def max_width(self):
        """Largest number of rows of one group in one list."""
        return max(layout.shape[1] for layout in self.layouts)

    def search(self, queries, n_probe):
        """Exact nearest row of each group for each query.

        Returns
        -------
        distance : tensor of shape (n, n_groups)
            ``inf`` where a group has no row.
        index : tensor of shape (n, n_groups)
            Row of ``bank``.
        """
        n = len(queries)
        n_probe = int(min(n_probe, len(self.centroids)))
        query_norms, centroid_sq, probes = _probe(queries, self.centroids, self.centroid_norms, n_probe)
        device = queries.device
        # The best (partial squared distance, rank) of each query and group,
        # packed in one int64 so that one scatter-min per list keeps it
        # (ties to the lower rank).
        none = _pack(torch.tensor(float("inf")), torch.tensor(_LOW_31)).item()  # no row yet
        best = torch.full((n * self.n_groups,), none, dtype=torch.int64, device=device)
        pairs = torch.arange(n, device=device).repeat_interleave(n_probe), probes.reshape(-1)
        self._search_pairs(queries, *pairs, best)
        if len(self.centroids) > n_probe:
            # A list may be skipped only when its bound is above the best
            # distance of every group (inf while a group has no candidate
            # yet: then every list is searched).
            partial, _ = _unpack(best.view(n, self.n_groups))
            # Squared distances by the expansion, raised by the same relative
            # slack as the bounds, so that its rounding cannot prune a list.
            slack = _BOUND_SLACK * (query_norms + self.largest_norm)
            worst = (partial.max(1).values + query_norms + slack).clamp_min_(0.0).sqrt_()
            query, lst = _unpruned_pairs(centroid_sq, query_norms, self.centroid_norms, self.radii, probes, worst)
            self._search_pairs(queries, query, lst, best)
        partial, rank = _unpack(best.view(n, self.n_groups))
        groups = torch.arange(self.n_groups, device=device)
        index = self.rows[groups[None, :], rank.clamp_max_(self.rows.shape[1] - 1)]
        # Distances of the winners recomputed directly (the expansion loses
        # precision for near-duplicates), in blocks of queries small enough
        # for the differences to stay in cache (3-4x faster than whole columns).
        distance = torch.empty_like(partial)
        step = max(1, _RECOMPUTE_FLOATS // (self.n_groups * queries.shape[1]))
        for start in range(0, n, step):
            block = slice(start, start + step)
            distance[block] = (queries[block, None, :] - self.bank[index[block]]).norm(dim=2)
        return torch.where(torch.isinf(partial), partial, distance), index

    def _search_pairs(self, queries, query, lst, best):
        """Update ``best`` (packed, flat (n * n_groups,)) over (query, list) pairs."""
        if query.numel() == 0:
            return
        groups = torch.arange(self.n_groups, device=queries.device)
        for j, asking in _by_list(query, lst):
            lo, hi = self.offsets[j], self.offsets[j + 1]
            if hi == lo:
                continue
            partial = torch.addmm(self.norms[lo:hi], queries[asking], self.bank[lo:hi].T, alpha=-2.0)
            partial = torch.nn.functional.pad(partial, (0, 1), value=float("inf"))
            layout = self.layouts[j]
            # (a, n_groups, width): each group's rows of the list; the min
            # takes the first of equal values, the lowest rank in the list.
            value, arg = partial[:, layout].min(2)
            position = layout.gather(1, arg.T).T.clamp_max_(hi - lo - 1)
            packed = _pack(value, self.ties[lo + position])
            best.scatter_reduce_(0, (asking[:, None] * self.n_groups + groups).reshape(-1), packed.reshape(-1), "amin")


_LOW_31 = 0x7FFFFFFF
# Floats of query-minus-winner differences recomputed at a time (4 MiB).
_RECOMPUTE_FLOATS = 2**20


def _pack(value, rank):
    """float32 ``value`` and int64 ``rank`` (< 2**31) as int64 keys ordered as
    the pairs ``(value, rank)``: the float's bits made order-preserving
    (negative values' magnitude bits flipped) in the high half."""
    bits = value.contiguous().view(torch.int32)
    ordered = bits ^ ((bits >> 31) & _LOW_31)
    return (ordered.to(torch.int64) << 32) | rank


def _unpack(key):
    """The (float32 value, int64 rank) pairs of :func:`_pack`'s keys."""
    ordered = (key >> 32).to(torch.int32)
    return (ordered ^ ((ordered >> 31) & _LOW_31)).view(torch.float32), key & 0xFFFFFFFF


def build_grouped_lists(banks, rng, device="cpu"):
    """:class:`GroupedInvertedLists` over the rows of ``banks`` (a list of
    (m_g, d) float32 arrays); return it and ``order``, the row of the
    concatenated banks at each of its rows.

    The lists are a k-means clustering of all the rows (as
    :func:`build_ivf`); inside a list, rows go by bank, then by their rank
    in their bank.
    """
    bank = np.concatenate(banks).astype(np.float32, copy=False)
    groups = np.concatenate([np.full(len(b), g) for g, b in enumerate(banks)])
    ties = np.concatenate([np.arange(len(b)) for b in banks])
    centroids, assignment, radii = build_ivf(torch.from_numpy(bank), default_n_lists(len(bank)), rng)
    assignment = assignment.numpy()
    order = np.lexsort((ties, groups, assignment))
    offsets = np.concatenate([[0], np.cumsum(np.bincount(assignment, minlength=len(centroids)))])

    def to(array):
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)

    lists = GroupedInvertedLists(
        to(bank[order]), centroids.to(device), radii.to(device), offsets, to(groups[order]), to(ties[order]), len(banks)
    )
    return lists, order
