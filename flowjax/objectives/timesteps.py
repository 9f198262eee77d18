"""Training-time distributions: where along the path each example's loss is evaluated.

Each is a small immutable pytree with `sample(key, shape, path=None) -> t`, t in [0, 1] in
flowjax time (t = 0 noise, t = 1 data). `EDMLogNormal` is defined on noise levels and mapped
to t through `path.t_from_log_snr`, so it means the same thing on every path.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax import _registry
from flowjax.paths import AffinePath

__all__ = [
    "AbstractTimeDist",
    "Uniform",
    "LogitNormal",
    "DiscreteDDPM",
    "EDMLogNormal",
    "TIME_DISTS",
    "get_time_dist",
    "resolve_time_dist",
]


def _shape(shape):
    if isinstance(shape, int):
        return (shape,)
    try:
        return tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(
            f"time distribution: shape must be an int or a tuple, got {shape!r}"
        ) from None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(ok: bool, owner: str, name: str, what: str, value) -> None:
    if not ok:
        raise ValueError(f"{owner}: {name} must be {what}, got {value!r}")


class AbstractTimeDist(eqx.Module):
    """Base class of training-time distributions on [0, 1]."""

    @abc.abstractmethod
    def sample(
        self, key: PRNGKeyArray, shape, path: AffinePath | None = None
    ) -> Float[Array, "..."]:
        """Draws times of the given shape (the path is needed only by SNR-defined laws)."""


class Uniform(AbstractTimeDist):
    """t ~ U[eps, 1 - eps] (eps = 0: the whole interval, as in Lipman et al. 2023)."""

    eps: float = 0.0

    def __check_init__(self):
        ok = _is_number(self.eps) and 0 <= self.eps < 0.5
        _require(ok, "Uniform", "eps", "in [0, 0.5)", self.eps)

    def sample(self, key, shape, path=None):
        return jax.random.uniform(key, _shape(shape), minval=self.eps, maxval=1.0 - self.eps)


class LogitNormal(AbstractTimeDist):
    """t = sigmoid(mean + std n), n ~ N(0, 1): logit-normal sampling (Esser et al. 2024, eq. (19)).

    In flowjax time (t = 1 is data). SD3 puts data at t = 0, so its location m is `mean = -m`;
    the default (0, 1) is SD3's best setting and is symmetric.
    """

    mean: float = 0.0
    std: float = 1.0

    def __check_init__(self):
        _require(_is_number(self.mean), "LogitNormal", "mean", "a number", self.mean)
        _require(_is_number(self.std) and self.std > 0, "LogitNormal", "std", "> 0", self.std)

    def sample(self, key, shape, path=None):
        return jax.nn.sigmoid(self.mean + self.std * jax.random.normal(key, _shape(shape)))


class DiscreteDDPM(AbstractTimeDist):
    """t = 1 - i / T with i ~ U{1, ..., T}: the DDPM training steps (Ho et al. 2020, alg. 1).

    DDPM step i (noise grows with i, step T is almost pure noise) sits at flowjax time
    t = 1 - i / T, i.e. diffusion time i / T of the continuous VP path. So t takes the values
    {0, 1/T, ..., 1 - 1/T} and never 1 (clean data). The DDPM ancestral sampler walks the same
    grid, from i = T (t = 0) down to i = 1.
    """

    num_steps: int = eqx.field(default=1000, static=True)

    def __check_init__(self):
        ok = isinstance(self.num_steps, int) and not isinstance(self.num_steps, bool)
        _require(
            ok and self.num_steps >= 1, "DiscreteDDPM", "num_steps", "an int >= 1", self.num_steps
        )

    def grid(self) -> Float[Array, " T"]:
        """All T values t_i = 1 - i / T, i = 1..T (decreasing)."""
        i = jnp.arange(1, self.num_steps + 1)
        return 1.0 - i / self.num_steps

    def sample(self, key, shape, path=None):
        i = jax.random.randint(key, _shape(shape), 1, self.num_steps + 1)
        return 1.0 - i / self.num_steps


class EDMLogNormal(AbstractTimeDist):
    """EDM's training noise levels: ln s ~ N(P_mean, P_std^2) (Karras et al. 2022, table 1).

    s is EDM's noise level sigma / alpha, so the log-SNR is -2 ln s and t is
    path.t_from_log_snr(-2 ln s), clipped to [0, 1] (the clip moves only the far tails that a
    path with a finite noise range, like fj.paths.EDM, cannot represent).
    """

    p_mean: float = -1.2
    p_std: float = 1.2

    def __check_init__(self):
        _require(_is_number(self.p_mean), "EDMLogNormal", "p_mean", "a number", self.p_mean)
        _require(
            _is_number(self.p_std) and self.p_std > 0, "EDMLogNormal", "p_std", "> 0", self.p_std
        )

    def sample(self, key, shape, path=None):
        if not isinstance(path, AffinePath):
            raise ValueError(
                "EDMLogNormal.sample needs the path (an AffinePath) to map noise levels to t, "
                f"got path={path!r}"
            )
        log_s = self.p_mean + self.p_std * jax.random.normal(key, _shape(shape))
        return jnp.clip(path.t_from_log_snr(-2.0 * log_s), 0.0, 1.0)


TIME_DISTS: dict[str, type[AbstractTimeDist]] = {
    "uniform": Uniform,
    "logit_normal": LogitNormal,
    "discrete_ddpm": DiscreteDDPM,
    "edm_lognormal": EDMLogNormal,
}


def get_time_dist(name: str, **kwargs) -> AbstractTimeDist:
    """Builds a time distribution by name (see `TIME_DISTS`)."""
    return _registry.make(TIME_DISTS, name, "time distribution", **kwargs)


def resolve_time_dist(time_dist) -> AbstractTimeDist:
    """Accepts a time distribution object or a registry name."""
    return _registry.resolve(
        time_dist, TIME_DISTS, AbstractTimeDist, "time_dist", "time distributions"
    )
