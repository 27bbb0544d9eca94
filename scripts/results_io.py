"""Read the run directories that `benchmarks.train` writes, for the figures and tables.

A run lives in `<results_dir>/runs/<group>/<dataset>/<optimizer>/<run_id>/` with `config.yaml`,
`metrics.csv`, `summary.json` and `reconstructions.npz`. Only the local files are read (never
W&B), so every figure and table can be traced back to a run directory. One unreadable run
must never stop a report: it is skipped with a warning.
"""
from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import socket
import subprocess
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from benchmarks.tracking import _json_safe, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
GAUSSIAN_DATASETS = ("faces", "faces_synth")  # linear output, squared error: no cross-entropy
HEALTHY = ("finished", "stopped")  # statuses whose numbers enter means and profiles
LOSS_COLUMNS = ("train_loss", "train_ce", "test_ce", "train_se", "test_se")
NUMERIC_METRICS = ("epoch", "lr") + LOSS_COLUMNS + ("wallclock_s", "epoch_time_s", "step_ms")
RUN_KEYS = ("group", "dataset", "optimizer", "seed", "run_id")


def primary_metric(dataset: str) -> str:
    """The training loss the paper plots: cross-entropy, or squared error for FACES."""
    return "train_se" if dataset in GAUSSIAN_DATASETS else "train_ce"


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


def _read_run(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """One run's summary row (summary + flattened config) and its metrics table."""
    summary = json.loads((run_dir / "summary.json").read_text())
    if not isinstance(summary, dict):
        raise ValueError("summary.json is not a JSON object")
    config_path = run_dir / "config.yaml"
    config = read_config(run_dir)
    group, dataset, optimizer = run_dir.parts[-4:-1]
    row = {key: _number(value) for key, value in summary.items()}
    row.update(_flatten(config, "cfg"))
    row.update(group=group, run_id=run_dir.name, run_dir=str(run_dir),
               config_path=str(config_path) if config_path.exists() else None)
    for key, fallback in (("dataset", dataset), ("optimizer", optimizer), ("status", "unknown")):
        if not isinstance(row.get(key), str):
            row[key] = fallback
    seed = row.get("seed")
    if not isinstance(seed, (int, np.integer)):
        seed = config.get("seed", -1)
    row["seed"] = int(seed) if isinstance(seed, (int, float)) and math.isfinite(seed) else -1
    if row.get("primary_metric") not in ("train_ce", "train_se"):
        row["primary_metric"] = primary_metric(row["dataset"])

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
            row, metrics = _read_run(run_dir)
        except Exception as err:  # noqa: BLE001 - one bad run must not stop the report
            warnings.warn(f"skipping unreadable run {run_dir}: {type(err).__name__}: {err}")
            continue
        rows.append(row)
        tables.append(metrics)
    if not rows:
        return pd.DataFrame(columns=list(RUN_KEYS) + ["status", "run_dir"]), pd.DataFrame(columns=list(RUN_KEYS))
    runs = pd.DataFrame(rows)
    for column in runs.columns:
        if column.startswith(("final_", "best_")) or column in ("wallclock_s", "step_ms_median", "epochs_completed"):
            runs[column] = pd.to_numeric(runs[column], errors="coerce")
    runs = runs.sort_values(["group", "dataset", "optimizer", "seed", "run_id"]).reset_index(drop=True)
    metrics = pd.concat(tables, ignore_index=True)
    return runs, metrics


def load_runs_or_explain(results_dir: str | Path, group: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """`load_runs`, or None after telling the user on stderr why there is nothing to draw."""
    runs, metrics = load_runs(results_dir, group)
    if runs.empty:
        print(f"no runs found in {Path(results_dir) / 'runs' / group} (a run needs summary.json and "
              f"metrics.csv); train some with `python -m benchmarks.train group={group}`", file=sys.stderr)
        return None
    return runs, metrics


def run_record(runs: pd.DataFrame) -> dict[str, Any]:
    """run_dir -> status, seed, config path and the resolved config, for provenance.json."""
    return {row["run_dir"]: {"dataset": row["dataset"], "optimizer": row["optimizer"], "seed": row["seed"],
                             "status": row["status"], "device": row.get("device"),
                             "git_commit": row.get("git_commit"), "config_path": row.get("config_path"),
                             "config": read_config(row["run_dir"])}
            for _, row in runs.iterrows()}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(package: str) -> str | None:
    """Installed version without importing the package (importing torch takes seconds)."""
    loaded = getattr(sys.modules.get(package), "__version__", None)
    if loaded:
        return str(loaded)
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(runs: pd.DataFrame | None = None) -> dict[str, Any]:
    """Who drew the report, from what code and which machines, so a figure can be re-made."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    info: dict[str, Any] = {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "hostname": socket.gethostname(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in ("torch", "numpy", "pandas", "matplotlib", "torchvision")},
        "argv": sys.argv,
    }
    if runs is not None and len(runs):
        info["devices"] = sorted({str(d) for d in runs.get("device", pd.Series(dtype=object)).dropna()})
        info["run_git_commits"] = sorted({str(c) for c in runs.get("git_commit", pd.Series(dtype=object)).dropna()})
        info["run_torch_versions"] = sorted({str(v) for v in runs.get("torch", pd.Series(dtype=object)).dropna()})
        info["n_runs"] = int(len(runs))
    return info


def _plain(value: Any) -> Any:
    """numpy scalars/arrays and paths as plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def write_json(path: str | Path, data: Any) -> None:
    """Atomic JSON (temporary file + rename); inf becomes 'inf' and NaN null, as in summary.json."""
    text = json.dumps(_json_safe(json.loads(json.dumps(data, default=_plain))), indent=2, sort_keys=True)
    atomic_write_text(Path(path), text + "\n")
