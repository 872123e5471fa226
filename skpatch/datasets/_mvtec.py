"""Loader for image anomaly data sets in the MVTec AD folder layout."""

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from sklearn.utils import Bunch
from sklearn.utils._param_validation import validate_params

from .._images import as_dtype, common_dtype, read_image

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff")

# What PIL raises on a file that is not an image or is truncated.
_READ_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


@validate_params(
    {
        "path": [str, os.PathLike],
        "category": [str, None],
        "lazy": ["boolean"],
        "load_masks": ["boolean"],
        "load_train": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def load_mvtec(path, category=None, *, lazy=True, load_masks=True, load_train=True):
    """Load an image anomaly data set stored in the MVTec AD folder layout.

    The layout is::

        <root>/train/good/*.png
        <root>/test/<defect_type>/*.png          (one folder is "good")
        <root>/ground_truth/<defect_type>/<stem>_mask.png   (optional)

    MVTec AD itself, and BTAD or VisA once converted to it, can be read.
    Image files ending in .png, .jpg, .jpeg, .bmp, .tif or .tiff (any case)
    are listed, sorted by name; defect types are sorted by name too.

    Parameters
    ----------
    path : str or path-like
        The data set's root folder, or, with ``category``, the folder holding
        one root per category (as in MVTec AD's full download).

    category : str, default=None
        If given, the root is ``path / category``.

    lazy : bool, default=True
        If True, images are returned as lists of file paths (``str``), to be
        opened batch by batch by the estimators. If False, they are read into
        arrays of shape (n, H, W, 3); all images must then share one size.
        The arrays are uint8 for 8-bit files and uint16 as soon as one file is
        16-bit (never clipped; 8-bit images are then multiplied by 257, the
        same intensity), so that both modes give the estimators the same
        values. Grayscale images are replicated to RGB and an alpha channel is
        dropped. Files are read by the same reader as the estimators use.

    load_masks : bool, default=True
        Whether to read the ground-truth masks. Masks are always read eagerly
        (they are small).

    load_train : bool, default=True
        Whether to list (and with ``lazy=False`` read) the training images.
        With False, ``train/good`` is neither required nor read and
        ``train_images`` and ``train_labels`` are None: enough to evaluate a
        model fitted elsewhere on the ``test`` images.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the following attributes.

        train_images : list of str or ndarray of shape (n_train, H, W, 3), or None
            The training images, all good (uint8, or uint16 for 16-bit data);
            None when ``load_train=False``.
        train_labels : ndarray of shape (n_train,), dtype int, or None
            All zeros: the folder says the training images are good; None
            when ``load_train=False``.
        test_images : list of str or ndarray of shape (n_test, H, W, 3)
            The test images, grouped by defect type.
        test_labels : ndarray of shape (n_test,), dtype int
            1 for a defective image, 0 for a good one.
        test_defect_types : ndarray of shape (n_test,), dtype str
            The name of each test image's folder, ``"good"`` for good ones.
        test_masks : ndarray of shape (n_test, H, W), dtype bool, or None
            True on defective pixels, all False for good images, at each
            image's own resolution. None when ``load_masks=False`` or when
            the folder has no ``ground_truth``. With ``lazy=True`` and images
            of different sizes, a list of 2-D bool arrays instead.
        root : str
            The data set's root folder.
        category : str
            ``category`` if given, else the root folder's name.
        DESCR : str
            A description of the data set.

    Raises
    ------
    ValueError
        If the folder does not exist or does not follow the layout (without
        ``train/good`` when ``load_train=True``, without ``test``), holds no
        images, if a defect image has no mask while ``ground_truth`` exists,
        if a mask's size differs from its image's, or, with ``lazy=False``,
        if an image cannot be read or the images differ in size.

    See Also
    --------
    make_noisy_split : Inject defective test images into the training set.
    make_defect_dataset : A synthetic data set with the same keys.

    Examples
    --------
    Write a tiny data set in the layout, then load it:

    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skpatch.datasets import load_mvtec, make_defects
    >>> X, y, masks = make_defects(6, image_size=32, defect_types="hole",
    ...                            random_state=0)
    >>> root = Path(tempfile.mkdtemp()) / "toy"
    >>> folders = {0: "train/good", 1: "test/hole"}
    >>> for i, (image, label, mask) in enumerate(zip(X, y, masks)):
    ...     folder = root / folders[label]
    ...     folder.mkdir(parents=True, exist_ok=True)
    ...     Image.fromarray(image).save(folder / f"{i:03d}.png")
    ...     if label:
    ...         gt = root / "ground_truth" / "hole"
    ...         gt.mkdir(parents=True, exist_ok=True)
    ...         Image.fromarray(mask).save(gt / f"{i:03d}_mask.png")
    >>> data = load_mvtec(root, lazy=False)
    >>> data.train_images.shape, data.test_images.shape
    ((3, 32, 32, 3), (3, 32, 32, 3))
    >>> data.test_labels.tolist(), data.test_defect_types.tolist()
    ([1, 1, 1], ['hole', 'hole', 'hole'])
    >>> bool((data.test_masks == masks[y == 1]).all())
    True
    >>> lazy = load_mvtec(root)
    >>> lazy.category, Path(lazy.train_images[0]).parent.name
    ('toy', 'good')
    """
    root = _resolve_root(path, category, load_train)
    train_paths = _list_images(root / "train" / "good") if load_train else []
    test_paths, test_defect_types = _list_test_images(root / "test")

    if lazy:
        train_images = [str(p) for p in train_paths]
        test_images = [str(p) for p in test_paths]
        test_sizes = None
    else:
        images = _read_images(train_paths + test_paths)
        n_train = len(train_paths)
        train_images, test_images = images[:n_train], images[n_train:]
        test_sizes = [test_images.shape[1:3]] * len(test_paths)

    test_masks = None
    ground_truth = root / "ground_truth"
    if load_masks and ground_truth.is_dir():
        if test_sizes is None:
            test_sizes = [_image_size(p) for p in test_paths]
        test_masks = _load_masks(
            ground_truth, test_paths, test_defect_types, test_sizes
        )

    category = root.name if category is None else category
    return Bunch(
        train_images=train_images if load_train else None,
        train_labels=np.zeros(len(train_paths), dtype=int) if load_train else None,
        test_images=test_images,
        test_labels=(test_defect_types != "good").astype(int),
        test_defect_types=test_defect_types,
        test_masks=test_masks,
        root=str(root),
        category=category,
        DESCR=_describe(
            root, category, len(train_paths) if load_train else None,
            test_defect_types, test_masks,
        ),
    )


def _resolve_root(path, category, load_train=True):
    root = Path(path).expanduser().absolute()
    if category is not None:
        root = root / category
    if not root.is_dir():
        msg = f"Data set folder {str(root)!r} does not exist or is not a folder."
        raise ValueError(msg)
    required = {"train/good": "<root>/train/good/", "test": "<root>/test/<defect_type>/"}
    if not load_train:
        del required["train/good"]
    for folder in required:
        if not (root / folder).is_dir():
            msg = (
                f"{str(root)!r} does not follow the MVTec AD layout: the folder "
                f"{folder!r} is missing (expected {' and '.join(required.values())})."
            )
            raise ValueError(msg)
    return root


def _list_images(folder):
    """Image files of ``folder``, sorted by name; raise if there are none."""
    paths = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not paths:
        msg = (
            f"no images found in {str(folder)!r} (looked for files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)})."
        )
        raise ValueError(msg)
    return paths


def _list_test_images(test_dir):
    """All test images and the defect type (folder name) of each."""
    defect_dirs = sorted(
        p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not defect_dirs:
        msg = (
            f"no images found in {str(test_dir)!r}: it has no <defect_type> "
            "sub-folders (e.g. 'good')."
        )
        raise ValueError(msg)
    paths, types = [], []
    for defect_dir in defect_dirs:
        images = _list_images(defect_dir)
        paths += images
        types += [defect_dir.name] * len(images)
    return paths, np.array(types, dtype=str)


def _read_images(paths):
    """Read image files into one array of shape (n, H, W, 3).

    uint8 when every file is 8-bit; uint16 when one is 16-bit (8-bit images
    are then multiplied by 257, which means the same intensity); float32 if
    one is a float file.
    """
    first = read_image(paths[0])
    images = np.empty((len(paths), *first.shape), dtype=first.dtype)
    images[0] = first
    for i, path in enumerate(paths[1:], start=1):
        image = read_image(path)
        if image.shape != first.shape:
            msg = (
                "All images must have the same size with lazy=False: "
                f"{str(paths[0])!r} is {_hxw(first.shape)} but {str(path)!r} is "
                f"{_hxw(image.shape)} (HxW). Resize them beforehand or load with "
                "lazy=True."
            )
            raise ValueError(msg)
        dtype = common_dtype([images.dtype, image.dtype])
        if dtype != images.dtype:
            images = as_dtype(images, dtype)
        images[i] = as_dtype(image, dtype)
    return images


def _image_size(path):
    """``(H, W)`` of an image file, from its header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except _READ_ERRORS as exc:
        msg = f"Cannot read image {str(path)!r}: {exc}"
        raise ValueError(msg) from exc
    return height, width


def _load_masks(ground_truth, test_paths, test_defect_types, test_sizes):
    """Binary masks of the test images; all False for good ones."""
    masks = []
    for path, defect_type, size in zip(test_paths, test_defect_types, test_sizes):
        if defect_type == "good":
            masks.append(np.zeros(size, dtype=bool))
            continue
        mask_path = _find_mask(ground_truth / defect_type, path)
        mask = _read_mask(mask_path)
        if mask.shape != tuple(size):
            msg = (
                f"Mask {str(mask_path)!r} is {_hxw(mask.shape)} but its image "
                f"{str(path)!r} is {_hxw(size)} (HxW)."
            )
            raise ValueError(msg)
        masks.append(mask)
    if len({mask.shape for mask in masks}) == 1:
        return np.stack(masks)
    # Images of several sizes (lazy mode only) cannot share one array.
    return masks


def _find_mask(folder, image_path):
    """``<stem>_mask.<ext>`` (MVTec AD) or ``<stem>.<ext>`` (BTAD) in folder."""
    for name in (f"{image_path.stem}_mask", image_path.stem):
        for extension in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
            candidate = folder / (name + extension)
            if candidate.is_file():
                return candidate
    msg = (
        f"Missing ground-truth mask for defective test image {str(image_path)!r}: "
        f"expected {str(folder / (image_path.stem + '_mask.png'))!r}."
    )
    raise ValueError(msg)


def _read_mask(path):
    try:
        with Image.open(path) as mask:
            array = np.asarray(mask)
            colour_bands = [i for i, band in enumerate(mask.getbands()) if band != "A"]
    except _READ_ERRORS as exc:
        msg = f"Cannot read mask {str(path)!r}: {exc}"
        raise ValueError(msg) from exc
    if array.ndim == 3:
        # Colour masks: a pixel is defective if any colour channel is set.
        array = array[..., colour_bands].max(axis=2)
    return array > 0


def _hxw(shape):
    return f"{shape[0]}x{shape[1]}"


def _describe(root, category, n_train, test_defect_types, test_masks):
    names, counts = np.unique(test_defect_types, return_counts=True)
    per_type = ", ".join(f"{name}: {count}" for name, count in zip(names, counts))
    masks = "none" if test_masks is None else "loaded"
    return "\n".join(
        [
            f"MVTec AD-layout image anomaly data set {category!r} at {str(root)!r}.",
            "train: not loaded." if n_train is None else f"train: {n_train} good images.",
            f"test: {len(test_defect_types)} images ({per_type}).",
            f"ground-truth masks: {masks}.",
            "Labels: 1 = defective, 0 = good.",
        ]
    )
