"""Multistep diffusion samplers (DDIM, DPM-Solver++ 2M/3M, UniPC, DEIS) for any model on any
affine path.

Each solver is a short module (`_ddim`, `_dpmpp`, `_unipc`, `_deis`) in the
exponential-integrator form of `_exponential`; this driver evaluates the model once per step,
converts its prediction to x1_hat (and eps_hat for DEIS) with `fj.paths.convert`, keeps the
last few predictions and
lets the solver step. One compiled program serves every step count and grid (both run-time
values, up to `max_steps`).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from flowjax.paths import AffinePath, canonical_kind, convert
from flowjax.sampling import grids as _grids
from flowjax.sampling._ddim import DDIM
from flowjax.sampling._deis import DEIS
from flowjax.sampling._dpmpp import DPMSolverPP
from flowjax.sampling._exponential import AbstractMultistep, History, Point
from flowjax.sampling._integrate import check_steps, check_x
from flowjax.sampling._ode import check_times, grid_times
from flowjax.sampling._unipc import UniPC

__all__ = ["MULTISTEP_SOLVERS", "get_multistep", "sample_multistep"]

# name -> solver (hyperparameters are the module's fields).
MULTISTEP_SOLVERS: dict[str, AbstractMultistep] = {
    "ddim": DDIM(),
    "dpm++2m": DPMSolverPP(order=2),
    "dpm++3m": DPMSolverPP(order=3),
    "unipc": UniPC(order=2, variant="bh2"),
    "unipc-bh1": UniPC(order=2, variant="bh1"),
    "unipc3": UniPC(order=3, variant="bh2"),
    "deis": DEIS(order=3),
    "deis2": DEIS(order=2),
}


def get_multistep(solver) -> AbstractMultistep:
    """The multistep solver registered under `solver`, or `solver` itself if it is one."""
    if isinstance(solver, AbstractMultistep):
        return solver
    if not isinstance(solver, str) or solver not in MULTISTEP_SOLVERS:
        raise ValueError(
            f"unknown multistep solver {solver!r}; valid solvers: {', '.join(MULTISTEP_SOLVERS)}"
        )
    return MULTISTEP_SOLVERS[solver]


def _point(path: AffinePath, t) -> Point:
    """(alpha, sigma, half log-SNR) at t.

    sigma below alpha times the float epsilon is 0: the path's end on the data, where
    cos(pi/2) rounds to 6e-17 (float64) or -4e-8 (float32). Left as is, its log-SNR of ~75
    would make the last step of a multistep solver an extrapolation over h ~ 35.
    """
    a, s = path.alpha(t), path.sigma(t)
    s = jnp.where(s > jnp.finfo(s.dtype).eps * a, s, 0.0)
    lam = jnp.where(s > 0, 0.5 * path.log_snr(t), jnp.inf)
    return Point(a, s, lam, jnp.asarray(t, a.dtype))


@eqx.filter_jit
def _run(pred, x0, ts, num_steps, *, solver, path, kind):
    k = solver.history
    dtype = x0.dtype

    def push(new, old):
        return jnp.concatenate([jnp.reshape(new, (1, *old.shape[1:])), old[:-1]])

    def body(i, carry):
        x, x_base, ds, es, pts, count = carry
        t, t_next = ts[i], ts[i + 1]
        out = jnp.asarray(pred(x, t))
        if out.shape != x.shape:
            raise ValueError(
                f"sample_multistep: pred must return the shape of x, {x.shape}; got {out.shape}"
            )
        out = out.astype(dtype)
        ds = push(convert(out, src=kind, dst="x1", path=path, x=x, t=t), ds)
        if es is not None:
            es = push(convert(out, src=kind, dst="eps", path=path, x=x, t=t), es)
        here, nxt = _point(path, t), _point(path, t_next)
        pts = Point(*(push(v, h) for v, h in zip(here, pts, strict=True)))
        count = jnp.minimum(count + 1, k)
        hist = History(ds, pts, count, es)
        x_next, x_base = solver.step(x, x_base, hist, nxt, final=~(nxt.sigma > 0), path=path)
        return x_next.astype(dtype), x_base.astype(dtype), ds, es, pts, count

    zeros = jnp.zeros((k,), dtype)
    states = jnp.zeros((k, *x0.shape), dtype)
    es = states if solver.needs_eps else None
    carry = (x0, x0, states, es, Point(zeros, zeros + 1, zeros, zeros), 0)
    x = jax.lax.fori_loop(0, num_steps, body, carry)[0]
    x = eqx.error_if(
        x,
        ~jnp.all(jnp.isfinite(x)),
        f"sample_multistep: NaN/inf. Converting a {kind!r} prediction to data divides by "
        "alpha (0 at t = 0 on CondOT/Cosine) for eps/score models: start the grid at alpha > 0 "
        "(the EDM and LogSNR grids start at sigma_max = 80), or the model itself is non-finite.",
    )
    return x, {"nfe": jnp.asarray(num_steps, jnp.int32)}


def sample_multistep(
    pred: Callable[[Array, Array], Array],
    x0: Float[ArrayLike, "B *D"],
    *,
    kind: str = "eps",
    path: AffinePath,
    solver: str | AbstractMultistep = "dpm++2m",
    num_steps: int | None = None,
    grid: _grids.AbstractGrid | Float[ArrayLike, " N1"] | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    max_steps: int = 1024,
) -> tuple[Float[Array, "B *D"], dict]:
    """Samples with a multistep diffusion solver: one model call per step, exact NFE.

    Solvers (`MULTISTEP_SOLVERS`): "ddim" (Song et al. 2021, eta = 0), "dpm++2m" and
    "dpm++3m" (Lu et al. 2022b), "unipc" (Zhao et al. 2023, UniPC-2 with B(h) = e^h - 1;
    also "unipc-bh1", "unipc3"), "deis" and "deis2" (Zhang & Chen 2023, tAB-DEIS of order 3
    and 2), or an `AbstractMultistep` object. They integrate the
    probability-flow ODE of `path` in its log-SNR, so they apply to any model kind (the
    prediction is converted to data with `fj.paths.convert`), flow-matching velocity models
    included, and to guided models (`fj.sampling.cfg(...)` as `pred`).

    The model is evaluated at t_0 ... t_{N-1} of the grid (`info["ts"]`), never at t_N. The
    default grid is `grids.LogSNR(path)`: it starts at EDM's sigma_max = 80 (where alpha > 0,
    so eps/score models are fine on CondOT) and, on a path that ends on the data, its last step
    goes from sigma_min = 0.002 to t1 = 1, a first-order step that returns the data prediction
    (diffusers' `final_sigmas_type="zero"`, k-diffusion's last step). A grid that starts
    where alpha = 0 works for velocity / x1 models only. The first steps of 2M / 3M / UniPC
    warm up at lower order.

    Args:
      pred: pred(x, t) -> the model's prediction of `kind`, x (B, *D), t a scalar.
      x0: noise samples N(0, I), shape (B, *D), taken as the state at the grid's first time.
      kind: "eps", "x1", "velocity" or "score".
      path: the affine path the model was trained on.
      solver: a name in `MULTISTEP_SOLVERS` or a solver object.
      num_steps: number of steps N (= NFE); may be omitted with an array grid.
      grid: a `fj.sampling.grids` object or an explicit array of N + 1 times (used exactly).
      t0, t1: ends of a named grid, t0 < t1.
      max_steps: largest step count served by one compiled program (static).

    Returns:
      (x at the last grid time, info) with info["nfe"] = N and info["ts"] the N + 1 times.
    """
    x0 = check_x(x0, "x0", "sample_multistep")
    num_steps = check_steps(num_steps, "sample_multistep")
    kind = canonical_kind(kind, "kind")
    if not isinstance(path, AffinePath):
        raise TypeError(f"sample_multistep: path must be an AffinePath, got {path!r}")
    slv = get_multistep(solver)
    check_times(t0, t1, "sample_multistep", forward=True)
    if grid is None:
        grid = _grids.LogSNR(path)
    grid, num_steps = _grids.resolve(grid, num_steps, t0, t1, "sample_multistep")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"sample_multistep: max_steps must be a positive integer, got {max_steps}")
    size = max(max_steps, num_steps) + 1
    ts, head = grid_times(grid, num_steps, t0, t1, size, x0.dtype, "sample_multistep")
    x, info = _run(
        pred, x0, ts, jnp.asarray(num_steps, jnp.int32), solver=slv, path=path, kind=kind
    )
    info["ts"] = head
    return x, info
