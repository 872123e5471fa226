"""The distributed fit: the pipeline's steps run where the features are."""

from numbers import Real

import numpy as np

from ._denoise import fit_discriminator
from ._features import by_position, featurize_by_position, featurize_parts
from ._memory import fit_coreset
from ._partitions import delayed_task, first_image, get_client, part_len, partitions, round_to_batches


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
       instead), and each position chunk is scored on a worker by
       :meth:`~skpatch.NoiseDiscriminator.score_positions`, with the
       discriminator's seeded projection (with ``max_shift``, the grids are
       aligned on the workers first). The raw scores
       (``n_images * n_patches * 4`` bytes per score, the size of the
       fitted ``scores_``) are gathered on the client, where
       :meth:`~skpatch.NoiseDiscriminator.fit_from_raw` makes the cut and
       the weights, as ``fit`` does; the kept mask and weights go back to
       the workers.
    3. **Coreset** (a composable coreset, Malkomes et al., NeurIPS 2015):
       each position chunk selects a greedy k-center coreset of its kept
       patches, ``oversample`` times its share of the memory bank; one
       worker then runs greedy k-center on the union of those centres
       (their projected points only), down to the single-process bank size,
       and the client fetches the chosen centres' features and weights and
       builds the bank and its search index
       (:meth:`~skpatch.WeightedCoreset.set_memory_bank`).

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
    from .._base import BaseSoftPatch

    if not isinstance(estimator, BaseSoftPatch):
        raise TypeError(f"fit needs a SoftPatchClassifier or SoftPatchSegmenter; got {type(estimator).__name__}.")
    if not isinstance(oversample, Real) or not oversample >= 1:
        raise ValueError(f"oversample must be a number >= 1; got {oversample!r}.")
    if shuffle not in ("tasks", "p2p"):
        raise ValueError(f"shuffle must be 'tasks' or 'p2p'; got {shuffle!r}.")
    estimator._validate_params()
    client = get_client(client)
    return DistributedFit(estimator, client, partition_size, float(oversample), shuffle).run(images)


class DistributedFit:
    """The steps of :func:`fit`; see its docstring."""

    def __init__(self, estimator, client, partition_size, oversample, shuffle):
        self.shuffle = shuffle
        self.estimator = estimator
        self.client = client
        self.partition_size = partition_size
        self.oversample = oversample

    def run(self, images):
        est = self.estimator
        pipeline = est._make_pipeline()
        featurizer, denoise, coreset = (step for _, step in pipeline.steps)
        check_steps(featurizer, denoise, coreset)
        parts = partitions(images, round_to_batches(featurizer, self.partition_size))
        n_images = sum(part_len(part) for part in parts)
        if n_images < 2:
            raise ValueError(f"skpatch.dask.fit needs at least 2 training images; got {n_images}.")
        first = first_image(parts[0])  # once: a dask array's block is computed for it
        featurizer.fit(first)
        # The one shuffle: from image partitions (as featurized) to chunks of
        # all images at a range of positions. Only the position chunks are
        # kept, so each worker holds about 1 / n_workers of the features.
        if self.shuffle == "p2p":
            features = featurize_parts(featurizer, parts, self.client)
            features = self.client.persist(by_position(features, self.client, self.shuffle))
        else:
            features, self._shipped = featurize_by_position(featurizer, parts, self.client)
        self.working_memory = worker_working_memory(self.client)
        kept, weights = None, None
        if denoise != "passthrough":
            kept, weights = fit_discriminator(
                denoise, features, self.client, featurizer.feature_shape_, self.working_memory
            )
        fit_coreset(coreset, features, kept, weights, self.client, self.oversample, self.working_memory)
        # The steps were fitted in place: the estimator's own pipeline.
        est.pipeline_ = pipeline
        est.n_train_images_ = int(n_images)
        est.image_size_ = _image_size(first)
        self._finish(features)
        self._shipped = None
        return est

    def _finish(self, features):
        """``train_scores_`` / ``offset_`` as ``estimator.fit`` sets them (its ``_finish_fit``).

        Leave-one-image-out patch scores only need each patch's own image,
        so they are computed on the position chunks, gathered as
        ``(n_images, n_patches)`` and aggregated here as ``fit`` does.
        """
        est = self.estimator
        n_images = features.shape[0]
        indices = est._held_out_images(n_images)
        if indices is None:  # every training image
            indices = np.arange(n_images)
        coreset = self.client.scatter(est.pipeline_[-1], broadcast=True, hash=False)
        blocks = features.to_delayed().reshape(-1)
        parts = self.client.compute(
            [delayed_task(leave_one_out_block)(coreset, block, indices, self.working_memory) for block in blocks]
        )
        est._finish_fit(est._patch_map(-np.concatenate(self.client.gather(parts), axis=1)))


def check_steps(featurizer, denoise, coreset):
    """TypeError unless the steps are the ones this fit runs the phases of."""
    from .._bagging import BaggedCoreset
    from .._coreset import WeightedCoreset
    from .._discriminator import NoiseDiscriminator
    from .._featurizer import PatchFeaturizer

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


def worker_working_memory(client):
    """Each task's share (MiB) of the client's ``working_memory`` budget.

    One share per worker thread (each runs a task at a time), counted when
    the fit starts.
    """
    from sklearn import get_config

    n_threads = max(1, sum(client.nthreads().values()))
    return get_config()["working_memory"] / n_threads


def _image_size(first):
    from .._images import check_images

    return check_images(first).image_size


def leave_one_out_block(coreset, block, indices, working_memory):
    """Leave-one-image-out scores ``(len(indices), width)`` of a position chunk."""
    from sklearn import config_context

    block = np.asarray(block)
    if len(indices) < len(block):  # the classifier scores every image: no copy then
        block = block[indices]
    with config_context(working_memory=working_memory):
        return coreset.score_held_out(block, indices)
