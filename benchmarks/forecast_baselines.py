r"""Classical forecasters (statsforecast) scored by flowjax's forecast metrics.

    python -m benchmarks.forecast_baselines [--dataset=m1_yearly] [--models=naive,ets,arima]

Seasonal naive, AutoETS and AutoARIMA (Hyndman & Khandakar 2008) from `statsforecast`, fitted
on each test window's past and turned into an 11-member quantile ensemble
[q_0.05, q_0.1, ..., q_0.9, q_0.95] from their Gaussian prediction intervals: GluonTS'
nearest-rank quantile of that ensemble at q = 0.1 .. 0.9 is exactly the model's q-quantile, so
`crps` (mean_wQuantileLoss) scores the model's own quantiles and the median is its point
forecast. statsforecast (a `test` extra) is imported here only, never by the library.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from flowjax.data import SeriesDataset, load_series
from flowjax.metrics import forecast_metrics

# Ensemble members: the 0.05 .. 0.95 quantiles; levels L give q = (1 -+ L/100) / 2.
ENSEMBLE_Q = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
_LEVELS = (20, 40, 60, 80, 90)

MODELS = {
    "naive": ("SeasonalNaive", lambda m: {"season_length": m}),
    "ets": ("AutoETS", lambda m: {"season_length": m}),
    "arima": ("AutoARIMA", lambda m: {"season_length": m}),
}


def forecast(ds: SeriesDataset, model: str) -> tuple[np.ndarray, np.ndarray, list]:
    """(samples (N, 11, H), target (N, H), pasts) of `model` on every test window of ds."""
    import pandas as pd
    import statsforecast.models as sfm
    from statsforecast import StatsForecast

    if ds.num_channels != 1:
        raise ValueError(f"{ds.name}: the classical baselines are univariate")
    cls_name, kwargs = MODELS[model]
    pasts, target, _ = ds.test_split()
    frames = [
        pd.DataFrame({"unique_id": j, "ds": np.arange(len(p)), "y": p[:, 0]})
        for j, p in enumerate(pasts)
    ]
    sf = StatsForecast(models=[getattr(sfm, cls_name)(**kwargs(ds.season))], freq=1, n_jobs=1)
    fc = sf.forecast(df=pd.concat(frames), h=ds.horizon, level=list(_LEVELS))
    fc = fc.sort_values(["unique_id", "ds"])
    cols = []
    for q in ENSEMBLE_Q:
        if q == 0.5:
            cols.append(cls_name)
        else:
            level = round(abs(1 - 2 * q) * 100)
            cols.append(f"{cls_name}-{'lo' if q < 0.5 else 'hi'}-{level}")
    values = fc[cols].to_numpy().reshape(len(pasts), ds.horizon, len(cols))
    return np.moveaxis(values, 2, 1), target[..., 0], [p[:, 0] for p in pasts]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="m1_yearly")
    parser.add_argument("--models", default="naive,ets,arima")
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args(argv)
    ds = load_series(args.dataset, data_dir=args.data_dir)
    rows = {}
    for model in args.models.split(","):
        start = time.perf_counter()
        samples, target, pasts = forecast(ds, model)
        rows[model] = forecast_metrics(samples, target, pasts, season=ds.season)
        rows[model]["seconds"] = time.perf_counter() - start
        print(model, json.dumps({k: round(v, 4) for k, v in rows[model].items()}), flush=True)
    return rows


if __name__ == "__main__":
    main()
