"""Adjoint Matching (Domingo-Enrich et al. 2025) for velocity models: reward fine-tuning whose
fixed point samples p*(x1) ~ p_base(x1) exp(lambda r(x1)).

With the memoryless schedule (`memoryless.py`), the optimal control u* = -g a (a the adjoint)
turns the base flow into one of the tilted distribution, and v_ft = v_base + g u / 2. The
Adjoint Matching loss (the paper's Algorithm 1, "Adjoint Matching" regression on the lean
adjoint) is

    L(theta) = E sum_k || (2 / g(t_k)) (v_theta(X_k, t_k) - v_base(X_k, t_k)) + g(t_k) a~_k ||^2

on trajectories X of the current fine-tuned model's memoryless SDE (no gradient through
them) with the lean adjoint a~ of the base drift; its regression target is

    v_target(X_k, t_k) = v_base(X_k, t_k) - g(t_k)^2 a~_k / 2,

and at the tilted field E[v_target | X_k] = v_theta, so the loss is stationary there.
Data-free: the batch only gives the shape (batch["x1"]).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.objectives import _common
from flowjax.paths import AffinePath
from flowjax.reward import memoryless

__all__ = ["AdjointMatching", "regression_target"]

_NAME = "adjoint_matching"


def regression_target(v_base, path, xs, ts, adj):
    """v_base(x_k, t_k) - g(t_k)^2 a~_k / 2 for k = 0..K-1 ((K, B, *D))."""

    def one(x, t, a):
        g2 = 2.0 * memoryless.eta(path, t)
        return v_base(x, jnp.broadcast_to(t, x.shape[:1])) - 0.5 * g2 * a

    return jax.vmap(one)(xs[:-1], ts[:-1], adj[:-1])


class AdjointMatching(_common.AbstractObjective):
    """The Adjoint Matching loss of a velocity model against its frozen base.

    Attributes:
      path: the affine path the base was trained on.
      reward: r(x1) -> (B,), differentiable.
      strength: lambda >= 0 in p* ~ p exp(lambda r).
      base: the frozen base velocity field v_base(x, t) (a pytree callable).
      model: apply function model(params, x, t) -> velocity (None: pass it at call time).
      num_steps: Euler-Maruyama steps K of each trajectory.
      num_loss_times: grid times per trajectory entering the loss (drawn without
        replacement from the K non-final ones; None: all K).
      t_min: the first grid time (> 0; the memoryless SDE is singular at t = 0).

    Call: `(params, key, batch, *, model=None) -> (loss, aux)`; aux = {"loss", "reward_mean",
    "per_example_loss" (B,)}.
    """

    path: AffinePath
    reward: Callable
    strength: float
    base: Callable
    model: Callable | None = eqx.field(static=True, default=None)
    num_steps: int = eqx.field(static=True, default=20)
    num_loss_times: int | None = eqx.field(static=True, default=None)
    t_min: float = eqx.field(static=True, default=0.01)

    def __check_init__(self):
        _common.check_path(self.path, _NAME)
        if not callable(self.reward) or not callable(self.base):
            raise TypeError(f"{_NAME}: reward and base must be callables")
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int):
            raise TypeError(f"{_NAME}: num_steps must be an int, got {self.num_steps!r}")
        if self.num_steps < 1:
            raise ValueError(f"{_NAME}: num_steps must be >= 1, got {self.num_steps}")
        m = self.num_loss_times
        if m is not None and (not isinstance(m, int) or not 1 <= m <= self.num_steps):
            raise ValueError(f"{_NAME}: num_loss_times must be in [1, num_steps], got {m!r}")
        if not 0.0 < float(self.t_min) < 1.0:
            raise ValueError(f"{_NAME}: t_min must lie in (0, 1), got {self.t_min!r}")

    def trajectories(self, v, key, shape, dtype):
        """(ts, xs): a memoryless rollout of v from x_{t_min} = beta(t_min) eps."""
        k_x, k_noise = jax.random.split(key)
        ts = memoryless.grid(self.num_steps, self.t_min, dtype)
        x_start = self.path.sigma(ts[0]) * jax.random.normal(k_x, shape, dtype)
        noise = jax.random.normal(k_noise, (self.num_steps, *shape), dtype)
        return ts, memoryless.rollout(v, self.path, x_start, ts, noise)

    def adjoint(self, xs, ts):
        """The lean adjoint along xs from a~(1) = -lambda grad r(x_K)."""
        grad_r = jax.grad(lambda x: jnp.sum(self.reward(x)))(xs[-1])
        return memoryless.lean_adjoint(self.base, self.path, xs, ts, -self.strength * grad_r)

    def __call__(
        self, params, key: PRNGKeyArray, batch: dict, *, model: Callable | None = None
    ) -> tuple[Float[Array, ""], dict]:
        model = _common.bound_model(self.model, model, _NAME)
        x1 = jnp.asarray(batch["x1"])
        k_traj, k_times = jax.random.split(key)
        frozen = jax.lax.stop_gradient(params)
        ts, xs = self.trajectories(lambda x, t: model(frozen, x, t), k_traj, x1.shape, x1.dtype)
        xs = jax.lax.stop_gradient(xs)
        adj = jax.lax.stop_gradient(self.adjoint(xs, ts))
        target = jax.lax.stop_gradient(regression_target(self.base, self.path, xs, ts, adj))
        k = self.num_steps
        idx = jnp.arange(k)
        if self.num_loss_times is not None and self.num_loss_times < k:
            idx = jax.random.choice(k_times, k, (self.num_loss_times,), replace=False)
        t_k = ts[idx]
        g = memoryless.diffusion(self.path, t_k)

        def term(x, t, tgt, g_t):
            pred = model(params, x, jnp.broadcast_to(t, x.shape[:1]))
            # (2/g)(v_theta - v_base) + g a~ = (2/g)(v_theta - v_target).
            return _common.per_example_mean(((2.0 / g_t) * (pred - tgt)) ** 2)

        per_time = jax.vmap(term)(xs[idx], t_k, target[idx], g)  # (M, B)
        per_example = jnp.mean(per_time, 0)
        value = jnp.mean(per_example)
        reward_mean = jnp.mean(self.reward(xs[-1]))
        return value, {"loss": value, "reward_mean": reward_mean, "per_example_loss": per_example}
