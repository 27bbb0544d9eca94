"""`make gpu-campaign`: the GPU comparison in one command, everything in one folder, inside a time budget.

    python -m scripts.gpu_campaign [--out results/reference/<gpu-name>] [--max-minutes 8] [--archive] [--dry-run]
    python -m scripts.gpu_campaign --tiny --out /tmp/x      # the same phases on CPU in seconds (tests)

The budget (`--max-minutes`) is cut into phases, each with its own limit, so the campaign ends on
time by construction:
1. `device.json`: the card, its memory, torch and CUDA versions;
2. `bench/` (at most 25% of the budget): the speed bench of the MNIST and CURVES autoencoders, each
   optimizer alone on the GPU; a bench cut by its limit leaves the rows it finished;
3. `tests.xml` (at most 10%): tests/test_fast.py and tests/test_refresh_sync.py (CUDA graphs equal
   eager steps, steps and refreshes do not wait for the host; `--tiny` only collects them);
4. `runs/gpu/mnist/...` (what is left, less the report's reserve): the MNIST comparison at full
   length with the tuned configs, every paper optimizer, seed 0, as concurrent processes (as many
   as fit in 80% of the free memory by the bench's peak memory, at most half the CPU cores), the
   longest first, CUDA graphs for every optimizer whose step replays exactly. A run still going at
   the deadline gets SIGTERM: it writes its summary as `stopped` with the epochs it reached and
   keeps its checkpoint, so `python -m benchmarks.train <its overrides>` resumes it anywhere;
5. `figures/`, `summary.md` (the report's reserve): the time axis is steps x the bench's ms/step,
   since concurrent runs inflate each other's measured seconds;
6. `plan.json`: the phases and their times, the runs, concurrency and why, each run's end.
`--archive` packs the folder, checkpoints included, into `<out>.tar.gz` (one file to carry back).
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import time
from pathlib import Path

import torch

from benchmarks.config import compose_config
from benchmarks.data import DataError
from benchmarks.results import read_summary
from benchmarks.rundir import device_name
from benchmarks.tuning.tuned import tuned_name
from benchmarks.workloads import load_dataset
from benchmarks.orchestration.plan import PlannedRun, fetch_command

REPO = Path(__file__).resolve().parents[2]
CUDA_CONTEXT_MB = 600  # measured order of one process's CUDA context and allocator slack
BENCH_SHARE, TESTS_SHARE = 0.25, 0.10  # of the budget; the runs get the rest less the report's reserve
PHASE_FLOOR_S = 15.0  # a phase's limit is never below this (it matters only for tiny budgets)
REPORT_RESERVE_S, TINY_REPORT_RESERVE_S = 45.0, 10.0
TINY_RUN = ["dataset=curves_synth", "dataset.n_train=200", "dataset.n_test=50", "batch_size=100",
            "model.sizes=[784,16,4,16,784]", "throwaway_steps=0", "device=cpu"]
TESTS = ["tests/test_fast.py", "tests/test_refresh_sync.py"]


def device_info(device: torch.device) -> dict:
    info = {"device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        info.update(memory_total_mb=total / 2**20, memory_free_mb=free / 2**20,
                    capability=".".join(map(str, torch.cuda.get_device_capability(device))))
    return info


def run_overrides(optimizer: str, out: Path, tiny: bool, graph: bool, tiny_epochs: int = 2) -> list[str]:
    tuned = tuned_name("mnist", optimizer)
    base = [f"tuned={tuned}", "dataset=mnist"] if tuned else [f"optimizer={optimizer}", "dataset=mnist"]
    extra = [*TINY_RUN, f"epochs={tiny_epochs}"] if tiny else ["device=cuda"]
    return [*base, "seed=0", "group=gpu", f"results_dir={out}", "logger=disabled", "progress=false",
            f"cuda_graph={str(graph).lower()}", *extra]


def check_data(overrides: list[str]) -> None:
    """Load (and validate) the comparison's data set before anything else runs: a missing or corrupt
    file must cost seconds of a lent GPU, not the minutes of the bench and tests before the runs."""
    cfg = compose_config(overrides)
    try:
        load_dataset(cfg.dataset.name, root=cfg.dataset.root, n_train=1, n_test=1)
    except DataError as err:  # the campaign takes no overrides: advise what works for it
        problem = re.sub(r",? or set dataset\.download=true to download it", "", str(err))
        fetch = "" if "make data" in problem else f"; fix: {fetch_command(cfg.dataset.name)}"
        raise SystemExit(f"the GPU campaign's data set {cfg.dataset.name} cannot be loaded, nothing was run: {problem}"
                         f"{fetch} (a GPU machine without internet: carry the files and point LOCOPROP_DATA at them)"
                         ) from None


def concurrency(n_runs: int, bench_rows: list[dict], info: dict, n_train: int, n_test: int) -> tuple[int, str]:
    """How many runs share the GPU at once: by memory (bench peak + data + evaluation + context) and
    CPU cores, never a guess; the reason is recorded in plan.json."""
    cores = max(1, (info.get("cpu_count") or 2) // 2)
    if "memory_free_mb" not in info:
        return min(n_runs, cores), f"no GPU: {min(n_runs, cores)} processes (half of {info.get('cpu_count')} cores)"
    peaks = [r["peak_memory_mb"] for r in bench_rows if r.get("dataset") == "mnist" and r.get("peak_memory_mb")]
    data_mb = (n_train + n_test) * 784 * 4 / 2**20
    eval_mb = 3 * 10_000 * 1000 * 4 / 2**20  # the widest activations of a 10,000-example evaluation batch
    need = max(peaks, default=4096) + data_mb + eval_mb + CUDA_CONTEXT_MB
    by_memory = max(1, math.floor(0.8 * info["memory_free_mb"] / need))
    n = min(n_runs, cores, by_memory)
    return n, (f"{n} processes: min({n_runs} runs, {cores} = half the CPU cores, {by_memory} = 80% of "
               f"{info['memory_free_mb']:.0f} MB free / {need:.0f} MB per run (bench peak "
               f"{max(peaks, default=0):.0f} + data {data_mb:.0f} + evaluation {eval_mb:.0f} + context {CUDA_CONTEXT_MB}))")


def phase(cmd: list[str], limit_s: float, log: Path) -> dict:
    """A subprocess with a time limit: SIGTERM at the limit (then SIGKILL); what it wrote stays."""
    start = time.time()
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=max(1.0, limit_s))
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            code = f"stopped at its limit of {limit_s:.0f} s (exit {code})"
    return {"exit": code, "seconds": round(time.time() - start, 1), "limit_s": round(limit_s, 1)}


def ended_reason(run: PlannedRun) -> str | None:
    return (read_summary(run.run_dir) or {}).get("reason")


def ended_epochs(run: PlannedRun) -> int | None:
    return (read_summary(run.run_dir) or {}).get("epochs_completed")
