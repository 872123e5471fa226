"""Run the bad-input table of tests/test_bad_inputs.py and count the outcomes.

Every case is something a new user might pass (wrong shapes and dtypes, NaN,
empty or huge images, unreadable, truncated or 16-bit files, PIL modes,
torch tensors, wrong parameters, ...). Each is declared in the test file as
either a clear error (with a keyword its message must contain) or accepted
sensibly (with what it must be converted to). This prints, per group and in
total, how many cases gave a clear error, were accepted sensibly, were
silently wrong (accepted, but not as declared) or gave an unclear error.

    python benchmarks/bad_inputs.py            # from the repository root
    python benchmarks/bad_inputs.py --details  # and every case's outcome
"""

import argparse
import os
import sys
import tempfile
import warnings

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--details", action="store_true", help="print every case's outcome")
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    import pytest

    from tests.test_bad_inputs import CASES, OUTCOMES, Context, classify

    warnings.simplefilter("ignore")
    counts, problems = {}, []
    with tempfile.TemporaryDirectory() as folder:
        ctx = Context(folder)
        for case in CASES:
            try:
                outcome, detail = classify(case, ctx)
            except pytest.skip.Exception as exc:
                outcome, detail = "skipped", str(exc)
            counts.setdefault(case.group, {}).setdefault(outcome, 0)
            counts[case.group][outcome] += 1
            if args.details:
                print(f"{outcome:18s} {case.group}: {case.id}  {detail[:120]}")
            if outcome not in ("clear error", "accepted sensibly"):
                problems.append((case, outcome, detail))
    columns = [*OUTCOMES, "skipped"]
    print("| group | cases | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    totals = dict.fromkeys(columns, 0)
    for group, row in counts.items():
        for column in columns:
            totals[column] += row.get(column, 0)
        cells = " | ".join(str(row.get(column, 0)) for column in columns)
        print(f"| {group} | {sum(row.values())} | {cells} |")
    print(f"| **total** | **{sum(totals.values())}** | " + " | ".join(f"**{totals[c]}**" for c in columns) + " |")
    for case, outcome, detail in problems:
        print(f"{outcome}: {case.group}: {case.id}: {' '.join(detail.split())[:300]}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
