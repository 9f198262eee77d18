"""Samplers: adaptive/fixed ODE solves, reverse-time SDE, DDPM ancestral steps, guidance.

Everything runs inside `jax.jit` through diffrax or `lax.scan`; no host-side solver.
"""

from flowjax.sampling._ddpm import sample_ddpm as sample_ddpm
from flowjax.sampling._guidance import as_velocity as as_velocity
from flowjax.sampling._guidance import cfg as cfg
from flowjax.sampling._integrate import ADAPTIVE_SOLVERS as ADAPTIVE_SOLVERS
from flowjax.sampling._integrate import SOLVERS as SOLVERS
from flowjax.sampling._integrate import get_solver as get_solver
from flowjax.sampling._integrate import time_grid as time_grid
from flowjax.sampling._ode import sample_ode as sample_ode
from flowjax.sampling._sde import diffusion_g2 as diffusion_g2
from flowjax.sampling._sde import sample_sde as sample_sde

__all__ = [
    "ADAPTIVE_SOLVERS",
    "SOLVERS",
    "as_velocity",
    "cfg",
    "diffusion_g2",
    "get_solver",
    "sample_ddpm",
    "sample_ode",
    "sample_sde",
    "time_grid",
]
