"""`make report`: every table, figure and number about the reference comparison, from the committed runs.

    python -m scripts.report [--root results/reference/cpu] [--bench results/bench/<machine>.json]
                             [--out DIR] [--no-figures]

How it works: `benchmarks/reporting/report.py`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.results import bench_device
from benchmarks.tuning.protocol import BENCH, ROOT
from benchmarks.reporting.report import report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="the reference comparison's folder")
    parser.add_argument("--bench", type=Path, default=BENCH, help="the quiet bench table (.json) for every time axis")
    parser.add_argument("--out", type=Path, default=Path("."), help="write everything under this folder instead of "
                        "in place (the same relative paths; the drift test uses it)")
    parser.add_argument("--no-figures", dest="draw", action="store_false", help="tables and text only")
    args = parser.parse_args(argv)
    device = bench_device(args.bench) if args.bench.is_file() else None
    whose = ", the reference's, committed" if args.bench == BENCH else ""
    print(f"[report] every time axis is priced by one quiet bench table: {args.bench.as_posix()} "
          f"({device or 'unknown device'}){whose}", flush=True)
    report(args.root, args.bench, args.out, args.draw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
