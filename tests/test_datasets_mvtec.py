"""Tests for load_mvtec, on tiny MVTec AD-layout folders built in tmp_path."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skpatch._images import check_images
from skpatch.datasets import load_mvtec, make_noisy_split

from ._png16 import write_png16

# Non-square, so that a height/width swap would show.
H, W = 6, 8

BOTTLE = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mvtec_ad_bottle"
)


def _rgb(seed, size=(H, W)):
    return np.random.RandomState(seed).randint(0, 256, (*size, 3), dtype=np.uint8)


def _mask(seed, size=(H, W)):
    mask = np.zeros(size, dtype=bool)
    mask[seed % size[0], :] = True
    return mask


def _save(array, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def layout(tmp_path):
    """A data set with 3 train images, 2 good and 3 defective test images."""
    root = tmp_path / "toy"
    images, masks = {}, {}
    for i in range(3):
        images[f"train/good/{i:03d}.png"] = _rgb(i)
    for i in range(2):
        images[f"test/good/{i:03d}.png"] = _rgb(10 + i)
    defects = [("crack/000.png", 20), ("crack/001.png", 21), ("scratch/000.png", 30)]
    for name, seed in defects:
        images[f"test/{name}"] = _rgb(seed)
        masks[name] = _mask(seed)
        stem = name[:-4]
        mask_path = root / f"ground_truth/{stem}_mask.png"
        _save(masks[name].astype(np.uint8) * 255, mask_path)
    for name, array in images.items():
        _save(array, root / name)
    return root, images, masks


def test_lazy(layout):
    root, images, masks = layout
    data = load_mvtec(root)
    assert set(data) == {
        "train_images", "train_labels", "test_images", "test_labels",
        "test_defect_types", "test_masks", "root", "category", "DESCR",
    }
    train = [str(root / f"train/good/{i:03d}.png") for i in range(3)]
    assert data.train_images == train
    # Defect types sorted by name, files sorted within each.
    expected = ["crack/000", "crack/001", "good/000", "good/001", "scratch/000"]
    assert data.test_images == [str(root / f"test/{name}.png") for name in expected]
    assert all(isinstance(path, str) for path in data.test_images)
    np.testing.assert_array_equal(data.test_labels, [1, 1, 0, 0, 1])
    assert data.test_labels.dtype.kind == "i"
    types = ["crack", "crack", "good", "good", "scratch"]
    assert data.test_defect_types.tolist() == types
    np.testing.assert_array_equal(data.train_labels, [0, 0, 0])
    assert data.test_masks.shape == (5, H, W)
    assert data.test_masks.dtype == bool
    assert not data.test_masks[2:4].any()
    np.testing.assert_array_equal(data.test_masks[0], masks["crack/000.png"])
    np.testing.assert_array_equal(data.test_masks[4], masks["scratch/000.png"])
    assert data.root == str(root)
    assert data.category == "toy"
    assert "crack: 2" in data.DESCR


def test_eager(layout):
    root, images, masks = layout
    data = load_mvtec(root, lazy=False)
    assert data.train_images.shape == (3, H, W, 3)
    assert data.train_images.dtype == np.uint8
    np.testing.assert_array_equal(data.train_images[1], images["train/good/001.png"])
    assert data.test_images.shape == (5, H, W, 3)
    np.testing.assert_array_equal(data.test_images[4], images["test/scratch/000.png"])
    np.testing.assert_array_equal(data.test_masks[1], masks["crack/001.png"])


def test_category(layout):
    root, _, _ = layout
    data = load_mvtec(str(root.parent), category="toy")
    assert data.category == "toy"
    assert len(data.train_images) == 3
    with pytest.raises(ValueError, match="does not exist"):
        load_mvtec(root.parent, category="bottle")


def test_without_masks(layout):
    root, _, _ = layout
    assert load_mvtec(root, load_masks=False).test_masks is None
    for path in sorted((root / "ground_truth").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "ground_truth").rmdir()
    assert load_mvtec(root).test_masks is None


def test_missing_mask(layout):
    root, _, _ = layout
    (root / "ground_truth/crack/001_mask.png").unlink()
    with pytest.raises(ValueError, match=r"crack.001\.png"):
        load_mvtec(root)
    # Without masks, the same folder loads.
    assert load_mvtec(root, load_masks=False).test_masks is None


def test_btad_style_mask_names(layout):
    root, _, masks = layout
    folder = root / "ground_truth/scratch"
    (folder / "000_mask.png").rename(folder / "000.png")
    data = load_mvtec(root)
    np.testing.assert_array_equal(data.test_masks[4], masks["scratch/000.png"])


def test_mask_binarised_and_colour_masks(layout):
    root, _, _ = layout
    mask = np.zeros((H, W, 3), dtype=np.uint8)
    mask[0, 0] = (1, 0, 0)  # any non-zero colour channel counts
    mask[1, 1] = (0, 0, 7)
    _save(mask, root / "ground_truth/scratch/000_mask.png")
    data = load_mvtec(root)
    assert data.test_masks[4].sum() == 2
    assert data.test_masks[4][0, 0] and data.test_masks[4][1, 1]


def test_mask_size_mismatch(layout):
    root, _, _ = layout
    mask_path = root / "ground_truth/crack/000_mask.png"
    _save(np.zeros((H + 1, W), dtype=np.uint8), mask_path)
    with pytest.raises(ValueError, match="7x8.*6x8"):
        load_mvtec(root)


def test_grayscale_and_rgba_become_rgb(layout):
    root, _, _ = layout
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    _save(grey, root / "train/good/003.png")
    rgba = np.dstack([_rgb(5), np.full((H, W), 100, dtype=np.uint8)])
    _save(rgba, root / "train/good/004.png")
    data = load_mvtec(root, lazy=False)
    assert data.train_images.dtype == np.uint8
    np.testing.assert_array_equal(data.train_images[3], np.dstack([grey] * 3))
    np.testing.assert_array_equal(data.train_images[4], rgba[..., :3])


def test_16_bit_images_keep_their_precision(layout):
    """16-bit files were rescaled to uint8 here and clipped by the estimators."""
    root, images, _ = layout
    grey16 = np.arange(H * W, dtype=np.uint16).reshape(H, W) * 1000 + 7
    Image.fromarray(grey16).save(root / "train/good/005.png")  # Pillow's I;16
    colour16 = np.random.RandomState(3).randint(0, 65536, (H, W, 3)).astype(np.uint16)
    write_png16(root / "train/good/006.png", colour16)
    data = load_mvtec(root, lazy=False)
    # One 16-bit file makes the array uint16; 8-bit images are x * 257.
    assert data.train_images.dtype == np.uint16
    np.testing.assert_array_equal(data.train_images[0], images["train/good/000.png"].astype(np.uint16) * 257)
    np.testing.assert_array_equal(data.train_images[3], np.dstack([grey16] * 3))
    np.testing.assert_array_equal(data.train_images[4], colour16)
    # The estimators see the same values from the paths (lazy) and the array.
    lazy = load_mvtec(root)
    by_path = np.concatenate([b.numpy() for b in check_images(lazy.train_images).batches(5)])
    by_array = np.concatenate([b.numpy() for b in check_images(data.train_images).batches(5)])
    np.testing.assert_array_equal(by_path, by_array)


def test_extensions_and_other_files(layout):
    root, _, _ = layout
    Image.fromarray(_rgb(7)).save(root / "train/good/010.JPG", format="JPEG")
    Image.fromarray(_rgb(8)).save(root / "train/good/011.bmp")
    Image.fromarray(_rgb(9)).save(root / "train/good/012.tiff")
    (root / "train/good/notes.txt").write_text("not an image")
    (root / "train/good/.hidden.png").write_bytes(b"")
    (root / "train/good/subfolder").mkdir()
    data = load_mvtec(root)
    names = [Path(p).name for p in data.train_images]
    assert names == ["000.png", "001.png", "002.png", "010.JPG", "011.bmp", "012.tiff"]


def test_corrupt_image(layout):
    root, _, _ = layout
    (root / "test/good/001.png").write_bytes(b"definitely not a png")
    # Lazy loading lists the file without opening it...
    lazy = load_mvtec(root, load_masks=False)
    assert str(root / "test/good/001.png") in lazy.test_images
    # ...eager loading names it.
    with pytest.raises(ValueError, match=r"good.001\.png"):
        load_mvtec(root, lazy=False)


def test_truncated_image(layout):
    root, _, _ = layout
    path = root / "train/good/001.png"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ValueError, match=r"001\.png"):
        load_mvtec(root, lazy=False)


def test_size_mismatch(layout):
    root, _, masks = layout
    _save(_rgb(3, size=(H, W + 2)), root / "test/good/000.png")
    with pytest.raises(ValueError) as info:
        load_mvtec(root, lazy=False)
    assert "6x8" in str(info.value) and "6x10" in str(info.value)
    assert "000.png" in str(info.value)
    # Lazy loading accepts mixed sizes; masks then come as a list.
    data = load_mvtec(root)
    assert isinstance(data.test_masks, list)
    assert data.test_masks[2].shape == (H, W + 2)
    assert not data.test_masks[2].any()
    np.testing.assert_array_equal(data.test_masks[0], masks["crack/000.png"])


@pytest.mark.parametrize(
    "remove, match",
    [
        ("train", "train/good"),
        ("train/good", "train/good"),
        ("test", "'test'"),
    ],
)
def test_missing_folders(layout, remove, match):
    root, _, _ = layout
    shutil.rmtree(root / remove)
    with pytest.raises(ValueError, match=match):
        load_mvtec(root)


@pytest.mark.parametrize("lazy", [True, False])
def test_load_train_false_needs_only_test(layout, lazy):
    root, images, _ = layout
    full = load_mvtec(root, lazy=lazy)
    shutil.rmtree(root / "train")
    # The default still refuses a folder without train/good.
    with pytest.raises(ValueError, match="train/good"):
        load_mvtec(root, lazy=lazy)
    data = load_mvtec(root, lazy=lazy, load_train=False)
    assert data.train_images is None and data.train_labels is None
    np.testing.assert_array_equal(np.asarray(data.test_images), np.asarray(full.test_images))
    np.testing.assert_array_equal(data.test_labels, full.test_labels)
    np.testing.assert_array_equal(data.test_masks, full.test_masks)
    assert "train: not loaded." in data.DESCR
    shutil.rmtree(root / "test")
    with pytest.raises(ValueError, match="'test' is missing") as info:
        load_mvtec(root, load_train=False)
    assert "train/good" not in str(info.value)


def test_path_does_not_exist(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_mvtec(tmp_path / "nowhere")


def test_empty_folders(tmp_path):
    root = tmp_path / "empty"
    (root / "train/good").mkdir(parents=True)
    (root / "test/good").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images found in .*train"):
        load_mvtec(root)
    _save(_rgb(0), root / "train/good/000.png")
    with pytest.raises(ValueError, match="no images found in .*test"):
        load_mvtec(root)
    (root / "test/good").rmdir()
    with pytest.raises(ValueError, match="no images found in .*test"):
        load_mvtec(root)


def test_invalid_arguments(layout):
    root, _, _ = layout
    with pytest.raises(ValueError, match="lazy"):
        load_mvtec(root, lazy="yes")
    with pytest.raises(ValueError, match="path"):
        load_mvtec(3)


@pytest.mark.parametrize("lazy", [True, False])
def test_noisy_split_on_loaded_folder(layout, lazy):
    root, _, _ = layout
    data = load_mvtec(root, lazy=lazy)
    split = make_noisy_split(data, 0.5, random_state=0)
    assert len(split.train_images) == 5
    assert type(split.train_images) is type(data.train_images)
    assert split.test_masks.shape == (3, H, W)
    assert split.test_labels.sum() == 1


@pytest.mark.data
@pytest.mark.skipif(not BOTTLE.is_dir(), reason=f"{BOTTLE} not available")
def test_real_bottle_data():
    data = load_mvtec(BOTTLE)
    assert len(data.train_images) == 209
    assert len(data.test_images) == 83
    types, counts = np.unique(data.test_defect_types, return_counts=True)
    assert dict(zip(types, counts)) == {
        "good": 20, "broken_large": 20, "broken_small": 22, "contamination": 21,
    }
    assert data.test_labels.sum() == 63
    assert data.test_masks is None  # this copy has no ground truth
    first = load_mvtec(BOTTLE, lazy=False).test_images
    assert first.shape == (83, 256, 256, 3)
    split = make_noisy_split(data, 0.2, random_state=0)
    assert split.train_labels.sum() == round(0.2 * 209)
