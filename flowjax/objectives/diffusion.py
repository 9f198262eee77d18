"""Denoising diffusion objective with a choice of prediction target, weighting and time law.

    L(theta) = E_{t, x1, x0} w(t) || f_theta(x_t, t) - target ||^2,   x_t = alpha x1 + sigma x0

with target x0 ("eps", Ho et al. 2020), x1 ("x1", data prediction; EDM's denoiser, Karras et al.
2022) or alpha' x1 + sigma' x0 ("velocity", which on CondOT is flow matching and on Cosine is
-(pi / 2) times the v-prediction of Salimans & Ho 2022). The network output is read as the
target kind, so a trained model is sampled through `fj.paths.convert(pred, src=target, ...)`.
The weightings are defined by their effective weight on the x1 loss (see `weighting.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.objectives import _common
from flowjax.objectives.timesteps import AbstractTimeDist, resolve_time_dist
from flowjax.objectives.weighting import AbstractWeighting, canonical_target, resolve_weighting

__all__ = ["loss", "validate_kwargs"]

_NAME = "diffusion"

_TARGETS = {
    "eps": lambda path, x0, x1, t: x0,
    "x1": lambda path, x0, x1, t: x1,
    "velocity": lambda path, x0, x1, t: path.velocity_target(x0, x1, t),
}


def validate_kwargs(**kwargs) -> None:
    """Checks keyword arguments of `loss` early (used by `make_objective`)."""
    if "target" in kwargs:
        canonical_target(kwargs["target"])
    if "weighting" in kwargs:
        resolve_weighting(kwargs["weighting"])
    if "time_dist" in kwargs:
        resolve_time_dist(kwargs["time_dist"])
    _common.check_label_config(kwargs.get("num_classes"), kwargs.get("label_dropout", 0.0), _NAME)
    if "model" in kwargs:
        _common.check_model(kwargs["model"], _NAME)
    if "path" in kwargs:
        _common.check_path(kwargs["path"], _NAME)


def loss(
    params,
    key: PRNGKeyArray,
    batch: dict,
    *,
    model,
    path,
    target: str = "eps",
    weighting: AbstractWeighting | str = "uniform",
    time_dist: AbstractTimeDist | str = "uniform",
    label_dropout: float = 0.0,
    num_classes: int | None = None,
) -> tuple[Float[Array, ""], dict]:
    """Weighted denoising loss.

    Args:
      params: parameters passed to `model`.
      key: PRNG key (noise, times, label dropout, model dropout).
      batch: {"x1": (B, *D) float, "label": (B,) int (only with num_classes)}.
      model: apply function model(params, x, t, *, y=None, key=None) -> prediction of `target`.
      path: the affine path (fj.paths.*).
      target: "eps", "x1" or "velocity" (aliases "v", "noise", "data").
      weighting: object or name in WEIGHTINGS ("uniform", "snr", "min_snr", "edm").
      time_dist: training-time distribution (object or name in TIME_DISTS); the default is
        Uniform() on [0, 1].
      label_dropout: probability of replacing a label by the null label num_classes.
      num_classes: number of real classes of a class-conditional model, else None.

    Returns:
      (loss, aux) with aux = {"loss", "mse" (unweighted), "t_mean", "per_example_loss" (B,)}.
    """
    target = canonical_target(target)
    weighting = resolve_weighting(weighting)
    time_dist = resolve_time_dist(time_dist)
    _common.check_label_config(num_classes, label_dropout, _NAME)
    _common.check_model(model, _NAME)
    _common.check_path(path, _NAME)
    x1, labels = _common.check_batch(batch, _NAME)
    labels, guard = _common.check_labels(labels, num_classes, _NAME)

    k_x0, k_t, k_drop, k_model = jax.random.split(key, 4)
    x0 = jax.random.normal(k_x0, x1.shape, x1.dtype)
    labels = _common.drop_labels(k_drop, labels, num_classes, label_dropout)
    t = time_dist.sample(k_t, x1.shape[:1], path).astype(x1.dtype)

    x_t = path.interpolate(x0, x1, t)
    pred = _common.call_model(model, params, x_t, t, labels, k_model, _NAME)
    mse = _common.per_example_mean((pred - _TARGETS[target](path, x0, x1, t)) ** 2)
    per_example = weighting(path, t, target) * mse
    value = guard(jnp.mean(per_example))
    aux = {
        "loss": value,
        "mse": jnp.mean(mse),
        "t_mean": jnp.mean(t),
        "per_example_loss": per_example,
    }
    return value, aux
