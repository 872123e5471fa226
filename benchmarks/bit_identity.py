"""Bit-identity check of a refactor: the same scores before and after, on bottle.

Fits the default ``SoftPatchClassifier`` and ``SoftPatchSegmenter`` on the
MVTec AD bottle training images (or the first ``--n-train`` of them) and
records, on the test images:

* ``score_samples`` and ``decision_function`` of each fitted estimator, plus
  ``offset_``, ``contamination_estimate_`` and the classifier's
  ``train_scores_``;
* the scores of the model saved as a ``.skpatch`` file and loaded back;
* the scores from :func:`skpatch.dask.score_images` on a two-worker
  ``LocalCluster`` (skipped with ``--no-dask`` or when dask is absent).

Run it with ``--save ref.npz`` on the commit before a change (for example in
a ``git worktree``) and with ``--compare ref.npz`` after it; the comparison
asserts that every array is identical bit for bit (``np.array_equal``,
with NaN equal to NaN) and exits 1 naming the arrays that differ.

Example, from the repository root::

    git worktree add /tmp/before HEAD~1
    (cd /tmp/before && python benchmarks/bit_identity.py --save /tmp/ref.npz)
    python benchmarks/bit_identity.py --compare /tmp/ref.npz

A reference saved before ``engine="auto"`` became the featurizer's default
(commit 29ae648) ran torch: compare with ``SKPATCH_ENGINE=torch`` set, or the
default models run onnxruntime and differ in the last bits of every feature.
"""

import argparse
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "mvtec_ad_bottle"


def record(data_root, n_train, n_test, use_dask):
    """Arrays to compare, by name."""
    import numpy as np

    import skpatch
    from skpatch import SoftPatchClassifier, SoftPatchSegmenter
    from skpatch.datasets import load_mvtec

    data = load_mvtec(data_root, load_masks=False)
    train = list(data.train_images)[:n_train]
    test = list(data.test_images)[:n_test]
    out = {}
    client = cluster = None
    if use_dask:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            use_dask = False
        else:
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for cls in (SoftPatchClassifier, SoftPatchSegmenter):
                name = cls.__name__
                est = cls(random_state=0, device="cpu").fit(train)
                out[f"{name}.score_samples"] = est.score_samples(test)
                out[f"{name}.decision_function"] = est.decision_function(test)
                out[f"{name}.offset_"] = np.asarray(est.offset_)
                out[f"{name}.contamination_estimate_"] = np.asarray(est.contamination_estimate_)
                if hasattr(est, "train_scores_"):
                    out[f"{name}.train_scores_"] = np.asarray(est.train_scores_)
                path = Path(tmp) / f"{name}.skpatch"
                est.save(path)
                out[f"{name}.file.score_samples"] = skpatch.load(path).score_samples(test)
                if use_dask:
                    from skpatch.dask import score_images

                    out[f"{name}.dask.score_images"] = score_images(est, test, client=client)
    finally:
        if client is not None:
            client.close()
            cluster.close()
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path, help="write the arrays to this .npz")
    group.add_argument("--compare", type=Path, help="compare with the arrays of this .npz")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MVTec-layout bottle folder")
    parser.add_argument("--n-train", type=int, default=209, help="training images used (default: all 209)")
    parser.add_argument("--n-test", type=int, default=83, help="test images scored (default: all 83)")
    parser.add_argument("--no-dask", action="store_true", help="skip skpatch.dask.score_images")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: no data at {args.data}", file=sys.stderr)
        return 2
    import numpy as np

    arrays = record(args.data, args.n_train, args.n_test, not args.no_dask)
    if args.save:
        np.savez(args.save, **arrays)
        print(f"saved {len(arrays)} arrays to {args.save}")
        return 0
    reference = dict(np.load(args.compare))
    differ = []
    for key in sorted(set(reference) | set(arrays)):
        if key not in reference or key not in arrays:
            print(f"{key}: only in {'the reference' if key in reference else 'this run'}")
            continue
        same = reference[key].shape == arrays[key].shape and np.array_equal(reference[key], arrays[key], equal_nan=True)
        if same:
            detail = ""
        elif reference[key].shape != arrays[key].shape:
            detail = f" (shape {reference[key].shape} -> {arrays[key].shape})"
        else:
            detail = f" (max abs difference {np.nanmax(np.abs(reference[key] - arrays[key])):.3g})"
        print(f"{key}: {'identical' if same else 'DIFFERENT'}{detail}")
        if not same:
            differ.append(key)
    if differ:
        print(f"{len(differ)} arrays differ: {', '.join(differ)}")
        return 1
    print(f"all {len(reference)} arrays identical, bit for bit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
