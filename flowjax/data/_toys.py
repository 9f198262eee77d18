"""2D toy distributions (FFJORD conventions, data roughly in [-4, 4]^2).

Every toy is a pure map from k i.i.d. uniforms per record to a point and its mode index, so
the pipeline can generate any record range with counter-based random numbers and the public
`sample_toy` can use an ordinary numpy Generator. Definitions and scalings follow FFJORD
(Grathwohl et al. 2019, github.com/rtqichen/ffjord lib/toy_data.py); finite grids in the
original (sklearn's linspace angles, equal counts per ring) are replaced by their i.i.d.
limits (uniform angles, uniform ring choice).
"""

import dataclasses
from collections.abc import Callable

import numpy as np
from jaxtyping import Float, Int
from scipy.special import ndtri

from flowjax.data._gmm import GMM_PRESETS, mixture_from_uniform
from flowjax.data._random import open_uniforms

Uniforms = Float[np.ndarray, "n k"]
ToyOut = tuple[Float[np.ndarray, "n 2"], Int[np.ndarray, " n"]]


def _choice(u: np.ndarray, k: int) -> np.ndarray:
    return np.minimum((u * k).astype(np.int64), k - 1)


def checkerboard(u: Uniforms) -> ToyOut:
    """4x4 checkerboard on [-4, 4]^2: uniform on the 8 squares with floor(x/2)+floor(y/2) even.

    FFJORD's construction: x1 ~ U[-2, 2), x2 ~ U[0, 1) - 2 B + (floor(x1) mod 2), B ~ Bern(1/2),
    then both scaled by 2. Label: square index 2 * column + (row // 2), in 0..7.
    """
    x1 = 4.0 * u[:, 0] - 2.0
    x2 = u[:, 1] - 2.0 * (u[:, 2] < 0.5) + np.floor(x1) % 2
    x = 2.0 * np.stack([x1, x2], axis=1)
    col = np.floor(x1).astype(np.int64) + 2
    row = np.floor(x2).astype(np.int64) + 2
    return x, 2 * col + row // 2


def eight_gaussians(u: Uniforms) -> ToyOut:
    """8 Gaussians on a circle of radius 4/1.414, std 0.5/1.414 (= the "8gaussians" preset)."""
    return mixture_from_uniform(GMM_PRESETS["8gaussians"], u)


def moons(u: Uniforms) -> ToyOut:
    """sklearn's two moons with noise 0.1, then x * 2 + (-1, -0.2) as in FFJORD."""
    lower = u[:, 0] < 0.5
    theta = np.pi * u[:, 1]
    c, s = np.cos(theta), np.sin(theta)
    x = np.where(lower[:, None], np.stack([1 - c, 0.5 - s], 1), np.stack([c, s], 1))
    x = x + 0.1 * ndtri(u[:, 2:4])
    return 2.0 * x + np.array([-1.0, -0.2]), lower.astype(np.int64)


def spirals(u: Uniforms) -> ToyOut:
    """FFJORD's "2spirals": n = sqrt(U) * 3 pi, (-cos n * n, sin n * n) + U[0, .5)^2, mirrored."""
    arm = u[:, 0] < 0.5
    n = np.sqrt(u[:, 1]) * (540 * 2 * np.pi / 360)
    d = np.stack([-np.cos(n) * n, np.sin(n) * n], 1) + 0.5 * u[:, 2:4]
    d = np.where(arm[:, None], -d, d) / 3.0
    return d + 0.1 * ndtri(u[:, 4:6]), arm.astype(np.int64)


_RING_RADII = 3.0 * np.array([1.2, 0.9, 0.55, 0.25])


def rings(u: Uniforms) -> ToyOut:
    """Four concentric circles of radii 3 * (1.2, 0.9, 0.55, 0.25) plus N(0, 0.08^2) noise."""
    ring = _choice(u[:, 0], 4)
    angle = 2 * np.pi * u[:, 1]
    x = _RING_RADII[ring, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    return x + 0.08 * ndtri(u[:, 2:4]), ring


def pinwheel(u: Uniforms) -> ToyOut:
    """FFJORD's pinwheel: 5 arms, radial std 0.3, tangential std 0.1, rate 0.25, scale 2."""
    arm = _choice(u[:, 0], 5)
    f = ndtri(u[:, 1:3]) * np.array([0.3, 0.1]) + np.array([1.0, 0.0])
    angle = arm * (2 * np.pi / 5) + 0.25 * np.exp(f[:, 0])
    c, s = np.cos(angle), np.sin(angle)
    x = np.stack([f[:, 0] * c + f[:, 1] * s, -f[:, 0] * s + f[:, 1] * c], 1)
    return 2.0 * x, arm


@dataclasses.dataclass(frozen=True)
class Toy:
    """A toy: `fn` maps uniforms (n, num_uniforms) to (points (n, 2), mode index (n,))."""

    fn: Callable[[Uniforms], ToyOut]
    num_uniforms: int
    num_modes: int


TOYS: dict[str, Toy] = {
    "checkerboard": Toy(checkerboard, 3, 8),
    "8gaussians": Toy(eight_gaussians, 3, 8),
    "moons": Toy(moons, 4, 2),
    "spirals": Toy(spirals, 6, 2),
    "rings": Toy(rings, 4, 4),
    "pinwheel": Toy(pinwheel, 3, 5),
}


def eight_gaussians_to_moons(u: Uniforms):
    """Data -> data pairs (torchcfm's 8gaussians -> moons): x1 from moons (u[:, :4]) and an
    independent x0 from 8gaussians (u[:, 4:7]), returned as the batch key "x0"."""
    x1, label = moons(u[:, :4])
    x0, _ = eight_gaussians(u[:, 4:7])
    return x1, label, {"x0": x0.astype(np.float32)}


# Datasets whose records carry more than (x1, label): data -> data pairs ("x0") and the
# context-indexed mixture ("context"). Registered by `specs` (one line in _registry.py).
PAIRS: dict[str, Toy] = {"8gaussians_to_moons": Toy(eight_gaussians_to_moons, 7, 2)}


def specs(spec_cls) -> dict:
    """DatasetSpecs of the pair and context datasets, built with the registry's class."""
    import functools

    from flowjax.data._gmm import CONTEXT_MIXTURES
    from flowjax.data._sources import SyntheticSource

    def open_stream(name, fn, k, split, seed, data_dir, **kwargs):
        del data_dir
        if kwargs:
            raise ValueError(f"dataset {name!r} takes no source options; got {sorted(kwargs)}")
        return SyntheticSource(name, fn, k, (2,), seed=seed, split=split)

    out = {}
    for name, toy in PAIRS.items():
        out[name] = spec_cls(
            name,
            (2,),
            None,
            "points",
            functools.partial(open_stream, name, toy.fn, toy.num_uniforms),
            num_modes=toy.num_modes,
            description="moons as x1 with independent 8gaussians as 'x0' (data -> data pairs)",
        )
    for name, mix in CONTEXT_MIXTURES.items():
        out[name] = spec_cls(
            name,
            (2,),
            None,
            "points",
            functools.partial(open_stream, name, mix.from_uniform, 4),
            num_modes=mix.num_components,
            context_shape=mix.context_shape,
            description="3-component 2D mixture rotated by a context c ~ U[-1, 1] ('context', "
            "shape (1,)); exact p(x | c) from fj.data.CONTEXT_MIXTURES[name].oracle()",
        )
    return out


def sample_toy(
    name: str, n: int, rng: np.random.Generator | int
) -> tuple[Float[np.ndarray, "n 2"], Int[np.ndarray, " n"]]:
    """n points of the toy `name` (float32) and their mode indices (int32).

    Args:
      name: one of TOYS.
      n: number of points.
      rng: a numpy Generator or an int seed (deterministic given the seed).
    """
    if name not in TOYS:
        raise ValueError(f"unknown toy {name!r}; valid: {sorted(TOYS)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int; got {n!r}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    toy = TOYS[name]
    x, label = toy.fn(open_uniforms(rng, (int(n), toy.num_uniforms)))
    return x.astype(np.float32), label.astype(np.int32)
