"""Jump samplers for flow maps: deterministic grid jumps and the consistency-model sampler.

On the uniform grid the number of steps is a run-time value (`lax.fori_loop` over a traced
count), so k = 1, 2, 4, 8 ... share one compiled program, as `fj.sampling.sample_ode` does.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from flowjax._types import expand_time
from flowjax.paths import AffinePath

__all__ = ["sample", "sample_stochastic", "time_grid"]


def _is_concrete(a) -> bool:
    return not isinstance(a, jax.core.Tracer)


def time_grid(num_steps: int | None, ts, dtype, *, owner: str) -> Array:
    """The jump times: `ts` as given, or the uniform grid 0, 1/k, ..., 1 with k = num_steps."""
    if ts is None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"{owner}: num_steps must be a positive int, got {num_steps!r}")
        return jnp.linspace(0.0, 1.0, num_steps + 1, dtype=dtype)
    ts = jnp.asarray(ts, dtype)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(
            f"{owner}: ts must be a 1-D array of at least 2 times, got shape {ts.shape}"
        )
    return ts


def _check_x0(x0, owner):
    x0 = jnp.asarray(x0)
    if x0.ndim < 2 or not jnp.issubdtype(x0.dtype, jnp.floating):
        raise ValueError(
            f"{owner}: x0 must be a float array of shape (B, *D), got {x0.shape}, {x0.dtype}"
        )
    return x0


def _check_steps(num_steps, owner):
    integer = jnp.issubdtype(jnp.result_type(num_steps), jnp.integer)
    if isinstance(num_steps, bool) or not integer or jnp.ndim(num_steps) != 0:
        raise ValueError(f"{owner}: num_steps must be a positive int, got {num_steps!r}")
    if _is_concrete(num_steps) and int(num_steps) < 1:
        raise ValueError(f"{owner}: num_steps must be a positive int, got {num_steps!r}")
    return jnp.asarray(num_steps, jnp.int32)


def sample(
    X: Callable,
    x0: Float[Array, " B *D"],
    num_steps: int | Int[Array, ""] = 2,
    ts: Float[Array, " K"] | None = None,
) -> Float[Array, " B *D"]:
    """Jumps x <- X(x, t_k, t_{k+1}) along a time grid (jitted).

    Args:
      X: flow map X(x, s, t) (e.g. `as_callable(apply_fn, params)` or `gmm.flow_map` bound to a
        path); called with scalar s and t.
      x0: starting points at time ts[0] (noise at t = 0), shape (B, *D).
      num_steps: number of jumps on the uniform grid t_i = i / k from 0 to 1 (ignored when ts
        is given); a run-time value, so every k shares one compilation.
      ts: explicit grid t_0, ..., t_K (any order; decreasing runs the map backwards).

    Returns:
      The points at time ts[-1] (data at t = 1).
    """
    if not callable(X):
        raise TypeError(f"sample: X must be a flow map X(x, s, t), got {X!r}")
    x0 = _check_x0(x0, "sample")
    if ts is None:
        return _uniform_jumps(X, x0, _check_steps(num_steps, "sample"))
    return _jumps(X, x0, time_grid(num_steps, ts, x0.dtype, owner="sample"))


@eqx.filter_jit
def _uniform_jumps(X, x0, k):
    kf = k.astype(x0.dtype)

    def jump(i, x):
        s = i.astype(x0.dtype) / kf
        t = (i + 1).astype(x0.dtype) / kf  # exactly 1 at the last step (k / k)
        return X(x, s, t).astype(x0.dtype)

    return jax.lax.fori_loop(0, k, jump, x0)


@eqx.filter_jit
def _jumps(X, x0, ts):
    def jump(x, st):
        s, t = st
        return X(x, s, t).astype(x.dtype), None

    x, _ = jax.lax.scan(jump, x0, (ts[:-1], ts[1:]))
    return x


def sample_stochastic(
    X: Callable,
    x0: Float[Array, " B *D"],
    *,
    path: AffinePath,
    key: PRNGKeyArray,
    ts: Float[Array, " K"] | None = None,
    num_steps: int | Int[Array, ""] | None = None,
) -> Float[Array, " B *D"]:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1) with a flow map.

    x1 = X(x0, t_0, 1); then for each later t_k: re-noise onto the path,
    x_{t_k} = alpha(t_k) x1 + sigma(t_k) eps with fresh eps ~ N(0, I), and jump
    x1 = X(x_{t_k}, t_k, 1). With an exact map every x1 is an exact data sample, and the
    re-noised point has exactly the path's marginal at t_k.

    Args:
      X: flow map X(x, s, t).
      x0: starting points at time ts[0] (noise when ts[0] = 0), shape (B, *D).
      path: the affine path used for re-noising.
      key: PRNG key for the fresh noise.
      ts: increasing times t_0 < t_1 < ... < t_{K-1} < 1 at which to (re)start.
      num_steps: instead of ts, k restarts at t_i = i / k, i = 0..k-1, with the noise of
        restart i from `fold_in(key, i)`; a run-time value (one compilation for every k).

    Returns:
      The final data-time points x1, shape (B, *D).
    """
    x0 = _check_x0(x0, "sample_stochastic")
    if not callable(X):
        raise TypeError(f"sample_stochastic: X must be a flow map X(x, s, t), got {X!r}")
    if not isinstance(path, AffinePath):
        raise TypeError(f"sample_stochastic: path must be an AffinePath, got {path!r}")
    if (ts is None) == (num_steps is None):
        raise ValueError("sample_stochastic: give exactly one of ts and num_steps")
    if ts is None:
        return _uniform_restarts(X, x0, path, key, _check_steps(num_steps, "sample_stochastic"))
    ts = jnp.asarray(ts, x0.dtype)
    if ts.ndim != 1 or ts.shape[0] < 1:
        raise ValueError(f"sample_stochastic: ts must be a 1-D array of times, got {ts.shape}")
    if _is_concrete(ts) and (
        bool(jnp.any(jnp.diff(ts) <= 0)) or bool(ts[0] < 0) or bool(ts[-1] >= 1)
    ):
        raise ValueError(f"sample_stochastic: ts must increase within [0, 1), got {ts}")
    return _restarts(X, x0, path, key, ts)


@eqx.filter_jit
def _restarts(X, x0, path, key, ts):
    one = jnp.ones((), x0.dtype)
    x1 = X(x0, ts[0], one).astype(x0.dtype)

    def restart(x1, inputs):
        t, k = inputs
        eps = jax.random.normal(k, x1.shape, x1.dtype)
        x_t = path.alpha(t) * x1 + path.sigma(t) * eps
        return X(x_t, t, one).astype(x1.dtype), None

    if ts.shape[0] > 1:
        x1, _ = jax.lax.scan(restart, x1, (ts[1:], jax.random.split(key, ts.shape[0] - 1)))
    return x1


@eqx.filter_jit
def _uniform_restarts(X, x0, path, key, k):
    kf = k.astype(x0.dtype)
    one = jnp.ones((), x0.dtype)

    def restart(i, x1):
        t = i.astype(x0.dtype) / kf
        eps = jax.random.normal(jax.random.fold_in(key, i), x1.shape, x1.dtype)
        x_t = expand_time(path.alpha(t), x1) * x1 + expand_time(path.sigma(t), x1) * eps
        return X(x_t, t, one).astype(x0.dtype)

    x1 = X(x0, jnp.zeros((), x0.dtype), one).astype(x0.dtype)
    return jax.lax.fori_loop(1, k, restart, x1)
