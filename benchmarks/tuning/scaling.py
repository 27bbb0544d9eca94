"""How many workers a search can use before its database, not the workers, is the limit.

    python -m scripts.scaling --measure      # time the study storages here -> results/bench/storage_<machine>.json

The estimate (written into docs/scaling.md by `make report`) takes two measured inputs:
- the committed trials' durations and epochs (`results/reference/cpu/<dataset>/runs/tune/`): a
  worker finishes 3600 / (mean trial seconds) trials an hour;
- the storages' write rates measured here: Optuna's per-epoch `trial.report` and the heartbeats
  are the writes a running trial makes (the ask, the setting and the tell are a few more).
A study then saturates its storage at about (writes per second it sustains) / (writes per trial /
trial seconds) workers. Measured with one client on one machine: a server with many clients over a
network has other numbers, which this only bounds.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path


import optuna

from benchmarks.tables import md_head, md_row
from benchmarks.results import read_summary, workload_of, write_json
from benchmarks.rundir import cpu_model
from benchmarks.tuning.storage import HEARTBEAT_INTERVAL_S, open_storage, study_trial_id

FIXED_WRITES_PER_TRIAL = 12  # ask, the drawn setting, owner and run attributes, the tell, the claim's queries
WORKER_COUNTS = (1, 8, 64, 512, 4096)


def measure_storage(url: str, writes: int = 300) -> dict[str, float]:
    """Writes per second of one client: `trial.report` (one per epoch) and heartbeats."""
    storage = open_storage(url, heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=10 * HEARTBEAT_INTERVAL_S)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=f"measure-{time.time_ns()}")
    trial = study.ask()
    start = time.perf_counter()
    for step in range(writes):
        trial.report(float(step), step)
    report_rate = writes / (time.perf_counter() - start)
    trial_id = study_trial_id(storage, study, trial.number)
    start = time.perf_counter()
    for _ in range(writes):
        storage.record_heartbeat(trial_id)
    heartbeat_rate = writes / (time.perf_counter() - start)
    study.tell(trial, 0.0)
    return {"report_writes_per_s": report_rate, "heartbeat_writes_per_s": heartbeat_rate}


def measure(out: Path) -> Path:
    """Time SQLite, the journal file and (when the pgserver package can start one) PostgreSQL here."""
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": f"sqlite:///{tmp}/s.db", "journal": f"journal:{tmp}/s.journal"}
        server = None
        try:
            import pgserver

            server = pgserver.get_server(f"{tmp}/pg", cleanup_mode="stop")
            urls["postgresql"] = server.get_uri()
        except Exception as err:  # noqa: BLE001 - measured where it can start
            print(f"PostgreSQL not measured: {type(err).__name__}: {err}")
        try:
            rates = {name: measure_storage(url) for name, url in urls.items()}
        finally:
            if server is not None:
                server.cleanup()
    machine = f"{cpu_model()}"
    stem = "storage_" + "".join(c if c.isalnum() else "_" for c in machine.lower()).strip("_")
    path = out / f"{stem}.json"
    write_json(path, {"machine": machine, "optuna": version("optuna"), "one_client": True, "rates": rates})
    return path


def trial_durations(root: Path) -> dict[str, dict[str, float]]:
    """Per data set: the committed trials' mean training seconds and epochs (pruned trials included)."""
    out = {}
    for folder in sorted(p for p in root.iterdir() if (p / "runs" / "tune").is_dir()):
        summaries = [read_summary(p.parent) for p in sorted((folder / "runs" / "tune").glob("*/*/*/summary.json"))]
        seconds = [s["wallclock_s"] for s in summaries if s and s.get("wallclock_s")]
        epochs = [s["epochs_completed"] for s in summaries if s and s.get("epochs_completed")]
        if seconds:
            out[folder.name] = {"trials": len(seconds), "mean_seconds": statistics.fmean(seconds),
                                "mean_epochs": statistics.fmean(epochs)}
    return out


def estimate_markdown(root: Path, storage_table: Path) -> str:
    table = json.loads(storage_table.read_text())
    durations = trial_durations(root)
    lines = [f"Inputs: the committed trials of `{root.as_posix()}` (training seconds on one CPU thread, pruned "
             f"trials included) and `{storage_table.as_posix()}` (Optuna {table['optuna']}, {table['machine']}, one "
             f"client; heartbeats every {HEARTBEAT_INTERVAL_S} s).", ""]
    head = ["data set", "trials", "mean trial (s)", "writes per trial", "trials per hour per worker"]
    head += [f"{name}: workers at saturation" for name in table["rates"]]
    lines += md_head(head)
    for dataset, d in durations.items():
        writes = d["mean_epochs"] + d["mean_seconds"] / HEARTBEAT_INTERVAL_S + FIXED_WRITES_PER_TRIAL
        per_worker = 3600 / d["mean_seconds"]
        cells = [workload_of(dataset).label, str(d["trials"]), f"{d['mean_seconds']:,.0f}", f"{writes:,.0f}",
                 f"{per_worker:,.1f}"]
        for rates in table["rates"].values():
            capacity = min(rates["report_writes_per_s"], rates["heartbeat_writes_per_s"])
            cells.append(f"{capacity / (writes / d['mean_seconds']):,.0f}")
        lines.append(md_row(cells))
    lines += ["", "Trials per hour against workers (the workers' rate until the storage saturates, then the "
              "storage's):", ""]
    head = ["data set", "storage"] + [f"{n} workers" for n in WORKER_COUNTS]
    lines += md_head(head)
    for dataset, d in durations.items():
        writes = d["mean_epochs"] + d["mean_seconds"] / HEARTBEAT_INTERVAL_S + FIXED_WRITES_PER_TRIAL
        for name, rates in table["rates"].items():
            capacity = min(rates["report_writes_per_s"], rates["heartbeat_writes_per_s"]) * 3600 / writes
            cells = [workload_of(dataset).label, name]
            cells += [f"{min(n * 3600 / d['mean_seconds'], capacity):,.0f}" for n in WORKER_COUNTS]
            lines.append(md_row(cells))
    rates = "; ".join(f"{name} {r['report_writes_per_s']:,.0f} reports/s, {r['heartbeat_writes_per_s']:,.0f} "
                      f"heartbeats/s" for name, r in table["rates"].items())
    lines += ["", f"Measured write rates: {rates}."]
    return "\n".join(lines)


def latest_storage_table(bench_dir: Path = Path("results/bench")) -> Path | None:
    tables = sorted(bench_dir.glob("storage_*.json"))
    return tables[-1] if tables else None
