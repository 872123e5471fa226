"""Noise robustness: PatchCore vs SoftPatch vs SoftPatch+ on contaminated training sets.

For every noise ratio and both overlap settings of the SoftPatch protocol
(:func:`skpatch.datasets.make_noisy_split`), defective test images are
injected into the training set and each method is fitted on it:

* ``patchcore``          no denoising: a :class:`~skpatch.WeightedCoreset`
                         fitted directly on the features (unit weights);
* ``softpatch-nearest``, ``softpatch-lof``, ``softpatch-gaussian``
                         SoftPatch with each :class:`~skpatch.NoiseDiscriminator`
                         method at ``threshold=0.15``;
* ``softpatch+``         SoftPatch+'s fused LOF + Gaussian score at 0.15
                         (the paper's ratio for classification);
* ``softpatch+seg``      the same at 0.5 (the paper's stricter ratio for
                         segmentation; :class:`~skpatch.SoftPatchSegmenter`'s
                         default).

Images are featurized **once** (one ``PatchFeaturizer.fit`` on the clean
training images and one ``transform`` each for the train and test images);
every split is then built by indexing into those feature arrays with
``noise_indices``. Reported per (overlap, noise, method): image AUROC (image
score = max patch anomaly = ``-min(score_samples)``), pixel AUROC and AUPRO
when the data set has masks (patch scores bilinearly upsampled to the mask
size and smoothed with a Gaussian of sigma 4, as ``SoftPatchSegmenter``
does), fit time (denoise + coreset) and scoring time. Diagnostics of the
discriminator are written too: the fraction of the injected images' patches
and of the clean images' patches that it removed, and how well its scores
separate injected from clean training images.

Examples
--------
MVTec bottle (the default folder, relative to the repository root)::

    python benchmarks/noise_robustness.py
    python benchmarks/noise_robustness.py --data /path/to/mvtec/screw

A synthetic data set with masks::

    python benchmarks/noise_robustness.py --synthetic object

Results go to ``benchmarks/results/noise_robustness_<dataset>.{csv,md,png}``.
"""

import argparse
import csv
import datetime
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from skpatch import NoiseDiscriminator, PatchFeaturizer, WeightedCoreset
from skpatch.datasets import load_mvtec, make_defect_dataset, make_noisy_split
from skpatch.metrics import aupro, image_auroc, pixel_auroc

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "mvtec_ad_bottle"
RESULTS_DIR = Path(__file__).resolve().parent / "results"

# name -> (discriminator method or None, threshold)
METHODS = {
    "patchcore": (None, None),
    "softpatch-nearest": ("nearest", 0.15),
    "softpatch-lof": ("lof", 0.15),
    "softpatch-gaussian": ("gaussian", 0.15),
    "softpatch+": ("softpatch+", 0.15),
    "softpatch+seg": ("softpatch+", 0.5),
}

SIGMA = 4.0  # Gaussian smoothing of pixel maps, in output pixels (SoftPatchSegmenter's default)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--data", type=Path, default=DEFAULT_DATA,
        help="data set root in MVTec AD layout (train/good, test/<type>, optional ground_truth)",
    )
    source.add_argument(
        "--synthetic", choices=("object", "texture"), default=None,
        help="use make_defect_dataset(kind=...) instead of a folder",
    )
    parser.add_argument("--n-train", type=int, default=100, help="synthetic: training images")
    parser.add_argument(
        "--n-test", type=int, default=100,
        help="synthetic: test images (half defective; noise 0.4 needs 0.4 * n_train of them)",
    )
    parser.add_argument("--synthetic-size", type=int, default=128, help="synthetic: image side in pixels")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.4], help="noise ratios")
    parser.add_argument(
        "--overlap", choices=("both", "no", "yes"), default="both",
        help="overlap settings of make_noisy_split to run",
    )
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD",
        help=f"methods among {list(METHODS)}",
    )
    parser.add_argument(
        "--extra-thresholds", type=float, nargs="*", default=[],
        help="also run SoftPatch+ at these removal ratios (rows 'softpatch+@T'), to show the threshold's effect",
    )
    parser.add_argument("--image-size", type=int, default=224, help="PatchFeaturizer image_size")
    parser.add_argument("--backbone", default=None, help="PatchFeaturizer backbone (default: its default)")
    parser.add_argument(
        "--sampling-ratio", type=float, default=None,
        help="WeightedCoreset sampling_ratio (default: WeightedCoreset's default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random_state of the split, projections and coreset")
    parser.add_argument("--n-jobs", type=int, default=None, help="torch threads (None: torch's setting)")
    parser.add_argument("--name", default=None, help="data set name used in the output file names")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output folder")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return parser.parse_args(argv)


# -- data and features --------------------------------------------------------------------------


def load_data(args):
    if args.synthetic is not None:
        data = make_defect_dataset(
            n_train=args.n_train, n_test=args.n_test, image_size=args.synthetic_size,
            kind=args.synthetic, random_state=args.seed,
        )
        name = args.name or f"synthetic_{args.synthetic}"
    else:
        data = load_mvtec(args.data)
        name = args.name or data.category
    return data, name


def featurize(data, args):
    params = {"image_size": args.image_size, "n_jobs": args.n_jobs}
    if args.backbone is not None:
        params["backbone"] = args.backbone
    featurizer = PatchFeaturizer(**params)
    start = time.perf_counter()
    featurizer.fit(data["train_images"])
    train = featurizer.transform(data["train_images"])
    test = featurizer.transform(data["test_images"])
    return featurizer, train, test, time.perf_counter() - start


def mask_stack(masks):
    """Test masks as one (n, H, W) bool array, or None."""
    if masks is None:
        return None
    if isinstance(masks, np.ndarray):
        return masks.astype(bool, copy=False)
    shapes = {np.shape(m) for m in masks}
    if len(shapes) != 1:
        print(f"  test masks have several sizes {sorted(shapes)}: pixel metrics skipped")
        return None
    return np.stack(masks).astype(bool)


def build_split(data, train_feats, test_feats, ratio, overlap, seed):
    """Index the precomputed features with make_noisy_split's noise_indices.

    Returns a dict, or a string saying why this split cannot be evaluated.
    """
    try:
        split = make_noisy_split(data, ratio, overlap=overlap, random_state=seed)
    except ValueError as exc:
        return f"infeasible: {exc}"
    noise = np.asarray(split.noise_indices, dtype=int)
    n_test = len(data["test_labels"])
    test_idx = np.arange(n_test) if overlap else np.setdiff1d(np.arange(n_test), noise)
    labels = np.asarray(data["test_labels"], dtype=int)[test_idx]
    # The indexed split must agree with make_noisy_split's own.
    assert len(split.train_labels) == len(train_feats) + len(noise)
    assert np.array_equal(np.asarray(split.test_labels), labels)
    if labels.min() == labels.max():
        return f"no {'good' if labels.min() else 'defective'} test image left: AUROC undefined"
    return {
        "X_train": np.concatenate([train_feats, test_feats[noise]]),
        "injected": np.r_[np.zeros(len(train_feats), bool), np.ones(len(noise), bool)],
        "noise_indices": noise,
        "test_idx": test_idx,
        "X_test": test_feats[test_idx],
        "y_test": labels,
    }


# -- methods ---------------------------------------------------------------------------------------


def fit_method(method, threshold, X_train, args):
    """Return (coreset, discriminator or None, fit seconds)."""
    coreset_params = {"random_state": args.seed, "n_jobs": args.n_jobs}
    if args.sampling_ratio is not None:
        coreset_params["sampling_ratio"] = args.sampling_ratio
    coreset = WeightedCoreset(**coreset_params)
    start = time.perf_counter()
    if method is None:
        disc = None
        coreset.fit(X_train)
    else:
        disc = NoiseDiscriminator(method, threshold=threshold, random_state=args.seed, n_jobs=args.n_jobs)
        coreset.fit(disc.fit_transform(X_train))
    return coreset, disc, time.perf_counter() - start


def pixel_maps(patch_anomaly, feature_shape, size):
    """(n, n_patches) anomaly -> (n, H, W): bilinear upsampling + Gaussian, as SoftPatchSegmenter."""
    h, w = feature_shape
    maps = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(patch_anomaly, dtype=np.float32)).reshape(-1, 1, h, w),
        size=tuple(size), mode="bilinear", align_corners=False,
    )[:, 0].numpy()
    for i in range(len(maps)):
        maps[i] = gaussian_filter(maps[i], sigma=SIGMA, truncate=4.0)
    return maps


def patch_masks(masks, feature_shape):
    """(n, H, W) pixel masks -> (n, h * w) bool: patch cells that touch a defect pixel."""
    if len(masks) == 0:
        return np.zeros((0, feature_shape[0] * feature_shape[1]), dtype=bool)
    t = torch.from_numpy(masks.astype(np.float32))[:, None]
    return (F.adaptive_max_pool2d(t, tuple(feature_shape))[:, 0] > 0).reshape(len(masks), -1).numpy()


def discriminator_diagnostics(disc, injected, defect_patches=None):
    """How much of the injected images the discriminator removed, and how well it separates them."""
    out = {"rm_inj": math.nan, "rm_clean": float((~disc.kept_).mean()), "disc_auc": math.nan,
           "rm_defect": math.nan}
    if injected.any():
        out["rm_inj"] = float((~disc.kept_[injected]).mean())
        if defect_patches is not None:
            # Of the injected images' patches that cover a ground-truth defect, the fraction removed.
            out["rm_defect"] = float((~disc.kept_[injected][defect_patches]).mean())
        out["rm_clean"] = float((~disc.kept_[~injected]).mean())
        # Image-level: does the most suspicious patch of each training image flag the injected ones?
        out["disc_auc"] = image_auroc(injected.astype(int), disc.scores_.max(axis=1))
    return out


def evaluate(split, coreset, featurizer, masks):
    start = time.perf_counter()
    anomaly = -coreset.score_samples(split["X_test"])  # (n, n_patches), higher = more anomalous
    score_s = time.perf_counter() - start
    image_scores = anomaly.max(axis=1)
    y = split["y_test"]
    row = {"img_auroc": image_auroc(y, image_scores), "score_s": score_s}
    # In the overlap setting, separate the injected (also seen in training) defective test images
    # from the others: memorising them is what noisy training does to PatchCore.
    noise = split["noise_indices"]
    seen = np.isin(split["test_idx"], noise) & (y == 1)
    unseen = ~np.isin(split["test_idx"], noise) & (y == 1)
    good = y == 0
    for key, defective in (("auroc_seen", seen), ("auroc_unseen", unseen)):
        pick = good | defective
        row[key] = image_auroc(y[pick], image_scores[pick]) if defective.any() else math.nan
    if masks is not None:
        m = masks[split["test_idx"]]
        maps = pixel_maps(anomaly, featurizer.feature_shape_, m.shape[1:])
        row["pix_auroc"] = pixel_auroc(m, maps)
        row["aupro"] = aupro(m, maps)
    return row


# -- output ----------------------------------------------------------------------------------------


def fmt(value, digits=3):
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(header, rows):
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def tables(results, has_masks):
    main_cols = ["overlap", "noise", "n_inj", "method", "img_auroc"]
    if has_masks:
        main_cols += ["pix_auroc", "aupro"]
    main_cols += ["fit_s", "score_s"]
    diag_cols = ["overlap", "noise", "method", "rm_inj"] + (["rm_defect"] if has_masks else [])
    diag_cols += ["rm_clean", "disc_auc", "auroc_seen", "auroc_unseen"]

    def cells(r, cols):
        return [f"{r[c]:g}" if c == "noise" else fmt(r.get(c, math.nan), 2 if c.endswith("_s") else 3)
                for c in cols]

    done = [r for r in results if "img_auroc" in r]
    main = (main_cols, [cells(r, main_cols) for r in done])
    diag = (diag_cols, [cells(r, diag_cols) for r in done
                          if r["n_inj"] > 0 and (r["method"] != "patchcore" or r["overlap"] == "yes")])
    # Compact pivot of image AUROC: one row per method, one column per (overlap, noise).
    keys = sorted({(r["overlap"], r["noise"]) for r in results})
    methods = list(dict.fromkeys(r["method"] for r in results))
    lookup = {(r["overlap"], r["noise"], r["method"]): r for r in results}
    pivot_rows = []
    for m in methods:
        row = [m]
        for k in keys:
            r = lookup.get((*k, m))
            row.append(fmt(r["img_auroc"]) if r and "img_auroc" in r else "n/a")
        pivot_rows.append(row)
    pivot = (["method"] + [f"{'overlap' if o == 'yes' else 'no overlap'} {n:g}" for o, n in keys], pivot_rows)
    return pivot, main, diag


def save_plot(results, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = [o for o in ("no", "yes") if any(r["overlap"] == o for r in results)]
    fig, axes = plt.subplots(
        1, len(settings), figsize=(6 * len(settings), 4.2), sharex=True, sharey=True, squeeze=False
    )
    methods = list(dict.fromkeys(r["method"] for r in results))
    styles = [("o", "-"), ("s", "--"), ("^", "-."), ("v", ":"), ("D", "-"), ("x", "--"), ("P", "-."), ("*", ":")]
    for ax, setting in zip(axes[0], settings):
        for i, m in enumerate(methods):
            pts = sorted(
                (r["noise"], r["img_auroc"]) for r in results
                if r["overlap"] == setting and r["method"] == m and "img_auroc" in r
            )
            if pts:
                # Distinct markers and dashes: several methods often lie on top of each other.
                marker, dash = styles[i % len(styles)]
                ax.plot(*zip(*pts), marker=marker, linestyle=dash, label=m, alpha=0.85,
                        markersize=8 - 0.6 * i, color=f"C{i}")
        ax.set_title(f"{title}: {'overlap' if setting == 'yes' else 'no overlap'}")
        ax.set_xlabel("noise ratio (injected defective / good training images)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("image AUROC")
    axes[0][-1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- main ------------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    data, name = load_data(args)
    masks = mask_stack(data.get("test_masks"))
    n_def = int(np.sum(data["test_labels"]))
    print(
        f"[{name}] {len(data['train_images'])} train, {len(data['test_labels'])} test images "
        f"({n_def} defective), masks: {'yes' if masks is not None else 'no'}; "
        f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}",
        flush=True,
    )
    featurizer, train_feats, test_feats, feat_s = featurize(data, args)
    print(
        f"featurized {len(train_feats) + len(test_feats)} images in {feat_s:.1f} s: "
        f"grid {featurizer.feature_shape_}, {train_feats.shape[2]} dims",
        flush=True,
    )

    methods = {m: METHODS[m] for m in args.methods}
    for t in args.extra_thresholds:
        methods[f"softpatch+@{t:g}"] = ("softpatch+", t)
    overlaps = {"both": (False, True), "no": (False,), "yes": (True,)}[args.overlap]

    results, notes, clean_cache = [], [], {}
    for overlap in overlaps:
        for ratio in args.noise:
            tag = "yes" if overlap else "no"
            split = build_split(data, train_feats, test_feats, ratio, overlap, args.seed)
            if isinstance(split, str):
                note = f"overlap={tag} noise={ratio:g}: {split}"
                print("  skip " + note, flush=True)
                notes.append(note)
                for m in methods:
                    results.append({"overlap": tag, "noise": ratio, "method": m, "note": split})
                continue
            n_inj = len(split["noise_indices"])
            for m, (method, threshold) in methods.items():
                base = {"overlap": tag, "noise": ratio, "n_inj": n_inj, "method": m,
                        "threshold": "" if threshold is None else threshold}
                if n_inj == 0 and m in clean_cache:
                    # Without injected images both overlap settings are the same split.
                    results.append({**clean_cache[m], **base})
                    continue
                coreset, disc, fit_s = fit_method(method, threshold, split["X_train"], args)
                row = {**base, "fit_s": fit_s, "memory": len(coreset.memory_bank_)}
                if disc is not None:
                    defects = None if masks is None else patch_masks(masks[split["noise_indices"]],
                                                                       featurizer.feature_shape_)
                    row.update(discriminator_diagnostics(disc, split["injected"], defects))
                row.update(evaluate(split, coreset, featurizer, masks))
                if n_inj == 0:
                    clean_cache[m] = row
                results.append(row)
                extra = f" pix {row['pix_auroc']:.3f} aupro {row['aupro']:.3f}" if "aupro" in row else ""
                print(
                    f"  overlap={tag} noise={ratio:g} ({n_inj} injected) {m:<18} "
                    f"img AUROC {row['img_auroc']:.3f}{extra}  fit {fit_s:.1f}s score {row['score_s']:.1f}s "
                    f"[{time.perf_counter() - t_start:.0f}s]",
                    flush=True,
                )

    # -- write everything --
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"noise_robustness_{name}"
    fields = ["dataset", "overlap", "noise", "n_inj", "method", "threshold", "img_auroc", "pix_auroc",
              "aupro", "fit_s", "score_s", "featurize_s", "memory", "rm_inj", "rm_defect", "rm_clean", "disc_auc",
              "auroc_seen", "auroc_unseen", "note"]
    with open(f"{stem}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            writer.writerow({"dataset": name, "featurize_s": round(feat_s, 3),
                             **{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()}})

    pivot, main_t, diag_t = tables(results, masks is not None)
    total_s = time.perf_counter() - t_start
    setup = (
        f"Data: `{name}`, {len(data['train_images'])} good training images, {len(data['test_labels'])} test "
        f"images ({n_def} defective). Featurizer: {featurizer.backbone} at {args.image_size} px, grid "
        f"{featurizer.feature_shape_}, {train_feats.shape[2]} dims; featurizing all images once took "
        f"{feat_s:.1f} s. Coreset sampling ratio {WeightedCoreset().sampling_ratio if args.sampling_ratio is None else args.sampling_ratio}, "
        f"seed {args.seed}. {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}; whole run {total_s / 60:.1f} min."
    )
    md = [
        f"## Noise robustness: {name}", "", setup, "",
        "Image AUROC (image score = max patch anomaly):", "", markdown_table(*pivot), "",
        "All metrics (fit = denoise + coreset, score = `score_samples` on the test set; seconds):", "",
        markdown_table(*main_t), "",
        "Discriminator diagnostics: `rm_inj` / `rm_clean` = fraction of the injected defective / clean "
        "training images' patches removed (`rm_defect`: of the injected images' patches that touch a ground-truth defect); `disc_auc` = AUROC of the max discriminator score per training "
        "image at telling injected from clean images; `auroc_seen` / `auroc_unseen` = image AUROC on the "
        "good test images plus only the defective test images that were / were not injected into training "
        "(overlap setting).", "",
        markdown_table(*diag_t),
    ]
    if notes:
        md += ["", "Not evaluated:", ""] + [f"- {n}" for n in notes]
    Path(f"{stem}.md").write_text("\n".join(md) + "\n")

    print()
    print(f"image AUROC ({name})")
    print(text_table(*pivot))
    print()
    print(text_table(*main_t))
    print()
    print("discriminator diagnostics")
    print(text_table(*diag_t))
    for n in notes:
        print("not evaluated: " + n)
    if not args.no_plot:
        save_plot(results, f"{stem}.png", name)
    print(f"\nwrote {stem}.csv, .md{'' if args.no_plot else ', .png'}  (total {total_s:.0f} s)")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
