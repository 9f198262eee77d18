"""Stochastic sampling: an SDE with the marginals of the flow, solved by Euler-Maruyama.

For an affine path x_t = alpha x1 + sigma x0 the noising process that has the conditionals
N(alpha x1, sigma^2 I) is, in diffusion time tau = 1 - t, the linear SDE
dx = f x dtau + g dW of Song et al. 2021 (score SDE), eq. (5), with
f = d log alpha / dtau and g^2 = d sigma^2 / dtau - 2 f sigma^2. Back in flowjax time
(d/dtau = -d/dt) this is

    g(t)^2 = 2 sigma (sigma alpha' / alpha - sigma'),

which is >= 0 on every path here (alpha' >= 0 >= sigma'). The reverse of that SDE (Song
et al. 2021, eq. (6)) runs from noise to data. More generally, for any noise level
eps >= 0 the SDE (in flowjax time, forwards)

    dx = [u_t(x) + eps g^2 / 2 * grad log p_t(x)] dt + sqrt(eps) g dW

has the marginals p_t of the flow: its Fokker-Planck equation is
dp/dt = -div(p u) - eps g^2 / 2 div(grad p) + eps g^2 / 2 lap p = -div(p u), the continuity
equation of u (Song et al. 2021, sec. 4.3 and app. D.1; Karras et al. 2022, eq. (6)).
eps = 0 is the probability-flow ODE; eps = 1 the reverse-time SDE of the noising process.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from flowjax.paths import AffinePath, convert
from flowjax.sampling import grids as _grids
from flowjax.sampling._integrate import GridSteps, check_source, check_steps, check_x
from flowjax.sampling._ode import (
    _concrete,
    as_field_fn,
    check_times,
    grid_times,
    sample_ode,
    solve_args,
)

__all__ = ["sample_sde", "diffusion_g2"]


def diffusion_g2(path: AffinePath, t: ArrayLike) -> Array:
    """g(t)^2 = 2 sigma (sigma alpha'/alpha - sigma'): the noising SDE's squared diffusion.

    Infinite where alpha = 0 (t = 0 on CondOT and Cosine), zero where sigma = 0 (t = 1).
    """
    a, s = path.alpha(t), path.sigma(t)
    return 2.0 * s * (s * path.d_alpha(t) / a - path.d_sigma(t))


@eqx.filter_jit
def _solve(v, score, x0, key, noise, ts, num_steps, *, path, max_steps):
    field = as_field_fn(v, "sample_sde")

    def drift(t, x, args):
        u = field(t, x)
        if score is None:
            s = convert(u, src="velocity", dst="score", path=path, x=x, t=t)
        else:
            s = jnp.asarray(score(x, t), x.dtype)
        return u + (0.5 * noise * diffusion_g2(path, t)) * s

    def diffusion(t, x, args):
        g = jnp.sqrt(noise * diffusion_g2(path, t))
        return lx.DiagonalLinearOperator(jnp.broadcast_to(g, x.shape).astype(x.dtype))

    brownian = diffrax.UnsafeBrownianPath(shape=jax.ShapeDtypeStruct(x0.shape, x0.dtype), key=key)
    terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, brownian))
    sol = diffrax.diffeqsolve(
        terms,
        diffrax.Euler(),  # Ito: Euler-Maruyama
        t0=ts[0],
        t1=ts[num_steps],
        dt0=None,
        y0=x0,
        stepsize_controller=GridSteps(ts),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=max_steps,
        throw=False,
        # UnsafeBrownianPath (exact N(0, dt) increments on a fixed grid) rules out
        # reverse-mode differentiation through the sampler.
        adjoint=diffrax.ForwardMode(),
    )
    x1 = sol.ys[-1]
    x1 = eqx.error_if(
        x1,
        ~jnp.all(jnp.isfinite(x1)),
        "sample_sde: Euler-Maruyama produced NaN/inf. g(t)^2 and the score are singular "
        "where alpha = 0 or sigma = 0: start at t0 > 0 (default 1e-3), and use more num_steps.",
    )
    return x1, {"nfe": jnp.asarray(sol.stats["num_steps"], jnp.int32)}


def sample_sde(
    v: Callable[[Array, Array], Array],
    x0: Float[ArrayLike, "B *D"],
    *,
    path: AffinePath,
    key: PRNGKeyArray,
    num_steps: int | None = None,
    noise: float = 1.0,
    t0: float = 1e-3,
    t1: float = 1.0,
    score: Callable[[Array, Array], Array] | None = None,
    grid: _grids.AbstractGrid | Float[ArrayLike, " N1"] | None = None,
    source=None,
) -> tuple[Float[Array, "B *D"], dict]:
    """Samples with Euler-Maruyama on dx = [u + noise g^2/2 score] dt + sqrt(noise) g dW.

    The SDE has the flow's marginals for every noise >= 0 (module docstring); noise = 0 is
    exactly the Euler ODE sampler on the same grid, noise = 1 the reverse-time SDE of the
    path's noising process. A noise known to be 0 at trace time dispatches to
    `sample_ode(..., solver="euler")`. The score comes from the velocity by
    `convert(u, src="velocity", dst="score")` unless given. g^2 is infinite where
    alpha = 0, so the default start is t0 = 1e-3 (x0 ~ N(0, I) stands in for p_{t0}, which
    on CondOT is within 1e-3 of it). Takes `num_steps` constant steps (a run-time value).

    Args:
      v: velocity field v(x, t) -> (B, *D).
      x0: starting points (B, *D), samples of N(0, I).
      path: the affine path of v.
      key: PRNG key of the Brownian motion.
      num_steps: number of Euler-Maruyama steps.
      noise: the noise level eps >= 0.
      t0, t1: start and end times, t0 < t1.
      score: optional score field score(x, t) (one extra call per step).
      grid: time grid (`fj.sampling.grids` object or array of num_steps + 1 times);
        uniform on [t0, t1] by default.
      source: None or `fj.sources.StandardGaussian()`; any other source raises (the SDE is
        the noising process of N(0, I) noise).

    Returns:
      (x(t1), info) with info["nfe"] the number of evaluations of v (= num_steps) and
      info["ts"] the grid times.
      Forward-mode differentiable only (the Brownian path draws fresh increments per step).
    """
    x0 = check_x(x0, "x0", "sample_sde")
    check_source(source, "sample_sde")
    num_steps = check_steps(num_steps, "sample_sde", required=grid is None)
    if not isinstance(path, AffinePath):
        raise TypeError(f"sample_sde: path must be an AffinePath, got {path!r}")
    check_times(t0, t1, "sample_sde", forward=True)
    grid, num_steps = _grids.resolve(grid, num_steps, t0, t1, "sample_sde")
    val = _concrete(noise)
    if val is not None and (val.ndim != 0 or not val >= 0):
        raise ValueError(f"sample_sde: noise must be a scalar >= 0, got {noise!r}")
    if val is not None and val == 0:
        # The probability-flow ODE: solved as such, so that noise = 0 is exactly the Euler
        # ODE sampler (the SDE program computes the same steps but may round differently).
        x1, info = sample_ode(v, x0, solver="euler", num_steps=num_steps, t0=t0, t1=t1, grid=grid)
        return x1, {"nfe": info["nfe"], "ts": info["ts"]}
    t0, t1, steps, _, _, cap = solve_args(x0, t0, t1, num_steps, None, None, 4096)
    ts, head = grid_times(grid, num_steps, t0, t1, cap + 1, x0.dtype, "sample_sde")
    noise = jnp.asarray(noise, x0.dtype)
    x1, info = _solve(v, score, x0, key, noise, ts, steps, path=path, max_steps=cap)
    info["ts"] = head
    return x1, info
