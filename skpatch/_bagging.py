"""A bagged memory: weighted coresets of random subsets of the training images."""

import math
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._chunking import rows_per_chunk
from ._coreset import ALL_REMOVED, WeightedCoreset
from ._device import resolve_device
from ._ivf import build_grouped_lists
from ._patches import PatchFeatureStepMixin, WeightedPatches, check_n_features, check_patch_features, float32_tensor, on_grid
from ._threads import torch_threads

# The WeightedCoreset parameters each member takes as they are.
_MEMBER_PARAMS = ("projection_dim", "n_cells", "search", "n_probe", "n_jobs", "device", "verbose")
# The shared lists of the members' rows only steer the exact search (its
# result does not depend on them), so they are seeded with a constant: a
# model loaded from a file builds the same lists as the fitted one.
_SHARED_LISTS_SEED = 0


class BaggedCoreset(PatchFeatureStepMixin, BaseEstimator):
    """Ensemble of weighted coresets, each built from a subset of the training images.

    Each of the ``n_estimators`` members is a :class:`WeightedCoreset` of
    the (weighted, kept) patches of a subset of the training images. A test
    patch's anomaly is the ``aggregate`` (median by default) over the
    members of its weighted distance to each member's nearest memory patch.
    A pattern that only a few training images contain, such as an
    unlabelled defect, is in few members, so the median ignores it: the
    ensemble is a low-pass filter on how often a pattern recurs in the
    training set, and it needs no removal ratio (MeDS, [1]_).

    Membership is balanced: every training image is in exactly the same
    number of members (``max_samples * n_estimators``, rounded half up),
    dealt at random, so no image can be over-represented by chance, and
    with ``max_samples`` below 0.5 every image is out of bag for most
    members (see :meth:`score_held_out`).

    Parameters
    ----------
    n_estimators : int, default=10
        Number of member coresets.

    max_samples : float in (0, 1], default=0.2
        Fraction of the training images each member holds, in steps of
        ``1 / n_estimators``: every image goes to ``max_samples *
        n_estimators`` members, rounded half up (at least one). Larger members cover rarer normal patterns; with
        ``aggregate="median"``, a pattern in more than half of the members
        counts as normal, so keep ``max_samples`` well below 0.5.

    aggregate : {"median", "mean"}, default="median"
        How the members' weighted distances of a patch are combined.

    sampling_ratio : float in (0, 1], default=0.1
        Total size of the members' memory banks as a fraction of all
        training patches, as in :class:`WeightedCoreset`: the ensemble
        searches as many memory patches as one coreset of that ratio.

    projection_dim, n_cells, search, n_probe : see :class:`WeightedCoreset`
        Passed to every member. Each member's search is exact when
        ``search="exact"``.

    random_state : int, RandomState instance or None, default=None
        Seeds the membership and each member's coreset.

    n_jobs, device, verbose : see :class:`WeightedCoreset`

    Attributes
    ----------
    estimators_ : list of WeightedCoreset
        The fitted members: ``n_estimators`` of them, less any member that
        holds no image (fewer training images than members) or only images
        whose every patch the discriminator removed (a warning says so).

    estimators_samples_ : list of ndarray of int
        The training images (indices into the images given to :meth:`fit`)
        each member was built from.

    n_train_images_ : int
        Number of training images.

    n_features_in_ : int
        Patch feature length seen in fit.

    See Also
    --------
    WeightedCoreset : One memory bank of all the training images.
    sklearn.ensemble.BaggingClassifier : The vocabulary followed here.

    Notes
    -----
    With ``search="exact"``, the members' rows share one set of inverted
    lists, so a test patch finds its exact nearest patch in every member in
    one pass, at about the cost of searching one coreset of the same total
    size (the lists are a cache: built at the first search, not stored in
    model files or pickles). The shared lists hold a second copy of the
    banks in memory. Other searches go member by member.

    References
    ----------
    .. [1] MeDS: an ensemble of memory banks built from random subsamples of
       the training data, ICML 2026, arXiv:2605.26676.

    Examples
    --------
    >>> import numpy as np
    >>> from skpatch import BaggedCoreset
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(20, 16, 8)).astype(np.float32)
    >>> bag = BaggedCoreset(n_estimators=5, max_samples=0.2, random_state=0).fit(X)
    >>> [len(s) for s in bag.estimators_samples_]
    [4, 4, 4, 4, 4]
    >>> bag.score_samples(X[:2]).shape
    (2, 16)
    >>> bag.score_held_out(X[:2], [0, 1]).shape
    (2, 16)
    """

    _parameter_constraints = {
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "max_samples": [Interval(Real, 0, 1, closed="right")],
        "aggregate": [StrOptions({"median", "mean"})],
        **{
            key: WeightedCoreset._parameter_constraints[key]
            for key in ("sampling_ratio", "random_state", *_MEMBER_PARAMS)
        },
    }

    def __init__(
        self,
        n_estimators=10,
        *,
        max_samples=0.2,
        aggregate="median",
        sampling_ratio=0.1,
        projection_dim=128,
        n_cells="auto",
        search="exact",
        n_probe=2,
        random_state=None,
        n_jobs=None,
        device="auto",
        verbose=0,
    ):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.aggregate = aggregate
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
        """Deal the training images to the members and fit each member's coreset.

        Parameters
        ----------
        X : ndarray of shape (n_images, h, w, n_features), (n_images, n_patches, n_features) or WeightedPatches
            Training patch features, or the output of
            :meth:`NoiseDiscriminator.fit_transform`.
        y : None
            Ignored.

        Returns
        -------
        self : BaggedCoreset
        """
        features, weights, kept = check_patch_features(X, allow_weighted=True)
        if not kept.any():
            raise ValueError(ALL_REMOVED)
        self.__dict__.pop("_lists_cache", None)  # a refit has other members
        n_images = len(features)
        rng = check_random_state(self.random_state)
        membership = _deal(n_images, self.n_estimators, self.max_samples, rng)
        # Each member gets the same ratio of its own patches, so that the
        # banks add up to sampling_ratio of all the training patches.
        ratio = min(1.0, self.sampling_ratio * n_images / membership.sum())
        params = {key: getattr(self, key) for key in _MEMBER_PARAMS}
        # One seed per member, drawn up front: a skipped member does not
        # change the others.
        seeds = rng.randint(np.iinfo(np.int32).max, size=self.n_estimators)
        self.estimators_, self.estimators_samples_ = [], []
        for member, seed in zip(membership, seeds):
            images = np.flatnonzero(member)
            if not kept[images].any():
                continue  # no image, or every patch of its images was removed
            coreset = WeightedCoreset(ratio, random_state=seed, **params)
            coreset.fit(WeightedPatches(features[images], weights[images], kept[images]))
            self.estimators_.append(coreset)
            self.estimators_samples_.append(images)
        if len(self.estimators_) < self.n_estimators:
            msg = (
                f"Only {len(self.estimators_)} of the {self.n_estimators} members of the "
                f"BaggedCoreset have a memory bank: the others hold no image ({n_images} "
                "training images) or only images whose every patch was removed. Those "
                "images are in fewer members than the others."
            )
            warnings.warn(msg, UserWarning)
        self.n_train_images_ = n_images
        self.n_features_in_ = features.shape[2]
        return self

    def score_samples(self, X):
        """Negated aggregate over the members of each patch's weighted distance.

        Parameters
        ----------
        X : ndarray
            Test patch features, on their grid or as rows of patches, as
            :meth:`WeightedCoreset.score_samples` takes them.

        Returns
        -------
        scores : ndarray
            One score per patch, shaped as the patches of ``X``; higher is
            more normal, as :meth:`WeightedCoreset.score_samples` returns.
        """
        check_is_fitted(self, "estimators_")
        features = check_n_features(self, X)
        return on_grid(-self._combine(self._member_anomaly(features)), X)

    def _member_anomaly(self, features):
        """(n_members, n_images, n_patches) weighted distances to each member.

        With ``search="exact"`` the members' rows are searched together
        (:func:`~skpatch._ivf.build_grouped_lists`): one pass gives every
        member's exact nearest patch, at about the cost of searching one
        bank of their total size. Other searches go member by member.
        """
        if self.search != "exact":
            return np.stack([-member.score_samples(features) for member in self.estimators_])
        n_images, n_patches, n_features = features.shape
        queries = features.reshape(-1, n_features)
        device = resolve_device(self.device)
        anomaly = np.empty((len(self.estimators_), len(queries)), dtype=np.float32)
        with torch_threads(self.n_jobs):
            lists, weights = self._shared_lists(device)
            # Per query: distances and bounds to every list, its best row per
            # member, and its share of one list's (member x width) table.
            n_lists, n_members = len(lists.centroids), lists.n_groups
            row_floats = 2 * n_lists + 5 * n_members + n_members * lists.max_width() + 2 * n_features
            step = rows_per_chunk(4 * row_floats)
            for start in range(0, len(queries), step):
                q = float32_tensor(queries[start : start + step]).to(device)
                distance, index = lists.search(q, self.n_probe)
                anomaly[:, start : start + step] = (distance * weights[index]).T.cpu().numpy()
        return anomaly.reshape(-1, n_images, n_patches)

    def _shared_lists(self, device):
        """The members' banks as one :class:`GroupedInvertedLists` (built once,
        kept as a cache that model files do not store) and their weights."""
        cached = getattr(self, "_lists_cache", None)
        if cached is not None and cached[0] == str(device):
            return cached[1:]
        members = self.estimators_
        rng = np.random.RandomState(_SHARED_LISTS_SEED)
        lists, order = build_grouped_lists([m.memory_bank_ for m in members], rng, device)
        weights = np.concatenate([m.memory_weights_ for m in members]).astype(np.float32, copy=False)
        # Built into a local and returned from it: a thread that replaces the
        # cache meanwhile (another device) cannot hand this one its lists.
        cache = (str(device), lists, torch.from_numpy(weights[order]).to(device))
        self._lists_cache = cache
        return cache[1:]

    def __getstate__(self):
        # A copy: object.__getstate__ returns the instance's own __dict__.
        state = dict(super().__getstate__())
        state.pop("_lists_cache", None)  # rebuilt on demand, identically
        return state

    def score_held_out(self, X, images):
        """Out-of-bag scores of training images.

        Each training image is scored only by the members that were not
        built from it, as a random forest's ``oob_score_``: its own patches
        cannot match themselves. An image that every member holds (only
        when ``max_samples * n_estimators`` rounds to ``n_estimators``) is
        scored by every member without its own patches instead
        (leave-one-image-out, as :meth:`WeightedCoreset.score_held_out`).

        Parameters
        ----------
        X : ndarray of shape (n_images, h, w, n_features) or (n_images, n_patches, n_features)
            Features of training images.
        images : array-like of shape (n_images,)
            The training index of each image of ``X``.

        Returns
        -------
        scores : ndarray of shape (n_images, h, w) or (n_images, n_patches)
            As :meth:`score_samples`; ``-inf`` where no memory patch may
            score an image.
        """
        check_is_fitted(self, "estimators_")
        features = check_n_features(self, X)
        images = np.asarray(images, dtype=np.int64)
        saw = np.stack([_local_index(samples, images) >= 0 for samples in self.estimators_samples_])
        everywhere = saw.all(axis=0)
        oob = ~everywhere
        anomaly = np.empty((len(self.estimators_), *features.shape[:2]), dtype=np.float32)
        # Each image is searched once per member: out of bag (every member
        # at once, masked below), or without its own patches where every
        # member holds it.
        if oob.any():
            anomaly[:, oob] = self._member_anomaly(features[oob] if everywhere.any() else features)
        if everywhere.any():
            for i, (member, samples) in enumerate(zip(self.estimators_, self.estimators_samples_)):
                local = _local_index(samples, images[everywhere])
                anomaly[i, everywhere] = -member.score_held_out(features[everywhere], local)
        out = np.empty(features.shape[:2], dtype=np.float32)
        if oob.any():
            out[oob] = self._combine(anomaly[:, oob], mask=~saw[:, oob])
        if everywhere.any():
            out[everywhere] = self._combine(anomaly[:, everywhere])
        return on_grid(-out, X)

    def _combine(self, anomaly, mask=None):
        """Aggregate (n_members, n_images, n_patches) distances over the members,
        using only the members where ``mask`` (n_members, n_images) is True."""
        if mask is not None and not mask.all():
            anomaly = np.where(mask[:, :, None], anomaly, np.nan)
            with np.errstate(invalid="ignore"):
                combined = np.nanmedian(anomaly, axis=0) if self.aggregate == "median" else np.nanmean(anomaly, axis=0)
            return combined.astype(np.float32)
        if self.aggregate == "median":
            return np.median(anomaly, axis=0).astype(np.float32)
        return anomaly.mean(axis=0, dtype=np.float64).astype(np.float32)


def memory_members(memory):
    """The coresets of a fitted memory step: a BaggedCoreset's members, or the step itself."""
    return list(getattr(memory, "estimators_", [memory]))


def _memberships(n_estimators, max_samples):
    """How many members hold each image: ``max_samples * n_estimators``
    rounded half up, at least 1 and at most ``n_estimators``."""
    return int(min(n_estimators, max(1, math.floor(max_samples * n_estimators + 0.5))))


def _local_index(samples, images):
    """Position of each of ``images`` in the sorted ``samples``, -1 where absent."""
    local = np.searchsorted(samples, images)
    found = local < len(samples)
    found[found] = samples[local[found]] == images[found]
    return np.where(found, local, -1)


def _deal(n_images, n_estimators, max_samples, rng):
    """Membership (n_estimators, n_images), True where a member holds an image.

    Every image goes to exactly ``r`` members (:func:`_memberships`): ``r`` rounds, each dealing the images
    in a random order, every image to the smallest member that does not
    hold it yet (ties broken at random). Member sizes stay within two
    images of each other.
    """
    r = _memberships(n_estimators, max_samples)
    membership = np.zeros((n_estimators, n_images), dtype=bool)
    sizes = np.zeros(n_estimators, dtype=np.int64)
    for _ in range(r):
        for image in rng.permutation(n_images):
            # The smallest size first, ties broken by a random key; members
            # that hold the image already are out.
            key = sizes * n_estimators + rng.permutation(n_estimators)
            key[membership[:, image]] = np.iinfo(np.int64).max
            member = int(np.argmin(key))
            membership[member, image] = True
            sizes[member] += 1
    return membership
