"""`make ablations`: the grids behind configs/ablation/*.yaml, and a tiny end-to-end run with its figure."""
import json
import math

import pytest
import yaml

from benchmarks.results import load_runs
from scripts import ablations, figures
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


@pytest.mark.slow
def test_a_tiny_ablation_trains_each_setting_and_draws_final_loss_against_it(tmp_path):
    assert ablations.main(["--only", "gamma", "variant", "--results", str(tmp_path), "--", *TINY]) == 0
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
