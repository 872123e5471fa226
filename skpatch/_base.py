"""Shared machinery of SoftPatchClassifier and SoftPatchSegmenter."""

import warnings
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import get_config
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, has_fit_parameter

from ._cache import cached_call, caches, check_cache, feature_key, fit_transform_step, transform_step
from ._chunking import rows_per_chunk
from ._coreset import WeightedCoreset
from ._discriminator import NoiseDiscriminator
from ._featurizer import PatchFeaturizer
from ._images import check_images
from ._onnx import export_onnx
from ._patches import WeightedPatches
from ._thresholds import robust_threshold

STEP_NAMES = ("featurizer", "denoise", "memory")
# sklearn's Pipeline reserves the name "memory" (its caching argument), so the
# memory step is called "coreset" inside ``pipeline_``.
PIPELINE_NAMES = {"featurizer": "featurizer", "denoise": "denoise", "memory": "coreset"}

# offset_ is estimated from the in-sample scores of at most this many training
# images: scoring costs about as much as the CNN, and a percentile of 64
# scores is precise enough for a threshold.
_OFFSET_MAX_IMAGES = 64

#: What :meth:`BaseSoftPatch.save` calls: :func:`skpatch._persist.save`, put
#: here by ``skpatch/__init__.py``, which Python runs before any module of the
#: package. The model-file module creates the estimators when it loads a
#: file, so importing it from here would close an import cycle.
MODEL_FILE_WRITER = {}


class BaseSoftPatch(BaseEstimator):
    """Pipeline of featurizer -> noise discriminator -> weighted coreset.

    ``featurizer``, ``denoise`` and ``memory`` are the pipeline steps. Left at
    None they mean the default step, and nested parameters such as
    ``denoise__threshold`` work on it all the same (``set_params`` puts the
    default step in place first), so ``GridSearchCV`` needs no setup.
    """

    _parameter_constraints = {
        "featurizer": [HasMethods(["fit_transform", "transform"]), None],
        "denoise": [HasMethods(["fit_transform", "transform"]), StrOptions({"passthrough"}), None],
        "memory": [HasMethods(["fit", "score_samples"]), None],
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "cache": [None, str, HasMethods(["cache"])],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "device": [str],
        "verbose": ["verbose"],
    }

    # The default NoiseDiscriminator's parameters (the segmenter's differ).
    _default_denoise = {"threshold": 0.15, "dilation": 1}
    # The default memory step (the segmenter's differs).
    _default_memory = WeightedCoreset

    def __init__(
        self,
        featurizer=None,
        denoise=None,
        memory=None,
        *,
        contamination="auto",
        cache=None,
        random_state=None,
        n_jobs=None,
        device="auto",
        verbose=0,
    ):
        self.featurizer = featurizer
        self.denoise = denoise
        self.memory = memory
        self.contamination = contamination
        self.cache = cache
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.device = device
        self.verbose = verbose

    # -- parameters ---------------------------------------------------------

    def _default_step(self, name):
        if name == "featurizer":
            return PatchFeaturizer()
        if name == "denoise":
            return NoiseDiscriminator(**self._default_denoise)
        return self._default_memory()

    def _step(self, name):
        step = getattr(self, name)
        return self._default_step(name) if step is None else step

    def get_params(self, deep=True):
        """Parameters, including those of the (default) steps when ``deep``."""
        params = super().get_params(deep=False)
        if deep:
            for name in STEP_NAMES:
                step = self._step(name)
                if hasattr(step, "get_params"):
                    params.update({f"{name}__{k}": v for k, v in step.get_params(deep=True).items()})
        return params

    def set_params(self, **params):
        """Set parameters; ``step__param`` on a None step sets it on the default step."""
        for name in STEP_NAMES:
            nested = [key for key in params if key.startswith(f"{name}__")]
            step = params.get(name, getattr(self, name))
            if nested and isinstance(step, str):
                msg = f"Cannot set {nested[0]!r}: the {name} step is {step!r}."
                raise ValueError(msg)
            if nested and step is None:
                params.setdefault(name, self._default_step(name))
        return super().set_params(**params)

    # -- fitting --------------------------------------------------------------

    def _make_pipeline(self):
        # Every step's parameters are checked before the CNN runs: a typo in
        # denoise__threshold must not cost a pass over the training images.
        steps = []
        for name in STEP_NAMES:
            step = self._step(name)
            step = step if isinstance(step, str) else clone(step)
            if not isinstance(step, str):
                self._propagate(step)
                if _validates(step):
                    step._validate_params()
            steps.append((PIPELINE_NAMES[name], step))
        return Pipeline(steps)

    def _propagate(self, step):
        """Hand the estimator-level settings to steps that leave them at default."""
        params = step.get_params(deep=False)
        shared = {"random_state": self.random_state, "n_jobs": self.n_jobs}
        update = {k: v for k, v in shared.items() if k in params and params[k] is None and v is not None}
        if "verbose" in params and not params["verbose"] and self.verbose:
            update["verbose"] = self.verbose
        if params.get("device") == "auto" and self.device != "auto":
            update["device"] = self.device
        step.set_params(**update)

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit the pipeline on (possibly contaminated) training images.

        Parameters
        ----------
        X : ndarray of shape (n_images, H, W[, C]) or list
            Training images, all of one size: uint8 or float in [0, 1], a
            list of arrays, PIL images or file paths. They may contain
            unlabelled defects.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        self._fit(X)
        return self

    def _fit(self, X):
        """Fit the pipeline, then ``train_scores_`` / ``offset_`` from held-out
        maps of the training images ``_held_out_images`` names (the
        estimator's ``_finish_fit``); return the memory step's training input."""
        features = self._fit_pipeline(X)
        self._finish_fit(self._train_patch_anomaly(features, self._held_out_images(len(features))))
        return features

    def _held_out_images(self, n_images):
        """Indices of the training images whose held-out maps finish the fit;
        None for all of them."""
        return None

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative where an anomaly is predicted.

        Parameters
        ----------
        X : ndarray of shape (n_images, H, W[, C]) or list
            Test images, as :meth:`score_samples` takes them.

        Returns
        -------
        scores : ndarray of shape (n_images,) or (n_images, H, W)
            One score per image (:class:`SoftPatchClassifier`) or per pixel
            (:class:`SoftPatchSegmenter`).
        """
        return self.score_samples(X) - self.offset_

    def _fit_pipeline(self, X):
        """Fit the pipeline; return the memory step's training features, for held-out scores."""
        images = check_images(X)
        memory = check_cache(self.cache)
        self.pipeline_ = self._make_pipeline()
        featurizer, denoise, coreset = (step for _, step in self.pipeline_.steps)
        # The collection is hashed once (files by path) and the key reused.
        key = feature_key(featurizer, images) if caches(memory) else None
        fit_featurizer = memory.cache(fit_transform_step, ignore=["step", "X"])
        # Pass the validated collection on: files are checked (opened) once.
        featurizer, features = cached_call(memory, fit_featurizer, key, step=featurizer, X=images)
        features = _on_grid(features, featurizer)
        self.pipeline_.steps[0] = ("featurizer", featurizer)
        # The other steps are fitted in place on the featurizer's (cached)
        # output, which carries its patch grid; a discriminator whose fit
        # takes cache and features_key caches its own raw scores under the key.
        if denoise == "passthrough":
            patches = features
        elif key is not None and all(has_fit_parameter(denoise, name) for name in ("cache", "features_key")):
            patches = denoise.fit_transform(features, cache=memory, features_key=key)
        else:
            patches = denoise.fit_transform(features)
        coreset.fit(patches)
        self.n_train_images_ = len(images)
        self.image_size_ = images.image_size
        # The held-out scores search the features the memory step was fitted
        # on: a denoise step that transforms them (a projection, say) hands
        # on its output; NoiseDiscriminator hands on the features unchanged.
        return _memory_input(patches)

    def _features(self, images):
        """Test features of a checked collection, cached like the training ones."""
        check_is_fitted(self, "pipeline_")
        memory = check_cache(self.cache)
        featurizer = self.pipeline_[0]
        key = feature_key(featurizer, images) if caches(memory) else None
        transform = memory.cache(transform_step, ignore=["step", "X"])
        features = _on_grid(cached_call(memory, transform, key, step=featurizer, X=images), featurizer)
        denoise = self.pipeline_[1]
        return features if denoise == "passthrough" else denoise.transform(features)

    def _patch_anomaly(self, images):
        """(n_images, h, w) weighted patch distances (higher = more anomalous).

        Without a feature cache, a collection is scored in blocks of images
        whose features fit ``sklearn.get_config()["working_memory"]``, so that
        scoring any number of images holds one block of features at a time
        (the features are about 16x larger than a 128 px image). Blocks are
        whole featurizer batches: the scores are those of one pass.
        """
        return self._by_blocks(images, self._block_patch_anomaly)

    def _by_blocks(self, images, score_block):
        """``score_block(features)`` of a checked collection, block by block, concatenated."""
        images = check_images(images)  # the command line passes lists
        _warn_far_size(images.image_size, self.image_size_)
        n_images = len(images)
        step = self._images_per_block(n_images)
        if step >= n_images:
            return score_block(self._features(images))
        return np.concatenate(
            [
                score_block(self._features(images.subset(start, min(start + step, n_images))))
                for start in range(0, n_images, step)
            ]
        )

    def _block_patch_anomaly(self, features):
        return self._patch_map(-self.pipeline_[-1].score_samples(features))

    def _images_per_block(self, n_images):
        """Images scored per block: all of them when the features are cached (the
        cache keys the whole collection) or the featurizer is not skpatch's."""
        featurizer = self.pipeline_[0]
        if caches(check_cache(self.cache)) or not isinstance(featurizer, PatchFeaturizer):
            return n_images
        h, w = featurizer.feature_shape_
        per_image = h * w * featurizer.embed_dim * np.dtype(featurizer.feature_dtype).itemsize
        return rows_per_chunk(per_image, multiple=featurizer.batch_size)

    def _train_patch_anomaly(self, features, indices=None):
        """Held-out patch anomaly of training images ``indices``.

        Each training image is scored without the memory it contributed
        (the memory step's ``score_held_out``: leave-one-image-out for a
        :class:`WeightedCoreset`, out of bag for a :class:`BaggedCoreset`),
        so that its own patches cannot match themselves (in-sample scores
        would be optimistic, most of all for the defective images that
        ``fit_predict`` should find).
        """
        if indices is None:
            indices, queries = np.arange(len(features)), features  # no copy of every feature
        else:
            indices = np.asarray(indices)
            queries = features[indices]
        coreset = self.pipeline_[-1]
        if len(features) < 2 or not hasattr(coreset, "score_held_out"):
            warnings.warn(
                "Training images cannot be scored leave-one-image-out (a single "
                "training image, or a memory step without score_held_out): "
                "in-sample scores, which are optimistic, set offset_.",
                UserWarning,
            )
            return self._patch_map(-coreset.score_samples(queries))
        return self._patch_map(-coreset.score_held_out(queries, indices))

    def _patch_map(self, patch_scores):
        """Patch scores as (n_images, h, w) maps: skpatch's memory steps return
        them so for features on their grid; one's own may return rows."""
        if patch_scores.ndim == 3:
            return patch_scores
        h, w = self.pipeline_[0].feature_shape_
        return patch_scores.reshape(len(patch_scores), h, w)

    def _offset_sample(self, n_images):
        """Indices of a seeded subset of the training images for ``offset_``."""
        if n_images <= _OFFSET_MAX_IMAGES:
            return np.arange(n_images)
        rng = check_random_state(self.random_state)
        return np.sort(rng.choice(n_images, _OFFSET_MAX_IMAGES, replace=False))

    def _set_thresholds(self, image_anomaly, rule=None):
        """``contamination_estimate_`` and the threshold ``offset_`` is set from.

        ``image_anomaly`` are held-out anomaly scores of training images
        (higher = more anomalous). The estimate is the share beyond
        ``rule`` (the robust 3-sigma rule by default) computed on the finite
        scores; an infinite score (an image with no memory patch of another
        image) counts as beyond it, as :meth:`fit_predict` flags it. The
        threshold is that rule's for ``contamination="auto"``, else the
        percentile of the finite scores.
        """
        rule = robust_threshold if rule is None else rule
        image_anomaly = np.asarray(image_anomaly, dtype=np.float64).reshape(-1)
        finite = _finite_scores(image_anomaly)
        auto = rule(finite)
        self.contamination_estimate_ = float(np.mean(image_anomaly > auto))
        if self.contamination == "auto":
            threshold = auto
        else:
            threshold = np.percentile(finite, 100.0 * (1.0 - self.contamination))
        self.offset_ = -float(threshold)

    def export_onnx(self, path, *, input_dtype="uint8"):
        """Write the fitted model as one ONNX graph: images in, scores out.

        See :func:`skpatch.export_onnx` for the input contract and the outputs.

        Parameters
        ----------
        path : str or path-like
            The ``.onnx`` file to write.
        input_dtype : {"uint8", "float32"}, default="uint8"
            uint8 images in 0..255 of shape ``(n, H, W, 3)`` at the training
            size ``image_size_``, or float32 in [0, 1].

        Returns
        -------
        metadata : dict of str to str
            The metadata stored in the file.
        """
        return export_onnx(self, path, input_dtype=input_dtype)

    def save(self, path, *, bank_dtype="float32"):
        """Write the fitted model to a file that cannot run code when loaded.

        Read it back with :func:`skpatch.load`. The file holds arrays in
        ``.npy`` form (no pickle) and parameters in JSON, plus the format
        version, the skpatch version, the featurizer's name and the SHA-256
        of its weights and of every array; loading checks all of them.

        Parameters
        ----------
        path : str or path-like
            The file to write (conventionally ``*.skpatch``).
        bank_dtype : {"float32", "float16"}, default="float32"
            Storage type of the memory bank. ``"float16"`` halves its size;
            the loaded model then scores with the rounded bank (no longer
            bit-identical to the saved one).

        Raises
        ------
        skpatch.ModelFileError
            If a parameter or fitted attribute has a type the format cannot
            store (the message names it).
        """
        MODEL_FILE_WRITER["save"](self, path, bank_dtype=bank_dtype)

    @property
    def named_steps(self):
        """The fitted pipeline's steps, by name."""
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.named_steps

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.non_deterministic = False
        return tags


def _memory_input(patches):
    """The features that a memory step was fitted on, as the denoise step handed
    them on (on their grid where the :class:`WeightedPatches` carries one)."""
    if not isinstance(patches, WeightedPatches):
        return patches
    features = patches.features
    if patches.grid_shape is None:
        return features
    return features.reshape(len(features), *patches.grid_shape, features.shape[-1])


def _on_grid(features, featurizer):
    """Features on their patch grid ``(n_images, h, w, n_features)``.

    :class:`PatchFeaturizer` returns them so. Rows of patches ``(n_images,
    n_patches, n_features)`` from a featurizer of one's own are put on its
    ``feature_shape_``.
    """
    if features.ndim == 3 and hasattr(featurizer, "feature_shape_"):
        h, w = featurizer.feature_shape_
        if h * w != features.shape[1]:
            msg = (
                f"The featurizer returned {features.shape[1]} patches per image, but its "
                f"feature_shape_ {tuple(featurizer.feature_shape_)} holds {h * w}."
            )
            raise ValueError(msg)
        return features.reshape(len(features), h, w, features.shape[2])
    return features


def _validates(step):
    """Whether ``step`` declares scikit-learn parameter constraints to check
    (a user's step may not), and validation is not switched off."""
    if get_config().get("skip_parameter_validation", False):
        return False
    return getattr(step, "_parameter_constraints", None) is not None and hasattr(step, "_validate_params")


def _finite_scores(scores):
    """The finite scores, with a warning naming the cause of the others."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    finite = np.isfinite(scores)
    if not finite.all():
        # A leave-one-image-out score is infinite when every memory patch
        # comes from the scored image itself (a bank of a few patches).
        msg = (
            f"{int((~finite).sum())} of {finite.size} held-out anomaly scores of training "
            "images are infinite: those images have no memory patch from another "
            "training image (the memory bank holds too few patches; fit more images "
            "or raise memory__sampling_ratio)."
        )
        if not finite.any():
            raise ValueError(msg + " offset_ cannot be computed.")
        warnings.warn(msg + " offset_ is computed from the finite scores only.", UserWarning)
        scores = scores[finite]
    return scores


def upsample_patch_maps(patch_maps, size):
    """Patch maps (n, h, w) bilinearly upsampled to pixel maps (n, *size), float32.

    How both estimators read patch scores at the pixels: the segmenter
    smooths the result, the classifier's :meth:`anomaly_maps` does not.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(patch_maps, dtype=np.float32))[:, None]
    return F.interpolate(tensor, size=tuple(size), mode="bilinear", align_corners=False)[:, 0].numpy()


def _warn_far_size(size, train_size):
    """Warn when scored images are less than half or more than double the
    training size along either side: the CNN sees them resized, and normal
    texture at another scale looks anomalous."""
    ratios = [s / t for s, t in zip(size, train_size)]
    if min(ratios) < 0.5 or max(ratios) > 2.0:
        msg = (
            f"Scoring images of size {tuple(size)} with a model fitted on images of size "
            f"{tuple(train_size)}: the sizes differ by more than a factor 2, so scores are "
            "not comparable with the training images (normal texture at another scale looks "
            "anomalous). Crop or resize the images as the training images were."
        )
        warnings.warn(msg, UserWarning, stacklevel=4)
