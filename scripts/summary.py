"""The results table: per dataset x optimizer, losses over seeds, speed and time to a target loss.

    python -m scripts.summary --results results --group default --out results [--targets mnist=60,curves=3]

How it works: `benchmarks/reporting/summary.py`.
"""
from __future__ import annotations

import argparse
import sys

from benchmarks.reporting.summary import parse_targets, summarize_group


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results", help="results directory holding runs/")
    parser.add_argument("--group", default="default", help="experiment group (runs/<group>/...)")
    parser.add_argument("--out", default=None, help="output folder (default: <results>/summaries/<group>)")
    parser.add_argument("--bench", default=None, help="a bench table (.json) measured in the runs' setting: adds "
                        "its ms/step and the time to target it implies (immune to a loaded machine)")
    parser.add_argument("--targets", type=parse_targets, default={},
                        help="target train loss per dataset, e.g. mnist=60,curves=3 (default: 1.05 x best)")
    args = parser.parse_args(argv)
    written = summarize_group(args.results, args.group, args.out, args.bench, args.targets)
    if written is None:
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
