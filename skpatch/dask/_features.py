"""Patch features computed on the workers, by image partition or by position."""

import math
import operator

import numpy as np

from .._chunking import rows_per_chunk
from .._patches import patch_rows
from ._partitions import (
    DelayedPart, block_starts, first_image, get_client, part_len, partitions, round_to_batches, submit,
)

# Position chunks of the discriminator's shuffle hold at most this many bytes
# of features (all images, a range of positions) ...
POSITION_CHUNK_BYTES = 128 * 2**20
# ... and there are at least this many per worker.
CHUNKS_PER_WORKER = 2


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
    features : dask.array.Array of shape (n_images, h, w, embed_dim)
        On the patch grid ``featurizer.feature_shape_``, chunked by
        partition along the images; each chunk equals
        ``featurizer.transform`` of its images, bit for bit at the same
        torch thread count. ``featurizer`` is fitted.
    """
    from .._featurizer import PatchFeaturizer

    if not isinstance(featurizer, PatchFeaturizer):
        raise TypeError(f"featurize needs a PatchFeaturizer; got {type(featurizer).__name__}.")
    client = get_client(client)
    parts = partitions(images, round_to_batches(featurizer, partition_size))
    if not hasattr(featurizer, "backbone_"):
        featurizer.fit(first_image(parts[0]))
    features = featurize_parts(featurizer, parts, client)
    features = features.reshape(len(features), *featurizer.feature_shape_, featurizer.embed_dim)
    return client.persist(features) if persist else features


def ship_featurizer(featurizer, client):
    """The featurizer as a task's result, for the workers' featurizing tasks.

    Not scattered data: the scheduler drops the extra copies of broadcast
    data, and scattered data whose last copy dies with its worker is lost
    for good, while a task's result is recomputed.
    """
    return client.submit(_same, featurizer, pure=False)


def featurize_parts(featurizer, parts, client):
    """Lazy features of ``parts``, chunked by partition (a fitted ``featurizer``)."""
    import dask.array as da
    from dask import delayed

    shipped = ship_featurizer(featurizer, client)
    n_patches = featurizer.feature_shape_[0] * featurizer.feature_shape_[1]
    blocks = [
        da.from_delayed(
            delayed(featurize_partition, pure=True)(
                shipped, part.block if isinstance(part, DelayedPart) else part
            ),
            shape=(part_len(part), n_patches, featurizer.embed_dim),
            dtype=np.dtype(featurizer.feature_dtype),
        )
        for part in parts
    ]
    return da.concatenate(blocks, axis=0)


def featurize_by_position(featurizer, parts, client):
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
    (:func:`ship_featurizer`), which the caller holds for as long as a
    lost chunk may have to be recomputed from its pieces.
    """
    import dask.array as da
    from dask.base import tokenize

    shipped = ship_featurizer(featurizer, client)
    n_patches = featurizer.feature_shape_[0] * featurizer.feature_shape_[1]
    n_images = sum(part_len(part) for part in parts)
    dtype = np.dtype(featurizer.feature_dtype)
    widths = position_widths(n_images, n_patches, featurizer.embed_dim * dtype.itemsize, client)
    bounds = tuple(zip(block_starts(widths).tolist(), np.cumsum(widths).tolist()))
    pieces_of_parts = [submit(client, featurize_pieces, shipped, part, bounds, retries=0) for part in parts]
    # Each piece its own result (freed once its chunk has it), and each
    # worker its share of the chunks (the scheduler places them unevenly:
    # every chunk needs pieces from every worker); any worker may take a
    # chunk over (a lost worker, a busy one).
    pieces = [[client.submit(operator.getitem, p, c, pure=False) for c in range(len(bounds))]
              for p in pieces_of_parts]
    workers = sorted(client.nthreads())
    name = "features-by-position-" + tokenize(shipped.key, [p.key for p in pieces_of_parts], bounds)
    chunks = {}
    for c in range(len(widths)):
        key = (name, 0, c, 0)
        chunks[key] = client.submit(
            concatenate_pieces, [part_pieces[c] for part_pieces in pieces], key=key,
            workers=[workers[c % len(workers)]], allow_other_workers=True,
        )
    return da.Array(chunks, name, ((n_images,), widths, (featurizer.embed_dim,)), dtype=dtype), shipped


def by_position(features, client, method):
    """``features`` rechunked to all images x a range of positions (a lazy shuffle).

    The chunks are those of :func:`position_widths`. Scores are computed
    per position, so the chunking does not change them (tests check that
    they equal the single-process ones).
    """
    n_images, n_patches, n_features = features.shape
    widths = position_widths(n_images, n_patches, n_features * features.dtype.itemsize, client)
    return features.rechunk((n_images, widths, n_features), method=method)


def position_widths(n_images, n_patches, patch_bytes, client):
    """Widths of the position chunks.

    Each holds at most ``POSITION_CHUNK_BYTES`` and there are
    ``CHUNKS_PER_WORKER`` per worker or more (as many as there are
    positions, if fewer).
    """
    n_workers = max(1, len(client.nthreads()))
    n_bytes = n_images * patch_bytes * n_patches
    n_chunks = max(CHUNKS_PER_WORKER * n_workers, math.ceil(n_bytes / POSITION_CHUNK_BYTES))
    step = max(1, math.ceil(n_patches / n_chunks))
    return (step,) * (n_patches // step) + ((n_patches % step,) if n_patches % step else ())


def images_per_chunk(image_bytes):
    """Images per image chunk of a regrouping, within ``POSITION_CHUNK_BYTES``."""
    return rows_per_chunk(image_bytes, working_memory=POSITION_CHUNK_BYTES / 2**20)


# -- worker tasks ---------------------------------------------------------------------


def featurize_partition(featurizer, images):
    """A partition's features as rows of patches ``(n, h * w, d)``: the cluster
    chunks them by patch position."""
    return patch_rows(featurizer.transform(images))


def featurize_pieces(featurizer, images, bounds):
    """A partition's features as one contiguous copy per position range."""
    features = patch_rows(featurizer.transform(images))
    return tuple(np.ascontiguousarray(features[:, start:stop]) for start, stop in bounds)


def concatenate_pieces(pieces):
    return np.concatenate(pieces, axis=0)


def _same(value):
    return value
