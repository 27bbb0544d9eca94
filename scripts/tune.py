"""Run one optimizer's hyper-parameter search and export the best config to results/tuned/.

    python -m scripts.tune --dataset mnist --optimizer adam --trials 20 -- stop_epoch=10

runs `python -m benchmarks.train -m +sweep=<optimizer> dataset=<dataset> ...` (Hydra's Optuna
sweeper, TPE, seeded; hopeless trials end early by the dataset's pruning thresholds), then
writes `results/tuned/<dataset>/<optimizer>.yaml`, a config the runner loads with
`tuned=<dataset>/<optimizer>`. The file records where its values come from: the search space,
the trial budget, the epochs, the data, the device, the best objective and the commit, so a
tuned value is never mistaken for a guess.
"""
from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
from pathlib import Path

import yaml

from benchmarks.config import CONFIG_DIR
from benchmarks.tracking import atomic_write_text

TUNED_DIR = Path("results/tuned")


def tuned_yaml(dataset: str, optimizer: str, values: dict, source: dict) -> str:
    """The text of a tuned config: a global-package Hydra config selecting dataset and optimizer."""
    body = {"defaults": [{"override /dataset": dataset}, {"override /optimizer": optimizer}]}
    nested: dict = {}
    for dotted, value in values.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    body.update(nested)
    body["tuned_source"] = source
    header = (f"# @package _global_\n# Tuned config for {optimizer} on {dataset}: "
              f"python -m benchmarks.train tuned={dataset}/{optimizer}\n")
    return header + yaml.safe_dump(body, sort_keys=False)


def search_space(optimizer: str) -> dict:
    cfg = yaml.safe_load((CONFIG_DIR / "sweep" / f"{optimizer}.yaml").read_text())
    return cfg["hydra"]["sweeper"]["params"]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--optimizer", required=True)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--results", default="results")
    parser.add_argument("--tuned-dir", default=str(TUNED_DIR))
    parser.add_argument("--export-as", default=None, help="dataset the tuned config is for, when the search ran "
                        "on a stand-in (e.g. search curves_synth, export as curves); recorded in the provenance")
    parser.add_argument("--note", default="", help="free text stored in the provenance (e.g. data subset, machine)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every trial (after --)")
    args = parser.parse_args(argv)
    if not (CONFIG_DIR / "sweep" / f"{args.optimizer}.yaml").exists():
        raise SystemExit(f"no search space configs/sweep/{args.optimizer}.yaml")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    sweep_dir = Path(args.results) / "tuning" / args.dataset / args.optimizer / stamp
    cmd = [sys.executable, "-m", "benchmarks.train", "-m", f"+sweep={args.optimizer}", f"dataset={args.dataset}",
           f"hydra.sweeper.n_trials={args.trials}", f"results_dir={args.results}", f"hydra.sweep.dir={sweep_dir}",
           f"group=tune-{stamp}", *args.overrides]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    from benchmarks.config import compose_config
    from benchmarks.train import device_name, git_commit, resolve_device

    trial_cfg = compose_config([f"+sweep={args.optimizer}", f"dataset={args.dataset}", *args.overrides])
    source = {"kind": "search",
              "search_space": search_space(args.optimizer),
              "budget_trials": args.trials,
              "sampler": "optuna TPE (seed 0)",
              "epochs_per_trial": trial_cfg.stop_epoch if trial_cfg.stop_epoch is not None else trial_cfg.epochs,
              "schedule": f"{trial_cfg.schedule.name} over {trial_cfg.epochs} epochs, "
                          f"{trial_cfg.schedule.warmup_epochs} warm-up",
              "data": f"{args.dataset} n_train={trial_cfg.dataset.n_train}",
              "trial_overrides": list(args.overrides),
              "objective": "best train loss (primary metric) within the trial",
              "best_value": float(result["best_value"]),
              "device": device_name(resolve_device("auto")),
              "date": stamp, "commit": git_commit() or "unknown", "sweep_dir": str(sweep_dir), "note": args.note}
    target = args.export_as or args.dataset
    if target != args.dataset:
        source["data"] += f" (searched on this stand-in, exported for {target})"
    path = Path(args.tuned_dir) / target / f"{args.optimizer}.yaml"
    atomic_write_text(path, tuned_yaml(target, args.optimizer, result["best_params"], source))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
