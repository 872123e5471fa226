"""Which phase of a fit sets the peak memory: one process against Dask workers.

``benchmarks/scale.py`` reports each process's peak RSS for a whole fit.
This script says *when* that peak is reached: it wraps the functions that do
each phase of the fit (in the single process, and inside every worker
process of a ``LocalCluster(n_workers=k, threads_per_worker=1,
processes=True)``) so that each records ``ru_maxrss`` (the process's peak
resident memory so far) when it returns. The phase after which a process's
peak first reaches its final value is the one that set it.

Phases: ``featurize`` (the CNN), ``shuffle`` (workers only: the rechunk
from image partitions to position chunks, read when the discriminator
starts), ``denoise`` (the discriminator's raw scores), ``coreset`` (greedy
k-center; on workers the local coresets, then the merge on one worker),
``train_scores`` (leave-one-image-out scores for ``train_scores_`` and
``offset_``).

Run from the repository root (uses ``scale.py``'s image files)::

    python benchmarks/scale_memory.py --fit-images 1000 --workers 2
"""

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from scale import _peak_rss_mib, write_images  # noqa: E402 - after the path set-up

# (module, attribute, phase) of the functions that do each phase: the public
# steps' methods in one process; skpatch.dask's task functions, which have no
# public names, on the workers.
SINGLE_PHASES = (
    ("skpatch", "PatchFeaturizer.transform", "featurize"),
    ("skpatch", "PatchFeaturizer.fit_transform", "featurize"),
    ("skpatch", "NoiseDiscriminator.fit_transform", "denoise"),
    ("skpatch", "WeightedCoreset.fit", "coreset"),
    ("skpatch", "WeightedCoreset.score_held_out", "train_scores"),
)
WORKER_PHASES = (
    ("skpatch.dask._features", "featurize_partition", "featurize"),
    ("skpatch.dask._features", "featurize_pieces", "featurize"),
    ("skpatch.dask._denoise", "raw_scores_block", "denoise"),
    ("skpatch.dask._denoise", "projected_scores_block", "denoise"),  # with max_shift
    ("skpatch.dask._memory", "local_coreset", "coreset"),
    ("skpatch.dask._memory", "merge_coresets", "coreset"),
    ("skpatch.dask._fit", "leave_one_out_block", "train_scores"),
)

_RECORDS = []  # per process: (phase, seconds since start, peak RSS MiB)
_START = time.perf_counter()
# --timeline: per process, the highest current RSS (MiB) sampled while each
# label ran: a wrapped phase in the single process, the running task's name
# (``key_split``) on a worker, ``idle`` when none runs; with the bytes of the
# results a worker held at that moment (its managed memory, 0 in one process).
_TIMELINE = {}
_LABEL = ["idle"]


def _worker():
    try:
        from distributed import Worker
    except ImportError:
        return None
    return next(iter(Worker._instances), None)


def _current_label(worker):
    if worker is None:
        return _LABEL[-1]
    from distributed.utils import key_split

    executing = list(worker.state.executing)
    return ",".join(sorted({key_split(task.key) for task in executing})) or "idle"


def _start_sampler(period=0.02):
    import threading

    import psutil

    process = psutil.Process()
    worker = _worker()

    def sample():
        while True:
            label = _current_label(worker)
            rss = process.memory_info().rss / 2**20
            if rss > _TIMELINE.get(label, (0.0, 0.0))[0]:
                managed = 0.0 if worker is None else worker.state.nbytes / 2**20
                _TIMELINE[label] = (rss, managed)
            time.sleep(period)

    threading.Thread(target=sample, daemon=True).start()


def _timeline():
    return dict(_TIMELINE)


def _record(phase):
    _RECORDS.append((phase, time.perf_counter() - _START, _peak_rss_mib()))


def _wrap(module_name, attribute, phase):
    import importlib

    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        _LABEL.append(phase)
        try:
            out = original(*args, **kwargs)
        finally:
            _LABEL.pop()
        _record(phase)
        return out

    setattr(owner, name, wrapper)


def _install(phases):
    for spec in phases:
        _wrap(*spec)


def _add_path(path):
    sys.path.insert(0, path)


def _records():
    return list(_RECORDS)


def summarise(records):
    """Peak after each phase (the last record of each phase), and the phase that set the peak."""
    order, peak_after = [], {}
    for phase, _, peak in records:
        if phase not in peak_after:
            order.append(phase)
        peak_after[phase] = peak
    final = max(peak for _, _, peak in records)
    setter = next(phase for phase, _, peak in records if peak == final)
    return order, peak_after, final, setter


def single_process(paths_file, working_memory=None, timeline=False):
    import torch
    from sklearn import config_context

    torch.set_num_threads(1)
    _install(SINGLE_PHASES)
    if timeline:
        _start_sampler()
    from skpatch import SoftPatchClassifier

    with open(paths_file) as file:
        paths = file.read().split("\n")
    _record("start")
    with config_context(working_memory=working_memory):
        SoftPatchClassifier(random_state=0).fit(paths)
    print(json.dumps([_records(), _timeline()]))


def run_single(paths, workdir, working_memory=None, timeline=False):
    paths_file = os.path.join(workdir, "fit-paths.txt")
    with open(paths_file, "w") as file:
        file.write("\n".join(paths))
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--_single", paths_file]
        + ([] if working_memory is None else ["--working-memory", str(working_memory)])
        + (["--timeline"] if timeline else []),
        check=True, capture_output=True, text=True,
    )
    records, samples = json.loads(result.stdout.strip().splitlines()[-1])
    return records, samples


def run_cluster(n_workers, paths, working_memory=None, chunk_mib=None, timeline=False):
    from distributed import Client, LocalCluster

    import scale_memory as probe  # workers import it by name: its records persist there
    import skpatch.dask
    from skpatch import SoftPatchClassifier

    original = skpatch.dask._fit.fit_discriminator

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=40) as cluster, Client(cluster) as client:
        client.run(_add_path, os.path.join(ROOT, "benchmarks"))
        client.run(probe._install, WORKER_PHASES)
        client.run(probe._record, "start")
        if timeline:
            client.run(probe._start_sampler)

        def timed_discriminator(disc, features, client, *args):
            from distributed import wait

            wait(features)  # the position chunks (persisted, asynchronously) are all there
            client.run(probe._record, "shuffle")
            return original(disc, features, client, *args)

        from sklearn import config_context

        skpatch.dask._fit.fit_discriminator = timed_discriminator
        chunk_bytes = skpatch.dask._features.POSITION_CHUNK_BYTES
        if chunk_mib is not None:
            skpatch.dask._features.POSITION_CHUNK_BYTES = int(chunk_mib * 2**20)
        try:
            with config_context(working_memory=working_memory):
                skpatch.dask.fit(SoftPatchClassifier(random_state=0), paths, client=client)
        finally:
            skpatch.dask._fit.fit_discriminator = original
            skpatch.dask._features.POSITION_CHUNK_BYTES = chunk_bytes
        return list(zip(client.run(probe._records).values(), client.run(probe._timeline).values()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fit-images", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "skpatch-scale"))
    parser.add_argument("--working-memory", type=int, default=None,
                        help="sklearn working_memory (MiB) of the fit, in both runs (default: sklearn's)")
    parser.add_argument("--position-chunk-mib", type=float, default=None,
                        help="size of the position chunks of the shuffle (default: skpatch.dask's, 128)")
    parser.add_argument("--no-single", action="store_true", help="skip the single-process run")
    parser.add_argument("--timeline", action="store_true",
                        help="also sample each process's current RSS every 20 ms and print its "
                        "highest value per running phase (single process) or task name (workers)")
    parser.add_argument("--_single", nargs=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._single:
        single_process(args._single[0], args.working_memory, args.timeline)
        return 0
    paths = write_images(os.path.join(args.workdir, "fit"), args.fit_images, seed=1)
    runs = [] if args.no_single else [
        ("one process", *run_single(paths, args.workdir, args.working_memory, args.timeline))
    ]
    for n_workers in args.workers:
        results = run_cluster(n_workers, paths, args.working_memory, args.position_chunk_mib, args.timeline)
        for i, (records, samples) in enumerate(results):
            runs.append((f"{n_workers} workers, worker {i}", records, samples))
    phases = ["start", "featurize", "shuffle", "denoise", "coreset", "train_scores"]
    print(f"\n{args.fit_images} images; peak RSS (MiB, ru_maxrss) after each phase\n")
    print("| process | " + " | ".join(phases) + " | peak set by |")
    print("|---|" + "---:|" * len(phases) + "---|")
    for label, records, _ in runs:
        _, after, final, setter = summarise(records)
        cells = [f"{after[p]:.0f}" if p in after else "-" for p in phases]
        print(f"| {label} | " + " | ".join(cells) + f" | {setter} ({final:.0f}) |")
    if args.timeline:
        print("\nHighest sampled current RSS (MiB) while each phase or task ran "
              "(and the results the worker held then, MiB)\n")
        for label, _, samples in runs:
            ranked = sorted(samples.items(), key=lambda kv: -kv[1][0])
            cells = ", ".join(f"{name} {rss:.0f} ({managed:.0f} held)" for name, (rss, managed) in ranked)
            print(f"- {label}: {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
