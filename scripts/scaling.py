"""How many workers a search can use before its database, not the workers, is the limit.

    python -m scripts.scaling --measure      # time the study storages here -> results/bench/storage_<machine>.json

How it works: `benchmarks/tuning/scaling.py`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.tuning.scaling import estimate_markdown, latest_storage_table, measure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", action="store_true", help="time the storages on this machine")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--root", type=Path, default=Path("results/reference/cpu"))
    args = parser.parse_args(argv)
    if args.measure:
        print(f"wrote {measure(args.out)}")
    table = latest_storage_table(args.out)
    if table is None:
        raise SystemExit(f"no storage table in {args.out}: run with --measure first")
    print(estimate_markdown(args.root, table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
