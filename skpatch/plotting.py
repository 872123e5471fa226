"""Figures for image anomaly detection: anomaly maps, image grids, noise curves.

matplotlib is an optional dependency (``pip install skpatch[plot]``); it is
imported when a function here is called, not when :mod:`skpatch` is.
"""

import os

import numpy as np

from ._images import _check_array, _is_pil, _load_item, _split_collection, _to_float_rgb

__all__ = ["plot_anomaly_map", "plot_image_grid", "plot_noise_curves"]

# Title colours of plot_image_grid, by ground-truth label (1 = defective).
_LABEL_COLOURS = {0: "tab:green", 1: "tab:red"}
_LABEL_NAMES = {0: "good", 1: "defective"}


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        msg = "matplotlib is required for skpatch.plotting; pip install matplotlib"
        raise ImportError(msg) from exc
    return plt


def _as_rgb(image, index=0):
    """One image (array, PIL image or path) as float RGB (H, W, 3) in [0, 1].

    Paths are read by :func:`skpatch._images.read_image`, as the estimators
    read them (16-bit files keep their precision).
    """
    name = f"image {index}"
    if not isinstance(image, np.ndarray):
        if not (isinstance(image, (str, os.PathLike)) or _is_pil(image)):
            image = np.asarray(image)  # nested lists
        else:
            image = _load_item(image, index)
    array = _check_array(image, name, batch=False)
    return _to_float_rgb(array[None], name)[0]


def _check_map(values, name, shape):
    values = np.asarray(values)
    if values.ndim != 2 or values.shape != tuple(shape):
        msg = (
            f"{name} must have shape (H, W) = {tuple(shape)}, the image's height "
            f"and width; got shape {values.shape}."
        )
        raise ValueError(msg)
    return values


def plot_anomaly_map(
    image, anomaly_map, *, mask=None, ax=None, alpha=0.5, cmap="jet", vmin=None, vmax=None
):
    """Overlay an anomaly map on its image, with the ground-truth outline.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, C), PIL image or path
        The image: uint8, uint16 or float in [0, 1], grayscale, RGB or RGBA.

    anomaly_map : ndarray of shape (H, W)
        Higher = more anomalous, e.g. one map of
        :meth:`SoftPatchSegmenter.anomaly_maps
        <skpatch.SoftPatchSegmenter.anomaly_maps>` (which is
        ``-score_samples``).

    mask : ndarray of shape (H, W), default=None
        Ground truth, True (or 1) on defective pixels; its outline is drawn
        as a white contour. Nothing is drawn for an empty mask.

    ax : matplotlib Axes, default=None
        Where to draw; None uses the current axes.

    alpha : float, default=0.5
        Opacity of the anomaly map.

    cmap : str or Colormap, default="jet"
        Colour map of the anomaly map.

    vmin, vmax : float, default=None
        Colour scale limits of the anomaly map; None uses the map's range.
        Fix them to compare several maps on one scale.

    Returns
    -------
    ax : matplotlib Axes
        The axes; ``ax.images[-1]`` is the anomaly map (pass it to
        ``fig.colorbar``) and, with a non-empty ``mask``,
        ``ax.collections[-1]`` is the contour.

    Raises
    ------
    ValueError
        If ``anomaly_map`` or ``mask`` is not 2-D with the image's height and
        width, or ``image`` is not an image.

    See Also
    --------
    plot_image_grid : Several images with their scores.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skpatch.datasets import make_defects
    >>> from skpatch.plotting import plot_anomaly_map
    >>> X, y, masks = make_defects(2, image_size=32, defect_ratio=1.0, random_state=0)
    >>> fake_map = masks[0].astype(float)  # a perfect detector
    >>> ax = plot_anomaly_map(X[0], fake_map, mask=masks[0])
    >>> len(ax.images), len(ax.collections)
    (2, 1)
    """
    plt = _pyplot()
    rgb = _as_rgb(image)
    anomaly_map = _check_map(anomaly_map, "anomaly_map", rgb.shape[:2])
    if mask is not None:
        mask = _check_map(mask, "mask", rgb.shape[:2]).astype(bool)
    if ax is None:
        ax = plt.gca()
    ax.imshow(rgb)
    ax.imshow(anomaly_map, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax)
    if mask is not None and mask.any():
        # The 0.5 level of a boolean mask is the boundary of the defect.
        ax.contour(mask.astype(np.float32), levels=[0.5], colors="white", linewidths=1.5)
    ax.set_axis_off()
    return ax


def plot_image_grid(
    images,
    scores=None,
    *,
    labels=None,
    n_cols=5,
    score_name="score",
    panel_size=2.0,
    fig=None,
):
    """Show images in a grid, with their scores and labels in the titles.

    Parameters
    ----------
    images : ndarray of shape (n_images, H, W, C) or list
        uint8, uint16 or float images in [0, 1], or a list of arrays, PIL
        images or file paths (as :func:`~skpatch.datasets.load_mvtec`
        returns); sizes may differ. As for the estimators, an array needs its
        channel axis (``X[..., None]`` for grayscale stacks).

    scores : array-like of shape (n_images,), default=None
        A number per image shown in its title, e.g. the anomaly score
        ``-clf.score_samples(images)``.

    labels : array-like of shape (n_images,), default=None
        Ground truth, 1 = defective and 0 = good: the title says which and is
        coloured red for defective images, green for good ones.

    n_cols : int, default=5
        Images per row.

    score_name : str, default="score"
        Name of the score in the titles.

    panel_size : float, default=2.0
        Size of each image's panel in inches, when a figure is created.

    fig : matplotlib Figure, default=None
        Figure to draw in (its existing axes are kept); None creates one of
        ``panel_size * n_cols`` by ``panel_size * n_rows`` inches.

    Returns
    -------
    axes : ndarray of matplotlib Axes, shape (n_images,)
        One axes per image, in order; ``axes[0].figure`` is the figure.

    Raises
    ------
    ValueError
        If there are no images, ``scores`` or ``labels`` has another length
        than ``images``, ``labels`` is not 0/1, or ``n_cols < 1``.

    See Also
    --------
    plot_anomaly_map : One image with its anomaly map.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skpatch.datasets import make_defects
    >>> from skpatch.plotting import plot_image_grid
    >>> X, y, _ = make_defects(6, image_size=32, random_state=0)
    >>> axes = plot_image_grid(X, scores=[0.1, 0.9, 0.8, 0.2, 0.3, 0.7],
    ...                        labels=y, n_cols=3)
    >>> axes.shape, axes[1].get_title()
    ((6,), 'defective\\nscore 0.9')
    """
    plt = _pyplot()
    if isinstance(images, (list, tuple)) and len(images) == 0:
        raise ValueError("images is empty; there is nothing to plot.")
    # The same layout rules as the estimators: (n, H, W, C) arrays, lists of
    # single images; sizes may differ here.
    items, array = _split_collection(images, "images")
    images = items if array is None else array
    n_images = len(images)
    if n_cols < 1:
        raise ValueError(f"n_cols must be at least 1; got {n_cols}.")
    scores = _check_per_image(scores, "scores", n_images)
    labels = _check_per_image(labels, "labels", n_images)
    if labels is not None and not np.isin(labels, (0, 1)).all():
        msg = f"labels must be 0 (good) or 1 (defective); got {np.unique(labels).tolist()}."
        raise ValueError(msg)

    n_cols = min(n_cols, n_images)
    n_rows = -(-n_images // n_cols)
    if fig is None:
        fig = plt.figure(figsize=(panel_size * n_cols, panel_size * n_rows))
    grid = fig.add_gridspec(n_rows, n_cols)
    axes = np.empty(n_images, dtype=object)
    for i in range(n_images):
        ax = fig.add_subplot(grid[i // n_cols, i % n_cols])
        ax.imshow(_as_rgb(images[i], i))
        ax.set_axis_off()
        title, colour = [], "black"
        if labels is not None:
            title.append(_LABEL_NAMES[int(labels[i])])
            colour = _LABEL_COLOURS[int(labels[i])]
        if scores is not None:
            title.append(f"{score_name} {scores[i]:.3g}")
        ax.set_title("\n".join(title), color=colour, fontsize="small")
        axes[i] = ax
    return axes


def _check_per_image(values, name, n_images):
    if values is None:
        return None
    values = np.asarray(values)
    if values.ndim != 1 or len(values) != n_images:
        msg = f"{name} must have shape (n_images,) = ({n_images},); got shape {values.shape}."
        raise ValueError(msg)
    return values


def plot_noise_curves(
    noise_ratios, results, *, ax=None, ylabel="image AUROC", xlabel="noise ratio"
):
    """Plot a metric against the fraction of defective training images.

    The SoftPatch protocol (:func:`~skpatch.datasets.make_noisy_split`)
    trains each detector on increasingly noisy training sets; this draws one
    line per detector.

    Parameters
    ----------
    noise_ratios : array-like of shape (n_ratios,)
        The noise ratios, on the x axis.

    results : dict of str to array-like of shape (n_ratios,) or (n_repeats, n_ratios)
        The metric of each detector (the key is the legend entry) at each
        noise ratio. With several repeats (e.g. random seeds) per ratio, the
        line is their mean and a shaded band spans one standard deviation.

    ax : matplotlib Axes, default=None
        Where to draw; None uses the current axes.

    ylabel : str, default="image AUROC"
        Label of the y axis.

    xlabel : str, default="noise ratio"
        Label of the x axis.

    Returns
    -------
    ax : matplotlib Axes
        The axes; ``ax.lines`` holds one line per detector, in the order of
        ``results``.

    Raises
    ------
    ValueError
        If ``results`` is empty or a value's last axis does not match
        ``noise_ratios``.

    See Also
    --------
    skpatch.datasets.make_noisy_split : Builds the noisy training sets.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skpatch.plotting import plot_noise_curves
    >>> ax = plot_noise_curves([0.0, 0.1, 0.2],
    ...                        {"PatchCore": [0.99, 0.93, 0.88],
    ...                         "SoftPatch": [0.99, 0.99, 0.98]})
    >>> [line.get_label() for line in ax.lines]
    ['PatchCore', 'SoftPatch']
    """
    plt = _pyplot()
    noise_ratios = np.asarray(noise_ratios, dtype=float)
    if noise_ratios.ndim != 1:
        raise ValueError(f"noise_ratios must be 1-D; got shape {noise_ratios.shape}.")
    if not results:
        raise ValueError("results is empty; give at least one detector's metric values.")
    curves = {}
    for name, values in results.items():
        values = np.asarray(values, dtype=float)
        if values.ndim not in (1, 2) or values.shape[-1] != len(noise_ratios):
            msg = (
                f"results[{name!r}] must have shape (n_ratios,) or (n_repeats, "
                f"n_ratios) with n_ratios = {len(noise_ratios)}; got shape {values.shape}."
            )
            raise ValueError(msg)
        curves[name] = values
    if ax is None:
        ax = plt.gca()
    for name, values in curves.items():
        mean = values if values.ndim == 1 else values.mean(axis=0)
        (line,) = ax.plot(noise_ratios, mean, marker="o", label=name)
        if values.ndim == 2 and len(values) > 1:
            std = values.std(axis=0)
            ax.fill_between(noise_ratios, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax
