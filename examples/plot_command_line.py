"""
=============================================
Save, load and score a folder from the shell
=============================================

Fit a model on a folder of images, save it in a file that cannot run code
when loaded, load it back, then score a folder of new images with the
``skpatch`` command and look at the overlays it writes.

In a terminal the same steps read::

    skpatch fit images/train --segment -o model.skpatch
    skpatch inspect model.skpatch
    skpatch score model.skpatch images/new --out results/ --overlays

Here the commands run in this Python process through the function that the
``skpatch`` console script calls, so that the example needs no shell.
"""

# %%
# A folder of images
# ------------------
# Generated bottle-like images with planted defects stand in for a camera's
# output: 40 unlabelled training images, of which 4 are defective, and 12
# new images to inspect. The model only ever sees file paths.
import pickle
import shlex
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

import skpatch
from skpatch import SoftPatchSegmenter
from skpatch.datasets import make_defects

folder = Path(tempfile.mkdtemp(prefix="skpatch-cli-"))
X, y, _ = make_defects(60, image_size=128, kind="object", defect_ratio=0.25, random_state=0)
train = np.concatenate([X[y == 0][:36], X[y == 1][:4]])
new = np.concatenate([X[y == 0][36:42], X[y == 1][4:10]])
for name, images in (("train", train), ("new", new)):
    (folder / name).mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / name / f"{i:03d}.png")
print(f"{len(train)} training images and {len(new)} new images in {folder}")

# %%
# Fit and save in Python ...
# --------------------------
# ``save`` writes arrays without pickle and parameters as JSON, with the
# format version, the skpatch version and SHA-256 hashes that
# :func:`skpatch.load` checks. The embedded backbone is referenced by the
# hash of its weights instead of being stored, so the file is smaller than a
# pickle; ``bank_dtype="float16"`` halves the memory bank again.
train_paths = sorted(str(p) for p in (folder / "train").glob("*.png"))
seg = SoftPatchSegmenter(random_state=0).set_params(featurizer__image_size=128)
seg.fit(train_paths)
model = folder / "model.skpatch"
seg.save(model)
seg.save(folder / "model16.skpatch", bank_dtype="float16")
print(f"model file:          {model.stat().st_size / 1e6:.2f} MB")
print(f"with a float16 bank: {(folder / 'model16.skpatch').stat().st_size / 1e6:.2f} MB")
print(f"pickle:              {len(pickle.dumps(seg)) / 1e6:.2f} MB (and it runs code when loaded)")

# %%
# ... and load it back
# --------------------
# Loading creates nothing but skpatch's estimators, after checking every
# hash; a truncated or edited file raises :class:`skpatch.ModelFileError`.
# The loaded model scores bit-identically.
loaded = skpatch.load(model)
new_paths = sorted(str(p) for p in (folder / "new").glob("*.png"))
same = np.array_equal(loaded.score_samples(new_paths), seg.score_samples(new_paths))
print(f"loaded {type(loaded).__name__}; bit-identical maps: {same}")

# %%
# The same from the command line
# ------------------------------
from skpatch._cli import main  # what the ``skpatch`` console script calls


def run(command):
    """Run a ``skpatch ...`` command line here, as a shell would."""
    print(f"$ {command}")
    assert main(shlex.split(command)[1:]) == 0


run(f"skpatch inspect {model}")

# %%
# ``score`` reads the folder in chunks (memory stays bounded for any number
# of images), writes one CSV row per image, and with ``--overlays`` one
# picture per image: the anomaly map over the image on a fixed colour scale,
# the outline of the predicted defect, and the score against the threshold.
out = folder / "results"
run(f"skpatch score {model} {folder / 'new'} --out {out} --overlays --quiet")
rows = (out / "scores.csv").read_text().splitlines()
print("\n".join(rows[:4] + ["..."]))

# %%
# The overlays of the four highest-scoring images
# -----------------------------------------------
records = [row.split(",") for row in rows[1:]]
worst = sorted(records, key=lambda r: -float(r[1]))[:4]
fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
for ax, record in zip(axes, worst):
    ax.imshow(plt.imread(out / "overlays" / Path(record[0]).name))
    ax.set_title(Path(record[0]).name, fontsize=9)
    ax.axis("off")
fig.tight_layout()
plt.show()
