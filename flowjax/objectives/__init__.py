"""Training objectives, their time distributions, loss weightings and preconditioning.

Every objective is a small immutable module (`AbstractObjective`, an `eqx.Module`) whose fields
are its hyperparameters, checked once when it is built, and whose call is the loss with one
signature,

    objective(params, key, batch, *, model=None) -> (scalar_loss, aux_dict)

where `model` is an apply function model(params, x, t, *, s=None, y=None, context=None,
key=None), bound as a field or passed at call time. x0 is drawn from the objective's `source`
(fj.sources.StandardGaussian() by default) given `batch["context"]`, which also reaches the
model as `context=`. `OBJECTIVES` maps names to lazy "module:Class" strings, so a new objective
is a new module plus one registry line; `make_objective(name, **kwargs)` builds one by name.
"""

from __future__ import annotations

import dataclasses

from flowjax import _registry
from flowjax.objectives._common import AbstractObjective as AbstractObjective
from flowjax.objectives.preconditioning import EDMPrecond as EDMPrecond
from flowjax.objectives.timesteps import (
    TIME_DISTS as TIME_DISTS,
)
from flowjax.objectives.timesteps import (
    AbstractTimeDist as AbstractTimeDist,
)
from flowjax.objectives.timesteps import (
    DiscreteDDPM as DiscreteDDPM,
)
from flowjax.objectives.timesteps import (
    EDMLogNormal as EDMLogNormal,
)
from flowjax.objectives.timesteps import (
    LogitNormal as LogitNormal,
)
from flowjax.objectives.timesteps import (
    Uniform as Uniform,
)
from flowjax.objectives.timesteps import (
    get_time_dist as get_time_dist,
)
from flowjax.objectives.weighting import (
    WEIGHTINGS as WEIGHTINGS,
)
from flowjax.objectives.weighting import (
    AbstractWeighting as AbstractWeighting,
)
from flowjax.objectives.weighting import (
    EDMWeighting as EDMWeighting,
)
from flowjax.objectives.weighting import (
    MinSNRWeighting as MinSNRWeighting,
)
from flowjax.objectives.weighting import (
    SNRWeighting as SNRWeighting,
)
from flowjax.objectives.weighting import (
    UniformWeighting as UniformWeighting,
)
from flowjax.objectives.weighting import (
    get_weighting as get_weighting,
)

OBJECTIVES: dict[str, str] = {
    "flow_matching": "flowjax.objectives.flow_matching:FlowMatching",
    "diffusion": "flowjax.objectives.diffusion:Diffusion",
    # Flow-map objectives (flowjax/flowmaps/, DESIGN.md): same signature, model = two-time net.
    "lmd": "flowjax.flowmaps.lmd:LMD",
    "emd": "flowjax.flowmaps.emd:EMD",
    "progressive": "flowjax.flowmaps.progressive:Progressive",
    "consistency_distill": "flowjax.flowmaps.consistency_distill:ConsistencyDistillation",
    "shortcut": "flowjax.flowmaps.shortcut:Shortcut",
    "meanflow": "flowjax.flowmaps.meanflow:MeanFlow",
    "lsd": "flowjax.flowmaps.lsd:LSD",
    "consistency_training": "flowjax.flowmaps.consistency_training:ConsistencyTraining",
    "riemannian_flow_matching": "flowjax.manifolds.objective:RiemannianFlowMatching",
    # Discrete flow matching / masked diffusion (flowjax/discrete/): model -> logits (B, L, V).
    "discrete_ce": "flowjax.discrete.cross_entropy:CrossEntropy",
    "discrete_gkl": "flowjax.discrete.generalized_kl:GeneralizedKL",
    "mdlm": "flowjax.discrete.mdlm:MDLM",
    "discrete_flowmap": "flowjax.discrete.flowmap:FlowMapDistillation",
    # Reward fine-tuning (flowjax/reward/): towards p* ~ p exp(lambda r).
    "adjoint_matching": "flowjax.reward.adjoint_matching:AdjointMatching",
    "reward_weighted": "flowjax.reward.weighted:RewardWeighted",
    "draft": "flowjax.reward.draft:DRaFT",
    "onehot_flow_matching": "flowjax.discrete.onehot:OneHotFlowMatching",
}


def get_objective(name: str) -> type[AbstractObjective]:
    """The objective class registered under `name` (see `OBJECTIVES`), imported lazily."""
    return _registry.lookup(OBJECTIVES, name, "objective")


def make_objective(name: str, **kwargs) -> AbstractObjective:
    """The objective `name` built from its hyperparameters (checked now, by the objective).

    Raises:
      ValueError: an unknown name (the valid ones listed) or a bad value (naming the field).
      TypeError: a keyword the objective does not take (its fields listed) or a bad type.
    """
    cls = get_objective(name)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise TypeError(
            f"make_objective({name!r}): unknown keyword argument(s) {unknown}; "
            f"valid keywords: {fields}"
        )
    return cls(**kwargs)


_CLASSES = {"FlowMatching": "flow_matching", "Diffusion": "diffusion"}


def __getattr__(name):  # the objective classes, imported on first use like the registry
    if name in _CLASSES:
        return get_objective(_CLASSES[name])
    raise AttributeError(f"module 'flowjax.objectives' has no attribute {name!r}")
