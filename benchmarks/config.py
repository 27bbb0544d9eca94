"""Compose the runner's Hydra config in-process (tests, the demo, reproduce, the tuner, the speed bench).

The same `configs/` tree and override syntax as the command line, without starting a Hydra app.
Overrides that use a key renamed since an earlier version fail with a message naming the new key.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import DictConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
TUNED_DIR = Path(__file__).resolve().parents[1] / "results" / "tuned"
# configs/train.yaml puts $LOCOPROP_REPO/results on Hydra's search path, so tuned=<dataset>/<optimizer>
# is found from any working directory (the command line and compose_config both import this module)
os.environ.setdefault("LOCOPROP_REPO", str(TUNED_DIR.parents[1]))

# old spelling (a key or a config group, as it appears at the start of an override) -> the new one
RENAMED = {
    "warmup_steps": "throwaway_steps",
    "optimizer.parallel": "optimizer.fused",
    "optimizer/inner": "optimizer/inner_optimizer",
    "optimizer.inner": "optimizer.inner_optimizer",
    "optimizer.inner_kwargs": "optimizer.inner_optimizer",
    "dataset.prune": "the tuning protocol's exits (scripts/tune.py --exits; benchmarks/workloads.py)",
}


def check_renamed(overrides: list[str] | tuple[str, ...]) -> None:
    """Raise a ValueError for an override that uses a renamed key, naming its new spelling."""
    for override in overrides:
        key = re.split(r"[=~]", override.lstrip("+~"), maxsplit=1)[0]
        for old, new in RENAMED.items():
            if key == old or key.startswith(old + "."):
                raise ValueError(f"'{key}' was renamed: use {new} (in {override!r})")


def compose_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "train") -> DictConfig:
    """The config of `python -m benchmarks.train <overrides>`, composed in-process."""
    check_renamed(overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        try:
            return compose(config_name=config_name, overrides=list(overrides))
        except MissingConfigException as err:
            raise ValueError(missing_config_message(err, overrides)) from err


def missing_config_message(err: Exception, overrides) -> str:
    """Hydra's 'could not find' in the harness's words: which option, and where the choices are."""
    text = str(err)
    for override in overrides:
        group, _, choice = override.lstrip("+").partition("=")
        if group in ("tuned", "optimizer", "dataset", "schedule", "logger", "model") and choice and f"'{group}/" in text:
            folder = TUNED_DIR if group == "tuned" else CONFIG_DIR / group
            choices = sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))
            return f"no {group} config {choice!r} in {folder}; choose one of: {', '.join(choices)}"
    return text
