"""The flow-map methods compared by the experiment: objective, family and sampler of each.

Distillation methods learn the flow map of a given teacher velocity; self-distillation
methods learn it from data alone (their own diagonal u(x, t, t) plays the teacher). Every
method trains the same two-time network X(x, s, t) = x + (t - s) u(x, s, t) with the same
optimizer, batch and number of steps; only the loss differs.

Samplers: "jumps" is x <- X(x, t_k, t_{k+1}) on the uniform grid (`fj.flowmaps.sample`), for
methods that learn X on all pairs s <= t. Consistency models learn only X(., t, 1) (the
consistency function), so k steps use the multistep consistency sampler
(`fj.flowmaps.sample_stochastic`, re-noising at t_k = k / K; Song et al. 2023, Algorithm 1).
Both cost one network evaluation per step.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Method", "METHODS", "FAMILIES", "SAMPLERS", "resolve_methods"]

FAMILIES = ("distillation", "self-distillation")
SAMPLERS = ("jumps", "consistency")


@dataclasses.dataclass(frozen=True)
class Method:
    """One method of the comparison.

    Attributes:
      name: key of `fj.objectives.OBJECTIVES` (also the method's name in the results).
      label: what it is, with its paper.
      family: "distillation" (needs the teacher) or "self-distillation" (trains from data).
      sampler: "jumps" or "consistency" (see module docstring).
    """

    name: str
    label: str
    family: str
    sampler: str

    @property
    def needs_teacher(self) -> bool:
        return self.family == "distillation"


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("lmd", "Lagrangian map distillation (Boffi et al. 2024)", "distillation", "jumps"),
        Method("emd", "Eulerian map distillation (Boffi et al. 2024)", "distillation", "jumps"),
        Method(
            "progressive",
            "progressive flow-map distillation (Salimans & Ho 2022; Boffi et al. 2024)",
            "distillation",
            "jumps",
        ),
        Method(
            "consistency_distill",
            "consistency distillation (Song et al. 2023)",
            "distillation",
            "consistency",
        ),
        Method("shortcut", "shortcut model (Frans et al. 2024)", "self-distillation", "jumps"),
        Method("meanflow", "MeanFlow (Geng et al. 2025)", "self-distillation", "jumps"),
        Method(
            "lsd",
            "Lagrangian self-distillation (Boffi et al. 2025)",
            "self-distillation",
            "jumps",
        ),
        Method(
            "consistency_training",
            "consistency training (Song et al. 2023)",
            "self-distillation",
            "consistency",
        ),
    )
}


def resolve_methods(names: str) -> list[Method]:
    """The methods of a comma-separated list, in order.

    Raises:
      ValueError: an unknown or repeated name, or an empty list.
    """
    out: list[Method] = []
    for name in (n.strip() for n in str(names).split(",")):
        if not name:
            continue
        if name not in METHODS:
            raise ValueError(
                f"config.methods: unknown method {name!r}; valid methods: {list(METHODS)}"
            )
        if any(m.name == name for m in out):
            raise ValueError(f"config.methods: {name!r} is listed twice")
        out.append(METHODS[name])
    if not out:
        raise ValueError(f"config.methods: empty; valid methods: {list(METHODS)}")
    return out
