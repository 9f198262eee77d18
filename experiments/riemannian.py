r"""Riemannian flow matching vs Euclidean flow matching + projection on S^2 and T^2.

  python -m experiments.riemannian --workdir=/tmp/rfm                       # embedded default
  python -m experiments.riemannian --config=configs/riemannian_default.py:smoke --workdir=/tmp/rfm_s
  python -m experiments.riemannian --workdir=/tmp/rfm --config.datasets=vmf_mixture

Writes DIR/report.md, DIR/results.json and DIR/samples_<dataset>.png (flowjax.studies.riemannian).
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", os.path.join(_CONFIGS, "riemannian_default.py"), "Study config (default: embedded)."
)
flags.DEFINE_string("workdir", None, "Directory for report.md and results.json.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from flowjax.studies import riemannian

    command = " ".join(["python -m experiments.riemannian", *sys.argv[1:]])
    try:
        results = riemannian.run(FLAGS.config, FLAGS.workdir, command=command)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"\nwall {results['wall_seconds']:.0f} s; report: {FLAGS.workdir}/report.md")
    for name, ds in results["datasets"].items():
        for v in ds["verdicts"]:
            print(f"[{name}] {v['claim']}: {v['verdict']} (ratio {v['ratio']:.3g})")


if __name__ == "__main__":
    app.run(main)
