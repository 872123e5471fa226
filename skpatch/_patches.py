"""Patch feature arrays and the weighted patch set passed from denoising to memory."""

import numpy as np
import torch


class WeightedPatches:
    """Training patches with soft weights and a keep mask.

    This is what :meth:`NoiseDiscriminator.fit_transform` hands to
    :meth:`WeightedCoreset.fit`: every training patch, whether it was kept
    (removed patches may never enter the memory bank) and its soft weight.

    Parameters
    ----------
    features : ndarray of shape (n_images, h, w, n_features) or (n_images, n_patches, n_features)
        Patch features, unchanged: on their patch grid, as
        :meth:`PatchFeaturizer.transform` returns them, or one row of
        patches per image. They are kept as ``(n_images, n_patches,
        n_features)`` (a view where the strides allow it), the grid in
        :attr:`grid_shape`.
    weights : ndarray of shape (n_images, n_patches)
        Positive soft weights; a test patch matched to a memory patch has its
        distance multiplied by that patch's weight.
    kept : ndarray of shape (n_images, n_patches), dtype bool
        False for patches removed as noise.

    Attributes
    ----------
    grid_shape : tuple of (int, int) or None
        The patch grid ``(h, w)`` of 4-d ``features``; None for 3-d ones.
    """

    def __init__(self, features, weights, kept):
        self.grid_shape = patch_grid(features)
        self.features = patch_rows(features)
        self.weights = np.asarray(weights, dtype=np.float32)
        self.kept = np.asarray(kept, dtype=bool)
        expected = self.features.shape[:2]
        if self.weights.shape != expected or self.kept.shape != expected:
            msg = (
                f"weights {self.weights.shape} and kept {self.kept.shape} must both "
                f"have shape (n_images, n_patches) = {expected}."
            )
            raise ValueError(msg)

    @property
    def shape(self):
        return self.features.shape

    def __len__(self):
        return len(self.features)

    def __repr__(self):
        n, p, d = self.features.shape
        return f"WeightedPatches(n_images={n}, n_patches={p}, n_features={d}, kept={int(self.kept.sum())})"


class PatchFeatureStepMixin:
    """Mixin of the pipeline steps that take patch features, not a 2-d ``X``.

    Their input is ``(n_images, h, w, n_features)`` or ``(n_images,
    n_patches, n_features)``; scikit-learn's estimator checks read the tags.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags


def patch_grid(X):
    """The patch grid ``(h, w)`` that ``X`` carries, or None.

    Features on their grid, ``(n_images, h, w, n_features)`` as
    :meth:`PatchFeaturizer.transform` returns them, carry it in their shape;
    a :class:`WeightedPatches` in its ``grid_shape``; 3-d features do not.
    """
    if isinstance(X, WeightedPatches):
        return X.grid_shape
    shape = getattr(X, "shape", ())
    return (int(shape[1]), int(shape[2])) if len(shape) == 4 else None


def on_grid(scores, X):
    """Per-patch ``scores`` of shape (n_images, n_patches), shaped as the
    patches of ``X``: ``(n_images, h, w)`` for features on their grid."""
    grid = patch_grid(X)
    return scores if grid is None else scores.reshape(len(scores), *grid)


def patch_rows(X):
    """4-d features on their grid as ``(n_images, h * w, n_features)`` (a view
    where the strides allow it, as :meth:`numpy.ndarray.reshape`)."""
    if getattr(X, "ndim", 0) == 4 and isinstance(X, np.ndarray):
        n, h, w, d = X.shape
        return X.reshape(n, h * w, d)
    return X


def check_patch_features(X, *, name="X", allow_weighted=False):
    """Validate patch features: ``(n_images, h, w, n_features)`` on their grid,
    or ``(n_images, n_patches, n_features)``.

    Returns ``(features, weights, kept)``, the features as ``(n_images,
    n_patches, n_features)`` (grid-shaped ones reshaped); weights are ones
    and every patch is kept unless ``X`` is a :class:`WeightedPatches`.
    """
    if isinstance(X, WeightedPatches):
        if not allow_weighted:
            raise TypeError(f"{name} must be a patch feature array, not WeightedPatches.")
        return _check_array(X.features, name), X.weights, X.kept
    features = patch_rows(_check_array(X, name))
    n_images, n_patches = features.shape[:2]
    return (
        features,
        np.ones((n_images, n_patches), dtype=np.float32),
        np.ones((n_images, n_patches), dtype=bool),
    )


def _check_array(X, name):
    if not isinstance(X, np.ndarray):
        msg = (
            f"{name} must be an ndarray of patch features with shape "
            f"(n_images, h, w, n_features), as PatchFeaturizer.transform "
            f"returns, or (n_images, n_patches, n_features); got {type(X).__name__}."
        )
        raise TypeError(msg)
    if X.ndim not in (3, 4):
        msg = (
            f"{name} must have shape (n_images, h, w, n_features) or (n_images, "
            f"n_patches, n_features); got shape {X.shape}. Pass images through "
            "PatchFeaturizer first."
        )
        raise ValueError(msg)
    if min(X.shape) == 0:
        raise ValueError(f"{name} is empty: shape {X.shape}.")
    if X.dtype not in (np.float32, np.float16, np.float64):
        raise TypeError(f"{name} must be a float array; got dtype {X.dtype}.")
    if not _all_finite(X):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return X


def _all_finite(X):
    """Whether no element of ``X`` is NaN or infinite.

    A NaN or an infinity makes the sum non-finite, so a finite sum (one pass,
    no temporary array: a test batch's features are hundreds of MB) settles
    it; only a non-finite sum, which an overflow of finite values can also
    give, needs the element-wise check.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        # float16 would overflow its running sum on ordinary features.
        total = X.sum(dtype=np.float64 if X.dtype == np.float64 else np.float32)
    return bool(np.isfinite(total)) or bool(np.isfinite(X).all())


def check_n_features(step, X, *, name="X"):
    """Validate test patch features against a fitted step's ``n_features_in_``."""
    features, _, _ = check_patch_features(X, name=name)
    if features.shape[2] != step.n_features_in_:
        msg = (
            f"{name} has {features.shape[2]} features per patch, but "
            f"{type(step).__name__} was fitted with {step.n_features_in_}."
        )
        raise ValueError(msg)
    return features


def float32_tensor(array):
    """``array`` as a float32 tensor, sharing its memory where torch can.

    :func:`torch.from_numpy` shares memory and warns (once per process) that
    writing to a tensor over a read-only array is undefined; read-only input
    (an ``np.memmap`` opened with ``mode="r"``, ``writeable=False``) is
    therefore copied. Callers pass one chunk at a time, so a copy stays small.
    """
    array = np.asarray(array, dtype=np.float32)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)
