"""The protocol is one record: what a study stores comes back whole, the committed studies state
the protocol the campaigns plan with, and what it says a run trains is what the runner trains."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from benchmarks.config import compose_config
from benchmarks.train import train
from benchmarks.tuning.protocol import (REFERENCE_TRIALS, ROOT, Protocol, ProtocolError, read_protocol, reference,
                                        run_setting, seed_changes)
from tests.tiny import TINY_RUN


def test_a_stored_protocol_comes_back_whole():
    p = Protocol(trials=5, seeds=2, eval_every=3, min_resource=2, reduction_factor=2, startup_trials=1,
                 sampler_seed=7, exits=False, overrides=["epochs=4"], sources=["a.db"])
    record = p.as_dict()
    assert "sources" not in record and json.loads(json.dumps(record)) == record  # what Optuna stores
    assert Protocol.from_record(record) == p  # sources are where it was read, not part of it
    older = {k: v for k, v in record.items() if k not in ("sampler", "exits")}  # a study before those keys
    assert Protocol.from_record(older) == replace(p, sampler=Protocol().sampler, exits=True)


@pytest.mark.parametrize("dataset", sorted(REFERENCE_TRIALS))
def test_the_committed_studies_state_the_protocol_the_campaigns_plan_with(dataset):
    committed = read_protocol(ROOT, dataset)
    planned = reference(dataset)
    assert (committed.trials, committed.seeds) == (planned.trials, planned.seeds)
    assert committed.sources and all(s.endswith(".db") for s in committed.sources)
    assert committed.sampler == planned.sampler and committed.overrides == planned.overrides == []


def test_a_workload_without_studies_is_named(tmp_path):
    with pytest.raises(ProtocolError, match="no committed study"):
        read_protocol(tmp_path, "curves_synth")


@pytest.mark.parametrize("overrides", [[*TINY_RUN, "epochs=3"], [*TINY_RUN, "epochs=6", "stop_epoch=2"]])
def test_the_setting_of_a_protocol_is_what_the_runner_trains(tmp_path, overrides):
    setting = run_setting("curves_synth", Protocol(overrides=overrides))
    cfg = compose_config(["dataset=curves_synth", *overrides, "optimizer=sgd", "logger=disabled", "progress=false",
                          f"results_dir={tmp_path}"])
    summary = train(cfg)
    assert setting["epochs"] == int(cfg.epochs) and setting["batch"] == int(cfg.batch_size)
    assert setting["trained_epochs"] == summary["epochs_completed"]
    assert setting["steps"] == summary["steps_per_epoch"] * summary["epochs_completed"]


def test_the_reference_settings_are_the_notebooks():
    """Batch 1000, the 100-epoch schedule with 99 trained epochs, whole training sets."""
    for dataset, n_train in (("mnist", 60_000), ("curves_synth", 10_000)):
        assert run_setting(dataset, reference(dataset)) == {"epochs": 100, "trained_epochs": 99, "batch": 1000,
                                                            "n_train": n_train, "steps": n_train // 1000 * 99}


def test_what_a_seed_changes_follows_the_workload():
    assert "pairs" in seed_changes("curves_synth") and "independent" in seed_changes("mnist")
