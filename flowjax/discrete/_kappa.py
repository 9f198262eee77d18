"""Schedulers kappa(t) of the factorized mixture path (Gat et al. 2024, sec. 2.2, eq. (9)).

kappa: [0, 1] -> [0, 1] increasing, kappa(0) = 0 (all source), kappa(1) = 1 (all data).
Each has a closed-form derivative; `jump_rate(t) = kappa'(t) / (1 - kappa(t))` is the
coefficient of the posterior-to-velocity conversion (Gat et al. 2024, eq. (13)).
"""

from __future__ import annotations

import abc
import math

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

__all__ = ["AbstractKappa", "LinearKappa", "PolynomialKappa", "CosineKappa", "KAPPAS"]


def _f(t) -> Array:
    t = jnp.asarray(t)
    return t if jnp.issubdtype(t.dtype, jnp.floating) else t.astype(jnp.result_type(float))


class AbstractKappa(eqx.Module):
    """kappa(t), its derivative, and the jump rate kappa' / (1 - kappa)."""

    @abc.abstractmethod
    def __call__(self, t: ArrayLike) -> Array:
        """kappa(t) in [0, 1]."""

    @abc.abstractmethod
    def derivative(self, t: ArrayLike) -> Array:
        """d kappa / dt."""

    def jump_rate(self, t: ArrayLike) -> Array:
        """kappa'(t) / (1 - kappa(t)): rate at which a source token flips to its data token."""
        return self.derivative(t) / (1.0 - self(t))


class PolynomialKappa(AbstractKappa):
    """kappa(t) = t^n (Gat et al. 2024, sec. 7; n = 1 is the linear/CondOT scheduler)."""

    n: float = 1.0

    def __check_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, (int, float)) or not self.n > 0:
            raise ValueError(f"PolynomialKappa: n must be a positive number, got {self.n!r}")

    def __call__(self, t):
        return _f(t) ** self.n

    def derivative(self, t):
        t = _f(t)
        return self.n * t ** (self.n - 1.0)


class LinearKappa(PolynomialKappa):
    """kappa(t) = t (`PolynomialKappa` with n fixed to 1)."""

    def __init__(self):
        self.n = 1.0


class CosineKappa(AbstractKappa):
    """kappa(t) = 1 - cos(pi t / 2) (the cosine masking schedule of Shi et al. 2024, MD4,
    written in this time convention: t = 1 is data)."""

    def __call__(self, t):
        return 1.0 - jnp.cos(0.5 * math.pi * _f(t))

    def derivative(self, t):
        return 0.5 * math.pi * jnp.sin(0.5 * math.pi * _f(t))


KAPPAS: dict[str, type[AbstractKappa]] = {
    "linear": LinearKappa,
    "polynomial": PolynomialKappa,
    "cosine": CosineKappa,
}
