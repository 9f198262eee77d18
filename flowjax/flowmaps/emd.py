"""Eulerian map distillation (EMD) from a teacher velocity.

The flow map of b is constant along trajectories in its start point, which is the Eulerian
(transport) equation d/ds X(x, s, t) + grad_x X(x, s, t) . b(x, s) = 0 with X(x, t, t) = x
(Boffi, Albergo & Vanden-Eijnden 2024, "Flow map matching", Eulerian map distillation).
Its minimiser, with value 0, is the flow map:

    L(theta) = E_{s, t, x_s} || d/ds X_theta(x_s, s, t) + grad X_theta(x_s, s, t) b(x_s, s) ||^2

The residual is a single Jacobian-vector product of (x, s) -> X_theta(x, s, t) along the
tangent (b(x_s, s), 1) (`jax.jvp`), so no Jacobian is formed. The teacher is evaluated at the
data-path point only, so no gradient reaches it.

Times: s, t i.i.d. from `time_dist`, sorted to s <= t (`directions="forward"`) or in either
order (`directions="both"`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from flowjax.flowmaps import _common

__all__ = ["EMD", "loss"]

_NAME = "emd"
DIRECTIONS = _common.DIRECTIONS


class EMD(_common.AbstractMapDistillation):
    """EMD loss (Boffi et al. 2024, Eulerian map distillation).

    Attributes: as `fj.flowmaps.lmd.LMD` (path, teacher, model, time_dist, directions, source).

    Call: `(params, key, batch, *, model=None) -> (loss, aux)` with aux = {"loss", "gap_mean",
    "per_example_loss" (B,)}.
    """

    name = _NAME

    def residual(self, X, params, x_s, s, t, conds, b, key):
        """d/ds X(x_s, s, t) + grad_x X(x_s, s, t) b(x_s, s): one jvp along (b(x_s, s), 1)."""
        b_s = jax.lax.stop_gradient(b(x_s, s))

        def of_start(xx, ss):
            return X(params, xx, ss, t, key=key, **conds)

        _, out = jax.jvp(of_start, (x_s, s), (b_s.astype(x_s.dtype), jnp.ones_like(s)))
        return out


def loss(params, key: PRNGKeyArray, batch: dict, *, model, path, **kwargs):
    """`EMD(path=path, **kwargs)(params, key, batch, model=model)`."""
    return EMD(path=path, **kwargs)(params, key, batch, model=model)
