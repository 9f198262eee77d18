"""Progressive distillation, written for flow maps.

Salimans & Ho 2022 (Algorithm 2) train a student whose one sampler step matches two steps of
the teacher, then halve the step count and repeat with the student as the new teacher. For a
flow map the same idea is the composition property X(x, s, t) = X(X(x, s, m), m, t) at the
midpoint m = (s + t) / 2 ("progressive flow map matching", Boffi, Albergo & Vanden-Eijnden
2024, "Flow map matching"):

    L(theta) = E_{s < t, x_s} || X_theta(x_s, s, t) - sg[ X_T(X_T(x_s, s, m), m, t) ] ||^2

where the teacher map X_T is either a given flow map (`teacher_map`, e.g. the previous stage's
student bound with `as_callable`) or `solver_steps` steps of an ODE solver on a teacher velocity
(`teacher`, the first stage). `max_gap` limits t - s, for the staged curriculum (stage k:
max_gap = 2^k / N).

Times: gap = t - s ~ U(0, max_gap], s ~ U[0, 1 - gap]; so s < t and both lie in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.flowmaps import _common
from flowjax.flowmaps._map import FlowMap
from flowjax.flowmaps._ode import check_solver, ode_flow_map

__all__ = ["loss", "validate_kwargs"]

_NAME = "progressive"


def validate_kwargs(**kwargs) -> None:
    """Checks keyword arguments of `loss` early (used by `make_objective`)."""
    if "model" in kwargs:
        _common.check_model(kwargs["model"], _NAME)
    if "path" in kwargs:
        _common.check_path(kwargs["path"], _NAME)
    if "teacher" in kwargs and kwargs["teacher"] is not None:
        _common.check_teacher(kwargs["teacher"], _NAME)
    _common.check_callable_or_none(
        kwargs.get("teacher_map"), "teacher_map", "a flow map X(x, s, t)", _NAME
    )
    if "teacher" in kwargs or "teacher_map" in kwargs:
        if (kwargs.get("teacher") is None) == (kwargs.get("teacher_map") is None):
            raise ValueError(
                f"{_NAME}: give exactly one of teacher (a velocity field, stepped with `solver`) "
                "and teacher_map (a flow map X(x, s, t))"
            )
    if "solver" in kwargs or "solver_steps" in kwargs:
        check_solver(
            kwargs.get("solver", "heun"), kwargs.get("solver_steps", 1), _NAME, "solver_steps"
        )
    if "max_gap" in kwargs:
        gap = kwargs["max_gap"]
        if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not 0 < gap <= 1:
            raise ValueError(f"{_NAME}: max_gap must be a number in (0, 1], got {gap!r}")


def loss(
    params,
    key: PRNGKeyArray,
    batch: dict,
    *,
    model,
    path,
    teacher: Callable | None = None,
    teacher_map: Callable | None = None,
    solver: str = "heun",
    solver_steps: int = 1,
    max_gap: float = 1.0,
) -> tuple[Float[Array, ""], dict]:
    """Progressive flow-map distillation: one student jump vs two teacher half-jumps.

    Args:
      params: parameters of `model`.
      key: PRNG key (noise, times, model dropout).
      batch: {"x1": (B, *D), "label": (B,) optional; labels go to model and teacher as y=}.
      model: two-time apply function model(params, x, t, *, s=None, y=None, key=None).
      path: the affine path.
      teacher: velocity field teacher(x, t); each half-jump is `solver_steps` steps of `solver`.
      teacher_map: a flow map X_T(x, s, t) used for the half-jumps instead.
      solver: "euler", "midpoint", "heun" or "rk4" (with `teacher`).
      solver_steps: solver steps per half-jump (with `teacher`).
      max_gap: largest t - s trained.

    Returns:
      (loss, aux) with aux = {"loss", "gap_mean", "per_example_loss" (B,)}.
    """
    validate_kwargs(
        model=model,
        path=path,
        teacher=teacher,
        teacher_map=teacher_map,
        solver=solver,
        solver_steps=solver_steps,
        max_gap=max_gap,
    )
    x1, labels = _common.check_batch(batch, _NAME)
    X = FlowMap(model)
    if teacher_map is None:
        teacher_map = ode_flow_map(
            _common.with_labels(teacher, labels), solver=solver, num_steps=solver_steps
        )
    else:
        teacher_map = _common.with_labels(teacher_map, labels)

    k_x0, k_gap, k_s, k_model = jax.random.split(key, 4)
    n = x1.shape[0]
    x0 = jax.random.normal(k_x0, x1.shape, x1.dtype)
    gap = max_gap * (1.0 - jax.random.uniform(k_gap, (n,), x1.dtype))  # in (0, max_gap]
    s = jax.random.uniform(k_s, (n,), x1.dtype) * (1.0 - gap)
    t = s + gap
    m = 0.5 * (s + t)
    x_s = path.interpolate(x0, x1, s)

    target = jax.lax.stop_gradient(teacher_map(teacher_map(x_s, s, m), m, t))
    pred = X(params, x_s, s, t, y=labels, key=k_model)
    per_example = _common.per_example_mse(pred - target)
    value = jnp.mean(per_example)
    return value, {"loss": value, "gap_mean": jnp.mean(gap), "per_example_loss": per_example}
