"""Export of a fitted SoftPatchClassifier / SoftPatchSegmenter to one ONNX graph.

The graph computes what ``score_samples`` computes, from an image batch to the
scores, so that it runs under onnxruntime (or any ONNX runtime) with neither
skpatch nor torch installed. Every linear resampling step (the antialiased
resize of the input, the upsampling of the coarse feature map, the channel
pooling, the segmenter's upsampling and Gaussian smoothing) is written as a
product with a constant matrix whose entries are computed here by the very
function skpatch uses at prediction time (torch's ``interpolate`` and
``adaptive_avg_pool1d``, scipy's ``gaussian_filter1d``) applied to an identity
matrix: the graph then differs from skpatch only by float32 rounding, whatever
a runtime's own ``Resize`` does (onnxruntime's antialiased ``Resize``, from
opset 18, differs from torch's by up to 2e-5 on [0, 1] images).

The same feature graph, exported at the featurizer's ``image_size``, is the
``PatchFeaturizer(engine="onnxruntime")`` backend.
"""

import io
import json
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.validation import check_is_fitted

from ._bagging import memory_members

# Rows of the memory bank compared with all queries at once: the graph holds
# an (n_images * n_patches, _BANK_CHUNK) distance block per step, 12.5 MB per
# image at 784 patches.
_BANK_CHUNK = 4096
# Candidates per chunk whose distances are recomputed directly (see _nearest).
_RERANK = 4
# Protobuf's limit on one ONNX file.
_MAX_ONNX_BYTES = 2**31 - 1
# Opset 17: onnxruntime >= 1.13, OpenVINO and most edge runtimes read it.
_OPSET = 17
INPUT_NAME = "images"


def _interp_matrix(n_in, n_out, antialias):
    """(n_out, n_in) matrix of torch's bilinear resize along one axis."""
    # Resizing the rows of an identity image gives the matrix itself.
    basis = torch.eye(n_in, dtype=torch.float32)[None, None]
    out = F.interpolate(basis, size=(n_out, n_in), mode="bilinear", align_corners=False, antialias=antialias)
    return out[0, 0].contiguous()


def _channel_pool_matrix(n_channels, n_out):
    """(n_channels, n_out) matrix of ``F.adaptive_avg_pool1d`` over channels."""
    basis = torch.eye(n_channels, dtype=torch.float32).reshape(n_channels, 1, n_channels)
    return F.adaptive_avg_pool1d(basis, n_out)[:, 0, :].contiguous()


def _smoothing_matrix(n, sigma):
    """(n, n) matrix of ``gaussian_filter1d(sigma, truncate=4.0, mode="reflect")``."""
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.eye(n), sigma=sigma, axis=0, truncate=4.0, mode="reflect")


class _FeatureGraph(torch.nn.Module):
    """(n, 3, H, W) float in [0, 1] -> (n, h * w, embed_dim), as ``PatchFeaturizer._embed``.

    ``input_size`` is fixed: the resize to ``image_size`` is a pair of constant
    matrices (none when the sizes agree).
    """

    def __init__(self, featurizer, input_size):
        super().__init__()
        self.backbone = featurizer.backbone_
        self.stages = list(featurizer.stages_)
        self.patch_size = int(featurizer.patch_size)
        self.register_buffer("mean", torch.tensor(featurizer.mean_).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(featurizer.std_).view(1, 3, 1, 1))
        size = featurizer._image_size()
        self._resize_rows = tuple(input_size)[0] != size[0]
        self._resize_cols = tuple(input_size)[1] != size[1]
        # Only the axes that change are resampled: torch's identity pass
        # along an unchanged axis multiplies by exactly 1.
        self.register_buffer("resize_rows", _interp_matrix(input_size[0], size[0], antialias=True))
        self.register_buffer("resize_cols", _interp_matrix(input_size[1], size[1], antialias=True).T.contiguous())
        with torch.inference_mode():
            maps = featurizer._maps(torch.zeros((1, 3, *size)), featurizer.backbone_)
        grid = tuple(maps[0].shape[-2:])
        dim = featurizer.embed_dim // len(maps)
        self._upsample = []
        for i, fmap in enumerate(maps):
            shape = tuple(fmap.shape[-2:])
            self._upsample.append(shape != grid)
            self.register_buffer(f"up_rows_{i}", _interp_matrix(shape[0], grid[0], antialias=False))
            self.register_buffer(f"up_cols_{i}", _interp_matrix(shape[1], grid[1], antialias=False).T.contiguous())
            self.register_buffer(f"pool_{i}", _channel_pool_matrix(fmap.shape[1], dim))

    def forward(self, images):
        if self._resize_rows:
            images = torch.matmul(self.resize_rows, images)
        if self._resize_cols:
            images = torch.matmul(images, self.resize_cols)
        maps = self.backbone.forward_intermediates(
            (images - self.mean) / self.std, indices=self.stages, intermediates_only=True
        )
        pooled = []
        for i, fmap in enumerate(maps):
            if self.patch_size > 1:
                fmap = F.avg_pool2d(
                    fmap, self.patch_size, stride=1, padding=self.patch_size // 2, count_include_pad=False
                )
            if self._upsample[i]:
                fmap = torch.matmul(torch.matmul(getattr(self, f"up_rows_{i}"), fmap), getattr(self, f"up_cols_{i}"))
            b, c, h, w = fmap.shape
            flat = fmap.permute(0, 2, 3, 1).reshape(b, h * w, c)
            pooled.append(torch.matmul(flat, getattr(self, f"pool_{i}")))
        return torch.cat(pooled, dim=-1)


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
        self.features = _FeatureGraph(featurizer, self.input_size)
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
        matrix = _interp_matrix(n_in, n_out, antialias=False).double().numpy()
        if segmenter.sigma > 0:
            matrix = _smoothing_matrix(n_out, segmenter.sigma) @ matrix
        mats.append(torch.from_numpy(matrix.astype(np.float32)))
    return mats[0], mats[1].T.contiguous()


def _feature_session(featurizer, n_threads):
    """An onnxruntime session: resized (n, 3, h, w) batches in [0, 1] -> features."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        msg = (
            "PatchFeaturizer(engine='onnxruntime') needs the onnxruntime package: "
            "pip install 'skpatch[export]' (or onnxruntime alone), or use engine='torch'."
        )
        raise ImportError(msg) from exc
    size = featurizer._image_size()
    graph = _FeatureGraph(featurizer, size).eval()
    model = _export(graph, torch.zeros((2, 3, *size)), ["features"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(n_threads)
    options.inter_op_num_threads = 1
    # Idle onnxruntime threads would otherwise spin after each batch, taking
    # the cores that decoding and the search need; a batch runs long enough
    # for the wake-up to cost nothing.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _check_exportable(estimator, input_dtype):
    from ._bagging import BaggedCoreset
    from ._coreset import WeightedCoreset
    from ._discriminator import NoiseDiscriminator
    from ._featurizer import PatchFeaturizer

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
    from . import __version__

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
    model = onnx.load_from_string(_export(graph, example, output_names))
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


def _export(module, example, output_names):
    """Serialized ONNX model of ``module`` with a dynamic batch axis.

    torch's TorchScript exporter takes under a second for a backbone (the
    dynamo exporter, 5-10 s); it is tried first and the dynamo exporter
    (which needs ``onnxscript``) is the fallback for torch versions without it.
    """
    try:
        return _export_torchscript(module, example, output_names)
    except Exception as exc:  # removed or failing TorchScript exporter
        try:
            return _export_dynamo(module, example, output_names)
        except Exception as dynamo_exc:
            raise dynamo_exc from exc


def _export_torchscript(module, example, output_names):
    buffer = io.BytesIO()
    axes = {name: {0: "n"} for name in (INPUT_NAME, *output_names)}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), buffer, dynamo=False, opset_version=_OPSET, input_names=[INPUT_NAME],
            output_names=list(output_names), dynamic_axes=axes,
        )
    return buffer.getvalue()


def _export_dynamo(module, example, output_names):
    batch = torch.export.Dim("n", min=1)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        # The exporter reports its progress on stdout.
        with _quiet_stdout():
            program = torch.onnx.export(
                module, (example,), dynamo=True, opset_version=max(_OPSET, 18), input_names=[INPUT_NAME],
                output_names=list(output_names), dynamic_shapes=({0: batch},), external_data=False,
                verbose=False,
            )
    return program.model_proto.SerializeToString()


def _quiet_stdout():
    import contextlib

    return contextlib.redirect_stdout(io.StringIO())
