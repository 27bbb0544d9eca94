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


from omegaconf import OmegaConf

from benchmarks.config import compose_config
from benchmarks.fast import graph_safe
from benchmarks.models import build_autoencoder
from benchmarks.optimizers import make_optimizer
from benchmarks.tuning.tuned import tuned_name, tuned_note
from benchmarks.workloads import paper_datasets
from benchmarks.orchestration.plan import Plan, PlannedRun

PAPER_DATASETS = tuple(paper_datasets())  # mnist, faces, curves
LEGACY_KEYS = {"seeds": "--seeds", "dataset": "--dataset", "optimizer": "--optimizer", "dry_run": "--dry-run",
               "results": "--results", "group": "--group"}


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
