"""Denoising diffusion objective with a choice of prediction target, weighting and time law.

    L(theta) = E_{t, x1, x0} w(t) || f_theta(x_t, t) - target ||^2,   x_t = alpha x1 + sigma x0

with target x0 ("eps", Ho et al. 2020), x1 ("x1", data prediction; EDM's denoiser, Karras et al.
2022) or alpha' x1 + sigma' x0 ("velocity", which on CondOT is flow matching and on Cosine is
-(pi / 2) times the v-prediction of Salimans & Ho 2022). The network output is read as the
target kind, so a trained model is sampled through `fj.paths.convert(pred, src=target, ...)`.
The weightings are defined by their effective weight on the x1 loss (see `weighting.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.objectives import _common
from flowjax.objectives.timesteps import AbstractTimeDist, Uniform, resolve_time_dist
from flowjax.objectives.weighting import (
    AbstractWeighting,
    UniformWeighting,
    canonical_target,
    resolve_weighting,
)
from flowjax.paths import AffinePath

__all__ = ["Diffusion", "loss"]

_NAME = "diffusion"

_TARGETS = {
    "eps": lambda path, x0, x1, t: x0,
    "x1": lambda path, x0, x1, t: x1,
    "velocity": lambda path, x0, x1, t: path.velocity_target(x0, x1, t),
}


class Diffusion(_common.AbstractObjective):
    """Weighted denoising loss.

    Attributes:
      path: the affine path (fj.paths.*).
      model: apply function model(params, x, t, *, y=None, context=None, key=None) ->
        prediction of `target`; None: pass it at call time.
      target: "eps", "x1" or "velocity" (aliases "v", "noise", "data"; stored canonical).
      weighting: object or name in WEIGHTINGS ("uniform", "snr", "min_snr", "edm").
      time_dist: training-time distribution (object or name in TIME_DISTS).
      source: what x0 is drawn from (default fj.sources.StandardGaussian(); the "eps" target
        is x0 whatever its law).
      label_dropout: probability of replacing a label by the null label num_classes.
      num_classes: number of real classes of a class-conditional model, else None.
      context_dropout: probability of giving an example the null context (a NaN row, the
        models' learned null context; see fj.models.drop_context).

    Call: `(params, key, batch, *, model=None) -> (loss, aux)` with aux = {"loss", "mse"
    (unweighted), "t_mean", "per_example_loss" (B,)}.
    """

    path: AffinePath
    model: Callable | None = eqx.field(static=True, default=None)
    target: str = eqx.field(static=True, default="eps", converter=canonical_target)
    weighting: AbstractWeighting = eqx.field(
        default=UniformWeighting(), converter=resolve_weighting
    )
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
        """The minibatch's regression problem (x_t, t, target, weight w(t)); cheap and independent
        of the parameters. `__call__` is this, one model call and the reduction."""
        path = self.path
        k_x0, k_t, k_drop, k_model = jax.random.split(key, 4)
        d = _common.draw(self, batch, _NAME, k_x0=k_x0, k_t=k_t, k_drop=k_drop)
        x_t = path.interpolate(d.x0, d.x1, d.t)
        target = _TARGETS[self.target](path, d.x0, d.x1, d.t)
        weight = self.weighting(path, d.t, self.target)
        return _common.regression(d, x_t, target, weight, k_model)

    def __call__(
        self, params, key: PRNGKeyArray, batch: dict, *, model: Callable | None = None
    ) -> tuple[Float[Array, ""], dict]:
        model = _common.bound_model(self.model, model, _NAME)
        reg = self.draw_regression(key, batch)
        value, per_example, mse = reg.loss(reg.predict(model, params, _NAME))
        aux = {
            "loss": value,
            "mse": jnp.mean(mse),
            "t_mean": jnp.mean(reg.t),
            "per_example_loss": per_example,
        }
        return value, aux


def loss(params, key: PRNGKeyArray, batch: dict, *, model, path, **kwargs):
    """`Diffusion(path=path, **kwargs)(params, key, batch, model=model)`."""
    return Diffusion(path=path, **kwargs)(params, key, batch, model=model)
