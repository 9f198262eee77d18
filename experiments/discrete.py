r"""Discrete flow matching vs masked diffusion on tokens, and discrete flow maps.

  python -m experiments.discrete --workdir=/tmp/dfm                        # embedded default
  python -m experiments.discrete --config=configs/discrete_default.py:smoke --workdir=/tmp/dfm_s
  python -m experiments.discrete --workdir=/tmp/dfm --config.datasets=oracle --config.num_seeds=3

Writes DIR/report.md and DIR/results.json (see flowjax.studies.discrete).
"""

from experiments import _study

if __name__ == "__main__":
    _study.launch("discrete", "discrete_default.py")
