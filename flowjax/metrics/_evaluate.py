"""One evaluator interface and one metric vocabulary for the trainer and every study.

An `Evaluator` scores samples drawn from a model of one dataset by named metrics (lower is
better for all of them) against held-out data and, where the dataset spec knows it
(`DatasetSpec.log_density`), against the exact density:

    ev = fj.metrics.make_evaluator("checkerboard", reference=ref, options=EvalOptions(hist_bins=48))
    ev(samples)                        # {"hist_kl": ..., "energy": ..., "w2": ...}
    ev(samples, field=v, metrics=("kl", "nll"))   # likelihood metrics need the velocity field

`METRICS` maps a vocabulary name to `fn(evaluator, samples, field) -> float`; a new metric is
one function and one line there. `DEFAULT_METRICS` gives the metrics of a dataset by name,
falling back to its kind of data ("points", "images", ...); the first is its primary metric.
Names of other data kinds (`tv`, `bpt`, `crps`, ... for tokens and series) register here too.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_METRICS",
    "DESCRIPTIONS",
    "METRICS",
    "EvalOptions",
    "Evaluator",
    "default_metrics",
    "make_evaluator",
]


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """Sizes and tolerances of the metrics (every study's config maps onto these).

    Attributes:
      hist_bins: histogram grid per axis for `hist_kl` (a multiple of the checkerboard's 4
        cells keeps the quadrature of the exact density exact).
      energy_samples, w2_samples: samples (of both sets) for energy / MMD and for W2.
      likelihood_samples: held-out points scored by the ODE likelihood (`kl`, `nll`).
      likelihood_tol, likelihood_t_eps: dopri5 tolerance and time clamp of that solve.
      inception_path: FID InceptionV3 weights (for `fid`).
    """

    hist_bins: int = 16
    energy_samples: int = 1500
    w2_samples: int = 1000
    likelihood_samples: int = 250
    likelihood_tol: float = 1e-3
    likelihood_t_eps: float = 1e-3
    inception_path: str = ""

    def __post_init__(self):
        for name in ("hist_bins", "energy_samples", "w2_samples", "likelihood_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"EvalOptions.{name}: a positive int, got {value!r}")


def _flat(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x.reshape(len(x), -1)


def _energy(ev, x, field):
    from flowjax.metrics import energy_distance

    n = ev.options.energy_samples
    return energy_distance(_flat(x[:n]), _flat(ev.reference[:n]))


def _mmd(ev, x, field):
    from flowjax.metrics import mmd2

    n = ev.options.energy_samples
    return mmd2(_flat(x[:n]), _flat(ev.reference[:n]))


def _w2(ev, x, field):
    from flowjax.metrics import wasserstein2

    n = ev.options.w2_samples
    return wasserstein2(_flat(x[:n]), _flat(ev.reference[:n]))


def _hist_kl(ev, x, field):
    from flowjax.metrics import histogram_kl

    return histogram_kl(ev.density, x, bins=ev.options.hist_bins, range=ev.bounds)


def _sample_nll(ev, x, field):
    # -E_model[log p]: the exact NLL of the samples (the data entropy for perfect samples).
    return float(-np.mean(ev.log_density(x)))


def _kl(ev, x, field):
    # KL(data || model) = E_data[log p - log q], log q by the ODE likelihood.
    if field is None:
        return math.nan
    points, log_p = ev.likelihood_points
    return float(np.mean(log_p - ev.log_q(field)))


def _nll(ev, x, field):
    return math.nan if field is None else float(-np.mean(ev.log_q(field)))


def _digits_fd(ev, x, field):
    from flowjax.metrics import digits_features, fid_from_features

    return fid_from_features(digits_features(x, classifier=ev.classifier), ev.reference_features)


def _fid(ev, x, field):
    from flowjax.metrics import fid_from_features, inception_features

    return fid_from_features(inception_features(ev.inception, x), ev.reference_features)


# name -> fn(evaluator, samples, field) -> float; lower is better for every one.
METRICS: dict[str, Callable[[Any, np.ndarray, Any], float]] = {
    "hist_kl": _hist_kl,
    "kl": _kl,
    "nll": _nll,
    "sample_nll": _sample_nll,
    "w2": _w2,
    "energy": _energy,
    "mmd": _mmd,
    "digits_fd": _digits_fd,
    "fid": _fid,
}

DESCRIPTIONS = {
    "hist_kl": "KL(data || model) on a histogram grid vs the exact density (nats)",
    "kl": "KL(data || model) = E_data[log p - log q] in nats (exact log p, ODE log q)",
    "nll": "NLL of held-out data under the model (nats, ODE likelihood)",
    "sample_nll": "NLL of model samples under the exact density (nats; the data entropy for "
    "perfect samples)",
    "w2": "Wasserstein-2 distance to held-out data (exact assignment; finite-sample floor > 0)",
    "energy": "energy distance to held-out data (unbiased; ~0 for a perfect model)",
    "mmd": "MMD^2 (Gaussian kernel, median bandwidth) to held-out data",
    "digits_fd": "Fréchet distance in digits-classifier features to the test digits",
    "fid": "FID (InceptionV3 pool3) to held-out images",
}

# Metrics of a dataset, by name first, then by kind of data; the first is the primary one.
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "checkerboard": ("hist_kl", "energy", "w2"),
    "gmm": ("kl", "sample_nll", "energy", "nll", "w2", "mmd"),
    "digits": ("digits_fd",),
    "points": ("w2", "energy", "mmd"),
    "images": ("fid",),
}


def default_metrics(spec) -> tuple[str, ...]:
    """The metrics of a dataset spec: by its name, else by its kind of data."""
    out = DEFAULT_METRICS.get(spec.name, DEFAULT_METRICS.get(spec.kind))
    if out is None:
        raise ValueError(f"no metrics registered for dataset {spec.name!r} (kind {spec.kind!r})")
    return out


class Evaluator:
    """Scores samples of one dataset by named metrics (see the module docstring).

    Attributes:
      spec: the dataset's `DatasetSpec`.
      metrics: the metric names computed by default, primary first.
      reference: held-out samples (N, *D).
      options: `EvalOptions`.
    """

    def __init__(
        self, spec, metrics: Sequence[str], *, reference, options=None, source_kwargs=None
    ):
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; valid: {sorted(METRICS)}")
        self.spec = spec
        self.metrics = tuple(metrics)
        self.reference = np.asarray(reference)
        self.options = options or EvalOptions()
        self.source_kwargs = dict(source_kwargs or {})
        exact = {"hist_kl", "kl", "sample_nll"} & set(self.metrics)
        if exact and spec.log_density is None:
            raise ValueError(f"metrics {sorted(exact)} need the exact density of {spec.name!r}")
        if "hist_kl" in self.metrics and spec.bounds is None:
            raise ValueError(f"hist_kl needs the bounds of dataset {spec.name!r}")

    @property
    def primary(self) -> str:
        return self.metrics[0]

    @property
    def bounds(self) -> tuple[float, float]:
        return self.spec.bounds

    def log_density(self, x) -> np.ndarray:
        return np.asarray(self.spec.log_density(np.asarray(x), **self.source_kwargs), np.float64)

    def density(self, x) -> np.ndarray:
        return np.exp(self.log_density(x))

    @functools.cached_property
    def likelihood_points(self) -> tuple[np.ndarray, np.ndarray]:
        points = np.asarray(self.reference[: self.options.likelihood_samples], np.float32)
        return points, self.log_density(points)

    def log_q(self, field) -> np.ndarray:
        """log q of the likelihood points under the flow of `field` (NaN when the solve fails)."""
        from flowjax.likelihood import log_prob

        if isinstance(field, _Solved):
            return field.logq
        points, _ = self.likelihood_points
        o = self.options
        try:
            logq, _ = log_prob(
                field,
                points,
                divergence="exact",
                rtol=o.likelihood_tol,
                atol=o.likelihood_tol,
                t_eps=o.likelihood_t_eps,
            )
            return np.asarray(logq, np.float64)
        except RuntimeError:  # the solve failed (max_steps, NaN): no likelihood
            return np.full(points.shape[0], np.nan)

    @functools.cached_property
    def classifier(self):
        from flowjax.metrics import digits_classifier

        return digits_classifier()

    @functools.cached_property
    def inception(self):
        from flowjax.metrics import load_inception

        if not self.options.inception_path:
            raise ValueError(
                f"inception_path: dataset {self.spec.name!r} is scored by FID, which needs the "
                "FID InceptionV3 weights (pytorch-fid's .pth, or an .npz from "
                "fj.metrics.convert_inception_weights)"
            )
        return load_inception(self.options.inception_path)

    @functools.cached_property
    def reference_features(self):
        if "fid" in self.metrics:
            from flowjax.metrics import inception_features

            return inception_features(self.inception, self.reference)
        from flowjax.metrics import digits_features

        return digits_features(self.reference, classifier=self.classifier)

    def __call__(self, samples, *, field=None, metrics: Sequence[str] | None = None):
        """{metric: value} of `samples` (all NaN when any sample is not finite).

        Args:
          samples: (N, *D) model samples.
          field: the model's velocity field v(x, t), for the likelihood metrics.
          metrics: names to compute (default: `self.metrics`).
        """
        names = self.metrics if metrics is None else tuple(metrics)
        samples = np.asarray(samples)
        if not np.all(np.isfinite(samples)):
            return {m: math.nan for m in names}
        if field is not None and {"kl", "nll"} & set(names):
            logq = self.log_q(field)  # one solve shared by kl and nll
            field = _Solved(logq)
        return {m: float(METRICS[m](self, samples, field)) for m in names}


@dataclasses.dataclass(frozen=True)
class _Solved:
    """A field whose likelihood is already computed (so kl and nll share one solve)."""

    logq: np.ndarray


def make_evaluator(
    dataset: str,
    metrics: Sequence[str] | None = None,
    *,
    reference=None,
    num_reference: int = 2000,
    seed: int = 1234,
    options: EvalOptions | None = None,
    data_dir: str | None = None,
    **source_kwargs,
) -> Evaluator:
    """The evaluator of a registered dataset.

    Args:
      dataset: a `fj.data` name.
      metrics: names from `METRICS` (default: `default_metrics` of the dataset).
      reference: held-out samples; default `fj.data.reference_samples` of the test split
        (num_reference of them, all of a smaller finite split), drawn with `seed`.
      options: `EvalOptions`.
    """
    from flowjax import data

    spec = data.spec(dataset)
    if reference is None:
        source = data.open_source(
            dataset, split="test", seed=seed, data_dir=data_dir, **source_kwargs
        )
        n = min(num_reference, len(source)) if hasattr(source, "__len__") else num_reference
        reference = data.reference_samples(
            dataset, n, seed, "test", data_dir=data_dir, **source_kwargs
        )
    return Evaluator(
        spec,
        default_metrics(spec) if metrics is None else metrics,
        reference=reference,
        options=options,
        source_kwargs=source_kwargs,
    )
