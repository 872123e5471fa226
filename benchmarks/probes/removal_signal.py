"""Can the removal ratio be read off the discriminator's own scores?

For each hard synthetic data set of ``noise_robustness.py`` and each noise
ratio, fits the default classifier with ``denoise__threshold=0`` (scores only,
nothing removed) and compares what its per-patch outlier scores show with the
truth of the injected images' defect masks:

* ``defect %``: share of all training patches that touch an injected defect
  (what an ideal removal would take out);
* ``z>3 %`` and its recall: share of patches whose log score lies more than
  3 robust standard deviations (1.4826 x MAD, per position) above the
  position's median, and the share of defect patches among them;
* ``patch AUROC``: how well the score ranks defect patches above the others;
* ``image AUROC`` of each training image's evidence (mean of its 3 highest
  per-position z-scores) at telling injected from clean images, and how many
  images lie beyond median + 3 MAD of that evidence (``flagged``; of them
  ``clean``).

If the share beyond the cut followed the contamination, an adaptive
``threshold="auto"`` could follow it too. Usage, from the repository root::

    python benchmarks/probes/removal_signal.py               # both sets, seed 0
    python benchmarks/probes/removal_signal.py --n-neighbors auto --seeds 0 1 2
    python benchmarks/probes/removal_signal.py --n-neighbors auto --max-shift 2   # the segmenter's discriminator

``clean>p10 %`` is the share of the patches that touch no defect whose score
exceeds the 10th percentile of the defect patches' scores: how many normal
patches a cut that keeps 90% of the defects in its removal would also remove.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

# Ahead of the installed packages, wherever the script is run or loaded from:
# this checkout (its skpatch), benchmarks/ (noise_robustness) and this folder
# (_removal_probe).
PROBES = Path(__file__).resolve().parent
REPO_ROOT = PROBES.parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
sys.path.insert(0, str(PROBES))

_MAD_TO_STD = 1.4826


def _robust_z(values, axis):
    median = np.median(values, axis=axis, keepdims=True)
    spread = _MAD_TO_STD * np.median(np.abs(values - median), axis=axis, keepdims=True)
    return (values - median) / np.maximum(spread, 1e-12)


def _row(name, seed, noise, args, cache):
    import noise_robustness as nr
    from sklearn.metrics import roc_auc_score

    from skpatch import SoftPatchClassifier
    from skpatch.datasets import make_noisy_split

    data = nr.synthetic_dataset(name, seed, args)
    split = make_noisy_split(data, noise, overlap=True, random_state=seed)
    n_neighbors = args.n_neighbors if args.n_neighbors == "auto" else int(args.n_neighbors)
    est = SoftPatchClassifier(random_state=seed, cache=cache).set_params(
        **nr.DATASET_PARAMS[name], denoise__threshold=0.0, denoise__n_neighbors=n_neighbors,
        denoise__max_shift=args.max_shift,
    ).fit(split.train_images)
    scores = est.named_steps["denoise"].scores_
    labels = np.asarray(split.train_labels, dtype=int)
    side = int(round(np.sqrt(scores.shape[1])))
    truth = np.zeros(scores.shape, dtype=bool)
    if labels.any():
        masks = np.asarray([data.test_masks[i] for i in split.noise_indices], dtype=bool)
        truth[labels == 1] = nr.patch_masks(masks, (side, side))
    z = _robust_z(np.log(np.maximum(scores, 1e-12)), axis=0)
    beyond = z > 3
    evidence = np.sort(z, axis=1)[:, -3:].mean(axis=1)
    flagged = _robust_z(evidence, axis=0) > 3
    has = labels.any()
    if has:
        cut = np.quantile(scores[truth], 0.1)
        clean_above = f"{100 * (scores[~truth] > cut).mean():.1f}"
    else:
        clean_above = "n/a"
    return (
        f"| {name} | {seed} | {noise} | {100 * truth.mean():.2f} | {100 * beyond.mean():.1f} | "
        + (f"{truth[beyond].sum() / truth.sum():.2f} | {roc_auc_score(truth.ravel(), scores.ravel()):.3f} | "
           f"{roc_auc_score(labels, evidence):.3f} | " if has else "n/a | n/a | n/a | ")
        + f"{clean_above} | {int(flagged.sum())} | {int(flagged[labels == 0].sum())} |"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["hard_surface", "hard_logical"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2, 0.4])
    parser.add_argument("--n-neighbors", default="6", help='an int or "auto"')
    parser.add_argument("--max-shift", type=int, default=0, help="NoiseDiscriminator(max_shift=)")
    parser.add_argument("--n-train", type=int, default=60)
    parser.add_argument("--n-test", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args(argv)
    print(f"NoiseDiscriminator(method='lof', n_neighbors={args.n_neighbors!r}, "
          f"max_shift={args.max_shift}), threshold 0\n")
    print("| data set | seed | noise | defect % | z>3 % | recall | patch AUROC | image AUROC "
          "| clean>p10 % | flagged | clean |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cache:
        for name in args.datasets:
            for seed in args.seeds:
                for noise in args.noise:
                    print(_row(name, seed, noise, args, cache), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
