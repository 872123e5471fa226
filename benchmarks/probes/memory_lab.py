"""Step-level lab behind the defaults of issue #27: discriminator x memory on cached features.

For each seed and noise ratio, defective test images are injected into the
training set with ``make_noisy_split`` (overlap protocol, as
noise_robustness.py), the discriminator (``--disc``: none, soft, cls = the
classifier's default, seg = the segmenter's, old = k6 at 0.5) and the memory
(``--mem``: ``single`` = one WeightedCoreset, ``balN:R:AGG`` = N members with
every image in R of them, aggregated by AGG (median, mean, ordK = K-th
smallest, trimP), ``bagN:S:AGG`` = N random subsets of a share S) are fitted
on the cached features (memory_featcache.py), with ``random_state=seed``,
and the test set is scored as the estimators do (maps upsampled to 256 px
and smoothed with sigma 4). The lab's balanced deal is a round robin, not
BaggedCoreset's smallest-member deal: same design, other members.
``--calib`` adds the pixel F1 at a segmenter threshold read from held-out
maps of 64 training images (Hampel's rule, at 224 px: the rule of the first
version, see memory_threshold_rules.py for the rule adopted).

    python benchmarks/probes/memory_lab.py --data tire --seeds 0 1 2 --noise 0 0.2 0.4 \
        --disc seg --mem bal10:2:median --calib
"""
import sys, time, math, json, itertools, argparse
import numpy as np, torch
torch.set_num_threads(1)
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from pathlib import Path
import os
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
CACHE = os.environ.get("SKPATCH_LAB_CACHE", "/tmp/lab")
from sklearn.utils import Bunch
from sklearn.metrics import roc_auc_score
from skpatch import NoiseDiscriminator, WeightedCoreset, WeightedPatches
from skpatch.datasets import make_noisy_split
from skpatch.metrics import pixel_auroc, aupro

DISC = {
    "none": None,
    "soft": dict(threshold=0.0),
    "cls": dict(threshold=0.15, dilation=1),
    "seg": dict(threshold=0.15, n_neighbors="auto", max_shift=2, dilation=1),
    "old": dict(threshold=0.5),
    "seg30": dict(threshold=0.3, n_neighbors="auto", max_shift=2, dilation=1),
}

def load(name):
    d = np.load(f"{CACHE}/{name}.npz")
    return {k: d[k] for k in d.files}

def to_pixels(pm, grid, size=256, sigma=4.0):
    h, w = grid
    t = torch.from_numpy(pm.reshape(-1, 1, h, w).astype(np.float32))
    maps = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()
    for i in range(len(maps)):
        maps[i] = gaussian_filter(maps[i], sigma=sigma, truncate=4.0)
    return maps

def fit_members(patches, n_est, max_samples, ratio, seed, total_ratio=0.1, balanced=False):
    n = len(patches)
    rng = np.random.RandomState(seed)
    m = max(1, int(round(max_samples * n)))
    members, samples = [], []
    if balanced:
        r = int(round(max_samples * n_est))
        # each image in exactly r members: r rounds of a shuffled deal
        assign = np.zeros((n_est, n), bool)
        for rep in range(r):
            order = rng.permutation(n)
            for j, img in enumerate(order):
                # member for this deal: round robin offset by rep, skip duplicates
                k = (j + rep) % n_est
                while assign[k, img]:
                    k = (k + 1) % n_est
                assign[k, img] = True
    for i in range(n_est):
        idx = np.flatnonzero(assign[i]) if balanced else np.sort(rng.choice(n, m, replace=False))
        r = ratio if ratio is not None else min(1.0, total_ratio * n / (n_est * m))
        sub = WeightedPatches(patches.features[idx], patches.weights[idx], patches.kept[idx])
        if not sub.kept.any():
            continue
        c = WeightedCoreset(sampling_ratio=r, random_state=seed + i).fit(sub)
        members.append(c); samples.append(idx)
    return members, samples

def member_scores(members, X):
    return np.stack([-c.score_samples(X) for c in members])  # (N, n, p) anomaly

def agg(S, how, mask=None):
    if mask is not None:
        S = np.where(mask, S, np.nan)
        if how == "median": return np.nanmedian(S, 0)
        if how == "mean": return np.nanmean(S, 0)
    if how == "median": return np.median(S, 0)
    if how == "mean": return S.mean(0)
    if how.startswith("ord"):
        return np.sort(S, 0)[int(how[3:]) - 1]
    if how.startswith("trim"):
        q = float(how[4:]) / 100
        S = np.sort(S, 0); k = int(math.floor(q * len(S)))
        return S[k:len(S) - k].mean(0)
    raise ValueError(how)

def image_scores(pm, grid, pix=None):
    out = {"max": pm.max(1), "top10": np.sort(pm, 1)[:, -10:].mean(1)}
    if pix is not None:
        out["pixmax"] = pix.reshape(len(pix), -1).max(1)
    return out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="tire")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--noise", type=float, nargs="+", default=[0, 0.2, 0.4])
    ap.add_argument("--disc", nargs="+", default=["none"])
    ap.add_argument("--mem", nargs="+", default=["single"])  # single | bagN:S:agg[:ratio]
    ap.add_argument("--no-aupro", action="store_true")
    ap.add_argument("--oob", action="store_true")
    ap.add_argument("--calib", action="store_true", help="pixel F1 at the segmenter's threshold rule, its contamination estimate")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    D = load(a.data)
    grid = tuple(D["grid"]); has_masks = "masks" in D
    b = Bunch(train_images=list(range(len(D["train"]))), test_images=list(range(len(D["test"]))),
              test_labels=D["labels"])
    rows = []
    for seed, noise in itertools.product(a.seeds, a.noise):
        s = make_noisy_split(b, noise, overlap=True, random_state=seed)
        inj = np.asarray(s.noise_indices, int)
        Xtr = np.concatenate([D["train"], D["test"][inj]])
        ytr = np.r_[np.zeros(len(D["train"])), np.ones(len(inj))]
        Xte, yte = D["test"], D["labels"]
        for dname in a.disc:
            t0 = time.time()
            if DISC[dname] is None:
                patches = WeightedPatches(Xtr, np.ones(Xtr.shape[:2], np.float32), np.ones(Xtr.shape[:2], bool))
            else:
                disc = NoiseDiscriminator(random_state=seed, **DISC[dname])
                patches = disc.fit_transform(Xtr, grid_shape=grid)
            td = time.time() - t0
            for mname in a.mem:
                t0 = time.time()
                if mname == "single":
                    members = [WeightedCoreset(random_state=seed).fit(patches)]; samples = [np.arange(len(Xtr))]; how = "median"
                else:
                    parts = mname[3:].split(":")
                    n_est, ms, how = int(parts[0]), float(parts[1]), parts[2]
                    ratio = float(parts[3]) if len(parts) > 3 else None
                    bal = mname.startswith("bal")
                    if bal: ms = ms / n_est  # balR: each image in R members
                    members, samples = fit_members(patches, n_est, ms, ratio, seed, balanced=bal)
                tf = time.time() - t0
                t0 = time.time()
                S = member_scores(members, Xte)
                pm = S[0] if len(members) == 1 else agg(S, how)
                ts = time.time() - t0
                pix = to_pixels(pm, grid) if has_masks else None
                row = dict(data=a.data, seed=seed, noise=noise, disc=dname, mem=mname, fit_s=round(td + tf, 1), score_s=round(ts, 1),
                           bank=int(sum(len(c.memory_bank_) for c in members)))
                for k, v in image_scores(pm, grid, pix).items():
                    row["img_" + k] = roc_auc_score(yte, v)
                if has_masks:
                    row["pix"] = float(pixel_auroc(D["masks"], pix))
                    if not a.no_aupro:
                        row["aupro"] = float(aupro(D["masks"], pix))
                if a.calib and has_masks:
                    from skpatch.metrics import f1_max
                    rs = np.random.RandomState(seed)
                    sub = np.sort(rs.choice(len(Xtr), min(64, len(Xtr)), replace=False))
                    if len(members) == 1:
                        ho = -members[0].score_held_out(Xtr[sub], sub)
                    else:
                        St = member_scores(members, Xtr[sub])
                        seen = np.zeros((len(members), len(sub)), bool)
                        for i, idx in enumerate(samples): seen[i] = np.isin(sub, idx)
                        ho = agg(St, how, (~seen)[:, :, None] & np.ones_like(St, bool))
                    hop = to_pixels(ho, grid, size=224)
                    mx = hop.reshape(len(sub), -1).max(1)
                    med = np.median(mx); thr = med + 3 * 1.4826 * np.median(np.abs(mx - med))
                    pred = pix >= thr; m = D["masks"]
                    tp = (pred & m).sum(); prec = tp / max(pred.sum(), 1); rec = tp / max(m.sum(), 1)
                    row["pix_f1"] = float(2 * prec * rec / max(prec + rec, 1e-12))
                    row["pix_f1_max"] = float(f1_max(m, pix))
                    row["seg_cont_est"] = float((mx > thr).mean())
                    row["cont_true"] = float(ytr.mean())
                if a.oob and noise > 0:
                    if len(members) == 1:
                        tr = -members[0].score_held_out(Xtr, np.arange(len(Xtr)))
                    else:
                        St = member_scores(members, Xtr)
                        seen = np.zeros((len(members), len(Xtr)), bool)
                        for i, idx in enumerate(samples): seen[i, idx] = True
                        tr = agg(St, how, (~seen)[:, :, None] & np.ones_like(St, bool))
                    row["oob_auc"] = roc_auc_score(ytr, tr.max(1))
                    im = tr.max(1); med = np.median(im)
                    row["cls_cont_est"] = float((im > med + 3 * 1.4826 * np.median(np.abs(im - med))).mean())
                    row["cont_true"] = float(ytr.mean())
                rows.append(row)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    if a.out:
        with open(a.out, "a") as fh:
            for r in rows: fh.write(json.dumps(r) + "\n")

if __name__ == "__main__":
    main()
