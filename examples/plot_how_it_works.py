"""
===================
How SoftPatch works
===================

A look inside the three steps of a fitted model, on a training set where a
fifth of the images carry defects nobody labelled:

1. :class:`~skpatch.PatchFeaturizer` cuts every image into a grid of patch
   features taken from a pretrained CNN;
2. :class:`~skpatch.NoiseDiscriminator` compares each training patch with the
   patches at the same position in the other training images, gives it an
   outlier score, removes the most suspicious ones and turns the scores of the
   others into soft weights;
3. :class:`~skpatch.WeightedCoreset` picks a memory bank among the remaining
   patches; a test patch's anomaly score is its distance to the nearest memory
   patch times that patch's weight.

PatchCore is the same model without step 2, which is why it memorises the
training defects.
"""

# %%
# Fit PatchCore and SoftPatch on the same noisy training set
# -----------------------------------------------------------
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from skpatch import SoftPatchSegmenter, WeightedCoreset
from skpatch.datasets import make_defect_dataset, make_noisy_split
from skpatch.plotting import plot_anomaly_map

SIZE = 96
data = make_defect_dataset(
    n_train=40, n_test=40, image_size=SIZE, kind="object", random_state=0
)
split = make_noisy_split(data, 0.2, overlap=True, random_state=0)
cache = tempfile.mkdtemp(prefix="skpatch-cache-")
patchcore = SoftPatchSegmenter(
    denoise="passthrough", memory=WeightedCoreset(), cache=cache, random_state=0
)
softpatch = SoftPatchSegmenter(cache=cache, random_state=0)
for model in (patchcore, softpatch):
    model.set_params(featurizer__image_size=SIZE).fit(split.train_images)

# %%
# Inside the fitted SoftPatch pipeline
# ------------------------------------
# ``named_steps`` gives the fitted steps. The discriminator's ``scores_`` and
# ``kept_`` have one entry per training image and patch position; the
# coreset's ``sample_indices_`` say which patches form the memory bank.
featurizer = softpatch.named_steps["featurizer"]
discriminator = softpatch.named_steps["denoise"]
coreset = softpatch.named_steps["coreset"]
h, w = featurizer.feature_shape_
n_patches = h * w
print(f"patch grid: {h} x {w}; training patches: {discriminator.kept_.size}")
print(f"removed: {(~discriminator.kept_).sum()}")
print(f"in the memory bank: {len(coreset.memory_bank_)}")


def show_grid(ax, values, **kwargs):
    """Draw an (h, w) patch grid over a SIZE x SIZE image."""
    return ax.imshow(
        values,
        extent=(-0.5, SIZE - 0.5, SIZE - 0.5, -0.5),
        interpolation="nearest",
        **kwargs,
    )


injected = np.flatnonzero(split.train_labels == 1)
shown = [0, *injected[:2]]  # one good and two defective training images
bank_image, bank_patch = np.divmod(coreset.sample_indices_, n_patches)
fig, axes = plt.subplots(len(shown), 3, figsize=(7.8, 2.7 * len(shown)))
for row, i in zip(axes, shown):
    # Injected images follow the good ones, in the order of noise_indices;
    # their masks (hidden from the model) are in the full test set.
    truth = (
        split.test_masks[split.noise_indices[i - len(data.train_images)]]
        if i in injected
        else None
    )
    row[0].imshow(split.train_images[i])
    if truth is not None:
        row[0].contour(truth, levels=[0.5], colors="white", linewidths=1)
    show_grid(
        row[1],
        discriminator.scores_[i].reshape(h, w),
        cmap="magma",
        vmin=np.percentile(discriminator.scores_, 1),
        vmax=np.percentile(discriminator.scores_, 99),
    )
    row[2].imshow(split.train_images[i])
    removed = np.ma.masked_where(
        discriminator.kept_[i].reshape(h, w), np.ones((h, w))
    )
    show_grid(row[2], removed, cmap=ListedColormap(["red"]), alpha=0.45)
    rows, cols = np.divmod(bank_patch[bank_image == i], w)
    row[2].plot(
        (cols + 0.5) * SIZE / w - 0.5,
        (rows + 0.5) * SIZE / h - 0.5,
        "c.",
        markersize=5,
    )
    for ax in row:
        ax.set_axis_off()
    row[0].set_title(
        "defective (hidden label)" if truth is not None else "good",
        fontsize="small",
    )
axes[0, 1].set_title(
    "2. noise score per patch\n(vs same position elsewhere)", fontsize="small"
)
axes[0, 2].set_title("3. removed (red), memory bank (dots)", fontsize="small")
axes[0, 0].set_title("1. training image: good", fontsize="small")
fig.suptitle("SoftPatch on a noisy training set")
plt.tight_layout()

# %%
# The discriminator scores patches of the defective images far above those of
# the good one. At 96 pixels the CNN's receptive field spans much of the
# image, so a defect also raises the scores of patches well around it: the
# default ``threshold=0.15`` cuts the 15% highest patch scores and
# ``dilation=1`` removes the 8-neighbours of every cut patch too, so these
# whole neighbourhoods stay out of the memory bank, while the good image keeps
# most of its patches.

# %%
# What this changes at test time
# ------------------------------
# Test images with the defects the detectors saw during training (the
# "overlap" setting): PatchCore has the defect patches in its memory bank and
# finds them normal; SoftPatch removed them and still flags the defects.
test = split.noise_indices[:3]
fig, axes = plt.subplots(2, len(test), figsize=(2.6 * len(test), 5.4))
for col, i in enumerate(test):
    for ax, (name, model) in zip(
        axes[:, col], [("PatchCore", patchcore), ("SoftPatch", softpatch)]
    ):
        anomaly_map = model.anomaly_maps(split.test_images[i : i + 1])[0]
        # One colour scale per model: 0 to twice its decision threshold.
        threshold = -model.offset_
        plot_anomaly_map(
            split.test_images[i],
            anomaly_map,
            mask=split.test_masks[i],
            ax=ax,
            vmin=0,
            vmax=2 * threshold,
        )
        ax.set_title(
            f"{name}: max {anomaly_map.max() / threshold:.1f} x threshold",
            fontsize="small",
        )
fig.suptitle("Anomaly maps of defects that were in the training set")
plt.tight_layout()
