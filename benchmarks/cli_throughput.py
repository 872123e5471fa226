"""Time the command line on folders: fit and score on 200 images, throughput on 1000.

Writes the image folders under ``--workdir`` (default: a folder in the system
temp dir, never the repository): 1000 PNGs of 256 x 256 pixels, made from the
MVTec AD bottle images (flipped and rotated, so every file is distinct) when
they are at ../shared/data/mvtec_ad_bottle, else generated with
``make_defects``. Then, through ``skpatch._cli.main`` (what the ``skpatch``
command runs):

1. ``skpatch fit`` on 200 images (the first 200 bottle training images);
2. ``skpatch score`` on 200 images, and on the 1000-image folder with
   ``--workers 0`` (decode, then run the CNN) and ``--workers 2`` (decode the
   next images while the CNN runs), checking that both write the same CSV;
3. ``PatchFeaturizer.transform`` on 200 file paths with ``decode_workers`` 0
   and 2 (the same features, checked), and the decoding alone.

Prints a Markdown table. Run from the repository root::

    python benchmarks/cli_throughput.py                  # about 10 minutes on 2 free cores
    python benchmarks/cli_throughput.py --n-images 300   # a quicker check
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BOTTLE = os.path.join(ROOT, os.pardir, "shared", "data", "mvtec_ad_bottle")


def write_folder(folder, n_images):
    """``n_images`` distinct 256 px PNGs in ``folder`` (reused when already there)."""
    os.makedirs(folder, exist_ok=True)
    existing = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    if len(existing) >= n_images:
        return [os.path.join(folder, f) for f in existing[:n_images]], "reused"
    sources = _source_images()
    paths = []
    for i in range(n_images):
        image = sources[i % len(sources)]
        variant = i // len(sources)  # rotations and flips keep every file distinct
        image = np.rot90(image, variant % 4)
        if variant // 4 % 2:
            image = image[:, ::-1]
        paths.append(os.path.join(folder, f"{i:04d}.png"))
        Image.fromarray(np.ascontiguousarray(image)).save(paths[-1])
    return paths, "bottle" if os.path.isdir(BOTTLE) else "make_defects"


def _source_images():
    if os.path.isdir(BOTTLE):
        from skpatch.datasets import load_mvtec

        data = load_mvtec(BOTTLE, lazy=False)
        return list(data.train_images) + list(data.test_images)
    from skpatch.datasets import make_defects

    X, _, _ = make_defects(200, image_size=256, kind="object", defect_ratio=0.2, random_state=0)
    return list(X)


def timed(argv):
    from skpatch._cli import main

    start = time.perf_counter()
    code = main(argv)
    if code != 0:
        raise SystemExit(f"skpatch {' '.join(argv)} failed with exit code {code}")
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "skpatch-cli-bench"))
    parser.add_argument("--n-images", type=int, default=1000, help="size of the throughput folder")
    parser.add_argument("--n-train", type=int, default=200)
    args = parser.parse_args()

    import torch

    from skpatch import PatchFeaturizer
    from skpatch._images import _load_item

    load_before = os.getloadavg()[0]
    big, source = write_folder(os.path.join(args.workdir, f"images{args.n_images}"), args.n_images)
    train = os.path.join(args.workdir, "train.txt")
    if os.path.isdir(BOTTLE):
        from skpatch.datasets import load_mvtec

        train_paths = load_mvtec(BOTTLE).train_images[: args.n_train]
    else:
        train_paths = big[: args.n_train]
    with open(train, "w") as handle:
        handle.write("\n".join(train_paths) + "\n")
    n_small = min(200, args.n_images)
    scored = os.path.join(args.workdir, f"score{n_small}.txt")
    with open(scored, "w") as handle:
        handle.write("\n".join(big[:n_small]) + "\n")
    model = os.path.join(args.workdir, "model.skpatch")
    rows = []

    seconds = timed(["fit", train, "-o", model, "-q"])
    rows.append((f"skpatch fit, {len(train_paths)} images", seconds, len(train_paths) / seconds))
    seconds = timed(["score", model, scored, "--out", os.path.join(args.workdir, f"r{n_small}"), "-q"])
    rows.append((f"skpatch score, {n_small} images", seconds, n_small / seconds))
    csv = {}
    for workers in (0, 2):
        out = os.path.join(args.workdir, f"r{args.n_images}_w{workers}")
        seconds = timed(["score", model, os.path.dirname(big[0]), "--out", out, "--workers", str(workers), "-q"])
        rows.append((f"skpatch score, {args.n_images} images, --workers {workers}", seconds, args.n_images / seconds))
        with open(os.path.join(out, "scores.csv")) as handle:
            csv[workers] = handle.read()
    assert csv[0] == csv[2], "--workers changed the results"

    paths = big[:n_small]
    start = time.perf_counter()
    for i, path in enumerate(paths):
        _load_item(path, i)
    seconds = time.perf_counter() - start
    rows.append((f"decode only (PIL, 1 thread), {n_small} images", seconds, n_small / seconds))
    features = {}
    featurizer = PatchFeaturizer().fit(paths[:1])
    for workers in (0, 2):
        featurizer.set_params(decode_workers=workers)
        start = time.perf_counter()
        features[workers] = featurizer.transform(paths)
        seconds = time.perf_counter() - start
        rows.append((f"PatchFeaturizer.transform, {n_small} paths, decode_workers={workers}", seconds, n_small / seconds))
    assert np.array_equal(features[0], features[2]), "decode_workers changed the features"

    print(f"\nImages: {source}, 256 x 256 PNG; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; 1-min load average {load_before:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end\n")
    print("| step | seconds | images/s |")
    print("|---|---:|---:|")
    for name, seconds, rate in rows:
        print(f"| {name} | {seconds:.1f} | {rate:.2f} |")


if __name__ == "__main__":
    main()
