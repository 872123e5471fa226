"""Absolute LOF cuts as a removal rule (sklearn LocalOutlierFactor contamination="auto" style).

For each split, fits the classifier with threshold 0 (scores only), sets the
threshold to the share of patches whose LOF exceeds each cut, refits and
reports test image AUROC; also PatchCore (pc) and the default (def).
Usage, from the repository root::

    python benchmarks/removal_cut.py hard_logical,hard_surface 0,1,2
"""
import sys, tempfile, numpy as np, argparse
from pathlib import Path
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "benchmarks"))
import noise_robustness as nr
from sklearn.metrics import roc_auc_score
from skpatch import SoftPatchClassifier
from skpatch.datasets import make_noisy_split
args = argparse.Namespace(n_train=60, n_test=60, image_size=128)
est_kind = sys.argv[3] if len(sys.argv) > 3 else "clf"
bases = {"k6": dict(denoise__n_neighbors=6, denoise__max_shift=0),
         "alkA": dict(denoise__n_neighbors="auto", denoise__max_shift=2)}
cuts = [float(c) for c in sys.argv[4].split(",")] if len(sys.argv) > 4 else [1.2, 1.3, 1.5]
with tempfile.TemporaryDirectory() as cache:
  for name in sys.argv[1].split(","):
    for seed in [int(s) for s in sys.argv[2].split(",")]:
      data = nr.synthetic_dataset(name, seed, args)
      for noise in [0.0, 0.2, 0.4]:
        split = make_noisy_split(data, noise, overlap=True, random_state=seed)
        labels = np.asarray(split.test_labels, int)
        def auc(params):
          e = SoftPatchClassifier(random_state=seed, cache=cache).set_params(**nr.DATASET_PARAMS[name], **params).fit(split.train_images)
          return roc_auc_score(labels, -e.score_samples(split.test_images))
        out = [f"pc={auc(dict(denoise='passthrough')):.3f}", f"def={auc({}):.3f}"]
        for bn, b in bases.items():
          e0 = SoftPatchClassifier(random_state=seed, cache=cache).set_params(**nr.DATASET_PARAMS[name], denoise__threshold=0.0, **b).fit(split.train_images)
          s = e0.named_steps["denoise"].scores_
          for t in cuts:
            r = float((s > t).mean())
            out.append(f"{bn}>{t}={auc(dict(denoise__threshold=min(r, 0.99), **b)):.3f}(r{100*r:.1f})")
        print(name, seed, noise, " ".join(out), flush=True)
