"""Isotropic Gaussian mixtures as a data source (numpy only).

The parameters are plain numpy arrays so that `fj.analytic.GaussianMixture` can be built
from exactly the same numbers as the data the model is trained on:

>>> p = fj.data.gmm_params("gmm")
>>> gmm = fj.analytic.GaussianMixture(**p.as_dict())
"""

import dataclasses

import numpy as np
from jaxtyping import Float, Int
from scipy.special import ndtri

from flowjax.data._random import open_uniforms


@dataclasses.dataclass(frozen=True, eq=False)
class MixtureParams:
    """Parameters of sum_k w_k N(mu_k, s_k^2 I): means (K, D), stds (K,), weights (K,)."""

    means: Float[np.ndarray, "K D"]
    stds: Float[np.ndarray, " K"]
    weights: Float[np.ndarray, " K"]

    def __post_init__(self):
        means = np.asarray(self.means, np.float64)
        stds = np.asarray(self.stds, np.float64)
        weights = np.asarray(self.weights, np.float64)
        if means.ndim != 2 or means.shape[0] == 0 or means.shape[1] == 0:
            raise ValueError(f"means must have shape (K, D) with K, D >= 1; got {means.shape}")
        k = means.shape[0]
        if stds.shape != (k,):
            raise ValueError(f"stds must have shape ({k},) to match means; got {stds.shape}")
        if weights.shape != (k,):
            raise ValueError(f"weights must have shape ({k},) to match means; got {weights.shape}")
        for field, value in (("means", means), ("stds", stds), ("weights", weights)):
            if not np.isfinite(value).all():
                raise ValueError(f"{field} must be finite; got {value}")
        if (stds <= 0).any():
            raise ValueError(f"stds must be positive; got {stds}")
        if (weights < 0).any() or abs(weights.sum() - 1.0) > 1e-6:
            raise ValueError(f"weights must be non-negative and sum to 1; got {weights}")
        for field, value in (("means", means), ("stds", stds), ("weights", weights)):
            value.setflags(write=False)
            object.__setattr__(self, field, value)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def as_dict(self) -> dict[str, np.ndarray]:
        """{"means", "stds", "weights"}: keyword arguments for `fj.analytic.GaussianMixture`."""
        return {"means": self.means, "stds": self.stds, "weights": self.weights}

    def mean(self) -> Float[np.ndarray, " D"]:
        """Mixture mean sum_k w_k mu_k."""
        return self.weights @ self.means

    def cov(self) -> Float[np.ndarray, "D D"]:
        """Mixture covariance sum_k w_k (s_k^2 I + mu_k mu_k^T) - m m^T."""
        m = self.mean()
        second = np.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        second += np.eye(self.dim) * (self.weights @ self.stds**2)
        return second - np.outer(m, m)


def mixture_from_uniform(
    params: MixtureParams, u: Float[np.ndarray, "n k"]
) -> tuple[Float[np.ndarray, "n D"], Int[np.ndarray, " n"]]:
    """Maps uniforms u (n, 1 + D) to (samples, component index): inverse-CDF sampling."""
    cdf = np.cumsum(params.weights)
    comp = np.minimum(np.searchsorted(cdf, u[:, 0] * cdf[-1], side="right"), len(cdf) - 1)
    z = ndtri(u[:, 1 : 1 + params.dim])
    x = params.means[comp] + params.stds[comp, None] * z
    return x, comp


def sample_mixture(
    means: Float[np.ndarray, "K D"],
    stds: Float[np.ndarray, " K"],
    weights: Float[np.ndarray, " K"],
    n: int,
    rng: np.random.Generator | int,
) -> tuple[Float[np.ndarray, "n D"], Int[np.ndarray, " n"]]:
    """n samples of the mixture and their component indices: pick k ~ w, x = mu_k + s_k z.

    `rng` is a numpy Generator or an int seed; the result is float64 / int64.
    """
    params = MixtureParams(means, stds, weights)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int; got {n!r}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return mixture_from_uniform(params, open_uniforms(rng, (n, 1 + params.dim)))


def _eight_gaussians() -> MixtureParams:
    # FFJORD's "8gaussians" (Grathwohl et al. 2019, lib/toy_data.py): centres at radius 4 and
    # std 0.5, all divided by 1.414 (their literal), so radius ~2.83 and std ~0.354.
    angles = np.arange(8) * (np.pi / 4)
    means = 4.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1) / 1.414
    return MixtureParams(means, np.full(8, 0.5 / 1.414), np.full(8, 1 / 8))


# The default mixture of the `gmm` config: five unequal components in 2D, chosen so that a
# model must get both the weights (0.30 .. 0.10) and the widths (0.25 .. 0.80) right; two of
# them (0 and 3) are close enough to overlap. All mass lies well within [-5, 5]^2.
GMM_PRESETS: dict[str, MixtureParams] = {
    "gmm": MixtureParams(
        means=np.array([[-2.5, -1.5], [2.0, -2.0], [0.0, 2.5], [-0.5, 0.0], [3.0, 1.5]]),
        stds=np.array([0.6, 0.4, 0.8, 0.25, 0.3]),
        weights=np.array([0.30, 0.25, 0.20, 0.15, 0.10]),
    ),
    "8gaussians": _eight_gaussians(),
}


@dataclasses.dataclass(frozen=True)
class ContextMixture:
    """A context-indexed 2D mixture: given c in [-1, 1], p(x | c) = sum_k w_k N(mu_k(c), s_k^2 I)
    with mu_k(c) = radius (cos, sin)(theta_k + rotation c): the mixture turns with the context.

    Unequal weights and stds break the rotational symmetry, so each context has a distinct
    mixture. Records draw c ~ U[-1, 1] (context shape (1,)), then x | c.
    """

    radius: float = 2.5
    angles: tuple[float, ...] = (0.0, 2 * np.pi / 3, 4 * np.pi / 3)
    rotation: float = np.pi / 3
    stds: tuple[float, ...] = (0.3, 0.5, 0.4)
    weights: tuple[float, ...] = (0.5, 0.3, 0.2)

    context_shape = (1,)
    dim = 2

    @property
    def num_components(self) -> int:
        return len(self.angles)

    def means(self, c, xp=np):
        """(K, 2) component means for one context c of shape (1,) (xp: numpy or jax.numpy)."""
        theta = xp.asarray(self.angles) + self.rotation * c[0]
        return self.radius * xp.stack([xp.cos(theta), xp.sin(theta)], axis=1)

    def params(self, c) -> MixtureParams:
        """The mixture of one context (numpy)."""
        c = np.asarray(c, np.float64).reshape(1)
        return MixtureParams(self.means(c), np.asarray(self.stds), np.asarray(self.weights))

    def from_uniform(self, u):
        """uniforms (n, 4) -> (x (n, 2), component (n,), {"context": (n, 1) float32})."""
        c = 2.0 * u[:, :1] - 1.0
        cdf = np.cumsum(self.weights)
        comp = np.minimum(np.searchsorted(cdf, u[:, 1] * cdf[-1], side="right"), len(cdf) - 1)
        theta = np.asarray(self.angles)[comp] + self.rotation * c[:, 0]
        means = self.radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)
        x = means + np.asarray(self.stds)[comp, None] * ndtri(u[:, 2:4])
        return x, comp, {"context": c.astype(np.float32)}

    def oracle(self):
        """The exact `fj.analytic.ConditionalGaussianMixture` of this dataset."""
        import jax.numpy as jnp

        from flowjax.analytic import ConditionalGaussianMixture, GaussianMixture

        stds, weights = np.asarray(self.stds), np.asarray(self.weights)

        def make(c):
            return GaussianMixture(self.means(c, jnp), jnp.asarray(stds), jnp.asarray(weights))

        return ConditionalGaussianMixture(make, self.context_shape)


CONTEXT_MIXTURES: dict[str, ContextMixture] = {"context_gmm": ContextMixture()}


def gmm_params(name: str = "gmm") -> MixtureParams:
    """The named mixture preset ("gmm" or "8gaussians")."""
    if name not in GMM_PRESETS:
        raise ValueError(f"unknown mixture {name!r}; valid: {sorted(GMM_PRESETS)}")
    return GMM_PRESETS[name]
