"""Fit and score on a Dask LocalCluster with 1 and 2 workers, against one process.

Writes ``--fit-images + --score-images`` PNGs of 256 x 256 px (``make_defects``
object images) under ``--workdir`` (default: a folder in the system temp dir,
never the repository); every run reads the same files, by path. Then, for

* one process (a fresh ``python`` subprocess, one torch thread), and
* ``skpatch.dask`` on ``LocalCluster(n_workers=k, threads_per_worker=1,
  processes=True)`` for each ``k`` of ``--workers``,

it fits the default ``SoftPatchClassifier(random_state=0)`` (224 px,
EfficientNet-Lite0, 256-d features) on the fit images and scores the score
images with the single-process model, and reports the wall time, the peak
RSS of each process that did the work (``ru_maxrss``: the subprocess, or
each worker process; the client holds no features), and the bytes moved
between workers (``transfer_outgoing_bytes_total`` summed over workers: the
position shuffle of the features, the coreset union and the model
replicas). The scores of ``score_images`` are checked to be bit-identical
to the single-process ones.

Prints a Markdown table. Run from the repository root::

    python benchmarks/scale.py                                          # 200 + 400 images
    python benchmarks/scale.py --fit-images 1000 --score-images 5000    # the issue's sizes
    python benchmarks/scale.py --fit-images 1000 --tasks fit --workers 2  # the fit only
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def write_images(folder, n_images, seed):
    """``n_images`` 256 px PNGs in ``folder`` (reused when already there)."""
    from PIL import Image

    from skpatch.datasets import make_defects

    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"{i:06d}.png") for i in range(n_images)]
    missing = [i for i, p in enumerate(paths) if not os.path.exists(p)]
    for start in range(0, len(missing), 100):
        chunk = missing[start : start + 100]
        X, _, _ = make_defects(len(chunk), image_size=256, kind="object", defect_ratio=0.1,
                               random_state=seed * 100003 + chunk[0])
        for i, image in zip(chunk, X):
            Image.fromarray(image).save(paths[i])
    return paths


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def single_process(task, paths_file, model_file):
    """Run in a fresh subprocess: fit or score in one process, print JSON."""
    import sklearn
    import torch

    torch.set_num_threads(1)
    if os.environ.get("SKPATCH_SCALE_WORKING_MEMORY"):
        sklearn.set_config(working_memory=int(os.environ["SKPATCH_SCALE_WORKING_MEMORY"]))
    from skpatch import SoftPatchClassifier, load

    with open(paths_file) as file:
        paths = file.read().split("\n")
    start = time.perf_counter()
    if task == "fit":
        SoftPatchClassifier(random_state=0).fit(paths).save(model_file)
        out = None
    else:
        out = load(model_file).score_samples(paths).tolist()
    print(json.dumps({"wall": time.perf_counter() - start, "rss": _peak_rss_mib(), "scores": out}))


def run_single(task, paths, model_file, workdir):
    paths_file = os.path.join(workdir, f"{task}-paths.txt")
    with open(paths_file, "w") as file:
        file.write("\n".join(paths))
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--_single", task, paths_file, model_file],
        check=True, capture_output=True, text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _worker_stats(dask_worker):
    return {"rss": _peak_rss_mib(), "sent": dask_worker.transfer_outgoing_bytes_total}


def run_cluster(n_workers, fit_paths, score_paths, model_file, tasks, shuffle="tasks"):
    from distributed import Client, LocalCluster

    import skpatch.dask
    from skpatch import SoftPatchClassifier, load

    rows = {}
    for task in tasks:
        # A fresh cluster per task, so that each peak RSS is that task's.
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                          dashboard_address=None, silence_logs=40) as cluster, Client(cluster) as client:
            client.run(lambda: __import__("skpatch.dask"))  # imports are not the task's time
            before = sum(s["sent"] for s in client.run(_worker_stats).values())
            start = time.perf_counter()
            if task == "fit":
                skpatch.dask.fit(SoftPatchClassifier(random_state=0), fit_paths, client=client, shuffle=shuffle)
                scores = None
            else:
                scores = skpatch.dask.score_images(load(model_file), score_paths, client=client)
            wall = time.perf_counter() - start
            stats = client.run(_worker_stats).values()
            rows[task] = {
                "wall": wall, "rss": [s["rss"] for s in stats],
                "moved": sum(s["sent"] for s in stats) - before, "scores": scores,
            }
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fit-images", type=int, default=200)
    parser.add_argument("--score-images", type=int, default=400)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--working-memory", type=int, default=None,
                        help="sklearn working_memory (MiB) for every run; default: sklearn's (1024)")
    parser.add_argument("--shuffle", choices=["tasks", "p2p"], default="tasks",
                        help="skpatch.dask.fit(shuffle=...)")
    parser.add_argument("--no-single", action="store_true", help="skip the single-process runs")
    parser.add_argument("--tasks", nargs="+", choices=["fit", "score"], default=["fit", "score"])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "skpatch-scale"))
    parser.add_argument("--_single", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.working_memory is not None:
        import sklearn

        sklearn.set_config(working_memory=args.working_memory)
        os.environ["SKPATCH_SCALE_WORKING_MEMORY"] = str(args.working_memory)  # for the subprocess
    if args._single:
        single_process(*args._single)
        return 0
    fit_paths = write_images(os.path.join(args.workdir, "fit"), args.fit_images, seed=1)
    score_paths = write_images(os.path.join(args.workdir, "score"), args.score_images if "score" in args.tasks else 0, seed=2)
    model_file = os.path.join(args.workdir, "single.skpatch")
    fit = None if args.no_single else run_single("fit", fit_paths, model_file, args.workdir)
    score = run_single("score", score_paths, model_file, args.workdir) if "score" in args.tasks else None
    feature_mib = args.fit_images * 784 * 256 * 4 / 2**20
    wm = args.working_memory or 1024
    print(f"\nworking_memory={wm} MiB, shuffle={args.shuffle}; fit: {args.fit_images} images ({feature_mib:.0f} MiB of features); "
          f"score: {args.score_images if score else 0} images; 256 px PNGs, default SoftPatchClassifier\n")
    print("| run | task | wall (s) | peak RSS per process (MiB) | moved between workers (MiB) |")
    print("|---|---|---:|---:|---:|")
    if fit is not None:
        print(f"| one process | fit | {fit['wall']:.1f} | {fit['rss']:.0f} | - |")
    if score is not None:
        print(f"| one process | score | {score['wall']:.1f} | {score['rss']:.0f} | - |")
    for n_workers in args.workers:
        rows = run_cluster(n_workers, fit_paths, score_paths, model_file, args.tasks, args.shuffle)
        for task in args.tasks:
            row = rows[task]
            rss = " / ".join(f"{r:.0f}" for r in row["rss"])
            note = ""
            if task == "score":
                identical = np.array_equal(np.asarray(row["scores"]), np.asarray(score["scores"]))
                note = f" (scores identical: {identical})"
            print(f"| {n_workers} worker{'s' * (n_workers > 1)} | {task}{note} | {row['wall']:.1f} | "
                  f"{rss} | {row['moved'] / 2**20:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
