"""Masked diffusion language model objective (Sahoo et al. 2024, MDLM, sec. 3.2, continuous time).

With alpha_t = kappa(t) the probability a token is revealed at time t (mask source), the
continuous-time NELBO with the SUBS parametrisation (zero mask probability, carry-over of
revealed tokens) is

    L = E_{t, x_t} [ alpha'_t / (1 - alpha_t) sum_{i: x_t^i = mask} -log p^theta(x1^i | x_t) ],

times drawn low-discrepancy (antithetic over the batch) as in MDLM. Reported per token;
`aux["bpt"]` is the one-sample bits-per-token NELBO of each example.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from flowjax.discrete._objective import AbstractDiscreteObjective, gather
from flowjax.discrete._sources import MaskSource


class MDLM(AbstractDiscreteObjective):
    """Masked-diffusion NELBO; needs `source=MaskSource(V)`."""

    antithetic: bool = True

    def __check_init__(self):
        if not isinstance(self.source, MaskSource):
            raise TypeError(f"MDLM: source must be fj.discrete.MaskSource(V), got {self.source!r}")

    def __call__(self, params, key, batch, *, model=None):
        x1, x_t, t, log_p = self.draw(params, key, batch, model, antithetic=self.antithetic)
        masked = (x_t == self.source.mask).astype(log_p.dtype)
        weight = self.path.kappa.jump_rate(t)[:, None]
        per_token = weight * masked * -gather(log_p, x1)
        per_example = jnp.mean(per_token, axis=1)
        value = jnp.mean(per_example)
        bpt = jax.lax.stop_gradient(per_example) / math.log(2.0)
        return value, {"loss": value, "per_example_loss": per_example, "bpt": bpt}
