"""Samplers: adaptive/fixed ODE solves on time grids, multistep diffusion solvers (DDIM,
DPM-Solver++, UniPC, DEIS), reverse-time SDE, DDPM ancestral steps, guidance.

Everything runs inside `jax.jit` through diffrax or `lax.scan`; no host-side solver.
"""

from flowjax.sampling import grids as grids
from flowjax.sampling._ddim import DDIM as DDIM
from flowjax.sampling._ddpm import sample_ddpm as sample_ddpm
from flowjax.sampling._deis import DEIS as DEIS
from flowjax.sampling._dpmpp import DPMSolverPP as DPMSolverPP
from flowjax.sampling._exponential import AbstractMultistep as AbstractMultistep
from flowjax.sampling._guidance import as_velocity as as_velocity
from flowjax.sampling._guidance import cfg as cfg
from flowjax.sampling._integrate import ADAPTIVE_SOLVERS as ADAPTIVE_SOLVERS
from flowjax.sampling._integrate import ERROR_NORMS as ERROR_NORMS
from flowjax.sampling._integrate import SOLVERS as SOLVERS
from flowjax.sampling._integrate import get_solver as get_solver
from flowjax.sampling._integrate import time_grid as time_grid
from flowjax.sampling._multistep import MULTISTEP_SOLVERS as MULTISTEP_SOLVERS
from flowjax.sampling._multistep import get_multistep as get_multistep
from flowjax.sampling._multistep import sample_multistep as sample_multistep
from flowjax.sampling._ode import sample_ode as sample_ode
from flowjax.sampling._sde import diffusion_g2 as diffusion_g2
from flowjax.sampling._sde import sample_sde as sample_sde
from flowjax.sampling._spec import SAMPLER_SPECS as SAMPLER_SPECS
from flowjax.sampling._spec import SamplerSpec as SamplerSpec
from flowjax.sampling._spec import parse_sampler as parse_sampler
from flowjax.sampling._spec import sample_with as sample_with
from flowjax.sampling._unipc import UniPC as UniPC

__all__ = [
    "ADAPTIVE_SOLVERS",
    "AbstractMultistep",
    "DDIM",
    "DEIS",
    "DPMSolverPP",
    "ERROR_NORMS",
    "MULTISTEP_SOLVERS",
    "SAMPLER_SPECS",
    "SOLVERS",
    "SamplerSpec",
    "UniPC",
    "get_multistep",
    "grids",
    "parse_sampler",
    "sample_multistep",
    "as_velocity",
    "cfg",
    "diffusion_g2",
    "get_solver",
    "sample_ddpm",
    "sample_ode",
    "sample_sde",
    "sample_with",
    "time_grid",
]
