"""Fair, resumable hyper-parameter search for one optimizer on one data set.

    python -m scripts.tune --dataset mnist --optimizer adam [--trials 16] [--workers 2] [-- overrides]
    python -m scripts.tune --dataset mnist --optimizer paper      # the paper's nine, one after another

How it works: `benchmarks/tuning/search.py`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import optuna

from benchmarks import cli
from benchmarks.cli import UsageError
from benchmarks.config import unknown_name
from benchmarks.optimizers import paper_optimizers
from benchmarks.workloads import WORKLOADS
from benchmarks.orchestration.launch import add_launch_args, settings_from, submit, wait, work_beside_processes
from benchmarks.orchestration.plan import use_threads
from benchmarks.tuning.storage import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S
from benchmarks.tuning.search import Protocol, Search, describe_searches, preflight, work


def protocol_args(parser: argparse.ArgumentParser) -> None:
    defaults = Protocol()
    parser.add_argument("--trials", type=int, default=defaults.trials, help="trials per optimizer (equal budget)")
    parser.add_argument("--seeds", type=int, default=defaults.seeds, help="seeds of the winner (the trial is seed 0)")
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--min-resource", type=int, default=defaults.min_resource, help="first rung (epochs)")
    parser.add_argument("--reduction-factor", type=int, default=defaults.reduction_factor)
    parser.add_argument("--startup-trials", type=int, default=defaults.startup_trials)
    parser.add_argument("--no-exits", dest="exits", action="store_false", help="do not end trials by the "
                        "notebook's exits (loss > 1000, best > 600, best > 350 after epoch 12)")
    parser.add_argument("--results", default="results", help="where studies, runs and (by default) tuned configs go")
    parser.add_argument("--tuned-dir", default=None, help="where the tuned config goes (default: <results>/tuned; "
                        "the shipped ones: results/tuned)")
    parser.add_argument("--force", action="store_true", help="overwrite a tuned config that another study wrote")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's); "
                        "the dry run is priced by the bench table of this thread count")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --), e.g. dataset.n_train=10000")


def protocol_from(args: argparse.Namespace) -> Protocol:
    return Protocol(trials=args.trials, seeds=args.seeds, eval_every=args.eval_every, min_resource=args.min_resource,
                    reduction_factor=args.reduction_factor, startup_trials=args.startup_trials, exits=args.exits,
                    overrides=list(args.overrides))


def main(argv: list[str] | None = None) -> Path | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--optimizer", required=True, help="an optimizer's config name (searched over "
                        "benchmarks/tuning/search_spaces/<name>.yaml, or its lr), or "
                        "'paper' for the nine the LocoProp paper compares")
    parser.add_argument("--storage", default=None, help="where the study lives: a SQLAlchemy URL (default: sqlite "
                        "under <results>/tuning/; postgresql://user@host/db for many machines) or journal:<file> "
                        "(Optuna's journal on a shared file system)")
    parser.add_argument("--heartbeat-interval", type=int, default=HEARTBEAT_INTERVAL_S,
                        help="seconds between a running trial's heartbeats")
    parser.add_argument("--grace-period", type=int, default=GRACE_PERIOD_S, help="a trial whose heartbeat is older "
                        "than this has lost its worker: it is failed and its setting run again")
    parser.add_argument("--wandb", action="store_true", help="log every trial and seed to W&B (logger=wandb), "
                        "grouped by study, named by trial")
    parser.add_argument("--dry-run", action="store_true", help="say where each search stands and what is left")
    parser.add_argument("--export-as", default=None, help="data set the tuned config is for, when the search ran on "
                        "a stand-in (e.g. search curves_synth, export as curves); recorded in the provenance")
    parser.add_argument("--note", default="", help="free text stored in the provenance")
    protocol_args(parser)
    add_launch_args(parser)
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.trials < 1:
        raise UsageError(f"--seeds and --trials must be >= 1, got --seeds {args.seeds} --trials {args.trials}")
    if args.dataset not in WORKLOADS:
        raise UsageError(unknown_name("dataset", args.dataset, WORKLOADS))
    launch = settings_from(args)
    use_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = paper_optimizers() if args.optimizer == "paper" else [args.optimizer]
    if args.storage and len(names) > 1:
        raise SystemExit("--storage names one study: give one --optimizer with it")
    existing = [Search(args.dataset, name, args.results, protocol_from(args), storage=args.storage,
                       tuned_dir=args.tuned_dir, export_as=args.export_as, create=False) for name in names]
    if args.dry_run:  # describes what exists, creates nothing
        print(describe_searches(existing))
        return None
    missing = preflight(existing)
    if missing:
        raise SystemExit("cannot start, missing:\n  " + "\n  ".join(missing))
    print(describe_searches(existing), flush=True)
    searches = [Search(args.dataset, name, args.results, protocol_from(args), storage=args.storage,
                       tuned_dir=args.tuned_dir, export_as=args.export_as, note=args.note,
                       heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period, wandb=args.wandb,
                       force=args.force)
                for name in names]
    if launch.launcher != "processes":
        wait(submit(run_worker, argv, launch, args.results))
    else:
        work_beside_processes("scripts.tune", argv, launch.workers - 1, lambda: work(searches))
    return searches[-1].tuned_path if searches[-1].tuned_path.exists() else None


def run_worker(argv: list[str]) -> None:
    """One worker of a search (what a submitit job calls)."""
    main(argv)


if __name__ == "__main__":
    cli.run(main)
