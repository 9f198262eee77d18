"""Checkpoints: orbax `CheckpointManager` with the train state, data-iterator state and config.

Layout: `workdir/checkpoints/<step>/{state,data,config}`. Orbax writes each step to a
temporary directory and renames it when complete, so a crash mid-save leaves the previous
checkpoints intact and the partial one is never seen as a step.

The data item holds the iterator state of every process (gathered to the primary process,
which writes the JSON); each process restores its own entry.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["Checkpointer", "abstract_with_shardings"]

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
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave({"process_states": states}),
                config=ocp.args.JsonSave(config),
            ),
            force=True,
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, Any, dict]:
        """(state, this process's data-iterator state, config) of `step`.

        `abstract_state` is a pytree of ShapeDtypeStructs with shardings (see
        `abstract_with_shardings`).
        """
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
            raise ValueError(
                f"checkpoint {step} in {self.directory} was written by {len(states)} "
                f"process(es); this run has {jax.process_count()}"
            )
        return out["state"], states[jax.process_index()], out["config"]

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are written."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
