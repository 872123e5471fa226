"""Partitions of an image collection, and the client they go to."""

import math
import os
from numbers import Integral

import numpy as np

# Default partition: this many featurizer batches per task.
BATCHES_PER_PARTITION = 8


def get_client(client):
    """``client``, or the current one (:func:`distributed.get_client`)."""
    if client is not None:
        return client
    from distributed import get_client as current

    try:
        return current()
    except ValueError:
        msg = (
            "No Dask client: pass client=distributed.Client(...) or create one "
            "first (e.g. Client(LocalCluster()), or Client('tcp://scheduler:8786'))."
        )
        raise ValueError(msg) from None


def check_estimator(estimator):
    """``estimator`` if it is a skpatch estimator, else a TypeError."""
    from .._base import BaseSoftPatch

    if not isinstance(estimator, BaseSoftPatch):
        raise TypeError(
            f"Expected a fitted SoftPatchClassifier or SoftPatchSegmenter; got {type(estimator).__name__}."
        )
    return estimator


def images_per_partition(estimator, size):
    """Images per task for a fitted ``estimator``: whole featurizer batches."""
    featurizer = getattr(check_estimator(estimator), "pipeline_", [None])[0]
    return round_to_batches(featurizer, size)


def round_to_batches(featurizer, size):
    """``size`` rounded up to whole batches of ``featurizer``; None means 8 batches."""
    batch = int(getattr(featurizer, "batch_size", 1))
    if size is None:
        return batch * BATCHES_PER_PARTITION
    if not isinstance(size, Integral) or isinstance(size, bool) or size < 1:
        raise ValueError(f"partition_size must be a positive int; got {size!r}.")
    # Whole batches: each CNN batch then holds the images it holds in one
    # process, which keeps the results bit-identical.
    return batch * math.ceil(size / batch)


def partitions(images, size):
    """Split ``images`` into tasks' inputs: lists of paths, arrays or delayed chunks."""
    if isinstance(images, (str, bytes)):
        raise TypeError("images must be a collection of images or file paths, not a single string.")
    if type(images).__module__.startswith("dask.array") or hasattr(images, "to_delayed"):
        if images.ndim != 4:
            raise ValueError(f"A dask array of images must have shape (n, H, W, C); got {images.shape}.")
        if images.shape[0] == 0:
            raise ValueError("images is empty.")
        blocks = images.rechunk({0: size, 1: -1, 2: -1, 3: -1}).to_delayed().reshape(-1)
        return [DelayedPart(block, n) for block, n in zip(blocks, images.rechunk({0: size}).chunks[0])]
    if isinstance(images, np.ndarray) and images.dtype != object and images.dtype.kind not in "US":
        if images.ndim != 4:
            msg = f"An array of images must have shape (n, H, W, C); got {images.shape} (channels last; X[None] for one image)."
            raise ValueError(msg)
        items = images
    else:
        try:
            items = list(images)
        except TypeError:
            raise TypeError(f"images must be file paths, an ndarray or a dask array; got {type(images).__name__}.") from None
        bad = [item for item in items if not isinstance(item, (str, os.PathLike))]
        if bad:
            msg = (
                "A list of images for skpatch.dask must hold file paths (the workers read "
                f"them); got {type(bad[0]).__name__}. Stack arrays into one ndarray instead."
            )
            raise TypeError(msg)
        items = [os.fspath(item) for item in items]
    if len(items) == 0:
        raise ValueError("images is empty.")
    return [items[start : start + size] for start in range(0, len(items), size)]


class DelayedPart:
    """A chunk of a dask array of images, and its length."""

    def __init__(self, block, n):
        self.block, self.n = block, int(n)


def part_len(part):
    return part.n if isinstance(part, DelayedPart) else len(part)


def first_image(part):
    if isinstance(part, DelayedPart):
        return np.asarray(part.block.compute())[:1]
    return part[:1]


def block_starts(chunks):
    """Where each chunk of ``chunks`` (lengths) starts."""
    return np.concatenate([[0], np.cumsum(chunks)[:-1]]).astype(np.int64)


def submit(client, func, *args, retries):
    """``client.submit`` of ``func(*args)``; a dask-array partition goes as a delayed."""
    from dask import delayed

    args = [arg.block if isinstance(arg, DelayedPart) else arg for arg in args]
    if any(hasattr(arg, "dask") and hasattr(arg, "key") for arg in args):
        return client.compute(delayed(func, pure=True)(*args), retries=retries)
    return client.submit(func, *args, retries=retries, pure=False)


def delayed_task(func):
    """``dask.delayed(func, pure=True)``."""
    from dask import delayed

    return delayed(func, pure=True)
