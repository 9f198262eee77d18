r"""Discrete flow matching vs masked diffusion on tokens, and discrete flow maps.

  python -m experiments.discrete --workdir=/tmp/dfm                        # embedded default
  python -m experiments.discrete --config=configs/discrete_default.py:smoke --workdir=/tmp/dfm_s
  python -m experiments.discrete --workdir=/tmp/dfm --config.datasets=oracle --config.num_seeds=3

Writes DIR/report.md and DIR/results.json (see flowjax.studies.discrete).
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", os.path.join(_CONFIGS, "discrete_default.py"), "Study config (default: embedded)."
)
flags.DEFINE_string("workdir", None, "Directory for report.md and results.json.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from flowjax.studies import discrete

    command = " ".join(["python -m experiments.discrete", *sys.argv[1:]])
    try:
        results = discrete.run(FLAGS.config, FLAGS.workdir, command=command)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"\nwall {results['wall_seconds']:.0f} s; report: {FLAGS.workdir}/report.md")
    for name, ds in results["datasets"].items():
        for v in ds["verdicts"]:
            print(f"[{name}] {v['claim']}: {v['verdict']} (ratio {v['ratio']:.3g})")


if __name__ == "__main__":
    app.run(main)
