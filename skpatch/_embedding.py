"""The patch embedding: CNN stages -> local aggregation -> upsampling -> channel pooling.

One module computes :class:`~skpatch.PatchFeaturizer`'s features for its three
users:

* the torch engine (``PatchFeaturizer(engine="torch")``) runs
  :class:`PatchEmbedding`;
* the onnxruntime engine runs :class:`ExportablePatchEmbedding` exported to
  ONNX, in the session of :func:`feature_session`;
* the ONNX export of a whole model (:mod:`skpatch._onnx`) puts
  :class:`ExportablePatchEmbedding` in front of the memory-bank search.

The two classes share the structure (normalisation, the CNN's intermediate
maps, the local aggregation, which stages are upsampled, the concatenation);
they differ only in how the linear resampling steps are computed.
:class:`PatchEmbedding` calls torch's ``interpolate`` and
``adaptive_avg_pool1d``, whose output defines skpatch's features.
:class:`ExportablePatchEmbedding` writes each of them as a product with a
constant matrix, computed by that same torch function applied to an identity
matrix (:func:`interp_matrix`, :func:`channel_pool_matrix`): the exported
graph then differs from the torch engine only by float32 rounding, whatever a
runtime's own ``Resize`` does (onnxruntime's antialiased ``Resize``, from
opset 18, differs from torch's by up to 2e-5 on [0, 1] images).

This module sits below the featurizer and imports nothing from skpatch
(``docs/design.rst``).
"""

import contextlib
import io
import warnings

import torch
import torch.nn.functional as F

#: Name of the input of the exported graphs.
INPUT_NAME = "images"
# Opset 17: onnxruntime >= 1.13, OpenVINO and most edge runtimes read it.
OPSET = 17


def interp_matrix(n_in, n_out, antialias):
    """(n_out, n_in) matrix of torch's bilinear resize along one axis."""
    # Resizing the rows of an identity image gives the matrix itself.
    basis = torch.eye(n_in, dtype=torch.float32)[None, None]
    out = F.interpolate(basis, size=(n_out, n_in), mode="bilinear", align_corners=False, antialias=antialias)
    return out[0, 0].contiguous()


def channel_pool_matrix(n_channels, n_out):
    """(n_channels, n_out) matrix of ``F.adaptive_avg_pool1d`` over channels."""
    basis = torch.eye(n_channels, dtype=torch.float32).reshape(n_channels, 1, n_channels)
    return F.adaptive_avg_pool1d(basis, n_out)[:, 0, :].contiguous()


class PatchEmbedding(torch.nn.Module):
    """(b, 3, h_in, w_in) images in [0, 1] -> (b, h * w, embed_dim) patch features.

    The images must already be at the featurizer's ``image_size``. Each of
    the backbone's ``stages`` is averaged over a ``patch_size`` x
    ``patch_size`` neighbourhood, upsampled onto the first stage's grid
    ``(h, w)`` when it is coarser, and its channels average-pooled to
    ``embed_dim // len(stages)``.

    Parameters
    ----------
    backbone : torch.nn.Module
        A timm model with ``forward_intermediates`` (the featurizer's
        ``backbone_`` or a copy on another device).
    mean, std : tuple of float
        The backbone's input normalisation.
    stages : sequence of int
        Indices of the intermediate maps; the first sets the grid.
    patch_size : int
        Side of the local aggregation window (odd); 1 disables it.
    embed_dim : int
        Length of each feature vector, a multiple of ``len(stages)``.
    """

    def __init__(self, backbone, *, mean, std, stages, patch_size, embed_dim):
        super().__init__()
        self.backbone = backbone
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.stages = [int(s) for s in stages]
        self.patch_size = int(patch_size)
        self.dim_per_stage = int(embed_dim) // len(self.stages)

    def forward(self, images):
        return self.pool(self.feature_maps(images))

    def feature_maps(self, images):
        """The backbone's intermediate maps ``stages`` of normalised images."""
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return self.backbone.forward_intermediates(
            self._layout((images - mean) / std), indices=self.stages, intermediates_only=True
        )

    def pool(self, maps):
        """Locally aware patch features of the intermediate ``maps``."""
        grid = tuple(maps[0].shape[-2:])
        pooled = []
        for i, fmap in enumerate(maps):
            if self.patch_size > 1:
                # Local aggregation; count_include_pad=False keeps borders unbiased.
                fmap = F.avg_pool2d(
                    fmap, self.patch_size, stride=1, padding=self.patch_size // 2, count_include_pad=False
                )
            if tuple(fmap.shape[-2:]) != grid:
                fmap = self._upsample(i, fmap, grid)
            pooled.append(self._pool_channels(i, fmap))
        return torch.cat(pooled, dim=-1)

    def _layout(self, images):
        # The fitted backbone runs in channels_last (PatchFeaturizer's
        # _build_backbone says why); its input follows.
        return images.contiguous(memory_format=torch.channels_last)

    def _upsample(self, i, fmap, grid):
        return F.interpolate(fmap, size=grid, mode="bilinear", align_corners=False)

    def _pool_channels(self, i, fmap):
        b, c, h, w = fmap.shape
        flat = fmap.permute(0, 2, 3, 1).reshape(b * h * w, 1, c)
        return F.adaptive_avg_pool1d(flat, self.dim_per_stage).reshape(b, h * w, self.dim_per_stage)


class ExportablePatchEmbedding(PatchEmbedding):
    """:class:`PatchEmbedding` of images of a fixed ``input_size``, in ONNX-exportable form.

    The resize from ``input_size`` to ``image_size`` (torch's antialiased
    bilinear, as the featurizer resizes), the upsampling of coarse stages
    and the channel pooling are products with constant matrices (none for
    the resize when the sizes agree); the backbone runs in its own layout.

    Parameters
    ----------
    backbone, mean, std, stages, patch_size, embed_dim
        As in :class:`PatchEmbedding`.
    image_size : tuple of (int, int)
        The size the backbone sees.
    input_size : tuple of (int, int)
        The size of the input images.
    """

    def __init__(self, backbone, *, mean, std, stages, patch_size, embed_dim, image_size, input_size):
        super().__init__(backbone, mean=mean, std=std, stages=stages, patch_size=patch_size, embed_dim=embed_dim)
        size, input_size = tuple(image_size), tuple(input_size)
        # Only the axes that change are resampled: torch's identity pass
        # along an unchanged axis multiplies by exactly 1.
        self._resize_rows = input_size[0] != size[0]
        self._resize_cols = input_size[1] != size[1]
        self.register_buffer("resize_rows", interp_matrix(input_size[0], size[0], antialias=True))
        self.register_buffer("resize_cols", interp_matrix(input_size[1], size[1], antialias=True).T.contiguous())
        with torch.inference_mode():
            maps = self.feature_maps(torch.zeros((1, 3, *size)))
        grid = tuple(maps[0].shape[-2:])
        for i, fmap in enumerate(maps):
            shape = tuple(fmap.shape[-2:])
            self.register_buffer(f"up_rows_{i}", interp_matrix(shape[0], grid[0], antialias=False))
            self.register_buffer(f"up_cols_{i}", interp_matrix(shape[1], grid[1], antialias=False).T.contiguous())
            self.register_buffer(f"pool_{i}", channel_pool_matrix(fmap.shape[1], self.dim_per_stage))

    def forward(self, images):
        if self._resize_rows:
            images = torch.matmul(self.resize_rows, images)
        if self._resize_cols:
            images = torch.matmul(images, self.resize_cols)
        return super().forward(images)

    def _layout(self, images):
        return images

    def _upsample(self, i, fmap, grid):
        return torch.matmul(torch.matmul(getattr(self, f"up_rows_{i}"), fmap), getattr(self, f"up_cols_{i}"))

    def _pool_channels(self, i, fmap):
        b, c, h, w = fmap.shape
        return torch.matmul(fmap.permute(0, 2, 3, 1).reshape(b, h * w, c), getattr(self, f"pool_{i}"))


def feature_session(embedding, n_threads):
    """An onnxruntime session running ``embedding``, an :class:`ExportablePatchEmbedding`.

    Its input ``images`` are (n, 3, H, W) batches in [0, 1] at the
    embedding's input size; its output ``features`` the patch features.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        msg = (
            "PatchFeaturizer(engine='onnxruntime') needs the onnxruntime package: "
            "pip install 'skpatch[export]' (or onnxruntime alone), or use engine='torch'."
        )
        raise ImportError(msg) from exc
    height, width = embedding.resize_rows.shape[1], embedding.resize_cols.shape[0]
    model = export_module(embedding.eval(), torch.zeros((2, 3, height, width)), ["features"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(n_threads)
    options.inter_op_num_threads = 1
    # Idle onnxruntime threads would otherwise spin after each batch, taking
    # the cores that decoding and the search need; a batch runs long enough
    # for the wake-up to cost nothing.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def export_module(module, example, output_names):
    """Serialized ONNX model of ``module`` with a dynamic batch axis.

    The input is called :data:`INPUT_NAME`. torch's TorchScript exporter
    takes under a second for a backbone (the dynamo exporter, 5-10 s); it is
    tried first and the dynamo exporter (which needs ``onnxscript``) is the
    fallback for torch versions without it.
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
            module, (example,), buffer, dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME],
            output_names=list(output_names), dynamic_axes=axes,
        )
    return buffer.getvalue()


def _export_dynamo(module, example, output_names):
    batch = torch.export.Dim("n", min=1)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        # The exporter reports its progress on stdout.
        with contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(
                module, (example,), dynamo=True, opset_version=max(OPSET, 18), input_names=[INPUT_NAME],
                output_names=list(output_names), dynamic_shapes=({0: batch},), external_data=False,
                verbose=False,
            )
    return program.model_proto.SerializeToString()
