"""Plans: every entry point answers --help and a dry run that totals what it will cost; reproduce
chooses CUDA graphs per optimizer; executors place workers on GPUs and stop them at a deadline."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.optimizers import paper_optimizers
from scripts import plan as plan_module, reproduce
from scripts.plan import Plan, PlannedRun, Processes, bench_for

ENTRY_POINTS = ("reproduce", "campaign", "gpu_campaign", "ablations", "demo", "tune", "report", "figures", "summary",
                "scaling", "download_data")
TINY = ["dataset.n_train=200", "dataset.n_test=50", "batch_size=100", "model.sizes=[784,16,4,16,784]", "epochs=2",
        "logger=disabled", "progress=false", "throwaway_steps=0"]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_every_entry_point_answers_help(module):
    out = subprocess.run([sys.executable, "-m", f"scripts.{module}", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=plan_module.REPO)
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr[-1000:]


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
    assert bench_for(device, results)[0] == "this.json" and bench_for("nowhere", results) == (None, {})

    argv = ["--dry-run", "--dataset", "curves_synth,curves", "--optimizer", "adam,sgd", "--seeds", "1",
            "--results", str(results), f"dataset.root={tmp_path / 'no-data'}", *TINY]
    assert reproduce.main(argv) == 1  # CURVES' file is missing
    text = capsys.readouterr().out
    assert "cost estimates: bench table this.json" in text
    assert "curves/adam seed 0" in text and "waiting for data" in text and "make data" in text
    # curves_synth is generated: 2 runs to do, priced for adam (2 epochs x 2 steps x 0.6 s), unknown for sgd
    assert "to do: 2 runs, 0.00 h of training (+1 runs without a bench figure); done: 0; waiting for data: 2 runs" in text
    assert "curves_synth/adam seed 0" in text and "0.0 min" in text


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
