"""ELBO of the mixture path in bits per token (Shaul et al. 2024; for the mask source it is the
MDLM NELBO, Sahoo et al. 2024):

    -log p^theta_1(x1) <= int_0^1 E_{x_t ~ p_t(. | x1)} sum_i l_i(x1, x_t, t) dt,

with l_i the generalized KL of `generalized_kl` (the source is independent of x1, so the terms
at t = 0 cancel). Estimated by Monte Carlo with stratified times: draw j of `num_samples` uses
t = (j + u) / num_samples, an unbiased estimate with lower variance than i.i.d. times.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from flowjax.discrete._path import MixturePath, pad_posterior
from flowjax.discrete._sources import AbstractDiscreteSource
from flowjax.discrete.generalized_kl import generalized_kl

__all__ = ["elbo_bpt"]


def elbo_bpt(
    posterior: Callable,
    x1: Int[Array, "b l"],
    *,
    path: MixturePath,
    source: AbstractDiscreteSource,
    key: PRNGKeyArray,
    num_samples: int = 16,
) -> tuple[Float[Array, " b"], Float[Array, " b"]]:
    """Negative ELBO in bits per token of each sequence, and its Monte Carlo standard error.

    Args:
      posterior: (x_t, t) -> (B, L, V) probabilities of x1 given x_t.
      x1: data tokens (B, L) in [0, V).
      path, source: the mixture path and source the posterior belongs to.
      key: PRNG key.
      num_samples: Monte Carlo draws of (t, x_t) per sequence (stratified in t).

    Returns:
      (bpt (B,), stderr (B,)): an upper bound on -log2 p(x1) / L and the standard error of
      its estimate (from the spread of the stratified draws, a conservative value).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an int >= 2, got {num_samples!r}")
    x1 = source.check_data(x1)
    b, length = x1.shape

    def one(carry, inputs):
        j, k = inputs
        k_t, k_x0, k_xt = jax.random.split(k, 3)
        t = (j + jax.random.uniform(k_t, (b,))) / num_samples
        x_t = path.sample(k_xt, source.sample(k_x0, x1.shape), x1, t)
        p = pad_posterior(posterior(x_t, t), source.num_states)
        log_p = jnp.log(jnp.maximum(p, 1e-30))
        log_p = jnp.where(p > 0, log_p, -jnp.inf)
        return carry, jnp.sum(generalized_kl(path, log_p, x1, x_t, t), axis=1)

    keys = jax.random.split(key, num_samples)
    _, draws = jax.lax.scan(one, None, (jnp.arange(num_samples), keys))  # (num_samples, B)
    scale = 1.0 / (length * math.log(2.0))
    mean = jnp.mean(draws, axis=0) * scale
    stderr = jnp.std(draws, axis=0, ddof=1) / math.sqrt(num_samples) * scale
    return mean, stderr
