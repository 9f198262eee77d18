"""flowjax: flow matching and diffusion on one footing, in JAX.

Submodules are imported lazily so that `import flowjax as fj` stays cheap and
`fj.paths`, `fj.sampling`, ... load on first use.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "analytic",
    "couplings",
    "data",
    "discrete",
    "flowmaps",
    "likelihood",
    "manifolds",
    "metrics",
    "models",
    "objectives",
    "paths",
    "pretrained",
    "reward",
    "sampling",
    "sources",
    "studies",
    "train",
)


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'flowjax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
