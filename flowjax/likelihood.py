"""Log-likelihoods of flow models by the instantaneous change of variables.

Along dx/dt = v(x, t) the log density obeys d log p_t(x_t) / dt = -div v(x_t, t)
(Chen et al. 2018, Neural ODEs, theorem 1). Solving the augmented ODE

    dx/dt = v(x, t),   d delta/dt = div v(x, t),   delta(1) = 0

from t = 1 (data) back to t = 0 (noise) gives log p_1(x1) = log p_0(x(0)) + delta(0)
(Grathwohl et al. 2019, FFJORD, eq. (4)). The divergence is exact (D forward-mode
Jacobian-vector products) or Hutchinson's unbiased estimate E[e^T (dv/dx) e] with probes e
fixed over the solve (FFJORD, sec. 3.1), so the estimate of log p is unbiased too.

Both divergences assume the examples of a batch do not interact (v(x)[b] depends on x[b]
only, so no batch norm in train mode): they read the per-example diagonal blocks of the
Jacobian of the batched field.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Integer, PRNGKeyArray

from flowjax.sampling._integrate import check_steps, check_x, get_solver, integrate
from flowjax.sampling._ode import _concrete, as_field_fn, solve_args
from flowjax.sources import has_log_prob

__all__ = [
    "DIVERGENCES",
    "PROBES",
    "bits_per_dim",
    "dequantize",
    "exact_divergence",
    "hutchinson_divergence",
    "log_prob",
    "standard_normal_log_prob",
]


def exact_divergence(f: Callable[[Array], Array], x: Float[Array, "B *D"], probes=None):
    """(f(x), div f(x)) with the divergence from D Jacobian-vector products (vmapped).

    Costs one evaluation of f plus D jvps, and memory for D tangents: use it for small D.
    """
    del probes
    b, d = x.shape[0], math.prod(x.shape[1:])
    y, f_jvp = jax.linearize(f, x)
    # Tangent i moves coordinate i of every example; per-example independence makes
    # component i of example b of the result the diagonal entry d f_b,i / d x_b,i.
    basis = jnp.broadcast_to(jnp.eye(d, dtype=x.dtype)[:, None, :], (d, b, d))
    jv = jax.vmap(f_jvp)(basis.reshape((d,) + x.shape))
    return y, jnp.einsum("ibi->b", jv.reshape(d, b, d))


def hutchinson_divergence(
    f: Callable[[Array], Array], x: Float[Array, "B *D"], probes: Float[Array, "P B *D"]
):
    """(f(x), mean over probes e of e^T (df/dx) e) (Hutchinson 1989), one jvp per probe."""
    y, f_jvp = jax.linearize(f, x)
    jv = jax.vmap(f_jvp)(probes)
    p, b = probes.shape[:2]
    return y, jnp.mean(jnp.sum((probes * jv).reshape(p, b, -1), axis=-1), axis=0)


DIVERGENCES = {"exact": exact_divergence, "hutchinson": hutchinson_divergence}


def _rademacher(key, shape, dtype):
    return jax.random.rademacher(key, shape, dtype=dtype)


def _gaussian(key, shape, dtype):
    return jax.random.normal(key, shape, dtype)


# Both have E[e e^T] = I; Rademacher has the smaller variance (Hutchinson 1989).
PROBES = {"rademacher": _rademacher, "gaussian": _gaussian}


def standard_normal_log_prob(x: Float[Array, "B *D"]) -> Float[Array, " B"]:
    """log N(x; 0, I) per example."""
    d = math.prod(x.shape[1:])
    return -0.5 * jnp.sum(jnp.reshape(x, (x.shape[0], -1)) ** 2, axis=1) - 0.5 * d * math.log(
        2 * math.pi
    )


def _prior_fn(prior, log_p0, context):
    """log p_0 as a function of x(0): N(0, I), a source's log_prob, or a user callable."""
    if log_p0 is not None:
        return log_p0
    if prior is None:
        return standard_normal_log_prob
    return lambda x0: prior.log_prob(x0, context=context)


@eqx.filter_jit
def _solve(
    v,
    x1,
    probes,
    t_start,
    t_end,
    num_steps,
    rtol,
    atol,
    prior,
    log_p0,
    context,
    *,
    divergence,
    solver,
    max_steps,
):
    field = as_field_fn(v, "log_prob")
    div_fn = DIVERGENCES[divergence]

    def fn(t, state):
        x, _ = state
        return div_fn(lambda y: field(t, y), x, probes)

    delta1 = jnp.zeros(x1.shape[:1], x1.dtype)
    (x0, delta), _, info = integrate(
        fn,
        (x1, delta1),
        t0=t_start,
        t1=t_end,
        solver=solver,
        num_steps=num_steps,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        caller="log_prob",
    )
    prior = _prior_fn(prior, log_p0, context)(x0)
    if prior.shape != x1.shape[:1]:
        raise ValueError(
            f"log_prob: the prior's log density must have shape ({x1.shape[0]},), got {prior.shape}"
        )
    info.update(prior_logp=prior, delta=delta, x0=x0)
    return prior + delta, info


def log_prob(
    v: Callable[[Array, Array], Array],
    x1: Float[ArrayLike, "B *D"],
    *,
    divergence: str = "exact",
    key: PRNGKeyArray | None = None,
    num_probes: int = 1,
    probe: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: str = "dopri5",
    num_steps: int | None = None,
    t_eps: float = 0.0,
    max_steps: int = 4096,
    prior=None,
    log_p0: Callable[[Array], Array] | None = None,
    context: Array | None = None,
) -> tuple[Float[Array, " B"], dict]:
    """log p_1(x1) of the flow of v with a prior p_0 at t = 0 (module docstring).

    The prior is N(0, I) unless `prior` (any source with `log_prob(x, *, context=None)`, e.g.
    `fj.sources.Gaussian`, a GP; duck-typed) or `log_p0` (a callable x0 (B, *D) -> (B,), as
    Meta's `ODESolver.compute_likelihood`) is given: log p_1(x1) = log p_0(x(0)) + delta(0).

    Gradients with respect to parameters of v (an `equinox.Module` or any pytree-callable
    passed as v) flow through the solve by diffrax's RecursiveCheckpointAdjoint. With
    adaptive steps the step sizes are not differentiated (a standard diffrax choice), so the
    gradient is that of the discretised solve; it matches the true one to the tolerance.

    Args:
      v: velocity field v(x, t) -> (B, *D); examples must not interact across the batch.
      x1: data points, shape (B, *D).
      divergence: "exact" (D jvps per evaluation) or "hutchinson" (num_probes jvps).
      key: PRNG key for the Hutchinson probes (one draw per probe, fixed over the solve).
      num_probes: number of Hutchinson probes averaged.
      probe: "rademacher" or "gaussian".
      rtol, atol: tolerances of the adaptive solve.
      solver: one of `fj.sampling.SOLVERS`; num_steps: fixed steps instead of adaptive.
      t_eps: integrate from 1 - t_eps down to t_eps, avoiding fields singular at the ends
        (the result is then the density of the flow's marginal at 1 - t_eps, with N(0, I)
        standing in for p_{t_eps}).
      max_steps: cap on adaptive steps.
      prior: the source x0 was drawn from in training (None: N(0, I)).
      log_p0: a callable log density of x(0) instead of `prior`.
      context: passed to `prior.log_prob` for context-dependent priors (v itself takes no
        context: bind it, e.g. `lambda x, t: model(x, t, context=c)`).

    Returns:
      (logp of shape (B,), info) with info["nfe"] (evaluations of v, each with its jvps),
      info["num_steps"], info["prior_logp"] = log p_0(x(0)), info["delta"] = delta(0)
      and info["x0"] = x(0), the encoding of x1.
    """
    x1 = check_x(x1, "x1", "log_prob")
    if prior is not None and log_p0 is not None:
        raise ValueError("log_prob: give prior= or log_p0=, not both")
    if prior is not None and not has_log_prob(prior):
        raise TypeError(
            f"log_prob: prior {type(prior).__name__} has no log_prob(x, *, context=None); "
            f"a likelihood needs the density of the source (pass log_p0= or another prior)"
        )
    if log_p0 is not None and not callable(log_p0):
        raise TypeError(f"log_prob: log_p0 must be callable, got {type(log_p0).__name__}")
    if divergence not in DIVERGENCES:
        raise ValueError(
            f"log_prob: unknown divergence {divergence!r}; valid: {', '.join(DIVERGENCES)}"
        )
    num_steps = check_steps(num_steps, "log_prob")
    get_solver(solver, adaptive=num_steps is None)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"log_prob: max_steps must be a positive integer, got {max_steps!r}")
    te = _concrete(t_eps)
    if te is None or te.ndim != 0 or not 0.0 <= te < 0.5:
        raise ValueError(f"log_prob: t_eps must be a number in [0, 0.5), got {t_eps!r}")
    probes = None
    if divergence == "hutchinson":
        if key is None:
            raise ValueError("log_prob: divergence='hutchinson' needs a PRNG key (key=...)")
        if probe not in PROBES:
            raise ValueError(f"log_prob: unknown probe {probe!r}; valid: {', '.join(PROBES)}")
        if (
            isinstance(num_probes, bool)
            or not isinstance(num_probes, (int, np.integer))
            or (num_probes < 1)
        ):
            raise ValueError(f"log_prob: num_probes must be a positive integer, got {num_probes!r}")
        probes = PROBES[probe](key, (int(num_probes),) + x1.shape, x1.dtype)
    t_start, t_end, num_steps, rtol, atol, cap = solve_args(
        x1, 1.0 - float(te), float(te), num_steps, rtol, atol, max_steps
    )
    return _solve(
        v,
        x1,
        probes,
        t_start,
        t_end,
        num_steps,
        rtol,
        atol,
        prior,
        log_p0,
        context,
        divergence=divergence,
        solver=solver,
        max_steps=cap,
    )


def bits_per_dim(
    logp: Float[ArrayLike, "..."], num_dims: int, *, scale: float = 2.0 / 256
) -> Float[Array, "..."]:
    """Bits per dimension of 8-bit (or any binned) data from a model-space log density.

    Data x in {0, ..., K-1}^D is dequantised to z = x + u, u ~ U[0, 1)^D, and mapped to model
    space by y = low + scale * z (scale = 2/256 takes [0, 256) to [-1, 1)). The density of z
    is p_Z(z) = p(y) scale^D, and by Jensen
    log P(x) = log E_u p_Z(x + u) >= E_u log p_Z(x + u) = E_u log p(y) + D log scale
    (Theis et al. 2016, sec. 3.1; Ho et al. 2019, Flow++, on uniform dequantisation),
    hence the upper bound

        bpd = -(log p(y) + D log scale) / (D ln 2).

    For scale = 2/256 this is -log p(y) / (D ln 2) + 7; a uniform density on [-1, 1]^D
    (log p = -D ln 2) gives 8 bits, the cost of 256 equally likely levels.

    Args:
      logp: model log densities log p(y), any shape.
      num_dims: D, the number of dimensions of one example (e.g. H * W * C).
      scale: the per-dimension Jacobian of the map from dequantised data to model space.
    """
    if isinstance(num_dims, bool) or not isinstance(num_dims, (int, np.integer)) or num_dims < 1:
        raise ValueError(f"bits_per_dim: num_dims must be a positive integer, got {num_dims!r}")
    if not float(scale) > 0:
        raise ValueError(f"bits_per_dim: scale must be positive, got {scale!r}")
    logp = jnp.asarray(logp)
    return -(logp + num_dims * math.log(scale)) / (num_dims * math.log(2.0))


def dequantize(
    key: PRNGKeyArray,
    images: Integer[ArrayLike, "B *D"],
    *,
    num_bins: int = 256,
    low: float = -1.0,
    high: float = 1.0,
    dtype=jnp.float32,
) -> Float[Array, "B *D"]:
    """Uniform dequantisation to model space: low + (x + u) (high - low) / num_bins.

    u ~ U[0, 1) per entry. The matching `bits_per_dim` scale is (high - low) / num_bins
    (2/256 by default).
    """
    images = jnp.asarray(images)
    if not jnp.issubdtype(images.dtype, jnp.integer):
        raise TypeError(f"dequantize: images must be integers (e.g. uint8), got {images.dtype}")
    if not high > low:
        raise ValueError(f"dequantize: need high > low, got low={low}, high={high}")
    u = jax.random.uniform(key, images.shape, dtype)
    return low + (images.astype(dtype) + u) * ((high - low) / num_bins)
