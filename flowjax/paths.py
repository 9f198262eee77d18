"""Affine Gaussian probability paths and conversions between prediction kinds.

Convention (DESIGN.md): t = 0 is noise x0 ~ N(0, I), t = 1 is data x1, and

    x_t = alpha(t) * x1 + sigma(t) * x0,            u_t = d_alpha(t) * x1 + d_sigma(t) * x0

(the conditional velocity of Lipman et al. 2023, eq. (20) written for an affine Gaussian path).
Every path is a frozen pytree (an `equinox.Module`); its methods take `t` as a Python float, a
scalar array or an array of any shape and act elementwise. Derivatives are closed forms.

The log signal-to-noise ratio is lambda(t) = log(alpha^2 / sigma^2) (Kingma et al. 2021, VDM);
it increases with t for every path here and `t_from_log_snr` is its exact inverse, which lets a
model trained on one path be sampled on another (`change_path`) and lets SNR-defined time
distributions (EDM's log-normal sigma) be used with any path.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from flowjax import _registry
from flowjax._types import expand_time

__all__ = [
    "AffinePath",
    "CondOT",
    "VP",
    "Cosine",
    "Polynomial",
    "EDM",
    "KINDS",
    "canonical_kind",
    "convert",
    "change_path",
    "get_path",
    "PATHS",
]


def _f(t):
    t = jnp.asarray(t)
    return t if jnp.issubdtype(t.dtype, jnp.floating) else t.astype(jnp.result_type(float))


class AffinePath(eqx.Module):
    """Base class: x_t = alpha(t) x1 + sigma(t) x0 with closed-form derivatives."""

    @abc.abstractmethod
    def alpha(self, t: ArrayLike) -> Array:
        """Signal coefficient alpha(t); alpha(0) ~ 0, alpha(1) = 1."""

    @abc.abstractmethod
    def sigma(self, t: ArrayLike) -> Array:
        """Noise coefficient sigma(t); sigma(0) = 1, sigma(1) ~ 0."""

    @abc.abstractmethod
    def d_alpha(self, t: ArrayLike) -> Array:
        """Exact time derivative of alpha."""

    @abc.abstractmethod
    def d_sigma(self, t: ArrayLike) -> Array:
        """Exact time derivative of sigma."""

    def log_snr(self, t: ArrayLike) -> Array:
        """lambda(t) = log(alpha(t)^2 / sigma(t)^2), increasing in t."""
        t = _f(t)
        return 2.0 * (jnp.log(self.alpha(t)) - jnp.log(self.sigma(t)))

    def t_from_log_snr(self, lam: ArrayLike) -> Array:
        """Inverse of `log_snr`. Generic version: bisection on [0, 1] (60 halvings).

        Subclasses override this with a closed form.
        """
        lam = _f(lam)

        def body(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            below = self.log_snr(mid) < lam
            return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 60, body, (jnp.zeros_like(lam), jnp.ones_like(lam)))
        return 0.5 * (lo + hi)

    def interpolate(
        self, x0: Float[Array, "B *D"], x1: Float[Array, "B *D"], t
    ) -> Float[Array, "B *D"]:
        """x_t = alpha(t) x1 + sigma(t) x0 for t scalar or (B,)."""
        tt = expand_time(t, x1)
        return self.alpha(tt) * x1 + self.sigma(tt) * x0

    def velocity_target(
        self, x0: Float[Array, "B *D"], x1: Float[Array, "B *D"], t
    ) -> Float[Array, "B *D"]:
        """Conditional velocity d/dt x_t = alpha'(t) x1 + sigma'(t) x0."""
        tt = expand_time(t, x1)
        return self.d_alpha(tt) * x1 + self.d_sigma(tt) * x0


class CondOT(AffinePath):
    """Conditional optimal transport / rectified flow: alpha = t, sigma = 1 - t.

    Lipman et al. 2023, eq. (22) with sigma_min = 0; Liu et al. 2022.
    """

    def alpha(self, t):
        return _f(t)

    def sigma(self, t):
        return 1.0 - _f(t)

    def d_alpha(self, t):
        return jnp.ones_like(_f(t))

    def d_sigma(self, t):
        return -jnp.ones_like(_f(t))

    def t_from_log_snr(self, lam):
        # alpha / sigma = t / (1 - t) = exp(lam / 2)
        return jax.nn.sigmoid(0.5 * _f(lam))


class Polynomial(AffinePath):
    """Polynomial convex schedule: alpha = t^n, sigma = 1 - t^n (n = 1 is CondOT)."""

    n: float = 2.0

    def __check_init__(self):
        if not (isinstance(self.n, (int, float)) and self.n > 0):
            raise ValueError(f"Polynomial: n must be a positive number, got {self.n!r}")

    def alpha(self, t):
        return _f(t) ** self.n

    def sigma(self, t):
        return 1.0 - _f(t) ** self.n

    def d_alpha(self, t):
        t = _f(t)
        return self.n * t ** (self.n - 1)

    def d_sigma(self, t):
        return -self.d_alpha(t)

    def t_from_log_snr(self, lam):
        return jax.nn.sigmoid(0.5 * _f(lam)) ** (1.0 / self.n)


class Cosine(AffinePath):
    """Cosine schedule (Nichol & Dhariwal 2021) as a path: alpha = sin(pi t/2), sigma = cos(pi t/2).

    Variance preserving: alpha^2 + sigma^2 = 1. Its velocity is -(pi/2) times the
    v-prediction target v = alpha * eps - sigma * x1 of Salimans & Ho 2022.
    """

    def alpha(self, t):
        return jnp.sin(0.5 * jnp.pi * _f(t))

    def sigma(self, t):
        return jnp.cos(0.5 * jnp.pi * _f(t))

    def d_alpha(self, t):
        return 0.5 * jnp.pi * jnp.cos(0.5 * jnp.pi * _f(t))

    def d_sigma(self, t):
        return -0.5 * jnp.pi * jnp.sin(0.5 * jnp.pi * _f(t))

    def t_from_log_snr(self, lam):
        # alpha / sigma = tan(pi t / 2) = exp(lam / 2)
        return (2.0 / jnp.pi) * jnp.arctan(jnp.exp(0.5 * _f(lam)))


class VP(AffinePath):
    """Continuous-time VP (DDPM) path with a linear beta schedule, in flowjax time.

    Song et al. 2021 (score SDE), eq. (33): with tau = 1 - t the diffusion time,
    T(t) = int_0^tau beta(s) ds = 0.5 tau^2 (beta_max - beta_min) + tau beta_min,
    alpha = exp(-T/2), sigma = sqrt(1 - exp(-T)). Same formula as the VP scheduler of the
    PyTorch `flow_matching` library. alpha(0) = exp(-T(0)/2) is small but not zero
    (~6.6e-3 for the defaults).
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __check_init__(self):
        if not (0 <= self.beta_min < self.beta_max):
            raise ValueError(
                f"VP: need 0 <= beta_min < beta_max, got beta_min={self.beta_min}, "
                f"beta_max={self.beta_max}"
            )

    def _T(self, t):
        tau = 1.0 - _f(t)
        return 0.5 * tau**2 * (self.beta_max - self.beta_min) + tau * self.beta_min

    def _dT(self, t):
        tau = 1.0 - _f(t)
        return -(tau * (self.beta_max - self.beta_min) + self.beta_min)

    def alpha(self, t):
        return jnp.exp(-0.5 * self._T(t))

    def sigma(self, t):
        return jnp.sqrt(-jnp.expm1(-self._T(t)))

    def d_alpha(self, t):
        return -0.5 * self._dT(t) * self.alpha(t)

    def d_sigma(self, t):
        T = self._T(t)
        return 0.5 * self._dT(t) * jnp.exp(-T) / jnp.sqrt(-jnp.expm1(-T))

    def log_snr(self, t):
        # alpha^2 / sigma^2 = 1 / (exp(T) - 1)
        return -jnp.log(jnp.expm1(self._T(t)))

    def t_from_log_snr(self, lam):
        T = jax.nn.softplus(-_f(lam))  # exp(T) - 1 = exp(-lam)
        db = self.beta_max - self.beta_min
        tau = (-self.beta_min + jnp.sqrt(self.beta_min**2 + 2.0 * db * T)) / db
        return 1.0 - tau

    def beta(self, t):
        """beta at flowjax time t (the forward-SDE rate at diffusion time tau = 1 - t)."""
        return -self._dT(t)


class EDM(AffinePath):
    """The EDM sigma schedule (Karras et al. 2022) in flowjax's variance-preserving form.

    EDM noises data as y + s n with noise level s from sigma_max (t = 0) down to sigma_min
    (t = 1) along the rho-schedule of Karras et al. 2022, eq. (5):
        s(t) = (sigma_max^(1/rho) + t (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.
    Dividing by sqrt(1 + s^2) gives an affine path with alpha = 1 / sqrt(1 + s^2),
    sigma = s / sqrt(1 + s^2): the same signal-to-noise ratio 1 / s^2 as EDM, so EDM's
    noise levels are exactly log_snr = -2 log s. With sigma_min = 0 the path ends on the data.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0

    def __check_init__(self):
        if not (0 <= self.sigma_min < self.sigma_max and self.rho > 0):
            raise ValueError(
                "EDM: need 0 <= sigma_min < sigma_max and rho > 0, got "
                f"sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, rho={self.rho}"
            )

    def noise_level(self, t):
        """EDM's sigma at flowjax time t (Karras et al. 2022, eq. (5))."""
        a, b = self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)
        return (a + _f(t) * (b - a)) ** self.rho

    def _d_noise_level(self, t):
        a, b = self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)
        return self.rho * (a + _f(t) * (b - a)) ** (self.rho - 1) * (b - a)

    def alpha(self, t):
        return jax.lax.rsqrt(1.0 + self.noise_level(t) ** 2)

    def sigma(self, t):
        s = self.noise_level(t)
        return s * jax.lax.rsqrt(1.0 + s**2)

    def d_alpha(self, t):
        s = self.noise_level(t)
        return -s * (1.0 + s**2) ** -1.5 * self._d_noise_level(t)

    def d_sigma(self, t):
        s = self.noise_level(t)
        return (1.0 + s**2) ** -1.5 * self._d_noise_level(t)

    def log_snr(self, t):
        return -2.0 * jnp.log(self.noise_level(t))

    def t_from_log_snr(self, lam):
        a, b = self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)
        s = jnp.exp(-0.5 * _f(lam))
        return (s ** (1 / self.rho) - a) / (b - a)


PATHS: dict[str, type[AffinePath]] = {
    "condot": CondOT,
    "vp": VP,
    "cosine": Cosine,
    "polynomial": Polynomial,
    "edm": EDM,
}


def get_path(name: str, **kwargs) -> AffinePath:
    """Builds a path by name ("condot", "vp", "cosine", "polynomial", "edm")."""
    return _registry.make(PATHS, name, "path", **kwargs)


# --------------------------------------------------------------------------------------
# Prediction kinds.

KINDS = ("velocity", "x1", "eps", "score")
_ALIASES = {"v": "velocity", "data": "x1", "x0": "eps", "noise": "eps"}


def canonical_kind(kind: str, arg: str = "kind") -> str:
    """The canonical name of a prediction kind (aliases resolved); ValueError if unknown."""
    if not isinstance(kind, str):
        raise TypeError(f"{arg} must be a string naming a prediction kind, got {kind!r}")
    kind = _ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise ValueError(
            f"unknown prediction kind {arg}={kind!r}; valid kinds: {', '.join(KINDS)} "
            f"(aliases: {', '.join(f'{a}={b}' for a, b in _ALIASES.items())})"
        )
    return kind


def _to_x1_eps(pred, kind, path, x, t):
    """(x1_hat, eps_hat) from a prediction of the given kind at (x, t)."""
    a, s = path.alpha(t), path.sigma(t)
    if kind == "x1":
        return pred, (x - a * pred) / s
    if kind == "eps":
        return (x - s * pred) / a, pred
    if kind == "score":
        eps = -s * pred  # score of N(alpha x1, sigma^2 I) is -eps / sigma
        return (x - s * eps) / a, eps
    # velocity: solve [[a, s], [a', s']] [x1, eps] = [x, v]
    da, ds = path.d_alpha(t), path.d_sigma(t)
    det = a * ds - s * da
    return (ds * x - s * pred) / det, (a * pred - da * x) / det


_canonical = canonical_kind  # backwards-compatible private name


def _from_x1_eps(x1, eps, kind, path, t):
    if kind == "x1":
        return x1
    if kind == "eps":
        return eps
    if kind == "score":
        return -eps / path.sigma(t)
    return path.d_alpha(t) * x1 + path.d_sigma(t) * eps


def convert(
    pred: Float[ArrayLike, "B *D"],
    *,
    src: str,
    dst: str,
    path: AffinePath,
    x: Float[ArrayLike, "B *D"],
    t,
) -> Float[Array, "B *D"]:
    """Converts a prediction between kinds "velocity", "x1", "eps" and "score".

    All four are affine in (x1_hat, eps_hat) = (E[x1 | x_t], E[x0 | x_t]) given x = x_t:
    x = alpha x1 + sigma eps, velocity = alpha' x1 + sigma' eps, score = -eps / sigma
    (Lipman et al. 2024, "Flow Matching Guide and Code", sec. 4.8, table 1).

    Args:
      pred: the prediction, shape (B, *D).
      src, dst: prediction kinds (see `KINDS`; "v" is accepted for "velocity").
      path: the affine path the prediction refers to.
      x: the point x_t the prediction was made at, same shape as pred.
      t: time, scalar or (B,).

    Raises:
      ValueError: unknown kind, or pred/x/t shapes that do not match.
    """
    src, dst = canonical_kind(src, "src"), canonical_kind(dst, "dst")
    if not isinstance(path, AffinePath):
        raise TypeError(f"path must be an AffinePath (e.g. fj.paths.CondOT()), got {path!r}")
    pred, x = jnp.asarray(pred), jnp.asarray(x)
    if pred.shape != x.shape:
        raise ValueError(f"pred and x must have the same shape, got {pred.shape} and {x.shape}")
    if src == dst:
        return pred
    tt = expand_time(t, x)
    x1, eps = _to_x1_eps(pred, src, path, x, tt)
    return _from_x1_eps(x1, eps, dst, path, tt)


def change_path(
    fn: Callable[..., Array],
    *,
    src_path: AffinePath,
    dst_path: AffinePath,
    src: str = "velocity",
    dst: str = "velocity",
) -> Callable[..., Array]:
    """Re-expresses a model trained on `src_path` on another path by matching SNR.

    A point x on dst_path at time t has the same signal-to-noise ratio as the point
    c * x on src_path at time t' = src_path.t_from_log_snr(dst_path.log_snr(t)), with
    c = sqrt((alpha'^2 + sigma'^2) / (alpha^2 + sigma^2)) (Kingma et al. 2021, VDM, sec. 3.4;
    Lipman et al. 2024, sec. 4.10, "schedule change"). The data prediction is the same at both,
    so fn's output is converted to x1 on src_path and from x1 to `dst` on dst_path.

    Args:
      fn: callable fn(x, t, *args, **kwargs) -> prediction of kind `src` on src_path.
      src_path, dst_path: the training path and the sampling path.
      src, dst: prediction kinds of fn and of the returned callable.

    Returns:
      g(x, t, *args, **kwargs) -> prediction of kind `dst` on dst_path.
    """
    src, dst = canonical_kind(src, "src"), canonical_kind(dst, "dst")

    def g(x, t, *args, **kwargs):
        x = jnp.asarray(x)
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        # Keep t' away from the ends, where log-SNR is infinite on some paths.
        eps = 1e-6 if x.dtype == jnp.float32 else 1e-12
        t_src = jnp.clip(src_path.t_from_log_snr(dst_path.log_snr(t)), eps, 1 - eps)
        tt, tts = expand_time(t, x), expand_time(t_src, x)
        scale = jnp.sqrt(
            (src_path.alpha(tts) ** 2 + src_path.sigma(tts) ** 2)
            / (dst_path.alpha(tt) ** 2 + dst_path.sigma(tt) ** 2)
        )
        x_src = scale * x
        pred = fn(x_src, t_src, *args, **kwargs)
        x1 = convert(pred, src=src, dst="x1", path=src_path, x=x_src, t=t_src)
        return convert(x1, src="x1", dst=dst, path=dst_path, x=x, t=t)

    return g
