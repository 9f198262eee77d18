"""A small CNN classifier of scikit-learn's 8 x 8 digits, for FD and classifier guidance.

The shipped weights (`flowjax/assets/digits_classifier.npz`, trained by
`scripts/train_digits_classifier.py`) give a "digits FD": the Fréchet distance between
Gaussians fitted to its penultimate features, the FID recipe with a network that fits the
data. `classifier_log_prob` is differentiable in x, for reward/classifier-guided sampling.

Data convention: images NHWC (B, 8, 8, 1) in [-1, 1], i.e. sklearn's pixel values in [0, 16]
mapped by v / 8 - 1. (B, 8, 8) and flattened (B, 64) inputs are accepted too.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, ArrayLike, Float, Int

from flowjax.metrics import _io
from flowjax.metrics._frechet import fid_from_features

__all__ = [
    "DigitsClassifier",
    "DEFAULT_DIGITS_WEIGHTS",
    "classifier_log_prob",
    "digits_classifier",
    "digits_fd",
    "digits_features",
    "load_digits_split",
    "save_digits_classifier",
]

DEFAULT_DIGITS_WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "digits_classifier.npz"
NUM_CLASSES = 10


class DigitsClassifier(nnx.Module):
    """conv3x3(16) -> SiLU -> conv3x3(32) -> SiLU -> avgpool 2 -> dense(64) -> SiLU -> dense(10).

    SiLU keeps log p(y | x) smooth in x, which guidance needs. `features` is the 64-d
    penultimate representation used by `digits_fd`.
    """

    def __init__(self, *, width: int = 16, feature_dim: int = 64, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, width, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(width, 2 * width, (3, 3), padding="SAME", rngs=rngs)
        self.dense = nnx.Linear(4 * 4 * 2 * width, feature_dim, rngs=rngs)
        self.head = nnx.Linear(feature_dim, NUM_CLASSES, rngs=rngs)

    def features(self, x: Float[ArrayLike, "B 8 8 1"]) -> Float[Array, "B F"]:
        """Penultimate features (after the hidden dense layer's activation)."""
        x = _as_images(x)
        h = jax.nn.silu(self.conv2(jax.nn.silu(self.conv1(x))))
        h = nnx.avg_pool(h, (2, 2), strides=(2, 2))
        return jax.nn.silu(self.dense(h.reshape(h.shape[0], -1)))

    def __call__(self, x: Float[ArrayLike, "B 8 8 1"]) -> Float[Array, "B 10"]:
        """Class logits."""
        return self.head(self.features(x))


def _as_images(x) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"digits images must be float in [-1, 1], got dtype {x.dtype}")
    if x.ndim == 2 and x.shape[1] == 64:
        x = x.reshape(-1, 8, 8, 1)
    elif x.ndim == 3 and x.shape[1:] == (8, 8):
        x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != (8, 8, 1):
        raise ValueError(
            f"digits images must have shape (B, 8, 8, 1), (B, 8, 8) or (B, 64), got {x.shape}"
        )
    return x


def load_digits_split(*, test_fraction: float = 0.25, seed: int = 0) -> dict[str, np.ndarray]:
    """sklearn's digits as NHWC float32 in [-1, 1], with a stratified train/test split.

    Returns:
      {"x_train", "y_train", "x_test", "y_test"}: images (N, 8, 8, 1), labels int32 (N,).
      The defaults give the split the shipped classifier was trained and tested on.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    data = load_digits()
    x = (data.images.astype(np.float32) / 8.0 - 1.0)[..., None]  # [0, 16] -> [-1, 1]
    y = data.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}


@functools.lru_cache(maxsize=4)
def _load_split(path: str) -> tuple[nnx.GraphDef, nnx.State]:
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"no digits classifier weights at {path}; train them with "
            f"scripts/train_digits_classifier.py"
        )
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    width, feature_dim = int(arrays.pop("meta.width")), int(arrays.pop("meta.feature_dim"))
    arrays.pop("meta.test_accuracy", None)
    model = nnx.eval_shape(
        lambda: DigitsClassifier(width=width, feature_dim=feature_dim, rngs=nnx.Rngs(0))
    )
    targets = _io.variables(model)
    if set(targets) != set(arrays):
        raise ValueError(
            f"{path} does not hold DigitsClassifier weights: expected "
            f"{sorted(targets)}, got {sorted(arrays)}"
        )
    for name, var in targets.items():
        _io.assign(var, arrays[name], name)
    return nnx.split(model)


def digits_classifier(path: str | os.PathLike | None = None) -> DigitsClassifier:
    """Loads the digits classifier (the shipped weights when path is None)."""
    graphdef, state = _load_split(str(path or DEFAULT_DIGITS_WEIGHTS))
    return nnx.merge(graphdef, state)


def save_digits_classifier(model: DigitsClassifier, path: str | os.PathLike, **meta) -> None:
    """Writes the weights (and architecture sizes) to an .npz readable by `digits_classifier`."""
    arrays = {name: np.asarray(var.get_value()) for name, var in _io.variables(model).items()}
    meta = {"width": model.conv1.out_features, "feature_dim": model.dense.out_features, **meta}
    np.savez_compressed(path, **arrays, **{f"meta.{k}": np.asarray(v) for k, v in meta.items()})


def digits_features(
    x: Float[ArrayLike, "B 8 8 1"],
    *,
    classifier: DigitsClassifier | None = None,
    batch_size: int = 1000,
) -> Float[np.ndarray, "B F"]:
    """Penultimate (64-d) features of digits images, computed in jitted batches."""
    model = classifier if classifier is not None else digits_classifier()
    x = np.asarray(_as_images(x), dtype=np.float32)
    graphdef, state = nnx.split(model)
    out = []
    for i in range(0, x.shape[0], batch_size):
        batch = x[i : i + batch_size]
        n = batch.shape[0]
        if n < batch_size and x.shape[0] > batch_size:  # pad: one compiled shape
            batch = np.concatenate([batch, np.zeros((batch_size - n, 8, 8, 1), np.float32)])
        out.append(np.asarray(_io.apply_jitted(graphdef, state, batch, "features"))[:n])
    return np.concatenate(out)


def digits_fd(
    samples_a: Float[ArrayLike, "N 8 8 1"],
    samples_b: Float[ArrayLike, "M 8 8 1"],
    *,
    classifier: DigitsClassifier | None = None,
) -> float:
    """Fréchet distance between two sets of digits in the classifier's penultimate features."""
    model = classifier if classifier is not None else digits_classifier()
    return fid_from_features(
        digits_features(samples_a, classifier=model), digits_features(samples_b, classifier=model)
    )


def classifier_log_prob(
    x: Float[ArrayLike, "B 8 8 1"],
    label: int | Int[ArrayLike, " B"],
    *,
    classifier: DigitsClassifier | None = None,
) -> Float[Array, " B"]:
    """log p(label | x) under the digits classifier; differentiable in x, jit-compatible.

    Args:
      x: (B, 8, 8, 1) images in [-1, 1] (or (B, 8, 8), (B, 64)).
      label: one class for all, or one per example (B,), in 0..9.
      classifier: the model; the shipped one when None.

    Returns:
      (B,) log-probabilities.
    """
    model = classifier if classifier is not None else digits_classifier()
    logp = jax.nn.log_softmax(model(x), axis=-1)
    label = jnp.asarray(label)
    if not jnp.issubdtype(label.dtype, jnp.integer):
        raise TypeError(f"label must be an integer class in 0..9, got dtype {label.dtype}")
    if label.ndim > 1 or (label.ndim == 1 and label.shape[0] != logp.shape[0]):
        raise ValueError(
            f"label must be a scalar or have shape ({logp.shape[0]},), got {label.shape}"
        )
    label = jnp.broadcast_to(label, logp.shape[:1])
    return jnp.take_along_axis(logp, label[:, None], axis=-1)[:, 0]
