"""Minibatch optimal transport on a manifold: the cost is the squared geodesic distance.

C_ij = d_g(x0_i, x1_j)^2 (Chen & Lipman 2024 use minibatch OT with the geodesic cost on
simple geometries, following Tong et al. 2024 / Pooladian et al. 2023). The solvers are the
ones of fj.couplings, reused: the exact assignment (on-device Hungarian) or entropic OT
(ott-jax Sinkhorn on the precomputed cost, epsilon relative to the mean cost) with pairs drawn
from the plan.
"""

from __future__ import annotations

import equinox as eqx
import jax
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn

from flowjax.couplings import AbstractCoupling, _hungarian_col_to_row, _pairs_from_log_plan
from flowjax.manifolds._base import AbstractManifold

__all__ = ["GeodesicOT", "geodesic_cost"]


def geodesic_cost(manifold: AbstractManifold, x0, x1):
    """C_ij = d_g(x0_i, x1_j)^2 for x0 (B, D), x1 (B', D)."""
    x0 = jax.lax.stop_gradient(x0)
    x1 = jax.lax.stop_gradient(x1)
    return manifold.dist(x0[:, None, :], x1[None, :, :]) ** 2


class GeodesicOT(AbstractCoupling):
    """Minibatch OT coupling with the squared geodesic cost of `manifold`.

    Attributes:
      manifold: the manifold of x0 and x1.
      method: "exact" (optimal permutation; every x0 and x1 used once) or "sinkhorn".
      epsilon: entropic regularisation relative to the mean cost (sinkhorn).
      num_iters, threshold: Sinkhorn iteration cap and marginal tolerance.
      replace: draw plan pairs with replacement (sinkhorn).
    """

    manifold: AbstractManifold
    method: str = eqx.field(default="exact", static=True)
    epsilon: float = eqx.field(default=0.01, static=True)
    num_iters: int = eqx.field(default=1000, static=True)
    threshold: float = eqx.field(default=1e-3, static=True)
    replace: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        if not isinstance(self.manifold, AbstractManifold):
            raise TypeError(f"GeodesicOT: manifold must be a manifold, got {self.manifold!r}")
        if self.method not in ("exact", "sinkhorn"):
            raise ValueError(
                f"GeodesicOT: method must be 'exact' or 'sinkhorn', got {self.method!r}"
            )
        if not (isinstance(self.epsilon, (int, float)) and self.epsilon > 0):
            raise ValueError(f"GeodesicOT: epsilon must be positive, got {self.epsilon!r}")

    def _pair(self, key, x0, x1, labels):
        cost = geodesic_cost(self.manifold, x0, x1)
        if self.method == "exact":
            return x0[_hungarian_col_to_row(cost)], x1, labels
        geom = geometry.Geometry(cost_matrix=cost, epsilon=self.epsilon, scale_cost="mean")
        out = sinkhorn.Sinkhorn(max_iterations=self.num_iters, threshold=self.threshold)(
            linear_problem.LinearProblem(geom)
        )
        log_plan = (out.f[:, None] + out.g[None, :] - geom.cost_matrix) / geom.epsilon
        return _pairs_from_log_plan(key, log_plan, x0, x1, labels, self.replace)
