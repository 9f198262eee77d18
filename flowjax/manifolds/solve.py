"""Riemannian ODE solver on diffrax: dx/dt = P_x v(x, t) on M, projected after every step.

Any explicit diffrax solver is made manifold-aware by `Projected` (a diffrax wrapped solver):
the field is evaluated at projx(y) and projected onto the tangent space there,
f(t, y) = P_{projx(y)} v(projx(y), t), and each accepted state is projected back onto M. The
stages of a Runge-Kutta step thus see points of M, as in Meta's RiemannianODESolver
(projected Euler, midpoint, RK4), and an adaptive solver (dopri5, tsit5) with a PID
controller keeps its usual error control on the ambient representation. Because
f(projx(y)) = f(y), the first-same-as-last stage of dopri5 / tsit5 stays valid after the
projection, so the NFE count is exact; the diffrax driver itself is fj.sampling's.

This is the "projection method" for ODEs on manifolds (Hairer, Lubich & Wanner 2006,
Geometric Numerical Integration, sec. IV.4, algorithm 4.2): it keeps the order of the
underlying method.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax.numpy as jnp
import numpy as np
from diffrax._solver.base import AbstractWrappedSolver
from jaxtyping import Array, ArrayLike, Float

from flowjax.manifolds._base import AbstractManifold, check_points
from flowjax.sampling import _integrate
from flowjax.sampling._integrate import check_steps
from flowjax.sampling._ode import solve_args

__all__ = ["RK4", "Projected", "SOLVERS", "ADAPTIVE_SOLVERS", "sample_ode", "tangent_field"]

# Classical fourth-order Runge-Kutta (Kutta 1901). It has no embedded estimate, so it runs
# with fixed steps only; b_error is a placeholder diffrax's tableau requires.
_rk4_tableau = diffrax.ButcherTableau(
    c=np.array([0.5, 0.5, 1.0]),
    b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    b_error=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]) - np.array([0.0, 0.0, 0.0, 1.0]),
    a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
)


class RK4(diffrax.AbstractERK):
    """The classical 4-stage, 4th-order Runge-Kutta method (fixed steps)."""

    tableau = _rk4_tableau
    interpolation_cls = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        del terms
        return 4


SOLVERS: dict[str, type[diffrax.AbstractSolver]] = {
    "euler": diffrax.Euler,
    "midpoint": diffrax.Midpoint,
    "heun": diffrax.Heun,
    "rk4": RK4,
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
}
ADAPTIVE_SOLVERS = frozenset({"midpoint", "heun", "tsit5", "dopri5"})


class Projected(AbstractWrappedSolver):
    """Wraps an explicit diffrax solver: each step's result is projected onto the manifold.

    A state that is a tuple (x, accumulators...) has only its first entry projected.

    Attributes:
      solver: the wrapped diffrax solver.
      manifold: the manifold whose `projx` is applied after every step.
    """

    solver: diffrax.AbstractSolver
    manifold: AbstractManifold

    @property
    def term_structure(self):
        return self.solver.term_structure

    @property
    def interpolation_cls(self):
        return self.solver.interpolation_cls

    def order(self, terms):
        return self.solver.order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def init(self, terms, t0, t1, y0, args):
        return self.solver.init(terms, t0, t1, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y1, y_error, dense_info, solver_state, result = self.solver.step(
            terms, t0, t1, y0, args, solver_state, made_jump
        )
        if isinstance(y1, tuple):  # (state on M, accumulators...): project the state only
            y1 = (self.manifold.projx(y1[0]),) + tuple(y1[1:])
        else:
            y1 = self.manifold.projx(y1)
        return y1, y_error, dense_info, solver_state, result

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)


def tangent_field(manifold: AbstractManifold, v: Callable) -> Callable:
    """f(x, t) = P_{projx(x)} v(projx(x), t): a field that is tangent to M and constant
    along the fibres of projx (so the solver's stages and its FSAL cache see points of M)."""

    def f(x, t):
        p = manifold.projx(x)
        out = jnp.asarray(v(p, t))
        if out.shape != x.shape:
            raise ValueError(
                f"the velocity field must return the shape of x, {x.shape}; got {out.shape}"
            )
        return manifold.proju(p, out.astype(x.dtype))

    return f


def get_solver(name: str, manifold: AbstractManifold, *, adaptive: bool) -> Projected:
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; valid solvers: {', '.join(SOLVERS)}")
    if adaptive and name not in ADAPTIVE_SOLVERS:
        raise ValueError(
            f"solver {name!r} has no error estimate and needs a fixed step count: pass "
            f"num_steps=N, or use an adaptive solver ({', '.join(sorted(ADAPTIVE_SOLVERS))})"
        )
    return Projected(SOLVERS[name](), manifold)


def integrate(fn, y0, *, manifold, t0, t1, solver, num_steps, rtol, atol, max_steps, caller):
    """Solves dy/dt = fn(t, y) with `Projected(solver)`; y0 is the (B, D) state on M or a
    tuple (state, accumulators...) whose accumulators are not projected.

    The driver is fj.sampling's (`_integrate.integrate`: exact NFE, run-time step counts, one
    error check), with the per-example error norm: every point meets the tolerance.
    Returns (y(t1), info) with info["nfe"] the exact number of calls of fn.
    """
    slv = get_solver(solver, manifold, adaptive=num_steps is None)
    y1, _, info = _integrate.integrate(
        fn,
        y0,
        t0=t0,
        t1=t1,
        solver=slv,
        num_steps=num_steps,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        error_norm="per_example",
        caller=caller,
    )
    return y1, info


@eqx.filter_jit
def _solve(manifold, v, x0, t0, t1, num_steps, rtol, atol, *, solver, max_steps):
    f = tangent_field(manifold, v)
    return integrate(
        lambda t, x: f(x, t),
        x0,
        manifold=manifold,
        t0=t0,
        t1=t1,
        solver=solver,
        num_steps=num_steps,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        caller="fj.manifolds.sample_ode",
    )


def check_options(num_steps, max_steps, caller):
    check_steps(num_steps, caller)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"{caller}: max_steps must be a positive integer, got {max_steps!r}")


def run_args(x, t0, t1, num_steps, rtol, atol, max_steps):
    """Run-time forms of the options (changing them does not recompile), as in sample_ode."""
    num_steps = None if num_steps is None else int(num_steps)
    return solve_args(x, t0, t1, num_steps, rtol, atol, max_steps)


def sample_ode(
    manifold: AbstractManifold,
    v: Callable[[Array, Array], Array],
    x0: Float[ArrayLike, "B D"],
    solver: str = "dopri5",
    num_steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t0: float = 0.0,
    t1: float = 1.0,
    max_steps: int = 4096,
) -> tuple[Float[Array, "B D"], dict]:
    """Transports x0 on M from time t0 to t1 along dx/dt = P_x v(x, t), inside jit.

    Args:
      manifold: the manifold of the points.
      v: velocity field v(x, t) -> (B, D), x of shape (B, D) on M and t a scalar; its output
        is projected onto the tangent space (a model need not do it itself).
      x0: starting points (B, D) on M.
      solver: "euler", "midpoint", "heun", "rk4" (fixed steps) or "tsit5", "dopri5"
        (adaptive; midpoint / heun may also run adaptively).
      num_steps: fixed step count, or None for adaptive steps at (rtol, atol).
      rtol, atol: tolerances of the PID controller.
      t0, t1: start and end times (t0 > t1 runs backwards).
      max_steps: cap on the number of steps.

    Returns:
      (x(t1) on M, info) with info["nfe"] the exact number of evaluations of v and
      info["num_steps"].
    """
    x0 = check_points(manifold, x0, "fj.manifolds.sample_ode", "x0")
    check_options(num_steps, max_steps, "fj.manifolds.sample_ode")
    get_solver(solver, manifold, adaptive=num_steps is None)
    args = run_args(x0, t0, t1, num_steps, rtol, atol, max_steps)
    t0, t1, n, rtol, atol, cap = args
    return _solve(manifold, v, x0, t0, t1, n, rtol, atol, solver=solver, max_steps=cap)
