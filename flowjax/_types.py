"""Shared jaxtyping aliases and small broadcasting helpers."""

from typing import Union

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

# One time per example, or one shared time.
Time = Union[float, Float[ArrayLike, ""], Float[ArrayLike, " batch"]]  # noqa: UP007
Batch = Float[Array, "batch *dims"]
Labels = Int[Array, " batch"]
Key = PRNGKeyArray


def expand_time(t, x):
    """Reshapes `t` (scalar or one per example, shape (B,)) to broadcast against x (B, *D).

    Raises:
      ValueError: if t is neither a scalar nor has one entry per example of x.
    """
    t = jnp.asarray(t)
    if t.ndim == 0:
        return t
    x = jnp.asarray(x)
    if t.ndim != 1 or x.ndim == 0 or t.shape[0] != x.shape[0]:
        want = x.shape[0] if x.ndim else "?"
        raise ValueError(
            f"t must be a scalar or have one time per example (shape ({want},)); "
            f"got t of shape {t.shape} for x of shape {x.shape}"
        )
    return t.reshape(t.shape + (1,) * (x.ndim - 1))
