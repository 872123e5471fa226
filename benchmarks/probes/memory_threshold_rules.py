"""Pixel-threshold rules for SoftPatchSegmenter(contamination="auto") on tire (issue #27 item 5).

The segmenter's default (aligned discriminator + BaggedCoreset) on 3 seeds x
noise 0 / 0.2 / 0.4; the threshold is read from the largest pixel score of
each of 64 held-out training maps (at 256 px, as predict reads test
images): z3 / z2 = median + 3 / 2 x 1.4826 MAD; low_z3 / low_z2 = the same
with the deviation from the scores below the median; qP = a quantile. Each
cell is the pixel F1 of the test masks at that threshold, next to F1-max.

    python benchmarks/probes/memory_threshold_rules.py
"""
import sys, json, numpy as np, torch
torch.set_num_threads(1)
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2])); sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_lab import load, to_pixels, DISC, member_scores, agg
from sklearn.utils import Bunch
from skpatch import NoiseDiscriminator, BaggedCoreset
from skpatch.datasets import make_noisy_split
from skpatch.metrics import f1_max
D = load("tire"); grid = tuple(D["grid"])
b = Bunch(train_images=list(range(210)), test_images=list(range(112)), test_labels=D["labels"])
def f1(thr, pix, m):
    pred = pix >= thr; tp = (pred & m).sum(); p = tp / max(pred.sum(), 1); r = tp / max(m.sum(), 1)
    return round(float(2 * p * r / max(p + r, 1e-12)), 3)
for seed, noise in [(s_, n_) for s_ in (0, 1, 2) for n_ in (0.0, 0.2, 0.4)]:
    s = make_noisy_split(b, noise, overlap=True, random_state=seed); inj = np.asarray(s.noise_indices, int)
    Xtr = np.concatenate([D["train"], D["test"][inj]])
    patches = NoiseDiscriminator(random_state=seed, **DISC["seg"]).fit_transform(Xtr, grid_shape=grid)
    bag = BaggedCoreset(random_state=seed).fit(patches)
    pix = to_pixels(-bag.score_samples(D["test"]), grid)
    rs = np.random.RandomState(seed); sub = np.sort(rs.choice(len(Xtr), 64, replace=False))
    mx = to_pixels(-bag.score_held_out(Xtr[sub], sub), grid, size=256).reshape(64, -1).max(1)
    med = np.median(mx); mad = 1.4826 * np.median(np.abs(mx - med))
    low = mx[mx <= med]; lmad = 1.4826 * np.median(med - low)
    out = {"seed": seed, "noise": noise, "f1max": round(f1_max(D["masks"], pix), 3)}
    for name, thr in {"z3": med + 3 * mad, "z2": med + 2 * mad, "low_z3": med + 3 * lmad, "low_z2": med + 2 * lmad,
                      "q90": np.quantile(mx, 0.9), "q75": np.quantile(mx, 0.75), "med": med, "q25_z3": np.quantile(mx, 0.25) + 3 * lmad}.items():
        out[name] = f1(thr, pix, D["masks"])
    print(json.dumps(out), flush=True)
