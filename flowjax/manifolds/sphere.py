"""The unit sphere S^d = {x in R^{d+1} : |x| = 1} with the round metric.

With theta = |u| for u in T_xS^d (u . x = 0) and c = x . y (Chen & Lipman 2024, sec. 3.2 and
app. on simple geometries; the classical formulas, e.g. Absil et al. 2008, ex. 5.4.1):

    exp_x(u) = cos(theta) x + sin(theta) u / theta
    log_x(y) = theta w / |w|,   w = y - c x = P_x(y),   theta = d(x, y) = atan2(|w|, c)
    P_x(u)   = u - (x . u) x

`atan2` keeps the distance accurate near 0 and pi, where arccos(c) loses half the digits.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from flowjax.manifolds._base import AbstractManifold, _check_dim

__all__ = ["Sphere"]


def _sin_over(theta, s):
    """sin(s theta) / theta, smooth at theta = 0 (equal to s there)."""
    return s * jnp.sinc(s * theta / jnp.pi)


class Sphere(AbstractManifold):
    """S^d embedded in R^{d+1}; points (..., d + 1) of unit norm.

    Attributes:
      dim: the intrinsic dimension d (S^2: dim=2, points in R^3), or None to accept points of
        any length D >= 2 (d = D - 1 is read from them).
    """

    dim: int | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        _check_dim(self.dim, "Sphere")

    def ambient_dim_of(self, d):
        return d + 1

    def intrinsic_dim_of(self, ambient):
        return ambient - 1

    def projx(self, x):
        n = jnp.linalg.norm(x, axis=-1, keepdims=True)
        return x / jnp.where(n > 0, n, 1.0)

    def proju(self, x, u):
        return u - jnp.sum(x * u, axis=-1, keepdims=True) * x

    def expmap(self, x, u):
        theta = jnp.linalg.norm(u, axis=-1, keepdims=True)
        # Renormalised: u from a near-antipodal log loses orthogonality to x in float32.
        return self.projx(jnp.cos(theta) * x + _sin_over(theta, 1.0) * u)

    def logmap(self, x, y):
        w = self.proju(x, y)
        c = jnp.sum(x * y, axis=-1, keepdims=True)
        nw = jnp.linalg.norm(w, axis=-1, keepdims=True)
        theta = jnp.arctan2(nw, c)
        small = nw < 1e-12
        # theta / |w| -> 1 as |w| -> 0 (y = x); double `where` keeps the gradient finite.
        ratio = jnp.where(small, 1.0, theta / jnp.where(small, 1.0, nw))
        return ratio * w

    def dist(self, x, y):
        w = self.proju(x, y)
        return jnp.arctan2(jnp.linalg.norm(w, axis=-1), jnp.sum(x * y, axis=-1))

    def geodesic(self, x, u, s):
        # gamma(s) = cos(s theta) x + sin(s theta) u / theta,
        # gamma'(s) = -theta sin(s theta) x + cos(s theta) u.
        s = jnp.asarray(s, x.dtype)[..., None]
        theta = jnp.linalg.norm(u, axis=-1, keepdims=True)
        point = self.projx(jnp.cos(s * theta) * x + _sin_over(theta, s) * u)
        velocity = -theta * jnp.sin(s * theta) * x + jnp.cos(s * theta) * u
        return point, self.proju(point, velocity)

    def log_volume(self, d):
        # Vol(S^d) = 2 pi^{(d+1)/2} / Gamma((d+1)/2).
        return math.log(2.0) + 0.5 * (d + 1) * math.log(math.pi) - math.lgamma(0.5 * (d + 1))

    def random_uniform(self, key, shape, dtype):
        # A standard normal in R^{d+1} divided by its norm is uniform on S^d (Muller 1959).
        return self.projx(jax.random.normal(key, shape, dtype))

    def distance_to_manifold(self, x):
        return jnp.abs(jnp.linalg.norm(x, axis=-1) - 1.0)
