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
DIRECTIONS = ("forward", "both")


def validate_kwargs(**kwargs) -> None:
    """Checks keyword arguments of `loss` early (used by `make_objective`)."""
    if "model" in kwargs:
        _common.check_model(kwargs["model"], _NAME)
    if "path" in kwargs:
        _common.check_path(kwargs["path"], _NAME)
    if "teacher" in kwargs:
        _common.check_teacher(kwargs["teacher"], _NAME)
    if "time_dist" in kwargs:
        _common.check_time_dist(kwargs["time_dist"], _NAME)
    if "directions" in kwargs:
        _common.check_choice(kwargs["directions"], "directions", DIRECTIONS, _NAME)


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
    time_dist = _common.check_time_dist(time_dist, _NAME)
    x1, labels = _common.check_batch(batch, _NAME)
    X = FlowMap(model)
    b = _common.with_labels(teacher, labels)

    k_x0, k_t, k_model = jax.random.split(key, 3)
    x0 = jax.random.normal(k_x0, x1.shape, x1.dtype)
    s, t = _common.sample_pairs(
        k_t,
        x1.shape[0],
        dtype=x1.dtype,
        time_dist=time_dist,
        path=path,
        ordered=directions == "forward",
    )
    x_s = path.interpolate(x0, x1, s)
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
