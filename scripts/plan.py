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
- `Submitit(settings)`: one job per run through submitit (SLURM, or its local executor).
The tuner's workers (scripts/tune.py) are started by the same launcher module (scripts/launch.py).
"""
from __future__ import annotations

import json
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

from benchmarks.cli import Interrupted
from benchmarks.config import compose_config
from benchmarks.results import read_summary
from benchmarks.rundir import FINAL_STATUSES, device_name, run_dir_for
from benchmarks.schedule import Schedule
from benchmarks.train import resolve_device, train
from benchmarks.workloads import get_workload, load_dataset

REPO = Path(__file__).resolve().parents[1]
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
        cfg = self.cfg
        n_train = cfg.dataset.n_train or get_workload(cfg.dataset.name).n_train
        epochs = Schedule.from_config(cfg.schedule, int(cfg.epochs)).trained_epochs(cfg.stop_epoch)
        return n_train // int(cfg.batch_size) * epochs


def data_problem(cfg: DictConfig) -> str | None:
    """Why this run's data set cannot be loaded (files missing or corrupt), or None."""
    try:
        load_dataset(cfg.dataset.name, root=cfg.dataset.root, n_train=0, n_test=0)
    except Exception as err:  # noqa: BLE001 - reported, not raised
        return f"{type(err).__name__}: {err}"
    return None


def fetch_command(dataset: str) -> str:
    workload = get_workload(dataset)
    if workload.paper:
        return f"make data (python -m scripts.download_data --datasets {dataset})"
    if workload.data_dir:
        return (f"copy the files it is generated from into {workload.default_root()} (or point $LOCOPROP_DATA or "
                f"dataset.root at them)")
    return "nothing (generated)"


def bench_for(device: str, results: str | Path = "results") -> tuple[str | None, dict]:
    """(table file, {(architecture, optimizer, batch): ms}) of the quiet bench table measured on
    `device` (a GPU's name, or '<CPU model> xN'), or (None, {}) when none exists: another
    machine's timings would price the runs wrongly."""
    tables = []
    for path in sorted(Path(results, "bench").glob("*.json")):
        table = json.loads(path.read_text())
        if table.get("device") == device and not table.get("busy") and table.get("precision", "float32") == "float32":
            tables.append((path, table))
    if not tables:
        return None, {}
    path, table = tables[-1]
    return path.name, {(r["dataset"], r["optimizer"], r.get("batch_size", 1000)): r["ms_per_step"]
                       for r in table.get("rows", []) if r.get("ms_per_step")}


def target_device(runs: Iterable[PlannedRun]) -> str:
    """The bench name of the device the runs will use (their `device` setting, on this machine)."""
    first = next(iter(runs), None)
    device = resolve_device(str(first.cfg.device)) if first is not None else torch.device("cpu")
    return device_name(device, bench=True)


@dataclass
class Plan:
    runs: list[PlannedRun] = field(default_factory=list)
    title: str = "plan"

    def estimates(self, ms: dict) -> dict[str, float | None]:
        out = {}
        for run in self.runs:
            cfg = run.cfg
            key = (get_workload(cfg.dataset.name).architecture, cfg.optimizer.name, int(cfg.batch_size))
            out[run.label] = ms[key] * run.steps() / 1e3 if key in ms else None
        return out

    def longest_first(self, ms: dict) -> "Plan":
        """The same runs, the most expensive first (unknown costs last), so a deadline cuts the cheap ones."""
        cost = self.estimates(ms)
        return Plan(sorted(self.runs, key=lambda r: -(cost[r.label] if cost[r.label] is not None else -1)), self.title)

    def describe(self, results: str | Path = "results", device: str | None = None) -> tuple[str, int]:
        """The dry run's text, and its exit status (1 when some data set is missing)."""
        device = device or target_device(self.runs)
        table, ms = bench_for(device, results)
        cost = self.estimates(ms)
        problems = {name: data_problem(next(r.cfg for r in self.runs if r.cfg.dataset.name == name))
                    for name in dict.fromkeys(r.cfg.dataset.name for r in self.runs)}
        lines = [f"{self.title}: {len(self.runs)} runs on {device}",
                 f"cost estimates: {'bench table ' + table if table else 'no bench table of this device (make bench)'}"]
        for name, problem in problems.items():
            lines.append(f"data {name}: " + ("ok" if problem is None else f"MISSING ({problem}); fetch: {fetch_command(name)}"))
        lines.append(f"{'#':>3} {'run':<40} {'state':<16} {'est. training':>14}")
        todo = waiting = 0.0
        n_todo = n_waiting = unknown = 0
        for k, run in enumerate(self.runs, 1):
            state = "waiting for data" if problems[run.cfg.dataset.name] else run.state()
            seconds = cost[run.label]
            est = f"{seconds / 60:.1f} min" if seconds is not None else "unknown"
            lines.append(f"{k:>3} {run.label:<40} {state:<16} {est:>14}")
            if state in ("new", "resume"):
                todo, n_todo, unknown = todo + (seconds or 0.0), n_todo + 1, unknown + (seconds is None)
            elif state == "waiting for data":
                waiting, n_waiting = waiting + (seconds or 0.0), n_waiting + 1
        done = len(self.runs) - n_todo - n_waiting
        lines.append(f"to do: {n_todo} runs, {todo / 3600:.2f} h of training"
                     + (f" (+{unknown} runs without a bench figure)" if unknown else "")
                     + f"; done: {done}; waiting for data: {n_waiting} runs"
                     + (f" ({waiting / 3600:.2f} h once it is there)" if waiting else "")
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

    def __init__(self, settings, folder: Path):
        self.settings, self.folder = settings, folder

    def run(self, plan: Plan, deadline: float | None = None) -> dict[str, str]:
        import submitit

        executor = submitit.AutoExecutor(folder=str(self.folder / "%j"),
                                         cluster="local" if self.settings.launcher == "local" else "slurm")
        executor.update_parameters(timeout_min=self.settings.time_min, gpus_per_node=self.settings.gpus_per_worker,
                                   cpus_per_task=self.settings.cpus_per_worker, name="locoprop-run")
        if self.settings.launcher == "slurm":
            executor.update_parameters(slurm_partition=self.settings.partition)
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
        return Submitit(settings, Path(results) / "submitit")
    raise SystemExit(f"unknown executor {name!r}: inprocess, processes, local or slurm")
