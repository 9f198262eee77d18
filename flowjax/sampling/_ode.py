"""Sampling by solving the flow ODE dx/dt = v(x, t) with diffrax."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from flowjax.sampling import grids as _grids
from flowjax.sampling._integrate import (
    check_steps,
    check_x,
    get_norm,
    get_solver,
    integrate,
)

__all__ = ["sample_ode"]

VelocityField = Callable[[Array, Array], Array]


def _concrete(x):
    """x as a NumPy value when it is known at trace time, else None."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_times(t0, t1, caller: str, *, forward: bool = False):
    a, b = _concrete(t0), _concrete(t1)
    for name, val in (("t0", a), ("t1", b)):
        if val is not None and val.ndim != 0:
            raise ValueError(f"{caller}: {name} must be a scalar, got shape {val.shape}")
    if a is not None and b is not None:
        if a == b:
            raise ValueError(f"{caller}: t0 and t1 must differ, got t0 = t1 = {float(a)}")
        if forward and not a < b:
            raise ValueError(f"{caller}: needs t0 < t1 (noise to data), got t0={a}, t1={b}")


def as_field_fn(v: VelocityField, caller: str):
    """diffrax-style fn(t, x) from a velocity field v(x, t), checking its output once."""

    def fn(t, x):
        out = jnp.asarray(v(x, t))
        if out.shape != x.shape:
            raise ValueError(
                f"{caller}: the velocity field must return the shape of x, {x.shape}; "
                f"got {out.shape}"
            )
        return out.astype(x.dtype)

    return fn


@eqx.filter_jit
def _solve(v, x0, t0, t1, num_steps, rtol, atol, save_ts, ts, *, solver, max_steps, error_norm):
    if ts is not None:
        t0, t1 = ts[0], ts[num_steps]
    return integrate(
        as_field_fn(v, "sample_ode"),
        x0,
        t0=t0,
        t1=t1,
        solver=solver,
        num_steps=num_steps,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        save_ts=save_ts,
        ts=ts,
        error_norm=error_norm,
        caller="sample_ode",
    )


def solve_args(x, t0, t1, num_steps, rtol, atol, max_steps):
    """Run-time (array) forms of the solve options, so that changing them does not recompile.

    A fixed-step solve is capped at max(max_steps, num_steps) steps (static).
    """
    dt = x.dtype
    t0, t1 = jnp.asarray(t0, dt), jnp.asarray(t1, dt)
    if num_steps is None:
        return t0, t1, None, jnp.asarray(rtol, dt), jnp.asarray(atol, dt), max_steps
    return t0, t1, jnp.asarray(num_steps, jnp.int32), None, None, max(max_steps, num_steps)


def grid_times(grid, num_steps: int, t0, t1, size: int, dtype, caller: str):
    """(padded times (size,), the num_steps + 1 times used) of a resolved grid.

    Named grids are computed by one compiled program per grid type and size (the step count
    and ends are run-time values); explicit arrays are padded on the host when concrete.
    """
    t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
    if isinstance(grid, _grids.Explicit):
        ts = grid.times(num_steps, t0, t1, size)
        if isinstance(ts, jax.core.Tracer):
            ts = _grids.check_grid_at_run_time(ts, num_steps, t0, t1, caller)
    else:
        ts = _grids.padded_times(grid, jnp.asarray(num_steps, jnp.int32), t0, t1, size=size)
    if isinstance(ts, jax.core.Tracer):
        return ts, ts[: num_steps + 1]
    # A host copy of the head: slicing on device would compile once per step count.
    return ts, jax.device_put(np.asarray(ts)[: num_steps + 1])


def sample_ode(
    v: VelocityField,
    x0: Float[ArrayLike, "B *D"],
    solver: str = "dopri5",
    num_steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t0: float = 0.0,
    t1: float = 1.0,
    max_steps: int = 4096,
    save_ts: Float[ArrayLike, " T"] | None = None,
    return_trajectory: bool = False,
    grid: _grids.AbstractGrid | Float[ArrayLike, " N1"] | None = None,
    error_norm: str = "rms",
) -> tuple[Float[Array, "B *D"], dict]:
    """Transports x0 at time t0 to time t1 along dx/dt = v(x, t).

    Fixed steps on a time grid when `num_steps` or an array `grid` is given (uniform by
    default; `fj.sampling.grids.EDM(path)`, `LogSNR(path)`, `Shift()` or an explicit array of
    num_steps + 1 times, used exactly); adaptive steps with a PID controller at (rtol, atol)
    otherwise. The step count, grid values, times and tolerances are run-time values:
    changing them does not recompile. The whole batch shares one step size; the adaptive
    error norm is the RMS over the whole state (`error_norm="rms"`, as diffrax and
    torchdiffeq), or the largest per-example RMS (`"per_example"`: every example meets the
    tolerance as if solved alone; more steps when examples differ in difficulty). Time may
    run backwards (t0 > t1), e.g. to encode data into noise. Works under `jax.jit` and
    `jax.vmap` (each vmapped solve then reports its own counts, as if run alone).

    Args:
      v: velocity field v(x, t) -> (B, *D) with x of shape (B, *D) and t a scalar.
      x0: starting points, shape (B, *D) (samples of N(0, I) when t0 = 0).
      solver: "euler", "midpoint", "heun", "tsit5" or "dopri5". Euler needs `num_steps`;
        midpoint/heun may run adaptively on their embedded (first-order) error estimate.
      num_steps: number of fixed steps, or None for adaptive stepping.
      rtol, atol: tolerances of the adaptive controller.
      t0, t1: start and end times.
      max_steps: cap on the number of adaptive steps (accepted + rejected); fixed-step
        solves may take max(max_steps, num_steps).
      save_ts: times (monotone from t0 towards t1) at which to also return the state, from
        the solver's dense interpolant between steps.
      return_trajectory: with fixed steps and no save_ts, save at every grid time.
      grid: the time grid of a fixed-step solve: a `fj.sampling.grids` object or an array.
        A noise-level grid (EDM, LogSNR) may start after t0 (at sigma_max): the solve then
        starts there from x0.
      error_norm: "rms" (default) or "per_example", the adaptive controller's norm.

    Returns:
      (x(t1), info) with info["nfe"] the exact number of evaluations of v,
      info["num_steps"], for fixed steps info["ts"] (the num_steps + 1 grid times), for
      adaptive solves info["num_accepted"] and info["num_rejected"]; with saving also
      info["save_ts"] / info["ts"] (T,) and info["trajectory"] (T, B, *D).

    Raises:
      ValueError: bad shapes or options, at call time. At run time (an `equinox` runtime
        error), when the solve hits `max_steps` or produces NaN/inf.
    """
    x0 = check_x(x0, "x0", "sample_ode")
    num_steps = check_steps(num_steps, "sample_ode")
    check_times(t0, t1, "sample_ode")
    get_norm(error_norm, "sample_ode")
    if grid is not None or num_steps is not None:
        grid, num_steps = _grids.resolve(grid, num_steps, t0, t1, "sample_ode")
    get_solver(solver, adaptive=num_steps is None)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"sample_ode: max_steps must be a positive integer, got {max_steps!r}")
    if num_steps is None:
        for name, tol in (("rtol", rtol), ("atol", atol)):
            val = _concrete(tol)
            if val is not None and not val > 0:
                raise ValueError(f"sample_ode: {name} must be positive, got {tol!r}")
    if return_trajectory and save_ts is None and num_steps is None:
        raise ValueError(
            "sample_ode: return_trajectory with adaptive steps needs save_ts (the step "
            "times are not known in advance); pass save_ts or num_steps"
        )
    t0, t1, steps, rtol, atol, cap = solve_args(x0, t0, t1, num_steps, rtol, atol, max_steps)
    ts = head = None
    if num_steps is not None:
        ts, head = grid_times(grid, num_steps, t0, t1, cap + 1, x0.dtype, "sample_ode")
        if return_trajectory and save_ts is None:
            save_ts = head
    if save_ts is not None:
        save_ts = jnp.asarray(save_ts, x0.dtype)
        if save_ts.ndim != 1 or save_ts.shape[0] < 1:
            raise ValueError(
                f"sample_ode: save_ts must be a 1-D array of times, got {save_ts.shape}"
            )
    x1, xs, info = _solve(
        v,
        x0,
        t0,
        t1,
        steps,
        rtol,
        atol,
        save_ts,
        ts,
        solver=solver,
        max_steps=cap,
        error_norm=error_norm,
    )
    if head is not None:
        info["ts"] = head
    if save_ts is not None:
        info["save_ts"], info["trajectory"] = save_ts, xs
        info["ts"] = save_ts if head is None else info["ts"]
    return x1, info
