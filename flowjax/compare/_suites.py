"""Quality metrics of the comparison, one suite per kind of dataset (all lower-is-better).

A suite scores samples drawn from a model against held-out data (`fj.data.reference_samples`
of the test split) and, where the data density is known, against the density itself:

  checkerboard  hist_kl: KL(data || model) on a histogram grid against the exact density
                (`fj.metrics.histogram_kl`, Boffi et al. 2025 protocol); energy distance; W2.
  gmm           kl: KL(data || model) = E_data[log p - log q], with log p exact (the analytic
                mixture) and log q the model's likelihood by `fj.likelihood.log_prob` (exact
                divergence, adaptive dopri5) on the same held-out points; model_nll = -E log q;
                sample_nll = -E_model[log p], the exact NLL of the samples under the mixture
                (its value for perfect samples is the data entropy, recorded as
                `data_entropy`); energy distance; W2; MMD.
  other 2D      W2 (exact assignment), energy distance, MMD.
  digits        digits_fd: Fréchet distance in the features of the shipped digits classifier.
  images        fid: FID in InceptionV3 pool features (needs `config.metrics.inception_path`).

`curve` metrics are computed at every evaluation during training, `final` ones once more at
the end, `sweep` ones for every sampler setting of the NFE sweep.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["Suite", "make_suite", "DESCRIPTIONS"]

DESCRIPTIONS = {
    "hist_kl": "KL(data || model) on a histogram grid vs the exact checkerboard density (nats)",
    "energy": "energy distance to held-out data (unbiased; ~0 for a perfect model)",
    "w2": "Wasserstein-2 distance to held-out data (exact assignment; finite-sample floor > 0)",
    "mmd": "MMD^2 (Gaussian kernel, median bandwidth) to held-out data",
    "kl": "KL(data || model) = E_data[log p - log q] in nats (exact log p, ODE log q)",
    "model_nll": "NLL of held-out data under the model (nats, ODE likelihood)",
    "sample_nll": "NLL of model samples under the exact mixture (nats; data entropy for "
    "perfect samples)",
    "digits_fd": "Fréchet distance in digits-classifier features to the test digits",
    "fid": "FID (InceptionV3 pool3) to held-out images",
}


class Suite:
    """Metrics of one dataset. Subclasses fill the metric tables."""

    primary: str = "w2"
    sweep_primary: str = "energy"

    def __init__(self, dataset: str, spec, data_config, mconfig, eval_seed: int):
        from flowjax import data

        self.dataset = dataset
        self.spec = spec
        self.mconfig = mconfig
        kwargs = data_config.kwargs.to_dict()
        self._data_kwargs = dict(data_dir=data_config.data_dir or None, **kwargs)
        source = data.open_source(dataset, split="test", seed=eval_seed, **self._data_kwargs)
        n = int(mconfig.num_reference)
        if hasattr(source, "__len__"):
            n = min(n, len(source))
        self.reference = np.asarray(
            data.reference_samples(dataset, n, eval_seed, "test", **self._data_kwargs)
        )
        self.info: dict[str, float] = {}
        self.curve_metrics: dict[str, Callable] = {}
        self.final_metrics: dict[str, Callable] = {}
        self.sweep_metrics: dict[str, Callable] = {}

    def _score(self, table, samples, field=None) -> dict[str, float]:
        samples = np.asarray(samples)
        if not np.all(np.isfinite(samples)):
            return {name: math.nan for name in table}
        return {name: float(fn(samples, field)) for name, fn in table.items()}

    def curve(self, samples, field=None) -> dict[str, float]:
        return self._score(self.curve_metrics, samples, field)

    def final(self, samples, field=None) -> dict[str, float]:
        return self._score(self.final_metrics, samples, field)

    def sweep(self, samples) -> dict[str, float]:
        return self._score(self.sweep_metrics, samples)

    def metric_names(self) -> list[str]:
        return list(dict.fromkeys([*self.curve_metrics, *self.final_metrics]))


class PointsSuite(Suite):
    """Sample distances for 2D data."""

    primary = "w2"
    sweep_primary = "energy"

    def __init__(self, *args):
        super().__init__(*args)
        m = self.mconfig
        self.curve_metrics = {"w2": self._w2, "energy": self._energy}
        self.final_metrics = {"mmd": self._mmd}
        self.sweep_metrics = {"energy": self._energy}
        self._n_energy, self._n_w2 = int(m.energy_samples), int(m.w2_samples)

    def _energy(self, x, field=None):
        from flowjax.metrics import energy_distance

        return energy_distance(x[: self._n_energy], self.reference[: self._n_energy])

    def _w2(self, x, field=None):
        from flowjax.metrics import wasserstein2

        return wasserstein2(x[: self._n_w2], self.reference[: self._n_w2])

    def _mmd(self, x, field=None):
        from flowjax.metrics import mmd2

        return mmd2(x[: self._n_energy], self.reference[: self._n_energy])


class CheckerboardSuite(PointsSuite):
    """Histogram KL against the exact density of `fj.data`'s checkerboard on [-4, 4]^2."""

    primary = "hist_kl"
    sweep_primary = "hist_kl"

    def __init__(self, *args):
        super().__init__(*args)
        self.curve_metrics = {"hist_kl": self._hist_kl, "energy": self._energy}
        self.final_metrics = {"w2": self._w2}
        self.sweep_metrics = {"hist_kl": self._hist_kl}

    @staticmethod
    def density(x):
        from flowjax.metrics import checkerboard_density

        # fj.data's checkerboard: 4 x 4 cells of side 2 on [-4, 4]^2, cell (i, j) filled when
        # floor(x/2) + floor(y/2) is even, i.e. when i + j is even counting from -4.
        return checkerboard_density(x, num_cells=4, low=-4.0, high=4.0)

    def _hist_kl(self, x, field=None):
        from flowjax.metrics import histogram_kl

        return histogram_kl(self.density, x, bins=int(self.mconfig.hist_bins), range=(-4.0, 4.0))


class MixtureSuite(PointsSuite):
    """Exact likelihood metrics for an isotropic Gaussian mixture dataset."""

    primary = "kl"
    sweep_primary = "energy"

    def __init__(self, *args):
        super().__init__(*args)
        from flowjax import analytic
        from flowjax.data import MixtureParams, gmm_params

        kwargs = {k: v for k, v in self._data_kwargs.items() if k != "data_dir"}
        params = MixtureParams(**kwargs) if kwargs else gmm_params(self.dataset)
        self.mixture = analytic.GaussianMixture(**params.as_dict())
        n_lik = int(self.mconfig.likelihood_samples)
        self._lik_points = np.asarray(self.reference[:n_lik], np.float32)
        self._lik_logp = self._log_p(self._lik_points)
        self.info["data_entropy"] = float(-np.mean(self._log_p(self.reference)))
        self.curve_metrics = {
            "kl": self._kl,
            "sample_nll": self._sample_nll,
            "energy": self._energy,
        }
        self.final_metrics = {"model_nll": self._model_nll, "w2": self._w2, "mmd": self._mmd}
        self.sweep_metrics = {"energy": self._energy, "sample_nll": self._sample_nll}
        self._cache: tuple | None = None

    def _log_p(self, x) -> np.ndarray:
        return np.asarray(self.mixture.log_prob(np.asarray(x, np.float32)), np.float64)

    def _sample_nll(self, x, field=None):
        return float(-np.mean(self._log_p(x)))

    def _log_q(self, field) -> np.ndarray:
        # kl and model_nll of one field share one likelihood solve.
        if self._cache is not None and self._cache[0] is field:
            return self._cache[1]
        from flowjax.likelihood import log_prob

        m = self.mconfig
        try:
            logq, _ = log_prob(
                field,
                self._lik_points,
                divergence="exact",
                rtol=float(m.likelihood_tol),
                atol=float(m.likelihood_tol),
                t_eps=float(m.likelihood_t_eps),
            )
            logq = np.asarray(logq, np.float64)
        except RuntimeError:  # the solve failed (max_steps, NaN): no likelihood
            logq = np.full(self._lik_points.shape[0], np.nan)
        self._cache = (field, logq)
        return logq

    def _kl(self, x, field=None):
        if field is None:
            return math.nan
        return float(np.mean(self._lik_logp - self._log_q(field)))

    def _model_nll(self, x, field=None):
        if field is None:
            return math.nan
        return float(-np.mean(self._log_q(field)))


class DigitsSuite(Suite):
    """Digits FD of samples against the held-out digits."""

    primary = "digits_fd"
    sweep_primary = "digits_fd"

    def __init__(self, *args):
        super().__init__(*args)
        from flowjax.metrics import digits_classifier, digits_features

        self._classifier = digits_classifier()
        self._ref_features = digits_features(self.reference, classifier=self._classifier)
        self.curve_metrics = {"digits_fd": self._fd}
        self.sweep_metrics = {"digits_fd": self._fd}

    def _fd(self, x, field=None):
        from flowjax.metrics import digits_features, fid_from_features

        return fid_from_features(
            digits_features(x, classifier=self._classifier), self._ref_features
        )


class FIDSuite(Suite):
    """FID with the FID InceptionV3 (`fj.metrics.load_inception`), for TFDS image datasets."""

    primary = "fid"
    sweep_primary = "fid"

    def __init__(self, *args):
        super().__init__(*args)
        from flowjax.metrics import inception_features, load_inception

        path = self.mconfig.inception_path
        if not path:
            raise ValueError(
                f"config.metrics.inception_path: dataset {self.dataset!r} is scored by FID, which "
                "needs the FID InceptionV3 weights (pytorch-fid's pt_inception-2015-12-05 .pth, "
                "or an .npz from fj.metrics.convert_inception_weights)"
            )
        self._model = load_inception(path)
        self._features = inception_features
        self._ref_features = inception_features(self._model, self.reference)
        self.curve_metrics = {"fid": self._fid}
        self.sweep_metrics = {"fid": self._fid}

    def _fid(self, x, field=None):
        from flowjax.metrics import fid_from_features

        return fid_from_features(self._features(self._model, x), self._ref_features)


SUITES_BY_DATASET = {"checkerboard": CheckerboardSuite, "gmm": MixtureSuite, "digits": DigitsSuite}
SUITES_BY_KIND = {"points": PointsSuite, "images": FIDSuite}


def make_suite(dataset: str, spec, data_config, mconfig, eval_seed: int) -> Suite:
    """The metric suite of a dataset (by name first, then by kind of data)."""
    cls = SUITES_BY_DATASET.get(dataset, SUITES_BY_KIND[spec.kind])
    return cls(dataset, spec, data_config, mconfig, eval_seed)
