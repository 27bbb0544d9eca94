"""`make demo`: what the project is about in a few minutes on a CPU, offline.

    python -m scripts.demo [--results results/demo]

Trains the CURVES autoencoder (12 layers, 6-unit code) on 2,000 generated CURVES-like images with
LocoProp-M (the official settings), K-FAC and RMSProp with momentum (the LocoProp paper's main
first-order baseline; lr 1e-3, alpha 0.9, momentum 0.9, the best of a small search at this very
setting), 30 epochs of the official schedule each, batch 100, through the real runner. Then it draws
the figures (loss against epochs and seconds, test reconstructions), writes the summary table and
prints it. All three leave the mean-image plateau (cross-entropy ~136) far behind; the figures show
which gets there in fewer epochs and which in fewer seconds. Before it starts, the demo prints its
expected training time, priced from the quiet bench table of this CPU and thread count (or says
that none prices it); at the end it prints the time it took. Its seconds are this machine's, as
loaded as it was, and each optimizer is one seed: summary.md says so under the table.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from benchmarks import cli
from benchmarks.benchtable import format_duration
from benchmarks.rundir import atomic_write_text, cpu_model, load_average
from benchmarks.reporting import figures, summary
from benchmarks.orchestration.plan import InProcess, Plan, PlannedRun

SETTING = ["dataset=curves_synth", "dataset.n_train=2000", "dataset.n_test=500", "batch_size=100", "epochs=30",
           "logger=disabled", "group=demo"]
OPTIMIZERS = {"locoprop_m": [], "kfac": [],
              "rmsprop": ["optimizer.lr=1e-3", "optimizer.alpha=0.9", "optimizer.momentum=0.9"]}


def machine() -> str:
    return f"{cpu_model()}, {torch.get_num_threads()} threads"


def load_text() -> str:
    load = load_average()
    return f"{load[0]:.2f}" if load else "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results/demo")
    parser.add_argument("--dry-run", action="store_true", help="list the runs, their state and cost; run nothing")
    args = parser.parse_args(argv)
    plan = Plan([PlannedRun([*SETTING, f"optimizer={name}", f"results_dir={args.results}", *extra], name)
                 for name, extra in OPTIMIZERS.items()], "the demo")
    if args.dry_run:
        text, status = plan.describe(args.results)
        print(text)
        return status
    print(plan.summary(args.results), flush=True)
    start = time.perf_counter()
    for name, status in InProcess().run(plan).items():
        print(f"{name}: {status}")
    figures.draw_group(args.results, "demo", f"{args.results}/figures")
    for path in summary.summarize_group(args.results, "demo", args.results) or []:
        print(path)
    note = (f"\nTime columns and the figures' time panels are seconds measured on this machine ({machine()}, "
            f"load average {load_text()} at the end), possibly loaded by other work; each optimizer is a single seed.\n")
    summary_md = Path(args.results) / "summary.md"
    if summary_md.exists():
        atomic_write_text(summary_md, summary_md.read_text() + note)
    table = pd.read_csv(f"{args.results}/summary.csv")
    table = table[["configuration", "final_train_ce_mean", "final_test_ce_mean", "step_ms_median",
                   "wallclock_s_total"]].rename(columns={
                       "final_train_ce_mean": "train CE", "final_test_ce_mean": "test CE",
                       "step_ms_median": "ms/step", "wallclock_s_total": "train s"})
    print("\n" + table.round(1).to_string(index=False))
    print(note + f"\nfigures in {args.results}/figures (e.g. curves_synth_reconstructions.png); "
          f"demo finished in {format_duration(time.perf_counter() - start)} (measured)")
    return 0


if __name__ == "__main__":
    cli.run(main)
