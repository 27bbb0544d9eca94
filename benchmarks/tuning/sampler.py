"""The search's sampler: Optuna's TPE with its randomness keyed to the study and the trial.

A TPE sampler seeded by the protocol's seed alone (or by that seed plus the number of trials so
far) hands every study the same random draws: two data sets, or two optimizers with the same
learning-rate range, would start from the very same settings, and two machines claiming a trial
at the same moment would draw the same one. Here every trial draws from its own stream, seeded by
(protocol seed, study name, trial number): studies are independent of each other, concurrent
workers (which always get different trial numbers from the storage) draw different settings, and
one worker's search is reproducible from its seed. A proposal equal to a setting that a live
trial of the study already has (complete, pruned, running or queued) is drawn again (from TPE a
few times, then at random: on a small discrete space TPE keeps proposing its favourite), so a
study never spends its budget on a setting twice; a retried trial keeps its enqueued setting.
"""
from __future__ import annotations

import hashlib
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

# The name recorded on every trial it draws (`trial.user_attrs['sampler']`): trials of older
# studies, drawn by a sampler seeded with the trial count alone, have none.
SAMPLER_NAME = "tpe-keyed"
LIVE_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def distributions(space: dict[str, dict[str, Any]]) -> dict[str, BaseDistribution]:
    """Optuna distributions of a search space `{key: {low, high[, log]} or {choices: [...]}}`."""
    out: dict[str, BaseDistribution] = {}
    for key, spec in space.items():
        if "choices" in spec:
            out[key] = CategoricalDistribution(list(spec["choices"]))
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int):
            out[key] = IntDistribution(spec["low"], spec["high"], log=bool(spec.get("log")))
        else:
            out[key] = FloatDistribution(float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
    return out


def stream_seed(seed: int, study_name: str, trial_number: int, attempt: int = 0) -> int:
    """A 32-bit seed for one trial's draws (attempt > 0: a redraw after a repeated setting)."""
    digest = hashlib.sha256(f"{seed}/{study_name}/{trial_number}/{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def setting_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


class KeyedTPESampler(optuna.samplers.BaseSampler):
    """Multivariate TPE (`startup_trials` random settings first, constant liar for running trials)
    over a known search space, drawing each trial from its own keyed stream and never repeating
    a live trial's setting."""

    def __init__(self, space: dict[str, BaseDistribution], seed: int = 0, startup_trials: int = 5,
                 tpe_redraws: int = 5, max_redraws: int = 200):
        self.space, self.seed, self.startup_trials = dict(space), seed, startup_trials
        self.tpe_redraws, self.max_redraws = tpe_redraws, max_redraws

    def _tpe(self, study: optuna.Study, trial: FrozenTrial, attempt: int = 0) -> optuna.samplers.TPESampler:
        return optuna.samplers.TPESampler(seed=stream_seed(self.seed, study.study_name, trial.number, attempt),
                                          n_startup_trials=self.startup_trials, multivariate=True, constant_liar=True)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {name: d for name, d in self.space.items() if not d.single()}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if trial.params or trial.system_attrs.get("fixed_params") or not search_space:
            return {}  # a retried or enqueued trial keeps its setting
        taken = {setting_key(t.params) for t in study.get_trials(deepcopy=False, states=LIVE_STATES)
                 if t.number != trial.number and t.params}
        for attempt in range(self.max_redraws):
            tpe = self._tpe(study, trial, attempt)
            params = tpe.sample_relative(study, trial, search_space) if attempt < self.tpe_redraws else {}
            if not params:  # a start-up trial, or TPE's redraws keep repeating: a random setting
                seeded = optuna.samplers.RandomSampler(seed=stream_seed(self.seed, study.study_name, trial.number, attempt))
                params = {name: seeded.sample_independent(study, trial, name, d) for name, d in search_space.items()}
            if setting_key(params) not in taken:
                return params
        raise RuntimeError(f"{study.study_name}: {self.max_redraws} draws in a row repeated settings the study "
                           "already has; the search space is (nearly) exhausted: widen it or lower --trials")

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        """Only for a parameter outside the declared space (none in the harness's own searches)."""
        return self._tpe(study, trial).sample_independent(study, trial, param_name, param_distribution)


def describe(trials: list[FrozenTrial], startup_trials: int, seed: int) -> str:
    """How a study's drawn trials were drawn, read from the trials themselves (a tuned config's
    provenance): the keyed sampler marks every trial it draws, so a study begun with the older
    count-seeded sampler says so even when code of today exports it. Enqueued settings (retries,
    settings fixed by hand) were drawn by nobody and are not counted."""
    drawn = [t for t in trials if not t.system_attrs.get("fixed_params") and t.params]
    keyed = sum(t.user_attrs.get("sampler") == SAMPLER_NAME for t in drawn)
    tpe = f"optuna TPE ({startup_trials} random start-up trials, multivariate)"
    count_seeded = (f"seeded with {seed} + the number of trials so far (the same draws in every study; a "
                    "setting could repeat)")
    if keyed == len(drawn):
        return f"{tpe}, each trial drawn from a stream keyed by seed {seed}, study and trial number"
    if keyed == 0:
        return f"{tpe} {count_seeded}"
    return (f"{tpe}: {len(drawn) - keyed} trials {count_seeded}, then {keyed} from streams keyed by seed {seed}, "
            "study and trial number")
