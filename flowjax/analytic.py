"""Analytic oracle: a Gaussian mixture pushed along any affine path from a Gaussian source.

If x1 ~ sum_k w_k N(m_k, S_k) and x0 ~ N(mu, Sigma) independently, then
x_t = alpha x1 + sigma x0 ~ sum_k w_k N(alpha m_k + sigma mu, C_k) with
C_k = alpha^2 S_k + sigma^2 Sigma. Everything below follows from this and from Gaussian
conditioning within each component (Bishop 2006, eq. (2.81)-(2.82)):

    E[x1 | x_t, k] = m_k + alpha S_k C_k^{-1} (x_t - alpha m_k - sigma mu)
    E[x0 | x_t, k] = mu + sigma Sigma C_k^{-1} (x_t - alpha m_k - sigma mu)

so the marginal velocity (Lipman et al. 2023, eq. (8); Albergo & Vanden-Eijnden 2023) is
u_t(x) = sum_k r_k(x) (alpha' E[x1 | x, k] + sigma' E[x0 | x, k]) with responsibilities r_k.
Isotropic components (S_k = s_k^2 I) with the standard source (mu = 0, Sigma = I) keep the
scalar fast path (v_k = alpha^2 s_k^2 + sigma^2); full covariances or any Gaussian source
(`fj.sources.Gaussian`, `source=` on every method) use Cholesky factors of C_k.

`tilt` gives the reward-tilted mixture p*(x) ~ p(x) exp(-lambda (x - c)^T P (x - c) / (2 s^2))
in closed form (P = I by default), and `ConditionalGaussianMixture` a mixture whose parameters
are functions of a context.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from flowjax.paths import AffinePath
from flowjax.sources import Gaussian, StandardGaussian

__all__ = ["ConditionalGaussianMixture", "GaussianMixture"]

_LOG_2PI = float(np.log(2 * np.pi))


def _concrete(x):
    try:
        return np.asarray(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


class GaussianMixture(eqx.Module):
    """Gaussian mixture with closed-form marginals along any affine path.

    Components are isotropic (`stds`) or have full covariances (`covariances`, (K, D, D)).

    Attributes:
      means: (K, D) component means.
      stds: (K,) component standard deviations (> 0), or None with `covariances`.
      weights: (K,) mixture weights (normalised on construction).
      covariances: (K, D, D) symmetric positive definite component covariances, or None.
    """

    means: Float[Array, "K D"]
    stds: Float[Array, " K"] | None
    weights: Float[Array, " K"]
    covariances: Float[Array, "K D D"] | None

    def __init__(
        self,
        means: ArrayLike,
        stds: ArrayLike | None = None,
        weights: ArrayLike | None = None,
        *,
        covariances: ArrayLike | None = None,
    ):
        means = jnp.asarray(means, dtype=jnp.result_type(float))
        if means.ndim != 2:
            raise ValueError(f"GaussianMixture: means must have shape (K, D), got {means.shape}")
        k, d = means.shape
        if (stds is None) == (covariances is None):
            raise ValueError("GaussianMixture: give exactly one of stds and covariances")
        if weights is None:
            weights = jnp.full((k,), 1.0 / k, means.dtype)
        weights_in = weights
        weights = jnp.asarray(weights, means.dtype)
        if covariances is not None:
            covariances = jnp.asarray(covariances, means.dtype)
            if covariances.shape != (k, d, d):
                raise ValueError(
                    f"GaussianMixture: covariances must have shape ({k}, {d}, {d}) to match "
                    f"means {means.shape}, got {covariances.shape}"
                )
            cov = _concrete(covariances)
            if cov is not None and (
                not np.allclose(cov, np.swapaxes(cov, 1, 2))
                or not np.all(np.linalg.eigvalsh(cov) > 0)
            ):
                raise ValueError("GaussianMixture: covariances must be symmetric positive definite")
        else:
            stds_in = stds
            stds = (
                jnp.broadcast_to(jnp.asarray(stds, means.dtype), (k,))
                if jnp.ndim(stds) == 0
                else jnp.asarray(stds, means.dtype)
            )
            if stds.shape != (k,):
                raise ValueError(
                    f"GaussianMixture: stds and weights must have shape ({k},) to match means "
                    f"{means.shape}, got stds {stds.shape}"
                )
            # Value checks only where the inputs are concrete (not when built inside jit).
            if not isinstance(stds_in, jax.core.Tracer) and np.any(np.asarray(stds_in) <= 0):
                raise ValueError(f"GaussianMixture: stds must be positive, got {stds_in}")
        if weights.shape != (k,):
            raise ValueError(
                f"GaussianMixture: stds and weights must have shape ({k},) to match means "
                f"{means.shape}, got weights {weights.shape}"
            )
        if not isinstance(weights_in, jax.core.Tracer):
            w = np.asarray(weights_in)
            if np.any(w < 0) or not w.sum() > 0:
                raise ValueError(
                    f"GaussianMixture: weights must be >= 0 and not all 0, got {weights_in}"
                )
        self.means, self.stds, self.weights = means, stds, weights / jnp.sum(weights)
        self.covariances = covariances

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def isotropic(self) -> bool:
        return self.covariances is None

    def component_covariances(self) -> Float[Array, "K D D"]:
        """(K, D, D) dense component covariances (s_k^2 I for isotropic components)."""
        if self.covariances is not None:
            return self.covariances
        eye = jnp.eye(self.dim, dtype=self.means.dtype)
        return self.stds[:, None, None] ** 2 * eye

    # ----------------------------------------------------------------- data at t = 1
    def sample_with_labels(
        self, key: PRNGKeyArray, n: int
    ) -> tuple[Float[Array, "n D"], Int[Array, " n"]]:
        """n samples and the index of the component each came from."""
        kc, kn = jax.random.split(key)
        comp = jax.random.choice(kc, self.num_components, (n,), p=self.weights)
        noise = jax.random.normal(kn, (n, self.dim), self.means.dtype)
        if self.covariances is not None:
            chol = jnp.linalg.cholesky(self.covariances)
            return self.means[comp] + jnp.einsum("nij,nj->ni", chol[comp], noise), comp
        return self.means[comp] + self.stds[comp, None] * noise, comp

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n D"]:
        """n samples from the mixture (the data distribution at t = 1)."""
        return self.sample_with_labels(key, n)[0]

    def log_prob(self, x: Float[ArrayLike, "B D"]) -> Float[Array, " B"]:
        """Exact log density of the data distribution."""
        x = self._check_x(x)
        ones, zeros = jnp.ones(x.shape[:1], x.dtype), jnp.zeros(x.shape[:1], x.dtype)
        return self._stats(x, ones, zeros, None, None)["log_p"]

    # ----------------------------------------------------------------- marginals at time t
    def _check_x(self, x):
        x = jnp.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"GaussianMixture: x must have shape (B, {self.dim}), got {x.shape}")
        return x

    def _check_source(self, source):
        """None / StandardGaussian -> None (the fast path); a Gaussian -> (mu, Sigma)."""
        if source is None or isinstance(source, StandardGaussian):
            if source is not None and source.event_shape not in (None, (self.dim,)):
                raise ValueError(
                    f"GaussianMixture: source event shape {source.event_shape} does not match "
                    f"the data dimension ({self.dim},)"
                )
            return None
        if not isinstance(source, Gaussian):
            raise TypeError(
                f"GaussianMixture: the oracle needs a Gaussian source (StandardGaussian or "
                f"Gaussian), got {type(source).__name__}"
            )
        if source.event_shape != (self.dim,):
            raise ValueError(
                f"GaussianMixture: source event shape {source.event_shape} does not match "
                f"the data dimension ({self.dim},)"
            )
        return source.mean, source.covariance()

    def _coeffs(self, path, x, t):
        t = jnp.asarray(t, x.dtype)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != x.shape[0]):
            raise ValueError(
                f"t must be a scalar or have shape ({x.shape[0]},), got shape {t.shape}"
            )
        t = jnp.broadcast_to(t, x.shape[:1])
        return path.alpha(t), path.sigma(t), t

    def _log_w(self, x, label):
        log_w = jnp.log(self.weights)[None]
        if label is not None:
            label = jnp.broadcast_to(jnp.asarray(label), x.shape[:1])
            own = jnp.arange(self.num_components)[None] == label[:, None]
            log_w = jnp.where(own, 0.0, -jnp.inf)
        return log_w

    def _components(self, x, a, s, label=None):
        """Isotropic fast path: centred points, variances, log responsibilities, log p."""
        diff = x[:, None, :] - a[:, None, None] * self.means[None]  # (B, K, D)
        var = a[:, None] ** 2 * self.stds[None] ** 2 + s[:, None] ** 2  # (B, K)
        log_comp = (
            self._log_w(x, label)
            - 0.5 * self.dim * jnp.log(2 * jnp.pi * var)
            - 0.5 * jnp.sum(diff**2, -1) / var
        )
        log_p = jax.nn.logsumexp(log_comp, axis=1)
        return diff, var, log_comp - log_p[:, None], log_p

    def _stats(self, x, a, s, label, source):
        """Per example and component: log r_k, E[x1 | x, k], E[x0 | x, k], the component
        score; and log p_t(x). Module docstring for the formulas."""
        gauss = self._check_source(source)
        if gauss is None and self.isotropic:
            diff, var, log_r, log_p = self._components(x, a, s, label)
            e_x1 = self.means[None] + (a[:, None] * self.stds[None] ** 2 / var)[..., None] * diff
            e_x0 = (s[:, None] / var)[..., None] * diff
            score = -diff / var[..., None]
            return dict(log_r=log_r, log_p=log_p, e_x1=e_x1, e_x0=e_x0, score=score)
        d = self.dim
        mu, sig0 = (jnp.zeros(d, x.dtype), jnp.eye(d, dtype=x.dtype)) if gauss is None else gauss
        mu, sig0 = mu.astype(x.dtype), sig0.astype(x.dtype)
        s_k = self.component_covariances().astype(x.dtype)  # (K, D, D)
        mean = a[:, None, None] * self.means[None] + s[:, None, None] * mu  # (B, K, D)
        cov = a[:, None, None, None] ** 2 * s_k[None] + s[:, None, None, None] ** 2 * sig0
        chol = jnp.linalg.cholesky(cov)  # (B, K, D, D)
        diff = x[:, None, :] - mean
        sol = jax.vmap(jax.vmap(lambda c, r: jsl.cho_solve((c, True), r)))(chol, diff)
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
        log_comp = self._log_w(x, label) - 0.5 * (d * _LOG_2PI + logdet + jnp.sum(diff * sol, -1))
        log_p = jax.nn.logsumexp(log_comp, axis=1)
        e_x1 = self.means[None] + a[:, None, None] * jnp.einsum("kij,bkj->bki", s_k, sol)
        e_x0 = mu + s[:, None, None] * jnp.einsum("ij,bkj->bki", sig0, sol)
        return dict(log_r=log_comp - log_p[:, None], log_p=log_p, e_x1=e_x1, e_x0=e_x0, score=-sol)

    @staticmethod
    def _mix(stats, key):
        return jnp.sum(jnp.exp(stats["log_r"])[..., None] * stats[key], axis=1)

    def log_prob_t(
        self, path: AffinePath, x: Float[ArrayLike, "B D"], t, label=None, *, source=None
    ) -> Float[Array, " B"]:
        """Exact log p_t(x) of the marginal at time t (scalar or (B,)).

        With `label` (scalar or (B,)), the density of component `label` alone; with `source`
        (a `fj.sources.Gaussian`), the marginal for x0 drawn from it.
        """
        x = self._check_x(x)
        a, s, _ = self._coeffs(path, x, t)
        return self._stats(x, a, s, label, source)["log_p"]

    def score(self, path: AffinePath, x: Float[ArrayLike, "B D"], t, label=None, *, source=None):
        """Exact score grad_x log p_t(x) = -sum_k r_k C_k^{-1} (x - mean_k)."""
        x = self._check_x(x)
        a, s, _ = self._coeffs(path, x, t)
        return self._mix(self._stats(x, a, s, label, source), "score")

    def posterior_mean(
        self, path: AffinePath, x: Float[ArrayLike, "B D"], t, label=None, *, source=None
    ):
        """E[x1 | x_t = x]: the ideal data ("x1") prediction."""
        x = self._check_x(x)
        a, s, _ = self._coeffs(path, x, t)
        return self._mix(self._stats(x, a, s, label, source), "e_x1")

    def velocity(self, path: AffinePath, x: Float[ArrayLike, "B D"], t, label=None, *, source=None):
        """Exact marginal velocity u_t(x) = E[alpha' x1 + sigma' x0 | x_t = x]."""
        x = self._check_x(x)
        a, s, t = self._coeffs(path, x, t)
        da, ds = path.d_alpha(t), path.d_sigma(t)
        st = self._stats(x, a, s, label, source)
        cond = da[:, None, None] * st["e_x1"] + ds[:, None, None] * st["e_x0"]
        return jnp.sum(jnp.exp(st["log_r"])[..., None] * cond, axis=1)

    def velocity_field(self, path: AffinePath, label=None, *, source=None):
        """The exact velocity as a callable v(x, t) for the samplers."""
        return lambda x, t: self.velocity(path, x, t, label, source=source)

    # ----------------------------------------------------------------- reward tilting
    def tilt(
        self,
        center: ArrayLike,
        scale: float,
        strength: float,
        *,
        precision: ArrayLike | None = None,
    ) -> GaussianMixture:
        """p*(x) ~ p(x) exp(-strength (x - c)^T P (x - c) / (2 scale^2)), again a mixture.

        P = I (`precision=None`) is the isotropic quadratic reward; any symmetric positive
        semi-definite (D, D) `precision` P = A^T A gives the general Gaussian-shaped reward
        r(x) = -|A (x - c)|^2 / 2 (`fj.reward.Quadratic`), p* ~ p exp(strength r) at scale 1.
        With Q = strength P / scale^2, the factor exp(-(x - c)^T Q (x - c) / 2) times
        N(x; m_k, S_k) is N(x; m~_k, S~_k) times a constant in x, with
        S~_k = (S_k^{-1} + Q)^{-1} = (I + S_k Q)^{-1} S_k, m~_k = c + (I + S_k Q)^{-1} (m_k - c)
        (Bishop 2006, eq. (2.115)-(2.117); Petersen & Pedersen, The Matrix Cookbook,
        sec. 8.1.8), and weights, written stably (no Q^{-1}, so Q may be singular),
        log w~_k = log w_k - 1/2 log det(I + S_k Q) - 1/2 (m_k - c)^T Q (I + S_k Q)^{-1} (m_k - c)
        up to a constant; strength = 0 gives the base mixture. Isotropic components with
        P = I stay isotropic; otherwise the result has full covariances.
        """
        c = jnp.asarray(center, self.means.dtype)
        if c.shape not in ((), (self.dim,)):
            raise ValueError(
                f"GaussianMixture.tilt: center must have shape ({self.dim},), got {c.shape}"
            )
        c = jnp.broadcast_to(c, (self.dim,))
        for name, value in (("scale", scale), ("strength", strength)):
            v = _concrete(value)
            if v is not None and (v.ndim != 0 or not np.isfinite(v)):
                raise ValueError(f"GaussianMixture.tilt: {name} must be a number, got {value!r}")
        if _concrete(scale) is not None and not float(scale) > 0:
            raise ValueError(f"GaussianMixture.tilt: scale must be positive, got {scale!r}")
        if _concrete(strength) is not None and not float(strength) >= 0:
            raise ValueError(f"GaussianMixture.tilt: strength must be >= 0, got {strength!r}")
        rho = jnp.asarray(strength, self.means.dtype) / jnp.asarray(scale, self.means.dtype) ** 2
        delta = self.means - c  # (K, D)
        log_w = jnp.log(self.weights)
        if precision is None and self.isotropic:
            var = self.stds**2
            new_var = var / (1.0 + rho * var)  # (1/s_k^2 + rho)^{-1}
            new_means = c + delta / (1.0 + rho * var)[:, None]
            log_w = (
                log_w
                - 0.5 * self.dim * jnp.log1p(rho * var)
                - 0.5 * rho * jnp.sum(delta**2, -1) / (1.0 + rho * var)
            )
            return GaussianMixture(new_means, jnp.sqrt(new_var), jnp.exp(log_w - log_w.max()))
        eye = jnp.eye(self.dim, dtype=self.means.dtype)
        if precision is None:
            p_mat = eye
        else:
            p_mat = jnp.asarray(precision, self.means.dtype)
            if p_mat.shape != (self.dim, self.dim):
                raise ValueError(
                    f"GaussianMixture.tilt: precision must have shape ({self.dim}, {self.dim}), "
                    f"got {p_mat.shape}"
                )
            p_np = _concrete(p_mat)
            if p_np is not None and (
                not np.allclose(p_np, p_np.T) or np.linalg.eigvalsh(p_np).min() < -1e-8
            ):
                raise ValueError(
                    "GaussianMixture.tilt: precision must be symmetric positive semi-definite"
                )
        q = rho * p_mat
        s_k = self.component_covariances()
        m_mat = eye + s_k @ q  # I + S_k Q, (K, D, D)
        new_cov = jnp.linalg.solve(m_mat, s_k)
        new_cov = 0.5 * (new_cov + jnp.swapaxes(new_cov, 1, 2))
        shift = jnp.linalg.solve(m_mat, delta[..., None])[..., 0]  # (I + S_k Q)^{-1} (m_k - c)
        log_w = (
            log_w
            - 0.5 * jnp.linalg.slogdet(m_mat)[1]
            - 0.5 * jnp.einsum("ki,ij,kj->k", delta, q, shift)
        )
        return GaussianMixture(c + shift, weights=jnp.exp(log_w - log_w.max()), covariances=new_cov)

    # ----------------------------------------------------------------- exact transport
    def flow_map(
        self,
        path: AffinePath,
        x: Float[ArrayLike, "B D"],
        s,
        t,
        *,
        label=None,
        source=None,
        rtol: float | None = None,
        atol: float | None = None,
        max_steps: int = 4096,
    ) -> Float[Array, "B D"]:
        """Transports x from time s to time t along the exact flow (s, t scalars or (B,)).

        Solves dx/dr = u_r(x) with diffrax's Dopri5 at tight tolerances (1e-10 in float64,
        1e-6 in float32; enable `jax_enable_x64` for oracle accuracy). Per-example (s, t)
        are handled in one solve by the change of variable r = s + tau (t - s), tau in [0, 1].
        """
        x = self._check_x(x)
        self._check_source(source)
        s = jnp.broadcast_to(jnp.asarray(s, x.dtype), x.shape[:1])
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        tight = 1e-10 if x.dtype == jnp.float64 else 1e-6
        rtol = tight if rtol is None else rtol
        atol = tight if atol is None else atol
        return _solve_flow(self, path, x, s, t, label, source, rtol, atol, max_steps)


class ConditionalGaussianMixture(eqx.Module):
    """A mixture whose parameters are functions of a context: p(x1 | c) = mixture(c).

    `make(c)` maps one context (no batch axis) to a `GaussianMixture` (K and D fixed); every
    method takes a batch of contexts (B, *C), one per example, and vmaps the oracle.

    Attributes:
      make: c -> GaussianMixture (jax-traceable).
      context_shape: the shape of one context.
    """

    make: Callable[[Array], GaussianMixture] = eqx.field(static=True)
    context_shape: tuple[int, ...] = eqx.field(static=True)

    def at(self, context: Float[ArrayLike, "*C"]) -> GaussianMixture:
        """The mixture for one context."""
        return self.make(jnp.asarray(context))

    def _check_context(self, context, n, owner):
        context = jnp.asarray(context)
        if context.shape != (n,) + tuple(self.context_shape):
            raise ValueError(
                f"ConditionalGaussianMixture.{owner}: context must have shape "
                f"({n}, *{tuple(self.context_shape)}), got {context.shape}"
            )
        return context

    def sample(self, key: PRNGKeyArray, context: Float[ArrayLike, "n *C"]) -> Float[Array, "n D"]:
        """One sample per context row."""
        context = jnp.asarray(context)
        context = self._check_context(context, context.shape[0], "sample")
        keys = jax.random.split(key, context.shape[0])
        return jax.vmap(lambda k, c: self.make(c).sample(k, 1)[0])(keys, context)

    def log_prob(self, x, context):
        """log p(x | c) per example."""
        x = jnp.asarray(x)
        context = self._check_context(context, x.shape[0], "log_prob")
        return jax.vmap(lambda xi, ci: self.make(ci).log_prob(xi[None])[0])(x, context)

    def log_prob_t(self, path, x, t, context, *, source=None):
        return self._per_example_path("log_prob_t", path, x, t, context, source)

    def velocity(self, path, x, t, context, *, source=None):
        return self._per_example_path("velocity", path, x, t, context, source)

    def score(self, path, x, t, context, *, source=None):
        return self._per_example_path("score", path, x, t, context, source)

    def _per_example_path(self, method, path, x, t, context, source):
        x = jnp.asarray(x)
        context = self._check_context(context, x.shape[0], method)
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])

        def one(xi, ti, ci):
            return getattr(self.make(ci), method)(path, xi[None], ti, source=source)[0]

        return jax.vmap(one)(x, t, context)

    def velocity_field(self, path, context, *, source=None):
        """v(x, t) for a fixed batch of contexts (B, *C)."""
        return lambda x, t: self.velocity(path, x, t, context, source=source)


# Module-level and filter-jitted so that repeated eager calls reuse one compilation.
@eqx.filter_jit
def _solve_flow(gmm, path, x, s, t, label, source, rtol, atol, max_steps):
    def rhs(tau, y, _):
        r = s + tau * (t - s)
        return (t - s)[:, None] * gmm.velocity(path, y, r, label, source=source)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(rhs),
        diffrax.Dopri5(),
        t0=0.0,
        t1=1.0,
        dt0=None,
        y0=x,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        saveat=diffrax.SaveAt(t1=True),
    )
    return sol.ys[0]
