"""The train state: one pytree that the train step maps to the next one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

__all__ = ["TrainState", "ema_decay", "ema_update", "init_state", "rng_key"]


@struct.dataclass
class TrainState:
    """Everything that evolves during training; saved whole in every checkpoint.

    Attributes:
      step: int32 scalar, number of steps taken (skipped non-finite steps count).
      params: float32 model parameters.
      ema: one exponential moving average of `params` per decay in `config.ema.decays`.
      opt_state: optax state.
      rng: raw uint32 key data; step i uses `fold_in(rng, i)`, so a run does not depend on
        how steps are grouped into dispatches.
      num_skipped: number of updates skipped because the loss or a gradient was not finite.
      nonfinite_step: the step whose loss or gradient was not finite when
        `on_nonfinite="stop"` (the state is frozen from then on); -1 while all are finite.
    """

    step: jax.Array
    params: Any
    ema: tuple
    opt_state: Any
    rng: jax.Array
    num_skipped: jax.Array
    nonfinite_step: jax.Array


def rng_key(state: TrainState) -> jax.Array:
    """The typed PRNG key of the state."""
    return jax.random.wrap_key_data(state.rng)


def ema_decay(decay: float, step, warmup: bool):
    """Decay used at `step`: min(decay, (1 + step) / (10 + step)) with warmup.

    The warmup (Tarvainen & Valpola 2017; TensorFlow's ExponentialMovingAverage with
    num_updates) keeps the average from being dominated by the random initialisation in
    short runs.
    """
    if not warmup:
        return jnp.asarray(decay, jnp.float32)
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema, params, decay):
    """ema <- decay * ema + (1 - decay) * params."""
    return jax.tree.map(lambda e, p: e + (1.0 - decay) * (p - e), ema, params)


def _to_float32(x):
    x = jnp.asarray(x)
    return x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x


def init_state(
    init_params: Callable[[jax.Array], Any],
    optimizer: optax.GradientTransformation,
    seed: int,
    num_ema: int,
) -> TrainState:
    """A fresh state; `init_params(key)` builds the float32 parameters.

    Pure and deterministic, meant to run under `jax.jit` with `out_shardings`, so the state
    is created directly on its devices in its final sharding (and identically on every
    process).
    """
    init_key, train_key = jax.random.split(jax.random.key(seed))
    params = init_params(init_key)
    params = jax.tree.map(_to_float32, params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema=tuple(params for _ in range(num_ema)),
        opt_state=optimizer.init(params),
        rng=jax.random.key_data(train_key),
        num_skipped=jnp.zeros((), jnp.int32),
        nonfinite_step=jnp.full((), -1, jnp.int32),
    )


def tree_where(cond, new: Any, old: Any) -> Any:
    """Leafwise `jnp.where(cond, new, old)` for two pytrees of the same structure."""
    return jax.tree.map(lambda n, o: jnp.where(cond, n, o), new, old)


def num_params(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
