"""Lagrangian self-distillation (LSD), Boffi, Albergo & Vanden-Eijnden 2025, "How to build a
consistency model: learning flow maps via self-distillation".

The velocity of a flow map is its diagonal: v_theta(x, t) = d/dt' X_theta(x, t, t')|_{t'=t}
= u_theta(x, t, t) (the tangent condition). LSD trains both at once:

  * flow matching on the diagonal (s = t):
        || u_theta(x_t, t, t) - (alpha'(t) x1 + sigma'(t) x0) ||^2
    (or, with a `teacher`, its marginal velocity teacher(x_t, t) as the target);
  * the Lagrangian equation of LMD (see `lmd`) with the teacher replaced by the model's own
    diagonal, under stop-gradient:
        || d/dt X_theta(x_s, s, t) - sg[ v_theta(X_theta(x_s, s, t), t) ] ||^2.

Both vanish at the exact flow map (the diagonal term with the marginal velocity as target).
Times: s, t i.i.d. from `time_dist`, sorted to s <= t for the LSD term; a share
`diagonal_fraction` of the batch trains the diagonal term at its own t ~ time_dist, the rest
the LSD term; the loss is the batch mean.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.flowmaps import _common
from flowjax.flowmaps._map import FlowMap
from flowjax.objectives.timesteps import AbstractTimeDist, Uniform

__all__ = ["loss", "validate_kwargs"]

_NAME = "lsd"
_UNIFORM = Uniform()


def validate_kwargs(**kwargs) -> None:
    """Checks keyword arguments of `loss` early (used by `make_objective`)."""
    if "model" in kwargs:
        _common.check_model(kwargs["model"], _NAME)
    if "path" in kwargs:
        _common.check_path(kwargs["path"], _NAME)
    if kwargs.get("teacher") is not None:
        _common.check_teacher(kwargs["teacher"], _NAME)
    if "time_dist" in kwargs:
        _common.check_time_dist(kwargs["time_dist"], _NAME)
    if "diagonal_fraction" in kwargs:
        _common.check_fraction(kwargs["diagonal_fraction"], "diagonal_fraction", _NAME)


def loss(
    params,
    key: PRNGKeyArray,
    batch: dict,
    *,
    model,
    path,
    teacher: Callable | None = None,
    time_dist: AbstractTimeDist | str = _UNIFORM,
    diagonal_fraction: float = 0.75,
) -> tuple[Float[Array, ""], dict]:
    """LSD loss: diagonal flow matching + Lagrangian self-distillation.

    Args:
      params: parameters of `model`.
      key: PRNG key (noise, times, model dropout).
      batch: {"x1": (B, *D), "label": (B,) optional; labels go to model and teacher as y=}.
      model: two-time apply function model(params, x, t, *, s=None, y=None, key=None).
      path: the affine path.
      teacher: optional velocity field for the diagonal target (else the conditional velocity).
      time_dist: law of the times (object or name in TIME_DISTS).
      diagonal_fraction: share of the batch trained on the diagonal.

    Returns:
      (loss, aux) with aux = {"loss", "diag_loss", "lsd_loss", "per_example_loss" (B,)}.
    """
    validate_kwargs(model=model, path=path, teacher=teacher, diagonal_fraction=diagonal_fraction)
    time_dist = _common.check_time_dist(time_dist, _NAME)
    x1, labels = _common.check_batch(batch, _NAME)
    X = FlowMap(model)
    n = x1.shape[0]
    n_diag = _common.split_count(n, diagonal_fraction)
    k_x0, k_t, k_pair, k_model = jax.random.split(key, 4)
    x0 = jax.random.normal(k_x0, x1.shape, x1.dtype)
    diag_per = lsd_per = jnp.zeros((0,), x1.dtype)

    if n_diag > 0:
        sl = slice(0, n_diag)
        y_d = _common.take(labels, sl)
        t_d = time_dist.sample(k_t, (n_diag,), path).astype(x1.dtype)
        x_d = path.interpolate(x0[sl], x1[sl], t_d)
        if teacher is None:
            v_target = path.velocity_target(x0[sl], x1[sl], t_d)
        else:
            v_target = jax.lax.stop_gradient(_common.with_labels(teacher, y_d)(x_d, t_d))
        v_pred = X.velocity(params, x_d, t_d, y=y_d, key=k_model)
        diag_per = _common.per_example_mse(v_pred - v_target)

    if n - n_diag > 0:
        sl = slice(n_diag, n)
        y_o = _common.take(labels, sl)
        s, t = _common.sample_pairs(
            k_pair, n - n_diag, dtype=x1.dtype, time_dist=time_dist, path=path
        )
        x_s = path.interpolate(x0[sl], x1[sl], s)
        k_lsd = jax.random.fold_in(k_model, 1)

        def along_t(tt):
            return X(params, x_s, s, tt, y=y_o, key=k_lsd)

        x_t, dx_dt = jax.jvp(along_t, (t,), (jnp.ones_like(t),))
        v_self = jax.lax.stop_gradient(X.velocity(params, jax.lax.stop_gradient(x_t), t, y=y_o))
        lsd_per = _common.per_example_mse(dx_dt - v_self)

    per_example = jnp.concatenate([diag_per, lsd_per])
    value = jnp.mean(per_example)
    return value, {
        "loss": value,
        "diag_loss": _common.masked_mean(diag_per, n_diag),
        "lsd_loss": _common.masked_mean(lsd_per, n - n_diag),
        "per_example_loss": per_example,
    }
