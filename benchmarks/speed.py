"""`make bench`: ms/step of every optimizer on the benchmark autoencoders, measured honestly.

For each architecture and optimizer: a fresh model and optimizer built from the shipped
configs, `warmup` untimed steps, then `steps` timed steps on random data of the dataset's kind,
the device synchronised after every step. Second-order methods refresh their preconditioners
every 10 steps, so `steps` (when >= 10) is rounded up to a multiple of 10 and the reported
`ms_per_step` is the amortised mean over whole periods (the median is reported beside it). FLOPs per
step are counted by `torch.utils.flop_counter.FlopCounterMode` (matmuls; the in-place and
matrix-vector forms LocoProp uses are added to its table; eigendecompositions are not counted) over
the same whole periods, per dtype, and `fraction_of_peak` is the share of the step's time its matmuls
need at this device's measured matmul rate of their dtype (float32; bf16 for Muon's Newton-Schulz
iteration). Above 1 a count or the peak is wrong: the table says "count wrong", never a percentage. Every ratio is
to the BP+SGD and BP+RMSProp steps measured in the same process.

Ratios measured on a busy machine are meaningless: the load average is recorded before and after,
and a warning is printed when it exceeds the number of cores.

Output: a table on the terminal and `results/bench/<device>.json` and `.md`; an existing table of
the same device is kept and the new one written beside it (`--replace` overwrites it).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.tables import md_head, md_row
from benchmarks.config import compose_config
from benchmarks.figure_files import figure_style, save_figure
from benchmarks.models import build_autoencoder
from benchmarks.optimizers import PRECISIONS, make_optimizer, make_step, optimizer_names
from benchmarks.rundir import atomic_write_json, atomic_write_text, device_name, load_average
from benchmarks.train import resolve_device
from benchmarks.workloads import paper_datasets

ARCHITECTURES = tuple(paper_datasets())  # mnist, faces, curves: the architectures
RESULT_KEYS = ("dataset", "optimizer", "batch_size", "width_multiplier", "depth_multiplier", "n_params",
               "ms_per_step", "median_ms", "gflop_per_step", "gflops_achieved", "fraction_of_peak",
               "peak_memory_mb", "ratio_to_sgd", "ratio_to_rmsprop", "status")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def file_stem(device: str) -> str:
    """A file name for a device's table: 'Intel(R) Xeon(R) Processor x1' -> 'intel_xeon_processor_x1'."""
    words = re.sub(r"\((r|tm)\)", "", device.lower())
    return re.sub(r"[^a-z0-9]+", "_", words).strip("_")


def matmul_peak_gflops(device: torch.device, n: int | None = None, repeats: int = 10,
                       dtype: torch.dtype = torch.float32) -> float:
    """The device's measured matmul rate (GFLOP/s) in `dtype`, the yardstick for achieved GFLOP/s:
    the fastest of `repeats` timed products, a lower bound on the time a FLOP takes."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        a @ b
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def _data(loss_kind: str, n: int, dim: int, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    if loss_kind == "bernoulli":
        return (torch.rand(n, dim, generator=gen, device=device) > 0.5).float()
    return torch.randn(n, dim, generator=gen, device=device)


def _matmul_flops(out: int, inner: int, cols: int = 1, batch: int = 1) -> int:
    return 2 * batch * out * inner * cols


# Forms the FlopCounterMode table lacks: in-place addmm and the matrix-vector products (LocoProp
# writes its inner gradients with w.grad.addmm_ and b.grad.addmv_). Arguments arrive as shapes.
EXTRA_FLOP_FORMULAS = {
    torch.ops.aten.addmm_: lambda self, a, b, *args, **kwargs: _matmul_flops(a[0], a[1], b[1]),
    torch.ops.aten.mv: lambda a, v, *args, **kwargs: _matmul_flops(a[0], a[1]),
    torch.ops.aten.addmv: lambda self, a, v, *args, **kwargs: _matmul_flops(a[0], a[1]),
    torch.ops.aten.addmv_: lambda self, a, v, *args, **kwargs: _matmul_flops(a[0], a[1]),
}


class DtypeFlopCounter(FlopCounterMode):
    """FlopCounterMode that also adds up the FLOPs per dtype of the product (a bf16 matmul, as in
    Muon's Newton-Schulz iteration, is measured against the bf16 peak, not the float32 one)."""

    def __init__(self):
        super().__init__(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)
        self.by_dtype: dict[torch.dtype, int] = {}

    def _count_flops(self, func_packet, out, args, kwargs):
        if func_packet in self.flop_registry:
            flops = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
            dtype = out.dtype if isinstance(out, torch.Tensor) else torch.float32
            self.by_dtype[dtype] = self.by_dtype.get(dtype, 0) + flops
        return super()._count_flops(func_packet, out, args, kwargs)


def count_flops(step, x: torch.Tensor, steps: int = 1) -> dict[torch.dtype, float]:
    """Matmul FLOPs (2 per multiply-add) per step, by dtype, averaged over `steps` consecutive steps
    (a whole preconditioner-refresh period, as the timing); decompositions (eigh, Cholesky) are not counted."""
    counter = DtypeFlopCounter()
    with counter:
        for _ in range(steps):
            step(x)
    return {dtype: flops / steps for dtype, flops in counter.by_dtype.items()}


def fraction_of_peak(flops: dict[torch.dtype, float], seconds: float, peaks: dict[torch.dtype, float]) -> float:
    """The share of a step's measured time its matmuls need at the measured peak of their dtype:
    at most 1 unless a FLOP count (or the peak) is wrong."""
    return sum(f / (peaks[dtype] * 1e9) for dtype, f in flops.items()) / seconds


def measure(dataset: str, optimizer: str, device: torch.device, batch_size: int = 1000, steps: int = 20,
            warmup: int = 3, width: int = 1, depth: int = 1, overrides: tuple[str, ...] = (),
            precision: str = "float32") -> dict[str, Any]:
    """Time one optimizer's training step on one autoencoder; returns a result row."""
    torch.manual_seed(0)
    model = build_autoencoder(dataset, width_multiplier=width, depth_multiplier=depth).to(device)
    cfg = compose_config([f"optimizer={optimizer}", *overrides])
    opt = make_optimizer(model, OmegaConf.to_container(cfg.optimizer, resolve=True))
    step = make_step(model, opt, precision)
    gen = torch.Generator(device=device).manual_seed(0)
    if steps >= 10:  # whole preconditioner-refresh periods, so second-order costs are amortised fairly
        steps = 10 * math.ceil(steps / 10)
    batches = _data(model.loss_kind, batch_size * 4, model.sizes[0], device, gen)
    batch = lambda i: batches[(i % 4) * batch_size:(i % 4 + 1) * batch_size]  # noqa: E731
    for i in range(warmup):
        step(batch(i))
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        loss = step(batch(i))
        _sync(device)
        times.append(time.perf_counter() - t0)
    finite = bool(torch.isfinite(loss).item())
    by_dtype = count_flops(step, batch(0), 10 if steps >= 10 else 1)
    flops = sum(by_dtype.values())
    ms = 1e3 * sum(times) / len(times)
    return {"dataset": dataset, "optimizer": optimizer, "batch_size": batch_size, "width_multiplier": width,
            "depth_multiplier": depth, "n_params": sum(p.numel() for p in model.parameters()),
            "ms_per_step": ms, "median_ms": 1e3 * statistics.median(times), "gflop_per_step": flops / 1e9,
            "gflops_achieved": flops / 1e9 / (ms / 1e3),
            "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None,
            "flops_by_dtype": {str(dtype).removeprefix("torch."): f for dtype, f in by_dtype.items()},
            "status": "ok" if finite else "non-finite loss"}


def run_bench(datasets, optimizers, device, batch_sizes=(1000,), widths=(1,), depths=(1,), steps=20, warmup=3,
              precision="float32"):
    peak = matmul_peak_gflops(device)
    peaks = {torch.float32: peak}
    rows = []
    for dataset in datasets:
        for batch_size in batch_sizes:
            for width in widths:
                for depth in depths:
                    group = []
                    for name in dict.fromkeys(("sgd", "rmsprop", *optimizers)):
                        try:
                            row = measure(dataset, name, device, batch_size, steps, warmup, width, depth,
                                          precision=precision)
                        except Exception as err:  # noqa: BLE001 - one broken optimizer must not hide the others
                            why = "not offered" if "precision=" in str(err) else "error"
                            row = {"dataset": dataset, "optimizer": name, "batch_size": batch_size,
                                   "width_multiplier": width, "depth_multiplier": depth, "status": f"{why}: {err}"}
                        group.append(row)
                        print(_format_row(row), flush=True)
                    base = {r["optimizer"]: r.get("ms_per_step") for r in group}
                    for r in group:
                        if r.get("ms_per_step"):
                            r["ratio_to_sgd"] = r["ms_per_step"] / base["sgd"] if base.get("sgd") else None
                            r["ratio_to_rmsprop"] = r["ms_per_step"] / base["rmsprop"] if base.get("rmsprop") else None
                            by_dtype = {getattr(torch, k): f for k, f in r["flops_by_dtype"].items()}
                            for dtype in by_dtype:
                                if dtype not in peaks:
                                    peaks[dtype] = matmul_peak_gflops(device, dtype=dtype)
                            r["fraction_of_peak"] = fraction_of_peak(by_dtype, r["ms_per_step"] / 1e3, peaks)
                            if r["fraction_of_peak"] > 1 and r["status"] == "ok":
                                r["status"] = "count wrong: its matmuls at peak speed take longer than the step"
                    rows.extend(r for r in group if r["optimizer"] in optimizers)
    return peak, rows


def _format_row(row: dict[str, Any]) -> str:
    if "ms_per_step" not in row:
        return f"{row['dataset']:>8} {row['optimizer']:>12}  {row['status']}"
    return (f"{row['dataset']:>8} {row['optimizer']:>12} b{row['batch_size']:<5} w{row['width_multiplier']} "
            f"d{row['depth_multiplier']}  {row['ms_per_step']:9.2f} ms/step (median {row['median_ms']:.2f})")


def markdown_table(rows: list[dict[str, Any]], device: str, peak: float) -> str:
    head = ["dataset", "optimizer", "batch", "width", "depth", "params", "ms/step", "median ms", "GFLOP/step",
            "GFLOP/s", "% peak", "peak MB", "x SGD", "x RMSProp", "status"]
    keys = ["dataset", "optimizer", "batch_size", "width_multiplier", "depth_multiplier", "n_params", "ms_per_step",
            "median_ms", "gflop_per_step", "gflops_achieved", "fraction_of_peak", "peak_memory_mb", "ratio_to_sgd",
            "ratio_to_rmsprop", "status"]

    def fmt(key, value):
        if value is None:
            return "—"
        if key == "fraction_of_peak":
            return f"{100 * value:.1f}" if value <= 1 else "count wrong"
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    lines = [f"Device: {device}; measured float32 matmul peak {peak:.0f} GFLOP/s; torch {torch.__version__}", "",
             *md_head(head)]
    lines += [md_row(fmt(k, r.get(k)) for k in keys) for r in rows]
    return "\n".join(lines) + "\n"


def scaling_plot(rows: list[dict[str, Any]], path: Path) -> None:
    """ms/step against parameter count (width and depth multipliers at batch 1000), one line per
    optimizer (log-log); the batch-size rows are in the table."""
    rows = [r for r in rows if r.get("batch_size") == 1000]
    with figure_style():
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        for name in dict.fromkeys(r["optimizer"] for r in rows):
            pts = sorted((r["n_params"], r["ms_per_step"]) for r in rows if r["optimizer"] == name and r.get("ms_per_step"))
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
        ax.set(xscale="log", yscale="log", xlabel="parameters", ylabel="ms / step")
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        save_figure(fig, path, tight=False)


def busy_note(load: dict[str, Any]) -> str | None:
    """A warning when the 1-minute load average exceeded the core count before or during the bench."""
    values = [v[0] for v in (load["before"], load["after"]) if v]
    cores = load["cpu_count"] or 1
    if values and max(values) > cores:
        return (f"WARNING: the machine was busy (load average {max(values):.2f} > {cores} cores): these times and "
                "ratios are inflated and not comparable; re-run `make bench` on a quiet machine")
    return None


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--optimizers", nargs="+", default=optimizer_names())
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (rounded up to a multiple of 10); "
                        "default 50 on GPU, 10 on CPU")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1000])
    parser.add_argument("--scaling", action="store_true", help="also sweep width/depth multipliers 1,2,4 and batch "
                        "sizes 250,1000,4000 (MNIST), with a plot of ms/step against parameter count")
    parser.add_argument("--out", default="results/bench")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (e.g. 1, as the CPU campaign's workers)")
    parser.add_argument("--replace", action="store_true", help="overwrite this device's existing table "
                        "(default: write the new one beside it, with a time stamp)")
    parser.add_argument("--tf32", action="store_true", help="TF32 matmuls (Ampere and later GPUs; the runner's tf32=true)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32", help="bf16: forward and backward under "
                        "bf16 autocast, as the runner's precision=bf16 (gradient optimizers only)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    steps = args.steps or (50 if device.type == "cuda" else 10)
    unknown = set(args.optimizers) - set(optimizer_names())
    if unknown:
        raise SystemExit(f"unknown optimizer(s) {sorted(unknown)}; choose from {', '.join(optimizer_names())}")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(args.tf32)
    name = device_name(device, bench=True) + "".join(
        f" {opt}" for opt, on in (("tf32", args.tf32), ("bf16", args.precision == "bf16")) if on)
    load_before = load_average()
    peak, rows = run_bench(args.datasets, args.optimizers, device, tuple(args.batch_sizes), steps=steps,
                           warmup=args.warmup, precision=args.precision)
    if args.scaling:
        widths = (2, 4) if "mnist" in args.datasets else (1, 2, 4)  # width 1 is in the main table already
        for multipliers in [dict(widths=widths), dict(depths=(2, 4))]:
            rows += run_bench(["mnist"], args.optimizers, device, steps=steps, warmup=args.warmup, **multipliers)[1]
        rows += run_bench(["mnist"], args.optimizers, device, batch_sizes=(250, 4000), steps=steps,
                          warmup=args.warmup)[1]
    load = {"before": load_before, "after": load_average(), "cpu_count": os.cpu_count()}
    busy = busy_note(load)
    out = Path(args.out)
    stem = file_stem(name)
    if (out / f"{stem}.json").exists() and not args.replace:
        stem += "_" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    table = markdown_table(rows, name, peak) + (f"\n{busy}\n" if busy else "")
    print("\n" + table)
    if busy:
        warnings.warn(busy)
    atomic_write_json(out / f"{stem}.json", {"device": name, "tf32": bool(args.tf32), "precision": args.precision,
                                             "matmul_peak_gflops": peak, "torch": torch.__version__,
                                             "steps": steps, "warmup": args.warmup, "load_average": load,
                                             "busy": bool(busy), "rows": rows})
    atomic_write_text(out / f"{stem}.md", table)
    written = [out / f"{stem}.json", out / f"{stem}.md"]
    if args.scaling:
        scaling_plot([r for r in rows if r["dataset"] == "mnist"], out / f"{stem}_scaling")
        written += [out / f"{stem}_scaling.png", out / f"{stem}_scaling.pdf"]
    for path in written:
        print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
