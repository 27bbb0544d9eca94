"""`make report`: every table, figure and number about the reference comparison, from the committed runs.

    python -m scripts.report [--root results/reference/cpu] [--bench results/bench/<machine>.json]
                             [--out DIR] [--no-figures]

Reads the committed runs (`<root>/<dataset>/runs/final/...`), the Optuna studies
(`<root>/<dataset>/tuning/...`) and one quiet bench table (one machine for every workload), and writes:

- per data set: `<root>/<dataset>/summary.md`, `summary.csv`, `summary_provenance.json` and
  `figures/` (time axis: steps x the bench's ms/step);
- across data sets: `<root>/comparison.md`, `comparison.csv` and `<root>/figures/` (the paper's
  comparison figure, the performance profile, the bench's step times);
- the generated blocks of `docs/results.md` and of the README (between `<!-- report:NAME:begin -->`
  and `<!-- report:NAME:end -->`), and `<root>/README.md`.

Everything written is a function of those inputs only (no dates, hosts or current commit), so a
second run changes nothing; `tests/test_report.py` regenerates the text into a temporary folder
(`--out`) and compares it with the committed files. Verdicts that compare numbers (ranks, gaps,
"within seed noise", "at the edge of its search space") are computed here, never typed.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.tables import md_head, md_row
from benchmarks.optimizers import legend_sorted
from benchmarks.results import (DASH, HEALTHY, WORKLOAD_ORDER, bench_device, bench_ms_per_step, family_of, fmt,
                                fmt_mean_std, load_runs, mean_std, optimizer_info, optimizer_names, provenance,
                                optimizer_label, rank_text, ranked, run_record, workload_of, write_json, write_text)
from benchmarks.tuning.protocol import BENCH, ROOT, Protocol, read_protocol, run_setting
from benchmarks.tuning.space import search_space
from benchmarks.tuning.studies import read_studies
from benchmarks.reporting.plateau import PLATEAU_FILE, STALL_MARGIN, plateau_of, plateau_record, on_plateau
from benchmarks.reporting.statistics import gap_standard_error, seed_test
from benchmarks.reporting import figures, summary, tuning_report
from benchmarks.tuning import scaling

PUBLISHED_GROUP = "published"  # runs of an optimizer's published defaults (not searched)
DOCS, README, TUNING = Path("docs/results.md"), Path("README.md"), Path("docs/tuning.md")
RELATIVES_DOC = Path("docs/locoprop_vs_target_propagation.md")
SCALING_DOC = Path("docs/scaling.md")
NOISE_P = 0.05  # a gap is told apart from seed noise when the seed test (benchmarks.reporting.statistics) gives p below this
EDGE = 0.05  # a winner within this fraction of a range's ends (log scale where searched so) is at the edge
VERSION_MARK = "‡"  # a row whose seeds ran at several commits or thread counts (see the provenance)


@dataclass
class WorkloadResults:
    name: str
    folder: Path
    runs: pd.DataFrame
    metrics: pd.DataFrame
    table: pd.DataFrame  # benchmarks' summary rows, one per optimizer
    plateau: dict  # the mean-image plateau record (benchmarks.reporting.plateau)
    protocol: Protocol  # read from the workload's committed studies and final runs

    @property
    def setting(self) -> dict[str, int]:
        """What one of its runs trains: epochs, trained epochs, batch, steps (the protocol's config)."""
        return run_setting(self.name, self.protocol)

    @property
    def label(self) -> str:
        return workload_of(self.name).label


# ----------------------------------------------------------------------------- numbers

def paper_steps(results: WorkloadResults) -> int:
    """Optimizer steps of one run of the protocol on the paper's data set of this architecture."""
    setting = results.setting
    return workload_of(workload_of(results.name).architecture).n_train // setting["batch"] * setting["trained_epochs"]


def finals(results: WorkloadResults, optimizer: str) -> dict[int, float]:
    """Seed -> final train loss of an optimizer's healthy runs."""
    primary = workload_of(results.name).primary_metric
    own = results.runs[(results.runs["optimizer"] == optimizer) & results.runs["status"].isin(HEALTHY)]
    return {int(seed): float(v) for seed, v in zip(own["seed"], own[f"final_{primary}"])}


def stalled_rows(results: WorkloadResults) -> set[str]:
    """Optimizers none of whose healthy seeds ever got measurably below the mean-image plateau of
    its data (best train loss above (1 - STALL_MARGIN) x the plateau); unjudged where the plateau is
    unknown."""
    primary = workload_of(results.name).primary_metric
    stalled = set()
    healthy = results.runs[results.runs["status"].isin(HEALTHY)]
    for optimizer, own in healthy.groupby("optimizer"):
        levels = [plateau_of(results.plateau, int(seed)) for seed in own["seed"]]
        if own.empty or any(level is None for level in levels):
            continue
        if all(on_plateau(best, level) for best, level in zip(own[f"best_{primary}"], levels)):
            stalled.add(optimizer)
    return stalled


def run_segments(run: pd.Series) -> list[dict]:
    """The stretches of epochs a run trained in, each with its commit and device: the summary's
    `segments` for a run resumed on other code or another machine, else the run's own record."""
    segments = run.get("segments")
    if isinstance(segments, list) and segments:
        return segments
    return [{"git_commit": None if pd.isna(run.get("git_commit")) else run.get("git_commit"),
             "device": None if pd.isna(run.get("device")) else run.get("device")}]


def segments_text(segments: list[dict], last_epoch: int) -> str:
    """'epochs 1-31 at commit `e8de837` (AMD EPYC, cpu (1 threads)); epochs 32-99 at ...'."""
    parts = []
    for stretch, after in zip(segments, [*segments[1:], None]):
        end = after["from_epoch"] if after else last_epoch
        commit = f"commit `{stretch['git_commit'][:7]}`" if stretch.get("git_commit") else "an unrecorded commit"
        where = ", ".join(str(stretch[k]) for k in ("cpu_model", "device") if stretch.get(k)) or "an unrecorded machine"
        parts.append(f"epochs {stretch['from_epoch'] + 1}-{end} at {commit} ({where})")
    return "; ".join(parts)


def mixed_versions(results: WorkloadResults) -> dict[str, str]:
    """Optimizers whose seeds ran at more than one commit or on more than one device/thread count
    (a seed resumed on other code counts with every commit it ran at), with what differs: their
    rows carry a mark that points to the provenance."""
    out = {}
    for optimizer, own in results.runs.groupby("optimizer"):
        stretches = [stretch for _, run in own.iterrows() for stretch in run_segments(run)]
        commits = {str(stretch.get("git_commit") or "unknown")[:7] for stretch in stretches}
        devices = {str(stretch.get("device") or "unknown") for stretch in stretches}
        parts = ([f"{len(commits)} commits"] if len(commits) > 1 else []) + \
                ([f"{len(devices)} devices or thread counts"] if len(devices) > 1 else [])
        if parts:
            out[optimizer] = " and ".join(parts)
    return out


def seed_test_of(results: WorkloadResults, a: str, b: str) -> tuple[float, str]:
    """p and the test's name for a against b on this workload (paired where seeds share data)."""
    return seed_test(finals(results, a), finals(results, b), workload_of(results.name).seed_draws_data)


# ----------------------------------------------------------------------------- loading

def load_workloads(root: Path, bench: dict) -> list[WorkloadResults]:
    out = []
    for name in [n for n in WORKLOAD_ORDER if (root / n / "runs" / "final").is_dir()]:
        runs, metrics = load_runs(root / name, "final")
        published, published_metrics = load_runs(root / name, PUBLISHED_GROUP)
        if not published.empty:  # the authors' defaults, a row beside the searched one
            published["optimizer"] = published["optimizer"] + "@published"
            published_metrics["optimizer"] = published_metrics["optimizer"] + "@published"
            runs = pd.concat([runs, published], ignore_index=True)
            metrics = pd.concat([metrics, published_metrics], ignore_index=True)
        if runs.empty:
            continue
        table = summary.summarize(runs, metrics, bench=bench)
        plateau = plateau_record(root / name, name, sorted({int(s) for s in runs["seed"]}))
        out.append(WorkloadResults(name, root / name, runs, metrics, table, plateau, read_protocol(root, name)))
    return out


# ----------------------------------------------------------------------------- per-workload tables

def params_text(params: dict[str, Any]) -> str:
    parts = []
    for key, value in params.items():
        short = key.split(".")[-1]
        parts.append(f"{short} {value:.3g}" if isinstance(value, float) else f"{short} {value}")
    return ", ".join(parts)


def workload_table(results: WorkloadResults, studies: dict[tuple[str, str], dict]) -> str:
    w = workload_of(results.name)
    primary, test = w.primary_metric, w.test_metric
    unit = "CE" if primary.endswith("ce") else "SE"
    table = ranked(results.table, primary)
    stalled, mixed = stalled_rows(results), mixed_versions(results)
    sgd = table.loc[table["optimizer"] == "sgd", "bench_ms_per_step"]
    sgd_ms = float(sgd.iloc[0]) if len(sgd) else math.nan
    head = ["rank", "optimizer", "family", "seeds (diverged)", f"final train {unit}", f"final test {unit}",
            "bench ms/step", "x SGD step", "epochs to target", "bench s to target", "tuned setting"]
    lines = md_head(head)
    for _, r in table.iterrows():
        info = optimizer_info(r["optimizer"]) if _known(r["optimizer"]) else {"label": r["optimizer"], "family": "other"}
        study = studies.get((results.name, r["optimizer"]))
        setting = params_text(study["winner"]["params"]) if study and study.get("winner") else "published defaults"
        reach = reach_text(r["n_reached_target"], r["n_healthy"])
        marks = (" (stalled)" if r["optimizer"] in stalled else "") + \
            (f" {VERSION_MARK}" if r["optimizer"] in mixed else "")
        lines.append(md_row([
            rank_text(r), info["label"], info["family"].replace("_", "-"), f"{int(r['n_seeds'])} ({int(r['n_diverged'])})",
            fmt_mean_std(r[f"final_{primary}_mean"], r[f"final_{primary}_std"]) + marks,
            fmt_mean_std(r[f"final_{test}_mean"], r[f"final_{test}_std"]),
            fmt(r.get("bench_ms_per_step", math.nan), 0), fmt(r.get("bench_ms_per_step", math.nan) / sgd_ms),
            (fmt(r["epochs_to_target"], 1) + reach) if r["n_reached_target"] else DASH,
            (fmt(r["bench_seconds_to_target"], 0) + reach) if r["n_reached_target"] else DASH,
            setting]))
    target = float(results.table["target"].iloc[0])
    setting = results.setting
    intro = (f"**{results.label}** (`{results.name}`): {setting['steps']:,} steps per run at batch {setting['batch']} "
             f"over {setting['trained_epochs']} epochs (the paper's {workload_of(w.architecture).label}: "
             f"{paper_steps(results):,}). "
             f"Target: {fmt(target)} (1.05 x the best mean final train {unit} of the paper's field). "
             f"Loss: {_loss_words(primary)}; mean ± sample std over the seeds. "
             + seed_words(results) + " " + plateau_words(results))
    return intro + "\n\n" + "\n".join(lines)


def seed_words(results: WorkloadResults) -> str:
    """What a seed changes on this workload, and so which test compares two rows."""
    if workload_of(results.name).seed_draws_data:
        return ("Seed k draws the data (train and test sets) as well as the initialisation and the batch "
                "order, so seed k of every optimizer trains on the same data: rows are compared by a paired "
                "t-test over the seeds.")
    return ("The data is fixed; seed k draws the initialisation and the batch order: rows are compared by "
            "Welch's t-test.")


def plateau_words(results: WorkloadResults) -> str:
    levels = sorted(results.plateau.get("by_seed", {}).values())
    if not levels:
        return "The mean-image plateau is unknown here (no data at hand): no row is judged stalled."
    level = fmt(levels[0]) if levels[0] == levels[-1] else f"{fmt(levels[0])} to {fmt(levels[-1])}"
    return (f"Predicting the mean training image scores {level}; a row marked (stalled) never got "
            f"{STALL_MARGIN:.0%} below it.")


def _known(name: str) -> bool:
    try:
        optimizer_info(name)
        return True
    except ValueError:
        return False


def _loss_words(primary: str) -> str:
    return ("cross-entropy summed over pixels, averaged over images (nats)" if primary.endswith("ce")
            else "squared error summed over pixels, averaged over images")


def gaps_table(results: WorkloadResults) -> str:
    """Each optimizer against the next one down the ranking: the gap, its standard error, and
    whether seed noise alone could explain it (the test that matches how the seeds were drawn:
    benchmarks.reporting.statistics). No verdict between two stalled rows: neither has left the plateau."""
    primary = workload_of(results.name).primary_metric
    paired = workload_of(results.name).seed_draws_data
    table = ranked(results.table, primary)
    table = table[table["rank"].notna()]
    head = ["better", "worse", "gap", "standard error", "p", "test", "verdict"]
    lines = md_head(head)
    rows = list(table.itertuples(index=False))
    stalled = stalled_rows(results)
    for a, b in zip(rows, rows[1:]):
        fa, fb = finals(results, a.optimizer), finals(results, b.optimizer)
        gap = mean_std(fb.values())[0] - mean_std(fa.values())[0]
        if a.optimizer in stalled and b.optimizer in stalled:
            lines.append(md_row([optimizer_label(a.optimizer), optimizer_label(b.optimizer), fmt(gap), DASH, DASH, DASH,
                                             "none: both stalled on the plateau"]))
            continue
        p, test = seed_test(fa, fb, paired)
        verdict = ("fewer than two seeds: noise unknown" if not math.isfinite(p) else
                   "larger than seed noise" if p < NOISE_P else "within seed noise")
        lines.append(md_row([optimizer_label(a.optimizer), optimizer_label(b.optimizer), fmt(gap),
                                         fmt(gap_standard_error(fa, fb, paired)), fmt(p, 3), test, verdict]))
    return "\n".join(lines)


def _runs(n: int) -> str:
    return f"{n} run" + ("" if n == 1 else "s")


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def compare(results: WorkloadResults, a: str, b: str) -> tuple[str, str]:
    """('lower than', 'higher than' or 'within seed noise of'; the test behind it): a's final train
    loss against b's."""
    p, test = seed_test_of(results, a, b)
    ma, mb = mean_std(finals(results, a).values())[0], mean_std(finals(results, b).values())[0]
    if not (math.isfinite(ma) and math.isfinite(mb)):
        return "not comparable with", " (a side has no finished seed)"
    if not math.isfinite(p):
        return ("lower than" if ma < mb else "higher than"), " (one seed: noise unknown)"
    words = "within seed noise of" if p >= NOISE_P else "lower than" if ma < mb else "higher than"
    return words, f" ({test}, {p_text(p)})"


def verdicts(results: WorkloadResults) -> str:
    """Sentences that compare numbers, computed: the leader, each LocoProp variant against the best
    first- and second-order methods, and the fastest to the target in bench time."""
    primary = workload_of(results.name).primary_metric
    everything = ranked(results.table, primary)
    finished = everything[everything["rank"].notna() | everything["rank_among"].notna()]
    table = everything[everything["rank"].notna()]
    if table.empty:
        return "Every optimizer of the paper's field diverged."
    families = {o: family_of(o) for o in everything["optimizer"]}
    best_of = {f: next((o for o in finished["optimizer"] if families[o] == f), None)
               for f in ("first_order", "second_order", "modern")}
    first = table["optimizer"].iloc[0]
    line = f"- Lowest final train loss: {optimizer_label(first)}"
    if len(table) > 1:
        words, note = compare(results, first, table["optimizer"].iloc[1])
        line += f", {words} {optimizer_label(table['optimizer'].iloc[1])}{note}"
    lines = [line + "."]
    for variant in [o for o in families if o.partition("@")[0] in ("locoprop_m", "locoprop_s")]:
        for group, words in (("first_order", "the best first-order method"),
                             ("second_order", "the best second-order method"),
                             ("modern", "the best of the modern family")):
            other = best_of[group]
            if other is not None:
                verdict, note = compare(results, variant, other)
                lines.append(f"- {optimizer_label(variant)}: final train loss {verdict} {words}, {optimizer_label(other)}{note}.")
    reached = table[table["n_reached_target"] > 0]
    if "bench_seconds_to_target" in reached and len(reached):
        fastest = reached.sort_values(["bench_seconds_to_target", "optimizer"]).iloc[0]
        by_epoch = reached.sort_values(["epochs_to_target", "optimizer"]).iloc[0]
        lines.append(f"- First to the target: in epochs {optimizer_label(by_epoch['optimizer'])}, in bench time "
                     f"{optimizer_label(fastest['optimizer'])}; {len(reached)} of {len(table)} optimizers reach it.")
    return "\n".join(lines)


RELATIVES = ("locoprop_m", "locoprop_s", "foof", "dtp")


def relatives_table(all_results: list[WorkloadResults]) -> str:
    """LocoProp, its relatives (FOOF, DTP) and the best first- and second-order methods on each
    workload, with computed comparisons of the relatives against LocoProp."""
    head = ["workload", "optimizer", "final train loss", "final test loss", "bench ms/step"]
    lines = md_head(head)
    sentences = []
    for results in all_results:
        w = workload_of(results.name)
        table = ranked(results.table, w.primary_metric)
        families = {o: family_of(o) for o in table["optimizer"]}
        finished = table[table["rank"].notna()]
        best = [next((o for o in finished["optimizer"] if families[o] == f), None)
                for f in ("first_order", "second_order")]
        shown = [o for o in (*RELATIVES, *best) if o is not None and o in set(table["optimizer"])]
        for name in dict.fromkeys(shown):
            r = table[table["optimizer"] == name].iloc[0]
            note = " (best first-order)" if name == best[0] else " (best second-order)" if name == best[1] else ""
            diverged = f" ({int(r['n_diverged'])}/{int(r['n_seeds'])} diverged)" if r["n_diverged"] else ""
            lines.append(md_row([
                results.label, optimizer_label(name) + note,
                fmt_mean_std(r[f"final_{w.primary_metric}_mean"], r[f"final_{w.primary_metric}_std"]) + diverged,
                fmt_mean_std(r[f"final_{w.test_metric}_mean"], r[f"final_{w.test_metric}_std"]),
                fmt(r.get("bench_ms_per_step", math.nan), 0)]))
        for relative, against in (("dtp", "locoprop_m"), ("foof", "locoprop_s")):
            if relative in families and against in families:
                verdict, note = compare(results, relative, against)
                sentences.append(f"- {results.label}: {optimizer_label(relative)}'s final train loss is "
                                 f"{verdict} {optimizer_label(against)}'s{note}.")
    return "\n".join(lines) + "\n\n" + "\n".join(sentences)


def ablation_table(folder: Path) -> str:
    """Each LocoProp ablation of a workload: every setting's final train loss, the lowest named."""
    w = workload_of(folder.name)
    head = ["ablation", "setting", "final train loss", "status"]
    lines = md_head(head)
    best_lines = []
    for group in sorted(p.name for p in (folder / "runs").glob("ablation-*")):
        runs, _ = load_runs(folder, group)
        column = f"final_{w.primary_metric}"
        runs = runs.assign(_key=runs[column].where(runs["status"].isin(HEALTHY), np.inf)).sort_values(
            ["config_label", "seed"])
        for _, r in runs.iterrows():
            lines.append(f"| {group.removeprefix('ablation-')} | {r['config_label']} | {fmt(r[column])} | {r['status']} |")
        healthy = runs[runs["status"].isin(HEALTHY)]
        if len(healthy):
            top = healthy.sort_values([column, "config_label"]).iloc[0]
            best_lines.append(f"- {group.removeprefix('ablation-')}: lowest final train loss with {top['config_label']}.")
    return "\n".join(lines) + "\n\n" + "\n".join(best_lines)


# ----------------------------------------------------------------------------- across workloads

def comparison_table(all_results: list[WorkloadResults]) -> pd.DataFrame:
    """One row per optimizer: per workload its rank, final train loss (mean, std), epochs and bench
    seconds to that workload's target; and on how many workloads it is within 5% of the best of
    the paper's field (the modern family is ranked apart: `rank_among` is where it would stand)."""
    rows: dict[str, dict[str, Any]] = {}
    for results in all_results:
        primary = workload_of(results.name).primary_metric
        table = ranked(results.table, primary)
        stalled, mixed = stalled_rows(results), mixed_versions(results)
        best = table.loc[table["rank"].notna(), f"final_{primary}_mean"].min()
        for _, r in table.iterrows():
            row = rows.setdefault(r["optimizer"], {"optimizer": r["optimizer"], "within_5pct": 0, "workloads": 0})
            mean = r[f"final_{primary}_mean"]
            row.update({f"{results.name}_rank": r["rank"], f"{results.name}_rank_among": r["rank_among"],
                        f"{results.name}_final_mean": mean,
                        f"{results.name}_final_std": r[f"final_{primary}_std"],
                        f"{results.name}_n_seeds": r["n_seeds"], f"{results.name}_n_diverged": r["n_diverged"],
                        f"{results.name}_epochs_to_target": r["epochs_to_target"],
                        f"{results.name}_n_reached_target": r["n_reached_target"],
                        f"{results.name}_n_healthy": r["n_healthy"],
                        f"{results.name}_stalled": r["optimizer"] in stalled,
                        f"{results.name}_mixed_versions": mixed.get(r["optimizer"], ""),
                        f"{results.name}_bench_s_to_target": r.get("bench_seconds_to_target", math.nan)})
            row["workloads"] += 1
            row["within_5pct"] += int(math.isfinite(mean) and mean <= 1.05 * best)
    frame = pd.DataFrame(list(rows.values()))
    order = legend_sorted(frame["optimizer"])
    return frame.set_index("optimizer").loc[order].reset_index()


def progress_text(study: dict | None) -> str:
    """What a row without finished runs is waiting for: its search (trials ended of its budget)."""
    if not study or not study["trials"]:
        return "not run"
    ended = sum(t["state"] in ("COMPLETE", "PRUNED") for t in study["trials"])
    budget = (study.get("protocol") or {}).get("trials")
    return f"searching ({ended} of {budget} trials)" if budget else f"searching ({ended} trials)"


def reach_text(reached: float, healthy: float) -> str:
    """' (k of n)' when only some of the finished seeds reach the target (the time is theirs)."""
    return f" ({int(reached)} of {int(healthy)})" if reached and reached < healthy else ""


def comparison_markdown(frame: pd.DataFrame, all_results: list[WorkloadResults],
                        studies: dict[tuple[str, str], dict] | None = None) -> str:
    """The cross-workload table; a row with fewer seeds than the protocol's says how many it has, and
    one not run yet on a workload says how far its search is (`studies`: by data set and optimizer)."""
    head = ["optimizer", "family"]
    for results in all_results:
        head += [f"{results.label}: rank", "final train loss", "epochs / bench s to target"]
    head += ["within 5% of the best"]
    lines = md_head(head)
    for _, r in frame.iterrows():
        info = optimizer_info(r["optimizer"]) if _known(r["optimizer"]) else {"label": r["optimizer"], "family": "other"}
        cells = [info["label"], info["family"].replace("_", "-")]
        for results in all_results:
            n = results.name
            if f"{n}_rank" not in r or pd.isna(r.get(f"{n}_n_seeds")):
                cells += [DASH, progress_text((studies or {}).get((n, r["optimizer"]))), DASH]
                continue
            cells.append(rank_text(pd.Series({"rank": r[f"{n}_rank"], "rank_among": r[f"{n}_rank_among"]})))
            diverged, seeds = int(r[f"{n}_n_diverged"]), int(r[f"{n}_n_seeds"])
            final = fmt_mean_std(r[f"{n}_final_mean"], r[f"{n}_final_std"])
            final += f" ({diverged}/{seeds} diverged)" if diverged else ""
            final += f" ({seeds} of {results.protocol.seeds} seeds)" if seeds < results.protocol.seeds else ""
            final += " (stalled)" if r[f"{n}_stalled"] else ""
            final += f" {VERSION_MARK}" if r[f"{n}_mixed_versions"] else ""
            cells.append(final)
            epochs, seconds = r[f"{n}_epochs_to_target"], r[f"{n}_bench_s_to_target"]
            cells.append(f"{fmt(epochs, 0)} / {fmt(seconds, 0)}"
                         + reach_text(r[f"{n}_n_reached_target"], r[f"{n}_n_healthy"]) if epochs == epochs else DASH)
        cells.append(f"{int(r['within_5pct'])} of {int(r['workloads'])}")
        lines.append(md_row(cells))
    return "\n".join(lines)


def marks_line(frame: pd.DataFrame, all_results: list[WorkloadResults]) -> str:
    """What the table's marks mean, for the marks it carries."""
    parts = []
    if any(frame.get(f"{r.name}_stalled", pd.Series(dtype=bool)).fillna(False).any() for r in all_results):
        parts.append(f"(stalled): no seed got {STALL_MARGIN:.0%} below the loss of predicting the mean training "
                     "image")
    if any(frame.get(f"{r.name}_mixed_versions", pd.Series(dtype=str)).fillna("").astype(bool).any()
           for r in all_results):
        parts.append(f"{VERSION_MARK}: the row's seeds ran at more than one commit or thread count "
                     "(docs/results.md, Provenance)")
    return "".join(p[0].upper() + p[1:] + ". " for p in parts)


def steps_line(all_results: list[WorkloadResults]) -> str:
    parts = []
    for results in all_results:
        w = workload_of(results.name)
        parts.append(f"{results.label} {results.setting['steps']:,} steps per run (the paper's "
                     f"{workload_of(w.architecture).label}: {paper_steps(results):,})")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- tuning

def study_verdicts(study: dict) -> dict[str, Any]:
    """Counts of a study's trials, its winner, and which of the winner's values sit at the edge of
    the searched range (log scale where the search used one)."""
    trials = study["trials"]
    counts = {state: sum(t["state"] == state for t in trials) for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    diverged = sum(t["state"] == "PRUNED" and t.get("status") == "diverged" for t in trials)
    lost = sum(t["lost"] for t in trials)
    edges = []
    winner = study.get("winner")
    space = (study.get("protocol") or {}).get("search_space", {})
    for key, value in (winner or {}).get("params", {}).items():
        spec = space.get(key, {})
        if "low" not in spec or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        low, high = float(spec["low"]), float(spec["high"])
        transform = math.log if spec.get("log") else float
        position = (transform(value) - transform(low)) / (transform(high) - transform(low))
        if position <= EDGE or position >= 1 - EDGE:
            edges.append(f"{key.split('.')[-1]} at the {'low' if position <= EDGE else 'high'} end")
    old = sum(t["sampler"] is None and not t["enqueued"] for t in trials)
    return {"complete": counts["COMPLETE"], "pruned": counts["PRUNED"], "diverged": diverged, "lost": lost,
            "running": counts["RUNNING"], "old_sampler": old, "edges": edges}


def shared_draws(studies: list[dict]) -> dict[tuple[str, str], int]:
    """Per study: how many of its trials share a drawn value with a trial of another study (the
    count-seeded sampler gave every study the same random stream)."""
    values: dict[tuple[str, str], list[set]] = {}
    for s in studies:
        ranges = {k for k, spec in ((s.get("protocol") or {}).get("search_space") or {}).items() if "low" in spec}
        values[(s["dataset"], s["optimizer"])] = [{v for k, v in t["params"].items() if k in ranges}
                                                  for t in s["trials"] if not t["enqueued"]]
    out = {}
    for key, trial_values in values.items():
        others = set().union(*(v for other, tv in values.items() if other != key for v in tv))
        out[key] = sum(bool(v & others) for v in trial_values)
    return out


def tuning_table(studies: list[dict]) -> str:
    shared = shared_draws(studies)
    head = ["data set", "optimizer", "budget", "complete", "pruned (diverged)", "lost, run again", "sampler",
            "draws shared with other studies", "winner", "edge of the search space"]
    lines = md_head(head)
    for s in sorted(studies, key=lambda s: (WORKLOAD_ORDER.index(s["dataset"]) if s["dataset"] in WORKLOAD_ORDER
                                            else 99, legend_sorted([s["optimizer"]]), s["optimizer"])):
        v = study_verdicts(s)
        budget = (s.get("protocol") or {}).get("trials")
        winner = s.get("winner")
        sampler = sampler_of(s)
        lines.append(md_row([
            workload_of(s["dataset"]).label, optimizer_label(s["optimizer"]), str(budget), str(v["complete"]),
            f"{v['pruned']} ({v['diverged']})", str(v["lost"]) + (f" ({v['running']} running)" if v["running"] else ""),
            sampler, str(shared[(s["dataset"], s["optimizer"])]),
            (params_text(winner["params"]) + ("" if winner["complete"] else " (no trial completed)")) if winner else DASH,
            "; ".join(v["edges"]) or "no"]))
    return "\n".join(lines)


def sampler_of(study: dict) -> str:
    """'keyed', 'count-seeded' or 'mixed': the sampler that drew a study's trials, from their marks."""
    old = study_verdicts(study)["old_sampler"]
    drawn = len([t for t in study["trials"] if not t["enqueued"]])
    return "count-seeded" if old and old == drawn else "keyed" if not old else "mixed"


def protocol_table(studies: list[dict]) -> str:
    """The protocol each workload's committed studies ran under, read from the studies themselves
    (one line per distinct protocol, with how many studies used it)."""
    head = ["data set", "studies", "trials per study", "random start-up trials", "pruning rungs (epochs)",
            "full evaluation every", "notebook exits", "sampler seed"]
    lines = md_head(head)
    seen: dict[tuple, int] = {}
    for st in studies:
        p = st.get("protocol") or {}
        rungs, epoch = [], int(p.get("min_resource", 0) or 0)
        last = run_setting(st["dataset"], Protocol.from_record(p))["trained_epochs"]
        while epoch and epoch <= last:
            rungs.append(epoch)
            epoch *= int(p.get("reduction_factor", 1) or 1)
            if int(p.get("reduction_factor", 1) or 1) <= 1:
                break
        key = (st["dataset"], p.get("trials"), p.get("startup_trials"), ", ".join(map(str, rungs)),
               p.get("eval_every"), "yes" if p.get("exits", True) else "no", p.get("sampler_seed"))
        seen[key] = seen.get(key, 0) + 1
    for key, n in sorted(seen.items(), key=lambda kv: (WORKLOAD_ORDER.index(kv[0][0]) if kv[0][0] in WORKLOAD_ORDER
                                                       else 99, str(kv[0]))):
        dataset, trials, startup, rungs, every, exits, seed = key
        lines.append(md_row([workload_of(dataset).label, str(n), str(trials), str(startup), rungs,
                                         f"{every} epochs", exits, str(seed)]))
    return "\n".join(lines)


def sampler_text(studies: list[dict]) -> str:
    """Which committed studies were drawn with common random numbers (the count-seeded sampler) and
    which rows share their winning setting with another study's winner, read from the studies."""
    by_sampler: dict[str, list[str]] = {}
    for st in sorted(studies, key=lambda st: (WORKLOAD_ORDER.index(st["dataset"]) if st["dataset"] in WORKLOAD_ORDER
                                              else 99, st["optimizer"])):
        by_sampler.setdefault(sampler_of(st), []).append(f"{workload_of(st['dataset']).label} {optimizer_label(st['optimizer'])}")
    lines = [f"- {name} ({len(rows)} studies): {', '.join(rows)}." for name, rows in sorted(by_sampler.items())]
    winners = [(f"{workload_of(st['dataset']).label} {optimizer_label(st['optimizer'])} (trial {st['winner']['number']})",
                {v for k, v in st["winner"]["params"].items()
                 if "low" in ((st.get("protocol") or {}).get("search_space") or {}).get(k, {})})
               for st in studies if st.get("winner")]  # values drawn from a range, not a list of choices
    shared = [f"{a} and {b}" for i, (a, va) in enumerate(winners) for b, vb in winners[i + 1:] if va & vb]
    lines.append("- Rows whose winning trial drew a value that another row's winning trial drew too: "
                 + ("; ".join(shared) if shared else "none") + ".")
    return "\n".join(lines)


def search_space_table() -> str:
    """Every optimizer's search space, from benchmarks/tuning/search_spaces/ (or the default around its lr)."""
    head = ["optimizer", "family", "searched settings"]
    lines = md_head(head)
    for name in legend_sorted(optimizer_names()):
        info = optimizer_info(name)
        parts = []
        for key, spec in search_space(name).items():
            short = key.split(".")[-1]
            if "choices" in spec:
                parts.append(f"{short} in {{{', '.join(str(c) for c in spec['choices'])}}}")
            else:
                parts.append(f"{short} {spec['low']:.3g} .. {spec['high']:.3g}" + (" (log)" if spec.get("log") else ""))
        lines.append(f"| {info['label']} | {info['family'].replace('_', '-')} | {'; '.join(parts)} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- provenance

def provenance_markdown(all_results: list[WorkloadResults], bench_path: Path, bench_name: str | None) -> str:
    lines = [f"Time axes and 'bench' columns: steps x the ms/step of one quiet bench table, "
             f"`{bench_path.as_posix()}` ({bench_name}); every workload is timed on that one machine.", ""]
    for results in all_results:
        mixed = mixed_versions(results)
        if mixed:
            lines.append(f"**{results.label}**, rows marked {VERSION_MARK}: "
                         + "; ".join(f"{optimizer_label(o)} ({why})" for o, why in sorted(mixed.items())) + ".")
        runs = results.runs
        by_commit = runs.groupby(runs["git_commit"].fillna("unknown").str[:7])
        lines.append(f"**{results.label}**, {_runs(len(runs))} of the winners' seeds:")
        for commit, own in sorted(by_commit, key=lambda kv: kv[0]):
            names = ", ".join(sorted({optimizer_label(o) for o in own["optimizer"]}, key=str.lower))
            lines.append(f"- commit `{commit}`: {_runs(len(own))} ({names})")
        models = runs["cpu_model"] if "cpu_model" in runs else pd.Series([None] * len(runs), index=runs.index)
        machines = runs.assign(machine=[f"{m if isinstance(m, str) else 'CPU model not recorded'} ({d})"
                                        for m, d in zip(models, runs["device"])])
        for machine, own in sorted(machines.groupby("machine"), key=lambda kv: kv[0]):
            lines.append(f"- machine {machine}: {_runs(len(own))}")
        for _, run in runs.iterrows():
            segments = run_segments(run)
            if len(segments) > 1:
                lines.append(f"- {optimizer_label(run['optimizer'])} seed {run['seed']} was resumed: "
                             + segments_text(segments, int(run["epochs_completed"])))
        lines.append("")
    return "\n".join(lines).rstrip()


# ----------------------------------------------------------------------------- figures

FIGURE_TEXT = {"paper_comparison": "the paper's optimizers and LocoProp's relatives",
               "modern_comparison": "the modern optimizers, with the paper field's best rows for reference"}


def figures_block(all_results: list[WorkloadResults], root: Path, bench_path: Path) -> str:
    """docs/results.md's comparison figures, each linked with its caption (the one drawn in it)."""
    runs = pd.concat([r.runs for r in all_results], ignore_index=True)
    folder = Path("..") / root / "figures"
    parts = []
    for name, caption in figures.comparison_captions(runs, bench_path).items():
        parts.append(f"![{FIGURE_TEXT[name]}]({(folder / name).as_posix()}.png)\n\n{caption}")
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------- writing

def replace_block(text: str, name: str, body: str, where: str) -> str:
    begin, end = f"<!-- report:{name}:begin -->", f"<!-- report:{name}:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"{where}: no {begin} ... {end} markers for the generated block '{name}'")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body.strip()}\n{end}{tail}"


def fill_blocks(source: Path, target: Path, blocks: dict[str, str]) -> None:
    text = source.read_text()
    for name, body in blocks.items():
        if f"<!-- report:{name}:begin -->" in text:
            text = replace_block(text, name, body, str(source))
    write_text(target, text)


def folder_readme(all_results: list[WorkloadResults], root: Path) -> str:
    return "\n".join([
        "# The CPU reference comparison", "",
        "Generated by `make report` from the runs in this folder; the results, with commentary, are in",
        "[docs/results.md](../../../docs/results.md).", "",
        *md_head(["path", "what"]),
        "| `<dataset>/tuning/<dataset>/<optimizer>.db` | the Optuna study of each search (every trial, its setting, "
        "its per-epoch running loss, how it ended) |",
        "| `<dataset>/runs/tune/...` | every trial's run: `config.yaml`, `metrics.csv`, `summary.json` |",
        "| `<dataset>/runs/final/...` | the winners' seeds, with `reconstructions.npz` |",
        *([f"| `<dataset>/runs/{PUBLISHED_GROUP}/...` | seeds of an optimizer at its published defaults (not searched) |"]
          if any((r.folder / "runs" / PUBLISHED_GROUP).is_dir() for r in all_results) else []),
        "| `<dataset>/runs/ablation-<name>/...` | LocoProp's ablations |",
        "| `<dataset>/summary.md`, `summary.csv` | the table of the final runs |",
        "| `<dataset>/figures/` | loss against epochs and bench time, test loss, reconstructions, ablations |",
        "| `comparison.md`, `comparison.csv`, `figures/` | across the data sets |", "",
        "Data sets here: " + ", ".join(f"`{r.name}` ({r.label})" for r in all_results) + ".", "",
        seed_zero_text(all_results), ""])


def seed_zero_text(all_results: list[WorkloadResults]) -> str:
    """Which winners' seed 0 is the winning trial's own run (copied from `runs/tune`), read from the
    runs' summaries, and which was trained again."""
    again = []
    for results in all_results:
        zero = results.runs[(results.runs["seed"] == 0) & (results.runs["group"] == "final")]
        copied = zero["copied_from"].notna() if "copied_from" in zero else pd.Series(False, index=zero.index)
        again += [f"{results.label} {optimizer_label(o)}" for o in zero.loc[~copied, "optimizer"]]
    return ("Seed 0 of a winner in `runs/final` is the winning trial's own run, copied from `runs/tune`"
            + (f", except for {', '.join(again)}, whose seed 0 was trained again." if again else "."))


def report(root: Path = ROOT, bench_path: Path = BENCH, out: Path = Path("."), draw: bool = True) -> None:
    if not bench_path.is_file():
        raise SystemExit(f"no bench table {bench_path}: run `make bench` on the reference machine "
                         "(python -m benchmarks.speed --threads 1) and name its .json with --bench")
    bench = bench_ms_per_step(bench_path)
    device = bench_device(bench_path)
    target_root = out / root
    all_results = load_workloads(root, bench)
    studies = list(read_studies(root))
    by_key = {(s["dataset"], s["optimizer"]): s for s in studies}
    for results in all_results:
        folder = target_root / results.name
        summary.write_outputs(results.table, results.runs, "final", folder, {})
        write_json(folder / PLATEAU_FILE, results.plateau)
        if draw:
            record = figures.make_figures(results.runs, results.metrics, folder / "figures", results.folder,
                                          "bench", bench_path)
            write_json(folder / "figures" / "provenance.json",
                       {"provenance": provenance(results.runs), "group": "final", "time_axis": "bench",
                        "bench": bench_path.as_posix(), "figures": record, "runs": run_record(results.runs)})
            for group in sorted(p.name for p in (results.folder / "runs").glob("ablation-*")):
                runs, metrics = load_runs(results.folder, group)
                figures.make_ablation_figures(runs, metrics, folder / "figures" / group, results.folder)

    frame = comparison_table(all_results)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.6g")
    write_text(target_root / "comparison.csv", buffer.getvalue())
    epochs = " or ".join(sorted({str(r.setting["trained_epochs"]) for r in all_results}))
    headline = "\n\n".join([comparison_markdown(frame, all_results, by_key),
                            f"Final train loss after {epochs} epochs, mean ± std over the seeds; rank by "
                            f"that mean among the paper's optimizers and LocoProp's relatives (a modern optimizer's "
                            f"rank in parentheses: where it would stand among them); time to target: epochs and steps x quiet bench ms/step ({device}), "
                            "over the seeds that reach it ((k of n) when not all do). "
                            + marks_line(frame, all_results) + steps_line(all_results) + "."])
    write_text(target_root / "comparison.md", "# Across the data sets\n\n" + headline + "\n")
    if draw:
        runs = pd.concat([r.runs for r in all_results], ignore_index=True)
        metrics = pd.concat([r.metrics for r in all_results], ignore_index=True)
        record = figures.make_comparison_figures(runs, metrics, target_root / "figures", bench_path)
        write_json(target_root / "figures" / "provenance.json",
                   {"provenance": provenance(runs), "bench": bench_path.as_posix(), "figures": record})
    write_text(target_root / "README.md", folder_readme(all_results, root))

    blocks = {"headline": headline, "tuning": tuning_table(studies), "figures": figures_block(all_results, root, bench_path),
              "provenance": provenance_markdown(all_results, bench_path, device)}
    blocks.update(tuning_report.blocks(all_results, studies, target_root, draw))
    for results in all_results:
        blocks[f"workload-{results.name}"] = "\n\n".join([workload_table(results, by_key), verdicts(results),
                                                          gaps_table(results)])
    fill_blocks(DOCS, out / DOCS, blocks)
    fill_blocks(README, out / README, {"headline": headline})
    fill_blocks(TUNING, out / TUNING, {"search-spaces": search_space_table(), "protocol": protocol_table(studies),
                                       "samplers": sampler_text(studies)})
    ablations = "\n\n".join(ablation_table(r.folder) for r in all_results if any((r.folder / "runs").glob("ablation-*")))
    fill_blocks(RELATIVES_DOC, out / RELATIVES_DOC, {"relatives": relatives_table(all_results), "ablations": ablations})
    storage = scaling.latest_storage_table()
    if storage is not None:
        fill_blocks(SCALING_DOC, out / SCALING_DOC, {"scaling": scaling.estimate_markdown(root, storage)})


TEXT_SUFFIXES = (".md", ".csv", ".json")


def stale_files(out: Path, draw: bool = False) -> list[str]:
    """The report's text files whose committed version differs from a regeneration into `out`
    (figure provenance only when `draw`): a result changed without `make report`, or a hand edit
    inside generated text."""
    stale = []
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES):
        relative = path.relative_to(out)
        if not draw and "figures" in relative.parts:
            continue
        if not relative.exists() or relative.read_text() != path.read_text():
            stale.append(relative.as_posix())
    return stale
