"""Direct reward back-propagation through a one-step flow map (DRaFT-style), with an anchor.

DRaFT (Clark, Vallabhaneni, Adhikari & Chang 2024, "Directly fine-tuning diffusion models on
differentiable rewards", eq. (1) and DRaFT-1) maximises the reward of samples by
back-propagating through the sampler; through a one-step map X_theta(x0, 0, 1) that is one
network call. Alone it collapses onto the reward's maximum, so a distillation anchor to the
frozen base map keeps it near the base:

    L(theta) = E_{x0} [ -lambda r(X_theta(x0)) + beta || X_theta(x0) - X_base(x0) ||^2 ].

Its minimiser is *not* p*: pointwise it solves lambda grad r(x) = 2 beta (x - X_base(x0)), a
displacement of each base sample, whereas the tilt p* ~ p exp(lambda r) reweights mass between
modes. For r = -|x - c|^2 / (2 s^2) each point moves to c + (X_base - c) 2 beta / (2 beta +
lambda / s^2): a contraction towards c, while the tilt shrinks each Gaussian component's
spread by (1 + lambda v_k / s^2)^{-1/2} and its mean offset by (1 + lambda v_k / s^2)^{-1}. The
study reports the resulting KL bias against p*.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.flowmaps._map import FlowMap
from flowjax.objectives import _common

__all__ = ["DRaFT"]

_NAME = "draft"


class DRaFT(_common.AbstractObjective):
    """Reward back-propagation through the one-step map with an L2 anchor to the base map.

    Attributes:
      reward: r(x1) -> (B,), differentiable.
      strength: lambda >= 0.
      anchor: beta >= 0, the weight of || X_theta(x0) - X_base(x0) ||^2.
      base: the frozen base one-step sampler x0 -> X_base(x0, 0, 1) (a pytree callable).
      model: the two-time apply function of the fine-tuned map (None: pass it at call time).
      source: what x0 is drawn from (default N(0, I)).

    Call: `(params, key, batch, *, model=None) -> (loss, aux)`; aux = {"loss", "reward_mean",
    "anchor", "per_example_loss" (B,)}.
    """

    reward: Callable
    strength: float
    anchor: float
    base: Callable
    model: Callable | None = eqx.field(static=True, default=None)
    source: Any = eqx.field(default_factory=_common.default_source)

    def __check_init__(self):
        if not callable(self.reward) or not callable(self.base):
            raise TypeError(f"{_NAME}: reward and base must be callables")
        for name in ("strength", "anchor"):
            v = getattr(self, name)
            if not isinstance(v, jax.core.Tracer) and not float(v) >= 0:
                raise ValueError(f"{_NAME}: {name} must be >= 0, got {v!r}")
        _common.check_source(self.source, _NAME)

    def __call__(
        self, params, key: PRNGKeyArray, batch: dict, *, model: Callable | None = None
    ) -> tuple[Float[Array, ""], dict]:
        model = _common.bound_model(self.model, model, _NAME)
        x1 = jnp.asarray(batch["x1"])
        x0 = _common.draw_x0(self.source, key, x1, None, _NAME)
        x = FlowMap(model)(params, x0, 0.0, 1.0)
        x_base = jax.lax.stop_gradient(self.base(x0))
        r = self.reward(x)
        gap = jnp.sum((x - x_base).reshape(x.shape[0], -1) ** 2, -1)
        per_example = -self.strength * r + self.anchor * gap
        value = jnp.mean(per_example)
        return value, {
            "loss": value,
            "reward_mean": jnp.mean(r),
            "anchor": jnp.mean(gap),
            "per_example_loss": per_example,
        }
