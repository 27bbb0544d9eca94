"""`make ablations`: the grids behind configs/ablation/*.yaml, and a tiny end-to-end run with its figure."""
import json
import math

import pytest
import yaml

from benchmarks.config import compose_config
from benchmarks.results import load_runs
from benchmarks.orchestration import ablations
from scripts import ablations as ablations_cli
from benchmarks.reporting import figures
from tests.tiny import TINY_RUN

TINY = [*TINY_RUN, "epochs=2", "stop_epoch=2", "schedule=constant", "logger=disabled"]


def _sweep_params(name: str) -> dict:
    return yaml.safe_load((ablations.ABLATION_DIR / f"{name}.yaml").read_text())["hydra"]["sweeper"]["params"]


@pytest.mark.parametrize("name", ablations.ablation_names())
def test_each_ablation_is_the_full_cartesian_grid_of_its_sweep(name):
    params = _sweep_params(name)
    points = ablations.grid(name)
    assert len(points) == math.prod(len(str(v).split(",")) for v in params.values())
    assert len({tuple(p) for p in points}) == len(points)
    configs = ablations.ablation_configs(name, results="somewhere")
    assert {str(c.group) for c in configs} == {f"ablation-{name}"}
    assert all(c.dataset.name == "curves_synth" and c.epochs == 20 and c.results_dir == "somewhere" for c in configs)
    assert all(c.optimizer.name in ("locoprop_s", "locoprop_m") for c in configs)


def test_the_ablations_cover_what_the_method_needs():
    assert set(ablations.ablation_names()) >= {"inner_steps", "gamma", "inner_optimizer", "variant", "proximal",
                                               "inner_state"}
    steps = [int(p[0].split("=")[1]) for p in ablations.grid("inner_steps")]
    assert steps == [1, 2, 5, 10, 20]
    gammas = [float(p[0].split("=")[1]) for p in ablations.grid("gamma")]
    assert max(gammas) / min(gammas) >= 100  # two decades
    inner = {p[0].split("=")[1] for p in ablations.grid("inner_optimizer")}
    assert inner == {"rmsprop_tf1", "rmsprop", "adam", "sgd"}


def test_an_override_after_the_ablation_wins_and_an_unknown_ablation_is_named():
    cfg = ablations.ablation_configs("gamma", ["dataset=mnist", "epochs=3"])[0]
    assert cfg.dataset.name == "mnist" and cfg.epochs == 3
    with pytest.raises(SystemExit, match="no ablation 'nope'"):
        ablations.grid("nope")


GRAMMAR_ABLATION = """\
hydra:
  sweeper:
    params:
      optimizer.inner_steps: range(1,4)
      +note: "'a,b',c"
      optimizer.gamma: 10
"""


def test_a_grid_reads_ranges_and_quoted_values_as_hydra_multirun_does(tmp_path, monkeypatch):
    monkeypatch.setattr(ablations, "ABLATION_DIR", tmp_path)
    (tmp_path / "grammar.yaml").write_text(GRAMMAR_ABLATION)
    points = ablations.grid("grammar")
    assert points == [[f"optimizer.inner_steps={steps}", f"+note={note}", "optimizer.gamma=10"]
                      for steps in (1, 2, 3) for note in ("'a,b'", "c")]
    notes = [compose_config(["optimizer=locoprop_m", *point]).note for point in points[:2]]
    assert notes == ["a,b", "c"]  # the quoted comma is one value, not two


def test_a_sweeper_param_that_gives_no_grid_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(ablations, "ABLATION_DIR", tmp_path)
    (tmp_path / "bad.yaml").write_text("hydra: {sweeper: {params: {optimizer.gamma: 'interval(1,100)'}}}\n")
    with pytest.raises(SystemExit, match=r"bad.yaml: sweeper param 'optimizer.gamma=interval\(1,100\)': only lists"):
        ablations.grid("bad")


@pytest.mark.slow
def test_a_tiny_ablation_trains_each_setting_and_draws_final_loss_against_it(tmp_path):
    assert ablations_cli.main(["--only", "gamma", "variant", "--results", str(tmp_path), "--", *TINY]) == 0
    runs, _ = load_runs(tmp_path, "ablation-gamma")
    assert sorted(runs["optimizer"].unique()) == ["locoprop_m"] and len(runs) == 5
    table, key, second = figures.ablation_table(runs, "curves_synth")
    assert key and second is None
    assert sorted(table["setting"].astype(float)) == [1.0, 3.0, 10.0, 30.0, 100.0]
    for _, row in table.iterrows():  # the plotted value is the run's own final train loss
        run_dir = runs.loc[runs["config_id"] == row["config_id"], "run_dir"].iloc[0]
        summary = json.loads((tmp_path / run_dir / "summary.json").read_text())
        assert row["final"] == pytest.approx(summary["final_train_ce"], rel=1e-6)
    for group in ("ablation-gamma", "ablation-variant"):
        out = tmp_path / "figures" / group
        assert (out / "curves_synth_ablation.png").stat().st_size > 0
        assert (out / "curves_synth_ablation.pdf").stat().st_size > 0
        drawn = json.loads((out / "provenance.json").read_text())["figures"]["curves_synth_ablation"]["runs"]
        assert len(drawn) == (5 if group == "ablation-gamma" else 2)
    runs, _ = load_runs(tmp_path, "ablation-variant")
    table, key, _ = figures.ablation_table(runs, "curves_synth")
    assert key == "optimizer" and len(table) == 2
