"""Pre-flight: what long work needs before it starts, checked in seconds instead of failing run by run.

`problems(cfgs)` looks at the composed configs of every planned run and returns one line per
missing piece, each with the command that fixes it: a data set whose files are missing or corrupt
(checked once per data set and folder by the loaders' own checks), an optimizer whose optional
package is not installed (its config's `extra`), a device that is not there.
"""
from __future__ import annotations

from typing import Iterable

from hydra.utils import get_object
from omegaconf import DictConfig

from benchmarks.data import fetch_hint
from benchmarks.train import resolve_device
from benchmarks.workloads import get_workload, load_dataset


def data_problem(cfg: DictConfig) -> str | None:
    """Why this run's data set cannot be loaded (files missing or corrupt), or None."""
    try:
        load_dataset(cfg.dataset.name, root=cfg.dataset.root, n_train=0, n_test=0)
    except Exception as err:  # noqa: BLE001 - reported, not raised
        return f"{type(err).__name__}: {err}"
    return None


def fetch_command(dataset: str) -> str:
    """The command that puts a data set's files in place ('nothing' for a generator)."""
    folder = get_workload(dataset).data_dir
    return fetch_hint(folder).removeprefix("fix: ") if folder else "nothing (generated)"


def extra_problem(optimizer: DictConfig) -> str | None:
    """Why an optimizer cannot be built here (its optional package is missing), or None."""
    extra = optimizer.get("extra")
    if not extra or "_target_" not in optimizer:
        return None
    try:
        get_object(str(optimizer._target_))
    except Exception as err:  # noqa: BLE001 - Hydra wraps import errors in several ways
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        return f"{type(cause).__name__}: {cause}"
    return None


def problems(cfgs: Iterable[DictConfig]) -> list[str]:
    """One line per distinct missing piece of the runs: data set, optional package, device."""
    lines: dict[tuple, str] = {}
    for cfg in cfgs:
        data_key = ("data", cfg.dataset.name, str(cfg.dataset.root))
        if data_key not in lines:
            problem = data_problem(cfg)
            lines[data_key] = problem and (f"data {cfg.dataset.name}: {problem.split('. ')[0].split('; fix:')[0]}; "
                                           f"fix: {fetch_command(cfg.dataset.name)}")
        extra_key = ("extra", cfg.optimizer.name)
        if extra_key not in lines:
            problem = extra_problem(cfg.optimizer)
            lines[extra_key] = problem and (f"optimizer {cfg.optimizer.name}: {problem}; "
                                            f"fix: pip install -e \".[{cfg.optimizer.extra}]\"")
        device_key = ("device", str(cfg.device))
        if device_key not in lines:
            try:
                resolve_device(str(cfg.device))
                lines[device_key] = None
            except ValueError as err:
                lines[device_key] = f"device {cfg.device}: {err}; fix: device=cpu, or a CUDA build of torch on a GPU machine"
    return [line for line in lines.values() if line]
