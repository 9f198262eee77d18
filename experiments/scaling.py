r"""Flow matching vs diffusion as the dimension grows (d = 2, 8, 32, 128; analytic mixture).

  python -m experiments.scaling --workdir=/tmp/scal                        # embedded default
  python -m experiments.scaling --config=configs/scaling_default.py:smoke --workdir=/tmp/scal_s

Writes DIR/report.md, DIR/results.json and DIR/kl_curves.png (flowjax.studies.scaling).
"""

from experiments import _study

if __name__ == "__main__":
    _study.launch("scaling", "scaling_default.py")
