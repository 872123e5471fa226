"""Training-set audit on MVTec 3D-AD tire: are injected defective images found?

Issue #29 (item 4): a factory engineer fits on a folder that should be clean
and asks "which of these training images look defective?". This benchmark
makes such a folder from the real tire data: tire's 210 ``train/good`` images
plus ``--ratio`` x 210 (default 20%, 42) defective ``test`` images drawn by
the seed, all as symbolic links in a temporary folder (the data are never
copied). It runs :func:`skpatch.audit_training_set` with the default
classifier, as ``skpatch audit`` does, and measures, against the injected
images:

* ``auroc``: ranking AUROC of the anomaly scores (``-train_scores_``);
* ``precision``, ``recall``: of the flagged set (``train_scores_ < offset_``);
* ``top_precision``: the share of injected images among the top-ranked ones,
  as many as were injected (what reading the report from the top gives);
* ``auroc_<type>``: ranking AUROC of each defect type against the good images;
* ``n_flagged`` and ``estimate`` (the audit's estimated number of defective
  images) against the true number.

Examples
--------
From the repository root::

    python benchmarks/audit_tire.py                        # seeds 0 1 2
    python benchmarks/audit_tire.py --folder-only /tmp/tire_audit --seeds 0
    skpatch audit /tmp/tire_audit --out /tmp/audit_tire    # the same folder from the shell
"""

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from skpatch import audit_training_set  # noqa: E402 - after the path set-up

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "mvtec_3d_tire"


def log(message):
    print(message, file=sys.stderr, flush=True)


def build_folder(data, folder, ratio, seed):
    """Symbolic links to the good training images and the injected defective ones.

    Returns the link paths, sorted as ``skpatch audit`` lists a folder, and
    whether each is injected.
    """
    data = Path(data)
    good = sorted((data / "train" / "good").glob("*.png"))
    defective = sorted(p for p in (data / "test").glob("*/*.png") if p.parent.name != "good")
    n_inject = round(ratio * len(good))
    if n_inject > len(defective):
        raise ValueError(f"--ratio {ratio} needs {n_inject} defective images; {data} has {len(defective)}.")
    rng = np.random.default_rng(seed)
    injected = [defective[i] for i in sorted(rng.choice(len(defective), n_inject, replace=False))]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    links = {}
    for source in good:
        links[folder / f"good_{source.stem}.png"] = False
    for source in injected:
        links[folder / f"{source.parent.name}_{source.stem}.png"] = True
    for link, source in zip(links, good + injected):
        os.symlink(source.resolve(), link)
    paths = sorted(links)
    return [str(p) for p in paths], np.array([links[p] for p in paths])


def defect_type(path):
    return Path(path).name.rsplit("_", 1)[0]


def run_seed(args, seed):
    with tempfile.TemporaryDirectory() as tmp:
        paths, injected = build_folder(args.data, Path(tmp) / "train", args.ratio, seed)
        log(f"seed {seed}: {len(paths)} training images, {injected.sum()} of them injected defective ...")
        start = time.perf_counter()
        audit = audit_training_set(paths, output=Path(tmp) / "audit")
        seconds = time.perf_counter() - start
    hits = int((audit.flagged & injected).sum())
    types = np.array([defect_type(p) for p in paths])
    per_type = {
        f"auroc_{kind}": roc_auc_score(types[(types == kind) | ~injected] == kind, audit.anomaly_scores[(types == kind) | ~injected])
        for kind in sorted(set(types[injected]))
    }
    return {
        "seed": seed,
        "auroc": roc_auc_score(injected, audit.anomaly_scores),
        "precision": hits / audit.n_flagged if audit.n_flagged else math.nan,
        "recall": hits / injected.sum(),
        "top_precision": injected[audit.ranking[: injected.sum()]].mean(),
        "n_flagged": audit.n_flagged,
        "estimate": audit.n_defective_estimate,
        "source": audit.estimate_source,
        "true": int(injected.sum()),
        "seconds": seconds,
        "counts": {kind: int((types == kind).sum()) for kind in sorted(set(types[injected]))},
        **per_type,
    }


def report(rows):
    header = ["seed", "ranking AUROC", "precision", "recall", "top-k precision", "flagged",
              "estimated (source)", "true", "time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['auroc']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['top_precision']:.3f} "
            f"| {r['n_flagged']} | {r['estimate']:.1f} ({r['source']}) | {r['true']} | {r['seconds']:.0f} |"
        )
    lines.append(
        f"| mean ± std | {mean_std(rows, 'auroc')} | {mean_std(rows, 'precision')} | {mean_std(rows, 'recall')} "
        f"| {mean_std(rows, 'top_precision')} | {mean_std(rows, 'n_flagged', 1)} | {mean_std(rows, 'estimate', 1)} "
        f"| {rows[0]['true']} | {mean_std(rows, 'seconds', 0)} |"
    )
    kinds = sorted({key for r in rows for key in r if key.startswith("auroc_")})
    lines += ["", "| defect type | injected per seed | ranking AUROC against the good images |", "|---|---|---|"]
    for key in kinds:
        counts = " / ".join(str(r["counts"].get(key[6:], 0)) for r in rows)
        lines.append(f"| {key[6:]} | {counts} | {mean_std([r for r in rows if key in r], key)} |")
    return "\n".join(lines)


def mean_std(rows, key, digits=3):
    values = np.array([r[key] for r in rows], dtype=float)
    std = values.std(ddof=1) if len(values) > 1 else math.nan
    return f"{values.mean():.{digits}f} ± {std:.{digits}f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MVTec 3D-AD tire folder (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ratio", type=float, default=0.2, help="injected defective images per good training image")
    parser.add_argument("--folder-only", metavar="DIR", help="only build the folder of links for the first seed in DIR")
    args = parser.parse_args(argv)
    if not Path(args.data).is_dir():
        log(f"no data at {args.data}")
        return 1
    if args.folder_only:
        paths, injected = build_folder(args.data, args.folder_only, args.ratio, args.seeds[0])
        log(f"{args.folder_only}: {len(paths)} links, {injected.sum()} injected (good_*.png are clean)")
        return 0
    rows = [run_seed(args, seed) for seed in args.seeds]
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
