"""Validation and batched loading of image collections.

Every public estimator accepts the same kinds of image collection:

* an ndarray of shape ``(n, H, W, 3)``, ``(n, H, W, 4)`` or ``(n, H, W)``,
  either ``uint8`` in 0..255 or floating point in [0, 1];
* a list of such single images (``(H, W)``, ``(H, W, 3)``, ``(H, W, 4)``),
  of PIL images, or of file paths (``str`` / ``os.PathLike``).

File paths are opened lazily, one batch at a time, so that a training set of
thousands of images never has to sit in memory. Grayscale images are replicated
to RGB and an alpha channel is dropped; nothing else is coerced. All images of
one collection must share the same size.
"""

import os

import numpy as np
import torch

_PATH_TYPES = (str, os.PathLike)


class ImageCollection:
    """A validated, lazily loaded sequence of RGB images of one size.

    Parameters
    ----------
    images : ndarray or list
        Any of the accepted image collection types (see module docstring).

    Attributes
    ----------
    image_size : tuple of int
        ``(H, W)`` shared by every image.
    """

    def __init__(self, images):
        self._items, self._array = _split_collection(images)
        self.image_size = self._check_sizes()

    def __len__(self):
        return len(self._array) if self._array is not None else len(self._items)

    def _check_sizes(self):
        if self._array is not None:
            return tuple(self._array.shape[1:3])
        sizes = [_item_size(item, i) for i, item in enumerate(self._items)]
        first = sizes[0]
        for i, size in enumerate(sizes):
            if size != first:
                msg = (
                    "All images must have the same size; image 0 is "
                    f"{first[0]}x{first[1]} (HxW) but image {i} "
                    f"({_describe(self._items[i])}) is {size[0]}x{size[1]}. "
                    "Resize them beforehand."
                )
                raise ValueError(msg)
        return first

    @property
    def is_lazy(self):
        """True when images are read from files (or PIL images) one batch at a time."""
        return self._array is None

    def batches(self, batch_size):
        """Yield float32 tensors of shape ``(b, 3, H, W)`` with values in [0, 1]."""
        for start in range(0, len(self), batch_size):
            yield self.batch(start, min(start + batch_size, len(self)))

    def batch(self, start, stop):
        """Images ``start:stop`` as a float32 tensor ``(b, 3, H, W)`` in [0, 1]."""
        if self._array is not None:
            batch = _to_float_rgb(self._array[start:stop], "X")
        else:
            batch = np.stack(
                [
                    _to_float_rgb(_load_item(self._items[i], i)[None], f"image {i}")[0]
                    for i in range(start, stop)
                ]
            )
        return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))


def check_images(images):
    """Validate an image collection and return an :class:`ImageCollection`.

    Raises
    ------
    TypeError
        If ``images`` is not an array, a list of arrays, PIL images or paths.
    ValueError
        If the collection is empty, has a wrong shape, an unsupported dtype,
        NaN or out-of-range values, unreadable files or mismatched sizes.
    """
    if isinstance(images, ImageCollection):
        return images
    return ImageCollection(images)


def _split_collection(images):
    """Return ``(items, array)``; exactly one of them is not None."""
    if isinstance(images, _PATH_TYPES):
        msg = (
            "Expected a collection of images, got a single path "
            f"{os.fspath(images)!r}; wrap it in a list."
        )
        raise TypeError(msg)
    if isinstance(images, np.ndarray):
        return None, _check_array(images, "X", batch=True)
    if torch.is_tensor(images):
        msg = (
            "Torch tensors are not accepted as images; pass a numpy array of "
            "shape (n, H, W, 3) (channels last), e.g. tensor.permute(0, 2, 3, 1).numpy()."
        )
        raise TypeError(msg)
    if not isinstance(images, (list, tuple)):
        msg = (
            "Expected images as an ndarray of shape (n, H, W[, C]) or a list of "
            f"arrays, PIL images or file paths; got {type(images).__name__}."
        )
        raise TypeError(msg)
    if len(images) == 0:
        raise ValueError("Found an empty image collection; at least one image is required.")
    items = list(images)
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray):
            _check_array(item, f"image {i}", batch=False)
        elif not (isinstance(item, _PATH_TYPES) or _is_pil(item)):
            msg = (
                f"Image {i} has unsupported type {type(item).__name__}; expected an "
                "ndarray, a PIL image or a file path."
            )
            raise TypeError(msg)
    return items, None


def _check_array(array, name, *, batch):
    """Check shape, dtype and value range of one image (batch=False) or a stack."""
    ndim_ok = (3, 4) if batch else (2, 3)
    if array.ndim not in ndim_ok:
        expected = "(n, H, W) or (n, H, W, C)" if batch else "(H, W) or (H, W, C)"
        msg = f"{name} must have shape {expected}; got an array of shape {array.shape}."
        if batch and array.ndim == 2:
            msg += " Tabular data is not an image collection."
        raise ValueError(msg)
    if batch and array.shape[0] == 0:
        raise ValueError(f"{name} is empty: found 0 images; at least one is required.")
    if array.ndim == ndim_ok[1] and array.shape[-1] not in (1, 3, 4):
        msg = (
            f"{name} must have 1, 3 or 4 channels in the last axis (channels last); "
            f"got shape {array.shape}."
        )
        raise ValueError(msg)
    spatial = array.shape[1:3] if batch else array.shape[:2]
    if min(spatial) < 1:
        raise ValueError(f"{name} has an empty spatial size {spatial}.")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind != "f":
        msg = (
            f"{name} has dtype {array.dtype}; images must be uint8 (0..255) or "
            "floating point in [0, 1]. Convert explicitly, e.g. "
            "(X / X.max()).astype(np.float32) if that is what your data means."
        )
        raise TypeError(msg)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        msg = (
            f"{name} is floating point with values in [{low:.4g}, {high:.4g}]; "
            "float images must lie in [0, 1] (uint8 images in 0..255)."
        )
        raise ValueError(msg)
    return array


def _is_pil(item):
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(item, Image.Image)


def _describe(item):
    return os.fspath(item) if isinstance(item, _PATH_TYPES) else type(item).__name__


def _item_size(item, index):
    if isinstance(item, np.ndarray):
        return tuple(item.shape[:2])
    if isinstance(item, _PATH_TYPES):
        from PIL import Image

        try:
            with Image.open(item) as image:
                width, height = image.size
        except (OSError, ValueError) as exc:
            msg = f"Cannot read image {index} from {os.fspath(item)!r}: {exc}"
            raise ValueError(msg) from exc
        return (height, width)
    width, height = item.size
    return (height, width)


def _load_item(item, index):
    """Return one image as an ndarray (H, W[, C])."""
    if isinstance(item, np.ndarray):
        return item
    if isinstance(item, _PATH_TYPES):
        from PIL import Image

        try:
            with Image.open(item) as image:
                array = _pil_to_array(image)
        except (OSError, ValueError) as exc:
            msg = f"Cannot read image {index} from {os.fspath(item)!r}: {exc}"
            raise ValueError(msg) from exc
        return array
    return _pil_to_array(item)


def _pil_to_array(image):
    # Palette, 16-bit and other modes are converted by PIL to 8-bit RGB/L.
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    return np.asarray(image)


def _to_float_rgb(batch, name):
    """Convert a stack (b, H, W[, C]) to float32 RGB (b, H, W, 3) in [0, 1]."""
    if batch.dtype == np.uint8:
        batch = batch.astype(np.float32) / np.float32(255.0)
    else:
        batch = batch.astype(np.float32, copy=False)
    if batch.ndim == 3:
        batch = batch[..., None]
    channels = batch.shape[-1]
    if channels == 1:
        batch = np.repeat(batch, 3, axis=-1)
    elif channels == 4:
        batch = batch[..., :3]
    elif channels != 3:
        raise ValueError(f"{name} must have 1, 3 or 4 channels; got {channels}.")
    return batch
