"""Statistics of the comparison: Student-t intervals, paired log-ratios, steps to a threshold.

Everything here is a pure function of the recorded numbers, so the report can be recomputed
from `results.json` alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.stats

__all__ = [
    "CONFIDENCE",
    "mean_ci",
    "paired_log_ratio",
    "paired_difference",
    "steps_to_threshold",
    "value_at_step",
]

CONFIDENCE = 0.95


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return x[np.isfinite(x)]


def _t_half_width(x: np.ndarray, confidence: float) -> float:
    n = x.size
    if n < 2:
        return math.nan
    sd = float(np.std(x, ddof=1))
    return float(scipy.stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Mean and Student-t confidence interval over seeds: mean ± t_{n-1} s / sqrt(n).

    Non-finite entries (and None) are left out; `n` counts the rest. With n < 2 the interval
    is undefined (NaN bounds); with identical values it collapses to the mean.
    """
    x = _finite(values)
    if x.size == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    m = float(np.mean(x))
    h = _t_half_width(x, confidence)
    return {"mean": m, "ci_low": m - h, "ci_high": m + h, "n": int(x.size)}


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> dict:
    """Mean of the per-seed differences a_s - b_s with its Student-t interval."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return mean_ci(a - b, confidence)


def paired_log_ratio(
    numerator: Sequence[float | None],
    denominator: Sequence[float | None],
    confidence: float = CONFIDENCE,
) -> dict:
    """Geometric-mean ratio numerator / denominator over paired seeds, with a CI.

    The per-seed log-ratios d_s = log(num_s / den_s) get a Student-t interval (the delta
    method on the log scale, exact for log-normal ratios), reported back on the ratio scale:
    ratio = exp(mean d), CI = exp(mean d ± t_{n-1} sd(d) / sqrt(n)). Seeds where either
    value is missing (threshold not reached) are left out and counted in `n_missing`.
    """
    pairs = [
        (float(x), float(y))
        for x, y in zip(numerator, denominator, strict=True)
        if x is not None and y is not None and np.isfinite(x) and np.isfinite(y) and x > 0 and y > 0
    ]
    d = np.log([x / y for x, y in pairs]) if pairs else np.zeros(0)
    out = {
        "ratio": math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "n": len(pairs),
        "n_missing": len(list(numerator)) - len(pairs),
    }
    if d.size:
        m, h = float(np.mean(d)), _t_half_width(d, confidence)
        out.update(ratio=math.exp(m), ci_low=math.exp(m - h), ci_high=math.exp(m + h))
    return out


def steps_to_threshold(
    steps: Sequence[float],
    values: Sequence[float],
    threshold: float,
    *,
    interpolate: bool = True,
) -> float | None:
    """First training step at which a lower-is-better curve is at or below `threshold`.

    The curve is read at its evaluations in order; the first one with value <= threshold
    counts. With `interpolate`, the crossing is placed between that evaluation and the one
    before it by linear interpolation of the value in log(step), which is how the
    evaluations are spaced. Returns None when no evaluation reaches the threshold.
    """
    steps = [float(s) for s in steps]
    values = [math.nan if v is None else float(v) for v in values]
    if len(steps) != len(values):
        raise ValueError(f"steps and values differ in length: {len(steps)} vs {len(values)}")
    for i, v in enumerate(values):
        if not (math.isfinite(v) and v <= threshold):
            continue
        if not interpolate or i == 0:
            return steps[i]
        v0, s0, s1 = values[i - 1], steps[i - 1], steps[i]
        if not math.isfinite(v0) or v0 <= v or s0 <= 0:
            return steps[i]
        frac = (v0 - threshold) / (v0 - v)
        return math.exp(math.log(s0) + frac * (math.log(s1) - math.log(s0)))
    return None


def value_at_step(
    steps: Sequence[float], values: Sequence[float], step: float | None
) -> float | None:
    """A recorded quantity (e.g. cumulative training seconds) at a fractional step, by linear
    interpolation between evaluations; None for None."""
    if step is None:
        return None
    return float(np.interp(step, np.asarray(steps, np.float64), np.asarray(values, np.float64)))
