"""Classifier-free guidance and temperature for posteriors p_{1|t}(. | x_t).

Guided rates (Nisonoff et al. 2024, "Unlocking Guidance for Discrete State-Space Diffusion and
Flow Models", sec. 3, guidance of the rates):
u^w(y | x) = u_c(y | x)^w u_u(y | x)^(1 - w) for y != x. For the mixture
path both rates are kappa'/(1 - kappa) p(y | x_t) off the diagonal, so guidance acts on the
posterior as p_c^w p_u^(1-w), written here as p_c exp((w - 1)(log p_c - log p_u)) so that w = 1
returns p_c exactly. The result is unnormalised; samplers use it off the diagonal and normalise
it where a draw of x1 is needed. Temperature tau: p^(1/tau), renormalised.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp

_TINY = 1e-30


def check_scalar(value, name: str, minimum: float, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a Python number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    return float(value)


class GuidedPosterior(eqx.Module):
    """(x_t, t) -> the guided, tempered posterior (B, L, V), unnormalised with guidance."""

    posterior: Callable
    unconditional: Callable | None
    guidance_scale: float = eqx.field(static=True)
    temperature: float = eqx.field(static=True)

    @property
    def nfe(self) -> int:
        return 1 if self.unconditional is None else 2

    def __call__(self, x_t, t):
        p = self.posterior(x_t, t)
        if self.unconditional is not None:
            pu = self.unconditional(x_t, t)
            log_ratio = jnp.log(jnp.maximum(p, _TINY)) - jnp.log(jnp.maximum(pu, _TINY))
            p = p * jnp.exp((self.guidance_scale - 1.0) * log_ratio)
        if self.temperature != 1.0:
            p = jnp.exp(jnp.log(jnp.maximum(p, _TINY)) / self.temperature) * (p > 0)
            p = p / jnp.sum(p, axis=-1, keepdims=True)
        return p


def guided_posterior(
    posterior: Callable,
    unconditional: Callable | None = None,
    guidance_scale: float = 1.0,
    temperature: float = 1.0,
) -> GuidedPosterior:
    """The posterior with classifier-free guidance (scale w) and temperature applied."""
    check_scalar(guidance_scale, "guidance_scale", 0.0, strict=False)
    check_scalar(temperature, "temperature", 0.0, strict=True)
    if unconditional is None and guidance_scale != 1.0:
        raise ValueError(
            f"guidance_scale={guidance_scale} needs an `unconditional` posterior (CFG mixes "
            "the conditional and unconditional posteriors)"
        )
    if unconditional is not None and not callable(unconditional):
        raise TypeError(f"unconditional must be a callable (x_t, t) -> probs; got {unconditional}")
    return GuidedPosterior(posterior, unconditional, float(guidance_scale), float(temperature))
