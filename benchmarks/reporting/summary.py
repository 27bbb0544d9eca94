"""The results table: per dataset x optimizer, losses over seeds, speed and time to a target loss.

    python -m scripts.summary --results results --group default --out results [--targets mnist=60,curves=3]

Writes `summary.md` (provenance on top, one table per dataset), `summary.csv` (every number,
unrounded) and `summary_provenance.json`, each atomically. Conventions:
- losses are mean ± sample std (ddof=1) over the finished/stopped seeds; diverged and failed
  seeds are only counted; a seed stopped before its last epoch is named in the seeds column
  ('3 (1 stopped at epoch 31)'), since its loss enters the mean at the epoch it reached;
- ms/step is the median over all runs (diverged ones included: their steps were timed too) of
  each run's median step time; wall-clock is the training time (evaluation excluded);
- measured times (ms/step, wall-clock, s to target) are only comparable between rows run on the
  same machine setting: when a dataset's runs come from several, the table says per row which
  ('measured on'); the bench columns are the comparable ones then;
- time to target: the first epoch whose primary train loss is <= the dataset's target, and the
  training seconds up to its end, averaged over the healthy seeds that reached it ('(k/n)' when
  only k of n did, '—' when none did). Default target: 1.05 x the best (lowest) optimizer's mean
  final train loss on the dataset, among the paper's optimizers and LocoProp's relatives.
"""
from __future__ import annotations

import argparse
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.tables import DASH, fmt_sig, md_head, md_row
from benchmarks.results import (HEALTHY, bench_ms_per_step, family_of, load_runs_or_explain, mean_std, provenance,
                                run_devices, run_record, workload_of, write_json, write_text)

LOSSES = ("train_ce", "test_ce", "train_se", "test_se")
DEFAULT_TARGET_FACTOR = 1.05

# Published numbers this harness can be checked against: (dataset, optimizer) ->
# {"metric": column, "value": number, "source": where it is stated}. The LocoProp paper
# (arXiv 2106.06199) and the official notebook report their results as plots only, so no value
# can be quoted exactly; entries go here only with a citable source, never read off a plot.
REFERENCE_VALUES: dict[tuple[str, str], dict[str, Any]] = {}


def parse_targets(text: str | None) -> dict[str, float]:
    """'mnist=60,curves=3.5' -> {'mnist': 60.0, 'curves': 3.5}."""
    targets: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, sep, value = item.partition("=")
        try:
            targets[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad target {item!r}: expected dataset=number") from None
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"bad target {item!r}: expected dataset=number")
    return targets


def _finite(values: pd.Series) -> np.ndarray:
    array = pd.to_numeric(values, errors="coerce").to_numpy(float)
    return array[np.isfinite(array)]


def default_targets(runs: pd.DataFrame) -> dict[str, float]:
    """Per dataset: 1.05 x the lowest mean final primary train loss over the configurations of the
    paper's field (the modern family is measured against that target, never sets it, unless a data
    set has nothing else)."""
    targets = {}
    for dataset, own in runs[runs["status"].isin(HEALTHY)].groupby("dataset"):
        column = f"final_{workload_of(dataset).primary_metric}"
        field = own[[family_of(o) != "modern" for o in own["optimizer"]]]
        own = field if len(field) else own
        means = own.groupby(["optimizer", "config_id"])[column].apply(lambda v: mean_std(v)[0]).dropna()
        if len(means):
            targets[dataset] = DEFAULT_TARGET_FACTOR * float(means.min())
    return targets


def time_to_target(metrics: pd.DataFrame, column: str, target: float) -> tuple[float, float]:
    """(epoch, training seconds) when one run's `column` first reaches <= target; NaN if never."""
    reached = metrics[pd.to_numeric(metrics[column], errors="coerce") <= target].sort_values("epoch")
    if not len(reached):
        return math.nan, math.nan
    first = reached.iloc[0]
    return float(first["epoch"]), float(first["wallclock_s"])


def summarize(runs: pd.DataFrame, metrics: pd.DataFrame, targets: dict[str, float] | None = None,
              bench: dict[tuple[str, str, int], float] | None = None) -> pd.DataFrame:
    """One row per dataset x optimizer x configuration with every number of the table (unformatted).

    With `bench` (see `benchmarks.results.bench_ms_per_step`), also the bench's ms/step and the time
    to target it implies (epochs x steps per epoch x ms/step), which a loaded machine cannot inflate.
    """
    targets = {**default_targets(runs), **(targets or {})}
    rows = []
    for (dataset, optimizer, config_id), own in runs.groupby(["dataset", "optimizer", "config_id"], sort=True):
        primary = workload_of(dataset).primary_metric
        healthy = own[own["status"].isin(HEALTHY)]
        row: dict[str, Any] = {"dataset": dataset, "optimizer": optimizer, "config_id": config_id,
                               "configuration": own["config_label"].iloc[0], "primary_metric": primary,
                               "n_seeds": len(own), "n_healthy": len(healthy),
                               "n_diverged": int((own["status"] == "diverged").sum()),
                               "n_failed": int((own["status"] == "failed").sum()),
                               "stopped_at": _stopped_at(own)}
        for loss in LOSSES:
            for kind in ("final", "best"):
                column = f"{kind}_{loss}"
                values = healthy[column] if column in healthy else pd.Series(dtype=float)
                row[f"{column}_mean"], row[f"{column}_std"], _ = mean_std(values)
        steps = _finite(own["step_ms_median"]) if "step_ms_median" in own else np.array([])
        row["step_ms_median"] = float(np.median(steps)) if len(steps) else math.nan
        wall = _finite(own["wallclock_s"]) if "wallclock_s" in own else np.array([])
        row["wallclock_s_total"] = float(wall.sum()) if len(wall) else math.nan
        row["wallclock_s_mean"] = float(wall.mean()) if len(wall) else math.nan
        row["measured_on"] = "; ".join(run_devices(own))
        target = targets.get(dataset, math.nan)
        reached = [time_to_target(metrics[metrics["run_dir"] == d], primary, target) for d in healthy["run_dir"]]
        reached = [r for r in reached if not math.isnan(r[0])]
        row.update(target=target, n_reached_target=len(reached),
                   epochs_to_target=float(np.mean([r[0] for r in reached])) if reached else math.nan,
                   seconds_to_target=float(np.mean([r[1] for r in reached])) if reached else math.nan)
        if bench is not None:
            batch = int(own["cfg.batch_size"].iloc[0]) if "cfg.batch_size" in own else 1000
            ms = bench.get((workload_of(dataset).architecture, optimizer.partition("@")[0], batch), math.nan)  # a variant: its optimizer's step
            steps = float(own["steps_per_epoch"].iloc[0]) if "steps_per_epoch" in own else math.nan
            row.update(bench_ms_per_step=ms,
                       bench_seconds_to_target=row["epochs_to_target"] * steps * ms / 1e3)
        reference = REFERENCE_VALUES.get((dataset, optimizer))
        row["reference"] = (f"{reference['metric']} = {reference['value']}" if reference else "")
        row["reference_source"] = reference["source"] if reference else ""
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- markdown


def _stopped_at(own: pd.DataFrame) -> str:
    """Which seeds stopped before the end ('1 stopped at epoch 31'): their losses enter the means
    at the epoch they reached, so a reader must see it; '' when every seed ran to its end."""
    stopped = own[own["status"] == "stopped"]
    if stopped.empty or "epochs_completed" not in stopped:
        return ""
    epochs = sorted({int(e) for e in stopped["epochs_completed"].dropna()})
    return f"{len(stopped)} stopped at epoch {', '.join(map(str, epochs))}" if epochs else f"{len(stopped)} stopped"


def _reach(value: float, n_reached: int, n_healthy: int, digits: int = 4) -> str:
    if not n_reached:
        return DASH
    note = f" ({n_reached}/{n_healthy})" if n_reached < n_healthy else ""
    return fmt_sig(value, digits=digits) + note


def dataset_table(table: pd.DataFrame) -> str:
    """One dataset's markdown table; loss columns that are empty for every optimizer are dropped."""
    losses = [loss for loss in LOSSES if table[f"final_{loss}_mean"].notna().any()]
    header = ["configuration", "seeds", "diverged"]
    for loss in losses:
        split, kind = loss.split("_")
        header += [f"final {split} {kind.upper()}", f"best {split} {kind.upper()}"]
    bench = "bench_ms_per_step" in table
    mixed = table["measured_on"].nunique() > 1  # measured seconds of two machines are not comparable
    header += ["ms/step", "wall-clock (s, all seeds)", "epochs to target", "s to target"]
    header += ["measured on"] if mixed else []
    header += ["bench ms/step", "bench s to target"] if bench else []
    header += ["reference"]
    lines = md_head(header)
    for _, r in table.iterrows():
        stopped = f" ({r['stopped_at']})" if r.get("stopped_at") else ""
        cells = [r["configuration"], f"{r['n_seeds']}{stopped}", f"{r['n_diverged']}/{r['n_seeds']}"]
        for loss in losses:
            cells += [fmt_sig(r[f"final_{loss}_mean"], r[f"final_{loss}_std"]),
                      fmt_sig(r[f"best_{loss}_mean"], r[f"best_{loss}_std"])]
        reference = f"{r['reference']} ({r['reference_source']})" if r["reference"] else ""
        cells += [fmt_sig(r["step_ms_median"], digits=3), fmt_sig(r["wallclock_s_total"], digits=4),
                  _reach(r["epochs_to_target"], r["n_reached_target"], r["n_healthy"], digits=3),
                  _reach(r["seconds_to_target"], r["n_reached_target"], r["n_healthy"])]
        cells += [r["measured_on"] or DASH] if mixed else []
        if bench:
            cells += [fmt_sig(r["bench_ms_per_step"], digits=3),
                      _reach(r["bench_seconds_to_target"], r["n_reached_target"], r["n_healthy"])]
        cells += [reference]
        lines.append(md_row(cells))
    return "\n".join(lines)


def markdown(table: pd.DataFrame, info: dict[str, Any], runs: pd.DataFrame, group: str,
             given_targets: dict[str, float]) -> str:
    out = [f"# LocoProp reproduction: results of group `{group}`", "",
           f"- devices (from the runs): {', '.join(info.get('devices', [])) or 'unknown'}",
           f"- runs' commits: {', '.join(c[:12] for c in info.get('run_git_commits', [])) or 'unknown'}",
           f"- torch (from the runs): {', '.join(info.get('run_torch_versions', [])) or 'unknown'}",
           f"- runs used: {len(runs)} (listed at the end and in summary_provenance.json)",
           "- losses: mean ± sample std over finished/stopped seeds (diverged/failed seeds only counted; "
           "a seed stopped early is named in the seeds column); "
           "CE = cross-entropy summed over pixels, SE = squared error summed over pixels, both averaged over "
           "examples; ms/step: median over runs; time to target: mean over the seeds that reached it "
           "('(k/n)' when not all did, '—' when none did)", ""]
    for dataset, part in table.groupby("dataset", sort=True):
        target = part["target"].iloc[0]
        how = "given" if dataset in given_targets else f"{DEFAULT_TARGET_FACTOR} x best mean final (modern family excluded)"
        out += [f"## {dataset}", "",
                f"Primary metric `{part['primary_metric'].iloc[0]}`; target {fmt_sig(target)} ({how}).", "",
                dataset_table(part), ""]
    out += ["<details><summary>Runs used</summary>", ""]
    out += [f"- `{r['run_path']}` ({r['status']}, {r['config_label']})" for _, r in runs.iterrows()]
    out += ["", "</details>", ""]
    return "\n".join(out)


def write_outputs(table: pd.DataFrame, runs: pd.DataFrame, group: str, out_dir: Path,
                  given_targets: dict[str, float]) -> list[Path]:
    """summary.csv, summary.md and summary_provenance.json of a summarized group, each atomically."""
    info = provenance(runs)
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    outputs = {out_dir / "summary.csv": buffer.getvalue(),
               out_dir / "summary.md": markdown(table, info, runs, group, given_targets)}
    for path, text in outputs.items():
        write_text(path, text)
    write_json(out_dir / "summary_provenance.json", {"provenance": info, "group": group,
                                                     "targets": dict(zip(table["dataset"], table["target"])),
                                                     "runs": run_record(runs)})
    return [*outputs, out_dir / "summary_provenance.json"]


def summarize_group(results: str | Path, group: str, out: str | Path | None = None, bench: str | Path | None = None,
                    targets: dict[str, float] | None = None) -> list[Path] | None:
    """Write the summary tables of one group of runs; None when it has no runs."""
    loaded = load_runs_or_explain(results, group)
    if loaded is None:
        return None
    runs, metrics = loaded
    out_dir = Path(out) if out else Path(results) / "summaries" / group
    table = summarize(runs, metrics, targets or {}, bench_ms_per_step(bench) if bench else None)
    return list(write_outputs(table, runs, group, out_dir, targets or {}))
