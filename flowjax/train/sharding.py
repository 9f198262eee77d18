"""Device mesh, the sharding plan for the train state, and global batches.

The mesh has two axes, ("data", "fsdp"). A batch is split along its leading dimension over
both axes together (every device sees a different slice). Parameters, EMA copies and the
optimizer state are replicated when fsdp = 1; with fsdp > 1 each array larger than
`min_size` elements is sharded along its largest axis divisible by the fsdp size (ZeRO-3 /
FSDP, as in big_vision's `fsdp` rule), and small tensors stay replicated because slicing them
costs more in collectives than it saves in memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "AXES",
    "BATCH_AXES",
    "mesh_shape",
    "make_mesh",
    "fsdp_spec",
    "state_shardings",
    "batch_sharding",
    "replicated",
    "make_global_batch",
]

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")  # the leading batch dim is split over the product of both


def mesh_shape(data: int, fsdp: int, num_devices: int) -> tuple[int, int]:
    """Resolves (data, fsdp) sizes; data = -1 means "all devices not used by fsdp".

    Raises:
      ValueError: sizes that are not positive or do not multiply to `num_devices`.
    """
    if not isinstance(fsdp, int) or fsdp < 1:
        raise ValueError(f"mesh.fsdp must be a positive int, got {fsdp!r}")
    if data == -1:
        if num_devices % fsdp:
            raise ValueError(
                f"mesh.fsdp={fsdp} does not divide the number of devices ({num_devices})"
            )
        data = num_devices // fsdp
    if not isinstance(data, int) or data < 1:
        raise ValueError(f"mesh.data must be a positive int or -1 (all devices), got {data!r}")
    if data * fsdp != num_devices:
        raise ValueError(
            f"mesh.data * mesh.fsdp = {data} * {fsdp} = {data * fsdp} must equal the number "
            f"of devices ({num_devices}); set mesh.data=-1 to use all remaining devices"
        )
    return data, fsdp


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """A ("data", "fsdp") mesh over `devices` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(data, fsdp, len(devices))
    # Auto axes: shardings are propagated by XLA from the in/out shardings of `jit`.
    return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def fsdp_spec(shape: Sequence[int], fsdp: int, min_size: int) -> P:
    """PartitionSpec of one array under the FSDP rule (see module docstring)."""
    shape = tuple(shape)
    if fsdp == 1 or math.prod(shape) < min_size:
        return P()
    divisible = [i for i, d in enumerate(shape) if d % fsdp == 0]
    if not divisible:
        return P()
    axis = max(divisible, key=lambda i: (shape[i], -i))  # largest; ties: the first
    spec = [None] * len(shape)
    spec[axis] = "fsdp"
    return P(*spec)


def state_shardings(abstract_tree: Any, mesh: Mesh, *, min_size: int = 2**14) -> Any:
    """NamedShardings for every leaf of `abstract_tree` (arrays or ShapeDtypeStructs)."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(
        lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), fsdp, min_size)), abstract_tree
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, *, stacked: bool = False) -> NamedSharding:
    """Sharding of a batch (B, ...) or of a stack of batches (K, B, ...)."""
    return NamedSharding(mesh, P(None, BATCH_AXES) if stacked else P(BATCH_AXES))


def make_global_batch(local: dict[str, np.ndarray], mesh: Mesh, *, stacked: bool = False):
    """Global jax.Arrays from this process's slice of the batch.

    Every process passes its own local batch (the global batch split in process order along
    the batch dimension); on one process the local batch is the global batch.
    """
    sharding = batch_sharding(mesh, stacked=stacked)
    axis = 1 if stacked else 0
    n = jax.process_count()

    def one(x):
        x = np.asarray(x)
        shape = list(x.shape)
        shape[axis] *= n
        return jax.make_array_from_process_local_data(sharding, x, tuple(shape))

    return {k: one(v) for k, v in local.items()}
