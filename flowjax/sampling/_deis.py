"""DEIS (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator"),
the multistep tAB-DEIS form: noise prediction extrapolated by a polynomial in time.

On an affine path with noise level rho = sigma / alpha = e^-lambda (half log-SNR lambda,
`_exponential`), the probability-flow ODE is d(x / alpha) = eps_hat d rho exactly (their
sec. 3, the exponential integrator of the semi-linear ODE), so a step from s to t is

    x_t = (alpha_t / alpha_s) x_s + alpha_t int_{rho_s}^{rho_t} eps_hat(tau) d rho(tau).

tAB-DEIS (their sec. 4, "Polynomial extrapolation", eq. (14)-(15)) replaces eps_hat(tau) by
the Lagrange polynomial in time t through the last r + 1 predictions eps_j at t_j,
P(tau) = sum_j eps_j l_j(tau), and integrates it exactly against the path:

    x_t = (alpha_t / alpha_s) x_s + sum_j C_j eps_j,
    C_j = alpha_t int_{rho_s}^{rho_t} l_j(tau) d rho = -(alpha_t sigma_s / alpha_s)
          int_0^h e^-u l_j(t(lambda_s + u)) du,   h = lambda_t - lambda_s,

computed (as DEIS does for its C_ij) by quadrature: Gauss-Legendre in u, where the integrand
is smooth on every path (in t, rho(t) has a square-root end on VP). With r = 0 this is DDIM;
with r + 1 points the method is of order r + 1. As in the other solvers the first steps warm
up at lower order, and a final step to sigma = 0 or one from alpha = 0 is DDIM's (finite at
both ends, `first_order`); eps at alpha = 0 may still serve as an earlier point.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from flowjax.sampling._exponential import AbstractMultistep, at, effective_order, first_order

__all__ = ["DEIS"]


class DEIS(AbstractMultistep):
    """tAB-DEIS of `order` (1 = DDIM, 2, 3): eps extrapolated in t through `order` points.

    `nodes` Gauss-Legendre points per step integrate the coefficients C_j.
    """

    order: int = 3
    nodes: int = 8
    needs_eps = True

    def __check_init__(self):
        if self.order not in (1, 2, 3):
            raise ValueError(f"DEIS: order must be 1, 2 or 3, got {self.order!r}")
        if isinstance(self.nodes, bool) or not isinstance(self.nodes, int) or self.nodes < 1:
            raise ValueError(f"DEIS: nodes must be a positive integer, got {self.nodes!r}")

    @property
    def history(self) -> int:
        return self.order

    def step(self, x, x_base, hist, nxt, final, path):
        del x_base
        s = at(hist, 0)

        def tab(p):
            def run():
                z, w = (
                    jnp.asarray(a, x.dtype) for a in np.polynomial.legendre.leggauss(self.nodes)
                )
                h = nxt.lam - s.lam
                u, wu = 0.5 * h * (z + 1.0), 0.5 * h * w
                tau = path.t_from_log_snr(2.0 * (s.lam + u))
                tj = hist.point.t[:p]
                coef = []
                for j in range(p):
                    basis = jnp.ones_like(tau)
                    for k in range(p):
                        if k != j:
                            basis = basis * (tau - tj[k]) / (tj[j] - tj[k])
                    coef.append(jnp.sum(wu * jnp.exp(-u) * basis))
                ratio = nxt.alpha / s.alpha
                drift = sum(c * hist.e[j] for j, c in enumerate(coef))
                return ratio * x - ratio * s.sigma * drift

            return run

        branches = [lambda: first_order(x, hist.d[0], s, nxt)] + [tab(p) for p in range(2, 4)]
        q = jnp.where(jnp.isfinite(s.lam), effective_order(self.order, hist, final), 1)
        return jax.lax.switch(q - 1, branches[: self.order]), x
