"""Samplers named by one string, "solver@grid", for sweeps (e.g. the compare study's NFE sweep).

    "heun@edm"       Heun (sample_ode) on the EDM rho = 7 grid, NFE = 2 per step
    "euler"          Euler on the uniform grid
    "dpm++2m"        DPM-Solver++(2M) (sample_multistep) on its default log-SNR grid
    "unipc@edm"      UniPC on the EDM grid

The solver is an ODE solver of `SOLVERS` (fixed steps) or a multistep solver of
`MULTISTEP_SOLVERS`; the grid a name of `grids.GRIDS` (default: uniform for ODE solvers,
log-SNR for multistep ones). `sample_with(spec, model, x0, kind=, path=, nfe=)` runs one at
an exact NFE, with the model converted to a velocity (`as_velocity`) for the ODE solvers.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
from jaxtyping import Array, ArrayLike, Float

from flowjax.paths import AffinePath
from flowjax.sampling import grids as _grids
from flowjax.sampling._guidance import as_velocity
from flowjax.sampling._integrate import SOLVERS, _stages, get_solver
from flowjax.sampling._multistep import MULTISTEP_SOLVERS, sample_multistep
from flowjax.sampling._ode import sample_ode

__all__ = ["SAMPLER_SPECS", "SamplerSpec", "parse_sampler", "sample_with"]

# A sweep that shows each family at its usual best: Euler/Heun on uniform, EDM and log-SNR
# grids; the multistep solvers on log-SNR and EDM grids.
SAMPLER_SPECS: tuple[str, ...] = (
    "euler",
    "euler@edm",
    "heun",
    "heun@edm",
    "heun@logsnr",
    "ddim",
    "ddim@edm",
    "dpm++2m",
    "dpm++2m@edm",
    "dpm++3m",
    "unipc",
    "unipc@edm",
)


class SamplerSpec(eqx.Module):
    """A parsed "solver@grid" name."""

    solver: str
    grid: str

    @property
    def multistep(self) -> bool:
        return self.solver in MULTISTEP_SOLVERS

    @property
    def nfe_per_step(self) -> int:
        """Model evaluations per step (1 for multistep solvers; FSAL solvers not offered)."""
        if self.multistep:
            return 1
        return _stages(get_solver(self.solver, adaptive=False))[0]

    def num_steps(self, nfe: int) -> int:
        """The step count that spends exactly `nfe` evaluations; ValueError if none does."""
        per = self.nfe_per_step
        if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < per or nfe % per:
            raise ValueError(
                f"sampler {self.name!r} spends {per} evaluations per step: nfe must be a "
                f"positive multiple of {per}, got {nfe!r}"
            )
        return nfe // per

    @property
    def name(self) -> str:
        return f"{self.solver}@{self.grid}"


_FIXED_ODE = tuple(s for s in SOLVERS if s not in ("tsit5", "dopri5"))  # FSAL: NFE not per-step


def parse_sampler(spec: str) -> SamplerSpec:
    """ "solver" or "solver@grid" -> SamplerSpec; ValueError naming the valid parts."""
    if not isinstance(spec, str) or spec.count("@") > 1:
        raise ValueError(f"sampler must be a string 'solver' or 'solver@grid', got {spec!r}")
    solver, _, grid = spec.partition("@")
    if solver not in MULTISTEP_SOLVERS and solver not in _FIXED_ODE:
        valid = ", ".join((*_FIXED_ODE, *MULTISTEP_SOLVERS))
        raise ValueError(f"sampler {spec!r}: unknown solver {solver!r}; valid solvers: {valid}")
    grid = grid or ("logsnr" if solver in MULTISTEP_SOLVERS else "uniform")
    if grid not in _grids.GRIDS:
        raise ValueError(
            f"sampler {spec!r}: unknown grid {grid!r}; valid grids: {', '.join(_grids.GRIDS)}"
        )
    return SamplerSpec(solver, grid)


def sample_with(
    spec: str | SamplerSpec,
    model: Callable[[Array, Array], Array],
    x0: Float[ArrayLike, "B *D"],
    *,
    kind: str,
    path: AffinePath,
    nfe: int,
    t0: float = 0.0,
    t1: float = 1.0,
    t_eps: float = 0.0,
    grid_kwargs: dict | None = None,
) -> tuple[Float[Array, "B *D"], dict]:
    """Samples with the sampler `spec` at exactly `nfe` model evaluations.

    Args:
      spec: "solver@grid" (see the module docstring) or a SamplerSpec.
      model: model(x, t) -> prediction of `kind` on `path`.
      x0: noise, shape (B, *D).
      kind, path: what the model predicts, on which path.
      nfe: model evaluations (a multiple of the solver's evaluations per step).
      t0, t1: ends of the grid.
      t_eps: for ODE solvers, clamp the time the model sees to [t_eps, 1 - t_eps]
        (`as_velocity`): eps / score models converted to a velocity are singular where
        alpha = 0 or sigma = 0, which a grid reaching t = 0 or 1 visits.
      grid_kwargs: fields of the grid, e.g. {"sigma_min": 0.05, "sigma_max": 10.0} for the
        EDM / LogSNR grids (their defaults, 0.002 and 80, are EDM's image settings).

    Returns:
      (samples, info) as from `sample_ode` / `sample_multistep`; info["nfe"] == nfe.
    """
    s = spec if isinstance(spec, SamplerSpec) else parse_sampler(spec)
    n = s.num_steps(nfe)
    grid = _grids.get_grid(s.grid, path, **(grid_kwargs or {}))
    if s.multistep:
        return sample_multistep(
            model, x0, kind=kind, path=path, solver=s.solver, num_steps=n, grid=grid, t0=t0, t1=t1
        )
    v = as_velocity(model, kind, path, t_eps=t_eps)
    return sample_ode(v, x0, solver=s.solver, num_steps=n, grid=grid, t0=t0, t1=t1)
