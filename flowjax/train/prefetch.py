"""Background prefetching of stacked, device-resident batches with exact iterator states.

A thread reads K batches from the data iterator, stacks them to (K, B, ...), puts them on
the devices and queues them together with the iterator state taken right after the K-th
batch. The loop therefore always knows the state that produces the batch after the last
step it ran, which is what a checkpoint must hold (the iterator itself runs ahead).
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

__all__ = ["chunk_sizes", "Prefetcher", "check_batch"]


def chunk_sizes(start: int, end: int, per_dispatch: int, every: Iterable[int]) -> Iterator[int]:
    """Steps per dispatch from `start` to `end`: at most `per_dispatch`, never across a
    multiple of any period in `every` (logging, checkpoints, evaluation), so those events
    fall on dispatch boundaries whatever step the run (re)started at."""
    every = [int(e) for e in every if e and e > 0]
    step = start
    while step < end:
        nxt = min([end, step + per_dispatch] + [(step // e + 1) * e for e in every])
        yield nxt - step
        step = nxt


def check_batch(batch: dict, shape: tuple[int, ...], local_batch: int) -> None:
    """Raises ValueError if a batch does not have the layout the model was built for."""
    if "x1" not in batch:
        raise ValueError(f"data: batch has no 'x1' entry (keys: {sorted(batch)})")
    x = np.asarray(batch["x1"])
    want = (local_batch, *shape)
    if x.shape != want:
        raise ValueError(
            f"data: batch['x1'] has shape {x.shape}, expected {want} "
            f"(local batch size, *data.shape)"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"data: batch['x1'] must be floating point, got {x.dtype}")
    if "label" in batch and np.asarray(batch["label"]).shape != (local_batch,):
        raise ValueError(
            f"data: batch['label'] has shape {np.asarray(batch['label']).shape}, "
            f"expected ({local_batch},)"
        )


class Prefetcher:
    """Iterates over (k, device batches of shape (k, B, ...), iterator state after them).

    Args:
      iterator: yields host batches (dicts of numpy arrays) and has `get_state()`.
      chunks: the number of steps of each dispatch, in order (see `chunk_sizes`).
      to_device: maps a dict of stacked host arrays to global device arrays.
      check: called on every host batch before use (raises on bad data).
      depth: number of dispatches kept ready ahead of the loop.
    """

    def __init__(
        self,
        iterator: Any,
        chunks: Iterable[int],
        to_device: Callable[[dict], dict],
        *,
        check: Callable[[dict], None] | None = None,
        depth: int = 2,
    ):
        self._iterator = iterator
        self._chunks = iter(chunks)
        self._to_device = to_device
        self._check = check
        self._queue: queue.Queue = queue.Queue(maxsize=max(int(depth), 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True, name="prefetch")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for k in self._chunks:
                host = []
                for _ in range(k):
                    try:
                        batch = next(self._iterator)
                    except StopIteration:
                        raise RuntimeError("data: the iterator ran out of batches") from None
                    if self._check is not None:
                        self._check(batch)
                    host.append(batch)
                state = copy.deepcopy(self._iterator.get_state())
                stacked = {key: np.stack([b[key] for b in host]) for key in host[0]}
                if not self._put((k, self._to_device(stacked), state)):
                    return
            self._put(StopIteration())
        except BaseException as e:  # re-raised in the consumer thread
            self._put(e)

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if isinstance(item, StopIteration):
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
