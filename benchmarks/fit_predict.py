"""``fit_predict`` on an unlabelled contaminated batch against a separate test set.

Issue #9 (item 4) asks that ``SoftPatchClassifier.fit_predict(X)`` answer
"which images of this unlabelled batch are defective?" about as well as
scoring a separate test set. Comparing ``fit_predict`` on the injected images
of a noisy split with the image AUROC on *other* defective test images mixes
two things: the in-sample scoring and which defects happened to be injected
(with 12-24 defective images, that choice alone moves the AUROC by several
points). This benchmark compares the same images both ways (a cross-fit):

* two disjoint batches A and B of the same kind, each with
  ``--defect-fraction`` defective images (unlabelled);
* ``fit_predict``: fit on A, AUROC of ``-train_scores_`` (leave-one-image-out
  scores, the ones ``fit_predict`` thresholds) against A's hidden labels;
* ``separate``: fit on B, score A as a test set (``score_samples``): A's
  images are then a separate test set for a model trained on an equally
  contaminated batch;
* ``in_sample``: fit on A, ``score_samples(A)``: what scoring the training
  images without leaving each one out gives (its own patches are in the
  memory bank);

and the same with A and B swapped. ``gap = fit_predict - separate`` is the
number that issue #9's done-means bound ("within 2 points").

Examples
--------
From the repository root::

    python benchmarks/fit_predict.py                       # 3 synthetic sets + bottle, 3 seeds
    python benchmarks/fit_predict.py --datasets hard_surface --seeds 0 1 2 3 4
    python benchmarks/fit_predict.py --datasets tire --configs default    # MVTec 3D-AD tire
"""

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from noise_robustness import (  # noqa: E402 - after the path set-up
    DATASET_PARAMS,
    DEFAULT_DATA,
    DEFAULT_DATA_ROOT,
    REAL,
    SYNTHETIC,
    auroc_or_nan,
    commit,
    log,
    markdown_table,
    parse_config,
    spread,
)

CONFIGS = ("patchcore", "default")
METRICS = ("fit_predict", "separate", "in_sample", "gap")


def batches(name, seed, args):
    """Two disjoint unlabelled batches ``(images, labels)`` of one data set, or None."""
    n_bad = int(round(args.batch_size * args.defect_fraction))
    n_good = args.batch_size - n_bad
    rng = np.random.RandomState(seed)
    if name in REAL:
        from skpatch.datasets import load_mvtec

        folder = Path(args.data) if name == "bottle" else Path(args.data_root) / REAL[name]
        if not folder.is_dir():
            return None
        data = load_mvtec(folder, load_masks=False)
        good = list(data.train_images)
        bad = [im for im, lab in zip(data.test_images, data.test_labels) if lab == 1]
        if len(good) < 2 * n_good or len(bad) < 2 * n_bad:
            raise ValueError(
                f"{name} has {len(good)} good and {len(bad)} defective images; two batches of "
                f"{n_good} + {n_bad} need {2 * n_good} and {2 * n_bad}."
            )
        good = [good[i] for i in rng.permutation(len(good))[: 2 * n_good]]
        bad = [bad[i] for i in rng.permutation(len(bad))[: 2 * n_bad]]
    else:
        from skpatch.datasets import make_defect_dataset

        data = make_defect_dataset(
            n_train=2 * n_good, n_test=4 * n_bad, image_size=args.image_size,
            random_state=seed, **SYNTHETIC[name],
        )
        good = list(data.train_images)
        labels = np.asarray(data.test_labels)
        bad = [data.test_images[i] for i in np.flatnonzero(labels == 1)[: 2 * n_bad]]
    out = []
    for half in (0, 1):
        images = good[half * n_good : (half + 1) * n_good] + bad[half * n_bad : (half + 1) * n_bad]
        labels = np.r_[np.zeros(n_good, dtype=int), np.ones(n_bad, dtype=int)]
        order = rng.permutation(len(images))  # defective images not last
        out.append(([images[i] for i in order], labels[order]))
    return out


def fitted(name, config, batch, seed, cache):
    from skpatch import SoftPatchClassifier

    est = SoftPatchClassifier(random_state=seed, cache=cache)
    est.set_params(**DATASET_PARAMS.get(name, {}), **config)
    return est.fit(batch[0])


def run_dataset(name, args, configs):
    rows = []
    for seed in args.seeds:
        pair = batches(name, seed, args)
        if pair is None:
            log(f"{name}: its data folder was not found, skipped")
            return rows
        with tempfile.TemporaryDirectory() as cache:
            for config, params in configs:
                start = time.perf_counter()
                models = [fitted(name, params, batch, seed, cache) for batch in pair]
                for a, b in ((0, 1), (1, 0)):
                    images, labels = pair[a]
                    row = {"dataset": name, "seed": seed, "config": config, "batch": a}
                    row["fit_predict"] = auroc_or_nan(labels, -models[a].train_scores_)
                    row["separate"] = auroc_or_nan(labels, -models[b].score_samples(images))
                    row["in_sample"] = auroc_or_nan(labels, -models[a].score_samples(images))
                    row["gap"] = row["fit_predict"] - row["separate"]
                    rows.append(row)
                log(
                    f"  {name} seed {seed} {config:<10} "
                    + " ".join(f"{m} {np.mean([r[m] for r in rows[-2:]]):.3f}" for m in METRICS)
                    + f"  ({time.perf_counter() - start:.0f} s)"
                )
    return rows


def report(rows, configs, args, seconds):
    lines = [
        "# fit_predict against a separate test set", "",
        f"Commit {commit()}; batches of {args.batch_size} images, {args.defect_fraction:.0%} "
        f"defective, two per seed (cross-fit), seeds {' '.join(map(str, args.seeds))}; each cell "
        f"is the mean ± sample standard deviation over seeds x both batches; {seconds / 60:.1f} min.",
        "",
        "Command: `python benchmarks/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) + "`", "",
    ]
    table = []
    for name in args.datasets:
        for config, _ in configs:
            sub = [r for r in rows if r["dataset"] == name and r["config"] == config]
            if not sub:
                continue
            cells = []
            for m in METRICS:
                mean, std, *_ = spread([r[m] for r in sub])
                cells.append(f"{mean:+.3f} ± {std:.3f}" if m == "gap" else f"{mean:.3f} ± {std:.3f}")
            table.append([name, config, *cells])
    lines.append(markdown_table(["data set", "config", *METRICS], table))
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=(*SYNTHETIC, *REAL),
                        default=["hard_surface", "hard_logical", "easy_object", "bottle"])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MVTec-layout bottle folder")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help="folder holding the other real sets (tire: mvtec_3d_tire)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=60, help="images per batch")
    parser.add_argument("--defect-fraction", type=float, default=0.2, help="defective share of a batch")
    parser.add_argument("--image-size", type=int, default=128, help="synthetic: image side in pixels")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), metavar="SPEC",
                        help="configurations, as in noise_robustness.py")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if not 0 < args.defect_fraction < 1:
        parser.error("--defect-fraction must be in (0, 1)")
    configs = [parse_config(spec) for spec in args.configs]
    start = time.perf_counter()
    rows = []
    for name in args.datasets:
        log(f"{name}")
        rows += run_dataset(name, args, configs)
    text = report(rows, configs, args, time.perf_counter() - start)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fit_predict.md").write_text(text)
    print(text)
    return 0 if rows and not any(math.isnan(r["gap"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
