"""`make demo`: a few-minute, offline, CPU-only run that ends with figures on disk.

Trains the CURVES autoencoder on generated CURVES-like data with Adam and RMSProp for a few
epochs through the real runner, then draws the figures and the summary table from the run
tables, and prints their paths.
"""
from __future__ import annotations

import argparse
import time

from benchmarks.config import compose_config
from benchmarks.train import train
from scripts import figures, summary as summary_script

DEMO_OPTIMIZERS = {"adam": ["optimizer.lr=1e-3"], "rmsprop": ["optimizer.lr=3e-4"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", default="results/demo")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    for name, extra in DEMO_OPTIMIZERS.items():
        cfg = compose_config(["dataset=curves_synth", f"optimizer={name}", "logger=disabled", "group=demo",
                              f"results_dir={args.results}", f"epochs={args.epochs}", "schedule=constant",
                              "dataset.n_train=5000", "dataset.n_test=1000", "batch_size=250", *extra])
        summary = train(cfg)
        print(f"{name}: status {summary['status']}, final train CE {summary['final_train_ce']:.2f}")
    figures.main(["--results", args.results, "--group", "demo", "--out", f"{args.results}/figures"])
    summary_script.main(["--results", args.results, "--group", "demo", "--out", args.results])
    print(f"demo finished in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
