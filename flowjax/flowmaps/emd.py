"""Eulerian map distillation (EMD) from a teacher velocity.

The flow map of b is constant along trajectories in its start point, which is the Eulerian
(transport) equation d/ds X(x, s, t) + grad_x X(x, s, t) . b(x, s) = 0 with X(x, t, t) = x
(Boffi, Albergo & Vanden-Eijnden 2024, "Flow map matching", Eulerian map distillation).
Its minimiser, with value 0, is the flow map:

    L(theta) = E_{s, t, x_s} || d/ds X_theta(x_s, s, t) + grad X_theta(x_s, s, t) b(x_s, s) ||^2

The residual is a single Jacobian-vector product of (x, s) -> X_theta(x, s, t) along the
tangent (b(x_s, s), 1) (`jax.jvp`), so no Jacobian is formed. The teacher is evaluated at the
data-path point only, so no gradient reaches it.

Times: s, t i.i.d. from `time_dist`, sorted to s <= t (`directions="forward"`) or in either
order (`directions="both"`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.flowmaps import _common
from flowjax.flowmaps._map import FlowMap
from flowjax.objectives.timesteps import AbstractTimeDist, Uniform

__all__ = ["loss", "validate_kwargs"]

_NAME = "emd"
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
    """EMD loss (Boffi et al. 2024, Eulerian map distillation).

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
    b_s = jax.lax.stop_gradient(b(x_s, s))

    def of_start(xx, ss):
        return X(params, xx, ss, t, y=labels, key=k_model)

    _, residual = jax.jvp(of_start, (x_s, s), (b_s.astype(x_s.dtype), jnp.ones_like(s)))
    per_example = _common.per_example_mse(residual)
    value = jnp.mean(per_example)
    return value, {
        "loss": value,
        "gap_mean": jnp.mean(jnp.abs(t - s)),
        "per_example_loss": per_example,
    }
