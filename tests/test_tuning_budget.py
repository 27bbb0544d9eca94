"""The expected best of k trials is computed exactly: it equals the average over every k-subset of
a study's values (brute force), ties and diverged (+inf) trials included, and so does its spread."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from benchmarks.reporting import tuning_budget as tb

VALUES = [3.0, 1.0, 2.0, 2.0, math.inf, 5.0, 1.0]  # ties, and one diverged trial


def subset_minima(values, k):
    return np.array([min(c) for c in itertools.combinations(values, k)], dtype=np.float64)


@pytest.mark.parametrize("k", range(1, len(VALUES) + 1))
def test_expected_min_and_its_spread_match_every_subset(k):
    minima = subset_minima(VALUES, k)
    expected = minima.mean()
    if math.isfinite(expected):
        assert tb.expected_min(VALUES, k) == pytest.approx(expected, rel=1e-12)
        assert tb.std_min(VALUES, k) == pytest.approx(minima.std(ddof=0), rel=1e-12, abs=1e-12)
    else:  # every subset of k may be the diverged trial alone (k = 1)
        assert tb.expected_min(VALUES, k) == math.inf and tb.std_min(VALUES, k) == math.inf
    for q in (0.1, 0.5, 0.9, 1.0):
        ranked = np.sort(minima)
        assert tb.quantile_min(VALUES, k, q) == ranked[math.ceil(q * len(ranked)) - 1]


def test_the_best_of_all_trials_is_the_study_best_and_one_trial_is_the_mean():
    finite = [4.0, 1.5, 2.5, 2.5]
    assert tb.expected_min(finite, len(finite)) == min(finite)
    assert tb.std_min(finite, len(finite)) == 0.0
    assert tb.expected_min(finite, 1) == pytest.approx(np.mean(finite))
    assert tb.expected_min([1.0, math.inf], 1) == math.inf and tb.expected_min([1.0, math.inf], 2) == 1.0


def test_k_out_of_range_is_named():
    with pytest.raises(ValueError, match="k=4"):
        tb.expected_min([1.0, 2.0, 3.0], 4)


def trial(state, value=None, status=None, lost=False, last=None, enqueued=False, sampler="keyed"):
    return {"state": state, "value": value, "status": status, "lost": lost, "last_value": last,
            "enqueued": enqueued, "sampler": sampler}


def test_trials_count_by_the_value_they_reached():
    """Complete: the objective; pruned: its last running loss; diverged or errored: +inf; lost:
    left out (its retry counts); still running: left out."""
    study = {"trials": [trial("COMPLETE", 2.0), trial("PRUNED", status="pruned", last=5.0),
                        trial("PRUNED", status="diverged", last=3.0), trial("FAIL", lost=True),
                        trial("PRUNED", status="pruned", last=4.0, enqueued=True), trial("FAIL", lost=False),
                        trial("RUNNING")]}
    assert tb.trial_values(study).tolist() == [2.0, 5.0, math.inf, 4.0, math.inf]


def test_trials_to_reach_and_the_sampler_read_from_the_trials():
    curve = tb.budget_curve([10.0, 1.0, 1.04, 3.0], budget=4)
    assert curve["mean"].is_monotonic_decreasing and curve["k"].tolist() == [1, 2, 3, 4]
    first = next(k for k in range(1, 5) if tb.expected_min([10.0, 1.0, 1.04, 3.0], k) <= 1.05)
    assert tb.trials_to_reach(curve, 1.0) == first
    assert tb.trials_to_reach(curve, 0.5) is None
    drawn = [trial("COMPLETE", 1.0, sampler=None), trial("COMPLETE", 1.0), trial("COMPLETE", 1.0, sampler=None,
                                                                                    enqueued=True)]
    assert tb.sampler_of({"trials": drawn[1:]}) == "keyed"
    assert tb.sampler_of({"trials": [drawn[0], drawn[2]]}) == "count-seeded"
    assert tb.sampler_of({"trials": drawn}) == "mixed (1 count-seeded, then 1 keyed)"


def test_a_study_still_searching_gets_no_trial_count_and_is_named():
    """A study with fewer ended trials than its budget: its best so far is shown, but neither it nor
    the data set's verdict counts trials to a target on its too-short curve."""
    done = {"dataset": "mnist", "optimizer": "sgd", "protocol": {"trials": 3},
            "trials": [trial("COMPLETE", v) for v in (4.0, 2.0, 3.0)]}
    running = {"dataset": "mnist", "optimizer": "locoprop_m", "protocol": {"trials": 3},
               "trials": [trial("COMPLETE", 1.0), trial("RUNNING")]}
    empty = {"dataset": "mnist", "optimizer": "adam", "protocol": {"trials": 3}, "trials": [trial("RUNNING")]}
    rows = tb.budget_rows([done, running, empty], {"mnist": ("sgd", 2.0)}).set_index("optimizer")
    assert rows["searching"].to_dict() == {"sgd": False, "locoprop_m": True, "adam": True}
    assert rows.loc["sgd", "to_best_final"] == tb.trials_to_reach(tb.budget_curve([4.0, 2.0, 3.0], 3), 2.0)
    assert pd.isna(rows.loc["locoprop_m", "to_best_final"]) and rows.loc["locoprop_m", "own_best"] == 1.0
    text = tb.budget_markdown(rows.reset_index(), ["locoprop_m", "sgd", "adam"])
    assert "| MNIST | LocoProp-M | keyed | 1 of 3 (0), searching | 1.00 so far | — | — |" in text
    assert "| MNIST | Adam | keyed | 0 of 3 (0), searching | no trial ended yet | — | — |" in text
    assert "fewest trials to within 5% of it: SGD (" in text and "LocoProp-M (1)" not in text
    assert "; still searching, so not counted: LocoProp-M (1 of 3 trials), Adam (0 of 3 trials)." in text
