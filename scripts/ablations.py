"""`make ablations`: LocoProp's ablations (configs/ablation/*.yaml), then one figure each.

    python -m scripts.ablations [--only gamma inner_steps] [--results results] [--dry-run] [dataset=mnist seed=1]

Each ablation is a ready Hydra multirun (`python -m benchmarks.train -m +ablation=<name>`): a group
`ablation-<name>` whose runs differ in one setting (the inner steps T, gamma, the inner optimizer,
S vs M, the proximal term, inner state kept or reset). This script expands the same grids and runs
them in-process, so finished runs are skipped and interrupted ones resume, then draws
`<results>/figures/ablation-<name>/<dataset>_ablation.png` and `.pdf` (final train loss against the
setting, and the curves) with `scripts.figures --ablation`. Options and Hydra overrides may come in
any order (`make ablations ABLATION_ARGS="--dry-run dataset=mnist"`); put overrides after `--`
when they follow `--only`.
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig

from benchmarks import cli
from benchmarks.config import CONFIG_DIR
from scripts import figures
from scripts.plan import InProcess, Plan, PlannedRun

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=ablation_names(), choices=ablation_names())
    parser.add_argument("--results", default="results")
    parser.add_argument("--no-train", action="store_true", help="only draw the figures of finished runs")
    parser.add_argument("--dry-run", action="store_true", help="list the runs, their state and cost; run nothing")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --), e.g. dataset=mnist")
    args = parser.parse_intermixed_args(argv)
    plans = [ablation_plan(name, args.overrides, args.results) for name in args.only]
    if args.dry_run:
        text, status = Plan([run for plan in plans for run in plan.runs], "ablations").describe(args.results)
        print(text)
        return status
    failed = 0
    for plan in plans:
        if not args.no_train:
            failed += sum(status.startswith("failed") for status in InProcess().run(plan).values())
        group = str(plan.runs[0].cfg.group)
        figures.main(["--results", args.results, "--group", group, "--ablation",
                      "--out", str(Path(args.results) / "figures" / group)])
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(main)
