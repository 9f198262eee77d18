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

    def draw_regression(self, key: PRNGKeyArray, batch: dict) -> _common.Regression:
        """The minibatch's regression problem (x_t, t, conditional velocity, weight 1); cheap and
        independent of the parameters. `__call__` is this, one model call and the reduction."""
        path, coupling = self.path, self.coupling
        k_pair, k_x0, k_t, k_drop, k_bridge, k_model = jax.random.split(key, 6)
        d = _common.draw(
            self, batch, _NAME, k_x0=k_x0, k_t=k_t, k_drop=k_drop, coupling=coupling, k_pair=k_pair
        )
        x_t = path.interpolate(d.x0, d.x1, d.t)
        target = path.velocity_target(d.x0, d.x1, d.t)
        bridge_sigma = coupling.bridge_sigma
        if not (isinstance(bridge_sigma, (int, float)) and bridge_sigma == 0):
            z = jax.random.normal(k_bridge, d.x1.shape, d.x1.dtype)
            g, d_g = coupling.bridge_std(d.t)
            x_t = x_t + expand_time(g, d.x1) * z
            target = target + expand_time(d_g, d.x1) * z
        return _common.regression(d, x_t, target, jnp.ones_like(d.t), k_model)

    def __call__(
        self, params, key: PRNGKeyArray, batch: dict, *, model: Callable | None = None
    ) -> tuple[Float[Array, ""], dict]:
        model = _common.bound_model(self.model, model, _NAME)
        reg = self.draw_regression(key, batch)
        value, per_example, _ = reg.loss(reg.predict(model, params, _NAME))
        return value, {"loss": value, "t_mean": jnp.mean(reg.t), "per_example_loss": per_example}


def loss(params, key: PRNGKeyArray, batch: dict, *, model, path, **kwargs):
    """`FlowMatching(path=path, **kwargs)(params, key, batch, model=model)`."""
    return FlowMatching(path=path, **kwargs)(params, key, batch, model=model)
