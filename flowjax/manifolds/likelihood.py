"""Log-likelihoods of flows on manifolds by the Riemannian change of variables.

Along dx/dt = v(x, t) on M, d log p_t(x_t) / dt = -div_g v(x_t, t) (Chen & Lipman 2024,
sec. 2, the continuity equation on M; Mathieu & Nickel 2020, "Riemannian Continuous
Normalizing Flows", eq. (4)). Solving dx/dt = v, d delta/dt = div_g v from t = 1 back to
t = 0 with delta(1) = 0 gives log p_1(x1) = log p_0(x(0)) + delta(0).

For M embedded with the induced metric and a tangent field v, div_g v = sum_i e_i^T J e_i
over an orthonormal basis (e_i) of T_xM, J the ambient Jacobian of v. Since
sum_i e_i e_i^T = P_x (the tangent projection), any frame (p_j) with sum_j p_j p_j^T = P_x
gives the same sum: here the projected ambient basis p_j = P_x e_j (`exact`, D jvps), or
tangent probes z = P_x eps with E[eps eps^T] = I, for which E[z z^T] = P_x (`hutchinson`,
an unbiased estimate; Hutchinson 1989; the probes eps are fixed over the solve).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from flowjax.manifolds._base import AbstractManifold, check_points, compatible
from flowjax.manifolds._sources import Uniform
from flowjax.manifolds.solve import check_options, get_solver, integrate, run_args, tangent_field

__all__ = ["DIVERGENCES", "log_prob", "riemannian_divergence"]

DIVERGENCES = ("exact", "hutchinson")


def riemannian_divergence(
    manifold: AbstractManifold,
    f: Callable[[Array], Array],
    x: Float[Array, "B D"],
    eps: Float[Array, "P B D"] | None = None,
) -> tuple[Float[Array, "B D"], Float[Array, " B"]]:
    """(f(x), div_g f(x)) for a tangent field f on M (examples independent).

    eps=None: exact, over the projected ambient basis P_x e_j (D jvps). Otherwise the
    Hutchinson estimate mean_p z_p^T J z_p with tangent probes z_p = P_x eps_p.
    """
    exact = eps is None
    if exact:
        b, d = x.shape
        eps = jnp.broadcast_to(jnp.eye(d, dtype=x.dtype)[:, None, :], (d, b, d))
    probes = jax.vmap(lambda e: manifold.proju(x, e))(eps)
    y, f_jvp = jax.linearize(f, x)
    per_probe = jnp.sum(probes * jax.vmap(f_jvp)(probes), axis=-1)  # (P, B)
    return y, jnp.sum(per_probe, 0) if exact else jnp.mean(per_probe, 0)


def _divergence_fn(manifold, field, eps):
    def fn(t, state):
        x, _ = state
        return riemannian_divergence(manifold, lambda z: field(z, t), x, eps)

    return fn


@eqx.filter_jit
def _solve(manifold, v, x1, eps, t0, t1, n, rtol, atol, *, solver, max_steps):
    field = tangent_field(manifold, v)
    fn = _divergence_fn(manifold, field, eps)
    delta0 = jnp.zeros(x1.shape[:1], x1.dtype)
    (x0, delta), info = integrate(
        fn,
        (x1, delta0),
        manifold=manifold,
        t0=t1,
        t1=t0,
        solver=solver,
        num_steps=n,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        caller="fj.manifolds.log_prob",
    )
    return x0, delta, info


def log_prob(
    manifold: AbstractManifold,
    v: Callable[[Array, Array], Array],
    x1: Float[ArrayLike, "B D"],
    *,
    prior=None,
    divergence: str = "exact",
    key: PRNGKeyArray | None = None,
    num_probes: int = 1,
    solver: str = "dopri5",
    num_steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
) -> tuple[Float[Array, " B"], dict]:
    """log p_1(x1) of the flow of v on M, w.r.t. the Riemannian volume of M.

    Args:
      manifold: the manifold.
      v: velocity field v(x, t) (projected onto T_xM here).
      x1: data points (B, D) on M.
      prior: the source at t = 0 (needs `log_prob` and the same manifold); Uniform(M) default.
      divergence: "exact" (D jvps per evaluation) or "hutchinson" (needs `key`).
      key: PRNG key of the Rademacher probes (hutchinson).
      num_probes: probes per example (hutchinson).
      solver, num_steps, rtol, atol, max_steps: as in `fj.manifolds.sample_ode`.

    Returns:
      (log p (B,), info) with info["nfe"] (evaluations of the augmented field),
      info["x0"] (the points at t = 0) and info["prior_log_prob"].
    """
    caller = "fj.manifolds.log_prob"
    x1 = check_points(manifold, x1, caller, "x1")
    check_options(num_steps, max_steps, caller)
    get_solver(solver, manifold, adaptive=num_steps is None)
    if divergence not in DIVERGENCES:
        raise ValueError(f"{caller}: divergence must be one of {DIVERGENCES}, got {divergence!r}")
    prior = Uniform(manifold) if prior is None else prior
    prior_manifold = getattr(prior, "manifold", None)
    if prior_manifold is None or not compatible(prior_manifold, manifold):
        raise ValueError(
            f"{caller}: the prior lives on {prior_manifold!r}, not on {manifold!r}; pass a "
            "source on the same manifold (e.g. fj.manifolds.Uniform(M))"
        )
    if not callable(getattr(prior, "log_prob", None)):
        raise TypeError(f"{caller}: the prior {prior!r} has no log_prob")
    eps = None
    if divergence == "hutchinson":
        if key is None:
            raise ValueError(f"{caller}: divergence='hutchinson' needs key=")
        if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
            raise ValueError(f"{caller}: num_probes must be a positive int, got {num_probes!r}")
        eps = jax.random.rademacher(key, (num_probes,) + x1.shape, dtype=x1.dtype)
    t0, t1, n, rtol, atol, cap = run_args(x1, 0.0, 1.0, num_steps, rtol, atol, max_steps)
    x0, delta, info = _solve(
        manifold,
        v,
        x1,
        eps,
        t0,
        t1,
        n,
        rtol,
        atol,
        solver=solver,
        max_steps=cap,
    )
    prior_lp = prior.log_prob(x0)
    info = dict(info, x0=x0, prior_log_prob=prior_lp)
    return prior_lp + delta, info
