"""Analytic oracle: an isotropic Gaussian mixture pushed along any affine path.

If x1 ~ sum_k w_k N(m_k, s_k^2 I) and x0 ~ N(0, I) independently, then
x_t = alpha x1 + sigma x0 ~ sum_k w_k N(alpha m_k, v_k I) with v_k = alpha^2 s_k^2 + sigma^2.
Everything below follows from this and from Gaussian conditioning within each component:

    E[x1 | x_t, k] = m_k + alpha s_k^2 / v_k (x_t - alpha m_k)
    E[x0 | x_t, k] = sigma / v_k (x_t - alpha m_k)

so the marginal velocity (Lipman et al. 2023, eq. (8); Albergo & Vanden-Eijnden 2023) is
u_t(x) = sum_k r_k(x) (alpha' E[x1 | x, k] + sigma' E[x0 | x, k]) with responsibilities r_k.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from flowjax.paths import AffinePath

__all__ = ["GaussianMixture"]


class GaussianMixture(eqx.Module):
    """Isotropic Gaussian mixture with closed-form marginals along any affine path.

    Attributes:
      means: (K, D) component means.
      stds: (K,) component standard deviations (> 0).
      weights: (K,) mixture weights (normalised on construction).
    """

    means: Float[Array, "K D"]
    stds: Float[Array, " K"]
    weights: Float[Array, " K"]

    def __init__(self, means: ArrayLike, stds: ArrayLike, weights: ArrayLike | None = None):
        means = jnp.asarray(means, dtype=jnp.result_type(float))
        if means.ndim != 2:
            raise ValueError(f"GaussianMixture: means must have shape (K, D), got {means.shape}")
        k = means.shape[0]
        if weights is None:
            weights = jnp.full((k,), 1.0 / k, means.dtype)
        stds_in, weights_in = stds, weights
        stds = (
            jnp.broadcast_to(jnp.asarray(stds, means.dtype), (k,))
            if jnp.ndim(stds) == 0
            else jnp.asarray(stds, means.dtype)
        )
        weights = jnp.asarray(weights, means.dtype)
        if stds.shape != (k,) or weights.shape != (k,):
            raise ValueError(
                f"GaussianMixture: stds and weights must have shape ({k},) to match means "
                f"{means.shape}, got stds {stds.shape} and weights {weights.shape}"
            )
        # Value checks only where the inputs are concrete (not when built inside jit).
        if not isinstance(stds_in, jax.core.Tracer) and np.any(np.asarray(stds_in) <= 0):
            raise ValueError(f"GaussianMixture: stds must be positive, got {stds_in}")
        if not isinstance(weights_in, jax.core.Tracer):
            w = np.asarray(weights_in)
            if np.any(w < 0) or not w.sum() > 0:
                raise ValueError(
                    f"GaussianMixture: weights must be >= 0 and not all 0, got {weights_in}"
                )
        self.means, self.stds, self.weights = means, stds, weights / jnp.sum(weights)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    # ----------------------------------------------------------------- data at t = 1
    def sample_with_labels(
        self, key: PRNGKeyArray, n: int
    ) -> tuple[Float[Array, "n D"], Int[Array, " n"]]:
        """n samples and the index of the component each came from."""
        kc, kn = jax.random.split(key)
        comp = jax.random.choice(kc, self.num_components, (n,), p=self.weights)
        noise = jax.random.normal(kn, (n, self.dim), self.means.dtype)
        return self.means[comp] + self.stds[comp, None] * noise, comp

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n D"]:
        """n samples from the mixture (the data distribution at t = 1)."""
        return self.sample_with_labels(key, n)[0]

    def log_prob(self, x: Float[ArrayLike, "B D"]) -> Float[Array, " B"]:
        """Exact log density of the data distribution."""
        x = self._check_x(x)
        return self._log_prob(x, jnp.ones(x.shape[:1], x.dtype), jnp.zeros(x.shape[:1], x.dtype))

    # ----------------------------------------------------------------- marginals at time t
    def _check_x(self, x):
        x = jnp.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"GaussianMixture: x must have shape (B, {self.dim}), got {x.shape}")
        return x

    def _coeffs(self, path, x, t):
        t = jnp.asarray(t, x.dtype)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != x.shape[0]):
            raise ValueError(
                f"t must be a scalar or have shape ({x.shape[0]},), got shape {t.shape}"
            )
        t = jnp.broadcast_to(t, x.shape[:1])
        return path.alpha(t), path.sigma(t), t

    def _components(self, x, a, s, label=None):
        """Per-example, per-component: centred points, variances, log responsibilities."""
        diff = x[:, None, :] - a[:, None, None] * self.means[None]  # (B, K, D)
        var = a[:, None] ** 2 * self.stds[None] ** 2 + s[:, None] ** 2  # (B, K)
        log_w = jnp.log(self.weights)[None]
        if label is not None:
            label = jnp.broadcast_to(jnp.asarray(label), x.shape[:1])
            own = jnp.arange(self.num_components)[None] == label[:, None]
            log_w = jnp.where(own, 0.0, -jnp.inf)
        log_comp = (
            log_w - 0.5 * self.dim * jnp.log(2 * jnp.pi * var) - 0.5 * jnp.sum(diff**2, -1) / var
        )
        log_p = jax.nn.logsumexp(log_comp, axis=1)
        return diff, var, log_comp - log_p[:, None], log_p

    def _log_prob(self, x, a, s, label=None):
        return self._components(x, a, s, label)[3]

    def log_prob_t(self, path: AffinePath, x: Float[ArrayLike, "B D"], t, label=None):
        """Exact log p_t(x) of the marginal at time t (scalar or (B,)).

        With `label` (scalar or (B,)), the density of component `label` alone.
        """
        x = self._check_x(x)
        a, s, _ = self._coeffs(path, x, t)
        return self._log_prob(x, a, s, label)

    def score(self, path: AffinePath, x: Float[ArrayLike, "B D"], t, label=None):
        """Exact score grad_x log p_t(x) = sum_k r_k (-(x - alpha m_k) / v_k)."""
        x = self._check_x(x)
        a, s, _ = self._coeffs(path, x, t)
        diff, var, log_r, _ = self._components(x, a, s, label)
        return -jnp.sum(jnp.exp(log_r)[..., None] * diff / var[..., None], axis=1)

    def posterior_mean(self, path: AffinePath, x: Float[ArrayLike, "B D"], t, label=None):
        """E[x1 | x_t = x]: the ideal data ("x1") prediction."""
        x = self._check_x(x)
        a, s, _ = self._coeffs(path, x, t)
        diff, var, log_r, _ = self._components(x, a, s, label)
        cond = self.means[None] + (a[:, None] * self.stds[None] ** 2 / var)[..., None] * diff
        return jnp.sum(jnp.exp(log_r)[..., None] * cond, axis=1)

    def velocity(self, path: AffinePath, x: Float[ArrayLike, "B D"], t, label=None):
        """Exact marginal velocity u_t(x) = E[alpha' x1 + sigma' x0 | x_t = x]."""
        x = self._check_x(x)
        a, s, t = self._coeffs(path, x, t)
        da, ds = path.d_alpha(t), path.d_sigma(t)
        diff, var, log_r, _ = self._components(x, a, s, label)
        e_x1 = self.means[None] + (a[:, None] * self.stds[None] ** 2 / var)[..., None] * diff
        e_x0 = (s[:, None] / var)[..., None] * diff
        cond = da[:, None, None] * e_x1 + ds[:, None, None] * e_x0
        return jnp.sum(jnp.exp(log_r)[..., None] * cond, axis=1)

    def velocity_field(self, path: AffinePath, label=None):
        """The exact velocity as a callable v(x, t) for the samplers."""
        return lambda x, t: self.velocity(path, x, t, label)

    # ----------------------------------------------------------------- exact transport
    def flow_map(
        self,
        path: AffinePath,
        x: Float[ArrayLike, "B D"],
        s,
        t,
        *,
        label=None,
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
        s = jnp.broadcast_to(jnp.asarray(s, x.dtype), x.shape[:1])
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        tight = 1e-10 if x.dtype == jnp.float64 else 1e-6
        rtol = tight if rtol is None else rtol
        atol = tight if atol is None else atol
        return _solve_flow(self, path, x, s, t, label, rtol, atol, max_steps)


# Module-level and filter-jitted so that repeated eager calls reuse one compilation.
@eqx.filter_jit
def _solve_flow(gmm, path, x, s, t, label, rtol, atol, max_steps):
    def rhs(tau, y, _):
        r = s + tau * (t - s)
        return (t - s)[:, None] * gmm.velocity(path, y, r, label)

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
