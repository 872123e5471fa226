"""Threshold-free ranking metrics: image AUROC, pixel AUROC and maximum F1.

Every metric follows scikit-learn's ``metric(y_true, y_score)`` convention
with **1 = anomalous** (defective) in ``y_true`` and **higher ``y_score`` =
more anomalous**. Note that this is the opposite sign of
``score_samples``/``decision_function`` of outlier detectors, where higher
means more normal: negate those before calling a metric.
"""

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score
from sklearn.utils._param_validation import validate_params

# ---------------------------------------------------------------------------
# Input validation shared by all metrics of this package (also used by _pro).
# ---------------------------------------------------------------------------


def _check_binary_truth(y_true, name):
    """Return ``y_true`` as a boolean array, True where anomalous.

    Booleans and numbers that are exactly 0 or 1 are accepted; anything else
    is rejected rather than guessed, because the two usual mistakes (0/255
    masks read from PNG files and scikit-learn's -1 = outlier / 1 = inlier
    labels) would otherwise silently give wrong scores.
    """
    y_true = np.asarray(y_true)
    if y_true.dtype == bool:
        return y_true
    if y_true.dtype.kind not in "iuf":
        msg = (
            f"{name} must hold booleans or the numbers 0 (normal) and 1 "
            f"(anomalous); got an array of dtype {y_true.dtype}."
        )
        raise TypeError(msg)
    not_binary = (y_true != 0) & (y_true != 1)
    if not_binary.any():
        examples = np.unique(y_true[not_binary])[:5].tolist()
        msg = (
            f"{name} must be binary with 1 = anomalous and 0 = normal; it also "
            f"contains {examples}. Convert 0/255 masks with `mask > 0` and "
            "scikit-learn outlier labels (-1 = outlier, 1 = inlier) with "
            "`y == -1`."
        )
        raise ValueError(msg)
    return y_true == 1


def _check_anomaly_scores(y_score, name):
    """Return ``y_score`` as a real-valued array with only finite values."""
    y_score = np.asarray(y_score)
    if y_score.dtype.kind not in "biuf":
        msg = (
            f"{name} must hold real numbers (higher = more anomalous); got an "
            f"array of dtype {y_score.dtype}."
        )
        raise TypeError(msg)
    if not np.isfinite(y_score).all():
        msg = (
            f"{name} contains NaN or infinity; anomaly scores must be finite "
            "to be ranked."
        )
        raise ValueError(msg)
    return y_score


def _check_truth_and_scores(y_true, y_score, *, names=("y_true", "y_score"), ndim=None):
    """Validate a (ground truth, anomaly score) pair of equal shape.

    Parameters
    ----------
    y_true, y_score : array-like
        Ground truth (1 = anomalous) and anomaly scores.
    names : tuple of str, default=("y_true", "y_score")
        Names of the two arguments, for error messages.
    ndim : int, default=None
        Required number of dimensions; None accepts any non-scalar shape.

    Returns
    -------
    y_true : ndarray of bool
        True where anomalous.
    y_score : ndarray
        The finite anomaly scores.
    """
    true_name, score_name = names
    # Shapes are checked before values so that a wrong layout is reported as
    # such and not as a confusing complaint about the values it contains.
    true_shape, score_shape = np.shape(y_true), np.shape(y_score)
    for name, shape in ((true_name, true_shape), (score_name, score_shape)):
        if ndim is not None and len(shape) != ndim:
            layout = "(n_images,)" if ndim == 1 else "(n_images, height, width)"
            msg = f"{name} must be {ndim}-D of shape {layout}; got shape {shape}."
            raise ValueError(msg)
        if len(shape) == 0:
            msg = f"{name} must be an array, not a scalar."
            raise ValueError(msg)
    if true_shape != score_shape:
        msg = (
            f"{true_name} and {score_name} must have the same shape; got "
            f"{true_shape} and {score_shape}."
        )
        raise ValueError(msg)
    if 0 in true_shape:
        msg = f"{true_name} and {score_name} are empty (shape {true_shape})."
        raise ValueError(msg)
    return (
        _check_binary_truth(y_true, true_name),
        _check_anomaly_scores(y_score, score_name),
    )


def _check_both_classes(y_true, name, metric_name):
    """Raise if ``y_true`` (boolean) is all normal or all anomalous."""
    n_anomalous = np.count_nonzero(y_true)
    if n_anomalous == 0 or n_anomalous == y_true.size:
        present = "anomalous" if n_anomalous else "normal"
        msg = (
            f"Only one class is present in {name} (all {present}): "
            f"{metric_name} is undefined. It needs both normal (0) and "
            "anomalous (1) samples."
        )
        raise ValueError(msg)


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------


@validate_params(
    {"y_true": ["array-like"], "y_score": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def image_auroc(y_true, y_score):
    """Area under the ROC curve of image-level anomaly detection.

    Parameters
    ----------
    y_true : array-like of shape (n_images,)
        Ground truth: 1 (or True) for defective images, 0 for normal ones.

    y_score : array-like of shape (n_images,)
        Anomaly scores, higher = more anomalous. For skpatch estimators and
        scikit-learn outlier detectors this is ``-score_samples(X)``.

    Returns
    -------
    auroc : float
        Probability that a random defective image scores higher than a random
        normal one (ties count one half); 0.5 is chance, 1.0 is perfect.

    See Also
    --------
    pixel_auroc : The same metric over all pixels of segmentation maps.
    sklearn.metrics.roc_auc_score : The underlying implementation.

    Notes
    -----
    This is :func:`sklearn.metrics.roc_auc_score` with stricter input checks:
    ``y_true`` must be binary with 1 = anomalous, so that labels in the
    outlier-detector convention (-1 = outlier, 1 = inlier) raise an error
    instead of silently turning the result into ``1 - AUROC``. The sign of
    `y_score` cannot be checked: passing ``score_samples`` (higher = more
    normal) unnegated also gives ``1 - AUROC``.

    References
    ----------
    .. [1] T. Fawcett, "An introduction to ROC analysis", Pattern Recognition
       Letters, 27(8), 861-874, 2006.

    Examples
    --------
    >>> from skpatch.metrics import image_auroc
    >>> image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y_true, y_score = _check_truth_and_scores(y_true, y_score, ndim=1)
    _check_both_classes(y_true, "y_true", "AUROC")
    return float(roc_auc_score(y_true, y_score))


@validate_params(
    {"masks": ["array-like"], "anomaly_maps": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def pixel_auroc(masks, anomaly_maps):
    """Area under the ROC curve of pixel-level anomaly segmentation.

    All pixels of all images are pooled into one ranking, as in the MVTec AD
    benchmark.

    Parameters
    ----------
    masks : array-like of shape (n_images, height, width)
        Ground-truth masks: 1 (or True) for defective pixels, 0 for normal
        ones. Other values (such as 0/255 masks) are rejected.

    anomaly_maps : array-like of shape (n_images, height, width)
        Per-pixel anomaly scores, higher = more anomalous.

    Returns
    -------
    auroc : float
        Probability that a random defective pixel scores higher than a random
        normal pixel (ties count one half).

    See Also
    --------
    image_auroc : The same metric on image-level labels.
    aupro : Area under the per-region overlap curve, which, unlike this
        metric, weights small defects as much as large ones.

    Notes
    -----
    Large defects dominate this metric because it counts pixels; use
    :func:`aupro` to weight every defect region equally. All pixels are
    ranked at once by :func:`sklearn.metrics.roc_auc_score`, whose sort and
    cumulative sums take several times the memory of the maps (about 0.5 GB
    for 100 maps of 256 x 256 pixels).

    References
    ----------
    .. [1] P. Bergmann et al., "The MVTec Anomaly Detection Dataset: A
       Comprehensive Real-World Dataset for Unsupervised Anomaly Detection",
       IJCV 129(4), 1038-1059, 2021: pixel-level ROC on MVTec AD.

    Examples
    --------
    >>> import numpy as np
    >>> from skpatch.metrics import pixel_auroc
    >>> masks = np.array([[[0, 1], [0, 0]], [[0, 0], [1, 1]]])
    >>> maps = np.array([[[0.1, 0.9], [0.2, 0.3]], [[0.0, 0.4], [0.8, 0.35]]])
    >>> # 14 of the 15 (defective, normal) pixel pairs are ranked correctly.
    >>> round(pixel_auroc(masks, maps), 4)
    0.9333
    """
    masks, anomaly_maps = _check_truth_and_scores(
        masks, anomaly_maps, names=("masks", "anomaly_maps"), ndim=3
    )
    _check_both_classes(masks, "masks", "pixel AUROC")
    return float(roc_auc_score(masks.ravel(), anomaly_maps.ravel()))


@validate_params(
    {"y_true": ["array-like"], "y_score": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def f1_max(y_true, y_score):
    """Maximum F1 score over all decision thresholds.

    Works on image labels and scores, or on masks and anomaly maps, which
    are flattened and pooled (anomalib's ``F1Max``).

    Parameters
    ----------
    y_true : array-like of shape (n_images,) or (n_images, height, width)
        Ground truth: 1 (or True) = anomalous, 0 = normal.

    y_score : array-like of the same shape as `y_true`
        Anomaly scores, higher = more anomalous.

    Returns
    -------
    f1 : float
        The largest F1 score reached by predicting ``y_score >= threshold``
        as anomalous, over all thresholds.

    See Also
    --------
    sklearn.metrics.precision_recall_curve : Gives the precision and recall at
        every threshold.
    sklearn.metrics.f1_score : F1 at one fixed set of predictions.

    Notes
    -----
    The thresholds are all the distinct values of `y_score`, so the result is
    exact. Unlike the AUROC metrics, a ground truth that is anomalous
    everywhere is accepted (its maximum F1 is 1); one without any anomalous
    sample is rejected because recall is then undefined.

    References
    ----------
    .. [1] S. Akcay, D. Ameln, A. Vaidya, B. Lakshmanan, N. Ahuja and
       U. Genc, "Anomalib: A Deep Learning Library for Anomaly Detection",
       IEEE International Conference on Image Processing, 2022.

    Examples
    --------
    >>> from skpatch.metrics import f1_max
    >>> # Threshold 0.35 flags the last three images: precision 2/3, recall 1.
    >>> round(f1_max([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8
    """
    y_true, y_score = _check_truth_and_scores(y_true, y_score)
    if not y_true.any():
        msg = (
            "y_true contains no anomalous sample (1): recall, hence F1, is "
            "undefined."
        )
        raise ValueError(msg)
    precision, recall, _ = precision_recall_curve(
        y_true.ravel(), y_score.ravel(), pos_label=True
    )
    denominator = precision + recall
    # F1 is 0 where precision and recall are both 0 (no true positive).
    f1 = np.divide(
        2 * precision * recall,
        denominator,
        out=np.zeros_like(denominator),
        where=denominator > 0,
    )
    return float(f1.max())
