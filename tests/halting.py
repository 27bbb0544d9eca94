"""Commands that train and halt at a known epoch, so that a test kills or signals them there every time.

The child runs the module as `python -m` would, with `benchmarks.train.Run.checkpoint` wrapped: after
the checkpoint of epoch `epoch` of the `nth_run`-th run it trains, it names that run's directory in
the marker file and waits to be killed. A test waits for the marker, not for a lucky moment.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

_HALTING_CHILD = """
import os, runpy, sys, time
from pathlib import Path
from benchmarks import train

marker, nth_run, epoch, module = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
runs, checkpoint = [], train.Run.checkpoint

def checkpoint_then_halt(run):
    checkpoint(run)
    if run.run_dir not in runs:
        runs.append(run.run_dir)
    if len(runs) == nth_run and run.rows[-1]["epoch"] == epoch:
        marker.with_suffix(".tmp").write_text(str(run.run_dir))
        os.replace(marker.with_suffix(".tmp"), marker)
        while True:  # a signal's handler raises here, as it would between two epochs
            time.sleep(1)

train.Run.checkpoint = checkpoint_then_halt
sys.argv = [module, *sys.argv[5:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def start_halting(module: str, args: list[str], marker: Path, epoch: int, nth_run: int = 1,
                  **popen) -> subprocess.Popen:
    """`python -m module *args`, halting after the checkpoint of `epoch` of its `nth_run`-th run."""
    command = [sys.executable, "-c", _HALTING_CHILD, str(marker), str(nth_run), str(epoch), module, *args]
    return subprocess.Popen(command, **popen)


def wait_until_halted(proc: subprocess.Popen, marker: Path, timeout_s: float = 600) -> Path:
    """The run directory the child halted in; fails if the child ended (or hung) before halting."""
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the command ended (exit status {proc.returncode}) before it halted")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the command did not halt within {timeout_s:.0f} s")
        time.sleep(0.05)
    return Path(marker.read_text())
