"""Geodesic probability paths on a manifold (Chen & Lipman 2024, sec. 3.2, simple geometries).

    x_t = exp_{x0}(kappa(t) log_{x0}(x1)),     dx_t = kappa'(t) gamma'(kappa(t)),

gamma(s) = exp_{x0}(s log_{x0}(x1)) the minimising geodesic from the source point x0 (t = 0)
to the data point x1 (t = 1), written with the manifold's closed-form geodesic (no autodiff).
The paper writes the same curve from the data end, exp_{x1}(kappa~(t) log_{x1}(x0)) with
kappa~ = 1 - kappa; Meta's `flow_matching.path.GeodesicProbPath` computes this one.

The scheduler kappa is any affine path of fj.paths used through its signal coefficient,
kappa(t) = alpha(t) (CondOT: kappa = t, the default and the paper's choice; Polynomial(n):
t^n; Cosine: sin(pi t / 2)), as Meta's implementation does with `scheduler(t).alpha_t`; it
must increase from kappa(0) = 0 to kappa(1) = 1.

At a point x of the conditional path the velocity is also u_t(x | x1) =
kappa'(t) / (1 - kappa(t)) log_x(x1) (the premetric field of the paper with the geodesic
distance: d log(1 - kappa) / dt times d(x, x1) grad d / |grad d|^2), which
`conditional_velocity` gives for the marginal-field oracle.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from flowjax.manifolds._base import AbstractManifold, check_points
from flowjax.paths import AffinePath, CondOT

__all__ = ["GeodesicPath"]


def _times(t, x, caller):
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(x.dtype)
    if t.ndim == 0:
        return jnp.broadcast_to(t, x.shape[:1]).astype(x.dtype)
    if t.shape != x.shape[:1]:
        raise ValueError(
            f"{caller}: t must be a scalar or have shape ({x.shape[0]},), got {t.shape}"
        )
    return t.astype(x.dtype)


@eqx.filter_jit
def _sample(gpath, x0, x1, t):
    return gpath._sample(x0, x1, t)


class GeodesicPath(eqx.Module):
    """x_t = exp_{x0}(kappa(t) log_{x0}(x1)) on `manifold`.

    Attributes:
      manifold: the manifold (fj.manifolds.Sphere(), FlatTorus(), Product(...), ...).
      scheduler: an fj.paths affine path whose alpha(t) is kappa(t); CondOT() (kappa = t).
    """

    manifold: AbstractManifold
    scheduler: AffinePath = CondOT()

    def __check_init__(self):
        if not isinstance(self.manifold, AbstractManifold):
            raise TypeError(
                f"GeodesicPath: manifold must be a manifold (e.g. fj.manifolds.Sphere()), "
                f"got {self.manifold!r}"
            )
        if not isinstance(self.scheduler, AffinePath):
            raise TypeError(
                f"GeodesicPath: scheduler must be an fj.paths path (kappa = alpha), got "
                f"{self.scheduler!r}"
            )
        ends = np.asarray(self.scheduler.alpha(jnp.asarray([0.0, 1.0])))
        if not (abs(ends[0]) < 1e-6 and abs(ends[1] - 1.0) < 1e-6):
            raise ValueError(
                f"GeodesicPath: the scheduler must have kappa(0) = 0 and kappa(1) = 1 "
                f"(alpha of {type(self.scheduler).__name__} is {ends[0]:.3g}, {ends[1]:.3g})"
            )

    def kappa(self, t: ArrayLike) -> Array:
        return self.scheduler.alpha(t)

    def d_kappa(self, t: ArrayLike) -> Array:
        return self.scheduler.d_alpha(t)

    def sample(
        self, x0: Float[ArrayLike, "B D"], x1: Float[ArrayLike, "B D"], t
    ) -> tuple[Float[Array, "B D"], Float[Array, "B D"]]:
        """(x_t, dx_t/dt): the point on M at time t and its velocity in T_{x_t}M.

        Args:
          x0: source points (B, D) on M.
          x1: data points (B, D) on M.
          t: a scalar or one time per example, shape (B,).
        """
        x0 = check_points(self.manifold, x0, "GeodesicPath.sample", "x0")
        x1 = check_points(self.manifold, x1, "GeodesicPath.sample", "x1")
        if x0.shape != x1.shape:
            raise ValueError(
                f"GeodesicPath.sample: x0 and x1 must have the same shape, got {x0.shape} and "
                f"{x1.shape}"
            )
        return _sample(self, x0, x1, _times(t, x1, "GeodesicPath.sample"))

    def _sample(self, x0, x1, t):
        u = self.manifold.logmap(x0, x1)
        point, velocity = self.manifold.geodesic(x0, u, self.kappa(t))
        return point, self.d_kappa(t)[:, None] * velocity

    def conditional_velocity(
        self, x: Float[Array, "B D"], x1: Float[Array, "B D"], t
    ) -> Float[Array, "B D"]:
        """u_t(x | x1) = kappa'(t) / (1 - kappa(t)) log_x(x1), for t < 1."""
        t = _times(t, x1, "GeodesicPath.conditional_velocity")
        rate = self.d_kappa(t) / (1.0 - self.kappa(t))
        return rate[:, None] * self.manifold.logmap(x, x1)
