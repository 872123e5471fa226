"""Two-stage probe for the classifier (issue #27): drop the training images
that the out-of-bag scores rank most suspicious, then refit.

Stage 1 fits the segmenter's discriminator and a balanced bag (10 members,
every image in 2; median) on all training images and scores each training
image out of bag (max over its patches). Stage 2 drops the top ``--drop``
share of the images by that score and fits each ``--stage2`` memory on the
rest: ``patchcore`` (no discriminator, one bank), ``cls`` (the classifier's
default discriminator, one bank), ``soft`` (soft weights only, one bank).
The test images are scored as the classifier does (max of the patch map)
and the image AUROC is printed, with the share of injected images among the
dropped ones. Cached features as memory_lab.py (memory_featcache.py).

    python benchmarks/probes/image_trim_lab.py --seeds 0 1 2 --noise 0 0.2 0.4
"""
import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.utils import Bunch  # noqa: E402

from memory_lab import DISC, agg, fit_members, load, member_scores  # noqa: E402
from skpatch import NoiseDiscriminator, WeightedCoreset, WeightedPatches  # noqa: E402
from skpatch.datasets import make_noisy_split  # noqa: E402

STAGE2 = {"patchcore": None, "cls": DISC["cls"], "soft": DISC["soft"], "seg": DISC["seg"]}


def stage1_oob(Xtr, grid, seed):
    patches = NoiseDiscriminator(random_state=seed, **DISC["seg"]).fit_transform(Xtr, grid_shape=grid)
    members, samples = fit_members(patches, 10, 2 / 10, None, seed, balanced=True)
    S = member_scores(members, Xtr)
    seen = np.zeros((len(members), len(Xtr)), bool)
    for i, idx in enumerate(samples):
        seen[i, idx] = True
    return agg(S, "median", (~seen)[:, :, None] & np.ones_like(S, bool)).max(1)


def stage2_auc(Xtr, Xte, yte, grid, seed, name):
    if STAGE2[name] is None:
        ones = np.ones(Xtr.shape[:2])
        patches = WeightedPatches(Xtr, ones, ones.astype(bool))
    else:
        patches = NoiseDiscriminator(random_state=seed, **STAGE2[name]).fit_transform(Xtr, grid_shape=grid)
    coreset = WeightedCoreset(random_state=seed).fit(patches)
    return roc_auc_score(yte, -coreset.min_score_samples(Xte))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="tire")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--noise", type=float, nargs="+", default=[0, 0.2, 0.4])
    ap.add_argument("--drop", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    ap.add_argument("--stage2", nargs="+", default=["patchcore", "cls", "soft"])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    D = load(a.data)
    grid = tuple(D["grid"])
    b = Bunch(train_images=list(range(len(D["train"]))), test_images=list(range(len(D["test"]))),
              test_labels=D["labels"])
    for seed, noise in itertools.product(a.seeds, a.noise):
        s = make_noisy_split(b, noise, overlap=True, random_state=seed)
        inj = np.asarray(s.noise_indices, int)
        Xtr = np.concatenate([D["train"], D["test"][inj]])
        ytr = np.r_[np.zeros(len(D["train"])), np.ones(len(inj))]
        t0 = time.time()
        oob = stage1_oob(Xtr, grid, seed)
        t1 = time.time() - t0
        order = np.argsort(-oob, kind="stable")
        for drop in a.drop:
            n_drop = int(round(drop * len(Xtr)))
            keep = np.sort(order[n_drop:])
            row = dict(data=a.data, seed=seed, noise=noise, drop=drop, stage1_s=round(t1, 1),
                       oob_auc=roc_auc_score(ytr, oob) if noise > 0 else None,
                       dropped_injected=float(ytr[order[:n_drop]].mean()) if n_drop else None,
                       left_injected=float(ytr[keep].mean()))
            for name in a.stage2:
                row["auc_" + name] = stage2_auc(Xtr[keep], D["test"], D["labels"], grid, seed, name)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
            if a.out:
                with open(a.out, "a") as fh:
                    fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
