r"""Head-to-head comparison of training objectives (flow matching vs diffusion).

  python -m experiments.compare --workdir=/tmp/cmp                 # embedded default (2D, CPU)
  python -m experiments.compare --config=configs/compare_default.py:ablation --workdir=/tmp/abl
  python -m experiments.compare --config=configs/compare_digits.py --workdir=/tmp/cmp_digits
  python -m experiments.compare --workdir=/tmp/cmp --config.num_seeds=5 --config.datasets=gmm

Writes DIR/report.md, DIR/results.json and PNG plots (see flowjax.studies.compare).
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_DEFAULT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "compare_default.py"
)

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config",
    _DEFAULT,
    "Comparison config, e.g. configs/compare_digits.py (default: the embedded 2D one).",
)
flags.DEFINE_string("workdir", None, "Directory for report.md, results.json and plots.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from flowjax.studies import compare

    command = " ".join(["python -m experiments.compare", *sys.argv[1:]])
    try:
        results = compare.run(FLAGS.config, FLAGS.workdir, command=command)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")  # one line, exit status 1
    print(
        f"\nwall time {results['wall_seconds']:.0f} s (process CPU time "
        f"{results['cpu_seconds']:.0f} s); report: {os.path.join(FLAGS.workdir, 'report.md')}"
    )
    for name, ds in results["datasets"].items():
        print(f"\n[{name}] findings:")
        for line in ds["findings"]:
            print(f"  - {line}")


if __name__ == "__main__":
    app.run(main)
