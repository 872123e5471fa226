"""Noise discrimination: find training patches that are probably defects."""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._alignment import estimate_shifts, shift_grids, unshift_scores
from ._cache import cached_call
from ._chunking import rows_per_chunk
from ._outlier_scores import global_ranks, knn_distance_scores, lof_scores, mahalanobis_scores
from ._patches import (
    PatchFeatureStepMixin,
    WeightedPatches,
    check_n_features,
    check_patch_features,
    float32_tensor,
    patch_grid,
)
from ._threads import torch_threads


class NoiseDiscriminator(PatchFeatureStepMixin, TransformerMixin, BaseEstimator):
    """Score each training patch against the same position in the other images.

    For every patch position, the patches of all training images at that
    position form a small data set; a patch that is far from its peers there
    is probably part of an unlabelled defect. The ``threshold`` fraction of
    patches with the highest scores (over all positions) is removed, and the
    scores of the kept patches become soft weights for the memory bank.

    **Contract in a pipeline.** Like imbalanced-learn's samplers, this step
    changes what flows during fit: ``fit_transform(X)`` returns a
    :class:`~skpatch.WeightedPatches` (all patches, their weights and the keep
    mask) for :class:`WeightedCoreset`, whereas ``transform(X)`` - used at
    prediction time - returns ``X`` unchanged. So ``fit_transform(X)`` differs
    from ``fit(X).transform(X)`` on purpose.

    Parameters
    ----------
    method : {"lof", "nearest", "gaussian", "softpatch+"}, default="lof"
        Outlier score computed per position:

        - ``"nearest"``: mean distance to the ``n_neighbors`` nearest images;
        - ``"lof"``: local outlier factor with ``n_neighbors`` neighbours;
        - ``"gaussian"``: Mahalanobis distance to a Gaussian with shrunk
          covariance (the ridge term, see ``shrinkage``);
        - ``"softpatch+"``: SoftPatch+'s fusion, the mean of the global
          rank-normalised LOF and Gaussian scores.

    threshold : float in [0, 1), default=0.15
        Fraction of all training patches cut (those with the highest
        scores). With ``dilation=0`` this is the share removed; a
        ``dilation`` removes the cut patches' neighbours too. 0 removes
        nothing (soft weighting only).

    n_neighbors : int or "auto", default=6
        Neighbours for ``"nearest"`` and ``"lof"`` (and ``"softpatch+"``).
        Values >= the number of training images are reduced to n_images - 1
        with a warning, as in :class:`sklearn.neighbors.LocalOutlierFactor`.
        ``"auto"`` uses half the training images (``n_images // 2``): a
        defect that recurs at the same position in many images (the same
        part missing, say) forms a dense cluster there that a small ``k``
        takes for normal; as long as fewer than half the images share it,
        each of its patches still has normal patches among its neighbours.

    shrinkage : "auto" or float in [0, 1], default="auto"
        Covariance shrinkage for ``"gaussian"``: ``"auto"`` uses the
        Ledoit-Wolf estimate per position.

    n_components : int or None, default=128
        Scores are computed on a seeded Gaussian random projection of the
        features to this many dimensions (as the official SoftPatch code
        does), which speeds up distances and keeps the Gaussian well posed.
        ``None`` or a value >= n_features uses the features as they are.

    max_shift : int, default=0
        Align the training images before scoring: each image's patch grid is
        moved by the whole-position shift, up to ``max_shift`` positions
        along each axis, that best matches the per-position median of all
        images, and positions are compared in that common frame (see
        :attr:`shifts_`). For parts that sit a little differently in each
        image, where an unaligned position holds different content in
        different images. 0 compares the grids as they are. The shift is
        capped at ``(min(h, w) - 1) // 2`` on both axes; a patch that its
        shift moves out of the common frame takes the score of the nearest
        position that stays in.

    dilation : int, default=0
        Also remove the patches within ``dilation`` grid positions
        (8-neighbourhood, repeated) of every patch that ``threshold``
        removes, in the same image. A defect covers several neighbouring
        positions and each patch feature aggregates its neighbourhood, so
        the kept rim of a removed defect still resembles it and lets the
        same defect match itself. ``threshold`` still sets the share cut by
        score (``score_threshold_``); the share actually removed, ``1 -
        kept_.mean()``, grows with the dilation (for 1: 1.8-3.3x at
        ``threshold=0.15``, 2.5-4x at 0.05 on the hard benchmarks, see
        ``benchmarks/README.md``). 0 removes only the cut. Needs the patch
        grid, which features on their grid carry (as
        :meth:`PatchFeaturizer.transform` returns them); 3-d features need
        ``grid_shape`` in :meth:`fit` or a square number of patches.

    soft_weights : bool, default=True
        If False, every kept patch gets weight 1 (hard removal only).

    random_state : int, RandomState instance or None, default=None
        Seeds the random projection.

    n_jobs : int, default=None
        Torch threads; ``None`` keeps torch's setting, -1 uses all cores.

    Attributes
    ----------
    scores_ : ndarray of shape (n_images, n_patches)
        Outlier score of every training patch (higher = more suspicious).

    kept_ : ndarray of shape (n_images, n_patches), dtype bool
        False for removed patches.

    weights_ : ndarray of shape (n_images, n_patches)
        Soft weight of every patch (removed patches keep theirs for
        inspection; they never reach the memory bank).

    score_threshold_ : float
        Score of the best kept patch ranked just below the removed ones:
        removed patches score at or above it (ties are broken by position,
        so exactly ``floor(threshold * n_patches_total)`` are removed);
        ``inf`` if none was removed.

    n_neighbors_ : int
        Neighbours actually used.

    shifts_ : ndarray of shape (n_images, 2), dtype int
        Shift ``(rows, columns)`` of each training image's patch grid onto the
        common frame: its patch at ``q + shifts_[i]`` was compared with the
        other images' patches aligned to ``q``. All zero when ``max_shift``
        is 0.

    n_features_in_ : int
        Patch feature length seen in fit.

    See Also
    --------
    WeightedCoreset : The memory step that consumes the kept patches.
    sklearn.neighbors.LocalOutlierFactor : The LOF computed here per position.

    Notes
    -----
    Weights, by method: ``"lof"`` uses the LOF value itself (about 1 for
    inliers), as the SoftPatch paper does; ``"nearest"`` and ``"gaussian"``
    divide the score by its median over all patches, so a typical patch has
    weight 1 whatever the feature scale; ``"softpatch+"`` averages the LOF
    weight and the median-scaled Gaussian weight. A test patch matched to a
    memory patch of weight ``w`` gets ``w`` times its distance: suspicious
    memory patches count as less normal.

    The per-position distance blocks take ``n_images**2`` floats each;
    positions are processed in chunks sized by scikit-learn's
    ``working_memory`` setting, so memory stays bounded.

    :meth:`fit` runs three phases, public so that :func:`skpatch.dask.fit`
    runs the same ones where the features are: :meth:`begin_fit` (checks,
    ``n_neighbors_``), :meth:`raw_scores` (the projection, the alignment and
    :meth:`score_positions`, which scores any range of positions) and
    :meth:`fit_from_raw` (the cut and the weights).

    References
    ----------
    .. [1] Jiang et al., "SoftPatch: Unsupervised Anomaly Detection with Noisy
       Data", NeurIPS 2022.
    .. [2] Jiang et al., "SoftPatch+: Fully Unsupervised Anomaly
       Classification and Segmentation", Pattern Recognition 2025,
       arXiv:2412.20870.

    Examples
    --------
    >>> import numpy as np
    >>> from skpatch import NoiseDiscriminator
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(20, 4, 8)).astype(np.float32)
    >>> X[3, 2] += 10.0  # image 3 has a defect at position 2
    >>> disc = NoiseDiscriminator(threshold=0.05, n_neighbors=5).fit(X)
    >>> bool(disc.kept_[3, 2]), int((~disc.kept_).sum())
    (False, 4)
    """

    _parameter_constraints = {
        "method": [StrOptions({"lof", "nearest", "gaussian", "softpatch+"})],
        "threshold": [Interval(Real, 0, 1, closed="left")],
        "n_neighbors": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "shrinkage": [StrOptions({"auto"}), Interval(Real, 0, 1, closed="both")],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "max_shift": [Interval(Integral, 0, None, closed="left")],
        "dilation": [Interval(Integral, 0, None, closed="left")],
        "soft_weights": ["boolean"],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
    }

    def __init__(
        self,
        method="lof",
        *,
        threshold=0.15,
        n_neighbors=6,
        shrinkage="auto",
        n_components=128,
        max_shift=0,
        dilation=0,
        soft_weights=True,
        random_state=None,
        n_jobs=None,
    ):
        self.method = method
        self.threshold = threshold
        self.n_neighbors = n_neighbors
        self.shrinkage = shrinkage
        self.n_components = n_components
        self.max_shift = max_shift
        self.dilation = dilation
        self.soft_weights = soft_weights
        self.random_state = random_state
        self.n_jobs = n_jobs

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, grid_shape=None, cache=None, features_key=None):
        """Score every training patch and choose which to keep.

        Parameters
        ----------
        X : ndarray of shape (n_images, h, w, n_features) or (n_images, n_patches, n_features)
            Patch features of the training images: on their patch grid, as
            :meth:`PatchFeaturizer.transform` returns them, or one row of
            patches per image (row-major over the grid).
        y : None
            Ignored.
        grid_shape : tuple of (int, int), default=None
            The patch grid ``(h, w)`` of 3-d ``X``, needed by ``max_shift``
            and ``dilation``; None means a square grid. Grid-shaped ``X``
            carries its own (a different ``grid_shape`` is an error).
        cache : joblib.Memory or None, default=None
            Where to cache the raw outlier scores, with ``features_key``
            (the estimators pass their ``cache=`` on). A raw score depends
            on the features and on the score's own settings, not on
            ``threshold`` or ``soft_weights``, so a grid over those (or over
            methods sharing a score, as ``"softpatch+"`` shares LOF and
            Gaussian) computes each score once. Without a seeded projection
            nothing can be shared and the scores are computed as without a
            cache.
        features_key : str or None, default=None
            An identifier of ``X`` (the estimators use a hash of the images
            and the featurizer's settings); required with ``cache``.

        Returns
        -------
        self : NoiseDiscriminator
        """
        if (cache is None) != (features_key is None):
            raise ValueError(
                "cache and features_key go together: pass both to cache the raw scores, or neither; "
                f"got cache={cache!r} and features_key={features_key!r}."
            )
        return self._fit(X, cache, features_key, grid_shape=grid_shape)

    def _fit(self, X, memory=None, feature_key=None, grid_shape=None):
        grid_shape = _carried_grid(X, grid_shape)
        features, _, _ = check_patch_features(X)
        grid_shape = self.begin_fit(features.shape, grid_shape)
        names = self.raw_score_names()
        keys = [self._score_key(name, grid_shape) for name in names] if memory is not None else [None]
        if None in keys:
            with torch_threads(self.n_jobs):
                raw, shifts = self.raw_scores(features, grid_shape)
        else:
            cached = memory.cache(_cached_raw_score, ignore=["discriminator", "features", "grid_shape"])
            raw = {}
            for name, key in zip(names, keys):
                raw[name], shifts = cached_call(
                    memory, cached, feature_key, key, discriminator=self, features=features, grid_shape=grid_shape
                )
        return self.fit_from_raw(raw, grid_shape, shifts)

    def _score_key(self, name, grid_shape):
        """Everything raw score ``name`` depends on besides the features, or
        None when it cannot be cached (an unseeded or stateful projection)."""
        projected = self.n_components is not None and self.n_components < self.n_features_in_
        if projected and not isinstance(self.random_state, Integral):
            return None
        key = {"name": name, "n_components": self.n_components if projected else None,
               "random_state": self.random_state if projected else None}
        if name == "gaussian":
            key["shrinkage"] = self.shrinkage
        else:
            key["n_neighbors"] = self.n_neighbors_
        if self.max_shift:
            key["max_shift"], key["grid_shape"] = int(self.max_shift), tuple(grid_shape)
        return key

    def fit_transform(self, X, y=None, *, grid_shape=None, cache=None, features_key=None):
        """Fit, then hand all patches with weights and keep mask to the next step.

        Parameters
        ----------
        X : ndarray
            Training patch features, as in :meth:`fit`.
        y : None
            Ignored.
        grid_shape : tuple of (int, int), default=None
            As in :meth:`fit`.
        cache : joblib.Memory or None, default=None
            As in :meth:`fit`.
        features_key : str or None, default=None
            As in :meth:`fit`.

        Returns
        -------
        patches : WeightedPatches
            ``X`` with ``weights_`` and ``kept_`` (and the grid that ``X``
            carries); see the class docstring.
        """
        self.fit(X, grid_shape=grid_shape, cache=cache, features_key=features_key)
        return WeightedPatches(X, self.weights_, self.kept_)

    def transform(self, X):
        """Pass test features through unchanged (prediction time).

        Parameters
        ----------
        X : ndarray
            Test patch features, on their grid or as rows of patches, with
            ``n_features_in_`` features each.

        Returns
        -------
        X : ndarray
            The same array, checked.
        """
        check_is_fitted(self, "scores_")
        check_n_features(self, X)
        return X

    def _check_grid_shape(self, grid_shape, n_patches):
        """``(h, w)`` with ``h * w == n_patches``; None means a square grid."""
        if grid_shape is None:
            side = int(round(np.sqrt(n_patches)))
            if side * side == n_patches:
                return side, side
            if self.max_shift or self.dilation:
                name = "max_shift" if self.max_shift else "dilation"
                msg = (
                    f"{name} needs the patch grid: {n_patches} patches per image is "
                    "not a square grid, pass grid_shape=(h, w) to fit."
                )
                raise ValueError(msg)
            return 1, n_patches
        h, w = (int(v) for v in grid_shape)
        if h * w != n_patches:
            msg = f"grid_shape {tuple(grid_shape)} does not hold the {n_patches} patches of each image."
            raise ValueError(msg)
        return h, w

    def _check_n_neighbors(self, n_images):
        if self.n_neighbors == "auto":
            # Half the images: a defect that recurs at one position in fewer
            # than half of them still has normal patches among its neighbours.
            return max(1, n_images // 2)
        if self.n_neighbors < n_images:
            return int(self.n_neighbors)
        import warnings

        msg = (
            f"n_neighbors ({self.n_neighbors}) is not less than the number of "
            f"training images ({n_images}); using n_neighbors = {n_images - 1}."
        )
        warnings.warn(msg, UserWarning)
        return n_images - 1

    # -- the phases of fit -----------------------------------------------------
    # fit = begin_fit -> raw_scores -> fit_from_raw. skpatch.dask runs the
    # same phases where the features are: begin_fit and fit_from_raw on the
    # client, score_positions on position chunks held by the workers.

    def begin_fit(self, shape, grid_shape=None):
        """First phase of :meth:`fit`: check the training features' shape.

        Sets ``n_features_in_`` and ``n_neighbors_`` (which needs the number
        of training images; a warning if ``n_neighbors`` is too large).

        Parameters
        ----------
        shape : tuple of (int, int, int)
            ``(n_images, n_patches, n_features)`` of the training features.
        grid_shape : tuple of (int, int), default=None
            As in :meth:`fit`.

        Returns
        -------
        grid_shape : tuple of (int, int)
            The checked patch grid ``(h, w)``.

        Raises
        ------
        ValueError
            With fewer than 2 training images, or a grid that does not hold
            the patches.
        """
        n_images, n_patches, n_features = shape
        if n_images < 2:
            raise ValueError(f"NoiseDiscriminator needs at least 2 training images; got {n_images}.")
        self.n_features_in_ = n_features
        self.n_neighbors_ = self._check_n_neighbors(n_images)
        return self._check_grid_shape(grid_shape, n_patches)

    def raw_score_names(self):
        """The raw scores that ``method`` combines, in order.

        Returns
        -------
        names : tuple of str
            ``("lof", "gaussian")`` for ``"softpatch+"``; the method itself
            otherwise.
        """
        return _NEEDED_SCORES[self.method]

    def raw_scores(self, X, grid_shape, names=None):
        """Second phase of :meth:`fit`: the raw outlier score of every patch.

        The features are projected (:meth:`projection_matrix`), aligned with
        ``max_shift`` (:func:`~skpatch._alignment.estimate_shifts`) and
        scored position by position (:meth:`score_positions`); aligned
        scores are moved back to each image's own frame.

        Parameters
        ----------
        X : ndarray of shape (n_images, n_patches, n_features)
            Training patch features, after :meth:`begin_fit`.
        grid_shape : tuple of (int, int)
            The patch grid returned by :meth:`begin_fit`.
        names : sequence of str, default=None
            The raw scores to compute; None means :meth:`raw_score_names`.

        Returns
        -------
        raw : dict of str to ndarray of shape (n_images, n_patches), float32
            Each raw score (higher = more suspicious).
        shifts : ndarray of shape (n_images, 2), dtype int64
            The alignment's shifts (all zero without ``max_shift``).
        """
        names = self.raw_score_names() if names is None else tuple(names)
        projection = self.projection_matrix(X.shape[2])
        shifts = np.zeros((X.shape[0], 2), dtype=np.int64)
        if not self.max_shift:
            return self.score_positions(X, names, projection), shifts
        # Alignment needs whole grids: project all positions at once.
        aligned = float32_tensor(X)
        if projection is not None:
            aligned = aligned @ projection
        shifts = estimate_shifts(aligned, grid_shape, self.max_shift)
        raw = self.score_positions(shift_grids(aligned, shifts, grid_shape), names)
        return {name: unshift_scores(score, shifts, grid_shape) for name, score in raw.items()}, shifts

    def score_positions(self, Z, names=None, projection=None):
        """Raw scores of each patch against the other images' patches at its position.

        Each position is scored on its own, so any range of positions (a
        chunk held by a Dask worker, say) gives the scores that the whole
        grid gives there. Positions are processed in chunks sized by
        scikit-learn's ``working_memory``.

        Parameters
        ----------
        Z : ndarray or torch.Tensor of shape (n_images, n_positions, n_dims)
            The patches of every training image at a range of positions
            (projected already, unless ``projection`` is given).
        names : sequence of str, default=None
            The raw scores to compute; None means :meth:`raw_score_names`.
        projection : torch.Tensor of shape (n_dims, n_components), default=None
            Applied to each chunk first (:meth:`projection_matrix`).

        Returns
        -------
        raw : dict of str to ndarray of shape (n_images, n_positions), float32
        """
        names = self.raw_score_names() if names is None else tuple(names)
        n_images, n_positions, n_dims = Z.shape
        chunk = _positions_per_chunk(n_images, n_dims if projection is None else projection.shape[1])
        out = {name: np.empty((n_images, n_positions), dtype=np.float32) for name in names}
        for start in range(0, n_positions, chunk):
            if isinstance(Z, torch.Tensor):
                block = Z[:, start : start + chunk]
            else:
                block = float32_tensor(np.ascontiguousarray(Z[:, start : start + chunk]))
            if projection is not None:
                block = block @ projection
            block = block.transpose(0, 1).contiguous()  # (positions, images, dims)
            for name in names:
                out[name][:, start : start + chunk] = self._score(name, block).T.numpy()
        return out

    def fit_from_raw(self, raw, grid_shape, shifts=None):
        """Last phase of :meth:`fit`: the removal score, the cut and the weights.

        Combines the raw scores into ``scores_`` and the soft weights (see
        Notes of the class), removes the ``threshold`` share with the
        highest scores (ties broken by position, later first), grows the
        removal by ``dilation`` and sets the fitted attributes.

        Parameters
        ----------
        raw : dict of str to ndarray of shape (n_images, n_patches)
            The raw scores of :meth:`raw_score_names`, as :meth:`raw_scores`
            returns them.
        grid_shape : tuple of (int, int)
            The patch grid returned by :meth:`begin_fit`.
        shifts : ndarray of shape (n_images, 2), default=None
            The alignment's shifts; None means no shift.

        Returns
        -------
        self : NoiseDiscriminator
        """
        if shifts is None:
            shifts = np.zeros((len(next(iter(raw.values()))), 2), dtype=np.int64)
        self.shifts_ = shifts
        self.scores_, weights = _scores_and_weights(self.method, raw)
        self.kept_, self.score_threshold_ = keep_mask(self.scores_, self.threshold)
        if self.dilation:
            self.kept_ = _dilate_removed(self.kept_, grid_shape, self.dilation)
        self.weights_ = weights if self.soft_weights else np.ones_like(weights)
        return self

    def projection_matrix(self, n_features):
        """The seeded Gaussian random projection to ``n_components`` dimensions.

        Parameters
        ----------
        n_features : int
            Patch feature length.

        Returns
        -------
        projection : torch.Tensor of shape (n_features, n_components) or None
            None when ``n_components`` is None or not below ``n_features``.
        """
        if self.n_components is None or self.n_components >= n_features:
            return None
        rng = check_random_state(self.random_state)
        matrix = rng.standard_normal((n_features, self.n_components)) / np.sqrt(self.n_components)
        return torch.from_numpy(matrix.astype(np.float32))

    def _score(self, name, Z):
        if name == "nearest":
            return knn_distance_scores(Z, self.n_neighbors_)
        if name == "lof":
            return lof_scores(Z, self.n_neighbors_)
        return mahalanobis_scores(Z, self.shrinkage)


def _cached_raw_score(feature_key, score_key, discriminator, features, grid_shape):
    """One raw score and the shifts; joblib.Memory caches them on ``(feature_key, score_key)`` only."""
    with torch_threads(discriminator.n_jobs):
        raw, shifts = discriminator.raw_scores(features, grid_shape, (score_key["name"],))
    return raw[score_key["name"]], shifts


# Raw scores each method combines.
_NEEDED_SCORES = {
    "nearest": ("nearest",),
    "lof": ("lof",),
    "gaussian": ("gaussian",),
    "softpatch+": ("lof", "gaussian"),
}


def _carried_grid(X, grid_shape):
    """The grid of grid-shaped features, else ``grid_shape``; the two must agree."""
    carried = patch_grid(X)
    if carried is None:
        return grid_shape
    if grid_shape is not None and tuple(int(v) for v in grid_shape) != carried:
        msg = f"grid_shape {tuple(grid_shape)} differs from the patch grid {carried} that X carries."
        raise ValueError(msg)
    return carried


def _positions_per_chunk(n_images, n_dims):
    """Positions per chunk so the working set stays within working_memory."""
    # Distances, top-k and gathers each hold about n_images**2 floats per
    # position; the Gaussian holds a (d, d) covariance and its factor.
    return rows_per_chunk(4 * (4 * n_images * n_images + 3 * n_dims * n_dims + 3 * n_images * n_dims))


def _median_scaled(score):
    median = float(np.median(score))
    return score / median if median > 0 else np.ones_like(score)


def _scores_and_weights(method, raw):
    """Combine raw scores into the removal score and the soft weights."""
    if method == "lof":
        return raw["lof"], raw["lof"].astype(np.float32)
    if method in ("nearest", "gaussian"):
        return raw[method], _median_scaled(raw[method]).astype(np.float32)
    # softpatch+: rank-normalise each score over all patches, then average.
    ranks = global_ranks(torch.from_numpy(raw["lof"]).double()) + global_ranks(
        torch.from_numpy(raw["gaussian"]).double()
    )
    weights = 0.5 * (raw["lof"] + _median_scaled(raw["gaussian"]))
    return (ranks / 2).numpy().astype(np.float32), weights.astype(np.float32)


def keep_mask(scores, threshold):
    """The cut: remove exactly ``floor(threshold * n)`` patches with the highest scores.

    Parameters
    ----------
    scores : ndarray of shape (n_images, n_patches)
        Removal scores (higher = more suspicious).
    threshold : float in [0, 1)
        The share of all patches removed.

    Returns
    -------
    kept : ndarray of shape (n_images, n_patches), dtype bool
        False for the removed patches; among equal scores, the later patch
        (flat order) is removed first.
    score_threshold : float
        The highest kept score (``inf`` when none is removed).
    """
    n_remove = int(np.floor(threshold * scores.size))
    kept = np.ones(scores.size, dtype=bool)
    if n_remove == 0:
        return kept.reshape(scores.shape), float("inf")
    # Stable sort: among equal scores the later patch is removed first, deterministically.
    order = np.argsort(scores.reshape(-1), kind="stable")
    kept[order[-n_remove:]] = False
    return kept.reshape(scores.shape), float(scores.reshape(-1)[order[-n_remove - 1]])


def _dilate_removed(kept, grid_shape, dilation):
    """``kept`` with every removed patch grown by ``dilation`` positions
    (8-neighbourhood) within its own image's ``grid_shape`` grid."""
    from scipy import ndimage

    h, w = grid_shape
    removed = ~kept.reshape(-1, h, w)
    if removed.any():
        removed = ndimage.binary_dilation(removed, structure=np.ones((1, 3, 3), dtype=bool), iterations=dilation)
    return ~removed.reshape(kept.shape)
