"""The report's part on how hard each optimizer is to tune: tuning-budget curves from the committed
studies and learning-rate sensitivity from the runs of group `sensitivity` (called by benchmarks.reporting.report).

Per workload it draws `<dataset>/figures/<dataset>_tuning_budget.{png,pdf}` (the expected best
objective after k trials, every optimizer, the 10-90% band shaded) and
`<dataset>/figures/<dataset>_sensitivity.{png,pdf}` (final train loss against the multiplier of the
learning rate, and LocoProp's gamma and inner steps), with `tuning_provenance.json` beside them;
it returns the generated blocks of docs/results.md. The numbers come from benchmarks.reporting.tuning_budget
and benchmarks.reporting.sensitivity.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, LogLocator, MaxNLocator, NullFormatter, ScalarFormatter  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.reporting import sensitivity, tuning_budget  # noqa: E402
from benchmarks.results import WORKLOAD_ORDER, workload_of, write_json  # noqa: E402
from benchmarks.figure_files import figure_style  # noqa: E402
from benchmarks.optimizers import legend_sorted
from benchmarks.reporting.figures import FULL_WIDTH, save_figure, style_for  # noqa: E402
from benchmarks.reporting.plateau import plateau_of  # noqa: E402

EDGE = 1.04  # clipped points (an infinite expected best, a diverged run) sit this far above the top


def best_final(table: pd.DataFrame, dataset: str) -> tuple[str | None, float]:
    """(optimizer, mean final train loss) of the workload's lowest mean, any family."""
    column = f"final_{workload_of(dataset).primary_metric}_mean"
    finite = table[np.isfinite(table[column].astype(float))]
    if finite.empty:
        return None, math.nan
    row = finite.sort_values([column, "optimizer"]).iloc[0]
    return row["optimizer"], float(row[column])


def _log_y(ax, values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values) & (values > 0)]
    low, high = (finite.min() / 1.03, finite.max() * 1.03) if finite.size else (1.0, 10.0)
    ax.set_yscale("log")
    ax.set_ylim(low, high * EDGE ** 1.5)
    span = high / low
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if span > 8 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    formatter = ScalarFormatter()
    formatter.set_scientific(False)
    ax.yaxis.set_major_formatter(formatter)
    ax.yaxis.set_minor_formatter(NullFormatter())
    return low, high * EDGE


def budget_figure(dataset: str, curves: dict[str, pd.DataFrame], reference: tuple[str | None, float],
                  searching: Iterable[str] = ()):
    """Expected best objective against the number of trials: a panel per optimizer (its 10-90%
    band shaded), the others' curves in grey behind it, one shared log axis; the panels of
    `searching` studies (fewer trials than the budget so far) say so in their titles."""
    if not curves:
        return None
    names = legend_sorted(curves)
    columns = 4
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(FULL_WIDTH, 1.6 * rows + 0.9), sharex=True, sharey=True,
                             squeeze=False, layout="constrained")
    everything = np.concatenate([c[["mean", "q10"]].to_numpy(float).ravel() for c in curves.values()]
                                + [np.array([reference[1] * (1 + tuning_budget.WITHIN)])])
    _, top = _log_y(axes[0][0], everything)
    line = reference[1] * (1 + tuning_budget.WITHIN)
    for ax, optimizer in zip(axes.ravel(), names):
        for other in names:
            if other != optimizer:
                ax.plot(curves[other]["k"], np.minimum(curves[other]["mean"], top), color="#cccccc", linewidth=0.6,
                        zorder=1)
        curve, style = curves[optimizer], style_for(optimizer)
        ax.fill_between(curve["k"], np.minimum(curve["q10"], top), np.minimum(curve["q90"], top),
                        color=style["color"], alpha=0.2, linewidth=0, zorder=2)
        ax.plot(curve["k"], np.minimum(curve["mean"], top), color=style["color"], linestyle=style["linestyle"],
                linewidth=1.4, marker=style.get("marker"), markersize=2.5, zorder=3)
        clipped = ~np.isfinite(curve["mean"].to_numpy(float))
        ax.plot(curve["k"][clipped], np.full(clipped.sum(), top), marker="^", color=style["color"],
                linestyle="none", markersize=4, zorder=4, clip_on=False)
        if math.isfinite(line):
            ax.axhline(line, color="#444444", linewidth=0.7, linestyle=(0, (1, 2)), zorder=1)
        ax.set_title(style["label"] + (" (searching)" if optimizer in searching else ""), fontsize=7.5, pad=5)  # clear of the ^ markers on the top edge
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    fig.supxlabel("trials, drawn in random order from the study", fontsize=8)
    fig.supylabel("expected best train loss", fontsize=8)
    note = ("line: expected best; band: 10-90% of the best; ^: infinite (all k trials could diverge);\n"
            "dotted: 5% above the best final loss" + (f" ({style_for(reference[0])['label']})" if reference[0] else ""))
    fig.suptitle(f"{workload_of(dataset).label}: best train loss after k trials of the search\n{note}", fontsize=8)
    return fig


def _sensitivity_panel(ax, points: pd.DataFrame, title: str, xlabel: str) -> None:
    finite = points.loc[points["state"] != "diverged", "final"].to_numpy(float)
    _, top = _log_y(ax, finite)
    for optimizer in legend_sorted(points["optimizer"]):
        own, style = points[points["optimizer"] == optimizer].sort_values("multiplier"), style_for(optimizer)
        kw = {k: style[k] for k in ("color", "linestyle", "linewidth", "zorder") if k in style}
        good = own[own["state"] != "diverged"]  # a stalled point has a loss: drawn where it is, marked
        ax.plot(good["multiplier"], good["final"], label=style["label"], marker=style.get("marker"), markersize=3.5,
                **kw)
        on_plateau = own[own["state"] == "stalled"]
        ax.plot(on_plateau["multiplier"], on_plateau["final"], marker="v", color=style["color"], linestyle="none",
                markersize=6, markerfacecolor="none", markeredgewidth=1.0)
        diverged = own[own["state"] == "diverged"]
        ax.plot(diverged["multiplier"], np.full(len(diverged), top), marker="x", color=style["color"], linestyle="none",
                markersize=5, markeredgewidth=1.2, clip_on=False)
    ax.set_xscale("log", base=2)
    multipliers = sorted(set(points["multiplier"]))
    ax.xaxis.set_major_locator(FixedLocator([2.0 ** e for e in range(-3, 4)]))
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda m, _: f"1/{1 / m:g}" if m < 1 else f"{m:g}"))
    ax.set_xlim(min(multipliers) / 1.3, max(multipliers) * 1.3)
    ax.axvline(1.0, color="#999999", linewidth=0.5)
    ax.set_title(title)
    ax.set_xlabel(xlabel)


def sensitivity_figure(dataset: str, points: pd.DataFrame):
    """Final train loss against the multiplier of the learning rate (its role), and of LocoProp's
    gamma and inner steps, on one page."""
    lr = points[~points["knob"].isin(sensitivity.LOCOPROP_KNOBS)]
    panels = [(lr, "learning rate (K-FAC, FOOF: damping)", "multiplier of the winner's value")]
    for knob, words in (("optimizer.gamma", "LocoProp: gamma"), ("optimizer.inner_steps", "LocoProp: inner steps")):
        own = points[points["knob"] == knob]
        if len(own):
            panels.append((own, words, "multiplier (steps rounded, at least 1)" if "steps" in knob else "multiplier"))
    panels = [p for p in panels if len(p[0])]
    if not panels:
        return None
    widths = [2.0] + [1.0] * (len(panels) - 1)
    fig, axes = plt.subplots(1, len(panels), figsize=(FULL_WIDTH, 3.0), gridspec_kw={"width_ratios": widths},
                             squeeze=False)
    for ax, (own, title, xlabel) in zip(axes[0], panels):
        _sensitivity_panel(ax, own, title, xlabel)
    axes[0][0].set_ylabel("final train loss (seed 0)")
    handles = {}
    for ax in axes[0]:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    extra = [Line2D([], [], marker="x", color="#555555", linestyle="none", label="x: diverged (at the top edge)"),
             Line2D([], [], marker="v", color="#555555", markerfacecolor="none", linestyle="none",
                    label="v: stalled on the mean-image plateau")]
    fig.legend(list(handles.values()) + extra, list(handles) + [h.get_label() for h in extra], loc="upper center",
               bbox_to_anchor=(0.5, 0.0), ncol=5, frameon=False)
    fig.suptitle(f"{workload_of(dataset).label}: final train loss off the winner (seed 0)")
    fig.tight_layout()
    return fig


def _study_path(s: dict[str, Any]) -> str:
    return f"{s['dataset']}/tuning/{s['dataset']}/{s['optimizer']}.db"


def blocks(all_results: list, studies: list[dict[str, Any]], target_root: Path, draw: bool = True) -> dict[str, str]:
    """The docs/results.md blocks 'tuning-budget' and 'sensitivity' (and the figures when `draw`).
    `all_results`: the report's workloads (name, folder, runs, table)."""
    references = {r.name: best_final(r.table, r.name) for r in all_results}
    rows = tuning_budget.budget_rows(studies, references)
    budget_text = (tuning_budget.budget_markdown(rows, legend_sorted(rows["optimizer"])) if len(rows)
                   else "No study yet.")
    sections = []
    winners = {(s["dataset"], s["optimizer"]): (s.get("winner") or {}).get("params", {}) for s in studies}
    for results in sorted(all_results, key=lambda r: WORKLOAD_ORDER.index(r.name) if r.name in WORKLOAD_ORDER else 99):
        own_winners = {o: p for (d, o), p in winners.items() if d == results.name}
        points = sensitivity.sensitivity_points(results.folder, results.runs, own_winners, plateau_of(results.plateau, 0))
        with_winner = sorted(results.runs.loc[results.runs["seed"] == 0, "optimizer"].unique())
        text = (sensitivity.sensitivity_table(points) + "\n\n" if len(points) else "") + \
            sensitivity.sensitivity_verdict(points, with_winner)
        sections.append(f"**{results.label}**\n\n{text}")
        if draw:
            draw_workload(results.name, studies, references[results.name], points, target_root / results.name / "figures")
    return {"tuning-budget": budget_text, "sensitivity": "\n\n".join(sections)}


def draw_workload(dataset: str, studies: list[dict[str, Any]], reference: tuple[str | None, float],
                  points: pd.DataFrame, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    own = [s for s in studies if s["dataset"] == dataset and len(tuning_budget.trial_values(s))]
    budgets = {s["optimizer"]: (tuning_budget.trial_values(s), (s.get("protocol") or {}).get("trials")) for s in own}
    curves = {o: tuning_budget.budget_curve(values, budget) for o, (values, budget) in budgets.items()}
    running = [o for o, (values, budget) in budgets.items() if tuning_budget.searching(len(values), budget)]
    record: dict[str, Any] = {}
    with figure_style():
        fig = budget_figure(dataset, curves, reference, running)
        if fig is not None:
            files = save_figure(fig, out_dir, f"{dataset}_tuning_budget")
            record[f"{dataset}_tuning_budget"] = {"files": [p.name for p in files],
                                                  "studies": sorted(_study_path(s) for s in own)}
        fig = sensitivity_figure(dataset, points) if len(points) else None
        if fig is not None:
            files = save_figure(fig, out_dir, f"{dataset}_sensitivity")
            record[f"{dataset}_sensitivity"] = {"files": [p.name for p in files],
                                                "runs": sorted(set(points["run_path"]))}
    write_json(out_dir / "tuning_provenance.json", record)
