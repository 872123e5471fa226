"""Pixel-level anomaly segmentation: where is the defect?"""

from numbers import Real

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from ._bagging import BaggedCoreset
from ._base import BaseSoftPatch, upsample_patch_maps
from ._images import check_images
from ._thresholds import lower_half_threshold


class SoftPatchSegmenter(BaseSoftPatch):
    """Unsupervised anomaly segmentation that tolerates noisy training data.

    The same pipeline as :class:`SoftPatchClassifier`, read out per pixel:
    the weighted patch distances are bilinearly upsampled to each input
    image's resolution and smoothed with a Gaussian of width ``sigma``.

    Its default memory is a :class:`BaggedCoreset`: ten coresets, each of a
    fifth of the training images, whose distances are combined by their
    median, so that a defect seen in a few training images is in few
    members and is not memorised, whatever the share of defective images.
    Its default discriminator aligns the training images (``max_shift=2``),
    takes half of them as LOF neighbours (``n_neighbors="auto"``), cuts the
    top 15% of the patch scores and removes their 8-neighbours too
    (``dilation=1``): it removes defects that recur in many training images
    (the same part missing, say), which the median of the members would
    take for normal. ``benchmarks/README.md`` gives the measurements these
    defaults were chosen on (real images first).

    Parameters
    ----------
    featurizer : PatchFeaturizer or None, default=None
        The feature step; None means ``PatchFeaturizer()``.

    denoise : NoiseDiscriminator, "passthrough" or None, default=None
        None means ``NoiseDiscriminator(threshold=0.15, n_neighbors="auto",
        max_shift=2, dilation=1)``.

    memory : BaggedCoreset, WeightedCoreset or None, default=None
        None means ``BaggedCoreset()`` (10 members, each of 20% of the
        training images, median; the members' banks add up to 10% of the
        training patches).

    sigma : float, default=4.0
        Standard deviation, in input pixels, of the Gaussian smoothing of the
        upsampled maps; 0 disables smoothing.

    contamination : "auto" or float in (0, 0.5], default="auto"
        Sets the pixel threshold :attr:`offset_` used by :meth:`predict`
        from the held-out maps of (a seeded subset of at most 64) training
        images, read at their own size: each image's largest pixel score is
        taken, and a float is the expected fraction of defective training
        *images*, the share of them whose largest pixel score lies above the
        threshold. ``"auto"`` puts the threshold two robust standard
        deviations above the median of those largest scores, the deviation
        estimated from the scores below the median (1.4826 x their median
        distance to it), which defective training images leave unchanged
        while they are fewer than half. A normal image then shows no defect
        pixel, and a defect is outlined where it stands out as much as a
        defective training image does.

    cache, random_state, n_jobs, device, verbose
        As in :class:`SoftPatchClassifier`.

    Attributes
    ----------
    offset_ : float
        ``decision_function = score_samples - offset_``, per pixel.

    contamination_estimate_ : float
        Estimated fraction of defective training images: the share of the
        held-out training images (those of the ``offset_`` subset) whose
        largest pixel score lies above the ``"auto"`` threshold.

    pipeline_, n_train_images_, image_size_
        As in :class:`SoftPatchClassifier`.

    See Also
    --------
    SoftPatchClassifier : Image-level scores and labels.

    Notes
    -----
    The segmenter follows the outlier-detector *sign* conventions per pixel
    (``score_samples`` higher = more normal, ``decision_function`` negative
    for anomalous pixels), but it is not a scikit-learn outlier detector:
    its samples are images, its outputs are maps of shape ``(n, H, W)`` and
    :meth:`predict` returns boolean defect masks (True = defect, like
    ground-truth masks), not -1 / +1 labels. Its ``estimator_type`` tag is
    therefore left unset (``sklearn.base.is_outlier_detector`` is False),
    and scorers for image-level labels do not apply to it; use
    :mod:`skpatch.metrics` (pixel AUROC, AUPRO) on its maps.

    Examples
    --------
    >>> from skpatch import SoftPatchSegmenter
    >>> from skpatch.datasets import make_defects
    >>> X, y, masks = make_defects(24, image_size=64, random_state=0)
    >>> seg = SoftPatchSegmenter(random_state=0).set_params(featurizer__image_size=64)
    >>> seg = seg.fit(X[y == 0])
    >>> maps = seg.score_samples(X)   # per pixel, higher = more normal
    >>> maps.shape
    (24, 64, 64)
    >>> bool(-maps[masks].mean() > -maps[~masks].mean())
    True
    """

    _parameter_constraints = {
        **BaseSoftPatch._parameter_constraints,
        "sigma": [Interval(Real, 0, None, closed="left")],
    }

    _default_denoise = {"threshold": 0.15, "n_neighbors": "auto", "max_shift": 2, "dilation": 1}
    _default_memory = BaggedCoreset

    def __init__(
        self,
        featurizer=None,
        denoise=None,
        memory=None,
        *,
        sigma=4.0,
        contamination="auto",
        cache=None,
        random_state=None,
        n_jobs=None,
        device="auto",
        verbose=0,
    ):
        super().__init__(
            featurizer, denoise, memory, contamination=contamination, cache=cache,
            random_state=random_state, n_jobs=n_jobs, device=device, verbose=verbose,
        )
        self.sigma = sigma

    def _held_out_images(self, n_images):
        """The seeded subset of at most 64 training images that ``offset_`` is read from."""
        return self._offset_sample(n_images)

    def _finish_fit(self, held_out_maps):
        """``contamination_estimate_`` and the pixel threshold ``offset_`` from
        held-out patch maps of a seeded subset of at most 64 training images;
        :meth:`fit` and :func:`skpatch.dask.fit` both end here.

        Each map is read at the training images' resolution, as
        :meth:`predict` reads test images (the smoothing is in input pixels,
        so a map's largest value depends on the size), one image at a time.
        The pixel threshold is set on each image's largest pixel score: the
        share ``contamination`` of the training images would show a defect
        pixel, or, for ``"auto"``, those beyond two robust standard
        deviations above the median, the deviation estimated from the
        images below the median (which defective images, while fewer than
        half, leave alone; the 3-sigma rule on the MAD set the threshold
        too high once a fifth of the images were defective).
        """
        image_anomaly = np.array(
            [self._to_pixels(patch_map[None], self.image_size_).max() for patch_map in held_out_maps]
        )
        self._set_thresholds(image_anomaly, rule=lower_half_threshold)

    @_fit_context(prefer_skip_nested_validation=False)
    def fit_predict(self, X, y=None):
        """Fit, then return defect masks of the training images themselves.

        Each training image is scored without the memory it contributed
        (out of bag with a :class:`BaggedCoreset`, leave-one-image-out with
        a :class:`WeightedCoreset`), so its defects cannot match themselves;
        ``fit(X).predict(X)`` would find almost nothing.

        Parameters
        ----------
        X : ndarray or list of images
            The training images, in any form :meth:`fit` takes.
        y : None
            Ignored.

        Returns
        -------
        masks : ndarray of shape (n_images, H, W), dtype bool
            True where a pixel of a training image is predicted defective.
        """
        features = self._fit(X)
        maps = self._to_pixels(self._train_patch_anomaly(features), self.image_size_)
        return -maps - self.offset_ < 0

    def score_samples(self, X):
        """Per-pixel opposite anomaly score at the input resolution.

        Parameters
        ----------
        X : ndarray of shape (n_images, H, W[, C]) or list
            Test images, all of one size.

        Returns
        -------
        maps : ndarray of shape (n_images, H, W), float32
            Higher means more normal, as in scikit-learn's outlier detectors;
            ``-maps`` is the anomaly map.
        """
        check_is_fitted(self, "pipeline_")
        images = check_images(X)
        return -self._to_pixels(self._patch_anomaly(images), images.image_size)

    def anomaly_maps(self, X, *, return_scores=False):
        """Anomaly maps (higher = more anomalous), i.e. ``-score_samples(X)``.

        Parameters
        ----------
        X : ndarray of shape (n_images, H, W[, C]) or list
            Test images, as in :meth:`score_samples`.
        return_scores : bool, default=False
            Also return each image's anomaly score, the largest value of its
            map (the image score that skpatch's image-level scorers and the
            ONNX export's ``scores`` read from a segmenter).

        Returns
        -------
        maps : ndarray of shape (n_images, H, W), float32
            The upsampled, smoothed weighted patch distances.
        scores : ndarray of shape (n_images,), float32
            Only with ``return_scores``.
        """
        check_is_fitted(self, "pipeline_")
        images = check_images(X)
        maps = self._to_pixels(self._patch_anomaly(images), images.image_size)
        if return_scores:
            return maps, maps.reshape(len(maps), -1).max(axis=1)
        return maps

    def predict(self, X):
        """Binary defect masks.

        Parameters
        ----------
        X : ndarray of shape (n_images, H, W, C) or list
            Test images, all of one size.

        Returns
        -------
        masks : ndarray of shape (n_images, H, W), dtype bool
            True where a pixel is predicted defective (like ground-truth masks).
        """
        check_is_fitted(self, "offset_")
        return self.decision_function(X) < 0

    def _to_pixels(self, patch_maps, size):
        """Upsample (n, h, w) patch maps to ``size`` and smooth them."""
        maps = upsample_patch_maps(patch_maps, size)
        if self.sigma > 0:
            for i in range(len(maps)):
                # truncate=4 gives PatchCore's 33 px kernel for sigma=4.
                maps[i] = gaussian_filter(maps[i], sigma=self.sigma, truncate=4.0)
        return maps
