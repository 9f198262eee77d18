"""Fréchet distance between Gaussians fitted to features (FID and friends).

FD(N(mu1, S1), N(mu2, S2)) = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))
(Dowson & Landau 1982; used as FID by Heusel et al. 2017, "GANs trained by a two time-scale
update rule"). The matrix square root follows pytorch-fid's `calculate_frechet_distance`:
scipy.linalg.sqrtm, a diagonal offset if the result is not finite, and the imaginary part
dropped when it is numerical noise.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import scipy.linalg
from jaxtyping import ArrayLike, Float

__all__ = ["frechet_distance", "fid_from_features", "fid_from_stats", "FeatureStats"]


def frechet_distance(
    mu1: Float[ArrayLike, " D"],
    sigma1: Float[ArrayLike, "D D"],
    mu2: Float[ArrayLike, " D"],
    sigma2: Float[ArrayLike, "D D"],
    *,
    eps: float = 1e-6,
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    Args:
      mu1, mu2: (D,) means.
      sigma1, sigma2: (D, D) covariances.
      eps: diagonal offset added to both covariances if sqrtm(S1 S2) is not finite.

    Returns:
      The squared-distance quantity reported as "FID" (not its square root).
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"frechet_distance: need mu (D,) and sigma (D, D) for both; got "
            f"{mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        # Singular product (e.g. fewer samples than dimensions): regularise as pytorch-fid does.
        offset = np.eye(d) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"frechet_distance: sqrtm has a large imaginary component "
                f"{np.max(np.abs(covmean.imag))}; the covariances are not PSD"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Streaming mean / covariance of feature vectors, in float64 (immutable).

    Batches are merged with Chan et al.'s pairwise update (numerically stable, no sum of
    squares), so `FeatureStats.empty(D).update(f1).update(f2)` equals the statistics of
    `concat(f1, f2)`. `cov` is the unbiased sample covariance (np.cov's default, as in
    pytorch-fid).

    Attributes:
      count: number of feature vectors seen.
      mean: (D,) running mean.
      m2: (D, D) sum of outer products of deviations from the mean.
    """

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> FeatureStats:
        """Statistics of no features, of dimension dim."""
        if dim < 1:
            raise ValueError(f"FeatureStats.empty: dim must be >= 1, got {dim}")
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    @classmethod
    def from_features(cls, features: Float[ArrayLike, "N D"]) -> FeatureStats:
        """Statistics of one array of features."""
        f = _check_features("features", features)
        return cls.empty(f.shape[1]).update(f)

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    @property
    def cov(self) -> np.ndarray:
        """(D, D) unbiased covariance; needs count >= 2."""
        if self.count < 2:
            raise ValueError(f"FeatureStats.cov needs at least 2 samples, has {self.count}")
        return self.m2 / (self.count - 1)

    def update(self, features: Float[ArrayLike, "N D"]) -> FeatureStats:
        """Returns the statistics with a batch of features (N, D) added."""
        f = _check_features("features", features, dim=self.dim)
        nb = f.shape[0]
        mean_b = f.mean(axis=0)
        dev = f - mean_b
        return self.merge(FeatureStats(nb, mean_b, dev.T @ dev))

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Statistics of the union of both sets (Chan, Golub & LeVeque 1979)."""
        if other.dim != self.dim:
            raise ValueError(f"FeatureStats.merge: dimensions differ, {self.dim} vs {other.dim}")
        n = self.count + other.count
        if n == 0:
            return self
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.count * other.count / n)
        return FeatureStats(n, mean, m2)

    def save(self, path: str | os.PathLike) -> None:
        """Writes count, mean, m2 (and pytorch-fid's keys mu, sigma) to an .npz file."""
        np.savez(
            path,
            count=self.count,
            mean=self.mean,
            m2=self.m2,
            mu=self.mean,
            sigma=self.cov if self.count >= 2 else np.full_like(self.m2, np.nan),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStats:
        """Reads statistics written by `save`."""
        with np.load(path) as data:
            missing = {"count", "mean", "m2"} - set(data.files)
            if missing:
                raise ValueError(
                    f"FeatureStats.load: {path} lacks {sorted(missing)}; a "
                    f"pytorch-fid file (mu, sigma) can go to frechet_distance "
                    f"directly"
                )
            return cls(
                int(data["count"]), data["mean"].astype(np.float64), data["m2"].astype(np.float64)
            )


def _check_features(name: str, f, dim: int | None = None) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, D) with N >= 1, got {f.shape}")
    if dim is not None and f.shape[1] != dim:
        raise ValueError(f"{name} must have D = {dim} features, got {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{name} contains NaN or inf")
    return f


def fid_from_stats(a: FeatureStats, b: FeatureStats, *, eps: float = 1e-6) -> float:
    """Fréchet distance between the Gaussians fitted by two FeatureStats."""
    return frechet_distance(a.mean, a.cov, b.mean, b.cov, eps=eps)


def fid_from_features(
    f1: Float[ArrayLike, "N D"], f2: Float[ArrayLike, "M D"], *, eps: float = 1e-6
) -> float:
    """Fréchet distance between Gaussians fitted to two feature arrays (N, D) and (M, D)."""
    f1 = _check_features("f1", f1)
    f2 = _check_features("f2", f2, dim=f1.shape[1])
    if f1.shape[0] < 2 or f2.shape[0] < 2:
        raise ValueError("fid_from_features needs at least 2 feature vectors in each set")
    return fid_from_stats(FeatureStats.from_features(f1), FeatureStats.from_features(f2), eps=eps)
