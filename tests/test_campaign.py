"""scripts.campaign: the shipped plans give every optimizer the same budget, and `collect` copies a
campaign's small files without checkpoints and without replacing newer results by older ones."""
import os

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from benchmarks.optimizers import paper_optimizers
from benchmarks.tuning.studies import read_studies
from benchmarks.orchestration import campaign
from benchmarks.reporting.report import study_verdicts
from benchmarks.tuning.search import Search


def _searches(plan) -> list[Search]:
    return [item for item in plan if isinstance(item, Search)]


@pytest.mark.slow
def test_every_optimizer_on_a_dataset_gets_the_same_budget_and_pruning(tmp_path):
    searches = _searches(campaign.cpu_reference(root=str(tmp_path), tuned_dir=str(tmp_path / "tuned")))
    searches += _searches(campaign.cpu_relatives(root=str(tmp_path), tuned_dir=str(tmp_path / "tuned")))
    searches += _searches(campaign.cpu_modern(root=str(tmp_path), tuned_dir=str(tmp_path / "tuned")))
    curves = [s for s in searches if s.dataset == "curves_synth"]
    modern = {"muon", "soap", "schedulefree_adamw"}
    assert {s.optimizer for s in curves} == {*paper_optimizers(), "foof", "dtp", *modern}
    for dataset, trials, seeds in (("curves_synth", 16, 3), ("mnist", 8, 3), ("faces_synth", 8, 3)):
        protocols = [s.protocol for s in searches if s.dataset == dataset]
        assert all(p == protocols[0] for p in protocols), f"unequal protocols on {dataset}: {protocols}"
        protocol = protocols[0]
        assert (protocol.trials, protocol.seeds) == (trials, seeds)
    mnist = {s.optimizer for s in searches if s.dataset == "mnist"}
    assert mnist == {*paper_optimizers(), "foof", "dtp", *modern}  # LocoProp-M too (and its published defaults)
    faces = [s for s in searches if s.dataset == "faces_synth"]
    assert {s.optimizer for s in faces} == {*paper_optimizers(), "foof", "dtp", *modern}  # no published FACES defaults
    assert all(s.tuned_path.parent.name == "curves_synth" for s in curves)  # filed under the data searched on
    assert all(s.tuned_path.parent.name == "faces_synth" for s in faces)


def _study(path, finished: int, running: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name="curves_synth-sgd", storage=f"sqlite:///{path}")
    for k in range(finished):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=float(k)))
    for _ in range(running):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, state=TrialState.RUNNING))


def _count(path) -> int:
    return len(optuna.load_study(study_name="curves_synth-sgd", storage=f"sqlite:///{path}").get_trials())


def _tuned(path, date: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    source = {"study_name": "curves_synth-sgd", "date": date} if date else {"kind": "published"}
    path.write_text(yaml.safe_dump({"optimizer": {"lr": 0.1}, "tuned_source": source}))


def test_collect_copies_small_files_never_checkpoints(tmp_path):
    run = tmp_path / "src" / "curves_synth" / "runs" / "final" / "curves_synth" / "sgd" / "seed0-abc"
    run.mkdir(parents=True)
    for name in ("config.yaml", "metrics.csv", "summary.json", "reconstructions.npz", "checkpoint.pt"):
        (run / name).write_text(name)
    trial = tmp_path / "src" / "curves_synth" / "runs" / "tune" / "curves_synth" / "sgd" / "seed0-def"
    trial.mkdir(parents=True)
    for name in ("config.yaml", "metrics.csv", "summary.json", "reconstructions.npz", "checkpoint.pt"):
        (trial / name).write_text(name)
    _study(tmp_path / "src" / "curves_synth" / "tuning" / "curves_synth" / "sgd.db", finished=3, running=1)
    campaign.collect(tmp_path / "src", root=tmp_path / "dst")
    final = tmp_path / "dst" / run.relative_to(tmp_path / "src")
    assert sorted(p.name for p in final.iterdir()) == ["config.yaml", "metrics.csv", "reconstructions.npz",
                                                       "summary.json"]
    tuned = tmp_path / "dst" / trial.relative_to(tmp_path / "src")
    assert sorted(p.name for p in tuned.iterdir()) == ["config.yaml", "metrics.csv", "summary.json"]
    assert _count(tmp_path / "dst" / "curves_synth" / "tuning" / "curves_synth" / "sgd.db") == 4
    (study,) = read_studies(tmp_path / "dst")
    assert [t["state"] for t in study["trials"]] == ["COMPLETE"] * 3 + ["RUNNING"] and study["winner"]["number"] == 0


def test_collect_never_replaces_a_study_with_fewer_ended_trials(tmp_path):
    src = tmp_path / "src" / "curves_synth" / "tuning" / "curves_synth" / "sgd.db"
    dst = tmp_path / "dst" / "curves_synth" / "tuning" / "curves_synth" / "sgd.db"
    _study(src, finished=2, running=3)  # an older copy: more rows, fewer ended trials
    _study(dst, finished=4)
    campaign.collect(tmp_path / "src", root=tmp_path / "dst")
    assert _count(dst) == 4
    _study(src.with_name("other.db"), finished=5)
    os.replace(src.with_name("other.db"), src)
    campaign.collect(tmp_path / "src", root=tmp_path / "dst")
    assert _count(dst) == 5
    os.utime(dst, (0, 0))  # the same study again: left as it is
    campaign.collect(tmp_path / "src", root=tmp_path / "dst")
    assert dst.stat().st_mtime == 0
    _study(src.with_name("other.db"), finished=5, running=1)  # as many ended, one more started
    os.replace(src.with_name("other.db"), src)
    campaign.collect(tmp_path / "src", root=tmp_path / "dst")
    assert _count(dst) == 6


def test_collect_reads_a_study_file_without_writing_to_it(tmp_path):
    """A worker has created the file but no study in it yet: nothing to collect, and reading it through
    Optuna (which would add its tables) leaves the worker's file as it was."""
    src = tmp_path / "src" / "curves_synth" / "tuning" / "curves_synth" / "sgd.db"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"")
    assert campaign.collect(tmp_path / "src", root=tmp_path / "dst") == 0
    assert src.read_bytes() == b"" and not (tmp_path / "dst").exists()
    _study(src.with_name("other.db"), finished=1, running=1)
    before = src.with_name("other.db").read_bytes()
    assert campaign.collect(tmp_path / "src", root=tmp_path / "dst") == 1
    assert src.with_name("other.db").read_bytes() == before
    assert _count(tmp_path / "dst" / "curves_synth" / "tuning" / "curves_synth" / "other.db") == 2


@pytest.mark.parametrize("source_date, target_date, copied", [
    ("2026-11-29T20:00:00Z", "2026-11-29T19:00:00Z", True),   # a newer export replaces an older one
    ("2026-11-29T18:00:00Z", "2026-11-29T19:00:00Z", False),  # an older export is left out
    ("2026-11-29T18:00:00Z", None, True),                     # any export replaces an earlier hand-made config
    (None, "2026-11-29T19:00:00Z", False),                    # a config no study exported is never collected
])
def test_collect_takes_a_tuned_config_only_when_newer(tmp_path, source_date, target_date, copied):
    (tmp_path / "src").mkdir()
    _tuned(tmp_path / "tuned_src" / "curves" / "sgd.yaml", source_date)
    _tuned(tmp_path / "tuned_dst" / "curves" / "sgd.yaml", target_date)
    before = (tmp_path / "tuned_dst" / "curves" / "sgd.yaml").read_text()
    campaign.collect(tmp_path / "src", root=tmp_path / "dst", tuned_from=tmp_path / "tuned_src",
                     tuned_dir=tmp_path / "tuned_dst")
    after = (tmp_path / "tuned_dst" / "curves" / "sgd.yaml").read_text()
    assert (after == (tmp_path / "tuned_src" / "curves" / "sgd.yaml").read_text()) is copied
    assert (after == before) is (not copied)


def test_collect_states_the_sampler_that_drew_the_study_not_the_one_of_the_exporting_code(tmp_path):
    """A campaign running older code exports its own sampler's name; the collected config names the
    sampler its study's trials record (here: none of them drawn by the keyed one)."""
    db = tmp_path / "dst" / "curves_synth" / "tuning" / "curves_synth" / "sgd.db"
    db.parent.mkdir(parents=True)
    study = optuna.create_study(study_name="curves_synth-sgd", storage=f"sqlite:///{db}")
    for k in range(3):
        study.add_trial(optuna.trial.create_trial(params={"optimizer.lr": 0.1 * (k + 1)}, value=float(k),
                                                  distributions={"optimizer.lr": FloatDistribution(1e-3, 1.0)}))
    claimed = {"study": str(db), "study_name": "curves_synth-sgd", "date": "2026-11-29T20:00:00Z",
               "sampler": "optuna TPE (5 random start-up trials, multivariate), each trial drawn from a keyed stream"}
    exported = tmp_path / "tuned_src" / "curves" / "sgd.yaml"
    exported.parent.mkdir(parents=True)
    exported.write_text("# @package _global_\n# Tuned config\n" + yaml.safe_dump({"optimizer": {"lr": 0.1},
                                                                                     "tuned_source": claimed}))
    (tmp_path / "src").mkdir()
    campaign.collect(tmp_path / "src", root=tmp_path / "dst", tuned_from=tmp_path / "tuned_src",
                     tuned_dir=tmp_path / "tuned_dst")
    text = (tmp_path / "tuned_dst" / "curves" / "sgd.yaml").read_text()
    assert text.startswith("# @package _global_\n# Tuned config\noptimizer:\n")
    source = yaml.safe_load(text)["tuned_source"]
    assert "seeded with 0 + the number of trials so far" in source["sampler"] and "keyed" not in source["sampler"]
    assert {k: v for k, v in source.items() if k != "sampler"} == {k: v for k, v in claimed.items() if k != "sampler"}


@pytest.mark.slow
def test_a_plan_can_be_cut_to_one_dataset(monkeypatch, tmp_path):
    monkeypatch.setitem(campaign.PLANS, "cpu-reference",
                        lambda create=True: campaign.cpu_reference(root=str(tmp_path), tuned_dir=str(tmp_path / "tuned"), create=create))
    full = campaign.PLANS["cpu-reference"]()
    mnist = campaign.plan_items("cpu-reference", "mnist")
    assert {item.dataset for item in mnist} == {"mnist"}
    assert len(mnist) == sum(item.dataset == "mnist" for item in full) > 0
    assert isinstance(mnist[0], campaign.Runs)  # LocoProp-M's published defaults come first, as in the full plan
    with pytest.raises(SystemExit, match="no items for data set 'faces'"):
        campaign.plan_items("cpu-reference", "faces")


def test_studies_count_lost_workers_apart_from_errors(tmp_path):
    db = tmp_path / "mnist" / "tuning" / "mnist" / "sgd.db"
    db.parent.mkdir(parents=True)
    study = optuna.create_study(study_name="mnist-sgd", storage=f"sqlite:///{db}")
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, state=TrialState.FAIL,
                                              user_attrs={"error": "RuntimeError: boom"}))
    for _ in range(2):  # killed workers: failed by the tuner without an error, their settings enqueued again
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, state=TrialState.FAIL))
    (study,) = read_studies(tmp_path)
    verdict = study_verdicts(study)
    assert (verdict["complete"], verdict["lost"]) == (1, 2)  # the failure with an error is not a lost worker
