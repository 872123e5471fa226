"""
=========================================
Inside a scikit-learn workflow
=========================================

skpatch's estimators are ordinary scikit-learn estimators, so they can sit at
the end of a :class:`~sklearn.pipeline.Pipeline` and be evaluated with
:func:`~sklearn.model_selection.cross_val_score`. Here a
:class:`~sklearn.preprocessing.FunctionTransformer` crops the images and
turns them to grayscale before a :class:`~skpatch.SoftPatchClassifier`, and
5-fold cross-validation compares it with keeping the colours.

Cross-validation is natural for a detector that tolerates noisy training
data: every training fold contains defective images, unlabelled (``fit``
ignores ``y``); the labels are only used to score the held-out fold.
"""

# sphinx_gallery_thumbnail_number = 2

# %%
# Preprocessing as a pipeline step
# --------------------------------
# skpatch accepts uint8 images of shape (n, H, W, 1) (grayscale) or
# (n, H, W, 3): the channel axis is always there, so the transformer keeps
# it (a bare (n, H, W) array would be ambiguous) and the uint8 range.
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from skpatch import SoftPatchClassifier
from skpatch.datasets import make_defects
from skpatch.metrics import image_auroc_scorer
from skpatch.plotting import plot_image_grid


def center_crop(X, margin=8):
    """Crop ``margin`` pixels from each side."""
    return np.asarray(X)[:, margin:-margin, margin:-margin]


def grayscale_center_crop(X, margin=8):
    """Crop, then convert RGB to grayscale (uint8, one channel)."""
    gray = center_crop(X, margin) @ np.array([0.299, 0.587, 0.114])
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)[..., None]


X, y, _ = make_defects(100, image_size=80, defect_ratio=0.2, random_state=0)
preprocessing = {
    "crop": FunctionTransformer(center_crop),
    "crop + grayscale": FunctionTransformer(grayscale_center_crop),
}
fig = plt.figure(figsize=(9.6, 2.9))
top, bottom = fig.subfigures(2, 1)
for subfig, (name, step) in zip((top, bottom), preprocessing.items()):
    plot_image_grid(step.transform(X[:8]), labels=y[:8], n_cols=8, fig=subfig)
    subfig.suptitle(f"after {name!r}", fontsize="medium")

# %%
# Cross-validated image AUROC
# ---------------------------
# ``image_auroc_scorer`` ranks images by ``-score_samples`` (the anomaly
# score) against ``y`` with 1 = defective. :class:`~sklearn.pipeline.Pipeline`
# forwards ``score_samples`` through the preprocessing step. ``cache=`` keeps
# the CNN features of every fold for the last section.
cache = tempfile.mkdtemp(prefix="skpatch-cache-")
cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
pipes, auroc = {}, {}
for name, step in preprocessing.items():
    clf = SoftPatchClassifier(cache=cache, random_state=0).set_params(
        featurizer__image_size=64
    )
    pipes[name] = make_pipeline(step, clf)
    auroc[name] = cross_val_score(
        pipes[name], X, y, cv=cv, scoring=image_auroc_scorer
    )
    print(f"{name}: image AUROC per fold {np.round(auroc[name], 3)}")

# %%
# Grayscale throws away what distinguishes some stains from the texture, and
# costs accuracy on one fold.

# %%
# The ``scoring="roc_auc"`` pitfall
# ---------------------------------
# scikit-learn's ``"roc_auc"`` scorer ranks outlier detectors by
# ``decision_function``, which is *higher for normal* samples. With labels
# where 1 = defective it therefore reports ``1 - AUROC`` without any warning,
# and a model selection based on it would pick the worst detector.
wrong = cross_val_score(
    pipes["crop + grayscale"], X, y, cv=cv, scoring="roc_auc"
)
print(f'scoring="roc_auc":      {np.round(wrong, 3)}')
print(f"1 - image_auroc_scorer: {np.round(1 - auroc['crop + grayscale'], 3)}")

fig, ax = plt.subplots(figsize=(5.5, 3.2))
folds = np.arange(1, cv.get_n_splits() + 1)
for name, values in auroc.items():
    ax.plot(folds, values, "o-", label=f"{name}, image_auroc_scorer")
ax.plot(folds, wrong, "s--", label='crop + grayscale, scoring="roc_auc"')
ax.set_xticks(folds)
ax.set_xlabel("fold")
ax.set_ylabel("AUROC")
ax.set_ylim(-0.05, 1.05)
ax.legend(loc="center right")
plt.tight_layout()
