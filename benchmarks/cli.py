"""How every entry point ends: an expected mistake in one line, a stop signal in one line.

`run(main)` calls an entry point's `main(argv)` and turns
- an expected mistake (a bad option, name or override, an invalid value, missing data: `EXPECTED`)
  into one line on stderr and exit status 2; the traceback only with `--debug` or HYDRA_FULL_ERROR=1;
- SIGTERM or SIGINT into `Interrupted`: the runner records the run in progress as stopped and keeps
  its checkpoint (benchmarks.train), no new run starts, one line says so, and the exit status is
  128 + the signal number; the same command run again resumes.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Callable, NoReturn

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from benchmarks.data import DataError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class UsageError(ValueError):
    """A mistake in what was asked for (an option, a name, a value): reported in one line."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived. A BaseException, like KeyboardInterrupt, so that no loop's
    `except Exception` carries on with the next run."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = int(signum)


EXPECTED = (ValueError, DataError, HydraException, OmegaConfBaseException)


def debugging(argv: list[str] | None = None) -> bool:
    """Whether tracebacks are wanted: `--debug` among the arguments, or Hydra's HYDRA_FULL_ERROR=1."""
    return "--debug" in (sys.argv[1:] if argv is None else argv) or os.environ.get("HYDRA_FULL_ERROR") == "1"


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


@contextlib.contextmanager
def one_line_errors(debug: bool):
    """Inside the block, an expected mistake ends the process with one line and exit status 2."""
    try:
        yield
    except EXPECTED as err:
        if debug:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None


def _raise_interrupted(signum, frame) -> NoReturn:
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals(handler: Callable = _raise_interrupted):
    """While the block runs, SIGTERM and SIGINT call `handler` (by default: raise Interrupted);
    only in the main thread, where Python runs signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def run(main: Callable[[list[str]], object], argv: list[str] | None = None) -> NoReturn:
    """Run an entry point's `main(argv)` (without `--debug`) and exit with its status (an int; 0 otherwise)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debugging(argv)
    argv = [a for a in argv if a != "--debug"]
    try:
        with one_line_errors(debug), stop_on_signals():
            status = main(argv)
    except Interrupted as stop:
        print(f"{stop}; run the same command again to resume", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    raise SystemExit(status if isinstance(status, int) else 0)
