"""The memoryless noise schedule of an affine path, its SDE, and the lean adjoint ODE.

Domingo-Enrich, Drozdzal, Karrer & Chen 2025, "Adjoint Matching: Fine-tuning Flow and
Diffusion Generative Models with Memoryless Stochastic Optimal Control" (ICLR 2025; arXiv
2409.08861), in flowjax time (t = 0 noise, t = 1 data, x_t = alpha x1 + beta x0 with
beta = `path.sigma`). The SDEs with the marginals of the flow v are
dX = [v + g(t)^2 / (2 eta_t) (v - (alpha' / alpha) X)] dt + g(t) dB with
eta_t = beta_t (alpha'_t beta_t / alpha_t - beta'_t) (the score is
(v - (alpha' / alpha) x) / eta_t); the *memoryless* schedule g(t)^2 = 2 eta_t (the paper's
sigma(t) = sqrt(2 eta_t), Sec. 3 / its eq. for flow matching) makes X_0 and X_1 independent,
with drift

    b(x, t) = 2 v(x, t) - (alpha'_t / alpha_t) x            (CondOT: g^2 = 2 (1 - t) / t).

Fine-tuning adds a control: b + g u, i.e. v_ft = v + g u / 2. The lean adjoint (the paper's
Adjoint Matching, Algorithm 1 and its lean adjoint ODE) along a trajectory X of the
fine-tuned process is

    d a~/dt = -[grad_x b_base(X_t, t)]^T a~,   a~(1) = grad g(X_1) = -lambda grad r(X_1),

with b_base the base drift: no control and no reward terms, hence "lean". On an
Euler-Maruyama grid x_{k+1} = x_k + h_k b(x_k, t_k) + sqrt(h_k) g(t_k) xi_k, its discrete
form a~_k = a~_{k+1} + h_k [grad b_base(x_k, t_k)]^T a~_{k+1} is exactly the gradient of
g(x_K) with respect to x_k through the base-drift steps with the same noise (tested by finite
differences).

The SDE is singular at t = 0 (eta -> infinity); trajectories start at t_min > 0 from
x_{t_min} = beta(t_min) eps (the t -> 0 limit of the marginal; bias O(alpha(t_min))).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from flowjax._types import expand_time
from flowjax.paths import AffinePath

__all__ = ["diffusion", "drift", "eta", "grid", "lean_adjoint", "rollout"]


def eta(path: AffinePath, t) -> Array:
    """eta_t = beta_t (alpha'_t beta_t / alpha_t - beta'_t) (beta = path.sigma)."""
    a, b = path.alpha(t), path.sigma(t)
    return b * (path.d_alpha(t) * b / a - path.d_sigma(t))


def diffusion(path: AffinePath, t) -> Array:
    """The memoryless diffusion coefficient g(t) = sqrt(2 eta_t)."""
    return jnp.sqrt(2.0 * eta(path, t))


def drift(v: Callable, path: AffinePath) -> Callable:
    """The memoryless drift b(x, t) = 2 v(x, t) - (alpha'_t / alpha_t) x of a velocity field."""

    def b(x, t):
        tt = expand_time(jnp.broadcast_to(t, x.shape[:1]), x)
        return 2.0 * v(x, t) - path.d_alpha(tt) / path.alpha(tt) * x

    return b


def grid(num_steps: int, t_min: float, dtype=jnp.float32) -> Float[Array, " K1"]:
    """t_k = t_min + (1 - t_min) (k / K)^2: fine steps near t = 0, where the drift is stiff."""
    u = jnp.linspace(0.0, 1.0, num_steps + 1, dtype=dtype)
    return t_min + (1.0 - t_min) * u**2


def rollout(
    v: Callable,
    path: AffinePath,
    x_start: Float[Array, " B *D"],
    ts: Float[Array, " K1"],
    noise: Float[Array, " K B *D"],
) -> Float[Array, " K1 B *D"]:
    """Euler-Maruyama of the memoryless SDE of v on the grid ts with standard noise xi_k."""
    b = drift(v, path)

    def step(x, inputs):
        t, t_next, xi = inputs
        h = t_next - t
        tb = jnp.broadcast_to(t, x.shape[:1])
        x_next = x + h * b(x, tb) + jnp.sqrt(h) * diffusion(path, t) * xi
        return x_next.astype(x.dtype), x_next.astype(x.dtype)

    _, xs = jax.lax.scan(step, x_start, (ts[:-1], ts[1:], noise))
    return jnp.concatenate([x_start[None], xs])


def lean_adjoint(
    v_base: Callable,
    path: AffinePath,
    xs: Float[Array, " K1 B *D"],
    ts: Float[Array, " K1"],
    a_final: Float[Array, " B *D"],
) -> Float[Array, " K1 B *D"]:
    """The discrete lean adjoint a~_k (k = 0..K) along xs, backwards from a~_K = a_final."""
    b = drift(v_base, path)

    def step(a, inputs):
        x, t, t_next = inputs
        h = t_next - t
        tb = jnp.broadcast_to(t, x.shape[:1])
        _, vjp = jax.vjp(lambda y: y + h * b(y, tb), x)
        a_prev = vjp(a)[0].astype(a.dtype)
        return a_prev, a_prev

    _, adj = jax.lax.scan(step, a_final, (xs[:-1], ts[:-1], ts[1:]), reverse=True)
    return jnp.concatenate([adj, a_final[None]])
