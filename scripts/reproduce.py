"""`make reproduce`: the paper's comparison with the shipped tuned configs, then figures and tables.

    python -m scripts.reproduce [seeds=3] [dataset=mnist,faces,curves] [optimizer=adam,locoprop_m]
                                [dry_run=true] [any Hydra override, e.g. epochs=2 device=cuda]

For every dataset x optimizer x seed it trains `tuned=<dataset>/<optimizer>` (for a synthetic
stand-in such as curves_synth, the tuned config of its real counterpart) in group
`reproduce`. Finished runs are skipped and interrupted ones resume from their last epoch
checkpoint, so re-running the command continues where it stopped. `dry_run=true` lists what
would run and an estimate of its cost from the speed bench's table (results/bench/*.json).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from benchmarks.config import compose_config
from benchmarks.train import FINAL_STATUSES, run_dir_for, train

PAPER_DATASETS = ("mnist", "faces", "curves")
PAPER_OPTIMIZERS = ("sgd", "nesterov", "adagrad", "rmsprop", "adam", "shampoo", "kfac", "locoprop_s", "locoprop_m")
TRAIN_SIZES = {"mnist": 60_000, "faces": 103_500, "curves": 20_000}
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


def tuned_name(dataset: str, optimizer: str, tuned_dir: Path = Path("results/tuned")) -> str | None:
    """The tuned config for this pair (a synthetic set borrows its real counterpart's), or None."""
    for candidate in (dataset, dataset.split("_")[0]):
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
    summary = run_dir / "summary.json"
    if summary.exists() and json.loads(summary.read_text()).get("status") in FINAL_STATUSES:
        return "done"
    return "resume" if (run_dir / "checkpoint.pt").exists() else "new"


def estimate_seconds(cfg, bench_rows) -> float | None:
    """Training seconds from the speed bench's ms/step for this architecture and optimizer."""
    arch = cfg.dataset.name.split("_")[0]
    ms = next((r.get("ms_per_step") for r in bench_rows
               if r.get("dataset") == arch and r.get("optimizer") == cfg.optimizer.name and r.get("batch_size") == cfg.batch_size
               and r.get("width_multiplier", 1) == cfg.model.width_multiplier), None)
    if ms is None:
        return None
    n_train = cfg.dataset.n_train or TRAIN_SIZES.get(arch, 0)
    epochs = cfg.epochs - (1 if cfg.schedule.skip_final_epoch else 0)
    if cfg.stop_epoch is not None:
        epochs = min(epochs, cfg.stop_epoch)
    return ms / 1e3 * (n_train // cfg.batch_size) * epochs


def load_bench_rows(results_dir: str) -> list[dict]:
    rows = []
    for path in sorted(Path(results_dir, "bench").glob("*.json")):
        rows += json.loads(path.read_text()).get("rows", [])
    return rows


def main(argv: list[str] | None = None) -> int:
    special, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    datasets = special.get("dataset", ",".join(PAPER_DATASETS)).split(",")
    optimizers = special.get("optimizer", ",".join(PAPER_OPTIMIZERS)).split(",")
    seeds = int(special.get("seeds", 3))
    results_dir = special.get("results", "results")
    group = special.get("group", "reproduce")
    dry_run = special.get("dry_run", "false").lower() in ("1", "true", "yes")
    runs = plan(datasets, optimizers, seeds, overrides, results_dir, group)

    if dry_run:
        bench = load_bench_rows(results_dir)
        total, unknown = 0.0, 0
        print(f"{'dataset':>12} {'optimizer':>12} seed  state   tuned config          est. train time")
        for cfg, tuned in runs:
            seconds = estimate_seconds(cfg, bench)
            state = run_state(cfg)
            if state != "done":
                total += seconds or 0.0
                unknown += seconds is None
            est = f"{seconds / 60:.1f} min" if seconds is not None else "unknown (run make bench)"
            print(f"{cfg.dataset.name:>12} {cfg.optimizer.name:>12} {cfg.seed:>4}  {state:<7} {tuned or 'untuned defaults':<21} {est}")
        print(f"{len(runs)} runs; estimated training time of the runs still to do: {total / 3600:.2f} h"
              + (f" (+{unknown} runs without a bench figure)" if unknown else "")
              + "; evaluation adds roughly 10-30%")
        return 0

    start = time.perf_counter()
    statuses = {}
    for cfg, tuned in runs:
        if tuned is None:
            print(f"[warn] no tuned config for {cfg.dataset.name}/{cfg.optimizer.name}: using the optimizer's defaults")
        summary = train(cfg)
        statuses[summary["status"]] = statuses.get(summary["status"], 0) + 1
    print(f"runs: {statuses}; {time.perf_counter() - start:.0f} s")
    from scripts import figures, summary as summary_script

    figures.main(["--results", results_dir, "--group", group, "--out", f"{results_dir}/figures/{group}"])
    summary_script.main(["--results", results_dir, "--group", group, "--out", f"{results_dir}"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
