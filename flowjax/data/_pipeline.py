"""The grain input pipeline: infinite, shuffled, per-process, checkpointable batches.

Batches are defined on a global stream of record positions: step k of the global batch holds
positions k*G .. k*G + G - 1 (G = global batch size), and process p of P reads only its
contiguous block k*G + p*L .. k*G + (p+1)*L - 1 (L = G / P). Concatenating the local batches
in process order therefore gives the single-process batch. A position maps to a record by
  * synthetic data: the position is the record index of a counter-based i.i.d. stream;
  * finite data: epoch e = pos // N, record perm_e[pos % N], perm_e seeded by (seed, e),
    so each epoch is a fresh shuffle.
So a batch is a pure function of (dataset, seed, split, step, process): the iterator state
is just the step, and resume is exact.
"""

import functools
import sys
import time

import grain
import numpy as np

from flowjax.data._registry import open_source, spec
from flowjax.data._sources import SyntheticSource


def validate_batch(name: str, batch: dict, shape: tuple[int, ...], num_classes: int | None):
    """Raises ValueError (one line, naming the dataset) if the batch has a wrong shape,
    a non-finite value or an out-of-range label. Returns the batch unchanged."""
    x, labels = batch["x1"], batch["label"]
    expected = (labels.shape[0], *shape)
    if x.shape != expected:
        raise ValueError(f"dataset {name!r}: expected x1 of shape {expected}, got {x.shape}")
    # Further keys ("context", "x0", ...) are per example, like labels: same leading size.
    for key, value in batch.items():
        if np.ndim(value) < 1 or np.shape(value)[0] != labels.shape[0]:
            raise ValueError(
                f"dataset {name!r}: batch key {key!r} must have leading size {labels.shape[0]}, "
                f"got shape {np.shape(value)}"
            )
    finite = np.isfinite(x)
    if not finite.all():
        where = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(f"dataset {name!r}: non-finite value {x[where]} in x1 at index {where}")
    if (
        num_classes is not None
        and labels.size
        and (labels.min() < 0 or labels.max() >= num_classes)
    ):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise ValueError(f"dataset {name!r}: label {bad} outside [0, {num_classes})")
    return batch


class _LocalBatches:
    """Random-access, infinite sequence of this process's batches (element k = step k)."""

    def __init__(self, source, *, global_batch_size, local_batch_size, process_index, seed):
        self._source = source
        self._global = global_batch_size
        self._local = local_batch_size
        self._offset = process_index * local_batch_size
        self._seed = seed
        if not isinstance(source, SyntheticSource):
            self._perm = functools.lru_cache(maxsize=4)(self._permutation)

    def __len__(self) -> int:
        return sys.maxsize

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self._seed, epoch]).permutation(len(self._source))

    def __getitem__(self, step: int) -> dict:
        start = int(step) * self._global + self._offset
        stop = start + self._local
        extra = {}  # further batch keys of a source whose read returns (x, label, extra)
        if isinstance(self._source, SyntheticSource):
            x, labels, extra = self._source.read_range_extra(start, stop)
        else:
            n = len(self._source)
            first, last = start // n, (stop - 1) // n
            pieces = [
                self._perm(e)[max(start, e * n) - e * n : min(stop, (e + 1) * n) - e * n]
                for e in range(first, last + 1)
            ]
            x, labels, *more = self._source.read(np.concatenate(pieces))
            extra = more[0] if more else {}
        return {"x1": x, "label": labels, **extra}


class DataIterator:
    """Iterator over local batches {"x1": float32 (L, *shape), "label": int32 (L,)} plus the
    source's further per-example keys (e.g. "context" float32 (L, *C), "x0" for data pairs).

    `get_state()` is a JSON-serialisable dict (the step plus what identifies the stream);
    `set_state(state)` resumes exactly, and refuses a state saved for another stream.
    """

    def __init__(self, dataset: grain.MapDataset, read_options: grain.ReadOptions, ident: dict):
        self._iter = iter(dataset.to_iter_dataset(read_options))
        self._ident = ident

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return next(self._iter)

    @property
    def step(self) -> int:
        """The step of the batch the next call to `next` returns."""
        return int(self._iter.get_state()["next_index"])

    def get_state(self) -> dict:
        return {"step": self.step, **self._ident}

    def close(self) -> None:
        """Stops the reader threads (if any)."""
        close = getattr(self._iter, "close", None)
        if close is not None:
            close()

    def set_state(self, state: dict) -> None:
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError(f"data iterator state must be a dict with a 'step'; got {state!r}")
        for key, value in self._ident.items():
            if state.get(key, value) != value:
                raise ValueError(
                    f"data iterator state is for {key}={state[key]!r}, this iterator has {value!r}"
                )
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"data iterator state 'step' must be a non-negative int; got {step!r}")
        self._iter.set_state({"next_index": int(step)})


def _check_int(field: str, value, minimum: int):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{field} must be an int >= {minimum}; got {value!r}")


def make_iterator(
    name: str,
    *,
    global_batch_size: int,
    seed: int,
    split: str = "train",
    process_index: int | None = None,
    process_count: int | None = None,
    data_dir: str | None = None,
    num_threads: int | None = None,
    prefetch: int = 4,
    **source_kwargs,
) -> DataIterator:
    """An infinite, shuffled, deterministic iterator of this process's share of each batch.

    Args:
      name: a key of `DATASETS`.
      global_batch_size: examples per step over all processes; divisible by process_count.
      seed: non-negative int; fixes the stream (synthetic draws or the per-epoch shuffles).
      split: "train" or "test" (synthetic, digits) or a TFDS split string.
      process_index, process_count: default `jax.process_index()` / `jax.process_count()`.
      data_dir: TFDS data directory.
      num_threads: grain reader threads; default 0 (synchronous) for synthetic data, 2 else.
      prefetch: batches prefetched per thread-pool (when num_threads > 0).
      **source_kwargs: dataset options, e.g. means=, stds=, weights= for "gmm".

    Returns:
      A `DataIterator` yielding {"x1": float32 (L, *shape), "label": int32 (L,)} with
      L = global_batch_size // process_count; checkpoint it with get_state / set_state.
    """
    ds_spec = spec(name)
    _check_int("global_batch_size", global_batch_size, 1)
    _check_int("seed", seed, 0)
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    _check_int("process_count", process_count, 1)
    _check_int("process_index", process_index, 0)
    if process_index >= process_count:
        raise ValueError(
            f"process_index must be < process_count={process_count}; got {process_index}"
        )
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by "
            f"process_count={process_count}"
        )
    source = open_source(name, split=split, seed=seed, data_dir=data_dir, **source_kwargs)
    local = global_batch_size // process_count
    batches = _LocalBatches(
        source,
        global_batch_size=global_batch_size,
        local_batch_size=local,
        process_index=process_index,
        seed=seed,
    )
    check = functools.partial(
        validate_batch, name, shape=source.shape, num_classes=ds_spec.num_classes
    )
    dataset = grain.MapDataset.source(batches).map(check)
    if num_threads is None:
        num_threads = 0 if ds_spec.synthetic else 2
    _check_int("num_threads", num_threads, 0)
    read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    ident = {
        "dataset": name,
        "split": split,
        "seed": int(seed),
        "global_batch_size": int(global_batch_size),
    }
    return DataIterator(dataset, read_options, ident)


def time_batches(iterator: DataIterator, num_batches: int = 100) -> float:
    """Mean seconds per `next(iterator)` over num_batches (after one warm-up batch)."""
    next(iterator)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(iterator)
    return (time.perf_counter() - start) / num_batches
