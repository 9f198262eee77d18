"""Reward-guided sampling with look-ahead: gradient guidance, best-of-N, importance resampling.

A reward r(x1) is defined on data; at time t < 1 it is read through a look-ahead
x1_hat(x, t), either

  * "flowmap": the flow map's own prediction X(x, t, 1), exact for an exact map (Sabour,
    Albergo, Domingo-Enrich, Boffi, Fidler, Kreis & Vanden-Eijnden 2025, "Test-time scaling of
    diffusions with flow maps"), or
  * "denoiser": the one-step estimate E[x1 | x_t = x] recovered from the velocity with
    `fj.paths.convert(v, src="velocity", dst="x1")` (the look-ahead of universal guidance,
    Bansal et al. 2023, and of DPS, Chung et al. 2023, Algorithm 1), which is exact only at
    t = 1 and blurred towards the data mean early on.

`guided_sample` adds scale * grad_x r(x1_hat(x, t)) to the velocity (Euler steps of a velocity
field) or to each jump of a flow map. `best_of_n` scores N candidate noises by their one-jump
look-ahead reward and keeps the best per output. `importance_sample` is sequential importance
resampling with the look-ahead potentials G_k = exp(r(x1_hat(x_{t_k}, t_k)) / T): the
incremental weights G_k / G_{k-1} telescope to exp(r(x1) / T), so the weighted particles target
p(x1) exp(r(x1) / T) (Feynman-Kac / twisted SMC: Wu et al. 2023, "Practical and asymptotically
exact conditional sampling in diffusion models"; Singhal et al. 2025, "A general framework for
inference-time scaling and steering of diffusion models"), with multinomial or systematic
resampling (Douc, Cappe & Moulines 2005) at chosen times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax._types import expand_time
from flowjax.flowmaps._map import velocity_of
from flowjax.flowmaps._sample import _check_x0, sample, time_grid
from flowjax.paths import AffinePath, convert

__all__ = [
    "LOOKAHEADS",
    "RESAMPLERS",
    "best_of_n",
    "guided_sample",
    "importance_sample",
    "lookahead_fn",
]

LOOKAHEADS = ("flowmap", "denoiser")
MODEL_KINDS = ("flow_map", "velocity")


def _choice(value, name, choices, owner):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {list(choices)}, got {value!r}")


def lookahead_fn(
    model: Callable,
    *,
    path: AffinePath | None,
    kind: str = "flow_map",
    lookahead: str = "flowmap",
    lookahead_map: Callable | None = None,
) -> Callable:
    """x1_hat(x, t): the look-ahead of a flow map or a velocity field.

    Args:
      model: flow map X(x, s, t) (kind="flow_map") or velocity field v(x, t) (kind="velocity").
      path: the affine path (needed for lookahead="denoiser").
      kind: "flow_map" or "velocity".
      lookahead: "flowmap" (X(x, t, 1)) or "denoiser" (E[x1 | x_t] from the velocity).
      lookahead_map: the flow map for lookahead="flowmap" when model is a velocity field.
    """
    owner = "lookahead_fn"
    _choice(kind, "kind", MODEL_KINDS, owner)
    _choice(lookahead, "lookahead", LOOKAHEADS, owner)
    if lookahead == "flowmap":
        X = model if kind == "flow_map" else lookahead_map
        if X is None:
            raise ValueError(
                f"{owner}: lookahead='flowmap' with a velocity model needs lookahead_map "
                "(a flow map X(x, s, t)); or use lookahead='denoiser'"
            )
        return lambda x, t: X(x, t, jnp.ones_like(t))
    if not isinstance(path, AffinePath):
        raise TypeError(f"{owner}: lookahead='denoiser' needs path=AffinePath, got {path!r}")
    v = model if kind == "velocity" else velocity_of(model)
    return lambda x, t: convert(v(x, t), src="velocity", dst="x1", path=path, x=x, t=t)


def _reward_grad(reward, x1_hat):
    def total(x, t):
        return jnp.sum(reward(x1_hat(x, t)))

    return jax.grad(total)


def guided_sample(
    model: Callable,
    x0: Float[Array, " B *D"],
    reward: Callable,
    *,
    path: AffinePath | None = None,
    scale: float | Callable = 1.0,
    num_steps: int = 8,
    ts: Float[Array, " K"] | None = None,
    kind: str = "flow_map",
    lookahead: str = "flowmap",
    lookahead_map: Callable | None = None,
) -> Float[Array, " B *D"]:
    """Samples with the reward gradient through a look-ahead added at every step.

    kind="flow_map": x <- X(x, t_k, t_{k+1}) + (t_{k+1} - t_k) scale(t_k) g_k;
    kind="velocity": x <- x + (t_{k+1} - t_k) (v(x, t_k) + scale(t_k) g_k) (Euler);
    with g_k = grad_x r(x1_hat(x, t_k)) differentiated through the look-ahead.

    Args:
      model: flow map X(x, s, t) or velocity field v(x, t) (see `kind`).
      x0: noise at t = ts[0], shape (B, *D).
      reward: differentiable r(x1) -> (B,).
      path: the affine path (for lookahead="denoiser").
      scale: guidance strength, a number or a function of t. A ramp such as
        `lambda t: c * t` tempers the first steps, where the flow-map look-ahead is steepest
        (near the boundaries between modes its Jacobian is large).
      num_steps: steps on the uniform grid from 0 to 1 (ignored when ts is given).
      ts: explicit increasing time grid.
      kind: "flow_map" or "velocity".
      lookahead: "flowmap" or "denoiser" (see `lookahead_fn`).
      lookahead_map: flow map for lookahead="flowmap" when kind="velocity".

    Returns:
      The guided samples at ts[-1].
    """
    if not callable(model) or not callable(reward):
        raise TypeError("guided_sample: model and reward must be callables")
    if not callable(scale) and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise TypeError(f"guided_sample: scale must be a number or a function of t, got {scale!r}")
    x0 = _check_x0(x0, "guided_sample")
    x1_hat = lookahead_fn(
        model, path=path, kind=kind, lookahead=lookahead, lookahead_map=lookahead_map
    )
    ts = time_grid(num_steps, ts, x0.dtype, owner="guided_sample")
    return _guided(model, x0, reward, x1_hat, scale, ts, kind)


@eqx.filter_jit
def _guided(model, x0, reward, x1_hat, scale, ts, kind):
    grad = _reward_grad(reward, x1_hat)

    def step(x, st):
        t, t_next = st
        h = t_next - t
        w = scale(t) if callable(scale) else scale
        g = grad(x, t)
        if kind == "flow_map":
            x_next = model(x, t, t_next) + h * w * g
        else:
            x_next = x + h * (model(x, t) + w * g)
        return x_next.astype(x.dtype), None

    x, _ = jax.lax.scan(step, x0, (ts[:-1], ts[1:]))
    return x


def best_of_n(
    X: Callable,
    x0: Float[Array, " N B *D"],
    reward: Callable,
    *,
    num_steps: int = 1,
    ts: Float[Array, " K"] | None = None,
) -> tuple[Float[Array, " B *D"], dict]:
    """Best of N candidate noises per output, scored by the one-jump look-ahead reward.

    Each candidate costs one jump X(x0, t_0, 1) to score (exact for an exact map, whatever
    num_steps); only the winner is then sampled with `num_steps` jumps (or ts).

    Args:
      X: flow map X(x, s, t).
      x0: candidates, shape (N, B, *D): N noises for each of B outputs.
      reward: r(x1) -> (batch,).
      num_steps, ts: the final sampler's grid (see `sample`).

    Returns:
      (x1 (B, *D), info) with info = {"rewards": (N, B) look-ahead rewards, "index": (B,)}.
    """
    x0 = jnp.asarray(x0)
    if x0.ndim < 3:
        raise ValueError(f"best_of_n: x0 must have shape (N, B, *D), got {x0.shape}")
    grid = time_grid(num_steps, ts, x0.dtype, owner="best_of_n")
    n, b = x0.shape[:2]
    flat = x0.reshape((n * b,) + x0.shape[2:])
    look = X(flat, grid[0], jnp.ones((), x0.dtype))
    rewards = jnp.asarray(reward(look)).reshape(n, b)
    index = jnp.argmax(rewards, axis=0)
    pick = jnp.arange(b)
    if ts is None and num_steps == 1:
        x1 = look.reshape(x0.shape)[index, pick]
    else:
        x1 = sample(X, x0[index, pick], num_steps=num_steps, ts=grid)
    return x1, {"rewards": rewards, "index": index}


def _multinomial(key, log_w, n):
    cdf = jnp.cumsum(jax.nn.softmax(log_w))
    u = jax.random.uniform(key, (n,), cdf.dtype)
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), n - 1)


def _systematic(key, log_w, n):
    cdf = jnp.cumsum(jax.nn.softmax(log_w))
    u = (jax.random.uniform(key, (), cdf.dtype) + jnp.arange(n, dtype=cdf.dtype)) / n
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), n - 1)


RESAMPLERS: dict[str, Callable] = {"multinomial": _multinomial, "systematic": _systematic}


def _ess(log_w):
    w = jax.nn.softmax(log_w)
    return 1.0 / jnp.sum(w**2)


def importance_sample(
    X: Callable,
    x0: Float[Array, " N *D"],
    reward: Callable,
    *,
    key: PRNGKeyArray,
    num_steps: int = 1,
    ts: Float[Array, " K"] | None = None,
    temperature: float = 1.0,
    resample: str = "systematic",
    resample_at: Sequence[int] | None = None,
    ess_threshold: float | None = None,
    renoise: bool = False,
    path: AffinePath | None = None,
) -> tuple[Float[Array, " N *D"], dict]:
    """Sequential importance resampling of N particles towards p(x1) exp(r(x1) / T).

    At grid time t_k each particle carries the look-ahead reward r_k = r(X(x, t_k, 1)) and the
    log-weight sum_j (r_j - r_{j-1}) / T (r_{-1} = 0); at the times in `resample_at` the
    particles are resampled with those weights and the weights reset. Moves between grid times
    are the flow map's jumps, or with `renoise=True` the consistency sampler's re-noising
    x_{t_{k+1}} = alpha x1_hat + sigma eps (`sample_stochastic`), which keeps resampled copies
    apart. With an exact deterministic map the look-ahead is already the final sample, so one
    resampling at t_0 is exact importance resampling.

    Args:
      X: flow map X(x, s, t).
      x0: N particles at ts[0], shape (N, *D).
      reward: r(x1) -> (N,).
      key: PRNG key (resampling and re-noising).
      num_steps, ts: the grid t_0 < ... < t_K = 1 (see `sample`).
      temperature: T > 0.
      resample: "systematic" or "multinomial".
      resample_at: grid indices k in [0, K] after which to resample; None: every one.
      ess_threshold: if set, resample only when ESS < ess_threshold * N.
      renoise: re-noise between grid times (needs path).
      path: affine path for renoise.

    Returns:
      (x1 (N, *D), info) with info = {"log_weights" (N,) normalised, "ess" (K + 1,) before each
      resampling decision, "rewards" (N,) final rewards}.
    """
    owner = "importance_sample"
    x0 = _check_x0(x0, owner)
    _choice(resample, "resample", tuple(RESAMPLERS), owner)
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not (temperature > 0)
    ):
        raise ValueError(f"{owner}: temperature must be a positive number, got {temperature!r}")
    if ess_threshold is not None and not (
        isinstance(ess_threshold, (int, float)) and 0 < ess_threshold <= 1
    ):
        raise ValueError(f"{owner}: ess_threshold must be None or in (0, 1], got {ess_threshold!r}")
    if renoise and not isinstance(path, AffinePath):
        raise TypeError(f"{owner}: renoise=True needs path=AffinePath, got {path!r}")
    grid = time_grid(num_steps, ts, x0.dtype, owner=owner)
    k_last = grid.shape[0] - 1
    if resample_at is None:
        mask = np.ones(k_last + 1, bool)
    else:
        idx = np.asarray(list(resample_at), dtype=int).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() > k_last):
            raise ValueError(
                f"{owner}: resample_at indices must lie in [0, {k_last}] (grid indices), "
                f"got {list(resample_at)}"
            )
        mask = np.zeros(k_last + 1, bool)
        mask[idx] = True
    return _smc(
        X,
        x0,
        reward,
        key,
        grid,
        jnp.asarray(mask),
        float(temperature),
        resample,
        None if ess_threshold is None else float(ess_threshold),
        bool(renoise),
        path,
    )


@eqx.filter_jit
def _smc(X, x0, reward, key, grid, mask, temperature, resample, ess_threshold, renoise, path):
    n = x0.shape[0]
    one = jnp.ones((), x0.dtype)
    resampler = RESAMPLERS[resample]

    def weigh_and_resample(state, k, key_k):
        x, x1_hat, r_prev, log_w = state
        r = jnp.asarray(reward(x1_hat), x.dtype).reshape(n)
        log_w = log_w + (r - r_prev) / temperature
        ess = _ess(log_w)
        do = mask[k]
        if ess_threshold is not None:
            do = do & (ess < ess_threshold * n)
        idx = jnp.where(do, resampler(key_k, log_w, n), jnp.arange(n))
        log_w = jnp.where(do, jnp.zeros_like(log_w), log_w)
        return (x[idx], x1_hat[idx], r[idx], log_w), ess

    def move(state, t, t_next, key_k):
        x, x1_hat, r_prev, log_w = state
        if renoise:
            eps = jax.random.normal(key_k, x.shape, x.dtype)
            tt = expand_time(t_next, x)
            x = path.alpha(tt) * x1_hat + path.sigma(tt) * eps
        else:
            x = X(x, t, t_next).astype(x.dtype)
        return (x, X(x, t_next, one).astype(x.dtype), r_prev, log_w)

    keys = jax.random.split(key, 2 * grid.shape[0])
    state = (
        x0,
        X(x0, grid[0], one).astype(x0.dtype),
        jnp.zeros((n,), x0.dtype),
        jnp.zeros((n,), x0.dtype),
    )
    state, ess0 = weigh_and_resample(state, 0, keys[0])

    def body(state, inputs):
        k, t, t_next, k_move, k_res = inputs
        state = move(state, t, t_next, k_move)
        return weigh_and_resample(state, k, k_res)

    ks = jnp.arange(1, grid.shape[0])
    state, ess = jax.lax.scan(
        body, state, (ks, grid[:-1], grid[1:], keys[1 : grid.shape[0]], keys[grid.shape[0] + 1 :])
    )
    x, x1_hat, r, log_w = state
    out = x1_hat if renoise else x
    return out, {
        "log_weights": jax.nn.log_softmax(log_w),
        "ess": jnp.concatenate([ess0[None], ess]),
        "rewards": r,
    }
