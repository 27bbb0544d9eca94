"""Where a search's study lives, and how a lost worker's trial comes back: Optuna's own machinery,
through its public API only (a private name can change in any Optuna release).

- `sqlite:///<file>` (the default, `<results>/tuning/<dataset>/<optimizer>.db`) or any SQLAlchemy
  URL such as `postgresql://user@host/db`: Optuna's `RDBStorage`;
- `journal:<file>`: Optuna's `JournalStorage` on a file (`JournalFileBackend`), for shared file
  systems where SQLite's locking is unsafe (NFS and the like).

Each running trial records a heartbeat every `heartbeat_interval` seconds (`heartbeat`, the thread
`Study.optimize` runs, for trials asked and told by hand). A trial whose heartbeat is older than
`grace_period` has lost its worker (a killed process, a machine that went away): `fail_lost_trials`
marks it failed, and Optuna's `RetryHeartbeatStaleTrialCallback` enqueues its setting again, so the
next free worker runs it (resuming the run from its last epoch checkpoint). `RDBStorage` keeps
heartbeats in its own table and `optuna.storages.fail_stale_trials` fails its lost trials;
`JournalStorage` has no heartbeats in Optuna, so `HeartbeatJournalStorage` keeps the heartbeat as a
trial attribute and fails lost trials the same way.
"""
from __future__ import annotations

import contextlib
import copy
import threading
import time
import warnings
from pathlib import Path
from typing import Iterator

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 180  # six missed heartbeats: long enough for a loaded machine, short for a lost one
MAX_RETRY = 3  # a setting whose worker dies more often than this is left failed
JOURNAL_PREFIX = "journal:"


class HeartbeatJournalStorage(JournalStorage):
    """Optuna's JournalStorage with heartbeats: a trial's last beat is a trial attribute."""

    HEARTBEAT_KEY = "heartbeat"

    def __init__(self, path: str | Path, heartbeat_interval: int, grace_period: int,
                 stale_trial_callback=None):
        super().__init__(JournalFileBackend(str(path)))
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, self.HEARTBEAT_KEY, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:  # given up for lost: its worker learns it at its next epoch
            pass

    def get_heartbeat_interval(self) -> int:
        return self.heartbeat_interval

    def fail_stale_trials(self, study: optuna.Study) -> None:
        """What `optuna.storages.fail_stale_trials` does for RDBStorage: fail the running trials
        whose last beat is older than the grace period, then call back for each one failed here."""
        now = time.time()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(self.HEARTBEAT_KEY)
            if beat is None or now - beat <= self.grace_period:
                continue
            trial_id = study_trial_id(self, study, trial.number)
            try:
                failed = self.set_trial_state_values(trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first
                continue
            if failed and self.stale_trial_callback is not None:  # a copy: the callback edits its attributes
                self.stale_trial_callback(study, copy.deepcopy(self.get_trial(trial_id)))


def open_storage(url: str, heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
                 grace_period: int = GRACE_PERIOD_S) -> BaseStorage:
    """The storage of `url` (see the module docstring), with heartbeats and retries of lost trials."""
    with warnings.catch_warnings():  # experimental since Optuna 2.8, stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return HeartbeatJournalStorage(path, heartbeat_interval, grace_period, retry)
    try:
        with warnings.catch_warnings():  # the heartbeat arguments are 'experimental' in Optuna's words
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                              heartbeat_stale_trial_callback=retry)
    except ImportError as err:  # e.g. postgresql:// without a driver
        raise SystemExit(f"--storage {url}: the database driver is not installed ({err}); for PostgreSQL: "
                         "pip install 'locoprop-bench[postgres]'") from None


def storage_label(url: str) -> str:
    """How a provenance names a storage: a local file by its name, a server without its address."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):]).name
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX):]).name
    return url.split("://", 1)[0] + " database (URL not recorded)"


def study_trial_id(storage: BaseStorage, study: optuna.Study, number: int) -> int:
    """The storage's id of the study's trial `number` (Optuna keeps a trial's id private)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


@contextlib.contextmanager
def heartbeat(storage: BaseStorage, trial: optuna.Trial) -> Iterator[None]:
    """Record `trial`'s heartbeat in `storage` (the one `open_storage` gave its study) every
    heartbeat interval while the block runs, as `Study.optimize` does for the trials it runs."""
    trial_id = study_trial_id(storage, trial.study, trial.number)
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(timeout=storage.get_heartbeat_interval()):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-trial-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_lost_trials(storage: BaseStorage, study: optuna.Study) -> None:
    """Fail the running trials whose worker stopped beating and enqueue their settings again."""
    if isinstance(storage, HeartbeatJournalStorage):
        storage.fail_stale_trials(study)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def retried_trial_number(trial: optuna.trial.FrozenTrial) -> int | None:
    """The trial this one runs again after its worker was lost (older studies: user attr retry_of)."""
    number = trial.system_attrs.get("failed_trial")  # what RetryHeartbeatStaleTrialCallback records
    return number if number is not None else trial.user_attrs.get("retry_of")
