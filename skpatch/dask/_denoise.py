"""The noise discriminator's phases on features chunked by position.

:meth:`~skpatch.NoiseDiscriminator.score_positions` runs on each position
chunk, where the features are; :meth:`~skpatch.NoiseDiscriminator.begin_fit`
and :meth:`~skpatch.NoiseDiscriminator.fit_from_raw` (the cut and the
weights) run on the client, on the gathered raw scores; the alignment of
``max_shift`` runs :func:`skpatch._alignment.align` with the median and the
best shifts computed on the workers.
"""

import numpy as np

from .._alignment import align, best_shifts, position_median, shift_grids, unshift_scores
from .._patches import float32_tensor
from .._threads import torch_threads
from ._features import images_per_chunk
from ._partitions import delayed_task


def fit_discriminator(disc, features, client, grid_shape, working_memory):
    """Fit ``disc`` on ``features`` chunked by position; return dask ``kept``, ``weights``.

    The raw scores are computed on the workers, then gathered (the size of
    the fitted ``scores_``): the cut is an order statistic of all of them,
    ``"softpatch+"`` ranks all patches against each other and ``dilation``
    grows the removal across positions. ``kept`` and ``weights`` go back to
    the workers, chunked as ``features``; ``working_memory`` (MiB) sizes the
    chunks of each worker's scoring.
    """
    import dask.array as da

    n_images, n_patches, n_features = features.shape
    grid_shape = disc.begin_fit(features.shape, grid_shape)
    names = disc.raw_score_names()
    shifts = None
    if disc.max_shift:
        raw, shifts = aligned_raw_scores(disc, features, names, client, grid_shape, working_memory)
    else:
        raw = da.concatenate(
            [
                da.from_delayed(
                    delayed_task(raw_scores_block)(block, disc, names, working_memory),
                    shape=(len(names), n_images, width), dtype=np.float32,
                )
                for block, width in zip(features.to_delayed().reshape(-1), features.chunks[1])
            ],
            axis=2,
        )
    gathered = client.compute(raw, sync=True)
    disc.fit_from_raw({name: gathered[i] for i, name in enumerate(names)}, grid_shape, shifts)
    chunks = (n_images, features.chunks[1])
    return da.from_array(disc.kept_, chunks=chunks), da.from_array(disc.weights_, chunks=chunks)


def aligned_raw_scores(disc, features, names, client, grid_shape, working_memory):
    """Raw scores of the aligned features (``max_shift``) and the shifts.

    The steps of :meth:`NoiseDiscriminator.raw_scores` with ``max_shift``,
    on the workers: the features are projected per position chunk and
    rechunked by image; each pass of the alignment shifts the image grids,
    takes the per-position median on position chunks (the template,
    gathered: one projected grid) and each image's best shift on the image
    chunks; the aligned projections are rechunked by position and scored
    there, and the scores are moved back to each image's own frame by image
    chunk. The projected features move (several shuffles of
    ``n_components`` floats per patch), the full features do not.
    """
    import torch

    n_images, n_patches, n_features = features.shape
    projection = disc.projection_matrix(n_features)
    n_dims = n_features if projection is None else projection.shape[1]
    position_chunks = features.chunks[1]
    projected = features.map_blocks(
        project_block, projection, dtype=np.float32, chunks=(features.chunks[0], position_chunks, (n_dims,))
    )
    image_chunk = images_per_chunk(n_patches * n_dims * 4)
    # Persisted: every pass and the final alignment start from it.
    by_image = client.persist(projected.rechunk((image_chunk, n_patches, n_dims)))

    def median(shifts):
        shifted = by_image.map_blocks(shift_block, shifts, grid_shape, dtype=np.float32)
        median = shifted.rechunk((n_images, position_chunks, n_dims)).map_blocks(
            median_block, drop_axis=0, dtype=np.float32, chunks=(position_chunks, (n_dims,))
        )
        return torch.from_numpy(client.compute(median, sync=True))

    def best(template, candidates):
        template = client.scatter(template, broadcast=True, hash=False)
        parts = [
            delayed_task(best_shifts_block)(block, template, grid_shape, candidates)
            for block in by_image.to_delayed().reshape(-1)
        ]
        return np.concatenate(client.compute(parts, sync=True))

    shifts = align(n_images, grid_shape, disc.max_shift, median=median, best=best)
    aligned = by_image.map_blocks(shift_block, shifts, grid_shape, dtype=np.float32)
    aligned = aligned.rechunk((n_images, position_chunks, n_dims))
    raw = aligned.map_blocks(
        projected_scores_block, disc, names, working_memory, new_axis=0, drop_axis=2,
        dtype=np.float32, chunks=((len(names),), (n_images,), position_chunks),
    )
    raw = raw.rechunk((len(names), image_chunk, n_patches)).map_blocks(
        unshift_block, shifts, grid_shape, dtype=np.float32
    )
    return raw.rechunk((len(names), n_images, position_chunks)), shifts


# -- worker tasks ---------------------------------------------------------------------


def raw_scores_block(block, disc, names, working_memory):
    """Raw scores ``(n_names, n_images, width)`` of a position chunk of features."""
    from sklearn import config_context

    block = np.asarray(block)
    with config_context(working_memory=working_memory), torch_threads(disc.n_jobs):
        raw = disc.score_positions(block, names, disc.projection_matrix(block.shape[2]))
    return np.stack([raw[name] for name in names])


def projected_scores_block(block, disc, names, working_memory):
    """Raw scores ``(n_names, n_images, width)`` of a position chunk of aligned projections."""
    from sklearn import config_context

    with config_context(working_memory=working_memory), torch_threads(disc.n_jobs):
        raw = disc.score_positions(np.asarray(block), names)
    return np.stack([raw[name] for name in names])


def project_block(block, projection):
    Z = float32_tensor(np.ascontiguousarray(block))
    return (Z if projection is None else Z @ projection).numpy()


def shift_block(block, shifts, grid_shape, block_info=None):
    import torch

    lo, hi = block_info[0]["array-location"][0]
    return shift_grids(torch.from_numpy(np.ascontiguousarray(block)), shifts[lo:hi], grid_shape).numpy()


def median_block(block):
    import torch

    return position_median(torch.from_numpy(np.ascontiguousarray(block))).numpy()


def best_shifts_block(block, template, grid_shape, candidates):
    import torch

    return best_shifts(torch.from_numpy(np.ascontiguousarray(block)), template, grid_shape, candidates)


def unshift_block(block, shifts, grid_shape, block_info=None):
    lo, hi = block_info[0]["array-location"][1]
    return np.stack([unshift_scores(scores, shifts[lo:hi], grid_shape) for scores in block])
