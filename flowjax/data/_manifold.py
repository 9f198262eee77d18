"""Data on manifolds with exact densities, and loaders of real manifold data from a path.

Synthetic (exact log-densities w.r.t. the Riemannian volume, for exact NLL / KL):
- `VonMisesFisherMixture` on S^{p-1}: p(x) = sum_k w_k C_p(kappa_k) exp(kappa_k mu_k . x),
  C_p(kappa) = kappa^{p/2-1} / ((2 pi)^{p/2} I_{p/2-1}(kappa)) (Mardia & Jupp 2000, eq. 9.3.4);
  sampled by Wood's (1994) rejection algorithm, and on S^2 (p = 3) also by the exact inverse
  CDF of w = mu . x, w = 1 + log(u + (1 - u) e^{-2 kappa}) / kappa, which the data stream uses.
- `TorusCheckerboard` on T^2: uniform on the 8 "black" cells of a 4 x 4 board of side pi/2,
  density 1 / (2 pi^2) there and 0 elsewhere.
- `WrappedNormalMixture` on T^d: a mixture of wrapped normals (density by the truncated sum
  over the lattice of images, as fj.manifolds.WrappedNormal).

From files in `data_dir` (tests write small ones):
- Earth-science events (Mathieu & Nickel 2020; Chen & Lipman 2024): volcano, earthquake,
  flood, fire. CSV with latitude, longitude in degrees in the first two columns, an optional
  header line; the file names of both papers' repositories are recognised. Mapped to unit
  vectors x = (cos lat cos lon, cos lat sin lon, sin lat) on S^2.
- Dihedral angles (phi, psi) of protein backbones (the Top500 data of Lovell et al. 2003 as
  used by Chen & Lipman 2024): a CSV / TSV with columns named phi and psi (optionally an amino
  column to filter on), degrees or radians, wrapped to [0, 2 pi) on T^2.
"""

from __future__ import annotations

import csv
import functools
import math
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from jax.scipy.special import logsumexp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.data import _sources

__all__ = [
    "EARTH_FILES",
    "MANIFOLD_DATASETS",
    "TorusCheckerboard",
    "VonMisesFisherMixture",
    "WrappedNormalMixture",
    "latlon_to_unit",
    "load_dihedral",
    "load_earth",
    "manifold_distribution",
    "manifold_of",
    "specs",
]

_TWO_PI = 2.0 * math.pi


# flowjax.manifolds (diffrax, sources) is imported on first use, not with flowjax.data.
def _sphere(dim=None):
    from flowjax.manifolds import Sphere

    return Sphere(dim=dim)


def _torus(dim=None):
    from flowjax.manifolds import FlatTorus

    return FlatTorus(dim=dim)


def wrap(x):
    """Angles to [0, 2 pi) (as fj.manifolds.torus.wrap)."""
    r = jnp.mod(x, _TWO_PI)
    return jnp.where(r >= _TWO_PI, r - _TWO_PI, r)


def _log_vmf_norm(p: int, kappa: np.ndarray) -> np.ndarray:
    """log C_p(kappa), float64; kappa = 0 gives the uniform density -log Vol(S^{p-1})."""
    kappa = np.asarray(kappa, np.float64)
    v = 0.5 * p - 1.0
    safe = np.where(kappa > 0, kappa, 1.0)
    # log I_v(k) = log ive(v, k) + k (exponentially scaled Bessel function, no overflow).
    out = v * np.log(safe) - 0.5 * p * np.log(_TWO_PI) - (np.log(scipy.special.ive(v, safe)) + safe)
    log_vol = math.log(2.0) + 0.5 * p * math.log(math.pi) - math.lgamma(0.5 * p)
    return np.where(kappa > 0, out, -log_vol)


def _normalise(x, axis=-1):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


class VonMisesFisherMixture(eqx.Module):
    """sum_k w_k vMF(mu_k, kappa_k) on S^{p-1} (points in R^p).

    Attributes:
      means: (K, p) unit mean directions (normalised here).
      kappas: (K,) positive concentrations.
      weights: (K,) mixture weights (normalised here).
    """

    means: Float[Array, "K p"]
    kappas: Float[Array, " K"]
    weights: Float[Array, " K"]
    log_norms: Float[Array, " K"]

    def __init__(self, means, kappas, weights=None):
        means = _normalise(np.asarray(means, np.float64))
        kappas = np.asarray(kappas, np.float64)
        if means.ndim != 2 or means.shape[1] < 2:
            raise ValueError(f"VonMisesFisherMixture: means must be (K, p), got {means.shape}")
        if kappas.shape != means.shape[:1] or np.any(kappas <= 0):
            raise ValueError(
                f"VonMisesFisherMixture: kappas must be ({means.shape[0]},) positive numbers, "
                f"got {kappas}"
            )
        weights = np.ones(len(kappas)) if weights is None else np.asarray(weights, np.float64)
        if weights.shape != kappas.shape or np.any(weights <= 0):
            raise ValueError(f"VonMisesFisherMixture: weights must be ({len(kappas)},) positive")
        self.means = jnp.asarray(means, jnp.result_type(float))
        self.kappas = jnp.asarray(kappas, self.means.dtype)
        self.weights = jnp.asarray(weights / weights.sum(), self.means.dtype)
        self.log_norms = jnp.asarray(_log_vmf_norm(means.shape[1], kappas), self.means.dtype)

    @property
    def manifold(self):
        return _sphere(self.means.shape[1] - 1)

    @eqx.filter_jit
    def log_prob(self, x: Float[Array, "B p"]) -> Float[Array, " B"]:
        """Exact log density w.r.t. the surface measure of S^{p-1}."""
        x = jnp.asarray(x)
        logits = jnp.log(self.weights) + self.log_norms + self.kappas * (x @ self.means.T)
        return logsumexp(logits, axis=-1)

    @eqx.filter_jit
    def sample(self, key: PRNGKeyArray, n: int, dtype=None) -> Float[Array, "n p"]:
        """n draws by Wood's (1994) rejection sampler (any p), inside jit."""
        dtype = self.means.dtype if dtype is None else dtype
        k_comp, k_w, k_v = jax.random.split(key, 3)
        comp = jax.random.choice(k_comp, self.weights.shape[0], (n,), p=self.weights)
        mu, kappa = self.means[comp].astype(dtype), self.kappas[comp].astype(dtype)
        w = _wood_w(k_w, kappa, self.means.shape[1])
        # A direction uniform on the unit sphere of the tangent space at mu.
        z = jax.random.normal(k_v, mu.shape, dtype)
        v = z - jnp.sum(z * mu, -1, keepdims=True) * mu
        v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
        return w[:, None] * mu + jnp.sqrt(jnp.clip(1.0 - w**2, 0.0))[:, None] * v

    def from_uniforms(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact inverse-CDF draws on S^2 from uniforms (n, 3): (x (n, 3), component (n,))."""
        if self.means.shape[1] != 3:
            raise ValueError("VonMisesFisherMixture.from_uniforms: only on S^2 (p = 3)")
        weights = np.asarray(self.weights, np.float64)
        comp = np.minimum(
            np.searchsorted(np.cumsum(weights), u[:, 0] * weights.sum()), len(weights) - 1
        )
        mu = np.asarray(self.means, np.float64)[comp]
        kappa = np.asarray(self.kappas, np.float64)[comp]
        w = 1.0 + np.log(u[:, 1] + (1.0 - u[:, 1]) * np.exp(-2.0 * kappa)) / kappa
        w = np.clip(w, -1.0, 1.0)
        e1, e2 = _frame(mu)
        phi = _TWO_PI * u[:, 2]
        r = np.sqrt(np.clip(1.0 - w**2, 0.0, None))
        x = w[:, None] * mu + r[:, None] * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)
        return _normalise(x), comp


def _frame(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to each row of mu (n, 3) and to each other."""
    helper = np.where(np.abs(mu[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    e1 = _normalise(helper - np.sum(helper * mu, -1, keepdims=True) * mu)
    return e1, np.cross(mu, e1)


def _wood_w(key, kappa, p: int):
    """w = mu . x of vMF draws on S^{p-1}: Wood (1994), "Simulation of the von Mises Fisher
    distribution", the rejection step of sec. 2 (envelope from a Beta((p-1)/2, (p-1)/2))."""
    m1 = p - 1.0
    b = m1 / (2.0 * kappa + jnp.sqrt(4.0 * kappa**2 + m1**2))  # = (-2k + sqrt(4k^2 + m1^2)) / m1
    x0 = (1.0 - b) / (1.0 + b)
    c = kappa * x0 + m1 * jnp.log(1.0 - x0**2)

    def body(state):
        key, w, done = state
        key, k_z, k_u = jax.random.split(key, 3)
        z = jax.random.beta(k_z, 0.5 * m1, 0.5 * m1, kappa.shape, kappa.dtype)
        u = jax.random.uniform(k_u, kappa.shape, kappa.dtype)
        cand = (1.0 - (1.0 + b) * z) / (1.0 - (1.0 - b) * z)
        ok = kappa * cand + m1 * jnp.log(1.0 - x0 * cand) - c >= jnp.log(u)
        return key, jnp.where(done, w, cand), done | ok

    init = (key, jnp.zeros_like(kappa), jnp.zeros(kappa.shape, bool))
    _, w, _ = jax.lax.while_loop(lambda s: ~jnp.all(s[2]), body, init)
    return w


class TorusCheckerboard(eqx.Module):
    """Uniform on the black cells of a 4 x 4 checkerboard on T^2 = [0, 2 pi)^2 (cells of side
    pi / 2; cell (i, j) is black when i + j is even): density 1 / (2 pi^2) on them."""

    @property
    def manifold(self):
        return _torus(2)

    @eqx.filter_jit
    def log_prob(self, x):
        x = wrap(jnp.asarray(x))
        cell = jnp.floor(x / (0.5 * math.pi)).astype(jnp.int32)
        black = (cell[:, 0] + cell[:, 1]) % 2 == 0
        return jnp.where(black, -math.log(2.0 * math.pi**2), -jnp.inf)

    def from_uniforms(self, u):
        k = np.minimum((u[:, 0] * 8).astype(np.int64), 7)
        i = k // 2
        j = 2 * (k % 2) + (i % 2)  # the two black columns of row i
        x = np.stack([(i + u[:, 1]) * 0.5 * math.pi, (j + u[:, 2]) * 0.5 * math.pi], -1)
        return x % _TWO_PI, k

    @eqx.filter_jit
    def sample(self, key, n, dtype=None):
        u = jax.random.uniform(key, (n, 3), jnp.result_type(float) if dtype is None else dtype)
        k = jnp.minimum((u[:, 0] * 8).astype(jnp.int32), 7)
        i, j = k // 2, 2 * (k % 2) + (k // 2) % 2
        return wrap(jnp.stack([(i + u[:, 1]), (j + u[:, 2])], -1) * 0.5 * math.pi)


class WrappedNormalMixture(eqx.Module):
    """sum_k w_k WrappedNormal(mean_k, scale_k) on T^d.

    Attributes:
      means: (K, d) angles; scales: (K,) standard deviations; weights: (K,).
      num_wraps: lattice images per angle kept in the density.
    """

    means: Float[Array, "K d"]
    scales: Float[Array, " K"]
    weights: Float[Array, " K"]
    num_wraps: int = eqx.field(static=True, default=4)

    def __init__(self, means, scales, weights=None, num_wraps: int = 4):
        means = np.atleast_2d(np.asarray(means, np.float64))
        scales = np.broadcast_to(np.asarray(scales, np.float64), means.shape[:1])
        weights = np.ones(len(means)) if weights is None else np.asarray(weights, np.float64)
        if np.any(scales <= 0) or weights.shape != scales.shape or np.any(weights <= 0):
            raise ValueError("WrappedNormalMixture: scales and weights must be (K,) positive")
        self.means = jnp.asarray(means % _TWO_PI, jnp.result_type(float))
        self.scales = jnp.asarray(scales, self.means.dtype)
        self.weights = jnp.asarray(weights / weights.sum(), self.means.dtype)
        self.num_wraps = num_wraps

    @property
    def manifold(self):
        return _torus(self.means.shape[1])

    @eqx.filter_jit
    def log_prob(self, x):
        x = jnp.asarray(x)
        diff = x[:, None, :] - self.means[None]
        delta = jnp.arctan2(jnp.sin(diff), jnp.cos(diff))  # (B, K, d) in (-pi, pi]
        k = jnp.arange(-self.num_wraps, self.num_wraps + 1, dtype=x.dtype)
        z = (delta[..., None] + _TWO_PI * k) / self.scales[None, :, None, None]
        per_angle = logsumexp(-0.5 * z**2, -1) - jnp.log(self.scales)[None, :, None]
        per_comp = jnp.sum(per_angle, -1) - 0.5 * x.shape[1] * math.log(_TWO_PI)
        return logsumexp(jnp.log(self.weights) + per_comp, axis=-1)

    def from_uniforms(self, u):
        weights = np.asarray(self.weights, np.float64)
        comp = np.minimum(np.searchsorted(np.cumsum(weights), u[:, 0]), len(weights) - 1)
        z = scipy.special.ndtri(u[:, 1:])
        x = np.asarray(self.means, np.float64)[comp] + np.asarray(self.scales)[comp, None] * z
        return x % _TWO_PI, comp

    @eqx.filter_jit
    def sample(self, key, n, dtype=None):
        dtype = self.means.dtype if dtype is None else dtype
        k_c, k_z = jax.random.split(key)
        comp = jax.random.choice(k_c, self.weights.shape[0], (n,), p=self.weights)
        z = jax.random.normal(k_z, (n, self.means.shape[1]), dtype)
        return wrap(self.means[comp] + self.scales[comp, None] * z)


# ------------------------------------------------------------------------------ presets

_TETRA = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])

PRESETS = {
    # Four vMF components at the vertices of a tetrahedron, unequal weights and concentrations.
    "vmf_mixture": functools.partial(
        VonMisesFisherMixture, _TETRA, [20.0, 10.0, 15.0, 30.0], [0.4, 0.2, 0.25, 0.15]
    ),
    "torus_checkerboard": TorusCheckerboard,
    "wrapped_gaussians": functools.partial(
        WrappedNormalMixture,
        [[0.5, 0.5], [math.pi, math.pi], [5.5, 2.0], [2.0, 5.0]],
        [0.3, 0.5, 0.4, 0.35],
        [0.3, 0.3, 0.2, 0.2],
    ),
}


@functools.cache
def preset(name: str):
    """The distribution object of a synthetic manifold dataset."""
    return PRESETS[name]()


def manifold_distribution(name: str):
    """The exact distribution (sample, log_prob) behind a synthetic manifold dataset
    ("vmf_mixture", "torus_checkerboard", "wrapped_gaussians")."""
    if name not in PRESETS:
        raise ValueError(f"{name!r} has no exact distribution; valid: {sorted(PRESETS)}")
    return preset(name)


# ------------------------------------------------------------------------------ files

EARTH_FILES = {
    "volcano": ("volcano.csv", "volc.csv"),
    "earthquake": ("earthquake.csv", "quakes.csv"),
    "flood": ("flood.csv",),
    "fire": ("fire.csv",),
}


def latlon_to_unit(latlon_deg: np.ndarray) -> np.ndarray:
    """(N, 2) latitude, longitude in degrees -> (N, 3) unit vectors."""
    lat, lon = np.deg2rad(latlon_deg[:, 0]), np.deg2rad(latlon_deg[:, 1])
    x = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)
    return _normalise(x)


def _read_rows(path: str, delimiter: str | None = None) -> list[list[str]]:
    with open(path, newline="") as f:
        text = f.read()
    if delimiter is None:
        delimiter = "\t" if "\t" in text.splitlines()[0] else ","
    return [row for row in csv.reader(text.splitlines(), delimiter=delimiter) if row]


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def load_earth(name: str, data_dir: str) -> np.ndarray:
    """Unit vectors (N, 3) of an Earth-science event dataset read from `data_dir`."""
    if name not in EARTH_FILES:
        raise ValueError(f"unknown earth dataset {name!r}; valid: {sorted(EARTH_FILES)}")
    if data_dir is None:
        raise ValueError(f"dataset {name!r} is read from files: pass data_dir=")
    paths = [os.path.join(data_dir, f) for f in EARTH_FILES[name]]
    found = [p for p in paths if os.path.exists(p)]
    if not found:
        raise FileNotFoundError(f"dataset {name!r}: none of {paths} exists")
    rows = _read_rows(found[0])
    if rows and not all(_is_number(s) for s in rows[0][:2]):
        rows = rows[1:]  # header line (Chen & Lipman's files have one)
    latlon = np.asarray([[float(r[0]), float(r[1])] for r in rows], np.float64)
    if latlon.size == 0:
        raise ValueError(f"dataset {name!r}: {found[0]} has no records")
    if np.any(np.abs(latlon[:, 0]) > 90) or np.any(np.abs(latlon[:, 1]) > 360):
        raise ValueError(f"dataset {name!r}: latitudes / longitudes must be in degrees")
    return latlon_to_unit(latlon)


def load_dihedral(path: str, *, units: str = "degrees", amino: str | None = None) -> np.ndarray:
    """(phi, psi) angles (N, 2) in [0, 2 pi) from a CSV / TSV with phi and psi columns."""
    if units not in ("degrees", "radians"):
        raise ValueError(f"load_dihedral: units must be 'degrees' or 'radians', got {units!r}")
    rows = _read_rows(path)
    header = [h.strip().lower() for h in rows[0]]
    if "phi" not in header or "psi" not in header:
        raise ValueError(f"load_dihedral: {path} needs a header with phi and psi, got {header}")
    i_phi, i_psi = header.index("phi"), header.index("psi")
    body = rows[1:]
    if amino is not None:
        if "amino" not in header:
            raise ValueError(f"load_dihedral: amino={amino!r} needs an amino column in {path}")
        i_am = header.index("amino")
        body = [r for r in body if r[i_am] == amino]
    angles = np.asarray([[float(r[i_phi]), float(r[i_psi])] for r in body], np.float64)
    if angles.size == 0:
        raise ValueError(f"load_dihedral: no records in {path} (amino={amino!r})")
    if units == "degrees":
        angles = np.deg2rad(angles)
    return angles % _TWO_PI


# ------------------------------------------------------------------------------ registry

# name -> (manifold kind, intrinsic dim, number of modes of the synthetic law or None)
MANIFOLD_DATASETS = {
    "vmf_mixture": ("sphere", 2, 4),
    "torus_checkerboard": ("torus", 2, 8),
    "wrapped_gaussians": ("torus", 2, 4),
    "volcano": ("sphere", 2, None),
    "earthquake": ("sphere", 2, None),
    "flood": ("sphere", 2, None),
    "fire": ("sphere", 2, None),
    "dihedral": ("torus", 2, None),
}


def manifold_of(name: str):
    """The manifold (fj.manifolds) on which dataset `name` lives."""
    if name not in MANIFOLD_DATASETS:
        raise ValueError(f"{name!r} is not a manifold dataset; valid: {sorted(MANIFOLD_DATASETS)}")
    kind, dim, _ = MANIFOLD_DATASETS[name]
    return _sphere(dim) if kind == "sphere" else _torus(dim)


def _ambient(name):
    kind, dim, _ = MANIFOLD_DATASETS[name]
    return dim + 1 if kind == "sphere" else dim


def _open_synthetic(name, split, seed, data_dir, **kwargs):
    del data_dir
    if kwargs:
        raise ValueError(f"dataset {name!r} takes no source options, got {sorted(kwargs)}")
    fn = preset(name).from_uniforms
    return _sources.SyntheticSource(name, fn, 3, (_ambient(name),), seed=seed, split=split)


def _split_rows(x, split, seed=0, test_fraction=0.1):
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(test_fraction * len(x))))
    idx = {"test": perm[:n_test], "train": perm[n_test:]}
    if split not in idx:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return x[np.sort(idx[split])]


def _open_earth(name, split, seed, data_dir, **kwargs):
    del seed
    if kwargs:
        raise ValueError(f"dataset {name!r} takes no source options, got {sorted(kwargs)}")
    x = _split_rows(load_earth(name, data_dir), split)
    return _sources.ArraySource(name, x, np.zeros(len(x), np.int32))


def _open_dihedral(
    name, split, seed, data_dir, *, filename="dihedral.tsv", units="degrees", amino=None
):
    del seed
    if data_dir is None:
        raise ValueError(f"dataset {name!r} is read from files: pass data_dir=")
    x = load_dihedral(os.path.join(data_dir, filename), units=units, amino=amino)
    x = _split_rows(x, split)
    return _sources.ArraySource(name, x, np.zeros(len(x), np.int32))


def _log_density(name):
    def log_density(x, **kwargs):
        del kwargs
        with jax.enable_x64(True):
            dist = PRESETS[name]()
            return np.asarray(dist.log_prob(jnp.asarray(x, jnp.float64)), np.float64)

    return log_density


def specs(spec_cls) -> dict:
    """The manifold datasets as `DatasetSpec`s (kind "manifold"; fj.data.manifold_of(name)
    names the manifold). The class is passed in to keep the registry the only importer."""
    synthetic = {
        "vmf_mixture": "4-component von Mises-Fisher mixture on S^2 (tetrahedron means, kappa "
        "10..30), exact density",
        "torus_checkerboard": "4x4 checkerboard on T^2 (8 black cells of side pi/2), exact "
        "density 1/(2 pi^2)",
        "wrapped_gaussians": "4 wrapped normals on T^2, exact density (truncated lattice sum)",
    }
    out = {
        name: spec_cls(
            name,
            (_ambient(name),),
            None,
            "manifold",
            functools.partial(_open_synthetic, name),
            num_modes=MANIFOLD_DATASETS[name][2],
            description=text,
            log_density=_log_density(name),
        )
        for name, text in synthetic.items()
    }
    for name in EARTH_FILES:
        out[name] = spec_cls(
            name,
            (3,),
            None,
            "manifold",
            functools.partial(_open_earth, name),
            description=f"Earth-science {name} events (Mathieu & Nickel 2020) from data_dir: "
            "lat/lon degrees -> unit vectors on S^2, fixed 90/10 split",
        )
    out["dihedral"] = spec_cls(
        "dihedral",
        (2,),
        None,
        "manifold",
        functools.partial(_open_dihedral, "dihedral"),
        description="protein backbone (phi, psi) from data_dir/dihedral.tsv (filename=, "
        "units=, amino= options) on T^2, fixed 90/10 split",
    )
    return out
