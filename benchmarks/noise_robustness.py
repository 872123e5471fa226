"""Noise robustness of the public estimators on contaminated training sets.

For every data set, seed and noise ratio, defective test images are injected
into the training set with :func:`skpatch.datasets.make_noisy_split` (the
SoftPatch protocol; "overlap" by default: the injected images stay in the test
set), and every configuration of :class:`~skpatch.SoftPatchClassifier` and
:class:`~skpatch.SoftPatchSegmenter` is fitted on it through the public API:
``Estimator(random_state=seed, cache=...).set_params(**config).fit(X_train)``,
then ``score_samples`` on the test images. ``cache=`` (one
:class:`joblib.Memory` folder per run) computes the CNN features of each image
set once and shares them with every configuration.

A configuration is a set of ``set_params`` keywords. Built-in names:

* ``patchcore``: ``denoise="passthrough", memory=WeightedCoreset()`` (no
  noise removal, one memory bank);
* ``default``: no parameter at all, i.e. the estimator's defaults at this
  commit (the classifier's and the segmenter's can differ);
* ``METHOD@T``: ``denoise__method=METHOD, denoise__threshold=T`` (``lof``,
  ``gaussian``, ``nearest``, ``softpatch+``), and ``default@T``: only
  ``denoise__threshold=T``, the default method at a fixed ratio;
* ``NAME:key=value,key=value``: any parameters, e.g.
  ``--config strict-gauss:denoise__method=gaussian,denoise__threshold=0.3``
  (values are read as int, float, None, True/False or else str).

Configurations that resolve to the same parameters are fitted once.

Metrics (each the mean over seeds, with the sample standard deviation):
classifier image AUROC; segmenter pixel AUROC and AUPRO (data sets with
masks); ``auroc_seen`` / ``auroc_unseen`` (image AUROC on the good test
images plus only the defective test images that were / were not injected into
training); the discriminator's removal diagnostics read from the fitted
``named_steps["denoise"]`` (``rm_inj`` / ``rm_clean``: fraction of the injected
/ clean training images' patches removed, ``rm_defect``: of the injected
images' patches that touch a ground-truth defect, ``rm_all``: of all
patches, ``disc_auc``: AUROC of each training image's largest discriminator
score at telling injected from clean images); and, when the fitted estimator
has a ``train_scores_`` attribute, ``fit_predict``: AUROC of
``-train_scores_`` against the hidden training labels.

Examples
--------
From the repository root::

    python benchmarks/noise_robustness.py                 # everything
    python benchmarks/noise_robustness.py --quick         # smoke run
    python benchmarks/noise_robustness.py --datasets hard_logical --configs patchcore default \\
        --config g30:denoise__method=gaussian,denoise__threshold=0.3

Results go to ``benchmarks/results/noise_robustness_<dataset>.{md,csv}``,
``noise_robustness_runs.csv`` (one row per fit) and a PNG per data set.
"""

import argparse
import csv
import datetime
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
# Measure this checkout's skpatch, not whichever one is installed.
sys.path.insert(0, str(REPO_ROOT))
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
# Real data sets (MVTec layout, not shipped; skipped when absent), run first:
# real images decide the defaults, the synthetic sets explain mechanisms.
REAL = {
    # MVTec 3D-AD tire, RGB only, with masks: small defects on rubber texture.
    "tire": "mvtec_3d_tire",
    # MVTec AD bottle, no masks: image level only.
    "bottle": "mvtec_ad_bottle",
}
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

# Synthetic data sets: keyword arguments of make_defect_dataset (besides
# n_train, n_test, image_size and random_state). The two hard ones mirror
# the two real MVTec-family sets of issue #9, and were calibrated so that
# PatchCore on clean training data reaches about 0.85-0.95 image AUROC (see
# benchmarks/README.md, "Calibration").
SYNTHETIC = {
    # Small (0.5-3% of the image), often faint defects of five kinds on a
    # random grain surface whose lighting varies from image to image.
    "hard_surface": {
        "kind": "grain",
        "defect_types": ("scratch", "hole", "stain", "missing", "wrong_colour"),
        "defect_area": (0.005, 0.03),
        "contrast": (0.3, 0.7),
        "variation": 1.0,
    },
    # Logical defects on a board made of parts: a part missing or in a
    # wrong shade, nearly the same part in most defective images
    # (recurrence 0.9), on boards that shift and are lit differently.
    "hard_logical": {
        "kind": "board",
        "defect_types": ("missing", "wrong_colour"),
        "recurrence": 0.9,
        "variation": 1.6,
        "contrast": (0.3, 0.8),
    },
    # The first release's easy objects (large, high-contrast defects).
    "easy_object": {"kind": "object"},
}
DATASETS = (*REAL, *SYNTHETIC)
DEFAULT_DATA = DEFAULT_DATA_ROOT / REAL["bottle"]  # fit_predict.py's default folder
# Parameters set on every configuration of a data set (before --set). The
# memory bank's brute-force search returns the same nearest neighbours as the
# default exact search (identical scores, checked on hard_surface), whose
# triangle-inequality pruning rules out few lists on the synthetic sets' widely
# spread patch features: 6.6x more CPU per fit and score on hard_surface. On
# bottle the default search prunes well and stays.
DATASET_PARAMS = {name: {"memory__search": "brute"} for name in SYNTHETIC}

METHODS = ("lof", "gaussian", "nearest", "softpatch+")
DEFAULT_CONFIGS = (
    "patchcore",
    "default",
    "lof@0.15",
    "gaussian@0.15",
    "nearest@0.15",
    "softpatch+@0.15",
    "default@0.05",
    "default@0.15",
    "default@0.3",
    "default@0.5",
)
ESTIMATORS = ("classifier", "segmenter")
NOISE = (0.0, 0.1, 0.2, 0.3, 0.4)

# Metric columns of the summary tables: (column, estimator, title).
SUMMARY_METRICS = (
    ("img_auroc", "classifier", "Image AUROC (classifier)"),
    ("pix_auroc", "segmenter", "Pixel AUROC (segmenter)"),
    ("aupro", "segmenter", "AUPRO (segmenter)"),
)
# Secondary tables: mean over seeds only.
DETAIL_METRICS = (
    "pix_f1",
    "pix_f1_max",
    "pix_precision",
    "pix_recall",
    "cont_est",
    "cont_true",
    "auroc_seen",
    "auroc_unseen",
    "fit_predict",
    "rm_all",
    "rm_inj",
    "rm_clean",
    "rm_defect",
    "disc_auc",
)
RUN_FIELDS = (
    "dataset", "estimator", "config", "params", "seed", "noise", "overlap", "n_train",
    "n_injected", "n_test", "img_auroc", "pix_auroc", "aupro", "auroc_seen",
    "auroc_unseen", "fit_predict", "pix_f1", "pix_f1_max", "pix_precision", "pix_recall", "cont_est", "cont_true", "rm_all", "rm_inj", "rm_clean", "rm_defect",
    "disc_auc", "fit_s", "score_s", "shared_with", "note",
)


def log(message):
    """Progress goes to stderr, so that stdout stays the results."""
    print(message, file=sys.stderr, flush=True)


# -- configurations -------------------------------------------------------------------------


# Step objects a configuration may name as a value, e.g. memory=BaggedCoreset().
STEP_VALUES = ("BaggedCoreset()", "WeightedCoreset()", "NoiseDiscriminator()")


def parse_value(text):
    """A command-line value as a step of STEP_VALUES, int, float, None, bool or str."""
    if text.strip() in STEP_VALUES:
        import skpatch

        return getattr(skpatch, text.strip()[:-2])()
    lowered = text.strip().lower()
    if lowered == "none":
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_config(spec):
    """Return ``(name, params)`` for a configuration spec (see the module docstring).

    >>> parse_config("gaussian@0.3")
    ('gaussian@0.3', {'denoise__method': 'gaussian', 'denoise__threshold': 0.3})
    >>> parse_config("k10:denoise__n_neighbors=10,denoise__threshold=auto")
    ('k10', {'denoise__n_neighbors': 10, 'denoise__threshold': 'auto'})
    """
    spec = spec.strip()
    if ":" in spec:
        name, _, body = spec.partition(":")
        params = {}
        for item in filter(None, (part.strip() for part in body.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                msg = f"config {spec!r}: {item!r} is not key=value"
                raise ValueError(msg)
            params[key.strip()] = parse_value(value)
        if not name.strip():
            msg = f"config {spec!r} has no name before ':'"
            raise ValueError(msg)
        return name.strip(), params
    if spec == "patchcore":
        from skpatch import WeightedCoreset

        return spec, {"denoise": "passthrough", "memory": WeightedCoreset()}
    if spec == "default":
        return spec, {}
    method, at, threshold = spec.partition("@")
    if at:
        value = parse_value(threshold)
        if method == "default":
            return spec, {"denoise__threshold": value}
        if method in METHODS:
            return spec, {"denoise__method": method, "denoise__threshold": value}
    msg = (
        f"unknown config {spec!r}: use patchcore, default, METHOD@T with METHOD in "
        f"{('default', *METHODS)}, or NAME:key=value,..."
    )
    raise ValueError(msg)


def resolved_key(estimator):
    """What decides an estimator's results: its deep parameters, steps left aside.

    ``set_params(denoise__threshold=...)`` replaces a None step by the default
    step object, so the step entries themselves are compared only when they
    are strings (``"passthrough"``); their parameters are compared either way
    (a BaggedCoreset and a WeightedCoreset differ in their parameter names).
    """
    items = []
    for key, value in estimator.get_params(deep=True).items():
        if key in ("featurizer", "denoise", "memory") and not isinstance(value, str):
            continue
        items.append((key, repr(value)))
    return tuple(sorted(items))


# -- data -----------------------------------------------------------------------------------


def synthetic_dataset(name, seed, args):
    from skpatch.datasets import make_defect_dataset

    return make_defect_dataset(
        n_train=args.n_train, n_test=args.n_test, image_size=args.image_size,
        random_state=seed, **SYNTHETIC[name],
    )


def real_dataset(name, seed, args):
    """A real MVTec-layout data set (file paths), or None when its folder is absent.

    ``--quick`` keeps a seeded subset: the test set stays a mix of good and
    defective images.
    """
    from skpatch.datasets import load_mvtec

    folder = real_folder(name, args)
    if not folder.is_dir():
        return None
    data = load_mvtec(folder)
    if args.quick:
        rng = np.random.RandomState(seed)
        labels = np.asarray(data.test_labels)
        keep_train = np.sort(rng.choice(len(data.train_images), 60, replace=False))
        keep_test = np.sort(np.r_[
            rng.choice(np.flatnonzero(labels == 0), 12, replace=False),
            rng.choice(np.flatnonzero(labels == 1), 28, replace=False),
        ])
        data.train_images = [data.train_images[i] for i in keep_train]
        data.train_labels = np.zeros(len(keep_train), dtype=int)
        for key in ("test_images", "test_labels", "test_defect_types", "test_masks"):
            if data.get(key) is not None:
                data[key] = [data[key][i] for i in keep_test]
        data.test_labels = np.asarray(data.test_labels)
    return data


def real_folder(name, args):
    return Path(args.data_root) / REAL[name]


def test_masks(split):
    """Test masks as one ``(n, H, W)`` bool array, or None when absent or ragged."""
    masks = split.get("test_masks")
    if masks is None or any(m is None for m in masks):
        return None
    if len({np.shape(m) for m in masks}) != 1:
        return None
    return np.asarray(np.stack(masks), dtype=bool)


def patch_masks(masks, grid):
    """``(n, H, W)`` pixel masks -> ``(n, h * w)``: patch cells touching a defect pixel.

    Cell ``i`` spans rows ``floor(i * H / h)`` to ``ceil((i + 1) * H / h)``,
    as adaptive max pooling does.
    """
    n, height, width = masks.shape
    h, w = grid
    out = np.zeros((n, h, w), dtype=bool)
    for i in range(h):
        rows = slice(i * height // h, -(-(i + 1) * height // h))
        band = masks[:, rows].any(axis=1)
        for j in range(w):
            out[:, i, j] = band[:, j * width // w: -(-(j + 1) * width // w)].any(axis=1)
    return out.reshape(n, h * w)


# -- one fit ----------------------------------------------------------------------------------


def new_estimator(kind, params, seed, args, cache):
    from skpatch import SoftPatchClassifier, SoftPatchSegmenter

    cls = SoftPatchClassifier if kind == "classifier" else SoftPatchSegmenter
    estimator = cls(random_state=seed, cache=cache, n_jobs=args.n_jobs)
    return estimator.set_params(**{**args.dataset_params, **args.common, **params})


def auroc_or_nan(labels, scores):
    from skpatch.metrics import image_auroc

    labels = np.asarray(labels, dtype=int)
    if labels.min() == labels.max():
        return math.nan
    return float(image_auroc(labels, scores))


def discriminator_diagnostics(estimator, train_labels, injected_masks):
    """Removal diagnostics from the fitted discriminator's public attributes."""
    denoise = estimator.named_steps["denoise"]
    kept = getattr(denoise, "kept_", None)
    if kept is None:
        return {}
    kept = np.asarray(kept, dtype=bool)
    injected = np.asarray(train_labels, dtype=bool)
    out = {"rm_all": float((~kept).mean())}
    if injected.any() and (~injected).any():
        out["rm_inj"] = float((~kept[injected]).mean())
        out["rm_clean"] = float((~kept[~injected]).mean())
        if injected_masks is not None:
            grid = estimator.named_steps["featurizer"].feature_shape_
            defect = patch_masks(injected_masks, grid)
            if defect.any():
                out["rm_defect"] = float((~kept[injected][defect]).mean())
        scores = getattr(denoise, "scores_", None)
        if scores is not None:
            out["disc_auc"] = auroc_or_nan(injected, np.asarray(scores).max(axis=1))
    return out


def evaluate(kind, estimator, split, masks, train_labels, injected_masks):
    """Fit-independent metrics of one fitted estimator on the split's test set."""
    from skpatch.metrics import aupro, f1_max, pixel_auroc

    row = {}
    start = time.perf_counter()
    if kind == "classifier":
        anomaly = -estimator.score_samples(split.test_images)
        row["score_s"] = time.perf_counter() - start
        labels = np.asarray(split.test_labels, dtype=int)
        row["img_auroc"] = auroc_or_nan(labels, anomaly)
        if split.overlap and len(split.noise_indices):
            seen = np.zeros(len(labels), dtype=bool)
            seen[split.noise_indices] = True
            for key, defective in (("auroc_seen", seen), ("auroc_unseen", ~seen & (labels == 1))):
                pick = (labels == 0) | defective
                row[key] = auroc_or_nan(labels[pick], anomaly[pick])
        train_scores = getattr(estimator, "train_scores_", None)
        if train_scores is not None:
            row["fit_predict"] = auroc_or_nan(train_labels, -np.asarray(train_scores))
    else:
        maps = estimator.anomaly_maps(split.test_images)
        row["score_s"] = time.perf_counter() - start
        row["pix_auroc"] = float(pixel_auroc(masks, maps))
        row["aupro"] = float(aupro(masks, maps))
        # The masks a user gets (predict's threshold) against the best threshold.
        flagged = maps > -estimator.offset_
        row["pix_precision"], row["pix_recall"], row["pix_f1"] = pixel_precision_recall_f1(masks, flagged)
        row["pix_f1_max"] = float(f1_max(masks, maps))
    estimate = getattr(estimator, "contamination_estimate_", None)
    if estimate is not None:
        row["cont_est"] = float(estimate)
        row["cont_true"] = float(np.mean(train_labels))
    row.update(discriminator_diagnostics(estimator, train_labels, injected_masks))
    return row


def pixel_precision_recall_f1(masks, predicted):
    """Precision, recall and F1 of predicted defect pixels against the ground-truth masks."""
    true_positive = float(np.logical_and(masks, predicted).sum())
    precision = true_positive / max(float(predicted.sum()), 1.0)
    recall = true_positive / max(float(masks.sum()), 1.0)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return precision, recall, f1


def pixel_f1(masks, predicted):
    """F1 of predicted defect pixels against the ground-truth masks."""
    return pixel_precision_recall_f1(masks, predicted)[2]


# -- the run ----------------------------------------------------------------------------------


def run_split(name, seed, split, args, cache, configs):
    """Fit every (estimator, distinct config) on one split; return result rows."""
    masks = test_masks(split)
    train_labels = np.asarray(split.train_labels, dtype=int)
    injected_masks = None
    if masks is not None and len(split.noise_indices):
        # The injected images are the test images at noise_indices (overlap
        # or not, make_noisy_split records their positions in the full test set).
        injected_masks = split.injected_masks
    base = {
        "dataset": name, "seed": seed, "noise": split.noise_ratio,
        "overlap": "yes" if split.overlap else "no", "n_train": len(train_labels),
        "n_injected": int(train_labels.sum()), "n_test": len(split.test_labels),
    }
    rows = []
    for kind in args.estimators:
        if kind == "segmenter" and masks is None:
            continue
        done = {}
        for config, params in configs:
            estimator = new_estimator(kind, params, seed, args, cache)
            key = resolved_key(estimator)
            row = {**base, "estimator": kind, "config": config, "params": format_params(params)}
            if key in done:
                first = done[key]
                rows.append({**first, **row, "shared_with": first["config"]})
                continue
            start = time.perf_counter()
            try:
                estimator.fit(split.train_images)
                row["fit_s"] = time.perf_counter() - start
                row.update(evaluate(kind, estimator, split, masks, train_labels, injected_masks))
            except Exception as exc:  # noqa: BLE001 - one failing candidate must not end the run
                if args.debug:
                    raise
                row["note"] = f"failed: {type(exc).__name__}: {exc}"
                log(f"    {kind} {config}: FAILED {row['note']}")
            done[key] = row
            rows.append(row)
            log(
                f"    {kind:<10} {config:<16} "
                + " ".join(f"{m} {row[m]:.3f}" for m in ("img_auroc", "pix_auroc", "aupro") if m in row)
                + f"  fit {row.get('fit_s', math.nan):.1f}s score {row.get('score_s', math.nan):.1f}s"
            )
    return rows


def format_params(params):
    return ",".join(f"{k}={v}" for k, v in params.items()) or "(defaults)"


def run_dataset(name, args, configs, cache):
    from skpatch.datasets import make_noisy_split

    args.dataset_params = DATASET_PARAMS.get(name, {})
    rows, notes = [], []
    for seed in args.seeds:
        data = real_dataset(name, seed, args) if name in REAL else synthetic_dataset(name, seed, args)
        if data is None:
            notes.append(f"skipped: no data folder at {real_folder(name, args)}")
            log(f"[{name}] skipped: no data folder at {real_folder(name, args)}")
            return rows, notes
        all_masks = test_masks(data)
        log(
            f"[{name}] seed {seed}: {len(data.train_images)} train, {len(data.test_labels)} test "
            f"({int(np.sum(data.test_labels))} defective), masks: {'yes' if all_masks is not None else 'no'}"
        )
        for ratio in args.noise:
            try:
                split = make_noisy_split(data, ratio, overlap=args.overlap, random_state=seed)
            except ValueError as exc:
                note = f"noise {ratio:g}: infeasible ({exc})"
                if note not in notes:
                    notes.append(note)
                log(f"  noise {ratio:g}: infeasible")
                continue
            labels = np.asarray(split.test_labels)
            if labels.min() == labels.max():
                note = f"noise {ratio:g}: no {'good' if labels.min() else 'defective'} test image left"
                if note not in notes:
                    notes.append(note)
                continue
            split.injected_masks = (
                None if all_masks is None else all_masks[np.asarray(split.noise_indices, dtype=int)]
            )
            log(f"  seed {seed} noise {ratio:g}: {int(split.train_labels.sum())} injected")
            rows += run_split(name, seed, split, args, cache, configs)
    return rows, notes


# -- summaries --------------------------------------------------------------------------------


def summarise(rows, metric, estimator, configs, noise_levels):
    """``{config: {noise or "avg": (mean, std, min, max, n)}}`` over seeds.

    ``"avg"`` averages each seed's values over the noise levels it has, then
    takes mean and spread over seeds.
    """
    table = {}
    for config, _ in configs:
        per_noise, per_seed = {}, {}
        for noise in noise_levels:
            values = []
            for r in rows:
                value = r.get(metric)
                if (r["estimator"] == estimator and r["config"] == config and r["noise"] == noise
                        and isinstance(value, float) and not math.isnan(value)):
                    values.append(value)
                    per_seed.setdefault(r["seed"], []).append(value)
            if values:
                per_noise[noise] = spread(values)
        if per_seed:
            per_noise["avg"] = spread([np.mean(v) for v in per_seed.values()])
        if per_noise:
            table[config] = per_noise
    return table


def spread(values):
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return float(values.mean()), std, float(values.min()), float(values.max()), len(values)


def cell(stats, with_spread=True):
    if stats is None:
        return "n/a"
    mean, std = stats[0], stats[1]
    if not with_spread or math.isnan(std):
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {std:.3f}"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def dataset_report(name, rows, notes, configs, args, seconds):
    noise_levels = sorted({r["noise"] for r in rows})
    header = ["config", *(f"{n:g}" for n in noise_levels), "avg over noise"]
    lines = [
        f"## {name}", "",
        f"{describe_dataset(name, args)} Overlap: {'yes' if args.overlap else 'no'}; seeds "
        f"{' '.join(map(str, args.seeds))}; each cell is the mean ± sample standard deviation "
        f"over seeds; 'avg over noise' averages each seed over the noise levels it has. "
        f"{seconds / 60:.1f} min.",
    ]
    summary_rows = []
    for metric, estimator, title in SUMMARY_METRICS:
        table = summarise(rows, metric, estimator, configs, noise_levels)
        if not table:
            continue
        body = [
            [config, *(cell(table[config].get(n)) for n in noise_levels), cell(table[config].get("avg"))]
            for config, _ in configs if config in table
        ]
        lines += ["", f"### {title}", "", markdown_table(header, body)]
        for config, stats in table.items():
            for noise, (mean, std, low, high, n) in stats.items():
                summary_rows.append({
                    "dataset": name, "estimator": estimator, "metric": metric, "config": config,
                    "noise": noise, "mean": round(mean, 5), "std": round(std, 5),
                    "min": round(low, 5), "max": round(high, 5), "n_seeds": n,
                })
    for estimator in args.estimators:
        detail_header = ["config", "metric", *(f"{n:g}" for n in noise_levels)]
        body = []
        for config, _ in configs:
            for metric in DETAIL_METRICS:
                table = summarise(rows, metric, estimator, [(config, None)], noise_levels)
                if config in table:
                    body.append([config, metric, *(cell(table[config].get(n), False) for n in noise_levels)])
        if body:
            lines += [
                "", f"### Diagnostics ({estimator}), mean over seeds", "",
                markdown_table(detail_header, body),
            ]
    params = [[config, f"`{format_params(p)}`"] for config, p in configs]
    lines += ["", "Configurations (`set_params` on the estimator):", "", markdown_table(["config", "params"], params)]
    failures = sorted({f"{r['estimator']} {r['config']}: {r['note']}" for r in rows if r.get("note")})
    if notes or failures:
        lines += ["", "Not evaluated:", ""] + [f"- {n}" for n in (*notes, *failures)]
    return "\n".join(lines) + "\n", summary_rows


def describe_dataset(name, args):
    if name in REAL:
        size = "a seeded subset of 60 train / 40 test images" if args.quick else "all images"
        masks = "with masks" if name == "tire" else "no masks"
        return f"{REAL[name]} ({real_folder(name, args)}), {size}, {masks}."
    params = ", ".join(f"{k}={v!r}" for k, v in SYNTHETIC[name].items())
    fixed = ", ".join(f"{k}={v!r}" for k, v in DATASET_PARAMS.get(name, {}).items())
    return (
        f"`make_defect_dataset(n_train={args.n_train}, n_test={args.n_test}, "
        f"image_size={args.image_size}, {params}, random_state=seed)`; every configuration "
        f"also gets `{fixed}` (same neighbours as the default search, faster here)."
    )


def save_plot(name, rows, configs, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no plot")
        return
    panels = [(m, e, t) for m, e, t in SUMMARY_METRICS if any(r["estimator"] == e and m in r for r in rows)]
    if not panels:
        return
    noise_levels = sorted({r["noise"] for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (metric, estimator, title) in zip(axes[0], panels):
        table = summarise(rows, metric, estimator, configs, noise_levels)
        for i, (config, _) in enumerate(configs):
            if config not in table:
                continue
            xs = [n for n in noise_levels if n in table[config]]
            means = [table[config][n][0] for n in xs]
            errors = [0 if math.isnan(table[config][n][1]) else table[config][n][1] for n in xs]
            ax.errorbar(xs, means, yerr=errors, marker="os^vDxP*<>"[i % 10], capsize=3,
                        label=config, alpha=0.85, linestyle="-" if i < 10 else "--")
        ax.set_title(f"{name}: {title}")
        ax.set_xlabel("noise ratio")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_csv(path, rows, fields):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()})


def commit():
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO_ROOT, capture_output=True,
            text=True, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# -- command line -----------------------------------------------------------------------------


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS),
                        help="data sets to run")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help="folder holding the real data sets (" + ", ".join(REAL.values())
                        + "); each is skipped when absent")
    parser.add_argument("--noise", type=float, nargs="+", default=list(NOISE), help="noise ratios")
    parser.add_argument("--overlap", choices=("yes", "no"), default="yes",
                        help="keep the injected images in the test set (SoftPatch's overlap setting)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="each seed draws the synthetic data, the split and the estimators' random_state")
    parser.add_argument("--estimators", nargs="+", choices=ESTIMATORS, default=list(ESTIMATORS),
                        help="the segmenter runs only on data sets with masks")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), metavar="SPEC",
                        help="configurations (replaces the built-in list)")
    parser.add_argument("--config", action="append", default=[], metavar="SPEC",
                        help="add a configuration, e.g. NAME:denoise__method=gaussian,denoise__threshold=0.3")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="set_params applied to every configuration first, e.g. memory__sampling_ratio=0.05")
    parser.add_argument("--n-train", type=int, default=60, help="synthetic: good training images")
    parser.add_argument("--n-test", type=int, default=60,
                        help="synthetic: test images, half defective (noise 0.4 needs 0.4 * n_train of them)")
    parser.add_argument("--image-size", type=int, default=128, help="synthetic: image side in pixels")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: seed 0 only, 30 + 30 synthetic images, 60 + 40 images of each real set")
    parser.add_argument("--n-jobs", type=int, default=None, help="estimators' n_jobs (torch threads)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="joblib cache folder to keep between runs (default: a temporary one, "
                             "removed at the end; reuse only while the featurizer and the "
                             "discriminator's scores are unchanged)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output folder")
    parser.add_argument("--tag", default="", help="suffix of the output file names")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNGs")
    parser.add_argument("--debug", action="store_true", help="stop at the first failing fit, with its traceback")
    return parser


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    if args.quick:
        args.seeds = args.seeds[:1]
        args.n_train = min(args.n_train, 30)
        args.n_test = min(args.n_test, 30)
    args.overlap = args.overlap == "yes"
    common = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r} is not KEY=VALUE")
        common[key.strip()] = parse_value(value)
    args.common = common
    configs, seen = [], set()
    for spec in [*args.configs, *args.config]:
        name, params = parse_config(spec)
        if name in seen:
            raise ValueError(f"config name {name!r} given twice")
        seen.add(name)
        configs.append((name, params))
    args.parsed_configs = configs
    return args


def main(argv=None):
    try:
        args = parse_args(argv)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except Exception as exc:  # noqa: BLE001
        if args.debug:
            raise
        print(f"error: {type(exc).__name__}: {exc} (--debug shows the traceback)", file=sys.stderr)
        return 1


def _run(args):
    import sklearn
    import torch

    import skpatch

    configs = args.parsed_configs
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.cache or Path(tempfile.mkdtemp(prefix="skpatch_bench_cache_"))
    stamp = (
        f"skpatch {skpatch.__version__} ({Path(skpatch.__file__).parent}) at commit {commit()}, "
        f"{datetime.date.today().isoformat()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"scikit-learn {sklearn.__version__}, Python {platform.python_version()}"
    )
    log(stamp)
    command = "python benchmarks/noise_robustness.py " + " ".join(sys.argv[1:])
    all_rows, reports, summaries = [], [], []
    start_all = time.perf_counter()
    try:
        for name in args.datasets:
            start = time.perf_counter()
            rows, notes = run_dataset(name, args, configs, str(cache))
            seconds = time.perf_counter() - start
            all_rows += rows
            stem = args.out / f"noise_robustness_{name}{args.tag}"
            if not rows:
                reports.append(f"## {name}\n\n" + "\n".join(notes) + "\n")
                continue
            report, summary = dataset_report(name, rows, notes, configs, args, seconds)
            summaries += summary
            header = f"# Noise robustness: {name}\n\n{stamp}.\n\nCommand: `{command}`\n\n"
            Path(f"{stem}.md").write_text(header + report)
            write_csv(f"{stem}.csv", summary,
                      ("dataset", "estimator", "metric", "config", "noise", "mean", "std", "min", "max", "n_seeds"))
            if not args.no_plot:
                save_plot(name, rows, configs, f"{stem}.png")
            reports.append(report)
            log(f"[{name}] done in {seconds / 60:.1f} min: {stem}.md")
    finally:
        if args.cache is None:
            shutil.rmtree(cache, ignore_errors=True)
    write_csv(args.out / f"noise_robustness_runs{args.tag}.csv", all_rows, RUN_FIELDS)
    total = (time.perf_counter() - start_all) / 60
    print(f"# Noise robustness\n\n{stamp}; total {total:.1f} min.\n\nCommand: `{command}`\n")
    print("\n".join(reports))
    log(f"wrote {args.out}/noise_robustness_*{args.tag}.(md|csv|png); total {total:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
