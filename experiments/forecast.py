r"""Probabilistic forecasting: flow matching vs diffusion vs classical baselines on real series.

  python -m experiments.forecast --workdir=/tmp/fc                  # embedded default (CPU)
  python -m experiments.forecast --config=configs/forecast_default.py:smoke --workdir=/tmp/fc_s
  python -m experiments.forecast --workdir=/tmp/fc --config.num_seeds=5 --config.datasets=elnino

Writes DIR/report.md, DIR/results.json, fan charts and DIR/<dataset>/forecasts_<arm>.npz
(see flowjax.studies.forecast).
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_DEFAULT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "forecast_default.py"
)

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", _DEFAULT, "Forecasting config (default: configs/forecast_default.py)."
)
flags.DEFINE_string("workdir", None, "Directory for report.md, results.json, plots and npz.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from flowjax.studies import forecast

    command = " ".join(["python -m experiments.forecast", *sys.argv[1:]])
    try:
        results = forecast.run(FLAGS.config, FLAGS.workdir, command=command)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")  # one line, exit status 1
    print(
        f"\nwall time {results['wall_seconds']:.0f} s (process CPU time "
        f"{results['cpu_seconds']:.0f} s); report: {os.path.join(FLAGS.workdir, 'report.md')}"
    )
    for name, ds in results["datasets"].items():
        for v in ds["verdicts"]:
            print(f"[{name}] {v['verdict']}: {v['claim']} (ratio {v['ratio']:.3f})")


if __name__ == "__main__":
    app.run(main)
