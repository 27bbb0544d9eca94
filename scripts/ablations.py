"""`make ablations`: LocoProp's ablations (configs/ablation/*.yaml), then one figure each.

    python -m scripts.ablations [--only gamma inner_steps] [--results results] [--dry-run] [dataset=mnist seed=1]

How it works: `benchmarks/orchestration/ablations.py`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import cli
from benchmarks.reporting import figures
from benchmarks.orchestration.plan import InProcess, Plan
from benchmarks.orchestration.ablations import ablation_names, ablation_plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=ablation_names(), choices=ablation_names())
    parser.add_argument("--results", default="results")
    parser.add_argument("--no-train", action="store_true", help="only draw the figures of finished runs")
    parser.add_argument("--dry-run", action="store_true", help="list the runs, their state and cost; run nothing")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --), e.g. dataset=mnist")
    args = parser.parse_intermixed_args(argv)
    plans = [ablation_plan(name, args.overrides, args.results) for name in args.only]
    if args.dry_run:
        text, status = Plan([run for plan in plans for run in plan.runs], "ablations").describe(args.results)
        print(text)
        return status
    failed = 0
    for plan in plans:
        if not args.no_train:
            failed += sum(status.startswith("failed") for status in InProcess().run(plan).values())
        group = str(plan.runs[0].cfg.group)
        figures.draw_group(args.results, group, Path(args.results) / "figures" / group, ablation=True)
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(main)
