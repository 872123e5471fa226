"""Scoring, fitting and model search on a Dask cluster (``pip install "skpatch[dask]"``).

A fitted model scores an image collection of any size with
:func:`score_images` (image scores or pixel maps, in input order) or
:func:`save_maps` (one ``.npy`` anomaly map per image, written by the
workers, for collections whose maps do not fit in memory). :func:`fit` fits
an ordinary :class:`~skpatch.SoftPatchClassifier` or
:class:`~skpatch.SoftPatchSegmenter` with the features kept on the workers,
and :func:`featurize` returns those features as a dask array.

Each function takes a :class:`distributed.Client` (``client=None`` uses the
current one, :func:`distributed.get_client`). Images are given as file
paths (read by the workers, so every worker must see the same paths: a
shared or replicated file system), as an ndarray ``(n_images, H, W, C)``
(partitions are sent to the workers) or as a dask array of that shape.

A model reaches each worker once: it is written as a safe model file
(:meth:`~skpatch.SoftPatchClassifier.save`), whose bytes are scattered to
every worker and loaded there once per worker process. Partitions are whole
multiples of the featurizer's ``batch_size``, so each CNN batch holds the
same images as in a single process and the results are bit-identical to
``estimator.score_samples`` on one machine with the same torch thread count.
A worker that dies mid-run loses nothing: the scheduler recomputes its
partitions on the others (``retries`` more times when a task itself fails).

Inside a worker, ``n_jobs=None`` means the worker's thread count (not the
machine's) for torch and BLAS. ``GridSearchCV`` under
``joblib.parallel_backend("dask")`` needs nothing from this module: give the
estimator ``cache=`` a folder that every worker can read and write (a shared
file system), and the CNN runs once per fold; see the user guide.
"""

import hashlib
import math
import operator
import os
import tempfile
import threading
import zipfile
from numbers import Integral, Real

import numpy as np

__all__ = ["featurize", "fit", "save_maps", "score_images"]

# Default partition: this many featurizer batches per task.
_BATCHES_PER_PARTITION = 8
# Position chunks of the discriminator's shuffle hold at most this many bytes
# of features (all images, a range of positions).
_POSITION_CHUNK_BYTES = 128 * 2**20
# ... and there are at least this many per worker.
_CHUNKS_PER_WORKER = 2

# The metadata member of a model file (skpatch._persist).
_MODEL_JSON = "skpatch.json"
# Per worker process: digest of a model file's bytes -> the loaded estimator.
_MODELS = {}
_MODELS_LOCK = threading.Lock()
# Number of model files loaded by this process (tests check "once per worker").
_LOADS = {"count": 0}


# -- public API -------------------------------------------------------------------


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
    parts = _partitions(images, _partition_size(estimator, partition_size))
    client = _client(client)
    model = _ShippedModel(estimator, client)
    futures = [
        _submit(client, _score_partition, model.digest, model.future, part, retries=retries)
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
    from ._segmenter import SoftPatchSegmenter

    if not isinstance(segmenter, SoftPatchSegmenter):
        raise TypeError(f"save_maps needs a fitted SoftPatchSegmenter; got {type(segmenter).__name__}.")
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    parts = _partitions(images, _partition_size(segmenter, partition_size))
    client = _client(client)
    model = _ShippedModel(segmenter, client)
    starts = _block_starts([_part_len(part) for part in parts])
    futures = [
        _submit(client, _save_partition, model.digest, model.future, part, folder, int(start), retries=retries)
        for part, start in zip(parts, starts)
    ]
    return [path for paths in client.gather(futures) for path in paths]


def featurize(featurizer, images, *, client=None, partition_size=None, persist=True):
    """Patch features of an image collection, computed and kept on the workers.

    Parameters
    ----------
    featurizer : PatchFeaturizer
        Fitted or not (an unfitted one is fitted here, on the first image:
        fitting only builds the backbone).
    images : sequence of str or path-like, ndarray or dask.array.Array
        As in :func:`score_images`.
    client, partition_size
        As in :func:`score_images`.
    persist : bool, default=True
        Start computing at once and keep the chunks in the workers' memory.

    Returns
    -------
    features : dask.array.Array of shape (n_images, n_patches, embed_dim)
        Chunked by partition along the images; each chunk equals
        ``featurizer.transform`` of its images, bit for bit at the same
        torch thread count. ``featurizer`` is fitted.
    """
    from ._featurizer import PatchFeaturizer

    if not isinstance(featurizer, PatchFeaturizer):
        raise TypeError(f"featurize needs a PatchFeaturizer; got {type(featurizer).__name__}.")
    client = _client(client)
    size = _round_to_batches(featurizer, partition_size)
    parts = _partitions(images, size)
    if not hasattr(featurizer, "backbone_"):
        featurizer.fit(_first_image(parts[0]))
    features = _featurize_parts(featurizer, parts, client)
    return client.persist(features) if persist else features


def _ship_featurizer(featurizer, client):
    """The featurizer as a task's result, for the workers' featurizing tasks.

    Not scattered data: the scheduler drops the extra copies of broadcast
    data, and scattered data whose last copy dies with its worker is lost
    for good, while a task's result is recomputed.
    """
    return client.submit(_same, featurizer, pure=False)


def _featurize_parts(featurizer, parts, client):
    """Lazy features of ``parts``, chunked by partition (a fitted ``featurizer``)."""
    import dask.array as da
    from dask import delayed

    shipped = _ship_featurizer(featurizer, client)
    n_patches = featurizer.feature_shape_[0] * featurizer.feature_shape_[1]
    blocks = [
        da.from_delayed(
            delayed(_featurize_partition, pure=True)(
                shipped, part.block if isinstance(part, _DelayedPart) else part
            ),
            shape=(_part_len(part), n_patches, featurizer.embed_dim),
            dtype=np.dtype(featurizer.feature_dtype),
        )
        for part in parts
    ]
    return da.concatenate(blocks, axis=0)


def _featurize_by_position(featurizer, parts, client):
    """Features of ``parts`` chunked by position, assembled from contiguous pieces.

    Each task featurizes a partition and returns it cut into one contiguous
    copy per position chunk, so the partition itself is freed at once; each
    position chunk then concatenates its pieces (all images), which frees
    them. A worker thus holds about its share of the features during the
    shuffle, not its image partitions and the position chunks built from
    them at the same time (which a rechunk of views of the partitions
    does). The values are the same.

    Returns the array, whose chunks are the position chunks' futures (the
    work starts at once), and the future of the featurizer
    (:func:`_ship_featurizer`), which the caller holds for as long as a
    lost chunk may have to be recomputed from its pieces.
    """
    import dask.array as da
    from dask.base import tokenize

    shipped = _ship_featurizer(featurizer, client)
    n_patches = featurizer.feature_shape_[0] * featurizer.feature_shape_[1]
    n_images = sum(_part_len(part) for part in parts)
    dtype = np.dtype(featurizer.feature_dtype)
    widths = _position_widths(n_images, n_patches, featurizer.embed_dim * dtype.itemsize, client)
    bounds = tuple(zip(_block_starts(widths).tolist(), np.cumsum(widths).tolist()))
    partitions = [_submit(client, _featurize_pieces, shipped, part, bounds, retries=0) for part in parts]
    # Each piece its own result (freed once its chunk has it), and each
    # worker its share of the chunks (the scheduler places them unevenly:
    # every chunk needs pieces from every worker); any worker may take a
    # chunk over (a lost worker, a busy one).
    pieces = [[client.submit(operator.getitem, p, c, pure=False) for c in range(len(bounds))]
              for p in partitions]
    workers = sorted(client.nthreads())
    name = "features-by-position-" + tokenize(shipped.key, [p.key for p in partitions], bounds)
    chunks = {}
    for c in range(len(widths)):
        key = (name, 0, c, 0)
        chunks[key] = client.submit(
            _concatenate_pieces, [part_pieces[c] for part_pieces in pieces], key=key,
            workers=[workers[c % len(workers)]], allow_other_workers=True,
        )
    return da.Array(chunks, name, ((n_images,), widths, (featurizer.embed_dim,)), dtype=dtype), shipped


def fit(estimator, images, *, client=None, partition_size=None, oversample=2.0, shuffle="tasks"):
    """Fit a SoftPatch estimator with its training features kept on the workers.

    The steps, and where they run:

    1. **Features**: each partition of images is featurized on a worker
       (as by :func:`featurize`) and cut into one contiguous piece per range
       of positions.
    2. **Noise discriminator**: it compares every image at each patch
       position, so the features are regrouped by position (a shuffle: each
       chunk concatenates the pieces of all images at a range of positions;
       there are at least 2 chunks per worker, placed evenly, and the
       pieces are freed as they are used; with ``shuffle="p2p"`` the image
       partitions are rechunked by distributed's peer-to-peer rechunk
       instead), and each position-chunk is scored on a worker, with the
       discriminator's seeded projection. The removal threshold, an exact
       order statistic of all scores (and for ``"nearest"`` / ``"gaussian"``
       the median that scales the weights), is found by a distributed
       selection: a few rounds of counting, per chunk, the scores above
       candidate values. The kept mask and weights equal the single-process ones. ``"softpatch+"``
       ranks all patches against each other, and ``dilation`` (the
       estimators' default) grows the removal across positions within each
       image, so with either the raw scores are gathered on the client
       (``n_images * n_patches * 4`` bytes per score, the size of the fitted
       ``scores_``) and the kept mask and weights computed there.
    3. **Coreset** (a composable coreset, Malkomes et al., NeurIPS 2015):
       each partition selects a greedy k-center coreset of its kept patches,
       ``oversample`` times its share of the memory bank; one worker then
       runs greedy k-center on the union of those centres (their projected
       points only), down to the single-process bank size, and the client
       fetches the chosen centres' features and weights from the partitions
       and builds the bank and its search index.

    The result is an ordinary fitted estimator: it scores, saves and
    exports like one fitted by ``estimator.fit``. Its features and
    discriminator (``scores_``, ``kept_``, ``weights_``) equal the
    single-process ones bit for bit (at the same torch thread count per
    process); its memory bank differs, with a coverage radius
    close to the single-process one (within 1.25x in the tests).

    Parameters
    ----------
    estimator : SoftPatchClassifier or SoftPatchSegmenter
        Unfitted; its steps must be the default ones (PatchFeaturizer,
        NoiseDiscriminator or ``"passthrough"``, WeightedCoreset). It is
        fitted in place and returned.
    images : sequence of str or path-like, ndarray or dask.array.Array
        Training images, as in :func:`score_images`.
    client, partition_size
        As in :func:`score_images`.
    oversample : float >= 1, default=2.0
        Each partition's coreset holds ``oversample`` times its share of the
        final bank (capped at its kept patches).
    shuffle : {"tasks", "p2p"}, default="tasks"
        How the features are regrouped by position: by tasks that
        concatenate the partitions' pieces, or by distributed's peer-to-peer
        rechunk of the image partitions, which streams through the workers'
        local disk. The result is the same.

    Returns
    -------
    estimator : SoftPatchClassifier or SoftPatchSegmenter
        The fitted estimator.

    Notes
    -----
    The client's ``sklearn.get_config()["working_memory"]`` (the budget
    of one process's chunked distance computations) is shared out over the
    cluster, as the features are: each task's chunks are sized by
    ``working_memory / n_threads`` (all worker threads at the start of the
    fit, each of which runs one task at a time), so the cluster as a whole
    works within the budget that one process would. Set it with
    ``sklearn.config_context(working_memory=...)`` around the call; results
    do not depend on it.

    ``train_scores_`` (classifier) are computed on the workers, partition
    by partition; the segmenter's ``offset_`` uses at most 64 training
    images, gathered on the client. The fitted ``scores_``, ``kept_`` and
    ``weights_`` of the discriminator (``n_images * n_patches`` each) are
    gathered on the client, since they are part of the fitted model; the
    features, ``embed_dim`` times larger, never leave the workers.

    Examples
    --------
    >>> from skpatch import SoftPatchClassifier
    >>> import skpatch.dask
    >>> clf = skpatch.dask.fit(SoftPatchClassifier(random_state=0), paths, client=client)  # doctest: +SKIP
    >>> clf.save("bottle.skpatch")                                                       # doctest: +SKIP
    """
    from ._base import BaseSoftPatch

    if not isinstance(estimator, BaseSoftPatch):
        raise TypeError(f"fit needs a SoftPatchClassifier or SoftPatchSegmenter; got {type(estimator).__name__}.")
    if not isinstance(oversample, Real) or not oversample >= 1:
        raise ValueError(f"oversample must be a number >= 1; got {oversample!r}.")
    if shuffle not in ("tasks", "p2p"):
        raise ValueError(f"shuffle must be 'tasks' or 'p2p'; got {shuffle!r}.")
    estimator._validate_params()
    client = _client(client)
    return _DistributedFit(estimator, client, partition_size, float(oversample), shuffle).run(images)


# -- shipping a model ------------------------------------------------------------


class _ShippedModel:
    """A fitted estimator as safe model file bytes, scattered to every worker."""

    def __init__(self, estimator, client):
        from sklearn.utils.validation import check_is_fitted

        from ._base import BaseSoftPatch

        if not isinstance(estimator, BaseSoftPatch):
            raise TypeError(
                f"Expected a fitted SoftPatchClassifier or SoftPatchSegmenter; got {type(estimator).__name__}."
            )
        check_is_fitted(estimator, "pipeline_")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.skpatch")
            estimator.save(path)
            with open(path, "rb") as file:
                blob = file.read()
            # The zip's members carry the time of writing; its metadata
            # member does not, and holds the SHA-256 of every array and of
            # the tree: the same fitted model gets the same digest.
            with zipfile.ZipFile(path) as archive:
                self.digest = hashlib.sha256(archive.read(_MODEL_JSON)).hexdigest()
        self.nbytes = len(blob)
        # broadcast: every worker holds a replica, so losing one worker
        # never loses the model.
        self.future = client.scatter(blob, broadcast=True, hash=False)


def _worker_model(digest, blob):
    """The estimator in ``blob``, loaded once per worker process."""
    from ._persist import load

    with _MODELS_LOCK:
        model = _MODELS.get(digest)
        if model is None:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.skpatch")
                with open(path, "wb") as file:
                    file.write(blob)
                model = load(path)
            _MODELS.clear()  # one model at a time: they can be large
            _MODELS[digest] = model
            _LOADS["count"] += 1
    return model


# -- partitions -----------------------------------------------------------------


def _client(client):
    if client is not None:
        return client
    from distributed import get_client

    try:
        return get_client()
    except ValueError:
        msg = (
            "No Dask client: pass client=distributed.Client(...) or create one "
            "first (e.g. Client(LocalCluster()), or Client('tcp://scheduler:8786'))."
        )
        raise ValueError(msg) from None


def _partition_size(estimator, partition_size):
    from ._base import BaseSoftPatch

    if not isinstance(estimator, BaseSoftPatch):
        raise TypeError(
            f"Expected a fitted SoftPatchClassifier or SoftPatchSegmenter; got {type(estimator).__name__}."
        )
    featurizer = estimator.pipeline_[0] if hasattr(estimator, "pipeline_") else estimator._step("featurizer")
    return _round_to_batches(featurizer, partition_size)


def _round_to_batches(featurizer, partition_size):
    batch = int(getattr(featurizer, "batch_size", 1))
    if partition_size is None:
        return batch * _BATCHES_PER_PARTITION
    if not isinstance(partition_size, Integral) or isinstance(partition_size, bool) or partition_size < 1:
        raise ValueError(f"partition_size must be a positive int; got {partition_size!r}.")
    # Whole batches: each CNN batch then holds the images it holds in one
    # process, which keeps the results bit-identical.
    return batch * math.ceil(partition_size / batch)


def _partitions(images, size):
    """Split ``images`` into tasks' inputs: lists of paths, arrays or delayed chunks."""
    if isinstance(images, (str, bytes)):
        raise TypeError("images must be a collection of images or file paths, not a single string.")
    if type(images).__module__.startswith("dask.array") or hasattr(images, "to_delayed"):
        if images.ndim != 4:
            raise ValueError(f"A dask array of images must have shape (n, H, W, C); got {images.shape}.")
        if images.shape[0] == 0:
            raise ValueError("images is empty.")
        blocks = images.rechunk({0: size, 1: -1, 2: -1, 3: -1}).to_delayed().reshape(-1)
        return [_DelayedPart(block, n) for block, n in zip(blocks, images.rechunk({0: size}).chunks[0])]
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


class _DelayedPart:
    """A chunk of a dask array of images, and its length."""

    def __init__(self, block, n):
        self.block, self.n = block, int(n)


def _part_len(part):
    return part.n if isinstance(part, _DelayedPart) else len(part)


def _first_image(part):
    if isinstance(part, _DelayedPart):
        return np.asarray(part.block.compute())[:1]
    return part[:1]


def _submit(client, func, *args, retries):
    """``client.submit`` of ``func(*args)``; a dask-array partition goes as a delayed."""
    from dask import delayed

    args = [arg.block if isinstance(arg, _DelayedPart) else arg for arg in args]
    if any(hasattr(arg, "dask") and hasattr(arg, "key") for arg in args):
        return client.compute(delayed(func, pure=True)(*args), retries=retries)
    return client.submit(func, *args, retries=retries, pure=False)


# -- worker tasks -----------------------------------------------------------------


def _score_partition(digest, blob, images):
    return _worker_model(digest, blob).score_samples(images)


def _save_partition(digest, blob, images, folder, start):
    """Score one featurizer batch at a time and write its maps: bounded memory."""
    model = _worker_model(digest, blob)
    batch = int(model.pipeline_[0].batch_size)
    paths = []
    for begin in range(0, len(images), batch):
        maps = -model.score_samples(images[begin : begin + batch])
        for offset, image_map in enumerate(maps):
            path = os.path.join(folder, f"{start + begin + offset:08d}.npy")
            np.save(path, image_map)
            paths.append(path)
    return paths


def _featurize_partition(featurizer, images):
    return featurizer.transform(images)


def _featurize_pieces(featurizer, images, bounds):
    """A partition's features as one contiguous copy per position range."""
    features = featurizer.transform(images)
    return tuple(np.ascontiguousarray(features[:, start:stop]) for start, stop in bounds)


def _concatenate_pieces(pieces):
    return np.concatenate(pieces, axis=0)


def _same(value):
    return value


# -- distributed fit --------------------------------------------------------------


class _DistributedFit:
    """The steps of :func:`fit`; see its docstring."""

    def __init__(self, estimator, client, partition_size, oversample, shuffle):
        self.shuffle = shuffle
        self.estimator = estimator
        self.client = client
        self.partition_size = partition_size
        self.oversample = oversample

    def run(self, images):
        from sklearn.pipeline import Pipeline

        from ._bagging import BaggedCoreset
        from ._coreset import WeightedCoreset
        from ._discriminator import NoiseDiscriminator
        from ._featurizer import PatchFeaturizer

        est = self.estimator
        pipeline = est._make_pipeline()
        featurizer, denoise, coreset = (step for _, step in pipeline.steps)
        if isinstance(coreset, BaggedCoreset):
            msg = (
                "skpatch.dask.fit cannot fit a BaggedCoreset memory yet (the default of "
                "SoftPatchSegmenter): its members are coresets of subsets of the images, "
                "which this distributed fit does not build. Pass memory=WeightedCoreset() to "
                "fit one memory bank on the cluster, or fit the estimator in one process; "
                "skpatch.dask.score_images scores any fitted model."
            )
            raise TypeError(msg)
        if type(featurizer) is not PatchFeaturizer or type(coreset) is not WeightedCoreset or not (
            denoise == "passthrough" or type(denoise) is NoiseDiscriminator
        ):
            msg = (
                "skpatch.dask.fit supports the default steps only (PatchFeaturizer, "
                "NoiseDiscriminator or 'passthrough', WeightedCoreset); got "
                f"{type(featurizer).__name__}, {getattr(type(denoise), '__name__', denoise)}, "
                f"{type(coreset).__name__}."
            )
            raise TypeError(msg)
        parts = _partitions(images, _round_to_batches(featurizer, self.partition_size))
        n_images = sum(_part_len(part) for part in parts)
        if n_images < 2:
            raise ValueError(f"skpatch.dask.fit needs at least 2 training images; got {n_images}.")
        first = _first_image(parts[0])  # once: a dask array's block is computed for it
        featurizer.fit(first)
        # The one shuffle: from image partitions (as featurized) to chunks of
        # all images at a range of positions. Only the position chunks are
        # kept, so each worker holds about 1 / n_workers of the features.
        if self.shuffle == "p2p":
            features = _featurize_parts(featurizer, parts, self.client)
            by_position = self.client.persist(_by_position(features, self.client, self.shuffle))
        else:
            by_position, self._shipped = _featurize_by_position(featurizer, parts, self.client)
        self.working_memory = _worker_working_memory(self.client)
        if denoise == "passthrough":
            kept, weights = None, None
        else:
            denoise._validate_params()
            kept, weights = _fit_discriminator(
                denoise, by_position, self.client, featurizer.feature_shape_, self.working_memory
            )
        coreset._validate_params()
        _fit_coreset(coreset, by_position, kept, weights, self.client, self.oversample, self.working_memory)
        est.pipeline_ = Pipeline([("featurizer", featurizer), ("denoise", denoise), ("coreset", coreset)])
        est.n_train_images_ = int(n_images)
        est.image_size_ = _image_size(first)
        self._finish(by_position)
        self._shipped = None
        return est

    def _finish(self, by_position):
        """``train_scores_`` / ``offset_`` as ``estimator.fit`` sets them (its ``_finish_fit``).

        Leave-one-image-out patch scores only need each patch's own image,
        so they are computed on the position chunks, gathered as
        ``(n_images, n_patches)`` and aggregated here as ``fit`` does.
        """
        from ._classifier import SoftPatchClassifier

        est = self.estimator
        n_images = by_position.shape[0]
        if isinstance(est, SoftPatchClassifier):
            indices = np.arange(n_images)
        else:
            indices = est._offset_sample(n_images)
        coreset = self.client.scatter(est.pipeline_[-1], broadcast=True, hash=False)
        blocks = by_position.to_delayed().reshape(-1)
        parts = self.client.compute(
            [_delayed(_leave_one_out_block)(coreset, block, indices, self.working_memory) for block in blocks]
        )
        est._finish_fit(est._patch_map(-np.concatenate(self.client.gather(parts), axis=1)))


def _worker_working_memory(client):
    """Each task's share (MiB) of the client's ``working_memory`` budget.

    One share per worker thread (each runs a task at a time), counted when
    the fit starts.
    """
    from sklearn import get_config

    n_threads = max(1, sum(client.nthreads().values()))
    return get_config()["working_memory"] / n_threads


def _delayed(func):
    from dask import delayed

    return delayed(func, pure=True)


def _image_size(first):
    from ._images import check_images

    return check_images(first).image_size


def _leave_one_out_block(coreset, block, indices, working_memory):
    """Leave-one-image-out scores ``(len(indices), width)`` of a position chunk."""
    from sklearn import config_context

    block = np.asarray(block)
    if len(indices) < len(block):  # the classifier scores every image: no copy then
        block = block[indices]
    with config_context(working_memory=working_memory):
        return coreset.score_held_out(block, indices)


def _by_position(features, client, method):
    """``features`` rechunked to all images x a range of positions (a lazy shuffle).

    The chunks are those of :func:`_position_widths`. Scores are computed
    per position, so the chunking does not change them (tests check that
    they equal the single-process ones).
    """
    n_images, n_patches, n_features = features.shape
    widths = _position_widths(n_images, n_patches, n_features * features.dtype.itemsize, client)
    return features.rechunk((n_images, widths, n_features), method=method)


def _position_widths(n_images, n_patches, patch_bytes, client):
    """Widths of the position chunks.

    Each holds at most ``_POSITION_CHUNK_BYTES`` and there are
    ``_CHUNKS_PER_WORKER`` per worker or more (as many as there are
    positions, if fewer).
    """
    n_workers = max(1, len(client.nthreads()))
    n_bytes = n_images * patch_bytes * n_patches
    n_chunks = max(_CHUNKS_PER_WORKER * n_workers, math.ceil(n_bytes / _POSITION_CHUNK_BYTES))
    step = max(1, math.ceil(n_patches / n_chunks))
    return (step,) * (n_patches // step) + ((n_patches % step,) if n_patches % step else ())


# -- the noise discriminator, position-chunk by position-chunk ---------------------


def _fit_discriminator(disc, features, client, grid_shape, working_memory):
    """Fit ``disc`` on ``features`` chunked by position; return dask ``kept``, ``weights``.

    ``kept`` and ``weights`` stay on the workers, chunked as ``features``;
    ``working_memory`` (MiB) sizes the chunks of each worker's scoring.
    """
    import dask.array as da

    from ._discriminator import _NEEDED_SCORES

    n_images, n_patches, n_features = features.shape
    disc.n_features_in_ = int(n_features)
    disc.n_neighbors_ = disc._check_n_neighbors(n_images)
    grid_shape = disc._check_grid_shape(grid_shape, n_patches)
    names = _NEEDED_SCORES[disc.method]
    by_position = features
    if disc.max_shift:
        raw, disc.shifts_ = _aligned_raw_scores(disc, features, names, client, grid_shape, working_memory)
    else:
        disc.shifts_ = np.zeros((n_images, 2), dtype=np.int64)
        blocks = by_position.to_delayed().reshape(-1)
        raw = da.concatenate(
            [
                da.from_delayed(
                    _delayed(_raw_scores_block)(block, disc, names, working_memory),
                    shape=(len(names), n_images, width), dtype=np.float32,
                )
                for block, width in zip(blocks, by_position.chunks[1])
            ],
            axis=2,
        )
    raw = client.persist(raw)
    if disc.method == "softpatch+" or disc.dilation:
        # Global ranks of every patch against every other, or the removal
        # grown across positions within each image: gathered here.
        gathered = raw.compute()
        disc._fit_from_raw({name: gathered[i] for i, name in enumerate(names)}, grid_shape)
        chunks = (n_images, features.chunks[1])
        return da.from_array(disc.kept_, chunks=chunks), da.from_array(disc.weights_, chunks=chunks)
    scores = raw[0]
    kept, threshold_value, selector = _keep_mask_distributed(scores, disc.threshold, client)
    if disc.method == "lof":
        weights = scores
    else:
        median = selector.median()
        weights = scores / median if median > 0 else da.ones_like(scores)
    if not disc.soft_weights:
        weights = da.ones_like(scores)
    # Kept on the workers for the coresets; the fitted attributes are gathered here.
    kept, weights = client.persist([kept, weights.astype(np.float32)])
    disc.scores_, disc.kept_, disc.weights_ = client.compute([scores, kept, weights], sync=True)
    disc.score_threshold_ = threshold_value
    return kept, weights


def _keep_mask_distributed(scores, threshold, client):
    """``_keep_mask`` of a dask array of scores: (kept, score threshold, selector).

    The (n_remove + 1)-th largest score is the first one kept; as in
    :func:`skpatch._discriminator._keep_mask` (a stable sort), everything
    above it is removed and, among the scores equal to it, the later
    patches (in flat ``image * n_patches + patch`` order) first.
    """
    import dask.array as da

    n_patches = scores.shape[1]
    selector = _Selector(scores, client)
    n_remove = int(np.floor(threshold * selector.n))
    if n_remove == 0:
        return da.ones(scores.shape, dtype=bool, chunks=scores.chunks), float("inf"), selector
    value, n_above, ties = selector.kth_largest(n_remove)
    removed_ties = ties[len(ties) - (n_remove - n_above):] if n_remove > n_above else ties[:0]
    kept = da.map_blocks(
        _kept_block, scores, np.float32(value), removed_ties, n_patches,
        _block_starts(scores.chunks[1]), dtype=bool,
    )
    return kept, float(value), selector


def _raw_scores_block(block, disc, names, working_memory):
    """Raw scores ``(n_names, n_images, width)`` of a position-chunk of features."""
    from sklearn import config_context

    from ._threads import torch_threads

    with config_context(working_memory=working_memory), torch_threads(disc.n_jobs):
        # Only with max_shift=0: a position chunk is not a grid.
        raw, _ = disc._raw_scores(np.asarray(block), names, (1, block.shape[1]))
    return np.stack([raw[name] for name in names])


def _aligned_raw_scores(disc, features, names, client, grid_shape, working_memory):
    """Raw scores of the aligned features (``max_shift``) and the shifts.

    The same steps as :meth:`NoiseDiscriminator._raw_scores` with
    ``max_shift``, on the workers: the features are projected per position
    chunk and rechunked by image; each pass shifts the image grids, takes the
    per-position median on position chunks (the template, gathered: one
    projected grid) and each image's best shift on the image chunks; the
    aligned projections are rechunked by position and scored there, and the
    scores are moved back to each image's own frame by image chunk. The
    projected features move (several shuffles of ``n_components`` floats
    per patch), the full features do not.
    """
    import dask.array as da
    import torch

    from ._alignment import N_PASSES, inner_template, shift_candidates

    n_images, n_patches, n_features = features.shape
    projection = disc._projection(n_features)
    n_dims = n_features if projection is None else projection.shape[1]
    position_chunks = features.chunks[1]
    projected = features.map_blocks(
        _project_block, projection, dtype=np.float32, chunks=(features.chunks[0], position_chunks, (n_dims,))
    )
    per_image = n_patches * n_dims * 4
    images_per_chunk = max(1, _POSITION_CHUNK_BYTES // per_image)
    # Persisted: every pass and the final alignment start from it.
    by_image = client.persist(projected.rechunk((images_per_chunk, n_patches, n_dims)))
    candidates = shift_candidates(grid_shape, disc.max_shift)
    shifts = np.zeros((n_images, 2), dtype=np.int64)
    for _ in range(N_PASSES if len(candidates) > 1 else 0):
        shifted = by_image.map_blocks(_shift_block, shifts, grid_shape, dtype=np.float32)
        median = shifted.rechunk((n_images, position_chunks, n_dims)).map_blocks(
            _median_block, drop_axis=0, dtype=np.float32, chunks=(position_chunks, (n_dims,))
        )
        template = inner_template(torch.from_numpy(client.compute(median, sync=True)), grid_shape, disc.max_shift)
        template = client.scatter(template, broadcast=True, hash=False)
        parts = [
            _delayed(_best_shifts_block)(block, template, grid_shape, candidates)
            for block in by_image.to_delayed().reshape(-1)
        ]
        shifts = np.concatenate(client.compute(parts, sync=True))
    aligned = by_image.map_blocks(_shift_block, shifts, grid_shape, dtype=np.float32)
    aligned = aligned.rechunk((n_images, position_chunks, n_dims))
    raw = aligned.map_blocks(
        _projected_scores_block, disc, names, working_memory, new_axis=0, drop_axis=2,
        dtype=np.float32, chunks=((len(names),), (n_images,), position_chunks),
    )
    raw = raw.rechunk((len(names), images_per_chunk, n_patches)).map_blocks(
        _unshift_block, shifts, grid_shape, dtype=np.float32
    )
    return raw.rechunk((len(names), n_images, position_chunks)), shifts


def _project_block(block, projection):
    from ._patches import float32_tensor

    Z = float32_tensor(np.ascontiguousarray(block))
    return (Z if projection is None else Z @ projection).numpy()


def _shift_block(block, shifts, grid_shape, block_info=None):
    import torch

    from ._alignment import shift_grids

    lo, hi = block_info[0]["array-location"][0]
    return shift_grids(torch.from_numpy(np.ascontiguousarray(block)), shifts[lo:hi], grid_shape).numpy()


def _median_block(block):
    import torch

    from ._alignment import position_median

    return position_median(torch.from_numpy(np.ascontiguousarray(block))).numpy()


def _best_shifts_block(block, template, grid_shape, candidates):
    import torch

    from ._alignment import best_shifts

    return best_shifts(torch.from_numpy(np.ascontiguousarray(block)), template, grid_shape, candidates)


def _projected_scores_block(block, disc, names, working_memory):
    """Raw scores ``(n_names, n_images, width)`` of a position chunk of projected features."""
    import torch
    from sklearn import config_context

    from ._threads import torch_threads

    Z = torch.from_numpy(np.ascontiguousarray(block)).transpose(0, 1).contiguous()
    with config_context(working_memory=working_memory), torch_threads(disc.n_jobs):
        return np.stack([disc._score(name, Z).T.numpy() for name in names])


def _unshift_block(block, shifts, grid_shape, block_info=None):
    from ._alignment import unshift_scores

    lo, hi = block_info[0]["array-location"][1]
    return np.stack([unshift_scores(scores, shifts[lo:hi], grid_shape) for scores in block])


def _block_starts(chunks):
    starts = np.concatenate([[0], np.cumsum(chunks)[:-1]]).astype(np.int64)
    return starts


def _kept_block(scores, value, removed_ties, n_patches, starts, block_info=None):
    kept = scores < value
    start = starts[block_info[0]["chunk-location"][1]] if block_info else 0
    images, positions = np.nonzero(scores == value)
    flat = images * n_patches + positions + start
    kept[images, positions] = ~np.isin(flat, removed_ties)
    return kept


def _sort_keys(block):
    """Sorted order-preserving integer keys of a block of float32 scores."""
    return np.sort(_keys(np.asarray(block, dtype=np.float32)).reshape(-1))


def _keys(values):
    """float32 -> uint32 keys in the same order (sign-magnitude to offset binary)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000)).astype(np.uint32)


def _value(key):
    key = np.uint32(key)
    bits = np.where(key >> 31, key & np.uint32(0x7FFFFFFF), ~key).astype(np.uint32)
    return bits.view(np.float32)[()]


def _count_at_least(sorted_keys, candidates):
    return len(sorted_keys) - np.searchsorted(sorted_keys, candidates, side="left")


def _ties(block, key, n_patches, start):
    images, positions = np.nonzero(_keys(np.asarray(block)) == key)
    return images.astype(np.int64) * n_patches + positions + start


class _Selector:
    """Exact order statistics of a distributed float32 array (a distributed top-k).

    Each chunk's scores are sorted once, on its worker, as integer keys; each
    round then counts, per chunk, the keys at or above 255 candidate values
    (a binary search in the sorted keys) and narrows the range to one of the
    256 intervals: four rounds pin down any of the 2**32 float32 values,
    moving a few kilobytes per chunk.
    """

    _FANOUT = 256

    def __init__(self, scores, client):
        self.scores = scores
        self.client = client
        self.n = int(np.prod(scores.shape))
        self.n_patches = scores.shape[1]
        self.blocks = list(scores.to_delayed().reshape(-1))
        self.starts = _block_starts(scores.chunks[1])
        self.sorted = client.compute([_delayed(_sort_keys)(block) for block in self.blocks])

    def _count(self, candidates):
        counts = self.client.gather(
            [self.client.submit(_count_at_least, keys, candidates, pure=False) for keys in self.sorted]
        )
        return np.sum(counts, axis=0)

    def _kth_key(self, k):
        """Key of the value at descending position ``k`` (0 = the largest)."""
        lo, hi = 0, 2**32  # the answer is the largest key t with count(>= t) >= k + 1
        while hi - lo > 1:
            candidates = np.unique(np.linspace(lo, hi, self._FANOUT + 1, dtype=np.float64)[1:-1].astype(np.int64))
            candidates = candidates[(candidates > lo) & (candidates < hi)]
            if candidates.size == 0:
                candidates = np.arange(lo + 1, hi, dtype=np.int64)
            counts = self._count(candidates.astype(np.uint32))
            ok = candidates[counts >= k + 1]
            bad = candidates[counts < k + 1]
            lo = int(ok.max()) if ok.size else lo
            hi = int(bad.min()) if bad.size else hi
        return lo

    def kth_largest(self, k):
        """(value, number of values above it, sorted flat indices of its ties)."""
        key = self._kth_key(k)
        n_above = int(self._count(np.array([key + 1], dtype=np.int64).astype(np.uint32))[0]) if key + 1 < 2**32 else 0
        ties = self.client.gather(
            [
                self.client.compute(_delayed(_ties)(block, np.uint32(key), self.n_patches, int(start)))
                for block, start in zip(self.blocks, self.starts)
            ]
        )
        return _value(key), n_above, np.sort(np.concatenate(ties))

    def median(self):
        """``np.median`` of all values, as numpy computes it for float32."""
        if self.n % 2:
            return float(_value(self._kth_key(self.n // 2)))
        upper = _value(self._kth_key(self.n // 2 - 1))  # descending positions
        lower = _value(self._kth_key(self.n // 2))
        return float(np.mean(np.array([lower, upper], dtype=np.float32)))


# -- the composable coreset -------------------------------------------------------


def _fit_coreset(coreset, features, kept, weights, client, oversample, working_memory):
    """Local greedy k-center per position chunk, then greedy k-center on their union.

    A composable coreset needs only some partition of the patches; the
    position chunks of the shuffle are one, and are already where the
    kept mask and weights are. The merge sees only the local centres'
    projected points (the selection runs on them); the full features of
    the chosen centres are then fetched from the local coresets, and the
    bank and its search index are built here, on the client.
    """
    from sklearn.utils import check_random_state

    from ._threads import torch_threads

    n_images, n_patches, n_features = features.shape
    rng = check_random_state(coreset.random_state)
    projection = None
    if coreset.projection_dim is not None and coreset.projection_dim < n_features:
        # The single-process projection: the first draw from the same seed.
        projection = rng.standard_normal((n_features, coreset.projection_dim)).astype(np.float32)
        projection /= np.sqrt(coreset.projection_dim, dtype=np.float32)
    n_select = max(1, math.ceil(coreset.sampling_ratio * n_images * n_patches - 1e-9))
    widths = features.chunks[1]
    seeds = rng.randint(np.iinfo(np.int32).max, size=len(widths) + 1)
    blocks = features.to_delayed().reshape(-1)
    kept_blocks = [None] * len(blocks) if kept is None else kept.to_delayed().reshape(-1)
    weight_blocks = [None] * len(blocks) if weights is None else weights.to_delayed().reshape(-1)
    local = client.compute([
        _delayed(_local_coreset)(
            block, kb, wb, int(start), n_patches, projection,
            math.ceil(oversample * coreset.sampling_ratio * n_images * width - 1e-9), coreset, int(seed),
            working_memory,
        )
        for block, kb, wb, start, width, seed in zip(
            blocks, kept_blocks, weight_blocks, _block_starts(widths), widths, seeds
        )
    ])
    points = [client.submit(_projected_part, part, pure=False) for part in local]
    chosen, sizes, rng = client.submit(
        _merge_coresets, points, n_select, coreset, int(seeds[-1]), working_memory, pure=False
    ).result()
    # The chosen centres' indices, features and weights, part by part.
    ends = np.cumsum(sizes)
    owner = np.searchsorted(ends, chosen, side="right")
    rows = [chosen[owner == i] - (ends[i] - sizes[i]) for i in range(len(local))]
    parts = client.gather(
        [client.submit(_part_rows, part, r, pure=False) for part, r in zip(local, rows) if r.size]
    )
    del local, points
    order = np.argsort(owner, kind="stable")  # chosen, grouped by part as fetched
    indices = np.empty(chosen.size, np.int64)
    bank = np.empty((chosen.size, features.shape[2]), np.float32)
    bank_weights = np.empty(chosen.size, np.float32)
    indices[order] = np.concatenate([part[0] for part in parts])
    bank[order] = np.concatenate([part[1] for part in parts])
    bank_weights[order] = np.concatenate([part[2] for part in parts])
    with torch_threads(coreset.n_jobs):
        return coreset._set_memory_bank(indices, bank, bank_weights, n_patches, rng)


def _local_coreset(features, kept, weights, start, n_patches, projection, n_local, coreset, seed, working_memory):
    """A position chunk's greedy k-center centres.

    Returns their flat training indices (``image * n_patches + position``),
    projected points, features and weights.
    """
    import torch
    from sklearn import config_context

    from ._kcenter import greedy_kcenter
    from ._threads import torch_threads

    features = np.asarray(features)
    n_images, width, n_features = features.shape
    flat = features.reshape(-1, n_features)
    candidates = np.arange(len(flat)) if kept is None else np.flatnonzero(np.asarray(kept).reshape(-1))
    w = np.ones(len(flat), np.float32) if weights is None else np.asarray(weights, np.float32).reshape(-1)
    if candidates.size == 0:
        dim = n_features if projection is None else projection.shape[1]
        return (np.empty(0, np.int64), np.empty((0, dim), np.float32),
                np.empty((0, n_features), np.float32), np.empty(0, np.float32))
    rng = np.random.RandomState(seed)
    with config_context(working_memory=working_memory), torch_threads(coreset.n_jobs):
        points = np.asarray(flat[candidates], dtype=np.float32)
        if projection is not None:
            points = (torch.from_numpy(points) @ torch.from_numpy(projection)).numpy()
        n_local = min(candidates.size, max(1, n_local))
        chosen = greedy_kcenter(points, n_local, n_cells=coreset._n_cells(candidates.size), rng=rng)
    rows = candidates[chosen]
    image, position = np.divmod(rows, width)
    flat_index = image.astype(np.int64) * n_patches + start + position
    return flat_index, points[chosen], np.ascontiguousarray(flat[rows], dtype=np.float32), w[rows]


def _projected_part(part):
    """A local coreset's projected points (all the merge needs)."""
    return part[1]


def _part_rows(part, rows):
    """Flat indices, features and weights of a local coreset's ``rows``."""
    return part[0][rows], part[2][rows], part[3][rows]


def _merge_coresets(points, n_select, coreset, seed, working_memory):
    """Greedy k-center on the union of the local centres' projected points.

    Returns the chosen positions in the union (the local coresets in
    order), the size of each local coreset and the random state after the
    selection, which builds the bank's search index.
    """
    from sklearn import config_context

    from ._coreset import ALL_REMOVED
    from ._kcenter import greedy_kcenter
    from ._threads import torch_threads

    sizes = np.array([len(part) for part in points], dtype=np.int64)
    points = np.concatenate(points)
    if len(points) == 0:
        raise ValueError(ALL_REMOVED)
    rng = np.random.RandomState(seed)
    n_select = min(n_select, len(points))
    with config_context(working_memory=working_memory), torch_threads(coreset.n_jobs):
        chosen = greedy_kcenter(points, n_select, n_cells=coreset._n_cells(len(points)), rng=rng)
    return np.asarray(chosen, dtype=np.int64), sizes, rng
