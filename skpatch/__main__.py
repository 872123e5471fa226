"""``python -m skpatch``: fit, score and draw a figure, end to end.

Uses an MVTec-layout folder when given (or ``../shared/data/mvtec_ad_bottle``
when present), otherwise generated images with planted defects.
"""

import argparse
import os
import time

import numpy as np

from skpatch import SoftPatchClassifier, SoftPatchSegmenter
from skpatch._images import read_image
from skpatch.datasets import load_mvtec, make_defect_dataset
from skpatch.metrics import image_auroc

_DEFAULT_DATA = os.path.join("..", "shared", "data", "mvtec_ad_bottle")


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m skpatch", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="MVTec-layout folder (default: the shared bottle set if present, else generated images)")
    parser.add_argument("--output", default="skpatch_demo.png", help="figure file to write")
    parser.add_argument("--image-size", type=int, default=224, help="CNN input size")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _load(args):
    path = args.data or (_DEFAULT_DATA if os.path.isdir(_DEFAULT_DATA) else None)
    if path is not None:
        print(f"data: {path}")
        return load_mvtec(path), path
    print("data: generated with make_defect_dataset (no folder given or found)")
    return make_defect_dataset(n_train=60, n_test=30, image_size=128, kind="object", random_state=args.seed), None


def _load_rgb(image):
    return image if isinstance(image, np.ndarray) else read_image(image)


def main(argv=None):
    args = _parse_args(argv)
    data, _ = _load(args)
    clf = SoftPatchClassifier(random_state=args.seed).set_params(featurizer__image_size=args.image_size)
    start = time.perf_counter()
    clf.fit(data.train_images)
    fit_time = time.perf_counter() - start
    start = time.perf_counter()
    scores = clf.score_samples(data.test_images)
    score_time = time.perf_counter() - start
    labels = clf.predict(data.test_images)
    print(f"fit on {len(data.train_images)} images: {fit_time:.1f} s; scored {len(scores)} in {score_time:.1f} s")
    print(f"image AUROC: {image_auroc(data.test_labels, -scores):.4f}")
    print(f"{'image':>5}  {'type':<14} {'score':>9}  prediction")
    for i in np.argsort(scores):
        verdict = "anomalous" if labels[i] == -1 else "normal"
        print(f"{i:5d}  {data.test_defect_types[i]:<14} {scores[i]:9.3f}  {verdict}")
    _figure(args, data, scores)


def _figure(args, data, scores):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worst = np.argsort(scores)[:4]
    shown = [_load_rgb(data.test_images[i]) for i in worst]
    seg = SoftPatchSegmenter(random_state=args.seed).set_params(featurizer__image_size=args.image_size)
    maps = seg.fit(data.train_images).anomaly_maps(np.stack(shown))
    fig, axes = plt.subplots(2, len(worst), figsize=(3 * len(worst), 6), squeeze=False)
    for col, (i, image, amap) in enumerate(zip(worst, shown, maps)):
        axes[0, col].imshow(image)
        axes[0, col].set_title(f"{data.test_defect_types[i]}\nscore {scores[i]:.2f}", fontsize=9)
        axes[1, col].imshow(image)
        axes[1, col].imshow(amap, cmap="jet", alpha=0.5)
        if data.test_masks is not None:
            axes[1, col].contour(data.test_masks[i], levels=[0.5], colors="white", linewidths=1)
        for ax in axes[:, col]:
            ax.axis("off")
    fig.suptitle("Most anomalous test images (top) and SoftPatchSegmenter maps (bottom)")
    fig.tight_layout()
    fig.savefig(args.output, dpi=80)
    print(f"figure: {args.output}")


if __name__ == "__main__":
    main()
