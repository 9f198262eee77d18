"""Shortcut models (Frans et al. 2024, "One step diffusion via shortcut models"), flow-map form.

A shortcut model s(x_t, t, d) predicts the step that moves x_t to time t + d; in flow-map
notation s(x, t, d) = u(x, t, t + d), the average velocity, and x_{t+d} = X(x, t, t + d).
Frans et al. train (their time convention is flowjax's: t = 0 noise, t = 1 data)

  * flow matching at d = 0, i.e. on the diagonal s = t:
        || u_theta(x_t, t, t) - (alpha'(t) x1 + sigma'(t) x0) ||^2
    (with a `teacher`, its marginal velocity teacher(x_t, t) replaces the conditional target);
  * self-consistency, one jump of 2d = two jumps of d:
        u(x_t, t, t + 2d) = sg[ (u(x_t, t, t + d) + u(x', t + d, t + 2d)) / 2 ],
        x' = X(x_t, t, t + d),
    which is exactly the semigroup X(x, t, t + 2d) = X(X(x, t, t + d), t + d, t + 2d) divided
    by 2d.

Times as in their code: the big step 2d = 2^-k, k ~ U{0, ..., num_levels - 1} (so the smallest
self-consistency half-step is 2^-num_levels), and t uniform on the multiples of 2d in [0, 1);
the flow-matching examples use t ~ U[0, 1]. `bootstrap_fraction` of the batch (their 1/4) is
used for self-consistency, the rest for flow matching; the loss is the mean over the batch.

Guided bootstrap (Frans et al., Sec. 4 and their code's `bootstrap_cfg`): classifier-free
guidance enters only the targets of the smallest self-consistency level, big step
2^(1-M) = two half-steps d = 2^-M; there both half-step velocities are guided,

    u_w(x, t, t + d) = (1 - w) u(x, t, t + d | null) + w u(x, t, t + d | c)

(Ho & Salimans 2022, eq. (6); w = 1 is unguided), so the smallest shortcut learns the guided
field, and every larger level, bootstrapped from smaller ones, inherits it: one evaluation of
the trained map gives a class-guided sample. Flow matching on the diagonal stays the
conditional target, with label dropout (`label_dropout`) training the null label.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax._types import expand_time
from flowjax.flowmaps import _common
from flowjax.flowmaps._cfg import cfg_average_velocity, check_guidance, labels_for_training
from flowjax.flowmaps._map import FlowMap
from flowjax.paths import AffinePath

__all__ = ["Shortcut", "bootstrap_target", "loss"]

_NAME = "shortcut"


def bootstrap_target(
    X: FlowMap, params, x_t, t, d, *, y=None, context=None, guidance=None, null_label=None
):
    """sg[(u(x_t, t, t + d) + u(x', t + d, t + 2d)) / 2], x' = X(x_t, t, t + d): the
    self-consistency target; with `guidance` w (scalar or (B,), 1 = unguided) both half-step
    velocities are classifier-free guided (the guided bootstrap, module docstring)."""
    conds = _common.conditions(y, context)
    if guidance is None:
        u1 = X.average_velocity(params, x_t, t, t + d, **conds)
        x_mid = x_t + expand_time(d, x_t) * u1
        u2 = X.average_velocity(params, x_mid, t + d, t + 2 * d, **conds)
    else:
        w = expand_time(jnp.broadcast_to(jnp.asarray(guidance, x_t.dtype), x_t.shape[:1]), x_t)
        kw = dict(null_label=null_label, guidance=w, context=context)
        u1 = cfg_average_velocity(X, params, x_t, t, t + d, y, **kw)
        x_mid = x_t + expand_time(d, x_t) * u1
        u2 = cfg_average_velocity(X, params, x_mid, t + d, t + 2 * d, y, **kw)
    return jax.lax.stop_gradient(0.5 * (u1 + u2))


class Shortcut(_common.AbstractObjective):
    """Shortcut-model loss: flow matching on the diagonal + two-half-steps self-consistency.

    Attributes:
      path: the affine path.
      model: two-time apply function (None: pass it at call time).
      teacher: optional velocity field for the diagonal target (else the conditional velocity).
      num_levels: M; self-consistency big steps 2d in {1, 1/2, ..., 2^(1-M)}.
      bootstrap_fraction: share of the batch used for self-consistency.
      target_params: parameters for the self-consistency target (EMA); None: sg(params).
      source: what x0 is drawn from (default fj.sources.StandardGaussian()).
      num_classes: real classes of a class-conditional model (label num_classes is null).
      label_dropout: probability of training an example on the null label (CFG training).
      guidance: w of the guided bootstrap at the smallest level (None: unguided; needs
        num_classes).

    Call: `(params, key, batch, *, model=None) -> (loss, aux)` with aux = {"loss", "fm_loss",
    "sc_loss", "per_example_loss" (B,)}.
    """

    path: AffinePath
    model: Callable | None = eqx.field(static=True, default=None)
    teacher: Callable | None = None
    num_levels: int = eqx.field(static=True, default=7)
    bootstrap_fraction: float = eqx.field(static=True, default=0.25)
    target_params: Any = None
    source: Any = eqx.field(default_factory=_common.default_source)
    num_classes: int | None = eqx.field(static=True, default=None)
    label_dropout: float = eqx.field(static=True, default=0.0)
    guidance: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _common.check_common(self, _NAME)
        if self.teacher is not None:
            _common.check_teacher(self.teacher, _NAME)
        _common.check_positive(self.num_levels, "num_levels", _NAME, integer=True)
        _common.check_fraction(self.bootstrap_fraction, "bootstrap_fraction", _NAME)
        check_guidance(self, _NAME)
        w = self.guidance
        if w is not None:
            if isinstance(w, bool) or not isinstance(w, (int, float)):
                raise ValueError(f"{_NAME}: guidance must be a number or None, got {w!r}")
            if self.num_classes is None:
                raise ValueError(f"{_NAME}: guidance needs num_classes (a null label)")

    def __call__(
        self, params, key: PRNGKeyArray, batch: dict, *, model: Callable | None = None
    ) -> tuple[Float[Array, ""], dict]:
        X = FlowMap(_common.bound_model(self.model, model, _NAME))
        path = self.path
        x1, labels, context = _common.read_batch(batch, _NAME)
        n = x1.shape[0]
        n_sc = _common.split_count(n, self.bootstrap_fraction)
        k_x0, k_t, k_level, k_grid, k_model = jax.random.split(key, 5)
        k_drop = jax.random.fold_in(key, 1)  # keeps the unguided draws as they were
        labels = labels_for_training(self, labels, k_drop, _NAME)
        x0 = _common.draw_x0(self.source, k_x0, x1, context, _NAME)
        sc_per = fm_per = jnp.zeros((0,), x1.dtype)

        if n_sc > 0:  # self-consistency on the first n_sc examples
            sc = slice(0, n_sc)
            c_sc = _common.conditions(_common.take(labels, sc), _common.take(context, sc))
            level = jax.random.randint(k_level, (n_sc,), 0, self.num_levels)
            sections = 2**level  # number of big steps covering [0, 1]
            big = 1.0 / sections.astype(x1.dtype)
            t = jax.random.randint(k_grid, (n_sc,), 0, sections).astype(x1.dtype) * big
            d = 0.5 * big
            x_t = path.interpolate(x0[sc], x1[sc], t)
            theta_minus = jax.lax.stop_gradient(
                params if self.target_params is None else self.target_params
            )
            guidance = None
            if self.guidance is not None:  # guided only at the smallest level
                guidance = jnp.where(level == self.num_levels - 1, self.guidance, 1.0)
            target = bootstrap_target(
                X,
                theta_minus,
                x_t,
                t,
                d,
                y=c_sc.get("y"),
                context=c_sc.get("context"),
                guidance=guidance,
                null_label=self.num_classes,
            )
            pred = X.average_velocity(params, x_t, t, t + 2 * d, key=k_model, **c_sc)
            sc_per = _common.per_example_mse(pred - target)

        if n - n_sc > 0:  # flow matching on the diagonal for the rest
            fm = slice(n_sc, n)
            y_fm, ctx_fm = _common.take(labels, fm), _common.take(context, fm)
            t_fm = jax.random.uniform(k_t, (n - n_sc,), x1.dtype)
            x_fm = path.interpolate(x0[fm], x1[fm], t_fm)
            if self.teacher is None:
                v_target = path.velocity_target(x0[fm], x1[fm], t_fm)
            else:
                teacher = _common.with_labels(self.teacher, y_fm, ctx_fm)
                v_target = jax.lax.stop_gradient(teacher(x_fm, t_fm))
            v_pred = X.velocity(
                params,
                x_fm,
                t_fm,
                key=jax.random.fold_in(k_model, 1),
                **_common.conditions(y_fm, ctx_fm),
            )
            fm_per = _common.per_example_mse(v_pred - v_target)

        per_example = jnp.concatenate([sc_per, fm_per])
        value = jnp.mean(per_example)
        return value, {
            "loss": value,
            "fm_loss": _common.masked_mean(fm_per, n - n_sc),
            "sc_loss": _common.masked_mean(sc_per, n_sc),
            "per_example_loss": per_example,
        }


def loss(params, key: PRNGKeyArray, batch: dict, *, model, path, **kwargs):
    """`Shortcut(path=path, **kwargs)(params, key, batch, model=model)`."""
    return Shortcut(path=path, **kwargs)(params, key, batch, model=model)
