"""Synthetic images with planted defects and exact ground-truth masks.

Every data set drawn here shares one *style* (colours, texture frequencies,
object geometry) drawn once from ``random_state``; each image then adds a small
jitter and pixel noise, so good images look alike statistically, exactly like
the images of one MVTec AD category. A defect is pasted onto a rendered good
image with an alpha map, and its mask is ``alpha > 0.5``: outside the mask the
pixels are untouched (a stain's soft rim aside, whose change stays below half
of the full effect).
"""

from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

DEFECT_TYPES = ("scratch", "hole", "stain", "missing")
KINDS = ("texture", "object")

# Intensities are in 0..255 units throughout.
_NOISE_STD = 3.0
# Stain colours: rust, oil and bleach differ from any grey the styles produce
# by tens of intensity levels, so a stain is always visible.
_STAIN_COLOURS = np.array(
    [[150.0, 80.0, 30.0], [60.0, 50.0, 40.0], [235.0, 230.0, 210.0]], dtype=np.float32
)

_COMMON_CONSTRAINTS = {
    "image_size": [Interval(Integral, 16, None, closed="left")],
    "kind": [StrOptions(set(KINDS))],
    "defect_types": [str, "array-like"],
    "random_state": ["random_state"],
}


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "defect_ratio": [Interval(Real, 0, 1, closed="both")],
        "return_bunch": ["boolean"],
        **_COMMON_CONSTRAINTS,
    },
    prefer_skip_nested_validation=True,
)
def make_defects(
    n_samples=100,
    *,
    image_size=64,
    kind="texture",
    defect_ratio=0.5,
    defect_types=DEFECT_TYPES,
    return_bunch=False,
    random_state=None,
):
    """Generate synthetic images with planted defects and exact masks.

    A generator in the spirit of :func:`sklearn.datasets.make_blobs` for
    image anomaly detection: all images share one randomly drawn look (a
    stationary texture or a centred object); a fraction of them carries one
    defect each, whose pixels are given by a boolean mask.

    Parameters
    ----------
    n_samples : int, default=100
        Number of images.

    image_size : int, default=64
        Height and width of the square images, at least 16. Texture
        frequencies and defect sizes are relative to it, so a data set looks
        the same at 64 and at 256 pixels.

    kind : {"texture", "object"}, default="texture"
        ``"texture"``: a stationary pattern of oriented gratings (like a
        fabric or a grid). ``"object"``: a disc-shaped, bottle-top-like object
        centred on a plain background.

    defect_ratio : float in [0, 1], default=0.5
        Fraction of defective images; exactly
        ``round(defect_ratio * n_samples)`` images are defective, at random
        positions.

    defect_types : str or sequence of str, default=("scratch", "hole", "stain", "missing")
        Defect types to draw from, uniformly, one per defective image:
        ``"scratch"`` (a thin line of contrasting intensity), ``"hole"`` (a
        small dark disc), ``"stain"`` (a soft-edged blob of another colour)
        and ``"missing"`` (a region replaced by flat substrate colour; for
        objects, a chunk bitten off the object's rim).

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
    """
    defect_types = _check_defect_types(defect_types)
    rng = check_random_state(random_state)
    types = _draw_image_types(n_samples, defect_ratio, defect_types, rng)
    X, _, masks = _generate(types, image_size, kind, rng)
    y = (types != "good").astype(int)
    if not return_bunch:
        return X, y, masks
    return Bunch(
        images=X,
        labels=y,
        masks=masks,
        defect_types=types,
        DESCR=_describe(kind, image_size, {"images": types}),
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
def make_defect_dataset(
    n_train=50,
    n_test=40,
    *,
    test_defect_ratio=0.5,
    image_size=64,
    kind="texture",
    defect_types=DEFECT_TYPES,
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

    kind : {"texture", "object"}, default="texture"
        The look of the images, see :func:`make_defects`.

    defect_types : str or sequence of str, default=("scratch", "hole", "stain", "missing")
        Defect types to draw from, see :func:`make_defects`.

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
    rng = check_random_state(random_state)
    test_types = _draw_image_types(n_test, test_defect_ratio, defect_types, rng)
    types = np.concatenate([np.full(n_train, "good"), test_types])
    X, _, masks = _generate(types, image_size, kind, rng)
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
            kind, image_size, {"train": np.full(n_train, "good"), "test": test_types}
        ),
    )


def _check_defect_types(defect_types):
    """Return ``defect_types`` as a non-empty tuple of known names."""
    if isinstance(defect_types, str):
        defect_types = (defect_types,)
    defect_types = tuple(defect_types)
    if not defect_types:
        msg = f"defect_types must name at least one of {DEFECT_TYPES}; got none."
        raise ValueError(msg)
    unknown = [name for name in defect_types if name not in DEFECT_TYPES]
    if unknown:
        msg = f"Unknown defect type(s) {unknown}; choose among {DEFECT_TYPES}."
        raise ValueError(msg)
    return defect_types


def _draw_image_types(n_images, defect_ratio, defect_types, rng):
    """Return an array of str: ``"good"`` or the defect type of each image."""
    n_defective = round(defect_ratio * n_images)
    defective = rng.permutation(n_images)[:n_defective]
    choice = rng.randint(len(defect_types), size=n_defective)
    types = np.full(n_images, "good", dtype=object)
    types[defective] = [defect_types[j] for j in choice]
    return types.astype(str)


def _generate(types, size, kind, rng):
    """Render one image per entry of ``types``, all in one shared style.

    Returns the images, the same images before any defect was pasted (for
    tests) and the masks.
    """
    style = _STYLE_DRAWERS[kind](rng)
    # Pixel noise is the bulk of the random numbers; a Generator seeded from
    # ``rng`` draws it several times faster than RandomState, reproducibly.
    noise_rng = np.random.default_rng(rng.randint(np.iinfo(np.int32).max))
    images = np.empty((len(types), size, size, 3), dtype=np.uint8)
    clean = np.empty_like(images)
    masks = np.zeros((len(types), size, size), dtype=bool)
    for i, defect_type in enumerate(types):
        rendered, support, region = _RENDERERS[kind](style, size, rng, noise_rng)
        clean[i] = _to_uint8(rendered)
        if defect_type == "good":
            images[i] = clean[i]
            continue
        # Paste onto the quantised image, so that pixels with alpha == 0 stay
        # bit-identical to the good rendering.
        base = clean[i].astype(np.float32)
        alpha, look = _DEFECTS[defect_type](
            base, support, region, style, size, rng, noise_rng
        )
        images[i] = _to_uint8(base + alpha[..., None] * (look - base))
        masks[i] = alpha > 0.5
    return images, clean, masks


def _to_uint8(image):
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _grid(size):
    """Row and column coordinates, broadcastable to ``(size, size)``."""
    coords = np.arange(size, dtype=np.float32)
    return coords[:, None], coords[None, :]


def _luminance_noise(size, noise_rng, std=_NOISE_STD):
    return noise_rng.standard_normal((size, size), dtype=np.float32) * np.float32(std)


# --- Styles and renderers -------------------------------------------------
# A region says where defects may be centred: the whole image ("box") or the
# object's disc, given by its centre and radius.


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


def _render_texture(style, size, rng, noise_rng):
    rows = np.arange(size, dtype=np.float64)
    intensity = _luminance_noise(size, noise_rng) + np.float32(rng.normal(0, 3))
    for cycles, angle, amplitude in zip(
        style["cycles"], style["angles"], style["amplitudes"]
    ):
        wavenumber = 2 * np.pi * cycles * (1 + rng.normal(0, 0.02)) / size
        angle = angle + rng.normal(0, 0.03)
        phase = rng.uniform(0, 2 * np.pi)
        along_x = wavenumber * np.cos(angle) * rows + phase
        along_y = wavenumber * np.sin(angle) * rows
        # cos(a + b) as a difference of outer products: O(size) trigonometry.
        grating = np.outer(np.cos(along_y), np.cos(along_x)) - np.outer(
            np.sin(along_y), np.sin(along_x)
        )
        intensity += (amplitude * grating).astype(np.float32)
    image = style["base"] + intensity[..., None] * style["gain"]
    support = np.ones((size, size), dtype=bool)
    return image, support, ("box", size)


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


def _render_object(style, size, rng, noise_rng):
    # Python floats, not NumPy float64 scalars, keep the arithmetic in float32.
    centre_y, centre_x = ((size - 1) / 2 + rng.normal(0, 0.015 * size, size=2)).tolist()
    radius = float(style["radius"] * size * (1 + rng.normal(0, 0.01)))
    gain = float(1 + rng.normal(0, 0.03))
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
    return image, inside, ("disc", centre_y, centre_x, radius)


_STYLE_DRAWERS = {"texture": _draw_texture_style, "object": _draw_object_style}
_RENDERERS = {"texture": _render_texture, "object": _render_object}


def _random_point(region, margin, rng):
    """A random ``(row, col)`` at least ``margin`` inside the region.

    Coordinates are Python floats so that pixel arithmetic stays float32.
    """
    if region[0] == "box":
        size = region[1]
        low, high = margin, max(margin, size - 1 - margin)
        return tuple(rng.uniform(low, high, size=2).tolist())
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
# ``image + alpha * (look - image)`` and the mask is ``alpha > 0.5``.


def _scratch(image, support, region, style, size, rng, noise_rng):
    half_width = max(1.0, 0.012 * size)
    length = rng.uniform(0.25, 0.45) * size
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


def _hole(image, support, region, style, size, rng, noise_rng):
    radius = max(2.0, rng.uniform(0.035, 0.06) * size)
    centre = _random_point(region, radius + 1, rng)
    rows, cols = _grid(size)
    distance = np.hypot(rows - centre[0], cols - centre[1])
    mask = (distance <= radius) & support
    # Darkest at the centre, like a hole's shadow.
    level = 10 + 18 * np.minimum(distance / radius, 1)
    look = (level + _luminance_noise(size, noise_rng, std=2.0))[..., None]
    return mask.astype(np.float32), look


def _stain(image, support, region, style, size, rng, noise_rng):
    sigma = rng.uniform(0.045, 0.075) * size
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


def _missing(image, support, region, style, size, rng, noise_rng):
    rows, cols = _grid(size)
    if region[0] == "disc":
        return _missing_chunk(rows, cols, support, region, style, size, rng, noise_rng)
    half = rng.uniform(0.07, 0.13, size=2) * size
    centre = _random_point(region, half.max(), rng)
    angle = rng.uniform(0, np.pi)
    along = (rows - centre[0]) * np.sin(angle) + (cols - centre[1]) * np.cos(angle)
    across = (rows - centre[0]) * np.cos(angle) - (cols - centre[1]) * np.sin(angle)
    mask = (np.abs(along) <= half[0]) & (np.abs(across) <= half[1])
    look = style["substrate"] + _luminance_noise(size, noise_rng)[..., None]
    return mask.astype(np.float32), look


def _missing_chunk(rows, cols, support, region, style, size, rng, noise_rng):
    """Bite a disc out of the object's rim, showing the background."""
    _, centre_y, centre_x, radius = region
    angle = rng.uniform(0, 2 * np.pi)
    distance = radius * rng.uniform(0.85, 1.0)
    bite_y = float(centre_y + distance * np.sin(angle))
    bite_x = float(centre_x + distance * np.cos(angle))
    bite = np.hypot(rows - bite_y, cols - bite_x) <= radius * rng.uniform(0.25, 0.4)
    # Only object pixels change: the bite's part over the background does not.
    mask = bite & support
    look = style["background"] + _luminance_noise(size, noise_rng)[..., None]
    return mask.astype(np.float32), look


_DEFECTS = {"scratch": _scratch, "hole": _hole, "stain": _stain, "missing": _missing}


def _describe(kind, size, parts):
    lines = [
        f"Synthetic image anomaly data set ({kind}, {size}x{size} RGB).",
        "Labels: 1 = defective, 0 = good; masks are True on defective pixels.",
    ]
    for name, types in parts.items():
        names, counts = np.unique(types, return_counts=True)
        summary = ", ".join(f"{n}: {c}" for n, c in zip(names, counts))
        lines.append(f"{name}: {len(types)} images ({summary})")
    return "\n".join(lines)
