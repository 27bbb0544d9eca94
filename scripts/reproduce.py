"""`make reproduce`: the paper's comparison with the shipped tuned configs, then figures and tables.

    python -m scripts.reproduce [--dry-run] [--seeds 3] [--dataset mnist,faces,curves]
                                [--optimizer adam,locoprop_m] [--executor inprocess|processes|local|slurm]
                                [--workers N] [--gpus 0,1,2,3] [any Hydra override, e.g. epochs=2 device=cuda]

For every dataset x optimizer x seed it trains `tuned=<dataset>/<optimizer>` in group `reproduce`.
A real data set without a config of its own searched on it (FACES, CURVES) borrows the config
searched on its generated stand-in (faces_synth, curves_synth): a transfer, which the plan names.
Finished runs are skipped and interrupted ones resume from their last epoch checkpoint, so
re-running the command continues where it stopped. A run that cannot start (a missing data file)
or fails does not stop the others: the failures are listed at the end, the figures and tables are
drawn from what finished, and the exit status is 1. Before anything trains, a pre-flight checks every
planned run's data, optional packages and device and stops (exit status 2) with one line per
missing piece and its fix; then the plan's total, its bench table and an ETA are printed. `--dry-run` lists the runs in order with their
state, whether their data is there (and the command that fetches it), and their cost from the
bench table of the device they will use. With `cuda_graph=true`, each optimizer whose step
replays exactly in a CUDA graph uses one and the others run eagerly (the plan says which).
The older spelling `key=value` of the options (`seeds=1 dataset=mnist dry_run=true`) still works.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from benchmarks import cli
from benchmarks.cli import UsageError
from benchmarks.config import compose_config, unknown_name
from benchmarks.fast import graph_safe
from benchmarks.models import build_autoencoder
from benchmarks.optimizers import make_optimizer, optimizer_names, paper_optimizers
from benchmarks.tuned import tuned_name, tuned_note
from benchmarks.workloads import WORKLOADS, paper_datasets
from scripts import figures, summary as summary_script
from scripts.launch import LaunchSettings
from scripts.plan import Plan, PlannedRun, executor_for, use_threads

PAPER_DATASETS = tuple(paper_datasets())  # mnist, faces, curves
LEGACY_KEYS = {"seeds": "--seeds", "dataset": "--dataset", "optimizer": "--optimizer", "dry_run": "--dry-run",
               "results": "--results", "group": "--group"}


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


def replays_in_a_graph(optimizer: str) -> bool:
    """Whether this optimizer's step can be captured in a CUDA graph (benchmarks.fast.graph_safe)."""
    cfg = compose_config([f"optimizer={optimizer}"])
    return graph_safe(make_optimizer(build_autoencoder(sizes=[6, 4, 2, 4, 6]), OmegaConf.to_container(cfg.optimizer,
                                                                                                      resolve=True)))


def make_plan(datasets: list[str], optimizers: list[str], seeds: int, overrides: list[str], results: str,
              group: str) -> Plan:
    graphs = "cuda_graph=true" in [o.lower() for o in overrides]
    runs = []
    for dataset in datasets:
        for optimizer in optimizers:
            tuned = tuned_name(dataset, optimizer)
            base = [f"tuned={tuned}"] if tuned else [f"optimizer={optimizer}"]
            eager = ["cuda_graph=false"] if graphs and not replays_in_a_graph(optimizer) else []
            for seed in range(seeds):
                label = f"{dataset}/{optimizer} seed {seed}" + tuned_note(dataset, tuned) + (
                    " (eager)" if eager else "")
                runs.append(PlannedRun([*base, f"dataset={dataset}", f"seed={seed}", f"group={group}",
                                        f"results_dir={results}", *overrides, *eager], label))
    return Plan(runs, title=f"reproduce ({len(datasets)} data sets x {len(optimizers)} optimizers x {seeds} seeds)")


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
    if figures.main(["--results", args.results, "--group", args.group, "--out", str(out / "figures" / args.group)]) == 0:
        summary_script.main(["--results", args.results, "--group", args.group,
                             "--out", str(out / "summaries" / args.group)])
    if failures:
        print(f"{len(failures)} run(s) failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli.run(main)
