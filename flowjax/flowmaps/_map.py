"""The flow-map parameterization X(x, s, t) = x + (t - s) u(x, s, t).

A flow map X(x, s, t) is the point at time t of the probability-flow trajectory through x at
time s (Boffi, Albergo & Vanden-Eijnden 2024, "Flow map matching"). Writing it as

    X(x, s, t) = x + (t - s) * u(x, s, t)

makes X(x, s, s) = x hold by construction (bitwise: the update is multiplied by exactly 0),
and makes u the *average velocity* over [s, t] (Geng et al. 2025, MeanFlow, eq. (3));
on the diagonal u(x, t, t) = d/dt' X(x, t, t')|_{t'=t} is the instantaneous velocity
(the "tangent condition" of Boffi et al. 2025, "How to build a consistency model").

Network time convention: the two-time network is called as

    u = apply_fn(params, x, t, s=s)

i.e. the network's main time argument is the *destination* time t and its keyword `s` is the
*start* time s (the time at which x lives), so the names of X(x, s, t) carry over unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from flowjax._types import Time, expand_time
from flowjax.objectives._common import with_context

__all__ = [
    "FlowMap",
    "BoundFlowMap",
    "flow_map_apply",
    "as_callable",
    "velocity_of",
    "semigroup_violation",
]


def _gap(s, t, x):
    """(t - s) shaped to broadcast against x, in x's dtype."""
    dt = jnp.asarray(t, x.dtype) - jnp.asarray(s, x.dtype)
    return expand_time(dt, x)


class FlowMap(eqx.Module):
    """X(params, x, s, t) = x + (t - s) * u(params, x, s, t) from a two-time apply function.

    Attributes:
      apply_fn: `apply_fn(params, x, t, *, s=None, y=None, key=None) -> (B, *D)`, the two-time
        network u (destination time t positional, start time s keyword; see module docstring).
    """

    apply_fn: Callable = eqx.field(static=True)

    def __check_init__(self):
        if not callable(self.apply_fn):
            raise TypeError(
                "FlowMap: apply_fn must be a two-time apply function "
                f"apply_fn(params, x, t, *, s=None, y=None, key=None), got {self.apply_fn!r}"
            )

    def average_velocity(
        self, params, x: Float[Array, " B *D"], s: Time, t: Time, *, y=None, key=None, context=None
    ) -> Float[Array, " B *D"]:
        """u(x, s, t): the average velocity over [s, t] (s, t scalars or (B,))."""
        x = jnp.asarray(x)
        u = self.apply_fn(params, x, t, s=s, y=y, key=key, **with_context(context))
        if getattr(u, "shape", None) != x.shape:
            raise ValueError(
                f"FlowMap: the network must return an array of x's shape {x.shape}, "
                f"got {getattr(u, 'shape', type(u))}"
            )
        return u

    def __call__(
        self, params, x: Float[Array, " B *D"], s: Time, t: Time, *, y=None, key=None, context=None
    ) -> Float[Array, " B *D"]:
        """X(x, s, t); exactly x when s == t."""
        x = jnp.asarray(x)
        u = self.average_velocity(params, x, s, t, y=y, key=key, context=context)
        return x + _gap(s, t, x) * u

    def velocity(
        self, params, x: Float[Array, " B *D"], t: Time, *, y=None, key=None, context=None
    ) -> Float[Array, " B *D"]:
        """The instantaneous velocity v(x, t) = u(x, t, t) = d/dt' X(x, t, t') at t' = t."""
        return self.average_velocity(params, x, t, t, y=y, key=key, context=context)

    def bind(self, params, *, y=None, context=None) -> BoundFlowMap:
        """The flow map with parameters (labels, context) fixed: a callable X(x, s, t)."""
        return BoundFlowMap(self, params, y, context)


class BoundFlowMap(eqx.Module):
    """A `FlowMap` with its parameters bound: X(x, s, t), v(x, t), u(x, s, t).

    A pytree (the parameters are its leaves), so it can be passed through `jax.jit` and
    `eqx.filter_jit` without recompiling for new parameter values.
    """

    flow_map: FlowMap
    params: Any
    y: Any = None
    context: Any = None

    def __call__(self, x: Float[Array, " B *D"], s: Time, t: Time) -> Float[Array, " B *D"]:
        return self.flow_map(self.params, x, s, t, y=self.y, context=self.context)

    def velocity(self, x: Float[Array, " B *D"], t: Time) -> Float[Array, " B *D"]:
        return self.flow_map.velocity(self.params, x, t, y=self.y, context=self.context)

    def average_velocity(self, x, s: Time, t: Time):
        return self.flow_map.average_velocity(self.params, x, s, t, y=self.y, context=self.context)


def flow_map_apply(apply_fn: Callable) -> FlowMap:
    """Wraps a two-time apply function as a flow map X(params, x, s, t)."""
    return FlowMap(apply_fn)


def as_callable(apply_fn: Callable, params, *, y=None, context=None) -> BoundFlowMap:
    """X(x, s, t) for the samplers, from a two-time apply function and its parameters.

    Args:
      apply_fn: `apply_fn(params, x, t, *, s=None, y=None, key=None)` (e.g. from
        `fj.models.functional(MLP(..., two_times=True))`).
      params: its parameters.
      y: optional labels (scalar or (B,)) passed to every call.
      context: optional context (B, *C) passed to every call.
    """
    return FlowMap(apply_fn).bind(params, y=y, context=context)


def velocity_of(X: Callable) -> Callable:
    """The velocity field v(x, t) = d/dt' X(x, t, t')|_{t'=t} of a flow map.

    Uses `X.velocity` when X provides it (one network call for a `BoundFlowMap`), else a
    forward-mode derivative of X in its last argument (the tangent condition, Boffi et al. 2025),
    so X must then support `jax.jvp` (a diffrax solve needs `adjoint=diffrax.ForwardMode()`).
    """
    if hasattr(X, "velocity") and callable(X.velocity):
        return X.velocity

    def v(x, t):
        x = jnp.asarray(x)
        t = jnp.asarray(t, x.dtype)
        return jax.jvp(lambda tt: X(x, t, tt), (t,), (jnp.ones_like(t),))[1]

    return v


def semigroup_violation(
    X: Callable, x: Float[Array, " B *D"], s: Time, t: Time, u: Time
) -> Float[Array, ""]:
    """Mean over examples of ||X(X(x, s, t), t, u) - X(x, s, u)||^2 / D.

    Zero for an exact flow map (the semigroup property, Boffi et al. 2024, "Flow map
    matching"); a direct measure of how consistent few-step sampling is with one-step sampling.
    """
    x = jnp.asarray(x)
    two = X(X(x, s, t), t, u)
    one = X(x, s, u)
    return jnp.mean((two - one).reshape(x.shape[0], -1) ** 2)
