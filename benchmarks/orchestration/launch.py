"""Start a search's workers: local processes, or jobs through submitit (SLURM, or its local executor).

`python -m scripts.tune ... --workers 64 --launcher slurm --partition gpu --time-min 600 --gpus-per-worker 1`
submits one SLURM job array of 64 tasks; each task is one worker of the same command (with
`--workers 1`) on the shared study, so the study's storage must be reachable from every node: a
PostgreSQL URL (`--storage postgresql://...`) or a journal file on a shared disk. `--launcher local`
is the same code path with submitit's local executor (jobs are processes of this machine), which is
how the tests run it everywhere. The submitting command waits for the jobs and reports their ends.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from benchmarks.cli import Interrupted

LAUNCHERS = ("processes", "local", "slurm")
WORKER_OPTIONS = ("--workers", "--launcher", "--partition", "--time-min", "--gpus-per-worker", "--cpus-per-worker",
                  "--submitit-folder")


@dataclass
class LaunchSettings:
    launcher: str = "processes"
    workers: int = 1
    partition: str | None = None
    time_min: int = 240
    gpus_per_worker: int = 0
    cpus_per_worker: int = 2
    submitit_folder: str | None = None


def add_launch_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=1, help="workers sharing the work (locally: one per core at most)")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="processes", help="how the workers start: local "
                        "processes, or submitit jobs on SLURM ('slurm') or on this machine ('local')")
    parser.add_argument("--partition", default=None, help="SLURM partition (--launcher slurm)")
    parser.add_argument("--time-min", type=int, default=240, help="time limit of each job, minutes (submitit)")
    parser.add_argument("--gpus-per-worker", type=int, default=0, help="GPUs per job (submitit)")
    parser.add_argument("--cpus-per-worker", type=int, default=2, help="CPUs per job (submitit)")
    parser.add_argument("--submitit-folder", default=None, help="submitit's logs and pickles (default "
                        "<results>/submitit)")


def settings_from(args: argparse.Namespace) -> LaunchSettings:
    if args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}")
    return LaunchSettings(args.launcher, args.workers, args.partition, args.time_min, args.gpus_per_worker,
                          args.cpus_per_worker, args.submitit_folder)


def worker_argv(argv: list[str]) -> list[str]:
    """The command line of one worker: the same, without the launch options, with --workers 1."""
    options, overrides = (argv[:argv.index("--")], argv[argv.index("--"):]) if "--" in argv else (argv, [])
    kept, skip = [], False
    for token in options:
        if skip:
            skip = False
        elif token in WORKER_OPTIONS:
            skip = True
        elif not any(token.startswith(option + "=") for option in WORKER_OPTIONS):
            kept.append(token)
    return [*kept, "--workers", "1", *overrides]


def work_beside_processes(module: str, argv: list[str], n: int, do_work: Callable[[], object]) -> None:
    """`do_work()` in this process while n more local processes run the same command as workers;
    a signal that stops this worker (its run recorded as stopped) is passed on to the others."""
    children = [subprocess.Popen([sys.executable, "-m", module, *worker_argv(argv)]) for _ in range(n)]
    try:
        do_work()
    except Interrupted as stop:
        for child in children:
            child.send_signal(stop.signum)
        raise
    finally:
        for child in children:
            child.wait()


def submitit_executor(settings: LaunchSettings, results: str | Path, name: str, parallelism: int | None = None):
    """The one submitit set-up of the harness (SLURM, or its local executor): a search's or a
    campaign's workers and a plan's runs are all submitted through it."""
    try:
        import submitit
    except ModuleNotFoundError:
        raise SystemExit("--launcher local/slurm needs submitit: pip install 'locoprop-bench[dev]'") from None
    folder = Path(settings.submitit_folder or Path(results) / "submitit") / "%j"
    executor = submitit.AutoExecutor(folder=str(folder), cluster="local" if settings.launcher == "local" else "slurm")
    executor.update_parameters(timeout_min=settings.time_min, gpus_per_node=settings.gpus_per_worker,
                               cpus_per_task=settings.cpus_per_worker, name=name)
    if settings.launcher == "slurm":
        executor.update_parameters(slurm_partition=settings.partition)
        if parallelism:
            executor.update_parameters(slurm_array_parallelism=parallelism)
    return executor


def submit(entry, argv: list[str], settings: LaunchSettings, results: str | Path) -> list:
    """A submitit job array of `settings.workers` tasks, each calling `entry(worker_argv(argv))`."""
    executor = submitit_executor(settings, results, "locoprop-worker", parallelism=settings.workers)
    jobs = executor.map_array(entry, [worker_argv(argv)] * settings.workers)
    print(f"[launch] {len(jobs)} worker jobs ({settings.launcher}): {', '.join(str(j.job_id) for j in jobs)}", flush=True)
    return jobs


def wait(jobs: list) -> None:
    """Wait for submitit jobs; a failed job is reported, not raised (the others' work stands)."""
    failed = []
    for job in jobs:
        try:
            job.result()
        except Exception as err:  # noqa: BLE001 - one lost worker must not hide the others' results
            failed.append(f"{job.job_id}: {type(err).__name__}: {str(err).splitlines()[-1] if str(err) else ''}")
    if failed:
        print("[launch] failed worker jobs (their trials are retried by the others):\n  " + "\n  ".join(failed),
              file=sys.stderr)
