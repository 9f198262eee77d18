"""Flow maps: two-time networks X(x, s, t) = x + (t - s) u(x, s, t), their objectives,
jump samplers and look-ahead guidance.

    X = fj.flowmaps.as_callable(apply_fn, params)        # two-time apply fn -> X(x, s, t)
    x1 = fj.flowmaps.sample(X, x0, num_steps=2)          # jumps 0 -> 1/2 -> 1

The network is called `apply_fn(params, x, t, s=s)`: destination time t positional, start
time s keyword (see `_map.py`). Objectives are `fj.objectives.AbstractObjective` modules
(`LMD(path=..., teacher=...)`, ...) called as `objective(params, key, batch, *, model=None)
-> (scalar, aux)`, `model` being the two-time apply function; each module keeps a
`loss(params, key, batch, *, model, path, **hyperparameters)` shorthand.
`FLOWMAP_OBJECTIVES` names them for the global objectives registry.
"""

from flowjax.flowmaps import consistency_distill as consistency_distill
from flowjax.flowmaps import consistency_training as consistency_training
from flowjax.flowmaps import emd as emd
from flowjax.flowmaps import lmd as lmd
from flowjax.flowmaps import lsd as lsd
from flowjax.flowmaps import meanflow as meanflow
from flowjax.flowmaps import progressive as progressive
from flowjax.flowmaps import shortcut as shortcut
from flowjax.flowmaps._guidance import LOOKAHEADS as LOOKAHEADS
from flowjax.flowmaps._guidance import RESAMPLERS as RESAMPLERS
from flowjax.flowmaps._guidance import best_of_n as best_of_n
from flowjax.flowmaps._guidance import guided_sample as guided_sample
from flowjax.flowmaps._guidance import importance_sample as importance_sample
from flowjax.flowmaps._guidance import lookahead_fn as lookahead_fn
from flowjax.flowmaps._map import BoundFlowMap as BoundFlowMap
from flowjax.flowmaps._map import FlowMap as FlowMap
from flowjax.flowmaps._map import as_callable as as_callable
from flowjax.flowmaps._map import flow_map_apply as flow_map_apply
from flowjax.flowmaps._map import semigroup_violation as semigroup_violation
from flowjax.flowmaps._map import velocity_of as velocity_of
from flowjax.flowmaps._ode import SOLVERS as SOLVERS
from flowjax.flowmaps._ode import ODEFlowMap as ODEFlowMap
from flowjax.flowmaps._ode import ode_average_velocity as ode_average_velocity
from flowjax.flowmaps._ode import ode_flow_map as ode_flow_map
from flowjax.flowmaps._sample import sample as sample
from flowjax.flowmaps._sample import sample_stochastic as sample_stochastic
from flowjax.flowmaps.consistency_distill import ConsistencyDistillation as ConsistencyDistillation
from flowjax.flowmaps.consistency_training import ConsistencyTraining as ConsistencyTraining
from flowjax.flowmaps.emd import EMD as EMD
from flowjax.flowmaps.lmd import LMD as LMD
from flowjax.flowmaps.lsd import LSD as LSD
from flowjax.flowmaps.meanflow import MeanFlow as MeanFlow
from flowjax.flowmaps.progressive import Progressive as Progressive
from flowjax.flowmaps.shortcut import Shortcut as Shortcut
from flowjax.objectives import OBJECTIVES as _OBJECTIVES

# name -> "module:Class": the flow-map entries of the global objectives registry.
FLOWMAP_OBJECTIVES: dict[str, str] = {
    name: target for name, target in _OBJECTIVES.items() if target.startswith("flowjax.flowmaps.")
}

__all__ = [
    "EMD",
    "FLOWMAP_OBJECTIVES",
    "LMD",
    "LOOKAHEADS",
    "LSD",
    "RESAMPLERS",
    "SOLVERS",
    "BoundFlowMap",
    "ConsistencyDistillation",
    "ConsistencyTraining",
    "FlowMap",
    "MeanFlow",
    "ODEFlowMap",
    "Progressive",
    "Shortcut",
    "as_callable",
    "best_of_n",
    "consistency_distill",
    "consistency_training",
    "emd",
    "flow_map_apply",
    "guided_sample",
    "importance_sample",
    "lmd",
    "lookahead_fn",
    "lsd",
    "meanflow",
    "ode_average_velocity",
    "ode_flow_map",
    "progressive",
    "sample",
    "sample_stochastic",
    "semigroup_violation",
    "shortcut",
    "velocity_of",
]
