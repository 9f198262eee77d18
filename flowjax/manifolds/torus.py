"""The flat torus T^d = R^d / (2 pi Z)^d, points written as angles in [0, 2 pi).

A product of d circles with the flat metric (Chen & Lipman 2024, sec. 3.2, "simple
geometries"): geodesics are straight lines wrapped around,

    exp_x(u) = (x + u) mod 2 pi,    log_x(y) = atan2(sin(y - x), cos(y - x)) in (-pi, pi]^d,

the tangent space is all of R^d and the uniform density is (2 pi)^-d. Any real angle names a
point (inputs need not be wrapped); every point this module returns is wrapped to [0, 2 pi).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from flowjax.manifolds._base import AbstractManifold, _check_dim

__all__ = ["FlatTorus", "wrap"]

_TWO_PI = 2.0 * math.pi


def wrap(x):
    """Angles to [0, 2 pi). (jnp.mod can round up to 2 pi for tiny negative inputs.)"""
    r = jnp.mod(x, _TWO_PI)
    return jnp.where(r >= _TWO_PI, r - _TWO_PI, r)


class FlatTorus(AbstractManifold):
    """T^d as angles (..., d).

    Attributes:
      dim: the number of angles d, or None to accept any (read from the points).
    """

    dim: int | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        _check_dim(self.dim, "FlatTorus")

    def ambient_dim_of(self, d):
        return d

    def intrinsic_dim_of(self, ambient):
        return ambient

    def projx(self, x):
        return wrap(x)

    def proju(self, x, u):
        del x
        return u

    def expmap(self, x, u):
        return wrap(x + u)

    def logmap(self, x, y):
        delta = y - x
        return jnp.arctan2(jnp.sin(delta), jnp.cos(delta))

    def geodesic(self, x, u, s):
        s = jnp.asarray(s, x.dtype)[..., None]
        return wrap(x + s * u), jnp.broadcast_to(u, jnp.broadcast_shapes(u.shape, s.shape))

    def log_volume(self, d):
        return d * math.log(_TWO_PI)

    def random_uniform(self, key, shape, dtype):
        return wrap(jax.random.uniform(key, shape, dtype, 0.0, _TWO_PI))

    def distance_to_manifold(self, x):
        # Every finite angle is a point of the torus.
        return jnp.zeros(x.shape[:-1], x.dtype)

    def features(self, x):
        # (cos, sin) of each angle: continuous across the 0 / 2 pi seam.
        return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=-1)

    def feature_dim_of(self, ambient):
        return 2 * ambient
