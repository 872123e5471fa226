"""Speed and memory of each stage: featurize, denoise, coreset, scoring.

Prints Markdown tables of seconds, seconds per image, peak RSS and each
stage's share, with the headline ratio (non-backbone time) / (backbone time);
compares the cell-local coreset with exact greedy k-center, the exact
(pruned inverted-file) search with brute force, the approximate inverted file
and pynndescent, float16 with float32 features, a GridSearchCV with and
without ``cache=``, and measures a 1000-image fit streamed from files.

Run from the repository root::

    python benchmarks/speed.py                 # synthetic 50/200/1000 + bottle 50/200
    python benchmarks/speed.py --large         # adds n_train = 5000 (synthetic)
    python benchmarks/speed.py --backbone wide_resnet50_2 --sizes 200 1000 \
        --output benchmarks/results/speed_wrn50.md   # the paper's backbone (timing only)

Every configuration runs in a fresh subprocess so that peak RSS is its own.
"""

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOTTLE = os.path.join(ROOT, os.pardir, "shared", "data", "mvtec_ad_bottle")
IMAGE_SIZE = 256
N_TEST = 50
METHODS = ("nearest", "lof", "gaussian", "softpatch+")


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _clock():
    return time.perf_counter()


def _dataset(source, n_train, seed=0):
    """(train, test, y_test); train may be paths (bottle) or arrays."""
    if source == "bottle":
        from skpatch.datasets import load_mvtec

        data = load_mvtec(BOTTLE)
        train = data.train_images[:n_train]
        return train, data.test_images, data.test_labels
    from skpatch.datasets import make_defects

    train, _, _ = make_defects(n_train, image_size=IMAGE_SIZE, kind="object", defect_ratio=0.0, random_state=seed)
    test, y, _ = make_defects(N_TEST, image_size=IMAGE_SIZE, kind="object", defect_ratio=0.5, random_state=seed + 1)
    return train, test, y


def _featurizer(backbone, **params):
    """The default featurizer, or ``backbone`` with random weights (same compute, timing only)."""
    from skpatch import PatchFeaturizer

    if backbone is None:
        return PatchFeaturizer(**params)
    return PatchFeaturizer(backbone, weights=None, **params)


def profile_stages(source, n_train, sampling_ratio, backbone=None):
    """Time every stage of one fit + scoring, as SoftPatchClassifier runs them."""
    from skpatch import NoiseDiscriminator, WeightedCoreset
    from skpatch._base import _OFFSET_MAX_IMAGES
    from skpatch.metrics import image_auroc

    train, test, y = _dataset(source, n_train)
    out = {"source": source, "n_train": len(train), "n_test": len(test)}
    t = _clock()
    featurizer = _featurizer(backbone).fit(train)
    features = featurizer.transform(train)
    out["featurize_train"] = _clock() - t
    t = _clock()
    test_features = featurizer.transform(test)
    out["featurize_test"] = _clock() - t
    for method in METHODS:
        t = _clock()
        patches = NoiseDiscriminator(method, random_state=0).fit_transform(features)
        out[f"denoise_{method}"] = _clock() - t
        if method == "lof":
            lof_patches = patches
    t = _clock()
    coreset = WeightedCoreset(sampling_ratio, random_state=0).fit(lof_patches)
    out["coreset"] = _clock() - t  # selection + the exact search's inverted file
    out["bank"] = len(coreset.memory_bank_)
    t = _clock()
    coreset.score_samples(features[:_OFFSET_MAX_IMAGES])
    out["offset_scoring"] = _clock() - t
    t = _clock()
    scores = coreset.score_samples(test_features)
    out["test_scoring"] = _clock() - t
    out["auroc"] = image_auroc(y, -scores.min(axis=(1, 2))) if len(np.unique(y)) == 2 else float("nan")
    # The same selection searched by brute force: the reference for speed and exactness.
    t = _clock()
    brute = WeightedCoreset(sampling_ratio, search="brute", random_state=0).fit(lof_patches)
    out["selection_only"] = _clock() - t
    t = _clock()
    brute_scores = brute.score_samples(test_features)
    out["test_scoring_brute"] = _clock() - t
    out["exact_equals_brute"] = float(np.mean(np.isclose(scores, brute_scores, rtol=1e-5, atol=1e-6)))
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def compare_coreset(n_train, sampling_ratio):
    """Cell-local vs exact greedy k-center: time, coverage radius, AUROC."""
    import torch

    from skpatch import NoiseDiscriminator, PatchFeaturizer, WeightedCoreset
    from skpatch.metrics import image_auroc

    train, test, y = _dataset("synthetic", n_train)
    featurizer = PatchFeaturizer().fit(train)
    features, test_features = featurizer.transform(train), featurizer.transform(test)
    patches = NoiseDiscriminator(random_state=0).fit_transform(features)
    kept = torch.from_numpy(features.reshape(-1, features.shape[-1])[patches.kept.reshape(-1)])
    rows = []
    for n_cells in ("auto", 1):
        t = _clock()
        coreset = WeightedCoreset(sampling_ratio, n_cells=n_cells, random_state=0).fit(patches)
        elapsed = _clock() - t
        bank = torch.from_numpy(coreset.memory_bank_)
        radius = max(float(torch.cdist(chunk, bank).min(1).values.max()) for chunk in kept.split(4096))
        auroc = image_auroc(y, -coreset.min_score_samples(test_features))
        rows.append({"n_cells": n_cells, "seconds": elapsed, "coverage_radius": radius, "auroc": auroc})
    return rows


def compare_search_and_dtype(n_train, sampling_ratio):
    """pynndescent vs exact search, float16 vs float32 features."""
    from skpatch import NoiseDiscriminator, PatchFeaturizer, WeightedCoreset
    from skpatch.metrics import image_auroc

    train, test, y = _dataset("synthetic", n_train)
    rows = []
    for dtype in ("float32", "float16"):
        featurizer = PatchFeaturizer(feature_dtype=dtype).fit(train)
        features, test_features = featurizer.transform(train), featurizer.transform(test)
        patches = NoiseDiscriminator(random_state=0).fit_transform(features)
        searches = ("brute", "exact", "ivf", "pynndescent") if dtype == "float32" else ("exact",)
        for search in searches:
            if search == "pynndescent":  # compile numba kernels outside the timing
                rows = features.reshape(len(features), -1, features.shape[-1])
                WeightedCoreset(0.5, search=search, random_state=0).fit(rows[:2, :50]).score_samples(rows[:1, :50])
            t = _clock()
            coreset = WeightedCoreset(sampling_ratio, search=search, random_state=0).fit(patches)
            fit_time = _clock() - t
            t = _clock()
            scores = coreset.score_samples(test_features)
            if search == "brute":
                exact_scores = scores
            rows.append({
                "features": dtype, "search": search, "coreset_fit": fit_time,
                "scoring": _clock() - t, "auroc": image_auroc(y, -scores.min(axis=(1, 2))),
                "feature_mb": features.nbytes / 2**20,
                "patch scores equal to brute force float32": float(np.mean(np.isclose(scores, exact_scores, rtol=1e-4))),
            })
    return rows


def grid_search(n_train, backbone=None, with_uncached=True):
    """GridSearchCV over 6 denoise settings, with and without cache=, vs one fit."""
    from sklearn.model_selection import GridSearchCV

    from skpatch import SoftPatchClassifier
    from skpatch.metrics import image_auroc_scorer

    train, test, y = _dataset("synthetic", n_train)
    X = np.concatenate([train, test])
    labels = np.concatenate([np.zeros(len(train), int), y])
    cv = [(np.arange(len(train)), np.arange(len(train), len(X)))]
    grid = {"denoise__method": ["lof", "gaussian", "softpatch+"], "denoise__threshold": [0.1, 0.2]}
    t = _clock()
    clf = SoftPatchClassifier(_featurizer(backbone), random_state=0).fit(train)
    image_auroc_scorer(clf, test, y)
    one = _clock() - t
    rows = {"one_fit_and_score": one, "no cache": float("nan")}
    for label in ("no cache", "cache") if with_uncached else ("cache",):
        with tempfile.TemporaryDirectory() as cache:
            est = SoftPatchClassifier(
                _featurizer(backbone), random_state=0, cache=cache if label == "cache" else None
            )
            t = _clock()
            GridSearchCV(est, grid, scoring=image_auroc_scorer, cv=cv, refit=False).fit(X, labels)
            rows[label] = _clock() - t
    return rows


def streamed_fit(n_train):
    """Fit SoftPatchClassifier on n_train 256 px PNG files with float16 features."""
    from PIL import Image

    from skpatch import SoftPatchClassifier
    from skpatch.datasets import make_defects

    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for start in range(0, n_train, 100):  # generate in chunks: bounded memory
            X, _, _ = make_defects(min(100, n_train - start), image_size=IMAGE_SIZE, kind="object",
                                   defect_ratio=0.0, random_state=start)
            for i, image in enumerate(X):
                path = os.path.join(folder, f"{start + i:05d}.png")
                Image.fromarray(image).save(path)
                paths.append(path)
            del X
        before = _peak_rss_mb()
        t = _clock()
        clf = SoftPatchClassifier(random_state=0).set_params(featurizer__feature_dtype="float16").fit(paths)
        fit_time = _clock() - t
        return {"n_train": n_train, "fit_seconds": fit_time, "peak_rss_mb": _peak_rss_mb(),
                "peak_rss_before_fit_mb": before, "bank": len(clf.named_steps["coreset"].memory_bank_)}


def _in_subprocess(func, *args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(func, args)


def _stage_table(rows):
    lines = [
        "| data | n_train | bank | featurize (train+test) s | denoise lof s | coreset s (selection + index) "
        "| offset scoring s | test scoring s | s/img backbone | non-backbone / backbone | peak RSS MB | AUROC "
        "| brute-force test scoring s | exact = brute |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        backbone = r["featurize_train"] + r["featurize_test"]
        other = r["denoise_lof"] + r["coreset"] + r["offset_scoring"] + r["test_scoring"]
        lines.append(
            f"| {r['source']} | {r['n_train']} | {r['bank']} | {backbone:.1f} | {r['denoise_lof']:.2f} | "
            f"{r['coreset']:.2f} ({r['selection_only']:.2f} + {r['coreset'] - r['selection_only']:.2f}) | "
            f"{r['offset_scoring']:.2f} | {r['test_scoring']:.2f} | "
            f"{backbone / (r['n_train'] + r['n_test']):.3f} | **{other / backbone:.2f}** | "
            f"{r['peak_rss_mb']:.0f} | {r['auroc']:.3f} | {r['test_scoring_brute']:.2f} | {r['exact_equals_brute']:.4f} |"
        )
    lines += ["", "Denoise seconds by method:", "", "| data | n_train | " + " | ".join(METHODS) + " |",
              "|---|---|" + "---|" * len(METHODS)]
    for r in rows:
        lines.append(f"| {r['source']} | {r['n_train']} | " + " | ".join(f"{r[f'denoise_{m}']:.2f}" for m in METHODS) + " |")
    lines += ["", "Share of total time by stage (lof):", "", "| data | n_train | featurize | denoise | coreset | scoring |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        parts = [r["featurize_train"] + r["featurize_test"], r["denoise_lof"], r["coreset"], r["offset_scoring"] + r["test_scoring"]]
        total = sum(parts)
        lines.append(f"| {r['source']} | {r['n_train']} | " + " | ".join(f"{100 * p / total:.0f}%" for p in parts) + " |")
    return "\n".join(lines)


def _rows_table(rows):
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
                     + ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--large", action="store_true", help="also n_train = 5000 (synthetic)")
    parser.add_argument("--sampling-ratio", type=float, default=0.1)
    parser.add_argument("--skip", nargs="*", default=[], choices=["stages", "coreset", "search", "grid", "memory"])
    parser.add_argument(
        "--backbone", default=None,
        help="time the stage table and the cached grid with this timm backbone (e.g. wide_resnet50_2, the "
             "paper's) instead of the default; random weights, so its AUROC means nothing: timing only",
    )
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "speed.md"))
    args = parser.parse_args(argv)
    sizes = args.sizes + ([5000] if args.large else [])
    backbone = args.backbone
    title = "default EfficientNet-Lite0" if backbone is None else f"{backbone}, random weights (timing only)"
    report = [f"# skpatch speed benchmark ({title}; sampling_ratio={args.sampling_ratio}, {os.cpu_count()} cores)", ""]

    def emit(text):
        print(text, flush=True)
        report.append(text)

    if "stages" not in args.skip:
        rows = []
        for source in ["synthetic"] + (["bottle"] if os.path.isdir(BOTTLE) and backbone is None else []):
            for n in sizes:
                if source == "bottle" and n > 209:
                    continue
                print(f"... {source} n_train={n}", file=sys.stderr, flush=True)
                rows.append(_in_subprocess(profile_stages, source, n, args.sampling_ratio, backbone))
        emit("## Stages (denoise = lof; scoring = 64 in-sample images for offset_ + the test set)\n")
        emit(_stage_table(rows) + "\n")
    if "coreset" not in args.skip and backbone is None:
        print("... coreset: cells vs exact", file=sys.stderr, flush=True)
        emit("## Coreset: cell-local vs exact greedy k-center (synthetic, n_train=50)\n")
        emit(_rows_table(_in_subprocess(compare_coreset, 50, args.sampling_ratio)) + "\n")
    if "search" not in args.skip and backbone is None:
        print("... search and dtype", file=sys.stderr, flush=True)
        emit("## Search (brute force, exact pruned inverted file, approximate ivf, pynndescent) and feature dtype (synthetic, n_train=200)\n")
        emit(_rows_table(_in_subprocess(compare_search_and_dtype, 200, args.sampling_ratio)) + "\n")
    if "grid" not in args.skip:
        print("... grid search", file=sys.stderr, flush=True)
        res = _in_subprocess(grid_search, 200, backbone, backbone is None)
        emit("## GridSearchCV over 6 denoise settings (synthetic, n_train=200, one split)\n")
        emit(f"| one fit + score s | grid, no cache s | grid, cache s | no cache / one fit | cache / one fit |\n|---|---|---|---|---|\n"
             f"| {res['one_fit_and_score']:.1f} | {res['no cache']:.1f} | {res['cache']:.1f} | "
             f"{res['no cache'] / res['one_fit_and_score']:.2f} | **{res['cache'] / res['one_fit_and_score']:.2f}** |\n")
    if "memory" not in args.skip and backbone is None:
        print("... streamed fit on 1000 files", file=sys.stderr, flush=True)
        emit("## Fit on 1000 PNG files of 256 px, float16 features\n")
        emit(_rows_table([_in_subprocess(streamed_fit, 1000)]) + "\n")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as fh:
        fh.write("\n".join(report) + "\n")
    print(f"written: {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
