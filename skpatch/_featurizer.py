"""Locally aware patch features from an ImageNet-pretrained CNN."""

import copy
import functools
import importlib.util
import os
import warnings
from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._backbones import DEFAULT_BACKBONE, build_backbone
from ._device import DEVICE_HELP, resolve_device
from ._embedding import INPUT_NAME, ExportablePatchEmbedding, PatchEmbedding, feature_session
from ._images import check_images
from ._prefetch import prefetch_map
from ._progress import progress
from ._threads import torch_threads


class PatchFeaturizer(TransformerMixin, BaseEstimator):
    """Turn images into one feature vector per patch position.

    Images are resized to ``image_size`` and normalised as the backbone was
    during ImageNet training. Two intermediate stages of the CNN (strides 8
    and 16 by default) are each averaged over a ``patch_size`` x ``patch_size``
    neighbourhood (local aggregation), the coarse map is bilinearly upsampled
    onto the fine grid, and each stage's channels are average-pooled to
    ``embed_dim // n_stages`` dimensions so that every stage weighs the same
    in Euclidean distances. The result has shape
    ``(n_images, h, w, embed_dim)`` where ``(h, w)`` is the fine grid
    (:attr:`feature_shape_`): the features carry their patch grid, which the
    noise discriminator's alignment and dilation read from them.

    Parameters
    ----------
    backbone : str, default="tf_efficientnet_lite0"
        Name of a timm CNN, optionally with a pretrained tag
        (``"wide_resnet50_2.tv_in1k"``, the SoftPatch paper's backbone).

    weights : {"imagenet"}, str, path-like or None, default="imagenet"
        ``"imagenet"`` loads pretrained weights: the embedded EfficientNet-Lite0
        file for the default backbone, otherwise a cached torchvision/timm
        checkpoint or a download where a network exists (a clear error
        explains the options when none works). A path loads that state dict
        file (``torch.load(..., weights_only=True)`` or safetensors).
        ``None`` keeps random weights, the same in every fit (seeded), which
        is only useful for tests and timings.

    stages : tuple of int, default=(2, 3)
        Indices into the backbone's ``feature_info`` (stride 8 and 16 for
        ResNets and EfficientNets). The first listed stage sets the grid.

    image_size : int or tuple of (int, int), default=224
        Images are resized to this size (height, width) before the CNN.

    embed_dim : int, default=256
        Length of each patch feature vector; must be divisible by the number
        of stages.

    patch_size : int, default=3
        Side of the local aggregation window (odd); 1 disables aggregation.

    batch_size : int, default=16
        Images per forward pass. Images given as file paths are read one batch
        at a time, so memory does not grow with the number of images.

    decode_workers : int, default=2
        Threads that read and decode image files (or PIL images) ahead of
        the CNN: while one batch goes through the network, the next
        ``decode_workers`` batches are being decoded (and, on the CPU,
        resized; the resize in those threads uses torch's thread count). At
        most that many batches wait in memory; the output and its order do
        not change.
        0 reads each batch in the calling thread when it is needed. Arrays
        are not decoded, so this does not apply to them.

    feature_dtype : {"float32", "float16"}, default="float32"
        Storage type of the returned features. ``"float16"`` halves memory;
        all distances downstream are still computed in float32.

    n_jobs : int, default=None
        Number of torch threads during inference; ``None`` keeps torch's
        current setting and -1 uses all cores.

    engine : {"auto", "torch", "onnxruntime"}, default="auto"
        What runs the CNN and the feature pooling. ``"onnxruntime"`` exports
        them once (about a second, at the first ``transform``) and runs them
        with onnxruntime (``pip install 'skpatch[export]'``): 1.6-2x faster
        than torch on CPU for EfficientNet-Lite0 and wide_resnet50_2
        (``benchmarks/engines.py``), features equal to torch's within 1e-6
        relative. ``"auto"`` is onnxruntime where it is installed and the
        CNN runs on the CPU, else torch; the environment variable
        ``SKPATCH_ENGINE=torch`` makes ``"auto"`` choose torch. If the export
        fails, ``"auto"`` warns once and runs torch; ``"onnxruntime"``
        raises. The resize is torch's with every engine. Estimators fitted
        with different engines are not bit-identical (the user guide says
        how far apart they are).

    device : str, default="auto"
        Where the CNN runs: ``"auto"`` (CUDA if available, then Apple's MPS,
        else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``. A
        device that this machine lacks raises a ``ValueError``. The fitted
        :attr:`backbone_` stays on the CPU; a copy runs on the device during
        :meth:`transform`, and the features come back as a numpy array.

    verbose : int, default=0
        Show a progress bar over batches when positive.

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The CNN truncated after the last requested stage, in eval mode, on
        the CPU whatever ``device`` is.

    stages_ : tuple of int
        The stages used, ``stages`` as a tuple of Python ints: the indices
        into the backbone's ``feature_info`` whose intermediate maps are
        pooled, the first setting the grid; :attr:`backbone_` is truncated
        after the last of them.

    feature_shape_ : tuple of (int, int)
        The patch grid ``(h, w)``.

    n_features_out_ : int
        Equal to ``embed_dim``.

    mean_, std_ : tuple of float
        Normalisation of the backbone's pretrained configuration.

    See Also
    --------
    NoiseDiscriminator : Scores and removes noisy training patches.
    WeightedCoreset : Memory bank of weighted patches.

    Notes
    -----
    This follows PatchCore's "locally aware patch features" (Roth et al.,
    CVPR 2022), as used by SoftPatch (Jiang et al., NeurIPS 2022).

    Examples
    --------
    >>> import numpy as np
    >>> from skpatch import PatchFeaturizer
    >>> X = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    >>> featurizer = PatchFeaturizer(image_size=64, embed_dim=64).fit(X)
    >>> features = featurizer.transform(X)
    >>> features.shape, featurizer.feature_shape_
    ((2, 8, 8, 64), (8, 8))
    """

    # Model files written before the engine parameter ran torch (skpatch._persist).
    _absent_from_older_files = {"engine": "torch"}

    _parameter_constraints = {
        "backbone": [str],
        "weights": [str, os.PathLike, None],
        "stages": [tuple, list],
        "image_size": [Interval(Integral, 16, None, closed="left"), tuple, list],
        "embed_dim": [Interval(Integral, 1, None, closed="left")],
        "patch_size": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "decode_workers": [Interval(Integral, 0, None, closed="left")],
        "feature_dtype": [StrOptions({"float32", "float16"})],
        "n_jobs": [Integral, None],
        "device": [str],
        "verbose": ["verbose"],
        "engine": [StrOptions({"auto", "torch", "onnxruntime"})],
    }

    def __init__(
        self,
        backbone=DEFAULT_BACKBONE,
        *,
        weights="imagenet",
        stages=(2, 3),
        image_size=224,
        embed_dim=256,
        patch_size=3,
        batch_size=16,
        decode_workers=2,
        feature_dtype="float32",
        n_jobs=None,
        device="auto",
        verbose=0,
        engine="auto",
    ):
        self.backbone = backbone
        self.weights = weights
        self.stages = stages
        self.image_size = image_size
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.decode_workers = decode_workers
        self.feature_dtype = feature_dtype
        self.n_jobs = n_jobs
        self.device = device
        self.verbose = verbose
        self.engine = engine

    def fit(self, X, y=None):
        """Load the backbone and check the images.

        Parameters
        ----------
        X : ndarray of shape (n_images, H, W[, C]) or list
            Images: uint8 or float in [0, 1], a list of arrays, PIL images
            or file paths.
        y : None
            Ignored.

        Returns
        -------
        self : PatchFeaturizer
        """
        self._validate_params()
        check_images(X)
        self._check_settings()
        resolve_device(self.device)
        self.stages_ = tuple(int(s) for s in self.stages)
        model = self._build_backbone(build_backbone(self.backbone, self.weights))
        self.backbone_ = model
        self.mean_ = tuple(float(v) for v in model.pretrained_cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std_ = tuple(float(v) for v in model.pretrained_cfg.get("std", (0.229, 0.224, 0.225)))
        self.n_features_out_ = int(self.embed_dim)
        # The grid depends on the backbone's padding rules: measure it once.
        with torch.inference_mode():
            probe = self._maps(torch.zeros((1, 3, *self._image_size())), model)
        self.feature_shape_ = tuple(int(v) for v in probe[0].shape[-2:])
        return self

    def _build_backbone(self, model):
        """Truncate ``model`` after the last of ``stages_``: the fitted ``backbone_``.

        Also used by :func:`skpatch.load`, which rebuilds the backbone from
        its name and then checks or loads its weights.
        """
        self._check_stages(model)
        model.prune_intermediate_layers(indices=list(self.stages_), prune_head=True, prune_norm=True)
        # channels_last: 1.3-1.45x faster on CPU for both default and paper
        # backbones, features within 6e-7 (benchmarks/engines.py).
        return model.eval().requires_grad_(False).to(memory_format=torch.channels_last)

    def fit_transform(self, X, y=None):
        """Fit, then return the patch features of ``X`` (a single pass)."""
        return self.fit(X).transform(X)

    def transform(self, X):
        """Compute patch features.

        Parameters
        ----------
        X : ndarray of shape (n_images, H, W[, C]) or list
            Images, as in :meth:`fit`. Sizes may differ from the training
            images (all are resized to ``image_size``) but must agree within X.

        Returns
        -------
        features : ndarray of shape (n_images, h, w, embed_dim)
            One feature vector per patch position of the grid
            ``feature_shape_ = (h, w)``.
        """
        check_is_fitted(self, "backbone_")
        images = check_images(X)
        device = self._device()
        h, w = self.feature_shape_
        out = np.empty((len(images), h * w, self.embed_dim), dtype=self.feature_dtype)
        # The fitted backbone stays on the CPU; a copy runs elsewhere.
        model = self.backbone_ if device.type == "cpu" else copy.deepcopy(self.backbone_).to(device)
        spans = [(start, min(start + self.batch_size, len(images))) for start in range(0, len(images), self.batch_size)]
        workers = self.decode_workers if images.is_lazy else 0
        if device.type == "cpu":
            # Resized in the decoding threads too, ahead of the CNN.
            load = lambda span: self._resized(images.batch(*span))  # noqa: E731
        else:  # resized on the device, in _embed
            load = lambda span: images.batch(*span)  # noqa: E731
        batches = progress(
            prefetch_map(load, spans, n_workers=workers, ahead=workers),
            enabled=self.verbose > 0,
            total=len(spans),
            desc="featurize",
        )
        with torch_threads(self.n_jobs), torch.inference_mode():
            for (start, stop), batch in zip(spans, batches):
                out[start:stop] = self._embed(batch.to(device), model).cpu().numpy()
        return out.reshape(len(images), h, w, self.embed_dim)

    def _device(self):
        try:
            device = resolve_device(self.device)
        except ValueError as exc:
            msg = (
                f"{exc} To score this fitted featurizer elsewhere, set "
                f"set_params(device=...) to one of {DEVICE_HELP} (or pass device= "
                "to skpatch.load)."
            )
            raise ValueError(msg) from None
        if self.engine == "onnxruntime" and device.type != "cpu":  # "auto" runs torch there
            if self.device == "auto":
                return torch.device("cpu")  # "auto" means the engine's device
            msg = (
                f"engine='onnxruntime' runs on the CPU only; got device={self.device!r}. "
                "Use engine='torch' on a GPU."
            )
            raise ValueError(msg)
        return device

    def _embed(self, batch, model):
        """(b, 3, H, W) in [0, 1] -> (b, h * w, embed_dim) float32 tensor.

        The patch embedding (:mod:`skpatch._embedding`) of the batch resized
        to ``image_size`` by torch's antialiased bilinear ``interpolate``,
        for every engine (on the CPU, where :meth:`transform` reads files,
        in the decoding threads). ``_embed`` and ``_maps`` are the seams that
        ``benchmarks/engines.py`` times and replaces.
        """
        batch = self._resized(batch)
        if self._runs_onnxruntime(batch.device):
            features = self._onnxruntime_features(batch)
            if features is not None:
                return features
        return self._embedding(model).pool(self._maps(batch, model))

    def _runs_onnxruntime(self, device):
        """Whether ``engine`` means onnxruntime for a batch on ``device``."""
        if self.engine != "auto":
            return self.engine == "onnxruntime"
        if device.type != "cpu" or os.environ.get("SKPATCH_ENGINE", "").lower() == "torch":
            return False
        return not self.__dict__.get("_export_failed", False) and _onnxruntime_installed()

    def _resized(self, batch):
        """A (b, 3, H, W) batch resized to ``image_size`` (antialiased bilinear)."""
        size = self._image_size()
        if tuple(batch.shape[-2:]) != size:
            batch = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)
        return batch

    def _embedding(self, model=None, input_size=None):
        """The fitted patch embedding, as a torch module.

        ``model`` is the backbone to run (default: :attr:`backbone_`). With
        ``input_size``, the :class:`~skpatch._embedding.ExportablePatchEmbedding`
        of images of that size, which the onnxruntime engine and the ONNX
        export (:mod:`skpatch._onnx`) run.
        """
        params = {
            "mean": self.mean_, "std": self.std_, "stages": self.stages_,
            "patch_size": self.patch_size, "embed_dim": self.embed_dim,
        }
        model = self.backbone_ if model is None else model
        if input_size is None:
            return PatchEmbedding(model, **params)
        return ExportablePatchEmbedding(model, image_size=self._image_size(), input_size=input_size, **params)

    def _onnxruntime_features(self, batch):
        """The patch embedding of a resized batch in onnxruntime.

        A session is exported for the thread count at the first batch that
        needs it. Returns None when the export fails under ``engine="auto"``.
        """
        threads = torch.get_num_threads()  # n_jobs, inside transform's torch_threads
        key = (threads, tuple(batch.shape[-2:]))
        session = self.__dict__.get("_session")
        if session is None or session[0] != key:
            embedding = self._embedding(input_size=key[1])
            try:
                self._session = session = (key, feature_session(embedding, threads))
            except Exception as exc:
                if self.engine != "auto":
                    raise
                warnings.warn(
                    f"engine='auto': the export to onnxruntime failed ({type(exc).__name__}: {exc}); "
                    "this featurizer runs torch. Set engine='torch' to silence this.",
                    UserWarning,
                )
                self._export_failed = True  # not tried again
                return None
        return torch.from_numpy(session[1].run(None, {INPUT_NAME: batch.numpy()})[0])

    def __getstate__(self):
        # An onnxruntime session does not pickle; it is rebuilt on first use.
        state = super().__getstate__()
        state.pop("_session", None)
        state.pop("_export_failed", None)
        return state

    def _maps(self, batch, model):
        """The backbone's intermediate maps of a batch at ``image_size``."""
        return self._embedding(model).feature_maps(batch)

    def _image_size(self):
        size = self.image_size
        return (int(size), int(size)) if isinstance(size, Integral) else tuple(int(s) for s in size)

    def _check_settings(self):
        size = self.image_size
        if not isinstance(size, Integral):
            if len(size) != 2 or not all(isinstance(s, Integral) and s >= 16 for s in size):
                raise ValueError(f"image_size must be an int or a pair of ints >= 16; got {size!r}.")
        if self.patch_size % 2 == 0:
            raise ValueError(f"patch_size must be odd; got {self.patch_size}.")
        if len(self.stages) == 0 or self.embed_dim % len(self.stages):
            msg = (
                f"embed_dim={self.embed_dim} must be a positive multiple of the "
                f"number of stages ({len(self.stages)})."
            )
            raise ValueError(msg)

    def _check_stages(self, model):
        n_stages = len(model.feature_info)
        bad = [s for s in self.stages_ if not 0 <= s < n_stages]
        if bad or list(self.stages_) != sorted(set(self.stages_)):
            reductions = [info["reduction"] for info in model.feature_info]
            msg = (
                f"stages must be distinct, increasing indices in [0, {n_stages}) for "
                f"backbone {self.backbone!r} (strides {reductions}); got {self.stages!r}."
            )
            raise ValueError(msg)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = []
        return tags


@functools.lru_cache(maxsize=None)
def _onnxruntime_installed():
    """Whether onnxruntime can be imported (looked up once per process)."""
    return importlib.util.find_spec("onnxruntime") is not None
