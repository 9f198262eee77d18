"""The training loop: resume, prefetch, K steps per dispatch, log, checkpoint, evaluate.

The host talks to the devices only at sync points (every `train.log_every` steps, at
checkpoints and evaluations, and at the end); between them dispatches are queued
asynchronously and batches are prepared by a background thread.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from flowjax.train import evaluation
from flowjax.train.checkpoint import Checkpointer
from flowjax.train.config import validate
from flowjax.train.experiment import Experiment, build
from flowjax.train.prefetch import Prefetcher, check_batch, chunk_sizes
from flowjax.train.sharding import make_global_batch
from flowjax.train.state import TrainState, num_params
from flowjax.train.writers import MetricWriter

__all__ = [
    "NonFiniteError",
    "train_and_evaluate",
    "evaluate",
    "sample",
    "restore",
    "make_data_iterator",
]

Hook = Callable[[int, TrainState], None]


class NonFiniteError(FloatingPointError):
    """Training stopped on a non-finite loss or gradient (`train.on_nonfinite="stop"`)."""


def make_data_iterator(config, split: str = "train"):
    """The data iterator of `config` for this process (`fj.data.make_iterator`)."""
    from flowjax import data

    return data.make_iterator(
        config.data.name,
        global_batch_size=config.data.batch_size,
        seed=config.seed,
        split=split,
        data_dir=config.data.data_dir or None,
        **config.data.kwargs.to_dict(),
    )


class _Preemption:
    """SIGTERM -> save at the next dispatch boundary and exit cleanly.

    One process: a Python handler sets a flag. Several processes: JAX's preemption sync
    service (started by `jax.distributed.initialize`) makes all processes agree on the step.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def _handler(self, signum, frame):
        del signum, frame
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            try:
                return multihost_utils.reached_preemption_sync_point(step) or self.requested
            except RuntimeError:  # no preemption service in this runtime
                return self.requested
        return self.requested


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


class _Evaluator:
    """Samples from the model, scores them, saves a picture; built on first use."""

    def __init__(self, exp: Experiment, workdir: str):
        self.exp = exp
        self.workdir = workdir
        cfg = exp.config.eval
        self.metric = evaluation.resolve_metric(cfg.metric, exp.spec)
        self._sampler = None
        self._reference = None

    def sampler(self):
        if self._sampler is None:
            cfg = self.exp.config.eval
            from flowjax.train.sharding import replicated

            self._sampler = evaluation.make_sampler(
                self.exp.apply_fn,
                path=self.exp.path,
                kind=self.exp.kind,
                shape=tuple(self.exp.spec.shape),
                num_classes=self.exp.num_classes,
                batch_size=min(cfg.batch_size, cfg.num_samples),
                solver=cfg.solver,
                num_steps=cfg.num_steps or None,
                rtol=cfg.rtol,
                atol=cfg.atol,
                guidance=cfg.guidance,
                t_eps=cfg.t_eps,
                source=self.exp.source,
                out_sharding=replicated(self.exp.mesh),
            )
        return self._sampler

    def reference(self) -> np.ndarray | None:
        if self._reference is None and self.metric != "none":
            from flowjax import data

            config = self.exp.config
            kwargs = dict(data_dir=config.data.data_dir or None, **config.data.kwargs.to_dict())
            source = data.open_source(
                config.data.name, split="test", seed=config.eval.seed, **kwargs
            )
            n = config.eval.num_samples
            if hasattr(source, "__len__"):
                n = min(n, len(source))
            self._reference = np.asarray(
                data.reference_samples(config.data.name, n, config.eval.seed, "test", **kwargs)
            )
        return self._reference

    def draw(self, params, num_samples: int) -> tuple[np.ndarray, np.ndarray | None, float]:
        """num_samples samples (and labels), with the mean NFE per sampling call."""
        sampler = self.sampler()
        key = jax.random.key(self.exp.config.eval.seed)
        xs, ys, nfes = [], [], []
        count = 0
        while count < num_samples:
            x, y, nfe = sampler(params, jax.random.fold_in(key, len(xs)))
            xs.append(evaluation.to_host(x))
            ys.append(None if y is None else evaluation.to_host(y))
            nfes.append(float(evaluation.to_host(nfe)))
            count += xs[-1].shape[0]
        x = np.concatenate(xs)[:num_samples]
        y = None if ys[0] is None else np.concatenate(ys)[:num_samples]
        return x, y, float(np.mean(nfes))

    def params(self, state: TrainState):
        index = self.exp.config.eval.ema_index
        return state.params if index < 0 else state.ema[index]

    def __call__(self, state: TrainState, step: int) -> dict[str, float]:
        config = self.exp.config.eval
        start = time.perf_counter()
        samples, _, nfe = self.draw(self.params(state), config.num_samples)
        out: dict[str, float] = {"eval/nfe": nfe}
        reference = self.reference()
        if self.metric != "none":
            out[f"eval/{self.metric}"] = evaluation.compute_metric(self.metric, samples, reference)
        out["eval/time_s"] = time.perf_counter() - start
        if jax.process_index() == 0:
            kind = self.exp.spec.kind
            shown = samples if kind == "points" else samples[: config.num_images]
            title = f"step {step}" + "".join(
                f", {k[5:]}={v:.4g}"
                for k, v in out.items()
                if k.startswith("eval/") and k not in ("eval/time_s", "eval/nfe")
            )
            evaluation.save_picture(
                os.path.join(self.workdir, "samples", f"step_{step:07d}.png"),
                shown,
                kind,
                reference=reference if kind == "points" else None,
                title=title,
            )
        return out


def _mean_metrics(pending: list[dict]) -> dict[str, float]:
    """Means over the steps since the last sync; skipped (non-finite) steps are left out of
    every mean but "finite" (the fraction of finite steps)."""
    host = jax.device_get(pending)
    values = {k: np.concatenate([np.ravel(m[k]) for m in host]) for k in host[0]}
    finite = values["finite"] > 0
    out = {}
    for k, v in values.items():
        kept = v if k == "finite" or not finite.any() else v[finite]
        out[f"train/{k}"] = float(np.mean(kept))
    return out


def _config_dict(config) -> dict:
    return json.loads(config.to_json_best_effort())


def _write_summary(workdir: str, summary: dict) -> None:
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)


def _restore_or_init(exp: Experiment, ckpt: Checkpointer):
    # The newest checkpoint that can be read; damaged newer ones are reported (one line each)
    # and set aside, so the run retrains those steps and writes them anew.
    found = ckpt.restore_latest(exp.abstract_state)
    if found is None:
        return exp.new_state(), None, 0
    step, state, data_state, _ = found
    return state, data_state, step


def train_and_evaluate(
    config,
    workdir: str,
    *,
    data_iterator: Any = None,
    hooks: Sequence[Hook] = (),
    devices: Sequence[Any] | None = None,
) -> dict:
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the summary.

    Writes `workdir/metrics.jsonl`, TensorBoard events under `workdir/tensorboard`,
    checkpoints under `workdir/checkpoints`, sample pictures under `workdir/samples` and
    `workdir/summary.json`.

    Args:
      config: a config from `configs/*.py` (validated here before anything is built).
      workdir: output directory; an existing one is resumed.
      data_iterator: replaces `make_data_iterator(config)`; must yield this process's local
        batches and have JSON-serialisable `get_state()` / `set_state()`.
      hooks: called as `hook(step, state)` at every sync point, after checkpointing.
      devices: devices of the mesh (default: all).

    Raises:
      ValueError: a bad config or bad data (one line naming the field).
      NonFiniteError: with `train.on_nonfinite="stop"`, a non-finite loss or gradient (the
        message names the step; the last checkpoint is the last good state).
      CheckpointError: `workdir` has checkpoints and none can be read (a damaged newer one
        is reported in one line and the run resumes from the newest intact one).
    """
    num_devices = len(devices) if devices is not None else jax.device_count()
    validate(config, num_devices, jax.process_count())
    exp = build(config, devices)
    tc = config.train
    primary = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    ckpt = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=tc.keep_checkpoints,
        async_save=tc.async_checkpoint,
    )
    iterator = make_data_iterator(config) if data_iterator is None else data_iterator
    state, data_state, start = _restore_or_init(exp, ckpt)
    if data_state is not None:
        iterator.set_state(data_state)

    # Drops the records of steps a stopped run logged past the checkpoint it resumes from.
    writer = MetricWriter(workdir, enabled=primary, resume_step=start)
    evaluator = _Evaluator(exp, workdir)
    summary: dict[str, Any] = {
        "workdir": os.path.abspath(workdir),
        "num_params": num_params(exp.abstract_state.params),
        "num_devices": num_devices,
        "num_processes": jax.process_count(),
        "resumed_from": start or None,
    }
    if config.eval.at_start and start == 0:
        summary["initial_eval"] = evaluator(state, 0)
        writer.write(0, summary["initial_eval"])

    end = tc.num_steps
    every = (tc.log_every, tc.checkpoint_every, config.eval.every)
    chunks = chunk_sizes(start, end, tc.steps_per_dispatch, every)
    keys = exp.batch_keys
    local_batch = exp.local_batch_size
    shape = tuple(exp.spec.shape)

    def to_device(stacked: dict) -> dict:
        return make_global_batch({k: stacked[k] for k in keys}, exp.mesh, stacked=True)

    prefetcher = Prefetcher(
        iterator,
        chunks,
        to_device,
        check=lambda b: check_batch(b, shape, local_batch),
        depth=tc.prefetch,
    )
    from tqdm.auto import tqdm

    bar = tqdm(total=end, initial=start, disable=not primary, dynamic_ncols=True, unit="step")
    step, pending, last_log = start, [], (time.perf_counter(), start)
    t_begin = time.perf_counter()
    preempted = False
    try:
        with _Preemption() as preemption:
            for k, batches, data_state in prefetcher:
                state, metrics = exp.train_step(state, batches)
                step += k
                pending.append(metrics)
                bar.update(k)
                preempted = preemption.reached(step)
                save = _due(step, tc.checkpoint_every) or step == end or preempted
                run_eval = _due(step, config.eval.every) or (step == end and config.eval.every >= 0)
                if not (_due(step, tc.log_every) or save or run_eval or step == end):
                    continue
                # ---- sync point
                record = _mean_metrics(pending)
                pending = []
                _check_finite(state, config, ckpt)
                now = time.perf_counter()
                record["train/steps_per_sec"] = (step - last_log[1]) / max(now - last_log[0], 1e-9)
                record["train/num_skipped"] = int(jax.device_get(state.num_skipped))
                bar.set_postfix(
                    loss=f"{record['train/loss']:.4g}",
                    steps_per_s=f"{record['train/steps_per_sec']:.1f}",
                )
                if run_eval and not preempted:
                    record.update(evaluator(state, step))
                    summary["eval"] = {k: v for k, v in record.items() if k.startswith("eval/")}
                # The record before the checkpoint: a run stopped in between resumes from an
                # earlier checkpoint and drops the record, so none is lost and none doubled.
                writer.write(step, record)
                if save:
                    ckpt.save(step, state, data_state, _config_dict(config))
                summary["train"] = {k: v for k, v in record.items() if k.startswith("train/")}
                for hook in hooks:
                    hook(step, state)
                last_log = (time.perf_counter(), step)  # steps/s counts training time only
                if preempted:
                    break
    except NonFiniteError as e:
        summary["error"] = str(e)
        raise
    finally:
        prefetcher.close()
        bar.close()
        ckpt.close()
        summary.update(step=step, preempted=preempted, wall_time_s=time.perf_counter() - t_begin)
        summary["latest_checkpoint"] = ckpt.latest_step()
        _write_summary(workdir, summary)
        writer.close()
    if primary:
        print(_summary_line(summary))
    return summary


def _check_finite(state: TrainState, config, ckpt: Checkpointer) -> None:
    if config.train.on_nonfinite != "stop":
        return
    bad = int(jax.device_get(state.nonfinite_step))
    if bad >= 0:
        ckpt.wait()
        raise NonFiniteError(
            f"train: non-finite loss or gradient at step {bad}; stopped "
            f"(train.on_nonfinite='stop'), the state is left at step {bad}; "
            f"last checkpoint: step {ckpt.latest_step()}"
        )


def _summary_line(summary: dict) -> str:
    parts = [f"step {summary['step']}"]
    for section in ("train", "eval"):
        for k, v in summary.get(section, {}).items():
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    if summary.get("initial_eval"):
        parts.append(
            "initial: " + ", ".join(f"{k}={v:.4g}" for k, v in summary["initial_eval"].items())
        )
    if summary.get("preempted"):
        parts.append("preempted (checkpoint saved)")
    return "summary: " + "; ".join(parts)


def restore(config, workdir: str, *, step: int | None = None, devices=None):
    """(experiment, state) of a checkpoint in `workdir` (default: the latest).

    Without `step`, checkpoints newer than the newest intact one are reported (one line
    each) and skipped.

    Raises:
      FileNotFoundError: no checkpoint in `workdir/checkpoints`.
      CheckpointError: none of them can be read.
    """
    num_devices = len(devices) if devices is not None else jax.device_count()
    validate(config, num_devices, jax.process_count())
    exp = build(config, devices, objective=False)  # no objective: a student needs no teacher
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        if step is None:
            found = ckpt.restore_latest(exp.abstract_state, set_aside=False)
            if found is None:
                raise FileNotFoundError(f"no checkpoint in {ckpt.directory}")
            state = found[1]
        else:
            state, _, _ = ckpt.restore(step, exp.abstract_state)
    finally:
        ckpt.close()
    return exp, state


def evaluate(config, workdir: str) -> dict:
    """Evaluates the latest checkpoint: metrics printed, merged into the step's record of
    metrics.jsonl and written to `workdir/eval_summary.json`; a picture under `samples/`."""
    exp, state = restore(config, workdir)
    step = int(jax.device_get(state.step))
    result = {"step": step, **_Evaluator(exp, workdir)(state, step)}
    if jax.process_index() == 0:
        writer = MetricWriter(workdir, tensorboard=False)
        writer.update(step, {k: v for k, v in result.items() if k != "step"})
        writer.close()
        with open(os.path.join(workdir, "eval_summary.json"), "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)
        print("eval: " + ", ".join(f"{k}={v}" for k, v in result.items()))
    return result


def sample(config, workdir: str, num_samples: int | None = None) -> str:
    """Draws samples from the latest checkpoint; saves `samples/samples_<step>.npz` and a
    picture; returns the .npz path."""
    exp, state = restore(config, workdir)
    step = int(jax.device_get(state.step))
    n = num_samples or config.eval.num_samples
    evaluator = _Evaluator(exp, workdir)
    x, y, nfe = evaluator.draw(evaluator.params(state), n)
    out = os.path.join(workdir, "samples", f"samples_{step:07d}.npz")
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        arrays = {"x": x} if y is None else {"x": x, "label": y}
        np.savez(out, **arrays)
        shown = x if exp.spec.kind == "points" else x[: config.eval.num_images]
        evaluation.save_picture(
            out[: -len(".npz")] + ".png", shown, exp.spec.kind, title=f"step {step}, nfe {nfe:.0f}"
        )
        print(f"sample: {len(x)} samples at step {step} (nfe {nfe:.0f}) -> {out}")
    return out
