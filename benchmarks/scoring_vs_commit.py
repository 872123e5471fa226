"""Scoring time of the default estimators at one commit, to set against another.

Issue #27 bounds the scoring time of the defaults by the time of the
defaults of the day it was filed (commit 60c9acc): scoring the 83 MVTec AD
bottle test images may take at most 1.2x as long, same machine, same run.
This script times one source tree; run it on a checkout of each commit, in
turns, with nothing else running::

    git worktree add /tmp/at_60c9acc 60c9acc
    for i in 1 2; do
        python benchmarks/scoring_vs_commit.py --tree /tmp/at_60c9acc
        python benchmarks/scoring_vs_commit.py
    done

Each run fits the default ``SoftPatchClassifier(random_state=0)`` and
``SoftPatchSegmenter(random_state=0)`` on the 209 training images and times
``score_samples`` on the 83 test images, decoded beforehand (as
``memory_scoring.py`` does): one call to warm up, then the best of
``--repeats``. It prints one line per estimator: the tree's commit, the
seconds, and the 1-minute load average before and after.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "mvtec_ad_bottle"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=REPO_ROOT, help="source tree whose skpatch is timed")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MVTec-layout bottle folder")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: no data at {args.data}", file=sys.stderr)
        return 2
    from memory_scoring import best_time  # before the tree goes first on sys.path

    tree = args.tree.resolve()
    sys.path.insert(0, str(tree))
    import numpy as np
    from PIL import Image

    import skpatch
    from skpatch import SoftPatchClassifier, SoftPatchSegmenter
    from skpatch.datasets import load_mvtec

    if Path(skpatch.__file__).resolve().parent != tree / "skpatch":
        print(f"error: imported {skpatch.__file__}, not the tree's", file=sys.stderr)
        return 2
    commit = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    data = load_mvtec(str(args.data), load_masks=False)
    test = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in data.test_images])
    for cls in (SoftPatchClassifier, SoftPatchSegmenter):
        model = cls(random_state=0, device="cpu").fit(list(data.train_images))
        model.score_samples(test)  # first-call costs (engine export, buffers)
        load_before = os.getloadavg()[0]
        best = best_time(lambda: model.score_samples(test), args.repeats)
        print(
            f"{commit} {cls.__name__}: score {len(test)} images {best:.2f} s (best of {args.repeats}); "
            f"memory {type(model.named_steps['coreset']).__name__}; "
            f"load {load_before:.2f} -> {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
