"""Removal by each patch's score relative to its own image, through the public classifier.

A training image that is lit or placed differently from the others scores high
at every position, so a global cut on the per-position scores removes its
normal patches wholesale; a defect scores high only where it is. This probe
divides every patch's discriminator score by the median score of its image
before the ``threshold`` cut (``rel``), and optionally also divides the soft
weights the same way (``relw``), and prints test image AUROC beside PatchCore
(``pc``) and the unchanged discriminator at the same threshold. Usage, from the
repository root::

    python benchmarks/probes/removal_relative.py                   # both hard sets, seeds 0 1 2
    python benchmarks/probes/removal_relative.py --datasets hard_logical --seeds 0 --thresholds 0.15
"""

import sys
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

from skpatch import NoiseDiscriminator  # noqa: E402
from skpatch._discriminator import keep_mask  # noqa: E402

DISCRIMINATORS = {
    "k6": {"n_neighbors": 6, "max_shift": 0},
    "alkA": {"n_neighbors": "auto", "max_shift": 2},
}


class _RelativeRemoval(NoiseDiscriminator):
    """The threshold cut on score / (median score of the patch's image)."""

    _relative_weights = False

    def fit_from_raw(self, raw, grid_shape, shifts=None):
        super().fit_from_raw(raw, grid_shape, shifts)
        median = np.median(self.scores_, axis=1, keepdims=True)
        relative = self.scores_ / np.maximum(median, 1e-12)
        self.kept_, self.score_threshold_ = keep_mask(relative, self.threshold)
        if self._relative_weights and self.soft_weights:
            self.weights_ = (self.weights_ / np.maximum(median, 1e-12)).astype(np.float32)
        return self


class _RelativeRemovalAndWeights(_RelativeRemoval):
    _relative_weights = True


VARIANTS = {"raw": NoiseDiscriminator, "rel": _RelativeRemoval, "relw": _RelativeRemovalAndWeights}


def _cells(split, thresholds, variants, discriminators):
    cells = [f"pc={split.auroc(split.fit(denoise='passthrough')):.3f}"]
    for label in discriminators:
        for threshold in thresholds:
            for variant in variants:
                disc = VARIANTS[variant](threshold=threshold, random_state=split.seed, **DISCRIMINATORS[label])
                cells.append(f"{label}@{threshold}:{variant}={split.auroc(split.fit(denoise=disc)):.3f}")
    return cells


def main(argv=None):
    import _removal_probe as probe

    parser = probe.parser(__doc__.splitlines()[0])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.15])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--discriminators", nargs="+", default=["k6"], choices=list(DISCRIMINATORS))
    args = parser.parse_args(argv)
    return probe.run(args, lambda split: _cells(split, args.thresholds, args.variants, args.discriminators))


if __name__ == "__main__":
    sys.exit(main())
