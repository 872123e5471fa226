"""
=======================================
Anomaly maps and pixel-level metrics
=======================================

:class:`~skpatch.SoftPatchSegmenter` reads the same pipeline out per pixel:
the weighted patch distances are upsampled to the image resolution and
smoothed. Here it is trained on a noisy training set (a quarter of the
training images carry unlabelled defects), next to PatchCore
(``denoise="passthrough"``), and evaluated with pixel AUROC and AUPRO
against the ground-truth masks.
"""

# %%
# A noisy training set
# --------------------
import tempfile

import matplotlib.pyplot as plt
import numpy as np

from skpatch import SoftPatchSegmenter, WeightedCoreset
from skpatch.datasets import make_defect_dataset, make_noisy_split
from skpatch.metrics import aupro, pixel_auroc
from skpatch.plotting import plot_anomaly_map

data = make_defect_dataset(
    n_train=40, n_test=60, image_size=96, kind="object", random_state=0
)
split = make_noisy_split(data, 0.25, random_state=0)
for part in ("train", "test"):
    images, labels = split[f"{part}_images"], split[f"{part}_labels"]
    print(f"{part}: {len(images)} images, {labels.sum()} defective")

# %%
# Fit both segmenters
# -------------------
# The segmenter's default discriminator cuts the 15% highest patch scores and
# also removes the 8-neighbours of every cut patch (``denoise__dilation=1``),
# since for a pixel map it matters more to leave no defect patch, nor the rim
# of one, in the memory bank than to keep every normal one; it also aligns the
# training images by up to two patch positions and compares each patch with
# half of the images, which keeps a defect that recurs in many images from
# looking normal (see the user guide). ``cache=`` lets the two models share
# the CNN features.
cache = tempfile.mkdtemp(prefix="skpatch-cache-")
segmenters = {
    "PatchCore": SoftPatchSegmenter(
        denoise="passthrough", memory=WeightedCoreset(), cache=cache, random_state=0
    ),
    "SoftPatch": SoftPatchSegmenter(cache=cache, random_state=0),
}
maps = {}
for name, seg in segmenters.items():
    seg.set_params(featurizer__image_size=96).fit(split.train_images)
    # anomaly_maps is -score_samples: higher = more anomalous, per pixel.
    maps[name] = seg.anomaly_maps(split.test_images)

# %%
# Anomaly maps
# ------------
# Each row is a defective test image; the white contour is the ground truth.
# Each map has its own colour scale, from its minimum to its maximum.
defective = np.flatnonzero(split.test_labels == 1)[:4]
fig, axes = plt.subplots(
    len(defective), 3, figsize=(7.5, 2.6 * len(defective))
)
for row, i in zip(axes, defective):
    row[0].imshow(split.test_images[i])
    row[0].set_axis_off()
    row[0].set_title(split.test_defect_types[i], fontsize="small")
    for ax, name in zip(row[1:], segmenters):
        plot_anomaly_map(
            split.test_images[i],
            maps[name][i],
            mask=split.test_masks[i],
            ax=ax,
        )
        ax.set_title(name, fontsize="small")
plt.tight_layout()

# %%
# Pixel AUROC and AUPRO
# ---------------------
# Metrics take ground truth with 1 = defective and anomaly scores, higher =
# more anomalous. Pixel AUROC is dominated by the large defects; AUPRO
# (area under the per-region overlap curve up to 30% false positive rate)
# weighs every defect region equally, small ones included.
scores = {
    name: {
        "pixel AUROC": pixel_auroc(split.test_masks, m),
        "AUPRO": aupro(split.test_masks, m),
    }
    for name, m in maps.items()
}
for name, values in scores.items():
    print(
        f"{name:10s} " + "  ".join(f"{k} {v:.3f}" for k, v in values.items())
    )

fig, ax = plt.subplots(figsize=(5, 3.2))
width = 0.35
for k, name in enumerate(scores):
    values = list(scores[name].values())
    bars = ax.bar(np.arange(2) + (k - 0.5) * width, values, width, label=name)
    ax.bar_label(bars, fmt="%.3f", fontsize="small")
ax.set_xticks(np.arange(2), list(scores["SoftPatch"]))
ax.set_ylim(0, 1.1)
ax.legend(loc="lower right")
ax.set_title("Pixel-level metrics with 25% noisy training images")
plt.tight_layout()

# %%
# Binary masks
# ------------
# :meth:`~skpatch.SoftPatchSegmenter.predict` thresholds the maps at
# ``offset_``, which ``contamination="auto"`` sets three robust standard
# deviations above the median of the training pixels' own scores.
predicted = segmenters["SoftPatch"].predict(split.test_images[defective])
fig, axes = plt.subplots(
    1, len(defective), figsize=(2.2 * len(defective), 2.4)
)
for ax, image, mask, truth in zip(
    axes, split.test_images[defective], predicted, split.test_masks[defective]
):
    ax.imshow(image)
    ax.contour(mask, levels=[0.5], colors="yellow")
    ax.contour(truth, levels=[0.5], colors="white", linestyles="dotted")
    ax.set_axis_off()
fig.suptitle(
    "predicted defect (yellow) and ground truth (dotted white)",
    fontsize="medium",
)
plt.tight_layout()
