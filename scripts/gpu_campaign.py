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

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch

from benchmarks import cli
from benchmarks.config import compose_config
from benchmarks.data import DataError
from benchmarks.optimizers import paper_optimizers
from benchmarks.results import bench_ms_per_step, bench_tables, read_summary
from benchmarks.rundir import atomic_write_json, atomic_write_text, device_name
from benchmarks.tuned import tuned_name
from benchmarks.workloads import load_dataset
from scripts import figures, summary as summary_script
from scripts.plan import Plan, PlannedRun, Processes, fetch_command
from scripts.reproduce import replays_in_a_graph

REPO = Path(__file__).resolve().parents[1]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="the folder (default results/reference/<gpu-name>)")
    parser.add_argument("--max-minutes", type=float, default=8.0, help="the whole campaign's budget")
    parser.add_argument("--tiny", action="store_true", help="the smallest setting, on CPU (tests)")
    parser.add_argument("--tiny-epochs", type=int, default=2, help="with --tiny: epochs of each run")
    parser.add_argument("--dry-run", action="store_true", help="write plan.json and stop")
    parser.add_argument("--archive", action="store_true", help="also pack the folder into <out>.tar.gz")
    args = parser.parse_args(argv)
    start = time.time()
    budget_end = start + 60 * args.max_minutes
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if device.type == "cpu" and not (args.tiny or args.dry_run):
        raise SystemExit("no CUDA device: the GPU campaign needs one (use --tiny or --dry-run to check it on CPU)")
    check_data(run_overrides(paper_optimizers()[0], Path("."), args.tiny, False))
    info = device_info(device)
    out = Path(args.out or f"results/reference/{info['device'].replace(' ', '_').replace('/', '_')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "device.json", info)

    optimizers = paper_optimizers()
    graphs = {o: device.type == "cuda" and replays_in_a_graph(o) for o in optimizers}
    plan_record: dict = {"device": info, "optimizers": optimizers, "cuda_graph": graphs, "tiny": args.tiny,
                         "budget_s": 60 * args.max_minutes, "phases": {}}
    if not args.dry_run:
        bench_args = (["--datasets", "curves", "--optimizers", *optimizers[:2], "--steps", "1", "--warmup", "0",
                       "--batch-sizes", "50"] if args.tiny else ["--datasets", "mnist", "curves", "--steps", "50"])
        limit = max(PHASE_FLOOR_S, BENCH_SHARE * (budget_end - time.time()))
        plan_record["phases"]["bench"] = phase([sys.executable, "-m", "benchmarks.speed", *bench_args, "--out",
                                                str(out / "bench"), "--replace"], limit, out / "bench.log")
        test_args = ["--collect-only"] if args.tiny else []  # the rehearsal checks the tests load here
        limit = max(PHASE_FLOOR_S, TESTS_SHARE * (budget_end - start))
        plan_record["phases"]["tests"] = phase([sys.executable, "-m", "pytest", "-q", *TESTS, *test_args,
                                                f"--junitxml={out / 'tests.xml'}"], limit, out / "tests.log")
    bench_rows = [row for _, table in bench_tables(out) for row in table.get("rows", [])]
    n_train, n_test = (200, 50) if args.tiny else (60_000, 10_000)
    n_parallel, why = concurrency(len(optimizers), bench_rows, info, n_train, n_test)
    ms = bench_ms_per_step(out) if (out / "bench").is_dir() else {}
    plan = Plan([PlannedRun(run_overrides(o, out, args.tiny, graphs[o], args.tiny_epochs), o) for o in optimizers],
                "the GPU comparison").longest_first(ms)
    plan_record.update(concurrency=n_parallel, concurrency_reason=why, order=[r.label for r in plan.runs],
                       commands={r.label: "python -m benchmarks.train " + " ".join(r.overrides) for r in plan.runs})
    atomic_write_json(out / "plan.json", plan_record)
    if args.dry_run:
        print(json.dumps(plan_record, indent=2))
        return 0

    reserve = TINY_REPORT_RESERVE_S if args.tiny else REPORT_RESERVE_S
    runs_start = time.time()
    statuses = Processes(n_parallel, logs=out / "logs").run(plan, deadline=budget_end - reserve)
    plan_record["phases"]["runs"] = {"seconds": round(time.time() - runs_start, 1),
                                     "limit_s": round(budget_end - reserve - runs_start, 1)}
    plan_record["ended"] = {run.label: {"status": statuses.get(run.label), "reason": _reason(run),
                                        "epochs": _epochs(run)} for run in plan.runs}
    report_start = time.time()
    figures.main(["--results", str(out), "--group", "gpu", "--out", str(out / "figures"), "--time", "bench"])
    summary_script.main(["--results", str(out), "--group", "gpu", "--out", str(out)])
    plan_record["phases"]["report"] = {"seconds": round(time.time() - report_start, 1), "limit_s": reserve}
    plan_record.update(statuses={label: e["status"] for label, e in plan_record["ended"].items()},
                       seconds=round(time.time() - start, 1))
    atomic_write_json(out / "plan.json", plan_record)
    atomic_write_text(out / "README.md", f"# GPU campaign on {info['device']}\n\n"
                      + "\n".join(f"- {name}: {p}" for name, p in plan_record["phases"].items())
                      + f"\n- concurrency: {why}\n- order (longest first): {', '.join(plan_record['order'])}\n"
                      f"- statuses: {plan_record['statuses']}\n\nSee summary.md (the table), figures/ (time = steps x "
                      "bench ms/step), bench/ (speed alone). A `stopped` run resumes from its checkpoint with "
                      "the command in plan.json.\n")
    if args.archive:
        with tarfile.open(f"{out}.tar.gz", "w:gz") as tar:
            tar.add(out, arcname=out.name)  # checkpoints too: a stopped run resumes elsewhere
    print(f"GPU campaign done in {plan_record['seconds']:.0f} s: {plan_record['statuses']}")
    tests_ok = plan_record["phases"]["tests"]["exit"] == 0
    return 0 if tests_ok and all(s == "finished" for s in plan_record["statuses"].values()) else 1


def _reason(run: PlannedRun) -> str | None:
    return (read_summary(run.run_dir) or {}).get("reason")


def _epochs(run: PlannedRun) -> int | None:
    return (read_summary(run.run_dir) or {}).get("epochs_completed")


if __name__ == "__main__":
    cli.run(main)
