"""`make reproduce`: the paper's comparison with the shipped tuned configs, then figures and tables.

    python -m scripts.reproduce [seeds=3] [dataset=mnist,faces,curves] [optimizer=adam,locoprop_m]
                                [dry_run=true] [any Hydra override, e.g. epochs=2 device=cuda]

For every dataset x optimizer x seed it trains `tuned=<dataset>/<optimizer>` (for a synthetic
stand-in such as curves_synth, the tuned config of its real counterpart) in group `reproduce`.
Finished runs are skipped and interrupted ones resume from their last epoch checkpoint, so
re-running the command continues where it stopped. A run that cannot start (a missing data file)
or fails does not stop the others: the failures are listed at the end, the figures and tables are
drawn from what finished, and the exit status is 1. `dry_run=true` lists what would run, checks
that each data set's files are there, and estimates the cost from the speed bench's table.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmarks.config import TUNED_DIR, compose_config
from benchmarks.optimizers import paper_optimizers
from benchmarks.results import bench_tables, read_summary
from benchmarks.rundir import FINAL_STATUSES, run_dir_for
from benchmarks.train import train
from benchmarks.workloads import get_workload, load_dataset, paper_datasets
from scripts import figures, summary as summary_script

PAPER_DATASETS = tuple(paper_datasets())  # mnist, faces, curves
SPECIAL_KEYS = ("seeds", "dataset", "optimizer", "dry_run", "results", "group")


def parse_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    special, overrides = {}, []
    for token in argv:
        key, sep, value = token.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {token!r}")
        if key in SPECIAL_KEYS:
            special[key] = value
        else:
            overrides.append(token)
    return special, overrides


def tuned_name(dataset: str, optimizer: str, tuned_dir: Path = TUNED_DIR) -> str | None:
    """The tuned config for this pair (a synthetic set borrows its real counterpart's), or None."""
    for candidate in (dataset, get_workload(dataset).architecture):
        if (tuned_dir / candidate / f"{optimizer}.yaml").exists():
            return f"{candidate}/{optimizer}"
    return None


def plan(datasets, optimizers, seeds, overrides, results_dir, group):
    runs = []
    for dataset in datasets:
        for optimizer in optimizers:
            tuned = tuned_name(dataset, optimizer)
            base = [f"tuned={tuned}"] if tuned else [f"optimizer={optimizer}"]
            for seed in range(seeds):
                cfg = compose_config([*base, f"dataset={dataset}", f"seed={seed}", f"group={group}",
                                      f"results_dir={results_dir}", *overrides])
                runs.append((cfg, tuned))
    return runs


def run_state(cfg) -> str:
    run_dir = run_dir_for(cfg)
    if (read_summary(run_dir) or {}).get("status") in FINAL_STATUSES:
        return "done"
    return "resume" if (run_dir / "checkpoint.pt").exists() else "new"


def estimate_seconds(cfg, bench_rows) -> float | None:
    """Training seconds from the speed bench's ms/step for this architecture and optimizer."""
    workload = get_workload(cfg.dataset.name)
    ms = next((r.get("ms_per_step") for r in bench_rows
               if r.get("dataset") == workload.architecture and r.get("optimizer") == cfg.optimizer.name
               and r.get("batch_size") == cfg.batch_size
               and r.get("width_multiplier", 1) == cfg.model.width_multiplier), None)
    if ms is None:
        return None
    n_train = cfg.dataset.n_train or workload.n_train
    epochs = cfg.epochs - (1 if cfg.schedule.skip_final_epoch else 0)
    if cfg.stop_epoch is not None:
        epochs = min(epochs, cfg.stop_epoch)
    return ms / 1e3 * (n_train // cfg.batch_size) * epochs


def load_bench(results_dir: str) -> tuple[list[dict], list[str]]:
    """The speed bench rows of every table under <results>/bench/, and the tables' file names."""
    rows, names = [], []
    for name, table in bench_tables(results_dir):
        rows += table.get("rows", [])
        names.append(name + (" (measured on a busy machine)" if table.get("busy") else ""))
    return rows, names


def data_problem(cfg) -> str | None:
    """Why this run's data set cannot be loaded (files missing or corrupt), or None."""
    try:
        load_dataset(cfg.dataset.name, root=cfg.dataset.root, n_train=0, n_test=0)
    except Exception as err:  # noqa: BLE001 - reported, not raised
        return f"{type(err).__name__}: {err}"
    return None


def dry_run(runs, results_dir: str) -> int:
    bench, tables = load_bench(results_dir)
    print(f"cost estimates from: {', '.join(tables) or 'no bench table (run make bench)'}")
    problems = {}
    for dataset in dict.fromkeys(cfg.dataset.name for cfg, _ in runs):
        cfg = next(c for c, _ in runs if c.dataset.name == dataset)
        problems[dataset] = data_problem(cfg)
        print(f"data {dataset}: {'ok' if problems[dataset] is None else 'MISSING - ' + problems[dataset]}")
    total, unknown = 0.0, 0
    print(f"{'dataset':>12} {'optimizer':>12} seed  state   tuned config          est. train time")
    for cfg, tuned in runs:
        seconds = estimate_seconds(cfg, bench)
        state = "no data" if problems[cfg.dataset.name] else run_state(cfg)
        if state not in ("done", "no data"):
            total += seconds or 0.0
            unknown += seconds is None
        est = f"{seconds / 60:.1f} min" if seconds is not None else "unknown (run make bench)"
        print(f"{cfg.dataset.name:>12} {cfg.optimizer.name:>12} {cfg.seed:>4}  {state:<7} "
              f"{tuned or 'untuned defaults':<21} {est}")
    print(f"{len(runs)} runs; estimated training time of the runs still to do: {total / 3600:.2f} h"
          + (f" (+{unknown} runs without a bench figure)" if unknown else "") + "; evaluation adds roughly 10-30%")
    return 1 if any(problems.values()) else 0


def main(argv: list[str] | None = None) -> int:
    special, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    datasets = special.get("dataset", ",".join(PAPER_DATASETS)).split(",")
    optimizers = special.get("optimizer", ",".join(paper_optimizers())).split(",")
    seeds = int(special.get("seeds", 3))
    results_dir = special.get("results", "results")
    group = special.get("group", "reproduce")
    runs = plan(datasets, optimizers, seeds, overrides, results_dir, group)
    if special.get("dry_run", "false").lower() in ("1", "true", "yes"):
        return dry_run(runs, results_dir)

    start = time.perf_counter()
    statuses, failures = {}, []
    for cfg, tuned in runs:
        label = f"{cfg.dataset.name}/{cfg.optimizer.name} seed {cfg.seed}"
        if tuned is None:
            print(f"[warn] no tuned config for {cfg.dataset.name}/{cfg.optimizer.name}: using the optimizer's defaults")
        try:
            status, reason = (lambda s: (s["status"], s.get("reason")))(train(cfg))
        except Exception as err:  # noqa: BLE001 - one run that cannot start must not stop the others
            status, reason = "failed", f"{type(err).__name__}: {err}"
        statuses[status] = statuses.get(status, 0) + 1
        if status == "failed":
            failures.append(f"{label}: {reason}")
    print(f"runs: {statuses}; {time.perf_counter() - start:.0f} s")
    out = Path(results_dir)
    if figures.main(["--results", results_dir, "--group", group, "--out", str(out / "figures" / group)]) == 0:
        summary_script.main(["--results", results_dir, "--group", group, "--out", str(out / "summaries" / group)])
    if failures:
        print(f"{len(failures)} run(s) failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
