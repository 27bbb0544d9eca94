"""The paper's comparison figures, drawn from the local run tables.

    python -m scripts.figures --results results --group default [--out DIR] [--time measured|bench]

How it works: `benchmarks/reporting/figures.py`.
"""
from __future__ import annotations

import argparse
import sys

from benchmarks.reporting.figures import draw_group


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results", help="results directory holding runs/")
    parser.add_argument("--group", default="default", help="experiment group (runs/<group>/...)")
    parser.add_argument("--out", default=None, help="output folder (default: <results>/figures/<group>)")
    parser.add_argument("--time", choices=("measured", "bench"), default="measured",
                        help="time axis: the measured training seconds, or steps x the ms/step of a quiet bench")
    parser.add_argument("--bench", default=None, help="with --time bench: the bench table (.json) measured in the "
                        "runs' setting (device, threads), or a results folder whose bench/ holds the tables "
                        "(default --results)")
    parser.add_argument("--ablation", action="store_true", help="the group is an ablation (scripts/ablations.py): "
                        "draw the final train loss against the ablated setting, and the curves")
    args = parser.parse_args(argv)
    written = draw_group(args.results, args.group, args.out, args.time, args.bench, args.ablation)
    if written is None:
        return 1
    print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
