"""A distributed fit on MVTec AD bottle against the same fit in one process.

The equivalence checks of issue #12: ``skpatch.dask.fit`` on a
``LocalCluster(n_workers=k, threads_per_worker=1, processes=True)`` against
``SoftPatchClassifier(random_state=0).fit`` in this process (1 torch
thread), both on the training images' file paths:

- features (``skpatch.dask.featurize`` against ``transform``) and the
  discriminator's fitted ``scores_``, ``kept_``, ``weights_`` and
  ``score_threshold_``: identical;
- the composable coreset's coverage radius (the largest distance of a kept
  training patch to its nearest memory patch, full features) within 1.25x of
  the single-process coreset's;
- image AUROC on the test images within 0.005 (and >= 0.98);
- ``skpatch.dask.score_images`` against ``score_samples``: identical.

Prints a Markdown table. Run from the repository root::

    python benchmarks/dask_bottle.py [--data ../shared/data/mvtec_ad_bottle] [--workers 2]
"""

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DEFAULT_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "mvtec_ad_bottle")


def coverage_radius(features, kept, bank, block=4096):
    """Largest distance of a kept training patch to its nearest memory patch."""
    import torch

    flat = features.reshape(-1, features.shape[-1])[kept.reshape(-1)]
    bank_t = torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float32))
    radius = 0.0
    for start in range(0, len(flat), block):
        rows = torch.from_numpy(np.ascontiguousarray(flat[start : start + block], dtype=np.float32))
        radius = max(radius, float(torch.cdist(rows, bank_t).min(1).values.max()))
    return radius


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA, help="MVTec-layout bottle folder")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if not os.path.isdir(args.data):
        parser.error(f"no data at {args.data!r}")

    from distributed import Client, LocalCluster

    import skpatch.dask
    from skpatch import SoftPatchClassifier
    from skpatch._threads import torch_threads
    from skpatch.datasets import load_mvtec
    from skpatch.metrics import image_auroc

    data = load_mvtec(args.data, load_masks=False)  # lazy: file paths
    train, test, labels = list(data.train_images), list(data.test_images), np.asarray(data.test_labels)
    start = time.perf_counter()
    with torch_threads(1):
        single = SoftPatchClassifier(random_state=0).fit(train)
        single_scores = single.score_samples(test)
        single_features = single.pipeline_[0].transform(train)
    single_s = time.perf_counter() - start
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=40) as cluster, Client(cluster) as client:
        start = time.perf_counter()
        fitted = skpatch.dask.fit(SoftPatchClassifier(random_state=0), train, client=client)
        fit_s = time.perf_counter() - start
        features = skpatch.dask.featurize(fitted.pipeline_[0], train, client=client).compute()
        cluster_scores = skpatch.dask.score_images(fitted, test, client=client)
    with torch_threads(1):
        scores = fitted.score_samples(test)

    d_single, d_fitted = single.pipeline_[1], fitted.pipeline_[1]
    same_disc = all(
        np.array_equal(getattr(d_fitted, name), getattr(d_single, name))
        for name in ("scores_", "kept_", "weights_", "score_threshold_")
    )
    bank, reference = fitted.pipeline_[2].memory_bank_, single.pipeline_[2].memory_bank_
    kept = d_single.kept_
    radius, radius_single = coverage_radius(features, kept, bank), coverage_radius(features, kept, reference)
    auroc, auroc_single = image_auroc(labels, -scores), image_auroc(labels, -single_scores)
    print(f"{len(train)} training images, {len(test)} test images ({labels.sum()} defective), "
          f"{args.workers} workers; removed {1 - kept.mean():.1%} of the patches; "
          f"fit {single_s:.0f} s in one process (with scoring), {fit_s:.0f} s on the cluster\n")
    print("| check | result |\n|---|---|")
    print(f"| features (`skpatch.dask.featurize` vs `transform`) | "
          f"{'bit-identical' if np.array_equal(features, single_features) else 'DIFFERENT'} |")
    print(f"| discriminator `scores_`, `kept_`, `weights_`, `score_threshold_` | "
          f"{'bit-identical' if same_disc else 'DIFFERENT'} |")
    print(f"| memory bank size | {bank.shape[0]} x {bank.shape[1]} vs {reference.shape[0]} x {reference.shape[1]} |")
    print(f"| coverage radius of the kept patches (full {bank.shape[1]}-d) | {radius:.2f} vs {radius_single:.2f}: "
          f"{radius / radius_single:.2f}x (bound 1.25x) |")
    print(f"| image AUROC on the {len(test)} test images | {auroc:.4f} vs {auroc_single:.4f} "
          f"(bound: within 0.005, and >= 0.98) |")
    print(f"| `score_images` on the cluster vs `score_samples` | "
          f"{'bit-identical' if np.array_equal(cluster_scores, scores) else 'DIFFERENT'} |")


if __name__ == "__main__":
    main()
