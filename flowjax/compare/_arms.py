"""The arms of a comparison: which objectives are trained, resolved into full flowjax configs.

A *variant* (in `config.variants`) names an objective recipe: the objective's fields as in
`configs/default.py` (`objective.name, path, target, coupling, time_dist, weighting` and their
kwargs) plus `precond` ("none" or "edm") and `sigma_data`. An *arm* is a variant resolved for
one dataset: the shared training config `config.base` with that objective, a full config that
`fj.train.validate` accepts and `python -m experiments.main` could train on its own.

Compare mode trains the variants listed in `config.arms`. Ablation mode starts from the variant
`config.ablation.base` and adds one arm per entry of `config.ablation.factors`, each changing
exactly one of the four factors (path, target, weighting, time distribution) of the base.
The base is written in the diffusion objective's form for this (flow matching with the
independent coupling *is* the diffusion objective with target "velocity" and uniform
weighting, so it has all four factors).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import ml_collections
import numpy as np

__all__ = [
    "FACTORS",
    "DESCRIPTIVE_FIELDS",
    "PRECONDS",
    "ResolvedArm",
    "arm_variants",
    "resolve_arms",
    "estimate_sigma_data",
]

# The factors an ablation may change, one at a time (DESIGN.md: "a fair comparison changes
# one and holds the others").
FACTORS = ("path", "target", "weighting", "time_dist")
# Everything that describes an arm's objective in the report.
DESCRIPTIVE_FIELDS = ("name", "path", "target", "weighting", "time_dist", "coupling")
PRECONDS = ("none", "edm")
_EDM_REFERENCE_SIGMA_DATA = 0.5  # the data std that EDM's P_mean = -1.2 was tuned for
_EDM_P_MEAN = -1.2  # Karras et al. 2022, table 1


@dataclasses.dataclass(frozen=True)
class ResolvedArm:
    """One arm on one dataset.

    Attributes:
      name: short name (a key of `config.variants`, or "factor=value" in an ablation).
      label: human-readable description.
      config: the full flowjax config of this arm (validated).
      precond: "none" or "edm" (EDM preconditioning of the network, Karras et al. 2022).
      sigma_data: the data standard deviation used by EDM pieces, else None.
      changed: in an ablation, the one factor this arm changes (None for the base / compare).
    """

    name: str
    label: str
    config: Any
    precond: str
    sigma_data: float | None
    changed: str | None = None

    @property
    def factors(self) -> dict[str, str]:
        """The objective's descriptive fields (name, path, target, ...) and precond."""
        obj = self.config.objective
        out = {k: str(obj[k]) for k in DESCRIPTIVE_FIELDS}
        if obj.name == "flow_matching":
            out["target"], out["weighting"] = "velocity", "uniform"
        out["precond"] = self.precond
        return out


def _split(names: str, field: str) -> list[str]:
    if not isinstance(names, str):
        raise TypeError(f"config.{field} must be a comma-separated string, got {names!r}")
    out = [n.strip() for n in names.split(",") if n.strip()]
    if not out:
        raise ValueError(f"config.{field} is empty")
    if len(set(out)) != len(out):
        raise ValueError(f"config.{field} lists a name twice: {out}")
    return out


def _diffusion_form(variant: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """The variant's objective written as the diffusion objective (needed for ablations)."""
    v = ml_collections.ConfigDict(variant.to_dict())
    obj = v.objective
    if obj.name == "diffusion":
        return v
    if obj.name != "flow_matching" or obj.coupling != "independent":
        raise ValueError(
            f"config.ablation.base: variant {name!r} ({obj.name}, coupling {obj.coupling!r}) "
            "has no diffusion form; the base of an ablation must be a diffusion variant or "
            "flow matching with the independent coupling"
        )
    obj.name, obj.target, obj.weighting = "diffusion", "velocity", "uniform"
    return v


def arm_variants(config) -> list[tuple[str, ml_collections.ConfigDict, str | None]]:
    """(name, variant, changed factor) of every arm, in order, for `config.mode`.

    Raises:
      ValueError: unknown mode, variant or factor; an ablation arm that changes nothing.
    """
    variants = config.variants
    if config.mode == "compare":
        names = _split(config.arms, "arms")
        for n in names:
            if n not in variants:
                raise ValueError(f"config.arms: unknown variant {n!r}; valid: {sorted(variants)}")
        return [(n, variants[n], None) for n in names]
    if config.mode != "ablation":
        raise ValueError(f"config.mode must be 'compare' or 'ablation', got {config.mode!r}")
    base_name = config.ablation.base
    if base_name not in variants:
        raise ValueError(
            f"config.ablation.base: unknown variant {base_name!r}; valid: {sorted(variants)}"
        )
    base = _diffusion_form(variants[base_name], base_name)
    out = [(base_name, base, None)]
    factors = config.ablation.factors
    if not factors.keys():
        raise ValueError(f"config.ablation.factors is empty; give a value for some of {FACTORS}")
    for factor in factors.keys():
        if factor not in FACTORS:
            raise ValueError(
                f"config.ablation.factors.{factor}: not an ablation factor; valid: {FACTORS}"
            )
        value = factors[factor]
        if base.objective[factor] == value:
            raise ValueError(
                f"config.ablation.factors.{factor}={value!r} equals the base's value: the arm "
                "would change nothing"
            )
        arm = ml_collections.ConfigDict(base.to_dict())
        arm.objective[factor] = value
        # The old value's kwargs belong to the old choice.
        kw = {
            "path": "path_kwargs",
            "time_dist": "time_dist_kwargs",
            "weighting": "weighting_kwargs",
        }.get(factor)
        if kw is not None:
            arm.objective[kw] = ml_collections.ConfigDict()
        arm.label = f"{base.label}, {factor}: {base.objective[factor]} -> {value}"
        out.append((f"{factor}={value}", arm, factor))
    return out


def estimate_sigma_data(dataset: str, data_dir: str = "", n: int = 10_000, **kwargs) -> float:
    """Standard deviation of the training data (all coordinates pooled), 3 significant digits.

    Read from the first n records of the train split (all of it when smaller).
    """
    from flowjax import data

    source = data.open_source(dataset, split="train", seed=0, data_dir=data_dir or None, **kwargs)
    if hasattr(source, "__len__"):
        n = min(n, len(source))
    x = np.asarray(
        data.reference_samples(dataset, n, 0, "train", data_dir=data_dir or None, **kwargs),
        np.float64,
    )
    sd = float(np.sqrt(np.mean((x - x.mean(axis=0)) ** 2)))
    return float(f"{sd:.3g}")


def _needs_sigma_data(variant) -> bool:
    obj = variant.objective
    return variant.precond == "edm" or obj.weighting == "edm" or obj.time_dist == "edm_lognormal"


def resolve_arms(config, dataset: str, num_devices: int = 1) -> list[ResolvedArm]:
    """The arms of `config` on `dataset`, each a full validated flowjax config.

    EDM pieces get the data's standard deviation sigma_data (the variant's `sigma_data`, or
    `estimate_sigma_data` when it is 0): EDMWeighting(sigma_data) and EDM preconditioning use
    it, and EDM's log-normal noise levels are shifted by log(sigma_data / 0.5) (EDM's P_mean
    = -1.2 is for data of standard deviation 0.5; scaling the data scales the noise levels) unless
    the variant sets time_dist_kwargs.p_mean itself.
    """
    from flowjax.train import validate

    arms = []
    estimated: dict[str, float] = {}
    for name, variant, changed in arm_variants(config):
        if variant.precond not in PRECONDS:
            raise ValueError(
                f"config.variants.{name}.precond: {variant.precond!r}; valid: {PRECONDS}"
            )
        if variant.precond == "edm" and not (
            variant.objective.name == "diffusion" and variant.objective.target == "x1"
        ):
            raise ValueError(
                f"config.variants.{name}: precond='edm' makes the network a data (x1) predictor; "
                "it needs objective.name='diffusion' and objective.target='x1'"
            )
        cfg = ml_collections.ConfigDict(config.base.to_dict())
        cfg.data.name = dataset
        for key, value in variant.objective.items():
            if key not in cfg.objective:
                raise ValueError(
                    f"config.variants.{name}.objective.{key}: unknown field; valid: "
                    f"{sorted(cfg.objective.keys())}"
                )
            cfg.objective[key] = value.to_dict() if hasattr(value, "to_dict") else value
        sigma_data = None
        if _needs_sigma_data(variant):
            sigma_data = float(variant.sigma_data)
            if sigma_data < 0:
                raise ValueError(f"config.variants.{name}.sigma_data must be >= 0 (0: estimate)")
            if sigma_data == 0:
                if dataset not in estimated:
                    estimated[dataset] = estimate_sigma_data(
                        dataset, cfg.data.data_dir, **cfg.data.kwargs.to_dict()
                    )
                sigma_data = estimated[dataset]
            obj = cfg.objective
            if obj.weighting == "edm" and "sigma_data" not in obj.weighting_kwargs:
                obj.weighting_kwargs.sigma_data = sigma_data
            if obj.time_dist == "edm_lognormal" and "p_mean" not in obj.time_dist_kwargs:
                shift = math.log(sigma_data / _EDM_REFERENCE_SIGMA_DATA)
                obj.time_dist_kwargs.p_mean = round(_EDM_P_MEAN + shift, 4)
        validate(cfg, num_devices)
        arms.append(
            ResolvedArm(
                name=name,
                label=str(variant.label),
                config=cfg,
                precond=str(variant.precond),
                sigma_data=sigma_data,
                changed=changed,
            )
        )
    return arms
