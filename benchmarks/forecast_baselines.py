r"""Classical forecasters (statsforecast) scored by flowjax's forecast metrics.

    python -m benchmarks.forecast_baselines [--dataset=m1_yearly] [--models=naive,ets,arima]

Seasonal naive, AutoETS and AutoARIMA (Hyndman & Khandakar 2008) from `statsforecast` on each
test window of a registered series dataset, as the forecasting study runs them
(`flowjax.studies.forecast.baseline_forecast`: an 11-member quantile ensemble whose GluonTS
nearest-rank quantiles are the model's own), scored with `fj.metrics.forecast_metrics`.
"""

from __future__ import annotations

import argparse
import json
import time

from flowjax.data import load_series
from flowjax.metrics import forecast_metrics
from flowjax.studies.forecast import BASELINES, baseline_forecast


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="m1_yearly")
    parser.add_argument("--models", default=",".join(BASELINES))
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args(argv)
    ds = load_series(args.dataset, data_dir=args.data_dir)
    pasts, target, _ = ds.test_split()
    rows = {}
    for model in args.models.split(","):
        start = time.perf_counter()
        samples = baseline_forecast(ds, model)
        rows[model] = forecast_metrics(samples, target[..., 0], pasts, season=ds.season)
        rows[model]["seconds"] = time.perf_counter() - start
        print(model, json.dumps({k: round(v, 4) for k, v in rows[model].items()}), flush=True)
    return rows


if __name__ == "__main__":
    main()
