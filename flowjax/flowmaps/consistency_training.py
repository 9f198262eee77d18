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

from collections.abc import Callable
from typing import Any

import equinox as eqx
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.flowmaps import _common, _consistency
from flowjax.flowmaps._map import FlowMap
from flowjax.paths import AffinePath

__all__ = ["ConsistencyTraining", "loss", "sample_points"]

_NAME = "consistency_training"


def sample_points(key, x1, path, num_steps: int, source=None, context=None):
    """(x0, t, t_next, x_t, x_next, model key) exactly as the loss draws them from `key`."""
    source = _common.default_source() if source is None else source
    x0, t, t_next, x_t, k_model = _consistency.draw_points(
        key, x1, path, num_steps, source, context, _NAME
    )
    return x0, t, t_next, x_t, path.interpolate(x0, x1, t_next), k_model


class ConsistencyTraining(_common.AbstractObjective):
    """Consistency training loss (Song et al. 2023, Algorithm 3) for a flow map.

    Attributes:
      path: the affine path.
      model: two-time apply function (None: pass it at call time).
      num_steps: N, the grid size (dt = 1 / N); iCT grows N during training.
      target_params: parameters of the target network (EMA); None: stop-gradient of params.
      distance: "l2" or "pseudo_huber".
      huber_c: pseudo-Huber constant.
      source: what x0 is drawn from (default fj.sources.StandardGaussian()).

    Call: `(params, key, batch, *, model=None) -> (loss, aux)` with aux = {"loss", "t_mean",
    "per_example_loss" (B,)}.
    """

    path: AffinePath
    model: Callable | None = eqx.field(static=True, default=None)
    num_steps: int = eqx.field(static=True, default=18)
    target_params: Any = None
    distance: str = eqx.field(static=True, default="l2")
    huber_c: float = eqx.field(static=True, default=0.00054)
    source: Any = eqx.field(default_factory=_common.default_source)

    def __check_init__(self):
        _consistency.check(self, _NAME)

    def __call__(
        self, params, key: PRNGKeyArray, batch: dict, *, model: Callable | None = None
    ) -> tuple[Float[Array, ""], dict]:
        X = FlowMap(_common.bound_model(self.model, model, _NAME))
        x1, labels, context = _common.read_batch(batch, _NAME)
        _, t, t_next, x_t, x_next, k_model = sample_points(
            key, x1, self.path, self.num_steps, self.source, context
        )
        return _consistency.loss(self, X, params, x_t, t, x_next, t_next, labels, context, k_model)


def loss(params, key: PRNGKeyArray, batch: dict, *, model, path, **kwargs):
    """`ConsistencyTraining(path=path, **kwargs)(params, key, batch, model=model)`."""
    return ConsistencyTraining(path=path, **kwargs)(params, key, batch, model=model)
