"""Shared pieces of consistency distillation and consistency training in flow-map form.

A consistency function is f(x_t, t) = X(x_t, t, 1) (Song et al. 2023, "Consistency models",
in flowjax time where t = 1 is data); f(x, 1) = x holds by construction of X
(the boundary condition their c_skip / c_out parameterization enforces, eq. (5)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flowjax.flowmaps import _common


def check(objective, name: str) -> None:
    """The construction checks CD and CT share: path, model, source, grid, distance."""
    _common.check_common(objective, name)
    _common.check_positive(objective.num_steps, "num_steps", name, integer=True)
    _common.check_choice(objective.distance, "distance", _common.DISTANCES, name)
    _common.check_positive(objective.huber_c, "huber_c", name)


def grid_times(key, n: int, num_steps: int, dtype):
    """(t_n, t_{n+1}) on the uniform grid t_k = k / N, n ~ U{0, ..., N - 1} (Song et al. 2023,
    Algorithms 2-3); at n = N - 1 the target X(., 1, 1) is the identity."""
    idx = jax.random.randint(key, (n,), 0, num_steps)
    return idx.astype(dtype) / num_steps, (idx + 1).astype(dtype) / num_steps


def draw_points(key, x1, path, num_steps: int, source, context, name: str):
    """(x0, t, t_next, x_t, model key): the draw CD and CT share, from one key (Song et al.
    2023, Algorithms 2-3): x0 ~ source, n on the grid, x_t = alpha(t) x1 + sigma(t) x0."""
    k_x0, k_t, k_model = jax.random.split(key, 3)
    x0 = _common.draw_x0(source, k_x0, x1, context, name)
    t, t_next = grid_times(k_t, x1.shape[0], num_steps, x1.dtype)
    return x0, t, t_next, path.interpolate(x0, x1, t), k_model


def loss(objective, X, params, x_t, t, x_next, t_next, labels, context, key):
    """d(X_theta(x_t, t, 1), sg X_theta-(x_next, t_next, 1)): its mean and the aux dict.

    theta- is `objective.target_params` (an EMA, Song et al. 2023, eq. (7)) or, when None,
    sg(theta) (EMA decay 0, the choice of Song & Dhariwal 2023, iCT); d is
    `objective.distance` with `objective.huber_c`.
    """
    conds = _common.conditions(labels, context)
    one = jnp.ones_like(t)
    pred = X(params, x_t, t, one, key=key, **conds)
    target_params = objective.target_params
    theta_minus = jax.lax.stop_gradient(params if target_params is None else target_params)
    target = jax.lax.stop_gradient(X(theta_minus, x_next, t_next, one, **conds))
    per_example = _common.distance(pred - target, objective.distance, objective.huber_c)
    value = jnp.mean(per_example)
    return value, {"loss": value, "t_mean": jnp.mean(t), "per_example_loss": per_example}
