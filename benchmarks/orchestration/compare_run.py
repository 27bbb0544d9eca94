"""Where does my optimizer stand? One command searches a new optimizer under the committed
reference protocol and places its row among the committed rows.

    python -m scripts.compare torch.optim.NAdam --workloads curves_synth          # a class of any module
    python -m scripts.compare mypkg.opt.my_factory --space my_space.yaml          # a factory (model, **hp)
    python -m scripts.compare momentum --protocol quick                           # a config of configs/optimizer/
    make compare OPTIMIZER=torch.optim.NAdam WORKLOADS=curves_synth

For each workload it reads the protocol of the committed rows from their Optuna studies (trials,
sampler, pruning, exits, seeds), benches the new optimizer for a few steps, prints the plan with
its cost on this machine and a pre-flight of data and device (`--dry-run` stops there), then runs
the search and the winner's seeds (scripts/tune.py's Search: resumable, a second call continues
it; SIGINT/SIGTERM stop it, exit status 128 + signal). Everything is written into OUT (default
compare/<name>): per workload a table with the new row ranked among the committed rows, the
three-workload figure with the new optimizer drawn on top, the study (tuning/), the tuned configs
(tuned/), the runs (runs/), and index.md saying the machine, the protocol and where every number
comes from. Nothing under results/ or docs/ is written.

Without a search space (--space, or benchmarks/tuning/search_spaces/<name>.yaml for a config name) it is
searched over the default space: its learning rate log-uniform over [lr / 10^1.5, lr * 10^1.5]
around its default value. `--protocol quick` runs 2 trials, one seed and short runs on a small
training set: a first look in minutes, marked as not comparable with the reference.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from benchmarks.orchestration.compare import (QUICK_NOTE, committed_ms, data_problem, plan_line, reach_text,
                                verdict)
from benchmarks.figure_files import figure_style
from benchmarks.optimizers import label as label_of
from benchmarks.results import HEALTHY, bench_device, bench_ms_per_step, family_of, load_runs, workload_of
from benchmarks.rundir import atomic_write_json, atomic_write_text, device_name, load_average
from benchmarks.speed import measure
from benchmarks.tables import DASH, fmt, fmt_mean_std, markdown_table, rank_text, ranked
from benchmarks.reporting import figures, summary
from benchmarks.tuning.protocol import run_setting
from benchmarks.tuning.search import FINAL_GROUP, Search


class Stopped(BaseException):
    """SIGINT or SIGTERM outside a run (inside one, the runner stops the run and tune ends the worker)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_stopped(signum, _frame):
    raise Stopped(signum)


# ----------------------------------------------------------------------------- plan

def bench_new(spec, datasets: list[str], device: torch.device, steps: int) -> dict[str, float | None]:
    """A short bench of the new optimizer on each workload's architecture: its ms/step here, now."""
    out: dict[str, float | None] = {}
    for dataset in datasets:
        arch = workload_of(dataset).architecture
        try:
            out[dataset] = measure(arch, spec.name, device, steps=steps, warmup=2, overrides=tuple(spec.overrides))[
                "ms_per_step"]
        except Exception as err:  # noqa: BLE001 - the plan says it, the run will fail with the full error
            print(f"[compare] bench of {spec.name} on {arch} failed: {type(err).__name__}: {err}", file=sys.stderr)
            out[dataset] = None
    return out


def plan(spec, protocols: dict, root: Path, bench: dict, ms: dict, device: torch.device) -> tuple[str, list[str]]:
    """The plan's text and the data problems that block a run."""
    committed_names = {}
    for dataset in protocols:
        folder = root / dataset / "runs" / FINAL_GROUP / dataset
        committed_names[dataset] = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    lines = [f"compare {spec.label} ({spec.target or spec.name}) on {', '.join(protocols)}",
             f"device: {device_name(device, bench=True)} ({device}); torch threads {torch.get_num_threads()}; "
             f"load average {load_average()}",
             f"search space: {spec.space_note}"]
    problems, total = [], 0.0
    for dataset, protocol in protocols.items():
        line, cost = plan_line(dataset, protocol, ms.get(dataset), committed_ms(bench, dataset, committed_names[dataset]),
                               {n: label_of(n) for n in committed_names[dataset]})
        problem = data_problem(dataset)
        lines.append(f"  {line}; data: {'ok' if problem is None else problem}")
        total += cost or 0.0
        if problem:
            problems.append(f"{dataset}: {problem}")
    lines.append(f"in all: at most {total / 3600:.2f} h of training (pruning cuts most trials short)")
    return "\n".join(lines), problems


# ----------------------------------------------------------------------------- run

def run_searches(spec, protocols: dict, out: Path, quick: bool) -> None:
    for dataset, protocol in protocols.items():
        search = Search(dataset, spec.name, out, protocol, tuned_dir=out / "tuned",
                        space=spec.space, config_overrides=tuple(spec.overrides),
                        note="scripts/compare.py" + (f": {QUICK_NOTE}" if quick else ": the reference protocol"))
        waiting = False
        while (state := search.step()) != "done":
            if state == "busy":  # a trial of an earlier, killed call: the study fails it after its grace period
                if not waiting:
                    print(f"[compare] {dataset}: waiting for the study to give up an earlier call's trial")
                    waiting = True
                time.sleep(5.0)


# ----------------------------------------------------------------------------- output

def _finals_by_seed(runs: pd.DataFrame, optimizer: str, primary: str) -> dict[int, float]:
    own = runs[(runs["optimizer"] == optimizer) & runs["status"].isin(HEALTHY)]
    return {int(s): float(v) for s, v in zip(own["seed"], own[f"final_{primary}"]) if v == v}


def workload_section(dataset: str, spec, runs: pd.DataFrame, metrics: pd.DataFrame, committed: pd.DataFrame,
                     bench: dict, protocol, quick: bool) -> tuple[str, pd.DataFrame]:
    """The workload's table: every committed row and the new one, ranked; the verdict on the new row."""
    w = workload_of(dataset)
    primary, test = w.primary_metric, w.test_metric
    targets = summary.default_targets(committed)  # the committed rows set the target, the new row never does
    table = ranked(summary.summarize(runs, metrics, targets=targets, bench=bench), primary)
    committed_table = table[table["optimizer"] != spec.name]
    best = committed_table.sort_values(f"final_{primary}_mean").iloc[0]["optimizer"]
    new_verdict = verdict(dataset, _finals_by_seed(runs, spec.name, primary), _finals_by_seed(runs, best, primary),
                          label_of(best))
    unit = "CE" if primary.endswith("ce") else "SE"
    head = ["rank", "optimizer", "family", "seeds (diverged)", f"final train {unit}", f"final test {unit}",
            "bench ms/step", "epochs / bench s to target (seeds)", "verdict"]
    rows = []
    for _, r in table.iterrows():
        new = r["optimizer"] == spec.name
        name = spec.label if new else label_of(r["optimizer"])
        family = spec.family if new else family_of(r["optimizer"])
        cells = [rank_text(r), f"**{name}** (new)" if new else name, family.replace("_", "-"),
                 f"{int(r['n_seeds'])} ({int(r['n_diverged'])})",
                 fmt_mean_std(r[f"final_{primary}_mean"], r[f"final_{primary}_std"]),
                 fmt_mean_std(r[f"final_{test}_mean"], r[f"final_{test}_std"]),
                 fmt(r["bench_ms_per_step"], 0) + (" (here)" if new else ""),
                 reach_text(r["epochs_to_target"], r["bench_seconds_to_target"], int(r["n_reached_target"]),
                            int(r["n_healthy"])),
                 new_verdict if new else ("best committed row" if r["optimizer"] == best else DASH)]
        rows.append(cells)
    frame = pd.DataFrame(rows, columns=head)
    steps = run_setting(dataset, protocol)["steps"]
    intro = (f"### {w.label} (`{dataset}`)\n\n"
             + (f"**{QUICK_NOTE}.**\n\n" if quick else "")
             + f"Target: {fmt(targets.get(dataset, float('nan')))} "
             f"(1.05 x the best mean final train {unit} of the committed paper's field). The new row: "
             f"{protocol.trials} trials and {protocol.seeds} seed(s), {steps:,} steps per run. Rank by mean final train "
             f"{unit} (a modern optimizer's rank in parentheses: where it would stand). Verdict: the new row's final "
             f"train {unit} against the best committed row, "
             + ("paired by seed (seed k regenerates the data for every optimizer)." if w.stand_in_for else
                "Welch's t-test (fixed data: seeds draw only the initialisation and batches).")
             + " Time to target: mean epochs and steps x bench ms/step over the seeds that reached it (k of n).")
    return intro + "\n\n" + markdown_table(frame) + "\n", table


def draw_figure(spec, runs: pd.DataFrame, metrics: pd.DataFrame, bench: dict, out_dir: Path) -> list[str]:
    """The three-workload comparison figure with the new optimizer's curves drawn over the others."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = figures.with_bench_time(runs, metrics, bench).assign(bench_s=lambda m: m["wallclock_s"])
    with figure_style():
        fig, _ = figures.overview_figure(runs, metrics, "bench_s")
        for ax in fig.axes:
            for line in ax.get_lines():
                if str(line.get_label()).startswith(figures.style_for(spec.name)["label"]):
                    line.set_zorder(10)
                    line.set_linewidth(2.0)
        return [p.name for p in figures.save_figure(fig, out_dir, "comparison")]


def write_outputs(spec, protocols: dict, root: Path, bench_path: Path, out: Path, ms: dict, device: str,
                  quick: bool, plan_text: str) -> Path:
    bench = bench_ms_per_step(bench_path)
    sections, all_runs, all_metrics, csv = [], [], [], []
    for dataset, protocol in protocols.items():
        committed, committed_metrics = load_runs(root / dataset, FINAL_GROUP)
        new, new_metrics = load_runs(out, FINAL_GROUP)
        if len(new):
            new = new[(new["dataset"] == dataset) & (new["optimizer"] == spec.name)]
            new_metrics = new_metrics[new_metrics["run_dir"].isin(new["run_dir"])]
        runs = pd.concat([committed, new], ignore_index=True)
        metrics = pd.concat([committed_metrics, new_metrics], ignore_index=True)
        own_bench = {**bench, (workload_of(dataset).architecture, spec.name, 1000): ms.get(dataset) or float("nan")}
        text, table = workload_section(dataset, spec, runs, metrics, committed, own_bench, protocol, quick)
        atomic_write_text(out / f"{dataset}.md", text)
        sections.append(text)
        csv.append(table)
        all_runs.append(runs)
        all_metrics.append(metrics)
        bench = own_bench
    atomic_write_text(out / "tables.csv", pd.concat(csv, ignore_index=True).to_csv(index=False))
    runs, metrics = pd.concat(all_runs, ignore_index=True), pd.concat(all_metrics, ignore_index=True)
    figure_files = draw_figure(spec, runs, metrics, bench, out / "figures")
    index = index_markdown(spec, protocols, root, bench_path, out, ms, device, quick, plan_text, sections, figure_files)
    atomic_write_text(out / "index.md", index)
    atomic_write_json(out / "comparison.json", {"optimizer": spec.name, "target": spec.target, "label": spec.label,
                                                "workloads": list(protocols), "quick": quick,
                                                "protocols": {d: p.__dict__ for d, p in protocols.items()},
                                                "new_ms_per_step": ms})
    return out / "index.md"


def index_markdown(spec, protocols, root, bench_path, out, ms, device, quick, plan_text, sections, figure_files) -> str:
    rel = lambda p: Path(p).relative_to(out).as_posix() if Path(p).is_relative_to(out) else Path(p).as_posix()  # noqa: E731
    protocol_rows = pd.DataFrame([{"workload": d, "trials": p.trials, "seeds": p.seeds,
                                   "steps per run": run_setting(d, p)["steps"],
                                   "eval every": p.eval_every, "pruning": f"successive halving, min {p.min_resource} "
                                   f"epochs, factor {p.reduction_factor}", "sampler": f"{p.sampler} (seed "
                                   f"{p.sampler_seed}, {p.startup_trials} start-up trials)",
                                   "exits": "notebook's" if p.exits else "none",
                                   "overrides": " ".join(p.overrides) or DASH} for d, p in protocols.items()])
    sources = "; ".join(sorted({s for p in protocols.values() for s in p.sources}))
    lines = [f"# {spec.label} against the committed reference", ""]
    if quick:
        lines += [f"**{QUICK_NOTE}.** Run without `--protocol quick` for a comparable row.", ""]
    lines += [
        f"Optimizer: `{spec.target or spec.name}` (run name `{spec.name}`, family {spec.family}); searched over "
        f"{spec.space_note}: `{json.dumps(spec.space)}`.", "",
        f"Machine: {device} (this comparison's runs and its optimizer's short bench).", "",
        "## Protocol", "",
        "The reference protocol of each workload, read from the committed studies"
        + (" and shrunk by `--protocol quick`" if quick else "") + f" ({sources}); seeds: the committed rows' count.", "",
        markdown_table(protocol_rows), "",
        "## Where every number comes from", "",
        f"- Committed rows: the final runs under `{root.as_posix()}/<workload>/runs/final/` (train and test losses, "
        "epochs to target), their bench ms/step from the quiet bench table "
        f"`{bench_path.as_posix()}` ({bench_device(bench_path)}).",
        f"- The new row: its runs under `runs/final/` here (the winner of `tuning/<workload>/{spec.name}.db`, seed 0 "
        f"being the winning trial), its tuned configs in `tuned/<workload>/{spec.name}.yaml`"
        + (f", its config `{rel(spec.config_dir / 'optimizer' / (spec.name + '.yaml'))}`" if spec.config_dir else "")
        + "; its ms/step from a short bench on this machine when the comparison began (not a quiet bench: "
        "its time to target is indicative).",
        "- Target: 1.05 x the best mean final train loss of the committed paper's field (the report's rule); "
        "ranks by mean final train loss (`benchmarks.tables.ranked`, the report's ranking).",
        "- Verdict: paired t-test by seed on the generated stand-ins (seed k regenerates the data for every "
        "optimizer), Welch's t-test on fixed data (MNIST); p < 0.05 is told apart from seed noise.", "",
        "## Plan", "", "```", plan_text, "```", "",
        "## Tables", "", *sections, "",
        "## Figure", "", f"![comparison](figures/{figure_files[0]})", "",
        "Train loss against epochs and against steps x bench ms/step, test loss against epochs; the new optimizer drawn "
        "over the committed curves (thicker line).", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
