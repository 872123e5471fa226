"""Absolute LOF cuts as a removal rule, through the public classifier.

LOF is about 1 for inliers, and sklearn's
``LocalOutlierFactor(contamination="auto")`` calls a point an outlier above
1.5. For each split this fits the classifier with ``denoise__threshold=0``
(scores only), sets the threshold to the share of patches whose LOF exceeds
each cut, refits (the raw scores come from the cache) and prints the test
image AUROC, with PatchCore (``pc``) and the default (``def``) beside it;
``(rX)`` is the share of patches removed, in %. Usage, from the repository
root::

    python benchmarks/probes/removal_cut.py                  # both hard sets, seeds 0 1 2
    python benchmarks/probes/removal_cut.py --datasets hard_logical --seeds 0 --cuts 1.2
"""

import sys
from pathlib import Path

# Ahead of the installed packages, wherever the script is run or loaded from:
# this checkout (its skpatch), benchmarks/ (noise_robustness) and this folder
# (_removal_probe).
PROBES = Path(__file__).resolve().parent
REPO_ROOT = PROBES.parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
sys.path.insert(0, str(PROBES))

# The default discriminator and the segmenter's aligned one.
DISCRIMINATORS = {
    "k6": {"denoise__n_neighbors": 6, "denoise__max_shift": 0},
    "alkA": {"denoise__n_neighbors": "auto", "denoise__max_shift": 2},
}


def _cells(split, cuts):
    def auroc(**params):
        return split.auroc(split.fit(**params))

    cells = [f"pc={auroc(denoise='passthrough'):.3f}", f"def={auroc():.3f}"]
    for label, params in DISCRIMINATORS.items():
        scores = split.fit(denoise__threshold=0.0, **params).named_steps["denoise"].scores_
        for cut in cuts:
            ratio = float((scores > cut).mean())
            value = auroc(denoise__threshold=min(ratio, 0.99), **params)
            cells.append(f"{label}>{cut}={value:.3f}(r{100 * ratio:.1f})")
    return cells


def main(argv=None):
    import _removal_probe as probe

    parser = probe.parser(__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=float, nargs="+", default=[1.2, 1.3, 1.5])
    args = parser.parse_args(argv)
    return probe.run(args, lambda split: _cells(split, args.cuts))


if __name__ == "__main__":
    sys.exit(main())
