r"""Riemannian flow matching vs Euclidean flow matching + projection on S^2 and T^2.

  python -m experiments.riemannian --workdir=/tmp/rfm                       # embedded default
  python -m experiments.riemannian --config=configs/riemannian_default.py:smoke --workdir=/tmp/rfm_s
  python -m experiments.riemannian --workdir=/tmp/rfm --config.datasets=vmf_mixture

Writes DIR/report.md, DIR/results.json and DIR/samples_<dataset>.png (flowjax.studies.riemannian).
"""

from experiments import _study

if __name__ == "__main__":
    _study.launch("riemannian", "riemannian_default.py")
