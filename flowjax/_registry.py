"""One registry helper behind every name field (paths, couplings, objectives, sources, ...).

A registry is a plain dict `name -> target`, where a target is the object itself (a class or
function) or a lazy "module:attr" string imported on first use, so that registering a new
method is one line and importing a registry imports none of its entries:

    OBJECTIVES = {"flow_matching": "flowjax.objectives.flow_matching:FlowMatching", ...}
    cls = lookup(OBJECTIVES, "flow_matching", "objective")
    obj = make(OBJECTIVES, "flow_matching", "objective", path=fj.paths.CondOT())
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

__all__ = ["load", "lookup", "make", "resolve"]


def load(target: Any) -> Any:
    """The object a registry entry names: a "module:attr" string is imported, else returned."""
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)
    return target


def lookup(registry: Mapping[str, Any], name: str, what: str, plural: str | None = None) -> Any:
    """The entry registered under `name`; a one-line ValueError listing the valid names else."""
    if not isinstance(name, str) or name not in registry:
        valid = plural or what + "s"
        raise ValueError(f"unknown {what} {name!r}; valid {valid}: {sorted(registry)}")
    return load(registry[name])


def make(
    registry: Mapping[str, Any], name: str, what: str, plural: str | None = None, /, **kwargs
) -> Any:
    """`lookup(...)(**kwargs)`; a TypeError naming the entry for bad keyword arguments."""
    factory = lookup(registry, name, what, plural)
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise TypeError(f"{what} {name!r}: bad keyword arguments {sorted(kwargs)}: {e}") from None


def resolve(
    value: Any, registry: Mapping[str, Any], base: type, what: str, plural: str | None = None
) -> Any:
    """`value` itself when it is a `base` instance; a registered name is built with no arguments.

    Raises:
      ValueError: an unknown name (the valid ones listed).
      TypeError: neither a name nor a `base`.
    """
    if isinstance(value, str):
        return make(registry, value, what, plural)
    if not isinstance(value, base):
        raise TypeError(
            f"{what} must be a {base.__name__} or one of {sorted(registry)}, got {value!r}"
        )
    return value
