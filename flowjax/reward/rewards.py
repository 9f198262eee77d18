"""Rewards r(x) -> (B,) on data, as small pytrees (differentiable, jit-friendly).

`Quadratic` is the Gaussian-shaped reward whose tilt of a Gaussian mixture is again a mixture
(`fj.analytic.GaussianMixture.tilt`); `Region` a smooth box indicator (the checkerboard task);
`ClassLogProb` the log-probability of one class under a classifier (the digits task).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

__all__ = ["ClassLogProb", "Quadratic", "Region"]


class Quadratic(eqx.Module):
    """r(x) = -|A (x - c)|^2 / 2 (A = I / scale when `matrix` is None).

    Attributes:
      center: (D,) the reward's peak c.
      matrix: (D, D) or (M, D) the matrix A, or None for A = I / scale.
      scale: the isotropic length scale (with matrix=None).
    """

    center: Float[Array, " D"]
    matrix: Float[Array, "M D"] | None = None
    scale: float = 1.0

    def __check_init__(self):
        if jnp.ndim(self.center) != 1:
            raise ValueError(
                f"Quadratic: center must have shape (D,), got {jnp.shape(self.center)}"
            )
        if self.matrix is not None and (
            jnp.ndim(self.matrix) != 2 or jnp.shape(self.matrix)[1] != jnp.shape(self.center)[0]
        ):
            raise ValueError(
                f"Quadratic: matrix must have shape (M, {jnp.shape(self.center)[0]}), "
                f"got {jnp.shape(self.matrix)}"
            )
        if not isinstance(self.scale, jax.core.Tracer) and not float(self.scale) > 0:
            raise ValueError(f"Quadratic: scale must be positive, got {self.scale!r}")

    def precision(self) -> Float[Array, "D D"]:
        """P = A^T A, so that r(x) = -(x - c)^T P (x - c) / 2."""
        d = jnp.shape(self.center)[0]
        if self.matrix is None:
            return jnp.eye(d, dtype=jnp.result_type(self.center)) / self.scale**2
        a = jnp.asarray(self.matrix)
        return a.T @ a

    def __call__(self, x: Float[ArrayLike, "B D"]) -> Float[Array, " B"]:
        diff = jnp.asarray(x) - self.center
        if self.matrix is None:
            return -0.5 * jnp.sum(diff**2, -1) / self.scale**2
        return -0.5 * jnp.sum((diff @ jnp.asarray(self.matrix).T) ** 2, -1)

    def tilt(self, gmm, strength: float):
        """The exact target p* ~ gmm * exp(strength r) (a `GaussianMixture`)."""
        return gmm.tilt(self.center, 1.0, strength, precision=self.precision())


class Region(eqx.Module):
    """A smooth indicator of the box [low, high]: r(x) = sum_d log sigmoid of both walls.

    r(x) = sum_d [log sigmoid((x_d - low_d) / width) + log sigmoid((high_d - x_d) / width)]:
    ~0 inside the box, falling linearly (slope 1 / width) with the distance outside.

    Attributes:
      low, high: (D,) box corners (low < high).
      width: the softness of the walls (> 0).
    """

    low: Float[Array, " D"]
    high: Float[Array, " D"]
    width: float = 0.25

    def __check_init__(self):
        lo, hi = np.asarray(self.low), np.asarray(self.high)
        if lo.shape != hi.shape or lo.ndim != 1 or not np.all(lo < hi):
            raise ValueError(f"Region: low < high, both (D,), got {lo} and {hi}")
        if not float(self.width) > 0:
            raise ValueError(f"Region: width must be positive, got {self.width!r}")

    def __call__(self, x: Float[ArrayLike, "B D"]) -> Float[Array, " B"]:
        x = jnp.asarray(x)
        lo = jax.nn.log_sigmoid((x - self.low) / self.width)
        hi = jax.nn.log_sigmoid((self.high - x) / self.width)
        return jnp.sum(lo + hi, -1)


class ClassLogProb(eqx.Module):
    """r(x) = log p(y = label | x) under a classifier returning logits (B, C).

    Attributes:
      logits_fn: x -> (B, C) logits (a pytree callable, e.g. the digits classifier).
      label: the chosen class.
    """

    logits_fn: Callable
    label: int = eqx.field(static=True, default=0)

    def __call__(self, x: Float[ArrayLike, " B *D"]) -> Float[Array, " B"]:
        logits = self.logits_fn(jnp.asarray(x))
        return jax.nn.log_softmax(logits, -1)[:, self.label]
