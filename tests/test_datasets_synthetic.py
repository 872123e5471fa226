"""Tests for the synthetic defect generators."""


import numpy as np
import pytest
from scipy.ndimage import binary_dilation
from sklearn.utils import check_random_state

from skpatch.datasets import make_defect_dataset, make_defects
from skpatch.datasets._synthetic import DEFECT_TYPES, _draw_image_types, _generate


@pytest.mark.parametrize("kind", ["texture", "object"])
@pytest.mark.parametrize("image_size", [16, 64])
def test_shapes_and_dtypes(kind, image_size):
    X, y, masks = make_defects(
        12, image_size=image_size, kind=kind, random_state=0
    )
    assert X.shape == (12, image_size, image_size, 3)
    assert X.dtype == np.uint8
    assert y.shape == (12,)
    assert y.dtype.kind == "i"
    assert set(np.unique(y)) <= {0, 1}
    assert masks.shape == (12, image_size, image_size)
    assert masks.dtype == bool


def test_reproducible_with_random_state():
    first = make_defects(10, image_size=32, random_state=3)
    second = make_defects(10, image_size=32, random_state=3)
    other = make_defects(10, image_size=32, random_state=4)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_random_state_instance_is_advanced():
    rng = np.random.RandomState(0)
    X1, _, _ = make_defects(4, image_size=32, random_state=rng)
    X2, _, _ = make_defects(4, image_size=32, random_state=rng)
    assert not np.array_equal(X1, X2)


@pytest.mark.parametrize(
    "n_samples, defect_ratio", [(10, 0.5), (7, 0.3), (5, 0.0), (5, 1.0), (1, 0.9)]
)
def test_exact_number_of_defective_images(n_samples, defect_ratio):
    _, y, masks = make_defects(
        n_samples, image_size=16, defect_ratio=defect_ratio, random_state=0
    )
    assert y.sum() == round(defect_ratio * n_samples)
    # A mask is empty exactly when the image is good.
    np.testing.assert_array_equal(masks.any(axis=(1, 2)), y == 1)


def test_defective_positions_are_shuffled():
    _, y, _ = make_defects(40, image_size=16, random_state=0)
    assert not (np.array_equal(y, np.sort(y)) or np.array_equal(y, np.sort(y)[::-1]))


@pytest.mark.parametrize("kind", ["texture", "object"])
@pytest.mark.parametrize("image_size", [64, 256])
@pytest.mark.parametrize("defect_type", DEFECT_TYPES)
def test_defect_changes_exactly_the_masked_pixels(kind, image_size, defect_type):
    rng = check_random_state(0)
    types = np.array(["good", defect_type, defect_type, defect_type])
    images, clean, masks = _generate(types, image_size, kind, rng)
    np.testing.assert_array_equal(images[0], clean[0])
    assert not masks[0].any()
    diff = np.abs(images.astype(float) - clean.astype(float)).mean(axis=3)
    for i in range(1, len(types)):
        mask = masks[i]
        assert mask.any()
        # Clearly visible: tens of intensity levels on average.
        assert diff[i][mask].mean() > 20
        outside = diff[i][~mask]
        if defect_type == "stain":
            # The soft rim changes a little outside the mask, never as much.
            assert outside.max() <= 0.5 * diff[i][mask].max() + 1
            assert outside.mean() < 0.1 * diff[i][mask].mean()
        else:
            assert not outside.any()


@pytest.mark.parametrize("image_size", [64, 256])
def test_object_defects_stand_out_from_good_images(image_size):
    # Public API only: compare defective images to the typical good image.
    X, y, masks = make_defects(
        24, image_size=image_size, kind="object", defect_ratio=0.5, random_state=1
    )
    typical = np.median(X[y == 0].astype(float), axis=0)
    for image, mask in zip(X[y == 1], masks[y == 1]):
        deviation = np.abs(image.astype(float) - typical).mean(axis=2)
        assert deviation[mask].mean() > 3 * deviation[~mask].mean()


def test_texture_defects_stand_out_from_image_statistics():
    # The masked pixels are atypical of the image's own (stationary) texture.
    X, y, masks = make_defects(
        40, image_size=64, kind="texture", defect_ratio=0.5, random_state=2
    )
    flat_fraction = []
    for image, mask in zip(X[y == 1], masks[y == 1]):
        pixels = image.astype(float)
        mean = pixels[~mask].mean(axis=0)
        std = pixels[~mask].std(axis=0).mean()
        deviation = np.abs(pixels[mask] - mean).mean(axis=1) / std
        flat_fraction.append(deviation.mean() > 1.0)
    # Most defects are far from the texture's mean colour.
    assert np.mean(flat_fraction) > 0.8


@pytest.mark.parametrize("kind", ["texture", "object"])
def test_good_images_look_alike(kind):
    X, y, _ = make_defects(20, image_size=32, kind=kind, defect_ratio=0, random_state=0)
    means = X.reshape(20, -1, 3).mean(axis=1)
    # One shared look: per-image colour means vary by a few levels only.
    assert means.std(axis=0).max() < 6
    assert not np.array_equal(X[0], X[1])


def test_defect_types_are_respected():
    data = make_defects(
        20, image_size=16, defect_types=("hole", "stain"), return_bunch=True,
        random_state=0,
    )
    assert set(data.defect_types[data.labels == 1]) <= {"hole", "stain"}
    assert set(data.defect_types[data.labels == 0]) == {"good"}
    single = make_defects(
        6, image_size=16, defect_types="scratch", return_bunch=True, random_state=0
    )
    assert set(single.defect_types[single.labels == 1]) == {"scratch"}


def test_all_defect_types_drawn():
    data = make_defects(60, image_size=16, defect_ratio=1, return_bunch=True,
                        random_state=0)
    assert set(data.defect_types) == set(DEFECT_TYPES)


def test_return_bunch_matches_tuple():
    X, y, masks = make_defects(8, image_size=32, random_state=5)
    data = make_defects(8, image_size=32, return_bunch=True, random_state=5)
    assert set(data) == {"images", "labels", "masks", "defect_types", "DESCR"}
    np.testing.assert_array_equal(data.images, X)
    np.testing.assert_array_equal(data.labels, y)
    np.testing.assert_array_equal(data.masks, masks)
    np.testing.assert_array_equal(data.defect_types != "good", y == 1)
    assert data.defect_types.dtype.kind == "U"
    assert isinstance(data.DESCR, str)


def test_draw_image_types_counts():
    types = _draw_image_types(9, 0.5, ("hole",), check_random_state(0))
    assert (types == "hole").sum() == round(0.5 * 9)


def test_make_defect_dataset_layout():
    data = make_defect_dataset(
        n_train=12, n_test=10, test_defect_ratio=0.3, image_size=32,
        kind="object", random_state=0,
    )
    assert set(data) == {
        "train_images", "train_labels", "test_images", "test_labels",
        "test_defect_types", "test_masks", "root", "category", "DESCR",
    }
    assert data.train_images.shape == (12, 32, 32, 3)
    assert data.train_images.dtype == np.uint8
    np.testing.assert_array_equal(data.train_labels, np.zeros(12))
    assert data.test_images.shape == (10, 32, 32, 3)
    assert data.test_labels.sum() == 3
    assert data.test_masks.shape == (10, 32, 32)
    defective = data.test_labels == 1
    np.testing.assert_array_equal(data.test_masks.any(axis=(1, 2)), defective)
    np.testing.assert_array_equal(data.test_defect_types != "good", defective)
    assert data.root is None
    assert data.category == "object"


def test_make_defect_dataset_shares_one_look():
    data = make_defect_dataset(n_train=10, n_test=10, test_defect_ratio=0,
                               image_size=32, random_state=0)
    train_mean = data.train_images.mean(axis=(0, 1, 2))
    test_mean = data.test_images.mean(axis=(0, 1, 2))
    assert np.abs(train_mean - test_mean).max() < 5


def test_make_defect_dataset_reproducible():
    a = make_defect_dataset(5, 5, image_size=16, random_state=1)
    b = make_defect_dataset(5, 5, image_size=16, random_state=1)
    for key in ("train_images", "test_images", "test_masks", "test_labels"):
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_samples": 0}, "n_samples"),
        ({"n_samples": 2.5}, "n_samples"),
        ({"image_size": 8}, "image_size"),
        ({"kind": "fabric"}, "kind"),
        ({"defect_ratio": 1.5}, "defect_ratio"),
        ({"defect_ratio": -0.1}, "defect_ratio"),
        ({"defect_types": ("crack",)}, "crack"),
        ({"defect_types": ()}, "at least one"),
        ({"defect_types": 3}, "defect_types"),
        ({"return_bunch": "yes"}, "return_bunch"),
        ({"random_state": "seed"}, "random_state"),
    ],
)
def test_make_defects_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_defects(**{"n_samples": 4, "image_size": 16, **kwargs})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_train": 0}, "n_train"),
        ({"n_test": 0}, "n_test"),
        ({"test_defect_ratio": 2}, "test_defect_ratio"),
        ({"kind": "disc"}, "kind"),
        ({"defect_types": ["dent"]}, "dent"),
    ],
)
def test_make_defect_dataset_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_defect_dataset(**{"n_train": 2, "n_test": 2, "image_size": 16, **kwargs})


# --- Harder settings: new kinds, small / faint / recurring defects, variation ---

HARD_TYPES = ("scratch", "hole", "stain", "missing", "wrong_colour")


@pytest.mark.parametrize("kind", ["grain", "board"])
@pytest.mark.parametrize("image_size", [16, 64])
def test_new_kinds_shapes_and_masks(kind, image_size):
    data = make_defects(
        20, image_size=image_size, kind=kind, defect_types=HARD_TYPES,
        return_bunch=True, random_state=0,
    )
    assert data.images.shape == (20, image_size, image_size, 3)
    assert data.images.dtype == np.uint8
    assert data.masks.dtype == bool
    np.testing.assert_array_equal(data.masks.any(axis=(1, 2)), data.labels == 1)
    assert set(data.defect_types[data.labels == 1]) <= set(HARD_TYPES)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "grain"},
        {"kind": "board", "variation": 1.0},
        {"kind": "object", "defect_area": (0.005, 0.03), "contrast": (0.3, 0.7)},
        {"kind": "texture", "recurrence": 0.7, "variation": 2.0},
    ],
)
def test_harder_settings_reproducible(kwargs):
    first = make_defects(12, image_size=32, defect_types=HARD_TYPES, random_state=3, **kwargs)
    second = make_defects(12, image_size=32, defect_types=HARD_TYPES, random_state=3, **kwargs)
    other = make_defects(12, image_size=32, defect_types=HARD_TYPES, random_state=4, **kwargs)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_explicit_defaults_change_nothing():
    plain = make_defects(10, image_size=32, kind="object", random_state=0)
    explicit = make_defects(
        10, image_size=32, kind="object", defect_area=None, contrast=1.0,
        variation=0.0, recurrence=0.0, random_state=0,
    )
    for a, b in zip(plain, explicit):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["texture", "object", "grain", "board"])
@pytest.mark.parametrize("defect_type", HARD_TYPES)
@pytest.mark.parametrize(
    "settings",
    [{}, {"contrast": 0.4, "variation": 1.0}, {"defect_area": (0.005, 0.03), "recurrence": 0.8}],
)
def test_hard_defects_change_exactly_the_masked_pixels(kind, defect_type, settings):
    types = np.array(["good", defect_type, defect_type, defect_type])
    images, clean, masks = _generate(types, 96, kind, check_random_state(0), **settings)
    np.testing.assert_array_equal(images[0], clean[0])
    diff = np.abs(images.astype(float) - clean.astype(float)).mean(axis=3)
    strength = settings.get("contrast", 1.0)
    for i in range(1, len(types)):
        mask = masks[i]
        assert mask.any()
        # Visible: several intensity levels on average, even when faint.
        assert diff[i][mask].mean() > 8 * strength
        outside = diff[i][~mask]
        if defect_type == "stain":
            # Only the soft rim changes outside the mask: next to it, and less.
            rim = binary_dilation(mask, iterations=3) & ~mask
            assert not diff[i][~mask & ~rim].any()
            assert outside.mean() < 0.1 * diff[i][mask].mean()
        else:
            assert not outside.any()


@pytest.mark.parametrize("kind", ["texture", "object", "grain", "board"])
def test_defect_area_within_range(kind):
    low, high = 0.005, 0.03
    types = ("scratch", "hole", "stain")
    if kind != "board":
        # A board's missing or recoloured part keeps the part's size.
        types += ("missing", "wrong_colour")
    data = make_defects(
        60, image_size=128, kind=kind, defect_ratio=1.0, defect_types=types,
        defect_area=(low, high), return_bunch=True, random_state=0,
    )
    area = data.masks.mean(axis=(1, 2))
    assert area.min() >= low and area.max() <= high
    # The drawn sizes spread over the range rather than sit at one end.
    assert area.max() > 3 * area.min()
    # Without defect_area the same types are larger.
    default = make_defects(
        60, image_size=128, kind=kind, defect_ratio=1.0, defect_types=types, random_state=0,
    )[2]
    assert default.mean(axis=(1, 2)).mean() > area.mean()


def test_board_part_defects_take_the_part_size():
    _, _, masks = make_defects(
        40, image_size=128, kind="board", defect_ratio=1.0,
        defect_types=("missing", "wrong_colour"), random_state=0,
    )
    area = masks.mean(axis=(1, 2))
    # Documented: about 0.4% (a screw) to 2% (a chip) of the image.
    assert area.min() >= 0.003 and area.max() <= 0.022


@pytest.mark.parametrize("kind", ["texture", "grain"])
def test_recurrence_one_repeats_place_and_shape(kind):
    # On a texture nothing moves, so fully recurring defects are identical.
    _, _, masks = make_defects(
        8, image_size=64, kind=kind, defect_ratio=1.0, defect_types="hole",
        recurrence=1.0, random_state=0,
    )
    for mask in masks[1:]:
        np.testing.assert_array_equal(mask, masks[0])


def _mask_spread(masks):
    """Mean distance of the masks' centroids to their average centroid, in pixels."""
    rows, cols = np.indices(masks.shape[1:])
    centroids = np.array([(rows[m].mean(), cols[m].mean()) for m in masks])
    return np.linalg.norm(centroids - centroids.mean(axis=0), axis=1).mean()


@pytest.mark.parametrize("defect_type", ["hole", "scratch", "stain", "wrong_colour"])
def test_recurrence_controls_how_alike_the_defects_are(defect_type):
    spreads = []
    for recurrence in (0.0, 0.6, 0.9):
        _, _, masks = make_defects(
            40, image_size=64, kind="texture", defect_ratio=1.0, defect_types=defect_type,
            recurrence=recurrence, random_state=0,
        )
        spreads.append(_mask_spread(masks))
    assert spreads[0] > spreads[1] > spreads[2]
    assert spreads[2] < 0.3 * spreads[0]


def test_recurring_board_defect_is_the_same_part():
    def overlap(masks):
        # Mean IoU of each mask with the first one.
        inter = (masks & masks[0]).sum(axis=(1, 2))
        union = (masks | masks[0]).sum(axis=(1, 2))
        return (inter / union)[1:].mean()

    kwargs = dict(kind="board", defect_ratio=1.0, defect_types="missing", image_size=96)
    _, _, recurring = make_defects(20, recurrence=1.0, random_state=0, **kwargs)
    _, _, independent = make_defects(20, recurrence=0.0, random_state=0, **kwargs)
    # Boards shift by about a pixel, so the part's mask moves a little.
    assert overlap(recurring) > 0.6
    assert overlap(independent) < 0.4


def test_contrast_scales_the_change_not_the_mask():
    kwargs = dict(kind="grain", defect_ratio=1.0, defect_types=HARD_TYPES, image_size=64)
    images, clean, masks = _generate(np.array(["hole", "scratch", "stain", "wrong_colour"] * 3),
                                     64, "grain", check_random_state(1))
    faint, faint_clean, faint_masks = _generate(
        np.array(["hole", "scratch", "stain", "wrong_colour"] * 3), 64, "grain",
        check_random_state(1), contrast=0.4,
    )
    np.testing.assert_array_equal(masks, faint_masks)
    np.testing.assert_array_equal(clean, faint_clean)
    full = np.abs(images.astype(float) - clean)[masks].mean()
    weak = np.abs(faint.astype(float) - faint_clean)[faint_masks].mean()
    assert 0.3 < weak / full < 0.5
    # A contrast range gives each defect its own strength, within the range.
    X, y, m = make_defects(contrast=(0.3, 0.6), random_state=0, **kwargs)
    assert m.any(axis=(1, 2)).all()


def test_wrong_colour_keeps_brightness():
    types = np.array(["wrong_colour"] * 6)
    for kind in ("texture", "board"):
        images, clean, masks = _generate(types, 96, kind, check_random_state(0))
        for image, good, mask in zip(images.astype(float), clean.astype(float), masks):
            colour_change = np.abs(image[mask] - good[mask]).mean()
            brightness_change = np.abs(image[mask].mean(axis=1) - good[mask].mean(axis=1)).mean()
            assert colour_change > 15
            assert brightness_change < 0.35 * colour_change


@pytest.mark.parametrize("kind", ["texture", "object", "grain", "board"])
def test_variation_makes_good_images_differ(kind):
    def spread(variation):
        X, _, _ = make_defects(
            30, image_size=64, kind=kind, defect_ratio=0, variation=variation, random_state=0
        )
        pixels = X.astype(float)
        # Per-image brightness and per-pixel deviation from the average image.
        return pixels.mean(axis=(1, 2, 3)).std(), np.abs(pixels - pixels.mean(axis=0)).mean()

    still, varied = spread(0.0), spread(1.0)
    assert varied[0] > 1.5 * still[0]
    assert varied[1] > still[1]


def test_grain_images_are_all_different_but_alike():
    X, _, _ = make_defects(20, image_size=64, kind="grain", defect_ratio=0, random_state=0)
    flat = X.reshape(20, -1).astype(float)
    assert len({row.tobytes() for row in X}) == 20
    # One shared look: similar mean colour and grain strength.
    assert X.reshape(20, -1, 3).mean(axis=1).std(axis=0).max() < 6
    assert flat.std(axis=1).std() < 0.2 * flat.std(axis=1).mean()


def test_descr_lists_harder_settings():
    data = make_defects(4, image_size=32, kind="grain", contrast=0.5, recurrence=0.5,
                        return_bunch=True, random_state=0)
    assert "contrast=0.5" in data.DESCR and "recurrence=0.5" in data.DESCR
    plain = make_defects(4, image_size=32, return_bunch=True, random_state=0)
    assert "Harder settings" not in plain.DESCR


def test_make_defect_dataset_passes_harder_settings():
    data = make_defect_dataset(
        n_train=6, n_test=10, image_size=64, kind="board", test_defect_ratio=1.0,
        defect_types="missing", recurrence=1.0, variation=0.5, random_state=0,
    )
    assert data.category == "board"
    assert not data.train_labels.any()
    inter = (data.test_masks & data.test_masks[0]).sum(axis=(1, 2))
    assert (inter > 0).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"defect_area": (0.03, 0.01)}, "defect_area"),
        ({"defect_area": (0.0, 0.01)}, "defect_area"),
        ({"defect_area": (0.01, 0.5)}, "defect_area"),
        ({"defect_area": (0.01,)}, "defect_area"),
        ({"defect_area": 0.01}, "defect_area"),
        ({"contrast": 0}, "contrast"),
        ({"contrast": 1.5}, "contrast"),
        ({"contrast": (0.5, 1.2)}, "contrast"),
        ({"contrast": (0.5, 0.2)}, "contrast"),
        ({"contrast": "low"}, "contrast"),
        ({"variation": -0.1}, "variation"),
        ({"variation": 4}, "variation"),
        ({"recurrence": 1.5}, "recurrence"),
        ({"recurrence": -1}, "recurrence"),
        ({"defect_types": ("wrong_color",)}, "wrong_color"),
    ],
)
def test_harder_settings_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_defects(**{"n_samples": 4, "image_size": 16, **kwargs})
    with pytest.raises(ValueError, match=match):
        make_defect_dataset(**{"n_train": 2, "n_test": 2, "image_size": 16, **kwargs})


def test_board_missing_part_is_missing_in_full_at_any_contrast():
    types = np.array(["missing", "wrong_colour"] * 3)
    full, clean, masks = _generate(types, 64, "board", check_random_state(0))
    faint, _, _ = _generate(types, 64, "board", check_random_state(0), contrast=0.3)
    missing = types == "missing"
    np.testing.assert_array_equal(full[missing], faint[missing])
    # A recoloured part does follow the contrast: a nearby, wrong shade.
    change = np.abs(full[~missing].astype(float) - clean[~missing])[masks[~missing]].mean()
    faint_change = np.abs(faint[~missing].astype(float) - clean[~missing])[masks[~missing]].mean()
    assert faint_change < 0.5 * change
