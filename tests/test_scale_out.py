"""Many workers on one study: Optuna's heartbeats and retries on SQLite, the journal file and a real
PostgreSQL server; workers launched through submitit (its local executor: the SLURM code path)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from benchmarks.tuning.storage import fail_lost_trials, heartbeat, open_storage, retried_trial_number, study_trial_id
from tests.tiny import tiny_run

REPO = Path(__file__).resolve().parents[1]
TINY_RUN = tiny_run(n_train=1000)
TRIALS = 5
GRACE_S = 15  # with a beat every second: a killed worker is found soon, a merely loaded one is not given up


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory):
    """A PostgreSQL server started for these tests and stopped after them (the pgserver wheel bundles
    one; it runs as root too, where the system's initdb refuses to)."""
    try:
        import pgserver
    except ModuleNotFoundError:
        pytest.skip("no PostgreSQL server can start here: the pgserver package is not installed "
                    "(pip install -e '.[dev]' installs it)")
    try:
        server = pgserver.get_server(str(tmp_path_factory.mktemp("pgdata")), cleanup_mode="stop")
    except Exception as err:  # noqa: BLE001 - report why, then skip
        pytest.skip(f"no PostgreSQL server can start here: pgserver failed ({type(err).__name__}: {err})")
    yield server.get_uri()
    server.cleanup()


def storage_url(kind: str, tmp_path: Path, request) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    if kind == "journal":
        return f"journal:{tmp_path / 'study.journal'}"
    return request.getfixturevalue("postgres_url")


def tune_cli(tmp_path: Path, storage: str, *extra: str, trials: int = TRIALS, epochs: int = 30) -> list[str]:
    return [sys.executable, "-m", "scripts.tune", "--dataset", "curves_synth", "--optimizer", "sgd",
            "--trials", str(trials), "--seeds", "1", "--eval-every", "5", "--min-resource", "1000", "--no-exits",
            "--results", str(tmp_path / "res"), "--tuned-dir", str(tmp_path / "tuned"), "--storage", storage,
            "--heartbeat-interval", "1", "--grace-period", str(GRACE_S), *extra, "--", *TINY_RUN, f"epochs={epochs}"]


def load(storage: str) -> optuna.Study:
    return optuna.load_study(study_name="curves_synth-sgd", storage=open_storage(storage, 1, GRACE_S))


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_a_trial_whose_heartbeat_stopped_is_failed_and_its_setting_enqueued_once(kind, tmp_path, request):
    """Two trials asked by hand beat once; then one beats in `heartbeat` throughout and the other stays
    quiet. Past the grace period `fail_lost_trials` fails the quiet one only and enqueues its setting
    once (asking again does not enqueue it twice)."""
    storage = open_storage(storage_url(kind, tmp_path, request), heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name="beats")
    with warnings.catch_warnings():  # Optuna warns that its heartbeats are meant for Study.optimize
        warnings.simplefilter("ignore", UserWarning)
        lost, alive = (study.ask({"x": FloatDistribution(0.0, 1.0)}) for _ in range(2))
    for trial in (lost, alive):  # both have beaten: only the heartbeat thread keeps `alive` from going stale
        storage.record_heartbeat(study_trial_id(storage, study, trial.number))
    with heartbeat(storage, alive):
        time.sleep(3.2)  # the lost trial's beat is 3 s old in SQLite's whole seconds too, past the 2 s grace
        fail_lost_trials(storage, study)
        fail_lost_trials(storage, study)
        states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    retry = study.get_trials()[2]
    assert retried_trial_number(retry) == lost.number and retry.params == lost.params


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_three_workers_lose_one_and_the_study_ends_exactly_complete(kind, tmp_path, request):
    """Three workers; one is SIGKILLed in the middle of a trial. The study must end with exactly the
    budget of complete trials, the killed trial failed and run again once (from its checkpoint),
    no setting run twice and every complete trial's result on disk."""
    storage = storage_url(kind, tmp_path, request)
    main = subprocess.Popen(tune_cli(tmp_path, storage, "--workers", "3"), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    killed, deadline = None, time.time() + 300
    while killed is None and time.time() < deadline and main.poll() is None:
        time.sleep(0.2)
        try:
            running = load(storage).get_trials(states=(TrialState.RUNNING,))
        except Exception:  # noqa: BLE001 - the study or its tables do not exist yet
            continue
        for trial in running:
            pid = int(str(trial.user_attrs.get("owner", ":0")).rpartition(":")[2] or 0)
            run = tmp_path / "res" / trial.user_attrs.get("run_dir", "none")
            if pid and pid != main.pid and (run / "checkpoint.pt").exists():
                os.kill(pid, signal.SIGKILL)  # a worker, not the command that started them
                killed = trial
                break
    if killed is None:
        main.kill()
        pytest.fail(f"no worker's trial was caught running; stderr: {main.communicate()[1][-2000:]}")
    _, stderr = main.communicate(timeout=600)
    assert main.returncode == 0, stderr[-3000:]

    trials = load(storage).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == TRIALS  # the budget exactly: nothing counted twice, nothing lost
    assert trials[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if retried_trial_number(t) == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE and retries[0].params == killed.params, \
        [(t.number, t.state.name, t.user_attrs.get("status")) for t in retries]
    settings = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(settings)) == TRIALS  # no setting run twice
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.FAIL}
    for trial in complete:  # every result is on disk and is the trial's objective
        run = tmp_path / "res" / trial.user_attrs["run_dir"]
        metrics = pd.read_csv(run / "metrics.csv")
        assert trial.value == pytest.approx(metrics.train_ce.min()) and metrics.epoch.iloc[-1] == 29
        assert not (run / "checkpoint.pt").exists()
    assert retries[0].user_attrs["run_dir"] == killed.user_attrs["run_dir"]  # it resumed the killed run


def test_a_bad_storage_url_names_the_missing_driver(tmp_path):
    out = subprocess.run(tune_cli(tmp_path, "mysql://nobody@nowhere/db"), cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode != 0 and "--storage mysql://nobody@nowhere/db: the database driver is not installed" in out.stderr


@pytest.mark.slow
def test_workers_launched_through_submitit_share_one_study(tmp_path):
    """`--launcher local`: the SLURM launcher's code path with submitit's local executor."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    out = subprocess.run(tune_cli(tmp_path, storage, "--workers", "2", "--launcher", "local", trials=4, epochs=6),
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[launch] 2 worker jobs (local)" in out.stdout
    trials = load(storage).get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["owner"] for t in trials}) == 2  # both jobs ran trials
    assert (tmp_path / "tuned" / "curves_synth" / "sgd.yaml").exists()
    assert list((tmp_path / "res" / "submitit").glob("*/*_log.out"))  # submitit's own logs, per job


@pytest.mark.slow
def test_a_hydra_sweep_runs_through_the_submitit_launcher(tmp_path):
    """`hydra/launcher=slurm` is hydra-submitit-launcher; its local twin runs the same plugin here."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher is not installed "
                        "(pip install -e '.[slurm]')")
    out = subprocess.run([sys.executable, "-m", "benchmarks.train", "-m", "hydra/launcher=submitit_local",
                          "optimizer=sgd", "optimizer.lr=1e-3,1e-2", "dataset=curves_synth", "epochs=2",
                          "stop_epoch=2", "schedule=constant", *tiny_run(),
                          "logger=disabled", "progress=false", f"results_dir={tmp_path}", "group=sweep"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted((tmp_path / "runs" / "sweep" / "curves_synth" / "sgd").iterdir())
    assert len(runs) == 2 and all((r / "summary.json").exists() for r in runs)


def test_the_slurm_launcher_config_names_partition_time_and_gpus():
    from hydra import compose, initialize_config_dir

    from benchmarks.config import CONFIG_DIR

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher is not installed")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1 and launcher.timeout_min == 240
    assert shutil.which("sbatch") or "SlurmLauncher" in launcher._target_
