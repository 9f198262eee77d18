"""Few-step samplers with the number of steps as a run-time value (one compilation for all).

`fj.flowmaps.sample` and `sample_stochastic` take the time grid as an array, so every number
of steps is a new shape and a new compilation; an NFE sweep of several methods would spend
most of its time compiling. These loops compute the same grids with `lax.fori_loop` over a
traced step count k:

  jumps:        x <- X(x, i / k, (i + 1) / k), i = 0..k-1 (= `fj.flowmaps.sample(X, x0, k)`);
  consistency:  x1 = X(x0, 0, 1); for i = 1..k-1, t = i / k: x1 = X(alpha(t) x1 + sigma(t) eps_i,
                t, 1) with eps_i ~ N(0, I) from fold_in(key, i) (Song et al. 2023, Algorithm 1;
                `fj.flowmaps.sample_stochastic` with ts = (0, 1/k, ..., (k-1)/k)).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from flowjax._types import expand_time

__all__ = ["jumps", "consistency", "SAMPLERS"]


@eqx.filter_jit
def jumps(X, x0, num_steps):
    """x0 at t = 0 carried to t = 1 by `num_steps` equal jumps of the flow map X(x, s, t)."""
    k = jnp.asarray(num_steps, jnp.int32)
    kf = k.astype(x0.dtype)

    def body(i, x):
        s = i.astype(x0.dtype) / kf
        t = (i + 1).astype(x0.dtype) / kf  # exactly 1 at the last step (k / k)
        return X(x, s, t).astype(x0.dtype)

    return jax.lax.fori_loop(0, k, body, x0)


@eqx.filter_jit
def consistency(X, x0, num_steps, *, path, key):
    """Multistep consistency sampling with restarts at t = i / k (see module docstring)."""
    k = jnp.asarray(num_steps, jnp.int32)
    kf = k.astype(x0.dtype)
    one = jnp.ones((), x0.dtype)

    def body(i, x1):
        t = i.astype(x0.dtype) / kf
        eps = jax.random.normal(jax.random.fold_in(key, i), x1.shape, x1.dtype)
        x_t = expand_time(path.alpha(t), x1) * x1 + expand_time(path.sigma(t), x1) * eps
        return X(x_t, t, one).astype(x0.dtype)

    x1 = X(x0, jnp.zeros((), x0.dtype), one).astype(x0.dtype)
    return jax.lax.fori_loop(1, k, body, x1)


SAMPLERS = {"jumps": jumps, "consistency": consistency}
