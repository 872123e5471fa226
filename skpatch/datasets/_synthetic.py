"""Synthetic images with planted defects and exact ground-truth masks.

Every data set drawn here shares one *style* (colours, texture frequencies,
object geometry) drawn once from ``random_state``; each image then adds a small
jitter and pixel noise, so good images look alike statistically, exactly like
the images of one MVTec AD category. A defect is pasted onto a rendered good
image with an alpha map, and its mask is ``alpha > 0.5``: outside the mask the
pixels are untouched (a stain's soft rim aside, whose change stays below half
of the full effect).

The default settings reproduce the first release's images bit for bit; the
harder settings (small and faint defects, per-image variation, recurring
defects, the ``"grain"`` and ``"board"`` kinds) draw extra random numbers only
when they are asked for.
"""

import math
from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

# The default defect types, drawn when ``defect_types`` is left alone.
DEFECT_TYPES = ("scratch", "hole", "stain", "missing")
# Every known type: "wrong_colour" is opt-in, so the defaults stay as they were.
ALL_DEFECT_TYPES = (*DEFECT_TYPES, "wrong_colour")
KINDS = ("texture", "object", "grain", "board")

# Intensities are in 0..255 units throughout.
_NOISE_STD = 3.0
# Stain colours: rust, oil and bleach differ from any grey the styles produce
# by tens of intensity levels, so a stain is always visible.
_STAIN_COLOURS = np.array(
    [[150.0, 80.0, 30.0], [60.0, 50.0, 40.0], [235.0, 230.0, 210.0]], dtype=np.float32
)
# Hues of a discoloured region, scaled to mean 1 so that the region keeps the
# surface's brightness and texture and changes only its colour.
_TINTS = np.array(
    [[1.45, 0.85, 0.70], [0.70, 0.95, 1.35], [0.85, 1.30, 0.85], [1.30, 0.75, 1.20]],
    dtype=np.float32,
)
_TINTS /= _TINTS.mean(axis=1, keepdims=True)
# Board solder masks (green, blue, beige) and part colours (orange, blue,
# yellow, red, green).
_BOARD_COLOURS = np.array(
    [[38.0, 100.0, 58.0], [30.0, 62.0, 110.0], [120.0, 112.0, 90.0]], dtype=np.float32
)
_PART_COLOURS = np.array(
    [
        [200.0, 120.0, 40.0],
        [45.0, 85.0, 190.0],
        [205.0, 185.0, 55.0],
        [185.0, 45.0, 45.0],
        [60.0, 175.0, 80.0],
    ],
    dtype=np.float32,
)
# Board layout, in fractions of the image size from the board's centre: six
# part cells in two rows of three, and a screw near each corner.
_CELL_ROWS = (-0.12, 0.12)
_CELL_COLS = (-0.23, 0.0, 0.23)
_SCREW_INSET = 0.05
# Part sizes as fractions of the image size (at least one pixel, so that no
# part vanishes from a small image).
_CHIP_HALF = (0.055, 0.085)
_CAP_RADIUS = 0.06
_LED_HALF = 0.035
_SCREW_RADIUS = 0.035
# Part defects (a board part missing or recoloured) take the part's size.
_PART_DEFECTS = ("missing", "wrong_colour")

_MAX_SEED = np.iinfo(np.int32).max
# Rescaling a defect to its drawn area: attempts per position, and positions.
_MAX_RESIZES = 8
_MAX_PLACEMENTS = 10

_COMMON_CONSTRAINTS = {
    "image_size": [Interval(Integral, 16, None, closed="left")],
    "kind": [StrOptions(set(KINDS))],
    "defect_types": [str, "array-like"],
    "defect_area": [None, "array-like"],
    "contrast": [Interval(Real, 0, 1, closed="right"), "array-like"],
    "variation": [Interval(Real, 0, 3, closed="both")],
    "recurrence": [Interval(Real, 0, 1, closed="both")],
    "random_state": ["random_state"],
}

# Shared parameter text of make_defects and make_defect_dataset.
_HARDER_PARAMS_DOC = """\
    defect_area : (float, float) or None, default=None
        Range of the fraction of the image that a defect's mask covers. Each
        defect draws a target area log-uniformly in this range and is
        rescaled (position, shape and look kept) until its mask covers a
        fraction in the range, e.g. ``(0.005, 0.03)`` for small defects. A
        size the resolution cannot represent (a few pixels) is approximated
        by the closest one found. It does not apply to a board part that is
        ``"missing"`` or ``"wrong_colour"``, whose mask is the part (about
        0.4% to 2% of the image). None keeps each type's own size: about 0.4%
        to 1.1% of the image for holes and scratches, 1% to 2.5% for
        recoloured regions, 1% to 5% for stains and up to 6.5% for missing
        regions.

    contrast : float in (0, 1] or (float, float), default=1.0
        Strength of a defect: the image becomes
        ``good + contrast * alpha * (defect look - good)``, so 1 pastes the
        full defect and 0.3 a faint one of the same place and shape (the mask
        does not depend on it). A pair draws each defect's contrast uniformly
        in that range. A board's missing part is always missing in full (a
        recoloured part at contrast 0.5 is a part in a nearby, wrong shade).

    variation : float in [0, 3], default=0.0
        Extra per-image variation of the good appearance, as between real
        parts: a brightness change (standard deviation ``0.07 * variation``)
        and a linear lighting gradient (up to ``30 * variation`` intensity
        levels across the image) for every kind; a shift of the object or
        board (standard deviation ``0.035 * variation`` of the image size)
        and, for objects, of its size; a small rotation of the texture's
        gratings; a change of the grain's strength. 0 keeps the small jitter
        of the default look.

    recurrence : float in [0, 1], default=0.0
        How alike the defects of one type are across images. Every random
        choice of a defect (place, size, orientation, colour, which part)
        is ``recurrence * prototype + (1 - recurrence) * independent draw``,
        from one prototype per type and data set (a discrete choice takes the
        prototype's with probability ``recurrence``). At 1 every defect of a
        type has the same place, relative to the object, shape and look, up to
        pixel noise: the same part missing from many boards, as when one
        machine step fails repeatedly. 0 draws every defect independently.
"""


def _doc(function):
    function.__doc__ = function.__doc__.replace("{harder_params}", _HARDER_PARAMS_DOC.rstrip())
    return function


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "defect_ratio": [Interval(Real, 0, 1, closed="both")],
        "return_bunch": ["boolean"],
        **_COMMON_CONSTRAINTS,
    },
    prefer_skip_nested_validation=True,
)
@_doc
def make_defects(
    n_samples=100,
    *,
    image_size=64,
    kind="texture",
    defect_ratio=0.5,
    defect_types=DEFECT_TYPES,
    defect_area=None,
    contrast=1.0,
    variation=0.0,
    recurrence=0.0,
    return_bunch=False,
    random_state=None,
):
    """Generate synthetic images with planted defects and exact masks.

    A generator in the spirit of :func:`sklearn.datasets.make_blobs` for
    image anomaly detection: all images share one randomly drawn look (a
    texture, a centred object or a board with parts); a fraction of them
    carries one defect each, whose pixels are given by a boolean mask.

    The defaults give large, high-contrast defects on images that barely
    differ from one another: easy for any detector. ``defect_area``,
    ``contrast``, ``variation``, ``recurrence``, ``kind="grain"`` and
    ``kind="board"`` make harder data sets (small and faint defects, varying
    good images, the same defect recurring in many images); see the user
    guide for the settings of the project's benchmark.

    Parameters
    ----------
    n_samples : int, default=100
        Number of images.

    image_size : int, default=64
        Height and width of the square images, at least 16. Texture
        frequencies and defect sizes are relative to it, so a data set looks
        the same at 64 and at 256 pixels.

    kind : {"texture", "object", "grain", "board"}, default="texture"
        ``"texture"``: a stationary pattern of oriented gratings (like a
        fabric or a grid). ``"object"``: a disc-shaped, bottle-top-like object
        centred on a plain background. ``"grain"``: a random stationary
        surface (like leather, wood or cast metal), a new realisation in
        every image, so no two good images have the same pixels.
        ``"board"``: a circuit board with parts (two chips, three capacitors,
        a LED and four corner screws at fixed places on a fibre-weave solder
        mask with copper traces), an object made of parts for logical
        defects.

    defect_ratio : float in [0, 1], default=0.5
        Fraction of defective images; exactly
        ``round(defect_ratio * n_samples)`` images are defective, at random
        positions.

    defect_types : str or sequence of str, default=("scratch", "hole", "stain", "missing")
        Defect types to draw from, uniformly, one per defective image:
        ``"scratch"`` (a thin line of contrasting intensity), ``"hole"`` (a
        small dark disc), ``"stain"`` (a soft-edged blob of another colour),
        ``"missing"`` (a region replaced by flat substrate colour; for
        objects, a chunk bitten off the object's rim; for boards, a missing
        part, showing the bare board) and ``"wrong_colour"`` (a region of the
        surface, or for boards a coloured part, in another hue at the same
        brightness).

{harder_params}

    return_bunch : bool, default=False
        If True, return a :class:`~sklearn.utils.Bunch` instead of a tuple.

    random_state : int, RandomState instance or None, default=None
        Seed of every random choice: the shared look, the per-image jitter,
        which images are defective and the defects themselves.

    Returns
    -------
    X : ndarray of shape (n_samples, image_size, image_size, 3), dtype uint8
        The images.

    y : ndarray of shape (n_samples,), dtype int
        1 for a defective image, 0 for a good one.

    masks : ndarray of shape (n_samples, image_size, image_size), dtype bool
        True on defective pixels; all False for good images, never empty for
        defective ones.

    data : :class:`~sklearn.utils.Bunch`
        Returned instead of the tuple when ``return_bunch=True``, with keys
        ``images``, ``labels``, ``masks`` (as above), ``defect_types``
        (ndarray of str, ``"good"`` or the type of each image's defect) and
        ``DESCR``.

    See Also
    --------
    make_defect_dataset : The same images split into a training and a test set.
    make_noisy_split : Inject defective images into a training set.

    Examples
    --------
    >>> from skpatch.datasets import make_defects
    >>> X, y, masks = make_defects(n_samples=10, image_size=32, random_state=0)
    >>> X.shape, X.dtype, masks.shape
    ((10, 32, 32, 3), dtype('uint8'), (10, 32, 32))
    >>> int(y.sum())
    5
    >>> bool(masks[y == 0].any()), bool(masks[y == 1].any(axis=(1, 2)).all())
    (False, True)
    >>> data = make_defects(4, image_size=32, kind="object", defect_ratio=1.0,
    ...                     defect_types="hole", return_bunch=True, random_state=0)
    >>> data.defect_types.tolist()
    ['hole', 'hole', 'hole', 'hole']

    Small, faint defects on a varying random surface:

    >>> X, y, masks = make_defects(20, image_size=128, kind="grain",
    ...                            defect_area=(0.005, 0.03), contrast=0.5,
    ...                            variation=1.0, random_state=0)
    >>> area = masks[y == 1].mean(axis=(1, 2))
    >>> bool(area.min() >= 0.005 and area.max() <= 0.03)
    True

    The same part missing from every defective board:

    >>> X, y, masks = make_defects(6, image_size=64, kind="board",
    ...                            defect_types="missing", defect_ratio=1.0,
    ...                            recurrence=1.0, random_state=0)
    >>> bool((masks == masks[0]).mean() > 0.99)
    True
    """
    defect_types = _check_defect_types(defect_types)
    settings = _check_harder_settings(defect_area, contrast, variation, recurrence)
    rng = check_random_state(random_state)
    types = _draw_image_types(n_samples, defect_ratio, defect_types, rng)
    X, _, masks = _generate(types, image_size, kind, rng, **settings)
    y = (types != "good").astype(int)
    if not return_bunch:
        return X, y, masks
    return Bunch(
        images=X,
        labels=y,
        masks=masks,
        defect_types=types,
        DESCR=_describe(kind, image_size, {"images": types}, settings),
    )


@validate_params(
    {
        "n_train": [Interval(Integral, 1, None, closed="left")],
        "n_test": [Interval(Integral, 1, None, closed="left")],
        "test_defect_ratio": [Interval(Real, 0, 1, closed="both")],
        **_COMMON_CONSTRAINTS,
    },
    prefer_skip_nested_validation=True,
)
@_doc
def make_defect_dataset(
    n_train=50,
    n_test=40,
    *,
    test_defect_ratio=0.5,
    image_size=64,
    kind="texture",
    defect_types=DEFECT_TYPES,
    defect_area=None,
    contrast=1.0,
    variation=0.0,
    recurrence=0.0,
    random_state=None,
):
    """Generate a synthetic train/test data set in the layout of :func:`load_mvtec`.

    The training images are all good, the test images are a mix of good and
    defective ones; all share one look, as in one category of MVTec AD. The
    result can be passed to :func:`make_noisy_split`.

    Parameters
    ----------
    n_train : int, default=50
        Number of (good) training images.

    n_test : int, default=40
        Number of test images.

    test_defect_ratio : float in [0, 1], default=0.5
        Fraction of defective test images; exactly
        ``round(test_defect_ratio * n_test)`` of them are defective.

    image_size : int, default=64
        Height and width of the square images, at least 16.

    kind : {"texture", "object", "grain", "board"}, default="texture"
        The look of the images, see :func:`make_defects`.

    defect_types : str or sequence of str, default=("scratch", "hole", "stain", "missing")
        Defect types to draw from, see :func:`make_defects`.

{harder_params}

    random_state : int, RandomState instance or None, default=None
        Seed of every random choice.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        With the keys of :func:`load_mvtec` in eager mode:

        - ``train_images``: uint8 ndarray of shape (n_train, H, W, 3);
        - ``train_labels``: int ndarray of zeros;
        - ``test_images``: uint8 ndarray of shape (n_test, H, W, 3);
        - ``test_labels``: int ndarray, 1 = defective;
        - ``test_defect_types``: ndarray of str, ``"good"`` or the type;
        - ``test_masks``: bool ndarray of shape (n_test, H, W);
        - ``root``: None; ``category``: ``kind``; ``DESCR``.

    See Also
    --------
    make_defects : The underlying image generator.
    load_mvtec : Load a real data set in the same layout.
    make_noisy_split : Inject defective test images into the training set.

    Examples
    --------
    >>> from skpatch.datasets import make_defect_dataset, make_noisy_split
    >>> data = make_defect_dataset(n_train=10, n_test=8, image_size=32,
    ...                            random_state=0)
    >>> data.train_images.shape, data.test_images.shape
    ((10, 32, 32, 3), (8, 32, 32, 3))
    >>> data.test_labels.tolist()
    [0, 1, 1, 0, 0, 0, 1, 1]
    >>> noisy = make_noisy_split(data, 0.2, random_state=0)
    >>> int(noisy.train_labels.sum()), len(noisy.test_images)
    (2, 6)
    """
    defect_types = _check_defect_types(defect_types)
    settings = _check_harder_settings(defect_area, contrast, variation, recurrence)
    rng = check_random_state(random_state)
    test_types = _draw_image_types(n_test, test_defect_ratio, defect_types, rng)
    types = np.concatenate([np.full(n_train, "good"), test_types])
    X, _, masks = _generate(types, image_size, kind, rng, **settings)
    return Bunch(
        train_images=X[:n_train],
        train_labels=np.zeros(n_train, dtype=int),
        test_images=X[n_train:],
        test_labels=(test_types != "good").astype(int),
        test_defect_types=test_types,
        test_masks=masks[n_train:],
        root=None,
        category=kind,
        DESCR=_describe(
            kind,
            image_size,
            {"train": np.full(n_train, "good"), "test": test_types},
            settings,
        ),
    )


def _check_defect_types(defect_types):
    """Return ``defect_types`` as a non-empty tuple of known names."""
    if isinstance(defect_types, str):
        defect_types = (defect_types,)
    defect_types = tuple(defect_types)
    if not defect_types:
        msg = f"defect_types must name at least one of {ALL_DEFECT_TYPES}; got none."
        raise ValueError(msg)
    unknown = [name for name in defect_types if name not in ALL_DEFECT_TYPES]
    if unknown:
        msg = f"Unknown defect type(s) {unknown}; choose among {ALL_DEFECT_TYPES}."
        raise ValueError(msg)
    return defect_types


def _check_harder_settings(defect_area, contrast, variation, recurrence):
    """Validate the settings that make harder data sets; return them as keywords."""
    if defect_area is not None:
        defect_area = _check_range(defect_area, "defect_area", upper=0.2)
    if not isinstance(contrast, Real):
        contrast = _check_range(contrast, "contrast", upper=1.0)
    return {
        "defect_area": defect_area,
        "contrast": contrast,
        "variation": float(variation),
        "recurrence": float(recurrence),
    }


def _check_range(value, name, *, upper):
    """A ``(low, high)`` pair with ``0 < low <= high <= upper``, as floats."""
    try:
        low, high = (float(v) for v in np.asarray(value, dtype=float).reshape(-1))
    except (TypeError, ValueError):
        msg = f"{name} must be a pair (low, high) of numbers; got {value!r}."
        raise ValueError(msg) from None
    if not 0 < low <= high <= upper:
        msg = f"{name} must satisfy 0 < low <= high <= {upper}; got {value!r}."
        raise ValueError(msg)
    return low, high


def _draw_image_types(n_images, defect_ratio, defect_types, rng):
    """Return an array of str: ``"good"`` or the defect type of each image."""
    n_defective = round(defect_ratio * n_images)
    defective = rng.permutation(n_images)[:n_defective]
    choice = rng.randint(len(defect_types), size=n_defective)
    types = np.full(n_images, "good", dtype=object)
    types[defective] = [defect_types[j] for j in choice]
    return types.astype(str)


def _generate(
    types, size, kind, rng, *, defect_area=None, contrast=1.0, variation=0.0, recurrence=0.0
):
    """Render one image per entry of ``types``, all in one shared style.

    Returns the images, the same images before any defect was pasted (for
    tests) and the masks.
    """
    style = _STYLE_DRAWERS[kind](rng)
    # Pixel noise is the bulk of the random numbers; a Generator seeded from
    # ``rng`` draws it several times faster than RandomState, reproducibly.
    noise_rng = np.random.default_rng(rng.randint(_MAX_SEED))
    defects = {"defect_area": defect_area, "contrast": contrast, "recurrence": recurrence}
    # Resizing and recurring defects replay a defect's random draws, from a
    # seed per defect and a prototype seed per type. Drawn only when needed,
    # so that the default images stay those of the first release.
    defects["replay"] = defect_area is not None or recurrence > 0
    if defects["replay"]:
        defects["prototypes"] = {name: rng.randint(_MAX_SEED) for name in ALL_DEFECT_TYPES}
    images = np.empty((len(types), size, size, 3), dtype=np.uint8)
    clean = np.empty_like(images)
    masks = np.zeros((len(types), size, size), dtype=bool)
    for i, defect_type in enumerate(types):
        rendered, support, region = _RENDERERS[kind](style, size, rng, noise_rng, variation)
        clean[i] = _to_uint8(rendered)
        if defect_type == "good":
            images[i] = clean[i]
            continue
        # Paste onto the quantised image, so that pixels with alpha == 0 stay
        # bit-identical to the good rendering.
        base = clean[i].astype(np.float32)
        alpha, look, strength = _draw_defect(
            defect_type, base, support, region, style, size, rng, noise_rng, defects
        )
        images[i] = _to_uint8(base + (np.float32(strength) * alpha)[..., None] * (look - base))
        masks[i] = alpha > 0.5
    return images, clean, masks


def _draw_defect(defect_type, base, support, region, style, size, rng, noise_rng, defects):
    """``(alpha, look, contrast)`` of one defect, drawn as ``defects`` says."""
    draw = _DEFECTS[defect_type]
    if not defects["replay"]:
        alpha, look = draw(base, support, region, style, size, rng, noise_rng)
        strength = _draw_contrast(defects["contrast"], rng)
        return alpha, look, _part_strength(defect_type, region, strength)

    def attempt(seed, scale):
        source = _RecurringDraws(
            defects["prototypes"][defect_type], seed, defects["recurrence"]
        )
        # The target size and contrast come first from the (replayed)
        # draws, so that they recur with the place and look.
        size_draw = source.uniform()
        strength = _draw_contrast(defects["contrast"], source)
        alpha, look = draw(
            base, support, region, style, size, source, np.random.default_rng(seed), scale=scale
        )
        return size_draw, strength, alpha, look

    area_range = defects["defect_area"]
    if area_range is None or (region[0] == "rect" and defect_type in _PART_DEFECTS):
        _, strength, alpha, look = attempt(rng.randint(_MAX_SEED), 1.0)
        return alpha, look, _part_strength(defect_type, region, strength)
    low, high = area_range
    best = None
    for _ in range(_MAX_PLACEMENTS):
        seed, scale = rng.randint(_MAX_SEED), 1.0
        for _ in range(_MAX_RESIZES):
            size_draw, strength, alpha, look = attempt(seed, scale)
            target = low * (high / low) ** size_draw
            area = np.count_nonzero(alpha > 0.5) / size**2
            error = abs(math.log(area / target)) if area else math.inf
            if best is None or error < best[0]:
                best = (error, alpha, look, strength)
            if low <= area <= high:
                return alpha, look, strength
            # Area grows about as the square of the linear scale.
            scale *= math.sqrt(target / area) if area else 2.0
    return best[1:]


def _part_strength(defect_type, region, strength):
    # A board's part is there or not: a faint missing part would be a ghost.
    return 1.0 if region[0] == "rect" and defect_type == "missing" else strength


def _draw_contrast(contrast, rng):
    if isinstance(contrast, Real):
        return float(contrast)
    return float(rng.uniform(*contrast))


class _RecurringDraws:
    """Random draws pulled towards those of a prototype defect.

    Every defect of one type replays the same prototype stream, so the n-th
    draw means the same thing (a position, a size, a colour) in each; a
    continuous draw is ``recurrence * prototype + (1 - recurrence) * fresh``
    and a discrete one is the prototype's with probability ``recurrence``.
    """

    def __init__(self, prototype_seed, seed, recurrence):
        self._prototype = np.random.RandomState(prototype_seed)
        self._fresh = np.random.RandomState(seed)
        self._weight = recurrence

    def _blend(self, prototype, fresh):
        return self._weight * prototype + (1 - self._weight) * fresh

    def uniform(self, low=0.0, high=1.0, size=None):
        return self._blend(
            self._prototype.uniform(low, high, size), self._fresh.uniform(low, high, size)
        )

    def normal(self, loc=0.0, scale=1.0, size=None):
        return self._blend(
            self._prototype.normal(loc, scale, size), self._fresh.normal(loc, scale, size)
        )

    def randint(self, high, size=None):
        prototype = self._prototype.randint(high, size=size)
        fresh = self._fresh.randint(high, size=size)
        keep = self._fresh.uniform(size=size) < self._weight
        chosen = np.where(keep, prototype, fresh)
        return int(chosen) if size is None else chosen


def _to_uint8(image):
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _grid(size):
    """Row and column coordinates, broadcastable to ``(size, size)``."""
    coords = np.arange(size, dtype=np.float32)
    return coords[:, None], coords[None, :]


def _luminance_noise(size, noise_rng, std=_NOISE_STD):
    return noise_rng.standard_normal((size, size), dtype=np.float32) * np.float32(std)


def _lighting(size, variation, rng):
    """Per-image brightness gain and a linear lighting gradient ``(size, size)``."""
    gain = np.float32(1 + rng.normal(0, 0.07 * variation))
    angle = rng.uniform(0, 2 * np.pi)
    # Levels of change from one side of the image to the other.
    amplitude = rng.uniform(0.3, 1.0) * 30 * variation
    rows, cols = _grid(size)
    centre = (size - 1) / 2
    ramp = (rows - centre) * np.float32(np.sin(angle)) + (cols - centre) * np.float32(
        np.cos(angle)
    )
    return gain, ramp * np.float32(amplitude / size)


def _apply_lighting(image, lighting):
    gain, ramp = lighting
    return image * gain + ramp[..., None]


def _whole_image_surface(style, intensity, size, rng, variation):
    """A surface that fills the image (texture, grain): its colour image from
    the ``intensity`` field, lit, with defects allowed anywhere."""
    image = style["base"] + intensity[..., None] * style["gain"]
    if variation:
        image = _apply_lighting(image, _lighting(size, variation, rng))
    support = np.ones((size, size), dtype=bool)
    return image, support, ("box", size)


# --- Styles and renderers -------------------------------------------------
# A region says where defects may be centred: the whole image ("box"), the
# object's disc, given by its centre and radius, or a board ("rect", with its
# edges, its parts and its bare substrate).


def _draw_texture_style(rng):
    first_angle = rng.uniform(0, np.pi)
    base = rng.uniform(105, 135) + rng.uniform(-12, 12, size=3)
    return {
        "base": base.astype(np.float32),
        "gain": (1 + rng.uniform(-0.15, 0.15, size=3)).astype(np.float32),
        # Frequencies in cycles per image, so the look does not depend on size.
        "cycles": rng.uniform(4, 10, size=3),
        "angles": first_angle
        + np.array([0, np.pi / 3, 2 * np.pi / 3])
        + rng.uniform(-0.2, 0.2, size=3),
        "amplitudes": rng.uniform(10, 18, size=3),
        # Bare substrate under the pattern: brighter than any texture mean.
        "substrate": np.clip(base + rng.uniform(40, 55), 0, 255).astype(np.float32),
    }


def _render_texture(style, size, rng, noise_rng, variation=0.0):
    rows = np.arange(size, dtype=np.float64)
    intensity = _luminance_noise(size, noise_rng) + np.float32(rng.normal(0, 3))
    rotation = rng.normal(0, 0.08 * variation) if variation else 0.0
    for cycles, angle, amplitude in zip(
        style["cycles"], style["angles"], style["amplitudes"]
    ):
        wavenumber = 2 * np.pi * cycles * (1 + rng.normal(0, 0.02)) / size
        angle = angle + rng.normal(0, 0.03) + rotation
        phase = rng.uniform(0, 2 * np.pi)
        along_x = wavenumber * np.cos(angle) * rows + phase
        along_y = wavenumber * np.sin(angle) * rows
        # cos(a + b) as a difference of outer products: O(size) trigonometry.
        grating = np.outer(np.cos(along_y), np.cos(along_x)) - np.outer(
            np.sin(along_y), np.sin(along_x)
        )
        intensity += (amplitude * grating).astype(np.float32)
    return _whole_image_surface(style, intensity, size, rng, variation)


def _draw_object_style(rng):
    return {
        "background": (rng.uniform(25, 50) + rng.uniform(-6, 6, size=3)).astype(
            np.float32
        ),
        "face": rng.uniform(140, 175),
        "tint": (1 + rng.uniform(-0.12, 0.12, size=3)).astype(np.float32),
        "radius": rng.uniform(0.28, 0.33),
        "rim": rng.uniform(30, 50),
        "ripples": rng.uniform(2.5, 4.0),
    }


def _render_object(style, size, rng, noise_rng, variation=0.0):
    # Python floats, not NumPy float64 scalars, keep the arithmetic in float32.
    centre_y, centre_x = ((size - 1) / 2 + rng.normal(0, 0.015 * size, size=2)).tolist()
    radius = float(style["radius"] * size * (1 + rng.normal(0, 0.01)))
    gain = float(1 + rng.normal(0, 0.03))
    if variation:
        shift_y, shift_x = rng.normal(0, 0.035 * variation * size, size=2).tolist()
        centre_y, centre_x = centre_y + shift_y, centre_x + shift_x
        radius = radius * float(1 + rng.normal(0, 0.03 * variation))
    rows, cols = _grid(size)
    relative = np.hypot(rows - centre_y, cols - centre_x) / np.float32(radius)
    face = style["face"] * (1 - 0.18 * relative**2) + 6 * np.cos(
        2 * np.pi * style["ripples"] * relative
    )
    face = np.where(relative > 0.86, face + style["rim"], face)
    # A specular highlight up-left of the centre, as on a lit bottle cap.
    offset = 0.35 * radius
    spot = (rows - centre_y + offset) ** 2 + (cols - centre_x + offset) ** 2
    face = face + 35 * np.exp(-spot / (2 * (0.15 * radius) ** 2))
    noise = _luminance_noise(size, noise_rng)
    inside = relative <= 1
    image = np.where(
        inside[..., None],
        ((face * gain).astype(np.float32) + noise)[..., None] * style["tint"],
        style["background"] + noise[..., None],
    )
    if variation:
        image = _apply_lighting(image, _lighting(size, variation, rng))
    return image, inside, ("disc", centre_y, centre_x, radius)


def _draw_grain_style(rng):
    base = rng.uniform(90, 150) + rng.uniform(-18, 18, size=3)
    return {
        "base": base.astype(np.float32),
        "gain": (1 + rng.uniform(-0.15, 0.15, size=3)).astype(np.float32),
        # Widths (fractions of the size) of the coarse grain, stretched along
        # one axis as in wood or brushed metal, and of the fine grain.
        "coarse": rng.uniform(0.012, 0.025),
        "stretch": rng.uniform(1.0, 3.0),
        "axis": rng.randint(2),
        "fine": rng.uniform(0.003, 0.006),
        "mix": rng.uniform(0.4, 0.7),
        # Standard deviation of the grain, in intensity levels.
        "amplitude": rng.uniform(9, 14),
        # Exposed under-layer: darker than the surface.
        "substrate": np.clip(base - rng.uniform(45, 60), 0, 255).astype(np.float32),
        "filters": {},
    }


def _grain_filter(style, size):
    """Real-FFT filter that turns white noise into the style's unit-variance grain."""
    if size not in style["filters"]:
        freq_y = np.abs(np.fft.fftfreq(size))[:, None]
        freq_x = np.abs(np.fft.fftfreq(size))[None, :]

        def gaussian(width):
            # A Gaussian blur of standard deviation ``width`` pixels, stretched.
            sigma_y = sigma_x = width * size
            if style["axis"]:
                sigma_y = sigma_y * style["stretch"]
            else:
                sigma_x = sigma_x * style["stretch"]
            response = np.exp(-2 * np.pi**2 * ((sigma_y * freq_y) ** 2 + (sigma_x * freq_x) ** 2))
            return response / np.sqrt(np.mean(response**2))

        response = np.sqrt(style["mix"]) * gaussian(style["coarse"]) + np.sqrt(
            1 - style["mix"]
        ) * gaussian(style["fine"])
        response /= np.sqrt(np.mean(response**2))
        style["filters"][size] = response[:, : size // 2 + 1]
    return style["filters"][size]


def _render_grain(style, size, rng, noise_rng, variation=0.0):
    white = noise_rng.standard_normal((size, size))
    grain = np.fft.irfft2(np.fft.rfft2(white) * _grain_filter(style, size), s=(size, size))
    amplitude = style["amplitude"] * (1 + rng.normal(0, 0.1 * variation) if variation else 1)
    intensity = (
        (amplitude * grain).astype(np.float32)
        + _luminance_noise(size, noise_rng)
        + np.float32(rng.normal(0, 3))
    )
    return _whole_image_surface(style, intensity, size, rng, variation)


def _draw_board_style(rng):
    cells = [(row, col) for row in _CELL_ROWS for col in _CELL_COLS]
    kinds = rng.permutation(["chip", "chip", "cap", "cap", "cap", "led"]).tolist()
    half = (rng.uniform(0.29, 0.31), rng.uniform(0.38, 0.40))
    screws = [
        (sign_y * (half[0] - _SCREW_INSET), sign_x * (half[1] - _SCREW_INSET))
        for sign_y in (-1, 1)
        for sign_x in (-1, 1)
    ]
    cap_colour, led_colour = rng.choice(len(_PART_COLOURS), size=2, replace=False)
    colours = {"cap": _PART_COLOURS[cap_colour], "led": _PART_COLOURS[led_colour]}
    return {
        "background": (rng.uniform(18, 35) + rng.uniform(-4, 4, size=3)).astype(np.float32),
        "board": (
            _BOARD_COLOURS[rng.randint(len(_BOARD_COLOURS))] + rng.uniform(-8, 8, size=3)
        ).astype(np.float32),
        "half": half,
        "parts": [
            (kind, centre, colours.get(kind)) for kind, centre in zip(kinds, cells)
        ]
        + [("screw", centre, None) for centre in screws],
        # Copper traces: (vertical?, offset as a fraction of the half size).
        "traces": [(rng.randint(2), rng.uniform(-0.85, 0.85)) for _ in range(5)],
        "weave": rng.uniform(14, 20),
    }


def _render_board(style, size, rng, noise_rng, variation=0.0):
    centre = (size - 1) / 2 + rng.normal(0, 0.01 * size, size=2)
    if variation:
        centre = centre + rng.normal(0, 0.035 * variation * size, size=2)
    centre_y, centre_x = centre.tolist()
    half_y, half_x = style["half"][0] * size, style["half"][1] * size
    rows, cols = _grid(size)
    from_y, from_x = rows - np.float32(centre_y), cols - np.float32(centre_x)
    on_board = (np.abs(from_y) <= half_y) & (np.abs(from_x) <= half_x)
    # Solder mask with a faint glass-fibre weave and lighter copper traces.
    phase_y, phase_x = rng.uniform(0, 2 * np.pi, size=2).tolist()
    frequency = np.float32(2 * np.pi * style["weave"] / size)
    weave = 3 * np.cos(frequency * from_y + np.float32(phase_y)) + 3 * np.cos(
        frequency * from_x + np.float32(phase_x)
    )
    trace_width = max(0.6, 0.007 * size)
    traces = np.zeros((size, size), dtype=bool)
    for vertical, offset in style["traces"]:
        if vertical:
            traces |= np.abs(from_x - np.float32(offset * half_x)) <= trace_width
        else:
            traces |= np.abs(from_y - np.float32(offset * half_y)) <= trace_width
    noise = _luminance_noise(size, noise_rng)
    surface = style["board"] + (weave + 22 * traces + noise)[..., None]
    substrate = np.where(
        on_board[..., None], surface, style["background"] + noise[..., None]
    )
    image = substrate.copy()
    parts = []
    for kind, (offset_y, offset_x), colour in style["parts"]:
        part_y = centre_y + offset_y * size + rng.normal(0, 0.003 * size)
        part_x = centre_x + offset_x * size + rng.normal(0, 0.003 * size)
        footprint, look = _PART_RENDERERS[kind](
            rows - np.float32(part_y), cols - np.float32(part_x), size, colour, noise_rng
        )
        image = np.where(footprint[..., None], look, image)
        parts.append({"kind": kind, "footprint": footprint, "colour": colour})
    lighting = (np.float32(1 + rng.normal(0, 0.03)), np.zeros((size, size), np.float32))
    if variation:
        gain, ramp = _lighting(size, variation, rng)
        lighting = (lighting[0] * gain, ramp)
    image = _apply_lighting(image, lighting)
    substrate = _apply_lighting(substrate, lighting)
    edges = (centre_y - half_y, centre_x - half_x, centre_y + half_y, centre_x + half_x)
    return image, on_board, ("rect", *edges, parts, substrate)


def _chip(from_y, from_x, size, colour, noise_rng):
    """A dark package with a light pin-1 dot."""
    half_y, half_x = max(1.0, _CHIP_HALF[0] * size), max(1.0, _CHIP_HALF[1] * size)
    footprint = (np.abs(from_y) <= half_y) & (np.abs(from_x) <= half_x)
    dot = (from_y + 0.55 * half_y) ** 2 + (from_x + 0.7 * half_x) ** 2 <= (0.25 * half_y) ** 2
    level = 42 + 75 * dot + _luminance_noise(size, noise_rng)
    return footprint, level[..., None] * np.array([1.0, 1.0, 1.05], dtype=np.float32)


def _capacitor(from_y, from_x, size, colour, noise_rng):
    """A coloured disc, shaded, with a specular highlight."""
    radius = max(1.0, _CAP_RADIUS * size)
    distance = np.hypot(from_y, from_x) / np.float32(radius)
    spot = (from_y + 0.35 * radius) ** 2 + (from_x + 0.35 * radius) ** 2
    highlight = 45 * np.exp(-spot / (2 * (0.2 * radius) ** 2))
    shade = 1 - 0.3 * distance**2
    look = colour * shade[..., None] + (highlight + _luminance_noise(size, noise_rng))[..., None]
    return distance <= 1, look


def _led(from_y, from_x, size, colour, noise_rng):
    """A small coloured square, brightest at its centre."""
    half = max(1.0, _LED_HALF * size)
    footprint = (np.abs(from_y) <= half) & (np.abs(from_x) <= half)
    glow = 0.8 + 0.4 * np.exp(-(from_y**2 + from_x**2) / (2 * (0.5 * half) ** 2))
    look = colour * glow[..., None] + _luminance_noise(size, noise_rng)[..., None]
    return footprint, look


def _screw(from_y, from_x, size, colour, noise_rng):
    """A metal screw head with a dark cross slot."""
    radius = max(1.0, _SCREW_RADIUS * size)
    distance = np.hypot(from_y, from_x) / np.float32(radius)
    slot = ((np.abs(from_y) <= 0.15 * radius) | (np.abs(from_x) <= 0.15 * radius)) & (
        distance <= 0.7
    )
    level = np.where(slot, 70, 170 * (1 - 0.25 * distance**2)) + _luminance_noise(
        size, noise_rng
    )
    return distance <= 1, level[..., None] * np.ones(3, dtype=np.float32)


_PART_RENDERERS = {"chip": _chip, "cap": _capacitor, "led": _led, "screw": _screw}
_STYLE_DRAWERS = {
    "texture": _draw_texture_style,
    "object": _draw_object_style,
    "grain": _draw_grain_style,
    "board": _draw_board_style,
}
_RENDERERS = {
    "texture": _render_texture,
    "object": _render_object,
    "grain": _render_grain,
    "board": _render_board,
}


def _random_point(region, margin, rng):
    """A random ``(row, col)`` at least ``margin`` inside the region.

    Coordinates are Python floats so that pixel arithmetic stays float32.
    """
    if region[0] == "box":
        size = region[1]
        low, high = margin, max(margin, size - 1 - margin)
        return tuple(rng.uniform(low, high, size=2).tolist())
    if region[0] == "rect":
        _, top, left, bottom, right = region[:5]
        row = rng.uniform(top + margin, max(top + margin, bottom - margin))
        col = rng.uniform(left + margin, max(left + margin, right - margin))
        return float(row), float(col)
    _, centre_y, centre_x, radius = region
    # sqrt makes the point uniform over the disc's area.
    distance = max(radius - margin, 0) * np.sqrt(rng.uniform())
    angle = rng.uniform(0, 2 * np.pi)
    return (
        float(centre_y + distance * np.sin(angle)),
        float(centre_x + distance * np.cos(angle)),
    )


# --- Defects ---------------------------------------------------------------
# Each returns ``(alpha, look)``: the pasted image is
# ``image + contrast * alpha * (look - image)`` and the mask is
# ``alpha > 0.5``. ``scale`` multiplies the defect's linear size (to reach a
# drawn area); at 1 the draws are those of the first release.


def _scratch(image, support, region, style, size, rng, noise_rng, scale=1.0):
    half_width = max(1.0, 0.012 * size * scale)
    length = rng.uniform(0.25, 0.45) * size * scale
    if region[0] == "disc":
        # Keep the segment mostly on the object, where it is visible.
        length = min(length, 1.4 * region[3])
        centre = _random_point(region, 0.5 * region[3], rng)
    else:
        centre = _random_point(region, 0.15 * size, rng)
    angle = rng.uniform(0, np.pi)
    half_y, half_x = 0.5 * length * np.sin(angle), 0.5 * length * np.cos(angle)
    start = (centre[0] - half_y, centre[1] - half_x)
    end = (centre[0] + half_y, centre[1] + half_x)
    distance = _segment_distance(size, start, end)
    mask = (distance <= half_width) & support
    # Dark on bright surfaces, bright on dark ones: always high contrast.
    level = 25.0 if image[mask].mean() > 128 else 230.0
    look = level + _luminance_noise(size, noise_rng, std=4.0)[..., None]
    return mask.astype(np.float32), look


def _segment_distance(size, start, end):
    """Distance of every pixel to the segment ``start``-``end``."""
    rows, cols = _grid(size)
    start_y, start_x = float(start[0]), float(start[1])
    delta_y, delta_x = float(end[0]) - start_y, float(end[1]) - start_x
    along = ((rows - start_y) * delta_y + (cols - start_x) * delta_x) / (
        delta_y**2 + delta_x**2
    )
    along = np.clip(along, 0, 1)
    return np.hypot(rows - start_y - along * delta_y, cols - start_x - along * delta_x)


def _hole(image, support, region, style, size, rng, noise_rng, scale=1.0):
    radius = max(2.0, rng.uniform(0.035, 0.06) * size * scale)
    centre = _random_point(region, radius + 1, rng)
    rows, cols = _grid(size)
    distance = np.hypot(rows - centre[0], cols - centre[1])
    mask = (distance <= radius) & support
    # Darkest at the centre, like a hole's shadow.
    level = 10 + 18 * np.minimum(distance / radius, 1)
    look = (level + _luminance_noise(size, noise_rng, std=2.0))[..., None]
    return mask.astype(np.float32), look


def _stain(image, support, region, style, size, rng, noise_rng, scale=1.0):
    sigma = rng.uniform(0.045, 0.075) * size * scale
    centre = _random_point(region, sigma, rng)
    # Irregular outline: the centre lobe plus two offset ones.
    lobes = [centre] + (np.array(centre) + rng.normal(0, 0.6 * sigma, (2, 2))).tolist()
    rows, cols = _grid(size)
    blob = np.zeros((size, size), dtype=np.float32)
    for lobe_y, lobe_x in lobes:
        squared = (rows - lobe_y) ** 2 + (cols - lobe_x) ** 2
        blob = np.maximum(blob, np.exp(-squared / (2 * sigma**2)))
    # A steep ramp around blob == 0.5 gives a soft but narrow rim.
    alpha = np.clip((blob - 0.5) * 3 + 0.5, 0, 1) * support
    colour = _STAIN_COLOURS[rng.randint(len(_STAIN_COLOURS))]
    look = 0.35 * image + 0.65 * colour
    return alpha.astype(np.float32), look


def _missing(image, support, region, style, size, rng, noise_rng, scale=1.0):
    rows, cols = _grid(size)
    if region[0] == "disc":
        return _missing_chunk(
            rows, cols, support, region, style, size, rng, noise_rng, scale
        )
    if region[0] == "rect":
        return _missing_part(region, rng)
    half = rng.uniform(0.07, 0.13, size=2) * size * scale
    centre = _random_point(region, half.max(), rng)
    angle = rng.uniform(0, np.pi)
    along = (rows - centre[0]) * np.sin(angle) + (cols - centre[1]) * np.cos(angle)
    across = (rows - centre[0]) * np.cos(angle) - (cols - centre[1]) * np.sin(angle)
    mask = (np.abs(along) <= half[0]) & (np.abs(across) <= half[1])
    look = style["substrate"] + _luminance_noise(size, noise_rng)[..., None]
    return mask.astype(np.float32), look


def _missing_chunk(rows, cols, support, region, style, size, rng, noise_rng, scale=1.0):
    """Bite a disc out of the object's rim, showing the background."""
    _, centre_y, centre_x, radius = region
    angle = rng.uniform(0, 2 * np.pi)
    distance = radius * rng.uniform(0.85, 1.0)
    bite_y = float(centre_y + distance * np.sin(angle))
    bite_x = float(centre_x + distance * np.cos(angle))
    bite_radius = radius * rng.uniform(0.25, 0.4) * scale
    bite = np.hypot(rows - bite_y, cols - bite_x) <= bite_radius
    # Only object pixels change: the bite's part over the background does not.
    mask = bite & support
    look = style["background"] + _luminance_noise(size, noise_rng)[..., None]
    return mask.astype(np.float32), look


def _missing_part(region, rng):
    """Remove one part from a board: the bare board shows where it was."""
    parts, substrate = region[5], region[6]
    part = parts[rng.randint(len(parts))]
    return part["footprint"].astype(np.float32), substrate


def _wrong_colour(image, support, region, style, size, rng, noise_rng, scale=1.0):
    """Give a region (or a board's coloured part) another hue, same brightness."""
    brightness = image.mean(axis=2, keepdims=True)
    if region[0] == "rect":
        coloured = [part for part in region[5] if part["colour"] is not None]
        part = coloured[rng.randint(len(coloured))]
        # The part's own colour with its channels rotated: another hue.
        hue = np.roll(part["colour"], 1 + rng.randint(2))
        look = brightness * (hue / hue.mean())
        return part["footprint"].astype(np.float32), look
    semi_axes = rng.uniform(0.05, 0.09, size=2) * size * scale
    centre = _random_point(region, semi_axes.max(), rng)
    angle = rng.uniform(0, np.pi)
    rows, cols = _grid(size)
    along = (rows - centre[0]) * np.sin(angle) + (cols - centre[1]) * np.cos(angle)
    across = (rows - centre[0]) * np.cos(angle) - (cols - centre[1]) * np.sin(angle)
    mask = (along / semi_axes[0]) ** 2 + (across / semi_axes[1]) ** 2 <= 1
    mask &= support
    look = brightness * _TINTS[rng.randint(len(_TINTS))]
    return mask.astype(np.float32), look


_DEFECTS = {
    "scratch": _scratch,
    "hole": _hole,
    "stain": _stain,
    "missing": _missing,
    "wrong_colour": _wrong_colour,
}


def _describe(kind, size, parts, settings=None):
    lines = [
        f"Synthetic image anomaly data set ({kind}, {size}x{size} RGB).",
        "Labels: 1 = defective, 0 = good; masks are True on defective pixels.",
    ]
    if settings is not None:
        changed = {
            name: value
            for name, value in settings.items()
            if value != {"defect_area": None, "contrast": 1.0}.get(name, 0.0)
        }
        if changed:
            summary = ", ".join(f"{name}={value}" for name, value in changed.items())
            lines.append(f"Harder settings: {summary}.")
    for name, types in parts.items():
        names, counts = np.unique(types, return_counts=True)
        summary = ", ".join(f"{n}: {c}" for n, c in zip(names, counts))
        lines.append(f"{name}: {len(types)} images ({summary})")
    return "\n".join(lines)
