"""Generalized-KL loss of the mixture path (Shaul et al. 2024, "Flow Matching with General
Discrete Paths", the mixture-path form of the ELBO loss; Meta's `MixturePathGeneralizedKL`):

    l_i = - kappa'/(1 - kappa) [ p^theta_{1|t}(x_t^i | x_t) - delta_{x1^i}(x_t^i)
                                 + (1 - delta_{x1^i}(x_t^i)) log p^theta_{1|t}(x1^i | x_t) ].

sum_i l_i integrated over t ~ U[0, 1] is the negative ELBO of the model's CTMC, so
`aux["bpt"]` (per-example sum / (L ln 2)) is a one-sample bits-per-token bound. Reported as the
mean over tokens. With the mask source and a carry-over posterior this is the MDLM NELBO.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from flowjax.discrete._objective import AbstractDiscreteObjective, gather


def generalized_kl(path, log_p, x1, x_t, t):
    """Per-token generalized KL (B, L) from log p_theta over the states (B, L, S)."""
    rate = path.kappa.jump_rate(t)[:, None]
    hit = (x_t == x1).astype(log_p.dtype)
    p_xt = jnp.exp(gather(log_p, x_t))
    log_p_x1 = jnp.where(hit > 0, 0.0, gather(log_p, x1))
    return -rate * (p_xt - hit + (1 - hit) * log_p_x1)


class GeneralizedKL(AbstractDiscreteObjective):
    """Generalized KL of the mixture path; aux: "loss", "per_example_loss", "bpt" (B,)."""

    def __call__(self, params, key, batch, *, model=None):
        x1, x_t, t, log_p = self.draw(params, key, batch, model)
        per_token = generalized_kl(self.path, log_p, x1, x_t, t)
        per_example = jnp.mean(per_token, axis=1)
        value = jnp.mean(per_example)
        bpt = jax.lax.stop_gradient(per_example) / math.log(2.0)
        return value, {"loss": value, "per_example_loss": per_example, "bpt": bpt}
