"""A flow map from a velocity field by fixed-step explicit Runge-Kutta integration.

Used as the teacher map of the distillation objectives (an ODE step of the teacher velocity)
and, with many steps, as an oracle. Per-example start and end times are handled by the change
of variable r = s + tau (t - s), tau in [0, 1]: dy/dtau = (t - s) v(y, r(tau)). For an explicit
Runge-Kutta method y_{n+1} = y_n + h (t - s) sum_i b_i k_i with stage velocities k_i, so

    X(x, s, t) = x + (t - s) * u,   u = h sum_n sum_i b_i k_{n,i}

gives the average velocity u without dividing by (t - s): it is smooth across s = t, where it
equals v(x, s), and plain JAX (a `lax.scan`), so differentiable in every mode.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from flowjax._types import Time, expand_time

__all__ = ["SOLVERS", "ode_average_velocity", "ode_flow_map", "ODEFlowMap"]

# Butcher tableaux (a, b, c) of explicit methods (Hairer, Norsett & Wanner, "Solving ODEs I",
# sec. II.1).
SOLVERS: dict[str, tuple[tuple[tuple[float, ...], ...], tuple[float, ...], tuple[float, ...]]] = {
    "euler": ((), (1.0,), (0.0,)),
    "midpoint": (((0.5,),), (0.0, 1.0), (0.0, 0.5)),
    "heun": (((1.0,),), (0.5, 0.5), (0.0, 1.0)),
    "rk4": (
        ((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        (1 / 6, 1 / 3, 1 / 3, 1 / 6),
        (0.0, 0.5, 0.5, 1.0),
    ),
}


def check_solver(solver, num_steps, owner: str, steps_name: str = "num_steps") -> None:
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"{owner}: solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"{owner}: {steps_name} must be a positive int, got {num_steps!r}")


def ode_average_velocity(
    v: Callable,
    x: Float[Array, " B *D"],
    s: Time,
    t: Time,
    *,
    solver: str = "rk4",
    num_steps: int = 1,
) -> Float[Array, " B *D"]:
    """Average velocity u with x + (t - s) u = the RK solution of dy/dr = v(y, r) from s to t.

    Args:
      v: velocity field v(x, t) with t of shape (B,).
      x: start points, (B, *D).
      s, t: start and end times, scalars or (B,) (t < s integrates backwards).
      solver: "euler", "midpoint", "heun" or "rk4" (see `SOLVERS`).
      num_steps: equal steps in tau = (r - s) / (t - s).
    """
    check_solver(solver, num_steps, "ode_average_velocity")
    x = jnp.asarray(x)
    batch = x.shape[:1]
    s = jnp.broadcast_to(jnp.asarray(s, x.dtype), batch)
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), batch)
    gap = expand_time(t - s, x)
    a, b, c = SOLVERS[solver]
    h = 1.0 / num_steps

    def step(carry, n):
        y, acc = carry
        tau = n * h
        ks = []
        for i, ci in enumerate(c):
            yi = y
            for aij, kj in zip(a[i - 1] if i else (), ks, strict=False):
                if aij:
                    yi = yi + (h * aij) * gap * kj
            ks.append(v(yi, s + (tau + ci * h) * (t - s)))
        incr = sum(bi * ki for bi, ki in zip(b, ks, strict=True) if bi)
        return (y + h * gap * incr, acc + h * incr), None

    steps = jnp.arange(num_steps, dtype=x.dtype)
    (_, u), _ = jax.lax.scan(step, (x, jnp.zeros_like(x)), steps)
    return u


class ODEFlowMap(eqx.Module):
    """X(x, s, t) of a velocity field by `num_steps` fixed RK steps (see `ode_flow_map`)."""

    field: Callable
    solver: str = eqx.field(static=True, default="rk4")
    num_steps: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        if not callable(self.field):
            raise TypeError(f"ode_flow_map: v must be a velocity field v(x, t), got {self.field!r}")
        check_solver(self.solver, self.num_steps, "ode_flow_map")

    def average_velocity(self, x, s: Time, t: Time):
        return ode_average_velocity(
            self.field, x, s, t, solver=self.solver, num_steps=self.num_steps
        )

    def __call__(self, x: Float[Array, " B *D"], s: Time, t: Time) -> Float[Array, " B *D"]:
        x = jnp.asarray(x)
        gap = expand_time(jnp.asarray(t, x.dtype) - jnp.asarray(s, x.dtype), x)
        return x + gap * self.average_velocity(x, s, t)

    def velocity(self, x, t: Time):
        x = jnp.asarray(x)
        return self.field(x, jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1]))


def ode_flow_map(v: Callable, *, solver: str = "rk4", num_steps: int = 1) -> ODEFlowMap:
    """The flow map of a velocity field v(x, t) by fixed-step explicit Runge-Kutta.

    With one Heun step this is the teacher's ODE step of consistency distillation (Song et al.
    2023, Algorithm 2 with the EDM Heun solver); with many RK4 steps an accurate oracle.
    """
    return ODEFlowMap(v, solver, num_steps)
