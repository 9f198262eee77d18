r"""Train, evaluate or sample a flowjax model from a config file.

  python -m experiments.main --config=configs/toy2d.py:fm --workdir=/tmp/toy2d
  python -m experiments.main --config=configs/digits.py:ddpm,smoke --workdir=/tmp/d \
      --config.train.num_steps=100
  python -m experiments.main --config=configs/toy2d.py:fm --workdir=/tmp/toy2d --mode=eval

Run from the repository root (configs/ and experiments/ are the application, not installed).
Training resumes from the latest checkpoint in --workdir; --mode=eval|sample restore the latest
checkpoint without building the objective, so a distilled student needs no teacher for them.
Several hosts: pass --multihost (with --coordinator_address, --num_processes, --process_id
unless the cluster is auto-detected), or set config.distributed.initialize=True.
"""

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

import flowjax as fj

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/toy2d.py:fm.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"], "What to do.")
flags.DEFINE_integer("num_samples", None, "Samples to draw in --mode=sample.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])

MODES = {
    "train": lambda config, workdir: fj.train.train_and_evaluate(config, workdir),
    "eval": lambda config, workdir: fj.train.evaluate(config, workdir),
    "sample": lambda config, workdir: fj.train.sample(config, workdir, FLAGS.num_samples),
}


def initialize_distributed(config) -> None:
    """jax.distributed.initialize from the flags, falling back on config.distributed."""
    dist = config.distributed
    if not (FLAGS.multihost or dist.initialize):
        return
    # CPU processes exchange collectives over gloo (TCP); GPUs and TPUs use their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    address = FLAGS.coordinator_address or dist.coordinator_address or None
    num = FLAGS.num_processes if FLAGS.num_processes is not None else dist.num_processes
    pid = FLAGS.process_id if FLAGS.process_id is not None else dist.process_id
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=num if num > 0 else None,
        process_id=pid if pid >= 0 else None,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    config = FLAGS.config
    initialize_distributed(config)
    try:
        MODES[FLAGS.mode](config, FLAGS.workdir)
    except (ValueError, FileNotFoundError, fj.train.NonFiniteError) as e:
        sys.exit(f"error: {e}")  # one line, exit status 1


if __name__ == "__main__":
    app.run(main)
