import numpy as np
import pytest
from PIL import Image

from skpatch._images import check_images


def _collect(images, batch_size=2):
    return np.concatenate([b.numpy() for b in check_images(images).batches(batch_size)])


def test_uint8_and_float_agree(rng):
    X = rng.integers(0, 256, (3, 8, 10, 3), dtype=np.uint8)
    out = _collect(X)
    assert out.shape == (3, 3, 8, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out, _collect(X.astype(np.float32) / 255), atol=1e-6)


def test_grayscale_replicated_and_alpha_dropped(rng):
    gray = rng.integers(0, 256, (2, 6, 6), dtype=np.uint8)
    out = _collect(gray)
    assert out.shape == (2, 3, 6, 6)
    np.testing.assert_array_equal(out[:, 0], out[:, 2])
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
    assert check_images(paths).image_size == (8, 8)


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
        ("image.png", TypeError, "single path"),
        ({"a": 1}, TypeError, "Expected images"),
        ([np.zeros((8, 8, 3), np.uint8), 3], TypeError, "Image 1"),
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
    with pytest.raises(ValueError, match="missing.png"):
        check_images([str(tmp_path / "missing.png")])


def test_torch_tensor_rejected_with_hint():
    import torch

    with pytest.raises(TypeError, match="permute"):
        check_images(torch.zeros(2, 3, 8, 8))
