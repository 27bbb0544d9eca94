"""`make gpu-campaign`: the GPU comparison in one command, everything in one folder, inside a time budget.

    python -m scripts.gpu_campaign [--out results/reference/<gpu-name>] [--max-minutes 8] [--archive] [--dry-run]
    python -m scripts.gpu_campaign --tiny --out /tmp/x      # the same phases on CPU in seconds (tests)

How it works: `benchmarks/orchestration/gpu_campaign.py`.
"""
from __future__ import annotations

import argparse
import json
import sys
import tarfile
import time
from pathlib import Path


from benchmarks import cli
from benchmarks.optimizers import paper_optimizers
from benchmarks.results import bench_ms_per_step, bench_tables
from benchmarks.rundir import atomic_write_json, atomic_write_text
from benchmarks.train import resolve_device
from benchmarks.workloads import get_workload
from benchmarks.reporting import figures, summary
from benchmarks.orchestration.plan import Plan, PlannedRun, Processes
from benchmarks.orchestration.reproduce import replays_in_a_graph
from benchmarks.orchestration.gpu_campaign import (BENCH_SHARE, PHASE_FLOOR_S, REPORT_RESERVE_S, TESTS, TESTS_SHARE,
                                                   TINY_REPORT_RESERVE_S, check_data, concurrency, device_info,
                                                   ended_epochs, ended_reason, phase, run_overrides)


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
    device = resolve_device("cpu" if args.tiny else "auto")
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
    mnist = get_workload("mnist")
    n_train, n_test = (200, 50) if args.tiny else (mnist.n_train, mnist.n_test)
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
    plan_record["ended"] = {run.label: {"status": statuses.get(run.label), "reason": ended_reason(run),
                                        "epochs": ended_epochs(run)} for run in plan.runs}
    report_start = time.time()
    figures.draw_group(out, "gpu", out / "figures", time="bench")
    summary.summarize_group(out, "gpu", out)
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


if __name__ == "__main__":
    cli.run(main)
