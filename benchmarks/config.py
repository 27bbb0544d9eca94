"""Compose the runner's Hydra config in-process (tests, the demo, reproduce, the tuner, the speed bench,
the optimizer and workload registries).

The same `configs/` tree and override syntax as the command line, without starting a Hydra app.
Overrides that use a key renamed since an earlier version fail with a message naming the new key.
"""
from __future__ import annotations

import copy
import difflib
import functools
import os
import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

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


def unknown_name(kind: str, name: str, choices) -> str:
    """'unknown optimizer 'adamm'; did you mean 'adam'? choose one of: ...' (the closest match, if any)."""
    choices = list(choices)
    close = difflib.get_close_matches(str(name), choices, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {kind} {name!r}; {hint}choose one of: {', '.join(choices)}"


def compose_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "train") -> DictConfig:
    """The config of `python -m benchmarks.train <overrides>`, composed in-process."""
    check_renamed(overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        try:
            return compose(config_name=config_name, overrides=list(overrides))
        except MissingConfigException as err:
            raise ValueError(missing_config_message(err, overrides)) from err
        except ConfigCompositionException as err:
            message = unknown_key_message(err, overrides, config_name)
            if message is None:
                raise
            raise ValueError(message) from err


def compose_group(group: str, name: str) -> dict:
    """One config of a group as the runner composes it (`<group>=<name>`: keys inherited through its
    `defaults:` included), as a plain dict; composed once per version of its file."""
    path = CONFIG_DIR / group / f"{name}.yaml"
    return copy.deepcopy(_composed_group(group, name, path.stat().st_mtime_ns if path.is_file() else None))


@functools.lru_cache(maxsize=None)
def _composed_group(group: str, name: str, version: int | None) -> dict:
    return OmegaConf.to_container(compose_config([f"{group}={name}"])[group], resolve=True)


def missing_config_message(err: Exception, overrides) -> str:
    """Hydra's 'could not find' in the harness's words: which option, the closest choice, and the
    choices (a group's own configs, not its sub-groups such as optimizer/inner_optimizer)."""
    text = str(err)
    for override in overrides:
        group, _, choice = override.lstrip("+").partition("=")
        if group in ("tuned", "optimizer", "dataset", "schedule", "logger", "model") and choice and f"'{group}/" in text:
            folder = TUNED_DIR if group == "tuned" else CONFIG_DIR / group
            paths = folder.glob("*/*.yaml") if group == "tuned" else folder.glob("*.yaml")
            choices = sorted(p.relative_to(folder).with_suffix("").as_posix() for p in paths)
            return f"no {group} config {choice!r} in {folder}; " + unknown_name(group, choice, choices).split("; ", 1)[1]
    return text


def unknown_key_message(err: Exception, overrides, config_name: str) -> str | None:
    """Hydra's 'Could not override 'epoch'' (it suggests '+epoch=...') as the key's closest existing
    spelling, e.g. 'epochs'; None for another composition error."""
    found = re.search(r"Could not override '([^']+)'", str(err))
    if not found:
        return None
    key = found.group(1)
    bad = next((o for o in overrides if re.split(r"[=~]", o.lstrip("+~"), maxsplit=1)[0] == key), key)
    parent, _, leaf = key.rpartition(".")
    try:
        base = compose(config_name=config_name, overrides=[o for o in overrides if o != bad])
        node = OmegaConf.select(base, parent) if parent else base
        names = [str(k) for k in node.keys()] if OmegaConf.is_dict(node) else []
    except Exception:  # noqa: BLE001 - only a suggestion is lost
        names = []
    close = difflib.get_close_matches(leaf, names, n=1)
    hint = f"did you mean {'.'.join(filter(None, (parent, close[0])))!r}?" if close else \
        f"to add a new key write +{bad.lstrip('+')}"
    return f"unknown config key {key!r} (in {bad!r}); {hint}"
