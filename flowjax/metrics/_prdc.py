"""Improved precision and recall for generative models (Kynkäänniemi et al. 2019).

Each set's manifold is the union of balls centred at its points with radius the distance to
the point's k-th nearest neighbour within the set (their Sec. 3). Precision is the
fraction of generated points inside the real manifold; recall the fraction of real points
inside the generated manifold. The paper uses k = 3 on VGG-16 features; any features work.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import ArrayLike, Float
from scipy.spatial.distance import cdist

__all__ = ["precision_recall"]

_BLOCK = 1024


def _kth_radii(x: np.ndarray, k: int) -> np.ndarray:
    # Row i of cdist(x, x) includes d(x_i, x_i) = 0 at sorted index 0, so the k-th neighbour
    # is at index k.
    radii = np.empty(x.shape[0])
    for i in range(0, x.shape[0], _BLOCK):
        d = cdist(x[i : i + _BLOCK], x)
        radii[i : i + _BLOCK] = np.partition(d, k, axis=1)[:, k]
    return radii


def _coverage(queries: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    inside = np.empty(queries.shape[0], dtype=bool)
    for i in range(0, queries.shape[0], _BLOCK):
        d = cdist(queries[i : i + _BLOCK], centres)
        inside[i : i + _BLOCK] = np.any(d <= radii[None, :], axis=1)
    return float(inside.mean())


def precision_recall(
    real: Float[ArrayLike, "N D"], fake: Float[ArrayLike, "M D"], *, k: int = 3
) -> tuple[float, float]:
    """Improved precision and recall of `fake` against `real` (Kynkäänniemi et al. 2019).

    Args:
      real: (N, D) features of real data, N > k.
      fake: (M, D) features of generated data, M > k.
      k: neighbourhood size for the manifold radii.

    Returns:
      (precision, recall), each in [0, 1].
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"precision_recall: need real (N, D) and fake (M, D) with the same D, "
            f"got {real.shape} and {fake.shape}"
        )
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"precision_recall: k must be a positive integer, got {k!r}")
    if real.shape[0] <= k or fake.shape[0] <= k:
        raise ValueError(
            f"precision_recall: need more than k = {k} points in each set, got "
            f"{real.shape[0]} and {fake.shape[0]}"
        )
    precision = _coverage(fake, real, _kth_radii(real, k))
    recall = _coverage(real, fake, _kth_radii(fake, k))
    return precision, recall
