"""Riemannian conditional flow matching (Chen & Lipman 2024, sec. 3, the RCFM objective):

    L(theta) = E_{t, (x0, x1) ~ pi} || P_{x_t} v_theta(x_t, t) - dx_t ||^2_g,
    x_t = exp_{x0}(kappa(t) log_{x0}(x1)),    x0 ~ p_0 (uniform on M by default),

a regression in the tangent space T_{x_t}M with the manifold's metric, whose minimiser is
the marginal field that generates the geodesic probability path. The network's output is
projected onto T_{x_t}M before the comparison. The coupling pi is independent or minibatch
OT with the geodesic cost (`GeodesicOT`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.couplings import AbstractCoupling, Independent
from flowjax.manifolds._base import compatible
from flowjax.manifolds._sources import Uniform
from flowjax.manifolds.path import GeodesicPath
from flowjax.objectives import _common
from flowjax.objectives.timesteps import AbstractTimeDist, resolve_time_dist
from flowjax.objectives.timesteps import Uniform as UniformTime

__all__ = ["RiemannianFlowMatching"]

_NAME = "riemannian_flow_matching"


class RiemannianFlowMatching(_common.AbstractObjective):
    """The RCFM loss on the geodesic path of a manifold.

    Attributes:
      path: fj.manifolds.GeodesicPath(M).
      model: apply function model(params, x, t, *, y=None, context=None, key=None) -> (B, D)
        (projected onto T_xM here); None: pass it at call time.
      source: x0's law, on the same manifold (default fj.manifolds.Uniform(M)).
      coupling: Independent() or fj.manifolds.GeodesicOT(M).
      time_dist: training-time distribution (object or name in TIME_DISTS).
      t_max: times are scaled into [0, t_max] (1.0 by default; < 1 keeps away from the
        cut locus of x1, where the conditional field is undefined for antipodal pairs).
      label_dropout, num_classes, context_dropout: as in fj.objectives.FlowMatching.

    Call: `(params, key, batch, *, model=None) -> (loss, aux)` with aux = {"loss", "t_mean",
    "per_example_loss" (B,)}.
    """

    path: GeodesicPath
    model: Callable | None = eqx.field(static=True, default=None)
    source: Any = None
    coupling: AbstractCoupling = Independent()
    time_dist: AbstractTimeDist = eqx.field(default=UniformTime(), converter=resolve_time_dist)
    t_max: float = eqx.field(static=True, default=1.0)
    label_dropout: float = eqx.field(static=True, default=0.0)
    num_classes: int | None = eqx.field(static=True, default=None)
    context_dropout: float = eqx.field(static=True, default=0.0)

    def __post_init__(self):
        if self.source is None and isinstance(self.path, GeodesicPath):
            object.__setattr__(self, "source", Uniform(self.path.manifold))

    def __check_init__(self):
        if not isinstance(self.path, GeodesicPath):
            raise TypeError(
                f"{_NAME}: path must be fj.manifolds.GeodesicPath(M), got {self.path!r}"
            )
        if self.model is not None:
            _common.check_model(self.model, _NAME)
        _common.check_source(self.source, _NAME)
        src_manifold = getattr(self.source, "manifold", None)
        if src_manifold is None or not compatible(src_manifold, self.path.manifold):
            raise ValueError(
                f"{_NAME}: the source lives on {src_manifold!r}, but the path is on "
                f"{self.path.manifold!r}; use a source on the same manifold"
            )
        if not isinstance(self.coupling, AbstractCoupling):
            raise TypeError(f"{_NAME}: coupling must be a coupling, got {self.coupling!r}")
        if not (isinstance(self.t_max, (int, float)) and 0 < self.t_max <= 1):
            raise ValueError(f"{_NAME}: t_max must be in (0, 1], got {self.t_max!r}")
        _common.check_label_config(self.num_classes, self.label_dropout, _NAME)
        _common.check_dropout(self.context_dropout, "context_dropout", _NAME)

    def regression(self, params, model, x0, x1, t, *, labels=None, context=None, key=None):
        """Per-example || P_{x_t} v(x_t, t) - dx_t ||_g^2 at given (x0, x1, t): (B,)."""
        manifold = self.path.manifold
        x_t, target = self.path.sample(x0, x1, t)
        pred = _common.call_model(model, params, x_t, t, labels, key, _NAME, context)
        diff = manifold.proju(x_t, pred) - target
        return manifold.inner(x_t, diff, diff)

    def __call__(
        self, params, key: PRNGKeyArray, batch: dict, *, model: Callable | None = None
    ) -> tuple[Float[Array, ""], dict]:
        model = _common.bound_model(self.model, model, _NAME)
        manifold = self.path.manifold
        x1, labels = _common.check_batch(batch, _NAME)
        if x1.ndim != 2:
            raise ValueError(f"{_NAME}: batch['x1'] must have shape (B, D), got {x1.shape}")
        manifold.check_dim(x1.shape[-1], _NAME, "batch['x1']")
        off = jnp.max(manifold.distance_to_manifold(x1))
        x1 = eqx.error_if(
            x1,
            off > (1e-3 if x1.dtype == jnp.float32 else 1e-6),
            f"{_NAME}: batch['x1'] is not on {manifold!r}; project the data with projx",
        )
        context = _common.check_context(batch, x1, _NAME)
        labels, guard = _common.check_labels(labels, self.num_classes, _NAME)

        k_pair, k_x0, k_t, k_drop, k_model = jax.random.split(key, 5)
        x0 = _common.draw_x0(self.source, k_x0, x1, context, _NAME)
        x0, x1, labels, context = _common.pair(self.coupling, k_pair, x0, x1, labels, context)
        labels = _common.drop_labels(k_drop, labels, self.num_classes, self.label_dropout)
        drop = _common.context_drop(k_drop, context, self.context_dropout)
        t = self.t_max * self.time_dist.sample(k_t, x1.shape[:1]).astype(x1.dtype)

        x_t, target = self.path.sample(x0, x1, t)
        pred = _common.call_model(model, params, x_t, t, labels, k_model, _NAME, context, drop)
        diff = manifold.proju(x_t, pred) - target
        per_example = manifold.inner(x_t, diff, diff)
        value = guard(jnp.mean(per_example))
        return value, {"loss": value, "t_mean": jnp.mean(t), "per_example_loss": per_example}
