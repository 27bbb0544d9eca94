"""scripts.summary on the hand-made results tree: every number checked against hand arithmetic."""
from __future__ import annotations

import argparse
import json
import math

import pandas as pd
import pytest

from benchmarks.reporting import summary
from scripts import summary as summary_cli
from benchmarks.results import load_runs, run_devices
from tests.fixtures import make_results

SQRT2 = math.sqrt(2.0)
pytestmark = pytest.mark.filterwarnings("ignore:skipping unreadable run")  # asserted in test_figures


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return make_results(tmp_path_factory.mktemp("results"), broken=True)


def _run(results, out, *extra):
    code = summary_cli.main(["--results", str(results), "--group", "default", "--out", str(out), *extra])
    table = pd.read_csv(out / "summary.csv").set_index(["dataset", "optimizer"])
    return code, table, (out / "summary.md").read_text(), out


@pytest.fixture(scope="module")
def default_table(results, tmp_path_factory):
    return _run(results, tmp_path_factory.mktemp("out"))


def test_writes_all_files_and_skips_the_broken_run(default_table, results):
    code, table, _, _ = default_table
    assert code == 0
    assert len(table) == 6  # 2 datasets x 3 optimizers; the broken run (seed 7) is not counted
    assert table.loc[("curves_synth", "adam"), "n_seeds"] == 2


def test_means_and_stds_equal_hand_computed_values(default_table):
    _, t, _, _ = default_table
    adam = t.loc[("curves_synth", "adam")]
    assert adam["final_train_ce_mean"] == pytest.approx(11.0)  # (10 + 12) / 2
    assert adam["final_train_ce_std"] == pytest.approx(SQRT2)  # sample std of {10, 12}
    assert adam["final_test_ce_mean"] == pytest.approx(16.0)
    assert adam["final_train_se_mean"] == pytest.approx(1.1)
    assert adam["final_train_se_std"] == pytest.approx(SQRT2 / 10)
    assert adam["best_train_ce_mean"] == pytest.approx(11.0)
    assert t.loc[("curves_synth", "sgd"), "final_train_ce_mean"] == pytest.approx(55.0)
    assert t.loc[("curves_synth", "sgd"), "final_train_ce_std"] == pytest.approx(5 * SQRT2)
    assert t.loc[("curves_synth", "locoprop_m"), "final_train_ce_mean"] == pytest.approx(9.5)
    assert t.loc[("curves_synth", "locoprop_m"), "final_train_ce_std"] == pytest.approx(SQRT2 / 2)
    faces = t.loc[("faces_synth", "locoprop_m")]
    assert faces["final_train_se_mean"] == pytest.approx(16.0) and faces["final_test_se_mean"] == pytest.approx(26.0)
    assert math.isnan(faces["final_train_ce_mean"])  # gaussian dataset: no cross-entropy


def test_diverged_seed_is_counted_not_averaged(default_table):
    _, t, md, _ = default_table
    sgd = t.loc[("faces_synth", "sgd")]
    assert (sgd["n_seeds"], sgd["n_healthy"], sgd["n_diverged"], sgd["n_failed"]) == (2, 1, 1, 0)
    assert sgd["final_train_se_mean"] == pytest.approx(25.0) and math.isnan(sgd["final_train_se_std"])
    assert sgd["best_train_se_mean"] == pytest.approx(25.0)
    assert t["n_diverged"].sum() == 1
    assert "| SGD | 2 | 1/2 | 25 | 25 | 35 | 35 |" in md


def test_timings(default_table):
    _, t, _, _ = default_table
    adam = t.loc[("faces_synth", "adam")]
    assert adam["step_ms_median"] == pytest.approx(125.0)  # median of the runs' 100 and 150 ms
    assert adam["wallclock_s_total"] == pytest.approx(10.0)  # 4 x 1.0 s + 4 x 1.5 s
    assert adam["wallclock_s_mean"] == pytest.approx(5.0)
    sgd = t.loc[("faces_synth", "sgd")]  # the diverged seed's time counts too: 4 x 0.5 + 2 x 0.75
    assert sgd["wallclock_s_total"] == pytest.approx(3.5) and sgd["step_ms_median"] == pytest.approx(62.5)


def test_default_target_and_time_to_target(default_table):
    _, t, md, _ = default_table
    assert t.loc[("curves_synth", "adam"), "target"] == pytest.approx(1.05 * 9.5)
    assert t.loc[("faces_synth", "adam"), "target"] == pytest.approx(1.05 * 16.0)
    lm = t.loc[("curves_synth", "locoprop_m")]  # seed 0 reaches 9 <= 9.975 at epoch 4; seed 1 ends at 10
    assert (lm["epochs_to_target"], lm["seconds_to_target"], lm["n_reached_target"]) == (4.0, 12.0, 1)
    lm = t.loc[("faces_synth", "locoprop_m")]  # seed 0: 16 <= 16.8 at epoch 3, 3 x 3.0 s
    assert (lm["epochs_to_target"], lm["seconds_to_target"], lm["n_reached_target"]) == (3.0, 9.0, 1)
    assert math.isnan(t.loc[("curves_synth", "adam"), "epochs_to_target"])
    assert t.loc[("curves_synth", "adam"), "n_reached_target"] == 0
    assert "| 4 (1/2) | 12 (1/2) |" in md and "| — | — |" in md


def test_given_targets(results, tmp_path):
    code, t, md, _ = _run(results, tmp_path, "--targets", "curves_synth=25, faces_synth=30")
    assert code == 0
    adam = t.loc[("curves_synth", "adam")]  # both seeds at epoch 3 (20, 24); 3 x 1.0 s and 3 x 1.5 s
    assert (adam["epochs_to_target"], adam["seconds_to_target"], adam["n_reached_target"]) == (3.0, 3.75, 2)
    assert t.loc[("curves_synth", "locoprop_m"), "epochs_to_target"] == 1.0
    assert t.loc[("curves_synth", "sgd"), "n_reached_target"] == 0
    faces = t.loc[("faces_synth", "adam")]  # seed 0 at epoch 2 (2.0 s), seed 1 at epoch 3 (4.5 s)
    assert (faces["epochs_to_target"], faces["seconds_to_target"]) == (2.5, 3.25)
    sgd = t.loc[("faces_synth", "sgd")]  # healthy seed 0 only: epoch 3, 1.5 s
    assert (sgd["epochs_to_target"], sgd["seconds_to_target"], sgd["n_reached_target"]) == (3.0, 1.5, 1)
    assert "target 25 (given)" in md


def test_markdown_has_provenance_and_readable_tables(default_table, results):
    _, _, md, _ = default_table
    head = md.split("## ")[0]
    for key in ("runs' commits:", "devices (from the runs): cpu (2 threads)", "torch (from the runs):",
                "runs used: 12"):
        assert key in head
    assert "generated" not in head  # no date: a regenerated table is the same file
    faces = md.split("## faces_synth")[1]
    assert "CE" not in faces.split("\n\n")[2]  # no empty cross-entropy columns for FACES
    assert "runs/default/faces_synth/sgd/seed1-0000abcd` (diverged, SGD)" in md
    assert str(results) not in md  # run paths relative to the results folder


def test_provenance_json(default_table, results):
    out = default_table[3] / "summary_provenance.json"
    info = json.loads(out.read_text())
    assert len(info["runs"]) == 12
    assert {"run_git_commits", "devices"} <= set(info["provenance"])  # from the runs, not from the drawing
    assert info["targets"]["curves_synth"] == pytest.approx(9.975)
    assert not list(out.parent.glob(".*tmp"))


def test_reference_column(monkeypatch, results):
    monkeypatch.setitem(summary.REFERENCE_VALUES, ("curves_synth", "adam"),
                        {"metric": "final_train_ce", "value": 12.5, "source": "a test source"})
    runs, metrics = load_runs(results, "default")
    table = summary.summarize(runs, metrics).set_index(["dataset", "optimizer"])
    assert table.loc[("curves_synth", "adam"), "reference"] == "final_train_ce = 12.5"
    assert table.loc[("curves_synth", "adam"), "reference_source"] == "a test source"
    assert table.loc[("curves_synth", "sgd"), "reference"] == ""


def test_parse_targets():
    assert summary.parse_targets("mnist=60, curves=3.5") == {"mnist": 60.0, "curves": 3.5}
    assert summary.parse_targets("") == {}
    for bad in ("mnist", "mnist=abc", "=3"):
        with pytest.raises(argparse.ArgumentTypeError):
            summary.parse_targets(bad)


def test_failed_render_leaves_previous_files_intact(results, tmp_path, monkeypatch):
    _run(results, tmp_path)
    before = (tmp_path / "summary.csv").read_text()
    monkeypatch.setattr(summary, "markdown", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        summary_cli.main(["--results", str(results), "--out", str(tmp_path)])
    assert (tmp_path / "summary.csv").read_text() == before


def test_no_runs_exits_1_with_a_clear_message(tmp_path, capsys):
    assert summary_cli.main(["--results", str(tmp_path), "--group", "default"]) == 1
    assert "no runs found" in capsys.readouterr().err
    assert not (tmp_path / "summary.md").exists()


def test_a_learning_rate_sweep_gives_one_row_per_learning_rate(tmp_path):
    """The README's sweep (3 learning rates x 3 seeds) is three configurations of 3 seeds each, not
    one optimizer with 9 'seeds' whose spread is the spread across learning rates."""
    from tests.fixtures import write_run

    for lr, final in ((1e-4, 40.0), (3e-4, 30.0), (1e-3, 50.0)):
        for seed in range(3):
            write_run(tmp_path, "curves_synth", "adam", seed, [100, 60, final + seed], lr=lr)
    assert summary_cli.main(["--results", str(tmp_path), "--group", "default"]) == 0
    table = pd.read_csv(tmp_path / "summaries" / "default" / "summary.csv")
    assert list(table["configuration"]) == ["Adam lr=0.0001", "Adam lr=0.0003", "Adam lr=0.001"]
    assert list(table["n_seeds"]) == [3, 3, 3]
    assert table["final_train_ce_mean"].tolist() == pytest.approx([41.0, 31.0, 51.0])
    assert table["final_train_ce_std"].tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_bench_columns_turn_epochs_to_target_into_unloaded_seconds(results, tmp_path):
    """With a quiet bench table, time to target = epochs x steps per epoch x the bench's ms/step;
    a table measured on a busy machine is not used."""
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"busy": False, "rows": [
        {"dataset": "curves", "optimizer": "locoprop_m", "batch_size": 100, "ms_per_step": 50.0}]}))
    _, t, md, _ = _run(results, tmp_path / "out", "--bench", str(bench))
    lm = t.loc[("curves_synth", "locoprop_m")]  # reaches the target at epoch 4; 10 steps per epoch
    assert lm["bench_ms_per_step"] == 50.0 and lm["bench_seconds_to_target"] == pytest.approx(4 * 10 * 0.05)
    assert math.isnan(t.loc[("curves_synth", "adam"), "bench_ms_per_step"])  # no bench row for it
    assert "bench s to target" in md
    bench.write_text(json.dumps({"busy": True, "rows": [
        {"dataset": "curves", "optimizer": "locoprop_m", "batch_size": 100, "ms_per_step": 50.0}]}))
    _, t, _, _ = _run(results, tmp_path / "busy", "--bench", str(bench))
    assert math.isnan(t.loc[("curves_synth", "locoprop_m"), "bench_ms_per_step"])


def test_devices_name_the_cpu_model_when_the_runs_recorded_it():
    runs = pd.DataFrame({"device": ["cpu (1 threads)", "cpu (1 threads)", "cpu (2 threads)", "NVIDIA H200", None],
                         "cpu_model": ["Intel(R) Xeon(R) Processor", None, "Intel(R) Xeon(R) Processor",
                                       "Intel(R) Xeon(R) Platinum", "x"]})
    assert run_devices(runs) == ["NVIDIA H200", "cpu (1 threads)", "cpu (1 threads) on Intel(R) Xeon(R) Processor",
                                 "cpu (2 threads) on Intel(R) Xeon(R) Processor"]
    assert run_devices(runs[["device"]]) == ["NVIDIA H200", "cpu (1 threads)", "cpu (2 threads)"]  # older runs


def test_rows_say_where_they_were_measured_only_when_the_machines_differ(results):
    """Seconds from two machine settings are not comparable, so a table mixing them names each row's."""
    runs, metrics = load_runs(results, "default")
    table = summary.summarize(runs, metrics)
    assert set(table["measured_on"]) == {"cpu (2 threads)"}
    assert "measured on" not in summary.dataset_table(table[table["dataset"] == "curves_synth"])
    adam = (runs["dataset"] == "curves_synth") & (runs["optimizer"] == "adam")
    runs.loc[adam, "device"], runs.loc[adam, "cpu_model"] = "cpu (1 threads)", "AMD EPYC"
    table = summary.summarize(runs, metrics)
    md = summary.dataset_table(table[table["dataset"] == "curves_synth"])
    header, _, *rows = md.splitlines()
    column = header.split(" | ").index("measured on")
    cells = {row.split(" | ")[0].strip("| "): row.split(" | ")[column] for row in rows}
    assert cells["Adam"] == "cpu (1 threads) on AMD EPYC"
    assert {v for k, v in cells.items() if k != "Adam"} == {"cpu (2 threads)"}


def test_the_default_target_is_set_by_the_papers_field_not_by_the_modern_family():
    """A modern optimizer that beats the paper's field is measured against the paper's target; it
    sets the target only where nothing else ran."""
    def runs(*rows):
        return pd.DataFrame([{"dataset": "curves_synth", "optimizer": o, "config_id": o, "status": "finished",
                              "final_train_ce": v} for o, v in rows])
    field_and_modern = runs(("kfac", 40.0), ("kfac", 42.0), ("muon", 30.0), ("sgd", 100.0))
    assert summary.default_targets(field_and_modern) == {"curves_synth": pytest.approx(1.05 * 41.0)}
    assert summary.default_targets(runs(("muon", 30.0), ("muon", 32.0))) == {"curves_synth": pytest.approx(1.05 * 31.0)}


def test_a_seed_stopped_before_the_end_is_named_in_the_seeds_cell(tmp_path):
    results = make_results(tmp_path / "results")
    stopped = next((results / "runs" / "default" / "curves_synth" / "adam").glob("seed1-*")) / "summary.json"
    record = json.loads(stopped.read_text())
    stopped.write_text(json.dumps({**record, "status": "stopped", "epochs_completed": 2,
                                   "reason": "stopped by signal SIGTERM after epoch 2"}))
    _, table, md, _ = _run(results, tmp_path / "out")
    assert table.loc[("curves_synth", "adam"), "stopped_at"] == "1 stopped at epoch 2"
    assert "| Adam | 2 (1 stopped at epoch 2) | 0/2 |" in md  # its loss enters the mean: the reader sees it
    assert "| SGD | 2 | 0/2 |" in md  # every seed ran to its end: nothing added
