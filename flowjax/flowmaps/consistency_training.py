"""Consistency training (CT), flow-map form: no teacher.

Song et al. 2023, "Consistency models", Algorithm 3 (and Theorem 2): the teacher's ODE step of
consistency distillation is replaced by the conditional flow of the sampled pair (x0, x1),
i.e. the exact solution of dx/dt = alpha'(t) x1 + sigma'(t) x0 (the conditional velocity):

    x_t = alpha(t) x1 + sigma(t) x0,   x_{t+dt} = alpha(t + dt) x1 + sigma(t + dt) x0,
    L(theta) = E d( X_theta(x_t, t, 1), sg X_theta-(x_{t+dt}, t + dt, 1) ).

This matches CD (with the teacher's exact marginal velocity) only to first order in dt: at the
exact flow map the loss is not 0 but dt^2 E|| grad_x X(x_t, t, 1) (u_cond - v(x_t, t)) ||^2 +
O(dt^3), the conditional-velocity variance carried through the map; its gradient vanishes as
dt -> 0 (Song et al. 2023, Thm. 2). Times t = n / N on the uniform grid, dt = 1 / N; the target
parameters are `target_params` (EMA) or sg(params); distances as in `consistency_distill`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.flowmaps import _common, _consistency
from flowjax.flowmaps._map import FlowMap

__all__ = ["loss", "validate_kwargs"]

_NAME = "consistency_training"


def validate_kwargs(**kwargs) -> None:
    """Checks keyword arguments of `loss` early (used by `make_objective`)."""
    _consistency.validate(kwargs, _NAME)


def sample_points(key, x1, path, num_steps: int):
    """(x0, t, t_next, x_t, x_next, model key) exactly as `loss` draws them from `key`."""
    k_x0, k_t, k_model = jax.random.split(key, 3)
    x0 = jax.random.normal(k_x0, x1.shape, x1.dtype)
    t, t_next = _consistency.grid_times(k_t, x1.shape[0], num_steps, x1.dtype)
    return x0, t, t_next, path.interpolate(x0, x1, t), path.interpolate(x0, x1, t_next), k_model


def loss(
    params,
    key: PRNGKeyArray,
    batch: dict,
    *,
    model,
    path,
    num_steps: int = 18,
    target_params=None,
    distance: str = "l2",
    huber_c: float = 0.00054,
) -> tuple[Float[Array, ""], dict]:
    """Consistency training loss (Song et al. 2023, Algorithm 3) for a flow map.

    Args:
      params: parameters of `model`.
      key: PRNG key (noise, grid index, model dropout).
      batch: {"x1": (B, *D), "label": (B,) optional; labels go to the model as y=}.
      model: two-time apply function model(params, x, t, *, s=None, y=None, key=None).
      path: the affine path.
      num_steps: N, the grid size (dt = 1 / N); iCT grows N during training.
      target_params: parameters of the target network (EMA); None: stop-gradient of params.
      distance: "l2" or "pseudo_huber".
      huber_c: pseudo-Huber constant.

    Returns:
      (loss, aux) with aux = {"loss", "t_mean", "per_example_loss" (B,)}.
    """
    validate_kwargs(model=model, path=path, num_steps=num_steps, distance=distance, huber_c=huber_c)
    x1, labels = _common.check_batch(batch, _NAME)
    X = FlowMap(model)
    _, t, t_next, x_t, x_next, k_model = sample_points(key, x1, path, num_steps)
    value, per_example = _consistency.loss_from_points(
        X, params, target_params, x_t, t, x_next, t_next, labels, k_model, distance, huber_c
    )
    return value, {"loss": value, "t_mean": jnp.mean(t), "per_example_loss": per_example}
