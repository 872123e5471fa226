"""Featurize a real MVTec-layout set once, for the step-level lab (memory_lab.py).

Writes ``<cache>/<name>.npz``: the default PatchFeaturizer's features of every
training and test image, the test labels, defect types and masks (when the
set has them). The data stay outside the repository.

    python benchmarks/probes/memory_featcache.py tire     # ../shared/data/mvtec_3d_tire
    python benchmarks/probes/memory_featcache.py bottle
"""
import os, sys, time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
CACHE = os.environ.get("SKPATCH_LAB_CACHE", "/tmp/lab")
from skpatch import PatchFeaturizer
from skpatch.datasets import load_mvtec
name = sys.argv[1]
root = str(REPO.parent / "shared" / "data" / {"tire": "mvtec_3d_tire", "bottle": "mvtec_ad_bottle"}[name])
data = load_mvtec(root)
f = PatchFeaturizer(n_jobs=2)
t = time.time()
# The lab works on rows of patches (n_images, h * w, d); the grid is saved beside them.
tr = f.fit_transform(data.train_images)
tr = tr.reshape(len(tr), -1, tr.shape[-1])
te = f.transform(data.test_images)
te = te.reshape(len(te), -1, te.shape[-1])
print(name, tr.shape, te.shape, f.feature_shape_, time.time() - t)
masks = data.get("test_masks")
out = dict(train=tr, test=te, labels=np.asarray(data.test_labels), types=np.asarray(data.test_defect_types), grid=np.array(f.feature_shape_))
if masks is not None and all(m is not None for m in masks):
    out["masks"] = np.stack(masks).astype(bool)
os.makedirs(CACHE, exist_ok=True)
np.savez(f"{CACHE}/{name}.npz", **out)
