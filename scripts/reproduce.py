"""`make reproduce`: the paper's comparison with the shipped tuned configs, then figures and tables.

    python -m scripts.reproduce [--dry-run] [--seeds 3] [--dataset mnist,faces,curves]
                                [--optimizer adam,locoprop_m] [--executor inprocess|processes|local|slurm]
                                [--workers N] [--gpus 0,1,2,3] [any Hydra override, e.g. epochs=2 device=cuda]

How it works: `benchmarks/orchestration/reproduce.py`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from benchmarks import cli
from benchmarks.cli import UsageError
from benchmarks.config import unknown_name
from benchmarks.optimizers import optimizer_names, paper_optimizers
from benchmarks.workloads import WORKLOADS
from benchmarks.reporting import figures, summary
from benchmarks.orchestration.launch import LaunchSettings
from benchmarks.orchestration.plan import executor_for, use_threads
from benchmarks.orchestration.reproduce import LEGACY_KEYS, PAPER_DATASETS, make_plan


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Options (`--seeds 3`, or the older `seeds=3`) and the Hydra overrides for every run."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dataset", default=",".join(PAPER_DATASETS), help="comma-separated data sets")
    parser.add_argument("--optimizer", default=",".join(paper_optimizers()), help="comma-separated optimizers")
    parser.add_argument("--results", default="results")
    parser.add_argument("--group", default="reproduce")
    parser.add_argument("--dry-run", action="store_true", help="list the runs, their data and cost; run nothing")
    parser.add_argument("--executor", default="inprocess", choices=("inprocess", "processes", "local", "slurm"),
                        help="one run after the other here, local processes, or submitit jobs")
    parser.add_argument("--workers", type=int, default=1, help="with --executor processes: runs at a time")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run (default: torch's, "
                        "here %d); the plan is priced by the bench table of this thread count" % torch.get_num_threads())
    parser.add_argument("--gpus", default=None, help="with --executor processes: one worker per GPU, e.g. 0,1,2,3")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. epochs=2 device=cuda")
    tokens = []
    for token in argv:
        key, sep, value = token.partition("=")
        if sep and key in LEGACY_KEYS:
            if key == "dry_run":
                tokens += [LEGACY_KEYS[key]] if value.lower() in ("1", "true", "yes") else []
            else:
                tokens += [LEGACY_KEYS[key], value]
        else:
            tokens.append(token)
    args = parser.parse_args(tokens)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"expected Hydra overrides key=value after the options, got {bad}")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got --seeds {args.seeds}")
    for kind, names, known in (("dataset", args.dataset, WORKLOADS), ("optimizer", args.optimizer, optimizer_names())):
        for name in names.split(","):
            if name not in known:
                raise UsageError(unknown_name(kind, name, known))
    return args, list(args.overrides)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    plan = make_plan(args.dataset.split(","), args.optimizer.split(","), args.seeds, overrides, args.results,
                     args.group)
    use_threads(args.threads)
    plan.threads = torch.get_num_threads()
    if args.dry_run:
        text, status = plan.describe(args.results)
        print(text)
        return status
    missing = plan.preflight()
    if missing:
        print("cannot start, missing:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    gpus = [int(g) for g in args.gpus.split(",")] if args.gpus else None
    workers = (len(gpus) if gpus else args.workers) if args.executor == "processes" else 1
    print(plan.summary(args.results, workers), flush=True)
    executor = executor_for(args.executor, args.workers, gpus, Path(args.results) / "logs" / args.group,
                            LaunchSettings(launcher=args.executor), args.results)
    statuses = executor.run(plan)
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status.split(":")[0]] = counts.get(status.split(":")[0], 0) + 1
    print(f"runs: {counts}")
    failures = [f"{label}: {status}" for label, status in statuses.items() if status.startswith("failed")
                or status.startswith("exit")]
    out = Path(args.results)
    if figures.draw_group(args.results, args.group, out / "figures" / args.group) is not None:
        for path in summary.summarize_group(args.results, args.group, out / "summaries" / args.group) or []:
            print(path)
    if failures:
        print(f"{len(failures)} run(s) failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli.run(main)
