"""Fair, resumable hyper-parameter search for one optimizer on one data set.

    python -m scripts.tune --dataset mnist --optimizer adam [--trials 16] [--workers 2] [-- overrides]
    python -m scripts.tune --dataset mnist --optimizer paper      # the paper's nine, one after another

The protocol (docs/tuning.md):
- every trial trains exactly like a final run (full training set, the official 100-epoch
  schedule with 99 trained epochs, batch 1000) and is scored by its best full-evaluation train
  loss (cross-entropy, or squared error for FACES), the quantity the LocoProp notebook tunes on;
- Optuna's TPE sampler (a few random start-up trials; every trial's draws keyed by the protocol's
  seed, the study and the trial number: `benchmarks/tuning/sampler.py`) proposes distinct settings of
  `benchmarks/tuning/search_spaces/<optimizer>.yaml`; every optimizer of a data set gets the same number
  of trials;
- successive halving prunes trials on the running mean of each epoch's mini-batch losses (free),
  and the notebook's exits (a loss above 1000, a best above 600, a best still above 350 after
  epoch 12; CE scale; `benchmarks.workloads`) end hopeless trials; full evaluations run every
  `--eval-every` epochs;
- the study lives in an SQLite file, `<results>/tuning/<dataset>/<optimizer>.db` (or PostgreSQL,
  or an Optuna journal file: --storage, benchmarks/tuning/storage.py): a killed search resumes with its
  finished trials kept, and a trial whose worker died (its Optuna heartbeat stopped) is failed and
  run again with the same setting, resuming its run from the last epoch checkpoint; several
  workers share it (--workers, --launcher slurm/local through submitit: benchmarks/orchestration/launch.py);
- the winning trial is re-run with seeds 1..S-1 (the trial itself is seed 0); the winner's seeds
  are copied into the group `final`, and `<results>/tuned/<dataset>/<optimizer>.yaml` (--tuned-dir)
  records the values with their provenance (study, trial counts, budget, the seeds' mean +- std,
  device, commit). A tuned config this study did not write (another study's, a published default)
  is never overwritten without --force: `--tuned-dir results/tuned --force` replaces a shipped one.
"""
from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from filelock import FileLock
import torch
import yaml
from omegaconf import DictConfig
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from benchmarks.benchtable import choose_table, format_duration, price_run
from benchmarks.cli import UsageError
from benchmarks.config import compose_config
from benchmarks.preflight import problems
from benchmarks.tuning.space import search_space as optimizer_search_space
from benchmarks.results import mean_std, read_summary
from benchmarks.tuning.studies import best_trial
from benchmarks.rundir import (FINAL_STATUSES, RunInUse, atomic_write_json, atomic_write_text, cpu_model, device_name,
                               git_commit, run_dir_for, tracked_by_git)
from benchmarks.train import PruneRun, StopRun, resolve_device, threshold_exit, train
from benchmarks.workloads import get_workload, trained_epochs
from benchmarks.tuning.protocol import Protocol
from benchmarks.tuning.sampler import SAMPLER_NAME, KeyedTPESampler, distributions, describe as describe_sampler
from benchmarks.tuning.storage import (GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, JOURNAL_PREFIX, fail_lost_trials, heartbeat,
                             open_storage,
                             retried_trial_number, storage_label)

TRIAL_GROUP, FINAL_GROUP = "tune", "final"
SEED_DONE = (*FINAL_STATUSES, "stopped", "failed")  # a seed run in one of these is not run again
RUN_OVERRIDES = ("logger=disabled", "progress=false")
LOST = "given up for lost by the study"  # a trial whose heartbeat came too late; its retry resumes the run


# ----------------------------------------------------------------------------- search space

def search_space(optimizer: str) -> dict[str, dict[str, Any]]:
    """The dotted config keys searched for `optimizer` and their ranges (benchmarks.optimizers.search_space)."""
    return optimizer_search_space(optimizer)


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The trial's setting (drawn on the first call, the same values on later calls)."""
    values = {}
    for key, dist in distributions(space).items():
        if isinstance(dist, CategoricalDistribution):
            values[key] = trial.suggest_categorical(key, list(dist.choices))
        elif isinstance(dist, IntDistribution):
            values[key] = trial.suggest_int(key, dist.low, dist.high, log=dist.log)
        else:
            values[key] = trial.suggest_float(key, dist.low, dist.high, log=dist.log)
    return values


def overrides_for(values: dict[str, Any]) -> list[str]:
    """Hydra overrides `key=value` for searched values (YAML flow style keeps lists and bools exact)."""
    return [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
            for key, value in values.items()]


# ----------------------------------------------------------------------------- one search

class Search:
    """One study (data set x optimizer): trials, the winner's seeds and the exported config.

    `step()` does one unit of work (a trial, a seed or the export) and says what it did, so
    several workers, and a campaign over many searches, share the work without a scheduler.
    """

    def __init__(self, dataset: str, optimizer: str, results: str | Path = "results", protocol: Protocol | None = None,
                 storage: str | None = None, tuned_dir: str | Path | None = None, export_as: str | None = None,
                 note: str = "", heartbeat_interval: int = HEARTBEAT_INTERVAL_S, grace_period: int = GRACE_PERIOD_S,
                 wandb: bool = False, create: bool = True, force: bool = False,
                 space: dict[str, dict[str, Any]] | None = None, config_overrides: tuple[str, ...] = ()):
        self.dataset, self.optimizer = dataset, optimizer
        self.results = Path(results)
        self.protocol = protocol or Protocol()
        self.space = space if space is not None else search_space(optimizer)
        # where the runs find an optimizer config kept outside configs/ (a Hydra search path); not
        # part of the protocol, nor of the run ids
        self.config_overrides = list(config_overrides)
        folder = self.results / "tuning" / dataset
        self.db_path = folder / f"{optimizer}.db"
        self.storage_url = storage or f"sqlite:///{self.db_path}"
        self.lock_path = folder / f"{optimizer}.lock"
        self.tuned_path = Path(tuned_dir or self.results / "tuned") / (export_as or dataset) / f"{optimizer}.yaml"
        self.export_as, self.note, self.wandb, self.force = export_as, note, wandb, force
        if create and not force and self.overwrite_refusal():  # before anything is created
            raise UsageError(self.overwrite_refusal())
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        # create=False (a dry run) opens an existing study and creates nothing: no study, no search yet
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        exists = create or study_exists(self.storage_url, f"{dataset}-{optimizer}")
        self.storage = None  # the study's storage object: heartbeats are recorded in it
        self.study = self._open_study() if exists else None

    # -- study
    def _open_study(self) -> optuna.Study:
        p = self.protocol
        sampler = KeyedTPESampler(distributions(self.space), seed=p.sampler_seed, startup_trials=p.startup_trials)
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_resource, reduction_factor=p.reduction_factor)
        with self._lock():
            self.storage = storage = open_storage(self.storage_url, self.heartbeat_interval, self.grace_period)
            study = optuna.create_study(storage=storage, study_name=f"{self.dataset}-{self.optimizer}",
                                        direction="minimize", sampler=sampler, pruner=pruner, load_if_exists=True)
            recorded = study.user_attrs.get("protocol")
            wanted = {**p.as_dict(), "search_space": self.space}
            wanted.pop("seeds")  # validation, not search: may grow later
            defaults = Protocol().as_dict()
            if recorded is not None:  # a setting added since the study began counts as its default then
                wanted = {k: v for k, v in wanted.items() if k in recorded or v != defaults.get(k)}
            if recorded is None:
                study.set_user_attr("protocol", wanted)
            elif recorded != wanted:
                changed = sorted(k for k in set(recorded) | set(wanted) if recorded.get(k) != wanted.get(k))
                raise SystemExit(f"{self.storage_url}: the study was started with another protocol ({', '.join(changed)} "
                                 f"differ: {[recorded.get(k) for k in changed]} vs {[wanted.get(k) for k in changed]}); "
                                 "use the same settings, or a new --results folder")
        return study

    def _lock(self) -> FileLock:
        """Exclusive among the workers sharing this results folder (claiming a trial, exporting)."""
        return FileLock(self.lock_path)

    def trials(self, *states: TrialState) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states or None)

    def claim(self) -> optuna.Trial | None:
        """A new (or retried) trial if the budget allows; the count includes running ones, so
        concurrent workers never overshoot the budget."""
        with self._lock():
            fail_lost_trials(self.storage, self.study)  # Optuna's heartbeat: a dead worker's trial fails and is enqueued again
            waiting = self.trials(TrialState.WAITING)
            used = len(self.trials(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
            failures = len([t for t in self.trials(TrialState.FAIL) if "error" in t.user_attrs])
            if not waiting and (used >= self.protocol.trials or failures >= self.protocol.trials):
                return None
            with warnings.catch_warnings():  # heartbeats are recorded by `heartbeat()`, not by Study.optimize
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = self.study.ask()
            try:
                suggest(trial, self.space)  # drawn under the lock: the next claim sees this setting as taken
            except RuntimeError as err:  # the space has no setting left that the study has not tried
                self.study.tell(trial, state=TrialState.FAIL)
                raise SystemExit(str(err)) from None
            if trial.relative_params:  # drawn by the sampler (not an enqueued setting, such as a retry)
                trial.set_user_attr("sampler", SAMPLER_NAME)
            trial.set_user_attr("owner", f"{socket.gethostname()}:{os.getpid()}")
            return trial

    # -- configs
    def config(self, values: dict[str, Any], seed: int, group: str, wandb_name: str | None = None) -> DictConfig:
        """A trial's or a seed's run config. With W&B on, the runs of one study share a W&B group
        (the study's name) and are named by trial or seed; the W&B config holds the setting."""
        logging = list(RUN_OVERRIDES)
        if self.wandb:
            name = wandb_name or f"{self.study.study_name}-seed{seed}"
            logging = ["progress=false", "logger=wandb", f"logger.group={self.study.study_name}", f"logger.name={name}",
                       f"logger.tags=[{self.dataset},{self.optimizer},{group}]"]
        return compose_config([f"dataset={self.dataset}", f"optimizer={self.optimizer}", f"seed={seed}",
                               f"group={group}", f"results_dir={self.results}", f"eval_every={self.protocol.eval_every}",
                               *self.config_overrides, *logging, *self.protocol.overrides, *overrides_for(values)])

    def run_trial(self, trial: optuna.Trial) -> str:
        """Train one trial; tell Optuna how it ended (complete, pruned, or failed)."""
        values = suggest(trial, self.space)
        cfg = self.config(values, seed=0, group=TRIAL_GROUP, wandb_name=f"{self.study.study_name}-trial{trial.number}")
        trial.set_user_attr("run_dir", run_dir_for(cfg).relative_to(self.results).as_posix())
        rules = get_workload(self.dataset).tuning_exits if self.protocol.exits else None
        last_epoch = trained_epochs(cfg)
        best = math.inf

        def on_epoch(epoch: int, loss: float, replayed: bool) -> None:
            nonlocal best
            best = min(best, loss)
            try:
                trial.report(loss, epoch)
            except optuna.exceptions.UpdateFinishedTrialError:  # its heartbeat came too late: given up for lost
                raise StopRun(LOST) from None
            reason = threshold_exit(rules, loss, best, epoch)
            if reason:
                raise PruneRun(f"notebook exit: {reason}")
            if replayed:
                # the trial passed this epoch's rung before its worker died. Asking records the rung
                # (later trials compete against it), but the answer is ignored: judging it again
                # against trials that reached the rung since would make outcomes depend on kills
                trial.should_prune()
            elif epoch < last_epoch and trial.should_prune():
                raise PruneRun(f"successive halving at epoch {epoch} (loss {loss:.4g})")

        print(f"[tune] {self.study.study_name}: trial {trial.number} {values}", flush=True)
        waited = 0.0
        while True:
            try:
                # SIGTERM or Ctrl-C: the run is recorded as stopped and cli.Interrupted ends this worker; the
                # trial stays running, so its heartbeat stops and a later worker resumes it from its checkpoint
                with heartbeat(self.storage, trial):
                    summary = train(cfg, on_epoch=on_epoch)
                break
            except RunInUse:
                # a retry whose first worker still holds the run: the study gave it up for lost too
                # early (a loaded machine delayed its heartbeat); that worker stops at its next epoch
                if waited > 2 * self.grace_period:
                    trial.set_user_attr("status", "its run stayed locked by another worker")
                    self.study.tell(trial, state=TrialState.FAIL)
                    return "locked"
                time.sleep(5.0)
                waited += 5.0
        status = summary["status"]
        if status == "stopped" and LOST in str(summary.get("reason")):
            print(f"[tune] {self.study.study_name}: trial {trial.number} was given up for lost; its retry resumes it")
            return "lost"
        trial.set_user_attr("status", status)
        trial.set_user_attr("reason", summary.get("reason"))
        try:
            if status in ("finished", "stopped"):
                self.study.tell(trial, summary[f"best_{summary['primary_metric']}"])
            elif status in ("pruned", "diverged"):
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
                trial.set_user_attr("error", summary.get("reason"))
                self.study.tell(trial, state=TrialState.FAIL)
        except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError) as err:  # given up for lost meanwhile
            print(f"[tune] {self.study.study_name}: trial {trial.number} was already closed ({err})")
        return status

    # -- the winner
    def search_done(self) -> bool:
        finished = self.trials(TrialState.COMPLETE, TrialState.PRUNED)
        busy = self.trials(TrialState.RUNNING, TrialState.WAITING)
        failures = [t for t in self.trials(TrialState.FAIL) if "error" in t.user_attrs]
        return not busy and (len(finished) >= self.protocol.trials or len(failures) >= self.protocol.trials)

    def best(self) -> optuna.trial.FrozenTrial | None:
        """The winner (benchmarks.results.best_trial): the best complete trial, or the pruned trial
        that got furthest when none completed."""
        return best_trial(self.trials())

    def seed_configs(self) -> list[DictConfig]:
        best = self.best()
        return [self.config(best.params, seed=s, group=FINAL_GROUP) for s in range(self.protocol.seeds)]

    def _promote_winner(self, cfg: DictConfig) -> bool:
        """Seed 0 of the winner is the winning trial itself: copy its finished run into `final`.
        The trial's own record says where its run is (its run id may come from an older version)."""
        best = self.best()
        source = self.results / best.user_attrs["run_dir"] if "run_dir" in best.user_attrs \
            else run_dir_for(self.config(best.params, seed=0, group=TRIAL_GROUP))
        target = run_dir_for(cfg)
        summary = read_summary(source)
        if read_summary(target) is not None or summary is None or summary["status"] not in ("finished", "stopped"):
            return False
        target.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "metrics.csv", "reconstructions.npz"):
            if (source / name).exists():
                shutil.copy2(source / name, target / name)
        summary.update(run_dir=target.relative_to(self.results).as_posix(), copied_from=summary["run_dir"])
        atomic_write_json(target / "summary.json", summary)  # last: it marks the run as done
        return True

    def seeds_done(self) -> int:
        return sum(seed_done(read_summary(run_dir_for(cfg))) for cfg in self.seed_configs())

    # -- one unit of work
    def step(self) -> str:
        """'trial', 'seed' or 'export' when work was done; 'busy' when only other workers' work is
        left for now; 'done' when this search is finished and exported."""
        trial = self.claim()
        if trial is not None:
            try:
                self.run_trial(trial)
            except optuna.exceptions.UpdateFinishedTrialError:  # this worker stalled past the grace period:
                print(f"[tune] {self.study.study_name}: trial {trial.number} was given up for lost meanwhile; "
                      "its retry runs the setting", flush=True)  # the study failed it and enqueued a retry
            return "trial"
        if not self.search_done():
            return "busy"
        best = self.best()
        if best is None:
            print(f"[tune] {self.study.study_name}: every trial failed or diverged; nothing to export")
            return "done"
        if self.exported() == (best.number, list(range(self.protocol.seeds))):
            return "done"  # exported with these seeds: nothing to check again
        for cfg in self.seed_configs():
            if cfg.seed == 0 and self._promote_winner(cfg):
                return "seed"
            if seed_done(read_summary(run_dir_for(cfg))):
                continue
            try:
                train(cfg)  # a signal that stops the run stops this worker too (train raises)
            except RunInUse:  # another worker holds this run: leave it to them
                continue
            return "seed"
        if not all(seed_done(read_summary(run_dir_for(cfg))) for cfg in self.seed_configs()):
            return "busy"
        with self._lock():
            if self.exported() != (self.best().number, list(range(self.protocol.seeds))):
                self.export()
                return "export"
        return "done"

    def full_run_config(self) -> DictConfig:
        """A full-length run of this search (what the pre-flight checks)."""
        return compose_config([f"dataset={self.dataset}", f"optimizer={self.optimizer}", *self.protocol.overrides])

    def describe(self, ms: dict) -> tuple[str, float | None]:
        """One line of a dry run: trials against the budget, the winner's seeds, and what is left to
        train (trials still to draw priced as full-length runs: an upper bound under pruning)."""
        one, _ = price_run(ms, self.full_run_config())
        price = (lambda runs: "; nothing left" if runs == 0 else  # noqa: E731
                 f"; left: at most {format_duration(one * runs)}" if one is not None
                 else "; left: unknown cost (no bench table)")
        if self.study is None:
            runs = self.protocol.trials + self.protocol.seeds - 1
            return (f"{self.dataset}-{self.optimizer}: not started ({self.protocol.trials} trials, then "
                    f"{self.protocol.seeds - 1} more seeds){price(runs)}"), None if one is None else one * runs
        ended = len(self.trials(TrialState.COMPLETE, TrialState.PRUNED))
        running = len(self.trials(TrialState.RUNNING, TrialState.WAITING))
        left_trials = max(0, self.protocol.trials - ended)
        seeds = self.seeds_done() if self.best() is not None else 0
        left_seeds = max(0, self.protocol.seeds - 1 - max(0, seeds - 1))  # seed 0 is the winning trial
        line = (f"{self.study.study_name}: {ended}/{self.protocol.trials} trials ended"
                + (f" ({running} running)" if running else "") + f", {seeds}/{self.protocol.seeds} seeds done, "
                + ("exported" if self.exported() else "not exported") + price(left_trials + left_seeds))
        left = left_trials + left_seeds
        return line, 0.0 if left == 0 else None if one is None else one * left

    def study_label(self) -> str:
        """Where the study lives, as its tuned config records it."""
        return _relative(self.db_path) if self.storage_url.startswith("sqlite") else storage_label(self.storage_url)

    def overwrite_refusal(self) -> str | None:
        """Why exporting would clobber a tuned config that this study did not write (another study's,
        a published default; committed or not), or None."""
        if not self.tuned_path.exists():
            return None
        source = (yaml.safe_load(self.tuned_path.read_text()) or {}).get("tuned_source", {})
        if (source.get("study_name"), source.get("study")) == (f"{self.dataset}-{self.optimizer}", self.study_label()):
            return None
        what = "a committed tuned config" if tracked_by_git(self.tuned_path) else "a tuned config"
        origin = source.get("study") or source.get("kind") or "another source"
        return (f"{self.tuned_path} is {what} from {origin}; not overwriting it: give another --tuned-dir "
                "(default <results>/tuned), or --force to replace it")

    def exported(self) -> tuple[int, list[int]] | None:
        """(best trial, seeds) of the tuned config on disk when it comes from this study."""
        if not self.tuned_path.exists():
            return None
        source = (yaml.safe_load(self.tuned_path.read_text()) or {}).get("tuned_source", {})
        if source.get("study_name") != self.study.study_name:
            return None
        return source.get("best_trial"), source.get("validation", {}).get("seeds")

    # -- export
    def provenance(self) -> dict[str, Any]:
        best = self.best()
        p = self.protocol
        counts = {state.name.lower(): len(self.trials(state)) for state in (TrialState.COMPLETE, TrialState.PRUNED)}
        counts["diverged"] = len([t for t in self.trials(TrialState.PRUNED) if t.user_attrs.get("status") == "diverged"])
        counts["notebook_exit"] = len([t for t in self.trials(TrialState.PRUNED)
                                       if str(t.user_attrs.get("reason", "")).startswith("notebook exit")])
        counts["failed"] = len([t for t in self.trials(TrialState.FAIL) if "error" in t.user_attrs])
        counts["retried"] = len([t for t in self.trials() if retried_trial_number(t) is not None])
        seeds = [read_summary(run_dir_for(cfg)) for cfg in self.seed_configs()]
        primary = seeds[0]["primary_metric"]
        validation = {"seeds": [int(s["seed"]) for s in seeds], "statuses": [s["status"] for s in seeds],
                      "runs": [s["run_dir"] for s in seeds]}
        for key in (f"final_{primary}", f"final_{primary.replace('train', 'test')}", f"best_{primary}"):
            values = [s.get(key) for s in seeds if s["status"] in ("finished", "stopped") and s.get(key) is not None]
            mean, std, n = mean_std(values)
            validation[key] = {"mean": mean if n else None, "std": std if n > 1 else None, "n": n}
        cfg = self.seed_configs()[0]
        source = {
            "kind": "search",
            "protocol": "scripts/tune.py: full-length trials, equal budget, successive halving, TPE",
            "study": self.study_label(),
            "study_name": self.study.study_name,
            "search_space": self.space,
            "budget_trials": p.trials,
            "trials": counts,
            "sampler": describe_sampler(self.trials(), p.startup_trials, p.sampler_seed),
            "pruner": (f"successive halving (min {p.min_resource} epochs, reduction factor {p.reduction_factor}) on the "
                       "running train loss" + ("; the notebook's exits" if p.exits else "")),
            "trial_run": (f"{cfg.dataset.name} n_train={cfg.dataset.n_train or 'all'}, batch {cfg.batch_size}, "
                          f"{cfg.schedule.name} schedule over {cfg.epochs} epochs "
                          f"({trained_epochs(cfg)} trained), full evaluation every {p.eval_every} epochs"),
            "trial_overrides": list(p.overrides),
            "objective": f"best full-evaluation {primary} of the trial",
            "best_trial": best.number,
            "best_value": float(best.value) if best.value is not None else None,
            "winner": ("the complete trial with the lowest objective" if best.state == TrialState.COMPLETE else
                       f"no trial completed: trial {best.number}, pruned at epoch {max(best.intermediate_values)} "
                       f"(running loss {best.intermediate_values[max(best.intermediate_values)]:.4g}), got furthest; "
                       "all its seeds ran at full length without pruning"),
            "validation": validation,
            "device": seeds[0].get("device"),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": git_commit() or "unknown",
        }
        if self.export_as and self.export_as != self.dataset:
            source["data"] = f"searched on {self.dataset}, a stand-in, and exported for {self.export_as}"
        if self.note:
            source["note"] = self.note
        return source

    def export(self) -> Path:
        if not self.force and self.overwrite_refusal():  # written meanwhile by another study
            raise UsageError(self.overwrite_refusal())
        target = self.export_as or self.dataset
        text = tuned_yaml(target, self.optimizer, self.best().params, self.provenance())
        atomic_write_text(self.tuned_path, text)
        print(f"[tune] wrote {self.tuned_path}")
        return self.tuned_path


def _stopped_by_signal(summary: dict | None) -> bool:
    """A run its worker's end interrupted (SIGTERM, SIGINT): it resumes from its checkpoint next time."""
    return bool(summary) and summary.get("status") == "stopped" and "by signal" in str(summary.get("reason"))


def seed_done(summary: dict | None) -> bool:
    """A run that ended for good (finished, diverged, stopped by its own rule, failed); one stopped
    by a signal is not done: it resumes."""
    return bool(summary) and summary.get("status") in SEED_DONE and not _stopped_by_signal(summary)


def _relative(path: Path) -> str:
    """A path relative to the working directory when inside it (no machine paths in committed files)."""
    path = Path(path).resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


def tuned_yaml(dataset: str, optimizer: str, values: dict, source: dict) -> str:
    """The text of a tuned config: a global-package Hydra config selecting dataset and optimizer."""
    body: dict[str, Any] = {"defaults": [{"override /dataset": dataset}, {"override /optimizer": optimizer}]}
    for dotted, value in values.items():
        node = body
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    body["tuned_source"] = source
    header = (f"# @package _global_\n# Tuned config for {optimizer} on {dataset}: "
              f"python -m benchmarks.train tuned={dataset}/{optimizer}\n")
    return header + yaml.safe_dump(body, sort_keys=False)


# ----------------------------------------------------------------------------- workers

def work(searches: list[Search], poll_s: float = 5.0) -> None:
    """Do the earliest available unit of work until every search is done (one worker's loop)."""
    while True:
        results = []
        for search in searches:
            result = search.step()
            results.append(result)
            if result not in ("busy", "done"):
                break
        else:
            if all(r == "done" for r in results):
                return
            time.sleep(poll_s)  # only other workers' trials or seeds are left for now


def study_exists(storage_url: str, name: str) -> bool:
    if storage_url.startswith("sqlite:///") and not Path(storage_url[len("sqlite:///"):]).exists():
        return False
    if storage_url.startswith(JOURNAL_PREFIX) and not Path(storage_url[len(JOURNAL_PREFIX):]).exists():
        return False
    return name in optuna.get_all_study_names(open_storage(storage_url))


def describe_searches(searches: list["Search"], items: list | None = None) -> str:
    """A dry run of searches: each one's state and the training left, priced by the bench table of
    this device and thread count (the repository's tables, wherever the studies live)."""
    device = search_device()
    choice = choose_table(device)
    lines = [f"{len(searches)} searches on {device}; " + choice.describe(device)]
    total, unknown = 0.0, 0
    for search in searches:
        line, cost = search.describe(choice.ms)
        lines.append("  " + line)
        total, unknown = total + (cost or 0.0), unknown + (cost is None)
    left = ("unknown hours" if searches and unknown == len(searches) else
            f"at most {format_duration(total)}" + (f" plus {unknown} searches of unknown cost" if unknown else ""))
    lines.append(f"left in all: {left} of training (pruning cuts most trials short)")
    return "\n".join(lines)


def search_device() -> str:
    """The bench name of the device searches use here: a GPU's name, or '<CPU model> x<threads>'."""
    device = resolve_device("auto")
    return f"{cpu_model()} x{torch.get_num_threads()}" if device.type == "cpu" else device_name(device, bench=True)


def preflight(searches: list["Search"]) -> list[str]:
    """One line per missing piece (data, optional package, device) of the searches, with its fix."""
    return problems(search.full_run_config() for search in searches)
