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
from typing import Any

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.flowmaps import _common, _consistency
from flowjax.flowmaps._map import FlowMap
from flowjax.flowmaps._ode import check_solver, ode_flow_map
from flowjax.paths import AffinePath

__all__ = ["ConsistencyDistillation", "loss"]

_NAME = "consistency_distill"


class ConsistencyDistillation(_common.AbstractObjective):
    """Consistency distillation loss (Song et al. 2023, Algorithm 2) for a flow map.

    Attributes:
      path: the affine path of the teacher.
      teacher: velocity field teacher(x, t).
      model: two-time apply function (None: pass it at call time).
      num_steps: N, the grid size (dt = 1 / N).
      solver: the teacher's ODE step ("euler", "midpoint", "heun", "rk4").
      solver_steps: sub-steps of `solver` within [t, t + dt].
      target_params: parameters of the target network (EMA); None: stop-gradient of params.
      distance: "l2" or "pseudo_huber".
      huber_c: pseudo-Huber constant.
      source: what x0 is drawn from (default fj.sources.StandardGaussian()).

    Call: `(params, key, batch, *, model=None) -> (loss, aux)` with aux = {"loss", "t_mean",
    "per_example_loss" (B,)}.
    """

    path: AffinePath
    teacher: Callable
    model: Callable | None = eqx.field(static=True, default=None)
    num_steps: int = eqx.field(static=True, default=18)
    solver: str = eqx.field(static=True, default="heun")
    solver_steps: int = eqx.field(static=True, default=1)
    target_params: Any = None
    distance: str = eqx.field(static=True, default="l2")
    huber_c: float = eqx.field(static=True, default=0.00054)
    source: Any = eqx.field(default_factory=_common.default_source)

    def __check_init__(self):
        _consistency.check(self, _NAME)
        _common.check_teacher(self.teacher, _NAME)
        check_solver(self.solver, self.solver_steps, _NAME, "solver_steps")

    def __call__(
        self, params, key: PRNGKeyArray, batch: dict, *, model: Callable | None = None
    ) -> tuple[Float[Array, ""], dict]:
        X = FlowMap(_common.bound_model(self.model, model, _NAME))
        x1, labels, context = _common.read_batch(batch, _NAME)
        step = ode_flow_map(
            _common.with_labels(self.teacher, labels, context),
            solver=self.solver,
            num_steps=self.solver_steps,
        )

        _, t, t_next, x_t, k_model = _consistency.draw_points(
            key, x1, self.path, self.num_steps, self.source, context, _NAME
        )
        x_next = jax.lax.stop_gradient(step(x_t, t, t_next))
        return _consistency.loss(self, X, params, x_t, t, x_next, t_next, labels, context, k_model)


def loss(params, key: PRNGKeyArray, batch: dict, *, model, path, **kwargs):
    """`ConsistencyDistillation(path=path, **kwargs)(params, key, batch, model=model)`."""
    return ConsistencyDistillation(path=path, **kwargs)(params, key, batch, model=model)
