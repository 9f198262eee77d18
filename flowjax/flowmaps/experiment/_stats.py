"""Statistics of the experiment: Student-t intervals and ratios to the teacher.

Pure functions of recorded numbers, so every figure of the report can be recomputed from
`results.json` alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.stats

__all__ = ["CONFIDENCE", "mean_ci", "teacher_ratios", "format_ratio"]

CONFIDENCE = 0.95


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """{"values", "mean", "ci_low", "ci_high", "n"}: mean ± t_{n-1} s / sqrt(n) over the
    finite values (NaN bounds with fewer than 2)."""
    raw = [float(v) if v is not None else math.nan for v in values]
    x = np.asarray([v for v in raw if math.isfinite(v)], np.float64)
    out = {"values": raw, "mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    if x.size == 0:
        return out
    mean = float(np.mean(x))
    half = math.nan
    if x.size >= 2:
        t = float(scipy.stats.t.ppf(0.5 + confidence / 2, x.size - 1))
        half = t * float(np.std(x, ddof=1)) / math.sqrt(x.size)
    out.update(mean=mean, ci_low=mean - half, ci_high=mean + half, n=int(x.size))
    return out


def format_ratio(ratio: float) -> str:
    """How a ratio to the teacher is printed in the report (e.g. "1.234x")."""
    return "n/a" if not math.isfinite(ratio) else f"{ratio:.3f}x"


def _ratio(value: float, teacher: float) -> float:
    if not (math.isfinite(value) and math.isfinite(teacher)) or teacher <= 0:
        return math.nan
    return value / teacher


def teacher_ratios(dataset: Mapping, targets: Mapping[str, float]) -> dict:
    """Each method's mean `ratio_metric` at 1 and 2 steps over the teacher's (>= 100 NFE).

    Args:
      dataset: one dataset of results.json: needs "ratio_metric", "teacher" {"metrics",
        "nfe"} and "methods" {name: {"nfe": {"1": {metric: {"mean", "ci_low", "ci_high"}}}}}.
      targets: {"one_step": 1.15, "two_step": 1.05}, the issue's targets.

    Returns:
      {"metric", "teacher_value", "teacher_nfe", "per_method": {name: {"1", "2"}},
       "best_one_step": {...}, "two_step_of_best": {...}, "best_two_step": {...}} where each
      entry is {"method", "steps", "value", "ratio", "ratio_ci_low", "ratio_ci_high",
      "target", "met"} and "met" means ratio <= target.
    """
    metric = dataset["ratio_metric"]
    teacher = float(dataset["teacher"]["metrics"][metric])
    per_method = {}
    for name, m in dataset["methods"].items():
        per_method[name] = {
            steps: _ratio(float(m["nfe"][steps][metric]["mean"]), teacher)
            for steps in ("1", "2")
            if steps in m["nfe"]
        }

    def entry(name, steps, target):
        cell = dataset["methods"][name]["nfe"][steps][metric]
        ratio = _ratio(float(cell["mean"]), teacher)
        return {
            "method": name,
            "steps": int(steps),
            "value": float(cell["mean"]),
            "ratio": ratio,
            "ratio_ci_low": _ratio(float(cell["ci_low"]), teacher),
            "ratio_ci_high": _ratio(float(cell["ci_high"]), teacher),
            "target": float(target),
            "met": bool(math.isfinite(ratio) and ratio <= target),
        }

    def best(steps):
        cands = [
            (r[steps], n) for n, r in per_method.items() if math.isfinite(r.get(steps, math.nan))
        ]
        return min(cands)[1] if cands else None

    out = {
        "metric": metric,
        "teacher_value": teacher,
        "teacher_nfe": dataset["teacher"].get("nfe"),
        "per_method": per_method,
    }
    b1, b2 = best("1"), best("2")
    out["best_one_step"] = entry(b1, "1", targets["one_step"]) if b1 else None
    out["two_step_of_best"] = (
        entry(b1, "2", targets["two_step"]) if b1 and "2" in per_method[b1] else None
    )
    out["best_two_step"] = entry(b2, "2", targets["two_step"]) if b2 else None
    return out
