"""Riemannian flow matching (Chen & Lipman 2024, "Flow Matching on General Geometries").

    M = fj.manifolds.Sphere()                       # or FlatTorus(), Euclidean(), Product((...))
    gpath = fj.manifolds.GeodesicPath(M)            # kappa(t) = t by default
    x_t, dx_t = gpath.sample(x0, x1, t)             # on M, and in T_{x_t}M
    x1, info = fj.manifolds.sample_ode(M, v, x0, solver="dopri5")
    logp, info = fj.manifolds.log_prob(M, v, x1, prior=fj.manifolds.Uniform(M))

Points are arrays (B, D) on the last axis: ambient unit vectors for the sphere, angles for
the torus, their concatenation for a product (see `Product`).
"""

from flowjax.manifolds._base import AbstractManifold as AbstractManifold
from flowjax.manifolds._base import check_points as check_points
from flowjax.manifolds._base import compatible as compatible
from flowjax.manifolds._sources import ProjectedNormal as ProjectedNormal
from flowjax.manifolds._sources import Uniform as Uniform
from flowjax.manifolds._sources import WrappedNormal as WrappedNormal
from flowjax.manifolds.coupling import GeodesicOT as GeodesicOT
from flowjax.manifolds.euclidean import Euclidean as Euclidean
from flowjax.manifolds.likelihood import log_prob as log_prob
from flowjax.manifolds.likelihood import riemannian_divergence as riemannian_divergence
from flowjax.manifolds.objective import RiemannianFlowMatching as RiemannianFlowMatching
from flowjax.manifolds.path import GeodesicPath as GeodesicPath
from flowjax.manifolds.product import Product as Product
from flowjax.manifolds.solve import RK4 as RK4
from flowjax.manifolds.solve import Projected as Projected
from flowjax.manifolds.solve import sample_ode as sample_ode
from flowjax.manifolds.sphere import Sphere as Sphere
from flowjax.manifolds.torus import FlatTorus as FlatTorus

__all__ = [
    "AbstractManifold",
    "Euclidean",
    "FlatTorus",
    "GeodesicOT",
    "GeodesicPath",
    "Product",
    "Projected",
    "ProjectedNormal",
    "RK4",
    "RiemannianFlowMatching",
    "Sphere",
    "Uniform",
    "WrappedNormal",
    "check_points",
    "compatible",
    "log_prob",
    "riemannian_divergence",
    "sample_ode",
]
