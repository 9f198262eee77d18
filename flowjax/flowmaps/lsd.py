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
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.flowmaps import _common
from flowjax.flowmaps._map import FlowMap
from flowjax.objectives.timesteps import AbstractTimeDist, Uniform, resolve_time_dist
from flowjax.paths import AffinePath

__all__ = ["LSD", "loss"]

_NAME = "lsd"


class LSD(_common.AbstractObjective):
    """LSD loss: diagonal flow matching + Lagrangian self-distillation.

    Attributes:
      path: the affine path.
      model: two-time apply function (None: pass it at call time).
      teacher: optional velocity field for the diagonal target (else the conditional velocity).
      time_dist: law of the times (object or name in TIME_DISTS).
      diagonal_fraction: share of the batch trained on the diagonal.
      source: what x0 is drawn from (default fj.sources.StandardGaussian()).

    Call: `(params, key, batch, *, model=None) -> (loss, aux)` with aux = {"loss",
    "diag_loss", "lsd_loss", "per_example_loss" (B,)}.
    """

    path: AffinePath
    model: Callable | None = eqx.field(static=True, default=None)
    teacher: Callable | None = None
    time_dist: AbstractTimeDist = eqx.field(default=Uniform(), converter=resolve_time_dist)
    diagonal_fraction: float = eqx.field(static=True, default=0.75)
    source: Any = eqx.field(default_factory=_common.default_source)

    def __check_init__(self):
        _common.check_common(self, _NAME)
        if self.teacher is not None:
            _common.check_teacher(self.teacher, _NAME)
        _common.check_fraction(self.diagonal_fraction, "diagonal_fraction", _NAME)

    def __call__(
        self, params, key: PRNGKeyArray, batch: dict, *, model: Callable | None = None
    ) -> tuple[Float[Array, ""], dict]:
        X = FlowMap(_common.bound_model(self.model, model, _NAME))
        path, time_dist = self.path, self.time_dist
        x1, labels, context = _common.read_batch(batch, _NAME)
        n = x1.shape[0]
        n_diag = _common.split_count(n, self.diagonal_fraction)
        k_x0, k_t, k_pair, k_model = jax.random.split(key, 4)
        x0 = _common.draw_x0(self.source, k_x0, x1, context, _NAME)
        diag_per = lsd_per = jnp.zeros((0,), x1.dtype)

        if n_diag > 0:
            sl = slice(0, n_diag)
            y_d, ctx_d = _common.take(labels, sl), _common.take(context, sl)
            t_d = time_dist.sample(k_t, (n_diag,), path).astype(x1.dtype)
            x_d = path.interpolate(x0[sl], x1[sl], t_d)
            if self.teacher is None:
                v_target = path.velocity_target(x0[sl], x1[sl], t_d)
            else:
                teacher = _common.with_labels(self.teacher, y_d, ctx_d)
                v_target = jax.lax.stop_gradient(teacher(x_d, t_d))
            v_pred = X.velocity(params, x_d, t_d, key=k_model, **_common.conditions(y_d, ctx_d))
            diag_per = _common.per_example_mse(v_pred - v_target)

        if n - n_diag > 0:
            sl = slice(n_diag, n)
            c_o = _common.conditions(_common.take(labels, sl), _common.take(context, sl))
            s, t = _common.sample_pairs(
                k_pair, n - n_diag, dtype=x1.dtype, time_dist=time_dist, path=path
            )
            x_s = path.interpolate(x0[sl], x1[sl], s)
            k_lsd = jax.random.fold_in(k_model, 1)

            def along_t(tt):
                return X(params, x_s, s, tt, key=k_lsd, **c_o)

            x_t, dx_dt = jax.jvp(along_t, (t,), (jnp.ones_like(t),))
            v_self = jax.lax.stop_gradient(X.velocity(params, jax.lax.stop_gradient(x_t), t, **c_o))
            lsd_per = _common.per_example_mse(dx_dt - v_self)

        per_example = jnp.concatenate([diag_per, lsd_per])
        value = jnp.mean(per_example)
        return value, {
            "loss": value,
            "diag_loss": _common.masked_mean(diag_per, n_diag),
            "lsd_loss": _common.masked_mean(lsd_per, n - n_diag),
            "per_example_loss": per_example,
        }


def loss(params, key: PRNGKeyArray, batch: dict, *, model, path, **kwargs):
    """`LSD(path=path, **kwargs)(params, key, batch, model=model)`."""
    return LSD(path=path, **kwargs)(params, key, batch, model=model)
