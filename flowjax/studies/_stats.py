"""Statistics of a study: Student-t intervals, paired log ratios, steps to a threshold, verdicts.

Pure functions of recorded numbers, so every figure of a report can be recomputed from
`results.json` alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.stats

__all__ = [
    "CONFIDENCE",
    "VERDICTS",
    "censored_log_ratio",
    "mean_ci",
    "paired_difference",
    "paired_log_ratio",
    "ratio_to",
    "steps_to_threshold",
    "value_at_step",
    "verdict",
]

CONFIDENCE = 0.95
VERDICTS = ("supported", "not supported", "not significant")


def _floats(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def _t_half_width(x: np.ndarray, confidence: float) -> float:
    if x.size < 2:
        return math.nan
    t = float(scipy.stats.t.ppf(0.5 + confidence / 2, x.size - 1))
    return t * float(np.std(x, ddof=1)) / math.sqrt(x.size)


def mean_ci(values: Sequence[float | None], confidence: float = CONFIDENCE) -> dict:
    """{"values", "mean", "ci_low", "ci_high", "n"}: mean ± t_{n-1} s / sqrt(n) over seeds.

    Non-finite entries (and None) are left out; `n` counts the rest; `values` keeps them all.
    With n < 2 the interval is undefined (NaN bounds); identical values collapse it.
    """
    raw = _floats(values)
    x = np.asarray([v for v in raw if math.isfinite(v)], np.float64)
    out = {"values": raw, "mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    if x.size == 0:
        return out
    m, h = float(np.mean(x)), _t_half_width(x, confidence)
    out.update(mean=m, ci_low=m - h, ci_high=m + h, n=int(x.size))
    return out


def paired_difference(a: Sequence[float], b: Sequence[float], confidence=CONFIDENCE) -> dict:
    """`mean_ci` of the per-seed differences a_s - b_s."""
    return mean_ci(np.asarray(_floats(a)) - np.asarray(_floats(b)), confidence)


def paired_log_ratio(
    numerator: Sequence[float | None],
    denominator: Sequence[float | None],
    confidence: float = CONFIDENCE,
) -> dict:
    """Geometric-mean ratio numerator / denominator over paired seeds, with a CI.

    The per-seed log ratios d_s = log(num_s / den_s) get a Student-t interval, reported on
    the ratio scale: exp(mean d), exp(mean d ± t_{n-1} sd(d) / sqrt(n)). Seeds where either
    value is missing or not positive are left out and counted in `n_missing`.
    """
    num, den = _floats(numerator), _floats(denominator)
    if len(num) != len(den):
        raise ValueError(f"paired_log_ratio: {len(num)} numerators vs {len(den)} denominators")
    pairs = [(x, y) for x, y in zip(num, den, strict=True) if x > 0 and y > 0]
    pairs = [(x, y) for x, y in pairs if math.isfinite(x) and math.isfinite(y)]
    out = {"ratio": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": len(pairs)}
    out["n_missing"] = len(num) - len(pairs)
    if pairs:
        d = np.log([x / y for x, y in pairs])
        m, h = float(np.mean(d)), _t_half_width(d, confidence)
        out.update(ratio=math.exp(m), ci_low=math.exp(m - h), ci_high=math.exp(m + h))
    return out


def ratio_to(stats: dict, reference: float) -> dict:
    """A `mean_ci` cell divided by a fixed positive reference (e.g. the teacher's value)."""
    ok = math.isfinite(reference) and reference > 0
    scale = (lambda v: v / reference) if ok else (lambda v: math.nan)  # noqa: E731
    out = {k: scale(stats[k]) for k in ("ci_low", "ci_high")}
    return {"ratio": scale(stats["mean"]), **out, "n": stats["n"]}


def steps_to_threshold(
    steps: Sequence[float],
    values: Sequence[float | None],
    threshold: float,
    *,
    interpolate: bool = True,
) -> float | None:
    """First training step at which a lower-is-better curve is at or below `threshold`.

    With `interpolate`, the crossing is placed between that evaluation and the one before by
    linear interpolation of the value in log(step) (how evaluations are spaced). None when
    no evaluation reaches the threshold (a right-censored seed: see `censored_log_ratio`).
    """
    steps, values = [float(s) for s in steps], _floats(values)
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


def value_at_step(steps, values, step: float | None) -> float | None:
    """A recorded quantity (e.g. cumulative seconds) at a fractional step (linear); None: None."""
    if step is None:
        return None
    return float(np.interp(step, np.asarray(steps, np.float64), np.asarray(values, np.float64)))


def censored_log_ratio(
    numerator: Sequence[float | None], denominator: Sequence[float | None], last: float
) -> dict | None:
    """A one-sided bound on num / den when one side missed the threshold in some seeds.

    A seed that never reached the threshold is counted as reaching it at the last evaluation
    `last`, which can only favour it: if only the numerator side was censored the geometric
    mean ratio is a lower bound ("at least"), if only the denominator side an upper bound.
    None when no seed is censored on exactly one side, or when both sides are.

    Returns:
      {"bound", "kind" ("lower" or "upper"), "n_censored", "n"}.
    """
    num, den = list(numerator), list(denominator)
    one_sided = [(x is None) != (y is None) for x, y in zip(num, den, strict=True)]
    if not any(one_sided) or any(x is None and y is None for x, y in zip(num, den, strict=True)):
        return None
    num_cens = any(x is None for x, y, o in zip(num, den, one_sided, strict=True) if o)
    den_cens = any(y is None for x, y, o in zip(num, den, one_sided, strict=True) if o)
    if num_cens and den_cens:
        return None
    logs = [
        math.log((last if x is None else x) / (last if y is None else y))
        for x, y in zip(num, den, strict=True)
    ]
    return {
        "bound": math.exp(float(np.mean(logs))),
        "kind": "lower" if num_cens else "upper",
        "n_censored": sum(one_sided),
        "n": len(num),
    }


def verdict(claim: str, metric: str, stats: dict, *, threshold: float = 1.0, above: bool = True):
    """One entry of a dataset's `"verdicts"` list (the results schema of every study).

    The claim is "ratio > threshold" (above=True) or "ratio <= threshold" (above=False). It is
    "supported" when the whole 95% interval lies on the claimed side, "not supported" when it
    lies wholly on the other side, and "not significant" otherwise (or without an interval).

    Args:
      claim: the claim in words.
      metric: the metric the ratio is of.
      stats: {"ratio", "ci_low", "ci_high"} (from `paired_log_ratio` or `ratio_to`).
    """
    r, lo, hi = (float(stats.get(k, math.nan)) for k in ("ratio", "ci_low", "ci_high"))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        v = "not significant"
    elif (lo > threshold) if above else (hi <= threshold):
        v = "supported"
    elif (hi < threshold) if above else (lo > threshold):
        v = "not supported"
    else:
        v = "not significant"
    return {"claim": claim, "metric": metric, "ratio": r, "ci_low": lo, "ci_high": hi, "verdict": v}
