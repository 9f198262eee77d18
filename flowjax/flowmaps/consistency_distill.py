"""Consistency distillation (CD), flow-map form.

Song et al. 2023, "Consistency models", eq. (7) and Algorithm 2: with x_t on the path and one
ODE-solver step of the teacher x_hat = Phi_T(x_t, t, t + dt),

    L(theta) = E_{n, x_t} d( X_theta(x_t, t, 1), sg X_theta-(x_hat, t + dt, 1) ),

t = t_n = n / N on a uniform grid, dt = 1 / N. At the exact flow map and an exact teacher step
the two sides coincide (the map is constant along trajectories), so the loss is 0 up to the
solver's local error. The target uses theta- = `target_params` (an EMA of the student, passed by
the caller) or sg(theta) when None. d is the per-example mean squared error ("l2") or the
pseudo-Huber distance of iCT (Song & Dhariwal 2023; huber_c = 0.00054 here equals their
c = 0.00054 sqrt(D) because our squared norm is divided by D).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.flowmaps import _common, _consistency
from flowjax.flowmaps._map import FlowMap
from flowjax.flowmaps._ode import check_solver, ode_flow_map

__all__ = ["loss", "validate_kwargs"]

_NAME = "consistency_distill"


def validate_kwargs(**kwargs) -> None:
    """Checks keyword arguments of `loss` early (used by `make_objective`)."""
    _consistency.validate(kwargs, _NAME)
    if "teacher" in kwargs:
        _common.check_teacher(kwargs["teacher"], _NAME)
    if "solver" in kwargs or "solver_steps" in kwargs:
        check_solver(
            kwargs.get("solver", "heun"), kwargs.get("solver_steps", 1), _NAME, "solver_steps"
        )


def loss(
    params,
    key: PRNGKeyArray,
    batch: dict,
    *,
    model,
    path,
    teacher: Callable,
    num_steps: int = 18,
    solver: str = "heun",
    solver_steps: int = 1,
    target_params=None,
    distance: str = "l2",
    huber_c: float = 0.00054,
) -> tuple[Float[Array, ""], dict]:
    """Consistency distillation loss (Song et al. 2023, Algorithm 2) for a flow map.

    Args:
      params: parameters of `model`.
      key: PRNG key (noise, grid index, model dropout).
      batch: {"x1": (B, *D), "label": (B,) optional; labels go to model and teacher as y=}.
      model: two-time apply function model(params, x, t, *, s=None, y=None, key=None).
      path: the affine path of the teacher.
      teacher: velocity field teacher(x, t).
      num_steps: N, the grid size (dt = 1 / N).
      solver: the teacher's ODE step ("euler", "midpoint", "heun", "rk4").
      solver_steps: sub-steps of `solver` within [t, t + dt].
      target_params: parameters of the target network (EMA); None: stop-gradient of params.
      distance: "l2" or "pseudo_huber".
      huber_c: pseudo-Huber constant.

    Returns:
      (loss, aux) with aux = {"loss", "t_mean", "per_example_loss" (B,)}.
    """
    validate_kwargs(
        model=model,
        path=path,
        teacher=teacher,
        num_steps=num_steps,
        solver=solver,
        solver_steps=solver_steps,
        distance=distance,
        huber_c=huber_c,
    )
    x1, labels = _common.check_batch(batch, _NAME)
    X = FlowMap(model)
    step = ode_flow_map(_common.with_labels(teacher, labels), solver=solver, num_steps=solver_steps)

    k_x0, k_t, k_model = jax.random.split(key, 3)
    x0 = jax.random.normal(k_x0, x1.shape, x1.dtype)
    t, t_next = _consistency.grid_times(k_t, x1.shape[0], num_steps, x1.dtype)
    x_t = path.interpolate(x0, x1, t)
    x_next = jax.lax.stop_gradient(step(x_t, t, t_next))
    value, per_example = _consistency.loss_from_points(
        X, params, target_params, x_t, t, x_next, t_next, labels, k_model, distance, huber_c
    )
    return value, {"loss": value, "t_mean": jnp.mean(t), "per_example_loss": per_example}
