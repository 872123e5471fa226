"""Audit of a training set: which of the training images look defective?

:func:`audit_training_set` fits a classifier on a folder that should be clean,
ranks its images by their honest in-sample anomaly score (``-train_scores_``)
and writes ``audit.csv`` and a self-contained ``audit.html``: a summary, the
score distribution with the threshold, and the most suspicious images next to
their anomaly maps.
"""

import base64
import csv
import html
import io
import os
from numbers import Integral

import numpy as np
from PIL import Image
from scipy.ndimage import binary_erosion
from sklearn.base import clone
from sklearn.utils import Bunch
from sklearn.utils._param_validation import HasMethods, Interval, validate_params

from ._base import upsample_patch_maps
from ._classifier import SoftPatchClassifier
from ._images import check_images

CSV_NAME = "audit.csv"
HTML_NAME = "audit.html"
CSV_COLUMNS = ("rank", "index", "path", "anomaly_score", "flagged")
# Longest side, in pixels, of the thumbnails and overlays embedded in the page.
_THUMBNAIL_SIDE = 224
# Opacity of the anomaly map over the image, as in plotting.plot_anomaly_map.
_OVERLAY_ALPHA = 0.5


@validate_params(
    {
        "X": ["array-like"],
        "estimator": [HasMethods(["fit"]), None],
        "output": [str, os.PathLike, None],
        "n_show": [Interval(Integral, 0, None, closed="left")],
    },
    prefer_skip_nested_validation=False,
)
def audit_training_set(X, estimator=None, *, output=None, n_show=12):
    """Rank the training images by anomaly: which of them look defective?

    Fits a clone of ``estimator`` on ``X`` (the estimator passed is left
    unchanged, as in :func:`~sklearn.model_selection.cross_validate`) and
    reads its honest in-sample scores :attr:`SoftPatchClassifier.train_scores_`,
    in which no training image is scored against the memory it contributed
    itself. The images are ranked by anomaly score (``-train_scores_``,
    most anomalous first) and flagged as :meth:`SoftPatchClassifier.fit_predict`
    flags them (``train_scores_ < offset_``, so ``contamination`` sets how
    many).

    Parameters
    ----------
    X : ndarray of shape (n_images, H, W[, C]) or list
        The training images, as :meth:`SoftPatchClassifier.fit` accepts them:
        an array, or a list of arrays, PIL images or file paths.

    estimator : SoftPatchClassifier or None, default=None
        The detector to fit; None means ``SoftPatchClassifier(random_state=0)``.
        A :class:`SoftPatchSegmenter` is refused: its scores are per pixel
        and it has no ``train_scores_``.

    output : str, path-like or None, default=None
        Folder to write ``audit.csv`` and ``audit.html`` into (created if
        missing; files of these names in it are replaced). None writes
        nothing.

    n_show : int, default=12
        Number of the most suspicious images shown in ``audit.html``, each
        with its anomaly map. The maps are those of the training images
        themselves, each scored without the memory it contributed (the
        memory step's ``score_held_out``): the largest patch value of a map
        is the image's anomaly score (for ``image_score_k=1``); the maps are
        upsampled bilinearly to the image, not smoothed.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        ranking : ndarray of shape (n_images,)
            Indices into ``X``, most anomalous first (ties keep the order of
            ``X``).
        anomaly_scores : ndarray of shape (n_images,)
            ``-estimator.train_scores_``: higher = more anomalous, in the
            order of ``X``.
        threshold : float
            ``-estimator.offset_``: images whose anomaly score exceeds it are
            flagged.
        flagged : ndarray of shape (n_images,), dtype bool
            ``train_scores_ < offset_``, i.e. ``fit_predict(X) == -1``.
        n_flagged : int
            Number of flagged images.
        n_defective_estimate : float
            Estimated number of defective images: the fitted estimator's
            ``contamination_estimate_ * n_images`` when it has that attribute,
            else ``n_flagged``.
        estimate_source : str
            Which of the two ``n_defective_estimate`` is:
            ``"contamination_estimate_"`` or ``"flagged"``.
        paths : list of str
            The path of each image, ``""`` for an image that is not a file.
        files : dict
            ``{"csv": path, "html": path}`` of the written files, empty when
            ``output`` is None.
        estimator : SoftPatchClassifier
            The fitted clone.

    Raises
    ------
    TypeError
        If ``estimator`` is not a :class:`SoftPatchClassifier`.

    See Also
    --------
    SoftPatchClassifier.fit_predict : The labels alone.

    Notes
    -----
    ``audit.csv`` has one row per image, sorted by rank, with the columns
    ``rank`` (1 = most anomalous), ``index`` (position in ``X``), ``path``,
    ``anomaly_score`` and ``flagged`` (1 or 0). ``audit.html`` embeds its
    images as data URIs, so it can be mailed or archived alone. Its
    histogram needs matplotlib (``pip install "skpatch[plot]"``); without
    it the page says so and shows the rest.

    The overlays share one colour scale, from the median of the shown maps'
    values (blue, a typical patch) to the highest anomaly score of the set
    (red), with the threshold marked on it; a white line surrounds the part
    of a map above the threshold.

    Examples
    --------
    >>> import os, tempfile
    >>> from skpatch import SoftPatchClassifier, audit_training_set
    >>> from skpatch.datasets import make_defects
    >>> X, y, _ = make_defects(24, image_size=64, defect_ratio=0.2, random_state=0)
    >>> clf = SoftPatchClassifier(random_state=0).set_params(featurizer__image_size=64)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     audit = audit_training_set(X, clf, output=folder, n_show=4)
    ...     sorted(os.listdir(folder))
    ['audit.csv', 'audit.html']
    >>> top = audit.ranking[: y.sum()]   # the most anomalous training images
    >>> bool((y[top] == 1).all())
    True
    """
    estimator = SoftPatchClassifier(random_state=0) if estimator is None else estimator
    if not isinstance(estimator, SoftPatchClassifier):
        msg = (
            "audit_training_set needs a SoftPatchClassifier, whose train_scores_ "
            f"score each training image; got {type(estimator).__name__}."
        )
        raise TypeError(msg)
    # A sequence is read twice (fit, then the images shown): make it a list.
    X = X if isinstance(X, np.ndarray) else list(X)
    estimator = clone(estimator).fit(X)
    result = _rank(estimator, _paths(X))
    if output is not None:
        os.makedirs(output, exist_ok=True)
        result.files["csv"] = _write_csv(result, os.path.join(output, CSV_NAME))
        shown = result.ranking[:n_show]
        result.files["html"] = _write_html(result, _take(X, shown), shown, os.path.join(output, HTML_NAME))
    return result


def _rank(estimator, paths):
    anomaly = -np.asarray(estimator.train_scores_, dtype=np.float64)
    flagged = estimator.train_scores_ < estimator.offset_  # fit_predict's -1
    fraction = getattr(estimator, "contamination_estimate_", None)
    if fraction is None:
        estimate, source = float(flagged.sum()), "flagged"
    else:
        estimate, source = float(fraction) * len(anomaly), "contamination_estimate_"
    return Bunch(
        ranking=np.argsort(-anomaly, kind="stable"),
        anomaly_scores=anomaly,
        threshold=-float(estimator.offset_),
        flagged=np.asarray(flagged, dtype=bool),
        n_flagged=int(flagged.sum()),
        n_defective_estimate=estimate,
        estimate_source=source,
        paths=paths,
        files={},
        estimator=estimator,
    )


def _paths(X):
    if isinstance(X, np.ndarray):
        return [""] * len(X)
    return [os.fspath(item) if isinstance(item, (str, os.PathLike)) else "" for item in X]


def _take(X, indices):
    return X[indices] if isinstance(X, np.ndarray) else [X[i] for i in indices]


# -- the honest anomaly maps of training images -----------------------------------


def _held_out_maps(estimator, images, indices):
    """Patch anomaly maps (n, h, w), higher = more anomalous, of training images ``indices``.

    Each image is featurized again and scored by the memory step's
    ``score_held_out``, without the memory patches it contributed, as
    ``train_scores_`` scores it: the map's maximum is the image's anomaly
    score (for ``image_score_k=1``).
    """
    featurizer, denoise, memory = (step for _, step in estimator.pipeline_.steps)
    features = featurizer.transform(images)
    if denoise != "passthrough":
        features = denoise.transform(features)  # test features pass unchanged
    patch_scores = memory.score_held_out(features, np.asarray(indices))  # on the patch grid
    return -patch_scores.reshape(len(indices), *featurizer.feature_shape_)


# -- audit.csv ----------------------------------------------------------------------


def _write_csv(result, path):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for rank, index in enumerate(result.ranking, start=1):
            score = float(result.anomaly_scores[index])
            writer.writerow([rank, int(index), result.paths[index], repr(score), int(result.flagged[index])])
    return path


# -- audit.html ---------------------------------------------------------------------


def _write_html(result, images, shown, path):
    page = _PAGE.format(
        style=_STYLE,
        summary=_summary(result),
        histogram=_histogram(result),
        flagged=_flagged_table(result),
        grid=_grid(result, images, shown) if len(shown) else "",
    )
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return path


def _grid(result, images, shown):
    """The most suspicious images, each beside its held-out anomaly map."""
    images = check_images(images)
    size = _thumbnail_size(images.image_size)
    # The maps are drawn at the thumbnails' size, so that the outline is one
    # displayed pixel wide whatever the image size.
    maps = upsample_patch_maps(_held_out_maps(result.estimator, images, shown), size)
    low, high = _colour_scale(maps, result)
    cards = []
    for i, index in enumerate(shown):
        rgb = _resize(images.batch(i, i + 1)[0].numpy().transpose(1, 2, 0), size)
        overlay = _overlay(rgb, maps[i], low, high, result.threshold)
        cards.append(_card(result, int(index), i + 1, _png_uri(rgb), _png_uri(overlay)))
    title = html.escape(f"The {len(shown)} most suspicious images")
    body = "\n".join(cards)
    return f'<h2>{title}</h2>\n{_legend(low, high, result.threshold)}\n<div class="grid">\n{body}\n</div>'


def _thumbnail_size(image_size):
    height, width = image_size
    scale = _THUMBNAIL_SIDE / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resize(rgb, size):
    image = _to_pil(rgb).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255


def _colour_scale(maps, result):
    """One scale for all maps: the median of their values (blue) to the top anomaly score (red).

    The median is the level of a typical patch, so the scale spends its
    colours on the range where defects differ, which a scale from 0 would
    squeeze into its top.
    """
    finite = maps[np.isfinite(maps)]
    low = float(np.median(finite)) if finite.size else 0.0
    scores = result.anomaly_scores[np.isfinite(result.anomaly_scores)]
    high = max(float(scores.max()) if scores.size else low, result.threshold)
    return low, high if high > low else low + 1.0


def _overlay(rgb, anomaly_map, low, high, threshold):
    values = np.nan_to_num((anomaly_map - low) / (high - low), nan=1.0, posinf=1.0, neginf=0.0)
    overlay = (1 - _OVERLAY_ALPHA) * rgb + _OVERLAY_ALPHA * _jet(np.clip(values, 0.0, 1.0))
    above = anomaly_map > threshold
    overlay[above & ~binary_erosion(above)] = 1.0  # white outline of what exceeds the threshold
    return overlay


def _jet(values):
    """matplotlib's "jet" colour map (blue, cyan, green, yellow, red) of values in [0, 1]."""
    channels = [np.clip(1.5 - np.abs(4 * values - centre), 0.0, 1.0) for centre in (3, 2, 1)]
    return np.stack(channels, axis=-1)


def _legend(low, high, threshold):
    stops = ", ".join(
        "rgb({}, {}, {}) {}%".format(*np.rint(_jet(np.float64(p / 100)) * 255).astype(int), p) for p in range(0, 101, 10)
    )
    position = float(np.clip((threshold - low) / (high - low), 0, 1)) * 100
    return _LEGEND.format(
        stops=stops, position=f"{position:.1f}", low=_fmt(low), high=_fmt(high), threshold=_fmt(threshold)
    )


def _to_pil(rgb):
    return Image.fromarray(np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8))


def _png_uri(image):
    if isinstance(image, np.ndarray):
        image = _to_pil(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _card(result, index, rank, image_uri, overlay_uri):
    flagged = bool(result.flagged[index])
    path = result.paths[index] or f"image {index} (array)"
    return _CARD.format(
        kind="flagged" if flagged else "normal",
        rank=rank,
        score=_fmt(result.anomaly_scores[index]),
        badge="flagged" if flagged else "not flagged",
        path=html.escape(path),
        name=html.escape(os.path.basename(path) or path),
        image=image_uri,
        overlay=overlay_uri,
    )


def _summary(result):
    estimator = result.estimator
    n_images = len(result.anomaly_scores)
    if result.estimate_source == "flagged":
        source = "the number of flagged images (the model has no contamination_estimate_)"
    else:
        source = f"contamination_estimate_ = {_fmt(estimator.contamination_estimate_)} of the {n_images} images"
    threshold = f"{_fmt(result.threshold)} (-offset_, from contamination={estimator.contamination!r})"
    rows = [
        ("Training images", html.escape(str(n_images))),
        ("Flagged (anomaly score above the threshold)", html.escape(str(result.n_flagged))),
        ("Estimated number of defective images", html.escape(f"{result.n_defective_estimate:.1f} (from {source})")),
        ("Threshold (anomaly score)", html.escape(threshold)),
        ("Model", f"<code>{html.escape(repr(estimator))}</code>"),
    ]
    body = "\n".join(f"<tr><th>{html.escape(key)}</th><td>{value}</td></tr>" for key, value in rows)
    return f'<table class="summary">\n{body}\n</table>\n{_params_details(estimator)}'


def _params_details(estimator):
    params = estimator.get_params(deep=True)
    rows = "\n".join(
        f"<tr><td><code>{html.escape(key)}</code></td><td><code>{html.escape(repr(value))}</code></td></tr>"
        for key, value in sorted(params.items())
        if value is None or isinstance(value, (bool, int, float, str, tuple))
    )
    return f'<details><summary>All model parameters</summary>\n<table class="params">\n{rows}\n</table></details>'


def _flagged_table(result):
    ranks = np.empty(len(result.ranking), dtype=int)
    ranks[result.ranking] = np.arange(1, len(result.ranking) + 1)
    order = [index for index in result.ranking if result.flagged[index]]
    if not order:
        return "<p>No training image is flagged.</p>"
    rows = "\n".join(
        f"<tr><td>{ranks[i]}</td><td>{i}</td><td>{html.escape(result.paths[i] or '(array)')}</td>"
        f"<td>{_fmt(result.anomaly_scores[i])}</td></tr>"
        for i in order
    )
    head = "<tr><th>rank</th><th>index</th><th>path</th><th>anomaly score</th></tr>"
    return f'<table class="flagged">\n{head}\n{rows}\n</table>'


def _histogram(result):
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return (
            '<p class="note">The histogram of the scores is not drawn: matplotlib is not '
            'installed (<code>pip install "skpatch[plot]"</code>).</p>'
        )
    scores, flagged = result.anomaly_scores, result.flagged
    finite = np.isfinite(scores)
    bins = np.histogram_bin_edges(np.append(scores[finite], result.threshold), bins=min(40, max(10, finite.sum() // 3)))
    fig = Figure(figsize=(8, 3), dpi=100)
    ax = fig.add_subplot()
    ax.hist([scores[finite & ~flagged], scores[finite & flagged]], bins=bins, stacked=True,
            color=["tab:blue", "tab:red"], label=["not flagged", "flagged"])
    ax.axvline(result.threshold, color="black", linestyle="--", label=f"threshold {_fmt(result.threshold)}")
    ax.set_xlabel("anomaly score (-train_scores_)")
    ax.set_ylabel("training images")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="histogram" alt="histogram of the anomaly scores" src="{uri}">'


def _fmt(value):
    return f"{float(value):.4g}"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; }
table { border-collapse: collapse; }
table.summary th { text-align: left; padding: 3px 16px 3px 0; font-weight: 600; vertical-align: top; }
table.summary td, table.params td, table.flagged td, table.flagged th { padding: 3px 10px 3px 0; }
table.flagged th { text-align: left; }
table.flagged td:nth-child(3) { word-break: break-all; }
code { font-size: 12px; word-break: break-all; }
.note { color: #a15c00; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(470px, 1fr)); gap: 14px; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 8px; }
.card.flagged { border: 2px solid #d62728; }
.card .head { display: flex; justify-content: space-between; font-weight: 600; }
.card .path { font-size: 12px; color: #555; word-break: break-all; margin: 4px 0; }
.card figure { display: inline-block; margin: 0 6px 0 0; }
.card img { width: 224px; height: auto; image-rendering: auto; }
.card figcaption { font-size: 12px; color: #555; text-align: center; }
.scale { width: 420px; margin: 8px 0 16px 0; }
.scale .bar { position: relative; height: 14px; border: 1px solid #888; }
.scale .mark { position: absolute; top: -5px; bottom: -5px; width: 2px; margin-left: -1px; background: black; }
.scale .labels { position: relative; height: 16px; font-size: 12px; }
.scale .labels span { position: absolute; transform: translateX(-50%); white-space: nowrap; }
.scale .labels.top { margin-bottom: 4px; }
.badge { padding: 0 6px; border-radius: 4px; font-size: 13px; }
.flagged .badge { background: #d62728; color: white; }
.normal .badge { background: #ddd; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>skpatch training-set audit</title>
<style>{style}</style>
</head>
<body>
<h1>skpatch training-set audit</h1>
<p>Each training image is scored by the model fitted on all of them, without the
memory it contributed itself, so a defective image cannot vouch for itself.
Higher anomaly score = more suspicious.</p>
{summary}
<h2>Score distribution</h2>
{histogram}
<h2>Flagged images</h2>
{flagged}
{grid}
</body>
</html>
"""

_LEGEND = """<p>Left: the training image; right: its anomaly map, scored without the memory
the image contributed. One colour scale for all maps, from the median of their values to the
highest anomaly score of the set; a white line surrounds where a map exceeds the threshold.</p>
<div class="scale">
<div class="labels top"><span style="left: {position}%">threshold {threshold}</span></div>
<div class="bar" style="background: linear-gradient(to right, {stops});">
<div class="mark" style="left: {position}%"></div></div>
<div class="labels"><span style="left: 0; transform: none">{low}</span><span style="left: 100%; transform: translateX(-100%)">{high}</span></div>
</div>
"""

_CARD = """<div class="card {kind}">
<div class="head"><span>#{rank} &middot; anomaly score {score}</span><span class="badge">{badge}</span></div>
<div class="path" title="{path}">{path}</div>
<figure><img alt="{name}" src="{image}"><figcaption>image</figcaption></figure>
<figure><img alt="anomaly map of {name}" src="{overlay}"><figcaption>anomaly map</figcaption></figure>
</div>"""
