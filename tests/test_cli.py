"""The command line as a newcomer meets it: expected mistakes end in one line that names the key
and value (exit 2, no traceback); outputs go where --results points; SIGTERM and Ctrl-C stop a
long command cleanly, and the same command resumes it."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks import cli
from benchmarks.config import compose_config
from benchmarks.results import read_summary
from benchmarks.rundir import run_dir_for
from benchmarks.train import train
from benchmarks.orchestration import reproduce
from scripts import reproduce as reproduce_cli
from benchmarks.tuning import search as tune
from scripts import tune as tune_cli
from tests.halting import start_halting, wait_until_halted
from tests.tiny import TINY_RUN

REPO = Path(__file__).resolve().parents[1]
TINY = [*TINY_RUN, "logger=disabled", "progress=false"]


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout


# ----------------------------------------------------------------------------- one-line errors

@pytest.mark.parametrize("args, named", [
    (["scripts.tune", "--dataset", "curves_synth", "--optimizer", "adamm"], ["unknown optimizer 'adamm'",
                                                                            "did you mean 'adam'?", "sgd"]),
    (["scripts.tune", "--dataset", "mnsit", "--optimizer", "adam"], ["unknown dataset 'mnsit'", "did you mean 'mnist'?"]),
    (["benchmarks.train", "seed=-1"], ["seed=-1"]),
    (["benchmarks.train", "epoch=1"], ["'epoch'", "did you mean 'epochs'?"]),
    (["benchmarks.train", "optimizer.lr=-1"], ["optimizer.lr=-1"]),
])
def test_an_expected_mistake_is_one_line_naming_it_with_exit_status_2(tmp_path, args, named):
    out = subprocess.run([sys.executable, "-m", *args, *(["--results", str(tmp_path)] if "--dataset" in args else
                                                         [f"results_dir={tmp_path}", *TINY])],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and all(word in lines[0] for word in named), lines[0]
    assert "+epoch" not in lines[0]  # Hydra's own advice for a typo would add a new key


def test_debug_shows_the_traceback(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'"):
        cli.run(tune_cli.main, ["--dataset", "curves_synth", "--optimizer", "adamm", "--results", str(tmp_path), "--debug"])


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "error: --seeds must be >= 1, got --seeds 0"),
    (["--optimizer", "sgd,adamm"], "error: unknown optimizer 'adamm'; did you mean 'adam'? choose one of: adagrad,"),
])
def test_reproduce_refuses_a_plan_of_nothing_or_of_unknown_names(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit:
        cli.run(reproduce_cli.main, [*argv, "--results", str(tmp_path), "--dry-run"])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.splitlines() == [err.strip()] and err.startswith(message), err
    assert "inner_optimizer" not in err  # LocoProp's inner choices are not optimizers to pick
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- outputs where pointed

def test_a_toy_search_writes_only_under_its_results_folder(tmp_path, monkeypatch):
    """The documented stand-in search (--export-as curves) leaves the checkout as it was."""
    before = _git_status()
    results = tmp_path / "elsewhere"
    path = tune_cli.main(["--dataset", "curves_synth", "--optimizer", "sgd", "--trials", "1", "--seeds", "1",
                      "--export-as", "curves", "--results", str(results), "--", *TINY, "epochs=2"])
    assert path == results / "tuned" / "curves" / "sgd.yaml" and path.is_file()
    assert yaml.safe_load(path.read_text())["tuned_source"]["study_name"] == "curves_synth-sgd"
    assert _git_status() == before


def test_a_tuned_config_of_another_study_is_kept_unless_forced(tmp_path, capsys):
    shipped = REPO / "results" / "tuned" / "curves_synth" / "sgd.yaml"
    with pytest.raises(cli.UsageError, match=rf"{shipped} is a committed tuned config from results/reference/cpu/"
                                             r"curves_synth/.*sgd.db; not overwriting it: .*--force"):
        tune.Search("curves_synth", "sgd", tmp_path / "res", tuned_dir=REPO / "results" / "tuned")
    assert not (tmp_path / "res").exists()  # refused before anything was created

    tuned = tmp_path / "tuned" / "curves_synth" / "sgd.yaml"
    tuned.parent.mkdir(parents=True)
    shutil.copy(shipped, tuned)
    argv = ["--dataset", "curves_synth", "--optimizer", "sgd", "--trials", "1", "--seeds", "1",
            "--results", str(tmp_path / "res"), "--tuned-dir", str(tmp_path / "tuned"), "--", *TINY,
            "epochs=2"]
    with pytest.raises(SystemExit) as exit:
        cli.run(tune_cli.main, argv)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.strip().splitlines()) == 1 and "--force" in err
    assert tuned.read_text() == shipped.read_text() and not (tmp_path / "res").exists()
    assert tune_cli.main([*argv[:-len(TINY) - 2], "--force", "--", *TINY, "epochs=2"]) == tuned
    source = yaml.safe_load(tuned.read_text())["tuned_source"]
    assert source["study"] != yaml.safe_load(shipped.read_text())["tuned_source"]["study"]  # this study's export


# ----------------------------------------------------------------------------- stopping

@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_reproduce_after_recording_the_run_and_a_rerun_resumes(tmp_path, signum):
    overrides = [*TINY, "epochs=40", "schedule=constant"]
    argv = ["--dataset", "curves_synth", "--optimizer", "sgd", "--seeds", "2", "--results", str(tmp_path), *overrides]
    first, second = reproduce.make_plan(["curves_synth"], ["sgd"], 2, overrides, str(tmp_path), "reproduce").runs
    command = [sys.executable, "-m", "scripts.reproduce", *argv]
    proc = start_halting("scripts.reproduce", argv, tmp_path / "halted", epoch=1, cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_until_halted(proc, tmp_path / "halted") == first.run_dir  # epoch 1 recorded and checkpointed
    metrics = first.run_dir / "metrics.csv"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err[-2000:]
    assert err.strip().splitlines()[-1] == f"stopped by {name}; run the same command again to resume"
    summary = read_summary(first.run_dir)
    assert summary["status"] == "stopped" and summary["reason"].startswith(f"stopped by signal {name} after epoch")
    assert (first.run_dir / "checkpoint.pt").exists()
    assert not second.run_dir.exists()  # no new run started

    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"[resume] {first.run_dir}" in out.stdout
    assert [read_summary(run.run_dir)["status"] for run in (first, second)] == ["finished", "finished"]
    epochs = [int(line.split(",")[0]) for line in metrics.read_text().splitlines()[1:]]
    assert epochs == list(range(41))  # each epoch once: resumed, not restarted


def test_a_committed_run_is_not_trained_over(tmp_path):
    """A run whose summary is committed (a reference run stopped or pruned, its checkpoint never
    shipped) would start afresh and clobber it: the runner refuses and names it."""
    repo = tmp_path / "checkout"
    cfg = compose_config([*TINY, "epochs=2", f"results_dir={repo}"])
    summary = run_dir_for(cfg) / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"status": "stopped"}))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "a reference run"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    with pytest.raises(ValueError, match=rf"{summary.parent} is a committed run \(stopped\); not overwriting it"):
        train(cfg)
    assert json.loads(summary.read_text()) == {"status": "stopped"} and sorted(summary.parent.iterdir()) == [summary]
