"""`make gpu-campaign`: the GPU comparison in one command, everything in one folder (<= 8 min on an H100/H200).

    python -m scripts.gpu_campaign [--out results/reference/<gpu-name>] [--archive] [--dry-run]
    python -m scripts.gpu_campaign --tiny --out /tmp/x      # the same steps on CPU in seconds (tests)

1. `device.json`: the card, its memory, torch and CUDA versions;
2. `bench/`: the speed bench (`make bench`) for the MNIST and CURVES autoencoders, each optimizer
   alone on the GPU, so its ms/step is clean;
3. `tests.xml`: tests/test_fast.py (CUDA-graph steps equal eager steps; steps never synchronise);
4. `runs/gpu/mnist/...`: the MNIST comparison at full length with the tuned configs, every paper
   optimizer, seed 0, as concurrent processes sharing the GPU: as many as fit in 80% of the free
   memory by the bench's measured peak memory (plus the data, evaluation and CUDA context), at most
   half the CPU cores; CUDA graphs for every optimizer whose step replays exactly;
5. `figures/` and `summary.md`: the report. Concurrent runs share the GPU, so their measured
   seconds are inflated: the time axis of `figures/` is steps x the bench's ms/step (`--time
   bench`), `figures_measured/` shows the measured seconds;
6. `plan.json`: what ran, with which concurrency and why, and what did not finish in time.
`--archive` also packs the folder into `<out>.tar.gz` (one file to copy back from a lent machine).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from benchmarks import speed
from benchmarks.config import compose_config
from benchmarks.data import DataError
from benchmarks.fast import graph_safe
from benchmarks.models import build_autoencoder
from benchmarks.optimizers import make_optimizer, paper_optimizers
from benchmarks.results import bench_tables
from benchmarks.rundir import atomic_write_json, atomic_write_text, device_name, read_summary, run_dir_for
from benchmarks.workloads import load_dataset
from scripts import figures, summary as summary_script

REPO = Path(__file__).resolve().parents[1]
CUDA_CONTEXT_MB = 600  # measured order of one process's CUDA context and allocator slack
TINY_RUN = ["dataset=curves_synth", "dataset.n_train=200", "dataset.n_test=50", "batch_size=100",
            "model.sizes=[784,16,4,16,784]", "epochs=2", "throwaway_steps=0", "device=cpu"]


def device_info(device: torch.device) -> dict:
    info = {"device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        info.update(memory_total_mb=total / 2**20, memory_free_mb=free / 2**20,
                    capability=".".join(map(str, torch.cuda.get_device_capability(device))))
    return info


def run_config(optimizer: str, out: Path, tiny: bool, cuda_graph: bool):
    base = ["tuned=mnist/" + optimizer] if (REPO / "results/tuned/mnist" / f"{optimizer}.yaml").exists() \
        else [f"optimizer={optimizer}", "dataset=mnist"]
    extra = TINY_RUN if tiny else ["device=cuda"]
    return [*base, "seed=0", "group=gpu", f"results_dir={out}", "logger=disabled", "progress=false",
            f"cuda_graph={str(cuda_graph).lower()}", *extra]


def check_data(overrides: list[str]) -> None:
    """Load (and validate) the comparison's data set before anything else runs: a missing or corrupt
    file must cost seconds of a lent GPU, not the minutes of the bench and tests before the runs."""
    cfg = compose_config(overrides)
    try:
        load_dataset(cfg.dataset.name, root=cfg.dataset.root, n_train=1, n_test=1)
    except DataError as err:
        raise SystemExit(f"the GPU campaign's data set {cfg.dataset.name} cannot be loaded, nothing was run: {err}\n"
                         "(put the files in data/<name>/, set LOCOPROP_DATA, or carry them to the GPU machine)")


def supports_graph(overrides: list[str]) -> bool:
    """Whether this optimizer's step replays exactly in a CUDA graph (benchmarks.fast.graph_safe)."""
    cfg = compose_config(overrides)
    model = build_autoencoder(sizes=[6, 4, 2, 4, 6])
    return graph_safe(make_optimizer(model, OmegaConf.to_container(cfg.optimizer, resolve=True)))


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


def run_all(commands: dict[str, list[str]], n_parallel: int, logs: Path, deadline: float) -> dict[str, str]:
    """Run the training commands, n at a time; a run still going at the deadline is stopped."""
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, ended = list(commands.items()), {}, {}
    while pending or running:
        while pending and len(running) < n_parallel:
            name, cmd = pending.pop(0)
            handle = open(logs / f"{name}.log", "w")
            running[name] = (subprocess.Popen(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT), handle)
        for name, (proc, handle) in list(running.items()):
            if proc.poll() is not None or time.time() > deadline:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                    ended[name] = "stopped at the time limit"
                else:
                    ended[name] = f"exit {proc.returncode}"
                handle.close()
                del running[name]
        time.sleep(0.5)
    return ended


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="the folder (default results/reference/<gpu-name>)")
    parser.add_argument("--max-minutes", type=float, default=8.0)
    parser.add_argument("--tiny", action="store_true", help="the smallest setting, on CPU (tests)")
    parser.add_argument("--dry-run", action="store_true", help="write plan.json and stop")
    parser.add_argument("--archive", action="store_true", help="also pack the folder into <out>.tar.gz")
    args = parser.parse_args(argv)
    start = time.time()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if device.type == "cpu" and not (args.tiny or args.dry_run):
        raise SystemExit("no CUDA device: the GPU campaign needs one (use --tiny or --dry-run to check it on CPU)")
    check_data(run_config(paper_optimizers()[0], Path("."), args.tiny, False))
    info = device_info(device)
    out = Path(args.out or f"results/reference/{info['device'].replace(' ', '_').replace('/', '_')}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "device.json", info)

    optimizers = paper_optimizers()
    graphs = {o: device.type == "cuda" and supports_graph(run_config(o, out, True, False)) for o in optimizers}
    plan: dict = {"device": info, "optimizers": optimizers, "cuda_graph": graphs, "tiny": args.tiny, "steps": []}
    if not args.dry_run:
        bench_args = (["--datasets", "curves", "--optimizers", *optimizers[:2], "--steps", "1", "--warmup", "0",
                       "--batch-sizes", "50"] if args.tiny else ["--datasets", "mnist", "curves", "--steps", "50"])
        speed.main([*bench_args, "--out", str(out / "bench"), "--replace"])
        plan["steps"].append(f"bench ({time.time() - start:.0f} s)")
        test_filter = ["-k", "graph_safety"] if args.tiny else []
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_fast.py", *test_filter,
                                f"--junitxml={out.resolve() / 'tests.xml'}"], cwd=REPO, capture_output=True, text=True)
        plan["tests"] = {"exit": tests.returncode, "tail": tests.stdout[-1000:]}
        plan["steps"].append(f"tests ({time.time() - start:.0f} s)")
    bench_rows = [row for _, table in bench_tables(out) for row in table.get("rows", [])]
    n_train, n_test = (200, 50) if args.tiny else (60_000, 10_000)
    n_parallel, why = concurrency(len(optimizers), bench_rows, info, n_train, n_test)
    plan.update(concurrency=n_parallel, concurrency_reason=why)
    commands = {o: [sys.executable, "-m", "benchmarks.train", *run_config(o, out.resolve(), args.tiny, graphs[o])]
                for o in optimizers}
    plan["commands"] = {o: " ".join(c[1:]) for o, c in commands.items()}
    atomic_write_json(out / "plan.json", plan)
    if args.dry_run:
        print(json.dumps(plan, indent=2))
        return 0

    deadline = start + 60 * args.max_minutes - 45  # leave time for the report
    plan["ended"] = run_all(commands, n_parallel, out / "logs", deadline)
    plan["steps"].append(f"runs ({time.time() - start:.0f} s)")
    group = "gpu"
    figures.main(["--results", str(out), "--group", group, "--out", str(out / "figures"), "--time", "bench"])
    figures.main(["--results", str(out), "--group", group, "--out", str(out / "figures_measured")])
    summary_script.main(["--results", str(out), "--group", group, "--out", str(out)])
    statuses = {o: (read_summary(run_dir_for(compose_config(run_config(o, out, args.tiny, graphs[o])))) or {})
                .get("status", "no summary") for o in optimizers}
    plan.update(statuses=statuses, seconds=round(time.time() - start, 1))
    plan["steps"].append(f"report ({plan['seconds']:.0f} s)")
    atomic_write_json(out / "plan.json", plan)
    atomic_write_text(out / "README.md", f"# GPU campaign on {info['device']}\n\n" + "\n".join(
        f"- {step}" for step in plan["steps"]) + f"\n- concurrency: {why}\n- statuses: {statuses}\n\n"
        "See summary.md (the table), figures/ (time = steps x bench ms/step), bench/ (speed alone).\n")
    if args.archive:
        with tarfile.open(f"{out}.tar.gz", "w:gz") as tar:
            tar.add(out, arcname=out.name, filter=lambda t: None if t.name.endswith("checkpoint.pt") else t)
    print(f"GPU campaign done in {plan['seconds']:.0f} s: {statuses}")
    return 0 if all(s == "finished" for s in statuses.values()) and plan["tests"]["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
