"""Trains the small toy2d config with the real loop; used by the resume and multi-process tests.

  python tests/_scripts/train_worker.py --workdir=DIR --steps=40 --out=params.npz
      [--kill_at=S | --term_at=S]              # SIGKILL / SIGTERM itself at sync step S
      [--kill_after_save=S]                    # SIGKILL right after checkpoint S is written
      [--kill_in_write=S]                      # SIGKILL half-way through the record of step S
      [--eval_at_start]                        # also log an evaluation at step 0
      [--coordinator=127.0.0.1:PORT --num_processes=2 --process_id=I]

Writes the final train state (params, EMA, optimizer state, step) of the latest checkpoint
to --out (process 0) and the summary as JSON on the last line of stdout.
"""

import argparse
import json
import os
import signal
import sys

import jax


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", default="")
    p.add_argument("--kill_at", type=int, default=-1)
    p.add_argument("--term_at", type=int, default=-1)
    p.add_argument("--kill_after_save", type=int, default=-1)
    p.add_argument("--kill_in_write", type=int, default=-1)
    p.add_argument("--eval_at_start", action="store_true")
    p.add_argument("--coordinator", default="")
    p.add_argument("--num_processes", type=int, default=1)
    p.add_argument("--process_id", type=int, default=0)
    p.add_argument("--async_checkpoint", action="store_true")
    p.add_argument("--eval", action="store_true", help="evaluate at the end")
    p.add_argument("--resume_twice", action="store_true", help="after a SIGTERM exit, resume")
    return p.parse_args()


def config_for(steps: int, async_checkpoint: bool, evaluate: bool, eval_at_start: bool = False):
    from configs import toy2d

    config = toy2d.get_config("fm")
    config.model.variant = "tiny"
    config.data.batch_size = 32
    config.optim.warmup_steps = 5
    config.train.num_steps = steps
    config.train.steps_per_dispatch = 5
    config.train.log_every = 5
    config.train.checkpoint_every = 10
    config.train.async_checkpoint = async_checkpoint
    config.eval.every = 0 if evaluate else -1  # at the end, or never
    config.eval.at_start = eval_at_start
    config.eval.num_samples = 64
    config.eval.batch_size = 64
    config.eval.num_steps = 4
    return config


def dump(state, path):
    import numpy as np

    from flowjax.train.evaluation import to_host

    leaves = jax.tree_util.tree_leaves_with_path(
        {"params": state.params, "ema": state.ema, "opt": state.opt_state, "step": state.step}
    )
    arrays = {jax.tree_util.keystr(k): to_host(v) for k, v in leaves}
    if jax.process_index() == 0:
        np.savez(path, **arrays)


def kill_between(after_save: int, in_write: int):
    """SIGKILL at places no hook reaches: after a save, or with a record half written."""
    from flowjax.train import checkpoint, writers

    save, write = checkpoint.Checkpointer.save, writers.MetricWriter.write

    def save_then_kill(self, step, *args, **kwargs):
        save(self, step, *args, **kwargs)
        if step == after_save:
            self.wait()
            os.kill(os.getpid(), signal.SIGKILL)

    def write_half(self, step, scalars):
        if step != in_write:
            return write(self, step, scalars)
        self._file.write(json.dumps({"step": step, **scalars})[:20])
        self._file.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.Checkpointer.save = save_then_kill
    writers.MetricWriter.write = write_half


def main():
    args = parse()
    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    import flowjax as fj

    config = config_for(args.steps, args.async_checkpoint, args.eval, args.eval_at_start)
    if args.kill_after_save >= 0 or args.kill_in_write >= 0:
        kill_between(args.kill_after_save, args.kill_in_write)

    def hook(step, state):
        if step == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == args.term_at:
            os.kill(os.getpid(), signal.SIGTERM)  # handled: save at the next boundary

    summary = fj.train.train_and_evaluate(config, args.workdir, hooks=[hook])
    if args.resume_twice and summary["preempted"]:
        first = summary
        summary = fj.train.train_and_evaluate(config, args.workdir)
        summary["first"] = {k: first[k] for k in ("step", "preempted", "latest_checkpoint")}
    if args.out:
        _, state = fj.train.restore(config, args.workdir)
        dump(state, args.out)
    print(json.dumps({k: v for k, v in summary.items() if k != "workdir"}, default=str))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
