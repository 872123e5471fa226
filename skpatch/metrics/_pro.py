"""Per-region overlap (PRO) curve and the normalized area under it (AUPRO).

The PRO metric of Bergmann et al. (MVTec AD) scores anomaly segmentation so
that every connected defect region counts the same, however small it is:
pixel-level AUROC is dominated by large defects, PRO is not.
"""

from numbers import Integral, Real

import numpy as np
from scipy import ndimage
from sklearn.utils._param_validation import Interval, validate_params

from ._ranking import _check_truth_and_scores

# 8-connectivity within each image (the 3x3 structure of the MVTec evaluation
# code) and no connectivity across images, so that the whole stack of masks
# is labelled in one call.
_REGION_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_REGION_STRUCTURE[1] = True


def _label_regions(masks):
    """Label the connected anomalous regions of every mask.

    Returns an int array of the shape of `masks` with 0 on normal pixels and
    a region id in ``1..n_regions`` (unique over all images) elsewhere, and
    ``n_regions``.
    """
    return ndimage.label(masks, structure=_REGION_STRUCTURE)


def _exact_cumulative_counts(scores, is_normal, region_weight):
    """False positives and summed region overlaps at every distinct score.

    Sorting once and taking cumulative sums gives the whole curve in
    O(n log n), as the official MVTec code does; equal scores are grouped
    because a threshold cannot split them.
    """
    order = np.argsort(scores)[::-1]
    sorted_scores = scores[order]
    last_of_tie = np.flatnonzero(
        np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    )
    false_positives = np.cumsum(is_normal[order])[last_of_tie]
    overlaps = np.cumsum(region_weight[order])[last_of_tie]
    return false_positives, overlaps, sorted_scores[last_of_tie]


def _binned_cumulative_counts(scores, is_normal, region_weight, num_thresholds):
    """Same as the exact version, at evenly spaced thresholds only.

    Each pixel is binned by how many thresholds it reaches, then reversed
    cumulative sums of the bin totals give the counts at every threshold,
    without a full sort.
    """
    # A constant map collapses the grid to a single threshold.
    grid = np.unique(np.linspace(scores.min(), scores.max(), num_thresholds))
    # Pixel p is predicted anomalous at grid[j] iff grid[j] <= score_p,
    # i.e. iff j < n_reached[p]; n_reached >= 1 since grid[0] is the minimum.
    n_reached = np.searchsorted(grid, scores, side="right")
    n_bins = len(grid) + 1
    fp_per_bin = np.bincount(n_reached, weights=is_normal, minlength=n_bins)
    overlap_per_bin = np.bincount(n_reached, weights=region_weight, minlength=n_bins)
    # Reversed cumsum over bins len(grid)..1: counts at grid[-1], ..., grid[0].
    false_positives = np.cumsum(fp_per_bin[:0:-1])
    overlaps = np.cumsum(overlap_per_bin[:0:-1])
    return false_positives, overlaps, grid[::-1]


@validate_params(
    {
        "masks": ["array-like"],
        "anomaly_maps": ["array-like"],
        "num_thresholds": [Interval(Integral, 2, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def pro_curve(masks, anomaly_maps, *, num_thresholds=None):
    """Per-region overlap (PRO) against false positive rate, at all thresholds.

    Parameters
    ----------
    masks : array-like of shape (n_images, height, width)
        Ground-truth masks: 1 (or True) for defective pixels, 0 for normal
        ones. Each 8-connected component of a mask is one defect region.

    anomaly_maps : array-like of shape (n_images, height, width)
        Per-pixel anomaly scores, higher = more anomalous.

    num_thresholds : int, default=None
        If None, the curve is exact: one point per distinct score. Otherwise
        use this many evenly spaced thresholds between the lowest and the
        highest score (an approximation that avoids sorting all pixels).

    Returns
    -------
    fpr : ndarray of shape (n_thresholds + 1,)
        Fraction of normal pixels (over all images) scoring at least
        ``thresholds[i]``. Non-decreasing, from 0 to 1.

    pro : ndarray of shape (n_thresholds + 1,)
        Mean over all defect regions of the fraction of the region scoring at
        least ``thresholds[i]``. Non-decreasing, from 0 to 1.

    thresholds : ndarray of shape (n_thresholds + 1,)
        Decreasing thresholds; ``thresholds[0]`` is ``inf`` (nothing flagged),
        the last one is the lowest score (everything flagged).

    See Also
    --------
    aupro : Normalized area under this curve up to a false positive rate.
    sklearn.metrics.roc_curve : The pixel-level ROC curve, where large
        defects weigh more.

    Notes
    -----
    A pixel is predicted anomalous when its score is greater than or equal to
    the threshold, as in :func:`sklearn.metrics.roc_curve`. Regions are the
    connected components of each mask under 8-connectivity
    (:func:`scipy.ndimage.label` with a 3x3 structure), as in the MVTec AD
    evaluation code; regions never span two images.

    References
    ----------
    .. [1] P. Bergmann, K. Batzner, M. Fauser, D. Sattlegger and C. Steger,
       "The MVTec Anomaly Detection Dataset: A Comprehensive Real-World
       Dataset for Unsupervised Anomaly Detection", International Journal
       of Computer Vision, 129(4), 1038-1059, 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from skpatch.metrics import pro_curve
    >>> masks = np.array([[[1, 1, 0, 1]]])
    >>> maps = np.array([[[0.9, 0.2, 0.5, 0.7]]])
    >>> fpr, pro, thresholds = pro_curve(masks, maps)
    >>> # At 0.7 the 1-pixel region is found and half of the 2-pixel one.
    >>> pro.tolist()
    [0.0, 0.25, 0.75, 0.75, 1.0]
    >>> fpr.tolist()
    [0.0, 0.0, 0.0, 1.0, 1.0]
    >>> thresholds.tolist()
    [inf, 0.9, 0.7, 0.5, 0.2]
    """
    masks, anomaly_maps = _check_truth_and_scores(
        masks, anomaly_maps, names=("masks", "anomaly_maps"), ndim=3
    )
    regions, n_regions = _label_regions(masks)
    if n_regions == 0:
        msg = (
            "masks contain no anomalous region: PRO is undefined. Evaluate "
            "it on a set that includes defective images."
        )
        raise ValueError(msg)
    regions = regions.ravel()
    area = np.bincount(regions)
    n_normal = area[0]
    if n_normal == 0:
        msg = (
            "masks contain no normal pixel: the false positive rate is "
            "undefined."
        )
        raise ValueError(msg)

    # A pixel adds 1 / (area of its region) to the summed overlaps, so that
    # each fully detected region adds 1 whatever its size; normal pixels add 0.
    weight_of_region = np.append(0.0, 1.0 / area[1:])
    region_weight = weight_of_region[regions]
    is_normal = regions == 0
    scores = anomaly_maps.ravel()
    if num_thresholds is None:
        false_positives, overlaps, thresholds = _exact_cumulative_counts(
            scores, is_normal, region_weight
        )
    else:
        false_positives, overlaps, thresholds = _binned_cumulative_counts(
            scores, is_normal, region_weight, num_thresholds
        )

    fpr = np.append(0.0, false_positives / n_normal)
    pro = np.append(0.0, np.clip(overlaps / n_regions, 0.0, 1.0))
    # Every pixel is flagged at the lowest threshold: PRO is exactly 1 there,
    # whatever rounding the cumulative sum of 1 / area accumulated.
    pro[-1] = 1.0
    thresholds = np.append(np.inf, thresholds.astype(np.float64))
    return fpr, pro, thresholds


def _area_up_to(x, y, x_max):
    """Trapezoidal area under the curve ``(x, y)`` from ``x[0]`` to `x_max`.

    `x` is non-decreasing and reaches at least `x_max`. The curve is
    interpolated linearly at exactly `x_max`; repeated x values (vertical
    steps) are fine since they add no area.
    """
    n_inside = np.searchsorted(x, x_max, side="right")
    x_inside, y_inside = x[:n_inside], y[:n_inside]
    if n_inside < len(x):
        # x[n_inside - 1] <= x_max < x[n_inside], so the slope is finite.
        x0, x1 = x[n_inside - 1], x[n_inside]
        y0, y1 = y[n_inside - 1], y[n_inside]
        y_at_max = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        x_inside = np.append(x_inside, x_max)
        y_inside = np.append(y_inside, y_at_max)
    return np.sum(np.diff(x_inside) * (y_inside[1:] + y_inside[:-1]) / 2)


@validate_params(
    {
        "masks": ["array-like"],
        "anomaly_maps": ["array-like"],
        "fpr_limit": [Interval(Real, 0, 1, closed="right")],
        "num_thresholds": [Interval(Integral, 2, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def aupro(masks, anomaly_maps, *, fpr_limit=0.3, num_thresholds=None):
    """Normalized area under the per-region overlap curve (AUPRO).

    The PRO curve (see :func:`pro_curve`) is integrated over false positive
    rates from 0 to `fpr_limit` and divided by `fpr_limit`, so that a perfect
    segmentation scores 1.0 and a random one about ``fpr_limit / 2``.

    Parameters
    ----------
    masks, anomaly_maps : array-like of shape (n_images, height, width)
        Ground-truth masks and per-pixel anomaly scores, as in
        :func:`pro_curve`.

    fpr_limit : float, default=0.3
        Upper integration limit on the false positive rate, in (0, 1]. The
        MVTec AD benchmark uses 0.3; low limits focus on the operating points
        that matter in practice.

    num_thresholds : int, default=None
        If None (recommended), the curve is exact. Otherwise use this many
        evenly spaced thresholds (see :func:`pro_curve`).

    Returns
    -------
    aupro : float
        Area under the PRO curve up to `fpr_limit`, divided by `fpr_limit`;
        in [0, 1].

    See Also
    --------
    pro_curve : The curve itself.
    pixel_auroc : Pixel-level AUROC, where large defects weigh more.

    Notes
    -----
    For each threshold, a pixel is predicted anomalous when its score is at
    least the threshold; PRO is the mean over all defect regions (of all
    images) of the fraction of the region so predicted, and the false
    positive rate is the fraction of all normal pixels so predicted. The
    curve is computed exactly, over all distinct scores with cumulative sums
    as in the official MVTec evaluation code, and the area up to `fpr_limit`
    uses the trapezoidal rule with the curve interpolated linearly at
    exactly `fpr_limit`. Equal scores form a single point of the curve.

    References
    ----------
    .. [1] The reference of :func:`pro_curve` (Bergmann et al., IJCV 2021),
       which also integrates the curve up to a false positive rate of 0.3.

    Examples
    --------
    >>> import numpy as np
    >>> from skpatch.metrics import aupro
    >>> masks = np.zeros((2, 8, 8), dtype=bool)
    >>> masks[0, 2:4, 2:4] = True
    >>> masks[1, 5, 1:7] = True
    >>> aupro(masks, masks.astype(float))
    1.0
    >>> aupro(masks, 1.0 - masks)
    0.0
    """
    fpr, pro, _ = pro_curve(masks, anomaly_maps, num_thresholds=num_thresholds)
    # The area of a curve bounded by 1 divided by the width it spans: at most
    # 1, up to the float rounding of the trapezoids (1 + 2e-16 was seen).
    return float(min(1.0, _area_up_to(fpr, pro, fpr_limit) / fpr_limit))
