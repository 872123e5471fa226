"""What a new user might feed skpatch, and what each gets back.

Each case is classified here, before it runs, as either

* a **clear error**: an exception of the documented type (``ValueError`` or
  ``TypeError``; ``NotFittedError`` and ``WeightsUnavailableError`` where
  that is the answer) whose message names the problem (a keyword is
  asserted); or
* **accepted sensibly**: the call succeeds and the test asserts what the
  input was converted to (usually the exact float images the CNN sees).

``python benchmarks/bad_inputs.py`` runs the same table and counts the
outcomes, including "silently wrong" (accepted, but not as asserted, or
accepted although an error was expected) and "unclear error" (another
exception type, or a message without the keyword).
"""

import functools
import os
import pathlib
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.exceptions import NotFittedError

from skpatch import PatchFeaturizer, SoftPatchClassifier, SoftPatchSegmenter
from skpatch._backbones import WeightsUnavailableError
from skpatch._images import check_images

from ._png16 import write_png16

CLEAR = (ValueError, TypeError)
SMALL = {"featurizer__weights": None, "featurizer__image_size": 32, "featurizer__embed_dim": 16}


@dataclass
class Case:
    id: str
    group: str
    run: object  # ctx -> result
    error: tuple = None  # (exception types, regex the message must match)
    check: object = None  # (result, ctx, caught warnings) -> None, asserts


CASES = []


def error(group, id, run, keyword, types=CLEAR):
    CASES.append(Case(id, group, run, error=(types, keyword)))


def accept(group, id, run, check):
    CASES.append(Case(id, group, run, check=check))


# --- helpers -----------------------------------------------------------------------


def cnn_input(images):
    """The float32 RGB images (n, H, W, 3) that reach the CNN."""
    batches = [batch.numpy() for batch in check_images(images).batches(4)]
    return np.moveaxis(np.concatenate(batches), 1, -1)


def same_as(reference):
    """Check: the CNN input equals ``reference`` (n, H, W, 3) exactly."""

    def check(result, ctx, caught):
        np.testing.assert_array_equal(result, np.asarray(reference, dtype=np.float32))

    return check


def rgb_of(array, scale):
    """Reference float RGB of an (n, H, W, C) integer or float stack."""
    values = np.asarray(array).astype(np.float32) / np.float32(scale)
    return np.repeat(values, 3, axis=-1) if values.shape[-1] == 1 else values[..., :3]


def _pil_rgb(image):
    return np.asarray(image.convert("RGB"))[None] / np.float32(255)


class Context:
    """Files and fitted tiny estimators shared by the cases."""

    def __init__(self, folder):
        self.dir = pathlib.Path(folder)
        rng = np.random.default_rng(0)
        self.X = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
        self.image = self.X[0]
        self.grey16 = rng.integers(0, 65536, (16, 16), dtype=np.uint16)
        self.rgb16 = rng.integers(0, 65536, (16, 16, 3), dtype=np.uint16)
        self.rgba16 = rng.integers(0, 65536, (16, 16, 4), dtype=np.uint16)
        self.files = {}
        self._write_files(rng)

    def path(self, name):
        return str(self.dir / name)

    def _save(self, name, image, **kwargs):
        image.save(self.dir / name, **kwargs)

    def _write_files(self, rng):
        rgb = Image.fromarray(self.image)
        for name in ("rgb.png", "rgb.bmp", "rgb.tif", "rgb.webp"):
            self._save(name, rgb, **({"lossless": True} if name.endswith("webp") else {}))
        self._save("rgb.jpg", rgb, quality=95)
        self._save("grey.png", rgb.convert("L"))
        self._save("rgba.png", Image.fromarray(np.dstack([self.image, np.full((16, 16), 7, np.uint8)])))
        self._save("palette.gif", rgb.convert("P"))
        self._save("palette_transparent.png", rgb.convert("P"), transparency=0)
        frames = [rgb, Image.fromarray(255 - self.image)]
        frames[0].save(self.dir / "animated.gif", save_all=True, append_images=frames[1:])
        self._save("grey16.png", Image.fromarray(self.grey16))
        write_png16(self.dir / "rgb16.png", self.rgb16)
        write_png16(self.dir / "rgba16.png", self.rgba16)
        write_png16(self.dir / "la16.png", self.rgba16[..., :2])
        try:
            import tifffile

            tifffile.imwrite(self.dir / "rgb16.tif", self.rgb16, photometric="rgb")
        except ImportError:  # pragma: no cover - tifffile comes with scikit-image
            write_png16(self.dir / "rgb16.tif", self.rgb16)
        floats = rng.random((16, 16)).astype(np.float32)
        self.float_image = floats
        self._save("float.tif", Image.fromarray(floats))
        self._save("float_255.tif", Image.fromarray(floats * 255))
        self.int_image = rng.integers(0, 65536, (16, 16)).astype(np.int32)
        self._save("int32.tif", Image.fromarray(self.int_image))
        self._save("int32_big.tif", Image.fromarray(self.int_image * 100 + 70000))
        self._save("other_size.png", Image.fromarray(self.image[:, :12]))
        (self.dir / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n but not an image")
        (self.dir / "empty.png").write_bytes(b"")
        (self.dir / "notes.png").write_text("a text file with an image's name")
        data = (self.dir / "rgb.png").read_bytes()
        big = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        big.save(self.dir / "big.png")
        (self.dir / "truncated.png").write_bytes((self.dir / "big.png").read_bytes()[:300])
        (self.dir / "png_named.txt").write_bytes(data)
        (self.dir / "folder").mkdir()
        os.symlink(self.dir / "nowhere.png", self.dir / "dangling.png")
        _write_bomb(self.dir / "bomb.png")

    @functools.cached_property
    def clf(self):
        torch.manual_seed(0)
        return SoftPatchClassifier(random_state=0).set_params(denoise__n_neighbors=1, **SMALL).fit(self.X)

    @functools.cached_property
    def seg(self):
        torch.manual_seed(0)
        return SoftPatchSegmenter(random_state=0).set_params(denoise__n_neighbors=1, **SMALL).fit(self.X)


def _write_bomb(path):
    """A PNG whose header claims 20000 x 20000 pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 99)) + chunk(b"IEND", b""))


def _fit(cls, **params):
    def run(X):
        torch.manual_seed(0)
        return cls(random_state=0).set_params(denoise__n_neighbors=1, **SMALL).set_params(**params).fit(X)

    return run


# --- shapes ---------------------------------------------------------------------

G = "shape"
error(G, "one (H,W,3) image to classifier.fit", lambda c: _fit(SoftPatchClassifier)(c.image), r"ambiguous.*X\[None\]")
error(G, "one (H,W,3) image to classifier.score_samples", lambda c: c.clf.score_samples(c.image), r"X\[None\]")
error(G, "one (H,W,3) image to classifier.predict", lambda c: c.clf.predict(c.image), r"X\[None\]")
error(G, "one (H,W,3) image to segmenter.score_samples", lambda c: c.seg.score_samples(c.image), r"X\[None\]")
error(G, "one (H,W,3) image to segmenter.predict", lambda c: c.seg.predict(c.image), r"X\[None\]")
error(G, "one (H,W,3) image to PatchFeaturizer.fit", lambda c: PatchFeaturizer(weights=None).fit(c.image), r"X\[None\]")
error(G, "one (3,H,W) channels-first image", lambda c: c.clf.score_samples(c.image.transpose(2, 0, 1)),
      r"transpose\(1, 2, 0\)\[None\]")
error(G, "stack of grayscale images (n,H,W)", lambda c: c.clf.score_samples(c.X[..., 0]), r"X\[\.\.\., None\]")
accept(G, "stack of grayscale images (n,H,W,1)", lambda c: cnn_input(c.X[..., :1]),
       lambda r, c, w: np.testing.assert_array_equal(r, rgb_of(c.X[..., :1], 255)))
accept(G, "RGB stack (n,H,W,3)", lambda c: cnn_input(c.X), lambda r, c, w: same_as(rgb_of(c.X, 255))(r, c, w))
accept(G, "RGBA stack: alpha dropped", lambda c: cnn_input(np.concatenate([c.X, c.X[..., :1]], axis=-1)),
       lambda r, c, w: same_as(rgb_of(c.X, 255))(r, c, w))
error(G, "channels-first stack (n,3,H,W)", lambda c: c.clf.score_samples(c.X.transpose(0, 3, 1, 2)),
      r"channels-first: pass X\.transpose\(0, 2, 3, 1\)")
error(G, "2 channels", lambda c: check_images(c.X[..., :2]), "1, 3 or 4 channels")
error(G, "5 channels", lambda c: check_images(np.concatenate([c.X, c.X[..., :2]], -1)), "1, 3 or 4 channels")
error(G, "one 2-D grayscale image as X", lambda c: c.clf.score_samples(c.image[..., 0]), r"X\[None, :, :, None\]")
error(G, "tabular data (100, 20)", lambda c: _fit(SoftPatchClassifier)(np.random.rand(100, 20)), "Tabular")
error(G, "1-D array", lambda c: check_images(np.zeros(10, np.uint8)), r"shape \(n, H, W, C\)")
error(G, "0-d array", lambda c: check_images(np.array(3)), r"shape \(n, H, W, C\)")
error(G, "5-D array", lambda c: check_images(c.X[None]), r"shape \(n, H, W, C\)")
error(G, "no images (0,H,W,3)", lambda c: _fit(SoftPatchClassifier)(c.X[:0]), "0 images")
error(G, "zero height (n,0,W,3)", lambda c: check_images(c.X[:, :0]), "empty spatial size")
error(G, "1x1 images", lambda c: check_images(c.X[:, :1, :1]), "at least 5x5")
error(G, "4x4 images", lambda c: check_images(c.X[:, :4, :4]), "at least 5x5")
accept(G, "5x5 images, the smallest", lambda c: c.clf.score_samples(c.X[:, :5, :5]),
       lambda r, c, w: (r.shape == (2,) and np.isfinite(r).all()) or pytest.fail(str(r)))
error(G, "list(image): rows of one image", lambda c: check_images(list(c.image)), "misplaced channel axis")
error(G, "(C,H,W) image in a list", lambda c: check_images([c.image.transpose(2, 0, 1)]), r"image\.transpose\(1, 2, 0\)")

# --- dtypes and values ------------------------------------------------------------

G = "dtype/values"
for dtype in ("bool", "int8", "int32", "int64", "uint32", "uint64", "complex64", "object", "U3", "datetime64[s]"):
    error(G, f"dtype {dtype}", lambda c, d=dtype: check_images(c.X.astype(d)), re.escape(f"dtype {np.dtype(dtype)}"))
error(G, "int64 0..255 says how to convert", lambda c: check_images(c.X.astype(np.int64)), r"X\.astype\(np\.uint8\)")
for dtype in ("float16", "float32", "float64", "longdouble", ">f4"):
    accept(G, f"{dtype} in [0, 1]", lambda c, d=dtype: cnn_input((c.X / 255).astype(d)),
           lambda r, c, w, d=dtype: same_as((c.X / 255).astype(d).astype(np.float32))(r, c, w))
error(G, "float in 0..255", lambda c: check_images(c.X.astype(np.float32)), r"\(X / 255\)")
error(G, "negative floats", lambda c: check_images(c.X / 255 - 0.5), r"\[0, 1\]")
error(G, "float just above 1", lambda c: check_images(np.full((1, 8, 8, 3), 1.0001)), r"\[0, 1\]")
error(G, "NaN everywhere", lambda c: check_images(np.full((1, 8, 8, 3), np.nan)), "NaN")
error(G, "one NaN pixel", lambda c: check_images(np.where(np.arange(192).reshape(1, 8, 8, 3) == 5, np.nan, 0.5)), "NaN")
error(G, "+inf", lambda c: check_images(np.full((1, 8, 8, 3), np.inf)), "infinite")
error(G, "-inf", lambda c: check_images(np.full((1, 8, 8, 3), -np.inf)), "infinite")
accept(G, "uint16 full range: / 65535", lambda c: cnn_input(c.rgb16[None]),
       lambda r, c, w: same_as(rgb_of(c.rgb16[None], 65535))(r, c, w))
accept(G, "big-endian uint16", lambda c: cnn_input(c.rgb16[None].astype(">u2")),
       lambda r, c, w: same_as(rgb_of(c.rgb16[None], 65535))(r, c, w))
accept(G, "uint8 values as uint16 (* 257) = same images", lambda c: cnn_input(c.X.astype(np.uint16) * 257),
       lambda r, c, w: same_as(rgb_of(c.X, 255))(r, c, w))


def _warned(pattern):
    def check(result, ctx, caught):
        assert any(re.search(pattern, str(w.message)) for w in caught), [str(w.message) for w in caught]

    return check


accept(G, "uint16 holding 8-bit values: warned", lambda c: cnn_input(c.X.astype(np.uint16)),
       _warned(r"X\.astype\(np\.uint8\)"))
accept(G, "all-black uint8", lambda c: cnn_input(np.zeros((1, 8, 8, 3), np.uint8)),
       lambda r, c, w: same_as(np.zeros((1, 8, 8, 3)))(r, c, w))
accept(G, "all-white float", lambda c: cnn_input(np.ones((1, 8, 8, 3))), lambda r, c, w: same_as(np.ones((1, 8, 8, 3)))(r, c, w))

# --- memory layouts -----------------------------------------------------------------

G = "memory layout"


def _read_only(X):
    X = X.copy()
    X.flags.writeable = False
    return X


def _memmap(ctx):
    mm = np.lib.format.open_memmap(ctx.dir / "X.npy", mode="w+", dtype=np.uint8, shape=ctx.X.shape)
    mm[:] = ctx.X
    mm.flush()
    return np.load(ctx.dir / "X.npy", mmap_mode="r")


accept(G, "read-only array", lambda c: cnn_input(_read_only(c.X)), lambda r, c, w: same_as(rgb_of(c.X, 255))(r, c, w))
accept(G, "memmap (read-only)", lambda c: cnn_input(_memmap(c)), lambda r, c, w: same_as(rgb_of(c.X, 255))(r, c, w))
accept(G, "strided view X[:, ::2, ::2]", lambda c: cnn_input(c.X[:, ::2, ::2]),
       lambda r, c, w: same_as(rgb_of(c.X[:, ::2, ::2], 255))(r, c, w))
accept(G, "Fortran order", lambda c: cnn_input(np.asfortranarray(c.X)), lambda r, c, w: same_as(rgb_of(c.X, 255))(r, c, w))
accept(G, "broadcast view (zero strides)", lambda c: cnn_input(np.broadcast_to(c.X[:1], (3, 16, 16, 3))),
       lambda r, c, w: same_as(rgb_of(np.repeat(c.X[:1], 3, 0), 255))(r, c, w))
error(G, "masked array", lambda c: check_images(np.ma.masked_array(c.X, mask=c.X > 100)), r"filled")
error(G, "np.matrix", lambda c: check_images(np.asmatrix(c.image[..., 0])), "Tabular")
accept(G, "classifier on a read-only memmap", lambda c: c.clf.score_samples(_memmap(c)),
       lambda r, c, w: np.testing.assert_array_equal(r, c.clf.score_samples(c.X)))

# --- containers ---------------------------------------------------------------------

G = "container"
accept(G, "list of arrays", lambda c: cnn_input(list(c.X)), lambda r, c, w: same_as(rgb_of(c.X, 255))(r, c, w))
accept(G, "tuple of arrays", lambda c: cnn_input(tuple(c.X)), lambda r, c, w: same_as(rgb_of(c.X, 255))(r, c, w))
accept(G, "list of 2-D grayscale arrays", lambda c: cnn_input(list(c.X[..., 0])),
       lambda r, c, w: same_as(rgb_of(c.X[..., :1], 255))(r, c, w))
accept(G, "list mixing grey, RGB, RGBA", lambda c: cnn_input([c.X[0, ..., 0], c.X[1], np.dstack([c.X[0], c.X[1, ..., 0]])]),
       lambda r, c, w: same_as(np.stack([rgb_of(c.X[0, ..., :1], 255), rgb_of(c.X[1], 255), rgb_of(c.X[0], 255)]))(r, c, w))
accept(G, "list mixing uint8, uint16, float", lambda c: cnn_input([c.X[0], c.X[1].astype(np.uint16) * 257, c.X[0] / 255]),
       lambda r, c, w: np.testing.assert_allclose(r, rgb_of(c.X[[0, 1, 0]], 255), atol=1e-7))
error(G, "list of images of different sizes", lambda c: check_images([c.X[0], c.X[1, :, :12]]), r"same size.*16x12")
error(G, "empty list", lambda c: _fit(SoftPatchClassifier)([]), "empty")
error(G, "nested Python lists", lambda c: check_images(c.X.tolist()), r"np\.asarray")
accept(G, "np.asarray of nested lists", lambda c: cnn_input(np.asarray(c.X.tolist(), dtype=np.uint8)),
       lambda r, c, w: same_as(rgb_of(c.X, 255))(r, c, w))
error(G, "list with None", lambda c: check_images([c.X[0], None]), "Image 1 has unsupported type NoneType")
error(G, "list with a number", lambda c: check_images([c.X[0], 3]), "Image 1 has unsupported type int")
error(G, "list with bytes", lambda c: check_images([b"rgb.png"]), "unsupported type bytes")
error(G, "dict", lambda c: check_images({"a": c.X}), "Expected images")
error(G, "generator", lambda c: check_images(x for x in c.X), "Expected images")
error(G, "set", lambda c: check_images({1, 2}), "Expected images")
error(G, "None", lambda c: _fit(SoftPatchClassifier)(None), "Expected images")
error(G, "a single path str", lambda c: check_images(c.path("rgb.png")), "wrap it in a list")
error(G, "a single pathlib.Path", lambda c: check_images(pathlib.Path(c.path("rgb.png"))), "wrap it in a list")
error(G, "a folder as X", lambda c: check_images(str(c.dir)), "wrap it in a list")
accept(G, "1-D string array of paths", lambda c: cnn_input(np.array([c.path("rgb.png")] * 2)),
       lambda r, c, w: same_as(rgb_of(c.X[[0, 0]], 255))(r, c, w))


def _object_array(items):
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


accept(G, "1-D object array of images", lambda c: cnn_input(_object_array([c.X[0], c.X[1]])),
       lambda r, c, w: same_as(rgb_of(c.X, 255))(r, c, w))
error(G, "torch tensor (n,3,H,W)", lambda c: check_images(torch.zeros(2, 3, 16, 16)), "permute")
error(G, "list of torch tensors", lambda c: check_images([torch.zeros(3, 16, 16)]), "permute")
error(G, "one PIL image as X", lambda c: check_images(Image.fromarray(c.image)), "single PIL image")
accept(G, "ImageCollection passed back", lambda c: check_images(check_images(c.X)),
       lambda r, c, w: (len(r) == 2 and r.image_size == (16, 16)) or pytest.fail("changed"))

# --- PIL images ---------------------------------------------------------------------

G = "PIL mode"
for mode in ("RGB", "L", "RGBA", "P", "LA", "PA", "1", "CMYK", "YCbCr", "HSV", "LAB", "RGBX", "RGBa"):
    accept(G, f"PIL mode {mode}", lambda c, m=mode: (cnn_input([Image.fromarray(c.image).convert(m)]), m),
           lambda r, c, w: same_as(_pil_rgb(Image.fromarray(c.image).convert(r[1])))(r[0], c, w))
accept(G, "PIL mode P with transparency", lambda c: cnn_input([_transparent_palette(c)]),
       lambda r, c, w: same_as(_pil_rgb(_transparent_palette(c)))(r, c, w))
accept(G, "PIL mode I;16: 16 bits, not clipped", lambda c: cnn_input([Image.fromarray(c.grey16)]),
       lambda r, c, w: same_as(rgb_of(c.grey16[None, ..., None], 65535))(r, c, w))
accept(G, "PIL mode I within 0..65535", lambda c: cnn_input([Image.fromarray(c.int_image)]),
       lambda r, c, w: same_as(rgb_of(c.int_image[None, ..., None], 65535))(r, c, w))
error(G, "PIL mode I outside 0..65535", lambda c: cnn_input([Image.fromarray(c.int_image - 1000)]), "32-bit integers")
accept(G, "PIL mode F in [0, 1]", lambda c: cnn_input([Image.fromarray(c.float_image)]),
       lambda r, c, w: same_as(rgb_of(c.float_image[None, ..., None], 1))(r, c, w))
error(G, "PIL mode F in 0..255", lambda c: cnn_input([Image.fromarray(c.float_image * 255)]), r"\[0, 1\]")
error(G, "PIL mode La", lambda c: cnn_input([Image.new("La", (16, 16))]), "unsupported image mode 'La'")


def _transparent_palette(ctx):
    image = Image.fromarray(ctx.image).convert("P")
    image.info["transparency"] = 0
    return image


# --- files ---------------------------------------------------------------------------

G = "file"
accept(G, "PNG path (str)", lambda c: cnn_input([c.path("rgb.png")]), lambda r, c, w: same_as(rgb_of(c.X[:1], 255))(r, c, w))
accept(G, "PNG path (pathlib.Path)", lambda c: cnn_input([pathlib.Path(c.path("rgb.png"))]),
       lambda r, c, w: same_as(rgb_of(c.X[:1], 255))(r, c, w))
for name in ("rgb.bmp", "rgb.tif", "rgb.webp"):
    accept(G, f"lossless {name.split('.')[1].upper()}", lambda c, n=name: cnn_input([c.path(n)]),
           lambda r, c, w: same_as(rgb_of(c.X[:1], 255))(r, c, w))
accept(G, "JPEG: Pillow's decoding", lambda c: cnn_input([c.path("rgb.jpg")]),
       lambda r, c, w: same_as(_pil_rgb(Image.open(c.path("rgb.jpg"))))(r, c, w))
accept(G, "grayscale PNG: replicated", lambda c: cnn_input([c.path("grey.png")]),
       lambda r, c, w: same_as(_pil_rgb(Image.fromarray(c.image).convert("L")))(r, c, w))
accept(G, "RGBA PNG: alpha dropped", lambda c: cnn_input([c.path("rgba.png")]),
       lambda r, c, w: same_as(rgb_of(c.X[:1], 255))(r, c, w))
accept(G, "palette GIF", lambda c: cnn_input([c.path("palette.gif")]),
       lambda r, c, w: same_as(_pil_rgb(Image.fromarray(c.image).convert("P")))(r, c, w))
accept(G, "palette PNG with transparency", lambda c: cnn_input([c.path("palette_transparent.png")]),
       lambda r, c, w: same_as(_pil_rgb(Image.fromarray(c.image).convert("P")))(r, c, w))
accept(G, "animated GIF: first frame", lambda c: cnn_input([c.path("animated.gif")]),
       lambda r, c, w: same_as(_pil_rgb(Image.open(c.path("animated.gif"))))(r, c, w))
accept(G, "16-bit grey PNG (I;16): exact, not clipped", lambda c: cnn_input([c.path("grey16.png")]),
       lambda r, c, w: same_as(rgb_of(c.grey16[None, ..., None], 65535))(r, c, w))
accept(G, "16-bit RGB PNG: exact", lambda c: cnn_input([c.path("rgb16.png")]),
       lambda r, c, w: same_as(rgb_of(c.rgb16[None], 65535))(r, c, w))
accept(G, "16-bit RGBA PNG: exact, alpha dropped", lambda c: cnn_input([c.path("rgba16.png")]),
       lambda r, c, w: same_as(rgb_of(c.rgba16[None], 65535))(r, c, w))
accept(G, "16-bit RGB TIFF: exact", lambda c: cnn_input([c.path("rgb16.tif")]),
       lambda r, c, w: same_as(rgb_of(c.rgb16[None], 65535))(r, c, w))
accept(G, "16-bit grey+alpha PNG: 8-bit precision, warned", lambda c: cnn_input([c.path("la16.png")]),
       _warned("8-bit precision"))
accept(G, "32-bit float TIFF in [0, 1]", lambda c: cnn_input([c.path("float.tif")]),
       lambda r, c, w: same_as(rgb_of(c.float_image[None, ..., None], 1))(r, c, w))
error(G, "32-bit float TIFF in 0..255", lambda c: cnn_input([c.path("float_255.tif")]), r"float_255\.tif.*\[0, 1\]")
accept(G, "32-bit integer TIFF within 0..65535", lambda c: cnn_input([c.path("int32.tif")]),
       lambda r, c, w: same_as(rgb_of(c.int_image[None, ..., None], 65535))(r, c, w))
error(G, "32-bit integer TIFF above 65535", lambda c: cnn_input([c.path("int32_big.tif")]), "32-bit integers")
accept(G, "PNG data in a .txt file", lambda c: cnn_input([c.path("png_named.txt")]),
       lambda r, c, w: same_as(rgb_of(c.X[:1], 255))(r, c, w))
accept(G, "files mixed with arrays", lambda c: cnn_input([c.path("rgb.png"), c.X[1], Image.fromarray(c.X[0])]),
       lambda r, c, w: same_as(rgb_of(c.X[[0, 1, 0]], 255))(r, c, w))
error(G, "missing file", lambda c: check_images([c.path("nope.png")]), r"nope\.png.*no such file")
error(G, "dangling symlink", lambda c: check_images([c.path("dangling.png")]), r"dangling\.png.*no such file")
error(G, "folder in the list", lambda c: check_images([str(c.dir / "folder")]), "is a folder")
error(G, "corrupt file", lambda c: check_images([c.path("garbage.png")]), r"Cannot read image 0 from .*garbage\.png")
error(G, "empty file", lambda c: check_images([c.path("empty.png")]), r"empty\.png")
error(G, "text file named .png", lambda c: check_images([c.path("notes.png")]), r"notes\.png")
error(G, "truncated PNG (found when read)", lambda c: c.clf.score_samples([c.path("truncated.png")]), r"truncated\.png")
error(G, "decompression bomb (20000 x 20000 header)", lambda c: check_images([c.path("bomb.png")]), "decompression bomb")
error(G, "files of different sizes", lambda c: check_images([c.path("rgb.png"), c.path("other_size.png")]),
      r"image 1 .*other_size\.png.*16x12")

# --- sizes ---------------------------------------------------------------------------

G = "size"
accept(G, "one 4096 x 4096 image", lambda c: c.clf.score_samples(np.broadcast_to(c.X[:1, :1, :1], (1, 4096, 4096, 3))),
       lambda r, c, w: (r.shape == (1,) and np.isfinite(r).all()) or pytest.fail(str(r)))
accept(G, "5 x 1024 strip", lambda c: c.clf.score_samples(np.zeros((1, 5, 1024, 3), np.uint8)),
       lambda r, c, w: (r.shape == (1,) and np.isfinite(r).all()) or pytest.fail(str(r)))
accept(G, "test images of another size than training: segmenter maps at the test size",
       lambda c: c.seg.score_samples(np.zeros((1, 40, 24, 3), np.uint8)), lambda r, c, w: r.shape == (1, 40, 24) or pytest.fail(str(r.shape)))
accept(G, "non-square images", lambda c: c.seg.score_samples(c.X[:, :, :11]),
       lambda r, c, w: r.shape == (2, 16, 11) or pytest.fail(str(r.shape)))

# --- parameters ----------------------------------------------------------------------

G = "parameter"
error(G, "image_size=8", lambda c: PatchFeaturizer(weights=None, image_size=8).fit(c.X), "image_size")
error(G, "image_size=(32,)", lambda c: PatchFeaturizer(weights=None, image_size=(32,)).fit(c.X), "image_size")
error(G, "image_size='big'", lambda c: PatchFeaturizer(weights=None, image_size="big").fit(c.X), "image_size")
error(G, "embed_dim not a multiple of the stages", lambda c: PatchFeaturizer(weights=None, embed_dim=15).fit(c.X), "multiple")
error(G, "even patch_size", lambda c: PatchFeaturizer(weights=None, patch_size=2).fit(c.X), "odd")
error(G, "stages out of range", lambda c: PatchFeaturizer(weights=None, stages=(2, 9)).fit(c.X), "stages")
error(G, "stages in the wrong order", lambda c: PatchFeaturizer(weights=None, stages=(3, 2)).fit(c.X), "increasing")
error(G, "unknown backbone", lambda c: PatchFeaturizer("resnet_9000", weights=None).fit(c.X), "Unknown backbone")
error(G, "weights file missing", lambda c: PatchFeaturizer(weights=c.path("nope.pth")).fit(c.X), "does not exist")
error(G, "weights file not a checkpoint", lambda c: PatchFeaturizer(weights=c.path("garbage.png")).fit(c.X), "Cannot read weights")
error(G, "weights=123", lambda c: PatchFeaturizer(weights=123).fit(c.X), "weights")
error(G, "backbone weights unavailable offline", lambda c: _offline_resnet(c), "HF_HUB_OFFLINE", types=(WeightsUnavailableError,))
error(G, "contamination=0.9", lambda c: _fit(SoftPatchClassifier, contamination=0.9)(c.X), "contamination")
error(G, "contamination='high'", lambda c: _fit(SoftPatchClassifier, contamination="high")(c.X), "contamination")
error(G, "denoise__threshold=2", lambda c: _fit(SoftPatchClassifier, denoise__threshold=2)(c.X), "threshold")
error(G, "denoise__method='magic'", lambda c: _fit(SoftPatchClassifier, denoise__method="magic")(c.X), "method")
error(G, "memory__sampling_ratio=0", lambda c: _fit(SoftPatchClassifier, memory__sampling_ratio=0)(c.X), "sampling_ratio")
error(G, "n_jobs='all'", lambda c: _fit(SoftPatchClassifier, n_jobs="all")(c.X), "n_jobs")
error(G, "random_state='seed'", lambda c: _fit(SoftPatchClassifier, random_state="seed")(c.X), "random_state")
error(G, "misspelt nested parameter", lambda c: SoftPatchClassifier().set_params(denoise__lof_k=3), "Invalid parameter")
error(G, "nested parameter of a passthrough step",
      lambda c: SoftPatchClassifier(denoise="passthrough").set_params(denoise__threshold=0.1), "passthrough")


def _offline_resnet(ctx):
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        hub = torch.hub.get_dir()
        torch.hub.set_dir(str(ctx.dir / "empty_hub"))
        try:
            return PatchFeaturizer("resnet18").fit(ctx.X)
        finally:
            torch.hub.set_dir(hub)
    finally:
        if old is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = old


# --- fitted state and API ------------------------------------------------------------

G = "API"
error(G, "classifier.score_samples before fit", lambda c: SoftPatchClassifier().score_samples(c.X), "not fitted",
      types=(NotFittedError,))
error(G, "segmenter.score_samples before fit", lambda c: SoftPatchSegmenter().score_samples(c.X), "not fitted",
      types=(NotFittedError,))
error(G, "PatchFeaturizer.transform before fit", lambda c: PatchFeaturizer().transform(c.X), "not fitted",
      types=(NotFittedError,))
error(G, "fit on one image", lambda c: _fit(SoftPatchClassifier)(c.X[:1]), "at least 2 training images")
accept(G, "fit(X, y) ignores y", lambda c: _fit(SoftPatchClassifier)(c.X).score_samples(c.X),
       lambda r, c, w: np.testing.assert_array_equal(r, _fit(SoftPatchClassifier)(c.X).score_samples(c.X)))
accept(G, "classifier.predict gives +1/-1", lambda c: c.clf.predict(c.X),
       lambda r, c, w: set(np.unique(r)) <= {-1, 1} or pytest.fail(str(r)))
accept(G, "segmenter.predict gives boolean masks", lambda c: c.seg.predict(c.X),
       lambda r, c, w: (r.dtype == bool and r.shape == (2, 16, 16)) or pytest.fail(str(r.dtype)))
accept(G, "paths and arrays score the same", lambda c: c.clf.score_samples([c.path("rgb.png")]),
       lambda r, c, w: np.testing.assert_array_equal(r, c.clf.score_samples(c.X[:1])))
accept(G, "16-bit file scores as its uint16 array", lambda c: c.clf.score_samples([c.path("rgb16.png")]),
       lambda r, c, w: np.testing.assert_array_equal(r, c.clf.score_samples(c.rgb16[None])))

# --- data sets and plotting ----------------------------------------------------------

G = "datasets/plotting"


def _load_mvtec(path, **kwargs):
    from skpatch.datasets import load_mvtec

    return load_mvtec(path, **kwargs)


def _mvtec_16bit(ctx):
    root = ctx.dir / "mvtec16"
    for folder in ("train/good", "test/good"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    Image.fromarray(ctx.grey16).save(root / "train/good/000.png")
    write_png16(root / "train/good/001.png", ctx.rgb16)
    Image.fromarray(ctx.image).save(root / "test/good/000.png")
    return _load_mvtec(root, lazy=False)


error(G, "load_mvtec on a missing folder", lambda c: _load_mvtec(c.dir / "nope"), "does not exist")
error(G, "load_mvtec on a folder without train/good", lambda c: _load_mvtec(c.dir), "MVTec AD layout")
accept(G, "load_mvtec with 16-bit files: uint16, not clipped", _mvtec_16bit,
       lambda r, c, w: (np.testing.assert_array_equal(r.train_images[1], c.rgb16),
                        np.testing.assert_array_equal(r.test_images[0], c.image.astype(np.uint16) * 257)))


def _plot(function, *args):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skpatch import plotting

    try:
        return getattr(plotting, function)(*args)
    finally:
        plt.close("all")


error(G, "plot_image_grid on one (H,W,3) image", lambda c: _plot("plot_image_grid", c.image), r"images\[None\]")
error(G, "plot_image_grid on a single path", lambda c: _plot("plot_image_grid", c.path("rgb.png")), "wrap it in a list")
accept(G, "plot_anomaly_map of a 16-bit file", lambda c: _plot("plot_anomaly_map", c.path("rgb16.png"), np.zeros((16, 16))).images[0].get_array(),
       lambda r, c, w: np.testing.assert_array_equal(r, rgb_of(c.rgb16, 65535)))
error(G, "plot_anomaly_map with a wrong-size map", lambda c: _plot("plot_anomaly_map", c.image, np.zeros((8, 8))), r"\(H, W\) = \(16, 16\)")


# --- running a case ------------------------------------------------------------------


def classify(case, ctx):
    """``(outcome, detail)``; outcome is one of OUTCOMES."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = case.run(ctx)
        except BaseException as exc:  # noqa: BLE001 - classified below
            if isinstance(exc, (KeyboardInterrupt, pytest.skip.Exception)):
                raise
            detail = f"{type(exc).__name__}: {exc}"
            if case.error is None:
                return "unclear error", f"expected acceptance, got {detail}"
            types, keyword = case.error
            if isinstance(exc, types) and re.search(keyword, str(exc), re.DOTALL):
                return "clear error", detail
            return "unclear error", f"expected {keyword!r} in a {[t.__name__ for t in types]}, got {detail}"
    if case.error is not None:
        return "silently wrong", f"accepted although {case.error[1]!r} was expected"
    try:
        case.check(result, ctx, caught)
    except Exception as exc:  # noqa: BLE001 - an assertion, or the reference itself failed
        return "silently wrong", f"accepted, but {type(exc).__name__}: {exc}"
    return "accepted sensibly", ""


OUTCOMES = ("clear error", "accepted sensibly", "silently wrong", "unclear error")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Context(tmp_path_factory.mktemp("bad_inputs"))


def test_the_table_is_large_and_ids_unique():
    assert len(CASES) >= 110
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.group}: {c.id}" for c in CASES])
def test_bad_input(case, ctx):
    outcome, detail = classify(case, ctx)
    expected = "clear error" if case.error is not None else "accepted sensibly"
    assert outcome == expected, detail
