import re
import warnings

import numpy as np
import pytest
from PIL import Image

from skpatch._images import MIN_SIDE, as_dtype, check_images, common_dtype, read_image

from ._png16 import write_png16


def _collect(images, batch_size=2):
    return np.concatenate([b.numpy() for b in check_images(images).batches(batch_size)])


def test_uint8_and_float_agree(rng):
    X = rng.integers(0, 256, (3, 8, 10, 3), dtype=np.uint8)
    out = _collect(X)
    assert out.shape == (3, 3, 8, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out, _collect(X.astype(np.float32) / 255), atol=1e-6)


def test_grayscale_replicated_and_alpha_dropped(rng):
    gray = rng.integers(0, 256, (2, 6, 6, 1), dtype=np.uint8)
    out = _collect(gray)
    assert out.shape == (2, 3, 6, 6)
    np.testing.assert_array_equal(out[:, 0], out[:, 2])
    np.testing.assert_array_equal(out[:, 1], gray[..., 0] / np.float32(255))
    # A list of 2-D arrays is a list of grayscale images.
    np.testing.assert_array_equal(_collect(list(gray[..., 0])), out)
    rgba = rng.integers(0, 256, (2, 6, 6, 4), dtype=np.uint8)
    np.testing.assert_array_equal(_collect(rgba), _collect(rgba[..., :3]))


def test_list_of_arrays_pil_and_paths_are_equivalent(tmp_path, rng):
    X = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    paths = []
    for i, image in enumerate(X):
        path = tmp_path / f"{i}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    expected = _collect(X)
    np.testing.assert_array_equal(_collect(list(X)), expected)
    np.testing.assert_array_equal(_collect([Image.fromarray(x) for x in X]), expected)
    np.testing.assert_array_equal(_collect(paths), expected)
    np.testing.assert_array_equal(_collect(np.array(paths)), expected)  # 1-D str array
    assert check_images(paths).image_size == (8, 8)


# --- Fix 1: ambiguous shapes ---------------------------------------------------


@pytest.mark.parametrize(
    "shape, hints",
    [
        ((64, 64, 3), [r"X\[None\]", r"X\[\.\.\., None\]"]),
        ((64, 48, 4), [r"X\[None\]"]),
        ((3, 64, 64), [r"X\.transpose\(1, 2, 0\)\[None\]", r"X\[\.\.\., None\]"]),
        ((10, 64, 64), [r"stack of 10 grayscale images.*X\[\.\.\., None\]"]),
        ((1, 64, 64), [r"X\[\.\.\., None\]"]),
    ],
)
def test_bare_3d_array_is_ambiguous_and_names_the_intent(shape, hints):
    """A (64, 64, 3) image used to be read as 64 grayscale images of width 3."""
    with pytest.raises(ValueError, match="ambiguous") as info:
        check_images(np.zeros(shape, np.uint8))
    for hint in hints:
        assert re.search(hint, str(info.value)), hint
    assert "(n, H, W, C)" in str(info.value)


def test_following_the_hint_gives_the_intended_images(rng):
    image = rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)
    images = check_images(image[None])
    assert len(images) == 1 and images.image_size == (16, 12)
    stack = rng.integers(0, 256, (7, 16, 12), dtype=np.uint8)
    images = check_images(stack[..., None])
    assert len(images) == 7 and images.image_size == (16, 12)
    chw = np.ascontiguousarray(image.transpose(2, 0, 1))
    np.testing.assert_array_equal(_collect(chw.transpose(1, 2, 0)[None]), _collect(image[None]))


def test_channels_first_stack_and_list_item_are_named():
    with pytest.raises(ValueError, match=r"channels-first: pass X\.transpose\(0, 2, 3, 1\)"):
        check_images(np.zeros((2, 3, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"image 0 .*channels-first: pass image\.transpose\(1, 2, 0\)"):
        check_images([np.zeros((3, 32, 32), np.uint8)])


@pytest.mark.parametrize(
    "images",
    [
        list(np.zeros((32, 32, 3), np.uint8)),  # rows of one image, each (32, 3)
        np.zeros((2, 3, 32, 4), np.uint8),  # channels-first with a 4-px width
        [np.zeros((4, 32, 3), np.uint8)],  # a (C, H, W) item whose W looks like channels
        np.zeros((2, 1, 1, 3), np.uint8),
    ],
)
def test_a_misplaced_channel_axis_cannot_pass_as_tiny_images(images):
    with pytest.raises(ValueError, match="misplaced channel axis"):
        check_images(images)


def test_smallest_accepted_image():
    assert check_images(np.zeros((1, MIN_SIDE, MIN_SIDE, 3), np.uint8)).image_size == (MIN_SIDE, MIN_SIDE)
    with pytest.raises(ValueError, match=f"at least {MIN_SIDE}x{MIN_SIDE}"):
        check_images(np.zeros((1, MIN_SIDE - 1, 64, 3), np.uint8))


# --- Fix 2: 16-bit images ---------------------------------------------------------


def _ramp16(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)


def test_uint16_arrays_are_read_as_16_bit(rng):
    X = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    # x * 257 is the same intensity in 16 bits: identical float images.
    np.testing.assert_array_equal(_collect(X.astype(np.uint16) * 257), _collect(X))
    X16 = _ramp16((2, 8, 8, 3))
    np.testing.assert_array_equal(_collect(X16), (X16 / np.float32(65535)).astype(np.float32).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(_collect(X16.astype(">u2")), _collect(X16))  # byte order


def test_16_bit_grey_png_by_path_equals_the_array(tmp_path):
    """Pillow's convert('RGB') clipped 99.6% of such pixels to 255."""
    grey = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(grey).save(path)  # Pillow writes mode I;16
    with Image.open(path) as image:
        assert image.mode == "I;16"
    array = read_image(path)
    assert array.dtype == np.uint16 and array.shape == (64, 64, 3)
    np.testing.assert_array_equal(array[..., 0], grey)
    by_path = _collect([str(path)])
    np.testing.assert_array_equal(by_path, _collect(grey[None, ..., None]))
    assert np.mean(by_path == 1.0) < 0.01  # not clipped
    # A 16-bit PIL image object is read the same way.
    with Image.open(path) as image:
        np.testing.assert_array_equal(_collect([image]), by_path)


@pytest.mark.parametrize("channels", [3, 4])
def test_16_bit_colour_png_by_path_equals_the_array(tmp_path, channels):
    """Pillow decodes 16-bit colour to 8 bits; read_image keeps all 16."""
    pixels = _ramp16((9, 11, channels), seed=channels)
    path = tmp_path / "colour16.png"
    write_png16(path, pixels)
    with Image.open(path) as image:
        assert np.asarray(image).dtype == np.uint8  # what Pillow alone gives
    array = read_image(path)
    assert array.dtype == np.uint16
    np.testing.assert_array_equal(array, pixels[..., :3])
    np.testing.assert_array_equal(_collect([str(path)]), _collect(pixels[None]))


def test_16_bit_colour_tiff_by_path_equals_the_array(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    pixels = _ramp16((9, 11, 3), seed=5)
    for name, kwargs in {"raw": {}, "big_endian": {"byteorder": ">"}, "zlib": {"compression": "zlib"}}.items():
        path = tmp_path / f"{name}.tif"
        tifffile.imwrite(path, pixels, photometric="rgb", **kwargs)
        np.testing.assert_array_equal(read_image(path), pixels, err_msg=name)


def test_16_bit_grey_with_alpha_warns_about_precision(tmp_path):
    pixels = _ramp16((6, 7, 2))
    path = tmp_path / "la16.png"
    write_png16(path, pixels)
    with pytest.warns(UserWarning, match="8-bit precision"):
        array = read_image(path)
    np.testing.assert_array_equal(array[..., 0], pixels[..., 0] >> 8)


def test_uint16_array_with_8_bit_values_warns():
    with pytest.warns(UserWarning, match=r"X\.astype\(np\.uint8\)"):
        check_images(np.full((1, 8, 8, 3), 200, np.uint16))


def test_32_bit_integer_and_float_files(tmp_path):
    ints = np.arange(64, dtype=np.int32).reshape(8, 8) * 1000
    Image.fromarray(ints).save(tmp_path / "int.tif")  # mode I
    np.testing.assert_array_equal(read_image(tmp_path / "int.tif")[..., 1], ints.astype(np.uint16))
    Image.fromarray(ints * 100).save(tmp_path / "big.tif")
    with pytest.raises(ValueError, match=r"32-bit integers in 0\.\.6300000"):
        read_image(tmp_path / "big.tif")
    floats = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(floats).save(tmp_path / "float.tif")  # mode F
    out = read_image(tmp_path / "float.tif")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[..., 2], floats)
    Image.fromarray(floats * 255).save(tmp_path / "float255.tif")
    with pytest.raises(ValueError, match=r"float255\.tif.*\[0, 1\]"):
        _collect([str(tmp_path / "float255.tif")])


def test_common_dtype_conversions_mean_the_same_intensity(rng):
    X = rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    assert common_dtype([np.uint8, np.uint16]) == np.uint16
    assert common_dtype([np.uint8]) == np.uint8
    assert common_dtype([np.uint16, np.float32]) == np.float32
    for dtype in (np.uint16, np.float32):
        np.testing.assert_array_equal(_collect(as_dtype(X, dtype)), _collect(X))
    with pytest.raises(ValueError, match="precision"):
        as_dtype(X.astype(np.uint16), np.uint8)


# --- PIL modes --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["P", "LA", "PA", "1", "CMYK", "YCbCr", "RGBX", "RGBa", "I;16", "I;16B", "L", "RGBA"])
def test_pil_modes_read_like_their_rgb_conversion(rng, mode):
    if mode.startswith("I;16"):
        pixels = rng.integers(0, 65536, (8, 9), dtype=np.uint16)
        image = Image.frombytes(mode, (9, 8), pixels.astype(">u2" if mode.endswith("B") else "<u2").tobytes())
    else:
        image = Image.fromarray(rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)).convert(mode)
    out = _collect([image])
    assert out.shape == (1, 3, 8, 9)
    if mode.startswith("I;16"):
        np.testing.assert_array_equal(out[0, 0], pixels / np.float32(65535))
    else:
        expected = np.asarray(image.convert("RGB")).astype(np.float32) / 255
        np.testing.assert_array_equal(out[0], expected.transpose(2, 0, 1))


# --- other bad input --------------------------------------------------------------


@pytest.mark.parametrize(
    "X, error, match",
    [
        (np.zeros((0, 8, 8, 3), np.uint8), ValueError, "empty"),
        ([], ValueError, "empty"),
        (np.zeros((4, 8), np.uint8), ValueError, "Tabular"),
        (np.zeros((2, 8, 8, 2), np.uint8), ValueError, "channels"),
        (np.full((2, 8, 8, 3), np.nan, np.float32), ValueError, "NaN"),
        (np.full((2, 8, 8, 3), 2.0, np.float32), ValueError, r"\[0, 1\]"),
        (np.zeros((2, 8, 8, 3), np.int64), TypeError, "dtype"),
        (np.zeros((2, 8, 8, 3), bool), TypeError, "dtype bool"),
        (np.zeros((2, 8, 8, 3), np.complex64), TypeError, "dtype complex64"),
        (np.zeros((2, 8, 8, 3), object), TypeError, "dtype object"),
        (np.zeros((2, 8, 8, 3), np.uint32), TypeError, "dtype uint32"),
        (np.ma.masked_array(np.zeros((2, 8, 8, 3), np.uint8)), TypeError, "filled"),
        ("image.png", TypeError, "single path"),
        (Image.new("RGB", (8, 8)), TypeError, "single PIL image"),
        ({"a": 1}, TypeError, "Expected images"),
        ([np.zeros((8, 8, 3), np.uint8), 3], TypeError, "Image 1"),
        ([[[0] * 8] * 8], TypeError, "np.asarray"),
    ],
)
def test_bad_input_raises_clear_error(X, error, match):
    with pytest.raises(error, match=match):
        check_images(X)


def test_mismatched_sizes_name_the_image():
    images = [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)]
    with pytest.raises(ValueError, match="image 1.*8x9"):
        check_images(images)


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        check_images([str(bad)])
    with pytest.raises(ValueError, match="missing.png.*no such file"):
        check_images([str(tmp_path / "missing.png")])
    with pytest.raises(ValueError, match="is a folder"):
        check_images([str(tmp_path)])


def test_truncated_file_is_named_when_read(tmp_path, rng):
    path = tmp_path / "cut.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    images = check_images([str(path)])  # the header is intact
    with pytest.raises(ValueError, match="cut.png"):
        next(images.batches(1))


def test_read_image_gives_rgb(tmp_path, rng):
    grey = rng.integers(0, 256, (8, 6), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    out = read_image(tmp_path / "grey.png")
    assert out.shape == (8, 6, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.dstack([grey] * 3))


def test_no_warning_for_ordinary_images(rng):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_images(rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
        check_images(_ramp16((2, 8, 8, 3)))


def test_torch_tensor_rejected_with_hint():
    import torch

    with pytest.raises(TypeError, match="permute"):
        check_images(torch.zeros(2, 3, 8, 8))
    with pytest.raises(TypeError, match="permute"):
        check_images([torch.zeros(3, 8, 8)])
