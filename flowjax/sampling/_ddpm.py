"""Ancestral (DDPM) sampling along any affine path.

An affine path is the marginal of a Markov forward (noising) process: for t < t' (t noisier),
q(x_t | x_t') = N(alpha_{t|t'} x_t', sigma^2_{t|t'} I) with alpha_{t|t'} = alpha_t / alpha_t'
and sigma^2_{t|t'} = sigma_t^2 - alpha_{t|t'}^2 sigma_t'^2 >= 0 because the log-SNR
increases with t. Its reverse step given the data, q(x_t' | x_t, x1), is Gaussian with
(Kingma et al. 2021, VDM, eqs. (32)-(34), their (s, t) = our (t', t))

    mean = alpha_{t|t'} sigma_t'^2 / sigma_t^2 * x_t + alpha_t' sigma^2_{t|t'} / sigma_t^2 * x1
    var  = sigma^2_{t|t'} sigma_t'^2 / sigma_t^2,

and ancestral sampling puts the model's data prediction E[x1 | x_t] in place of x1. The ratio
sigma^2_{t|t'} / sigma_t^2 = -expm1(lambda_t - lambda_t') is computed from the log-SNR, which
is exact in the limits (1 at t = 0 where alpha = 0, 1 at t' = 1 where sigma = 0). On the VP
path with the DDPM grid this is Algorithm 2 of Ho et al. 2020 with sigma_t^2 = beta-tilde_t.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from flowjax.paths import AffinePath, canonical_kind, convert
from flowjax.sampling import grids as _grids
from flowjax.sampling._integrate import check_source, check_steps, check_x
from flowjax.sampling._ode import check_times, grid_times

__all__ = ["sample_ddpm"]


@eqx.filter_jit
def _run(model, x0, key, ts, *, path, kind, num_steps):
    keys = jax.random.split(key, num_steps)
    last = jnp.arange(num_steps) == num_steps - 1

    def step(x, inputs):
        t, t_next, k, is_last = inputs
        pred = jnp.asarray(model(x, t))
        if pred.shape != x.shape:
            raise ValueError(
                f"sample_ddpm: model must return the shape of x, {x.shape}; got {pred.shape}"
            )
        x1_hat = convert(pred.astype(x.dtype), src=kind, dst="x1", path=path, x=x, t=t)
        a_t, s_t = path.alpha(t), path.sigma(t)
        a_n, s_n = path.alpha(t_next), path.sigma(t_next)
        c = -jnp.expm1(path.log_snr(t) - path.log_snr(t_next))  # sigma^2_{t|t'} / sigma_t^2
        mean = (a_t / a_n) * (s_n**2 / s_t**2) * x + a_n * c * x1_hat
        std = jnp.sqrt(c) * s_n
        z = jax.random.normal(k, x.shape, x.dtype)
        return mean + jnp.where(is_last, 0.0, std) * z, None

    x, _ = jax.lax.scan(step, x0, (ts[:-1], ts[1:], keys, last))
    x = eqx.error_if(
        x,
        ~jnp.all(jnp.isfinite(x)),
        f"sample_ddpm: NaN/inf. The {kind!r} -> x1 conversion is singular where alpha = 0 "
        "(t = 0 on CondOT/Cosine) for eps/score models: start at t0 > 0.",
    )
    return x, {"nfe": jnp.asarray(num_steps, jnp.int32)}


def sample_ddpm(
    model: Callable[[Array, Array], Array],
    x0: Float[ArrayLike, "B *D"],
    *,
    path: AffinePath,
    key: PRNGKeyArray,
    num_steps: int | None = None,
    kind: str = "eps",
    t0: float = 0.0,
    t1: float = 1.0,
    grid: _grids.AbstractGrid | Float[ArrayLike, " N1"] | None = None,
    source=None,
) -> tuple[Float[Array, "B *D"], dict]:
    """Ancestral sampling with the Gaussian posterior of the path's forward process.

    Steps along a time grid t_0 < ... < t_N (uniform from t0 to t1 by default). Step i draws
    x_{i+1} ~ q(x_{t_{i+1}} | x_{t_i}, x1 = E[x1 | x_{t_i}]) (module docstring); the last
    step returns the posterior mean (no noise; at t1 = 1 that is the data prediction).
    Step i uses the noise `jax.random.normal(jax.random.split(key, N)[i], x.shape)`.

    Args:
      model: model(x, t) -> prediction of `kind`, x (B, *D), t a scalar.
      x0: samples of N(0, I) standing in for p_{t0}, shape (B, *D).
      path: the affine path of the model.
      key: PRNG key.
      num_steps: number of ancestral steps N.
      kind: what the model predicts: "eps", "x1", "velocity" or "score".
      t0, t1: grid ends, t0 < t1. eps/score models need alpha(t0) > 0 (t0 > 0 on CondOT).
      grid: time grid (`fj.sampling.grids` object or array of N + 1 times, used exactly).
      source: None or `fj.sources.StandardGaussian()`; any other source raises (the
        posterior steps are those of the N(0, I) noising process).

    Returns:
      (x(t1), info) with info["nfe"] = num_steps and info["ts"] the grid times.
    """
    x0 = check_x(x0, "x0", "sample_ddpm")
    check_source(source, "sample_ddpm")
    num_steps = check_steps(num_steps, "sample_ddpm", required=grid is None)
    kind = canonical_kind(kind, "kind")
    if not isinstance(path, AffinePath):
        raise TypeError(f"sample_ddpm: path must be an AffinePath, got {path!r}")
    check_times(t0, t1, "sample_ddpm", forward=True)
    grid, num_steps = _grids.resolve(grid, num_steps, t0, t1, "sample_ddpm")
    ts, head = grid_times(grid, num_steps, t0, t1, num_steps + 1, x0.dtype, "sample_ddpm")
    x, info = _run(model, x0, key, ts, path=path, kind=kind, num_steps=num_steps)
    info["ts"] = head
    return x, info
