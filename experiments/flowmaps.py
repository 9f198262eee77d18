r"""The flow-map study: teacher -> every flow-map method -> quality against NFE, guidance.

  python -m experiments.flowmaps --workdir=/tmp/fmx                  # embedded default (2D, CPU)
  python -m experiments.flowmaps --config=configs/flowmaps_digits.py --workdir=/tmp/fmx_digits
  python -m experiments.flowmaps --workdir=/tmp/fmx --config.datasets=gmm --config.num_seeds=5

Writes DIR/report.md, DIR/results.json and PNG plots (see flowjax.studies.flowmaps).
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_DEFAULT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "flowmaps_default.py"
)

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config",
    _DEFAULT,
    "Study config, e.g. configs/flowmaps_digits.py (default: the embedded 2D one).",
)
flags.DEFINE_string("workdir", None, "Directory for report.md, results.json and plots.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from flowjax.studies import flowmaps

    command = " ".join(["python -m experiments.flowmaps", *sys.argv[1:]])
    try:
        results = flowmaps.run(FLAGS.config, FLAGS.workdir, command=command)
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
