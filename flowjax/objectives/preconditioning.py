"""EDM preconditioning (Karras et al. 2022, sec. 5 and table 1) in flowjax's variables.

EDM denoises y = x1 + s n with D(y; s) = c_skip(s) y + c_out(s) F(c_in(s) y; c_noise(s)),
    c_skip = sd^2 / (s^2 + sd^2),  c_out = s sd / sqrt(s^2 + sd^2),
    c_in = 1 / sqrt(s^2 + sd^2),   c_noise = ln(s) / 4.
A flowjax point x_t = alpha x1 + sigma x0 is EDM's y scaled by alpha, with s = sigma / alpha.
Substituting y = x_t / alpha gives coefficients that act on x_t directly:
    D = (alpha sd^2 / r^2) x_t + (sigma sd / r) F(x_t / r; -log_snr / 8),
with r^2 = sigma^2 + alpha^2 sd^2 the variance of x_t when the data have standard deviation sd.

Trained on x1 with weight w, D is the raw network F trained on an effective target
(Karras et al. 2022, eq. (8) and sec. 5):
    w ||D - x1||^2 = w c_out^2 ||F(c_in x_t; c_noise) - (x1 - c_skip x_t) / c_out||^2,
which `EDMPrecond.raw_regression` writes as a regression of F itself.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from flowjax._types import expand_time
from flowjax.objectives._common import Regression
from flowjax.paths import AffinePath

__all__ = ["EDMPrecond"]


class EDMPrecond(eqx.Module):
    """Wraps a raw apply function F into an x1 (data) predictor with EDM's preconditioning.

    The result is itself an apply function `(params, x, t, *, y=None, key=None, **kw) -> x1_hat`
    and can be passed as `model=` to the diffusion objective with `target="x1"` (pair it with
    `EDMWeighting(sigma_data)`, which is 1 / c_out^2, and `EDMLogNormal()` as in EDM).

    Attributes:
      net: the raw apply function F(params, x, t, *, y=None, key=None, **kw).
      path: the affine path x_t lives on.
      sigma_data: standard deviation of the data (0.5 in EDM for images in [-1, 1]).
      c_noise_time: feed F EDM's c_noise = ln(s) / 4 = -log_snr / 8 as its time input
        (default); if False, feed flowjax time t unchanged. c_noise is infinite where
        alpha = 0 or sigma = 0, so keep t inside (0, 1) when it is on.
    """

    net: Callable = eqx.field(static=True)
    path: AffinePath
    sigma_data: float = 0.5
    c_noise_time: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        if not callable(self.net):
            raise TypeError(f"EDMPrecond: net must be an apply function, got {self.net!r}")
        if not isinstance(self.path, AffinePath):
            raise TypeError(f"EDMPrecond: path must be an AffinePath, got {self.path!r}")
        sd = self.sigma_data
        if isinstance(sd, bool) or not isinstance(sd, (int, float)) or not sd > 0:
            raise ValueError(f"EDMPrecond: sigma_data must be a positive number, got {sd!r}")

    def coefficients(self, t) -> tuple[Array, Array, Array, Array]:
        """(c_skip, c_out, c_in, c_noise) acting on x_t (see the module docstring)."""
        t = jnp.asarray(t)
        a, s, sd = self.path.alpha(t), self.path.sigma(t), self.sigma_data
        r = jnp.sqrt(s**2 + a**2 * sd**2)
        return a * sd**2 / r**2, s * sd / r, 1.0 / r, -self.path.log_snr(t) / 8.0

    def __call__(
        self, params, x: Float[Array, "B *D"], t, *, y=None, key=None, **kwargs
    ) -> Float[Array, "B *D"]:
        x = jnp.asarray(x)
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        c_skip, c_out, c_in, c_noise = self.coefficients(t)
        f = self.net(
            params,
            expand_time(c_in, x) * x,
            c_noise if self.c_noise_time else t,
            y=y,
            key=key,
            **kwargs,
        )
        return expand_time(c_skip, x) * x + expand_time(c_out, x) * f

    def raw_regression(self, reg: Regression) -> Regression:
        """The regression of D on the data x1 (target x1, weight w; the diffusion objective with
        target "x1" and this wrapper as its model) as a regression of the raw network F:
        input c_in x_t at time c_noise, target (x1 - c_skip x_t) / c_out, weight w c_out^2
        (Karras et al. 2022, eq. (8)). Equal losses and gradients, one call of F."""
        x = reg.x
        t = jnp.broadcast_to(jnp.asarray(reg.t, x.dtype), x.shape[:1])
        c_skip, c_out, c_in, c_noise = self.coefficients(t)
        target = (reg.target - expand_time(c_skip, x) * x) / expand_time(c_out, x)
        return Regression(
            expand_time(c_in, x) * x,
            c_noise if self.c_noise_time else t,
            target,
            reg.weight * c_out**2,
            reg.model_kwargs,
            reg.invalid,
            reg.message,
        )
