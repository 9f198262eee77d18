"""Lagrangian map distillation (LMD) from a teacher velocity.

The flow map of b is the unique solution of the Lagrangian equation
d/dt X(x, s, t) = b(X(x, s, t), t), X(x, s, s) = x (Boffi, Albergo & Vanden-Eijnden 2024,
"Flow map matching", Lagrangian map distillation), so it is the minimiser, with value 0, of

    L(theta) = E_{s, t, x_s ~ rho_s} || d/dt X_theta(x_s, s, t) - b(X_theta(x_s, s, t), t) ||^2

with x_s = alpha(s) x1 + sigma(s) x0 a point of the path. d/dt X_theta is one forward-mode
derivative (`jax.jvp` in t); the identity at s = t is built into X_theta. The gradient flows
through the teacher's input X_theta (the teacher's own parameters are fixed), as in the paper.

Times: s, t i.i.d. from `time_dist`, then sorted to s <= t (`directions="forward"`, all the
sampler needs) or left in either order (`directions="both"`, learning the inverse map too).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from flowjax.flowmaps import _common

__all__ = ["LMD", "loss"]

_NAME = "lmd"
DIRECTIONS = _common.DIRECTIONS


class LMD(_common.AbstractMapDistillation):
    """LMD loss (Boffi et al. 2024, Lagrangian map distillation).

    Attributes: path, teacher, model, time_dist, directions, source (see
    `_common.AbstractMapDistillation`).

    Call: `(params, key, batch, *, model=None) -> (loss, aux)`; labels and context of the batch
    go to model and teacher; aux = {"loss", "gap_mean", "per_example_loss" (B,)}.
    """

    name = _NAME

    def residual(self, X, params, x_s, s, t, conds, b, key):
        """d/dt X(x_s, s, t) - b(X(x_s, s, t), t), d/dt by one jvp in t."""

        def along_t(tt):
            return X(params, x_s, s, tt, key=key, **conds)

        x_t, dx_dt = jax.jvp(along_t, (t,), (jnp.ones_like(t),))
        return dx_dt - b(x_t, t)


def loss(params, key: PRNGKeyArray, batch: dict, *, model, path, **kwargs):
    """`LMD(path=path, **kwargs)(params, key, batch, model=model)`."""
    return LMD(path=path, **kwargs)(params, key, batch, model=model)
