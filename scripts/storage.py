"""Where a search's study lives, and how a lost worker's trial comes back: Optuna's own machinery.

- `sqlite:///<file>` (the default, `<results>/tuning/<dataset>/<optimizer>.db`) or any SQLAlchemy
  URL such as `postgresql://user@host/db`: Optuna's `RDBStorage`;
- `journal:<file>`: Optuna's `JournalStorage` on a file (`JournalFileBackend`), for shared file
  systems where SQLite's locking is unsafe (NFS and the like).

Each running trial records a heartbeat every `heartbeat_interval` seconds (Optuna's heartbeat
thread). A trial whose heartbeat is older than `grace_period` has lost its worker (a killed
process, a machine that went away): `optuna.storages.fail_stale_trials` marks it failed, and
Optuna's `RetryHeartbeatStaleTrialCallback` enqueues its setting again, so the next free worker
runs it (resuming the run from its last epoch checkpoint). `RDBStorage` keeps heartbeats in its
own table; `JournalStorage` has none in Optuna, so `HeartbeatJournalStorage` adds the same
interface with the heartbeat stored as a trial attribute.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import Iterator

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat, get_heartbeat_thread
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 180  # six missed heartbeats: long enough for a loaded machine, short for a lost one
MAX_RETRY = 3  # a setting whose worker dies more often than this is left failed
JOURNAL_PREFIX = "journal:"


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage with the heartbeat interface of its RDBStorage."""

    HEARTBEAT_KEY = "heartbeat"

    def __init__(self, path: str | Path, heartbeat_interval: int, grace_period: int,
                 stale_trial_callback=None):
        super().__init__(JournalFileBackend(str(path)))
        self._heartbeat_interval, self._grace_period = heartbeat_interval, grace_period
        self._stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, self.HEARTBEAT_KEY, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:  # given up for lost: its worker learns it at its next epoch
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        return [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if self.HEARTBEAT_KEY in t.system_attrs and now - t.system_attrs[self.HEARTBEAT_KEY] > self._grace_period]

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self._stale_trial_callback


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


@contextlib.contextmanager
def heartbeat(trial: optuna.Trial) -> Iterator[None]:
    """Optuna's heartbeat thread for `trial` while the block runs (what `Study.optimize` does)."""
    with get_heartbeat_thread(trial._trial_id, trial.study._storage):
        yield


def fail_lost_trials(study: optuna.Study) -> None:
    """Fail the running trials whose worker stopped beating and enqueue their settings again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def retried_trial_number(trial: optuna.trial.FrozenTrial) -> int | None:
    """The trial this one runs again after its worker was lost (older studies: user attr retry_of)."""
    number = trial.system_attrs.get("failed_trial")  # what RetryHeartbeatStaleTrialCallback records
    return number if number is not None else trial.user_attrs.get("retry_of")
