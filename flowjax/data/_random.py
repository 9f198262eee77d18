"""Counter-based random numbers: record i of a stream is a pure function of (key, i).

Each record owns a fixed block of Philox-4x64 counters, so any range of records can be
generated in one vectorised call, and the result never depends on how the stream was cut
into batches or processes (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3").
"""

import numpy as np

_SPLIT_CODES = {"train": 0, "test": 1}
_TWO_POW_M53 = 2.0**-53


def stream_key(seed: int, split: str) -> np.ndarray:
    """A Philox key (2 x uint64) for the synthetic stream of `seed` and `split`."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    if split not in _SPLIT_CODES:
        raise ValueError(
            f"split must be one of {sorted(_SPLIT_CODES)} for synthetic data; got {split!r}"
        )
    return np.random.SeedSequence(int(seed), spawn_key=(_SPLIT_CODES[split],)).generate_state(
        2, np.uint64
    )


def counter_uniforms(key: np.ndarray, start: int, stop: int, k: int) -> np.ndarray:
    """Uniforms in the open interval (0, 1) for records [start, stop), shape (stop - start, k).

    Record i uses Philox counters i*m + 1 .. i*m + m with m = ceil(k / 4).
    """
    n = stop - start
    m = -(-k // 4)
    raw = np.random.Philox(key=key, counter=start * m).random_raw(4 * m * n)
    raw = raw.reshape(n, 4 * m)[:, :k]
    # 53 random bits, centred in their cell: never exactly 0 or 1 (safe for log / ndtri).
    return ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * _TWO_POW_M53


def open_uniforms(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Uniforms in the open interval (0, 1) from a numpy Generator (same grid as above)."""
    return (rng.integers(0, 2**53, size=shape).astype(np.float64) + 0.5) * _TWO_POW_M53
