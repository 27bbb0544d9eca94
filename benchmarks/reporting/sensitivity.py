"""How much a winner loses off its optimum: runs of group `sensitivity` against the winner's seed 0.

Each sensitivity run is a winner's config with one optimizer setting changed (its learning rate, the
setting that plays that role, or one of LocoProp's own: gamma, inner steps). Which setting, and by
what multiplier, is read off the run itself: its config against the winner's setting (the study's
best parameters over the winner's seed-0 run in `final`, which also stands for a tuned config
without a study). The multiplier-1 point is that seed-0 run.

A point is 'finished', 'diverged' (no finite final loss; also a run that failed), or 'stalled':
finished without ever getting measurably below the workload's mean-image plateau, the same rule
as the comparison's (stalled) mark (`benchmarks.reporting.plateau`). An optimizer whose winner
stalled gets no verdict: a loss that stays on the plateau at every setting says nothing about
how hard the optimizer is to tune.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.tables import md_head, md_row
from benchmarks.optimizers import family_sorted, label
from benchmarks.results import load_runs, workload_of
from benchmarks.reporting.plateau import on_plateau

GROUP = "sensitivity"
TOLERANCE = 1e-9  # relative: a config value this close to the winner's is the winner's
KEEP = 0.10  # "within 10% of its best"
RANGE = (0.5, 2.0)  # the 4x range of a setting around the winner that the verdict asks about
SHOWN = (0.5, 2.0)  # multipliers always given a column; others (1/4, 4) where a run has them
KNOB_WORDS = {"optimizer.lr": "learning rate", "optimizer.damping": "damping (learning-rate role)",
              "optimizer.gamma": "gamma", "optimizer.inner_steps": "inner steps"}
LOCOPROP_KNOBS = ("optimizer.gamma", "optimizer.inner_steps")  # LocoProp's own settings; the rest play the lr's role
NOT_RUN = "not run yet"
POINT_COLUMNS = ["optimizer", "knob", "value", "winner_value", "multiplier", "nominal", "state", "final", "ratio",
                 "run_path"]


def _numbers(row: pd.Series) -> dict[str, float]:
    """The numeric optimizer settings of a run row ('optimizer.lr' -> 0.001)."""
    out = {}
    for column, value in row.items():
        if (column.startswith("cfg.optimizer.") and isinstance(value, (int, float, np.number))
                and not isinstance(value, (bool, np.bool_)) and math.isfinite(float(value))):
            out[column.removeprefix("cfg.")] = float(value)
    return out


def _state(status: str, final: float, best: float, plateau: float | None) -> str | None:
    if status == "diverged" or status == "failed" or (status == "finished" and not math.isfinite(final)):
        return "diverged"
    if status != "finished":
        return None  # stopped: still going, resumable
    return "stalled" if on_plateau(best, plateau) else "finished"


def nominal(multiplier: float) -> float:
    """The power of two nearest to a multiplier (log scale): inner steps are rounded to integers."""
    return float(2.0 ** round(math.log2(multiplier)))


def sensitivity_points(folder: Path, final_runs: pd.DataFrame, winners: dict[str, dict[str, Any]],
                       plateau: float | None = None) -> pd.DataFrame:
    """Every sensitivity run of one workload (`folder`: <root>/<dataset>) as a point: the setting it
    changed, its multiplier against the winner, its state and final train loss, its ratio to the
    winner's seed 0; plus each winner's own seed-0 point (multiplier 1) for every setting changed.
    `winners`: optimizer -> the study's best parameters ({} without a study); `plateau`: the
    workload's mean-image loss for seed 0 (None: no point is judged stalled)."""
    primary = workload_of(folder.name).primary_metric
    runs, _ = load_runs(folder, GROUP)
    if runs.empty:
        return pd.DataFrame(columns=POINT_COLUMNS)
    seed0 = final_runs[(final_runs["seed"] == 0)].drop_duplicates("optimizer").set_index("optimizer")

    def state(row: pd.Series) -> str | None:
        final = float(row.get(f"final_{primary}", math.nan))
        return _state(row["status"], final, float(row.get(f"best_{primary}", final)), plateau)
    points = []
    for _, run in runs.iterrows():
        optimizer = run["optimizer"]
        reference = _numbers(seed0.loc[optimizer]) if optimizer in seed0.index else {}
        reference.update({k: float(v) for k, v in winners.get(optimizer, {}).items()
                          if k.startswith("optimizer.") and isinstance(v, (int, float)) and not isinstance(v, bool)})
        own = _numbers(run)
        changed = [k for k, v in reference.items() if k in own and abs(own[k] - v) > TOLERANCE * max(abs(v), 1e-300)]
        if len(changed) != 1 or reference[changed[0]] == 0:
            warnings.warn(f"{run['run_path']}: not one setting changed from the winner's ({changed or 'none'}); left out")
            continue
        key = changed[0]
        point_state = state(run)
        if point_state is None:
            continue
        multiplier = own[key] / reference[key]
        points.append({"optimizer": optimizer, "knob": key, "value": own[key], "winner_value": reference[key],
                       "multiplier": multiplier, "nominal": nominal(multiplier), "state": point_state,
                       "final": float(run.get(f"final_{primary}", math.nan)), "run_path": run["run_path"]})
    frame = pd.DataFrame(points, columns=POINT_COLUMNS[:6] + ["state", "final", "run_path"])
    for (optimizer, key), _ in frame.groupby(["optimizer", "knob"]):
        if optimizer not in seed0.index:
            continue
        base = seed0.loc[optimizer]
        final = float(base[f"final_{primary}"])
        value = _numbers(base).get(key, math.nan)
        points.append({"optimizer": optimizer, "knob": key, "value": value, "winner_value": value, "multiplier": 1.0,
                       "nominal": 1.0, "state": state(base) or "finished",
                       "final": final, "run_path": base["run_path"]})
    out = pd.DataFrame(points, columns=POINT_COLUMNS[:6] + ["state", "final", "run_path"])
    healthy = out[(out["nominal"] == 1.0) & (out["state"] != "diverged")]  # no ratio to a diverged winner
    at_one = healthy.set_index(["optimizer", "knob"])["final"]
    out["ratio"] = [row["final"] / at_one.get((row["optimizer"], row["knob"]), math.nan)
                    for _, row in out.iterrows()]
    return out[POINT_COLUMNS].sort_values(["optimizer", "knob", "multiplier"]).reset_index(drop=True)


def _fraction(m: float) -> str:
    return f"1/{1 / m:g}" if m < 1 else f"{m:g}"


def ratio_text(ratio: float) -> str:
    """A loss ratio with two decimals, or more where two would print the 10% line itself (1.10),
    so that a reader sees which side of the line the verdict put it on."""
    line, digits = 1 + KEEP, 2
    while digits < 6 and ratio != line and f"{ratio:.{digits}f}" == f"{line:.{digits}f}":
        digits += 1
    return f"{ratio:.{digits}f}"


def _cell(point: pd.Series | None, knob: str) -> str:
    if point is None:
        return NOT_RUN
    if point["state"] == "diverged":
        return "diverged"
    ratio = point["ratio"]
    text = ratio_text(ratio) if math.isfinite(ratio) else f"{point['final']:.2f} (loss; the winner diverged)"
    if knob == "optimizer.inner_steps":
        text += f" ({int(point['value'])} steps)"
    return text + (" (stalled)" if point["state"] == "stalled" else "")


def sensitivity_table(points: pd.DataFrame, knobs: tuple[str, ...] | None = None) -> str:
    """Markdown: per optimizer and setting, the final train loss at the winner (x1) and the ratio
    of the loss at each multiplier to it; 'not run yet' where a run is missing."""
    if knobs is not None:
        points = points[points["knob"].isin(knobs)]
    multipliers = sorted(set(points["nominal"]) | set(SHOWN) | {1.0})
    head = ["optimizer", "setting"] + [f"x{_fraction(m)}" + (" (final train loss)" if m == 1 else "")
                                       for m in multipliers]
    lines = md_head(head)
    for optimizer in family_sorted(points["optimizer"]):
        own = points[points["optimizer"] == optimizer]
        for knob in sorted(own["knob"].unique(), key=lambda k: (k in LOCOPROP_KNOBS, k)):
            cells = [label(optimizer), KNOB_WORDS.get(knob, knob.removeprefix("optimizer."))]
            for m in multipliers:
                at = own[(own["knob"] == knob) & (own["nominal"] == m)]
                point = at.iloc[(at["multiplier"] - m).abs().argsort().iloc[0]] if len(at) else None
                if m == 1.0 and point is not None:
                    cells.append("diverged" if point["state"] == "diverged" else f"{point['final']:,.2f}"
                                 + (" (stalled)" if point["state"] == "stalled" else ""))
                else:
                    cells.append(_cell(point, knob))
            lines.append(md_row(cells))
    return "\n".join(lines)


def verdict_of(points: pd.DataFrame, optimizer: str, knob: str) -> tuple[str, str]:
    """(verdict, why): 'keeps' when the optimizer's final train loss stays within 10% of its best over
    the multipliers RANGE (a 4x range around the winner), 'loses' when not, 'pending' while a point
    of that range is missing, 'stalled' when the winner itself never left the mean-image plateau."""
    own = points[(points["optimizer"] == optimizer) & (points["knob"] == knob)]
    best = own.loc[own["state"] == "finished", "final"].min()
    for m in (RANGE[0], 1.0, RANGE[1]):
        if not (own["nominal"] == m).any():
            return "pending", f"x{_fraction(m)} not run yet"
    if own.loc[own["nominal"] == 1.0, "state"].iloc[0] == "stalled":
        return "stalled", ""
    for m in (1.0, RANGE[0], RANGE[1]):  # a winner that diverged says so first
        point = own[own["nominal"] == m].iloc[0]
        if point["state"] != "finished":
            return "loses", f"{point['state']} at x{_fraction(m)}"
        if point["final"] > (1 + KEEP) * best:
            return "loses", f"x{_fraction(m)} is {ratio_text(point['final'] / best)} x its best"
    return "keeps", ""


def sensitivity_verdict(points: pd.DataFrame, with_winner: list[str]) -> str:
    """Which optimizers keep within 10% of their best over a 4x range of their learning rate (and
    LocoProp over a 4x range of gamma and of its inner steps); `with_winner`: the optimizers with a
    seed-0 winner run, those without a sensitivity run named as such."""
    lines = []
    span = f"x{_fraction(RANGE[0])} to x{_fraction(RANGE[1])}"
    for title, knobs in (("learning rate (or the setting in its role)", None), ("LocoProp's gamma", ("optimizer.gamma",)),
                         ("LocoProp's inner steps", ("optimizer.inner_steps",))):
        chosen = points[~points["knob"].isin(LOCOPROP_KNOBS)] if knobs is None else points[points["knob"].isin(knobs)]
        if chosen.empty:
            continue
        named: dict[str, list[str]] = {"keeps": [], "loses": [], "pending": [], "stalled": []}
        for optimizer in family_sorted(chosen["optimizer"]):
            for knob in sorted(chosen.loc[chosen["optimizer"] == optimizer, "knob"].unique()):
                verdict, why = verdict_of(chosen, optimizer, knob)
                named[verdict].append(label(optimizer) + (f" ({why})" if why else ""))
        parts = [f"within {KEEP:.0%} of their best from {span}: " + (", ".join(named["keeps"]) or "none")]
        for key, words in (("loses", "not"), ("pending", "not settled"),
                           ("stalled", "no verdict, the winner itself stalled on the mean-image plateau")):
            if named[key]:
                parts.append(f"{words}: " + ", ".join(named[key]))
        lines.append(f"- {title[:1].upper() + title[1:]}, " + "; ".join(parts) + ".")
    if points.empty:
        return "No sensitivity run on this workload yet."
    missing = [o for o in family_sorted(with_winner) if o not in set(points["optimizer"])]
    if missing:
        lines.append("- No sensitivity run: " + ", ".join(label(o) for o in missing) + ".")
    return "\n".join(lines)
