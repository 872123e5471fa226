"""
================================================
Tuning the noise discriminator with GridSearchCV
================================================

Which discriminator, and how many training patches to remove? With a small
labelled validation set, :class:`~sklearn.model_selection.GridSearchCV`
answers that like for any scikit-learn estimator, given three things:

- a **scorer that knows the sign conventions**: skpatch's estimators return
  ``score_samples`` higher for *normal* images while labels use
  1 = defective. :mod:`skpatch.metrics` scorers (here
  :data:`~skpatch.metrics.aupro_scorer` and
  :data:`~skpatch.metrics.image_auroc_scorer`) handle this;
  ``scoring="roc_auc"`` would silently report ``1 - AUROC``;
- a **split that trains on the unlabelled images** and validates on the
  labelled ones: a :class:`~sklearn.model_selection.PredefinedSplit`;
- ``cache=``, so that the CNN runs once for the training images and once for
  the validation images, not once per candidate.
"""

# %%
# Training and validation images
# ------------------------------
# The training images are unlabelled and 20% of them are defective. The
# validation images are labelled with masks (True = defective pixel).
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import GridSearchCV, PredefinedSplit

from skpatch import SoftPatchSegmenter, WeightedCoreset
from skpatch.datasets import make_defect_dataset, make_noisy_split
from skpatch.metrics import aupro_scorer, image_auroc_scorer

data = make_defect_dataset(
    n_train=40, n_test=60, image_size=64, kind="object", random_state=1
)
split = make_noisy_split(data, 0.2, random_state=1)

# %%
# One array of images and one of targets for GridSearchCV. The training
# images get all-False placeholder masks: ``fit`` ignores ``y`` (it is
# unsupervised) and they are never used for validation. ``test_fold`` is -1
# for images that are always in the training fold and 0 for the validation
# fold.
n_train, n_val = len(split.train_images), len(split.test_images)
X = np.concatenate([split.train_images, split.test_images])
unlabelled = np.zeros((n_train, *split.test_masks.shape[1:]), dtype=bool)
y = np.concatenate([unlabelled, split.test_masks])
test_fold = np.r_[np.full(n_train, -1), np.zeros(n_val, dtype=int)]
cv = PredefinedSplit(test_fold)
print(f"train fold: {n_train} unlabelled images")
print(f"validation fold: {n_val} images, {split.test_labels.sum()} defective")

# %%
# The search
# ----------
# Nested parameters reach the default discriminator directly
# (``denoise__method``), in front of the segmenter's default bagged memory;
# PatchCore (``denoise="passthrough"`` with one memory bank,
# ``memory=WeightedCoreset()``) is a second grid. Image AUROC treats a mask as "defective if any pixel is" and an
# anomaly map as "as anomalous as its worst pixel", so one ``y`` serves both
# scorers. ``refit=False``: refitting on ``X`` would train on the validation
# images; we fit the winner on the training images ourselves.
cache = tempfile.mkdtemp(prefix="skpatch-cache-")
segmenter = SoftPatchSegmenter(cache=cache, random_state=0).set_params(
    featurizer__image_size=64
)
param_grid = [
    {"denoise": ["passthrough"], "memory": [WeightedCoreset()]},
    {
        "denoise__method": ["nearest", "lof", "gaussian", "softpatch+"],
        "denoise__threshold": [0.0, 0.1, 0.25, 0.5],
    },
]
search = GridSearchCV(
    segmenter,
    param_grid,
    scoring={"AUPRO": aupro_scorer, "image AUROC": image_auroc_scorer},
    refit=False,
    cv=cv,
)
search.fit(X, y)

# %%
# Results
# -------
# ``cv_results_`` holds one entry per candidate; masked parameter values are
# those a candidate did not set.
res = search.cv_results_
methods = [
    m if m is not np.ma.masked else "passthrough"
    for m in res["param_denoise__method"]
]
thresholds = [
    t if t is not np.ma.masked else np.nan
    for t in res["param_denoise__threshold"]
]
print(f"{'denoise':12s} {'threshold':>9s} {'AUPRO':>6s} {'image AUROC':>11s}")
for k in np.argsort(-res["mean_test_AUPRO"], kind="stable"):
    aupro, auroc = res["mean_test_AUPRO"][k], res["mean_test_image AUROC"][k]
    print(f"{methods[k]:12s} {thresholds[k]:9.2f} {aupro:6.3f} {auroc:11.3f}")

# %%
# AUPRO by discriminator and removal threshold; threshold 0 keeps every patch
# and only applies the soft weights.
method_names = param_grid[1]["denoise__method"]
threshold_values = param_grid[1]["denoise__threshold"]
grid = np.full((len(method_names), len(threshold_values)), np.nan)
for method, threshold, value in zip(
    methods, thresholds, res["mean_test_AUPRO"]
):
    if method != "passthrough":
        grid[method_names.index(method), threshold_values.index(threshold)] = (
            value
        )
patchcore = res["mean_test_AUPRO"][methods.index("passthrough")]

fig, ax = plt.subplots(figsize=(6, 3.6))
image = ax.imshow(
    grid, cmap="viridis", vmin=min(patchcore, grid.min()), vmax=grid.max()
)
ax.set_xticks(
    range(len(threshold_values)), [f"{t:g}" for t in threshold_values]
)
ax.set_yticks(range(len(method_names)), method_names)
ax.set_xlabel("denoise__threshold (share of patch scores cut, then dilated)")
ax.set_ylabel("denoise__method")
middle = (grid.max() + min(patchcore, grid.min())) / 2
for (r, c), value in np.ndenumerate(grid):
    ax.text(
        c,
        r,
        f"{value:.3f}",
        ha="center",
        va="center",
        color="black" if value > middle else "white",
    )
fig.colorbar(image, ax=ax, label="validation AUPRO")
ax.set_title(
    f"PatchCore (no discriminator): AUPRO {patchcore:.3f}", fontsize="medium"
)
plt.tight_layout()

# %%
# The winner, refitted on the training images only
# ------------------------------------------------
best = search.cv_results_["params"][
    np.argmax(search.cv_results_["mean_test_AUPRO"])
]
print("best parameters:", best)
final = SoftPatchSegmenter(cache=cache, random_state=0).set_params(
    featurizer__image_size=64, **best
)
final.fit(split.train_images)
