"""The search's sampler: distinct settings within a study, independent draws across studies and
workers, and a search reproducible from its seed (benchmarks/tuning/sampler.py, scripts/tune.py)."""
from __future__ import annotations

import math

import optuna
import pytest

import benchmarks.tuning.search as tune
from benchmarks.tuning.sampler import SAMPLER_NAME, KeyedTPESampler, distributions
from benchmarks.tuning.protocol import Protocol
from benchmarks.tuning.search import Search

optuna.logging.set_verbosity(optuna.logging.WARNING)


def search(tmp_path, dataset="curves_synth", optimizer="sgd", folder="res", storage=None, **protocol) -> Search:
    protocol = Protocol(trials=protocol.pop("trials", 8), startup_trials=protocol.pop("startup_trials", 3), **protocol)
    return Search(dataset, optimizer, tmp_path / folder, protocol, storage=storage, tuned_dir=tmp_path / "tuned")


def run_search(s: Search, n: int) -> list[dict]:
    """Claim and close n trials without training (objective: a smooth function of the setting)."""
    settings = []
    for _ in range(n):
        trial = s.claim()
        settings.append(dict(trial.params))
        s.study.tell(trial, sum(math.log(abs(v)) ** 2 for v in trial.params.values() if isinstance(v, float)))
    return settings


def test_a_study_never_repeats_a_setting_and_says_when_its_space_is_exhausted():
    """Four choices, four trials: independent draws would repeat one with probability 1 - 4!/4^4 = 0.91."""
    space = distributions({"optimizer.lr": {"choices": [0.1, 0.01, 0.001, 0.0001]}})
    study = optuna.create_study(study_name="tiny", sampler=KeyedTPESampler(space, startup_trials=2))
    for _ in range(4):
        trial = study.ask()
        study.tell(trial, trial.suggest_categorical("optimizer.lr", [0.1, 0.01, 0.001, 0.0001]))
    assert sorted(t.params["optimizer.lr"] for t in study.trials) == [0.0001, 0.001, 0.01, 0.1]
    trial = study.ask()
    with pytest.raises(RuntimeError, match="exhausted"):
        trial.suggest_categorical("optimizer.lr", [0.1, 0.01, 0.001, 0.0001])


def test_claimed_trials_are_pairwise_distinct_and_record_their_sampler(tmp_path, monkeypatch):
    monkeypatch.setattr(tune, "search_space", lambda name: {"optimizer.lr": {"choices": [0.3, 0.1, 0.03, 0.01, 0.003]},
                                                            "optimizer.nesterov": {"choices": [True, False]}})
    s = search(tmp_path, trials=10)
    settings = run_search(s, 10)  # the whole space: 5 x 2 settings
    assert len({tuple(sorted(p.items())) for p in settings}) == 10
    assert {t.user_attrs["sampler"] for t in s.study.get_trials()} == {SAMPLER_NAME}


def test_data_sets_and_optimizers_draw_independent_settings(tmp_path):
    """SGD and AdaGrad search the same learning-rate range; MNIST and CURVES-like the same spaces."""
    first = {name: run_search(search(tmp_path, dataset, optimizer, folder=name), 3)
             for name, (dataset, optimizer) in {"c-sgd": ("curves_synth", "sgd"), "c-adagrad": ("curves_synth", "adagrad"),
                                                "m-sgd": ("mnist", "sgd")}.items()}
    lrs = {name: [p["optimizer.lr"] for p in settings] for name, settings in first.items()}
    assert not set(lrs["c-sgd"]) & set(lrs["c-adagrad"])
    assert not set(lrs["c-sgd"]) & set(lrs["m-sgd"])


def test_two_workers_of_one_study_draw_different_settings(tmp_path):
    """Two machines on one database, each with its own results folder (no shared file lock), ask at
    the same moment: the storage numbers their trials apart, and each number has its own stream."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a, b = search(tmp_path, folder="host-a", storage=url), search(tmp_path, folder="host-b", storage=url)
    trial_a, trial_b = a.study.ask(), b.study.ask()  # both sampled against the same (empty) history
    assert trial_a.number != trial_b.number
    assert tune.suggest(trial_a, a.space) != tune.suggest(trial_b, b.space)


def test_one_workers_search_is_reproducible_from_its_seed(tmp_path):
    """Past the random start-up trials too (startup 3, then TPE)."""
    once = run_search(search(tmp_path, folder="once"), 6)
    again = run_search(search(tmp_path, folder="again"), 6)
    other_seed = run_search(search(tmp_path, folder="seed1", sampler_seed=1), 6)
    assert once == again
    assert not {p["optimizer.lr"] for p in once} & {p["optimizer.lr"] for p in other_seed}


def _trial(number, keyed=None, fixed=False):
    from optuna.distributions import FloatDistribution
    trial = optuna.trial.create_trial(params={"optimizer.lr": 0.01 * (number + 1)},
                                      distributions={"optimizer.lr": FloatDistribution(1e-4, 1.0, log=True)},
                                      value=1.0, user_attrs={"sampler": SAMPLER_NAME} if keyed else {},
                                      system_attrs={"fixed_params": {"optimizer.lr": 0.01}} if fixed else {})
    trial.number = number
    return trial


def test_the_sampler_description_is_read_from_the_trials_not_from_the_code():
    """A tuned config names the sampler that drew its study's trials: a study begun with the older
    count-seeded sampler says so even when today's code exports it; enqueued settings count for neither."""
    from benchmarks.tuning.sampler import describe
    keyed = describe([_trial(0, keyed=True), _trial(1, keyed=True), _trial(2, fixed=True)], 5, 0)
    assert keyed.endswith("each trial drawn from a stream keyed by seed 0, study and trial number")
    old = describe([_trial(0), _trial(1), _trial(2, fixed=True)], 5, 7)
    assert "seeded with 7 + the number of trials so far" in old and "keyed" not in old
    mixed = describe([_trial(0), _trial(1, keyed=True), _trial(2, keyed=True)], 5, 0)
    assert mixed.startswith("optuna TPE (5 random start-up trials, multivariate): 1 trials seeded with 0 + ")
    assert mixed.endswith("then 2 from streams keyed by seed 0, study and trial number")


def test_a_fresh_search_exports_the_keyed_description(tmp_path):
    s = search(tmp_path, trials=3)
    run_search(s, 3)
    from benchmarks.tuning.sampler import describe
    assert describe(s.trials(), 3, 0).endswith("keyed by seed 0, study and trial number")
