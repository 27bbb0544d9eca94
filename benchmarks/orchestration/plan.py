"""What a command will run and what it will cost, and one way to run it: the entry points' plans.

A `Plan` is an ordered list of `PlannedRun`s, each the Hydra overrides that compose one run's
config (so a subprocess or a submitit job can rebuild it) and a label. `Plan.describe()` is every
entry point's dry run: each run in order with its state (done, resume, new, or waiting for its
data), its expected training time from the bench table of the device it will run on, and totals
that say what is left to do, what waits for data and which command fetches it.

An executor runs a plan, and every executor takes a deadline: a run still going then gets
SIGTERM, ends as 'stopped' with the epochs it reached and keeps its checkpoint, so the same
command later resumes it. SIGTERM or SIGINT to the command does the same to the runs in progress
and starts no other (`benchmarks.cli.Interrupted` ends the executor).
- `InProcess`: one run after the other in this process (reproduce, the ablations, the demo);
- `Processes(n, gpus)`: n `python -m benchmarks.train` processes at a time; with `gpus`, slot k
  runs on `CUDA_VISIBLE_DEVICES=gpus[k % len(gpus)]` (one worker per GPU of a box with several);
- `Submitit(settings, results)`: one job per run through submitit (SLURM, or its local executor), set up
  by the same `launch.submitit_executor` as the search workers.
The tuner's workers (scripts/tune.py) are started by the same launcher module (benchmarks/orchestration/launch.py).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable

import torch
from omegaconf import DictConfig

from benchmarks.benchtable import REPO_BENCH, BenchChoice, choose_table, format_duration, price_run
from benchmarks.cli import Interrupted
from benchmarks.config import compose_config
from benchmarks.preflight import data_problem, fetch_command, problems
from benchmarks.results import read_summary
from benchmarks.rundir import FINAL_STATUSES, cpu_model, device_name, run_dir_for
from benchmarks.train import resolve_device, train
from benchmarks.workloads import run_steps
from benchmarks.orchestration.launch import LaunchSettings, submitit_executor

REPO = Path(__file__).resolve().parents[2]
STOP_GRACE_S = 60  # after SIGTERM, how long a run has to write its summary before it is killed


@dataclass
class PlannedRun:
    overrides: list[str]
    label: str

    @cached_property
    def cfg(self) -> DictConfig:
        return compose_config(self.overrides)

    @property
    def run_dir(self) -> Path:
        return run_dir_for(self.cfg)

    def state(self) -> str:
        if (read_summary(self.run_dir) or {}).get("status") in FINAL_STATUSES:
            return "done"
        return "resume" if (self.run_dir / "checkpoint.pt").exists() else "new"

    def status(self) -> str:
        return (read_summary(self.run_dir) or {}).get("status", "no summary")

    def steps(self) -> int:
        """Optimizer steps of the whole run (steps per epoch x trained epochs)."""
        return run_steps(self.cfg)


def target_device(runs: Iterable[PlannedRun], threads: int | None = None) -> str:
    """The bench name of the device the runs will use (their `device` setting, on this machine):
    a GPU's name, or '<CPU model> xN' with the N threads each run will use."""
    first = next(iter(runs), None)
    device = resolve_device(str(first.cfg.device)) if first is not None else torch.device("cpu")
    if device.type == "cpu":
        return f"{cpu_model()} x{threads or torch.get_num_threads()}"
    return device_name(device, bench=True)


def use_threads(threads: int | None) -> None:
    """Run with `threads` torch threads here and in the training processes started from here."""
    if threads:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def bench_folders(results: str | Path) -> list[Path]:
    """Where bench tables are looked for: the results folder's bench/, then the repository's."""
    return [Path(results) / "bench", REPO_BENCH]


@dataclass
class Plan:
    runs: list[PlannedRun] = field(default_factory=list)
    title: str = "plan"
    threads: int | None = None  # torch threads per run (None: torch's default here)

    def estimates(self, ms: dict) -> dict[str, float | None]:
        """Seconds of training per run (None where the table has no row for its optimizer)."""
        return {label: seconds for label, (seconds, _) in self._priced(ms).items()}

    def _priced(self, ms: dict) -> dict[str, tuple[float | None, int | None]]:
        """Per run: (seconds or None, the batch size of the bench figure used)."""
        out = {}
        for run in self.runs:
            out[run.label] = price_run(ms, run.cfg)
        return out

    def batch_note(self, ms: dict) -> list[str]:
        """A note when some runs are priced with another batch size's ms/step."""
        other = {int(run.cfg.batch_size): measured for run, (_, measured) in zip(self.runs, self._priced(ms).values())
                 if measured is not None and measured != int(run.cfg.batch_size)}
        return [f"  note: batch {batch} is priced with the ms/step of batch {measured} (the table has no other): "
                f"{'an upper' if batch < measured else 'a lower'} bound" for batch, measured in sorted(other.items())]

    def longest_first(self, ms: dict) -> "Plan":
        """The same runs, the most expensive first (unknown costs last), so a deadline cuts the cheap ones."""
        cost = self.estimates(ms)
        return Plan(sorted(self.runs, key=lambda r: -(cost[r.label] if cost[r.label] is not None else -1)), self.title,
                    self.threads)

    def pricing(self, results: str | Path = "results", device: str | None = None) -> tuple[str, BenchChoice]:
        """(device name with threads, the bench table that prices the runs)."""
        device = device or target_device(self.runs, self.threads)
        return device, choose_table(device, bench_folders(results))

    def preflight(self) -> list[str]:
        """One line per missing piece (data, optional package, device) with its fix; [] when all is there."""
        return problems(run.cfg for run in self.runs)

    def summary(self, results: str | Path = "results", workers: int = 1) -> str:
        """Before long work: the runs left, their hours, the bench table used and when they end."""
        device, choice = self.pricing(results)
        cost = self.estimates(choice.ms)
        todo = [run for run in self.runs if run.state() != "done"]
        known = [cost[run.label] for run in todo if cost[run.label] is not None]
        unknown = len(todo) - len(known)
        total = sum(known) / max(1, workers)
        if not todo:
            left = "nothing left to train"
        elif unknown == len(todo):
            left = "unknown hours of training (no bench table prices these runs)"
        else:
            eta = time.strftime("%H:%M", time.localtime(time.time() + total))
            left = (f"{format_duration(total)} of training" + (f" with {workers} workers" if workers > 1 else "")
                    + (f" plus {unknown} runs of unknown cost" if unknown else "")
                    + f", ends {'after' if unknown else 'around'} {eta} (evaluation adds roughly 10-30%)")
        return "\n".join([f"{self.title}: {len(todo)} of {len(self.runs)} runs to do on {device}, {left}",
                          choice.describe(device), *self.batch_note(choice.ms)])

    def describe(self, results: str | Path = "results", device: str | None = None) -> tuple[str, int]:
        """The dry run's text, and its exit status (1 when some data set is missing)."""
        device, choice = self.pricing(results, device)
        cost = self.estimates(choice.ms)
        problems = {name: data_problem(next(r.cfg for r in self.runs if r.cfg.dataset.name == name))
                    for name in dict.fromkeys(r.cfg.dataset.name for r in self.runs)}
        lines = [f"{self.title}: {len(self.runs)} runs on {device}", choice.describe(device), *self.batch_note(choice.ms)]
        for name, problem in problems.items():
            fetch = "" if problem is None or "make data" in str(problem) else f"; fetch: {fetch_command(name)}"
            lines.append(f"data {name}: " + ("ok" if problem is None else f"MISSING ({problem}){fetch}"))
        lines.append(f"{'#':>3} {'run':<40} {'state':<16} {'est. training':>14}")
        todo = waiting = 0.0
        n_todo = n_waiting = unknown = 0
        for k, run in enumerate(self.runs, 1):
            state = "waiting for data" if problems[run.cfg.dataset.name] else run.state()
            seconds = cost[run.label]
            lines.append(f"{k:>3} {run.label:<40} {state:<16} {format_duration(seconds):>14}")
            if state in ("new", "resume"):
                todo, n_todo, unknown = todo + (seconds or 0.0), n_todo + 1, unknown + (seconds is None)
            elif state == "waiting for data":
                waiting, n_waiting = waiting + (seconds or 0.0), n_waiting + 1
        done = len(self.runs) - n_todo - n_waiting
        hours = "unknown hours" if n_todo and unknown == n_todo else format_duration(todo)
        lines.append(f"to do: {n_todo} runs, {hours} of training"
                     + (f" (+{unknown} runs without a bench figure)" if unknown and unknown < n_todo else "")
                     + f"; done: {done}; waiting for data: {n_waiting} runs"
                     + (f" ({format_duration(waiting)} once it is there)" if waiting else "")
                     + "; evaluation adds roughly 10-30%")
        return "\n".join(lines), int(any(problems.values()))


# ----------------------------------------------------------------------------- executors

class InProcess:
    """One run after the other in this process; a run that cannot start is recorded as failed."""

    def run(self, plan: Plan, deadline: float | None = None) -> dict[str, str]:
        statuses = {}
        for run in plan.runs:
            if deadline is not None and time.time() > deadline:
                statuses[run.label] = "not started (deadline)"
                continue
            try:
                statuses[run.label] = train(run.cfg)["status"]
            except Exception as err:  # noqa: BLE001 - one run that cannot start must not stop the others
                statuses[run.label] = f"failed: {type(err).__name__}: {err}"
        return statuses


class Processes:
    """`n` runs at a time as `python -m benchmarks.train` processes; SIGTERM at the deadline."""

    def __init__(self, n: int, gpus: list[int] | None = None, logs: Path | None = None, cwd: Path = REPO):
        self.n, self.gpus, self.logs, self.cwd = max(1, n), gpus, logs, cwd

    def _start(self, run: PlannedRun, slot: int) -> tuple[subprocess.Popen, object]:
        env = dict(os.environ)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpus[slot % len(self.gpus)])
        log = open(self.logs / f"{run.label.replace('/', '_').replace(' ', '_')}.log", "w") if self.logs else None
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.train", *run.overrides], cwd=self.cwd, env=env,
                                stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
        return proc, log

    def run(self, plan: Plan, deadline: float | None = None) -> dict[str, str]:
        if self.logs:
            self.logs.mkdir(parents=True, exist_ok=True)
        pending = list(plan.runs)
        running: dict[int, tuple[PlannedRun, subprocess.Popen, object]] = {}
        statuses: dict[str, str] = {}
        try:
            return self._run(pending, running, statuses, deadline)
        except Interrupted as stop:  # the command is stopped: so are its runs (as 'stopped', resumable)
            self._stop([proc for _, proc, _ in running.values()], stop.signum)
            raise

    def _run(self, pending: list[PlannedRun], running: dict, statuses: dict[str, str],
             deadline: float | None) -> dict[str, str]:
        while pending or running:
            late = deadline is not None and time.time() > deadline
            while pending and len(running) < self.n and not late:
                slot = next(k for k in range(self.n) if k not in running)
                run = pending.pop(0)
                running[slot] = (run, *self._start(run, slot))
            if late:
                statuses.update({run.label: "not started (deadline)" for run in pending})
                pending = []
                self._stop([proc for _, proc, _ in running.values()])
            for slot, (run, proc, log) in list(running.items()):
                if proc.poll() is not None:
                    if log:
                        log.close()
                    statuses[run.label] = run.status() if proc.returncode == 0 or run.status() != "no summary" \
                        else f"exit {proc.returncode}"
                    del running[slot]
            time.sleep(0.2)
        return statuses

    @staticmethod
    def _stop(procs: list[subprocess.Popen], signum: int = signal.SIGTERM) -> None:
        """SIGTERM (the runner ends as 'stopped' and keeps its checkpoint); SIGKILL whoever ignores it."""
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)
        end = time.time() + STOP_GRACE_S
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, end - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def train_overrides(overrides: list[str]) -> str:
    """One run, rebuilt from its overrides (what a submitit job calls)."""
    return train(compose_config(overrides))["status"]


class Submitit:
    """One submitit job per run (SLURM, or the local executor); each job ends by its own time limit."""

    def __init__(self, settings: LaunchSettings, results: str | Path):
        self.settings, self.results = settings, results

    def run(self, plan: Plan, deadline: float | None = None) -> dict[str, str]:
        executor = submitit_executor(self.settings, self.results, "locoprop-run")
        jobs = executor.map_array(train_overrides, [run.overrides for run in plan.runs])
        statuses = {}
        for run, job in zip(plan.runs, jobs):
            try:
                statuses[run.label] = job.result()
            except Exception as err:  # noqa: BLE001 - one lost job must not hide the others
                statuses[run.label] = f"failed: {type(err).__name__}"
        return statuses


def executor_for(name: str, workers: int = 1, gpus: list[int] | None = None, logs: Path | None = None,
                 settings=None, results: str | Path = "results"):
    """'inprocess', 'processes' (with `workers`, or one per GPU of `gpus`), 'local' or 'slurm' (submitit)."""
    if name == "inprocess":
        return InProcess()
    if name == "processes":
        return Processes(len(gpus) if gpus else workers, gpus, logs)
    if name in ("local", "slurm"):
        return Submitit(settings, results)
    raise SystemExit(f"unknown executor {name!r}: inprocess, processes, local or slurm")
