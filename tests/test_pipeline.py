"""Sweeps, tuned-config export and loading, launchers, and a CPU-sized `make reproduce`."""
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir

from benchmarks.config import CONFIG_DIR, compose_config
from benchmarks.optimizers import paper_optimizers
from benchmarks.tuning.space import SEARCH_SPACE_DIR, search_space
from benchmarks.tuning.tuned import tuned_name
from benchmarks.orchestration import reproduce
from scripts import reproduce as reproduce_cli
from tests.tiny import TINY_RUN

REPO = Path(__file__).resolve().parents[1]
TINY = [*TINY_RUN, "epochs=2", "stop_epoch=2", "schedule=constant"]


def test_every_search_space_belongs_to_an_optimizer_and_every_optimizer_has_one():
    """A search space file is optional: an optimizer without one is searched over its learning rate."""
    optimizers = {p.stem for p in (CONFIG_DIR / "optimizer").glob("*.yaml")}
    spaces = {p.stem for p in SEARCH_SPACE_DIR.glob("*.yaml")}
    assert spaces and spaces <= optimizers
    for name in optimizers:
        assert search_space(name), name


def test_train_help_lists_only_the_config_groups_a_run_composes():
    """Search spaces are the tuner's files, not a config group (`+sweep=adam` would compose nonsense)."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.train", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    section = out.split("== Configuration groups ==", 1)[1].split("==", 1)[0]
    listed = {line.split(":", 1)[0] for line in section.splitlines()[2:] if ":" in line}
    folders = {p.parent.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob("*.yaml")} - {"."}
    assert listed == {f for f in folders if not f.startswith("hydra")}
    assert "sweep" not in listed and "search_spaces" not in listed


LAUNCHER_PLUGINS = {"parallel": "hydra_plugins.hydra_joblib_launcher", "slurm": "hydra_plugins.hydra_submitit_launcher"}


@pytest.mark.parametrize("launcher, key", [("parallel", "n_jobs"), ("slurm", "gpus_per_node")])
def test_launcher_configs_compose(launcher, key):
    pytest.importorskip(LAUNCHER_PLUGINS[launcher], reason=f"the {launcher} launcher's Hydra plugin is not installed "
                        "(pip install -e '.[sweep]' or '.[slurm]')")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert key in cfg.hydra.launcher and "Launcher" in cfg.hydra.launcher._target_


def _train_cli(tmp_path, *args):
    cmd = [sys.executable, "-m", "benchmarks.train", *args, f"results_dir={tmp_path}", "logger=disabled",
           "progress=false", "dataset=curves_synth", *TINY]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_point_multirun_sweep_writes_two_runs(tmp_path):
    out = _train_cli(tmp_path, "-m", "optimizer=adam", "optimizer.lr=1e-3,1e-2", "group=sweep")
    assert out.returncode == 0, out.stderr[-2000:]
    runs = sorted((tmp_path / "runs" / "sweep" / "curves_synth" / "adam").iterdir())
    assert len(runs) == 2
    lrs = sorted(yaml.safe_load((r / "config.yaml").read_text())["optimizer"]["lr"] for r in runs)
    assert lrs == [1e-3, 1e-2]


def test_every_paper_pair_ships_a_tuned_config_with_provenance():
    """`make reproduce` finds a setting for every pair: searched on the data set, searched on its
    stand-in (a transfer the plan names), or, while a search is pending, the published defaults."""
    for dataset in reproduce.PAPER_DATASETS:
        for optimizer in paper_optimizers():
            tuned = tuned_name(dataset, optimizer)
            assert tuned is not None, f"no tuned config for {dataset}/{optimizer}"
            cfg = compose_config([f"tuned={tuned}", f"dataset={dataset}"])
            assert cfg.dataset.name == dataset and cfg.optimizer.name == optimizer
            source = cfg.tuned_source
            assert source.kind in ("search", "published_default")
            if source.kind == "search":  # the full-length protocol: its study, budget and validated seeds
                assert source.study_name == f"{tuned.split('/')[0]}-{optimizer}"
                assert source.search_space and source.budget_trials and source.validation.seeds
            else:
                assert source.reference


def committed_results() -> list[Path]:
    """The files under results/ that git tracks (what a user's own runs write there is ignored), or
    every file where the tree is not a git checkout."""
    listed = subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout.strip():
        return sorted(REPO / line for line in listed.stdout.splitlines())
    return sorted((REPO / "results").rglob("*"))


def test_committed_results_name_no_path_of_a_machine():
    """Also after a user's first hour: their own runs under results/ (git-ignored) are not committed results."""
    pattern = re.compile(r"(?<![\w.])/(tmp|work|home|root|Users)/")
    for path in committed_results():
        if path.suffix in (".yaml", ".json", ".md", ".csv") and path.is_file():
            assert not pattern.search(path.read_text(errors="ignore")), path


@pytest.mark.slow
def test_cpu_sized_reproduce_writes_figures_and_table(tmp_path):
    args = [f"results={tmp_path}", "seeds=1", "dataset=curves_synth", "optimizer=sgd,adam", "logger=disabled",
            "progress=false", *TINY]
    assert reproduce_cli.main(args + ["dry_run=true"]) == 0
    assert reproduce_cli.main(args) == 0
    summary = pd.read_csv(tmp_path / "summaries" / "reproduce" / "summary.csv")
    assert set(summary.optimizer) == {"sgd", "adam"}
    figures = {p.name for p in (tmp_path / "figures" / "reproduce").iterdir()}
    assert {"curves_synth_train_vs_epoch.png", "curves_synth_train_vs_time.pdf", "step_time.png",
            "curves_synth_reconstructions.png"} <= figures
    assert "performance_profile.png" not in figures  # one dataset: a profile would be degenerate
    # a second invocation skips the finished runs
    before = {p: p.stat().st_mtime for p in (tmp_path / "runs").rglob("metrics.csv")}
    reproduce_cli.main(args)
    assert before == {p: p.stat().st_mtime for p in (tmp_path / "runs").rglob("metrics.csv")}
