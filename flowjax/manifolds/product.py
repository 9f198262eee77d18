"""Products M_1 x ... x M_k of the manifolds here, with the product metric.

Layout: a point is the concatenation, on the last axis, of its factors' representations in
order, e.g. `Product((Sphere(dim=2), FlatTorus(dim=2)))` has points (..., 3 + 2) =
[x, y, z, phi, psi]. Tangent vectors use the same layout. Every operation acts factor by
factor; the metric, hence the squared distance and the log-volume, are sums over factors,
and the uniform law is the product of the factors' uniform laws.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from flowjax.manifolds._base import AbstractManifold

__all__ = ["Product"]


class Product(AbstractManifold):
    """M_1 x ... x M_k; every factor needs its `dim` set (the layout must be known).

    Attributes:
      factors: the factor manifolds, in layout order.
    """

    factors: tuple[AbstractManifold, ...]
    dim: int | None = eqx.field(static=True)

    def __init__(self, factors):
        self.factors = tuple(factors) if isinstance(factors, (tuple, list)) else factors
        dims = [getattr(m, "dim", None) for m in self.factors] if self.factors else [None]
        self.dim = None if None in dims else sum(dims)

    def __check_init__(self):
        if not isinstance(self.factors, tuple) or len(self.factors) < 1:
            raise ValueError(f"Product: factors must be a non-empty tuple, got {self.factors!r}")
        for i, m in enumerate(self.factors):
            if not isinstance(m, AbstractManifold):
                raise TypeError(f"Product: factor {i} must be a manifold, got {m!r}")
            if m.dim is None:
                raise ValueError(
                    f"Product: factor {i} ({type(m).__name__}) needs dim=... so that the "
                    "layout of concatenated points is known"
                )

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(m.ambient_dim for m in self.factors)

    def ambient_dim_of(self, d):
        del d
        return sum(self.sizes)

    def intrinsic_dim_of(self, ambient):
        del ambient
        return self.dim

    def _split(self, x):
        out, start = [], 0
        for n in self.sizes:
            out.append(x[..., start : start + n])
            start += n
        return out

    def _map(self, fn, *arrays):
        parts = zip(*(self._split(a) for a in arrays), strict=True)
        out = [fn(m, *p) for m, p in zip(self.factors, parts, strict=True)]
        return jnp.concatenate(out, axis=-1)

    def _sum(self, fn, *arrays):
        parts = zip(*(self._split(a) for a in arrays), strict=True)
        return sum(fn(m, *p) for m, p in zip(self.factors, parts, strict=True))

    def projx(self, x):
        return self._map(lambda m, a: m.projx(a), x)

    def proju(self, x, u):
        return self._map(lambda m, a, b: m.proju(a, b), x, u)

    def expmap(self, x, u):
        return self._map(lambda m, a, b: m.expmap(a, b), x, u)

    def logmap(self, x, y):
        return self._map(lambda m, a, b: m.logmap(a, b), x, y)

    def inner(self, x, u, v):
        return self._sum(lambda m, a, b, c: m.inner(a, b, c), x, u, v)

    def dist(self, x, y):
        return jnp.sqrt(self._sum(lambda m, a, b: m.dist(a, b) ** 2, x, y))

    def geodesic(self, x, u, s):
        xs, us = self._split(x), self._split(u)
        pairs = [m.geodesic(a, b, s) for m, a, b in zip(self.factors, xs, us, strict=True)]
        return (
            jnp.concatenate([p for p, _ in pairs], axis=-1),
            jnp.concatenate([v for _, v in pairs], axis=-1),
        )

    def log_volume(self, d):
        del d
        return sum(m.log_volume(m.dim) for m in self.factors)

    def random_uniform(self, key, shape, dtype):
        keys = jax.random.split(key, len(self.factors))
        return jnp.concatenate(
            [
                m.random_uniform(k, tuple(shape[:-1]) + (n,), dtype)
                for m, k, n in zip(self.factors, keys, self.sizes, strict=True)
            ],
            axis=-1,
        )

    def distance_to_manifold(self, x):
        return jnp.sqrt(self._sum(lambda m, a: m.distance_to_manifold(a) ** 2, x))

    def features(self, x):
        return self._map(lambda m, a: m.features(a), x)

    def feature_dim_of(self, ambient):
        del ambient
        return sum(m.feature_dim_of(n) for m, n in zip(self.factors, self.sizes, strict=True))
