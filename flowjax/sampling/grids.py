"""Time grids for fixed-step samplers: `fj.sampling.grids`.

A grid is a small immutable pytree that turns (num_steps, t0, t1) into the num_steps + 1 times
a sampler visits, in flowjax time (t = 0 noise, t = 1 data). Its fields are run-time values and
the step count is traced, so a new grid of the same kind, new ends or a new step count do not
recompile the sampler. An explicit 1-D array is used exactly as given.

    Uniform()                  t_i = t0 + (i / N) (t1 - t0)
    Shift(shift=3.0)           SD3's resolution shift of the uniform grid (Esser et al. 2024)
    EDM(path, rho=7.0)         Karras et al. 2022, eq. (5), mapped to t through the path's log-SNR
    LogSNR(path)               uniform in log-SNR (Lu et al. 2022, "DPM-Solver", sec. 3.3)

The noise-level grids (EDM, LogSNR) work on EDM's noise level s = sigma(t) / alpha(t), i.e.
log-SNR lambda = -2 log s, so the same grid serves every affine path: a time is recovered with
`path.t_from_log_snr`. As in Karras et al. they span [sigma_min, sigma_max] (default 0.002 and
80, clipped to the path's own range on [t0, t1]); when the path is still less noisy than
sigma_min before t1 (it ends on the data, sigma(1) = 0), the last step goes from sigma_min to
t1, EDM's sigma_N = 0, and the N - 1 steps before it follow the formula. The first time is the
time of sigma_max: a solve then starts there from x0 (as in EDM and Meta's flow_matching image
recipe), not at t0.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from flowjax.paths import AffinePath

__all__ = [
    "AbstractGrid",
    "Uniform",
    "Shift",
    "EDM",
    "LogSNR",
    "Explicit",
    "GRIDS",
    "get_grid",
    "resolve",
]


def _fractions(n, size: int, dtype) -> Array:
    """u_i = min(i / n, 1) for i < size (n may be traced)."""
    i = jnp.arange(size, dtype=dtype)
    return jnp.minimum(i / jnp.asarray(n, dtype), 1.0)


class AbstractGrid(eqx.Module):
    """Base class: `times(num_steps, t0, t1, size)` -> (size,) times.

    Entries 0..num_steps are the grid (first t_start, last t1); the rest repeat the last time,
    so that one static `size` serves every step count up to size - 1.
    """

    @abc.abstractmethod
    def times(self, num_steps, t0, t1, size: int) -> Float[Array, " size"]:
        """The grid padded to `size` entries."""

    def __call__(self, num_steps: int, t0: float = 0.0, t1: float = 1.0) -> Float[Array, " N1"]:
        """The num_steps + 1 times of this grid from t0 towards t1 (for inspection)."""
        dtype = jnp.result_type(float)
        t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
        if isinstance(self, Explicit):
            return self.times(num_steps, t0, t1, num_steps + 1)
        return padded_times(self, jnp.asarray(num_steps, jnp.int32), t0, t1, size=num_steps + 1)


class Uniform(AbstractGrid):
    """Equal steps: t_i = t0 + (i / N) (t1 - t0), ends exact."""

    def times(self, num_steps, t0, t1, size):
        u = _fractions(num_steps, size, t0.dtype)
        return jnp.where(u >= 1.0, t1, t0 + u * (t1 - t0)).at[0].set(t0)


class Shift(AbstractGrid):
    """The uniform grid warped by SD3's time shift (Esser et al. 2024, sec. 5.3.2, eq. (23)).

    In their time (1 = noise) t' = s t / (1 + (s - 1) t); in flowjax time (0 = noise) this is
    t = u / (u + s (1 - u)) for uniform u: s > 1 spends more steps near the noise (SD3 uses
    s = 3 at 1024^2; Flux's resolution-dependent shift is s = exp(mu)). On CondOT it multiplies
    the noise-to-signal ratio sigma / alpha by s. Applied on [t0, t1].
    """

    shift: float = 3.0

    def __check_init__(self):
        val = _concrete(self.shift)
        if val is not None and not (val.ndim == 0 and val > 0):
            raise ValueError(f"Shift: shift must be a positive scalar, got {self.shift!r}")

    def times(self, num_steps, t0, t1, size):
        u = _fractions(num_steps, size, t0.dtype)
        w = u / (u + self.shift * (1.0 - u))
        return jnp.where(u >= 1.0, t1, t0 + w * (t1 - t0)).at[0].set(t0)


class _NoiseLevelGrid(AbstractGrid):
    """Shared part of EDM / LogSNR: a spacing of noise levels, mapped to time by the path."""

    path: AffinePath
    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def __check_init__(self):
        if not isinstance(self.path, AffinePath):
            raise TypeError(
                f"{type(self).__name__}: path must be an AffinePath (e.g. fj.paths.VP()), "
                f"got {self.path!r}"
            )
        lo, hi = _concrete(self.sigma_min), _concrete(self.sigma_max)
        if lo is not None and hi is not None and not 0 < lo < hi:
            raise ValueError(
                f"{type(self).__name__}: need 0 < sigma_min < sigma_max, got "
                f"sigma_min={self.sigma_min}, sigma_max={self.sigma_max}"
            )

    @abc.abstractmethod
    def _levels(self, u, s_hi, s_lo):
        """log-SNR at fractions u in [0, 1] between noise levels s_hi (u = 0) and s_lo (u = 1)."""

    def times(self, num_steps, t0, t1, size):
        dt = t0.dtype
        lam_t0, lam_t1 = self.path.log_snr(t0), self.path.log_snr(t1)
        lam_lo = jnp.maximum(lam_t0, -2.0 * jnp.log(jnp.asarray(self.sigma_max, dt)))
        lam_hi = jnp.minimum(lam_t1, -2.0 * jnp.log(jnp.asarray(self.sigma_min, dt)))
        # Karras et al.: N - 1 steps by the formula, then one to sigma = 0 (here: to t1).
        append = lam_t1 > lam_hi
        n = jnp.asarray(num_steps, jnp.int32)
        m = jnp.where(append, n - 1, n)
        i = jnp.arange(size, dtype=jnp.int32)
        u = jnp.where(m > 0, jnp.minimum(i.astype(dt) / jnp.maximum(m, 1).astype(dt), 1.0), 0.0)
        lam = self._levels(u, jnp.exp(-0.5 * lam_lo), jnp.exp(-0.5 * lam_hi))
        t = jnp.clip(self.path.t_from_log_snr(lam), t0, t1)
        # Exact ends where the grid starts at t0 / ends at t1 (no round trip through log-SNR).
        t = jnp.where((i == 0) & (lam_lo <= lam_t0), t0, t)
        return jnp.where((i > m) | ((i == m) & ~append), t1, t)


class EDM(_NoiseLevelGrid):
    """Karras et al. 2022, eq. (5): s_i = (s_max^(1/p) + i/(N-1) (s_min^(1/p) - s_max^(1/p)))^p.

    With p = rho and noise levels s = sigma / alpha of `path`; rho = 7 is EDM's choice
    (rho = 3 balances the truncation error, large rho tends to the log-SNR grid).
    """

    rho: float = 7.0

    def __check_init__(self):
        super().__check_init__()
        val = _concrete(self.rho)
        if val is not None and not (val.ndim == 0 and val > 0):
            raise ValueError(f"EDM: rho must be a positive scalar, got {self.rho!r}")

    def _levels(self, u, s_hi, s_lo):
        inv = 1.0 / self.rho
        s = (s_hi**inv + u * (s_lo**inv - s_hi**inv)) ** self.rho
        return -2.0 * jnp.log(s)


class LogSNR(_NoiseLevelGrid):
    """Uniform in log-SNR between sigma_max and sigma_min (Lu et al. 2022, DPM-Solver, sec. 3.3).

    The rho -> infinity limit of the EDM grid; the usual grid of the DPM-Solver family.
    """

    def _levels(self, u, s_hi, s_lo):
        lam_lo, lam_hi = -2.0 * jnp.log(s_hi), -2.0 * jnp.log(s_lo)
        return lam_lo + u * (lam_hi - lam_lo)


class Explicit(AbstractGrid):
    """An explicit array of times, used exactly: ts[0] is the start, ts[-1] the end."""

    ts: Float[Array, " N1"]

    def __init__(self, ts: Float[ArrayLike, " N1"]):
        self.ts = ts if isinstance(ts, jax.Array) else np.asarray(ts)
        if self.ts.ndim != 1 or self.ts.shape[0] < 2:
            raise ValueError(
                f"grid: an explicit grid must be a 1-D array of at least 2 times, got shape "
                f"{self.ts.shape}"
            )

    @property
    def num_steps(self) -> int:
        return self.ts.shape[0] - 1

    def times(self, num_steps, t0, t1, size):
        ts = self.ts
        pad = size - ts.shape[0]
        if isinstance(ts, np.ndarray):
            return jnp.asarray(np.pad(ts, (0, pad), mode="edge"), t0.dtype)
        return jnp.pad(ts.astype(t0.dtype), (0, pad), mode="edge")


GRIDS: dict[str, type[AbstractGrid]] = {
    "uniform": Uniform,
    "shift": Shift,
    "edm": EDM,
    "logsnr": LogSNR,
}

_NEEDS_PATH = frozenset({"edm", "logsnr"})


def get_grid(name: str, path: AffinePath | None = None, **kwargs) -> AbstractGrid:
    """Builds a grid by name ("uniform", "shift", "edm", "logsnr"); the last two need `path`."""
    if not isinstance(name, str) or name not in GRIDS:
        raise ValueError(f"unknown grid {name!r}; valid grids: {', '.join(GRIDS)}")
    if name in _NEEDS_PATH:
        if path is None:
            raise ValueError(f"grid {name!r} needs the model's path (path=...)")
        return GRIDS[name](path, **kwargs)
    return GRIDS[name](**kwargs)


@eqx.filter_jit
def padded_times(grid: AbstractGrid, num_steps, t0, t1, *, size: int):
    """`grid.times` compiled once per grid type and size (step count and ends traced)."""
    return grid.times(num_steps, t0, t1, size)


def _concrete(x):
    """x as a NumPy value when it is known at trace time, else None."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def resolve(grid, num_steps: int | None, t0, t1, caller: str) -> tuple[AbstractGrid, int]:
    """(grid object, step count) from a sampler's `grid=` and `num_steps=` arguments.

    An array becomes `Explicit` and must be strictly monotone from t0 towards t1 and lie in
    [min(t0, t1), max(t0, t1)]; its length fixes num_steps (a given num_steps must agree).
    Named grids need num_steps. Raises one ValueError naming what is wrong.
    """
    if grid is None:
        grid = Uniform()
    if isinstance(grid, str):
        raise TypeError(
            f"{caller}: grid must be a grid object (e.g. fj.sampling.grids.EDM(path)) or an "
            f"array of times, got the string {grid!r}; use fj.sampling.grids.get_grid(name, path)"
        )
    if not isinstance(grid, AbstractGrid):
        grid = Explicit(grid)
    if isinstance(grid, Explicit):
        n = grid.num_steps
        if num_steps is not None and num_steps != n:
            raise ValueError(
                f"{caller}: grid has {n + 1} times ({n} steps) but num_steps={num_steps}; "
                "pass num_steps=None or a grid of num_steps + 1 times"
            )
        _check_explicit(grid.ts, t0, t1, caller)
        return grid, n
    if num_steps is None:
        raise ValueError(f"{caller}: grid {type(grid).__name__} needs num_steps=N")
    if isinstance(grid, _NoiseLevelGrid):
        a, b = _concrete(t0), _concrete(t1)
        if a is not None and b is not None and not a < b:
            raise ValueError(
                f"{caller}: grid {type(grid).__name__} runs from noise to data and needs "
                f"t0 < t1, got t0={float(a)}, t1={float(b)}"
            )
    return grid, num_steps


def _check_explicit(ts, t0, t1, caller: str):
    vals, a, b = _concrete(ts), _concrete(t0), _concrete(t1)
    if vals is None or a is None or b is None:
        return  # traced: checked by the sampler at run time (`check_grid_at_run_time`)
    vals = vals.astype(np.float64)
    lo, hi = min(float(a), float(b)), max(float(a), float(b))
    direction = 1.0 if b >= a else -1.0
    d = np.diff(vals) * direction
    if not np.all(np.isfinite(vals)):
        raise ValueError(f"{caller}: grid has non-finite times: {vals}")
    if not np.all(d > 0):
        k = int(np.argmax(~(d > 0)))
        raise ValueError(
            f"{caller}: grid must be strictly {'increasing' if direction > 0 else 'decreasing'} "
            f"from t0={a:g} towards t1={b:g}; times {k} and {k + 1} are {vals[k]:g}, "
            f"{vals[k + 1]:g}"
        )
    tol = 16 * np.finfo(np.asarray(ts).dtype if np.asarray(ts).dtype.kind == "f" else float).eps
    if vals.min() < lo - tol or vals.max() > hi + tol:
        raise ValueError(
            f"{caller}: grid times must lie in [{lo:g}, {hi:g}] (t0, t1), got "
            f"[{vals.min():g}, {vals.max():g}]"
        )


def check_grid_at_run_time(ts, n, t0, t1, caller: str):
    """Run-time version of the explicit-grid check for traced grids (an equinox error)."""
    i = jnp.arange(ts.shape[0])
    direction = jnp.sign(t1 - t0)
    d = (ts[1:] - ts[:-1]) * direction
    bad_order = jnp.any((d <= 0) & (i[1:] <= n))
    lo, hi = jnp.minimum(t0, t1), jnp.maximum(t0, t1)
    bad_range = jnp.any(((ts < lo) | (ts > hi)) & (i <= n))
    return eqx.error_if(
        ts,
        bad_order | bad_range | ~jnp.all(jnp.isfinite(ts)),
        f"{caller}: grid must be finite, strictly monotone from t0 towards t1 and lie in [t0, t1]",
    )
