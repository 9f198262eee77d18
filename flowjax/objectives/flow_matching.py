"""Conditional flow matching: regress the network on the conditional velocity.

    L(theta) = E_{t, (x0, x1) ~ pi} || v_theta(x_t, t) - (alpha'(t) x1 + sigma'(t) x0) ||^2

(Lipman et al. 2023, eq. (9) with the affine conditional path of eq. (23)), whose minimiser is
the marginal velocity. The coupling pi (independent, minibatch OT, Schrodinger bridge) may
re-pair the minibatch; a Schrodinger-bridge coupling adds Brownian-bridge noise
x_t += g(t) z with target += g'(t) z, g(t) = sigma sqrt(t (1 - t)) (Tong et al. 2024, SB-CFM).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax._types import expand_time
from flowjax.couplings import COUPLINGS, AbstractCoupling, get_coupling
from flowjax.objectives import _common
from flowjax.objectives.timesteps import AbstractTimeDist, resolve_time_dist

__all__ = ["loss", "validate_kwargs"]

_NAME = "flow_matching"


def _resolve_coupling(coupling) -> AbstractCoupling:
    if isinstance(coupling, str):
        return get_coupling(coupling)
    if not isinstance(coupling, AbstractCoupling):
        raise TypeError(
            "coupling must be a coupling (e.g. fj.couplings.MinibatchOT()) or one of "
            f"{sorted(COUPLINGS)}, got {coupling!r}"
        )
    return coupling


def validate_kwargs(**kwargs) -> None:
    """Checks keyword arguments of `loss` early (used by `make_objective`)."""
    if "coupling" in kwargs:
        _resolve_coupling(kwargs["coupling"])
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
    coupling: AbstractCoupling | str = "independent",
    time_dist: AbstractTimeDist | str = "uniform",
    label_dropout: float = 0.0,
    num_classes: int | None = None,
) -> tuple[Float[Array, ""], dict]:
    """Flow-matching loss: mean squared error to the conditional velocity.

    Args:
      params: parameters passed to `model`.
      key: PRNG key (noise, coupling, times, label dropout, bridge noise, model dropout).
      batch: {"x1": (B, *D) float, "label": (B,) int (only with num_classes)}.
      model: apply function model(params, x, t, *, y=None, key=None) -> velocity (B, *D).
      path: the affine path (fj.paths.*).
      coupling: pairing of x0 and x1 (object or name in fj.couplings.COUPLINGS); the default
        is Independent().
      time_dist: training-time distribution (object or name in TIME_DISTS); the default is
        Uniform() on [0, 1].
      label_dropout: probability of replacing a label by the null label num_classes.
      num_classes: number of real classes of a class-conditional model, else None.

    Returns:
      (loss, aux) with aux = {"loss", "t_mean", "per_example_loss" (B,)}.
    """
    coupling = _resolve_coupling(coupling)
    time_dist = resolve_time_dist(time_dist)
    _common.check_label_config(num_classes, label_dropout, _NAME)
    _common.check_model(model, _NAME)
    _common.check_path(path, _NAME)
    x1, labels = _common.check_batch(batch, _NAME)
    labels, guard = _common.check_labels(labels, num_classes, _NAME)

    k_pair, k_x0, k_t, k_drop, k_bridge, k_model = jax.random.split(key, 6)
    x0 = jax.random.normal(k_x0, x1.shape, x1.dtype)
    x0, x1, labels = coupling(k_pair, x0, x1, labels)
    labels = _common.drop_labels(k_drop, labels, num_classes, label_dropout)
    t = time_dist.sample(k_t, x1.shape[:1], path).astype(x1.dtype)

    x_t = path.interpolate(x0, x1, t)
    target = path.velocity_target(x0, x1, t)
    bridge_sigma = coupling.bridge_sigma
    if not (isinstance(bridge_sigma, (int, float)) and bridge_sigma == 0):
        z = jax.random.normal(k_bridge, x1.shape, x1.dtype)
        g, d_g = coupling.bridge_std(t)
        x_t = x_t + expand_time(g, x1) * z
        target = target + expand_time(d_g, x1) * z

    pred = _common.call_model(model, params, x_t, t, labels, k_model, _NAME)
    per_example = _common.per_example_mean((pred - target) ** 2)
    value = guard(jnp.mean(per_example))
    return value, {"loss": value, "t_mean": jnp.mean(t), "per_example_loss": per_example}
