"""MeanFlow (Geng et al. 2025, "Mean flows for one-step generative modeling"), flowjax time.

MeanFlow's network is the average velocity u(z_t, r, t) = 1/(t - r) int_r^t v(z_tau, tau) dtau
in their time, where t = 0 is data, t = 1 noise, z_t = (1 - t) x + t eps, r < t, and sampling
jumps backwards z_r = z_t - (t - r) u. Their identity (eq. (6)) and target (eqs. (8)-(10)):

    u(z_t, r, t) = v(z_t, t) - (t - r) d/dt u(z_t, r, t),
    d/dt u = v . grad_z u + d_t u      (jvp along (v, 0, 1) in (z, r, t)).

Translation. Flowjax time is tau = 1 - t_MF. Their start point z_t (the noisier time t_MF)
is our start time s = 1 - t_MF and their destination r is our t = 1 - r_MF, so s < t and
t - s = t_MF - r_MF. Velocities flip sign (v = -v_MF, u = -u_MF), and d/dt_MF = -d/ds. With
X(x, s, t) = x + (t - s) u(x, s, t) the identity becomes

    u(x_s, s, t) = v(x_s, s) + (t - s) d/ds u(x_s, s, t),
    d/ds u = v . grad_x u + d_s u      (jvp along (v, 1, 0) in (x, s, t)),

obtained directly by differentiating (t - s) u(x_s, s, t) = int_s^t v dtau in s along the
trajectory. It is the Eulerian equation of the flow map (see `emd`) with the derivative term
stop-gradiented; since the target is linear in v, the conditional velocity
alpha'(s) x1 + sigma'(s) x0 may stand in for v (their eq. (10)). With a `teacher`, its marginal
velocity is used instead.

Loss: sg(w) || u_theta - sg(u_tgt) ||^2 with the adaptive weight w = 1 / (||err||^2 + c)^p
(their adaptive loss weighting; p = 0 is plain L2). Times: s, t i.i.d. from `time_dist`,
sorted so s <= t, and a share 1 - `offdiag_fraction` of the batch set on the diagonal t = s
(their default: 25% with r != t).

Guidance inside the map (Geng et al. 2025, Sec. 4.2 "Mean Flows with Guidance" and the
appendix's improved CFG). The target field is the CFG field v_cfg(x, t | c) = w v(x, t | c) +
(1 - w) v(x, t) (their eq. (13)); MeanFlow learns its average velocity u_cfg with the same
identity, the sample velocity v_t standing for v(x, t | c) and the network's own diagonal
u_cfg(x, t, t) for the unconditional field (eq. (15)). With the extra mixing scale kappa:

    v~ = omega v_t + kappa u_cfg(x, t, t | c) + (1 - omega - kappa) u_cfg(x, t, t | null),

all stop-gradiented, and the target is u_tgt = v~ + (t - s) d/ds u along (v~, 1, 0). Its fixed
point u(x, t, t | c) = w' v(x, t | c) + (1 - w') v(x, t) has the effective guidance scale
w' = omega / (1 - kappa) (solve u = omega v_c + kappa u + (1 - omega - kappa) v_u for u).
omega = 1, kappa = 0 is the unguided target. Examples given the null label (label dropout,
which trains the unconditional field) keep v~ = v_t. A guided map gives a class-guided sample
in one evaluation, with no second (null-label) pass.
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
from flowjax.flowmaps._cfg import check_guidance, labels_for_training
from flowjax.flowmaps._map import FlowMap
from flowjax.objectives.timesteps import AbstractTimeDist, Uniform, resolve_time_dist
from flowjax.paths import AffinePath

__all__ = ["MeanFlow", "guided_target", "guided_velocity", "loss", "target"]

_NAME = "meanflow"


def target(model, params, x, s, t, v, *, y=None, key=None, context=None):
    """(u_theta(x, s, t), u_tgt) with u_tgt = v + (t - s) d/ds u_theta along (v, 1, 0).

    The MeanFlow target in flowjax time (module docstring); not stop-gradiented here.
    """
    X = FlowMap(model)

    def u_fn(xx, ss, tt):
        return X.average_velocity(params, xx, ss, tt, y=y, key=key, context=context)

    u, du_ds = jax.jvp(u_fn, (x, s, t), (v.astype(x.dtype), jnp.ones_like(s), jnp.zeros_like(t)))
    return u, v + expand_time(t - s, x) * du_ds


def guided_velocity(v, u_cond, u_null, omega, kappa):
    """v~ = omega v + kappa u(x, t, t | c) + (1 - omega - kappa) u(x, t, t | null).

    MeanFlow's guided field (Geng et al. 2025, eq. (15) with the appendix's kappa); its fixed
    point is classifier-free guidance at scale omega / (1 - kappa).
    """
    return omega * v + kappa * u_cond + (1.0 - omega - kappa) * u_null


def guided_target(
    model,
    params,
    x,
    s,
    t,
    v,
    *,
    y,
    null_label: int,
    omega: float,
    kappa: float = 0.0,
    key=None,
    context=None,
):
    """(u_theta(x, s, t | y), u_tgt) with MeanFlow's guided target (module docstring).

    u_tgt = v~ + (t - s) d/ds u_theta along (v~, 1, 0), v~ = `guided_velocity` of v and the
    network's own stop-gradiented diagonal u(x, s, s | y), u(x, s, s | null); examples whose
    label is the null label get v~ = v. omega = 1, kappa = 0 gives `target`'s value.
    """
    X = FlowMap(model)
    y = jnp.asarray(y)
    sg = jax.lax.stop_gradient(params)
    n = x.shape[0]
    s_b = jnp.broadcast_to(jnp.asarray(s, x.dtype), (n,))
    both = X.velocity(  # one batched call: conditional and null halves
        sg,
        jnp.concatenate([x, x]),
        jnp.concatenate([s_b, s_b]),
        y=jnp.concatenate([y, jnp.full_like(y, null_label)]),
        context=None if context is None else jnp.concatenate([context, context]),
    )
    u_c, u_u = both[:n], both[n:]
    guided = guided_velocity(v, u_c, u_u, omega, kappa)
    is_null = expand_time(y == null_label, x)
    v_tilde = jax.lax.stop_gradient(jnp.where(is_null, v, guided))
    return target(model, params, x, s, t, v_tilde, y=y, key=key, context=context)


class MeanFlow(_common.AbstractObjective):
    """MeanFlow loss (Geng et al. 2025, eqs. (9)-(10)) in flowjax time.

    Attributes:
      path: the affine path.
      model: two-time apply function (None: pass it at call time).
      teacher: optional velocity field for v (else the conditional velocity).
      time_dist: law of each of the two times (object or name in TIME_DISTS; the paper uses
        logit-normal).
      offdiag_fraction: share of the batch with s < t (the rest has s = t).
      adaptive_p: power p of the adaptive weight (0: plain squared error).
      adaptive_c: constant c of the adaptive weight.
      source: what x0 is drawn from (default fj.sources.StandardGaussian()).
      num_classes: real classes of a class-conditional model (label num_classes is null).
      label_dropout: probability of training an example on the null label (CFG training).
      omega, kappa: MeanFlow's guidance scales (module docstring); guidance needs
        num_classes; omega = 1, kappa = 0 (default) is unguided. Effective CFG scale
        omega / (1 - kappa).

    Call: `(params, key, batch, *, model=None) -> (loss, aux)` with aux = {"loss", "mse",
    "per_example_loss" (B,)}.
    """

    path: AffinePath
    model: Callable | None = eqx.field(static=True, default=None)
    teacher: Callable | None = None
    time_dist: AbstractTimeDist = eqx.field(default=Uniform(), converter=resolve_time_dist)
    offdiag_fraction: float = eqx.field(static=True, default=0.25)
    adaptive_p: float = eqx.field(static=True, default=1.0)
    adaptive_c: float = eqx.field(static=True, default=1e-3)
    source: Any = eqx.field(default_factory=_common.default_source)
    num_classes: int | None = eqx.field(static=True, default=None)
    label_dropout: float = eqx.field(static=True, default=0.0)
    omega: float = eqx.field(static=True, default=1.0)
    kappa: float = eqx.field(static=True, default=0.0)

    @property
    def guided(self) -> bool:
        return self.omega != 1.0 or self.kappa != 0.0

    def __check_init__(self):
        _common.check_common(self, _NAME)
        if self.teacher is not None:
            _common.check_teacher(self.teacher, _NAME)
        _common.check_fraction(self.offdiag_fraction, "offdiag_fraction", _NAME)
        check_guidance(self, _NAME)
        for name in ("omega", "kappa"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{_NAME}: {name} must be a number, got {value!r}")
        if not self.kappa < 1.0:
            raise ValueError(
                f"{_NAME}: kappa must be < 1 (scale omega / (1 - kappa)), got {self.kappa!r}"
            )
        if self.guided and self.num_classes is None:
            raise ValueError(f"{_NAME}: omega/kappa guidance needs num_classes (a null label)")
        p = self.adaptive_p
        if isinstance(p, bool) or not isinstance(p, (int, float)) or p < 0:
            raise ValueError(f"{_NAME}: adaptive_p must be a number >= 0, got {p!r}")
        _common.check_positive(self.adaptive_c, "adaptive_c", _NAME)

    def __call__(
        self, params, key: PRNGKeyArray, batch: dict, *, model: Callable | None = None
    ) -> tuple[Float[Array, ""], dict]:
        model = _common.bound_model(self.model, model, _NAME)
        path = self.path
        x1, labels, context = _common.read_batch(batch, _NAME)
        n = x1.shape[0]
        k_x0, k_t, k_model = jax.random.split(key, 3)
        k_drop = jax.random.fold_in(key, 1)  # keeps the unguided draws as they were
        labels = labels_for_training(self, labels, k_drop, _NAME)
        x0 = _common.draw_x0(self.source, k_x0, x1, context, _NAME)
        s, t = _common.sample_pairs(k_t, n, dtype=x1.dtype, time_dist=self.time_dist, path=path)
        off = jnp.arange(n) < _common.split_count(n, self.offdiag_fraction)
        t = jnp.where(off, t, s)
        x_s = path.interpolate(x0, x1, s)
        if self.teacher is None:
            v = path.velocity_target(x0, x1, s)
        else:
            v = jax.lax.stop_gradient(_common.with_labels(self.teacher, labels, context)(x_s, s))

        if self.guided:
            u, u_tgt = guided_target(
                model,
                params,
                x_s,
                s,
                t,
                v,
                y=labels,
                null_label=self.num_classes,
                omega=self.omega,
                kappa=self.kappa,
                key=k_model,
                context=context,
            )
        else:
            u, u_tgt = target(model, params, x_s, s, t, v, y=labels, key=k_model, context=context)
        mse = _common.per_example_mse(u - jax.lax.stop_gradient(u_tgt))
        weight = jax.lax.stop_gradient(1.0 / (mse + self.adaptive_c) ** self.adaptive_p)
        per_example = weight * mse
        value = jnp.mean(per_example)
        return value, {"loss": value, "mse": jnp.mean(mse), "per_example_loss": per_example}


def loss(params, key: PRNGKeyArray, batch: dict, *, model, path, **kwargs):
    """`MeanFlow(path=path, **kwargs)(params, key, batch, model=model)`."""
    return MeanFlow(path=path, **kwargs)(params, key, batch, model=model)
