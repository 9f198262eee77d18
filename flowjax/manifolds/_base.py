"""The manifold interface shared by the sphere, the flat torus, Euclidean space and products.

A manifold is a small immutable pytree (`equinox.Module`) whose methods act on the last axis
of arrays of points (..., D) written in a fixed representation: ambient coordinates in R^{d+1}
for the sphere S^d, angles for the torus T^d. Tangent vectors at x are arrays of the same
shape as x (ambient vectors for the sphere). The metric is the one induced by that
representation (the Euclidean inner product of the ambient vectors) for every manifold here.

Operations follow the notation of Chen & Lipman 2024 ("Flow Matching on General Geometries",
sec. 2): exp_x(u), log_x(y), the geodesic distance d_g(x, y), projections onto M and onto T_xM.
"""

from __future__ import annotations

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["AbstractManifold", "check_points", "compatible", "concrete"]


def concrete(x) -> np.ndarray | None:
    """x as a NumPy array when it is known at trace time, else None."""
    try:
        return np.asarray(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def _check_dim(dim, owner: str):
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise ValueError(f"{owner}: dim must be None or a positive int, got {dim!r}")


class AbstractManifold(eqx.Module):
    """A Riemannian manifold M with closed-form geodesics, points (..., D) on the last axis.

    `dim` is the intrinsic dimension d (None: any, read from the points); `ambient_dim(d)` is
    the length D of a point's representation.
    """

    dim: eqx.AbstractVar[int | None]

    # ------------------------------------------------------------------ sizes
    @abc.abstractmethod
    def ambient_dim_of(self, d: int) -> int:
        """Length D of a point's representation for intrinsic dimension d."""

    @abc.abstractmethod
    def intrinsic_dim_of(self, ambient: int) -> int:
        """Intrinsic dimension d for representation length D (inverse of `ambient_dim_of`)."""

    @property
    def ambient_dim(self) -> int | None:
        return None if self.dim is None else self.ambient_dim_of(self.dim)

    # ------------------------------------------------------------------ geometry
    @abc.abstractmethod
    def expmap(self, x: Float[Array, "... D"], u: Float[Array, "... D"]) -> Float[Array, "... D"]:
        """exp_x(u): the point reached at time 1 by the geodesic from x with velocity u."""

    @abc.abstractmethod
    def logmap(self, x: Float[Array, "... D"], y: Float[Array, "... D"]) -> Float[Array, "... D"]:
        """log_x(y): the tangent vector at x of the minimising geodesic to y (|log| = d(x, y))."""

    @abc.abstractmethod
    def projx(self, x: Float[Array, "... D"]) -> Float[Array, "... D"]:
        """The point of M nearest to x (a retraction of the representation onto M)."""

    @abc.abstractmethod
    def proju(self, x: Float[Array, "... D"], u: Float[Array, "... D"]) -> Float[Array, "... D"]:
        """Orthogonal projection of u onto the tangent space T_xM."""

    @abc.abstractmethod
    def geodesic(
        self, x: Float[Array, "... D"], u: Float[Array, "... D"], s: Float[Array, "..."]
    ) -> tuple[Float[Array, "... D"], Float[Array, "... D"]]:
        """(gamma(s), gamma'(s)) for the geodesic gamma(s) = exp_x(s u), in closed form.

        `s` broadcasts against the batch dimensions of x (shape (...,)).
        """

    def inner(self, x, u, v) -> Float[Array, "..."]:
        """Riemannian metric g_x(u, v); the induced Euclidean one for every manifold here."""
        del x
        return jnp.sum(u * v, axis=-1)

    def norm(self, x, u) -> Float[Array, "..."]:
        return jnp.sqrt(jnp.maximum(self.inner(x, u, u), 0.0))

    def dist(self, x, y) -> Float[Array, "..."]:
        """Geodesic distance d_g(x, y) = |log_x(y)|_g."""
        return self.norm(x, self.logmap(x, y))

    # ------------------------------------------------------------------ uniform law
    def log_volume(self, d: int) -> float:
        """log Vol(M) of the d-dimensional manifold (compact manifolds only)."""
        raise ValueError(f"{type(self).__name__} is not compact: it has no uniform distribution")

    def random_uniform(self, key: PRNGKeyArray, shape: tuple[int, ...], dtype) -> Array:
        """Draws of the uniform (normalised Riemannian volume) distribution, shape (..., D)."""
        raise ValueError(f"{type(self).__name__} is not compact: it has no uniform distribution")

    def uniform_log_prob(self, x: Float[Array, "... D"]) -> Float[Array, "..."]:
        """log of the uniform density w.r.t. the Riemannian volume: -log Vol(M)."""
        d = self.intrinsic_dim_of(x.shape[-1])
        return jnp.full(x.shape[:-1], -self.log_volume(d), x.dtype)

    # ------------------------------------------------------------------ checks, features
    def distance_to_manifold(self, x: Float[Array, "... D"]) -> Float[Array, "..."]:
        """How far x is from M in its representation (0 on M)."""
        return jnp.linalg.norm(x - self.projx(x), axis=-1)

    def features(self, x: Float[Array, "... D"]) -> Float[Array, "... F"]:
        """Network input features of points: continuous on M (e.g. (cos, sin) of angles)."""
        return x

    def feature_dim_of(self, ambient: int) -> int:
        return ambient

    def check_dim(self, ambient: int, caller: str, name: str) -> None:
        if self.dim is not None and ambient != self.ambient_dim:
            raise ValueError(
                f"{caller}: {name} has {ambient} coordinates per point, but {self!r} has points "
                f"of {self.ambient_dim}"
            )


def check_points(manifold: AbstractManifold, x, caller: str, name: str = "x", atol=None):
    """x as an array (B, D) on `manifold`: shape, dtype, finiteness and (where concrete) M.

    Raises:
      ValueError / TypeError with one line naming `name` and what is wrong.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{caller}: {name} must be a floating-point array, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{caller}: {name} must have shape (B, D), got {x.shape}")
    manifold.check_dim(x.shape[-1], caller, name)
    value = concrete(x)
    if value is not None:
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{caller}: {name} has non-finite values")
        tol = atol if atol is not None else (1e-4 if value.dtype == np.float32 else 1e-8)
        off = np.asarray(manifold.distance_to_manifold(x))
        if np.any(off > tol * math.sqrt(x.shape[-1])):
            worst = float(np.max(off))
            raise ValueError(
                f"{caller}: {name} is not on {manifold!r} (largest distance {worst:.3g}); "
                "project it first with manifold.projx"
            )
    return x


def compatible(a, b) -> bool:
    """Whether two manifolds are the same space (same kind; dims equal where both are set)."""
    if type(a) is not type(b):
        return False
    fa, fb = getattr(a, "factors", None), getattr(b, "factors", None)
    if fa is not None:
        return len(fa) == len(fb) and all(compatible(p, q) for p, q in zip(fa, fb, strict=True))
    return a.dim is None or b.dim is None or a.dim == b.dim
