"""Sources: the distribution p_0 that x0 is drawn from at t = 0.

A source is a small immutable pytree with

    x0 = source.sample(key, shape, *, context=None, dtype=None)   # (B, *D)
    logp = source.log_prob(x0, *, context=None)                   # (B,), where it exists

`shape` is an int n (the source's own event shape is used: (n, *event_shape)) or a full
shape (B, *D). Objectives draw `x0 = source.sample(k, x1.shape, context=batch.get("context"),
dtype=x1.dtype)`; `StandardGaussian` is the default everywhere and its draws are bit-identical
to `jax.random.normal(key, shape, dtype)`.

Any object with the same two methods is accepted (duck typing; `log_prob` is only needed by
the likelihood): `check_source` says what is missing. Sources that do not use a context accept
and ignore `context=`, so callers can always pass it.

- `StandardGaussian`: N(0, I).
- `Gaussian`: N(m, A A^T) with A a diagonal (`scale_diag`), a lower-triangular Cholesky factor
  (`scale_tril`, or `covariance=` factorised once) or any lineax linear operator
  (`scale_operator`, x = m + A z).
- `GaussianProcess`: a GP prior over a time axis with the kernels of TSFlow (Kollovieh et al.
  2025): squared exponential, Ornstein-Uhlenbeck, periodic; `.condition(...)` gives the GP
  posterior given observed values, either fixed or supplied per example as `context`.
- `Empirical`: another dataset (data -> data transport); rows drawn uniformly.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import lineax as lx
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

__all__ = [
    "KERNELS",
    "SOURCES",
    "AbstractKernel",
    "AbstractSource",
    "Empirical",
    "Gaussian",
    "GaussianProcess",
    "OrnsteinUhlenbeck",
    "Periodic",
    "SquaredExponential",
    "StandardGaussian",
    "as_source",
    "check_source",
    "has_log_prob",
    "make_source",
]

_LOG_2PI = math.log(2.0 * math.pi)


# ------------------------------------------------------------------------------ helpers


def _is_int(n) -> bool:
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool)


def _sample_shape(shape, event_shape, owner: str) -> tuple[int, ...]:
    """(B, *event) from an int n or a full shape, checked against the event shape."""
    if _is_int(shape):
        if shape < 0:
            raise ValueError(f"{owner}.sample: n must be >= 0, got {shape}")
        if event_shape is None:
            raise ValueError(
                f"{owner}.sample: an int n needs the source's event shape; pass the full shape "
                f"(n, *D) or build the source with event_shape=..."
            )
        return (int(shape),) + tuple(event_shape)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(
            f"{owner}.sample: shape must be an int n or a tuple (B, *D), got {shape!r}"
        ) from None
    if len(shape) < 1:
        raise ValueError(f"{owner}.sample: shape must be (B, *D), got {shape}")
    if event_shape is not None and shape[1:] != tuple(event_shape):
        raise ValueError(
            f"{owner}.sample: requested shape {shape} does not match the source's event shape "
            f"{tuple(event_shape)} (a sample of this source has shape (B, *{tuple(event_shape)}))"
        )
    return shape


def _check_x(x, event_shape, owner: str):
    x = jnp.asarray(x)
    if event_shape is not None and (x.ndim < 1 or x.shape[1:] != tuple(event_shape)):
        raise ValueError(
            f"{owner}.log_prob: x must have shape (B, *{tuple(event_shape)}), got {x.shape}"
        )
    if x.ndim < 1:
        raise ValueError(f"{owner}.log_prob: x must have shape (B, *D), got {x.shape}")
    return x


def _float(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def _concrete(x) -> np.ndarray | None:
    try:
        return np.asarray(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def _cholesky(matrix, owner: str, what: str):
    """Cholesky factor; a clear error (where the input is concrete) if it failed."""
    chol = jnp.linalg.cholesky(matrix)
    value = _concrete(chol)
    if value is not None and not np.all(np.isfinite(value)):
        raise ValueError(
            f"{owner}: the {what} is not numerically positive definite; increase jitter "
            f"or enable float64 (jax_enable_x64)"
        )
    return chol


# ------------------------------------------------------------------------------ base classes


class AbstractSource(eqx.Module):
    """Base class of sources (module docstring). Subclasses define `sample` and, where the
    density exists, `log_prob`; `event_shape` is the shape of one draw or None (any shape)."""

    @property
    def event_shape(self) -> tuple[int, ...] | None:
        return None

    def sample(
        self,
        key: PRNGKeyArray,
        shape: int | tuple[int, ...],
        *,
        context: Array | None = None,
        dtype=None,
    ) -> Float[Array, "B *D"]:
        raise NotImplementedError


class StandardGaussian(AbstractSource):
    """N(0, I), today's x0 everywhere; `sample(key, shape, dtype=d)` is exactly
    `jax.random.normal(key, shape, d)`.

    Attributes:
      shape: optional event shape (then `sample(key, n)` works and shapes are checked);
        None accepts any (B, *D).
    """

    shape: tuple[int, ...] | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        if self.shape is not None and not all(_is_int(s) and s > 0 for s in self.shape):
            raise ValueError(f"StandardGaussian: shape must be positive ints, got {self.shape!r}")

    @property
    def event_shape(self):
        return None if self.shape is None else tuple(self.shape)

    def sample(self, key, shape, *, context=None, dtype=None):
        del context
        shape = _sample_shape(shape, self.event_shape, "StandardGaussian")
        return jax.random.normal(key, shape, jnp.result_type(float) if dtype is None else dtype)

    def log_prob(self, x, *, context=None):
        del context
        x = _check_x(x, self.event_shape, "StandardGaussian")
        flat = x.reshape(x.shape[0], -1)
        return -0.5 * jnp.sum(flat**2, axis=1) - 0.5 * flat.shape[1] * _LOG_2PI


class Gaussian(AbstractSource):
    """N(m, A A^T): x = m + A z with z ~ N(0, I), A acting on the flattened event.

    Give at most one of `scale_diag` (shape of mean: A = diag), `scale_tril` ((d, d) lower
    triangular, d = mean.size), `covariance` ((d, d), factorised once by Cholesky) or
    `scale_operator` (a lineax operator on R^d, square and invertible). None gives A = I.

    Attributes:
      mean: the mean; its shape is the event shape (e.g. (D,) or (T, C)).
      scale_diag, scale_tril, scale_operator: the scale A (one of them set, or none).
    """

    mean: Float[Array, "*D"]
    scale_diag: Float[Array, "*D"] | None
    scale_tril: Float[Array, "d d"] | None
    scale_operator: Any

    def __init__(
        self,
        mean: ArrayLike,
        scale_tril: ArrayLike | None = None,
        scale_diag: ArrayLike | None = None,
        *,
        covariance: ArrayLike | None = None,
        scale_operator: lx.AbstractLinearOperator | None = None,
    ):
        mean = _float(mean)
        if mean.ndim == 0:
            raise ValueError("Gaussian: mean must have the event shape (e.g. (D,)), got a scalar")
        given = [
            n
            for n, v in [
                ("scale_tril", scale_tril),
                ("scale_diag", scale_diag),
                ("covariance", covariance),
                ("scale_operator", scale_operator),
            ]
            if v is not None
        ]
        if len(given) > 1:
            raise ValueError(f"Gaussian: give at most one of {given}")
        d = mean.size
        if covariance is not None:
            covariance = jnp.asarray(covariance, mean.dtype)
            if covariance.shape != (d, d):
                raise ValueError(
                    f"Gaussian: covariance must have shape ({d}, {d}) for mean {mean.shape}, "
                    f"got {covariance.shape}"
                )
            scale_tril = _cholesky(covariance, "Gaussian", "covariance")
        if scale_tril is not None:
            scale_tril = jnp.asarray(scale_tril, mean.dtype)
            if scale_tril.shape != (d, d):
                raise ValueError(
                    f"Gaussian: scale_tril must have shape ({d}, {d}) for mean {mean.shape}, "
                    f"got {scale_tril.shape}"
                )
            value = _concrete(scale_tril)
            if value is not None and (
                np.any(np.triu(value, 1) != 0) or np.any(np.diag(value) == 0)
            ):
                raise ValueError(
                    "Gaussian: scale_tril must be lower triangular with a non-zero diagonal"
                )
        if scale_diag is not None:
            scale_diag = jnp.broadcast_to(jnp.asarray(scale_diag, mean.dtype), mean.shape)
            value = _concrete(scale_diag)
            if value is not None and np.any(value == 0):
                raise ValueError("Gaussian: scale_diag must be non-zero")
        if scale_operator is not None:
            if not isinstance(scale_operator, lx.AbstractLinearOperator):
                raise TypeError(
                    f"Gaussian: scale_operator must be a lineax linear operator, got "
                    f"{type(scale_operator).__name__}"
                )
            if scale_operator.in_size() != d or scale_operator.out_size() != d:
                raise ValueError(
                    f"Gaussian: scale_operator must map R^{d} to R^{d}, got "
                    f"{scale_operator.in_size()} -> {scale_operator.out_size()}"
                )
        self.mean, self.scale_tril, self.scale_diag = mean, scale_tril, scale_diag
        self.scale_operator = scale_operator

    @property
    def event_shape(self):
        return tuple(self.mean.shape)

    @property
    def dim(self) -> int:
        return self.mean.size

    def scale_matrix(self) -> Float[Array, "d d"]:
        """The dense (d, d) scale A (for small d: the analytic oracle, tests)."""
        d = self.dim
        if self.scale_tril is not None:
            return self.scale_tril
        if self.scale_diag is not None:
            return jnp.diag(self.scale_diag.reshape(d))
        if self.scale_operator is not None:
            return self.scale_operator.as_matrix().astype(self.mean.dtype)
        return jnp.eye(d, dtype=self.mean.dtype)

    def covariance(self) -> Float[Array, "d d"]:
        """The dense covariance A A^T over the flattened event."""
        a = self.scale_matrix()
        return a @ a.T

    def _apply_scale(self, z):  # z (B, d) -> (B, d)
        if self.scale_tril is not None:
            return z @ self.scale_tril.T
        if self.scale_diag is not None:
            return z * self.scale_diag.reshape(-1)
        if self.scale_operator is not None:
            return jax.vmap(self.scale_operator.mv)(z)
        return z

    def _whiten(self, r):  # r (B, d) -> A^{-1} r, and log|det A|
        if self.scale_tril is not None:
            z = jsl.solve_triangular(self.scale_tril, r.T, lower=True).T
            return z, jnp.sum(jnp.log(jnp.abs(jnp.diag(self.scale_tril))))
        if self.scale_diag is not None:
            diag = self.scale_diag.reshape(-1)
            return r / diag, jnp.sum(jnp.log(jnp.abs(diag)))
        if self.scale_operator is not None:
            op = self.scale_operator
            z = jax.vmap(lambda b: lx.linear_solve(op, b.astype(op.out_structure().dtype)).value)(r)
            return z.astype(r.dtype), jnp.linalg.slogdet(op.as_matrix())[1].astype(r.dtype)
        return r, jnp.zeros((), r.dtype)

    def sample(self, key, shape, *, context=None, dtype=None):
        del context
        shape = _sample_shape(shape, self.event_shape, "Gaussian")
        dtype = self.mean.dtype if dtype is None else dtype
        z = jax.random.normal(key, (shape[0], self.dim), dtype)
        x = self.mean.reshape(-1).astype(dtype) + self._apply_scale(z).astype(dtype)
        return x.reshape(shape)

    def log_prob(self, x, *, context=None):
        del context
        x = _check_x(x, self.event_shape, "Gaussian")
        r = x.reshape(x.shape[0], -1) - self.mean.reshape(-1).astype(x.dtype)
        z, logdet = self._whiten(r)
        return -0.5 * jnp.sum(z**2, axis=1) - logdet - 0.5 * self.dim * _LOG_2PI


# ------------------------------------------------------------------------------ GP priors


class AbstractKernel(eqx.Module):
    """A stationary covariance kernel k(t, t') on a time axis, called on (n,) and (m,) times."""

    def __call__(self, t1: Float[ArrayLike, " n"], t2: Float[ArrayLike, " m"]):
        t1, t2 = jnp.asarray(t1), jnp.asarray(t2)
        return self.of_distance(jnp.abs(t1[:, None] - t2[None, :]))

    def of_distance(self, r):
        raise NotImplementedError


def _check_positive(owner, **values):
    for name, v in values.items():
        c = _concrete(v)
        if c is not None and not np.all(c > 0):
            raise ValueError(f"{owner}: {name} must be positive, got {v!r}")


class SquaredExponential(AbstractKernel):
    """k(r) = variance exp(-r^2 / (2 length_scale^2)) (TSFlow's SE kernel)."""

    length_scale: float = 1.0
    variance: float = 1.0

    def __check_init__(self):
        _check_positive(
            "SquaredExponential", length_scale=self.length_scale, variance=self.variance
        )

    def of_distance(self, r):
        return self.variance * jnp.exp(-0.5 * (r / self.length_scale) ** 2)


class OrnsteinUhlenbeck(AbstractKernel):
    """k(r) = variance exp(-r / length_scale) (TSFlow's OU kernel; Matern-1/2)."""

    length_scale: float = 1.0
    variance: float = 1.0

    def __check_init__(self):
        _check_positive("OrnsteinUhlenbeck", length_scale=self.length_scale, variance=self.variance)

    def of_distance(self, r):
        return self.variance * jnp.exp(-r / self.length_scale)


class Periodic(AbstractKernel):
    """k(r) = variance exp(-2 sin^2(pi r / period) / length_scale^2) (MacKay 1998; TSFlow)."""

    length_scale: float = 1.0
    period: float = 1.0
    variance: float = 1.0

    def __check_init__(self):
        _check_positive(
            "Periodic", length_scale=self.length_scale, period=self.period, variance=self.variance
        )

    def of_distance(self, r):
        return self.variance * jnp.exp(
            -2.0 * jnp.sin(jnp.pi * r / self.period) ** 2 / self.length_scale**2
        )


KERNELS: dict[str, type[AbstractKernel]] = {
    "se": SquaredExponential,
    "squared_exponential": SquaredExponential,
    "ou": OrnsteinUhlenbeck,
    "ornstein_uhlenbeck": OrnsteinUhlenbeck,
    "periodic": Periodic,
}


class GaussianProcess(AbstractSource):
    """A Gaussian-process prior over a time axis, the same GP independently per channel.

    Draws have shape (B, T) (num_channels=None) or (B, T, C): x[:, :, c] ~ N(mu, K) with
    K_ij = k(t_i, t_j) + jitter I. `jitter` (default 1e-6, relative to the kernel's mean
    variance) keeps the Cholesky factor finite: kernels like the SE one are numerically
    singular on dense grids, and a posterior at observed times with zero noise is exactly
    singular; draws then carry noise of standard deviation ~sqrt(jitter * variance). Use
    float64 for small jitter on long grids.

    `condition(obs_times, obs_values, noise=)` returns the GP posterior (Rasmussen & Williams
    2006, eq. (2.23)-(2.24)) as a source. With `obs_values=None` the observations are the
    per-example `context` of shape (B, T_obs[, C]) at sample / log_prob time (forecasting:
    the history window conditions the prior over the horizon); the posterior covariance does
    not depend on the values, so it is factorised once.

    Attributes:
      times: (T,) the time grid of a draw.
      kernel: the covariance kernel.
      loc: (T,) or (T, C) the mean (the posterior mean for fixed observations).
      scale_tril: (T, T) Cholesky factor of the (posterior) covariance.
      gain: (T, T_obs) K_*o (K_oo + s^2 I)^{-1} for context conditioning, else None.
      obs_loc: (T_obs,) or (T_obs, C) the prior mean at the observed times, else None.
    """

    times: Float[Array, " T"]
    kernel: AbstractKernel
    loc: Float[Array, "T *C"]
    scale_tril: Float[Array, "T T"]
    gain: Float[Array, "T T_obs"] | None
    obs_loc: Float[Array, "T_obs *C"] | None
    num_channels: int | None = eqx.field(static=True)
    jitter: float = eqx.field(static=True)

    def __init__(
        self,
        times: ArrayLike,
        kernel: AbstractKernel | None = None,
        *,
        mean: ArrayLike = 0.0,
        num_channels: int | None = None,
        jitter: float = 1e-6,
    ):
        times = _float(times)
        if times.ndim != 1 or times.shape[0] < 1:
            raise ValueError(f"GaussianProcess: times must have shape (T,), got {times.shape}")
        kernel = SquaredExponential() if kernel is None else kernel
        if not isinstance(kernel, AbstractKernel):
            raise TypeError(
                f"GaussianProcess: kernel must be an AbstractKernel, got {type(kernel).__name__}"
            )
        if num_channels is not None and not (_is_int(num_channels) and num_channels > 0):
            raise ValueError(
                f"GaussianProcess: num_channels must be a positive int, got {num_channels!r}"
            )
        if not (isinstance(jitter, (int, float)) and jitter >= 0):
            raise ValueError(f"GaussianProcess: jitter must be a number >= 0, got {jitter!r}")
        self.times, self.kernel = times, kernel
        self.num_channels, self.jitter = num_channels, float(jitter)
        event = (times.shape[0],) + (() if num_channels is None else (num_channels,))
        try:
            self.loc = jnp.broadcast_to(jnp.asarray(mean, times.dtype), event)
        except ValueError:
            raise ValueError(
                f"GaussianProcess: mean must broadcast to the event shape {event}, got "
                f"{jnp.shape(mean)}"
            ) from None
        self.scale_tril = _cholesky(
            self._jittered(kernel(times, times)), "GaussianProcess", "kernel matrix"
        )
        self.gain, self.obs_loc = None, None

    def _jittered(self, k):
        scale = jnp.mean(jnp.diag(k))
        return k + self.jitter * scale * jnp.eye(k.shape[0], dtype=k.dtype)

    @property
    def event_shape(self):
        return tuple(self.loc.shape)

    def covariance(self) -> Float[Array, "T T"]:
        """The (posterior) covariance over the time axis, L L^T (jitter included)."""
        return self.scale_tril @ self.scale_tril.T

    def condition(
        self,
        obs_times: ArrayLike,
        obs_values: ArrayLike | None = None,
        *,
        noise: float = 0.0,
    ) -> GaussianProcess:
        """The GP posterior given observations y at obs_times (with noise std `noise`).

        mean = mu + K_*o (K_oo + noise^2 I)^{-1} (y - mu_o),
        cov  = K_** - K_*o (K_oo + noise^2 I)^{-1} K_o*   (Rasmussen & Williams eq. (2.24)),
        solved with a Cholesky factor of K_oo + noise^2 I (+ jitter). With obs_values=None
        the observations come per example as `context` (B, T_obs[, C]).
        """
        if self.gain is not None:
            raise ValueError("GaussianProcess.condition: this GP is already conditioned")
        obs_times = jnp.asarray(obs_times, self.times.dtype)
        if obs_times.ndim != 1 or obs_times.shape[0] < 1:
            raise ValueError(
                f"GaussianProcess.condition: obs_times must have shape (T_obs,), got "
                f"{obs_times.shape}"
            )
        if not (isinstance(noise, (int, float)) and noise >= 0):
            raise ValueError(f"GaussianProcess.condition: noise must be >= 0, got {noise!r}")
        k_oo = self.kernel(obs_times, obs_times)
        k_oo = self._jittered(k_oo) + noise**2 * jnp.eye(k_oo.shape[0], dtype=k_oo.dtype)
        chol_oo = _cholesky(k_oo, "GaussianProcess.condition", "observed kernel matrix")
        k_so = self.kernel(self.times, obs_times)
        gain = jsl.cho_solve((chol_oo, True), k_so.T).T  # K_*o K_oo^{-1}, (T, T_obs)
        cov = self.kernel(self.times, self.times) - gain @ k_so.T
        cov = 0.5 * (cov + cov.T)
        post = _cholesky(
            self._jittered_abs(cov), "GaussianProcess.condition", "posterior covariance"
        )
        # The prior mean at the observed times: a constant mean broadcasts; a mean given per
        # time on `times` is only defined there, so it must be constant in time to be used.
        mean_o = self._mean_at(obs_times.shape[0])
        out = eqx.tree_at(
            lambda g: (g.scale_tril, g.gain, g.obs_loc),
            self,
            (post, gain, mean_o),
            is_leaf=lambda v: v is None,
        )
        if obs_values is None:
            return out
        obs_values = jnp.asarray(obs_values, self.times.dtype)
        if obs_values.shape != mean_o.shape:
            raise ValueError(
                f"GaussianProcess.condition: obs_values must have shape {mean_o.shape}, got "
                f"{obs_values.shape}"
            )
        loc = self.loc + jnp.tensordot(gain, obs_values - mean_o, axes=1)
        return eqx.tree_at(
            lambda g: (g.loc, g.gain, g.obs_loc),
            out,
            (loc, None, None),
            is_leaf=lambda v: v is None,
        )

    def _jittered_abs(self, cov):
        # Relative to the prior variance: the posterior variance can be ~0 at observed times.
        scale = jnp.mean(jnp.diag(self.kernel(self.times, self.times)))
        return cov + self.jitter * scale * jnp.eye(cov.shape[0], dtype=cov.dtype)

    def _mean_at(self, n_obs):
        loc = _concrete(self.loc)
        if loc is not None and not np.allclose(loc, loc[:1]):
            raise ValueError(
                "GaussianProcess.condition: needs a mean that is constant in time (a mean per "
                "time step is unknown at the observed times)"
            )
        return jnp.broadcast_to(self.loc[:1], (n_obs,) + self.loc.shape[1:])

    @property
    def obs_shape(self) -> tuple[int, ...] | None:
        """Shape of one example's context (observed values), or None if not context-fed."""
        return None if self.obs_loc is None else tuple(self.obs_loc.shape)

    def _loc(self, context, batch: int, owner: str):
        """(B or 1, T, *C) means, per example when conditioned on context."""
        if self.gain is None:
            return self.loc[None]
        if context is None:
            raise ValueError(
                f"GaussianProcess.{owner}: this GP is conditioned on per-example observations; "
                f"pass context of shape (B, *{self.obs_shape})"
            )
        context = jnp.asarray(context)
        if context.shape != (batch,) + self.obs_shape:
            raise ValueError(
                f"GaussianProcess.{owner}: context must have shape ({batch}, *{self.obs_shape}),"
                f" got {context.shape}"
            )
        resid = context.astype(self.loc.dtype) - self.obs_loc[None]
        return self.loc[None] + jnp.einsum("to,bo...->bt...", self.gain, resid)

    def sample(self, key, shape, *, context=None, dtype=None):
        shape = _sample_shape(shape, self.event_shape, "GaussianProcess")
        dtype = self.loc.dtype if dtype is None else dtype
        z = jax.random.normal(key, shape, dtype)
        x = self._loc(context, shape[0], "sample") + jnp.einsum(
            "ts,bs...->bt...", self.scale_tril.astype(dtype), z
        )
        return x.astype(dtype)

    def log_prob(self, x, *, context=None):
        x = _check_x(x, self.event_shape, "GaussianProcess")
        r = x - self._loc(context, x.shape[0], "log_prob").astype(x.dtype)
        # Time to the front: (T, B * C) right-hand sides of one triangular solve.
        rhs = jnp.moveaxis(r, 1, 0).reshape(r.shape[1], -1)
        z = jsl.solve_triangular(self.scale_tril.astype(x.dtype), rhs, lower=True)
        quad = jnp.sum(z.reshape((r.shape[1], r.shape[0], -1)) ** 2, axis=(0, 2))
        channels = 1 if self.num_channels is None else self.num_channels
        logdet = channels * jnp.sum(jnp.log(jnp.diag(self.scale_tril))).astype(x.dtype)
        return -0.5 * quad - logdet - 0.5 * math.prod(self.event_shape) * _LOG_2PI


# ------------------------------------------------------------------------------ empirical


class Empirical(AbstractSource):
    """Another dataset as the source (data -> data transport): rows drawn uniformly with
    replacement. It has no density, so it cannot be the prior of `fj.likelihood.log_prob`.

    Attributes:
      data: (N, *D) the records.
    """

    data: Float[Array, "N *D"]

    def __init__(self, data: ArrayLike):
        data = _float(data)
        if data.ndim < 2 or data.shape[0] < 1:
            raise ValueError(
                f"Empirical: data must have shape (N, *D) with N >= 1, got {data.shape}"
            )
        self.data = data

    @classmethod
    def from_dataset(
        cls, name: str, num: int = 65536, *, seed: int = 0, split: str = "train"
    ) -> Empirical:
        """`num` records of a registered dataset (`fj.data.DATASETS`, e.g. "8gaussians")."""
        from flowjax.data import open_source

        src = open_source(name, split=split, seed=seed)
        if hasattr(src, "read_range"):
            x = src.read_range(0, int(num))[0]
        else:
            x = src.read(np.arange(min(int(num), len(src))))[0]
        return cls(np.asarray(x))

    @property
    def event_shape(self):
        return tuple(self.data.shape[1:])

    def sample(self, key, shape, *, context=None, dtype=None):
        del context
        shape = _sample_shape(shape, self.event_shape, "Empirical")
        idx = jax.random.randint(key, (shape[0],), 0, self.data.shape[0])
        x = self.data[idx]
        return x if dtype is None else x.astype(dtype)


# ------------------------------------------------------------------------------ registry


SOURCES: dict[str, type[AbstractSource]] = {
    "standard_gaussian": StandardGaussian,
    "gaussian": Gaussian,
    "gp": GaussianProcess,
    "empirical": Empirical,
}


def make_source(name: str, **kwargs) -> AbstractSource:
    """Builds a source by name (SOURCES). For "gp", `kernel` may be a name in KERNELS with
    `kernel_kwargs`; for "empirical", `dataset=NAME` (and `num`, `seed`) reads a registered
    dataset instead of `data=`."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; valid sources: {sorted(SOURCES)}")
    kwargs = dict(kwargs)
    if name == "gp" and isinstance(kwargs.get("kernel"), str):
        kname = kwargs.pop("kernel")
        if kname not in KERNELS:
            raise ValueError(f"unknown kernel {kname!r}; valid kernels: {sorted(KERNELS)}")
        kwargs["kernel"] = KERNELS[kname](**kwargs.pop("kernel_kwargs", {}))
    if name == "empirical" and "dataset" in kwargs:
        return Empirical.from_dataset(kwargs.pop("dataset"), **kwargs)
    try:
        return SOURCES[name](**kwargs)
    except TypeError as e:
        raise TypeError(
            f"make_source({name!r}): bad keyword arguments {sorted(kwargs)}: {e}"
        ) from None


def has_log_prob(source) -> bool:
    """Whether `source` has a callable `log_prob` (what the likelihood needs)."""
    return callable(getattr(source, "log_prob", None))


def check_source(source, owner: str = "source", *, need_log_prob: bool = False):
    """Checks the duck-typed source protocol; returns the source.

    Raises:
      TypeError: naming the object and the missing method.
    """
    if not callable(getattr(source, "sample", None)):
        raise TypeError(
            f"{owner}: {type(source).__name__} is not a source: it needs a method "
            f"sample(key, shape, *, context=None, dtype=None)"
        )
    if need_log_prob and not has_log_prob(source):
        raise TypeError(
            f"{owner}: the prior {type(source).__name__} has no log_prob(x, *, context=None), "
            f"so its density is unknown"
        )
    return source


def as_source(source) -> Any:
    """None -> StandardGaussian(); anything else is checked (`check_source`) and returned."""
    return StandardGaussian() if source is None else check_source(source)
