"""Scoring with a fitted model on the workers: the model goes once to each."""

import hashlib
import os
import tempfile
import threading
import zipfile

import numpy as np

from ._partitions import block_starts, check_estimator, get_client, images_per_partition, part_len, partitions, submit

# The metadata member of a model file (see skpatch._persist).
MODEL_JSON = "skpatch.json"
# Per worker process: digest of a model file's bytes -> the loaded estimator.
MODELS = {}
MODELS_LOCK = threading.Lock()
# Number of model files loaded by this process (tests check "once per worker").
LOADS = {"count": 0}


def score_images(estimator, images, *, client=None, partition_size=None, retries=2):
    """Score an image collection on a Dask cluster, in input order.

    Parameters
    ----------
    estimator : SoftPatchClassifier or SoftPatchSegmenter
        A fitted estimator. It is saved as a safe model file and loaded once
        per worker.
    images : sequence of str or path-like, ndarray or dask.array.Array
        File paths (read by the workers), or images of shape
        ``(n_images, H, W, C)``.
    client : distributed.Client or None, default=None
        The cluster to use; None means :func:`distributed.get_client`.
    partition_size : int or None, default=None
        Images per task, rounded up to a multiple of the featurizer's
        ``batch_size``; None means 8 batches.
    retries : int, default=2
        Times a failed task is retried (a task lost with its worker is
        recomputed in any case).

    Returns
    -------
    scores : ndarray of shape (n_images,) or (n_images, H, W)
        ``estimator.score_samples(images)``: bit-identical to it at the same
        torch thread count. A segmenter's maps are returned in memory; use
        :func:`save_maps` when they do not fit.

    Raises
    ------
    TypeError
        If ``estimator`` is not a skpatch estimator or ``images`` not a
        supported collection.
    ValueError
        If the estimator is not fitted or ``images`` is empty.

    Examples
    --------
    >>> from distributed import Client, LocalCluster  # doctest: +SKIP
    >>> from skpatch.dask import score_images
    >>> with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
    ...     scores = score_images(clf, paths, client=client)  # doctest: +SKIP
    """
    parts = partitions(images, images_per_partition(estimator, partition_size))
    client = get_client(client)
    model = ShippedModel(estimator, client)
    futures = [
        submit(client, score_partition, model.digest, model.future, part, retries=retries)
        for part in parts
    ]
    return np.concatenate(client.gather(futures))


def save_maps(segmenter, images, folder, *, client=None, partition_size=None, retries=2):
    """Write each image's anomaly map to ``folder`` as ``.npy``, on the workers.

    For collections whose maps do not fit in memory: each worker streams its
    partition one featurizer batch at a time and writes the batch's maps, so
    a worker holds one batch of maps at a time.

    Parameters
    ----------
    segmenter : SoftPatchSegmenter
        A fitted segmenter.
    images : sequence of str or path-like, ndarray or dask.array.Array
        As in :func:`score_images`.
    folder : str or path-like
        Output folder, created if missing; every worker must be able to write
        to it (shared storage). Image ``i`` is written to
        ``f"{i:08d}.npy"``: an ``(H, W)`` float32 anomaly map,
        ``-segmenter.score_samples``, higher = more anomalous.
    client, partition_size, retries
        As in :func:`score_images`.

    Returns
    -------
    paths : list of str
        The written files, in input order.

    Examples
    --------
    >>> from skpatch.dask import save_maps
    >>> paths = save_maps(seg, image_paths, "maps/", client=client)  # doctest: +SKIP
    >>> anomaly = np.load(paths[0])                                   # doctest: +SKIP
    """
    from .._segmenter import SoftPatchSegmenter

    if not isinstance(segmenter, SoftPatchSegmenter):
        raise TypeError(f"save_maps needs a fitted SoftPatchSegmenter; got {type(segmenter).__name__}.")
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    parts = partitions(images, images_per_partition(segmenter, partition_size))
    client = get_client(client)
    model = ShippedModel(segmenter, client)
    starts = block_starts([part_len(part) for part in parts])
    futures = [
        submit(client, save_partition, model.digest, model.future, part, folder, int(start), retries=retries)
        for part, start in zip(parts, starts)
    ]
    return [path for paths in client.gather(futures) for path in paths]


class ShippedModel:
    """A fitted estimator as safe model file bytes, scattered to every worker."""

    def __init__(self, estimator, client):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(check_estimator(estimator), "pipeline_")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.skpatch")
            estimator.save(path)
            with open(path, "rb") as file:
                blob = file.read()
            # The zip's members carry the time of writing; its metadata
            # member does not, and holds the SHA-256 of every array and of
            # the tree: the same fitted model gets the same digest.
            with zipfile.ZipFile(path) as archive:
                self.digest = hashlib.sha256(archive.read(MODEL_JSON)).hexdigest()
        self.nbytes = len(blob)
        # broadcast: every worker holds a replica, so losing one worker
        # never loses the model.
        self.future = client.scatter(blob, broadcast=True, hash=False)


def worker_model(digest, blob):
    """The estimator in ``blob``, loaded once per worker process."""
    from .._persist import load

    with MODELS_LOCK:
        model = MODELS.get(digest)
        if model is None:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.skpatch")
                with open(path, "wb") as file:
                    file.write(blob)
                model = load(path)
            MODELS.clear()  # one model at a time: they can be large
            MODELS[digest] = model
            LOADS["count"] += 1
    return model


# -- worker tasks ---------------------------------------------------------------------


def score_partition(digest, blob, images):
    return worker_model(digest, blob).score_samples(images)


def save_partition(digest, blob, images, folder, start):
    """Score one featurizer batch at a time and write its maps: bounded memory."""
    model = worker_model(digest, blob)
    batch = int(model.pipeline_[0].batch_size)
    paths = []
    for begin in range(0, len(images), batch):
        maps = -model.score_samples(images[begin : begin + batch])
        for offset, image_map in enumerate(maps):
            path = os.path.join(folder, f"{start + begin + offset:08d}.npy")
            np.save(path, image_map)
            paths.append(path)
    return paths
