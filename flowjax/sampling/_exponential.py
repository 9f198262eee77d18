"""The exponential-integrator form shared by the multistep diffusion solvers.

On an affine path x_t = alpha_t x1 + sigma_t eps, write the half log-SNR
lambda_t = log(alpha_t / sigma_t) (half of `path.log_snr`; it increases from noise to data).
With the data prediction x1_hat(x_t, t) = E[x1 | x_t] the probability-flow ODE is, exactly
(Lu et al. 2022b, "DPM-Solver++", eq. (8)),

    x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^l x1_hat(l) dl,

and with h = lambda_t - lambda_s, a Taylor expansion of x1_hat in lambda at lambda_s gives

    x_t = (sigma_t / sigma_s) x_s + alpha_t sum_k I_k(h) x1_hat^(k)(lambda_s),
    I_k(h) = int_0^h e^(u - h) u^k / k! du:  I_0 = 1 - e^-h, I_1 = h - I_0, I_2 = h^2 / 2 - I_1.

The solvers differ in how they estimate the derivatives from earlier data predictions. Every
coefficient is written with e^-h = exp(lambda_s - lambda_t), so the ends are exact: where
alpha_s = 0 (t = 0 on CondOT / Cosine) lambda_s = -inf and e^-h = 0; where sigma_t = 0 (t = 1)
sigma_t / sigma_s = 0 and the step returns the data prediction (a final denoising step).
"""

from __future__ import annotations

import abc
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

__all__ = ["AbstractMultistep", "History", "Point", "first_order"]


class Point(NamedTuple):
    """Path coefficients at one grid time t: alpha, sigma (>= 0) and the half log-SNR."""

    alpha: Array
    sigma: Array
    lam: Array
    t: Array


class History(NamedTuple):
    """The last K data predictions, newest first: d[0] at the current time t_i, d[1] at t_{i-1}.

    `point` holds (K,) coefficients of the same times; `count` is how many are valid (i + 1,
    capped at K): the solvers warm up at lower order until their history is full. `e` holds
    the noise predictions of the same times for solvers in noise-prediction form (DEIS), else
    None.
    """

    d: Array
    point: Point
    count: Array
    e: Array | None = None


def first_order(x, d, s: Point, t: Point):
    """DDIM / DPM-Solver++(1): x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^-h) d.

    Written as alpha_t - sigma_t alpha_s / sigma_s, which is finite at both ends.
    """
    return (t.sigma / s.sigma) * x + (t.alpha - t.sigma * s.alpha / s.sigma) * d


def decay(s: Point, t: Point):
    """e^-h = exp(lambda_s - lambda_t), exact 0 when either end is infinite."""
    return jnp.exp(s.lam - t.lam)


class AbstractMultistep(eqx.Module):
    """A multistep solver in data-prediction form: one model call per step.

    `history` is how many past data predictions (including the current one) a step reads;
    `needs_eps` asks the driver to keep the noise predictions too (`History.e`).
    """

    needs_eps: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def history(self) -> int:
        """Number of data predictions kept."""

    @abc.abstractmethod
    def step(self, x, x_base, hist: History, nxt: Point, final, path) -> tuple[Array, Array]:
        """(x at the next time, x_base for the next step) from x at the current time.

        x_base is the state the current x was predicted from (only UniPC's corrector reads
        it); `final` is True on a step that ends where sigma = 0; `path` is the affine path
        (only DEIS reads it, for times inside the step).
        """


def at(hist: History, k: int) -> Point:
    """The coefficients of the k-th newest history entry."""
    return Point(*(v[k] for v in hist.point))


def effective_order(order: int, hist: History, final):
    """min(order, count), and 1 on a final step to sigma = 0 (its h is infinite)."""
    return jnp.where(final, 1, jnp.minimum(order, hist.count))
