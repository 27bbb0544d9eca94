"""How many trials a search needs: the expected best objective after k trials of a study.

The estimator of "Show Your Work" (Dodge et al., 2019), for a loss (lower is better): the study's
n trial values, drawn k at a time without replacement in random order; the best of the k is the
i-th smallest value with probability C(n - i, k - 1) / C(n, k). Its mean, spread and quantiles
follow exactly from that distribution (no sampling), so the curves are a function of the study.

What a trial counts as (`trial_values`): a complete trial its objective; a pruned trial the last
running loss it reported (what the search saw when it stopped it); a diverged trial, or one whose
training raised an error, +inf (no usable model: with k trials that may all diverge, the expected
best is infinite, and figures clip it at the axis edge). A trial whose worker was lost is left out:
its retry, run with the same setting, counts once. Trials still running are not counted.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

from benchmarks.results import WORKLOAD_ORDER, optimizer_label, workload_of
from benchmarks.tables import DASH, md_head, md_row

WITHIN = 0.05  # "within 5%": a value at most this fraction above the reference
NEVER = "never within budget"


def min_distribution(values: Iterable[float], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted values, probability that each is the best of k drawn without replacement)."""
    v = np.sort(np.asarray(list(values), dtype=np.float64))
    n = len(v)
    if not 1 <= k <= n:
        raise ValueError(f"k={k}: the best of k trials needs 1 <= k <= n={n}")
    total = math.comb(n, k)
    p = np.array([math.comb(n - i, k - 1) / total for i in range(1, n + 1)], dtype=np.float64)
    return v, p


def expected_min(values: Iterable[float], k: int) -> float:
    """E[min of k drawn without replacement]; +inf when the k could all be +inf."""
    v, p = min_distribution(values, k)
    used = p > 0
    return float(np.sum(v[used] * p[used]))


def std_min(values: Iterable[float], k: int) -> float:
    """Standard deviation of the min of k drawn without replacement (+inf when its mean is)."""
    v, p = min_distribution(values, k)
    used = p > 0
    mean = float(np.sum(v[used] * p[used]))
    if not math.isfinite(mean):
        return math.inf
    return math.sqrt(float(np.sum(p[used] * (v[used] - mean) ** 2)))


def quantile_min(values: Iterable[float], k: int, q: float) -> float:
    """The q-quantile of the min of k: the smallest value v with P(min <= v) >= q."""
    if not 0 < q <= 1:
        raise ValueError(f"q={q}: a quantile needs 0 < q <= 1")
    v, p = min_distribution(values, k)
    cumulative = np.cumsum(p)
    return float(v[min(int(np.searchsorted(cumulative, q - 1e-12)), len(v) - 1)])


def budget_curve(values: Iterable[float], budget: int | None = None) -> pd.DataFrame:
    """Per k = 1..min(budget, n): the expected best, its standard deviation and its 10-90% band."""
    values = list(values)
    top = len(values) if budget is None else min(int(budget), len(values))
    rows = [{"k": k, "mean": expected_min(values, k), "std": std_min(values, k),
             "q10": quantile_min(values, k, 0.1), "q90": quantile_min(values, k, 0.9)} for k in range(1, top + 1)]
    return pd.DataFrame(rows, columns=["k", "mean", "std", "q10", "q90"])


def trial_values(study: dict[str, Any]) -> np.ndarray:
    """The value each ended trial of a study (a `benchmarks.results.read_studies` record) counts
    by: see the module's docstring."""
    out = []
    for t in study["trials"]:
        if t["state"] == "COMPLETE":
            out.append(float(t["value"]))
        elif t["state"] == "PRUNED":
            last = t.get("last_value")
            reached = t.get("status") != "diverged" and last is not None and math.isfinite(last)
            out.append(float(last) if reached else math.inf)
        elif t["state"] == "FAIL" and not t["lost"]:
            out.append(math.inf)
    return np.asarray(out, dtype=np.float64)


def trials_to_reach(curve: pd.DataFrame, reference: float, within: float = WITHIN) -> int | None:
    """The fewest trials whose expected best is within `within` of `reference` (None: never in the curve)."""
    if not math.isfinite(reference):
        return None
    hit = curve[curve["mean"] <= reference * (1 + within)]
    return int(hit["k"].iloc[0]) if len(hit) else None


def sampler_of(study: dict[str, Any]) -> str:
    """Which sampler drew the study's trials, read from the trials (enqueued ones drew nothing):
    'keyed', 'count-seeded' (the same stream in every study: common random numbers), or
    'mixed (a count-seeded, then b keyed)'."""
    drawn = [t for t in study["trials"] if not t["enqueued"]]
    old = sum(t["sampler"] is None for t in drawn)
    if old == 0:
        return "keyed"
    if old == len(drawn):
        return "count-seeded"
    return f"mixed ({old} count-seeded, then {len(drawn) - old} keyed)"


def searching(trials: int, budget: int | None) -> bool:
    """A study with fewer ended trials than its budget is still searching: its curve is too short to
    say how many trials the search needs."""
    return trials == 0 or (budget is not None and trials < int(budget))


def budget_rows(studies: Iterable[dict[str, Any]], best_final: dict[str, tuple[str, float]]) -> pd.DataFrame:
    """One row per study: its trials, its own best, and the trials needed to come within 5% of it
    and of the workload's best final loss (`best_final`: data set -> (optimizer, mean final loss));
    no count for a study still searching."""
    rows = []
    for s in studies:
        values = trial_values(s)
        budget = (s.get("protocol") or {}).get("trials")
        final_name, final = best_final.get(s["dataset"], (None, math.nan))
        row = {"dataset": s["dataset"], "optimizer": s["optimizer"], "sampler": sampler_of(s), "trials": len(values),
               "budget": budget, "searching": searching(len(values), budget), "diverged": int(np.isinf(values).sum()),
               "own_best": float(values.min()) if len(values) else math.nan, "to_own_best": None,
               "best_final_optimizer": final_name, "best_final": final, "to_best_final": None}
        if len(values) and not row["searching"]:
            curve = budget_curve(values, budget)
            row.update(to_own_best=trials_to_reach(curve, row["own_best"]), to_best_final=trials_to_reach(curve, final))
        rows.append(row)
    return pd.DataFrame(rows)


def _trials_text(k: float | None) -> str:
    return NEVER if k is None or pd.isna(k) else str(int(k))


def budget_markdown(rows: pd.DataFrame, order: list[str]) -> str:
    """The table (one row per study, data sets in the paper's order, optimizers in `order`) and,
    per data set, the best final loss it is measured against, the fewest trials to reach it, and
    which studies were drawn with common random numbers."""
    head = ["data set", "optimizer", "sampler", "trials (diverged)", "study's best",
            "trials to within 5% of it", "trials to within 5% of the best final loss"]
    lines = md_head(head)
    rank = {name: i for i, name in enumerate(order)}
    rows = rows.assign(_w=[WORKLOAD_ORDER.index(d) if d in WORKLOAD_ORDER else len(WORKLOAD_ORDER) for d in rows["dataset"]],
                       _o=[rank.get(o, len(rank)) for o in rows["optimizer"]]).sort_values(["_w", "_o", "optimizer"])
    notes = []
    for dataset, own in rows.groupby("dataset", sort=False):
        label = workload_of(dataset).label
        for _, r in own.iterrows():
            best = f"{r['own_best']:,.2f}" if math.isfinite(r["own_best"]) else "every trial diverged"
            if r["searching"]:
                trials = f"{r['trials']}" + (f" of {r['budget']}" if r["budget"] else "") + f" ({r['diverged']}), searching"
                best = f"{best} so far" if r["trials"] else "no trial ended yet"
                lines.append(md_row([label, optimizer_label(r["optimizer"]), r["sampler"], trials, best, DASH, DASH]))
                continue
            lines.append(md_row([label, optimizer_label(r["optimizer"]), r["sampler"],
                                 f"{r['trials']} ({r['diverged']})", best,
                                 _trials_text(r["to_own_best"]), _trials_text(r["to_best_final"])]))
        first = own.iloc[0]
        sentence = f"- {label}: measured against the best mean final train loss, {optimizer_label(first['best_final_optimizer'])}'s"
        sentence += f" {first['best_final']:,.2f}" if math.isfinite(first["best_final"]) else " (none yet)"
        reached = own.dropna(subset=["to_best_final"])
        if len(reached):
            fewest = int(reached["to_best_final"].min())
            names = [optimizer_label(o) for o in reached.loc[reached["to_best_final"] == fewest, "optimizer"]]
            sentence += f"; fewest trials to within 5% of it: {', '.join(names)} ({fewest})"
        never = [optimizer_label(o) for o in own.loc[own["to_best_final"].isna() & ~own["searching"], "optimizer"]]
        if never:
            sentence += f"; {NEVER}: {', '.join(never)}"
        running = [f"{optimizer_label(r['optimizer'])} ({r['trials']} of {r['budget']} trials)"
                   for _, r in own[own["searching"]].iterrows()]
        if running:
            sentence += f"; still searching, so not counted: {', '.join(running)}"
        shared = [optimizer_label(o) for o in own.loc[own["sampler"] != "keyed", "optimizer"]]
        if shared:
            sentence += (f". Drawn wholly or partly by the count-seeded sampler (the same random stream in every "
                         f"study, so these curves are not independent of each other): {', '.join(shared)}")
        notes.append(sentence + ".")
    return "\n".join(lines) + "\n\n" + "\n".join(notes)
