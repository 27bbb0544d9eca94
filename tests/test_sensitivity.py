"""Sensitivity points are read off the runs: which setting a run changed and by what multiplier
come from its config against the winner's, a diverged run is a point marked so, and the table and
verdict follow the ratios."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml

from benchmarks.reporting import sensitivity
from benchmarks.results import load_runs
from benchmarks.reporting import tuning_report

WINNER = {"lr": 0.01, "gamma": 10.0, "inner_steps": 5}
PLATEAU = 135.0  # the loss of predicting the mean training image (a stand-in for the workload's)


def write_run(folder, group, name, optimizer_cfg, status, losses):
    """A run directory as benchmarks.train leaves it: config.yaml, metrics.csv (epoch 0 before
    training, then the last epoch), summary.json."""
    run = folder / "runs" / group / "curves_synth" / "locoprop_m" / name
    run.mkdir(parents=True)
    config = {"dataset": {"name": "curves_synth"}, "seed": 0, "group": group,
              "optimizer": {"name": "locoprop_m", **optimizer_cfg}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [{"epoch": 0, "train_ce": losses[0], "wallclock_s": 0.0}, {"epoch": 99, "train_ce": losses[1], "wallclock_s": 1.0}]
    pd.DataFrame(rows).to_csv(run / "metrics.csv", index=False)
    final = losses[1] if status == "finished" else None
    best = min(v for v in losses if math.isfinite(v))
    (run / "summary.json").write_text(json.dumps({"status": status, "dataset": "curves_synth", "optimizer": "locoprop_m",
                                                  "seed": 0, "final_train_ce": final, "best_train_ce": best,
                                                  "primary_metric": "train_ce"}))


@pytest.fixture()
def workload(tmp_path):
    folder = tmp_path / "curves_synth"
    write_run(folder, "final", "seed0-w", WINNER, "finished", (500.0, 40.0))
    write_run(folder, "sensitivity", "seed0-a", {**WINNER, "lr": 0.005}, "finished", (500.0, 42.0))
    write_run(folder, "sensitivity", "seed0-b", {**WINNER, "lr": 0.02}, "diverged", (500.0, math.nan))
    write_run(folder, "sensitivity", "seed0-c", {**WINNER, "inner_steps": 1}, "finished", (500.0, 600.0))
    write_run(folder, "sensitivity", "seed0-d", {**WINNER, "gamma": 20.0, "lr": 0.02}, "finished", (500.0, 41.0))
    return folder


def test_points_are_read_off_the_configs(workload):
    final, _ = load_runs(workload, "final")
    winners = {"locoprop_m": {"optimizer.lr": 0.01, "optimizer.gamma": 10.0}}
    with pytest.warns(UserWarning, match="seed0-d: not one setting changed"):
        points = sensitivity.sensitivity_points(workload, final, winners, PLATEAU)
    lr = points[points["knob"] == "optimizer.lr"].set_index("nominal")
    assert lr["multiplier"].to_dict() == {0.5: 0.5, 1.0: 1.0, 2.0: 2.0}
    assert lr["state"].to_dict() == {0.5: "finished", 1.0: "finished", 2.0: "diverged"}
    assert lr.loc[0.5, "ratio"] == pytest.approx(42.0 / 40.0)
    steps = points[points["knob"] == "optimizer.inner_steps"].set_index("nominal")
    assert steps.loc[0.25, "multiplier"] == pytest.approx(1 / 5)  # 5 steps -> 1: the nearest power of two is 1/4
    assert steps.loc[0.25, "state"] == "stalled"  # its best loss (500) never got 1% below the plateau

    table = sensitivity.sensitivity_table(points)
    assert "| LocoProp-M | learning rate | not run yet | 1.05 | 40.00 | diverged |" in table
    assert "| LocoProp-M | inner steps | 15.00 (1 steps) (stalled) | not run yet | 40.00 | not run yet |" in table
    verdict = sensitivity.sensitivity_verdict(points, ["locoprop_m", "sgd"])
    assert "not: LocoProp-M (diverged at x2)" in verdict
    assert "\n- LocoProp's inner steps, within 10% of their best from x1/2 to x2: none; not settled:" in verdict
    assert "not settled: LocoProp-M (x1/2 not run yet)" in verdict and "No sensitivity run: SGD." in verdict

    figure = tuning_report.sensitivity_figure("curves_synth", points)
    assert [ax.get_title() for ax in figure.axes] == ["learning rate (K-FAC, FOOF: damping)", "LocoProp: inner steps"]


def test_a_workload_without_sensitivity_runs_says_so(tmp_path):
    folder = tmp_path / "curves_synth"
    write_run(folder, "final", "seed0-w", WINNER, "finished", (500.0, 40.0))
    final, _ = load_runs(folder, "final")
    points = sensitivity.sensitivity_points(folder, final, {})
    assert points.empty
    assert sensitivity.sensitivity_verdict(points, ["locoprop_m"]) == "No sensitivity run on this workload yet."


def test_stalled_is_the_plateau_rule_and_a_stalled_winner_gets_no_verdict(tmp_path):
    folder = tmp_path / "curves_synth"
    write_run(folder, "final", "seed0-w", WINNER, "finished", (500.0, 134.0))  # 0.7% below the plateau: stalled
    write_run(folder, "sensitivity", "seed0-a", {**WINNER, "lr": 0.005}, "finished", (500.0, 134.5))
    write_run(folder, "sensitivity", "seed0-b", {**WINNER, "lr": 0.02}, "finished", (500.0, 133.0))  # 1.5% below
    final, _ = load_runs(folder, "final")
    points = sensitivity.sensitivity_points(folder, final, {}, PLATEAU).set_index("nominal")
    assert points["state"].to_dict() == {0.5: "stalled", 1.0: "stalled", 2.0: "finished"}
    assert "| LocoProp-M | learning rate | 1.00 (stalled) | 134.00 (stalled) | 0.99 |" in \
        sensitivity.sensitivity_table(points.reset_index())
    verdict = sensitivity.sensitivity_verdict(points.reset_index(), ["locoprop_m"])
    assert verdict == ("- Learning rate (or the setting in its role), within 10% of their best from x1/2 to x2: none; "
                       "no verdict, the winner itself stalled on the mean-image plateau: LocoProp-M.")
    unjudged = sensitivity.sensitivity_points(folder, final, {}, None)  # no plateau known: nothing is judged stalled
    assert set(unjudged["state"]) == {"finished"}
    assert "within 10% of their best from x1/2 to x2: LocoProp-M." in sensitivity.sensitivity_verdict(unjudged, [])
    figure = tuning_report.sensitivity_figure("curves_synth", points.reset_index())
    drawn = [line for line in figure.axes[0].get_lines() if line.get_marker() == "v"]
    assert [list(line.get_ydata()) for line in drawn] == [[134.5, 134.0]]  # stalled points drawn at their loss


def test_a_ratio_at_the_10_percent_line_prints_the_side_it_falls_on(tmp_path):
    assert [sensitivity.ratio_text(r) for r in (1.05, 1.1, 1.1003, 1.0996, 1.104)] == \
        ["1.05", "1.10", "1.1003", "1.0996", "1.104"]
    folder = tmp_path / "curves_synth"
    write_run(folder, "final", "seed0-w", WINNER, "finished", (500.0, 40.0))
    write_run(folder, "sensitivity", "seed0-a", {**WINNER, "lr": 0.005}, "finished", (500.0, 40.0 * 1.1012))
    write_run(folder, "sensitivity", "seed0-b", {**WINNER, "lr": 0.02}, "finished", (500.0, 40.0 * 1.0988))
    final, _ = load_runs(folder, "final")
    points = sensitivity.sensitivity_points(folder, final, {}, PLATEAU)
    assert "| LocoProp-M | learning rate | 1.101 | 40.00 | 1.099 |" in sensitivity.sensitivity_table(points)
    assert "not: LocoProp-M (x1/2 is 1.101 x its best)" in sensitivity.sensitivity_verdict(points, ["locoprop_m"])
