"""A small, hand-checkable results tree, written with the runner's own file writers.

Two datasets (curves_synth: cross-entropy; faces_synth: 'gaussian', squared error only), three
optimizers, two seeds, epochs 0..4. One run (faces_synth/sgd seed 1) diverges at epoch 2: its
train loss is NaN, its train_se inf, its test_se NaN. Training takes `SECONDS_PER_EPOCH[opt] *
(1 + 0.5 * seed)` seconds per epoch over `STEPS_PER_EPOCH` steps.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks.rundir import atomic_write_json, atomic_write_text
from benchmarks.tracking import metrics_csv_text

GROUP = "default"
STEPS_PER_EPOCH = 10
SECONDS_PER_EPOCH = {"adam": 1.0, "sgd": 0.5, "locoprop_m": 3.0}
INF, NAN = math.inf, math.nan

# dataset -> optimizer -> seed -> primary train loss at epochs 0..n
CURVES = {
    "curves_synth": {
        "adam": {0: [100, 50, 30, 20, 10], 1: [100, 60, 40, 24, 12]},
        "sgd": {0: [100, 90, 80, 70, 60], 1: [100, 80, 70, 60, 50]},
        "locoprop_m": {0: [100, 20, 12, 10, 9], 1: [100, 22, 14, 11, 10]},
    },
    "faces_synth": {
        "adam": {0: [80, 40, 30, 25, 20], 1: [80, 42, 32, 26, 22]},
        "sgd": {0: [80, 60, 45, 30, 25], 1: [80, 45, INF]},  # diverges at epoch 2
        "locoprop_m": {0: [80, 30, 20, 16, 15], 1: [80, 32, 22, 18, 17]},
    },
}
GAUSSIAN = {"faces_synth"}
IMAGE_SHAPE = {"curves_synth": (28, 28), "faces_synth": (25, 25)}


def _rows(dataset: str, optimizer: str, seed: int, losses: list[float]) -> list[dict]:
    """metrics.csv rows: test = train + 5 (CE) or + 10 (SE); CE datasets also get SE = CE / 10."""
    epoch_time = SECONDS_PER_EPOCH.get(optimizer, 1.0) * (1 + 0.5 * seed)
    rows = []
    for epoch, loss in enumerate(losses):
        row = {"epoch": epoch, "lr": 0.01 if epoch else 0.0, "train_loss": loss if epoch else NAN,
               "wallclock_s": epoch * epoch_time, "epoch_time_s": epoch_time if epoch else 0.0,
               "step_ms": 1e3 * epoch_time / STEPS_PER_EPOCH if epoch else None}
        if dataset in GAUSSIAN:
            row.update(train_ce=None, test_ce=None, train_se=loss,
                       test_se=NAN if not math.isfinite(loss) else loss + 10)
            row["train_loss"] = NAN if not math.isfinite(loss) else row["train_loss"]
        else:
            row.update(train_ce=loss, test_ce=loss + 5, train_se=loss / 10, test_se=(loss + 5) / 10)
        rows.append(row)
    return rows


def _summary(rows: list[dict], status: str, primary: str, extra: dict) -> dict:
    """The fields benchmarks.train writes, computed the same way (last non-NaN value, best finite)."""
    summary = {"status": status, "reason": "non-finite train loss at epoch 2" if status == "diverged" else None,
               "primary_metric": primary, "epochs_completed": rows[-1]["epoch"],
               "wallclock_s": rows[-1]["wallclock_s"],
               "step_ms_median": float(np.median([r["step_ms"] for r in rows[1:]]))}
    for key in ("train_ce", "test_ce", "train_se", "test_se"):
        values = [r[key] for r in rows if r[key] is not None and not math.isnan(r[key])]
        summary[f"final_{key}"] = values[-1] if values else None
        finite = [v for v in values if math.isfinite(v)]
        summary[f"best_{key}"] = min(finite) if finite else None
    summary.update(extra)
    return summary


def write_run(results: Path, dataset: str, optimizer: str, seed: int, losses: list[float], lr: float = 0.01) -> Path:
    tag = "0000abcd" if lr == 0.01 else f"{abs(hash(lr)) % 16**8:08x}"
    run_dir = results / "runs" / GROUP / dataset / optimizer / f"seed{seed}-{tag}"
    rows = _rows(dataset, optimizer, seed, losses)
    status = "finished" if all(math.isfinite(v) for v in losses) else "diverged"
    primary = "train_se" if dataset in GAUSSIAN else "train_ce"
    config = (f"seed: {seed}\nepochs: 4\nbatch_size: 100\ngroup: {GROUP}\ndataset:\n  name: {dataset}\n"
              f"optimizer:\n  name: {optimizer}\n  lr: {lr}\n  betas: [0.9, 0.999]\n")
    atomic_write_text(run_dir / "config.yaml", config)
    atomic_write_text(run_dir / "metrics.csv", metrics_csv_text(rows))
    atomic_write_json(run_dir / "summary.json", _summary(rows, status, primary, {
        "run_dir": str(run_dir), "device": "cpu (2 threads)", "dataset": dataset, "optimizer": optimizer,
        "seed": seed, "steps_per_epoch": STEPS_PER_EPOCH, "torch": "2.x", "git_commit": "f" * 40}))
    rng = np.random.default_rng(len(dataset))  # same test images for every run of a dataset
    dim = IMAGE_SHAPE[dataset][0] * IMAGE_SHAPE[dataset][1]
    inputs = rng.normal(size=(10, dim)) if dataset in GAUSSIAN else rng.random((10, dim))
    outputs = inputs + 0.1 * rng.normal(size=inputs.shape)
    if status == "diverged":
        outputs[:] = np.nan
    np.savez_compressed(run_dir / "reconstructions.npz", inputs=inputs.astype(np.float32),
                        outputs=outputs.astype(np.float32), image_shape=np.array(IMAGE_SHAPE[dataset]))
    return run_dir


def make_results(results: Path, broken: bool = False) -> Path:
    """Write the whole fixture tree under `results`; `broken` adds an unreadable and an unfinished run."""
    for dataset, by_optimizer in CURVES.items():
        for optimizer, by_seed in by_optimizer.items():
            for seed, losses in by_seed.items():
                write_run(results, dataset, optimizer, seed, losses)
    if broken:
        bad = results / "runs" / GROUP / "curves_synth" / "adam" / "seed7-deadbeef"
        bad.mkdir(parents=True)
        (bad / "summary.json").write_text("{not json")
        (bad / "metrics.csv").write_text("epoch,train_ce\n0,1\n")
        running = results / "runs" / GROUP / "faces_synth" / "adam" / "seed8-cafef00d"
        running.mkdir(parents=True)
        (running / "config.yaml").write_text("seed: 8\n")  # still training: no summary.json yet
    return results
