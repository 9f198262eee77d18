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
from flowjax.flowmaps._map import FlowMap
from flowjax.objectives.timesteps import AbstractTimeDist, Uniform, resolve_time_dist
from flowjax.paths import AffinePath

__all__ = ["MeanFlow", "loss", "target"]

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

    def __check_init__(self):
        _common.check_common(self, _NAME)
        if self.teacher is not None:
            _common.check_teacher(self.teacher, _NAME)
        _common.check_fraction(self.offdiag_fraction, "offdiag_fraction", _NAME)
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
        x0 = _common.draw_x0(self.source, k_x0, x1, context, _NAME)
        s, t = _common.sample_pairs(k_t, n, dtype=x1.dtype, time_dist=self.time_dist, path=path)
        off = jnp.arange(n) < _common.split_count(n, self.offdiag_fraction)
        t = jnp.where(off, t, s)
        x_s = path.interpolate(x0, x1, s)
        if self.teacher is None:
            v = path.velocity_target(x0, x1, s)
        else:
            v = jax.lax.stop_gradient(_common.with_labels(self.teacher, labels, context)(x_s, s))

        u, u_tgt = target(model, params, x_s, s, t, v, y=labels, key=k_model, context=context)
        mse = _common.per_example_mse(u - jax.lax.stop_gradient(u_tgt))
        weight = jax.lax.stop_gradient(1.0 / (mse + self.adaptive_c) ** self.adaptive_p)
        per_example = weight * mse
        value = jnp.mean(per_example)
        return value, {"loss": value, "mse": jnp.mean(mse), "per_example_loss": per_example}


def loss(params, key: PRNGKeyArray, batch: dict, *, model, path, **kwargs):
    """`MeanFlow(path=path, **kwargs)(params, key, batch, model=model)`."""
    return MeanFlow(path=path, **kwargs)(params, key, batch, model=model)
