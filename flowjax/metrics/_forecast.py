"""Probabilistic forecast metrics with the GluonTS definitions (so numbers compare with tables).

Forecasts are samples (N, S, H) or (N, S, H, C) of N series (or test windows), S sample paths,
horizon H and C channels; targets (N, H) or (N, H, C), on the original scale. Channels count as
separate series (as GluonTS' MultivariateEvaluator aggregates its per-dimension metrics); the
`crps_sum` of multivariate data scores the channel sums. Point metrics use the median forecast
(the mean for NRMSE), exactly as `gluonts.evaluation.Evaluator` does:

    crps   mean_wQuantileLoss = mean_q [sum 2 |(y - q_hat)(1{y <= q_hat} - q)| / sum |y|]
           over q = 0.1 .. 0.9, q_hat the nearest-rank sample quantile
           sorted_samples[round((S - 1) q)] (GluonTS SampleForecast.quantile);
    nd     sum |y - median| / sum |y|;
    nrmse  sqrt(mean_i MSE_i) / mean_i mean|y_i|, MSE_i of the mean forecast;
    mase   mean_i [mean|y_i - median_i| / mean_t |z_t - z_{t-m}|], z_i the in-sample past,
           m the season (1 where m >= len(z); Hyndman & Koehler 2006);
    smape  mean_i 2 mean(|y - median| / (|y| + |median|));
    crps_sum  crps of sum_c y against sum_c samples (Salinas et al. 2019, "CRPS-sum");
    crps_energy  sum of the exact sample CRPS E|X - y| - E|X - X'| / 2 (Gneiting & Raftery
           2007, eq. 20; scoringrules' "nrg" estimator) over all points / sum |y|: the
           quadrature-free value that mean_wQuantileLoss approximates.
Per-series means skip NaN (GluonTS' default aggregate_no_nan). Lower is better for all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Float

QUANTILES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _as_series(samples, target) -> tuple[np.ndarray, np.ndarray, int]:
    """(N*C, S, H) samples and (N*C, H) targets in float64, channel-major per series."""
    samples = np.asarray(samples, np.float64)
    target = np.asarray(target, np.float64)
    if target.ndim not in (2, 3) or samples.ndim != target.ndim + 1:
        raise ValueError(
            f"samples must be (N, S, H[, C]) and target (N, H[, C]); got {samples.shape} and "
            f"{target.shape}"
        )
    if samples.shape[0] != target.shape[0] or samples.shape[2:] != target.shape[1:]:
        raise ValueError(
            f"samples {samples.shape} do not match target {target.shape} (N, S, H[, C])"
        )
    if not np.isfinite(samples).all():
        raise ValueError("samples contain non-finite values")
    channels = 1 if target.ndim == 2 else target.shape[2]
    if target.ndim == 3:
        samples = np.moveaxis(samples, 3, 1).reshape(-1, *samples.shape[1:3])
        target = np.moveaxis(target, 2, 1).reshape(-1, target.shape[1])
    return samples, target, channels


def sample_quantiles(
    samples: Float[np.ndarray, "n s h"], quantiles: Sequence[float] = QUANTILES
) -> Float[np.ndarray, "q n h"]:
    """GluonTS' sample quantile: sorted_samples[round((S - 1) q)] (nearest rank)."""
    s = np.sort(np.asarray(samples, np.float64), axis=1)
    idx = [int(np.round((s.shape[1] - 1) * q)) for q in quantiles]
    return np.stack([s[:, i] for i in idx])


def quantile_losses(samples, target, quantiles: Sequence[float] = QUANTILES) -> dict[float, float]:
    """wQuantileLoss[q] = sum 2 |(y - q_hat)(1{y <= q_hat} - q)| / sum |y| for each q."""
    x, y, _ = _as_series(samples, target)
    qs = sample_quantiles(x, quantiles)
    denom = np.nansum(np.abs(y))
    return {
        float(q): float(2 * np.nansum(np.abs((qh - y) * ((y <= qh) - q))) / denom)
        for q, qh in zip(quantiles, qs, strict=True)
    }


def crps(samples, target, quantiles: Sequence[float] = QUANTILES) -> float:
    """mean_wQuantileLoss (GluonTS' "CRPS" of TimeGrad / TSDiff / TSFlow tables)."""
    return float(np.mean(list(quantile_losses(samples, target, quantiles).values())))


def _median(x):
    return sample_quantiles(x, (0.5,))[0]


def nd(samples, target) -> float:
    """Normalized deviation sum |y - median| / sum |y|."""
    x, y, _ = _as_series(samples, target)
    return float(np.nansum(np.abs(y - _median(x))) / np.nansum(np.abs(y)))


def nrmse(samples, target) -> float:
    """sqrt(mean_i mean_t (y - mean forecast)^2) / mean_i mean_t |y| (GluonTS' NRMSE)."""
    x, y, _ = _as_series(samples, target)
    mse = np.nanmean(np.mean((y - x.mean(1)) ** 2, axis=1))
    return float(np.sqrt(mse) / np.nanmean(np.mean(np.abs(y), axis=1)))


def smape(samples, target) -> float:
    """mean_i 2 mean_t |y - median| / (|y| + |median|) (GluonTS' sMAPE, in [0, 2])."""
    x, y, _ = _as_series(samples, target)
    m = _median(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        per = 2 * np.mean(np.abs(y - m) / (np.abs(y) + np.abs(m)), axis=1)
    return float(np.nanmean(per))


def seasonal_error(past: np.ndarray, season: int) -> float:
    """In-sample seasonal-naive MAE mean_t |z_t - z_{t-m}| (m = 1 if m >= len(z))."""
    z = np.asarray(past, np.float64).reshape(-1)
    m = season if season < len(z) else 1
    return float(np.mean(np.abs(z[m:] - z[:-m])))


def mase(samples, target, past: Sequence[np.ndarray], *, season: int = 1) -> float:
    """Mean absolute scaled error of the median forecast (Hyndman & Koehler 2006).

    Args:
      samples, target: as the module docstring says.
      past: per series (or window) the in-sample history before the forecast, (T_i,) or
        (T_i, C) on the original scale.
      season: the seasonal lag m of the naive scale (1 for yearly data, 12 monthly, 24 hourly).
    """
    x, y, channels = _as_series(samples, target)
    if len(past) * channels != len(y):
        raise ValueError(f"past has {len(past)} series; samples and target have {len(y)}")
    if isinstance(season, bool) or not isinstance(season, (int, np.integer)) or season < 1:
        raise ValueError(f"season must be a positive int; got {season!r}")
    scales = np.array(
        [
            seasonal_error(np.asarray(p, np.float64).reshape(len(p), -1)[:, c], season)
            for p in past
            for c in range(channels)
        ]
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.mean(np.abs(y - _median(x)), axis=1) / scales
    return float(np.nanmean(per))


def crps_sum(samples, target, quantiles: Sequence[float] = QUANTILES) -> float:
    """CRPS-sum: mean_wQuantileLoss of the channel sums (GluonTS m_sum_mean_wQuantileLoss)."""
    samples, target = np.asarray(samples, np.float64), np.asarray(target, np.float64)
    if target.ndim != 3:
        raise ValueError(f"crps_sum needs multivariate target (N, H, C); got {target.shape}")
    return crps(samples.sum(-1), target.sum(-1), quantiles)


def crps_energy(samples, target, *, backend: str = "numpy") -> float:
    """Exact sample CRPS (energy form, scoringrules' "nrg" estimator) summed over all points
    and divided by sum |y|, comparable with `crps` (its quantile-grid approximation).

    `backend` is scoringrules' ("numpy" in float64 by default; "jax" runs on device).
    """
    import scoringrules as sr

    x, y, _ = _as_series(samples, target)
    point = np.asarray(sr.crps_ensemble(y, x, m_axis=1, estimator="nrg", backend=backend))
    return float(np.nansum(point) / np.nansum(np.abs(y)))


def forecast_metrics(
    samples,
    target,
    past: Sequence[np.ndarray] | None = None,
    *,
    season: int = 1,
    quantiles: Sequence[float] = QUANTILES,
) -> dict[str, float]:
    """All metrics of the module docstring by their vocabulary names ("crps", "crps_energy",
    "nd", "nrmse", "smape", and "mase" when `past` is given, "crps_sum" for C > 1)."""
    out = {
        "crps": crps(samples, target, quantiles),
        "crps_energy": crps_energy(samples, target),
        "nd": nd(samples, target),
        "nrmse": nrmse(samples, target),
        "smape": smape(samples, target),
    }
    if past is not None:
        out["mase"] = mase(samples, target, past, season=season)
    if np.ndim(target) == 3 and np.shape(target)[2] > 1:
        out["crps_sum"] = crps_sum(samples, target, quantiles)
    return out
