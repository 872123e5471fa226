"""The memory bank: a weighted coreset of the kept training patches."""

import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._chunking import rows_per_chunk
from ._device import resolve_device
from ._ivf import InvertedLists, build_ivf, default_n_lists, image_max_weighted_distance, nearest_rows
from ._kcenter import greedy_kcenter
from ._patches import PatchFeatureStepMixin, check_n_features, check_patch_features, float32_tensor, on_grid
from ._progress import progress
from ._threads import torch_threads

# The error of a fit whose discriminator kept no patch (also skpatch.dask's).
ALL_REMOVED = "Every training patch was removed; lower the discriminator's threshold or dilation."
# Target points per k-d cell for n_cells="auto": small enough that a cell's
# projected features stay in the CPU cache during its distance updates.
_POINTS_PER_CELL = 1024
# Neighbours requested from pynndescent per query (only the first is used).
_PYNNDESCENT_K = 10


class WeightedCoreset(PatchFeatureStepMixin, BaseEstimator):
    """Memory bank of kept training patches, chosen by greedy k-center, with weights.

    :meth:`fit` selects ``sampling_ratio`` of all training patches by
    approximate greedy k-center on a random projection of the features, never
    selecting a patch that :class:`NoiseDiscriminator` removed, and keeps each
    selected patch's soft weight. :meth:`score_samples` scores a test patch
    by its distance to the nearest memory patch times that patch's weight.

    Parameters
    ----------
    sampling_ratio : float in (0, 1], default=0.1
        Size of the memory bank as a fraction of all training patches (as in
        the SoftPatch code), capped at the number of kept patches.

    projection_dim : int or None, default=128
        Dimension of the seeded Gaussian random projection used for the
        k-center selection (PatchCore uses 128). ``None`` selects on the full
        features. Scoring always uses the full features.

    n_cells : "auto" or int, default="auto"
        Number of k-d tree cells (rounded up to a power of two) the greedy
        selection is localised to; see Notes. 1 is exact greedy k-center.
        ``"auto"`` uses about 1024 patches per cell.

    search : {"exact", "brute", "ivf", "pynndescent"}, default="exact"
        Nearest-neighbour search at scoring time:

        - ``"exact"``: an inverted file with triangle-inequality pruning.
          The bank is split into k-means lists; each query is compared with
          its ``n_probe`` nearest lists, then with every list that could
          still hold a closer patch (``||q - centroid|| - radius`` below the
          best distance so far). It returns the same neighbour as
          ``"brute"`` at a few percent of its cost on patch features.
        - ``"brute"``: every query against the whole bank, in chunks whose
          size follows scikit-learn's ``working_memory``, so memory stays
          bounded for any bank.
        - ``"ivf"``: approximate; only the ``n_probe`` nearest lists (faiss's
          IVF-Flat).
        - ``"pynndescent"``: approximate graph index.

        ``benchmarks/speed.py`` reports how often the approximate searches
        miss the true nearest patch.

    n_probe : int, default=2
        Lists searched first (``"exact"``) or only (``"ivf"``) per query, of
        about ``2 sqrt(n_memory)`` lists. For ``"exact"`` it only changes
        the speed.

    random_state : int, RandomState instance or None, default=None
        Seeds the projection, the k-d cells' first centres and pynndescent.

    n_jobs : int, default=None
        Torch threads; ``None`` keeps torch's setting, -1 uses all cores.

    device : str, default="auto"
        Where the nearest-neighbour search runs (``"exact"``, ``"brute"``
        and ``"ivf"``; pynndescent runs on the CPU): ``"auto"`` (CUDA if
        available, then Apple's MPS, else the CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``"mps"``. The selection and the fitted attributes
        stay on the CPU (numpy); the bank is copied to the device for each
        search.

    verbose : int, default=0
        Show a progress bar during selection when positive.

    Attributes
    ----------
    memory_bank_ : ndarray of shape (n_memory, n_features), float32
        The selected patch features.

    memory_weights_ : ndarray of shape (n_memory,), float32
        Their soft weights (1 without a noise discriminator).

    sample_indices_ : ndarray of shape (n_memory,)
        Flat indices ``image * n_patches + patch`` of the selected patches in
        the training features.

    memory_images_ : ndarray of shape (n_memory,)
        The training image each memory patch comes from
        (``sample_indices_ // n_patches``), used to score training images
        leave-one-image-out.

    n_features_in_ : int
        Patch feature length seen in fit.

    ivf_centroids_, ivf_radii_, ivf_offsets_ : ndarray
        The inverted file: list centroids, list radii and where each list
        starts in ``memory_bank_``, whose rows are grouped by list (only
        with ``search="exact"`` or ``"ivf"``).

    index_ : pynndescent.NNDescent
        The graph index (only with ``search="pynndescent"``).

    See Also
    --------
    NoiseDiscriminator : Produces the weights and the keep mask.

    Notes
    -----
    Naive greedy k-center costs ``O(k n d)``; here the projected patches are
    split into k-d cells, the greedy order stays global but each new centre
    only updates distances in its own cell (see ``skpatch._kcenter``). On
    200 images x 784 patches this selects 10% in about half a second on two
    cores (3 s for 1000 images); ``benchmarks/speed.py`` compares its
    coverage radius and AUROC with the exact algorithm.

    The default exact search gives the brute-force neighbour (ties aside)
    but searches lists in two rounds: the ``n_probe`` lists nearest to the
    query, then each list that the triangle inequality cannot rule out. On
    the MVTec AD bottle features this touches a few percent of the bank
    (5x faster than brute force); on test patches far from every memory
    patch, fewer lists can be ruled out (2-3x on the synthetic set).

    :meth:`fit` runs public phases, which :func:`skpatch.dask.fit` runs on
    partitions of the patches (a composable coreset): :meth:`bank_size`,
    :meth:`projection_matrix` and :meth:`project`, :meth:`select`, and
    :meth:`set_memory_bank`, which stores the bank and builds its index.

    Examples
    --------
    >>> import numpy as np
    >>> from skpatch import WeightedCoreset
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(10, 16, 8)).astype(np.float32)
    >>> coreset = WeightedCoreset(sampling_ratio=0.25, random_state=0).fit(X)
    >>> coreset.memory_bank_.shape
    (40, 8)
    >>> coreset.score_samples(X[:2]).shape
    (2, 16)
    """

    _parameter_constraints = {
        "sampling_ratio": [Interval(Real, 0, 1, closed="right")],
        "projection_dim": [Interval(Integral, 1, None, closed="left"), None],
        "n_cells": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "search": [StrOptions({"exact", "brute", "ivf", "pynndescent"})],
        "n_probe": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "device": [str],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        sampling_ratio=0.1,
        *,
        projection_dim=128,
        n_cells="auto",
        search="exact",
        n_probe=2,
        random_state=None,
        n_jobs=None,
        device="auto",
        verbose=0,
    ):
        self.sampling_ratio = sampling_ratio
        self.projection_dim = projection_dim
        self.n_cells = n_cells
        self.search = search
        self.n_probe = n_probe
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.device = device
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Select the memory bank.

        Parameters
        ----------
        X : ndarray of shape (n_images, h, w, n_features), (n_images, n_patches, n_features) or WeightedPatches
            Training patch features, or the output of
            :meth:`NoiseDiscriminator.fit_transform` (weights and keep mask).
        y : None
            Ignored.

        Returns
        -------
        self : WeightedCoreset
        """
        features, weights, kept = check_patch_features(X, allow_weighted=True)
        n_images, n_patches, n_features = features.shape
        candidates = np.flatnonzero(kept.reshape(-1))
        if candidates.size == 0:
            raise ValueError(ALL_REMOVED)
        n_select = self.bank_size(n_images, n_patches, candidates.size)
        rng = check_random_state(self.random_state)
        flat = features.reshape(-1, n_features)
        with torch_threads(self.n_jobs):
            points = self.project(flat, candidates, self.projection_matrix(n_features, rng))
            chosen = self.select(points, n_select, rng)
        indices = candidates[chosen]
        return self.set_memory_bank(indices, flat[indices], weights.reshape(-1)[indices], n_patches, rng)

    # -- the phases of fit -----------------------------------------------------
    # fit = bank_size, projection_matrix -> project -> select -> set_memory_bank.
    # skpatch.dask runs the same phases on partitions of the patches (a
    # composable coreset: select on each, then on the union) and ends in
    # set_memory_bank as fit does.

    def bank_size(self, n_images, n_patches, n_candidates=None, *, scale=1.0):
        """Number of memory patches selected from ``n_images * n_patches`` patches.

        Parameters
        ----------
        n_images, n_patches : int
            The training images and patches per image (or positions) the
            bank is selected from.
        n_candidates : int, default=None
            The patches that may be selected (those kept); the size is
            capped at it. None means no cap.
        scale : float, default=1.0
            Multiplies the size (a distributed fit's partial coresets hold
            more than their share).

        Returns
        -------
        n_select : int
            ``ceil(scale * sampling_ratio * n_images * n_patches)``, at
            least 1 and at most ``n_candidates``.
        """
        # The 1e-9 keeps 0.05 * 60 from rounding up to 4 through float error.
        n_select = max(1, math.ceil(scale * self.sampling_ratio * n_images * n_patches - 1e-9))
        return n_select if n_candidates is None else min(n_candidates, n_select)

    def projection_matrix(self, n_features, rng):
        """The seeded Gaussian random projection of the selection.

        Parameters
        ----------
        n_features : int
            Patch feature length.
        rng : numpy.random.RandomState
            The fit's random state (``check_random_state(random_state)``);
            the matrix is its first draw.

        Returns
        -------
        projection : torch.Tensor of shape (n_features, projection_dim) or None
            None (nothing drawn) when ``projection_dim`` is None or not
            below ``n_features``.
        """
        if self.projection_dim is None or self.projection_dim >= n_features:
            return None
        projection = rng.standard_normal((n_features, self.projection_dim)).astype(np.float32)
        projection /= np.sqrt(self.projection_dim, dtype=np.float32)
        return torch.from_numpy(projection)

    def project(self, X, candidates, projection):
        """The candidate patches, projected, as the selection sees them.

        Parameters
        ----------
        X : ndarray of shape (n_rows, n_features)
            Patch features, one row per patch.
        candidates : ndarray of int
            The rows that may be selected (increasing).
        projection : torch.Tensor or None
            From :meth:`projection_matrix`; None keeps the features.

        Returns
        -------
        points : torch.Tensor of shape (len(candidates), n_dims), float32
        """
        n_features = X.shape[1]
        # Project contiguous chunks of rows and keep their candidates: no
        # gather of the full-width features (the candidates may not fit in
        # memory twice, and a gather costs as much as the product).
        out_dim = n_features if projection is None else projection.shape[1]
        points = torch.empty((candidates.size, out_dim), dtype=torch.float32)
        is_candidate = np.zeros(len(X), dtype=bool)
        is_candidate[candidates] = True
        step = rows_per_chunk(4 * (2 * n_features + out_dim))
        filled = 0
        for start in range(0, len(X), step):
            keep = torch.from_numpy(is_candidate[start : start + step])
            block = float32_tensor(X[start : start + step])
            if projection is not None:
                block = block @ projection
            chosen = block[keep]
            points[filled : filled + len(chosen)] = chosen
            filled += len(chosen)
        return points

    def select(self, points, n_select, rng):
        """Greedy k-center on the projected points (cell-local, see Notes).

        Parameters
        ----------
        points : torch.Tensor or ndarray of shape (n_points, n_dims)
            From :meth:`project`.
        n_select : int
            Centres to select, from :meth:`bank_size`.
        rng : numpy.random.RandomState
            Chooses each cell's first centre.

        Returns
        -------
        chosen : ndarray of shape (n_select,), dtype int64
            Rows of ``points``.
        """
        bar = progress(range(n_select), enabled=self.verbose > 0, total=n_select, desc="coreset")
        return greedy_kcenter(
            points, n_select, n_cells=self._n_cells(len(points)), rng=rng,
            progress=(lambda k: bar.update(k)) if self.verbose > 0 else None,
        )

    def set_memory_bank(self, sample_indices, bank, weights, n_patches, rng):
        """Last phase of :meth:`fit`: store the selected patches and build the search index.

        :meth:`fit` and the distributed fit of :mod:`skpatch.dask` (which
        selects the bank from partial coresets) both end here.

        Parameters
        ----------
        sample_indices : ndarray of shape (n_memory,)
            Flat ``image * n_patches + position`` indices of the selected
            training patches.
        bank : ndarray of shape (n_memory, n_features)
            Their features.
        weights : ndarray of shape (n_memory,)
            Their soft weights.
        n_patches : int
            Patches per training image.
        rng : numpy.random.RandomState
            The fit's random state after the selection (it seeds the index).

        Returns
        -------
        self : WeightedCoreset
        """
        self.sample_indices_ = sample_indices
        self.memory_bank_ = np.ascontiguousarray(bank, dtype=np.float32)
        self.memory_weights_ = np.asarray(weights).astype(np.float32)
        self.n_features_in_ = self.memory_bank_.shape[1]
        if self.search == "pynndescent":
            self.index_ = self._build_index(rng)
        elif self.search in ("exact", "ivf"):
            self._build_inverted_file(rng)
        self.memory_images_ = self.sample_indices_ // n_patches
        return self

    def score_samples(self, X):
        """Negated weighted distance of each test patch to the memory bank.

        Parameters
        ----------
        X : ndarray of shape (n_images, h, w, n_features) or (n_images, n_patches, n_features)

        Returns
        -------
        scores : ndarray of shape (n_images, h, w) or (n_images, n_patches)
            ``-(distance to nearest memory patch x its weight)``, shaped as
            the patches of ``X``; higher is more normal, as in
            scikit-learn's outlier detectors.
        """
        check_is_fitted(self, "memory_bank_")
        features = check_n_features(self, X)
        queries = features.reshape(-1, features.shape[2])
        with torch_threads(self.n_jobs):
            distance, nearest = self.kneighbors(queries)
        return on_grid(-(distance * self.memory_weights_[nearest]).reshape(features.shape[:2]), X)

    def min_score_samples(self, X):
        """Lowest patch score of each image: the minimum of ``score_samples(X)`` over its patches.

        What an image score that is the largest patch distance needs. With
        ``search="exact"`` the search is pruned by bounds: a patch whose
        weighted distance cannot exceed the largest one already found in its
        image is not searched to the end (see
        ``skpatch._ivf.image_max_weighted_distance``), about 2-3x faster on
        MVTec AD bottle. The other searches score every patch. As between
        any two searches, a patch whose two nearest memory patches are at
        the same distance to float32 rounding may be matched to either.

        Parameters
        ----------
        X : ndarray of shape (n_images, h, w, n_features) or (n_images, n_patches, n_features)

        Returns
        -------
        scores : ndarray of shape (n_images,), float32

        Examples
        --------
        >>> import numpy as np
        >>> from skpatch import WeightedCoreset
        >>> X = np.random.default_rng(0).normal(size=(10, 16, 8)).astype(np.float32)
        >>> lowest = WeightedCoreset(random_state=0).fit(X[:8]).min_score_samples(X[8:])
        >>> lowest.shape
        (2,)
        """
        check_is_fitted(self, "memory_bank_")
        features = check_n_features(self, X)
        if self.search != "exact":
            return self.score_samples(features).min(axis=1)
        n_images, n_patches, n_features = features.shape
        device = resolve_device(self.device)
        lists = self._inverted_lists(device)
        weights = torch.from_numpy(self.memory_weights_).to(device)
        scores = np.empty(n_images, dtype=np.float32)
        step = max(1, self._queries_per_chunk() // n_patches)  # whole images
        with torch_threads(self.n_jobs):
            for start in range(0, n_images, step):
                queries = float32_tensor(features[start : start + step].reshape(-1, n_features)).to(device)
                maxima = image_max_weighted_distance(lists, queries, weights, n_patches, self.n_probe)
                scores[start : start + step] = -maxima.cpu().numpy()
        return scores

    def score_held_out(self, X, images):
        """:meth:`score_samples` of training images, each without its own patches.

        The honest in-sample score of a training image: the memory patches
        taken from that image itself are left out of its search, so a
        defective training image cannot match its own defect
        (leave-one-image-out). The estimators' ``train_scores_`` and
        ``offset_`` come from it.

        Parameters
        ----------
        X : ndarray of shape (n_images, h, w, n_features) or (n_images, n_patches, n_features)
            Features of training images.
        images : ndarray of shape (n_images,)
            The training index of each image of ``X``; memory patches taken
            from that image (``memory_images_``) are not searched for it.

        Returns
        -------
        scores : ndarray of shape (n_images, h, w) or (n_images, n_patches)
            As :meth:`score_samples`; ``-inf`` where every memory patch comes
            from the image itself (a bank built from one image).

        The search is exact (brute force or the pruned inverted file), also
        for ``search="pynndescent"``; ``search="ivf"`` stays approximate, as
        at test time.
        """
        check_is_fitted(self, "memory_bank_")
        features = check_n_features(self, X)
        queries = features.reshape(-1, features.shape[2])
        exclude = np.repeat(np.asarray(images, dtype=np.int64), features.shape[1])
        device = resolve_device(self.device)
        with torch_threads(self.n_jobs):
            if self.search in ("exact", "ivf"):
                distance, nearest = self._ivf_nearest(queries, self.search == "exact", device, exclude)
            else:
                distance, nearest = _exact_nearest(
                    queries, self.memory_bank_, device, exclude, self.memory_images_
                )
        scores = -(distance * self.memory_weights_[nearest])
        scores[np.isinf(distance)] = -np.inf
        return on_grid(scores.reshape(features.shape[:2]), X)

    def kneighbors(self, patches):
        """Distance and index of the nearest memory patch for each row.

        Parameters
        ----------
        patches : ndarray of shape (n_queries, n_features)

        Returns
        -------
        distance : ndarray of shape (n_queries,), float32
        index : ndarray of shape (n_queries,), int64
        """
        check_is_fitted(self, "memory_bank_")
        device = resolve_device(self.device)
        if self.search == "pynndescent":
            # Asking for several neighbours widens the graph search: with k=1
            # pynndescent misses the true nearest patch far more often.
            k = min(_PYNNDESCENT_K, len(self.memory_bank_))
            index, distance = self.index_.query(np.asarray(patches, dtype=np.float32), k=k)
            return distance[:, 0].astype(np.float32), index[:, 0].astype(np.int64)
        if self.search in ("exact", "ivf"):
            return self._ivf_nearest(patches, exact=self.search == "exact", device=device)
        return _exact_nearest(patches, self.memory_bank_, device)

    def _build_inverted_file(self, rng):
        """Cluster the bank into lists and regroup its rows list by list."""
        bank = torch.from_numpy(self.memory_bank_)
        with torch_threads(self.n_jobs):
            centroids, assignment, radii = build_ivf(bank, default_n_lists(len(bank)), rng)
        order = torch.argsort(assignment, stable=True).numpy()
        self.sample_indices_ = self.sample_indices_[order]
        self.memory_bank_ = np.ascontiguousarray(self.memory_bank_[order])
        self.memory_weights_ = self.memory_weights_[order]
        counts = np.bincount(assignment.numpy(), minlength=len(centroids))
        self.ivf_offsets_ = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.ivf_centroids_, self.ivf_radii_ = centroids.numpy(), radii.numpy()

    def _inverted_lists(self, device, groups=None):
        return InvertedLists(
            torch.from_numpy(self.memory_bank_).to(device), torch.from_numpy(self.ivf_centroids_).to(device),
            torch.from_numpy(self.ivf_radii_).to(device), self.ivf_offsets_, groups,
        )

    def _ivf_nearest(self, patches, exact, device, exclude=None):
        groups = None if exclude is None else torch.from_numpy(self.memory_images_).to(device)
        lists = self._inverted_lists(device, groups)
        distance = np.empty(len(patches), dtype=np.float32)
        index = np.empty(len(patches), dtype=np.int64)
        step = self._queries_per_chunk()
        for start in range(0, len(patches), step):
            q = float32_tensor(patches[start : start + step]).to(device)
            own = None if exclude is None else torch.from_numpy(exclude[start : start + step]).to(device)
            d, i = lists.search(q, self.n_probe, exact=exact, exclude=own)
            distance[start : start + step], index[start : start + step] = d.cpu().numpy(), i.cpu().numpy()
        return distance, index

    def _queries_per_chunk(self):
        """Queries searched at a time through the inverted file: per query,
        its distances and bounds to every list, plus its share of the
        per-list products."""
        return rows_per_chunk(4 * (4 * len(self.ivf_centroids_) + 4 * self.memory_bank_.shape[1]))

    def _n_cells(self, n_candidates):
        wanted = max(1, n_candidates // _POINTS_PER_CELL) if self.n_cells == "auto" else self.n_cells
        return 1 << (int(wanted) - 1).bit_length()

    def _build_index(self, rng):
        from pynndescent import NNDescent

        return NNDescent(
            self.memory_bank_, n_neighbors=min(30, len(self.memory_bank_) - 1) or 1,
            random_state=rng.randint(np.iinfo(np.int32).max), n_jobs=1 if self.n_jobs is None else self.n_jobs,
        )


def _exact_nearest(queries, bank, device="cpu", exclude=None, groups=None):
    """Exact nearest neighbour by chunked matrix products; O(chunk x bank) memory.

    With ``exclude`` (one group per query) and ``groups`` (one per bank row),
    rows of the query's own group are skipped; a query with no other row
    gets distance ``inf``.
    """
    bank_t = torch.from_numpy(bank).to(device)
    groups_t = None if groups is None else torch.from_numpy(np.asarray(groups, dtype=np.int64)).to(device)
    bank_norms = bank_t.square().sum(1)
    n = queries.shape[0]
    distance = np.empty(n, dtype=np.float32)
    index = np.empty(n, dtype=np.int64)
    step = rows_per_chunk(4 * (2 * bank.shape[0] + bank.shape[1]))
    for start in range(0, n, step):
        q = float32_tensor(queries[start : start + step]).to(device)
        own = None
        if exclude is not None:
            own = torch.from_numpy(np.asarray(exclude[start : start + step], dtype=np.int64)).to(device)
        d, i = nearest_rows(q, bank_t, bank_norms, own, groups_t)
        distance[start : start + step], index[start : start + step] = d.cpu().numpy(), i.cpu().numpy()
    return distance, index
