"""Cross-entropy x1-prediction loss of discrete flow matching (Gat et al. 2024, sec. 2.4):

    L(theta) = E_{t, (x0, x1), x_t ~ p_t(. | x0, x1)} [ - sum_i log p_{1|t}^theta(x1^i | x_t) ],

minimised by the true factorized posterior p_{1|t}(x1^i | x_t). Averaged over tokens.
"""

from __future__ import annotations

import jax.numpy as jnp

from flowjax.discrete._objective import AbstractDiscreteObjective, gather


class CrossEntropy(AbstractDiscreteObjective):
    """Token cross-entropy of the posterior at x1; aux has "loss", "per_example_loss" (B,)."""

    def __call__(self, params, key, batch, *, model=None):
        x1, _, t, log_p = self.draw(params, key, batch, model)
        per_token = -gather(log_p, x1)
        per_example = jnp.mean(per_token, axis=1)
        value = jnp.mean(per_example)
        return value, {"loss": value, "per_example_loss": per_example, "t_mean": jnp.mean(t)}
