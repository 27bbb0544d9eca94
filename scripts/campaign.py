"""A long, resumable batch of searches and runs, shared by a few worker processes.

    python -m scripts.campaign cpu-reference [--workers 2] [--threads 1]

How it works: `benchmarks/orchestration/campaign.py`.
"""
from __future__ import annotations

import argparse
import sys

import optuna

from benchmarks import cli
from benchmarks.preflight import problems
from benchmarks.orchestration.launch import add_launch_args, settings_from, submit, wait, work_beside_processes
from benchmarks.orchestration.plan import use_threads
from benchmarks.tuning.search import Search, describe_searches, work
from benchmarks.orchestration.campaign import PLANS, Runs, collect, plan_items


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plan", choices=[*sorted(PLANS), "collect"], help="a plan to work on; 'collect': copy "
                        "--source's small files into --root (the report of the results: `make report`)")
    parser.add_argument("--root", default="results/reference/cpu", help="the campaign's folder (collect)")
    parser.add_argument("--source", default=None, help="with 'collect': the folder a campaign writes elsewhere")
    parser.add_argument("--tuned-from", default=None, help="with 'collect': that campaign's tuned-config folder")
    parser.add_argument("--only", default=None, help="work only on this data set's items of the plan (e.g. mnist)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's); "
                        "the plan is priced by the bench table of this thread count")
    add_launch_args(parser)
    parser.add_argument("--dry-run", action="store_true", help="say where every item stands and what is left")
    args = parser.parse_args(argv)
    if args.plan == "collect":
        collect(args.source, args.root, args.tuned_from)
        return
    use_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    items = plan_items(args.plan, args.only, create=False)
    if not args.dry_run:
        missing = problems(cfg for item in items for cfg in
                           ([item.full_run_config()] if isinstance(item, Search) else item.configs()))
        if missing:
            raise SystemExit("cannot start, missing:\n  " + "\n  ".join(missing))
    print(describe_searches([item for item in items if isinstance(item, Search)]))
    for item in items:
        if isinstance(item, Runs):
            print("  " + item.describe({})[0])
    if args.dry_run:
        return
    launch = settings_from(args)
    if launch.launcher != "processes":
        wait(submit(run_worker, argv, launch, args.root))
        return
    work_beside_processes("scripts.campaign", argv, launch.workers - 1, lambda: work(plan_items(args.plan, args.only)))


def run_worker(argv: list[str]) -> None:
    """One worker of a campaign (what a submitit job calls)."""
    main(argv)


if __name__ == "__main__":
    cli.run(main)
