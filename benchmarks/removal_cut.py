"""Absolute LOF cuts as a removal rule, through the public classifier.

LOF is about 1 for inliers, and sklearn's
``LocalOutlierFactor(contamination="auto")`` calls a point an outlier above
1.5. For each split this fits the classifier with ``denoise__threshold=0``
(scores only), sets the threshold to the share of patches whose LOF exceeds
each cut, refits (the raw scores come from the cache) and prints the test
image AUROC, with PatchCore (``pc``) and the default (``def``) beside it;
``(rX)`` is the share of patches removed, in %. Usage, from the repository
root::

    python benchmarks/removal_cut.py                         # both hard sets, seeds 0 1 2
    python benchmarks/removal_cut.py --datasets hard_logical --seeds 0 --cuts 1.2
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

# The default discriminator and the segmenter's aligned one.
DISCRIMINATORS = {
    "k6": {"denoise__n_neighbors": 6, "denoise__max_shift": 0},
    "alkA": {"denoise__n_neighbors": "auto", "denoise__max_shift": 2},
}


def _line(name, seed, noise, data, cuts, cache):
    import noise_robustness as nr
    from sklearn.metrics import roc_auc_score

    from skpatch import SoftPatchClassifier
    from skpatch.datasets import make_noisy_split

    split = make_noisy_split(data, noise, overlap=True, random_state=seed)
    labels = np.asarray(split.test_labels, dtype=int)

    def fit(**params):
        return SoftPatchClassifier(random_state=seed, cache=cache).set_params(
            **nr.DATASET_PARAMS[name], **params
        ).fit(split.train_images)

    def auroc(**params):
        return roc_auc_score(labels, -fit(**params).score_samples(split.test_images))

    cells = [f"pc={auroc(denoise='passthrough'):.3f}", f"def={auroc():.3f}"]
    for label, params in DISCRIMINATORS.items():
        scores = fit(denoise__threshold=0.0, **params).named_steps["denoise"].scores_
        for cut in cuts:
            ratio = float((scores > cut).mean())
            value = auroc(denoise__threshold=min(ratio, 0.99), **params)
            cells.append(f"{label}>{cut}={value:.3f}(r{100 * ratio:.1f})")
    return f"{name} {seed} {noise} " + " ".join(cells)


def main(argv=None):
    import noise_robustness as nr

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["hard_logical", "hard_surface"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2, 0.4])
    parser.add_argument("--cuts", type=float, nargs="+", default=[1.2, 1.3, 1.5])
    parser.add_argument("--n-train", type=int, default=60)
    parser.add_argument("--n-test", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        for name in args.datasets:
            for seed in args.seeds:
                data = nr.synthetic_dataset(name, seed, args)
                for noise in args.noise:
                    print(_line(name, seed, noise, data, args.cuts, cache), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
