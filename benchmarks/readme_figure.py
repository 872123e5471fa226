"""The README's figure: real tire curves from a ``noise_robustness.py`` summary.

Reads ``noise_robustness_tire.csv`` (one row per data set, estimator,
metric, configuration and noise level, with the mean and standard deviation
over seeds) and draws image AUROC (classifier) and pixel AUROC (segmenter)
against the fraction of defective training images, with the seed spread as
error bars, for the configurations named on the command line.

Example, from the repository root::

    python benchmarks/noise_robustness.py --datasets tire \\
        --configs patchcore default "dec04:memory=WeightedCoreset()" --out /tmp/nr
    python benchmarks/readme_figure.py /tmp/nr/noise_robustness_tire.csv \\
        --configs patchcore=PatchCore "dec04=defaults of 2026-12-04" "default=defaults now"
"""

import argparse
import csv
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PANELS = (
    ("img_auroc", "classifier", "Image AUROC (SoftPatchClassifier)"),
    ("pix_auroc", "segmenter", "Pixel AUROC (SoftPatchSegmenter)"),
)


def read_summary(path):
    """``{(estimator, metric, config): [(noise, mean, std, n_seeds), ...]}`` sorted by noise."""
    table = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["noise"] == "avg":
                continue
            key = (row["estimator"], row["metric"], row["config"])
            std = float(row["std"]) if row["std"] not in ("", "nan") else 0.0
            table.setdefault(key, []).append((float(row["noise"]), float(row["mean"]), std, int(row["n_seeds"])))
    return {key: sorted(values) for key, values in table.items()}


def draw(table, configs, output, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(10, 3.8))
    for ax, (metric, estimator, panel_title) in zip(axes, PANELS):
        for i, (config, label) in enumerate(configs):
            values = table.get((estimator, metric, config))
            if not values:
                continue
            noise, mean, std, n_seeds = zip(*values)
            ax.errorbar(noise, mean, yerr=std, marker="os^D"[i % 4], capsize=3, label=label)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("fraction of defective training images")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("summary", type=Path, help="noise_robustness_tire.csv")
    parser.add_argument("--configs", nargs="+", required=True, metavar="CONFIG=LABEL",
                        help="configurations to draw, each with its legend label")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "_static" / "readme_figure.png")
    parser.add_argument("--title", default="MVTec 3D-AD tire (RGB), defective test images injected into training "
                                           "(also tested), mean ± std over 3 seeds")
    args = parser.parse_args(argv)
    args.configs = [tuple(item.split("=", 1)) if "=" in item else (item, item) for item in args.configs]
    return args


def main(argv=None):
    args = parse_args(argv)
    table = read_summary(args.summary)
    missing = [c for c, _ in args.configs if not any(key[2] == c for key in table)]
    if missing:
        print(f"error: no rows for {', '.join(missing)} in {args.summary}", file=sys.stderr)
        return 2
    draw(table, args.configs, args.output, args.title)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
