"""`make ablations`: LocoProp's ablations (configs/ablation/*.yaml), then one figure each.

    python -m scripts.ablations [--only gamma inner_steps] [--results results] [--dry-run] [dataset=mnist seed=1]

Each ablation is a ready Hydra multirun (`python -m benchmarks.train -m +ablation=<name>`): a group
`ablation-<name>` whose runs differ in one setting (the inner steps T, gamma, the inner optimizer,
S vs M, the proximal term, inner state kept or reset). This script expands the same grids and runs
them in-process, so finished runs are skipped and interrupted ones resume, then draws
`<results>/figures/ablation-<name>/<dataset>_ablation.png` and `.pdf` (final train loss against the
setting, and the curves) with `scripts/figures.py --ablation`. Options and Hydra overrides may come in
any order (`make ablations ABLATION_ARGS="--dry-run dataset=mnist"`); put overrides after `--`
when they follow `--only`.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig

from benchmarks.config import CONFIG_DIR
from benchmarks.orchestration.plan import Plan, PlannedRun

ABLATION_DIR = CONFIG_DIR / "ablation"


def ablation_names() -> list[str]:
    return sorted(p.stem for p in ABLATION_DIR.glob("*.yaml"))


def grid(name: str) -> list[list[str]]:
    """The overrides of every run of an ablation: the cartesian product of its sweeper params, each
    read by Hydra's override grammar as `-m` reads it (lists, range(), choice(), quoted values)."""
    path = ABLATION_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SystemExit(f"no ablation {name!r}; choose from {', '.join(ablation_names())}")
    params = yaml.safe_load(path.read_text())["hydra"]["sweeper"]["params"]
    return [list(point) for point in itertools.product(*(sweep_axis(path, key, value) for key, value in params.items()))]


def sweep_axis(path: Path, key: str, value) -> list[str]:
    """One sweeper param as the overrides of its points (Hydra's basic sweeper expands it the same
    way); a param that is no discrete sweep is one point."""
    text = f"{key}={value}"
    try:
        override = OverridesParser.create().parse_overrides([text])[0]
        if not override.is_sweep_override():
            return [f"{override.get_key_element()}={override.get_value_element_as_str()}"]
        if not override.is_discrete_sweep():
            raise HydraException("only lists, range() and choice() give a grid of runs")
        return [f"{override.get_key_element()}={point}" for point in override.sweep_string_iterator()]
    except HydraException as err:
        raise SystemExit(f"{path}: sweeper param {text!r}: {str(err).splitlines()[0]}") from None


def ablation_plan(name: str, overrides: list[str] = (), results: str = "results") -> Plan:
    """The runs of one ablation (the grid of configs/ablation/<name>.yaml) as a plan."""
    return Plan([PlannedRun([f"+ablation={name}", f"results_dir={results}", "progress=false", *point, *overrides],
                            f"{name}: {' '.join(point)}") for point in grid(name)], title=f"ablation {name}")


def ablation_configs(name: str, overrides: list[str] = (), results: str = "results") -> list[DictConfig]:
    return [run.cfg for run in ablation_plan(name, overrides, results).runs]
