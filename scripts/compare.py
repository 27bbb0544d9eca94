"""Where does my optimizer stand? One command searches a new optimizer under the committed
reference protocol and places its row among the committed rows.

    python -m scripts.compare torch.optim.NAdam --workloads curves_synth          # a class of any module
    python -m scripts.compare mypkg.opt.my_factory --space my_space.yaml          # a factory (model, **hp)
    python -m scripts.compare momentum --protocol quick                           # a config of configs/optimizer/
    make compare OPTIMIZER=torch.optim.NAdam WORKLOADS=curves_synth

How it works: `benchmarks/orchestration/compare_run.py`.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import optuna
import torch

from benchmarks.orchestration.compare import WORKLOADS, default_name, quick_protocol, resolve_optimizer
from benchmarks.optimizers import config_path
from benchmarks.tuning.protocol import BENCH, ROOT, read_protocol
from benchmarks.results import bench_ms_per_step
from benchmarks.rundir import device_name
from benchmarks.train import resolve_device
from benchmarks.tuning.search import FINAL_GROUP
from benchmarks.orchestration.compare_run import Stopped, raise_stopped, bench_new, plan, run_searches, write_outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("optimizer", help="a config of configs/optimizer/ or a dotted path mypkg.opt.MyOpt "
                        "(a torch.optim-style class or a factory (model, **hp))")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated (default: all three)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: compare/<name>)")
    parser.add_argument("--protocol", choices=("reference", "quick"), default="reference")
    parser.add_argument("--space", default=None, help="a search space file (benchmarks/tuning/search_spaces format)")
    parser.add_argument("--name", default=None, help="run name of a dotted path (default: its last part, lower case)")
    parser.add_argument("--label", default=None, help="legend label (default: the class or function name)")
    parser.add_argument("--family", default=None, help="family of a dotted path (default: other)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the committed reference comparison")
    parser.add_argument("--bench", type=Path, default=BENCH, help="the committed rows' quiet bench table")
    parser.add_argument("--bench-steps", type=int, default=10, help="timed steps of the new optimizer's short bench")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the pre-flight, run nothing")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown or not workloads:
        raise SystemExit(f"error: --workloads {args.workloads!r}: choose among {', '.join(WORKLOADS)}")
    name = args.name or (args.optimizer if config_path(args.optimizer).is_file() else default_name(args.optimizer))
    out = args.out or Path("compare") / name
    for kept in (Path("results/reference"), Path("results/tuned")):
        if out.resolve().is_relative_to(kept.resolve()):
            raise SystemExit(f"error: --out {out}: the committed {kept}/ is never written by a comparison")
    try:
        spec = resolve_optimizer(args.optimizer, out, name=args.name, label=args.label, family=args.family,
                                 space_file=args.space)
        protocols = {d: read_protocol(args.root, d) for d in workloads}
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    taken = [d for d in workloads if (args.root / d / "runs" / FINAL_GROUP / d / spec.name).is_dir()]
    if taken:
        raise SystemExit(f"error: optimizer {spec.name!r} already has committed rows on {', '.join(taken)}: "
                         "compare a new optimizer (a config of your own, or --name for a dotted path)")
    quick = args.protocol == "quick"
    if quick:
        protocols = {d: quick_protocol(p) for d, p in protocols.items()}
    device = resolve_device("auto")
    ms = bench_new(spec, workloads, device, args.bench_steps)
    text, problems = plan(spec, protocols, args.root, bench_ms_per_step(args.bench), ms, device)
    print(text, flush=True)
    if args.dry_run:
        return 0
    if problems:
        raise SystemExit("error: data missing: " + "; ".join(problems))
    previous = {s: signal.signal(s, raise_stopped) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_searches(spec, protocols, out, quick)
    except Stopped as stop:
        print(f"[compare] stopped by {stop}; the same command resumes it", flush=True)
        return 128 + stop.signum
    except SystemExit as stop:
        if "by signal" not in str(stop):
            raise
        signum = signal.SIGINT if "SIGINT" in str(stop) else signal.SIGTERM
        print(f"[compare] stopped by {signal.Signals(signum).name}; the same command resumes it", flush=True)
        return 128 + signum
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    index = write_outputs(spec, protocols, args.root, args.bench, out, ms, device_name(device, bench=True), quick, text)
    print(f"[compare] wrote {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
