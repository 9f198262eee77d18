r"""The flow-map study: teacher -> every flow-map method -> quality against NFE, guidance.

  python -m experiments.flowmaps --workdir=/tmp/fmx                  # embedded default (2D, CPU)
  python -m experiments.flowmaps --config=configs/flowmaps_digits.py --workdir=/tmp/fmx_digits
  python -m experiments.flowmaps --workdir=/tmp/fmx --config.datasets=gmm --config.num_seeds=5

Writes DIR/report.md, DIR/results.json and PNG plots (see flowjax.studies.flowmaps).
"""

from experiments import _study

if __name__ == "__main__":
    _study.launch("flowmaps", "flowmaps_default.py")
