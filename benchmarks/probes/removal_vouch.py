"""Put back removed patches that other training images vouch for (probe, issue #9).

The per-position discriminator removes the patches that differ from the other
images *at the same position*. On parts that shift a little from image to image
(``hard_logical``'s boards) many of those are normal content seen at an unusual
position, and removing them costs clean accuracy. This probe fits the default
classifier's discriminator (LOF, k = 6, ``threshold=0.15``, ``dilation=1``) and
then restores a removed patch when at least ``m`` *other* images hold a kept
patch close to it:

- the vouching distance of a patch is the ``m``-th smallest, over the other
  images, of its distance to that image's nearest kept patch, searched within
  ``window`` grid positions of its own position (``--window -1``: anywhere in
  the image);
- the same distance of every kept patch (its own image left out) gives the
  scale: a removed patch is restored when its vouching distance is at most the
  ``q`` quantile of the kept patches' ones.

Distances are computed on the discriminator's random projection (128-d) for
a window, on the full features otherwise. Restored patches keep their soft
weights (``weights=soft``) or get weight 1 (``weights=one``; ``weights=hard``
sets every weight to 1, ``soft_weights=False``). A recurring defect does not
vouch for itself as long as the discriminator removed it in the other images.

Each cell prints ``name=AUROC(rX,backY)``: image AUROC on the overlap test set,
X the share of patches finally removed and Y the share of the removed ones put
back, in %. Usage, from the repository root::

    python benchmarks/probes/removal_vouch.py                            # window 2, m 3, q 0.9
    python benchmarks/probes/removal_vouch.py --variants w2:m3:q0.9:soft wall:m3:q0.9:soft --seeds 0
"""

import sys
from pathlib import Path

import numpy as np
import torch

# Ahead of the installed packages, wherever the script is run or loaded from:
# this checkout (its skpatch), benchmarks/ (noise_robustness) and this folder
# (_removal_probe).
PROBES = Path(__file__).resolve().parent
REPO_ROOT = PROBES.parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
sys.path.insert(0, str(PROBES))

from skpatch import NoiseDiscriminator  # noqa: E402
from skpatch._patches import patch_grid, patch_rows  # noqa: E402


def window_vouching(Z, kept, grid, window, m):
    """``m``-th smallest over the other images of the distance to their nearest
    kept patch within ``window`` positions; ``Z`` (n, P, d), ``kept`` (n, P)."""
    n, n_patches, d = Z.shape
    h, w = grid
    Zg, Kg = Z.reshape(n, h, w, d), kept.reshape(n, h, w)
    best = torch.full((h, w, n, n), float("inf"))
    for di in range(-window, window + 1):
        for dj in range(-window, window + 1):
            i0, i1, j0, j1 = max(0, -di), min(h, h - di), max(0, -dj), min(w, w - dj)
            src = Zg[:, i0:i1, j0:j1].permute(1, 2, 0, 3).reshape(-1, n, d)
            tgt = Zg[:, i0 + di:i1 + di, j0 + dj:j1 + dj].permute(1, 2, 0, 3).reshape(-1, n, d)
            tgt_kept = Kg[:, i0 + di:i1 + di, j0 + dj:j1 + dj].permute(1, 2, 0).reshape(-1, 1, n)
            D = torch.cdist(src, tgt).masked_fill(~tgt_kept, float("inf"))
            best[i0:i1, j0:j1] = torch.minimum(best[i0:i1, j0:j1], D.reshape(i1 - i0, j1 - j0, n, n))
    best.diagonal(dim1=-2, dim2=-1).fill_(float("inf"))
    return best.topk(m, dim=-1, largest=False).values[..., -1].permute(2, 0, 1).reshape(n, n_patches)


def anywhere_vouching(F, image, queries, reference, m, block=2048):
    """The same, searched over every kept patch of the other images (full features)."""
    n_images = int(image.max()) + 1
    out = torch.empty(len(queries))
    for start in range(0, len(queries), block):
        q = queries[start:start + block]
        per_image = torch.full((len(q), n_images), float("inf"))
        per_image.scatter_reduce_(1, image[reference].expand(len(q), -1), torch.cdist(F[q], F[reference]), "amin")
        per_image[torch.arange(len(q)), image[q]] = float("inf")
        out[start:start + block] = per_image.topk(m, dim=1, largest=False).values[:, -1]
    return out


class _Vouched(NoiseDiscriminator):
    """The default discriminator, then removed patches restored by vouching (class attributes)."""

    window, m, q, weights = 2, 3, 0.9, "soft"

    def _fit(self, X, memory=None, feature_key=None, grid_shape=None):
        super()._fit(X, memory, feature_key, grid_shape)
        grid_shape = patch_grid(X) or grid_shape  # features on their grid carry it
        X = patch_rows(X)
        n, n_patches, d = X.shape
        kept = torch.from_numpy(self.kept_.reshape(-1))
        kept_idx, removed_idx = torch.nonzero(kept).squeeze(1), torch.nonzero(~kept).squeeze(1)
        self.restored_share_ = 0.0
        if len(removed_idx) == 0:
            return self
        F = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32).reshape(n * n_patches, d))
        if self.window >= 0:
            projection = self.projection_matrix(d)
            Z = F.reshape(n, n_patches, d) if projection is None else F.reshape(n, n_patches, d) @ projection
            grid = self._check_grid_shape(grid_shape, n_patches)
            stat = window_vouching(Z, kept.reshape(n, n_patches), grid, self.window, self.m).reshape(-1)
            kept_stat, removed_stat = stat[kept_idx], stat[removed_idx]
        else:
            image = torch.arange(n).repeat_interleave(n_patches)
            kept_stat = anywhere_vouching(F, image, kept_idx, kept_idx, self.m)
            removed_stat = anywhere_vouching(F, image, removed_idx, kept_idx, self.m)
        vouched = removed_stat <= torch.quantile(kept_stat, self.q)
        restored = removed_idx[vouched].numpy()
        kept_now = self.kept_.reshape(-1).copy()
        kept_now[restored] = True
        weights = self.weights_.reshape(-1).copy()
        if self.weights == "one":
            weights[restored] = 1.0
        elif self.weights == "hard":
            weights[:] = 1.0
        self.kept_, self.weights_ = kept_now.reshape(self.kept_.shape), weights.reshape(self.weights_.shape)
        self.restored_share_ = float(vouched.float().mean())
        return self


def _variant(token):
    """``w2:m3:q0.9:soft`` (or ``wall:...``) -> a _Vouched subclass."""
    where, m, q, weights = token.split(":")
    attrs = {"window": -1 if where == "wall" else int(where[1:]), "m": int(m[1:]), "q": float(q[1:]),
             "weights": weights}
    return type("_Vouched_" + token, (_Vouched,), attrs)


def _cells(split, variants, baselines):
    cells = []
    if baselines:
        cells += [f"patchcore={split.auroc(split.fit(denoise='passthrough')):.3f}",
                  f"default={split.auroc(split.fit()):.3f}"]
    for token in variants:
        disc = _variant(token)(threshold=0.15, dilation=1, random_state=split.seed,
                               soft_weights=not token.endswith(":hard"))
        est = split.fit(denoise=disc)
        denoise = est.named_steps["denoise"]
        removed = 100 * (1 - denoise.kept_.mean())
        cells.append(f"{token}={split.auroc(est):.3f}(r{removed:.0f},back{100 * denoise.restored_share_:.0f})")
    return cells


def main(argv=None):
    import _removal_probe as probe

    parser = probe.parser(__doc__.splitlines()[0], noise=(0.0, 0.1, 0.2, 0.3, 0.4))
    parser.add_argument("--variants", nargs="+", default=["w2:m3:q0.9:soft"])
    parser.add_argument("--baselines", action="store_true", help="also PatchCore and the default classifier")
    args = parser.parse_args(argv)
    return probe.run(args, lambda split: _cells(split, args.variants, args.baselines))


if __name__ == "__main__":
    sys.exit(main())
