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

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.flowmaps import _common
from flowjax.flowmaps._map import FlowMap
from flowjax.objectives.timesteps import AbstractTimeDist, Uniform

__all__ = ["loss", "validate_kwargs"]

_NAME = "lmd"
_UNIFORM = Uniform()
DIRECTIONS = _common.DIRECTIONS


def validate_kwargs(**kwargs) -> None:
    """Checks keyword arguments of `loss` early (used by `make_objective`)."""
    _common.check_map_distillation_kwargs(kwargs, _NAME)


def loss(
    params,
    key: PRNGKeyArray,
    batch: dict,
    *,
    model,
    path,
    teacher,
    time_dist: AbstractTimeDist | str = _UNIFORM,
    directions: str = "forward",
) -> tuple[Float[Array, ""], dict]:
    """LMD loss (Boffi et al. 2024, Lagrangian map distillation).

    Args:
      params: parameters of `model`.
      key: PRNG key (noise, times, model dropout).
      batch: {"x1": (B, *D), "label": (B,) optional; labels go to model and teacher as y=}.
      model: two-time apply function model(params, x, t, *, s=None, y=None, key=None).
      path: the affine path the teacher velocity belongs to.
      teacher: velocity field teacher(x, t) -> (B, *D).
      time_dist: law of each of the two times (object or name in TIME_DISTS).
      directions: "forward" (s <= t) or "both".

    Returns:
      (loss, aux) with aux = {"loss", "gap_mean", "per_example_loss" (B,)}.
    """
    validate_kwargs(model=model, path=path, teacher=teacher, directions=directions)
    X = FlowMap(model)
    x_s, s, t, labels, b, k_model = _common.map_distillation_points(
        key,
        batch,
        path=path,
        teacher=teacher,
        time_dist=time_dist,
        directions=directions,
        objective=_NAME,
    )

    def along_t(tt):
        return X(params, x_s, s, tt, y=labels, key=k_model)

    x_t, dx_dt = jax.jvp(along_t, (t,), (jnp.ones_like(t),))
    per_example = _common.per_example_mse(dx_dt - b(x_t, t))
    value = jnp.mean(per_example)
    return value, {
        "loss": value,
        "gap_mean": jnp.mean(jnp.abs(t - s)),
        "per_example_loss": per_example,
    }
