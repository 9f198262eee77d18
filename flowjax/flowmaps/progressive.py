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
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.flowmaps import _common
from flowjax.flowmaps._map import FlowMap
from flowjax.flowmaps._ode import check_solver, ode_flow_map
from flowjax.paths import AffinePath

__all__ = ["Progressive", "loss"]

_NAME = "progressive"


class Progressive(_common.AbstractObjective):
    """Progressive flow-map distillation: one student jump vs two teacher half-jumps.

    Attributes:
      path: the affine path.
      model: two-time apply function (None: pass it at call time).
      teacher: velocity field teacher(x, t); each half-jump is `solver_steps` steps of `solver`.
      teacher_map: a flow map X_T(x, s, t) used for the half-jumps instead (exactly one of
        teacher and teacher_map).
      solver: "euler", "midpoint", "heun" or "rk4" (with `teacher`).
      solver_steps: solver steps per half-jump (with `teacher`).
      max_gap: largest t - s trained, in (0, 1].
      source: what x0 is drawn from (default fj.sources.StandardGaussian()).

    Call: `(params, key, batch, *, model=None) -> (loss, aux)` with aux = {"loss",
    "gap_mean", "per_example_loss" (B,)}.
    """

    path: AffinePath
    model: Callable | None = eqx.field(static=True, default=None)
    teacher: Callable | None = None
    teacher_map: Callable | None = None
    solver: str = eqx.field(static=True, default="heun")
    solver_steps: int = eqx.field(static=True, default=1)
    max_gap: float = eqx.field(static=True, default=1.0)
    source: Any = eqx.field(default_factory=_common.default_source)

    def __check_init__(self):
        _common.check_common(self, _NAME)
        if self.teacher is not None:
            _common.check_teacher(self.teacher, _NAME)
        _common.check_callable_or_none(
            self.teacher_map, "teacher_map", "a flow map X(x, s, t)", _NAME
        )
        if (self.teacher is None) == (self.teacher_map is None):
            raise ValueError(
                f"{_NAME}: give exactly one of teacher (a velocity field, stepped with `solver`) "
                "and teacher_map (a flow map X(x, s, t))"
            )
        check_solver(self.solver, self.solver_steps, _NAME, "solver_steps")
        gap = self.max_gap
        if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not 0 < gap <= 1:
            raise ValueError(f"{_NAME}: max_gap must be a number in (0, 1], got {gap!r}")

    def __call__(
        self, params, key: PRNGKeyArray, batch: dict, *, model: Callable | None = None
    ) -> tuple[Float[Array, ""], dict]:
        X = FlowMap(_common.bound_model(self.model, model, _NAME))
        x1, labels, context = _common.read_batch(batch, _NAME)
        conds = _common.conditions(labels, context)
        if self.teacher_map is None:
            teacher_map = ode_flow_map(
                _common.with_labels(self.teacher, labels, context),
                solver=self.solver,
                num_steps=self.solver_steps,
            )
        else:
            teacher_map = _common.with_labels(self.teacher_map, labels, context)

        k_x0, k_gap, k_s, k_model = jax.random.split(key, 4)
        n = x1.shape[0]
        x0 = _common.draw_x0(self.source, k_x0, x1, context, _NAME)
        gap = self.max_gap * (1.0 - jax.random.uniform(k_gap, (n,), x1.dtype))  # (0, max_gap]
        s = jax.random.uniform(k_s, (n,), x1.dtype) * (1.0 - gap)
        t = s + gap
        m = 0.5 * (s + t)
        x_s = self.path.interpolate(x0, x1, s)

        target = jax.lax.stop_gradient(teacher_map(teacher_map(x_s, s, m), m, t))
        pred = X(params, x_s, s, t, key=k_model, **conds)
        per_example = _common.per_example_mse(pred - target)
        value = jnp.mean(per_example)
        return value, {"loss": value, "gap_mean": jnp.mean(gap), "per_example_loss": per_example}


def loss(params, key: PRNGKeyArray, batch: dict, *, model, path, **kwargs):
    """`Progressive(path=path, **kwargs)(params, key, batch, model=model)`."""
    return Progressive(path=path, **kwargs)(params, key, batch, model=model)
