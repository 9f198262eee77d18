"""DPM-Solver++ multistep, data prediction (Lu et al. 2022b, "DPM-Solver++", sec. 4 and Alg. 2).

With h = lambda_{i+1} - lambda_i and the previous step h_prev = lambda_i - lambda_{i-1}
(half log-SNR, `_exponential`), DPM-Solver++(2M), Alg. 2:

    r = h_prev / h,   D = (1 + 1/(2r)) x1_hat_i - 1/(2r) x1_hat_{i-1},
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i + alpha_{i+1} (1 - e^-h) D.

DPM-Solver++(3M) takes the Taylor form of `_exponential` to second order, with the derivatives
of x1_hat in lambda from the quadratic through the last three predictions (divided
differences d0 = (x1_hat_i - x1_hat_{i-1}) / h_prev, d1 likewise one step back):

    x1_hat'' ~ 2 (d0 - d1) / (h_prev + h_prev2),   x1_hat' ~ d0 + h_prev x1_hat'' / 2,
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i + alpha_{i+1} (I_0 x1_hat_i + I_1 x1_hat' + I_2 x1_hat'').

(Lu et al.'s reference code and diffusers weight the x1_hat'' term by I_2 / 2, which leaves
that term's local error at O(h^3) and the method second order; with I_2 the measured global
order is 3, tests/test_multistep.py.) The first steps warm up at lower order and a final step
to sigma = 0 is first order (it returns the data prediction), as in diffusers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flowjax.sampling._exponential import (
    AbstractMultistep,
    at,
    decay,
    effective_order,
    first_order,
)

__all__ = ["DPMSolverPP"]


def _ratio(num, den):
    """num / den with 0 where den is infinite (a step from lambda = -inf carries no slope)."""
    ok = jnp.isfinite(den) & (den != 0)
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


class DPMSolverPP(AbstractMultistep):
    """DPM-Solver++(2M) (order=2) or (3M) (order=3), data-prediction multistep."""

    order: int = 2

    def __check_init__(self):
        if self.order not in (1, 2, 3):
            raise ValueError(f"DPMSolverPP: order must be 1, 2 or 3, got {self.order!r}")

    @property
    def history(self) -> int:
        return self.order

    def step(self, x, x_base, hist, nxt, final, path):
        del x_base, path
        s0 = at(hist, 0)
        d = hist.d

        def order1():
            return first_order(x, d[0], s0, nxt)

        def order2():
            s1 = at(hist, 1)
            h, h_prev = nxt.lam - s0.lam, s0.lam - s1.lam
            half_inv_r = 0.5 * _ratio(h, h_prev)  # 1 / (2r)
            big_d = (1.0 + half_inv_r) * d[0] - half_inv_r * d[1]
            return first_order(x, big_d, s0, nxt)

        def order3():
            s1, s2 = at(hist, 1), at(hist, 2)
            h, h0, h1 = nxt.lam - s0.lam, s0.lam - s1.lam, s1.lam - s2.lam
            e = decay(s0, nxt)
            i0 = 1.0 - e
            i1 = h - i0
            i2 = 0.5 * h**2 - i1
            dd0 = (d[0] - d[1]) * _ratio(1.0, h0)
            dd1 = (d[1] - d[2]) * _ratio(1.0, h1)
            second = 2.0 * (dd0 - dd1) * _ratio(1.0, h0 + h1)
            first = dd0 + 0.5 * h0 * second
            return (nxt.sigma / s0.sigma) * x + nxt.alpha * (i0 * d[0] + i1 * first + i2 * second)

        branches = (order1, order2, order3)[: self.order]
        q = effective_order(self.order, hist, final)
        return jax.lax.switch(q - 1, branches), x
