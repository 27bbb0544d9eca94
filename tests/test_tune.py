"""The tuning protocol: persistent studies that survive kills, pruning, shared workers, export."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from benchmarks.cli import Interrupted
from benchmarks.config import compose_config
from benchmarks.rundir import run_dir_for
from benchmarks.train import train
from benchmarks.workloads import WORKLOADS
from benchmarks.tuning.storage import GRACE_PERIOD_S, retried_trial_number
from benchmarks.tuning.protocol import Protocol
from benchmarks.tuning.search import Search, overrides_for
from tests.halting import start_halting, wait_until_halted
from tests.tiny import TINY_RUN, tiny_run

REPO = Path(__file__).resolve().parents[1]
TINY = [*TINY_RUN, "epochs=8"]
COLUMNS = ["epoch", "lr", "train_loss", "train_ce", "test_ce", "train_se", "test_se"]


def tiny_search(tmp_path, optimizer="sgd", trials=2, seeds=2, overrides=TINY, grace_period=GRACE_PERIOD_S,
                **protocol) -> Search:
    protocol = Protocol(trials=trials, seeds=seeds, eval_every=2, min_resource=2, overrides=list(overrides), **protocol)
    return Search("curves_synth", optimizer, tmp_path / "res", protocol, tuned_dir=tmp_path / "tuned",
                  heartbeat_interval=1, grace_period=grace_period)


def states(search: Search) -> list[str]:
    return [t.state.name for t in search.study.get_trials()]


def test_overrides_keep_types():
    assert overrides_for({"optimizer.lr": 1e-5, "optimizer.adapt_momentum": False, "optimizer.grafting": "adagrad",
                          "optimizer.betas": [0.9, 0.99]}) == [
        "optimizer.lr=1.0e-05", "optimizer.adapt_momentum=false", "optimizer.grafting=adagrad",
        "optimizer.betas=[0.9, 0.99]"]


def test_pruned_trial_is_recorded_as_pruned_and_its_run_says_so(tmp_path):
    search = tiny_search(tmp_path, trials=2)
    search.study.enqueue_trial({"optimizer.lr": 0.05})
    search.study.enqueue_trial({"optimizer.lr": 1e-8})  # learns nothing: worse at the first rung
    assert search.step() == "trial" and search.step() == "trial"
    first, second = search.study.get_trials()
    assert first.state == TrialState.COMPLETE and second.state == TrialState.PRUNED
    assert second.user_attrs["status"] == "pruned" and "successive halving at epoch 2" in second.user_attrs["reason"]
    summary = yaml.safe_load((search.results / second.user_attrs["run_dir"] / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["epochs_completed"] == 2
    assert not (search.results / second.user_attrs["run_dir"] / "checkpoint.pt").exists()
    # the objective is the trial's best full-evaluation train loss
    metrics = pd.read_csv(search.results / first.user_attrs["run_dir"] / "metrics.csv")
    assert first.value == pytest.approx(metrics.train_ce.min())
    assert metrics.train_ce.isna().tolist() == [False, True, False, True, False, True, False, False]


def test_notebook_exit_and_divergence_count_as_pruned(tmp_path, monkeypatch):
    workload = WORKLOADS["curves_synth"]
    exits = {**workload.tuning_exits, "max_best_loss": 1.0}
    monkeypatch.setitem(WORKLOADS, "curves_synth", dataclasses.replace(workload, tuning_exits=exits))
    search = tiny_search(tmp_path, trials=2)
    search.study.enqueue_trial({"optimizer.lr": 0.05})  # best > 1 at once: the notebook's exit
    search.study.enqueue_trial({"optimizer.lr": 0.3})
    search.step(), search.step()
    for trial in search.study.get_trials():
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs["reason"].startswith("notebook exit: best train loss")


def test_search_exports_a_config_that_reproduces_the_best_trial(tmp_path):
    search = tiny_search(tmp_path, trials=3, seeds=2)
    while search.step() != "done":
        pass
    exported = yaml.safe_load(search.tuned_path.read_text())
    source = exported["tuned_source"]
    best = search.best()
    assert exported["optimizer"]["lr"] == best.params["optimizer.lr"]
    assert source["kind"] == "search" and source["budget_trials"] == 3 and source["best_trial"] == best.number
    assert source["trials"]["complete"] + source["trials"]["pruned"] == 3
    assert source["validation"]["seeds"] == [0, 1] and source["validation"]["final_train_ce"]["n"] == 2
    assert not any(str(v).startswith("/") for v in (source["study"], *source["validation"]["runs"]))
    # seed 0 of the winner is the trial itself, copied into the final group
    final = search.results / source["validation"]["runs"][0]
    trial_run = search.results / best.user_attrs["run_dir"]
    assert final.parts[-4] == "final" and final.name == trial_run.name
    pd.testing.assert_frame_equal(pd.read_csv(final / "metrics.csv"), pd.read_csv(trial_run / "metrics.csv"))
    # the runner loads the exported file as `tuned=...` and retrains the best trial exactly
    cfg = compose_config([f"hydra.searchpath=[file://{tmp_path}]", "tuned=curves_synth/sgd",
                          f"results_dir={tmp_path / 'again'}", "logger=disabled", "progress=false", "eval_every=2",
                          *TINY])
    assert run_dir_for(cfg).name == trial_run.name  # same training config, same run id
    assert train(cfg)["status"] == "finished"
    again = pd.read_csv(run_dir_for(cfg) / "metrics.csv")
    pd.testing.assert_frame_equal(again[COLUMNS], pd.read_csv(trial_run / "metrics.csv")[COLUMNS])
    assert search.step() == "done"  # nothing left to do


def test_resumed_study_refuses_a_different_protocol(tmp_path):
    tiny_search(tmp_path, trials=2)
    with pytest.raises(SystemExit, match="another protocol"):
        tiny_search(tmp_path, trials=3)
    tiny_search(tmp_path, trials=2, seeds=5)  # more validation seeds are fine


def _tune_cli(tmp_path, *extra, trials=3, epochs=30):
    return [sys.executable, "-m", "scripts.tune", "--dataset", "curves_synth", "--optimizer", "sgd",
            "--trials", str(trials), "--seeds", "1", "--eval-every", "5", "--min-resource", "100",
            "--results", str(tmp_path / "res"), "--tuned-dir", str(tmp_path / "tuned"),
            "--heartbeat-interval", "1", "--grace-period", "3", *extra, "--",
            *tiny_run(n_train=1000), f"epochs={epochs}"]


def _study(tmp_path) -> optuna.Study:
    return optuna.load_study(study_name="curves_synth-sgd", storage=f"sqlite:///{tmp_path / 'res/tuning/curves_synth/sgd.db'}")


def test_killed_search_keeps_finished_trials_and_resumes_the_lost_one(tmp_path):
    """SIGKILL the search after epoch 3's checkpoint of its second trial (its first one complete)."""
    command = _tune_cli(tmp_path)
    proc = start_halting(command[2], command[3:], tmp_path / "halted", epoch=3, nth_run=2, cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    halted_run = wait_until_halted(proc, tmp_path / "halted")
    trials = _study(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    killed_run = trials[1]
    assert tmp_path / "res" / killed_run.user_attrs["run_dir"] == halted_run
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = {t.number: t.value for t in _study(tmp_path).get_trials(states=(TrialState.COMPLETE,))}
    subprocess.run(_tune_cli(tmp_path), cwd=REPO, check=True, capture_output=True, timeout=600)
    trials = _study(tmp_path).get_trials()
    assert {t.number: t.value for t in trials if t.number in finished_before} == finished_before
    assert trials[killed_run.number].state == TrialState.FAIL
    retry = [t for t in trials if retried_trial_number(t) == killed_run.number]
    assert len(retry) == 1 and retry[0].params == killed_run.params and retry[0].state.is_finished()
    assert len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == 3
    # the retried trial resumed its run: same run directory, metrics of an uninterrupted run
    assert retry[0].user_attrs["run_dir"] == killed_run.user_attrs["run_dir"]
    resumed = pd.read_csv(tmp_path / "res" / killed_run.user_attrs["run_dir"] / "metrics.csv")
    cfg = compose_config(["dataset=curves_synth", "optimizer=sgd", *overrides_for(killed_run.params),
                          f"results_dir={tmp_path / 'clean'}", "logger=disabled", "progress=false", "eval_every=5",
                          *tiny_run(n_train=1000), "epochs=30"])
    train(cfg)
    clean = pd.read_csv(run_dir_for(cfg) / "metrics.csv")
    pd.testing.assert_frame_equal(resumed[COLUMNS], clean[COLUMNS])


class _WorkerDied(BaseException):
    """Stands in for a kill: not an Exception, so the runner records nothing and keeps the checkpoint."""


def test_resumed_trial_is_not_judged_again_at_rungs_it_already_passed(tmp_path, monkeypatch):
    """A weak trial passes the rungs (epochs 2 and 6) while it is alone there; its worker dies at
    epoch 7; a better trial reaches the rungs meanwhile. The retry replays the passed rungs but must
    go on, as the uninterrupted trial would have: before, it was pruned on replay, so a search's
    outcome depended on when workers died."""
    import benchmarks.tuning.search as tune

    search = tiny_search(tmp_path, trials=2, grace_period=1)
    weak, good = {"optimizer.lr": 0.005}, {"optimizer.lr": 0.05}
    real_train = tune.train

    def train_until_killed(cfg, on_epoch):
        def dies_at_epoch_7(epoch, loss, replayed):
            on_epoch(epoch, loss, replayed)
            if epoch == 7:  # before epoch 7's checkpoint: the retry replays epochs 1-6
                raise _WorkerDied
        return real_train(cfg, on_epoch=dies_at_epoch_7)

    search.study.enqueue_trial(weak)
    monkeypatch.setattr(tune, "train", train_until_killed)
    with pytest.raises(_WorkerDied):
        search.step()
    monkeypatch.setattr(tune, "train", real_train)
    killed = search.study.get_trials()[0]
    assert killed.state == TrialState.RUNNING and killed.intermediate_values[2] > 0
    run = search.results / killed.user_attrs["run_dir"]
    assert (run / "checkpoint.pt").exists()

    search.study.enqueue_trial(good)
    assert search.step() == "trial"  # the good trial: complete, and better than the weak one at rung 2
    first_good = search.study.get_trials()[1]
    assert first_good.state == TrialState.COMPLETE
    assert all(first_good.intermediate_values[e] < killed.intermediate_values[e] for e in (2, 6))

    # the killed trial's heartbeat is older than the grace period (in SQLite's whole seconds): its worker is gone
    time.sleep(2.1)
    assert search.step() == "trial"
    trials = search.study.get_trials()
    retry = [t for t in trials if retried_trial_number(t) == killed.number]
    assert trials[killed.number].state == TrialState.FAIL
    assert len(retry) == 1 and retry[0].params == weak and retry[0].state == TrialState.COMPLETE
    summary = yaml.safe_load((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_completed"] == 7  # epochs=8 counts epoch 0
    assert sorted(retry[0].intermediate_values) == list(range(1, 8))  # the replayed epochs are recorded
    # and so are the rungs it passed, so later trials compete against them as against the original
    assert {k for k in retry[0].system_attrs if k.startswith("completed_rung_")} == {"completed_rung_0", "completed_rung_1"}


def test_two_workers_share_one_study_and_finish_exactly_the_budget(tmp_path):
    out = subprocess.run(_tune_cli(tmp_path, "--workers", "2", trials=4, epochs=10), cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = _study(tmp_path).get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    owners = {t.user_attrs["owner"] for t in trials}
    assert len(owners) == 2  # both processes ran trials
    assert (tmp_path / "tuned/curves_synth/sgd.yaml").exists()


def test_when_no_trial_completes_the_furthest_pruned_one_is_validated_at_full_length(tmp_path, monkeypatch):
    """Every trial ends early (a notebook-style exit at once): the winner is the pruned trial that got
    furthest with the lowest loss, and all its seeds, seed 0 too, run the whole schedule."""
    workload = WORKLOADS["curves_synth"]
    exits = {"max_loss": None, "max_best_loss": None, "patience_epoch": 3, "patience_loss": 1.0}
    monkeypatch.setitem(WORKLOADS, "curves_synth", dataclasses.replace(workload, tuning_exits=exits))
    search = tiny_search(tmp_path, trials=2, seeds=2)
    search.study.enqueue_trial({"optimizer.lr": 0.05})
    search.study.enqueue_trial({"optimizer.lr": 1e-3})
    while search.step() != "done":
        pass
    trials = search.study.get_trials()
    assert all(t.state == TrialState.PRUNED for t in trials)
    furthest = max(max(t.intermediate_values) for t in trials)
    at_furthest = {t.number: t.intermediate_values[furthest] for t in trials if furthest in t.intermediate_values}
    assert search.best().number == min(at_furthest, key=at_furthest.get)
    source = yaml.safe_load(search.tuned_path.read_text())["tuned_source"]
    assert source["winner"].startswith("no trial completed") and source["validation"]["statuses"] == ["finished"] * 2
    for run in source["validation"]["runs"]:
        assert yaml.safe_load((search.results / run / "summary.json").read_text())["epochs_completed"] == 7


def test_a_trial_given_up_too_early_stops_and_its_retry_resumes_the_run(tmp_path, monkeypatch):
    """A loaded machine delays a live trial's heartbeat past the grace period: another worker fails
    it and enqueues it again. The live worker must then stop at its next epoch (not crash, not tell),
    leaving the run's checkpoint to the retry, which resumes it to the uninterrupted numbers."""
    import benchmarks.tuning.search as tune
    from benchmarks.tuning.storage import fail_lost_trials, study_trial_id

    search = tiny_search(tmp_path, trials=1, seeds=1, grace_period=1)
    search.study.enqueue_trial({"optimizer.lr": 0.05})
    real_train = tune.train

    def train_given_up_at_epoch_3(cfg, on_epoch):
        def judged(epoch, loss, replayed):
            if epoch == 3 and not replayed:
                # the heartbeat thread is stopped below: the trial looks dead once its last beat is more
                # than the 1 s grace period old. SQLite's clock has whole seconds, so 2.1 s are needed
                time.sleep(2.1)
                fail_lost_trials(search.storage, search.study)
            on_epoch(epoch, loss, replayed)
        return real_train(cfg, on_epoch=judged)

    @contextlib.contextmanager
    def one_beat(storage, trial):  # a heartbeat thread starved after its first beat
        storage.record_heartbeat(study_trial_id(storage, trial.study, trial.number))
        yield

    monkeypatch.setattr(tune, "heartbeat", one_beat)
    monkeypatch.setattr(tune, "train", train_given_up_at_epoch_3)
    assert search.step() == "trial"  # the first worker's attempt: it stops, it does not tell
    first = search.study.get_trials()[0]
    assert first.state == TrialState.FAIL and "error" not in first.user_attrs
    run = search.results / first.user_attrs["run_dir"]
    assert yaml.safe_load((run / "summary.json").read_text())["status"] == "stopped" and (run / "checkpoint.pt").exists()
    monkeypatch.setattr(tune, "train", real_train)
    assert search.step() == "trial"  # the retry
    retry = search.study.get_trials()[1]
    assert retried_trial_number(retry) == 0 and retry.state == TrialState.COMPLETE
    assert retry.user_attrs["run_dir"] == first.user_attrs["run_dir"]
    clean = compose_config(["dataset=curves_synth", "optimizer=sgd", "optimizer.lr=0.05", *TINY, "eval_every=2",
                            f"results_dir={tmp_path / 'clean'}", "logger=disabled", "progress=false"])
    train(clean)
    pd.testing.assert_frame_equal(pd.read_csv(run / "metrics.csv")[COLUMNS],
                                  pd.read_csv(run_dir_for(clean) / "metrics.csv")[COLUMNS])



def signalled_train(real_train):
    """The runner's behaviour on SIGTERM: it records the run as stopped by the signal, then raises."""
    def train_then_signal(cfg, on_epoch=None):
        summary = {**real_train(cfg, on_epoch), "status": "stopped", "reason": "stopped by signal SIGTERM after epoch 3"}
        (run_dir_for(cfg) / "summary.json").write_text(json.dumps(summary))
        raise Interrupted(signal.SIGTERM)
    return train_then_signal


def test_a_seed_stopped_by_a_signal_ends_the_worker_and_resumes_next_time(tmp_path, monkeypatch):
    import benchmarks.tuning.search as tune

    search = tiny_search(tmp_path, trials=1, seeds=2)
    assert search.step() == "trial"
    real_train = tune.train
    monkeypatch.setattr(tune, "train", signalled_train(real_train))
    with pytest.raises(Interrupted):
        while search.step() != "done":
            pass
    assert "0/2 seeds done" not in search.describe({})[0] and "1/2 seeds done" in search.describe({})[0]
    calls = []
    monkeypatch.setattr(tune, "train", lambda cfg, on_epoch=None: calls.append(cfg.seed) or real_train(cfg, on_epoch))
    while search.step() != "done":
        pass
    assert calls == [1]  # the stopped seed ran again (resumed), nothing else did
    assert json.loads((run_dir_for(search.seed_configs()[1]) / "summary.json").read_text())["status"] == "finished"


def test_a_campaign_run_stopped_by_a_signal_is_not_done_and_resumes(tmp_path, monkeypatch):
    import benchmarks.orchestration.campaign as campaign

    configs = [compose_config(["dataset=curves_synth", "optimizer=sgd", *TINY, f"seed={s}", "eval_every=2",
                               f"results_dir={tmp_path}", "logger=disabled", "progress=false"]) for s in (0, 1)]
    runs = campaign.Runs("curves_synth", lambda: configs)
    real_train = campaign.train
    assert runs.step() == "seed" and runs.describe({})[0] == "curves_synth: 1/2 runs done"
    monkeypatch.setattr(campaign, "train", signalled_train(real_train))
    with pytest.raises(Interrupted):
        runs.step()
    assert runs.describe({})[0] == "curves_synth: 1/2 runs done"  # stopped by a signal: not done
    calls = []
    monkeypatch.setattr(campaign, "train", lambda cfg, on_epoch=None: calls.append(cfg.seed) or real_train(cfg, on_epoch))
    assert runs.step() == "seed" and runs.step() == "done"
    assert calls == [1] and runs.describe({})[0] == "curves_synth: 2/2 runs done"
