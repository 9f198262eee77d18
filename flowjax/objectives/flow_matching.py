"""Conditional flow matching: regress the network on the conditional velocity.

    L(theta) = E_{t, (x0, x1) ~ pi} || v_theta(x_t, t) - (alpha'(t) x1 + sigma'(t) x0) ||^2

(Lipman et al. 2023, eq. (9) with the affine conditional path of eq. (23)), whose minimiser is
the marginal velocity. x0 is drawn from `source` (N(0, I) by default; any source, given the
batch's context, for data-to-data transport or conditional sources). The coupling pi
(independent, minibatch OT, Schrodinger bridge) may re-pair the minibatch; a Schrodinger-bridge
coupling adds Brownian-bridge noise x_t += g(t) z with target += g'(t) z,
g(t) = sigma sqrt(t (1 - t)) (Tong et al. 2024, SB-CFM).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax import _registry
from flowjax._types import expand_time
from flowjax.couplings import COUPLINGS, AbstractCoupling, Independent
from flowjax.objectives import _common
from flowjax.objectives.timesteps import AbstractTimeDist, Uniform, resolve_time_dist
from flowjax.paths import AffinePath

__all__ = ["FlowMatching", "loss"]

_NAME = "flow_matching"


def _coupling(value) -> AbstractCoupling:
    return _registry.resolve(value, COUPLINGS, AbstractCoupling, "coupling")


class FlowMatching(_common.AbstractObjective):
    """Flow-matching loss: mean squared error to the conditional velocity.

    Attributes:
      path: the affine path (fj.paths.*).
      model: apply function model(params, x, t, *, y=None, context=None, key=None) ->
        velocity (B, *D); None: pass it at call time.
      coupling: pairing of x0 and x1 (object or name in fj.couplings.COUPLINGS).
      time_dist: training-time distribution (object or name in TIME_DISTS).
      source: what x0 is drawn from (default fj.sources.StandardGaussian()).
      label_dropout: probability of replacing a label by the null label num_classes.
      num_classes: number of real classes of a class-conditional model, else None.
      context_dropout: probability of giving an example the null context (a NaN row, the
        models' learned null context; see fj.models.drop_context).

    Call: `(params, key, batch, *, model=None) -> (loss, aux)`, batch = {"x1": (B, *D),
    optional "label": (B,) int (with num_classes), optional "context": (B, *C)}; aux =
    {"loss", "t_mean", "per_example_loss" (B,)}.
    """

    path: AffinePath
    model: Callable | None = eqx.field(static=True, default=None)
    coupling: AbstractCoupling = eqx.field(default=Independent(), converter=_coupling)
    time_dist: AbstractTimeDist = eqx.field(default=Uniform(), converter=resolve_time_dist)
    source: Any = eqx.field(default_factory=_common.default_source)
    label_dropout: float = eqx.field(static=True, default=0.0)
    num_classes: int | None = eqx.field(static=True, default=None)
    context_dropout: float = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        _common.check_path(self.path, _NAME)
        if self.model is not None:
            _common.check_model(self.model, _NAME)
        _common.check_source(self.source, _NAME)
        _common.check_label_config(self.num_classes, self.label_dropout, _NAME)
        _common.check_dropout(self.context_dropout, "context_dropout", _NAME)

    def __call__(
        self, params, key: PRNGKeyArray, batch: dict, *, model: Callable | None = None
    ) -> tuple[Float[Array, ""], dict]:
        model = _common.bound_model(self.model, model, _NAME)
        path, coupling = self.path, self.coupling
        x1, labels = _common.check_batch(batch, _NAME)
        context = _common.check_context(batch, x1, _NAME)
        labels, guard = _common.check_labels(labels, self.num_classes, _NAME)

        k_pair, k_x0, k_t, k_drop, k_bridge, k_model = jax.random.split(key, 6)
        x0 = _common.draw_x0(self.source, k_x0, x1, context, _NAME)
        x0, x1, labels, context = _common.pair(coupling, k_pair, x0, x1, labels, context)
        labels = _common.drop_labels(k_drop, labels, self.num_classes, self.label_dropout)
        drop = _common.context_drop(k_drop, context, self.context_dropout)
        t = self.time_dist.sample(k_t, x1.shape[:1], path).astype(x1.dtype)

        x_t = path.interpolate(x0, x1, t)
        target = path.velocity_target(x0, x1, t)
        bridge_sigma = coupling.bridge_sigma
        if not (isinstance(bridge_sigma, (int, float)) and bridge_sigma == 0):
            z = jax.random.normal(k_bridge, x1.shape, x1.dtype)
            g, d_g = coupling.bridge_std(t)
            x_t = x_t + expand_time(g, x1) * z
            target = target + expand_time(d_g, x1) * z

        pred = _common.call_model(model, params, x_t, t, labels, k_model, _NAME, context, drop)
        per_example = _common.per_example_mean((pred - target) ** 2)
        value = guard(jnp.mean(per_example))
        return value, {"loss": value, "t_mean": jnp.mean(t), "per_example_loss": per_example}


def loss(params, key: PRNGKeyArray, batch: dict, *, model, path, **kwargs):
    """`FlowMatching(path=path, **kwargs)(params, key, batch, model=model)`."""
    return FlowMatching(path=path, **kwargs)(params, key, batch, model=model)
