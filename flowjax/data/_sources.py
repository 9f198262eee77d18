"""Record sources behind the pipeline.

Two kinds:
  * `SyntheticSource`: an infinite i.i.d. stream; `read_range(start, stop)` returns records
    start..stop-1, each a pure function of (seed, split, index) (counter-based RNG);
    `read_range_extra` also returns the further batch keys ("context", "x0") of streams whose
    `fn` gives them.
  * finite random-access sources (`ArraySource`, `TfdsSource`): `len(src)` records and
    `read(indices)`; the pipeline shuffles them per epoch.
Both return (x float32 (n, *shape), label int32 (n,)).
"""

import functools
from collections.abc import Callable

import numpy as np

from flowjax.data._gmm import MixtureParams, mixture_from_uniform
from flowjax.data._random import counter_uniforms, stream_key


class SyntheticSource:
    """Infinite stream of i.i.d. records: `fn` maps uniforms (n, k) to (x, label)."""

    def __init__(self, name: str, fn: Callable, num_uniforms: int, shape, *, seed: int, split: str):
        self.name = name
        self.shape = tuple(shape)
        self._fn = fn
        self._k = num_uniforms
        self._key = stream_key(seed, split)

    def read_range(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        return self.read_range_extra(start, stop)[:2]

    def read_range_extra(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """(x, label, extra): extra holds further per-record arrays (e.g. "context")."""
        x, label, *more = self._fn(counter_uniforms(self._key, start, stop, self._k))
        extra = {k: np.asarray(v) for k, v in (more[0] if more else {}).items()}
        return x.astype(np.float32), label.astype(np.int32), extra


def mixture_source(name: str, params: MixtureParams, *, seed: int, split: str) -> SyntheticSource:
    """A synthetic stream of the mixture `params` (labels are component indices)."""
    return SyntheticSource(
        name,
        functools.partial(mixture_from_uniform, params),
        1 + params.dim,
        (params.dim,),
        seed=seed,
        split=split,
    )


class ArraySource:
    """A finite in-memory dataset: x (N, *shape) float32, labels (N,) int32."""

    def __init__(self, name: str, x: np.ndarray, labels: np.ndarray):
        if len(x) != len(labels):
            raise ValueError(f"dataset {name!r}: {len(x)} records but {len(labels)} labels")
        if len(x) == 0:
            raise ValueError(f"dataset {name!r}: no records")
        self.name = name
        self.shape = tuple(x.shape[1:])
        self._x = np.asarray(x, np.float32)
        self._labels = np.asarray(labels, np.int32)

    def __len__(self) -> int:
        return len(self._x)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._x[indices], self._labels[indices]


def to_unit_interval(image: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return np.asarray(image, np.float32) / 127.5 - 1.0


def center_crop_resize(image: np.ndarray, crop: int, size: int) -> np.ndarray:
    """Central crop to crop x crop, then antialiased bilinear resize to size x size (uint8)."""
    from PIL import Image  # Pillow ships with matplotlib.

    h, w = image.shape[:2]
    if h < crop or w < crop:
        raise ValueError(f"image of shape {image.shape} is smaller than the {crop}x{crop} crop")
    top, left = (h - crop) // 2, (w - crop) // 2
    image = np.ascontiguousarray(image[top : top + crop, left : left + crop])
    squeeze = image.ndim == 3 and image.shape[2] == 1
    pil = Image.fromarray(image[..., 0] if squeeze else image)
    out = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
    return out[..., None] if squeeze else out


class TfdsSource:
    """A TFDS split read through `tfds.data_source` (ArrayRecord; no TensorFlow needed).

    Only the requested records are read and decoded, so each process touches its own slice.
    """

    def __init__(
        self,
        name: str,
        tfds_name: str,
        shape,
        *,
        split: str,
        data_dir: str | None,
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
        label_key: str | None = "label",
    ):
        import tensorflow_datasets as tfds

        self.name = name
        self.shape = tuple(shape)
        self._preprocess = preprocess
        self._label_key = label_key
        self._source = tfds.data_source(tfds_name, split=split, data_dir=data_dir)

    def __len__(self) -> int:
        return len(self._source)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xs, labels = [], []
        for i in indices:
            record = self._source[int(i)]
            image = np.asarray(record["image"])
            if self._preprocess is not None:
                image = self._preprocess(image)
            if image.shape != self.shape:
                raise ValueError(
                    f"dataset {self.name!r}: record {int(i)} has shape {image.shape}, "
                    f"expected {self.shape}"
                )
            xs.append(to_unit_interval(image))
            labels.append(record[self._label_key] if self._label_key else 0)
        return np.stack(xs), np.asarray(labels, np.int32)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are integers in [0, 16]: map to [-1, 1], NHWC.
    x = (digits.images.astype(np.float32) / 8.0 - 1.0)[..., None]
    return x, digits.target.astype(np.int32)


DIGITS_NUM_TRAIN = 1500  # of 1,797; the remaining 297 form the test split.


def digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits, split by a fixed permutation (seed 0) into 1500 / 297."""
    x, y = _digits()
    perm = np.random.default_rng(0).permutation(len(x))
    splits = {"train": perm[:DIGITS_NUM_TRAIN], "test": perm[DIGITS_NUM_TRAIN:]}
    if split not in splits:
        raise ValueError(f"split must be one of {sorted(splits)} for 'digits'; got {split!r}")
    idx = np.sort(splits[split])
    return x[idx], y[idx]
