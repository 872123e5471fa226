"""Grow each removed region onto its grid neighbours, through the public classifier.

A defect covers a few neighbouring patch positions, and each patch feature
aggregates its 3 x 3 neighbourhood (and the CNN's receptive field is larger
still), so the patches at the rim of a removed defect resemble it. When the
discriminator removes a defect's core but keeps its rim, a test image that
contains the same defect (the overlap protocol, or ``fit_predict``) finds
its own rim in the memory bank. This probe removes the discriminator's
``threshold`` share as usual and then also removes, in the same image:

- ``dil``: every 8-neighbour of a removed patch (one 3 x 3 dilation; now
  ``NoiseDiscriminator(dilation=1)``);
- ``hyst``: neighbours whose score is also in the top ``2 x threshold``
  share, repeated until nothing changes (hysteresis, as in edge detection).

``raw`` is the unchanged discriminator; ``(rX)`` the share of patches
removed, in %. Usage, from the repository root::

    python benchmarks/probes/removal_dilation.py                # both hard sets, seeds 0 1 2
    python benchmarks/probes/removal_dilation.py --datasets hard_surface --seeds 0 --thresholds 0.15
"""

import functools
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

# Ahead of the installed packages, wherever the script is run or loaded from:
# this checkout (its skpatch), benchmarks/ (noise_robustness) and this folder
# (_removal_probe).
PROBES = Path(__file__).resolve().parent
REPO_ROOT = PROBES.parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
sys.path.insert(0, str(PROBES))

from skpatch import NoiseDiscriminator  # noqa: E402
from skpatch._patches import patch_grid  # noqa: E402

DISCRIMINATORS = {
    "k6": {"n_neighbors": 6, "max_shift": 0},
    "alkA": {"n_neighbors": "auto", "max_shift": 2},
}
_EIGHT = np.ones((1, 3, 3), dtype=bool)


class _Hysteresis(NoiseDiscriminator):
    """Removed patches grown onto 8-neighbours whose score is in the top ``2 x threshold``."""

    def _fit(self, X, memory=None, feature_key=None, grid_shape=None):
        super()._fit(X, memory, feature_key, grid_shape)
        h, w = self._check_grid_shape(patch_grid(X) or grid_shape, self.scores_.shape[1])
        removed = ~self.kept_.reshape(-1, h, w)
        low = np.quantile(self.scores_.reshape(-1), 1 - min(2 * self.threshold, 1.0))
        candidates = (self.scores_ >= low).reshape(removed.shape) | removed
        removed = ndimage.binary_propagation(removed, structure=_EIGHT, mask=candidates)
        self.kept_ = ~removed.reshape(self.kept_.shape)
        return self


VARIANTS = {
    "raw": NoiseDiscriminator,
    "dil": functools.partial(NoiseDiscriminator, dilation=1),
    "hyst": _Hysteresis,
}


def _cells(split, thresholds, variants, discriminators):
    cells = [f"pc={split.auroc(split.fit(denoise='passthrough')):.3f}"]
    for label in discriminators:
        for threshold in thresholds:
            for variant in variants:
                disc = VARIANTS[variant](threshold=threshold, random_state=split.seed, **DISCRIMINATORS[label])
                est = split.fit(denoise=disc)
                removed = 100 * (1 - est.named_steps["denoise"].kept_.mean())
                cells.append(f"{label}@{threshold}:{variant}={split.auroc(est):.3f}(r{removed:.0f})")
    return cells


def main(argv=None):
    import _removal_probe as probe

    parser = probe.parser(__doc__.splitlines()[0])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.15])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--discriminators", nargs="+", default=["k6"], choices=list(DISCRIMINATORS))
    args = parser.parse_args(argv)
    return probe.run(args, lambda split: _cells(split, args.thresholds, args.variants, args.discriminators))


if __name__ == "__main__":
    sys.exit(main())
