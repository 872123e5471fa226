"""Image-level anomaly classification: is this image defective?"""

from numbers import Integral

import numpy as np
import torch
from sklearn.base import OutlierMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from ._base import BaseSoftPatch, upsample_patch_maps
from ._images import check_images


class SoftPatchClassifier(OutlierMixin, BaseSoftPatch):
    """Unsupervised image anomaly classifier that tolerates noisy training data.

    SoftPatch (NeurIPS 2022) / SoftPatch+ (Pattern Recognition 2025): a
    pipeline of :class:`PatchFeaturizer` (CNN patch features),
    :class:`NoiseDiscriminator` (drops training patches that look like
    unlabelled defects and turns outlier scores into soft weights) and
    :class:`WeightedCoreset` (memory bank). An image's anomaly score is the
    largest weighted distance of its patches to the memory bank.

    The API is scikit-learn's outlier-detector API, as in
    :class:`~sklearn.ensemble.IsolationForest`: :meth:`score_samples` is
    higher for more normal images, :meth:`predict` returns +1 (normal) or -1
    (anomalous).

    Parameters
    ----------
    featurizer : PatchFeaturizer or None, default=None
        The feature step; None means ``PatchFeaturizer()`` (embedded
        ImageNet EfficientNet-Lite0, 224 px, no download).

    denoise : NoiseDiscriminator, "passthrough" or None, default=None
        The noise discrimination step; None means
        ``NoiseDiscriminator(threshold=0.15, dilation=1)`` (LOF; the top 15%
        of the patch scores are cut and their 8-neighbours in the same image
        removed with them, see the user guide). ``"passthrough"``
        keeps every patch with weight 1, which is plain PatchCore.

    memory : WeightedCoreset, BaggedCoreset or None, default=None
        The memory step; None means ``WeightedCoreset()`` (10% coreset).
        ``BaggedCoreset()`` builds an ensemble of coresets of subsets of
        the training images instead (see :class:`SoftPatchSegmenter`).

    image_score_k : int, default=1
        The image anomaly score is the mean of the ``image_score_k`` largest
        patch anomaly scores of the image; 1 (the default) is their maximum,
        as in the SoftPatch and PatchCore papers. Larger values average out a
        single noisy patch but dilute a defect smaller than ``k`` patches; on
        the project's noise benchmark the maximum was better on average (see
        ``benchmarks/README.md``).

    contamination : "auto" or float in (0, 0.5], default="auto"
        Sets :attr:`offset_` for :meth:`predict`. A float is the expected
        fraction of anomalous training images: ``offset_`` is that
        percentile of the in-sample training scores. ``"auto"`` flags images
        whose anomaly score exceeds the training median by more than three
        robust standard deviations (1.4826 x MAD), which is insensitive to a
        minority of defective training images.

    cache : str, joblib.Memory or None, default=None
        Caches the CNN features (the expensive part) on disk, like
        :class:`~sklearn.pipeline.Pipeline`'s ``memory``: a grid search over
        ``denoise__*`` or ``memory__*`` settings then pays for the CNN once
        per fold and once per scored set. The discriminator's raw outlier
        scores are cached as well (when its projection is seeded, e.g. by
        ``random_state``): they do not depend on ``threshold``, so a grid
        over thresholds, or over methods sharing a score (``"softpatch+"``
        uses the LOF and Gaussian ones), computes each score once per fold.
        Images given as file paths are hashed by path, not content.

    random_state : int, RandomState instance or None, default=None
        Passed to the steps whose own ``random_state`` is None.

    n_jobs : int, default=None
        Torch threads, passed to the steps whose own ``n_jobs`` is None.

    device : str, default="auto"
        Where the CNN and the memory-bank search run: ``"auto"`` (CUDA if
        available, then Apple's MPS, else the CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``"mps"``; passed to the steps whose own ``device``
        is ``"auto"``. Fitted state stays on the CPU, so a model fitted on a
        GPU is saved, loaded and scored anywhere.

    verbose : int, default=0
        Progress bars for featurization and coreset selection when positive.

    Attributes
    ----------
    pipeline_ : sklearn.pipeline.Pipeline
        The fitted ``featurizer -> denoise -> memory`` pipeline.

    offset_ : float
        ``decision_function = score_samples - offset_``, set from
        :attr:`train_scores_` by ``contamination``.

    contamination_estimate_ : float
        Estimated fraction of defective training images: the share of
        :attr:`train_scores_` whose anomaly lies more than three robust
        standard deviations (1.4826 x MAD) above the median. With
        ``contamination="auto"``, :meth:`fit_predict` flags exactly these.

    train_scores_ : ndarray of shape (n_train_images,)
        :meth:`score_samples` of each training image, leave-one-image-out:
        scored against the memory bank without that image's own patches, so
        a defective training image cannot match itself (as in
        :class:`~sklearn.neighbors.LocalOutlierFactor`'s
        ``negative_outlier_factor_``, higher means more normal). With a
        :class:`BaggedCoreset` memory these are out-of-bag scores: each
        image is scored by the members that were not built from it.
        :meth:`fit_predict` labels the training images from these scores.

    n_train_images_ : int
        Number of training images.

    image_size_ : tuple of (int, int)
        Size (H, W) of the training images.

    See Also
    --------
    SoftPatchSegmenter : Pixel-level anomaly maps and masks.
    sklearn.ensemble.IsolationForest : The outlier-detector API followed here.

    Notes
    -----
    Nested parameters reach the steps even when they are left at None:
    ``SoftPatchClassifier().set_params(denoise__threshold=0.2)`` sets the
    default discriminator's threshold, so
    ``GridSearchCV(SoftPatchClassifier(), {"denoise__method": [...]})``
    works directly. ``offset_`` and :meth:`fit_predict` use the
    leave-one-image-out :attr:`train_scores_`: scoring the training images
    costs about as much as scoring as many test images.

    References
    ----------
    .. [1] Jiang et al., "SoftPatch: Unsupervised Anomaly Detection with Noisy
       Data", NeurIPS 2022.
    .. [2] Wang et al., "SoftPatch+: Fully Unsupervised Anomaly
       Classification and Segmentation", Pattern Recognition 2025.
    .. [3] Roth et al., "Towards Total Recall in Industrial Anomaly
       Detection", CVPR 2022 (PatchCore).

    Examples
    --------
    >>> from skpatch import SoftPatchClassifier
    >>> from skpatch.datasets import make_defects
    >>> X, y, _ = make_defects(24, image_size=64, defect_ratio=0.5, random_state=0)
    >>> clf = SoftPatchClassifier(random_state=0).set_params(featurizer__image_size=64)
    >>> clf = clf.fit(X[y == 0])
    >>> scores = clf.score_samples(X)   # higher = more normal
    >>> bool(scores[y == 1].mean() < scores[y == 0].mean())
    True
    >>> clf.predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints = {
        **BaseSoftPatch._parameter_constraints,
        "image_score_k": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        featurizer=None,
        denoise=None,
        memory=None,
        *,
        image_score_k=1,
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
        self.image_score_k = image_score_k

    def _finish_fit(self, held_out_maps):
        """``train_scores_``, ``contamination_estimate_`` and ``offset_`` from the
        held-out patch anomaly maps of all training images; :meth:`fit` and
        :func:`skpatch.dask.fit` both end here."""
        anomaly = self._image_anomaly(held_out_maps)
        self.train_scores_ = -anomaly
        self._set_thresholds(anomaly)

    def fit_predict(self, X, y=None):
        """Fit, then say which of the training images are anomalous.

        The labels come from :attr:`train_scores_`, which score each training
        image without its own patches in the memory bank, so this answers
        "which images of this unlabelled batch are defective?"; it is not
        ``fit(X).predict(X)``, whose in-sample scores would let every image
        match itself.

        Parameters
        ----------
        X : ndarray of shape (n_images, H, W, C) or list
            Training images, as in :meth:`fit`.
        y : None
            Ignored.

        Returns
        -------
        labels : ndarray of shape (n_images,)
            +1 for normal images, -1 for anomalous ones.
        """
        self.fit(X)
        return np.where(self.train_scores_ - self.offset_ < 0, -1, 1)

    def score_samples(self, X):
        """Opposite of the anomaly score: higher means more normal.

        Parameters
        ----------
        X : ndarray of shape (n_images, H, W[, C]) or list
            Test images.

        Returns
        -------
        scores : ndarray of shape (n_images,)
            ``-max over patches of (distance to nearest memory patch x its
            weight)``.
        """
        check_is_fitted(self, "pipeline_")
        memory = self.pipeline_[-1]
        if self.image_score_k == 1 and hasattr(memory, "min_score_samples"):
            # Only each image's largest patch distance matters: the memory
            # step can prune its search by it.
            return self._by_blocks(X, memory.min_score_samples)
        return -self._image_anomaly(self._patch_anomaly(check_images(X)))

    def anomaly_maps(self, X, *, return_scores=False):
        """Patch anomaly at each pixel (higher = more anomalous): where a score comes from.

        The weighted patch distances that :meth:`score_samples` aggregates,
        bilinearly upsampled to each image's resolution and not smoothed
        (the classifier has no ``sigma``; :class:`SoftPatchSegmenter` is
        the estimator made for maps). With ``image_score_k=1`` an image's
        anomaly score is the largest patch distance, which the map reaches
        at most.

        Parameters
        ----------
        X : ndarray of shape (n_images, H, W[, C]) or list
            Test images, all of one size.
        return_scores : bool, default=False
            Also return the image anomaly scores, ``-score_samples(X)``,
            from the same pass over the images.

        Returns
        -------
        maps : ndarray of shape (n_images, H, W), float32
        scores : ndarray of shape (n_images,)
            Only with ``return_scores``.

        Examples
        --------
        >>> from skpatch import SoftPatchClassifier
        >>> from skpatch.datasets import make_defects
        >>> X, y, _ = make_defects(16, image_size=64, defect_ratio=0.25, random_state=0)
        >>> clf = SoftPatchClassifier(random_state=0).set_params(
        ...     featurizer__image_size=64, featurizer__embed_dim=64, denoise__n_neighbors=4)
        >>> maps, scores = clf.fit(X[y == 0]).anomaly_maps(X[:2], return_scores=True)
        >>> maps.shape, bool((scores == -clf.score_samples(X[:2])).all())
        ((2, 64, 64), True)
        """
        check_is_fitted(self, "pipeline_")
        images = check_images(X)
        patch_maps = self._patch_anomaly(images)
        maps = upsample_patch_maps(patch_maps, images.image_size)
        if return_scores:
            return maps, self._image_anomaly(patch_maps)
        return maps

    def _image_scores_from_patch_map(self, patch_maps):
        """Image anomaly scores (n,) from patch anomaly maps (n, h, w), torch tensors.

        The one definition of the image aggregate: :meth:`score_samples`,
        :meth:`fit` (``offset_``) and the ONNX export (which traces it) all
        go through it, so it must stay traceable torch code. (With
        ``image_score_k=1`` and a memory step that has
        ``min_score_samples``, :meth:`score_samples` asks the memory step
        for the same maximum directly.)
        """
        # At most every patch: a k above h * w averages the whole map.
        k = min(self.image_score_k, patch_maps.shape[1] * patch_maps.shape[2])
        if k == 1:
            return patch_maps.amax(dim=(1, 2))
        return patch_maps.flatten(1).topk(k, dim=1).values.mean(dim=1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "outlier_detector"
        return tags

    def _image_anomaly(self, patch_maps):
        return self._image_scores_from_patch_map(torch.from_numpy(patch_maps)).numpy()

    def predict(self, X):
        """+1 for normal images, -1 for anomalous ones.

        Parameters
        ----------
        X : ndarray of shape (n_images, H, W, C) or list
            Test images.

        Returns
        -------
        labels : ndarray of shape (n_images,)
        """
        check_is_fitted(self, "offset_")
        return np.where(self.decision_function(X) < 0, -1, 1)
