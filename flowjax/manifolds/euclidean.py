"""Euclidean space R^d as a manifold: exp_x(u) = x + u, log_x(y) = y - x, T_xR^d = R^d.

Not compact, so it has no uniform distribution; use a Gaussian source (fj.sources) with it.
It lets a product such as S^2 x R^d carry unbounded coordinates.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp

from flowjax.manifolds._base import AbstractManifold, _check_dim

__all__ = ["Euclidean"]


class Euclidean(AbstractManifold):
    """R^d with the flat metric; points (..., d).

    Attributes:
      dim: d, or None to accept any (read from the points).
    """

    dim: int | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        _check_dim(self.dim, "Euclidean")

    def ambient_dim_of(self, d):
        return d

    def intrinsic_dim_of(self, ambient):
        return ambient

    def projx(self, x):
        return x

    def proju(self, x, u):
        del x
        return u

    def expmap(self, x, u):
        return x + u

    def logmap(self, x, y):
        return y - x

    def dist(self, x, y):
        return jnp.linalg.norm(y - x, axis=-1)

    def geodesic(self, x, u, s):
        s = jnp.asarray(s, x.dtype)[..., None]
        return x + s * u, jnp.broadcast_to(u, jnp.broadcast_shapes(u.shape, s.shape))

    def distance_to_manifold(self, x):
        return jnp.zeros(x.shape[:-1], x.dtype)
