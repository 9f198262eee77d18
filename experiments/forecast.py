r"""Probabilistic forecasting: flow matching vs diffusion vs classical baselines on real series.

  python -m experiments.forecast --workdir=/tmp/fc                  # embedded default (CPU)
  python -m experiments.forecast --config=configs/forecast_default.py:smoke --workdir=/tmp/fc_s
  python -m experiments.forecast --workdir=/tmp/fc --config.num_seeds=5 --config.datasets=elnino

Writes DIR/report.md, DIR/results.json, fan charts and DIR/<dataset>/forecasts_<arm>.npz
(see flowjax.studies.forecast).
"""

from experiments import _study

if __name__ == "__main__":
    _study.launch("forecast", "forecast_default.py")
