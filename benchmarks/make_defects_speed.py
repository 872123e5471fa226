"""Time make_defects: 200 images of 256 px per kind (the spec: well under 2 s each).

This used to be a timed test; timings belong to benchmarks (a loaded test
machine made it fail). From the repository root::

    python benchmarks/make_defects_speed.py
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from skpatch.datasets import make_defects  # noqa: E402


def main():
    make_defects(2, image_size=256, random_state=0)  # warm up
    print("| kind | images | seconds | target |\n|---|---|---|---|")
    for kind in ("texture", "object", "grain", "board"):
        start = time.perf_counter()
        make_defects(200, image_size=256, kind=kind, random_state=0)
        print(f"| {kind} | 200 | {time.perf_counter() - start:.2f} | < 2 |")


if __name__ == "__main__":
    main()
