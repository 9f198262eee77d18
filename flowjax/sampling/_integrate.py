"""The diffrax driver shared by the ODE sampler and the likelihood.

One place decides the solver, the step-size control, the exact count of vector-field
evaluations (NFE) and the error checks, so that `sample_ode` and `log_prob` agree on all four.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optimistix as optx
from diffrax._solver.base import AbstractWrappedSolver

__all__ = [
    "SOLVERS",
    "ADAPTIVE_SOLVERS",
    "ERROR_NORMS",
    "get_solver",
    "integrate",
    "time_grid",
    "check_x",
    "check_source",
]

SOLVERS: dict[str, type[diffrax.AbstractSolver]] = {
    "euler": diffrax.Euler,
    "midpoint": diffrax.Midpoint,
    "heun": diffrax.Heun,
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
}

# Euler has no error estimate. Midpoint and Heun carry an embedded Euler estimate (an
# order-1 estimate for an order-2 method): crude, but a valid controller input, so they may
# run adaptively; tsit5 / dopri5 are the intended adaptive solvers.
ADAPTIVE_SOLVERS = frozenset({"midpoint", "heun", "tsit5", "dopri5"})


def get_solver(name: str, *, adaptive: bool) -> diffrax.AbstractSolver:
    """The diffrax solver registered under `name`.

    Raises:
      ValueError: unknown name, or an adaptive solve asked of a solver without an estimate.
    """
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; valid solvers: {', '.join(SOLVERS)}")
    if adaptive and name not in ADAPTIVE_SOLVERS:
        raise ValueError(
            f"solver {name!r} has no error estimate and needs a fixed step count: pass "
            f"num_steps=N, or use an adaptive solver ({', '.join(sorted(ADAPTIVE_SOLVERS))})"
        )
    return SOLVERS[name]()


def _unwrap(solver: diffrax.AbstractSolver) -> diffrax.AbstractSolver:
    """The solver inside a wrapped one (e.g. the manifold solvers' `Projected`)."""
    while isinstance(solver, AbstractWrappedSolver):
        solver = solver.solver
    return solver


def _stages(solver: diffrax.AbstractSolver) -> tuple[int, bool]:
    """(number of stages, first-same-as-last) of an explicit (possibly wrapped) solver."""
    tableau = getattr(type(_unwrap(solver)), "tableau", None)
    if tableau is None:  # Euler
        return 1, False
    return tableau.num_stages, bool(tableau.fsal)


def check_x(x, name: str, caller: str):
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{caller}: {name} must have shape (B, *D) with B examples, got {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{caller}: {name} must be a floating-point array, got dtype {x.dtype}")
    return x


def check_source(source, caller: str) -> None:
    """Accepts only the standard Gaussian source (None or `fj.sources.StandardGaussian()`).

    The SDE and ancestral samplers are built on the path's Gaussian noising process, whose
    marginal at t = 0 is N(0, I); any other source has a different forward process.
    """
    if source is None:
        return
    try:  # lazily: flowjax.sources is optional for this module
        from flowjax.sources import StandardGaussian
    except ImportError:
        StandardGaussian = None
    if StandardGaussian is not None and isinstance(source, StandardGaussian):
        return
    raise ValueError(
        f"{caller}: source must be None or fj.sources.StandardGaussian() (its noising process "
        f"starts from N(0, I)), got {type(source).__name__}; use sample_ode for other sources"
    )


def check_steps(num_steps, caller: str, *, required: bool = False):
    if num_steps is None and not required:
        return None
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"{caller}: num_steps must be a positive integer, got {num_steps!r}")
    return int(num_steps)


def time_grid(t0, t1, num_steps: int, dtype) -> jax.Array:
    """num_steps + 1 equally spaced times from t0 to t1 whose ends are exactly t0 and t1."""
    t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
    ts = t0 + (t1 - t0) * (jnp.arange(num_steps + 1, dtype=dtype) / num_steps)
    return ts.at[0].set(t0).at[-1].set(t1)


def batch_max_rms_norm(y) -> jax.Array:
    """Largest per-example RMS over a pytree whose leaves all lead with the batch axis.

    A solve over a batch shares one step size; with this norm every example meets the
    tolerance as if it had been solved alone (the plain RMS over the batch would let one
    hard example hide behind easy ones).
    """
    leaves = jtu.tree_leaves(y)
    b = leaves[0].shape[0]
    sq = sum(jnp.sum(jnp.reshape(jnp.abs(leaf) ** 2, (b, -1)), axis=1) for leaf in leaves)
    n = sum(math.prod(leaf.shape[1:]) for leaf in leaves)
    return jnp.sqrt(jnp.max(sq) / n)


# The adaptive controller's error norm, applied to the scaled error
# e = y_error / (atol + rtol max(|y0|, |y1|)) (Hairer, Norsett & Wanner, "Solving ODEs I",
# sec. II.4, eq. (4.11)); a step is accepted when norm(e) <= 1.
#   "rms": the RMS over the whole state, as diffrax (optimistix.rms_norm), torchdiffeq and
#     scipy do; rtol / atol then mean what they mean there. The default.
#   "per_example": the largest per-example RMS; every example meets the tolerance as if solved
#     alone. Choose it when each example's accuracy matters on its own (per-example
#     likelihoods, a batch mixing easy and hard examples): it can take more steps.
ERROR_NORMS: dict[str, Callable] = {"rms": optx.rms_norm, "per_example": batch_max_rms_norm}


def get_norm(name: str, caller: str) -> Callable:
    if not isinstance(name, str) or name not in ERROR_NORMS:
        raise ValueError(
            f"{caller}: unknown error_norm {name!r}; valid norms: {', '.join(ERROR_NORMS)}"
        )
    return ERROR_NORMS[name]


class GridSteps(diffrax.AbstractStepSizeController):
    """Steps to the times ts[1], ts[2], ... (diffrax's StepTo without its shape checks).

    `ts` is padded past the last time with repeats of it, so one compiled solve serves every
    grid and step count up to its length (the grid itself is checked by `grids.resolve`).
    """

    ts: jax.Array

    def wrap(self, direction):
        return GridSteps(self.ts * direction)

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        del terms, t0, t1, y0, dt0, args, func, error_order
        return self.ts[1], jnp.asarray(2, jnp.int32)

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        del t0, y0, y1_candidate, args, y_error, error_order
        return True, t1, self.ts[state], False, state + 1, diffrax.RESULTS.successful


# Consecutive attempts with a non-finite candidate after which a solve is abandoned: the
# PID controller shrinks the step by 5x on each, so by then dt has shrunk by 0.2**24 ~ 1e-17.
_MAX_NONFINITE = 24


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jtu.tree_leaves(tree)]))


class _CountingPID(diffrax.AbstractAdaptiveStepSizeController):
    """A PID controller that keeps two counts diffrax does not.

    1. Rejected attempts before the first accepted step. FSAL solvers (dopri5, tsit5) cache
       f(t, y) from the end of an accepted step; until the first acceptance every attempt
       evaluates the first stage afresh. This count makes the reported NFE exact.
    2. Consecutive attempts with a non-finite candidate. diffrax rejects such steps and
       shrinks dt, which for a field that is NaN everywhere runs on to max_steps; this count
       stops such a solve early and lets the error name the cause.

    The controller state survives rejected steps (the solver state does not), so it is the
    one place such counts can live.
    """

    pid: diffrax.PIDController

    @property
    def rtol(self):
        return self.pid.rtol

    @property
    def atol(self):
        return self.pid.atol

    @property
    def norm(self):
        return self.pid.norm

    def wrap(self, direction):
        return _CountingPID(self.pid.wrap(direction))

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, state = self.pid.init(terms, t0, t1, y0, dt0, args, func, error_order)
        zero = jnp.array(0, jnp.int32)
        return tnext, (state, jnp.array(False), zero, zero)

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        inner, accepted_any, first_rejected, nonfinite = state
        keep, tprev, tnext, jump, inner, result = self.pid.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, inner
        )
        first_rejected = first_rejected + jnp.where(accepted_any | keep, 0, 1).astype(jnp.int32)
        bad = ~(_all_finite(y1_candidate) & _all_finite(y_error))
        nonfinite = jnp.where(bad, nonfinite + 1, 0).astype(jnp.int32)
        result = diffrax.RESULTS.where(
            nonfinite >= _MAX_NONFINITE, diffrax.RESULTS.dt_min_reached, result
        )
        state = (inner, accepted_any | keep, first_rejected, nonfinite)
        return keep, tprev, tnext, jump, state, result


def integrate(
    fn: Callable[[jax.Array, Any], Any],
    y0,
    *,
    t0,
    t1,
    solver: str | diffrax.AbstractSolver,
    num_steps,
    rtol,
    atol,
    max_steps: int,
    save_ts=None,
    ts=None,
    error_norm: str = "rms",
    caller: str,
):
    """Solves dy/dt = fn(t, y) from t0 to t1 (either direction) with diffrax.

    Every leaf of y leads with the batch axis. With `num_steps` (an int, may be a traced
    array: the step count is a run-time value, so one compiled solve serves every count up
    to `max_steps`) the steps are constant, dt = (t1 - t0) / num_steps, or go to the times
    `ts` (padded past ts[num_steps] = t1, see `GridSteps`); with None a PID controller at
    (rtol, atol) using `ERROR_NORMS[error_norm]` adapts them. `solver` is a name of `SOLVERS`
    or a solver object (explicit, possibly wrapped: the manifold solvers pass `Projected`).

    Returns:
      (y(t1), ys at save_ts or None, info) with info["nfe"] the exact number of calls of fn,
      info["num_steps"] and, for adaptive solves, info["num_accepted"], info["num_rejected"].
    """
    adaptive = num_steps is None
    if isinstance(solver, str):
        slv = get_solver(solver, adaptive=adaptive)
    else:
        slv, solver = solver, type(_unwrap(solver)).__name__.lower()  # the name for messages
    stages, fsal = _stages(slv)
    dtype = jtu.tree_leaves(y0)[0].dtype
    t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
    if adaptive:
        controller = _CountingPID(
            diffrax.PIDController(rtol=rtol, atol=atol, norm=get_norm(error_norm, caller))
        )
        # An explicit first step keeps the NFE count independent of diffrax's heuristic.
        dt0 = 0.01 * (t1 - t0)
    elif ts is not None:
        controller, dt0 = GridSteps(jnp.asarray(ts, dtype)), None
    else:
        controller = diffrax.ConstantStepSize()
        dt0 = (t1 - t0) / jnp.asarray(num_steps, dtype)
    subs = [diffrax.SubSaveAt(t1=True)]
    if save_ts is not None:
        subs.append(diffrax.SubSaveAt(ts=jnp.asarray(save_ts, dtype)))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: fn(t, y)),
        slv,
        t0=t0,
        t1=t1,
        dt0=dt0,
        y0=y0,
        stepsize_controller=controller,
        saveat=diffrax.SaveAt(subs=subs, controller_state=adaptive),
        max_steps=max_steps,
        throw=False,
    )
    y1 = jtu.tree_map(lambda leaf: leaf[-1], sol.ys[0])
    ys = sol.ys[1] if save_ts is not None else None

    n = jnp.asarray(sol.stats["num_steps"], jnp.int32)
    if fsal:
        first = 1 + (sol.controller_state[2] if adaptive else 0)
        nfe = n * (stages - 1) + jnp.where(n > 0, first, 0)
    else:
        nfe = n * stages
    info = {"nfe": nfe.astype(jnp.int32), "num_steps": n}
    if adaptive:
        info["num_accepted"] = jnp.asarray(sol.stats["num_accepted_steps"], jnp.int32)
        info["num_rejected"] = jnp.asarray(sol.stats["num_rejected_steps"], jnp.int32)

    messages = (
        f"{caller}: solver {solver!r} produced NaN/inf. The velocity field is non-finite "
        "somewhere on the path (e.g. singular at t = 0 or t = 1: stop short of the end) or "
        "the steps are too large: use more num_steps, or a smaller rtol/atol.",
        f"{caller}: solver {solver!r} reached max_steps={max_steps} before t1; raise max_steps "
        "or loosen rtol/atol (or pass num_steps for a fixed-step solve)",
        f"{caller}: solver {solver!r} failed: the step size collapsed. The field is probably "
        "stiff or singular on the way; stop short of a singular end or use fixed steps.",
    )
    ok = sol.result == diffrax.RESULTS.successful
    out_of_steps = sol.result == diffrax.RESULTS.max_steps_reached
    diverged = (sol.controller_state[3] >= _MAX_NONFINITE) if adaptive else False
    nonfinite = diverged | (ok & ~_all_finite(y1))
    # One check (one host callback) for all failure modes, NaN/inf first.
    y1 = eqx.branched_error_if(
        y1, ~ok | nonfinite, jnp.where(nonfinite, 0, jnp.where(out_of_steps, 1, 2)), messages
    )
    return y1, ys, info
