"""Property-based fuzzing of every way images enter skpatch.

Each property draws an image collection (random shapes, dtypes, value ranges,
NaN/inf, lists mixing arrays, PIL images, paths and garbage, sizes 1-4096 px)
and checks the only two allowed outcomes:

* a ``ValueError`` or ``TypeError`` with a message, exactly when the
  documented rules of :mod:`skpatch._images` say the input is invalid; or
* acceptance, where the images that reach the CNN are exactly the reference
  conversion (uint8 / 255, uint16 / 65535, float as is; grey replicated,
  alpha dropped): no silent coercion.

The oracle below restates the rules independently of the implementation.
The bulk of the examples validate without the CNN (``check_images`` and
``ImageCollection.batches``); fewer go through fitted tiny estimators
(``featurizer__weights=None``, 32 px), whose outputs must equal those for the
reference float images.
"""

import atexit
import os
import pathlib
import shutil
import tempfile
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from skpatch import PatchFeaturizer, SoftPatchClassifier, SoftPatchSegmenter
from skpatch._images import MIN_SIDE, check_images

from ._png16 import write_png16

FUZZ = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
}

DTYPES = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", ">u2", "uint32", "uint64",
    "float16", "float32", ">f4", "float64", "longdouble", "complex64", "complex128", "object",
    "datetime64[s]", "U3",
]
# Above this many elements an array is a zero-copy broadcast of one pixel, so
# that 4096 x 4096 images cost no memory to make.
_DENSE_LIMIT = 200_000


class Invalid(Exception):
    """The oracle's verdict: this input must raise ValueError or TypeError."""


# --- the oracle: the documented rules, restated ------------------------------


def _reference_array(image, batch, crop=None):
    """Float32 RGB reference (n, H, W, 3) of a valid array, or raise Invalid.

    With ``crop``, only the top-left ``crop`` x ``crop`` pixels are converted
    (4096-px images stay cheap).
    """
    ndims = (4,) if batch else (2, 3)
    if image.ndim not in ndims:
        raise Invalid("ndim")
    if batch and image.shape[0] == 0:
        raise Invalid("empty")
    if image.ndim == ndims[-1] and image.shape[-1] not in (1, 3, 4):
        raise Invalid("channels")
    spatial = image.shape[1:3] if batch else image.shape[:2]
    if min(spatial) < 1:
        raise Invalid("empty spatial")
    kind, size = image.dtype.kind, image.dtype.itemsize
    if not (kind == "f" or (kind == "u" and size in (1, 2))):
        raise Invalid("dtype")
    if kind == "f" and (not np.isfinite(image).all() or image.min() < 0 or image.max() > 1):
        raise Invalid("range")
    if min(spatial) < MIN_SIDE:
        raise Invalid("too small")
    if not batch:
        image = image[None]
    if image.ndim == 3:
        image = image[..., None]
    if crop is not None:
        image = image[:, :crop, :crop]
    scale = {"f": 1, "u": 255 if size == 1 else 65535}[kind]
    values = image.astype(np.float32) / np.float32(scale) if scale != 1 else image.astype(np.float32)
    values = np.repeat(values, 3, axis=-1) if values.shape[-1] == 1 else values[..., :3]
    return values if batch else values[0]


def _dense(shape, dtype, fill, seed):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) if shape else 1
    if n > _DENSE_LIMIT:
        pixel = _dense((1,), dtype, fill, seed)
        return np.broadcast_to(pixel.reshape((1,) * len(shape)), shape)
    if dtype.kind in "OUM":
        base = rng.integers(0, 256, shape)
        return base.astype(dtype) if dtype.kind != "O" else base.astype(object)
    if fill == "zeros":
        values = np.zeros(shape)
    elif fill == "ones":
        values = np.ones(shape)
    elif fill == "unit":
        values = rng.random(shape)
    elif fill == "byte":
        values = rng.integers(0, 256, shape).astype(float)
    elif fill == "word":
        values = rng.integers(0, 65536, shape).astype(float)
    elif fill == "negative":
        values = -rng.random(shape)
    else:  # unit values with a NaN or an infinity somewhere
        values = rng.random(shape)
        if values.size:
            values.flat[rng.integers(values.size)] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[fill]
    if dtype.kind in "iub":
        if dtype.kind == "b":
            return values > 0.5
        info = np.iinfo(dtype)
        finite = np.nan_to_num(values, nan=0, posinf=info.max, neginf=info.min)
        with np.errstate(invalid="ignore"):
            return np.clip(finite, info.min, info.max).astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype.kind == "c":
            return (values + 1j * values).astype(dtype)
        return values.astype(dtype)


def _sides(max_side):
    return st.one_of(
        st.integers(0, 8),
        st.integers(5, min(40, max_side)),
        st.sampled_from([s for s in (1, 3, 4, 5, 255, 1024, 4096) if s <= max_side]),
    )


CROP = 16
FILLS = st.sampled_from(["zeros", "ones", "unit", "byte", "word", "negative", "nan", "inf", "-inf"])


VALID_DTYPES = ["uint8", "uint16", ">u2", "float16", "float32", ">f4", "float64", "longdouble"]


@st.composite
def random_arrays(draw, ndims=(0, 1, 2, 3, 4, 5), max_side=4096):
    """Anything: any rank, size, dtype and fill."""
    ndim = draw(st.sampled_from(ndims))
    shape = []
    for axis in range(ndim):
        if axis == ndim - 1 and ndim >= 3:
            shape.append(draw(st.one_of(st.sampled_from([1, 3, 4]), st.integers(0, 6))))
        elif axis == 0 and ndim == 4:
            shape.append(draw(st.integers(0, 3)))
        else:
            shape.append(draw(_sides(max_side)))
    return _bounded(shape, draw(st.sampled_from(DTYPES)), draw(FILLS), draw(st.integers(0, 2**16)))


@st.composite
def plausible_arrays(draw, batch=True, size=None, max_side=4096):
    """What a user means to pass: mostly valid, sometimes with one bad value."""
    sides = st.one_of(
        st.integers(MIN_SIDE, min(40, max_side)),
        st.sampled_from([s for s in (1, 3, 4, MIN_SIDE, 255, 1024, 4096) if s <= max_side]),
    )
    height, width = size or (draw(sides), draw(sides))
    channels = draw(st.sampled_from([(1,), (3,), (4,), ()] if batch is False else [(1,), (3,), (4,)]))
    shape = ((draw(st.integers(1, 3)),) if batch else ()) + (height, width) + channels
    if batch:
        # The layouts of issue 11: one image without its batch axis, a
        # grayscale stack without its channel axis, channels first.
        shape = draw(st.sampled_from([shape] * 5 + [shape[1:], shape[:3], (shape[3], *shape[1:3]), (
            shape[0], shape[3], *shape[1:3])]))
    dtype = draw(st.sampled_from(VALID_DTYPES))
    kind = np.dtype(dtype).kind
    fills = {"u": ["byte", "word"] if np.dtype(dtype).itemsize == 2 else ["byte"], "f": ["unit", "zeros", "ones"]}[kind]
    fill = draw(st.sampled_from(fills * 6 + ["nan", "inf", "negative"]))
    return _bounded(shape, dtype, fill, draw(st.integers(0, 2**16)))


def _bounded(shape, dtype, fill, seed):
    # At most one huge image: keep memory and time bounded.
    shape = list(shape)
    if len(shape) == 4 and int(np.prod(shape)) > 20_000_000:
        shape[0] = 1
    if int(np.prod(shape or [1])) > 60_000_000:
        shape = [min(s, 64) for s in shape]
    return _dense(tuple(shape), dtype, fill, seed)


def arrays(ndims=(0, 1, 2, 3, 4, 5), max_side=4096):
    return st.one_of(plausible_arrays(max_side=max_side), random_arrays(ndims, max_side))


def _outcome(images):
    """Run validation and loading: ('ok', float batches) or ('error', exception)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # uint16 with 8-bit values warns
            collection = check_images(images)
            batches = [batch.numpy() for batch in collection.batches(2)]
    except (ValueError, TypeError) as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        event(f"refused: {type(exc).__name__}")
        return "error", exc
    event("accepted")
    return "ok", np.concatenate(batches)


def _assert_outcome(images, reference, shape=None):
    """``reference``: Invalid, or the float RGB images (n, h, w, 3) cropped to
    CROP x CROP pixels, of full size ``shape`` = (n, H, W)."""
    verdict, result = _outcome(images)
    if isinstance(reference, Invalid):
        assert verdict == "error", f"accepted although invalid ({reference})"
        return
    assert verdict == "ok", f"refused a valid input: {result!r}"
    assert result.shape == (shape[0], 3, *shape[1:]) and result.dtype == np.float32
    np.testing.assert_array_equal(result[:, :, :CROP, :CROP], np.moveaxis(reference, -1, 1))


def _reference_or_invalid(function, *args):
    try:
        return function(*args)
    except Invalid as verdict:
        return verdict


# --- check_images on single arrays ---------------------------------------------


@settings(max_examples=300, **FUZZ)
@given(X=arrays())
def test_fuzz_arrays(X):
    if X.ndim == 1 and X.dtype.kind in "OU":
        # A 1-D object or string array is a list: of strings that are no
        # files here, or of numbers; either way an error.
        reference = Invalid("list of non-images")
    else:
        reference = _reference_or_invalid(_reference_array, X, True, CROP)
    _assert_outcome(X, reference, X.shape[:3])


# --- lists of arrays, PIL images, paths and garbage ----------------------------

# Files written once: name -> (reference float image (16, 16, 3) or Invalid).
_FILES = {}
_FILE_DIR = tempfile.mkdtemp(prefix="skpatch-fuzz-")


def _make_files():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, (16, 16), dtype=np.uint16)
    rgb16 = rng.integers(0, 65536, (16, 16, 3), dtype=np.uint16)
    Image.fromarray(rgb).save(os.path.join(_FILE_DIR, "rgb.png"))
    _FILES["rgb.png"] = rgb / np.float32(255)
    Image.fromarray(rgb).save(os.path.join(_FILE_DIR, "rgb.jpg"), quality=100)
    with Image.open(os.path.join(_FILE_DIR, "rgb.jpg")) as jpeg:
        _FILES["rgb.jpg"] = np.asarray(jpeg.convert("RGB")) / np.float32(255)
    Image.fromarray(grey16).save(os.path.join(_FILE_DIR, "grey16.png"))
    _FILES["grey16.png"] = np.repeat((grey16 / np.float32(65535))[..., None], 3, axis=-1)
    write_png16(os.path.join(_FILE_DIR, "rgb16.png"), rgb16)
    _FILES["rgb16.png"] = rgb16 / np.float32(65535)
    Image.fromarray(rgb[..., 0]).convert("P").save(os.path.join(_FILE_DIR, "palette.png"))
    with Image.open(os.path.join(_FILE_DIR, "palette.png")) as palette:
        _FILES["palette.png"] = np.asarray(palette.convert("RGB")) / np.float32(255)
    Image.fromarray(rgb[:3, :3]).save(os.path.join(_FILE_DIR, "tiny.png"))
    _FILES["tiny.png"] = Invalid("too small")
    Image.fromarray(rgb[:, :12]).save(os.path.join(_FILE_DIR, "narrow.png"))
    _FILES["narrow.png"] = np.asarray(rgb[:, :12]) / np.float32(255)  # another size
    with open(os.path.join(_FILE_DIR, "garbage.png"), "wb") as file:
        file.write(b"\x89PNG but not really")
    _FILES["garbage.png"] = Invalid("corrupt")
    data = open(os.path.join(_FILE_DIR, "rgb.png"), "rb").read()
    with open(os.path.join(_FILE_DIR, "truncated.png"), "wb") as file:
        file.write(data[: len(data) // 2])
    _FILES["truncated.png"] = Invalid("truncated")
    _FILES["missing.png"] = Invalid("missing")
    os.mkdir(os.path.join(_FILE_DIR, "folder"))
    _FILES["folder"] = Invalid("folder")


_make_files()
atexit.register(shutil.rmtree, _FILE_DIR, True)


def _pil_image(mode, seed):
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        pixels = rng.integers(0, 65536, (16, 16), dtype=np.uint16)
        return Image.fromarray(pixels), np.repeat((pixels / np.float32(65535))[..., None], 3, axis=-1)
    if mode == "F":
        pixels = rng.random((16, 16)).astype(np.float32) * np.float32(rng.choice([1, 2]))
        reference = np.repeat(pixels[..., None], 3, axis=-1) if pixels.max() <= 1 else Invalid("F range")
        return Image.fromarray(pixels), reference
    image = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).convert(mode)
    return image, np.asarray(image.convert("RGB")) / np.float32(255)


GARBAGE = [None, 3, 2.5, b"bytes", {"a": 1}, [[0, 1]], object(), torch.zeros(3, 16, 16), "no/such/dir/x.png"]


@st.composite
def items(draw, max_side=4096, crop=CROP):
    """One list item and its reference: a float (h, w, 3) image cropped to
    ``crop`` and the item's full (H, W), or Invalid. Plausible items are
    16 x 16, like the files, so that lists of them are valid."""
    kind = draw(st.sampled_from(["plausible"] * 4 + ["pil"] * 2 + ["path"] * 3 + ["array", "garbage"]))
    if kind in ("plausible", "array"):
        if kind == "plausible":
            array = draw(plausible_arrays(batch=False, size=(16, 16)))
        else:
            array = draw(random_arrays(ndims=(1, 2, 3, 4), max_side=max_side))
        reference = _reference_or_invalid(_reference_array, array, False, crop)
        return array, (reference, array.shape[:2])
    if kind == "pil":
        mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "LA", "CMYK", "1", "I;16", "F", "YCbCr"]))
        image, reference = _pil_image(mode, draw(st.integers(0, 100)))
        return image, (reference, (16, 16))
    if kind == "path":
        valid = sorted(n for n, r in _FILES.items() if not isinstance(r, Invalid))
        name = draw(st.sampled_from(valid * 2 + sorted(_FILES)))
        path = os.path.join(_FILE_DIR, name)
        reference = _FILES[name]
        size = (16, 16) if isinstance(reference, Invalid) else reference.shape[:2]
        return (path if draw(st.booleans()) else pathlib.Path(path)), (reference, size)
    garbage = draw(st.sampled_from(GARBAGE))
    reference = Invalid("missing") if isinstance(garbage, str) else Invalid("type")
    return garbage, (reference, (0, 0))


def _list_reference(pairs):
    """The collection's reference and full (n, H, W), from its items'."""
    references = [reference for _, (reference, _) in pairs]
    sizes = [tuple(size) for _, (_, size) in pairs]
    invalid = [r for r in references if isinstance(r, Invalid)]
    if not pairs:
        return Invalid("empty"), None
    if invalid:
        return invalid[0], None
    if len(set(sizes)) > 1:
        return Invalid("sizes differ"), None
    return np.stack(references), (len(pairs), *sizes[0])


@settings(max_examples=200, **FUZZ)
@given(pairs=st.lists(items(), min_size=0, max_size=4), container=st.sampled_from([list, tuple]))
def test_fuzz_lists(pairs, container):
    reference, shape = _list_reference(pairs)
    _assert_outcome(container(item for item, _ in pairs), reference, shape)


@settings(max_examples=40, **FUZZ)
@given(
    garbage=st.sampled_from(
        [None, 0, 1.5, "x.png", b"x", {"a": 1}, {1, 2}, (i for i in range(2)), torch.zeros(1, 3, 8, 8),
         Image.new("RGB", (8, 8)), np.ma.masked_array(np.zeros((1, 8, 8, 3), np.uint8)), range(3)]
    )
)
def test_fuzz_non_collections(garbage):
    verdict, result = _outcome(garbage)
    assert verdict == "error"


# --- through fitted estimators ---------------------------------------------------

SMALL = {"featurizer__weights": None, "featurizer__image_size": 32, "featurizer__embed_dim": 16}


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (4, 24, 24, 3), dtype=np.uint8)
    torch.manual_seed(0)
    featurizer = PatchFeaturizer(weights=None, image_size=32, embed_dim=16).fit(train)
    torch.manual_seed(0)
    clf = SoftPatchClassifier(random_state=0).set_params(denoise__n_neighbors=2, **SMALL).fit(train)
    torch.manual_seed(0)
    seg = SoftPatchSegmenter(random_state=0).set_params(denoise__n_neighbors=2, **SMALL).fit(train)
    return {"featurizer": featurizer.transform, "classifier": clf.score_samples, "segmenter": seg.score_samples}


@st.composite
def small_collections(draw):
    """An array or list of up to 3 images at most 48 px, and its full reference."""
    if draw(st.booleans()):
        X = draw(st.one_of(plausible_arrays(max_side=48), random_arrays(ndims=(2, 3, 4), max_side=48)))
        return X, _reference_or_invalid(_reference_array, X, True)
    pairs = draw(st.lists(items(max_side=48, crop=None), min_size=1, max_size=3))
    reference, _ = _list_reference(pairs)
    return [item for item, _ in pairs], reference


@settings(max_examples=40, **FUZZ)
@given(case=small_collections(), which=st.sampled_from(["featurizer", "classifier", "segmenter"]))
def test_fuzz_fitted_estimators(fitted, case, which):
    images, reference = case
    method = fitted[which]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = method(images)
    except (ValueError, TypeError) as exc:
        assert str(exc).strip()
        assert isinstance(reference, Invalid), f"refused a valid input: {exc!r}"
        event(f"refused: {type(exc).__name__}")
        return
    event("accepted")
    assert not isinstance(reference, Invalid), f"accepted although invalid ({reference})"
    # Same result as for the reference float32 images: nothing was coerced.
    np.testing.assert_array_equal(out, method(np.ascontiguousarray(reference, dtype=np.float32)))


@settings(max_examples=10, **FUZZ)
@given(case=small_collections(), cls=st.sampled_from([SoftPatchClassifier, SoftPatchSegmenter]))
def test_fuzz_fit(case, cls):
    images, reference = case
    probe = np.random.default_rng(1).integers(0, 256, (2, 20, 20, 3), dtype=np.uint8)
    estimator = cls(random_state=0).set_params(denoise__n_neighbors=1, **SMALL)
    torch.manual_seed(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            estimator.fit(images)
    except (ValueError, TypeError) as exc:
        assert str(exc).strip()
        # One valid image is still too few for the noise discriminator.
        assert isinstance(reference, Invalid) or len(reference) < 2, f"refused a valid input: {exc!r}"
        event(f"refused: {type(exc).__name__}")
        return
    event("accepted")
    assert not isinstance(reference, Invalid), f"accepted although invalid ({reference})"
    torch.manual_seed(0)
    twin = cls(random_state=0).set_params(denoise__n_neighbors=1, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        twin.fit(np.ascontiguousarray(reference, dtype=np.float32))
    np.testing.assert_array_equal(estimator.score_samples(probe), twin.score_samples(probe))
