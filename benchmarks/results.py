"""Read the run directories that `benchmarks.train` writes: the one door through which reports see results.

A run lives in `<results_dir>/runs/<group>/<dataset>/<optimizer>/<run_id>/` with `config.yaml`,
`metrics.csv`, `summary.json` and `reconstructions.npz`. Only the local files are read (never
W&B), so every figure and table can be traced back to a run directory. One unreadable run never
stops a report: it is skipped with a warning.

Runs are grouped by configuration, not only by optimizer: `config_id` hashes the training config
without the seed, and `config_label` names what differs between the configurations of one
optimizer (e.g. 'Adam lr=0.0003'), so a sweep over learning rates is never pooled as if it were
seeds of one setting.
"""
from __future__ import annotations

import json
import math
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import yaml

from benchmarks.benchtable import ms_per_step
from benchmarks.optimizers import (default_style, family_of, label as optimizer_label, optimizer_info, optimizer_names)
from benchmarks.rundir import (BOOKKEEPING_DATASET_KEYS, BOOKKEEPING_KEYS, BOOKKEEPING_OPTIMIZER_KEYS, LATER_DEFAULTS,
                               atomic_write_json, atomic_write_text, config_hash, read_summary)
from benchmarks.tables import DASH, fmt, fmt_mean_std, markdown_table, rank_text, ranked
from benchmarks.workloads import WORKLOADS, Workload

WORKLOAD_ORDER = tuple(WORKLOADS)  # the paper's order, each stand-in beside its data set

HEALTHY = ("finished", "stopped")  # statuses whose numbers enter means and profiles
LOSS_COLUMNS = ("train_loss", "train_ce", "test_ce", "train_se", "test_se")
NUMERIC_METRICS = ("epoch", "lr") + LOSS_COLUMNS + ("wallclock_s", "epoch_time_s", "step_ms")
RUN_KEYS = ("group", "dataset", "optimizer", "config_id", "seed", "run_id")
# keys of older run configs that never changed the trained numbers
LEGACY_BOOKKEEPING = {"": ("warmup_steps",), "dataset": ("prune",)}

__all__ = ["HEALTHY", "WORKLOAD_ORDER", "bench_device", "bench_tables", "bench_ms_per_step", "varying_settings", "setting_name", "setting_text", "load_runs", "load_runs_or_explain", "run_record", "provenance", "write_json", "write_text",
           "read_summary", "workload_of", "mean_std", "load_reconstructions", "optimizer_label",
           "optimizer_info", "optimizer_names", "default_style", "family_of",
           "DASH", "fmt", "fmt_mean_std", "markdown_table", "rank_text", "ranked"]


def workload_of(dataset: str) -> Workload:
    """The workload record of a data set; for a name without a config (runs of an unknown data
    set), a generic one: its own label, cross-entropy, no stand-in."""
    return WORKLOADS.get(dataset) or Workload(name=dataset, label=dataset, sizes=(), loss_kind="bernoulli",
                                              image_shape=(0, 0), loader_path="")


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample std, n) of the finite values; NaN where undefined (no values; std of one)."""
    array = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(float)
    array = array[np.isfinite(array)]
    if not len(array):
        return math.nan, math.nan, 0
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else math.nan, len(array)


def bench_tables(results_dir: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(file name, table) of every speed-bench table under <results>/bench/ (see benchmarks.speed)."""
    return [(path.name, json.loads(path.read_text())) for path in sorted(Path(results_dir, "bench").glob("*.json"))]


def bench_device(source: str | Path | None) -> str | None:
    """The device a bench table (.json) was measured on ('Intel(R) Xeon(R) Processor (...) x1'), or
    None for a folder of tables."""
    path = Path(source) if source is not None else None
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text()).get("device")


def bench_ms_per_step(source: str | Path) -> dict[tuple[str, str, int], float]:
    """(architecture, optimizer, batch size) -> ms/step from one bench table (a .json file), or from
    every quiet table under <source>/bench/ (later files win). Tables measured on a busy machine
    are left out (a plan's choice of one table is benchmarks.benchtable.choose_table)."""
    source = Path(source)
    tables = [(source.name, json.loads(source.read_text()))] if source.is_file() else bench_tables(source)
    table: dict[tuple[str, str, int], float] = {}
    for _, data in tables:
        if not data.get("busy"):
            table.update(ms_per_step(data))
    return table


def write_text(path: str | Path, text: str) -> None:
    atomic_write_text(path, text)


def write_json(path: str | Path, data: Any) -> None:
    """Atomic JSON; inf becomes 'inf' and NaN null, as in summary.json."""
    atomic_write_json(path, data)


def _number(value: Any) -> Any:
    """summary.json stores inf as the string 'inf' and NaN as null (JSON has neither)."""
    if value is None:
        return math.nan
    if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", "-inf", "nan"):
        return float(value)
    return value


def _flatten(data: Any, prefix: str) -> dict[str, Any]:
    """Nested config -> {'cfg.optimizer.lr': ...}, lists kept as their string form."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}"))
        return out
    return {prefix: str(data) if isinstance(data, (list, tuple)) else data}


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's resolved Hydra config ({} when absent)."""
    path = Path(run_dir) / "config.yaml"
    config = yaml.safe_load(path.read_text()) if path.exists() else {}
    return config if isinstance(config, dict) else {"value": config}


def settings(config: dict[str, Any]) -> dict[str, Any]:
    """The training config without the seed and the bookkeeping keys: what one configuration is."""
    data = {k: v for k, v in config.items() if k not in (*BOOKKEEPING_KEYS, *LEGACY_BOOKKEEPING[""], "seed")
            and not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}
    for section, keys in (("dataset", (*BOOKKEEPING_DATASET_KEYS, *LEGACY_BOOKKEEPING["dataset"])),
                          ("optimizer", BOOKKEEPING_OPTIMIZER_KEYS)):
        if isinstance(data.get(section), dict):
            data[section] = {k: v for k, v in data[section].items() if k not in keys}
    return data


def _read_run(run_dir: Path, results_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """One run's summary row (summary + flattened config) and its metrics table."""
    summary = read_summary(run_dir)
    if not isinstance(summary, dict):
        raise ValueError("summary.json is not a JSON object")
    config = read_config(run_dir)
    group, dataset, optimizer = run_dir.parts[-4:-1]
    row = {key: _number(value) for key, value in summary.items()}
    row.update(_flatten(config, "cfg"))
    row.update(group=group, run_id=run_dir.name, run_dir=str(run_dir),
               run_path=run_dir.relative_to(results_dir).as_posix(), config_id=config_hash(settings(config)))
    for key, fallback in (("dataset", dataset), ("optimizer", optimizer), ("status", "unknown")):
        if not isinstance(row.get(key), str):
            row[key] = fallback
    seed = row.get("seed")
    if not isinstance(seed, (int, np.integer)):
        seed = config.get("seed", -1)
    row["seed"] = int(seed) if isinstance(seed, (int, float)) and math.isfinite(seed) else -1
    if row.get("primary_metric") not in ("train_ce", "train_se"):
        row["primary_metric"] = workload_of(row["dataset"]).primary_metric

    metrics = pd.read_csv(run_dir / "metrics.csv")
    missing = {"epoch", "wallclock_s"} - set(metrics.columns)
    if missing:
        raise ValueError(f"metrics.csv lacks columns {sorted(missing)}")
    for column in NUMERIC_METRICS:
        metrics[column] = pd.to_numeric(metrics[column], errors="coerce") if column in metrics else np.nan
    for key in RUN_KEYS + ("status", "run_dir"):
        metrics[key] = row[key]
    return row, metrics


def find_run_dirs(results_dir: str | Path, group: str | None = None) -> list[Path]:
    """Every `runs/<group>/<dataset>/<optimizer>/<run_id>` directory, sorted."""
    base = Path(results_dir) / "runs"
    pattern = f"{group if group is not None else '*'}/*/*/*"
    return sorted(p for p in base.glob(pattern) if p.is_dir())


def varying_settings(runs: pd.DataFrame) -> list[str]:
    """The config columns ('cfg.optimizer.lr', ...) whose values differ between the configurations of `runs`."""
    cfg_columns = [c for c in runs.columns if c.startswith("cfg.") and c != "cfg.seed"
                   and not any(c.startswith(f"cfg.{k}") for k in (*BOOKKEEPING_KEYS, "warmup_steps"))]
    firsts = runs.drop_duplicates("config_id")
    varying = [c for c in cfg_columns if firsts[c].astype(str).nunique() > 1]
    # a sub-config chosen by name (e.g. the inner optimizer) is named by its name, not its settings
    named = {c.rsplit(".", 1)[0] for c in varying if c.endswith(".name")}
    return [c for c in varying if c.endswith(".name") or not any(c.startswith(p + ".") for p in named)]


def setting_text(value: Any) -> str:
    return _short(value)


def setting_name(column: str) -> str:
    """'cfg.optimizer.lr' -> 'lr'; 'cfg.optimizer.inner_optimizer.name' -> 'inner_optimizer'."""
    parts = column.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 2 else parts[-1]


def _config_labels(runs: pd.DataFrame) -> pd.Series:
    """Per run: the optimizer's label, plus the settings that differ between its configurations."""
    labels = pd.Series(index=runs.index, dtype=object)
    for (_, optimizer), own in runs.groupby(["dataset", "optimizer"]):
        base = optimizer_label(optimizer)
        varying = varying_settings(own)
        for index, run in own.iterrows():
            parts = [f"{setting_name(c)}={_short(run[c])}" for c in varying]
            labels[index] = " ".join([base, *parts])
    return labels


def _natural_key(label: str) -> tuple:
    """'Adam lr=0.0003' before 'Adam lr=0.001': numbers compare as numbers."""
    parts = []
    for token in re.split(r"([-+]?\d*\.?\d+(?:e[-+]?\d+)?)", label):
        try:
            parts.append((0, float(token), ""))
        except ValueError:
            parts.append((1, 0.0, token))
    return tuple(parts)


def _short(value: Any) -> str:
    """A setting's value for a label: 3 significant digits; an unset (null) value is 'none'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.3g}"
    return str(value)


def load_runs(results_dir: str | Path, group: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs_df, metrics_df): one row per run, and all metrics rows tagged with the run's keys.

    Directories without summary.json or metrics.csv (runs still going, or never started) are
    skipped quietly; unreadable ones are skipped with a warning.
    """
    rows, tables = [], []
    for run_dir in find_run_dirs(results_dir, group):
        if not (run_dir / "summary.json").is_file() or not (run_dir / "metrics.csv").is_file():
            continue
        try:
            row, metrics = _read_run(run_dir, Path(results_dir))
        except Exception as err:  # noqa: BLE001 - one bad run must not stop the report
            warnings.warn(f"skipping unreadable run {run_dir}: {type(err).__name__}: {err}")
            continue
        rows.append(row)
        tables.append(metrics)
    if not rows:
        empty = list(RUN_KEYS) + ["status", "run_dir", "config_label"]
        return pd.DataFrame(columns=empty), pd.DataFrame(columns=empty)
    runs = pd.DataFrame(rows)
    for column in runs.columns:
        if column.startswith(("final_", "best_")) or column in ("wallclock_s", "step_ms_median", "epochs_completed"):
            runs[column] = pd.to_numeric(runs[column], errors="coerce")
    runs["config_label"] = _config_labels(runs)
    runs["_order"] = runs["config_label"].map(_natural_key)
    runs = runs.sort_values(["group", "dataset", "optimizer", "_order", "config_id", "seed", "run_id"])
    runs = runs.drop(columns="_order").reset_index(drop=True)
    metrics = pd.concat(tables, ignore_index=True)
    metrics = metrics.merge(runs[["run_dir", "config_label"]], on="run_dir", how="left")
    return runs, metrics


def load_runs_or_explain(results_dir: str | Path, group: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """`load_runs`, or None after telling the user on stderr why there is nothing to draw."""
    runs, metrics = load_runs(results_dir, group)
    if runs.empty:
        print(f"no runs found in {Path(results_dir) / 'runs' / group} (a run needs summary.json and "
              f"metrics.csv); train some with `python -m benchmarks.train group={group}`", file=sys.stderr)
        return None
    return runs, metrics


def load_reconstructions(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(inputs, outputs, (h, w)) of a run's reconstructions.npz, checked for consistent shapes."""
    with np.load(Path(run_dir) / "reconstructions.npz") as npz:
        inputs, outputs, shape = npz["inputs"], npz["outputs"], tuple(int(s) for s in npz["image_shape"])
    if len(shape) != 2 or inputs.ndim != 2 or outputs.shape != inputs.shape or inputs.shape[1] != shape[0] * shape[1]:
        raise ValueError(f"inconsistent shapes: inputs {inputs.shape}, outputs {outputs.shape}, image {shape}")
    return inputs, outputs, shape


def run_record(runs: pd.DataFrame) -> dict[str, Any]:
    """run path (relative to the results folder) -> status, seed, configuration and the resolved config."""
    return {row["run_path"]: {"dataset": row["dataset"], "optimizer": row["optimizer"], "seed": row["seed"],
                              "config_id": row["config_id"], "config_label": row["config_label"],
                              "status": row["status"], "device": row.get("device"),
                              "git_commit": row.get("git_commit"), "config": read_config(row["run_dir"])}
            for _, row in runs.iterrows()}


def run_devices(runs: pd.DataFrame) -> list[str]:
    """The distinct devices of the runs, a CPU with its model where the run recorded it
    ('cpu (1 threads) on Intel(R) Xeon(R) Processor'): two CPUs' seconds are not comparable."""
    devices = set()
    for device, model in zip(runs.get("device", pd.Series([None] * len(runs), dtype=object)),
                             runs.get("cpu_model", pd.Series([None] * len(runs), dtype=object))):
        if isinstance(device, str):
            devices.add(f"{device} on {model}" if device.startswith("cpu") and isinstance(model, str) else device)
    return sorted(devices)


def provenance(runs: pd.DataFrame | None = None) -> dict[str, Any]:
    """Where the numbers come from, read off the runs themselves: their commits, machines and torch
    versions. Nothing about the drawing (time, host, current commit), so a report regenerated from
    the same runs is identical."""
    info: dict[str, Any] = {"n_runs": 0 if runs is None else int(len(runs))}
    if runs is not None and len(runs):
        info["devices"] = run_devices(runs)
        info["run_git_commits"] = sorted({str(c) for c in runs.get("git_commit", pd.Series(dtype=object)).dropna()})
        info["run_torch_versions"] = sorted({str(v) for v in runs.get("torch", pd.Series(dtype=object)).dropna()})
    return info
