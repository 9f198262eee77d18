"""Training objectives, their time distributions, loss weightings and preconditioning.

Every objective is a pure function with one signature,

    loss(params, key, batch, *, model, path, ...) -> (scalar_loss, aux_dict)

where `model` is an apply function model(params, x, t, *, y=None, key=None). `OBJECTIVES` maps
names to "module:function" strings imported on first use, so a new objective is a new module
plus one registry line; `make_objective(name, **kwargs)` binds the keyword arguments.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable

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
    "flow_matching": "flowjax.objectives.flow_matching:loss",
    "diffusion": "flowjax.objectives.diffusion:loss",
    # Flow-map objectives (flowjax/flowmaps/, DESIGN.md): same signature, model = two-time net.
    "lmd": "flowjax.flowmaps.lmd:loss",
    "emd": "flowjax.flowmaps.emd:loss",
    "progressive": "flowjax.flowmaps.progressive:loss",
    "consistency_distill": "flowjax.flowmaps.consistency_distill:loss",
    "shortcut": "flowjax.flowmaps.shortcut:loss",
    "meanflow": "flowjax.flowmaps.meanflow:loss",
    "lsd": "flowjax.flowmaps.lsd:loss",
    "consistency_training": "flowjax.flowmaps.consistency_training:loss",
}

_POSITIONAL = ("params", "key", "batch")


def get_objective(name: str) -> Callable:
    """The loss function registered under `name` (see `OBJECTIVES`), imported lazily."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; valid objectives: {sorted(OBJECTIVES)}")
    module_name, _, attr = OBJECTIVES[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def make_objective(name: str, **kwargs) -> Callable:
    """functools.partial of objective `name` with its keyword arguments bound.

    Every kwarg must be a keyword-only argument of that loss (TypeError otherwise); values are
    checked now when the objective's module provides `validate_kwargs`.
    """
    fn = get_objective(name)
    valid = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(
            f"make_objective({name!r}): unknown keyword argument(s) {unknown}; "
            f"valid keywords: {valid}"
        )
    validate = getattr(importlib.import_module(fn.__module__), "validate_kwargs", None)
    if validate is not None:
        validate(**kwargs)
    return functools.partial(fn, **kwargs)
