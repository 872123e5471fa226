"""
==========================================
Real images in the MVTec AD folder layout
==========================================

Load real images with :func:`~skpatch.datasets.load_mvtec`, train on a
noisy split of them, and look at the images the model ranks first, among the
test images and among its own training images.

The loader reads any data set stored like MVTec AD::

    <root>/train/good/*.png
    <root>/test/<defect_type>/*.png
    <root>/ground_truth/<defect_type>/<name>_mask.png   (optional)

This example uses the *bottle* category of MVTec AD when it is found at
``../shared/data/mvtec_ad_bottle`` next to the repository (MVTec AD, licensed
CC BY-NC-SA 4.0, is not shipped with skpatch: download it from MVTec's website
and point ``ROOT`` at any of its categories). MVTec AD: Bergmann et al.,
"MVTec AD - A Comprehensive Real-World Dataset for Unsupervised Anomaly
Detection", CVPR 2019; the figures below show its images under that licence. Without it, generated bottle-like images are written to a
temporary folder in the same layout, so the code path is the same.

With ``lazy=True`` (the default) the loader returns file paths, and the
estimators read the images one batch at a time.
"""

# %%
# Find or write the data
# ----------------------
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from skpatch import SoftPatchClassifier
from skpatch.datasets import load_mvtec, make_defect_dataset, make_noisy_split
from skpatch.metrics import image_auroc
from skpatch.plotting import plot_image_grid

try:  # sphinx-gallery and ``python plot_real_images.py`` both set __file__
    REPO = Path(__file__).resolve().parent.parent
except NameError:  # e.g. pasted into a notebook started in examples/
    REPO = Path.cwd().parent
ROOT = REPO.parent / "shared" / "data" / "mvtec_ad_bottle"


def write_mvtec_layout(root, random_state=0):
    """Write a generated data set to ``root`` in the MVTec AD layout."""
    data = make_defect_dataset(
        n_train=60,
        n_test=40,
        image_size=128,
        kind="object",
        random_state=random_state,
    )
    for i, image in enumerate(data.train_images):
        (root / "train" / "good").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "train" / "good" / f"{i:03d}.png")
    for i, (image, kind, mask) in enumerate(
        zip(data.test_images, data.test_defect_types, data.test_masks)
    ):
        (root / "test" / kind).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "test" / kind / f"{i:03d}.png")
        if kind != "good":
            (root / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(
                root / "ground_truth" / kind / f"{i:03d}_mask.png"
            )


if not (ROOT / "train" / "good").is_dir():
    ROOT = Path(tempfile.mkdtemp(prefix="skpatch-")) / "synthetic_bottle"
    write_mvtec_layout(ROOT)

data = load_mvtec(ROOT)
print(data.DESCR)

# %%
# A noisy training set
# --------------------
# As in the SoftPatch papers, 10% of the training set size in defective test
# images moves into the training set. ``train_labels`` records which, for the
# analysis below only.
split = make_noisy_split(data, 0.1, random_state=0)
n_noise = split.train_labels.sum()
print(f"training: {len(split.train_images)} images, {n_noise} defective")
print(f"test: {len(split.test_images)} images")
print(
    "first training image:",
    Path(split.train_images[0]).relative_to(ROOT.parent),
)

# %%
# Fit on the file paths
# ---------------------
# 128 pixels keeps the example fast on a CPU; the default of 224 is more
# accurate on real photos.
clf = SoftPatchClassifier(random_state=0).set_params(
    featurizer__image_size=128
)
clf.fit(split.train_images)
anomaly_score = -clf.score_samples(split.test_images)
auroc = image_auroc(split.test_labels, anomaly_score)
print(f"image AUROC on the test images: {auroc:.3f}")

# %%
# The most anomalous test images
# ------------------------------
# The top of the ranking, with the (hidden) ground truth in the titles.
top = np.argsort(anomaly_score)[::-1][:10]
plot_image_grid(
    [split.test_images[i] for i in top],
    anomaly_score[top],
    labels=split.test_labels[top],
    n_cols=5,
    score_name="anomaly",
)
plt.suptitle("Test images with the highest anomaly scores")
plt.tight_layout()

# %%
# And the least anomalous ones:
bottom = np.argsort(anomaly_score)[:5]
plot_image_grid(
    [split.test_images[i] for i in bottom],
    anomaly_score[bottom],
    labels=split.test_labels[bottom],
    n_cols=5,
    score_name="anomaly",
)
plt.suptitle("Test images with the lowest anomaly scores")
plt.tight_layout()

# %%
# Which training images did the discriminator distrust?
# -----------------------------------------------------
# The fitted :class:`~skpatch.NoiseDiscriminator` is in ``named_steps``; its
# ``kept_`` marks the training patches that reached the memory bank. Ranking
# the training images by the fraction of their patches it removed finds the
# injected defective images, without any label: a way to clean a data set.
discriminator = clf.named_steps["denoise"]
removed = 1 - discriminator.kept_.mean(axis=1)
suspects = np.argsort(removed)[::-1][:10]
found = split.train_labels[np.argsort(removed)[::-1][:n_noise]].sum()
print(f"the {n_noise} most distrusted training images include {found} of the")
print(f"{n_noise} injected defective images")
plot_image_grid(
    [split.train_images[i] for i in suspects],
    removed[suspects],
    labels=split.train_labels[suspects],
    n_cols=5,
    score_name="removed",
)
plt.suptitle("Training images with the most removed patches")
plt.tight_layout()
