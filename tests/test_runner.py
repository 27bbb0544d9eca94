"""The runner end to end on tiny generated data: run tables, divergence, resume, config composition."""
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from benchmarks.optimizers import make_optimizer, make_step, optimizer_info, optimizer_names
from benchmarks import data
from benchmarks.config import CONFIG_DIR, compose_config
from benchmarks.models import build_autoencoder
from benchmarks.tracking import METRIC_COLUMNS
from benchmarks.rundir import RunLock, cpu_model, run_dir_for, run_id_for
from benchmarks.train import train
from tests.halting import start_halting, wait_until_halted

REPO = Path(__file__).resolve().parents[1]
DATASETS = ["mnist", "faces", "curves", "curves_synth", "faces_synth"]
OPTIMIZERS = sorted(p.stem for p in (CONFIG_DIR / "optimizer").glob("*.yaml"))
FIRST_ORDER = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "rmsprop_tf1", "adagrad_tf1", "adam_tf1"]
TINY = ["dataset=curves_synth", "dataset.n_train=300", "dataset.n_test=100", "batch_size=100",
        "model.sizes=[784,32,8,32,784]", "logger=disabled", "progress=false", "throwaway_steps=1"]


def tiny_cfg(tmp_path, *overrides):
    return compose_config([*TINY, f"results_dir={tmp_path}", *overrides])


def test_every_first_order_optimizer_config_exists():
    assert set(FIRST_ORDER) <= set(OPTIMIZERS)


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_dataset_and_optimizer_config_composes(dataset, optimizer):
    cfg = compose_config([f"dataset={dataset}", f"optimizer={optimizer}", "logger=disabled"])
    assert cfg.dataset.name == dataset and cfg.optimizer.name == optimizer
    model = build_autoencoder(sizes=[6, 4, 2, 4, 6], loss_kind="gaussian" if "faces" in dataset else "bernoulli")
    opt = make_optimizer(model, dict(cfg.optimizer))  # every config's keys are real hyper-parameters
    make_step(model, opt)(torch.rand(8, 6))


def test_unknown_optimizer_and_bad_hyper_parameter_are_named():
    with pytest.raises(ValueError, match="no optimizer config 'adamw2'.*choose one of: adagrad"):
        compose_config(["optimizer=adamw2"])
    model = build_autoencoder(sizes=[6, 4, 2, 4, 6])
    with pytest.raises(ValueError, match="unknown optimizer 'adamw2'"):
        optimizer_info("adamw2")
    adam = OmegaConf.to_container(compose_config(["optimizer=adam", "+optimizer.momentum=0.9"]).optimizer)
    with pytest.raises(ValueError, match=r"optimizer 'adam' \(configs/optimizer/adam.yaml\): a hyper-parameter is not "
                       r"accepted .*TypeError: .*momentum"):
        make_optimizer(model, adam)
    with pytest.raises(ValueError, match="names no class"):
        make_optimizer(model, {"name": "adam", "lr": 1e-3})


def test_construction_errors_say_what_kind_of_failure_they_are():
    """An invalid value, a structural mismatch and a missing package are three different messages,
    each quoting the underlying exception and naming the config file."""
    model = build_autoencoder(sizes=[6, 4, 2, 4, 6])
    adam = OmegaConf.to_container(compose_config(["optimizer=adam", "optimizer.lr=-1.0"]).optimizer)
    with pytest.raises(ValueError, match=r"configs/optimizer/adam.yaml\): a hyper-parameter value is invalid: "
                       r"ValueError: Invalid learning rate: -1.0"):
        make_optimizer(model, adam)
    # torch's Muon takes matrices only; handed every parameter (biases too) it refuses whatever the settings
    muon = {"_target_": "torch.optim.Muon", "name": "bare_muon", "lr": 0.02}
    with pytest.raises(ValueError, match=r"optimizer 'bare_muon': it does not accept this model's parameters "
                       r"\(a structural mismatch\): ValueError: .*2D"):
        make_optimizer(model, muon)
    missing = {"_target_": "no_such_package.Optimizer", "name": "x", "extra": "modern"}
    with pytest.raises(ValueError, match=r"cannot import 'no_such_package.Optimizer': ModuleNotFoundError: .*"
                       r"optional dependencies 'modern': pip install 'locoprop-bench\[modern\]'"):
        make_optimizer(model, missing)


def test_end_to_end_run_writes_tables(tmp_path):
    cfg = tiny_cfg(tmp_path, "optimizer=adam", "optimizer.lr=1e-3", "epochs=2", "schedule=constant")
    summary = train(cfg)
    run_dir = run_dir_for(cfg)
    assert summary["status"] == "finished"
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "metrics.csv", "summary.json", "reconstructions.npz"}
    assert not (run_dir / "checkpoint.pt").exists()
    with RunLock(run_dir):  # released
        pass
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics.columns) == METRIC_COLUMNS and list(metrics.epoch) == [0, 1, 2]
    assert metrics.train_ce.iloc[-1] < metrics.train_ce.iloc[0]
    assert metrics.wallclock_s.is_monotonic_increasing and math.isnan(metrics.step_ms.iloc[0])
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["final_train_ce"] == pytest.approx(metrics.train_ce.iloc[-1])
    assert on_disk["best_train_ce"] == pytest.approx(metrics.train_ce.min())
    assert on_disk["cpu_model"] == cpu_model()  # the hardware is part of every run's record
    # a second invocation of a finished run is skipped, not re-trained or clobbered
    assert train(cfg)["wallclock_s"] == summary["wallclock_s"]


def test_diverging_run_is_recorded_not_raised(tmp_path):
    cfg = tiny_cfg(tmp_path, "optimizer=sgd", "optimizer.lr=1e38", "epochs=3", "schedule=constant")
    summary = train(cfg)
    assert summary["status"] == "diverged" and "non-finite" in summary["reason"]
    assert (run_dir_for(cfg) / "metrics.csv").exists()


def test_notebook_thresholds_end_hopeless_runs(tmp_path):
    cfg = tiny_cfg(tmp_path, "optimizer=sgd", "optimizer.lr=0.0", "epochs=4", "schedule=constant",
                   "divergence.patience_epoch=1", "divergence.patience_loss=1.0")
    summary = train(cfg)
    assert summary["status"] == "diverged" and summary["epochs_completed"] == 1
    assert "still >" in summary["reason"]


def test_stop_epoch_keeps_schedule_and_resume_equals_uninterrupted(tmp_path):
    common = ["optimizer=rmsprop_tf1", "optimizer.lr=1e-4", "epochs=10", "schedule.warmup_epochs=2"]
    full_cfg = tiny_cfg(tmp_path / "a", *common, "stop_epoch=4")
    full = train(full_cfg)
    assert full["status"] == "stopped"
    part_cfg = tiny_cfg(tmp_path / "b", *common, "stop_epoch=2")
    train(part_cfg)
    assert (run_dir_for(part_cfg) / "checkpoint.pt").exists()
    resumed_cfg = tiny_cfg(tmp_path / "b", *common, "stop_epoch=4")
    train(resumed_cfg)
    a = pd.read_csv(run_dir_for(full_cfg) / "metrics.csv")
    b = pd.read_csv(run_dir_for(resumed_cfg) / "metrics.csv")
    cols = ["epoch", "lr", "train_loss", "train_ce", "test_ce", "train_se", "test_se"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert list(a.lr) == pytest.approx([0.0, 0.0, 0.5e-4, 1e-4 * (1 - 1 / 8), 1e-4 * (1 - 2 / 8)])


def test_run_id_depends_on_training_config_only(tmp_path):
    a = tiny_cfg(tmp_path, "optimizer=adam")
    assert run_id_for(a) == run_id_for(tiny_cfg(tmp_path / "x", "optimizer=adam", "progress=true", "group=g"))
    assert run_id_for(a) != run_id_for(tiny_cfg(tmp_path, "optimizer=adam", "optimizer.lr=0.5"))
    assert run_id_for(a) != run_id_for(tiny_cfg(tmp_path, "optimizer=adam", "seed=1"))


def test_concurrent_writers_of_one_run_are_refused(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RuntimeError, match="in use"):
            with RunLock(tmp_path):
                pass
    held = subprocess.Popen([sys.executable, "-c", "import sys, time; from benchmarks.rundir import RunLock\n"
                             f"with RunLock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert held.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match="in use by another process"):
            with RunLock(tmp_path):
                pass
    finally:
        held.kill()
        held.wait()
    with RunLock(tmp_path):  # the dead holder's lock went with it: the run is free again
        pass


def test_missing_data_names_the_file(tmp_path):
    cfg = compose_config(["dataset=curves", f"dataset.root={tmp_path}", "logger=disabled", f"results_dir={tmp_path}"])
    with pytest.raises(data.DataError, match="digs3pts_1.mat"):
        train(cfg)


INNER = optimizer_names("optimizer/inner_optimizer")


def test_every_inner_optimizer_config_is_a_first_order_optimizer():
    first_order = {n for n in optimizer_names() if optimizer_info(n)["family"] == "first_order"}
    assert set(INNER) <= first_order and {"sgd", "adam", "rmsprop_tf1"} <= set(INNER)


@pytest.mark.parametrize("inner", INNER)
def test_locoprop_inner_optimizer_is_selectable_from_the_cli(inner):
    cfg = compose_config(["optimizer=locoprop_m", f"optimizer/inner_optimizer={inner}"])
    model = build_autoencoder(sizes=[6, 4, 2, 4, 6])
    opt = make_optimizer(model, OmegaConf.to_container(cfg.optimizer))
    factory = opt.inner_optimizer  # a functools.partial of the class the outer config of that name uses
    outer = compose_config([f"optimizer={inner}"]).optimizer._target_
    assert f"{factory.func.__module__}.{factory.func.__name__}".split(".")[-1] == outer.split(".")[-1]
    settings = OmegaConf.to_container(cfg.optimizer.inner_optimizer)
    assert factory.keywords == {k: v for k, v in settings.items() if k not in ("_target_", "_partial_", "name")}
    make_step(model, opt)(torch.rand(8, 6))


@pytest.mark.slow
def test_a_run_resumed_on_other_code_records_which_epochs_ran_where(tmp_path, monkeypatch):
    import benchmarks.train as runner

    common = ["optimizer=sgd", "optimizer.lr=0.01", "epochs=6"]
    monkeypatch.setattr(runner, "git_commit", lambda: "a" * 40)
    train(tiny_cfg(tmp_path, *common, "stop_epoch=2"))
    same = train(tiny_cfg(tmp_path, *common, "stop_epoch=3"))  # resumed on the same code: one stretch
    assert same["git_commit"] == "a" * 40 and "segments" not in same
    monkeypatch.setattr(runner, "git_commit", lambda: "b" * 40)
    ended = train(tiny_cfg(tmp_path, *common))
    here = {"device": ended["device"], "cpu_model": cpu_model()}
    assert ended["git_commit"] == "b" * 40  # the code of the last stretch, read when it began
    assert ended["segments"] == [{"from_epoch": 0, "git_commit": "a" * 40, **here},
                                 {"from_epoch": 3, "git_commit": "b" * 40, **here}]
    from types import SimpleNamespace
    from benchmarks.reporting.report import mixed_versions, run_segments, segments_text
    row = pd.Series({**ended, "segments": ended["segments"]})
    assert mixed_versions(SimpleNamespace(runs=pd.DataFrame([row]))) == {"sgd": "2 commits"}  # one seed, two codes
    assert mixed_versions(SimpleNamespace(runs=pd.DataFrame([pd.Series(same)]))) == {}
    assert segments_text(run_segments(row), ended["epochs_completed"]) == (
        f"epochs 1-3 at commit `aaaaaaa` ({here['cpu_model']}, {here['device']}); "
        f"epochs 4-{ended['epochs_completed']} at commit `bbbbbbb` ({here['cpu_model']}, {here['device']})")


def test_killed_run_resumes_to_the_uninterrupted_metrics(tmp_path):
    """SIGKILL a training process after epoch 3's checkpoint; re-running the same command resumes
    from that checkpoint (taking over the dead process's lock) and ends with the same numbers."""
    args = [*TINY, "optimizer=adam", "optimizer.lr=1e-3", "epochs=12", "schedule=constant"]

    def command(results):
        return [sys.executable, "-m", "benchmarks.train", *args, f"results_dir={results}"]

    proc = start_halting("benchmarks.train", [*args, f"results_dir={tmp_path / 'killed'}"], tmp_path / "halted",
                         epoch=3, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = wait_until_halted(proc, tmp_path / "halted") / "metrics.csv"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(metrics.read_text().splitlines()) == 5 and not (metrics.parent / "summary.json").exists()
    assert (metrics.parent / "checkpoint.pt").exists()
    assert (metrics.parent / "run.lock").exists()  # the killed process's lock file, no longer held
    subprocess.run(command(tmp_path / "killed"), cwd=REPO, check=True, capture_output=True, timeout=300)
    subprocess.run(command(tmp_path / "clean"), cwd=REPO, check=True, capture_output=True, timeout=300)
    killed = pd.read_csv(metrics)
    clean = pd.read_csv(next((tmp_path / "clean").rglob("metrics.csv")))
    cols = ["epoch", "lr", "train_loss", "train_ce", "test_ce", "train_se", "test_se"]
    assert len(clean) == 13
    pd.testing.assert_frame_equal(killed[cols], clean[cols])


@pytest.mark.parametrize("optimizer", ["locoprop_m", "locoprop_s", "kfac", "shampoo", "foof", "dtp"])
def test_model_aware_and_second_order_optimizers_run_end_to_end(tmp_path, optimizer):
    cfg = tiny_cfg(tmp_path, f"optimizer={optimizer}", "epochs=2", "schedule=constant", "throwaway_steps=2")
    summary = train(cfg)
    assert summary["status"] == "finished", summary["reason"]
    metrics = pd.read_csv(run_dir_for(cfg) / "metrics.csv")
    assert metrics.train_ce.iloc[-1] < metrics.train_ce.iloc[0]


@pytest.mark.parametrize("optimizer", ["locoprop_m", "kfac"])
def test_model_aware_optimizers_survive_deepcopy(optimizer):
    import copy

    torch.manual_seed(0)
    model = build_autoencoder(sizes=[6, 4, 2, 4, 6]).double()
    opt = make_optimizer(model, OmegaConf.to_container(compose_config([f"optimizer={optimizer}"]).optimizer))
    x = torch.rand(8, 6, dtype=torch.float64)
    make_step(model, opt)(x)
    model_copy, opt_copy = copy.deepcopy((model, opt))
    torch.manual_seed(1)
    a = make_step(model, opt)(x)
    torch.manual_seed(1)
    b = make_step(model_copy, opt_copy)(x)
    assert torch.equal(a, b)
    for p, q in zip(model.parameters(), model_copy.parameters()):
        assert torch.equal(p, q) and p.data_ptr() != q.data_ptr()
