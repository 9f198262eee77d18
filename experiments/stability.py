r"""Does diffusion train more smoothly than flow matching? A learning-rate x batch sweep.

  python -m experiments.stability --workdir=/tmp/stab                      # embedded default
  python -m experiments.stability --config=configs/stability_default.py:smoke --workdir=/tmp/stab_s

Writes DIR/report.md, DIR/results.json and DIR/loss_curves.png (flowjax.studies.stability).
"""

from experiments import _study

if __name__ == "__main__":
    _study.launch("stability", "stability_default.py")
