"""The paper's comparison figures, drawn from the local run tables.

    python -m scripts.figures --results results --group default [--out DIR] [--time measured|bench]

Per dataset: train loss vs epoch, train loss vs wall-clock, test loss vs epoch, and a grid of
test reconstructions; across datasets: an overview of the curves (with a linear zoom on the best
finals) and the median time per step. For the reference comparison (`make report`) the paper's
optimizers and LocoProp's relatives get one figure and the modern family a companion, each with a
caption computed from the runs (machines, seeds, stand-in data, how time is priced).
Each line is one configuration (runs differing only in their seed), the mean over its seeds with
the min..max range shaded; a sweep's configurations get one line each, labelled by what differs.
Runs that diverged (or failed) are drawn on their own up to their last finite value, end in an
'x' (or a triangle at the top edge when that value lies above the healthy runs' range, which the
axis keeps) and are counted in the legend. `--time bench` puts steps x the ms/step of this
machine's quiet `make bench` table on the time axis instead of the measured seconds (which a loaded
machine inflates); the axis label says which. Every figure is saved as PNG and PDF through
benchmarks.figure_files (the same runs give the same bytes), and `provenance.json` lists the runs
and configs behind each figure.
"""
from __future__ import annotations

import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, ScalarFormatter  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.figure_files import figure_style, save_figure as save_files  # noqa: E402
from benchmarks.optimizers import legend_sorted  # noqa: E402
from benchmarks.results import (HEALTHY, WORKLOAD_ORDER, bench_device, bench_ms_per_step,  # noqa: E402
                                default_style, family_of, load_reconstructions, load_runs_or_explain, optimizer_info, optimizer_label, provenance, run_record,
                                setting_name, setting_text, varying_settings, workload_of, write_json)

COLUMN_WIDTH, FULL_WIDTH = 3.3, 6.8  # inches: one paper column, the full page width

_CONFIG_DASHES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 2)), (0, (4, 2, 1, 2, 1, 2)))
METRIC_LABELS = {"train_ce": "train cross-entropy (nats, summed over pixels)",
                 "test_ce": "test cross-entropy (nats, summed over pixels)",
                 "train_se": "train squared error (summed over pixels)",
                 "test_se": "test squared error (summed over pixels)"}
SHORT_METRIC_LABELS = {"train_ce": "train CE (nats)", "test_ce": "test CE (nats)", "train_se": "train SE",
                       "test_se": "test SE"}  # in the overview grid; CE and SE are sums over pixels
TIME_LABELS = {"measured": "training wall-clock (s, measured)",
               "bench": "training time (s): steps x bench ms/step"}


def style_for(optimizer: str) -> dict[str, Any]:
    """The optimizer's look in every figure: its config's `style` (or the family's default, see
    benchmarks.optimizers), its label; a name without a config gets the 'other' family's look."""
    try:
        info = optimizer_info(optimizer)
    except ValueError:
        info = {"label": optimizer, "style": default_style(optimizer, "other")}
    return {"label": info["label"], **info["style"]}


# labelled ticks per decade by the plotted span (max / min): dense ticks only on a short span, where
# the labels stay apart (on 50..600, 1..9 per decade made 70, 80, 90, 100 overlap)
LOG_TICKS = ((8.0, (1.0, 2.0, 5.0)), (2.5, (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)),
             (0.0, (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)))


def _log_axis(axis, values: np.ndarray) -> None:
    """Log scale with labelled ticks across the plotted range, written plainly (20, 50, 136)."""
    finite = values[np.isfinite(values) & (values > 0)]
    axis.axes.set_yscale("log") if axis is axis.axes.yaxis else axis.axes.set_xscale("log")
    span = finite.max() / finite.min() if finite.size else 10.0
    subs = next(subs for limit, subs in LOG_TICKS if span > limit)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    formatter = ScalarFormatter()
    formatter.set_scientific(False)
    axis.set_major_formatter(formatter)
    axis.set_minor_formatter(NullFormatter())


def _legend_below(ax, ncol: int = 2, extra: list | None = None) -> None:
    """Legend under the axes, so it never hides a curve (bbox_inches='tight' keeps it in the file)."""
    handles, labels = ax.get_legend_handles_labels()
    for handle in extra or []:
        handles.append(handle)
        labels.append(handle.get_label())
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=ncol, frameon=False,
              handlelength=2.2, columnspacing=1.0)


def _diverged_key() -> Line2D:
    """Legend entry explaining the 'x' that ends a diverged run's line."""
    return Line2D([], [], marker="x", color="#555555", linestyle="none", markersize=5,
                  label="x: diverged (last finite value)")


ABOVE_MARKER, ABOVE_GID = r"$\uparrow$", "diverged-above"  # a diverged run's end above the axis


def _above_key() -> Line2D:
    """Legend entry explaining the arrow on the top edge: a run that diverged above the axis."""
    return Line2D([], [], marker=ABOVE_MARKER, color="#555555", linestyle="none", markersize=6,
                  label="arrow on the top edge: diverged above the axis")


def _diverged_keys(axes: Iterable) -> list[Line2D]:
    """The legend entries for the diverged runs' marks drawn on these axes."""
    lines = [line for ax in axes for line in ax.get_lines()]
    keys = [_diverged_key()] if any(line.get_marker() == "x" for line in lines) else []
    return keys + ([_above_key()] if any(line.get_gid() == ABOVE_GID for line in lines) else [])


# ---------------------------------------------------------------- time axis


def with_bench_time(runs: pd.DataFrame, metrics: pd.DataFrame, bench: dict) -> pd.DataFrame:
    """metrics with wallclock_s replaced by epoch x steps per epoch x the bench's ms/step (NaN if unknown)."""
    seconds_per_epoch = {}
    for _, run in runs.iterrows():
        ms = bench.get((workload_of(run["dataset"]).architecture, run["optimizer"], int(run.get("cfg.batch_size", 1000) or 1000)))
        steps = run.get("steps_per_epoch")
        seconds_per_epoch[run["run_dir"]] = ms * steps / 1e3 if ms and steps == steps else np.nan
    out = metrics.copy()
    out["wallclock_s"] = out["epoch"] * out["run_dir"].map(seconds_per_epoch)
    return out


# ---------------------------------------------------------------- curves


def _wide(metrics: pd.DataFrame, column: str) -> pd.DataFrame:
    """epoch x run table of one column."""
    return metrics.pivot_table(index="epoch", columns="run_dir", values=column, aggfunc="first", dropna=False)


def _configs(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame, dict[str, Any]]]:
    """(label, runs, line style) per configuration, optimizers in palette order; several
    configurations of one optimizer share its colour and get different dashes."""
    out = []
    for optimizer in legend_sorted(runs["optimizer"]):
        own = runs[runs["optimizer"] == optimizer]
        ids = list(dict.fromkeys(own["config_id"]))
        for k, config_id in enumerate(ids):
            style = style_for(optimizer)
            cfg_runs = own[own["config_id"] == config_id]
            if len(ids) > 1:
                style = {**style, "linestyle": _CONFIG_DASHES[k % len(_CONFIG_DASHES)], "linewidth": 1.0}
            out.append((cfg_runs["config_label"].iloc[0], cfg_runs, style))
    return out


def plot_curves(ax, runs: pd.DataFrame, metrics: pd.DataFrame, y: str, x: str = "epoch") -> list[str]:
    """One line per configuration on `ax`: seed mean with min..max shading, diverged runs marked 'x'.

    Rows without the metric (epochs between full evaluations) are skipped. Against time, a
    point's x is the seeds' mean training time at that epoch. The y-range is the healthy runs'
    (see _mark_ends for the diverged ones). Returns the run directories drawn.
    """
    drawn: list[str] = []
    plotted: list[np.ndarray] = []  # the healthy runs' values: they set the y-range
    diverged: list[np.ndarray] = []
    ends: list[tuple[float, float, str]] = []  # (x, y, colour) of each diverged run's last finite value
    for label, own, style in _configs(runs):
        healthy = own[own["status"].isin(HEALTHY)]
        bad = own[~own["status"].isin(HEALTHY)]
        label = label + _failure_note(own)
        line_kw = {k: style[k] for k in ("color", "linestyle", "linewidth", "zorder")}
        if len(healthy):
            m = metrics[metrics["run_dir"].isin(healthy["run_dir"])]
            ys = _wide(m, y).replace([np.inf, -np.inf], np.nan).dropna(how="all")
            if len(ys):
                xs = ys.index.to_numpy(float) if x == "epoch" else _wide(m, x).loc[ys.index].mean(axis=1).to_numpy()
                ax.plot(xs, ys.mean(axis=1), label=label, **line_kw, **_markers(style, len(xs)))
                if ys.shape[1] > 1:
                    ax.fill_between(xs, ys.min(axis=1), ys.max(axis=1), color=style["color"], alpha=0.18,
                                    linewidth=0, zorder=line_kw["zorder"] - 1)
                plotted.append(ys.to_numpy(float).ravel())
                label = None
                drawn += list(healthy["run_dir"])
        for _, run in bad.iterrows():
            m = metrics[metrics["run_dir"] == run["run_dir"]]
            m = m[np.isfinite(m[y].to_numpy(float))]
            if not len(m):
                continue
            ax.plot(m[x], m[y], label=label, alpha=0.7, **{**line_kw, "linewidth": 0.8})
            ends.append((float(m[x].iloc[-1]), float(m[y].iloc[-1]), style["color"]))
            diverged.append(m[y].to_numpy(float))
            label = None
            drawn.append(run["run_dir"])
    if plotted or diverged:
        _log_axis(ax.yaxis, np.concatenate(plotted or diverged))
    top = _fit_to(ax, plotted) if plotted else np.inf
    _mark_ends(ax, ends, top)
    if x == "epoch":
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.set_xlabel(TIME_LABELS["bench" if x == "bench_s" else "measured"])
    ax.set_ylabel(METRIC_LABELS.get(y, y))
    ax.grid(True, which="major", linewidth=0.3, alpha=0.5)
    return drawn


def _fit_to(ax, plotted: list[np.ndarray]) -> float:
    """y-limits around the healthy runs' values (log axis, 5% margins), so a diverged run cannot
    stretch the axis; returns the top."""
    values = np.concatenate(plotted)
    values = values[np.isfinite(values) & (values > 0)]
    if not values.size:
        return np.inf
    low, high = float(values.min()), float(values.max())
    margin = (high / low) ** 0.05 if high > low else 1.1
    ax.set_ylim(low / margin, high * margin)
    return high * margin


def _mark_ends(ax, ends: list[tuple[float, float, str]], top: float) -> None:
    """The end of each diverged run: an 'x' at its last finite value, or, when that lies above the
    axis, a triangle on the top edge, the first of each colour labelled 'diverged'."""
    labelled = set()
    for x, y, color in ends:
        if y <= top:
            ax.plot(x, y, marker="x", color=color, markersize=5, markeredgewidth=1.2, linestyle="none", zorder=6)
            continue
        edge = ax.get_xaxis_transform()  # x in data, y in axes coordinates: the top edge at any zoom
        ax.plot(x, 1.0, marker=ABOVE_MARKER, color=color, markersize=6, linestyle="none", zorder=6, clip_on=False,
                transform=edge, gid=ABOVE_GID)
        if color not in labelled:
            labelled.add(color)
            ax.annotate("diverged", (x, 1.0), xycoords=edge, xytext=(4, -3), textcoords="offset points",
                        ha="left", va="top", fontsize=5.5, color=color, annotation_clip=False)


MARKERS_PER_LINE = 6


def _markers(style: dict[str, Any], n_points: int) -> dict[str, Any]:
    """The optimizer's marker on a few points of its line (the same look in every panel)."""
    if not style.get("marker"):
        return {}
    every = max(1, n_points // MARKERS_PER_LINE)
    return {"marker": style["marker"], "markersize": 3.5, "markevery": (every // 2, every), "markeredgewidth": 0.6}


def _failure_note(own: pd.DataFrame) -> str:
    """' (diverged k/n)' (and failed) for the legend, '' when every seed is healthy."""
    n = len(own)
    notes = [f"{status} {count}/{n}" for status, count in own["status"].value_counts().items()
             if status not in HEALTHY]
    return f" ({', '.join(sorted(notes))})" if notes else ""


def curve_figure(dataset: str, runs: pd.DataFrame, metrics: pd.DataFrame, y: str, x: str):
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.4))
    drawn = plot_curves(ax, runs, metrics, y, x)
    if not drawn:  # e.g. no bench figure for these runs' optimizers on the bench time axis
        plt.close(fig)
        print(f"{dataset}: nothing to draw for {y} against {x}", file=sys.stderr)
        return None, []
    ax.set_title(workload_of(dataset).label)
    _legend_below(ax, extra=_diverged_keys([ax]))
    return fig, drawn


LATE_TOP = 1.3  # the end-of-training view shows losses up to this multiple of the best final


def late_figure(dataset: str, runs: pd.DataFrame, metrics: pd.DataFrame, y: str, x: str):
    """The train curves on a linear axis from just below the lowest loss up to LATE_TOP x the best
    mean final: the full view spans the initial loss (545 on MNIST), which squeezes the leading
    methods, a few percent apart, into one line. Curves above the top leave the frame."""
    fig, drawn = curve_figure(dataset, runs, metrics, y, x)
    if fig is None:
        return None, []
    best = np.nanmin(final_scores(runs).to_numpy(float))
    if not np.isfinite(best):  # every configuration diverged: the full view says it all
        plt.close(fig)
        return None, []
    ax = fig.axes[0]
    lowest = ax.dataLim.y0  # lines and the seeds' min..max shading
    ax.set_yscale("linear")
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_ylim(0.98 * min(lowest, best), LATE_TOP * best)
    ax.set_title(f"{workload_of(dataset).label}\nzoom: up to {LATE_TOP:g} x the best final")
    return fig, drawn


def dataset_order(datasets: Iterable[str]) -> list[str]:
    """The paper's order (MNIST, FACES, CURVES; each stand-in beside its data set), others after."""
    known = [name for name in WORKLOAD_ORDER if name in set(datasets)]
    return known + sorted(set(datasets) - set(known))


ZOOM_FINALS = 4  # the overview's zoom reaches just above the mean final of the 4th best configuration


def zoom_panel(ax, runs: pd.DataFrame, metrics: pd.DataFrame, y: str) -> list[str]:
    """The healthy runs' train curves on a linear axis from just below the lowest loss to just above
    the ZOOM_FINALS-th best mean final: the log view spans the initial loss, where the leaders, a
    few percent apart, merge into one line. Curves above the top leave the frame."""
    healthy = runs[runs["status"].isin(HEALTHY)]
    finals = np.sort(final_scores(healthy).to_numpy(float).ravel()) if len(healthy) else np.array([])
    finals = finals[np.isfinite(finals)]
    drawn = plot_curves(ax, healthy, metrics, y, "epoch") if finals.size else []
    if not drawn:
        ax.set_visible(False)
        return []
    low = min(ax.dataLim.y0, finals[0])
    top = finals[min(ZOOM_FINALS, finals.size) - 1]
    span = max(top - low, 0.02 * top)
    ax.set_yscale("linear")
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
    ax.set_ylim(low - 0.05 * span, top + 0.15 * span)
    entering = [float(np.asarray(line.get_xdata(), float)[np.asarray(line.get_ydata(), float) <= top + 0.15 * span].min())
                for line in ax.get_lines() if (np.asarray(line.get_ydata(), float) <= top + 0.15 * span).any()]
    if entering:  # from the epoch the first curve enters the frame
        ax.set_xlim(max(0.0, min(entering) - 2), ax.dataLim.x1)
    ax.set_ylabel(SHORT_METRIC_LABELS.get(y, y) + ", zoom")
    return drawn


def overview_figure(runs: pd.DataFrame, metrics: pd.DataFrame, time_axis: str = "wallclock_s",
                    zoom: bool = False, caption: str | None = None):
    """Full-width grid: one row per dataset; train vs epoch, train vs time, test vs epoch (the
    paper's comparison figure when the runs span its three workloads); with `zoom`, a fourth column
    zooms on the best finals (zoom_panel); `caption` is printed under the grid."""
    datasets = dataset_order(runs["dataset"].unique())
    ncols = 4 if zoom else 3
    width = FULL_WIDTH * ncols / 3
    fig, axes = plt.subplots(len(datasets), ncols, figsize=(width, 1.9 * len(datasets) + 0.4), squeeze=False)
    drawn: list[str] = []
    for row, dataset in enumerate(datasets):
        r, m = runs[runs["dataset"] == dataset], metrics[metrics["dataset"] == dataset]
        panels = ((workload_of(dataset).primary_metric, "epoch"), (workload_of(dataset).primary_metric, time_axis),
                  (workload_of(dataset).test_metric, "epoch"))
        for col, (y, x) in enumerate(panels):
            drawn += plot_curves(axes[row, col], r, m, y, x)
            axes[row, col].set_ylabel(SHORT_METRIC_LABELS.get(y, y))
        if zoom:
            drawn += zoom_panel(axes[row, 3], r, m, workload_of(dataset).primary_metric)
        axes[row, 0].set_title(workload_of(dataset).label, loc="left")
    # one entry per configuration within a data set; across data sets an optimizer's tuned settings
    # differ, and it keeps one look, so one entry per optimizer
    per_dataset = max(runs.groupby(["dataset", "optimizer"])["config_id"].nunique(), default=1)
    entries = _configs(runs) if per_dataset > 1 else [(style_for(o)["label"], None, style_for(o))
                                                      for o in legend_sorted(runs["optimizer"])]
    handles = [Line2D([], [], label=label, markersize=3.5,
                      **{k: v for k, v in style.items() if k not in ("zorder", "label")})
               for label, _, style in entries]
    handles += _diverged_keys(axes.ravel())
    fig.tight_layout()
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5 if ncols == 3 else 6), frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    if caption:
        fig.text(0.005, 0.0, textwrap.fill(caption, width=int(width * 20)), ha="left", va="top", fontsize=6.5)
    return fig, sorted(set(drawn))


# ---------------------------------------------------------------- step time


def step_time_table(runs: pd.DataFrame, bench: dict | None = None) -> pd.DataFrame:
    """dataset x optimizer ms/step: the quiet bench's for each run's architecture, optimizer and batch
    (`bench`, see benchmarks.results.bench_ms_per_step), else the median over runs of each run's
    measured median (comparable only when the runs shared one machine and a quiet one)."""
    if bench is not None:
        rows = [{"dataset": r["dataset"], "optimizer": r["optimizer"],
                 "ms": bench.get((workload_of(r["dataset"]).architecture, r["optimizer"],
                                  int(r.get("cfg.batch_size", 1000) or 1000)), np.nan)} for _, r in runs.iterrows()]
        timed = pd.DataFrame(rows, columns=["dataset", "optimizer", "ms"]).dropna()
        if not len(timed):
            return pd.DataFrame()
        table = timed.pivot_table(index="dataset", columns="optimizer", values="ms", aggfunc="first")
        return table.loc[dataset_order(table.index), legend_sorted(table.columns)]
    timed = runs[np.isfinite(runs["step_ms_median"].to_numpy(float))] if "step_ms_median" in runs else runs[:0]
    if not len(timed):
        return pd.DataFrame()
    table = timed.pivot_table(index="dataset", columns="optimizer", values="step_ms_median", aggfunc="median")
    return table.loc[dataset_order(table.index), legend_sorted(table.columns)]


def step_time_figure(runs: pd.DataFrame, bench: dict | None = None, bench_device: str | None = None):
    """Bars of ms/step on a linear axis from zero, so the bar lengths are the ratios. With a bench
    table, its quiet timings of one machine (named on the axis); else the runs' measured medians,
    labelled as such (they mix machines and loads when the runs do)."""
    table = step_time_table(runs, bench)
    if table.empty:
        return None, []
    datasets, optimizers = list(table.index), list(table.columns)
    width = 0.8 / len(optimizers)
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH if len(datasets) <= 2 else FULL_WIDTH, 2.4))
    for i, optimizer in enumerate(optimizers):
        style = style_for(optimizer)
        positions = np.arange(len(datasets)) - 0.4 + width * (i + 0.5)
        ax.bar(positions, table[optimizer].to_numpy(float), width=width, color=style["color"],
               edgecolor="black" if optimizer.startswith("locoprop") else "none", linewidth=0.6,
               hatch=None if style["linestyle"] in ("-", "--") else "///", label=style["label"])
    ax.set_xticks(np.arange(len(datasets)), [workload_of(d).label for d in datasets])
    ax.set_ylim(bottom=0)
    if bench is not None:
        ax.set_ylabel("ms per step, quiet bench" + (f"\n({bench_device})" if bench_device else ""))
        used = runs["run_dir"]
    else:
        ax.set_ylabel("median ms per step, measured\n(runs' machines and loads)")
        used = runs[np.isfinite(runs["step_ms_median"].to_numpy(float))]["run_dir"]
    ax.grid(True, axis="y", linewidth=0.3, alpha=0.5)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=4, frameon=False)
    return fig, sorted(used)


# ---------------------------------------------------------------- reconstructions


def _display(images: np.ndarray, gaussian: bool) -> np.ndarray:
    """Map images to [0,1]: probabilities are clipped; real-valued (FACES) ones min-max scaled each."""
    images = np.nan_to_num(images.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if not gaussian:
        return np.clip(images, 0.0, 1.0)
    low = images.min(axis=1, keepdims=True)
    span = images.max(axis=1, keepdims=True) - low
    return (images - low) / np.where(span > 0, span, 1.0)


def _representative(own: pd.DataFrame) -> pd.Series:
    """The run whose reconstructions are shown: healthy before diverged, one that recorded its
    reconstructions before one that did not, then the lowest seed."""
    missing = [not (Path(d) / "reconstructions.npz").is_file() for d in own["run_dir"]]
    key = (~own["status"].isin(HEALTHY)).astype(int) * 10**9 + pd.Series(missing, index=own.index) * 10**6 + own["seed"]
    return own.loc[key.sort_values(kind="stable").index[0]]


def reconstruction_figure(dataset: str, runs: pd.DataFrame):
    """Top row: the first test images; then one row of reconstructions per configuration."""
    import torch
    from torchvision.utils import make_grid

    rows, labels, drawn, originals, shape = [], [], [], None, None
    for label, own, _ in _configs(runs):
        run = _representative(own)
        try:
            inputs, outputs, shape_i = load_reconstructions(Path(run["run_dir"]))
        except Exception as err:  # noqa: BLE001 - a missing or bad file only removes one row
            warnings.warn(f"no reconstructions for {run['run_dir']}: {err}")
            continue
        if originals is None:
            originals, shape = inputs, shape_i
            rows.append(inputs)
            labels.append("original")
        elif shape_i != shape or outputs.shape[0] != originals.shape[0]:
            warnings.warn(f"skipping reconstructions of {run['run_dir']}: shape differs from the first run's")
            continue
        elif not np.allclose(inputs, originals, equal_nan=True):
            warnings.warn(f"{run['run_dir']} reconstructs other test images than the first run (seeded test set?)")
        rows.append(outputs)
        labels.append(label + (" (" + run["status"] + ")" if run["status"] not in HEALTHY else ""))
        drawn.append(run["run_dir"])
    if originals is None:
        return None, []
    gaussian = workload_of(dataset).loss_kind == "gaussian"
    n, (h, w) = originals.shape[0], shape
    images = np.concatenate([_display(r, gaussian) for r in rows]).reshape(-1, 1, h, w)
    pad = 2
    grid = make_grid(torch.from_numpy(images).float(), nrow=n, padding=pad, pad_value=1.0)[0].numpy()
    fig_h = COLUMN_WIDTH * grid.shape[0] / grid.shape[1]
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, fig_h + 0.25))
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([pad + i * (h + pad) + h / 2 for i in range(len(labels))], labels, fontsize=6)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(workload_of(dataset).label + (" (each image rescaled to [0,1])" if gaussian else ""), fontsize=8)
    return fig, drawn


# ---------------------------------------------------------------- final losses


def final_scores(runs: pd.DataFrame) -> pd.DataFrame:
    """dataset x optimizer: mean over healthy seeds of the final primary train loss.

    With several configurations of an optimizer on a dataset, the best one (lowest mean) counts.
    An optimizer with no healthy seed on a dataset (all diverged or failed) scores inf; one that
    was not run on a dataset is NaN (left out of that dataset's comparison).
    """
    scores: dict[tuple[str, str], float] = {}
    for (dataset, optimizer), own in runs.groupby(["dataset", "optimizer"]):
        best = np.inf
        for _, cfg_runs in own.groupby("config_id"):
            healthy = cfg_runs[cfg_runs["status"].isin(HEALTHY)]
            values = healthy[f"final_{workload_of(dataset).primary_metric}"].to_numpy(float) if len(healthy) else np.array([])
            values = values[np.isfinite(values)]
            if len(values):
                best = min(best, float(values.mean()))
        scores[(dataset, optimizer)] = best
    table = pd.Series(scores).unstack()
    return table[legend_sorted(table.columns)]


# ---------------------------------------------------------------- ablations


def _mean_final(own: pd.DataFrame, dataset: str) -> float:
    healthy = own[own["status"].isin(HEALTHY)]
    values = healthy[f"final_{workload_of(dataset).primary_metric}"].to_numpy(float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else np.inf


def _natural(text: str) -> tuple:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def ablation_table(runs: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, str, str | None]:
    """One row per configuration: the ablated setting, a second varied setting if any (e.g. the
    learning rate paired with each inner optimizer), the mean final train loss, the config id."""
    if runs["optimizer"].nunique() > 1:  # e.g. LocoProp-S against LocoProp-M
        key, rows = "optimizer", []
        for (optimizer, config_id), own in runs.groupby(["optimizer", "config_id"]):
            rows.append({"setting": optimizer_label(optimizer), "second": None, "config_id": config_id,
                         "final": _mean_final(own, dataset)})
        return pd.DataFrame(rows), key, None
    varying = varying_settings(runs)
    if not varying:
        return pd.DataFrame(), "", None
    key, second = varying[0], (varying[1] if len(varying) > 1 else None)
    rows = []
    for config_id, own in runs.groupby("config_id"):
        first = own.iloc[0]
        rows.append({"setting": first[key], "second": first[second] if second else None, "config_id": config_id,
                     "final": _mean_final(own, dataset)})
    return pd.DataFrame(rows), setting_name(key), setting_name(second) if second else None


def ablation_figure(dataset: str, runs: pd.DataFrame, metrics: pd.DataFrame):
    """Left: the final train loss against the ablated setting (with a second varied setting, the
    best over it, said in the label). Right: the train curves of those configurations."""
    table, key, second = ablation_table(runs, dataset)
    if table.empty:
        return None, []
    if second:
        best = table.loc[table.groupby(table["setting"].astype(str))["final"].idxmin()]
    else:
        best = table
    values = list(best["setting"])
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0 for v in values)
    order = np.argsort(values) if numeric else sorted(range(len(values)), key=lambda i: _natural(setting_text(values[i])))
    best = best.iloc[order]
    fig, (left, right) = plt.subplots(1, 2, figsize=(FULL_WIDTH, 2.5))
    xs = best["setting"].to_numpy(float) if numeric else np.arange(len(best))
    left.plot(xs, best["final"].to_numpy(float), marker="o", color="#d62728")
    if second:  # every configuration, faintly, behind the best ones
        for _, row in table.iterrows():
            x = float(row["setting"]) if numeric else list(best["setting"].astype(str)).index(str(row["setting"]))
            left.plot(x, row["final"], marker=".", color="#999999", linestyle="none", zorder=1)
    if numeric and max(xs) / min(xs) > 5:
        left.set_xscale("log")
    if not numeric:
        left.set_xticks(xs, [setting_text(v) for v in best["setting"]])
    else:
        left.set_xticks(xs, [f"{v:g}" for v in xs])
        left.minorticks_off()
    finals = table["final"].to_numpy(float)
    _log_axis(left.yaxis, finals[np.isfinite(finals)])
    left.set_xlabel(key + (f" (best over {second}; grey: every {second})" if second else ""))
    left.set_ylabel("final " + METRIC_LABELS[workload_of(dataset).primary_metric])
    left.grid(True, linewidth=0.3, alpha=0.5)
    shown = runs[runs["config_id"].isin(best["config_id"])]
    drawn = plot_curves(right, shown, metrics[metrics["run_dir"].isin(shown["run_dir"])], workload_of(dataset).primary_metric)
    right.set_ylabel("")
    right.legend(loc="upper right", frameon=False, fontsize=5.5)
    fig.suptitle(f"{workload_of(dataset).label}: ablation of {key}", fontsize=9)
    fig.tight_layout()
    return fig, drawn


# ---------------------------------------------------------------- output


def save_figure(fig, out_dir: Path, name: str) -> list[Path]:
    """PNG + PDF through benchmarks.figure_files (atomic, no time stamps); prints each path."""
    paths = save_files(fig, out_dir / name)
    for path in paths:
        print(path)
    return paths


def make_figures(runs: pd.DataFrame, metrics: pd.DataFrame, out_dir: Path, results_dir: Path | None = None,
                 time: str = "measured", bench_dir: Path | None = None) -> dict[str, Any]:
    """Draw every figure into `out_dir`; returns {figure name: {files, runs}} for provenance.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {}
    time_axis, bench = "wallclock_s", None
    if time == "bench":
        bench = bench_ms_per_step(bench_dir or results_dir or "results")
        metrics = with_bench_time(runs, metrics, bench).assign(bench_s=lambda m: m["wallclock_s"])
        time_axis = "bench_s"

    def relative(paths: list[str]) -> list[str]:
        return sorted({Path(p).relative_to(results_dir).as_posix() if results_dir else p for p in paths})

    def emit(name: str, fig, drawn: list[str]) -> None:
        if fig is None:
            return
        files = save_figure(fig, out_dir, name)
        record[name] = {"files": [p.name for p in files], "runs": relative(drawn)}

    with figure_style():
        for dataset in dataset_order(runs["dataset"].unique()):
            r, m = runs[runs["dataset"] == dataset], metrics[metrics["dataset"] == dataset]
            primary = workload_of(dataset).primary_metric
            emit(f"{dataset}_train_vs_epoch", *curve_figure(dataset, r, m, primary, "epoch"))
            emit(f"{dataset}_train_vs_epoch_late", *late_figure(dataset, r, m, primary, "epoch"))
            emit(f"{dataset}_train_vs_time", *curve_figure(dataset, r, m, primary, time_axis))
            emit(f"{dataset}_train_vs_time_late", *late_figure(dataset, r, m, primary, time_axis))
            emit(f"{dataset}_test_vs_epoch", *curve_figure(dataset, r, m, workload_of(dataset).test_metric, "epoch"))
            emit(f"{dataset}_reconstructions", *reconstruction_figure(dataset, r))
        emit("overview", *overview_figure(runs, metrics, time_axis))
        emit("step_time", *step_time_figure(runs, bench, bench_device(bench_dir) if bench is not None else None))
    return record


REFERENCE_ROWS = 3  # the modern figure's reference: the paper field's best rows on each workload


def is_modern(optimizers: pd.Series) -> pd.Series:
    """The modern family (absent from the paper), drawn and ranked apart from the paper's field."""
    return optimizers.map(lambda name: family_of(name) == "modern")


def field_best(runs: pd.DataFrame, n: int = REFERENCE_ROWS) -> dict[str, list[str]]:
    """dataset -> the n optimizers of the paper's field (every family but the modern one) with the
    lowest mean final train loss, best first."""
    field = runs[~is_modern(runs["optimizer"])]
    scores = final_scores(field) if len(field) else pd.DataFrame()
    return {dataset: list(row.dropna().sort_values(kind="stable").index[:n]) for dataset, row in scores.iterrows()}


def comparison_runs(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The runs of each comparison figure: the paper's optimizers with LocoProp's relatives; the
    modern family with, for reference, the field's best rows on each workload."""
    modern = is_modern(runs["optimizer"])
    best = field_best(runs)
    reference = pd.Series([o in best.get(d, []) for d, o in zip(runs["dataset"], runs["optimizer"])], index=runs.index)
    return {"paper_comparison": runs[~modern], "modern_comparison": runs[modern | reference] if modern.any() else runs[:0]}


def _seeds_text(runs: pd.DataFrame) -> str:
    """'3 seeds per row', or the common count and the rows that differ."""
    counts = runs.groupby(["dataset", "optimizer"])["seed"].nunique()
    common = int(counts.mode().iloc[0])
    odd = [f"{optimizer_label(o)} on {workload_of(d).label}: {k}" for (d, o), k in counts.items() if k != common]
    return f"{common} seeds per row" + (f" (except {'; '.join(odd)})" if odd else "")


def comparison_captions(runs: pd.DataFrame, bench_path: Path) -> dict[str, str]:
    """The caption of each comparison figure, from the runs and the bench table: the machines, the
    seeds per row, real or stand-in data per workload, how time is priced, what the marks mean."""
    datasets = dataset_order(runs["dataset"].unique())
    data = []
    for dataset in datasets:
        w = workload_of(dataset)
        data.append(f"{w.label}: a generated stand-in for {workload_of(w.stand_in_for).label}" if w.stand_in_for
                    else f"{w.label}: the real data set" if w.paper else w.label)
    devices = sorted({str(d) for d in runs["device"].dropna()}) if "device" in runs else []
    models = runs["cpu_model"].dropna().nunique() if "cpu_model" in runs else 0
    common = (f"Runs: {', '.join(devices) or 'device not recorded'}"
              + (f" on {models} CPU model{'s' if models != 1 else ''} (provenance in docs/results.md)" if models else "")
              + f"; data: {'; '.join(data)}. Time: epochs x steps per epoch x the quiet bench's ms/step of one "
              f"machine for every workload, {bench_device(bench_path)} ({Path(bench_path).name}), not measured "
              f"seconds. Last column: a linear zoom up to the {ZOOM_FINALS}th best mean final. "
              "x: a diverged run's last finite value; arrow on the top edge: diverged above the axis, which "
              "keeps the range of the healthy runs.")
    split = comparison_runs(runs)
    captions = {}
    field = split["paper_comparison"]
    if len(field):
        captions["paper_comparison"] = (f"The paper's optimizers and LocoProp's relatives; a line is the mean over "
                                        f"{_seeds_text(field)}, the band their min..max. " + common)
    modern = split["modern_comparison"]
    if len(modern):
        names = ", ".join(optimizer_label(o) for o in legend_sorted(modern.loc[is_modern(modern["optimizer"]), "optimizer"]))
        reference = "; ".join(f"{workload_of(d).label}: {', '.join(optimizer_label(o) for o in best)}"
                              for d, best in sorted(field_best(runs).items(), key=lambda kv: datasets.index(kv[0]))
                              if best)
        captions["modern_comparison"] = (f"The modern optimizers, absent from the paper ({names}), with the "
                                         f"{REFERENCE_ROWS} best rows of the paper's field on each workload for "
                                         f"reference ({reference}); a line is the mean over {_seeds_text(modern)}, "
                                         "the band their min..max. " + common)
    return captions


def make_comparison_figures(runs: pd.DataFrame, metrics: pd.DataFrame, out_dir: Path,
                            bench_path: Path) -> dict[str, Any]:
    """Across workloads: the paper's comparison figure (a row per workload: train loss against
    epochs and against bench time, test loss against epochs, a zoom on the best finals) for the
    paper's field, its companion for the modern family, and the bench's step times. Time is steps x
    the quiet bench's ms/step of one machine; each comparison figure carries its caption."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bench = bench_ms_per_step(bench_path)
    metrics = with_bench_time(runs, metrics, bench).assign(bench_s=lambda m: m["wallclock_s"])
    paths = dict(zip(runs["run_dir"], runs["dataset"] + "/" + runs["run_path"]))
    captions = comparison_captions(runs, bench_path)
    split = comparison_runs(runs)
    drawers = {name: (lambda name=name: overview_figure(split[name], metrics, "bench_s", zoom=True,
                                                        caption=captions[name]))
               for name in ("paper_comparison", "modern_comparison") if name in captions}
    drawers["step_time"] = lambda: step_time_figure(runs, bench, bench_device(bench_path))
    record: dict[str, Any] = {}
    with figure_style():
        for name, draw in drawers.items():
            fig, drawn = draw()
            if fig is not None:
                record[name] = {"files": [p.name for p in save_figure(fig, out_dir, name)],
                                "runs": sorted(paths.get(r, str(r)) for r in drawn)}
                if name in captions:
                    record[name]["caption"] = captions[name]
    return record


def make_ablation_figures(runs: pd.DataFrame, metrics: pd.DataFrame, out_dir: Path,
                          results_dir: Path | None = None) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {}
    with figure_style():
        for dataset in sorted(runs["dataset"].unique()):
            r, m = runs[runs["dataset"] == dataset], metrics[metrics["dataset"] == dataset]
            fig, drawn = ablation_figure(dataset, r, m)
            if fig is not None:
                files = save_figure(fig, out_dir, f"{dataset}_ablation")
                record[f"{dataset}_ablation"] = {
                    "files": [p.name for p in files],
                    "runs": sorted({Path(p).relative_to(results_dir).as_posix() if results_dir else p for p in drawn})}
    return record


def draw_group(results: str | Path, group: str, out: str | Path | None = None, time: str = "measured",
               bench: str | Path | None = None, ablation: bool = False) -> Path | None:
    """Draw the figures of one group of runs and their provenance.json; None when it has no runs."""
    loaded = load_runs_or_explain(results, group)
    if loaded is None:
        return None
    runs, metrics = loaded
    out_dir = Path(out) if out else Path(results) / "figures" / group
    if ablation:
        record = make_ablation_figures(runs, metrics, out_dir, Path(results))
    else:
        record = make_figures(runs, metrics, out_dir, Path(results), time, Path(bench) if bench else None)
    info = {"provenance": provenance(runs), "group": group, "time_axis": time,
            "figures": record, "runs": run_record(runs)}
    write_json(out_dir / "provenance.json", info)
    return out_dir / "provenance.json"
