"""Plans: every entry point answers --help and a dry run that totals what it will cost; reproduce
chooses CUDA graphs per optimizer; executors place workers on GPUs and stop them at a deadline."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.optimizers import paper_optimizers
from benchmarks.orchestration import plan as plan_module
from benchmarks.orchestration import reproduce
from scripts import reproduce as reproduce_cli
from benchmarks.benchtable import choose_table
from benchmarks.orchestration.plan import Plan, PlannedRun, Processes
from tests.tiny import TINY_RUN

ENTRY_POINTS = sorted(p.stem for p in (plan_module.REPO / "scripts").glob("*.py") if p.stem != "__init__")
TINY = [*TINY_RUN, "epochs=2", "logger=disabled", "progress=false"]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_every_entry_point_answers_help(module):
    out = subprocess.run([sys.executable, "-m", f"scripts.{module}", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=plan_module.REPO)
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr[-1000:]
    purpose, example = out.stdout.split("\n\n")[1:3]  # the docstring: what it does, then how to call it
    assert purpose.strip() and f"python -m scripts.{module}" in example, out.stdout[:600]


def test_with_cuda_graphs_each_optimizer_composes_and_the_unsafe_ones_run_eagerly(tmp_path):
    plan = reproduce.make_plan(["mnist"], paper_optimizers(), 1, ["cuda_graph=true"], str(tmp_path), "g")
    for run in plan.runs:
        cfg = run.cfg  # composes
        optimizer = cfg.optimizer.name
        assert cfg.cuda_graph == reproduce.replays_in_a_graph(optimizer), optimizer
        assert ("(eager)" in run.label) == (not cfg.cuda_graph)
    eager = {run.cfg.optimizer.name for run in plan.runs if not run.cfg.cuda_graph}
    assert {"kfac", "shampoo"} <= eager and "locoprop_m" not in eager


def test_a_dry_run_totals_the_runs_to_do_apart_from_those_waiting_for_data(tmp_path, capsys):
    results = tmp_path / "res"
    bench = results / "bench"
    bench.mkdir(parents=True)
    device = plan_module.target_device([PlannedRun(["dataset=curves_synth", "optimizer=adam", *TINY], "x")])
    rows = [{"dataset": "curves", "optimizer": "adam", "batch_size": 100, "ms_per_step": 600.0}]
    (bench / "this.json").write_text(json.dumps({"device": device, "rows": rows}))
    other = [{"dataset": "curves", "optimizer": "sgd", "batch_size": 100, "ms_per_step": 1.0}]
    (bench / "other_machine.json").write_text(json.dumps({"device": "another CPU x64", "rows": other}))
    assert choose_table(device, [bench]).table == "this.json" and choose_table("nowhere", [bench]).table is None

    argv = ["--dry-run", "--dataset", "curves_synth,curves", "--optimizer", "adam,sgd", "--seeds", "1",
            "--results", str(results), f"dataset.root={tmp_path / 'no-data'}", *TINY]
    assert reproduce_cli.main(argv) == 1  # CURVES' file is missing
    text = capsys.readouterr().out
    assert "cost estimates: bench table this.json" in text
    assert "curves/adam seed 0" in text and "waiting for data" in text and "make data" in text
    # curves_synth is generated: 2 runs to do, priced for adam (2 epochs x 2 steps x 0.6 s), unknown for sgd
    assert "to do: 2 runs, 2 s of training (+1 runs without a bench figure); done: 0; waiting for data: 2 runs" in text
    assert "curves_synth/adam seed 0" in text and "0.0 h" not in text


COMMITTED_CPU = "Intel(R) Xeon(R) Processor (family 6, model 167)"  # results/bench/ has its one-thread table


def test_a_two_thread_dry_run_is_priced_by_the_committed_one_thread_table_and_names_it(monkeypatch, tmp_path,
                                                                                         capsys):
    monkeypatch.setattr(plan_module, "cpu_model", lambda: COMMITTED_CPU)
    optimizers = ["sgd", "kfac", "locoprop_m"]
    argv = ["--dry-run", "--threads", "2", "--dataset", "mnist", "--optimizer", ",".join(optimizers), "--seeds", "1",
            "--results", str(tmp_path), f"dataset.root={tmp_path}"]
    assert reproduce_cli.main(argv) == 1  # no MNIST here: the runs wait for data, and are priced all the same
    text = capsys.readouterr().out
    table = json.loads((plan_module.REPO_BENCH / "intel_xeon_processor_family_6_model_167_x1.json").read_text())
    ms = {r["optimizer"]: r["ms_per_step"] for r in table["rows"] if r["dataset"] == "mnist"}
    plan = reproduce.make_plan(["mnist"], optimizers, 1, [], str(tmp_path), "reproduce")
    hours = sum(ms[run.cfg.optimizer.name] * run.steps() for run in plan.runs) / 1e3 / 3600
    assert hours > 1
    assert f"runs on {COMMITTED_CPU} x2" in text
    assert "cost estimates: bench table intel_xeon_processor_family_6_model_167_x1.json" in text
    assert "with 1 thread(s) instead of 2" in text
    assert f"waiting for data: 3 runs ({hours:.2f} h once it is there)" in text


def test_a_plan_no_table_prices_says_unknown_never_zero_hours(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(plan_module, "cpu_model", lambda: "Some Other CPU")
    assert reproduce_cli.main(["--dry-run", "--dataset", "curves_synth", "--optimizer", "sgd,adam", "--seeds", "1",
                           "--results", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "cost estimates: unknown: no bench table of Some Other CPU x" in text
    assert "to do: 2 runs, unknown hours of training" in text and "0.00 h" not in text
    plan = reproduce.make_plan(["curves_synth"], ["sgd"], 1, [], str(tmp_path), "reproduce")
    assert "unknown hours of training" in plan.summary(tmp_path)


def _table(device, busy=False, threads_rows=None):
    rows = [{"dataset": "curves", "optimizer": "sgd", "batch_size": 1000, "ms_per_step": 10.0}]
    return {"device": device, "busy": busy, "load_average": {"before": [3.0], "after": [3.5], "cpu_count": 2},
            "rows": rows}


def test_the_table_of_this_thread_count_wins_a_busy_one_is_explained_and_used_only_when_nothing_quiet_fits(tmp_path):
    for name, table in {"cpu_x1.json": _table("CPU (family 1) x1"), "cpu_x2.json": _table("CPU (family 1) x2", True),
                        "cpu_x4.json": _table("CPU (family 1) x4"), "other.json": _table("CPU (family 2) x2"),
                        "gpu.json": _table("NVIDIA H100")}.items():
        (tmp_path / name).write_text(json.dumps(table))
    choice = choose_table("CPU (family 1) x4", [tmp_path])
    assert choice.table == "cpu_x4.json" and choice.notes == ()
    choice = choose_table("CPU (family 1) x2", [tmp_path])  # its own table is busy: the nearest quiet one
    assert choice.table == "cpu_x1.json" and any("cpu_x2.json is not used" in n and "busy" in n for n in choice.notes)
    choice = choose_table("CPU (family 3) x2", [tmp_path])  # the same CPU name, another detail: a note says so
    assert choice.table == "other.json" and any("a CPU of the same name" in n for n in choice.notes)
    assert choose_table("NVIDIA H200", [tmp_path]).table is None
    (tmp_path / "cpu_x1.json").unlink()
    (tmp_path / "cpu_x4.json").unlink()
    (tmp_path / "other.json").unlink()
    choice = choose_table("CPU (family 1) x2", [tmp_path])
    assert choice.table == "cpu_x2.json" and any("busy machine (load average 3.50 on 2 cores)" in n
                                                 for n in choice.notes)


def test_the_preflight_names_each_missing_data_set_once_with_its_fix_and_trains_nothing(tmp_path, capsys):
    argv = ["--dataset", "mnist,curves,curves_synth", "--optimizer", "sgd,adam", "--seeds", "3",
            "--results", str(tmp_path), f"dataset.root={tmp_path / 'nothing-here'}", *TINY]
    assert reproduce_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "cannot start, missing:" and len(err) == 3
    assert err[1].strip().startswith("data mnist:") and err[2].strip().startswith("data curves:")
    assert all("make data" in line and "LOCOPROP_DATA" in line for line in err[1:])
    assert not (tmp_path / "runs").exists()


def test_one_worker_per_gpu_gets_its_own_device(monkeypatch, tmp_path):
    started = []

    class FakePopen:
        def __init__(self, cmd, cwd, env, stdout, stderr):
            started.append(env["CUDA_VISIBLE_DEVICES"])
            self.returncode = 0

        def poll(self):
            return 0

    monkeypatch.setattr(plan_module.subprocess, "Popen", FakePopen)
    runs = [PlannedRun(["optimizer=sgd", f"seed={k}", f"results_dir={tmp_path}", *TINY], f"run {k}") for k in range(4)]
    statuses = Processes(2, gpus=[3, 5]).run(Plan(runs))
    assert sorted(started) == ["3", "3", "5", "5"] and set(statuses) == {f"run {k}" for k in range(4)}
