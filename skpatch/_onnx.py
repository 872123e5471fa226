"""Export of a fitted SoftPatchClassifier / SoftPatchSegmenter to one ONNX graph.

The graph computes what ``score_samples`` computes, from an image batch to the
scores, so that it runs under onnxruntime (or any ONNX runtime) with neither
skpatch nor torch installed. Every linear resampling step (the antialiased
resize of the input, the upsampling of the coarse feature map, the channel
pooling, the segmenter's upsampling and Gaussian smoothing) is written as a
product with a constant matrix whose entries are computed by the very
function skpatch uses at prediction time (torch's ``interpolate`` and
``adaptive_avg_pool1d``, scipy's ``gaussian_filter1d``) applied to an identity
matrix: the graph then differs from skpatch only by float32 rounding. The
features are the featurizer's own patch embedding in its exportable form
(:mod:`skpatch._embedding`), which is also the
``PatchFeaturizer(engine="onnxruntime")`` backend.

The export reads an estimator through its fitted ``pipeline_``, ``offset_``
and ``image_size_``, the classifier's ``_image_scores_from_patch_map`` (which
it traces) and the segmenter's ``_to_pixels`` and ``sigma`` (whose
upsampling and smoothing it writes as matrices), never through its class:
the estimators import this module for their ``export_onnx`` method.
"""

import json
import warnings

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._bagging import BaggedCoreset, memory_members
from ._coreset import WeightedCoreset
from ._discriminator import NoiseDiscriminator
from ._embedding import INPUT_NAME, export_module, interp_matrix
from ._featurizer import PatchFeaturizer
from ._version import __version__

# Rows of the memory bank compared with all queries at once: the graph holds
# an (n_images * n_patches, _BANK_CHUNK) distance block per step, 12.5 MB per
# image at 784 patches.
_BANK_CHUNK = 4096
# Candidates per chunk whose distances are recomputed directly (see _nearest).
_RERANK = 4
# Protobuf's limit on one ONNX file.
_MAX_ONNX_BYTES = 2**31 - 1


def _smoothing_matrix(n, sigma):
    """(n, n) matrix of ``gaussian_filter1d(sigma, truncate=4.0, mode="reflect")``."""
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.eye(n), sigma=sigma, axis=0, truncate=4.0, mode="reflect")


class _ScoreGraph(torch.nn.Module):
    """Images -> ``score_samples`` of a fitted classifier or segmenter.

    The nearest memory patch is found by brute force, ``bank_chunk`` bank rows
    at a time: the expansion ``||m||^2 - 2 q.m`` picks a few candidates per
    chunk and their distances, computed directly, pick the winner; ties go
    to the lower bank index.
    """

    def __init__(self, estimator, input_dtype, bank_chunk=None):
        super().__init__()
        bank_chunk = _BANK_CHUNK if bank_chunk is None else bank_chunk
        featurizer, coreset = estimator.pipeline_[0], estimator.pipeline_[-1]
        self.input_size = tuple(int(s) for s in estimator.image_size_)
        self.features = featurizer._embedding(input_size=self.input_size)
        self.uint8 = input_dtype == "uint8"
        self.grid = tuple(int(s) for s in featurizer.feature_shape_)
        self.half = featurizer.feature_dtype == "float16"
        # One bank, or a BaggedCoreset's members one after the other: each
        # member's nearest patch is searched within its own rows.
        members = memory_members(coreset)
        self.aggregate_members = getattr(coreset, "aggregate", None)
        bank = torch.from_numpy(np.concatenate([np.asarray(m.memory_bank_, dtype=np.float32) for m in members]))
        self.register_buffer("bank", bank)
        self.register_buffer("bank_norms", bank.square().sum(1))
        weights = np.concatenate([np.asarray(m.memory_weights_, dtype=np.float32) for m in members])
        self.register_buffer("weights", torch.from_numpy(weights))
        bounds = np.cumsum([0] + [len(m.memory_bank_) for m in members])
        self.member_chunks = [
            [(lo, min(lo + bank_chunk, end)) for lo in range(start, end, bank_chunk)]
            for start, end in zip(bounds[:-1], bounds[1:])
        ]
        self.segmenter = hasattr(estimator, "_to_pixels")
        if self.segmenter:
            rows, cols = _pixel_matrices(estimator, self.grid, self.input_size)
            self.register_buffer("pixel_rows", rows)
            self.register_buffer("pixel_cols", cols)
        else:
            self.aggregate = estimator._image_scores_from_patch_map

    def forward(self, images):
        images = images.permute(0, 3, 1, 2)
        images = images.float() / 255.0 if self.uint8 else images
        features = self.features(images)
        if self.half:
            features = features.half().float()
        n, d = features.shape[0], features.shape[2]
        queries = features.reshape(-1, d)
        # Patch anomaly: distance to the nearest memory patch x its weight,
        # combined over the members of a bagged memory as BaggedCoreset does.
        anomaly = []
        for chunks in self.member_chunks:
            distance, nearest = self._nearest(queries, chunks)
            anomaly.append(distance * self.weights[nearest])
        patch_anomaly = self._combine(anomaly).reshape(n, *self.grid)
        if not self.segmenter:
            return -self.aggregate(patch_anomaly), -patch_anomaly
        pixel_anomaly = torch.matmul(torch.matmul(self.pixel_rows, patch_anomaly), self.pixel_cols)
        # An image's score is its worst pixel, as skpatch's image-level scorers read a map.
        return -pixel_anomaly, -pixel_anomaly.amax(dim=(1, 2)), -patch_anomaly

    def _combine(self, anomaly):
        if len(anomaly) == 1:
            return anomaly[0]
        stacked = torch.stack(anomaly)
        if self.aggregate_members == "mean":
            return stacked.mean(dim=0)
        # numpy's median: the mean of the two middle values for an even count.
        ordered = stacked.sort(dim=0).values
        count = len(anomaly)
        return 0.5 * (ordered[(count - 1) // 2] + ordered[count // 2])

    def _nearest(self, queries, chunks):
        best = best_index = None
        for lo, hi in chunks:
            # ||q - m||^2 - ||q||^2 = ||m||^2 - 2 q.m ranks the chunk cheaply, but
            # its float32 rounding grows with ||q||^2 (about 1e-3 at the 8000 of
            # bottle features) and can swap neighbours closer than that: the
            # best few are re-ranked by their directly computed distances.
            partial = torch.addmm(self.bank_norms[lo:hi], queries, self.bank[lo:hi].T, alpha=-2.0)
            candidates = partial.topk(min(_RERANK, hi - lo), dim=1, largest=False).indices + lo
            distances = (queries[:, None, :] - self.bank[candidates]).norm(dim=2)
            value, position = distances.min(dim=1)
            index = candidates.gather(1, position[:, None])[:, 0]
            if best is None:
                best, best_index = value, index
            else:
                better = value < best  # ties keep the earlier, lower index
                best = torch.where(better, value, best)
                best_index = torch.where(better, index, best_index)
        return best, best_index


def _pixel_matrices(segmenter, grid, size):
    """(H, h) and (w, W) matrices of the segmenter's upsampling and smoothing.

    ``pixel_map = rows @ patch_map @ cols`` reproduces ``_to_pixels``: torch's
    bilinear upsampling, then scipy's ``gaussian_filter`` (``truncate=4.0``,
    ``mode="reflect"``), which is separable and linear along each axis.
    """
    mats = []
    for n_in, n_out in zip(grid, size):
        matrix = interp_matrix(n_in, n_out, antialias=False).double().numpy()
        if segmenter.sigma > 0:
            matrix = _smoothing_matrix(n_out, segmenter.sigma) @ matrix
        mats.append(torch.from_numpy(matrix.astype(np.float32)))
    return mats[0], mats[1].T.contiguous()


def _check_exportable(estimator, input_dtype):
    check_is_fitted(estimator, ("pipeline_", "offset_"))
    if input_dtype not in ("uint8", "float32"):
        raise ValueError(f"input_dtype must be 'uint8' or 'float32'; got {input_dtype!r}.")
    steps = [step for _, step in estimator.pipeline_.steps]
    featurizer, coreset = steps[0], steps[-1]
    denoise = steps[1] if len(steps) == 3 else None
    expected = (
        ("featurizer", featurizer, PatchFeaturizer),
        ("memory", coreset, (WeightedCoreset, BaggedCoreset)),
    )
    for name, step, cls in expected:
        if not isinstance(step, cls):
            names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
            msg = (
                f"Cannot export the {name} step {type(step).__name__}: the ONNX graph "
                f"reproduces skpatch's own {names} only."
            )
            raise TypeError(msg)
    if denoise != "passthrough" and not isinstance(denoise, NoiseDiscriminator):
        msg = (
            f"Cannot export the denoise step {type(denoise).__name__}: the graph assumes "
            "that test features pass through it unchanged, as NoiseDiscriminator's do."
        )
        raise TypeError(msg)
    if coreset.search in ("ivf", "pynndescent"):
        msg = (
            f"The memory step searches approximately (search={coreset.search!r}); the ONNX "
            "graph searches exactly (brute force), so its scores are those of "
            "search='exact' and can differ from this model's score_samples."
        )
        warnings.warn(msg, UserWarning, stacklevel=3)
    n_rows = sum(len(m.memory_bank_) for m in memory_members(coreset))
    n_bytes = 4 * n_rows * coreset.n_features_in_ + sum(
        p.numel() * p.element_size() for p in featurizer.backbone_.parameters()
    )
    if n_bytes > _MAX_ONNX_BYTES - 2**24:
        msg = (
            f"The memory bank ({n_rows} x {coreset.n_features_in_} "
            f"float32) and the backbone take {n_bytes / 2**30:.2f} GiB, over the 2 GiB "
            "limit of one ONNX file; lower memory__sampling_ratio or featurizer__embed_dim."
        )
        raise ValueError(msg)


def _metadata(estimator, input_dtype, output_names):
    height, width = (int(s) for s in estimator.image_size_)
    segmenter = hasattr(estimator, "_to_pixels")
    grid = tuple(int(s) for s in estimator.pipeline_[0].feature_shape_)
    value_range = "0..255" if input_dtype == "uint8" else "[0, 1]"
    shapes = {
        "maps": ["n", height, width],
        "scores": ["n"],
        "patch_scores": ["n", *grid],
    }
    return {
        "skpatch.version": __version__,
        "skpatch.estimator": type(estimator).__name__,
        "skpatch.offset": repr(float(estimator.offset_)),
        "skpatch.input": json.dumps(
            {"name": INPUT_NAME, "dtype": input_dtype, "shape": ["n", height, width, 3],
             "layout": "NHWC, RGB", "range": value_range}
        ),
        "skpatch.outputs": json.dumps({name: shapes[name] for name in output_names}),
        "skpatch.sign_convention": (
            "higher = more normal, as score_samples; anomaly score = -score; "
            "decision_function = score - offset, negative = anomalous"
            + (" (per pixel for maps)" if segmenter else "")
        ),
        "skpatch.memory_bank": json.dumps(
            [sum(len(m.memory_bank_) for m in memory_members(estimator.pipeline_[-1])),
             int(estimator.pipeline_[-1].n_features_in_)]
        ),
    }


def export_onnx(estimator, path, *, input_dtype="uint8"):
    """Write a fitted SoftPatch model as one self-contained ONNX graph.

    The graph takes a batch of images at the training size and returns what
    ``score_samples`` returns, computed inside the graph: the resize to the
    featurizer's ``image_size`` and the normalisation, the CNN stages, local
    aggregation, upsampling and channel pooling, the distance to the nearest
    memory patch times its weight, and the image score (classifier) or the
    upsampled and smoothed map (segmenter). Running it needs an ONNX runtime
    (e.g. ``onnxruntime``) and numpy only: neither skpatch nor torch.

    Parameters
    ----------
    estimator : SoftPatchClassifier or SoftPatchSegmenter
        A fitted model with skpatch's own pipeline steps.

    path : str or path-like
        The ``.onnx`` file to write.

    input_dtype : {"uint8", "float32"}, default="uint8"
        Type of the input ``images``: uint8 in 0..255, or float32 in [0, 1]
        (as ``score_samples`` reads either).

    Returns
    -------
    metadata : dict of str to str
        The ``metadata_props`` stored in the file (see Notes).

    Notes
    -----
    Input ``images``: shape ``(n, H, W, 3)``, RGB, channels last, with
    ``(H, W) = estimator.image_size_`` (the training size) and any ``n``.
    Grayscale images must be repeated to three channels by the caller.

    Outputs, all with the sign of ``score_samples`` (higher = more normal):

    - classifier: ``scores`` ``(n,)``, equal to ``score_samples``, and
      ``patch_scores`` ``(n, h, w)``, the negated weighted patch distances;
    - segmenter: ``maps`` ``(n, H, W)``, equal to ``score_samples``;
      ``scores`` ``(n,)``, each map's minimum (the image score that
      skpatch's image-level scorers use); and ``patch_scores``.

    The metadata (``metadata_props``) states the input contract, the outputs,
    the sign convention, ``offset_`` (``decision_function = score - offset``;
    negative means anomalous), the memory bank's shape and the skpatch version.

    The search is brute force over the whole memory bank (in chunks of 4096
    rows, so memory stays at about 12.5 MB per image at 784 patches): exact,
    but its cost grows with the bank, about ``2 * n_patches * n_memory *
    embed_dim`` floating-point operations per image. The file must stay
    under protobuf's 2 GiB limit (bank and backbone weights together).
    Scores match ``score_samples`` up to float32 rounding (1e-6 relative on
    the test images) unless two memory patches are equally near a test patch
    within that rounding but carry different weights: the graph takes the
    nearest in exact arithmetic (the best 4 per chunk by the fast expansion
    ``||m||^2 - 2 q.m``, re-ranked by direct distance), skpatch's search may
    take the other, and the weighted distance differs by the weights' ratio.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from skpatch import SoftPatchClassifier, export_onnx
    >>> from skpatch.datasets import make_defects
    >>> X, y, _ = make_defects(16, image_size=64, defect_ratio=0.25, random_state=0)
    >>> clf = SoftPatchClassifier(random_state=0).set_params(
    ...     featurizer__image_size=64, featurizer__embed_dim=64, denoise__n_neighbors=4)
    >>> clf = clf.fit(X[y == 0])
    >>> path = os.path.join(tempfile.mkdtemp(), "model.onnx")
    >>> metadata = export_onnx(clf, path)
    >>> metadata["skpatch.input"]
    '{"name": "images", "dtype": "uint8", "shape": ["n", 64, 64, 3], "layout": "NHWC, RGB", "range": "0..255"}'
    >>> import onnxruntime as ort   # no skpatch or torch needed from here on
    >>> session = ort.InferenceSession(path)
    >>> scores = session.run(["scores"], {"images": X})[0]
    >>> bool(np.allclose(scores, clf.score_samples(X), rtol=1e-4))
    True
    """
    _check_exportable(estimator, input_dtype)
    import onnx

    graph = _ScoreGraph(estimator, input_dtype).eval()
    height, width = graph.input_size
    example = torch.zeros((2, height, width, 3), dtype=torch.uint8 if input_dtype == "uint8" else torch.float32)
    output_names = ["maps", "scores", "patch_scores"] if graph.segmenter else ["scores", "patch_scores"]
    model = onnx.load_from_string(export_module(graph, example, output_names))
    metadata = _metadata(estimator, input_dtype, output_names)
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "skpatch"
    model.producer_version = metadata["skpatch.version"]
    model.doc_string = (
        f"skpatch {metadata['skpatch.estimator']}: images {metadata['skpatch.input']} -> "
        f"{metadata['skpatch.outputs']}; {metadata['skpatch.sign_convention']}; "
        f"offset = {metadata['skpatch.offset']}."
    )
    onnx.save_model(model, path)
    return metadata


def _summary(path, metadata):
    """One line describing an exported file, for the command line."""
    source = json.loads(metadata["skpatch.input"])
    outputs = ", ".join(
        f"{name} ({', '.join(str(d) for d in shape)})" for name, shape in json.loads(metadata["skpatch.outputs"]).items()
    )
    return (
        f"wrote {path}: {metadata['skpatch.estimator']}; input {source['name']} {source['dtype']} "
        f"({', '.join(str(d) for d in source['shape'])}) {source['layout']} {source['range']}; "
        f"outputs {outputs}, higher = more normal; offset {metadata['skpatch.offset']}"
    )
