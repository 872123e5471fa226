"""
==========
Quickstart
==========

Fit a :class:`~skpatch.SoftPatchClassifier` on images of which some are
defective, without saying which, then score new images and draw the ROC
curve.

The images come from :func:`~skpatch.datasets.make_defects`, which draws
images that all share one look (here a bottle-top-like object) and plants
scratches, holes, stains and missing chunks in a fraction of them, with exact
labels and masks for evaluation.
"""

# sphinx_gallery_thumbnail_number = 2

# %%
# Unlabelled, partly defective training images
# --------------------------------------------
# One in five images is defective. We split them into a training and a test
# set; the training labels are thrown away: the detector never sees them.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import RocCurveDisplay, confusion_matrix
from sklearn.model_selection import train_test_split

from skpatch import SoftPatchClassifier
from skpatch.datasets import make_defects
from skpatch.plotting import plot_image_grid

X, y, masks = make_defects(
    120, image_size=64, kind="object", defect_ratio=0.2, random_state=0
)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.5, stratify=y, random_state=0
)
print(f"{len(X_train)} training images, {y_train.sum()} secretly defective")

plot_image_grid(X_train[:10], labels=y_train[:10], n_cols=5)
plt.suptitle(
    "Training images: the labels are shown here but never given to fit"
)
plt.tight_layout()

# %%
# Fit and score
# -------------
# ``featurizer__image_size`` sets the resolution the CNN sees; 64 pixels
# matches these small images and keeps the example fast (the default, 224, is
# meant for real photos). ``fit`` takes only images.
clf = SoftPatchClassifier(random_state=0).set_params(featurizer__image_size=64)
clf.fit(X_train)

# %%
# As for scikit-learn's outlier detectors,
# :meth:`~skpatch.SoftPatchClassifier.score_samples` is *higher for more
# normal* images. The anomaly score is its opposite;
# metrics use labels with 1 = defective, so they take ``-score_samples``.
anomaly_score = -clf.score_samples(X_test)
for label, name in [(0, "good"), (1, "defective")]:
    mean = anomaly_score[y_test == label].mean()
    print(f"mean anomaly score of the {name} images: {mean:.2f}")

# %%
# ROC curve
# ---------
fig, ax = plt.subplots(figsize=(4.5, 4.5))
RocCurveDisplay.from_predictions(
    y_test, anomaly_score, name="SoftPatch", ax=ax
)
ax.set_title("Image-level ROC on the test images")
plt.tight_layout()

# %%
# Hard decisions
# --------------
# :meth:`~skpatch.SoftPatchClassifier.predict` returns +1 (normal) and -1
# (anomalous). Its threshold, ``offset_``, is set from the training images'
# own scores (``contamination="auto"``: three robust standard deviations
# above their median), which a minority of defective training images does not
# move much.
predicted_defective = clf.predict(X_test) == -1
print(confusion_matrix(y_test, predicted_defective, labels=[0, 1]))

# %%
# The most anomalous test images, with their scores:
order = np.argsort(anomaly_score)[::-1][:10]
plot_image_grid(
    X_test[order],
    anomaly_score[order],
    labels=y_test[order],
    n_cols=5,
    score_name="anomaly",
)
plt.suptitle("Test images ranked by anomaly score")
plt.tight_layout()
