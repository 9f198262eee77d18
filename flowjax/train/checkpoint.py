"""Checkpoints: orbax `CheckpointManager` with the train state, data-iterator state and config.

Layout: `workdir/checkpoints/<step>/{state,data,config}`. Orbax writes each step to a
temporary directory and renames it when complete, so a crash mid-save leaves the previous
checkpoints intact and the partial one is never seen as a step.

The data item holds the iterator state of every process (gathered to the primary process,
which writes the JSON); each process restores its own entry, and a fingerprint of the train
state: raw array chunks carry no checksum, so a checkpoint whose bytes were overwritten would
otherwise restore silently with wrong values. `restore_latest` walks back from the newest
checkpoint past those that cannot be read (one line each) to the newest intact one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["CheckpointError", "Checkpointer", "abstract_with_shardings", "fingerprint"]

_ITEMS = ("state", "data", "config")


def abstract_with_shardings(abstract_tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings, so a restore lands sharded."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_tree, shardings
    )


def _allgather_json(obj: Any) -> list:
    """The JSON-serialisable `obj` of every process, in process order."""
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    raw = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    lengths = multihost_utils.process_allgather(np.asarray([raw.size], np.int32))
    lengths = np.asarray(lengths).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: raw.size] = raw
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [json.loads(bytes(row[:n]).decode()) for row, n in zip(gathered, lengths, strict=True)]


class CheckpointError(ValueError):
    """No checkpoint of a directory could be read (the message is one line)."""


class _WrongProcessCount(ValueError):
    pass


def _as_uint32(x: jax.Array) -> jax.Array:
    """The bits of `x` as a flat uint32 vector (8-byte items give two words each)."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32).ravel()
    width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    return jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32).ravel()


@jax.jit
def _leaf_sums(tree: Any) -> list[jax.Array]:
    # sum_i (2 i + 1) * bits_i mod 2^32: odd weights are invertible mod 2^32, so changing any
    # one word changes the sum, and changes at several places cancel with probability ~2^-32.
    def one(x):
        bits = _as_uint32(x)
        weights = 2 * jnp.arange(bits.size, dtype=jnp.uint32) + 1
        return jnp.sum(bits * weights, dtype=jnp.uint32)

    return [one(x) for x in jax.tree.leaves(tree)]


def fingerprint(tree: Any) -> list[int]:
    """One 32-bit checksum per leaf of a pytree of (possibly sharded, global) arrays."""
    sums = _leaf_sums(tree)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        sums = multihost_utils.process_allgather(sums, tiled=True)
    return [int(v) for v in jax.device_get(sums)]


def _on_all_processes(flag: bool) -> bool:
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.int32(flag))))


def _one_line(error: BaseException, limit: int = 160) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Checkpointer:
    """Saves and restores (state, data-iterator state, config) by step.

    Args:
      directory: where the step directories go (created if missing).
      max_to_keep: number of most recent checkpoints kept.
      async_save: write in a background thread (the device-to-host copy still happens
        before `save` returns, so the state may be donated right after).
    """

    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, data_state: Any, config: dict) -> None:
        """Saves a checkpoint for `step` (overwrites nothing; a no-op if it exists)."""
        if step in self._manager.all_steps():
            return
        states = _allgather_json(data_state)
        data = {"process_states": states, "fingerprint": fingerprint(state)}
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data),
                config=ocp.args.JsonSave(config),
            ),
            force=True,
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, Any, dict]:
        """(state, this process's data-iterator state, config) of `step`.

        `abstract_state` is a pytree of ShapeDtypeStructs with shardings (see
        `abstract_with_shardings`).

        Raises:
          ValueError: the checkpoint cannot be read, its state differs from the one saved
            (its fingerprint), or it was written by another number of processes.
        """
        return self._verify(step, self._read(step, abstract_state))

    def _read(self, step: int, abstract_state: Any) -> dict:
        # No collectives here: a process that fails must not leave the others waiting.
        out = self._manager.restore(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
                config=ocp.args.JsonRestore(),
            ),
        )
        states = out["data"]["process_states"]
        if len(states) != jax.process_count():
            raise _WrongProcessCount(
                f"checkpoint {step} in {self.directory} was written by {len(states)} "
                f"process(es); this run has {jax.process_count()}"
            )
        return out

    def _verify(self, step: int, out: dict) -> tuple[Any, Any, dict]:
        saved = out["data"].get("fingerprint")  # absent in checkpoints of older versions
        if saved is not None:
            got = fingerprint(out["state"])
            if got != saved:
                paths = [
                    jax.tree_util.keystr(k) for k, _ in jax.tree.leaves_with_path(out["state"])
                ]
                bad = [p for p, a, b in zip(paths, got, saved, strict=True) if a != b]
                raise ValueError(
                    f"state differs from the one saved in {bad[0]} (and {len(bad) - 1} more)"
                )
        states = out["data"]["process_states"]
        return out["state"], states[jax.process_index()], out["config"]

    def step_path(self, step: int) -> str:
        return os.path.join(self.directory, str(int(step)))

    def restore_latest(
        self,
        abstract_state: Any,
        *,
        set_aside: bool = True,
        report: Callable[[str], None] = print,
    ) -> tuple[int, Any, Any, dict] | None:
        """(step, state, data state, config) of the newest checkpoint that can be read.

        Each newer checkpoint that cannot be read is reported in one line naming its step and
        path and, with `set_aside`, renamed to `<step>.damaged` (ignored from then on) so that
        the run writes that step anew. None when there is no checkpoint.

        Raises:
          CheckpointError: there are checkpoints and none can be read (nothing is renamed).
        """
        steps = sorted(self.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            try:
                out, error = self._read(step, abstract_state), None
            except _WrongProcessCount:
                raise
            except Exception as e:  # any unreadable checkpoint, whatever the cause
                out, error = None, e
            if not _on_all_processes(error is None):
                error = error or RuntimeError("another process could not read it")
            else:
                try:
                    state, data_state, config = self._verify(step, out)
                except ValueError as e:  # the same on every process (the fingerprint is global)
                    error = e
            if error is None:
                if set_aside:
                    self._set_aside(steps[:i])
                return int(step), state, data_state, config
            where = f"checkpoint: step {step} at {self.step_path(step)} cannot be read"
            if i + 1 == len(steps):
                raise CheckpointError(
                    f"{where} ({_one_line(error)}); no intact checkpoint"
                ) from error
            if jax.process_index() == 0:
                report(f"{where} ({_one_line(error)}); falling back to step {steps[i + 1]}")
        return None

    def _set_aside(self, steps: list[int]) -> None:
        if not steps:
            return
        if jax.process_index() == 0:
            for step in steps:
                target = self.step_path(step) + ".damaged"
                if os.path.exists(target):
                    shutil.rmtree(target)
                os.rename(self.step_path(step), target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("flowjax_checkpoint_set_aside")
        self._manager.reload()

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are written."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
