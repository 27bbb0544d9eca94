"""The tuner's search spaces: which config keys a search draws, and over which ranges.

`search_spaces/<name>.yaml` beside this file holds an optimizer's space (a dotted config key with
`{low, high[, log]}` or `{choices: [...]}`, each with its reason in comments). It is not a Hydra
config group, so `python -m benchmarks.train --help` does not list it. An optimizer without a file
is searched over its learning rate, three decades around its config's value.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from benchmarks.optimizers import config_path, optimizer_config

DEFAULT_SEARCH_DECADES = 1.5  # the default search space: lr over [lr / 10^1.5, lr * 10^1.5]
SEARCH_SPACE_DIR = Path(__file__).resolve().parent / "search_spaces"


def search_space_path(name: str) -> Path:
    return SEARCH_SPACE_DIR / f"{name}.yaml"



def search_space(name: str) -> dict[str, dict[str, Any]]:
    """The tuner's search space: `benchmarks/tuning/search_spaces/<name>.yaml`, or by default the learning
    rate over three decades around the composed config's value (log-uniform).

    Each entry is a dotted config key and `{low, high[, log]}` (a float or, for integer bounds, an
    int) or `{choices: [...]}`."""
    path = search_space_path(name)
    if path.is_file():
        space = yaml.safe_load(path.read_text()) or {}
        where = str(path)
    else:
        lr = optimizer_config(name).get("lr")
        if not isinstance(lr, (int, float)) or lr <= 0:
            raise ValueError(f"{config_path(name)} has no positive lr to centre a default search space on: "
                             f"write {path} (dotted keys with {{low, high, log}} or {{choices}})")
        space = default_search_space(lr)
        where = f"the default search space of {name} (no {path})"
    for key, spec in space.items():
        if not isinstance(spec, dict) or not ("choices" in spec or {"low", "high"} <= set(spec)):
            raise ValueError(f"{where}: {key} needs {{low, high[, log]}} or {{choices: [...]}}, got {spec!r}")
    return space


def default_search_space(lr: float) -> dict[str, dict[str, Any]]:
    """The space of an optimizer without a search space file: the learning rate log-uniform over three
    decades centred on its value, [lr / 10^1.5, lr * 10^1.5]."""
    factor = 10 ** DEFAULT_SEARCH_DECADES
    return {"optimizer.lr": {"low": float(lr) / factor, "high": float(lr) * factor, "log": True}}
