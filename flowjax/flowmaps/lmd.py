"""Lagrangian map distillation (LMD) from a teacher velocity.

The flow map of b is the unique solution of the Lagrangian equation
d/dt X(x, s, t) = b(X(x, s, t), t), X(x, s, s) = x (Boffi, Albergo & Vanden-Eijnden 2024,
"Flow map matching", Lagrangian map distillation), so it is the minimiser, with value 0, of

    L(theta) = E_{s, t, x_s ~ rho_s} || d/dt X_theta(x_s, s, t) - b(X_theta(x_s, s, t), t) ||^2

with x_s = alpha(s) x1 + sigma(s) x0 a point of the path. d/dt X_theta is one forward-mode
derivative (`jax.jvp` in t); the identity at s = t is built into X_theta. The gradient flows
through the teacher's input X_theta (the teacher's own parameters are fixed), as in the paper.

Times: s, t i.i.d. from `time_dist`, then sorted to s <= t (`directions="forward"`, all the
sampler needs) or left in either order (`directions="both"`, learning the inverse map too).
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
from flowjax.objectives.timesteps import AbstractTimeDist, Uniform, resolve_time_dist
from flowjax.paths import AffinePath

__all__ = ["LMD", "loss"]

_NAME = "lmd"
DIRECTIONS = _common.DIRECTIONS


class LMD(_common.AbstractObjective):
    """LMD loss (Boffi et al. 2024, Lagrangian map distillation).

    Attributes:
      path: the affine path the teacher velocity belongs to.
      teacher: velocity field teacher(x, t, y=None) -> (B, *D).
      model: two-time apply function model(params, x, t, *, s=None, y=None, context=None,
        key=None); None: pass it at call time.
      time_dist: law of each of the two times (object or name in TIME_DISTS).
      directions: "forward" (s <= t) or "both".
      source: what x0 is drawn from (default fj.sources.StandardGaussian()).

    Call: `(params, key, batch, *, model=None) -> (loss, aux)`; labels and context of the batch
    go to model and teacher; aux = {"loss", "gap_mean", "per_example_loss" (B,)}.
    """

    path: AffinePath
    teacher: Callable
    model: Callable | None = eqx.field(static=True, default=None)
    time_dist: AbstractTimeDist = eqx.field(default=Uniform(), converter=resolve_time_dist)
    directions: str = eqx.field(static=True, default="forward")
    source: Any = eqx.field(default_factory=_common.default_source)

    def __check_init__(self):
        _common.check_map_distillation(self, _NAME)

    def __call__(
        self, params, key: PRNGKeyArray, batch: dict, *, model: Callable | None = None
    ) -> tuple[Float[Array, ""], dict]:
        X = FlowMap(_common.bound_model(self.model, model, _NAME))
        x_s, s, t, conds, b, k_model = _common.map_distillation_points(self, key, batch, _NAME)

        def along_t(tt):
            return X(params, x_s, s, tt, key=k_model, **conds)

        x_t, dx_dt = jax.jvp(along_t, (t,), (jnp.ones_like(t),))
        per_example = _common.per_example_mse(dx_dt - b(x_t, t))
        value = jnp.mean(per_example)
        return value, {
            "loss": value,
            "gap_mean": jnp.mean(jnp.abs(t - s)),
            "per_example_loss": per_example,
        }


def loss(params, key: PRNGKeyArray, batch: dict, *, model, path, **kwargs):
    """`LMD(path=path, **kwargs)(params, key, batch, model=model)`."""
    return LMD(path=path, **kwargs)(params, key, batch, model=model)
