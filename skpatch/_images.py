"""Validation, reading and batched loading of image collections.

Every public estimator accepts the same kinds of image collection:

* an ndarray of shape ``(n_images, H, W, C)``: the channel axis is always
  present and always last, with ``C`` = 1 (grayscale), 3 (RGB) or 4 (RGBA);
* a list (or tuple, or 1-D object or string array) of single images, each an
  ndarray of shape ``(H, W)`` (grayscale) or ``(H, W, C)`` (channels last),
  a PIL image or a file path (``str`` / ``os.PathLike``).

**Why a bare 3-D array is refused.** ``(a, b, c)`` can be one colour image
``(H, W, C)``, one channels-first image ``(C, H, W)`` or a stack of grayscale
images ``(n, H, W)``; guessing from the sizes would make the accepted layout
depend on how many images a batch happens to hold (a batch of 3 grayscale
images looks like one channels-first image). So the layout is stated by the
shape: ``X[None]`` for one colour image, ``X[..., None]`` for a stack of
grayscale images; the error names both. A list of 2-D arrays stays a list of
grayscale images (a list can only hold single images).

**Smallest image.** Images must be at least ``MIN_SIDE`` = 5 pixels high and
wide. A side of 1, 3 or 4 pixels is what a misplaced channel axis looks like:
with channels last and this minimum, a channels-first array (``(n, C, H, W)``
or a ``(C, H, W)`` list item) can never pass as a valid layout; nor can
``list(image)`` (rows of width 3). Anomaly detection on smaller images makes
no sense anyway; the CNN sees them resized to ``image_size``.

**Values.** ``uint8`` images are read as 0..255, ``uint16`` images as
0..65535 (industrial cameras produce them), floating point images (float16,
float32, float64) must lie in [0, 1]. All become float32 in [0, 1] by
dividing by 255, 65535 or 1; nothing is clipped or rescaled by its own
range. 12-bit data stored in uint16 is therefore dark: scale it yourself,
e.g. ``X * 16`` or ``(X / 4095).astype(np.float32)``. Other dtypes (bool,
signed or wider integers, complex, object) are refused with a hint, as are
NaN, infinite and out-of-range values and masked arrays.

**Files** are read by :func:`read_image`, which keeps the precision the file
stores: 8-bit files give uint8, 16-bit grayscale and 16-bit colour PNG or
TIFF files give uint16, 32-bit float files float32 (which must lie in [0,
1]). So a 16-bit file and the uint16 array it holds give identical features.
Palette, CMYK, YCbCr, bilevel and other 8-bit modes are converted to RGB by
Pillow; a multi-frame file (GIF, multi-page TIFF) gives its first frame.
File paths are opened lazily, one batch at a time, so that a training set
of thousands of images never has to sit in memory; their sizes are read
from the headers when the collection is checked.

Grayscale images are replicated to RGB and an alpha channel is dropped. All
images of one collection must share the same size.
"""

import os
import sys
import warnings

import numpy as np
import torch
from PIL import Image

_PATH_TYPES = (str, os.PathLike)

MIN_SIDE = 5

# Full-scale value of each accepted integer dtype.
_SCALES = {"u1": 255.0, "u2": 65535.0}

# What Pillow raises on a file that is missing, not an image, truncated,
# too large (DecompressionBombError) or in an unsupported mode.
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


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

    # Index of the first image in the collection the user passed (a subset's
    # errors name images by that index). A class attribute: not part of the
    # instance state that cache keys hash.
    _offset = 0

    def __init__(self, images):
        self._items, self._array = _split_collection(images)
        self.image_size = self._check_sizes()

    def __len__(self):
        return len(self._array) if self._array is not None else len(self._items)

    def _check_sizes(self):
        if self._array is not None:
            size = tuple(self._array.shape[1:3])
            _check_min_side(size, "X")
            return size
        sizes = [_item_size(item, i) for i, item in enumerate(self._items)]
        for i, size in enumerate(sizes):
            _check_min_side(size, f"image {i} ({_describe(self._items[i])})")
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

    def subset(self, start, stop):
        """Images ``start:stop`` as a collection (already checked: not read again)."""
        sub = object.__new__(ImageCollection)
        sub._items = None if self._items is None else self._items[start:stop]
        sub._array = None if self._array is None else self._array[start:stop]
        sub.image_size = self.image_size
        sub._offset = self._offset + start
        return sub

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
                    _to_float_rgb(_load_item(self._items[i], self._offset + i)[None], f"image {self._offset + i}")[0]
                    for i in range(start, stop)
                ]
            )
        return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))


def check_images(images):
    """Validate an image collection and return an :class:`ImageCollection`.

    Raises
    ------
    TypeError
        If ``images`` is not an array, a list of arrays, PIL images or paths,
        or has an unsupported dtype.
    ValueError
        If the collection is empty, has an ambiguous or wrong shape, NaN or
        out-of-range values, images smaller than ``MIN_SIDE``, unreadable
        files or mismatched sizes.
    """
    if isinstance(images, ImageCollection):
        return images
    return ImageCollection(images)


def read_image(path):
    """Read one image file into an array, keeping its precision.

    This is skpatch's only image file reader: the estimators, the data set
    loader, the plotting functions and the command line all use it, so a file
    means the same everywhere.

    Parameters
    ----------
    path : str or path-like
        The image file.

    Returns
    -------
    image : ndarray of shape (H, W, 3)
        uint8 for 8-bit files, uint16 for 16-bit grayscale or colour files
        (values 0..65535, never clipped), float32 in [0, 1] for 32-bit float
        files. Grayscale is replicated to RGB and alpha is dropped.

    Raises
    ------
    ValueError
        If the file is missing, a folder, not an image, truncated, or holds
        values that are not an image's (a float file outside [0, 1], a
        32-bit integer file outside 0..65535).
    """
    return _read(path, f"image {os.fspath(path)!r}")


def _read(path, label):
    """read_image, with ``label`` naming the image in errors."""
    name = os.fspath(path)
    if os.path.isdir(name):
        msg = (
            f"Cannot read {label}: it is a folder. Pass the image files in it, "
            "e.g. sorted(str(p) for p in Path(folder).glob('*.png'))."
        )
        raise ValueError(msg)
    try:
        with Image.open(name) as image:
            sixteen_bit = any(";16" in str(_tile_rawmode(tile)) for tile in image.tile or ())
            array = _read_16bit_colour(name, image)
            if array is None:
                image.load()
                array = _pil_to_array(image)
                if array.dtype == np.uint8 and sixteen_bit:
                    msg = f"{label} has 16-bit samples that Pillow reads at 8-bit precision (mode {image.mode})."
                    warnings.warn(msg, UserWarning, stacklevel=3)
    except _READ_ERRORS as exc:
        raise ValueError(f"Cannot read {label}: {_reason(exc)}") from exc
    return _as_rgb3(_check_file_values(array, label))


def _reason(exc):
    return "no such file" if isinstance(exc, FileNotFoundError) else str(exc)


def _split_collection(images, name="X"):
    """Return ``(items, array)``; exactly one of them is not None.

    ``name`` is the argument's name in error messages.
    """
    if isinstance(images, _PATH_TYPES):
        msg = (
            "Expected a collection of images, got a single path "
            f"{os.fspath(images)!r}; wrap it in a list."
        )
        raise TypeError(msg)
    if _is_pil(images):
        raise TypeError("Expected a collection of images, got a single PIL image; wrap it in a list.")
    if isinstance(images, np.ma.MaskedArray):
        msg = "Masked arrays are not accepted as images; fill the masked pixels first, e.g. X.filled(0)."
        raise TypeError(msg)
    if isinstance(images, np.ndarray) and images.ndim == 1 and images.dtype.kind in "OUS":
        # A 1-D array of paths or images is a list of single images.
        images = [item.decode() if isinstance(item, bytes) else item for item in images]
    if isinstance(images, np.ndarray):
        return None, _check_array(images, name, batch=True)
    if torch.is_tensor(images):
        msg = (
            "Torch tensors are not accepted as images; pass a numpy array of "
            "shape (n, H, W, C) (channels last), e.g. tensor.permute(0, 2, 3, 1).numpy()."
        )
        raise TypeError(msg)
    if not isinstance(images, (list, tuple)):
        msg = (
            "Expected images as an ndarray of shape (n, H, W, C) or a list of "
            f"arrays, PIL images or file paths; got {type(images).__name__}."
        )
        raise TypeError(msg)
    if len(images) == 0:
        raise ValueError("Found an empty image collection; at least one image is required.")
    items = list(images)
    for i, item in enumerate(items):
        if isinstance(item, np.ma.MaskedArray):
            msg = f"Image {i} is a masked array; fill the masked pixels first, e.g. image.filled(0)."
            raise TypeError(msg)
        if isinstance(item, np.ndarray):
            _check_array(item, f"image {i}", batch=False)
        elif not (isinstance(item, _PATH_TYPES) or _is_pil(item)):
            hint = ""
            if torch.is_tensor(item):
                hint = " Convert tensors with tensor.permute(1, 2, 0).numpy() (channels last)."
            elif isinstance(item, (list, tuple)):
                hint = " Convert nested lists with np.asarray first."
            msg = (
                f"Image {i} has unsupported type {type(item).__name__}; expected an "
                f"ndarray, a PIL image or a file path.{hint}"
            )
            raise TypeError(msg)
    return items, None


def _check_array(array, name, *, batch):
    """Check shape, dtype and value range of one image (batch=False) or a stack."""
    _check_shape(array, name, batch=batch)
    if _scale(array.dtype) is None and array.dtype.kind != "f":
        msg = (
            f"{name} has dtype {array.dtype}; images must be uint8 (0..255), uint16 "
            "(0..65535) or floating point in [0, 1]. Convert explicitly, e.g. "
            "X.astype(np.uint8) for 8-bit values or (X / X.max()).astype(np.float32) "
            "if that is what your data means."
        )
        raise TypeError(msg)
    if array.dtype.kind == "f":
        _check_float_range(array, name)
    elif array.dtype.itemsize == 2 and array.size and int(array.max()) <= 255:
        msg = (
            f"{name} is uint16 with values in 0..{int(array.max())}: uint16 images "
            "are read as 16-bit (0..65535), so this one is nearly black. If it "
            "holds 8-bit values, pass X.astype(np.uint8)."
        )
        warnings.warn(msg, UserWarning, stacklevel=4)
    return array


def _check_shape(array, name, *, batch):
    shape = array.shape
    if batch and array.ndim == 3:
        raise ValueError(_ambiguous_3d_message(name, shape))
    expected_ndim = (4,) if batch else (2, 3)
    if array.ndim not in expected_ndim:
        expected = "(n, H, W, C)" if batch else "(H, W) or (H, W, C)"
        msg = f"{name} must have shape {expected}; got an array of shape {shape}."
        if batch and array.ndim == 2:
            msg += (
                " Tabular data is not an image collection; for one grayscale "
                f"image pass {name}[None, :, :, None]."
            )
        raise ValueError(msg)
    if batch and shape[0] == 0:
        raise ValueError(f"{name} is empty: found 0 images; at least one is required.")
    if array.ndim == expected_ndim[-1] and shape[-1] not in (1, 3, 4):
        msg = (
            f"{name} must have 1, 3 or 4 channels in the last axis (channels last); "
            f"got shape {shape}."
        )
        if batch and shape[1] in (1, 3, 4):
            msg += f" It looks channels-first: pass {name}.transpose(0, 2, 3, 1)."
        elif not batch and shape[0] in (1, 3, 4):
            msg += " It looks channels-first: pass image.transpose(1, 2, 0)."
        raise ValueError(msg)
    spatial = shape[1:3] if batch else shape[:2]
    if min(spatial) < 1:
        raise ValueError(f"{name} has an empty spatial size {spatial}.")


def _ambiguous_3d_message(name, shape):
    hints = []
    if shape[-1] in (1, 3, 4):
        hints.append(f"one {shape[0]}x{shape[1]} image with {shape[-1]} channels (H, W, C): pass {name}[None]")
    if shape[0] in (1, 3, 4):
        hints.append(
            f"one {shape[1]}x{shape[2]} channels-first image (C, H, W): pass "
            f"{name}.transpose(1, 2, 0)[None]"
        )
    hints.append(f"a stack of {shape[0]} grayscale images (n, H, W): pass {name}[..., None]")
    return (
        f"{name} has shape {shape}, which is ambiguous: a 3-D array can be one "
        "colour image, one channels-first image or a stack of grayscale images. "
        "Arrays of images must have shape (n, H, W, C), channels last. If it is "
        + "; if it is ".join(hints)
        + "."
    )


def _check_float_range(array, name):
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    if array.size == 0:
        return
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        msg = (
            f"{name} is floating point with values in [{low:.4g}, {high:.4g}]; "
            "float images must lie in [0, 1] (uint8 images in 0..255, uint16 in "
            "0..65535)."
        )
        if high <= 255.0 and low >= 0.0:
            msg += f" For 0..255 values pass ({name} / 255).astype(np.float32) or {name}.astype(np.uint8)."
        raise ValueError(msg)


def _check_min_side(size, name):
    if min(size) < MIN_SIDE:
        msg = (
            f"{name} is {size[0]}x{size[1]} (HxW) pixels; images must be at least "
            f"{MIN_SIDE}x{MIN_SIDE}. A side of 1, 3 or 4 pixels usually means a "
            "misplaced channel axis: arrays are (n, H, W, C), channels last."
        )
        raise ValueError(msg)


def _scale(dtype):
    """Full-scale value of an accepted integer dtype, else None."""
    if dtype.kind != "u":
        return None
    return _SCALES.get(f"u{dtype.itemsize}")


def _is_pil(item):
    return isinstance(item, Image.Image)


def _describe(item):
    return os.fspath(item) if isinstance(item, _PATH_TYPES) else type(item).__name__


def _item_size(item, index):
    if isinstance(item, np.ndarray):
        return tuple(item.shape[:2])
    if isinstance(item, _PATH_TYPES):
        name = os.fspath(item)
        if os.path.isdir(name):
            _read(item, f"image {index} from {name!r}")  # raises the folder error
        try:
            with Image.open(name) as image:
                width, height = image.size
        except _READ_ERRORS as exc:
            raise ValueError(f"Cannot read image {index} from {name!r}: {_reason(exc)}") from exc
        return (height, width)
    width, height = item.size
    return (height, width)


def _load_item(item, index):
    """Return one image as an ndarray (H, W[, C])."""
    if isinstance(item, np.ndarray):
        return item
    if isinstance(item, _PATH_TYPES):
        return _read(item, f"image {index} from {os.fspath(item)!r}")
    try:
        array = _pil_to_array(item)
    except ValueError as exc:
        raise ValueError(f"Cannot read PIL image {index}: {exc}") from exc
    return _as_rgb3(_check_file_values(array, f"PIL image {index}"))


def _pil_to_array(image):
    """The pixels of a PIL image at their stored precision: uint8, uint16 or float32."""
    mode = image.mode
    if mode in ("L", "RGB", "RGBA"):
        return np.asarray(image)
    if mode.startswith("I;16"):
        # np.asarray keeps all 16 bits; Pillow's convert() would clip to 255.
        return np.asarray(image).astype(np.uint16)
    if mode in ("I", "F"):
        return np.asarray(image)
    if mode == "1":
        return np.asarray(image.convert("L"))
    try:
        return np.asarray(image.convert("RGBA" if "A" in mode or "a" in mode else "RGB"))
    except ValueError as exc:
        raise ValueError(f"unsupported image mode {mode!r} ({exc})") from exc


def _check_file_values(array, name):
    """Map a decoded image's values to an accepted dtype, or refuse them."""
    if array.dtype == np.int32:
        # Pillow's 32-bit integer mode "I": a 16-bit image if its values fit.
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low < 0 or high > 65535:
            msg = (
                f"{name} holds 32-bit integers in {low}..{high}; only 8-bit "
                "and 16-bit (0..65535) integer images are supported."
            )
            raise ValueError(msg)
        return array.astype(np.uint16)
    if array.dtype.kind == "f":
        _check_float_range(array, name)
        return array.astype(np.float32, copy=False)
    return array


def _as_rgb3(array):
    """(H, W[, C]) -> (H, W, 3): grey replicated, alpha dropped."""
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    return array[..., :3]


# Pillow decodes 16-bit colour PNG and TIFF files to 8-bit RGB(A), keeping
# the high byte of each sample. Decoding the same file a second time with the
# byte-swapped raw mode yields the low bytes; together they are the exact
# 16-bit samples.
_SWAPPED = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}


def _read_16bit_colour(path, image):
    """The exact uint16 pixels of a 16-bit colour file, else None."""
    if image.mode not in ("RGB", "RGBA") or not image.tile:
        return None
    rawmodes = [_tile_rawmode(tile) for tile in image.tile]
    if not all(
        isinstance(raw, str) and raw.split(";")[0] in ("RGB", "RGBA", "RGBX") and raw[-4:-1] == ";16"
        and raw[-1] in _SWAPPED
        for raw in rawmodes
    ):
        return None
    image.load()
    high = np.asarray(image)
    with Image.open(path) as second:
        second.tile = [_with_rawmode(tile, raw[:-1] + _SWAPPED[raw[-1]]) for tile, raw in zip(second.tile, rawmodes)]
        second.load()
        low = np.asarray(second)
    if low.shape != high.shape:  # pragma: no cover - a Pillow change
        raise ValueError("could not decode its 16-bit colour samples")
    return (high.astype(np.uint16) << 8) | low


def _tile_rawmode(tile):
    args = tile[3]
    return args if isinstance(args, str) else (args[0] if args else None)


def _with_rawmode(tile, rawmode):
    args = tile[3]
    args = rawmode if isinstance(args, str) else (rawmode, *args[1:])
    return tile._replace(args=args) if hasattr(tile, "_replace") else (*tile[:3], args)


def as_dtype(image, dtype):
    """Convert an accepted image array to ``dtype`` without changing what it means.

    uint8 -> uint16 multiplies by 257 (255 -> 65535, exact); integers -> float32
    divide by their full scale. Used to stack images of several bit depths.
    """
    dtype = np.dtype(dtype)
    if image.dtype == dtype:
        return image
    if dtype == np.uint16 and image.dtype == np.uint8:
        return image.astype(np.uint16) * np.uint16(257)
    if dtype.kind == "f":
        scale = _scale(image.dtype) or 1.0
        return (image.astype(np.float32) / np.float32(scale)).astype(dtype, copy=False)
    raise ValueError(f"Cannot convert a {image.dtype} image to {dtype} without losing precision.")


def common_dtype(dtypes):
    """The dtype that holds images of all ``dtypes`` exactly (uint8 < uint16 < float32)."""
    dtypes = {np.dtype(d) for d in dtypes}
    if any(d.kind == "f" for d in dtypes):
        return np.dtype(np.float32)
    return np.dtype(np.uint16) if np.dtype(np.uint16) in dtypes else np.dtype(np.uint8)


def _to_float_rgb(batch, name):
    """Convert a stack (b, H, W[, C]) to float32 RGB (b, H, W, 3) in [0, 1]."""
    scale = _scale(batch.dtype)
    if scale is not None:
        batch = batch.astype(np.float32) / np.float32(scale)
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
