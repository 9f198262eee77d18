"""DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models"), deterministic (eta = 0).

Eq. (12) with sigma_t = 0, written for any affine path (alpha_t = sqrt(abar_t),
sigma_t = sqrt(1 - abar_t) on VP):

    x_{t'} = alpha_{t'} x1_hat + sigma_{t'} eps_hat,   eps_hat = (x_t - alpha_t x1_hat) / sigma_t,

which is the first-order exponential integrator of the probability-flow ODE (DPM-Solver++(1),
Lu et al. 2022b, eq. (9)): first order in the step, exact when x1_hat is constant.
"""

from __future__ import annotations

from flowjax.sampling._exponential import AbstractMultistep, at, first_order

__all__ = ["DDIM"]


class DDIM(AbstractMultistep):
    """Deterministic DDIM steps (order 1)."""

    @property
    def history(self) -> int:
        return 1

    def step(self, x, x_base, hist, nxt, final, path):
        del x_base, final, path
        return first_order(x, hist.d[0], at(hist, 0), nxt), x
