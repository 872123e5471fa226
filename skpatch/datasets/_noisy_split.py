"""The SoftPatch noisy-training protocol: defective images in the training set."""

import warnings
from collections.abc import Mapping
from numbers import Real

import numpy as np
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, validate_params

_REQUIRED_KEYS = ("train_images", "test_images", "test_labels")
# Per-test-image entries, to be filtered together when overlap=False.
_TEST_KEYS = ("test_images", "test_labels", "test_defect_types", "test_masks")


@validate_params(
    {
        "dataset": [Mapping],
        "noise_ratio": [Interval(Real, 0, 1, closed="left")],
        "overlap": ["boolean"],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_noisy_split(dataset, noise_ratio, *, overlap=False, random_state=None):
    """Inject defective test images into the training set (SoftPatch protocol).

    SoftPatch evaluates detectors trained on *noisy* data: it moves
    ``round(noise_ratio * n_train_good)`` defective test images, chosen
    uniformly at random, into the training set, which then is no longer all
    good, although nobody tells the detector so.

    Parameters
    ----------
    dataset : :class:`~sklearn.utils.Bunch` or dict
        A data set as returned by :func:`load_mvtec` or
        :func:`make_defect_dataset`: at least ``train_images``,
        ``test_images`` and ``test_labels``; ``train_labels``,
        ``test_defect_types`` and ``test_masks`` are used when present. Lazy
        (lists of paths) and eager (arrays) images are both accepted and kept
        as they are. It is not modified.

    noise_ratio : float in [0, 1)
        Number of injected defective images relative to the number of good
        training images. 0 returns a copy of ``dataset``.

    overlap : bool, default=False
        If False, the injected images are removed from the test set. If True,
        the test set is kept whole, so the injected images are also tested
        (the "overlap" setting of the SoftPatch paper).

    random_state : int, RandomState instance or None, default=None
        Seed of the choice of injected images.

    Returns
    -------
    split : :class:`~sklearn.utils.Bunch`
        The keys of ``dataset``, with the injected images appended to
        ``train_images``, ``train_labels`` set to 1 for them (the hidden
        truth, for analysis only: a detector must not see it), and, unless
        ``overlap``, the injected images removed from the ``test_*`` entries.
        Also:

        noise_indices : ndarray of int
            Sorted positions of the injected images in ``dataset``'s test
            set, in the order they were appended.
        noise_ratio : float
            As given.
        overlap : bool
            As given.

    Raises
    ------
    ValueError
        If ``dataset`` lacks a required key or its entries have inconsistent
        lengths, or if there are fewer defective test images than needed.

    See Also
    --------
    load_mvtec : Load a data set in the MVTec AD layout.
    make_defect_dataset : A synthetic data set in the same layout.

    Examples
    --------
    >>> from skpatch.datasets import make_defect_dataset, make_noisy_split
    >>> data = make_defect_dataset(20, 12, image_size=32, random_state=0)
    >>> split = make_noisy_split(data, 0.1, random_state=0)
    >>> len(split.train_images), int(split.train_labels.sum())
    (22, 2)
    >>> len(split.test_images), split.noise_indices.tolist()
    (10, [6, 11])
    >>> overlapping = make_noisy_split(data, 0.1, overlap=True, random_state=0)
    >>> len(overlapping.test_images)
    12
    """
    _check_dataset(dataset)
    train_labels = np.asarray(dataset.get("train_labels", _zeros(dataset)), dtype=int)
    test_labels = np.asarray(dataset["test_labels"], dtype=int)
    defective = np.flatnonzero(test_labels == 1)
    n_noise = round(noise_ratio * np.count_nonzero(train_labels == 0))
    if n_noise > len(defective):
        msg = (
            f"noise_ratio={noise_ratio} needs {n_noise} defective test images "
            f"(round({noise_ratio} * {np.count_nonzero(train_labels == 0)} good "
            f"training images)) but only {len(defective)} are available."
        )
        raise ValueError(msg)

    rng = check_random_state(random_state)
    noise_indices = np.sort(rng.choice(defective, size=n_noise, replace=False))

    split = Bunch(**{key: _copy(value) for key, value in dataset.items()})
    split.train_images = _concat(
        dataset["train_images"], _take(dataset["test_images"], noise_indices)
    )
    split.train_labels = np.concatenate([train_labels, np.ones(n_noise, dtype=int)])
    if not overlap:
        kept = np.setdiff1d(np.arange(len(test_labels)), noise_indices)
        for key in _TEST_KEYS:
            if dataset.get(key) is not None:
                split[key] = _take(dataset[key], kept)
        if n_noise > 0 and n_noise == len(defective):
            msg = (
                f"All {n_noise} defective test images were moved into training "
                "(overlap=False): the test set has no defective image left, so "
                "detection metrics on it are undefined. Use a smaller noise_ratio "
                "or overlap=True."
            )
            warnings.warn(msg, UserWarning)
    split.noise_indices = noise_indices
    split.noise_ratio = float(noise_ratio)
    split.overlap = bool(overlap)
    split.DESCR = _describe(dataset.get("DESCR", ""), n_noise, noise_ratio, overlap)
    return split


def _check_dataset(dataset):
    missing = [key for key in _REQUIRED_KEYS if key not in dataset]
    if missing:
        msg = (
            f"dataset is missing the key(s) {missing}; expected a data set as "
            "returned by load_mvtec or make_defect_dataset, with "
            f"{list(_REQUIRED_KEYS)}."
        )
        raise ValueError(msg)
    n_test = len(dataset["test_labels"])
    for key in _TEST_KEYS:
        if dataset.get(key) is not None and len(dataset[key]) != n_test:
            msg = (
                f"dataset[{key!r}] has {len(dataset[key])} entries but "
                f"dataset['test_labels'] has {n_test}."
            )
            raise ValueError(msg)
    train_labels = dataset.get("train_labels")
    if train_labels is not None and len(train_labels) != len(dataset["train_images"]):
        msg = (
            f"dataset['train_labels'] has {len(train_labels)} entries but "
            f"dataset['train_images'] has {len(dataset['train_images'])}."
        )
        raise ValueError(msg)


def _zeros(dataset):
    # Without labels, the training images are taken to be all good.
    return np.zeros(len(dataset["train_images"]), dtype=int)


def _copy(value):
    """Copy containers so that the split never shares memory with the input."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list):
        return [item.copy() if isinstance(item, np.ndarray) else item for item in value]
    return value


def _take(items, indices):
    """``items[indices]`` for arrays and for lists alike (type kept)."""
    if isinstance(items, np.ndarray):
        return items[indices]
    return [_copy(items[i]) for i in indices]


def _concat(first, second):
    """Append ``second`` to ``first``, keeping ``first``'s type."""
    if not isinstance(first, np.ndarray):
        return _copy(list(first)) + list(second)
    second = np.asarray(second)
    if len(second) and first.shape[1:] != second.shape[1:]:
        msg = (
            f"Cannot append test images of shape {second.shape[1:]} to training "
            f"images of shape {first.shape[1:]}."
        )
        raise ValueError(msg)
    return np.concatenate([first, second.astype(first.dtype, copy=False)])


def _describe(descr, n_noise, noise_ratio, overlap):
    where = (
        "and kept in the test set (overlap)"
        if overlap
        else "and removed from the test set"
    )
    note = (
        f"Noisy training split (SoftPatch protocol): {n_noise} defective test "
        f"images (noise_ratio={noise_ratio}) injected into the training set {where}; "
        "train_labels marks them with 1."
    )
    return f"{descr}\n\n{note}" if descr else note
