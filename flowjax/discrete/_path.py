"""The factorized mixture path of discrete flow matching (Gat et al. 2024, sec. 2.2).

Per token i, with kappa(0) = 0 and kappa(1) = 1,

    p_t(x^i | x0, x1) = kappa(t) delta_{x1^i}(x^i) + (1 - kappa(t)) delta_{x0^i}(x^i),

and the marginal velocity (rate) in posterior form, for y in the token's state space,

    u_t(y | x_t) = kappa'(t) / (1 - kappa(t)) [p_{1|t}(y | x_t) - delta_{x_t}(y)]

(Gat et al. 2024, the x-prediction velocity of the mixture path; the same conversion is
Meta's `MixtureDiscreteProbPath.posterior_to_velocity`). The divergence-free corrector adds
c(t) (u_hat - u_check) with the backward velocity u_check = kappa'/kappa [delta_{x_t} - p_{0|t}]
(Gat et al. 2024, sec. on corrector sampling), which for an independent source p0 is

    c(t) kappa' / (kappa (1 - kappa)) [kappa p_{1|t}(y | x_t) + (1 - kappa) p0(y) - delta_{x_t}(y)]:

jumping to a draw of p_t(. | x1) leaves p_t(. | x1) invariant, so every c >= 0 keeps p_t.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from flowjax.discrete._kappa import AbstractKappa, PolynomialKappa

__all__ = ["MixturePath", "pad_posterior"]


def _time(t, batch: int) -> Array:
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.result_type(float))
    if t.ndim == 0:
        return jnp.broadcast_to(t, (batch,))
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or have shape (B,) = ({batch},), got {t.shape}")
    return t


def pad_posterior(posterior: Float[Array, "b l v"], num_states: int) -> Float[Array, "b l s"]:
    """Zero-pads a posterior over the V data tokens to the `num_states` states of x_t."""
    extra = num_states - posterior.shape[-1]
    if extra < 0:
        raise ValueError(
            f"posterior has {posterior.shape[-1]} classes, more than the {num_states} states"
        )
    return jnp.pad(posterior, ((0, 0), (0, 0), (0, extra))) if extra else posterior


class MixturePath(eqx.Module):
    """p_t = kappa(t) delta(x1) + (1 - kappa(t)) delta(x0), factorized over positions."""

    kappa: AbstractKappa = PolynomialKappa(1.0)

    def __check_init__(self):
        if not isinstance(self.kappa, AbstractKappa):
            raise TypeError(
                "MixturePath: kappa must be a scheduler such as "
                f"fj.discrete.PolynomialKappa(n=1.0), got {self.kappa!r}"
            )

    def sample(
        self,
        key: PRNGKeyArray,
        x0: Int[Array, "b l"],
        x1: Int[Array, "b l"],
        t: Float[ArrayLike, " b"],
    ) -> Int[Array, "b l"]:
        """x_t ~ p_t(. | x0, x1): each token is x1^i with probability kappa(t), else x0^i."""
        x0, x1 = jnp.asarray(x0), jnp.asarray(x1)
        if x0.shape != x1.shape or x1.ndim != 2:
            raise ValueError(f"x0 and x1 must both be (B, L); got {x0.shape} and {x1.shape}")
        for name, x in (("x0", x0), ("x1", x1)):
            if not jnp.issubdtype(x.dtype, jnp.integer):
                raise TypeError(f"{name} must be an integer array of token ids, got {x.dtype}")
        k = self.kappa(_time(t, x1.shape[0]))[:, None]
        return jnp.where(jax.random.uniform(key, x1.shape, k.dtype) < k, x1, x0)

    def conditional_probs(self, x0, x1, t, num_states: int) -> Float[Array, "b l s"]:
        """p_t(. | x0, x1) per token, shape (B, L, num_states)."""
        k = self.kappa(_time(t, x1.shape[0]))[:, None, None]
        return k * jax.nn.one_hot(x1, num_states) + (1 - k) * jax.nn.one_hot(x0, num_states)

    def posterior_to_velocity(
        self,
        posterior: Float[Array, "b l s"],
        x_t: Int[Array, "b l"],
        t: Float[ArrayLike, " b"],
    ) -> Float[Array, "b l s"]:
        """u_t(y | x_t) = kappa'/(1 - kappa) [p_{1|t}(y | x_t) - delta_{x_t}(y)].

        `posterior` is over the states of x_t (pad a posterior over V data tokens with
        `pad_posterior` for the mask source); rows of the result sum to zero.
        """
        rate = self.kappa.jump_rate(_time(t, x_t.shape[0]))[:, None, None]
        return rate * (posterior - jax.nn.one_hot(x_t, posterior.shape[-1], dtype=posterior.dtype))

    def corrector_velocity(
        self,
        posterior: Float[Array, "b l s"],
        x_t: Int[Array, "b l"],
        t: Float[ArrayLike, " b"],
        p0: Float[Array, " s"],
    ) -> Float[Array, "b l s"]:
        """The divergence-free term for c(t) = 1 (see the module docstring); p0 = source probs."""
        t = _time(t, x_t.shape[0])
        k = self.kappa(t)[:, None, None]
        coef = self.kappa.derivative(t)[:, None, None] / (k * (1 - k))
        delta = jax.nn.one_hot(x_t, posterior.shape[-1], dtype=posterior.dtype)
        return coef * (k * posterior + (1 - k) * p0 - delta)
