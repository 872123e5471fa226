"""Tests for skpatch.metrics: image/pixel AUROC, F1 max, PRO curve and AUPRO."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.testing import assert_allclose
from skimage.measure import label as skimage_label
from sklearn.metrics import f1_score, roc_auc_score

from skpatch.metrics import aupro, f1_max, image_auroc, pixel_auroc, pro_curve

SETTINGS = settings(max_examples=40, deadline=None)


# ---------------------------------------------------------------------------
# Hypothesis strategies and brute-force references
# ---------------------------------------------------------------------------


@st.composite
def labels_and_scores(draw, min_size=2, max_size=30):
    """1-D binary labels with both classes, and scores with frequent ties."""
    n = draw(st.integers(min_size, max_size))
    y = draw(arrays(np.int64, n, elements=st.integers(0, 1)))
    assume(0 < y.sum() < n)
    scores = draw(arrays(np.float64, n, elements=st.integers(-4, 4).map(float)))
    return y, scores


@st.composite
def masks_and_maps(draw, max_images=3, max_side=7, n_levels=6):
    """Masks with at least one defect and one normal pixel, tied scores."""
    shape = (
        draw(st.integers(1, max_images)),
        draw(st.integers(1, max_side)),
        draw(st.integers(1, max_side)),
    )
    masks = draw(arrays(np.bool_, shape))
    assume(masks.any() and not masks.all())
    maps = draw(arrays(np.float64, shape, elements=st.integers(0, n_levels - 1).map(float)))
    return masks, maps


def brute_force_pro_points(masks, maps):
    """(FPR, PRO) at every distinct threshold, one threshold at a time.

    Regions come from skimage (8-connectivity is ``connectivity=2``) rather
    than scipy, so the labelling is checked independently too.
    """
    regions = [
        (image, skimage_label(mask, connectivity=2) == region_id)
        for image, mask in enumerate(masks)
        for region_id in range(1, skimage_label(mask, connectivity=2).max() + 1)
    ]
    normal = ~masks
    points = [(0.0, 0.0)]
    for threshold in sorted(set(maps.ravel().tolist()), reverse=True):
        flagged = maps >= threshold
        fpr = (flagged & normal).sum() / normal.sum()
        pro = np.mean([flagged[image][region].mean() for image, region in regions])
        points.append((fpr, pro))
    return points


def brute_force_aupro(masks, maps, fpr_limit):
    """Trapezoids segment by segment, the last one cut at ``fpr_limit``."""
    points = brute_force_pro_points(masks, maps)
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def brute_force_f1_max(y_true, y_score):
    """Best F1 of ``y_score >= t`` over every distinct score ``t``."""
    y_true, y_score = np.ravel(y_true), np.ravel(y_score)
    return max(
        f1_score(y_true, y_score >= threshold, zero_division=0)
        for threshold in np.unique(y_score)
    )


# ---------------------------------------------------------------------------
# image_auroc / pixel_auroc
# ---------------------------------------------------------------------------


@SETTINGS
@given(labels_and_scores())
def test_image_auroc_equals_roc_auc_score(data):
    y, scores = data
    assert image_auroc(y, scores) == pytest.approx(roc_auc_score(y, scores))


def test_image_auroc_hand_worked():
    # Defective scores 0.35 and 0.8 against normal 0.1 and 0.4: 0.35 loses to
    # 0.4, the other 3 pairs are won -> 3/4. The tie 0.4 vs 0.4 counts 1/2.
    assert image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.4, 0.8]) == pytest.approx(3.5 / 4)


def test_image_auroc_accepts_bool_int_and_float_labels():
    scores = np.array([0.3, 0.1, 0.7, 0.2, 0.9])
    labels = np.array([0, 0, 1, 1, 1])
    expected = image_auroc(labels, scores)
    assert isinstance(expected, float)
    for converted in (labels.astype(bool), labels.astype(np.uint8), labels.astype(float)):
        assert image_auroc(converted, scores) == expected
    assert image_auroc(labels.tolist(), scores.tolist()) == expected


def test_image_auroc_flipped_sign_is_one_minus():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    scores = rng.normal(size=50) + y
    assert image_auroc(y, -scores) == pytest.approx(1 - image_auroc(y, scores))


@SETTINGS
@given(masks_and_maps())
def test_pixel_auroc_equals_image_auroc_on_flattened(data):
    masks, maps = data
    expected = image_auroc(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(expected)
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))


def test_pixel_auroc_pools_pixels_across_images():
    # Defective pixels 0.9, 0.8, 0.35 against normal 0.1, 0.2, 0.3, 0.0, 0.4:
    # only 0.35 < 0.4 is misranked -> 14/15. A per-image mean would differ
    # (image 0: 3/3, image 1: 3/4, mean 7/8).
    masks = np.array([[[0, 1], [0, 0]], [[0, 0], [1, 1]]])
    maps = np.array([[[0.1, 0.9], [0.2, 0.3]], [[0.0, 0.4], [0.8, 0.35]]])
    assert pixel_auroc(masks, maps) == pytest.approx(14 / 15)


def test_pixel_auroc_mask_dtypes_agree():
    rng = np.random.default_rng(1)
    masks = rng.random((3, 5, 6)) < 0.3
    maps = rng.random((3, 5, 6))
    expected = pixel_auroc(masks, maps)
    for dtype in (np.uint8, np.int64, np.float32):
        assert pixel_auroc(masks.astype(dtype), maps) == expected
    assert pixel_auroc(masks, maps.astype(np.float32)) == pytest.approx(expected)


def test_pixel_auroc_rejects_0_255_masks_with_hint():
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[0, 1, 1] = 255
    with pytest.raises(ValueError, match=r"mask > 0"):
        pixel_auroc(masks, np.zeros((2, 4, 4)))


# ---------------------------------------------------------------------------
# Input validation, shared by all metrics
# ---------------------------------------------------------------------------

Y_1D = np.array([0, 1, 0, 1])
S_1D = np.array([0.1, 0.9, 0.3, 0.5])
M_3D = np.array([[[0, 1], [0, 0]], [[1, 0], [0, 0]]])
A_3D = np.array([[[0.1, 0.9], [0.2, 0.3]], [[0.8, 0.0], [0.4, 0.35]]])

ALL_METRICS = [
    (image_auroc, Y_1D, S_1D),
    (pixel_auroc, M_3D, A_3D),
    (aupro, M_3D, A_3D),
    (pro_curve, M_3D, A_3D),
    (f1_max, Y_1D, S_1D),
    (f1_max, M_3D, A_3D),
]
METRIC_IDS = ["image_auroc", "pixel_auroc", "aupro", "pro_curve", "f1_max-1d", "f1_max-3d"]


# One score of each shared input moved above a positive one: the worked values
# below are then not 1 (perfect separation), so a metric that ignores its
# input cannot pass.
S_1D_SWAPPED = np.array([0.1, 0.9, 0.7, 0.5])  # negative 0.3 -> 0.7
A_3D_SWAPPED = A_3D.copy()
A_3D_SWAPPED[1, 1, 0] = 0.85  # normal pixel 0.4 -> 0.85, between the two defects

# Hand-worked values, (shared inputs, swapped inputs):
# - image_auroc: positives 0.9, 0.5, negatives 0.1, 0.3: all 4 pairs ordered
#   -> 1; with 0.7, the pair (0.5, 0.7) is not -> 3/4.
# - pixel_auroc: defects 0.9, 0.8 above all 6 normal pixels -> 1; with 0.85,
#   0.8 is above 5 of 6 -> 11/12.
# - aupro: both one-pixel regions found at FPR 0 -> 1; swapped, the curve is
#   (0, 0) (0, 1/2) (1/6, 1/2) (1/6, 1): area up to 0.3 is 1/12 + (0.3 - 1/6)
#   = 13/60, over 0.3 -> 13/18.
# - f1_max: perfect -> 1; swapped, threshold 0.5 (0.8 in 3-D) flags both
#   positives and one negative: P = 2/3, R = 1 -> F1 = 0.8 (the best; 0.9
#   alone gives 2/3).
HAND_WORKED = {
    "image_auroc": (1.0, 3 / 4),
    "pixel_auroc": (1.0, 11 / 12),
    "aupro": (1.0, 13 / 18),
    "f1_max-1d": (1.0, 0.8),
    "f1_max-3d": (1.0, 0.8),
}


@pytest.mark.parametrize(("metric", "y", "s"), ALL_METRICS, ids=METRIC_IDS)
def test_valid_inputs_give_a_result(metric, y, s, request):
    metric_id = request.node.callspec.id
    swapped = S_1D_SWAPPED if s.ndim == 1 else A_3D_SWAPPED
    if metric is pro_curve:
        for scores, fpr_at_full_pro in ((s, 0.0), (swapped, 1 / 6)):
            fpr, pro, thresholds = metric(y, scores)
            assert fpr.shape == pro.shape == thresholds.shape
            # Both start at (0, 0) (threshold inf) and end at (1, 1), never decreasing.
            assert (fpr[0], pro[0], fpr[-1], pro[-1]) == (0, 0, 1, 1)
            assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)
            assert thresholds[0] == np.inf and np.all(np.diff(thresholds) < 0)
            # Both regions are found once the second defect pixel is flagged.
            assert fpr[np.argmax(pro == 1)] == pytest.approx(fpr_at_full_pro)
        return
    expected, expected_swapped = HAND_WORKED[metric_id]
    for scores, value in ((s, expected), (swapped, expected_swapped)):
        result = metric(y, scores)
        assert isinstance(result, float) and 0.0 <= result <= 1.0
        assert result == pytest.approx(value)


@pytest.mark.parametrize(("metric", "y", "s"), ALL_METRICS, ids=METRIC_IDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_rejected(metric, y, s, bad):
    s = s.astype(float)
    s.flat[0] = bad
    with pytest.raises(ValueError, match="NaN or infinity"):
        metric(y, s)


@pytest.mark.parametrize(("metric", "y", "s"), ALL_METRICS, ids=METRIC_IDS)
def test_shape_mismatch_rejected(metric, y, s):
    with pytest.raises(ValueError, match="same shape"):
        metric(y, s[:1])


@pytest.mark.parametrize(("metric", "y", "s"), ALL_METRICS, ids=METRIC_IDS)
@pytest.mark.parametrize(
    ("values", "hint"), [((0, 2), r"\[2\]"), ((0, 255), "mask > 0"), ((-1, 1), "y == -1")]
)
def test_non_binary_truth_rejected(metric, y, s, values, hint):
    y = np.where(y == 1, values[1], values[0])
    with pytest.raises(ValueError, match=f"must be binary.*{hint}"):
        metric(y, s)


@pytest.mark.parametrize(("metric", "y", "s"), ALL_METRICS, ids=METRIC_IDS)
def test_non_numeric_inputs_rejected(metric, y, s):
    with pytest.raises(TypeError, match="booleans or the numbers"):
        metric(y.astype(str), s)
    with pytest.raises(TypeError, match="real numbers"):
        metric(y, s.astype(complex))


@pytest.mark.parametrize(("metric", "y", "s"), ALL_METRICS, ids=METRIC_IDS)
def test_empty_inputs_rejected(metric, y, s):
    empty_shape = (0,) + y.shape[1:]
    with pytest.raises(ValueError, match="empty"):
        metric(np.zeros(empty_shape), np.zeros(empty_shape))


@pytest.mark.parametrize(("metric", "y", "s"), ALL_METRICS, ids=METRIC_IDS)
def test_no_anomaly_rejected(metric, y, s):
    with pytest.raises(ValueError, match="(Only one class|no anomalous)"):
        metric(np.zeros_like(y), s)


@pytest.mark.parametrize(("metric", "y", "s"), ALL_METRICS[:4], ids=METRIC_IDS[:4])
def test_all_anomalous_rejected(metric, y, s):
    with pytest.raises(ValueError, match="(Only one class|no normal pixel)"):
        metric(np.ones_like(y), s)


def test_f1_max_accepts_all_anomalous():
    # Flagging everything gives precision 1 and recall 1.
    assert f1_max([1, 1, 1], [0.2, 0.5, 0.1]) == 1.0


@pytest.mark.parametrize(
    ("metric", "y", "s", "match"),
    [
        (image_auroc, M_3D, A_3D, "must be 1-D"),
        (image_auroc, Y_1D[:, None], S_1D[:, None], "must be 1-D"),
        (pixel_auroc, Y_1D, S_1D, "must be 3-D"),
        (pixel_auroc, M_3D[0], A_3D[0], "must be 3-D"),
        (aupro, M_3D[0], A_3D[0], "must be 3-D"),
    ],
)
def test_wrong_number_of_dimensions_rejected(metric, y, s, match):
    with pytest.raises(ValueError, match=match):
        metric(y, s)


@pytest.mark.parametrize("metric", [image_auroc, pixel_auroc, aupro, f1_max])
def test_scalar_inputs_rejected(metric):
    # InvalidParameterError from validate_params subclasses ValueError.
    with pytest.raises(ValueError, match="array-like"):
        metric(1, 0.5)


# ---------------------------------------------------------------------------
# f1_max
# ---------------------------------------------------------------------------


def test_f1_max_hand_worked():
    # Thresholds 0.8, 0.4, 0.35, 0.1 flag 1, 2, 3, 4 images with 1, 1, 2, 2
    # true positives: F1 = 2/3, 1/2, 4/5 (P = 2/3, R = 1), 2/3 -> max 0.8.
    assert f1_max([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.8)


@SETTINGS
@given(labels_and_scores())
def test_f1_max_matches_brute_force_on_labels(data):
    y, scores = data
    assert f1_max(y, scores) == pytest.approx(brute_force_f1_max(y, scores))


@SETTINGS
@given(masks_and_maps())
def test_f1_max_matches_brute_force_on_masks(data):
    masks, maps = data
    assert f1_max(masks, maps) == pytest.approx(brute_force_f1_max(masks, maps))
    assert f1_max(masks, maps) == pytest.approx(f1_max(masks.ravel(), maps.ravel()))


# ---------------------------------------------------------------------------
# pro_curve / aupro: hand-worked cases
# ---------------------------------------------------------------------------

# One 3x4 image, two regions of different sizes: A = {(0,0), (0,1)} (area 2)
# and B = {(2,3)} (area 1); the other 9 pixels are normal.
TWO_REGION_MASK = np.array([[[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]])
# A scores 0.9 and 0.5, B scores 0.5, normal pixels 0.8, 0.5 (tied with A and
# B), 0.3, 0.2, 0.2, 0.1, 0.1, 0.0, 0.0.
TWO_REGION_MAP = np.array(
    [[[0.9, 0.5, 0.8, 0.5], [0.3, 0.2, 0.2, 0.1], [0.1, 0.0, 0.0, 0.5]]]
)


def test_pro_curve_two_regions_hand_worked():
    fpr, pro, thresholds = pro_curve(TWO_REGION_MASK, TWO_REGION_MAP)
    # t=0.9: half of A, none of B -> PRO (1/2 + 0) / 2 = 1/4; no false positive.
    # t=0.8: one normal pixel -> FPR 1/9.
    # t=0.5: all of A and B, and a 2nd normal pixel -> PRO 1, FPR 2/9.
    # t=0.3, 0.2, 0.1, 0.0: 3, 5, 7, 9 normal pixels.
    assert_allclose(thresholds, [np.inf, 0.9, 0.8, 0.5, 0.3, 0.2, 0.1, 0.0])
    assert_allclose(fpr, [0, 0, 1 / 9, 2 / 9, 3 / 9, 5 / 9, 7 / 9, 1])
    assert_allclose(pro, [0, 0.25, 0.25, 1, 1, 1, 1, 1])
    # Pixel-wise recall at t=0.9 would be 1/3: PRO weighs regions, not pixels.


def test_aupro_two_regions_hand_worked():
    # Area up to FPR 0.3 under (0, 0) (0, 1/4) (1/9, 1/4) (2/9, 1) (1/3, 1):
    #   [0, 1/9]:     1/4 * 1/9                 = 10/360
    #   [1/9, 2/9]:   (1/4 + 1) / 2 * 1/9       = 25/360
    #   [2/9, 3/10]:  1 * (3/10 - 2/9) = 7/90   = 28/360
    # total 63/360, divided by 0.3 -> 7/12.
    assert aupro(TWO_REGION_MASK, TWO_REGION_MAP) == pytest.approx(7 / 12)
    # Up to FPR 1: 35/360 + 1 * (1 - 2/9) = 7/72 + 56/72 = 7/8.
    assert aupro(TWO_REGION_MASK, TWO_REGION_MAP, fpr_limit=1.0) == pytest.approx(7 / 8)
    # Up to FPR 1/9 (a curve point): 10/360 / (1/9) = 1/4.
    assert aupro(TWO_REGION_MASK, TWO_REGION_MAP, fpr_limit=1 / 9) == pytest.approx(1 / 4)


def test_aupro_ties_form_one_point():
    # The tie at 0.5 (end of A, B and a normal pixel) must be the single point
    # (2/9, 1), joined to (1/9, 1/4) by a slanted segment. Breaking the tie
    # with the region pixels first would put a vertical step at FPR 1/9:
    #   1/4 * 1/9 + 1 * (3/10 - 1/9) = 10/360 + 68/360 -> / 0.3 = 13/18;
    # with the normal pixel first, a vertical step at FPR 2/9:
    #   1/4 * 2/9 + 1 * (3/10 - 2/9) = 20/360 + 28/360 -> / 0.3 = 4/9.
    result = aupro(TWO_REGION_MASK, TWO_REGION_MAP)
    assert result == pytest.approx(7 / 12)
    assert 4 / 9 < result < 13 / 18


def test_regions_use_8_connectivity():
    # (0,0) touches (1,1) only diagonally: one region of area 3 with
    # 8-connectivity (two regions, areas 1 and 2, with 4-connectivity).
    mask = np.array([[[1, 0, 0], [0, 1, 1], [0, 0, 0]]])
    anomaly_map = np.zeros((1, 3, 3))
    anomaly_map[0, 0, 0] = 1.0
    fpr, pro, _ = pro_curve(mask, anomaly_map)
    # t=1: 1 of 3 pixels of the region -> PRO 1/3 (it would be (1 + 0)/2 with
    # 4-connectivity). t=0: everything -> (1, 1).
    assert_allclose(fpr, [0, 0, 1])
    assert_allclose(pro, [0, 1 / 3, 1])
    # Trapezoid from (0, 1/3) to (1, 1): (1/3 + 1) / 2 = 2/3.
    assert aupro(mask, anomaly_map, fpr_limit=1.0) == pytest.approx(2 / 3)


def test_regions_do_not_span_images():
    # Bottom row of image 0 and top row of image 1 would touch if the stack
    # were labelled as a 3-D volume.
    masks = np.zeros((2, 3, 3), dtype=bool)
    masks[0, 2, 1] = True  # region of area 1
    masks[1, 0, :] = True  # region of area 3
    maps = masks.astype(float)
    maps[1, 0, :] = 0.5
    _, pro, _ = pro_curve(masks, maps)
    # t=1 finds the whole first region only: (1 + 0) / 2 (1/4 if merged).
    assert pro[1] == pytest.approx(0.5)


def test_regions_counted_over_all_images():
    # Two images with one region each; detecting the region of image 0 only
    # gives PRO 1/2 whatever the region sizes.
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, :3, :3] = True  # area 9
    masks[1, 0, 0] = True  # area 1
    maps = np.zeros((2, 4, 4))
    maps[0, :3, :3] = 1.0
    _, pro, _ = pro_curve(masks, maps)
    assert_allclose(pro, [0, 0.5, 1])


# ---------------------------------------------------------------------------
# aupro: limiting cases and properties
# ---------------------------------------------------------------------------


def _blob_masks(rng, n_images=6, side=24):
    """Masks with a few rectangles of varied sizes on half of the images."""
    masks = np.zeros((n_images, side, side), dtype=bool)
    for mask in masks[::2]:
        for _ in range(rng.integers(1, 4)):
            row, col = rng.integers(0, side - 4, size=2)
            height, width = rng.integers(1, 8, size=2)
            mask[row : row + height, col : col + width] = True
    return masks


@pytest.mark.parametrize("fpr_limit", [0.01, 0.3, 1.0])
def test_aupro_perfect_map_is_one(fpr_limit):
    rng = np.random.default_rng(2)
    masks = _blob_masks(rng)
    # Every defective pixel outscores every normal one.
    maps = masks + 0.5 * rng.random(masks.shape)
    assert aupro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(1.0)


@pytest.mark.parametrize("fpr_limit", [0.01, 0.3, 0.99])
def test_aupro_inverted_map_is_zero(fpr_limit):
    rng = np.random.default_rng(3)
    masks = _blob_masks(rng)
    maps = -(masks + 0.5 * rng.random(masks.shape))
    # Regions are reached only after every normal pixel, at FPR 1.
    assert aupro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("fpr_limit", [0.3, 1.0])
def test_aupro_constant_map_is_half_the_limit(fpr_limit):
    # One threshold flags everything: the curve is the diagonal (0,0)-(1,1),
    # so the area up to L is L**2 / 2, normalized L / 2.
    masks = _blob_masks(np.random.default_rng(4))
    assert aupro(masks, np.zeros(masks.shape), fpr_limit=fpr_limit) == pytest.approx(
        fpr_limit / 2
    )


@pytest.mark.parametrize("fpr_limit", [0.05, 0.3])
def test_aupro_random_map_is_half_the_limit(fpr_limit):
    # With scores independent of the masks, each region's overlap at a
    # threshold is about the FPR, so PRO ~ FPR and the normalized area is
    # ~ (fpr_limit**2 / 2) / fpr_limit.
    rng = np.random.default_rng(5)
    masks = _blob_masks(rng, n_images=40, side=48)
    maps = rng.random(masks.shape)
    assert aupro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(fpr_limit / 2, abs=0.02)


def test_aupro_grid_on_integer_scores_is_exact():
    # With integer scores 0..5, the 6 evenly spaced thresholds are the scores.
    rng = np.random.default_rng(6)
    masks = _blob_masks(rng)
    maps = rng.integers(0, 6, masks.shape).astype(float) + 2 * masks
    maps = np.clip(maps, 0, 5)
    exact = pro_curve(masks, maps)
    binned = pro_curve(masks, maps, num_thresholds=6)
    for exact_part, binned_part in zip(exact, binned):
        assert_allclose(binned_part, exact_part)
    # Extra grid points only repeat curve points, leaving the area unchanged.
    assert aupro(masks, maps, num_thresholds=11) == pytest.approx(aupro(masks, maps))


def test_aupro_grid_approximates_exact():
    rng = np.random.default_rng(7)
    masks = _blob_masks(rng)
    maps = rng.random(masks.shape) + masks
    exact = aupro(masks, maps)
    assert aupro(masks, maps, num_thresholds=2000) == pytest.approx(exact, abs=0.01)
    fpr, pro, thresholds = pro_curve(masks, maps, num_thresholds=50)
    assert len(fpr) == len(pro) == len(thresholds) == 51
    assert thresholds[1] == maps.max() and thresholds[-1] == maps.min()


def test_aupro_grid_on_constant_map():
    masks = _blob_masks(np.random.default_rng(8))
    fpr, pro, thresholds = pro_curve(masks, np.ones(masks.shape), num_thresholds=10)
    assert_allclose(fpr, [0, 1])
    assert_allclose(pro, [0, 1])
    assert_allclose(thresholds, [np.inf, 1])


@SETTINGS
@given(masks_and_maps(), st.sampled_from([0.05, 0.3, 0.5, 1.0]))
def test_aupro_matches_brute_force(data, fpr_limit):
    masks, maps = data
    expected = brute_force_aupro(masks, maps, fpr_limit)
    assert aupro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(expected, abs=1e-12)


@SETTINGS
@given(masks_and_maps())
def test_pro_curve_matches_brute_force(data):
    masks, maps = data
    fpr, pro, thresholds = pro_curve(masks, maps)
    expected_fpr, expected_pro = np.transpose(brute_force_pro_points(masks, maps))
    assert_allclose(fpr, expected_fpr)
    assert_allclose(pro, expected_pro, atol=1e-12)
    assert thresholds[0] == np.inf
    assert np.all(np.diff(thresholds) < 0)


@SETTINGS
@given(masks_and_maps(n_levels=50), st.floats(0.01, 1.0))
def test_aupro_is_in_unit_interval(data, fpr_limit):
    masks, maps = data
    assert 0.0 <= aupro(masks, maps, fpr_limit=fpr_limit) <= 1.0


@SETTINGS
@given(masks_and_maps())
def test_metrics_invariant_to_increasing_transforms(data):
    # Scores are small integers, so these transforms keep them distinct.
    masks, maps = data
    for transform in (np.exp, lambda s: 3 * s - 7, lambda s: s**3 + s, np.arctan):
        transformed = transform(maps)
        assert aupro(masks, transformed) == pytest.approx(aupro(masks, maps))
        assert pixel_auroc(masks, transformed) == pytest.approx(pixel_auroc(masks, maps))
        assert f1_max(masks, transformed) == pytest.approx(f1_max(masks, maps))


@SETTINGS
@given(masks_and_maps(), st.randoms(use_true_random=False))
def test_aupro_invariant_to_image_order(data, random):
    masks, maps = data
    order = list(range(len(masks)))
    random.shuffle(order)
    assert aupro(masks[order], maps[order]) == pytest.approx(aupro(masks, maps))


def test_aupro_ignores_mask_dtype():
    masks = _blob_masks(np.random.default_rng(9))
    maps = np.random.default_rng(10).random(masks.shape)
    expected = aupro(masks, maps)
    for dtype in (np.uint8, np.int32, np.float64):
        assert aupro(masks.astype(dtype), maps) == expected


@pytest.mark.parametrize("fpr_limit", [0, -0.1, 1.5, "0.3"])
def test_aupro_rejects_bad_fpr_limit(fpr_limit):
    with pytest.raises((ValueError, TypeError), match="fpr_limit"):
        aupro(M_3D, A_3D, fpr_limit=fpr_limit)


@pytest.mark.parametrize("num_thresholds", [1, 0, 2.5])
def test_aupro_rejects_bad_num_thresholds(num_thresholds):
    with pytest.raises((ValueError, TypeError), match="num_thresholds"):
        aupro(M_3D, A_3D, num_thresholds=num_thresholds)


def test_aupro_error_messages():
    with pytest.raises(ValueError, match="no anomalous region"):
        aupro(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="no normal pixel"):
        aupro(np.ones((2, 3, 3)), np.zeros((2, 3, 3)))
