"""Is a gap between two optimizers larger than seed noise? The test that matches how seeds were drawn.

Where a run's seed draws the data (the generated stand-ins), seed k of every optimizer trains on the
same data, so two optimizers' runs are paired by seed and compared with a paired t-test: the data's
share of the variation cancels. Where the data is fixed (MNIST's files) and the seed draws only the
initialisation and the batch order, the seeds of two optimizers are independent samples: Welch's
t-test. Every verdict names the test it used.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

PAIRED, WELCH = "paired t-test by seed", "Welch's t-test"


def _finite(values: Mapping[int, float]) -> dict[int, float]:
    return {int(k): float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


def welch_p(a: Mapping[int, float], b: Mapping[int, float]) -> float:
    """Two-sided p of Welch's t-test on the finite values (NaN with fewer than two on a side)."""
    from scipy import stats

    x, y = np.array(list(_finite(a).values())), np.array(list(_finite(b).values()))
    if len(x) < 2 or len(y) < 2:
        return math.nan
    if np.var(x, ddof=1) == 0 and np.var(y, ddof=1) == 0:
        return 0.0 if x.mean() != y.mean() else 1.0
    return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


def paired_p(a: Mapping[int, float], b: Mapping[int, float]) -> float:
    """Two-sided p of the paired t-test over the seeds both sides finished (NaN with fewer than two)."""
    from scipy import stats

    x, y = _finite(a), _finite(b)
    seeds = sorted(set(x) & set(y))
    if len(seeds) < 2:
        return math.nan
    diff = np.array([x[s] - y[s] for s in seeds])
    if np.var(diff, ddof=1) == 0:
        return 0.0 if diff.mean() != 0 else 1.0
    return float(stats.ttest_rel([x[s] for s in seeds], [y[s] for s in seeds]).pvalue)


def seed_test(a: Mapping[int, float], b: Mapping[int, float], paired: bool) -> tuple[float, str]:
    """(p, the test's name): paired by seed when the seeds share data, Welch's otherwise."""
    return (paired_p(a, b), PAIRED) if paired else (welch_p(a, b), WELCH)


def gap_standard_error(a: Mapping[int, float], b: Mapping[int, float], paired: bool) -> float:
    """The standard error of the difference of means that the chosen test uses."""
    x, y = _finite(a), _finite(b)
    if paired:
        seeds = sorted(set(x) & set(y))
        if len(seeds) < 2:
            return math.nan
        diff = np.array([x[s] - y[s] for s in seeds])
        return float(diff.std(ddof=1) / math.sqrt(len(diff)))
    if len(x) < 2 or len(y) < 2:
        return math.nan
    vx, vy = np.var(list(x.values()), ddof=1), np.var(list(y.values()), ddof=1)
    return float(math.sqrt(vx / len(x) + vy / len(y)))
