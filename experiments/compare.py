r"""Head-to-head comparison of training objectives (flow matching vs diffusion).

  python -m experiments.compare --workdir=/tmp/cmp                 # embedded default (2D, CPU)
  python -m experiments.compare --config=configs/compare_default.py:ablation --workdir=/tmp/abl
  python -m experiments.compare --config=configs/compare_digits.py --workdir=/tmp/cmp_digits
  python -m experiments.compare --workdir=/tmp/cmp --config.num_seeds=5 --config.datasets=gmm

Writes DIR/report.md, DIR/results.json and PNG plots (see flowjax.studies.compare).
"""

from experiments import _study

if __name__ == "__main__":
    _study.launch("compare", "compare_default.py")
