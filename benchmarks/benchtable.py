"""Which speed-bench table prices a plan, and what its rows say (see benchmarks.speed).

A table is valid for one device and one thread count ('<CPU model> xN', or a GPU's name): the
same CPU runs a step at a different speed with 1 or 2 threads, and another machine's table says
nothing about this one. `choose_table` prefers, in order, a quiet table of this device and
thread count, one of this device with the nearest other thread count, one of a CPU of the same
name with another detail string; a table measured on a busy machine is used only when no quiet
one fits, and every fallback comes with a note that says what was taken instead and why.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from benchmarks.workloads import get_workload, run_steps

REPO_BENCH = Path(__file__).resolve().parents[1] / "results" / "bench"


@dataclass(frozen=True)
class BenchChoice:
    table: str | None  # file name of the table chosen, or None
    ms: dict[tuple[str, str, int], float] = field(default_factory=dict)  # (architecture, optimizer, batch) -> ms/step
    notes: tuple[str, ...] = ()  # why a fallback was taken, tables left out

    def describe(self, device: str) -> str:
        """One line (plus notes) for a plan: the table, or why costs are unknown."""
        head = (f"bench table {self.table}" if self.table else
                f"unknown: no bench table of {device} or of its CPU model (make bench, on a quiet machine)")
        return "cost estimates: " + head + "".join(f"\n  note: {note}" for note in self.notes)


def ms_per_step(table: dict[str, Any]) -> dict[tuple[str, str, int], float]:
    """(architecture, optimizer, batch size) -> ms/step of a table's rows at the architectures' own
    size (the width/depth scaling rows are left out)."""
    return {(row["dataset"], row["optimizer"], int(row.get("batch_size", 1000))): float(row["ms_per_step"])
            for row in table.get("rows", []) if row.get("ms_per_step")
            and row.get("width_multiplier", 1) == 1 and row.get("depth_multiplier", 1) == 1}


def read_tables(folders: Iterable[str | Path]) -> list[tuple[str, dict[str, Any]]]:
    """(file name, table) of every speed table (a .json naming its device) in the folders; a file
    name seen in an earlier folder hides later ones."""
    seen: dict[str, dict[str, Any]] = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("*.json")):
            if path.name not in seen:
                table = json.loads(path.read_text())
                if isinstance(table, dict) and "device" in table:
                    seen[path.name] = table
    return sorted(seen.items())


def split_device(device: str) -> tuple[str, int | None]:
    """'Intel(R) Xeon(R) Processor x2' -> ('Intel(R) Xeon(R) Processor', 2); a GPU's name -> (name, None)."""
    match = re.fullmatch(r"(.*) x(\d+)", device)
    return (match.group(1), int(match.group(2))) if match else (device, None)


def cpu_family(model: str) -> str:
    """The CPU's name without a trailing detail: 'Intel(R) Xeon(R) Processor (family 6, model 167)'
    -> 'Intel(R) Xeon(R) Processor'."""
    return re.sub(r"\s*\([^()]*\)$", "", model)


def busy_reason(table: dict[str, Any]) -> str:
    load = table.get("load_average") or {}
    values = [v[0] for v in (load.get("before"), load.get("after")) if v]
    return (f"load average {max(values):.2f} on {load.get('cpu_count')} cores" if values else "flagged busy")


def choose_table(device: str, folders: Iterable[str | Path] = (REPO_BENCH,)) -> BenchChoice:
    """The table that best prices runs on `device` ('<CPU model> xN' or a GPU's name), see the module doc."""
    model, threads = split_device(device)
    candidates = []
    for index, (name, table) in enumerate(read_tables(folders)):
        if table.get("precision", "float32") != "float32" or not ms_per_step(table):
            continue
        their_model, their_threads = split_device(str(table["device"]))
        if table["device"] == device:
            tier = 0
        elif threads is not None and their_threads is not None and their_model == model:
            tier = 1
        elif threads is not None and their_threads is not None and cpu_family(their_model) == cpu_family(model):
            tier = 2
        else:
            continue
        distance = abs((their_threads or 0) - (threads or 0))
        candidates.append(((bool(table.get("busy")), tier, distance, -index), name, table))
    if not candidates:
        return BenchChoice(None)
    candidates.sort(key=lambda c: c[0])
    (busy, tier, _, _), name, table = candidates[0]
    notes = [f"{other} is not used: measured on a busy machine ({busy_reason(t)}), its times are inflated"
             for key, other, t in candidates[1:] if key[0] and key[1] <= tier]
    their_threads = split_device(str(table["device"]))[1]
    if tier == 1:
        notes.append(f"no table of {device}; this one was measured on the same CPU with {their_threads} thread(s) "
                     f"instead of {threads}: a rough price (make bench --threads {threads} on a quiet machine)")
    elif tier == 2:
        notes.append(f"no table of {device}; this one was measured on '{table['device']}', a CPU of the same name "
                     f"(perhaps another machine): a rough price")
    if busy:
        notes.append(f"{name} was measured on a busy machine ({busy_reason(table)}): its times are inflated; "
                     f"it is used because no quiet table fits")
    return BenchChoice(name, ms_per_step(table), tuple(notes))


def format_duration(seconds: float | None) -> str:
    """'unknown' for a cost no table prices, else seconds, minutes or hours (never '0.00 h' for a short run)."""
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def price_step(ms: dict[tuple[str, str, int], float], architecture: str, optimizer: str,
               batch: int) -> tuple[float | None, int | None]:
    """(ms per step, the batch size it was measured at): the table's figure at this batch size, else
    the nearest batch size's as it is (a step's fixed costs, e.g. a preconditioner's inverses, do
    not shrink with the batch: an upper bound for a smaller batch, a lower bound for a larger one)."""
    batches = [b for a, o, b in ms if a == architecture and o == optimizer]
    if not batches:
        return None, None
    nearest = min(batches, key=lambda b: abs(b - batch))
    return ms[(architecture, optimizer, nearest)], nearest


def price_run(ms: dict[tuple[str, str, int], float], cfg) -> tuple[float | None, int | None]:
    """(seconds of training, the batch size of the figure used) of a whole run of `cfg`; None when
    the table has no row for its optimizer."""
    step_ms, measured_at = price_step(ms, get_workload(cfg.dataset.name).architecture, cfg.optimizer.name,
                                      int(cfg.batch_size))
    return (None if step_ms is None else step_ms * run_steps(cfg) / 1e3), measured_at
