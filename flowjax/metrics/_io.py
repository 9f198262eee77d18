"""Small helpers to read and write the arrays of a Flax NNX module by dotted name."""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx


def variables(module: nnx.Module) -> dict[str, nnx.Variable]:
    """Maps "a.b.kernel" to each Variable (Param, BatchStat, ...) of the module."""
    return {
        ".".join(str(p) for p in path): node
        for path, node in nnx.iter_graph(module)
        if isinstance(node, nnx.Variable)
    }


def assign(var: nnx.Variable, value: np.ndarray, name: str) -> None:
    """Sets a variable's value after checking its shape (works on `nnx.eval_shape` modules)."""
    value = np.asarray(value)
    if tuple(value.shape) != tuple(var.shape):
        raise ValueError(f"weight {name!r} has shape {value.shape}, expected {tuple(var.shape)}")
    var.set_value(jax.numpy.asarray(value, dtype=var.dtype))


@functools.partial(jax.jit, static_argnames=("graphdef", "method"))
def apply_jitted(graphdef, state, x, method: str = "__call__"):
    """Runs `getattr(module, method)(x)` under jit; compiled once per graph, method and shape."""
    return getattr(nnx.merge(graphdef, state), method)(x)
