"""Datasets of the flow-map experiment: their teacher, metrics, floors and guidance reward.

  gmm           the analytic 2D mixture (`fj.data.gmm_params("gmm")`). The teacher is its exact
                velocity (a perfect teacher), so a method's error is measured against the
                exact flow map: map_mse = mean squared error of the k-step sample from x0 vs
                `gmm.flow_map(x0, 0, 1)`; and W2 / energy distance to held-out data.
  checkerboard  the 4x4 checkerboard on [-4, 4]^2. The teacher is a flow-matching MLP trained
                here; the primary metric is the histogram KL(data || model) of the
                self-distillation paper (Boffi, Albergo & Vanden-Eijnden 2025, App. G.1)
                against the analytic density, plus W2 / energy distance.
  digits        scikit-learn's 8x8 digits with a U-Net teacher; metric: digits FD (Frechet
                distance in the shipped classifier's features); guidance reward: log p(class)
                under that classifier.

Each suite gives a differentiable reward r(x1) -> (B,) for the guidance comparison, a hit
test (did the sample land in the target?) and a support measure (is it still data-like?).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["SUITES", "BoxReward", "ClassifierReward", "Suite", "make_suite"]


# ------------------------------------------------------------------------------ rewards


class BoxReward(eqx.Module):
    """r(x) = sum_d log sigma((x_d - low_d) / tau) + log sigma((high_d - x_d) / tau): the log of
    a soft indicator of the box [low, high] (tau: edge width). About 0 well inside, about
    -dist / tau far outside; unlike -dist^2 its gradient does not vanish at the edge, so
    guided samples are pushed inside rather than onto the boundary."""

    low: jax.Array
    high: jax.Array
    tau: float = eqx.field(static=True, default=0.1)

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        inside = jax.nn.log_sigmoid((x - self.low) / self.tau)
        inside = inside + jax.nn.log_sigmoid((self.high - x) / self.tau)
        return jnp.sum(inside, axis=1)

    def hit(self, x):
        return jnp.all((x >= self.low) & (x <= self.high), axis=-1)


class ClassifierReward(eqx.Module):
    """r(x) = log p(label | x) under the shipped digits classifier
    (`fj.metrics.classifier_log_prob`); a hit is a sample the classifier labels `label`."""

    graphdef: object = eqx.field(static=True)
    state: object
    label: int = eqx.field(static=True)

    def _model(self):
        from flax import nnx

        return nnx.merge(self.graphdef, self.state)

    def __call__(self, x):
        from flowjax.metrics import classifier_log_prob

        return classifier_log_prob(x, jnp.int32(self.label), classifier=self._model())

    def hit(self, x):
        return jnp.argmax(self._model()(x), axis=-1) == self.label


# ------------------------------------------------------------------------------ suites


def _finite(x) -> bool:
    return bool(np.all(np.isfinite(np.asarray(x))))


class Suite:
    """A dataset of the experiment (see the module docstring).

    Attributes:
      name: the `fj.data` dataset.
      kind: "points" or "images".
      metrics: metric names, primary first; lower is better for every one.
      ratio_metric: the metric reported as a ratio to the teacher's.
      analytic_teacher: True when the teacher is exact (no teacher training).
    """

    name: str = ""
    kind: str = "points"
    metrics: tuple[str, ...] = ()
    ratio_metric: str = ""
    analytic_teacher: bool = False
    support_name: str = ""
    notes: dict[str, str] = {}  # metric -> caveat printed under its table

    def __init__(self, options, eval_config):
        self.options = options
        self.eval = eval_config
        self._reference = None

    @property
    def primary(self) -> str:
        return self.metrics[0]

    @property
    def num_eval(self) -> int:
        return int(self.options.eval_samples)

    def reference(self) -> np.ndarray:
        """Held-out data ("test" split) for the sample metrics."""
        if self._reference is None:
            from flowjax import data

            self._reference = np.asarray(
                data.reference_samples(self.name, self.num_reference(), self.eval.seed, "test")
            )
        return self._reference

    def num_reference(self) -> int:
        return max(int(self.eval.w2_samples), int(self.eval.energy_samples))

    def prepare(self, path, x0: np.ndarray) -> None:
        """Precomputation for the eval noise x0 (the mixture's exact map of it)."""

    def evaluate(self, samples) -> dict[str, float]:
        """Metrics of samples drawn from the eval noise (NaN for all if any is not finite)."""
        samples = np.asarray(samples, np.float64)
        if not _finite(samples):
            return {m: math.nan for m in self.metrics}
        return self._evaluate(samples)

    def _evaluate(self, samples) -> dict[str, float]:
        raise NotImplementedError

    def floors(self) -> dict[str, float]:
        """Each metric for data against data of the same sample size (finite-sample floor)."""
        raise NotImplementedError

    def reward(self):
        raise NotImplementedError

    def support(self, samples) -> np.ndarray:
        """Per-sample support measure of guided samples (higher is better)."""
        raise NotImplementedError


class _PointsSuite(Suite):
    kind = "points"

    def _two_sample(self, samples, reference) -> dict[str, float]:
        from flowjax import metrics

        nw, ne = int(self.eval.w2_samples), int(self.eval.energy_samples)
        return {
            "w2": metrics.wasserstein2(samples[:nw], reference[:nw]),
            "energy": metrics.energy_distance(samples[:ne], reference[:ne]),
        }

    def _data_twin(self, n: int) -> np.ndarray:
        from flowjax import data

        # Independent of the reference (another seed of the test stream) and of training data.
        return np.asarray(data.reference_samples(self.name, n, self.eval.seed + 1, "test"))

    def reward(self):
        box = [float(v) for v in self.options.box]
        if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
            raise ValueError(
                f"config.suites.{self.name}.box: must be (low_x, low_y, high_x, high_y) with "
                f"low < high, got {tuple(self.options.box)}"
            )
        tau = float(self.options.box_softness)
        if not tau > 0:
            raise ValueError(f"config.suites.{self.name}.box_softness: positive, got {tau}")
        return BoxReward(jnp.asarray(box[:2], jnp.float32), jnp.asarray(box[2:], jnp.float32), tau)


class MixtureSuite(_PointsSuite):
    name = "gmm"
    metrics = ("map_mse", "w2", "energy")
    ratio_metric = "w2"
    analytic_teacher = True
    support_name = "mean log p_data"
    notes = {
        "map_mse": "The consistency sampler re-noises between steps, so for consistency_distill "
        "and consistency_training with 2 or more steps the sample is no longer a transport of "
        "its x0, and this column is not a transport error (their 1-step value is)."
    }

    def __init__(self, options, eval_config):
        super().__init__(options, eval_config)
        from flowjax import analytic, data

        self.gmm = analytic.GaussianMixture(**data.gmm_params("gmm").as_dict())
        self.exact = None

    def exact_map(self, path, x0) -> np.ndarray:
        """gmm.flow_map(x0, 0, 1): the exact transport of the noise to data."""
        return np.asarray(self.gmm.flow_map(path, jnp.asarray(x0, jnp.float32), 0.0, 1.0))

    def prepare(self, path, x0) -> None:
        self.exact = self.exact_map(path, x0)

    def _evaluate(self, samples):
        out = {"map_mse": float(np.mean((samples - self.exact) ** 2))}
        out.update(self._two_sample(samples, self.reference()))
        return out

    def floors(self):
        twin = self._data_twin(self.num_reference())
        return {"map_mse": 0.0, **self._two_sample(twin, self.reference())}

    def support(self, samples):
        return np.asarray(self.gmm.log_prob(jnp.asarray(samples, jnp.float32)))


class CheckerboardSuite(_PointsSuite):
    name = "checkerboard"
    metrics = ("kl", "w2", "energy")
    ratio_metric = "kl"
    support_name = "on-support fraction"

    @staticmethod
    def density(x):
        from flowjax.metrics import checkerboard_density

        return checkerboard_density(x, low=-4.0, high=4.0)

    def _kl(self, samples) -> float:
        from flowjax.metrics import histogram_kl

        return histogram_kl(self.density, samples, bins=int(self.eval.hist_bins), range=(-4.0, 4.0))

    def _evaluate(self, samples):
        return {"kl": self._kl(samples), **self._two_sample(samples, self.reference())}

    def floors(self):
        twin = self._data_twin(max(self.num_eval, self.num_reference()))
        return {"kl": self._kl(twin[: self.num_eval]), **self._two_sample(twin, self.reference())}

    def support(self, samples):
        return (self.density(np.asarray(samples, np.float64)) > 0).astype(np.float64)


class DigitsSuite(Suite):
    name = "digits"
    kind = "images"
    metrics = ("fd",)
    ratio_metric = "fd"
    support_name = "classifier confidence"

    def __init__(self, options, eval_config):
        super().__init__(options, eval_config)
        self._classifier = None

    def classifier(self):
        if self._classifier is None:
            from flowjax.metrics import digits_classifier

            self._classifier = digits_classifier()
        return self._classifier

    def num_reference(self) -> int:
        from flowjax import data

        return len(data.open_source("digits", split="test"))

    def _evaluate(self, samples):
        from flowjax.metrics import digits_fd

        return {"fd": digits_fd(samples, self.reference(), classifier=self.classifier())}

    def floors(self):
        from flowjax import data
        from flowjax.metrics import digits_fd

        n = min(self.num_eval, len(data.open_source("digits", split="train")))
        twin = np.asarray(data.reference_samples("digits", n, self.eval.seed, "train"))
        return {"fd": digits_fd(twin, self.reference(), classifier=self.classifier())}

    def reward(self):
        from flax import nnx

        label = int(self.options.label)
        if not 0 <= label <= 9:
            raise ValueError(f"config.suites.digits.label: a digit 0..9, got {label}")
        graphdef, state = nnx.split(self.classifier())
        return ClassifierReward(graphdef, state, label)

    def support(self, samples):
        logits = self.classifier()(jnp.asarray(samples, jnp.float32))
        return np.asarray(jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1))


SUITES: dict[str, type[Suite]] = {s.name: s for s in (MixtureSuite, CheckerboardSuite, DigitsSuite)}


def make_suite(name: str, options, eval_config) -> Suite:
    """The suite of dataset `name` (a key of `SUITES`)."""
    if name not in SUITES:
        raise ValueError(f"config.datasets: unknown dataset {name!r}; valid: {sorted(SUITES)}")
    return SUITES[name](options, eval_config)
