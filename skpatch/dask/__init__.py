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

Notes
-----
:func:`fit` re-implements no step: it runs the steps' declared phases where
the data are. The seams, all documented methods of the steps:

- :class:`~skpatch.NoiseDiscriminator`: ``begin_fit``, ``raw_score_names``,
  ``projection_matrix``, ``score_positions`` (on each position chunk) and
  ``fit_from_raw`` (the cut and the weights), and
  :func:`skpatch._alignment.align` (the alignment's passes);
- :class:`~skpatch.WeightedCoreset`: ``bank_size``, ``projection_matrix``,
  ``project``, ``select`` and ``set_memory_bank``;
- the estimators: ``_make_pipeline`` (the steps, with the estimator's
  settings), ``_offset_sample``, ``_patch_map`` and ``_finish_fit`` (the
  fit-finishing hook that ``fit`` ends in too), and scikit-learn's
  ``_validate_params``.

The modules: ``_partitions`` (images to tasks), ``_scoring``
(:func:`score_images`, :func:`save_maps`), ``_features``
(:func:`featurize`, the shuffle by position), ``_denoise`` and ``_memory``
(the discriminator's and the coreset's phases on the workers) and ``_fit``
(:func:`fit`).
"""

from ._features import featurize
from ._fit import fit
from ._scoring import save_maps, score_images

__all__ = ["featurize", "fit", "save_maps", "score_images"]
