"""A new optimizer against the committed reference: what it is, how it is searched, what it costs,
and how its row is judged. `scripts/compare.py` runs it; this module holds the rules.

- The optimizer is a shipped config name (`configs/optimizer/<name>.yaml`) or a dotted path to a
  class or factory in the user's own module (`mypkg.opt.MyOpt`); the latter gets a config written
  into the comparison's folder, found by the runs through a Hydra search path, so the checkout is
  never written to.
- Without a search space it gets the default one (`benchmarks.tuning.space.default_search_space`).
- The protocol is the committed rows' (`benchmarks.tuning.protocol.read_protocol`), or the quick one
  (`quick_protocol`): a first look, not comparable with the reference.
- The verdict against the best committed row uses a paired t-test by seed where seed k of every
  optimizer trains on the same data (a generated stand-in regenerates its data from the seed), and
  Welch's t-test where the data are fixed (the seeds only draw the initialisation and batches).
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml
from hydra.utils import get_object

from benchmarks.config import CONFIG_DIR, compose_config
from benchmarks.optimizers import FAMILY_ORDER, config_path, optimizer_config, optimizer_info, optimizer_names
from benchmarks.tuning.space import default_search_space, search_space, search_space_path
from benchmarks.tuning.protocol import Protocol, run_setting
from benchmarks.rundir import atomic_write_text
from benchmarks.reporting.statistics import seed_test
from benchmarks.tables import DASH, fmt
from benchmarks.workloads import get_workload, load_dataset

REPO = CONFIG_DIR.parent
WORKLOADS = ("mnist", "faces_synth", "curves_synth")  # the committed reference's workloads
NOISE_P = 0.05  # the report's threshold: a gap is larger than seed noise when p is below it
QUICK = dict(trials=2, seeds=1, startup_trials=2, min_resource=1, eval_every=1,
             overrides=["epochs=4", "dataset.n_train=1000", "dataset.n_test=200", "throwaway_steps=0"])
QUICK_NOTE = ("quick protocol (fewer trials, one seed, short runs on a small training set): a first look, "
              "NOT comparable with the reference rows")


# ----------------------------------------------------------------------------- the protocol

def quick_protocol(reference: Protocol) -> Protocol:
    """The reference protocol shrunk to a first look: fewer trials, one seed, short runs."""
    return dataclasses.replace(reference, **QUICK)


# ----------------------------------------------------------------------------- the optimizer

@dataclass
class OptimizerSpec:
    """The optimizer compared: its run name, legend label, family, search space, and the Hydra
    overrides that let the runs find its config when it lives outside configs/."""

    name: str
    label: str
    family: str
    target: str
    space: dict[str, dict[str, Any]]
    space_note: str
    config_dir: Path | None = None  # a folder holding optimizer/<name>.yaml (outside the checkout)

    @property
    def overrides(self) -> list[str]:
        if self.config_dir is None:
            return []
        return [f"hydra.searchpath=[file://{self.config_dir.resolve()},file://{REPO / 'results'}]"]


def default_name(target: str) -> str:
    """The run name of a dotted path: its last part, lower case (torch.optim.NAdam -> nadam)."""
    return re.sub(r"[^a-z0-9_]+", "_", target.rsplit(".", 1)[-1].lower()).strip("_")


def default_lr(target: Any) -> float | None:
    """The `lr` default of a class's or factory's signature, if it has a positive number there."""
    try:
        parameter = inspect.signature(target).parameters.get("lr")
    except (TypeError, ValueError):
        return None
    value = None if parameter is None else parameter.default
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def read_space(path: str | Path) -> dict[str, dict[str, Any]]:
    """A search space file (the format of benchmarks/tuning/search_spaces/<name>.yaml), checked."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--space: no file {path}")
    space = yaml.safe_load(path.read_text()) or {}
    if not isinstance(space, dict) or not space:
        raise ValueError(f"{path}: a search space maps dotted config keys to {{low, high[, log]}} or {{choices}}")
    for key, spec in space.items():
        if not isinstance(spec, dict) or not ("choices" in spec or {"low", "high"} <= set(spec)):
            raise ValueError(f"{path}: {key} needs {{low, high[, log]}} or {{choices: [...]}}, got {spec!r}")
    return space


def space_note(space: dict[str, dict[str, Any]], default: bool, where: str) -> str:
    if default:
        lr = space["optimizer.lr"]
        return (f"the default search space (no search space was given): optimizer.lr log-uniform over "
                f"[{lr['low']:.3g}, {lr['high']:.3g}], three decades centred on its default learning rate")
    return f"the search space of {where}"


def resolve_optimizer(optimizer: str, out: str | Path, name: str | None = None, label: str | None = None,
                      family: str | None = None, space_file: str | Path | None = None) -> OptimizerSpec:
    """The spec of a shipped config name or of a dotted path to a class or factory. A dotted path's
    config is written to `<out>/configs/optimizer/<name>.yaml` (its lr: the signature's default)."""
    given_space = read_space(space_file) if space_file else None
    if config_path(optimizer).is_file():
        info = optimizer_info(optimizer)
        own_space = search_space_path(optimizer)
        space = given_space or search_space(optimizer)
        note = space_note(space, given_space is None and not own_space.is_file(),
                          str(space_file) if given_space else own_space.relative_to(REPO).as_posix())
        target = optimizer_config(optimizer).get("_target_", "")
        return OptimizerSpec(info["name"], label or info["label"], info["family"], target, space, note)
    if "." not in optimizer:
        raise ValueError(f"optimizer {optimizer!r}: neither a config of configs/optimizer/ "
                         f"({', '.join(optimizer_names())}) nor a dotted path such as mypkg.opt.MyOpt")
    try:
        target = get_object(optimizer)
    except Exception as err:  # noqa: BLE001 - Hydra wraps import errors in several ways
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise ValueError(f"optimizer {optimizer!r}: cannot import it ({type(cause).__name__}: {cause}); "
                         "is its module on PYTHONPATH?") from None
    name = name or default_name(optimizer)
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"--name {name!r}: use lower-case letters, digits and underscores")
    if config_path(name).is_file():
        raise ValueError(f"optimizer {optimizer!r}: its name {name!r} is a shipped optimizer's; give another with --name")
    family = family or "other"
    if family not in FAMILY_ORDER:
        raise ValueError(f"--family {family!r}: choose one of {', '.join(FAMILY_ORDER)}")
    lr = default_lr(target)
    if given_space is None and lr is None:
        raise ValueError(f"optimizer {optimizer!r} has no positive lr default to centre the default search space on: "
                         "give --space FILE (dotted keys with {low, high, log} or {choices})")
    label = label or optimizer.rsplit(".", 1)[-1]
    config_dir = Path(out) / "configs"
    body = {"_target_": optimizer, "name": name, "label": label, "family": family, **({"lr": lr} if lr else {})}
    atomic_write_text(config_dir / "optimizer" / f"{name}.yaml",
                      f"# the compared optimizer's config (scripts/compare.py)\n{yaml.safe_dump(body, sort_keys=False)}")
    space = given_space or default_search_space(lr)
    note = space_note(space, given_space is None, str(space_file))
    return OptimizerSpec(name, label, family, optimizer, space, note, config_dir)


# ----------------------------------------------------------------------------- before running

def data_problem(dataset: str) -> str | None:
    """Why a workload's data cannot be loaded here (files missing or corrupt), or None."""
    cfg = compose_config([f"dataset={dataset}"])
    try:
        load_dataset(dataset, root=cfg.dataset.root, n_train=0, n_test=0)
    except Exception as err:  # noqa: BLE001 - reported, not raised
        return f"{type(err).__name__}: {err}"
    return None


def committed_ms(bench: dict[tuple[str, str, int], float], dataset: str,
                 optimizers: Iterable[str]) -> dict[str, float]:
    """The quiet bench's ms/step of the committed rows on a workload's architecture (batch 1000)."""
    arch = get_workload(dataset).architecture
    return {o: bench[(arch, o, 1000)] for o in optimizers if (arch, o, 1000) in bench}


def plan_line(dataset: str, protocol: Protocol, ms: float | None, committed: dict[str, float],
              labels: dict[str, str]) -> tuple[str, float | None]:
    """One workload of the plan: runs, steps, the new optimizer's ms/step beside the committed rows',
    and the cost (every trial priced at full length: an upper bound, pruning cuts most short)."""
    runs = protocol.trials + protocol.seeds - 1
    steps = run_setting(dataset, protocol)["steps"]
    cost = None if ms is None else runs * steps * ms / 1e3
    beside = ", ".join(f"{labels.get(o, o)} {v:.0f}" for o, v in sorted(committed.items(), key=lambda kv: kv[1]))
    line = (f"{dataset}: {protocol.trials} trials + {protocol.seeds - 1} more seeds = {runs} runs x {steps:,} steps; "
            f"new optimizer {fmt(ms, 1) if ms is not None else DASH} ms/step here (committed rows, quiet bench: "
            f"{beside or 'none'}); at most {fmt(cost / 3600 if cost is not None else math.nan)} h")
    return line, cost


# ----------------------------------------------------------------------------- the verdict

def verdict(dataset: str, new: dict[int, float], best: dict[int, float], best_label: str) -> str:
    """The new row's final train loss against the best committed row's, with the test that fits how
    the seeds were drawn named in the words."""
    if not new:
        return "no finished seed"
    paired = get_workload(dataset).seed_draws_data
    p, test = seed_test(new, best, paired)
    test += f", {len(set(new) & set(best))} pairs" if paired else f", {len(new)} vs {len(best)} seeds"
    lower = np.mean(list(new.values())) < np.mean(list(best.values()))
    if not math.isfinite(p):
        words = ("lower" if lower else "higher") + f" than {best_label} (fewer than two seeds: noise unknown)"
        return f"{words}; {test}"
    if p >= NOISE_P:
        return f"within seed noise of {best_label} ({test}, p = {fmt(p, 3)})"
    return f"{'lower' if lower else 'higher'} than {best_label} ({test}, p = {fmt(p, 3)})"


def reach_text(epochs: float, seconds: float, n_reached: int, n_healthy: int) -> str:
    """Time to target: 'epochs / bench s (k of n)', the seed count always shown."""
    if not n_reached:
        return f"{DASH} (0 of {n_healthy})"
    return f"{fmt(epochs, 0)} / {fmt(seconds, 0)} ({n_reached} of {n_healthy})"
