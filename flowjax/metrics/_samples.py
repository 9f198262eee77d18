"""Two-sample metrics for low-dimensional data, path straightness, and likelihood helpers.

All sample metrics run on the host in float64 (numpy/scipy): they are evaluation code, called
outside `jit` on arrays of a few thousand points, where exactness matters more than speed.
JAX arrays are accepted and converted.

"NFE at fixed tolerance" needs no code here: it is `info["nfe"]` returned by
`fj.sampling.sample_ode(v, x0, solver="dopri5", rtol=..., atol=...)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import scipy.optimize
import scipy.sparse
from jaxtyping import ArrayLike, Float
from scipy.spatial.distance import cdist

__all__ = [
    "wasserstein2",
    "energy_distance",
    "mmd2",
    "median_bandwidth",
    "histogram_kl",
    "checkerboard_density",
    "nll",
    "flow_nll",
    "straightness",
]

_BLOCK = 1024  # rows per block of pairwise distances: bounds memory at _BLOCK * M floats


def _as_points(name: str, x, dim: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty array of shape (N, D), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(
            f"{name} must have D = {dim} columns to match the other set, got {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _pair(x, y, min_size: int = 1):
    x = _as_points("x", x)
    y = _as_points("y", y, dim=x.shape[1])
    if x.shape[0] < min_size or y.shape[0] < min_size:
        raise ValueError(
            f"x and y need at least {min_size} points each, got {x.shape[0]} and {y.shape[0]}"
        )
    return x, y


def _pairwise_sum(x, y, fn, metric: str) -> float:
    """Sum of fn(d(x_i, y_j)) over all pairs, in row blocks to bound memory."""
    total = 0.0
    for i in range(0, x.shape[0], _BLOCK):
        total += float(np.sum(fn(cdist(x[i : i + _BLOCK], y, metric=metric))))
    return total


# ------------------------------------------------------------------------------------------
# Wasserstein-2


def wasserstein2(
    x: Float[ArrayLike, "N D"], y: Float[ArrayLike, "M D"], *, squared: bool = False
) -> float:
    """Exact W2 between the empirical (uniform) measures on x and y.

    D = 1: the monotone (sorted) coupling is optimal, so W2^2 = int_0^1 |F^-1(u) - G^-1(u)|^2 du
    on the empirical quantile functions, exact for any sizes in O((N + M) log(N + M)).
    D > 1, equal sizes: an optimal assignment (scipy's `linear_sum_assignment`, O(N^3)).
    D > 1, unequal sizes: the exact optimal-transport linear program with N*M variables,
    solved by HiGHS (no subsampling, no entropic smoothing). Cost |x_i - y_j|^2.

    Args:
      x: (N, D) samples.
      y: (M, D) samples.
      squared: return W2^2 instead of W2.

    Returns:
      W2 (or W2^2) as a Python float.
    """
    x, y = _pair(x, y)
    if x.shape[1] == 1:
        w2sq = _w2sq_1d(np.sort(x[:, 0]), np.sort(y[:, 0]))
        return w2sq if squared else math.sqrt(w2sq)
    cost = cdist(x, y, metric="sqeuclidean")
    n, m = cost.shape
    if n == m:
        rows, cols = scipy.optimize.linear_sum_assignment(cost)
        w2sq = float(cost[rows, cols].mean())
    else:
        w2sq = _ot_lp(cost)
    w2sq = max(w2sq, 0.0)
    return w2sq if squared else math.sqrt(w2sq)


def _w2sq_1d(xs: np.ndarray, ys: np.ndarray) -> float:
    # Both quantile functions are constant between consecutive points of {i/n} U {j/m}.
    n, m = xs.shape[0], ys.shape[0]
    right = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
    left = np.concatenate([[0.0], right[:-1]])
    mid = 0.5 * (left + right)
    i = np.minimum((mid * n).astype(int), n - 1)
    j = np.minimum((mid * m).astype(int), m - 1)
    return float(np.sum((right - left) * (xs[i] - ys[j]) ** 2))


def _ot_lp(cost: np.ndarray) -> float:
    # Kantorovich problem: min <C, P> s.t. P 1 = 1/n, P^T 1 = 1/m, P >= 0; P flattened row-major.
    n, m = cost.shape
    rows = scipy.sparse.kron(scipy.sparse.eye(n), np.ones((1, m)))
    cols = scipy.sparse.kron(np.ones((1, n)), scipy.sparse.eye(m))
    a_eq = scipy.sparse.vstack([rows, cols]).tocsr()
    b_eq = np.concatenate([np.full(n, 1.0 / n), np.full(m, 1.0 / m)])
    res = scipy.optimize.linprog(
        cost.ravel(), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs"
    )
    if res.status != 0:
        raise RuntimeError(f"wasserstein2: the OT linear program failed: {res.message}")
    return float(res.fun)


# ------------------------------------------------------------------------------------------
# Energy distance and MMD


def energy_distance(x: Float[ArrayLike, "N D"], y: Float[ArrayLike, "M D"]) -> float:
    """Unbiased energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| (Székely & Rizzo 2013).

    The within-set means exclude the diagonal (U-statistics), so the estimate is unbiased and
    can be slightly negative when x and y come from the same distribution.
    """
    x, y = _pair(x, y, min_size=2)
    n, m = x.shape[0], y.shape[0]
    dist = lambda d: d  # noqa: E731
    xy = _pairwise_sum(x, y, dist, "euclidean") / (n * m)
    xx = _pairwise_sum(x, x, dist, "euclidean") / (n * (n - 1))  # diagonal is exactly 0
    yy = _pairwise_sum(y, y, dist, "euclidean") / (m * (m - 1))
    return 2.0 * xy - xx - yy


def median_bandwidth(x: Float[ArrayLike, "N D"], y: Float[ArrayLike, "M D"] | None = None) -> float:
    """Median heuristic: the median pairwise distance among the pooled points (i < j).

    At most 2,000 pooled points are used (evenly spaced indices, deterministic).
    """
    pts = _as_points("x", x)
    if y is not None:
        pts = np.concatenate([pts, _as_points("y", y, dim=pts.shape[1])])
    if pts.shape[0] < 2:
        raise ValueError("median_bandwidth needs at least 2 points")
    if pts.shape[0] > 2000:
        pts = pts[np.linspace(0, pts.shape[0] - 1, 2000).astype(int)]
    d = cdist(pts, pts)[np.triu_indices(pts.shape[0], k=1)]
    h = float(np.median(d))
    if h <= 0:
        h = float(np.max(d))
    if h <= 0:
        raise ValueError("median_bandwidth: all points coincide, the bandwidth is undefined")
    return h


def mmd2(
    x: Float[ArrayLike, "N D"],
    y: Float[ArrayLike, "M D"],
    *,
    bandwidth: float | Sequence[float] | None = None,
) -> float:
    """Unbiased MMD^2 with a Gaussian RBF kernel (Gretton et al. 2012, eq. (3)).

    k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2)) over the given bandwidths h (a sum of
    characteristic kernels is characteristic).

    Args:
      x: (N, D) samples, N >= 2.
      y: (M, D) samples, M >= 2.
      bandwidth: one bandwidth, a list of them, or None for the median heuristic on the pooled
        sample (`median_bandwidth`).

    Returns:
      The unbiased estimate of MMD^2 (can be slightly negative when x and y match).
    """
    x, y = _pair(x, y, min_size=2)
    if bandwidth is None:
        hs = [median_bandwidth(x, y)]
    else:
        hs = [float(h) for h in np.atleast_1d(np.asarray(bandwidth, dtype=np.float64))]
    if not hs or any(not (h > 0 and math.isfinite(h)) for h in hs):
        raise ValueError(f"mmd2: bandwidth must be positive and finite, got {bandwidth!r}")
    inv = [1.0 / (2.0 * h * h) for h in hs]
    kernel = lambda d2: sum(np.exp(-c * d2) for c in inv)  # noqa: E731
    n, m = x.shape[0], y.shape[0]
    k0 = float(len(hs))  # k(a, a)
    kxx = (_pairwise_sum(x, x, kernel, "sqeuclidean") - n * k0) / (n * (n - 1))
    kyy = (_pairwise_sum(y, y, kernel, "sqeuclidean") - m * k0) / (m * (m - 1))
    kxy = _pairwise_sum(x, y, kernel, "sqeuclidean") / (n * m)
    return kxx + kyy - 2.0 * kxy


# ------------------------------------------------------------------------------------------
# Histogram KL on 2D data (checkerboard protocol)


def checkerboard_density(
    x: Float[ArrayLike, "N 2"], *, num_cells: int = 4, low: float = -1.0, high: float = 1.0
) -> Float[np.ndarray, " N"]:
    """Density of the uniform checkerboard on [low, high]^2.

    The square is cut into num_cells x num_cells cells; cell (i, j) (i along x[:, 0], counted
    from `low`) is filled when i + j is even. The density is constant on filled cells and 0
    elsewhere.
    """
    x = _as_points("x", x, dim=2)
    if num_cells < 1 or not high > low:
        raise ValueError(
            f"checkerboard_density: need num_cells >= 1 and high > low, got "
            f"num_cells={num_cells}, low={low}, high={high}"
        )
    width = (high - low) / num_cells
    inside = np.all((x >= low) & (x < high), axis=1)
    idx = np.clip(np.floor((x - low) / width).astype(int), 0, num_cells - 1)
    filled = (idx[:, 0] + idx[:, 1]) % 2 == 0
    num_filled = (num_cells * num_cells + 1) // 2
    return np.where(inside & filled, 1.0 / (num_filled * width * width), 0.0)


def histogram_kl(
    target: Float[ArrayLike, "N 2"] | Callable[[np.ndarray], np.ndarray],
    samples: Float[ArrayLike, "M 2"],
    *,
    bins: int = 50,
    range: tuple[float, float] = (-1.0, 1.0),  # as numpy.histogram2d
    eps: float = 1e-10,
) -> float:
    """KL(target || model) between 2D densities on a bins x bins histogram grid.

    Protocol of Boffi, Albergo & Vanden-Eijnden 2025 (arXiv:2505.18825, App. G.1): model
    samples (they use 64,000) are histogrammed on an M x M grid, M = 50, over [-1, 1]^2, and
    KL(rho_1 || rho_hat) = sum_ij dx^2 rho_1(x_ij) log(rho_1(x_ij) / rho_hat(x_ij)) is
    evaluated by quadrature at the bin centres x_ij, with the analytic target density rho_1.
    The direction is data || model (the sum is weighted by the target). Their eq. (103) does
    not state a smoothing term; here eps is added to the model's density in every bin so that
    an empty bin inside the target's support costs a large but finite amount. The model
    density is count / (M_total * dx^2) with M_total counting samples outside the grid too,
    so mass the model puts outside the range is penalised rather than renormalised away.
    The quadrature is exact for a piecewise-constant target whose cell edges lie on bin
    edges (e.g. `checkerboard_density` with bins a multiple of num_cells).

    Args:
      target: a density callable rho_1(x) -> (N,) evaluated at bin centres (the paper's
        protocol), or (N, 2) target samples, histogrammed the same way (empty target bins
        contribute 0).
      samples: (M, 2) model samples.
      bins: number of bins per axis.
      range: (low, high), the same for both axes.
      eps: density floor added to the model histogram.

    Returns:
      KL in nats.
    """
    samples = _as_points("samples", samples, dim=2)
    low, high = (float(r) for r in range)
    if bins < 1 or not high > low or eps < 0:
        raise ValueError(
            f"histogram_kl: need bins >= 1, high > low, eps >= 0; got bins={bins}, "
            f"range={range}, eps={eps}"
        )
    edges = np.linspace(low, high, bins + 1)
    area = ((high - low) / bins) ** 2

    def hist_density(pts):
        counts, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=[edges, edges])
        return counts / (pts.shape[0] * area)

    if callable(target):
        centres = 0.5 * (edges[:-1] + edges[1:])
        cx, cy = np.meshgrid(centres, centres, indexing="ij")
        p = np.asarray(target(np.stack([cx.ravel(), cy.ravel()], axis=1)), dtype=np.float64)
        if p.shape != (bins * bins,):
            raise ValueError(
                f"histogram_kl: target density must return shape ({bins * bins},), got {p.shape}"
            )
        p = p.reshape(bins, bins)
    else:
        p = hist_density(_as_points("target", target, dim=2))
    q = hist_density(samples) + eps
    support = p > 0
    return float(area * np.sum(p[support] * np.log(p[support] / q[support])))


# ------------------------------------------------------------------------------------------
# Likelihood


def nll(log_prob: Callable, x: Float[ArrayLike, " B *D"]) -> float:
    """Mean negative log-likelihood -mean_i log p(x_i) in nats, e.g. `nll(gmm.log_prob, x)`."""
    logp = np.asarray(log_prob(x), dtype=np.float64)
    if logp.ndim != 1 or logp.shape[0] != np.shape(x)[0]:
        raise ValueError(
            f"nll: log_prob must return one value per example, shape "
            f"({np.shape(x)[0]},), got {logp.shape}"
        )
    return float(-np.mean(logp))


def flow_nll(v: Callable, x: Float[ArrayLike, " B *D"], **kwargs) -> tuple[float, dict]:
    """Mean NLL of x under the flow of velocity field v, via `fj.likelihood.log_prob`.

    Args:
      v: velocity field v(x, t) -> (B, *D) (t = 0 noise, t = 1 data).
      x: (B, *D) data points.
      **kwargs: passed on to `fj.likelihood.log_prob` (divergence=, rtol=, atol=, key= ...).

    Returns:
      (mean NLL in nats, the info dict from `log_prob`).
    """
    from flowjax import likelihood  # lazy: written separately, heavier import

    logp, info = likelihood.log_prob(v, x, **kwargs)
    return float(-np.mean(np.asarray(logp, dtype=np.float64))), info


# ------------------------------------------------------------------------------------------
# Straightness


def straightness(
    trajectory: Float[ArrayLike, "T N *D"],
    times: Float[ArrayLike, " T"],
    velocity: Callable | None = None,
) -> float:
    """Straightness S of ODE trajectories (Liu, Gong & Liu 2022, "Flow straight and fast").

    S = 1/(t_T - t_0) int E |(x_T - x_0)/(t_T - t_0) - v(x_t, t)|^2 dt, which for t in
    [0, 1] is Liu et al.'s int_0^1 E |(x_1 - x_0) - v(x_t, t)|^2 dt; S = 0 iff every
    trajectory is a straight line travelled at constant speed. The time integral is the
    trapezoid rule over the given (possibly non-uniform) times.

    Args:
      trajectory: (T, N, *D) states x_{t_k} of N trajectories at T >= 2 increasing times.
      times: (T,) the times.
      velocity: the field v(x, t) with x (N, *D) and scalar t. If None, v is estimated by
        second-order finite differences of the trajectory (np.gradient), exact for paths
        that are quadratic in t.

    Returns:
      S as a Python float.
    """
    traj = np.asarray(trajectory, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if traj.ndim < 3 or times.ndim != 1 or times.shape[0] != traj.shape[0] or traj.shape[0] < 2:
        raise ValueError(
            f"straightness: need trajectory (T, N, *D) and times (T,) with T >= 2, "
            f"got {traj.shape} and {times.shape}"
        )
    if not np.all(np.diff(times) > 0):
        raise ValueError("straightness: times must be strictly increasing")
    duration = times[-1] - times[0]
    if velocity is None:
        vel = np.gradient(traj, times, axis=0, edge_order=2 if traj.shape[0] > 2 else 1)
    else:
        vel = np.stack(
            [
                np.asarray(velocity(traj[k], times[k]), dtype=np.float64)
                for k in np.arange(traj.shape[0])
            ]
        )
        if vel.shape != traj.shape:
            raise ValueError(
                f"straightness: velocity returned {vel.shape[1:]}, expected {traj.shape[1:]}"
            )
    chord = (traj[-1] - traj[0]) / duration
    dev = np.sum((vel - chord[None]) ** 2, axis=tuple(range(2, traj.ndim))).mean(axis=1)
    return float(np.trapezoid(dev, times) / duration)
