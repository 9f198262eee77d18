"""A trained network as the posterior the samplers and the ELBO take.

For the mask source the SUBS parametrisation (Sahoo et al. 2024, MDLM, sec. 3.2.3) is applied:
a revealed token is carried over, p_{1|t}(. | x_t) = delta_{x_t^i} where x_t^i != mask, which is
what the MDLM objective assumes (it scores masked positions only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from flowjax.discrete._sources import AbstractDiscreteSource, MaskSource

__all__ = ["ModelPosterior", "model_posterior"]


class ModelPosterior(eqx.Module):
    """(x_t, t) -> softmax(model(params, x_t, t, **kwargs)), with carry-over for the mask."""

    apply_fn: Callable = eqx.field(static=True)
    params: Any
    source: AbstractDiscreteSource
    carry_over: bool = eqx.field(static=True)
    kwargs: dict

    def __call__(self, x_t, t):
        p = jax.nn.softmax(self.apply_fn(self.params, x_t, t, **self.kwargs), axis=-1)
        if self.carry_over and isinstance(self.source, MaskSource):
            revealed = (x_t != self.source.mask)[..., None]
            p = jnp.where(revealed, jax.nn.one_hot(x_t, p.shape[-1], dtype=p.dtype), p)
        return p


def model_posterior(
    apply_fn: Callable, params, *, source: AbstractDiscreteSource, carry_over: bool = True, **kwargs
) -> ModelPosterior:
    """The posterior of a network returning logits (B, L, V); kwargs (y=, context=) go to it."""
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable, got {apply_fn!r}")
    if not isinstance(source, AbstractDiscreteSource):
        raise TypeError(f"source must be a discrete source, got {source!r}")
    return ModelPosterior(apply_fn, params, source, bool(carry_over), kwargs)
