"""Sources (fj.sources interface) on manifolds: the uniform law and Gaussians made periodic
or projected.

- `Uniform(M)`: the normalised Riemannian volume of a compact M; log p = -log Vol(M).
- `WrappedNormal(mean, scale)` on the flat torus: x = (mean + scale z) mod 2 pi, z ~ N(0, I);
  its density is the sum over the lattice of images (Mardia & Jupp 2000, sec. 3.5.7),
  truncated to |k| <= num_wraps per angle (error < exp(-(2 pi num_wraps - pi)^2 / (2 s^2))).
- `ProjectedNormal(mean, scale)` on the sphere S^d: x = y / |y|, y ~ N(mean, scale^2 I_{d+1})
  (Mardia & Jupp 2000, sec. 9.3.3). Its density on S^d is the radial integral
      p(x) = int_0^inf r^d N(r x; mean, s^2 I) dr
           = (2 pi s^2)^{-(d+1)/2} exp(-|mean|^2 / 2s^2) s sum_j C(d, j) m^{d-j} s^j J_j,
  m = x . mean, J_j = exp(m^2 / 2s^2) int_{-m/s}^inf u^j exp(-u^2/2) du, which obey
  J_0 = sqrt(2 pi) exp(m^2/2s^2) Phi(m/s), J_1 = 1, J_j = (-m/s)^{j-1} + (j - 1) J_{j-2}
  (integration by parts): a closed form for every d.

Every source carries its `manifold`, so the objective and the likelihood can refuse a source
on another space.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr, logsumexp
from jaxtyping import Array, ArrayLike, Float

from flowjax.manifolds._base import AbstractManifold
from flowjax.manifolds.sphere import Sphere
from flowjax.manifolds.torus import FlatTorus, wrap
from flowjax.sources import AbstractSource, _sample_shape

__all__ = ["Uniform", "WrappedNormal", "ProjectedNormal"]

_TWO_PI = 2.0 * math.pi


def _dtype(dtype):
    return jnp.result_type(float) if dtype is None else dtype


# One compiled program per (source, shape, dtype): eager calls are then a single dispatch.
@eqx.filter_jit
def _draw(source, key, shape, dtype):
    return source._draw(key, shape, dtype)


@eqx.filter_jit
def _density(source, x):
    return source._log_prob(x)


def _check_log_prob_x(x, manifold, owner):
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{owner}.log_prob: x must have shape (B, D), got {x.shape}")
    manifold.check_dim(x.shape[-1], f"{owner}.log_prob", "x")
    return x


class Uniform(AbstractSource):
    """The uniform distribution on a compact manifold (sphere, torus, products of them).

    Attributes:
      manifold: the manifold; with `dim` unset, `sample` needs a full shape (B, D).
    """

    manifold: AbstractManifold

    def __check_init__(self):
        if not isinstance(self.manifold, AbstractManifold):
            raise TypeError(f"Uniform: manifold must be a manifold, got {self.manifold!r}")
        if self.manifold.dim is not None:
            self.manifold.log_volume(self.manifold.dim)  # raises for a non-compact manifold

    @property
    def event_shape(self):
        d = self.manifold.ambient_dim
        return None if d is None else (d,)

    def sample(self, key, shape, *, context=None, dtype=None):
        del context
        shape = _sample_shape(shape, self.event_shape, "Uniform")
        if len(shape) != 2:
            raise ValueError(f"Uniform.sample: shape must be (B, D), got {shape}")
        return _draw(self, key, shape, _dtype(dtype))

    def log_prob(self, x, *, context=None):
        del context
        return _density(self, _check_log_prob_x(x, self.manifold, "Uniform"))

    def _draw(self, key, shape, dtype):
        return self.manifold.random_uniform(key, shape, dtype)

    def _log_prob(self, x):
        return self.manifold.uniform_log_prob(x)


class WrappedNormal(AbstractSource):
    """N(mean, diag(scale^2)) wrapped onto the flat torus T^d.

    Attributes:
      mean: (d,) angles.
      scale: a positive number or (d,) positive per-angle standard deviations.
      num_wraps: images k in [-num_wraps, num_wraps] per angle kept in the density.
    """

    mean: Float[Array, " d"]
    scale: Float[ArrayLike, "..."]
    num_wraps: int = eqx.field(default=4, static=True)

    def __init__(self, mean, scale, num_wraps: int = 4):
        self.mean = jnp.atleast_1d(jnp.asarray(mean, jnp.result_type(float)))
        self.scale = jnp.broadcast_to(jnp.asarray(scale, self.mean.dtype), self.mean.shape)
        self.num_wraps = num_wraps

    def __check_init__(self):
        if self.mean.ndim != 1:
            raise ValueError(f"WrappedNormal: mean must have shape (d,), got {self.mean.shape}")
        if isinstance(self.num_wraps, bool) or not isinstance(self.num_wraps, int):
            raise ValueError(f"WrappedNormal: num_wraps must be an int, got {self.num_wraps!r}")
        try:
            ok = bool(jnp.all(self.scale > 0))
        except jax.errors.ConcretizationTypeError:
            ok = True
        if not ok:
            raise ValueError("WrappedNormal: scale must be positive")

    @property
    def manifold(self):
        return FlatTorus(dim=self.mean.shape[0])

    @property
    def event_shape(self):
        return tuple(self.mean.shape)

    def sample(self, key, shape, *, context=None, dtype=None):
        del context
        shape = _sample_shape(shape, self.event_shape, "WrappedNormal")
        return _draw(self, key, shape, _dtype(dtype))

    def log_prob(self, x, *, context=None):
        del context
        return _density(self, _check_log_prob_x(x, self.manifold, "WrappedNormal"))

    def _draw(self, key, shape, dtype):
        return wrap(self.mean + self.scale * jax.random.normal(key, shape, dtype))

    def _log_prob(self, x):
        delta = FlatTorus().logmap(self.mean, x)  # in (-pi, pi]
        k = jnp.arange(-self.num_wraps, self.num_wraps + 1, dtype=x.dtype)
        z = (delta[..., None] + _TWO_PI * k) / self.scale[..., None]
        per_angle = logsumexp(-0.5 * z**2, axis=-1) - jnp.log(self.scale) - 0.5 * math.log(_TWO_PI)
        return jnp.sum(per_angle, axis=-1)


class ProjectedNormal(AbstractSource):
    """The projected normal on S^d: y ~ N(mean, scale^2 I_{d+1}), x = y / |y|.

    Attributes:
      mean: (d + 1,) ambient vector (its direction is the mode; |mean| / scale sets the
        concentration; mean = 0 gives the uniform law).
      scale: positive standard deviation of y.
    """

    mean: Float[Array, " D"]
    scale: Float[ArrayLike, ""]

    def __init__(self, mean, scale=1.0):
        self.mean = jnp.asarray(mean, jnp.result_type(float))
        self.scale = jnp.asarray(scale, self.mean.dtype)

    def __check_init__(self):
        if self.mean.ndim != 1 or self.mean.shape[0] < 2:
            raise ValueError(
                f"ProjectedNormal: mean must have shape (d + 1,) with d >= 1, got {self.mean.shape}"
            )
        if self.scale.ndim != 0:
            raise ValueError(f"ProjectedNormal: scale must be a scalar, got {self.scale.shape}")
        try:
            ok = bool(self.scale > 0)
        except jax.errors.ConcretizationTypeError:
            ok = True
        if not ok:
            raise ValueError(f"ProjectedNormal: scale must be positive, got {self.scale}")

    @property
    def manifold(self):
        return Sphere(dim=self.mean.shape[0] - 1)

    @property
    def event_shape(self):
        return tuple(self.mean.shape)

    def sample(self, key, shape, *, context=None, dtype=None):
        del context
        shape = _sample_shape(shape, self.event_shape, "ProjectedNormal")
        return _draw(self, key, shape, _dtype(dtype))

    def log_prob(self, x, *, context=None):
        del context
        return _density(self, _check_log_prob_x(x, self.manifold, "ProjectedNormal"))

    def _draw(self, key, shape, dtype):
        return Sphere().projx(self.mean + self.scale * jax.random.normal(key, shape, dtype))

    def _log_prob(self, x):
        d = x.shape[-1] - 1
        s = self.scale.astype(x.dtype)
        mean = self.mean.astype(x.dtype)
        m = jnp.sum(x * mean, axis=-1)
        a = -m / s
        js = [jnp.sqrt(_TWO_PI) * jnp.exp(log_ndtr(m / s) + 0.5 * a**2), jnp.ones_like(m)]
        for j in range(2, d + 1):
            js.append(a ** (j - 1) + (j - 1) * js[j - 2])
        total = sum(math.comb(d, j) * m ** (d - j) * s**j * js[j] for j in range(d + 1))
        log_norm = -0.5 * (d + 1) * jnp.log(_TWO_PI * s**2) - 0.5 * jnp.sum(mean**2) / s**2
        return log_norm + jnp.log(s) + jnp.log(total)
