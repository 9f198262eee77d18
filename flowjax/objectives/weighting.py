"""Loss weightings w(path, t, target) for the denoising objective.

Every error on a prediction target is a multiple of the error on the data prediction x1 at the
same point x_t = alpha x1 + sigma eps (x_t fixed: eps_hat - eps = -(alpha / sigma)(x1_hat - x1)):

    ||eps_hat - eps||^2 = SNR ||x1_hat - x1||^2,                     SNR = alpha^2 / sigma^2
    ||v_hat - v||^2     = (W / sigma)^2 ||x1_hat - x1||^2,           W = alpha' sigma - alpha sigma'

(W = alpha sigma lambda'(t) / 2 with lambda = log SNR; W = 1 on CondOT, pi / 2 on Cosine.)
A weighting is therefore defined by its effective weight on the x1 loss, w_x1(t) (Kingma et al.
2023, "Understanding diffusion objectives", sec. 2), and applied to target k as w_x1 / c_k with
c_x1 = 1, c_eps = SNR, c_v = (W / sigma)^2. Each class writes the three quotients in a closed
form that stays finite at the ends of the path where it can:

    name      w_x1 (= x1 column)   eps                  velocity
    uniform   c_k (plain MSE)      1                    1
    snr       SNR                  1                    alpha^2 / W^2
    min_snr   min(SNR, gamma)      min(1, gamma / SNR)  min(alpha^2, gamma sigma^2) / W^2
    edm       SNR + 1 / sd^2       1 + 1 / (SNR sd^2)   (alpha^2 + sigma^2 / sd^2) / W^2

"snr" is the weighting under which the x1 loss equals the plain eps loss (Ho et al. 2020;
Kingma et al. 2021). min-SNR-gamma is Hang et al. 2023 (sec. 3.4); on fj.paths.Cosine, where
SNR + 1 = 1 / sigma^2 and the velocity is -W times the v of Salimans & Ho 2022, the velocity
column is their v-form min(SNR, gamma) / (SNR + 1) divided by W^2. EDM's
lambda(s) = (s^2 + sd^2) / (s sd)^2 = SNR + 1 / sd^2 with s = sigma / alpha (Karras et al. 2022,
eq. (8) and table 1) is a weight on the x1 loss, since x_t / alpha = x1 + s eps is EDM's input.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from flowjax import _registry
from flowjax.paths import AffinePath

__all__ = [
    "AbstractWeighting",
    "UniformWeighting",
    "SNRWeighting",
    "MinSNRWeighting",
    "EDMWeighting",
    "TARGETS",
    "canonical_target",
    "WEIGHTINGS",
    "get_weighting",
    "resolve_weighting",
    "x1_error_factor",
]

TARGETS = ("eps", "x1", "velocity")
_TARGET_ALIASES = {"v": "velocity", "noise": "eps", "data": "x1"}


def canonical_target(target: str) -> str:
    """Maps a target name or alias ("v", "noise", "data") to one of `TARGETS`."""
    if not isinstance(target, str):
        raise TypeError(f"target must be a string, one of {TARGETS}, got {target!r}")
    target = _TARGET_ALIASES.get(target, target)
    if target not in TARGETS:
        raise ValueError(
            f"unknown target {target!r}; valid targets: {TARGETS} "
            f"(aliases: {', '.join(f'{a}={b}' for a, b in _TARGET_ALIASES.items())})"
        )
    return target


def _wronskian(path, t):
    # W = alpha' sigma - alpha sigma' > 0 for every path whose log-SNR increases.
    return path.d_alpha(t) * path.sigma(t) - path.alpha(t) * path.d_sigma(t)


def _snr(path, t):
    return path.alpha(t) ** 2 / path.sigma(t) ** 2


def x1_error_factor(path: AffinePath, t, target: str) -> Float[Array, "..."]:
    """c_k with ||pred_k - target_k||^2 = c_k ||x1_hat - x1||^2 at fixed x_t (see module doc)."""
    target = canonical_target(target)
    t = jnp.asarray(t)
    if target == "x1":
        return jnp.ones_like(t)
    if target == "eps":
        return _snr(path, t)
    return (_wronskian(path, t) / path.sigma(t)) ** 2


class AbstractWeighting(eqx.Module):
    """Base class: `weighting(path, t, target)` is the per-example weight on that target's MSE."""

    def __call__(self, path: AffinePath, t, target: str) -> Float[Array, "..."]:
        target = canonical_target(target)
        t = jnp.asarray(t)
        forms = {"x1": self.for_x1, "eps": self.for_eps, "velocity": self.for_velocity}
        return forms[target](path, t)

    @abc.abstractmethod
    def for_x1(self, path: AffinePath, t: Array) -> Array:
        """Weight on ||x1_hat - x1||^2 (the effective x1 weight w_x1)."""

    @abc.abstractmethod
    def for_eps(self, path: AffinePath, t: Array) -> Array:
        """Weight on ||eps_hat - eps||^2, w_x1 / SNR."""

    @abc.abstractmethod
    def for_velocity(self, path: AffinePath, t: Array) -> Array:
        """Weight on ||v_hat - v||^2, w_x1 (sigma / W)^2."""


class UniformWeighting(AbstractWeighting):
    """Weight 1: the plain MSE of whichever target is regressed."""

    def for_x1(self, path, t):
        return jnp.ones_like(t)

    def for_eps(self, path, t):
        return jnp.ones_like(t)

    def for_velocity(self, path, t):
        return jnp.ones_like(t)


class SNRWeighting(AbstractWeighting):
    """w_x1 = SNR(t): the x1 loss that equals the unweighted eps loss (Kingma et al. 2021)."""

    def for_x1(self, path, t):
        return _snr(path, t)

    def for_eps(self, path, t):
        return jnp.ones_like(t)

    def for_velocity(self, path, t):
        return path.alpha(t) ** 2 / _wronskian(path, t) ** 2


class MinSNRWeighting(AbstractWeighting):
    """w_x1 = min(SNR(t), gamma): min-SNR-gamma weighting (Hang et al. 2023, sec. 3.4)."""

    gamma: float = 5.0

    def __check_init__(self):
        if (
            isinstance(self.gamma, bool)
            or not isinstance(self.gamma, (int, float))
            or (not self.gamma > 0)
        ):
            raise ValueError(
                f"MinSNRWeighting: gamma must be a positive number, got {self.gamma!r}"
            )

    def for_x1(self, path, t):
        return jnp.minimum(_snr(path, t), self.gamma)

    def for_eps(self, path, t):
        # min(SNR, gamma) / SNR, written so that SNR = 0 gives 1 rather than 0 / 0.
        return jnp.minimum(1.0, self.gamma * path.sigma(t) ** 2 / path.alpha(t) ** 2)

    def for_velocity(self, path, t):
        a, s = path.alpha(t), path.sigma(t)
        return jnp.minimum(a**2, self.gamma * s**2) / _wronskian(path, t) ** 2


class EDMWeighting(AbstractWeighting):
    """w_x1 = lambda(s) = (s^2 + sd^2) / (s sd)^2, s = sigma / alpha (Karras et al. 2022, eq. (8)).

    With the EDM preconditioning, lambda(s) = 1 / c_out(s)^2, so the raw network's loss has
    unit weight at every noise level.
    """

    sigma_data: float = 0.5

    def __check_init__(self):
        sd = self.sigma_data
        if isinstance(sd, bool) or not isinstance(sd, (int, float)) or not sd > 0:
            raise ValueError(f"EDMWeighting: sigma_data must be a positive number, got {sd!r}")

    def for_x1(self, path, t):
        return _snr(path, t) + 1.0 / self.sigma_data**2

    def for_eps(self, path, t):
        return 1.0 + path.sigma(t) ** 2 / (path.alpha(t) ** 2 * self.sigma_data**2)

    def for_velocity(self, path, t):
        a, s = path.alpha(t), path.sigma(t)
        return (a**2 + s**2 / self.sigma_data**2) / _wronskian(path, t) ** 2


WEIGHTINGS: dict[str, type[AbstractWeighting]] = {
    "uniform": UniformWeighting,
    "snr": SNRWeighting,
    "min_snr": MinSNRWeighting,
    "edm": EDMWeighting,
}


def get_weighting(name: str, **kwargs) -> AbstractWeighting:
    """Builds a weighting by name ("uniform", "snr", "min_snr", "edm")."""
    return _registry.make(WEIGHTINGS, name, "weighting", **kwargs)


def resolve_weighting(weighting) -> AbstractWeighting:
    """Accepts a weighting object or a registry name."""
    return _registry.resolve(weighting, WEIGHTINGS, AbstractWeighting, "weighting")
