"""Reward-weighted training on a model's own samples: p* by self-normalised importance weights.

Samples x1^i of the frozen base model (the proposal q = p_base) weighted by
w_i ~ exp(lambda r(x1^i)), normalised over the batch, turn any per-example objective
l_i(theta) into

    L(theta) = sum_i w_i l_i(theta),      w_i = exp(lambda r_i) / sum_j exp(lambda r_j),

a self-normalised importance-sampling estimate of E_{p*}[l] (p* ~ p_base exp(lambda r)), so
flow matching on it targets p* (reward-weighted regression, Peters & Schaal 2007; for flow
matching, e.g. Fan et al. 2025, "Online reward-weighted fine-tuning of flow matching", with a
frozen proposal here so the target stays exactly p*). With a flow map as the proposal each
sample costs one network evaluation; with a velocity model a whole ODE solve. The effective
sample size 1 / sum_i w_i^2 (Kong 1992) is reported. With constant rewards the weights are
1 / B and the loss is the inner objective's mean: plain training (tested).

The inner objective must keep its per-example losses in batch order (`aux["per_example_loss"]`,
independent coupling).
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
from flowjax.sources import StandardGaussian

__all__ = ["MapProposal", "ODEProposal", "RewardWeighted", "normalized_weights"]

_NAME = "reward_weighted"


def normalized_weights(log_w: Float[Array, " B"]) -> tuple[Float[Array, " B"], Float[Array, ""]]:
    """Self-normalised weights softmax(log_w) and their effective sample size 1 / sum w^2."""
    w = jax.nn.softmax(log_w)
    return w, 1.0 / jnp.sum(w**2)


class MapProposal(eqx.Module):
    """x1 = X(x0, 0, 1) with x0 ~ source: a flow map's one-step sample (one evaluation)."""

    apply_fn: Callable = eqx.field(static=True)
    params: Any
    source: Any = eqx.field(default_factory=StandardGaussian)

    def __call__(self, key: PRNGKeyArray, shape, dtype=jnp.float32):
        x0 = self.source.sample(key, shape, dtype=dtype)
        return FlowMap(self.apply_fn)(self.params, x0, 0.0, 1.0)


class ODEProposal(eqx.Module):
    """x1 from `num_steps` fixed steps of a velocity model's ODE (num_steps (x2 Heun) evals)."""

    apply_fn: Callable = eqx.field(static=True)
    params: Any
    num_steps: int = eqx.field(static=True, default=8)
    solver: str = eqx.field(static=True, default="heun")
    source: Any = eqx.field(default_factory=StandardGaussian)

    def __call__(self, key: PRNGKeyArray, shape, dtype=jnp.float32):
        from flowjax.sampling import sample_ode

        x0 = self.source.sample(key, shape, dtype=dtype)
        v = lambda x, t: self.apply_fn(self.params, x, t)  # noqa: E731
        x1, _ = sample_ode(v, x0, solver=self.solver, num_steps=self.num_steps)
        return x1


class RewardWeighted(_common.AbstractObjective):
    """A per-example objective on proposal samples, weighted by exp(strength * reward).

    Attributes:
      inner: the objective trained (e.g. `FlowMatching`, `LSD`), called with `model=`.
      reward: r(x1) -> (B,).
      strength: lambda >= 0.
      proposal: (key, shape, dtype) -> x1 samples of the frozen base model (no gradient), or
        None to weight the batch's own x1 (then the inner objective gets the key unchanged).
      model: apply function (None: pass it at call time).

    Call: `(params, key, batch, *, model=None) -> (loss, aux)`; aux = {"loss", "ess",
    "ess_fraction", "reward_mean", "inner_loss", "per_example_loss" (B,) weighted by B w_i}.
    """

    inner: _common.AbstractObjective
    reward: Callable
    strength: float
    proposal: Callable | None = None
    model: Callable | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if not isinstance(self.inner, _common.AbstractObjective):
            raise TypeError(f"{_NAME}: inner must be an objective module, got {self.inner!r}")
        if not callable(self.reward):
            raise TypeError(f"{_NAME}: reward must be a callable r(x1) -> (B,)")
        if self.proposal is not None and not callable(self.proposal):
            raise TypeError(f"{_NAME}: proposal must be a callable (key, shape, dtype) -> x1")

    def __call__(
        self, params, key: PRNGKeyArray, batch: dict, *, model: Callable | None = None
    ) -> tuple[Float[Array, ""], dict]:
        model = _common.bound_model(self.model, model, _NAME)
        x1 = jnp.asarray(batch["x1"])
        if self.proposal is not None:
            k_prop, key = jax.random.split(key)
            x1 = jax.lax.stop_gradient(self.proposal(k_prop, x1.shape, x1.dtype)).astype(x1.dtype)
            batch = {**batch, "x1": x1}
        r = jnp.asarray(self.reward(x1), x1.dtype)
        w, ess = normalized_weights(jax.lax.stop_gradient(self.strength * r))
        inner_value, aux = self.inner(params, key, batch, model=model)
        per_example = aux["per_example_loss"]
        value = jnp.sum(w * per_example)
        n = x1.shape[0]
        return value, {
            "loss": value,
            "ess": ess,
            "ess_fraction": ess / n,
            "reward_mean": jnp.mean(r),
            "inner_loss": inner_value,
            "per_example_loss": n * w * per_example,
        }
