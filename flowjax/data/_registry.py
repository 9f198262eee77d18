"""Dataset registry: what each dataset is (shape, classes, kind) and how to open it."""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from jaxtyping import Float

from flowjax.data import _manifold, _sources, _timeseries, _tokens, _toys
from flowjax.data._gmm import GMM_PRESETS, MixtureParams
from flowjax.data._toys import TOYS


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is and how to open it.

    Attributes:
      name: registry key.
      shape: shape of one example, e.g. (2,) or (32, 32, 3) (NHWC without the batch).
      num_classes: number of real classes for class-conditional training, or None.
      kind: "points" (R^D vectors) or "images" (NHWC float32 in [-1, 1]).
      num_modes: for synthetic data, the number of modes; batches of such data carry the mode
        (mixture component, square, arm, ring) index as "label", for diagnostics and
        optional conditional toy runs; None otherwise.
      description: one line on the source and preprocessing.
      make_source: `(split, seed, data_dir, **kwargs) -> source` (see `_sources`).
      log_density: the exact data density where one is known, `(x, **source_kwargs) -> (N,)`
        log p(x) in float64 (-inf off the support); used by the exact metrics.
      bounds: (low, high) of a box holding the support (same on every axis), or None.
    """

    name: str
    shape: tuple[int, ...]
    num_classes: int | None
    kind: Literal["points", "images", "series"]
    make_source: Callable[..., Any] = dataclasses.field(repr=False)
    num_modes: int | None = None
    description: str = ""
    log_density: Callable[..., Any] | None = dataclasses.field(default=None, repr=False)
    bounds: tuple[float, float] | None = None
    context_shape: tuple[int, ...] | None = None  # one example's batch["context"], if any

    @property
    def synthetic(self) -> bool:
        return self.kind == "points"


def _no_kwargs(name: str, kwargs: dict, valid: tuple[str, ...] = ()):
    bad = sorted(set(kwargs) - set(valid))
    if bad:
        raise ValueError(
            f"dataset {name!r} takes no source option(s) {bad}; valid: {sorted(valid) or 'none'}"
        )


def _open_toy(name, split, seed, data_dir, **kwargs):
    del data_dir
    _no_kwargs(name, kwargs)
    toy = TOYS[name]
    return _sources.SyntheticSource(name, toy.fn, toy.num_uniforms, (2,), seed=seed, split=split)


def _open_gmm(name, split, seed, data_dir, **kwargs):
    del data_dir
    _no_kwargs(name, kwargs, ("means", "stds", "weights"))
    if kwargs and len(kwargs) != 3:
        raise ValueError(
            f"dataset {name!r}: give all of means, stds, weights or none; got {sorted(kwargs)}"
        )
    params = MixtureParams(**kwargs) if kwargs else GMM_PRESETS[name]
    return _sources.mixture_source(name, params, seed=seed, split=split)


def _open_digits(name, split, seed, data_dir, **kwargs):
    del seed, data_dir
    _no_kwargs(name, kwargs)
    return _sources.ArraySource(name, *_sources.digits_arrays(split))


def _open_tfds(
    name, split, seed, data_dir, *, tfds_name, shape, label_key="label", aliases=None, **kwargs
):
    del seed
    _no_kwargs(name, kwargs)
    split = (aliases or {}).get(split, split)
    return _sources.TfdsSource(
        name, tfds_name, shape, split=split, data_dir=data_dir, label_key=label_key
    )


def _open_celeb_a(name, split, seed, data_dir, **kwargs):
    del seed
    _no_kwargs(name, kwargs, ("crop", "size"))
    crop, size = int(kwargs.get("crop", 140)), int(kwargs.get("size", 64))
    return _sources.TfdsSource(
        name,
        "celeb_a",
        (size, size, 3),
        split=split,
        data_dir=data_dir,
        preprocess=functools.partial(_sources.center_crop_resize, crop=crop, size=size),
        label_key=None,
    )


def _checkerboard_log_density(x, **kwargs):
    # fj.data's checkerboard: 4 x 4 cells of side 2 on [-4, 4]^2, cell (i, j) filled when
    # i + j is even counting from -4 (the geometry of _toys.checkerboard).
    from flowjax.metrics import checkerboard_density

    _no_kwargs("checkerboard", kwargs)
    with np.errstate(divide="ignore"):
        return np.log(checkerboard_density(x, num_cells=4, low=-4.0, high=4.0))


def _gmm_log_density(x, **kwargs):
    from flowjax.analytic import GaussianMixture

    params = MixtureParams(**kwargs) if kwargs else GMM_PRESETS["gmm"]
    gmm = GaussianMixture(**params.as_dict())
    return np.asarray(gmm.log_prob(np.asarray(x, np.float32)), np.float64)


_TOY_DENSITIES = {"checkerboard": (_checkerboard_log_density, (-4.0, 4.0))}


def _toy_spec(name: str, description: str) -> DatasetSpec:
    log_density, bounds = _TOY_DENSITIES.get(name, (None, None))
    return DatasetSpec(
        name,
        (2,),
        None,
        "points",
        functools.partial(_open_toy, name),
        num_modes=TOYS[name].num_modes,
        description=description,
        log_density=log_density,
        bounds=bounds,
    )


def _tfds_spec(name, tfds_name, shape, num_classes, description, **kw) -> DatasetSpec:
    factory = functools.partial(_open_tfds, name, tfds_name=tfds_name, shape=shape, **kw)
    return DatasetSpec(name, shape, num_classes, "images", factory, description=description)


_IMAGENET_ALIASES = {"test": "validation"}  # imagenet_resized has no test split

DATASETS: dict[str, DatasetSpec] = {
    "checkerboard": _toy_spec(
        "checkerboard", "4x4 checkerboard on [-4, 4]^2, 8 filled 2x2 squares (FFJORD)"
    ),
    "8gaussians": _toy_spec("8gaussians", "8 Gaussians, radius 2.83, std 0.354 (FFJORD)"),
    "moons": _toy_spec("moons", "two moons, noise 0.1, scaled x2 and shifted (FFJORD)"),
    "spirals": _toy_spec("spirals", "two spirals (FFJORD '2spirals')"),
    "rings": _toy_spec("rings", "four concentric rings, radii 0.75 .. 3.6 (FFJORD)"),
    "pinwheel": _toy_spec("pinwheel", "five-arm pinwheel (FFJORD)"),
    "gmm": DatasetSpec(
        "gmm",
        (2,),
        None,
        "points",
        functools.partial(_open_gmm, "gmm"),
        num_modes=GMM_PRESETS["gmm"].num_components,
        description="5-component isotropic 2D mixture with unequal weights and stds "
        "(fj.data.gmm_params('gmm')); means=, stds=, weights= override it",
        log_density=_gmm_log_density,
    ),
    "digits": DatasetSpec(
        "digits",
        (8, 8, 1),
        10,
        "images",
        functools.partial(_open_digits, "digits"),
        description="scikit-learn handwritten digits, 8x8x1, fixed split 1500 train / 297 test",
    ),
    "mnist": _tfds_spec("mnist", "mnist", (28, 28, 1), 10, "TFDS mnist"),
    "fashion_mnist": _tfds_spec(
        "fashion_mnist", "fashion_mnist", (28, 28, 1), 10, "TFDS fashion_mnist"
    ),
    "cifar10": _tfds_spec("cifar10", "cifar10", (32, 32, 3), 10, "TFDS cifar10"),
    "celeb_a": DatasetSpec(
        "celeb_a",
        (64, 64, 3),
        None,
        "images",
        functools.partial(_open_celeb_a, "celeb_a"),
        description="TFDS celeb_a, central 140x140 crop resized to 64x64 (crop=, size= options)",
    ),
    "imagenet32": _tfds_spec(
        "imagenet32",
        "imagenet_resized/32x32",
        (32, 32, 3),
        1000,
        "TFDS imagenet_resized/32x32 (Chrabaszcz et al. 2017), 1000 classes; test = validation",
        aliases=_IMAGENET_ALIASES,
    ),
    "imagenet64": _tfds_spec(
        "imagenet64",
        "imagenet_resized/64x64",
        (64, 64, 3),
        1000,
        "TFDS imagenet_resized/64x64 (Chrabaszcz et al. 2017), 1000 classes; test = validation",
        aliases=_IMAGENET_ALIASES,
    ),
    "downsampled_imagenet32": _tfds_spec(
        "downsampled_imagenet32",
        "downsampled_imagenet/32x32",
        (32, 32, 3),
        None,
        "TFDS downsampled_imagenet/32x32 (van den Oord et al. 2016), unlabelled; test = validation",
        label_key=None,
        aliases=_IMAGENET_ALIASES,
    ),
}

# Forecasting series: shape (horizon, channels); batches add "context" and "scale" (_timeseries).
DATASETS |= {
    name: DatasetSpec(
        name,
        (info.horizon, info.channels),
        None,
        "series",
        functools.partial(_timeseries.open_series, name),
        description=info.description,
    )
    for name, info in _timeseries.SERIES.items()
}

DATASETS |= _tokens.specs(DatasetSpec)  # int token datasets (kind "tokens")
DATASETS |= _manifold.specs(DatasetSpec)  # points on S^2 / T^2 (kind "manifold")
DATASETS |= _toys.specs(DatasetSpec)  # data -> data pairs ("x0"), context-indexed mixture


def spec(name: str) -> DatasetSpec:
    """The registered spec of `name`; ValueError listing the valid names otherwise."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {sorted(DATASETS)}")
    return DATASETS[name]


def open_source(
    name: str, *, split: str, seed: int = 0, data_dir: str | None = None, **source_kwargs
):
    """Opens the record source of `name` (synthetic stream or finite random-access source)."""
    return spec(name).make_source(split, seed, data_dir, **source_kwargs)


def reference_samples(
    name: str,
    n: int,
    seed: int = 0,
    split: str = "test",
    *,
    data_dir: str | None = None,
    return_labels: bool = False,
    **source_kwargs,
) -> Float[np.ndarray, " n *dims"] | tuple[np.ndarray, np.ndarray]:
    """n float32 samples of the dataset for metrics, deterministic given `seed`.

    Synthetic data: records 0..n-1 of the `split` stream ("test" is independent of the
    "train" stream that `make_iterator` reads). Finite data: n distinct records of `split`
    chosen by a seeded permutation; ValueError if the split has fewer than n.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    source = open_source(name, split=split, seed=seed, data_dir=data_dir, **source_kwargs)
    if isinstance(source, _sources.SyntheticSource):
        x, labels = source.read_range(0, int(n))
    else:
        if n > len(source):
            raise ValueError(
                f"dataset {name!r} split {split!r} has {len(source)} records; asked for {n}"
            )
        idx = np.random.default_rng(seed).permutation(len(source))[:n]
        x, labels = source.read(idx)[:2]  # series sources add extras (context, scale)
    return (x, labels) if return_labels else x
