"""Everything about a run directory: its id, its lock, atomic writes, the summary schema, provenance.

A run lives in `<results_dir>/runs/<group>/<dataset>/<optimizer>/<run_id>/`. The run id is
`seed<seed>-<hash of the training-relevant config>`: the same config always maps to the same
directory (re-runs skip or resume), different configs never share one. Every file is written
atomically (temporary file in the same folder, then rename), so a reader never sees half a file
and a killed writer leaves the previous version.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from benchmarks.optimizers import HARNESS_KEYS
from benchmarks.workloads import FACT_KEYS

# Keys that do not change what is trained, so they stay out of the run id.
BOOKKEEPING_KEYS = ("logger", "results_dir", "progress", "group", "resume", "stop_epoch", "eval_batch_size",
                    "throwaway_steps", "eval_every", "tuned_source", "hydra", "device")
# where a data set's files are, and the facts about it: it is identified by its name
BOOKKEEPING_DATASET_KEYS = ("root", "download", *FACT_KEYS)
BOOKKEEPING_OPTIMIZER_KEYS = tuple(k for k in HARNESS_KEYS if k != "name")  # the name identifies the optimizer
FINAL_STATUSES = ("finished", "diverged")  # a run in one of these is never run again
STATUSES = ("running", "finished", "stopped", "pruned", "diverged", "failed")
REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- identity

# Settings added after runs were committed: at these values they leave the run id as it was.
LATER_DEFAULTS = {"precision": "float32"}


def training_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without the bookkeeping keys: what decides the trained numbers."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in BOOKKEEPING_KEYS:
        data.pop(key, None)
    for key, default in LATER_DEFAULTS.items():
        if data.get(key) == default:
            data.pop(key)
    for key in BOOKKEEPING_DATASET_KEYS:
        data.get("dataset", {}).pop(key, None)
    for key in BOOKKEEPING_OPTIMIZER_KEYS:
        data.get("optimizer", {}).pop(key, None)
    return data


def config_hash(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


def run_id_for(cfg: DictConfig) -> str:
    """`seed<seed>-<8 hex>`: a hash of the training config (seed included)."""
    return f"seed{cfg.seed}-{config_hash(training_config(cfg))}"


def run_dir_for(cfg: DictConfig) -> Path:
    return Path(cfg.results_dir) / "runs" / str(cfg.group) / cfg.dataset.name / cfg.optimizer.name / run_id_for(cfg)


# ----------------------------------------------------------------------------- files

def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` for a temporary path beside `path`, then rename it over `path`.

    Readers never see a partial file; on any failure the temporary file is removed. The file
    gets the usual permissions (mkstemp's 0600 would hide results from other users).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    atomic_write(path, write)


def json_safe(value: Any) -> Any:
    """inf as the string 'inf', NaN as null (JSON has neither); numpy scalars and paths as plain values."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, Path):
        return value.as_posix()
    return value


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(json_safe(data), indent=2, sort_keys=True) + "\n")


def atomic_torch_save(path: str | Path, payload: Any) -> None:
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def atomic_savez(path: str | Path, **arrays: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez_compressed(f, **arrays)
    atomic_write(path, write)


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's summary.json, or None when the run never finished writing one."""
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


# ----------------------------------------------------------------------------- the lock

def pid_alive(pid: int) -> bool:
    """Whether process `pid` on this host is running (a zombie, dead but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class RunInUse(RuntimeError):
    """Another live process holds the run directory."""


class RunLock:
    """An exclusive lock on a run directory, so two concurrent jobs never write the same run.

    An OS lock (filelock) on `run.lock`: the kernel releases it when its process dies, so a killed
    run leaves the file but no lock, and the next job resumes the run."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "run.lock"
        self._lock = FileLock(self.path, timeout=0)

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise RunInUse(f"run directory {self.path.parent} is in use by another process (it holds {self.path})") \
                from None
        return self

    def __exit__(self, *exc):
        self._lock.release()


# ----------------------------------------------------------------------------- provenance

def git_commit() -> str | None:
    """The repository's HEAD commit, recorded with every run and tuned config (None outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def tracked_by_git(path: str | Path) -> bool:
    """Whether `path` is a file committed to the git repository it lies in (a shipped result)."""
    path = Path(path).resolve()
    try:
        out = subprocess.run(["git", "ls-files", "--error-unmatch", path.name], cwd=path.parent, capture_output=True,
                             timeout=5)
        return out.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def cpu_model(cpuinfo: str | None = None) -> str:
    """The processor's model name with its CPUID family and model (/proc/cpuinfo on Linux).

    Virtual machines often report a generic name ('Intel(R) Xeon(R) Processor') for CPUs of
    different generations whose speed differs twofold or more; the family and model numbers tell
    them apart, so every run and bench names both."""
    try:
        text = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
    except OSError:
        return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


def device_name(device: torch.device, bench: bool = False) -> str:
    """The GPU's name; for the CPU 'cpu (N threads)' (a run's summary records the CPU model apart),
    or with `bench` '<CPU model> xN', the name of a bench table: valid for one model and thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} x{torch.get_num_threads()}" if bench else f"cpu ({torch.get_num_threads()} threads)"


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: wall-clock times measured under load are inflated."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ----------------------------------------------------------------------------- the summary

def summarize_rows(rows: list[dict[str, Any]], status: str, reason: str | None, primary: str,
                   extra: Mapping[str, Any]) -> dict[str, Any]:
    """summary.json: the status and why, final and best of every loss, the median step time, provenance."""
    trained = [r for r in rows if r["epoch"] > 0]
    summary = {"status": status, "reason": reason, "primary_metric": primary,
               "epochs_completed": rows[-1]["epoch"] if rows else 0,
               "wallclock_s": rows[-1]["wallclock_s"] if rows else 0.0,
               "step_ms_median": float(np.median([r["step_ms"] for r in trained])) if trained else None}
    for key in ("train_ce", "test_ce", "train_se", "test_se"):
        values = [r[key] for r in rows if r.get(key) is not None and not math.isnan(r[key])]
        summary[f"final_{key}"] = values[-1] if values else None
        finite = [v for v in values if math.isfinite(v)]
        summary[f"best_{key}"] = min(finite) if finite else None
    summary.update(extra)
    return summary
