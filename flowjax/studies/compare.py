"""The head-to-head study: does flow matching train faster than diffusion, to *good* quality?

Arms (objectives) are trained with an identical network, optimizer, batch, steps, seeds and
data, and evaluated at log-spaced steps. Every arm x seed of a dataset trains in ONE compiled
program (`studies.ArmTrainer`: one dispatch per K steps; all arms of a seed start from the same
parameters and read the same batches, a paired design), and every evaluation samples all
seeds of an arm in one vmapped call from the same per-seed noise.

Quality is measured against the data's own floor: the primary metric of two independent data
samples of the evaluation size (`data_floor`: a fresh training-split sample scored by the same
evaluator against the same held-out reference, repeated). Quality *levels* are multiples of
that floor (`config.levels.factors`, coarse to fine, e.g. 8x ... 1.25x). Per arm and seed the
study records the steps to each level (`studies.steps_to_threshold`, interpolated in
log(step); censored when not reached), the seconds and FLOPs to it (steps x the arm's own
seconds and XLA FLOPs per step, `ArmTrainer.cost`), and per level the speed-up over the
baseline (ddpm) with a 95% interval over seeds (`level_speedup`, censored seeds handled
conservatively). A sampler sweep (DDIM, DPM-Solver++, UniPC, Euler/Heun on EDM / log-SNR grids,
at exact NFE, each arm on its own path and prediction kind) gives each arm's best sampler per
NFE. `report.md` opens with a verdict table computed from these numbers (`headline`).

A *variant* (`config.variants`) names an objective recipe: the objective fields of
`configs/default.py` plus `precond` ("none" or "edm") and `sigma_data`. An *arm* is a variant
resolved for one dataset: `config.base` with that objective, a full config that
`fj.train.validate` accepts. Compare mode trains `config.arms`; ablation mode starts from
`config.ablation.base` and adds one arm per entry of `config.ablation.factors`, each changing
exactly one of path, target, weighting, time distribution (flow matching with the independent
coupling *is* the diffusion objective with target "velocity" and uniform weighting).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from flowjax import studies
from flowjax.paths import AffinePath

__all__ = [
    "FACTORS",
    "STAGES",
    "ArmModel",
    "ArmVelocity",
    "Draw",
    "ResolvedArm",
    "analyse_dataset",
    "arm_variants",
    "build_arms",
    "data_floor",
    "estimate_sigma_data",
    "findings",
    "headline",
    "level_speedup",
    "render",
    "resolve_arms",
    "run",
]

FACTORS = ("path", "target", "weighting", "time_dist")
DESCRIPTIVE_FIELDS = ("name", "path", "target", "weighting", "time_dist", "coupling")
PRECONDS = ("none", "edm")
# What an empty component name ("": the objective's default) stands for, in the report.
_DEFAULT_NAMES = {"coupling": "independent", "time_dist": "uniform", "weighting": "uniform"}
_EDM_REFERENCE_SIGMA_DATA = 0.5  # the data std that EDM's P_mean = -1.2 was tuned for
_EDM_P_MEAN = -1.2  # Karras et al. 2022, table 1

# Metrics (fj.metrics vocabulary) measured at every evaluation ("curve"), once more at the end
# ("final"), and for each sampler setting ("sweep"): by dataset, then by kind of data. The
# first curve metric is the primary one: its data-vs-data floor defines the quality levels,
# so it must be a two-sample (or sample-vs-exact-density) metric with a positive floor. The
# likelihood KL of the mixture (`kl`, exact log p, ODE log q) is 0 for a perfect model whatever
# the sample, so it has no floor to measure levels against: it is a final metric there, and
# the mixture's levels use the histogram KL against its exact density (config.metrics.by_dataset
# gives the grid).
STAGES = {
    "checkerboard": {"curve": ("hist_kl", "energy"), "final": ("w2",), "sweep": ("hist_kl",)},
    "gmm": {
        "curve": ("hist_kl", "sample_nll", "energy"),
        "final": ("kl", "nll", "w2"),
        "sweep": ("hist_kl",),
    },
    "digits": {"curve": ("digits_fd",), "final": (), "sweep": ("digits_fd",)},
    "points": {"curve": ("w2", "energy"), "final": ("mmd",), "sweep": ("w2",)},
    "images": {"curve": ("fid",), "final": (), "sweep": ("fid",)},
}


# ------------------------------------------------------------------------------------ arms


@dataclasses.dataclass(frozen=True)
class ResolvedArm:
    """One arm on one dataset: name, label, its full validated flowjax config, EDM
    preconditioning ("none"/"edm"), sigma_data of EDM pieces, and in an ablation the one
    factor it changes."""

    name: str
    label: str
    config: Any
    precond: str
    sigma_data: float | None
    changed: str | None = None

    @property
    def factors(self) -> dict[str, str]:
        obj = self.config.objective
        out = {k: str(obj[k]) or _DEFAULT_NAMES.get(k, "") for k in DESCRIPTIVE_FIELDS}
        if obj.name == "flow_matching":
            out["target"], out["weighting"] = "velocity", "uniform"
        return {**out, "precond": self.precond}


def _diffusion_form(variant, name: str):
    """The variant's objective written as the diffusion objective (needed for ablations)."""
    v = ml_collections.ConfigDict(variant.to_dict())
    obj = v.objective
    if obj.name == "diffusion":
        return v
    if obj.name != "flow_matching" or obj.coupling not in ("", "independent"):
        raise ValueError(
            f"config.ablation.base: variant {name!r} ({obj.name}, coupling {obj.coupling!r}) "
            "has no diffusion form; the base of an ablation must be a diffusion variant or "
            "flow matching with the independent coupling"
        )
    obj.name, obj.target, obj.weighting = "diffusion", "velocity", "uniform"
    return v


_KWARGS_OF = {
    "path": "path_kwargs",
    "time_dist": "time_dist_kwargs",
    "weighting": "weighting_kwargs",
}


def arm_variants(config) -> list[tuple[str, Any, str | None]]:
    """(name, variant, changed factor) of every arm, in order, for `config.mode`."""
    variants = config.variants
    if config.mode == "compare":
        return [(n, variants[n], None) for n in studies.names(config.arms, "arms", list(variants))]
    if config.mode != "ablation":
        raise ValueError(f"config.mode must be 'compare' or 'ablation', got {config.mode!r}")
    base_name = config.ablation.base
    if base_name not in variants:
        raise ValueError(
            f"config.ablation.base: unknown variant {base_name!r}; valid: {sorted(variants)}"
        )
    base = _diffusion_form(variants[base_name], base_name)
    factors = config.ablation.factors
    if not factors.keys():
        raise ValueError(f"config.ablation.factors is empty; give a value for some of {FACTORS}")
    out = [(base_name, base, None)]
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
        if factor in _KWARGS_OF:  # the old value's kwargs belong to the old choice
            arm.objective[_KWARGS_OF[factor]] = ml_collections.ConfigDict()
        old = base.objective[factor] or _DEFAULT_NAMES.get(factor, "")
        arm.label = f"{base.label}, {factor}: {old} -> {value}"
        out.append((f"{factor}={value}", arm, factor))
    return out


def estimate_sigma_data(dataset: str, data_dir: str = "", n: int = 10_000, **kwargs) -> float:
    """Standard deviation of the training data (all coordinates pooled), 3 significant digits."""
    from flowjax import data

    source = data.open_source(dataset, split="train", seed=0, data_dir=data_dir or None, **kwargs)
    n = min(n, len(source)) if hasattr(source, "__len__") else n
    x = data.reference_samples(dataset, n, 0, "train", data_dir=data_dir or None, **kwargs)
    x = np.asarray(x, np.float64)
    return float(f"{float(np.sqrt(np.mean((x - x.mean(axis=0)) ** 2))):.3g}")


def base_for(config, dataset: str) -> ml_collections.ConfigDict:
    """config.base with the dataset's overrides (config.base_by_dataset[dataset]) applied: the
    training config every arm shares on that dataset."""
    cfg = ml_collections.ConfigDict(config.base.to_dict())
    over = config.get("base_by_dataset", None)
    if over is not None and dataset in over:
        studies.merge_config(cfg, over[dataset], f"config.base_by_dataset.{dataset}")
    return cfg


def resolve_arms(config, dataset: str, num_devices: int = 1) -> list[ResolvedArm]:
    """The arms of `config` on `dataset`, each a full validated flowjax config.

    EDM pieces get the data's standard deviation (the variant's `sigma_data`, or
    `estimate_sigma_data` when 0): EDMWeighting and EDM preconditioning use it, and EDM's
    log-normal noise levels are shifted by log(sigma_data / 0.5) (EDM's P_mean = -1.2 is for
    data of std 0.5) unless the variant sets time_dist_kwargs.p_mean itself.
    """
    from flowjax.train import validate

    arms, estimated = [], None
    for name, variant, changed in arm_variants(config):
        obj_v = variant.objective
        if variant.precond not in PRECONDS:
            raise ValueError(
                f"config.variants.{name}.precond: {variant.precond!r}; valid: {PRECONDS}"
            )
        if variant.precond == "edm" and (obj_v.name, obj_v.target) != ("diffusion", "x1"):
            raise ValueError(
                f"config.variants.{name}: precond='edm' makes the network a data (x1) predictor; "
                "it needs objective.name='diffusion' and objective.target='x1'"
            )
        cfg = base_for(config, dataset)
        cfg.data.name = dataset
        for key, value in obj_v.items():
            if key not in cfg.objective:
                raise ValueError(
                    f"config.variants.{name}.objective.{key}: unknown field; valid: "
                    f"{sorted(cfg.objective.keys())}"
                )
            cfg.objective[key] = value.to_dict() if hasattr(value, "to_dict") else value
        sigma_data = None
        obj = cfg.objective
        if variant.precond == "edm" or obj.weighting == "edm" or obj.time_dist == "edm_lognormal":
            sigma_data = float(variant.sigma_data)
            if sigma_data < 0:
                raise ValueError(f"config.variants.{name}.sigma_data must be >= 0 (0: estimate)")
            if sigma_data == 0:
                if estimated is None:
                    estimated = estimate_sigma_data(
                        dataset, cfg.data.data_dir, **cfg.data.kwargs.to_dict()
                    )
                sigma_data = estimated
            if obj.weighting == "edm" and "sigma_data" not in obj.weighting_kwargs:
                obj.weighting_kwargs.sigma_data = sigma_data
            if obj.time_dist == "edm_lognormal" and "p_mean" not in obj.time_dist_kwargs:
                shift = math.log(sigma_data / _EDM_REFERENCE_SIGMA_DATA)
                obj.time_dist_kwargs.p_mean = round(_EDM_P_MEAN + shift, 4)
        validate(cfg, num_devices)
        arms.append(
            ResolvedArm(name, str(variant.label), cfg, str(variant.precond), sigma_data, changed)
        )
    return arms


# ------------------------------------------------------------------------------ programs


class ArmModel(eqx.Module):
    """One arm's network as its native prediction and as a velocity: its apply function (or
    EDMPrecond around it; sigma_data a NumPy scalar, so a run-time value), path, prediction
    kind, and the clamp of t to [t_eps, 1 - t_eps] used when it is turned into a velocity."""

    model: Callable
    path: AffinePath
    kind: str = eqx.field(static=True)
    t_eps: float = eqx.field(static=True)

    def predict(self, params, x, t, y=None):
        return self.model(params, x, t, y=y)

    def velocity(self, params, x, t, y=None):
        from flowjax.sampling import as_velocity

        fn = lambda x_, t_: self.model(params, x_, t_, y=y)  # noqa: E731
        return as_velocity(fn, self.kind, self.path, t_eps=self.t_eps)(x, t)


class ArmVelocity(eqx.Module):
    """v(x, t) of one arm and one seed's parameters (a pytree: compiled solves are reused)."""

    arm: ArmModel
    params: Any
    y: jax.Array | None = None

    def __call__(self, x, t):
        return self.arm.velocity(self.params, x, t, self.y)


class Draw(eqx.Module):
    """How samples are drawn from an arm: every field static, so one compiled program each.

    `how` is "ode" (`fj.sampling.sample_ode` of the arm's velocity: solver, num_steps or
    adaptive at rtol = atol = tol), "spec" (`fj.sampling.sample_with`, "solver@grid" at exactly
    nfe evaluations of the arm's NATIVE prediction on its own path: DDIM / DPM-Solver++ get
    the eps or data prediction, not a velocity converted from it) or "sde"
    (`fj.sampling.sample_sde` on the arm's path, num_steps, noise, from t0).
    """

    how: str = eqx.field(static=True)
    solver: str = eqx.field(static=True, default="heun")
    num_steps: int | None = eqx.field(static=True, default=None)
    tol: float = eqx.field(static=True, default=1e-5)
    nfe: int = eqx.field(static=True, default=0)
    grid_kwargs: tuple = eqx.field(static=True, default=())
    noise: float = eqx.field(static=True, default=1.0)
    t0: float = eqx.field(static=True, default=1e-3)
    t_eps: float = eqx.field(static=True, default=0.0)

    def __call__(self, arm: ArmModel, params, x0, y, key):
        from flowjax import sampling

        v = ArmVelocity(arm, params, y)
        if self.how == "ode":
            x, info = sampling.sample_ode(
                v, x0, solver=self.solver, num_steps=self.num_steps, rtol=self.tol, atol=self.tol
            )
        elif self.how == "spec":
            x, info = sampling.sample_with(
                self.solver,
                lambda x_, t_: arm.predict(params, x_, t_, y),
                x0,
                kind=arm.kind,
                path=arm.path,
                nfe=self.nfe,
                t_eps=self.t_eps,
                grid_kwargs=dict(self.grid_kwargs),
            )
        else:
            x, info = sampling.sample_sde(
                v,
                x0,
                path=arm.path,
                key=key,
                num_steps=self.num_steps,
                noise=self.noise,
                t0=self.t0,
            )
        return x, jnp.asarray(info["nfe"], jnp.float32)


@eqx.filter_jit
def _draw_seeds(draw: Draw, arm: ArmModel, params, x0, y, keys):
    """Samples of every seed at once: params, x0, y and keys with a leading seed axis."""
    return jax.vmap(lambda p, x, y_, k: draw(arm, p, x, y_, k))(params, x0, y, keys)


def _grid_kwargs(sweep, grid: str) -> tuple:
    gk = sweep.get("grid_kwargs", None) or {}
    gk = dict(gk.to_dict() if hasattr(gk, "to_dict") else gk)
    # The EDM / log-SNR grids get the sigma range of config.sweep.grid_kwargs; the uniform
    # grid takes none.
    return tuple(sorted(gk.items())) if grid in ("edm", "logsnr") else ()


def spec_draw(name: str, nfe: int, *, t_eps: float, sweep=None) -> Draw:
    """The `Draw` of a "solver@grid" sampler at exactly `nfe` evaluations."""
    from flowjax.sampling import parse_sampler

    s = parse_sampler(name)  # ValueError naming the valid solvers and grids
    s.num_steps(int(nfe))  # ValueError if no step count spends exactly nfe
    gk = _grid_kwargs(sweep, s.grid) if sweep is not None else ()
    return Draw("spec", solver=s.name, nfe=int(nfe), grid_kwargs=gk, t_eps=float(t_eps))


def _sample(draw: Draw, arm: ArmModel, params, x0, y, key, batch_size: int):
    """Samples (S, n, *D) of every seed in batches of `batch_size` per seed; (samples, mean
    NFE, error message or "")."""
    xs, nfes = [], []
    num_seeds, n = x0.shape[:2]
    try:
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            keys = jnp.stack(
                [jax.random.fold_in(jax.random.fold_in(key, s), lo) for s in range(num_seeds)]
            )
            yy = None if y is None else y[:, lo:hi]
            x, nfe = _draw_seeds(draw, arm, params, x0[:, lo:hi], yy, keys)
            xs.append(np.asarray(x))
            nfes.append(np.asarray(nfe))
    except RuntimeError as e:  # a solve that failed at run time (max_steps, NaN)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return np.full(x0.shape, np.nan, np.float32), math.nan, msg[:300]
    return np.concatenate(xs, axis=1), float(np.mean(np.stack(nfes))), ""


def _sweep_settings(sweep, t_eps: float) -> list[tuple[str, float, Draw]]:
    """(sampler, setting value, Draw) of every point of the sweep."""
    out = [
        ("euler", int(n), Draw("ode", solver="euler", num_steps=int(n))) for n in sweep.euler_nfe
    ]
    for nfe in sweep.heun_nfe:
        if int(nfe) % 2 or int(nfe) < 2:
            raise ValueError(
                f"config.sweep.heun_nfe: Heun takes 2 evaluations per step, so NFE must be even "
                f"and >= 2, got {nfe}"
            )
        out.append(("heun", int(nfe), Draw("ode", solver="heun", num_steps=int(nfe) // 2)))
    out += [
        ("dopri5", float(t), Draw("ode", solver="dopri5", tol=float(t))) for t in sweep.dopri5_tol
    ]
    out += [
        (
            "sde",
            int(n),
            Draw("sde", num_steps=int(n), noise=float(sweep.sde_noise), t0=float(sweep.sde_t0)),
        )
        for n in sweep.sde_nfe
    ]
    specs, nfes = tuple(sweep.get("specs", ())), tuple(sweep.get("spec_nfe", ()))
    if specs and not nfes:
        raise ValueError("config.sweep.spec_nfe: need at least one NFE when sweep.specs is set")
    for name in specs:
        for nfe in nfes:
            d = spec_draw(name, int(nfe), t_eps=t_eps, sweep=sweep)
            out.append((d.solver, int(nfe), d))
    return out


def _eval_draw(config, arm_name: str, dataset: str = "") -> Draw:
    """The sampler of the training curves: config.eval.sampler at eval.nfe (per dataset:
    eval.by_dataset[dataset].sampler / .nfe; per arm: eval.arm_samplers)."""
    ev = config.eval
    own = ml_collections.ConfigDict(dict(sampler=ev.sampler, nfe=ev.nfe))
    table = ev.get("by_dataset", None) or {}
    if dataset in table:
        studies.merge_config(own, table[dataset], f"config.eval.by_dataset.{dataset}")
    name = str(ev.get("arm_samplers", {}).get(arm_name, "") or own.sampler)
    nfe = int(own.nfe)
    return spec_draw(name, nfe, t_eps=float(ev.t_eps), sweep=config.sweep)


def _noise(spec, n: int, seeds: Sequence[int], eval_seed: int, salt: int):
    """Evaluation noise x0 (S, n, *D) (and labels (S, n)): one draw per seed, shared by arms."""
    xs, ys = [], []
    for seed in seeds:
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(eval_seed), seed), salt)
        k_x, k_y = jax.random.split(key)
        xs.append(jax.random.normal(k_x, (n, *spec.shape), jnp.float32))
        if spec.num_classes is not None:
            ys.append(jax.random.randint(k_y, (n,), 0, spec.num_classes))
    return jnp.stack(xs), (jnp.stack(ys) if ys else None)


def data_floor(
    evaluator, dataset: str, metric: str, n: int, reps: int, seed: int, **data_kwargs
) -> list[float]:
    """The metric's data-vs-data floor: `reps` fresh data samples of size `n` (training split,
    seeds seed, seed + 1, ...) scored by `evaluator` as if they were model samples.

    The evaluator compares them with its own held-out reference (or exact density), so each
    value is the metric of two independent samples of the data: what a perfect model would
    score at this evaluation size.
    """
    from flowjax import data

    out = []
    for r in range(int(reps)):
        x = data.reference_samples(dataset, int(n), int(seed) + r, "train", **data_kwargs)
        out.append(float(evaluator(np.asarray(x), metrics=(metric,))[metric]))
    return out


# ------------------------------------------------------------------------------ training


def _check(config) -> None:
    studies.check_positive(config, "num_seeds", "levels.floor_reps")
    studies.names(config.datasets, "datasets")
    factors = [float(f) for f in config.levels.factors]
    if not factors or any(not f >= 1 for f in factors) or factors != sorted(factors, reverse=True):
        raise ValueError(
            f"config.levels.factors: multiples (>= 1) of the floor, coarse to fine, got {factors}"
        )


def run(config, workdir: str, *, log: Callable[[str], Any] = print, command: str | None = None):
    """Runs the comparison of `config`; writes results.json, report.md and plots to workdir.

    Args:
      config: a comparison config (`configs/compare_*.py`).
      workdir: output directory (created).
      log: progress printer.
      command: the command line, recorded in the report.

    Returns:
      The results dictionary (what results.json holds).
    """
    _check(config)
    seeds = [int(config.seed) + i for i in range(int(config.num_seeds))]
    record = studies.Record("compare", config, seeds, command)
    record.results["mode"] = config.mode
    shown = {}
    for dataset in studies.names(config.datasets, "datasets"):
        ds, shown[dataset] = _run_dataset(config, dataset, seeds, log)
        ds["findings"] = findings(ds)
        ds["headline"] = headline(ds, str(config.get("headline", "")))
        record.add(dataset, ds, verdicts=_verdicts(ds), num_seeds=len(seeds))
    return record.finish(workdir, render, lambda r, d: _plots(r, shown, d))


def _evaluator(config, dataset, spec, names, base):
    from flowjax import data, metrics

    mc = config.metrics
    extra = mc.get("by_dataset", {}).get(dataset, {})
    extra = dict(extra.to_dict() if hasattr(extra, "to_dict") else extra)
    bounds = extra.pop("hist_range", None)
    get = lambda k: extra.get(k, mc[k])  # noqa: E731
    options = metrics.EvalOptions(
        hist_bins=int(get("hist_bins")),
        energy_samples=int(get("energy_samples")),
        w2_samples=int(get("w2_samples")),
        likelihood_samples=int(get("likelihood_samples")),
        likelihood_tol=float(get("likelihood_tol")),
        likelihood_t_eps=float(get("likelihood_t_eps")),
        inception_path=str(mc.inception_path),
    )
    kwargs = base.data.kwargs.to_dict()
    ref = data.reference_samples(
        dataset,
        _num_reference(dataset, int(mc.num_reference), base, kwargs),
        int(config.eval.seed),
        "test",
        data_dir=base.data.data_dir or None,
        **kwargs,
    )
    if bounds is not None and spec.bounds is None:
        # A histogram grid for a dataset with an exact density but no box of its own.
        spec = dataclasses.replace(spec, bounds=tuple(float(b) for b in bounds))
    return metrics.Evaluator(spec, names, reference=ref, options=options, source_kwargs=kwargs)


def _num_reference(dataset, n, base, kwargs):
    from flowjax import data

    source = data.open_source(
        dataset, split="test", seed=0, data_dir=base.data.data_dir or None, **kwargs
    )
    return min(n, len(source)) if hasattr(source, "__len__") else n


def build_arms(arms, spec, t_eps):
    """(network, [(objective, model)] for ArmTrainer, [ArmModel]) of resolved arms."""
    from flowjax import objectives
    from flowjax.train.experiment import DTYPE_MAP, build_objective, prediction_kind

    m = arms[0].config.model
    net = studies.build_network(
        m.name,
        m.variant,
        spec.shape,
        num_classes=spec.num_classes,
        dtype=DTYPE_MAP[m.dtype],
        **m.overrides.to_dict(),
    )
    pairs, models = [], []
    for arm in arms:
        objective = build_objective(arm.config, spec)
        model = net.apply_fn
        if arm.precond == "edm":
            sd = np.float64(arm.sigma_data)
            model = objectives.EDMPrecond(net.apply_fn, objective.path, sigma_data=sd)
        pairs.append((objective, model))
        models.append(ArmModel(model, objective.path, prediction_kind(arm.config), float(t_eps)))
    return net, pairs, models


def _run_dataset(config, dataset, seeds, log):
    from flowjax import data, metrics

    spec = data.spec(dataset)
    arms = resolve_arms(config, dataset, jax.device_count())
    base = arms[0].config
    k, n = int(base.train.steps_per_dispatch), int(base.train.num_steps)
    evals = studies.eval_steps(k, n, int(config.eval.num_evals))
    stages = STAGES.get(dataset, STAGES.get(spec.kind))
    primary = stages["curve"][0]
    names = list(dict.fromkeys(stages["curve"] + stages["final"]))
    evaluator = _evaluator(config, dataset, spec, names, base)
    data_kwargs = dict(data_dir=base.data.data_dir or None, **base.data.kwargs.to_dict())
    num_eval = int(config.eval.num_samples)
    lv = config.levels
    t0 = time.perf_counter()
    floor = data_floor(
        evaluator, dataset, primary, num_eval, int(lv.floor_reps), int(lv.floor_seed), **data_kwargs
    )
    sweep_floor = []
    if config.sweep.enabled and int(config.sweep.num_samples) != num_eval:
        sweep_floor = data_floor(
            evaluator,
            dataset,
            stages["sweep"][0],
            int(config.sweep.num_samples),
            int(lv.floor_reps),
            int(lv.floor_seed),
            **data_kwargs,
        )
    st = studies.mean_ci(floor)
    log(
        f"[{dataset}] floor of {primary} at {num_eval} samples: {st['mean']:.4g} "
        f"[{st['ci_low']:.4g}, {st['ci_high']:.4g}] ({len(floor)} pairs of data samples, "
        f"{time.perf_counter() - t0:.1f}s)"
    )
    info = {}
    if "kl" in evaluator.metrics:
        info["data_entropy"] = float(-np.mean(evaluator.log_density(evaluator.reference)))

    net, pairs, models = build_arms(arms, spec, float(config.eval.t_eps))
    trainer = studies.ArmTrainer(
        pairs,
        net,
        base.optim,
        n,
        ema_decay=float(base.ema.decays[0]),
        on_nonfinite=str(base.train.on_nonfinite),
    )
    batch_keys = ("x1", "label") if spec.num_classes is not None else ("x1",)
    stream = studies.BatchStream(
        dataset,
        seeds,
        base.data.batch_size,
        n,
        k,
        keys=batch_keys,
        cache_mb=float(config.data_cache_mb),
        **data_kwargs,
    )
    log(
        f"[{dataset}] arms: {', '.join(a.name for a in arms)} (program groups "
        f"{trainer.groups}); seeds {seeds}; {n} steps of batch {base.data.batch_size}; "
        f"evaluations at {evals}"
    )
    t0 = time.perf_counter()
    costs = trainer.cost(next(iter(stream))) if config.get("measure_cost", True) else None
    if costs is not None:
        log(
            f"[{dataset}] cost per (arm, seed) step ({time.perf_counter() - t0:.1f}s): "
            + "; ".join(
                f"{a.name} {c['flops_per_step'] / 1e6:.3g} MFLOP "
                f"{c['seconds_per_step'] * 1e3:.3g} ms"
                for a, c in zip(arms, costs, strict=True)
            )
        )

    ev = config.eval
    x0, y = _noise(spec, num_eval, seeds, int(ev.seed), salt=0)
    eval_key = jax.random.fold_in(jax.random.key(int(ev.seed)), 3)
    draws = [_eval_draw(config, a.name, dataset) for a in arms]
    curves = {
        a.name: {"step": [], "fused_seconds": [], "nfe": [], **{m: [] for m in stages["curve"]}}
        for a in arms
    }
    per_seed = {a.name: {str(s): {"curve": {}, "final": {}} for s in seeds} for a in arms}
    errors = {a.name: [] for a in arms}
    finals, shown, final_params = {}, {}, {}
    eval_seconds, train_seconds = [0.0], [0.0]

    def callback(step, state):
        t_eval = time.perf_counter()
        last = step == evals[-1]
        for a, (arm, arm_model) in enumerate(zip(arms, models, strict=True)):
            st_a = trainer.arm_state(state, a)
            params = st_a.params if int(ev.ema_index) < 0 else st_a.ema[int(ev.ema_index)]
            samples, nfe, err = _sample(
                draws[a], arm_model, params, x0, y, eval_key, int(ev.batch_size)
            )
            if err:
                errors[arm.name].append(f"step {step}: {err}")
            want = stages["curve"] + (stages["final"] if last else ())
            scores = []
            for s in range(len(seeds)):
                p_s = studies.unstack(params, s)
                ys = None if y is None else y[s]
                field = ArmVelocity(arm_model, p_s, ys)
                scores.append(evaluator(samples[s], field=field, metrics=want))
            c = curves[arm.name]
            c["step"].append(step)
            c["fused_seconds"].append(train_seconds[0])
            c["nfe"].append(nfe)
            for m in stages["curve"]:
                c[m].append([sc[m] for sc in scores])
            if last:
                finals[arm.name] = scores
                shown[arm.name] = samples[0]
                final_params[arm.name] = jax.tree.map(np.asarray, params)
        eval_seconds[0] += time.perf_counter() - t_eval
        c0 = curves[arms[0].name]
        log(
            f"  step {step:>6}  fused train {c0['fused_seconds'][-1]:7.1f}s  "
            + "  ".join(
                f"{a.name} {primary} {np.mean(curves[a.name][primary][-1]):.4g}" for a in arms
            )
            + f"  (eval {time.perf_counter() - t_eval:.1f}s)"
        )

    state = trainer.init(seeds)
    losses, step, evals_left = [], 0, list(evals)
    for chunk in stream:
        t, c0 = time.perf_counter(), trainer.compile_seconds
        state, loss = trainer.update(state, chunk)
        jax.block_until_ready((state, loss))
        # Training seconds: the update dispatches, waited for, without compilation.
        train_seconds[0] += time.perf_counter() - t - (trainer.compile_seconds - c0)
        losses.append(np.asarray(loss))
        step += k
        if evals_left and step == evals_left[0]:
            evals_left.pop(0)
            callback(step, state)
    losses = np.concatenate(losses, axis=2)  # (A, S, num_steps)
    num_skipped = np.asarray(state.num_skipped)
    log(
        f"[{dataset}] trained {len(arms)} arms x {len(seeds)} seeds x {n} steps in "
        f"{train_seconds[0]:.1f}s (compile {trainer.compile_seconds:.1f}s); evaluation "
        f"{eval_seconds[0]:.1f}s"
    )

    for a, arm in enumerate(arms):
        c = curves[arm.name]
        for i, s in enumerate(seeds):
            rec = per_seed[arm.name][str(s)]
            lo = 0
            loss_curve = []
            for e in c["step"]:
                loss_curve.append(float(np.mean(losses[a, i, lo:e])))
                lo = e
            rec["curve"] = {
                "step": list(c["step"]),
                "loss": loss_curve,
                **{m: [v[i] for v in c[m]] for m in stages["curve"]},
            }
            rec["final"] = finals[arm.name][i]
            rec["num_skipped"] = int(num_skipped[a, i])

    settings = _sweep_settings(config.sweep, float(config.sweep.get("t_eps", 0.0)))
    settings = settings if config.sweep.enabled else []
    sweeps = {a.name: {str(s): [] for s in seeds} for a in arms}
    if settings:
        t_sweep = time.perf_counter()
        log(
            f"[{dataset}] sampler sweep: {len(settings)} settings x {len(arms)} arms, "
            f"{len(seeds)} seeds per call"
        )
        sx0, sy = _noise(spec, int(config.sweep.num_samples), seeds, int(ev.seed), salt=1)
        sde_key = jax.random.fold_in(jax.random.key(int(ev.seed)), 2)
        for arm, arm_model in zip(arms, models, strict=True):
            params = final_params[arm.name]
            for sampler, value, draw in settings:
                samples, nfe, err = _sample(
                    draw, arm_model, params, sx0, sy, sde_key, int(ev.batch_size)
                )
                for i, s in enumerate(seeds):
                    scores = evaluator(samples[i], metrics=stages["sweep"])
                    sweeps[arm.name][str(s)].append(
                        {"sampler": sampler, "setting": value, "nfe": nfe, "error": err, **scores}
                    )
            log(f"  {arm.name}: swept ({time.perf_counter() - t_sweep:.0f}s so far)")

    raw = {
        "spec": {"shape": list(spec.shape), "kind": spec.kind, "num_classes": spec.num_classes},
        "setup": _setup_line(base),
        "eval_steps": evals,
        "eval_num_samples": num_eval,
        "eval_samplers": {
            a.name: f"{d.solver} at NFE {d.nfe}" for a, d in zip(arms, draws, strict=True)
        },
        "sweep_num_samples": int(config.sweep.num_samples),
        "compile_seconds": trainer.compile_seconds,
        "train_seconds": train_seconds[0],
        "eval_seconds": eval_seconds[0],
        "program_groups": [[arms[i].name for i in g] for g in trainer.groups],
        "metrics": names,
        "primary_metric": primary,
        "sweep_metrics": list(stages["sweep"]),
        "sweep_primary": stages["sweep"][0],
        "descriptions": {
            m: metrics.DESCRIPTIONS[m] for m in dict.fromkeys(names + list(stages["sweep"]))
        },
        "info": info,
        "floor_values": floor,
        "sweep_floor_values": sweep_floor or floor,
        "cost": None if costs is None else {a.name: c for a, c in zip(arms, costs, strict=True)},
        "arms": {
            arm.name: {
                "label": arm.label,
                "factors": arm.factors,
                "changed": arm.changed,
                "sigma_data": arm.sigma_data,
                "resolved_config": json.loads(arm.config.to_json_best_effort()),
                "seeds": per_seed[arm.name],
                "errors": errors[arm.name],
                "sweep_raw": sweeps[arm.name],
            }
            for arm in arms
        },
    }
    baseline = config.ablation.base if config.mode == "ablation" else config.baseline
    ds = analyse_dataset(raw, config.levels, baseline if baseline in raw["arms"] else None)
    pictures = {"arms": shown, "reference": evaluator.reference if spec.kind == "points" else None}
    return ds, pictures


# ------------------------------------------------------------------------------ analysis


def level_speedup(baseline_steps, arm_steps, last: float) -> dict:
    """The speed-up baseline / arm in steps to a level over paired seeds, censoring included.

    Seeds where both reached: their log ratios. A seed where exactly one side did not reach
    the level within `last` steps is counted as reaching it at `last`, which can only favour
    that side; a seed where neither did carries no information and is left out. The
    geometric-mean ratio gets a Student-t 95% interval on the (partly imputed) log ratios.
    `rule` says which conclusion the imputation keeps valid: "exact" (no censoring: both),
    "lower bound" (only the baseline censored: the true speed-up is larger, so "faster" stands,
    "slower" does not), "upper bound" (only the arm censored: "slower" stands), "mixed" (both
    sides censored in different seeds: neither), "neither reached" (no seed: no ratio).

    Returns:
      {"ratio", "ci_low", "ci_high", "n", "n_censored_arm", "n_censored_baseline",
      "n_censored_both", "rule", "bound" (`studies.censored_log_ratio` or None)}.
    """
    b, a = list(baseline_steps), list(arm_steps)
    if len(a) != len(b):
        raise ValueError(f"level_speedup: {len(b)} baseline seeds vs {len(a)} arm seeds")
    both = sum(x is None and y is None for x, y in zip(b, a, strict=True))
    cens_b = sum(x is None and y is not None for x, y in zip(b, a, strict=True))
    cens_a = sum(x is not None and y is None for x, y in zip(b, a, strict=True))
    keep = [(x, y) for x, y in zip(b, a, strict=True) if not (x is None and y is None)]
    num = [last if x is None else x for x, _ in keep]
    den = [last if y is None else y for _, y in keep]
    st = studies.paired_log_ratio(num, den)
    rule = {
        (False, False): "exact",
        (True, False): "lower bound",
        (False, True): "upper bound",
        (True, True): "mixed",
    }[(cens_b > 0, cens_a > 0)]
    if not keep:
        rule = "neither reached"
    bound = None
    if cens_a or cens_b:
        bound = studies.censored_log_ratio(b, a, last)
    return {
        "ratio": st["ratio"],
        "ci_low": st["ci_low"],
        "ci_high": st["ci_high"],
        "n": st["n"],
        "n_censored_arm": cens_a,
        "n_censored_baseline": cens_b,
        "n_censored_both": both,
        "rule": rule,
        "bound": bound,
    }


def _cost_ratio(base_cost: dict, arm_cost: dict, key: str) -> float:
    return float(base_cost.get(key, math.nan)) / float(arm_cost.get(key, math.nan))


def _scaled(st: dict, factor: float) -> dict:
    """A speed-up in steps turned into one in seconds or FLOPs (x baseline / arm cost)."""
    ok = math.isfinite(factor) and factor > 0
    out = {k: (st[k] * factor if ok else math.nan) for k in ("ratio", "ci_low", "ci_high")}
    return {**st, **out}


def _speedup_verdict(claim: str, metric: str, st: dict) -> dict:
    """`studies.verdict` of "speed-up > 1", kept only where the censoring rule allows it."""
    v = studies.verdict(claim, metric, st)
    allowed = {
        "exact": ("supported", "not supported"),
        "lower bound": ("supported",),
        "upper bound": ("not supported",),
        "mixed": (),
        "neither reached": (),
    }[st.get("rule", "exact")]
    if v["verdict"] != "not significant" and v["verdict"] not in allowed:
        v["verdict"] = "not significant"
    return v


def analyse_dataset(raw: dict, levels_cfg, baseline: str | None) -> dict:
    """Adds statistics to the raw records of one dataset: final metrics with CIs, mean curves,
    the data floor, the quality levels, steps / seconds / FLOPs to each level per arm and
    their speed-ups over the baseline, sweep summaries and the best sampler per NFE.

    A pure function of `raw` (and the level settings), so results.json can be re-analysed.
    """
    arms, metrics = raw["arms"], raw["metrics"]
    primary = raw["primary_metric"]
    if primary not in metrics:
        raise ValueError(f"primary metric {primary!r} is not measured; valid: {metrics}")
    for arm in arms.values():
        seeds = list(arm["seeds"].values())
        arm["final"] = {m: studies.mean_ci([s["final"].get(m) for s in seeds]) for m in metrics}
        arm["curve_mean"] = {"step": seeds[0]["curve"]["step"]}
        for m in seeds[0]["curve"]:
            if m != "step":
                per_step = [
                    studies.mean_ci(v) for v in zip(*[s["curve"][m] for s in seeds], strict=True)
                ]
                arm["curve_mean"][m] = {
                    k: [st[k] for st in per_step] for k in ("mean", "ci_low", "ci_high")
                }

    floor = studies.mean_ci(raw["floor_values"])
    raw["floor"] = {"metric": primary, "num_samples": raw["eval_num_samples"], **floor}
    factors = [float(f) for f in levels_cfg.factors]
    interp = bool(levels_cfg.interpolate)
    last = raw["eval_steps"][-1]
    costs = raw.get("cost") or {}
    levels = []
    for f in factors:
        value = (
            f * floor["mean"] if math.isfinite(floor["mean"]) and floor["mean"] > 0 else math.nan
        )
        level = {"factor": f, "value": value, "arms": {}, "vs_baseline": {}}
        for name, arm in arms.items():
            steps = [
                studies.steps_to_threshold(c["step"], c[primary], value, interpolate=interp)
                if math.isfinite(value)
                else None
                for c in (rec["curve"] for rec in arm["seeds"].values())
            ]
            cost = costs.get(name, {})
            sps = float(cost.get("seconds_per_step", math.nan))
            fps = float(cost.get("flops_per_step", math.nan))
            level["arms"][name] = {
                "steps": {**studies.mean_ci(steps), "per_seed": steps},
                "seconds": studies.mean_ci([None if s is None else s * sps for s in steps]),
                "flops": studies.mean_ci([None if s is None else s * fps for s in steps]),
                "n_reached": sum(s is not None for s in steps),
                "n_seeds": len(steps),
            }
        if baseline is not None:
            ref = level["arms"][baseline]["steps"]["per_seed"]
            bc = costs.get(baseline, {})
            for name in arms:
                if name == baseline:
                    continue
                st = level_speedup(ref, level["arms"][name]["steps"]["per_seed"], last)
                ac = costs.get(name, {})

                level["vs_baseline"][name] = {
                    "steps": st,
                    "seconds": _scaled(st, _cost_ratio(bc, ac, "seconds_per_step")),
                    "flops": _scaled(st, _cost_ratio(bc, ac, "flops_per_step")),
                }
        levels.append(level)
    raw["levels"] = levels
    raw["level_interpolate"] = interp

    if baseline is not None:
        ref_final = arms[baseline]["final"]
        for arm in arms.values():
            arm["vs_baseline"] = {
                "final_difference": {
                    m: studies.paired_difference(arm["final"][m]["values"], ref_final[m]["values"])
                    for m in metrics
                },
                # > 1: this arm ends lower (better) than the baseline.
                "final_ratio": {
                    m: studies.paired_log_ratio(ref_final[m]["values"], arm["final"][m]["values"])
                    for m in metrics
                },
            }
    for arm in arms.values():
        arm["sweep"] = _summarise_sweep(arm["sweep_raw"], raw["sweep_metrics"])
        arm["best_sampler"] = _best_sampler(arm["sweep"], raw["sweep_primary"])
    sf = studies.mean_ci(raw.get("sweep_floor_values") or raw["floor_values"])
    raw["sweep_floor"] = {"metric": raw["sweep_primary"], "num_samples": raw["sweep_num_samples"]}
    raw["sweep_floor"].update(sf)
    raw["few_step"] = _few_step(raw, baseline)
    raw["baseline"] = baseline
    return raw


def _summarise_sweep(sweep_raw: dict, metric_names) -> dict:
    """Per sampler: settings, mean NFE and each metric's mean and CI over seeds."""
    seeds = list(sweep_raw)
    out: dict[str, dict] = {}
    for i, point in enumerate(sweep_raw[seeds[0]] if seeds else []):
        rows = [sweep_raw[s][i] for s in seeds]
        entry = out.setdefault(point["sampler"], {"setting": [], "nfe": [], "errors": []})
        entry["setting"].append(point["setting"])
        entry["nfe"].append(studies.mean_ci([r["nfe"] for r in rows])["mean"])
        entry["errors"].append(sorted({r["error"] for r in rows if r["error"]}))
        for m in metric_names:
            st = studies.mean_ci([r[m] for r in rows])
            for key in ("mean", "ci_low", "ci_high"):
                entry.setdefault(m, {"mean": [], "ci_low": [], "ci_high": []})[key].append(st[key])
            entry.setdefault(f"{m}_values", []).append([r[m] for r in rows])
    return out


def _best_sampler(sweep: dict, metric: str) -> dict:
    """Per exact NFE: the fixed-NFE sampler (all but adaptive dopri5) with the lowest mean metric.

    {str(nfe): {"sampler", "mean", "ci_low", "ci_high", "values", "candidates"}}; samplers that
    failed or gave a non-finite mean are skipped (an NFE where all did has sampler None).
    """
    by_nfe: dict[int, dict] = {}
    for sampler, entry in sweep.items():
        if sampler == "dopri5":
            continue
        for i, nfe in enumerate(entry["setting"]):
            by_nfe.setdefault(int(nfe), {})[sampler] = i
    out = {}
    for nfe in sorted(by_nfe):
        cands = by_nfe[nfe]
        ok = {
            s: sweep[s][metric]["mean"][i]
            for s, i in cands.items()
            if not sweep[s]["errors"][i] and math.isfinite(sweep[s][metric]["mean"][i])
        }
        best = min(ok, key=ok.get) if ok else None
        row = {"sampler": best, "candidates": sorted(cands)}
        for key in ("mean", "ci_low", "ci_high"):
            row[key] = sweep[best][metric][key][cands[best]] if best else math.nan
        row["values"] = sweep[best][f"{metric}_values"][cands[best]] if best else []
        out[str(nfe)] = row
    return out


def _few_step(ds: dict, baseline: str | None) -> dict:
    """At the smallest swept NFE: each arm's best sampler vs the baseline's best (paired by
    seed; > 1: the arm is lower, i.e. better)."""
    arms = ds["arms"]
    nfes = sorted({int(n) for a in arms.values() for n in a["best_sampler"]})
    if baseline is None or not nfes:
        return {}
    nfe = str(nfes[0])
    ref = arms[baseline]["best_sampler"].get(nfe, {})
    out = {"nfe": int(nfe), "metric": ds["sweep_primary"], "arms": {}}
    for name, arm in arms.items():
        b = arm["best_sampler"].get(nfe, {})
        entry = {"sampler": b.get("sampler"), "baseline_sampler": ref.get("sampler")}
        if name != baseline and b.get("values") and ref.get("values"):
            entry.update(studies.paired_log_ratio(ref["values"], b["values"]))
        out["arms"][name] = entry
    return out


def _level_name(f: float) -> str:
    return f"{f:g}x floor"


def _verdicts(ds: dict) -> list[dict]:
    """Per arm vs the baseline: fewer steps, seconds and FLOPs to each level; lower final
    primary metric (and likelihood KL where measured); lower metric at the fewest NFE."""
    base, metric = ds["baseline"], ds["primary_metric"]
    out = []
    if base is None:
        return out
    for name, arm in ds["arms"].items():
        if name == base:
            continue
        for level in ds["levels"]:
            vs = level["vs_baseline"][name]
            lv = _level_name(level["factor"])
            for what, words in (("steps", "steps"), ("seconds", "seconds"), ("flops", "FLOPs")):
                out.append(
                    _speedup_verdict(
                        f"{name} reaches {metric} <= {lv} in fewer training {words} than {base}",
                        metric,
                        vs[what],
                    )
                )
        for m in dict.fromkeys([metric] + [x for x in ("kl",) if x in ds["metrics"]]):
            out.append(
                studies.verdict(
                    f"{name} ends with a lower {m} than {base}",
                    m,
                    arm["vs_baseline"]["final_ratio"][m],
                )
            )
        fs = ds.get("few_step", {}).get("arms", {}).get(name)
        if fs and "ratio" in fs:
            out.append(
                studies.verdict(
                    f"{name} at its best {ds['few_step']['nfe']}-NFE sampler ({fs['sampler']}) "
                    f"has a lower {ds['few_step']['metric']} than {base} at its best "
                    f"({fs['baseline_sampler']})",
                    ds["few_step"]["metric"],
                    fs,
                )
            )
    return out


def _finest_common(ds: dict, name: str) -> dict | None:
    """The finest level at which the arm and the baseline both reached in every seed."""
    base = ds["baseline"]
    for level in reversed(ds["levels"]):
        a, b = level["arms"][name], level["arms"][base]
        if a["n_reached"] == a["n_seeds"] and b["n_reached"] == b["n_seeds"]:
            return level
    return None


def headline(ds: dict, arm: str = "") -> list[dict]:
    """The opening verdict table of one dataset for one arm (default: the first non-baseline):
    rows {"claim", "measured", "ratio", "ci_low", "ci_high", "verdict"} taken from the verdicts
    (every number is a recorded one; nothing is asserted here).

    Claims: fewer steps to every level (but those reached by both at the first evaluation in
    every seed, or by neither in any, which carry no information; the finest is always shown);
    fewer seconds and fewer FLOPs at the finest level both
    arms reached in every seed (the finest level overall if none); lower final quality metric;
    lower metric at the fewest swept NFE, each at its best sampler.
    """
    base = ds["baseline"]
    if base is None:
        return []
    names = [n for n in ds["arms"] if n != base]
    arm = arm if arm in names else (names[0] if names else "")
    if not arm:
        return []
    by_claim = {v["claim"]: v for v in _verdicts(ds)}
    metric, fl = ds["primary_metric"], ds["floor"]
    rows = []

    def row(claim, measured):
        v = by_claim.get(claim)
        if v is not None:
            rows.append({**v, "measured": measured})

    first = ds["eval_steps"][0]
    for i, level in enumerate(ds["levels"]):
        lv = _level_name(level["factor"])
        vs = level["vs_baseline"][arm]["steps"]
        both = (level["arms"][arm]["steps"]["per_seed"], level["arms"][base]["steps"]["per_seed"])
        at_first = all(s is not None and s <= first for s in both[0] + both[1])
        if i < len(ds["levels"]) - 1 and (at_first or vs["rule"] == "neither reached"):
            continue  # no information: both at the first evaluation, or neither ever (the
            # finest level is always shown; every level is in the full table below)
        cens = ""
        if vs["n_censored_arm"] or vs["n_censored_baseline"] or vs["n_censored_both"]:
            cens = (
                f"; not reached within {ds['eval_steps'][-1]} steps: {arm} "
                f"{vs['n_censored_arm'] + vs['n_censored_both']}, {base} "
                f"{vs['n_censored_baseline'] + vs['n_censored_both']} of "
                f"{level['arms'][arm]['n_seeds']}"
                f" seeds ({vs['rule']})"
            )
        row(
            f"{arm} reaches {metric} <= {lv} in fewer training steps than {base}",
            f"speed-up {base} / {arm} in steps to {metric} <= {fmt(level['value'])} "
            f"({level['factor']:g} x floor {fmt(fl['mean'])}){cens}",
        )
    level = _finest_common(ds, arm) or ds["levels"][-1]
    lv = _level_name(level["factor"])
    for words in ("seconds", "FLOPs"):
        row(
            f"{arm} reaches {metric} <= {lv} in fewer training {words} than {base}",
            f"steps x {words} per step (one run alone, `ArmTrainer.cost`) at the finest level "
            f"both reached in every seed ({lv})"
            + (
                "; seconds per step are medians of 5 dispatches per arm, timed round-robin "
                "on one machine: their noise is not in the interval"
                if words == "seconds"
                else ""
            ),
        )
    row(
        f"{arm} ends with a lower {metric} than {base}",
        f"{base} / {arm} final {metric} after {ds['eval_steps'][-1]} steps",
    )
    if "kl" in ds["metrics"]:
        row(f"{arm} ends with a lower kl than {base}", f"{base} / {arm} final likelihood KL")
    fs = ds.get("few_step", {})
    a = fs.get("arms", {}).get(arm)
    if a and "ratio" in a:
        row(
            f"{arm} at its best {fs['nfe']}-NFE sampler ({a['sampler']}) has a lower "
            f"{fs['metric']} than {base} at its best ({a['baseline_sampler']})",
            f"{base} / {arm} {fs['metric']} at {fs['nfe']} NFE, each at its best sampler",
        )
    return rows


# ------------------------------------------------------------------------------ report

fmt, fmt_ci = studies.fmt, studies.fmt_ci


def _fmt_speedup(st: dict) -> str:
    cell = studies.fmt_ratio(st)
    if st.get("rule") in ("lower bound", "upper bound", "mixed"):
        cell += f" ({st['rule']})"
    return cell


def findings(ds: dict) -> list[str]:
    """Plain-language findings for one dataset, computed from its analysed results."""
    arms, base, fl = ds["arms"], ds["baseline"], ds["floor"]
    primary, last = ds["primary_metric"], ds["eval_steps"][-1]
    out = [
        f"Data-vs-data floor of {primary} at {fl['num_samples']} samples: {fmt_ci(fl)} "
        f"(n = {fl['n']} pairs of independent data samples)."
    ]
    ranked = sorted(
        (n for n in arms if math.isfinite(arms[n]["final"][primary]["mean"])),
        key=lambda n: arms[n]["final"][primary]["mean"],
    )
    if ranked and fl["mean"] > 0:
        best = arms[ranked[0]]["final"][primary]["mean"]
        out.append(
            f"Best final {primary} after {last} steps: {ranked[0]} "
            f"({fmt_ci(arms[ranked[0]]['final'][primary])}"
            f", {best / fl['mean']:.2f}x the floor); worst: {ranked[-1]} "
            f"({arms[ranked[-1]]['final'][primary]['mean'] / fl['mean']:.2f}x the floor)."
        )
    for name in arms:
        reached = [
            lv
            for lv in ds["levels"]
            if lv["arms"][name]["n_reached"] == lv["arms"][name]["n_seeds"]
        ]
        finest = f"{reached[-1]['factor']:g}x the floor" if reached else "no level"
        out.append(f"{name} reached {finest} in every seed within {last} steps.")
    if base is not None:
        for name in arms:
            if name == base:
                continue
            for level in ds["levels"]:
                st = level["vs_baseline"][name]["steps"]
                if not math.isfinite(st["ratio"]):
                    continue
                lo, hi = st["ci_low"], st["ci_high"]
                where = ""
                if math.isfinite(lo) and lo > 1:
                    where = f"{name} faster"
                elif math.isfinite(hi) and hi < 1:
                    where = f"{base} faster"
                else:
                    where = "no significant difference"
                out.append(
                    f"{_level_name(level['factor'])}: speed-up of {name} over {base} in steps "
                    f"{_fmt_speedup(st)}: {where}."
                )
    return out


def _levels_tables(ds) -> list[str]:
    arms, base, metric = ds["arms"], ds["baseline"], ds["primary_metric"]
    out = []
    head = ["arm", *[f"{_level_name(lv['factor'])} ({fmt(lv['value'])})" for lv in ds["levels"]]]
    rows = []
    for name in arms:
        cells = []
        for lv in ds["levels"]:
            a = lv["arms"][name]
            cells.append(f"{fmt_ci(a['steps'], 4)} ({a['n_reached']}/{a['n_seeds']})")
        rows.append([name, *cells])
    out += [
        f"Steps to each level of `{metric}` (mean ± 95% CI over the seeds that reached it; "
        "reached / seeds in brackets):",
        "",
        *studies.table(head, rows),
        "",
    ]
    if base is not None:
        for what, words in (("steps", "steps"), ("seconds", "seconds"), ("flops", "FLOPs")):
            rows = [
                [name, *[_fmt_speedup(lv["vs_baseline"][name][what]) for lv in ds["levels"]]]
                for name in arms
                if name != base
            ]
            out += [
                f"Speed-up over {base} in training {words} to each level ({base} / arm, "
                "geometric mean over seeds [95% CI]; > 1: the arm is faster):",
                "",
                *studies.table(head, rows),
                "",
            ]
    return out


def _nan(x) -> float:
    """A recorded number; None (how results.json stores NaN: a level not reached) is NaN."""
    return math.nan if x is None else float(x)


def _compute_table(ds) -> list[str]:
    costs = ds.get("cost")
    if not costs:
        return []
    rows = []
    for name, c in costs.items():
        level = _finest_common(ds, name) if ds["baseline"] and name != ds["baseline"] else None
        level = level or ds["levels"][-1]
        a = level["arms"][name]
        rows.append(
            [
                name,
                fmt(c["flops_per_step"] / 1e6),
                fmt(c["bytes_per_step"] / 1e6),
                fmt(c["peak_memory_bytes"] / 2**20),
                fmt(c["seconds_per_step"] * 1e3),
                f"{fmt(_nan(a['flops']['mean']) / 1e9)} ({_level_name(level['factor'])})",
                f"{fmt(_nan(a['seconds']['mean']))} ({_level_name(level['factor'])})",
            ]
        )
    return [
        "Cost of ONE (arm, seed) training step run alone (`ArmTrainer.cost`: XLA cost analysis "
        "of the compiled step, its memory analysis, and the median wall time of a dispatch; a "
        "loop inside the objective, e.g. Sinkhorn's, is counted once by XLA's FLOPs, so minibatch "
        "OT's FLOPs are a lower bound while its seconds are real):",
        "",
        *studies.table(
            [
                "arm",
                "MFLOP / step",
                "MB accessed / step",
                "peak memory (MiB)",
                "ms / step",
                "GFLOP to level (mean)",
                "seconds to level (mean)",
            ],
            rows,
        ),
        "",
        f"The fused program trained every arm x seed in {fmt(ds['train_seconds'])} s "
        f"(compilation {fmt(ds['compile_seconds'])} s, not included); evaluation took "
        f"{fmt(ds['eval_seconds'])} s. Program groups (arms sharing one network call): "
        f"{ds['program_groups']}.",
        "",
    ]


def _sweep_tables(ds) -> list[str]:
    arms, metric, out = ds["arms"], ds["sweep_primary"], []
    first = next(iter(arms.values()))["sweep"]
    for sampler, entry in first.items():
        dopri = sampler == "dopri5"
        out += [
            f"**{sampler}** ({metric}, mean ± 95% CI over seeds; columns: "
            f"{'rtol = atol; mean NFE in brackets' if dopri else 'NFE'})",
            "",
        ]
        rows = []
        for name, a in arms.items():
            t = a["sweep"][sampler]
            cells = []
            for i in range(len(entry["setting"])):
                cell = fmt_ci({k: t[metric][k][i] for k in ("mean", "ci_low", "ci_high")})
                cell += f" [{fmt(t['nfe'][i])}]" if dopri else ""
                cells.append(cell + (" (failed)" if t["errors"][i] else ""))
            mark = " †" if sampler == "sde" and a["factors"]["coupling"] != "independent" else ""
            rows.append([name + mark, *cells])
        out += studies.table(["arm", *[fmt(s) for s in entry["setting"]]], rows) + [""]
        if sampler == "sde" and any(
            a["factors"]["coupling"] != "independent" for a in arms.values()
        ):
            out += [
                "† The SDE drift needs the score, obtained from the velocity with "
                "`fj.paths.convert`, which assumes the marginals of the independent coupling; "
                "with minibatch OT this score is not that of the model's marginals.",
                "",
            ]
    return out


def _best_sampler_table(ds) -> list[str]:
    arms, metric = ds["arms"], ds["sweep_primary"]
    nfes = sorted({int(n) for a in arms.values() for n in a.get("best_sampler", {})})
    if not nfes:
        return []
    rows = []
    for name, a in arms.items():
        cells = []
        for n in nfes:
            b = a["best_sampler"].get(str(n))
            cells.append(f"{b['sampler']}: {fmt(b['mean'])}" if b and b["sampler"] else "-")
        rows.append([name, *cells])
    sf = ds["sweep_floor"]
    return [
        f"**Best sampler per arm and NFE** (lowest mean {metric} among the fixed-NFE samplers "
        f"swept at that NFE; dopri5 excluded). Floor of {metric} at {sf['num_samples']} "
        f"samples: {fmt_ci(sf)}.",
        "",
        *studies.table(["arm", *[str(n) for n in nfes]], rows),
        "",
    ]


def _opening(results: dict) -> list[str]:
    rows = []
    for name, ds in results["datasets"].items():
        for r in ds.get("headline", []):
            rows.append(
                [name, r["claim"], r["measured"], studies.fmt_ratio(r), f"**{r['verdict']}**"]
            )
    if not rows:
        return []
    return [
        "## Verdicts",
        "",
        *studies.table(
            ["dataset", "claim", "what was measured", "ratio [95% CI]", "verdict"], rows
        ),
        "",
        "Ratios are baseline / arm (> 1 favours the arm), geometric means over paired seeds with "
        "Student-t 95% intervals; 'supported' when the whole interval lies above 1, 'not "
        "supported' when below, 'not significant' otherwise or when censoring leaves only a "
        "bound on the wrong side (see Method). Every row is computed from results.json.",
        "",
    ]


def _setup_line(b) -> str:
    """The training set-up shared by the arms of a dataset, in words."""
    b = b.to_dict() if hasattr(b, "to_dict") else b
    overrides = dict(sorted((b["model"]["overrides"] or {}).items()))  # one order per set-up
    return (
        f"{b['train']['num_steps']} steps of batch {b['data']['batch_size']} per arm and seed; "
        f"network {b['model']['name']}/{b['model']['variant']} {overrides or ''}; "
        f"optimizer {b['optim']['name']} lr {b['optim']['lr']} ({b['optim']['schedule']}, "
        f"warmup {b['optim']['warmup_steps']}); EMA {b['ema']['decays'][0]} evaluated."
    )


def _per_dataset_setup(results: dict) -> str:
    """The datasets whose training set-up differs from config.base (config.base_by_dataset)."""
    common = _setup_line(results["config"]["base"])
    own = [
        f"**{n}**: {ds['setup']}"
        for n, ds in results["datasets"].items()
        if ds.get("setup", common) != common
    ]
    return " Per dataset (`config.base_by_dataset`): " + " ".join(own) if own else ""


def render(results: dict) -> str:
    """The Markdown report of a comparison: the verdict table first."""
    cfg = results["config"]
    b = cfg["base"]
    lines = [
        "# flowjax head-to-head: flow matching vs diffusion",
        "",
        *_opening(results),
        "## Setup",
        "",
        f"Mode: **{results['mode']}**; {_setup_line(b)}" + _per_dataset_setup(results),
        *studies.machine_lines(results),
        "",
        "Every arm uses the same network, optimizer, batch size, number of steps, initial "
        "parameters, data stream and evaluation noise for a given seed; only the objective "
        "differs. All arms x seeds of a dataset train in one compiled program "
        "(`studies.ArmTrainer`).",
        "",
    ]
    for name, ds in results["datasets"].items():
        arms, fl = ds["arms"], ds["floor"]
        lines += [f"## {name}", ""]
        lines += studies.table(
            [
                "arm",
                "description",
                "objective",
                "path",
                "target",
                "weighting",
                "time dist",
                "coupling",
                "precond",
                "curve sampler",
            ],
            [
                [
                    n,
                    a["label"],
                    *(a["factors"][k] for k in (*DESCRIPTIVE_FIELDS, "precond")),
                    ds["eval_samplers"].get(n, ""),
                ]
                for n, a in arms.items()
            ],
        )
        lines += [
            "",
            "Metrics (lower is better): "
            + "; ".join(f"`{m}`: {d}" for m, d in ds["descriptions"].items())
            + ".",
        ]
        if ds["info"]:
            lines.append(
                "Reference values: "
                + ", ".join(f"{k} = {fmt(v, 4)}" for k, v in ds["info"].items())
                + "."
            )
        lines += [
            "",
            "### Floor and quality levels",
            "",
            f"Floor of `{fl['metric']}`: {fmt_ci(fl)} at {fl['num_samples']} samples "
            f"(n = {fl['n']} fresh training-split samples, each scored against the held-out "
            "reference exactly as model samples are). Levels: "
            + ", ".join(f"{_level_name(lv['factor'])} = {fmt(lv['value'])}" for lv in ds["levels"])
            + ".",
            "",
            *_levels_tables(ds),
            f"### Final quality (step {ds['eval_steps'][-1]}, mean ± 95% CI)",
            "",
        ]
        rows = [[n, *(fmt_ci(a["final"][m]) for m in ds["metrics"])] for n, a in arms.items()]
        lines += studies.table(["arm", *ds["metrics"]], rows) + [""]
        lines += ["### Compute", "", *_compute_table(ds)]
        if any(a["sweep"] for a in arms.values()):
            lines += ["### Quality vs number of function evaluations", "", *_sweep_tables(ds)]
            lines += _best_sampler_table(ds)
        lines += ["### All verdicts", "", *studies.verdict_table(ds["verdicts"]), ""]
        lines += ["### Findings", "", *[f"- {f}" for f in ds["findings"]], "", "### Plots", ""]
        lines += [f"![{p}]({p})" for p in results.get("plots", {}).get(name, [])] + [""]
    lines += [
        "## Method",
        "",
        "- Floor: the primary metric of a fresh data sample of the evaluation size (training "
        "split, its own seed) against the same held-out reference (or exact density) that "
        "model samples are scored against, repeated; mean and 95% interval. A perfect model "
        "scores the floor on average.",
        "- Levels: multiples of the floor's mean. Steps to a level: per seed, the first "
        "evaluation at or below it, interpolated linearly in log(step) from the evaluation "
        "before (evaluations are log-spaced); never reached = censored.",
        "- Speed-up over the baseline at a level: per seed baseline steps / arm steps, geometric "
        "mean with a Student-t interval on the log ratios. A seed censored on one side counts "
        "as reaching the level at the last evaluation (favouring that side): with only the "
        "baseline censored the ratio is a lower bound and only 'supported' can stand, with "
        "only the arm censored an upper bound and only 'not supported' can stand; seeds where "
        "neither reached are left out.",
        "- Seconds and FLOPs to a level: steps x that arm's seconds / XLA FLOPs per step of one "
        "run alone; their speed-ups are the step speed-up times the ratio of per-step costs "
        "(the timing is one measurement per arm: its noise is not in the interval).",
        "- Few-step quality: at the smallest swept NFE, each arm at the sampler with its lowest "
        "mean metric there (the choice is made on the same seeds, for every arm alike).",
        "- Intervals are Student-t 95% over seeds; all numbers are in results.json.",
        "",
    ]
    return "\n".join(lines)


def _plots(results: dict, shown: dict, workdir: str) -> dict[str, list[str]]:
    out = {}
    for name, ds in results["datasets"].items():
        arms, primary = ds["arms"], ds["primary_metric"]
        curves = {n: a["curve_mean"] for n, a in arms.items()}
        metrics = [m for m in ds["metrics"] if m in next(iter(curves.values()))]
        files = [
            studies.plot_curves(
                os.path.join(workdir, f"{name}_quality_vs_steps.png"),
                {m: (curves, m) for m in metrics},
                x="step",
                xlabel="training step",
                title=f"{name}: quality vs steps (mean, 95% CI band; dashed: floor)",
                hlines={primary: ds["floor"]["mean"]},
            )
        ]
        sweeps = next(iter(arms.values()))["sweep"]
        if sweeps:
            panels = {
                s: ({n: a["sweep"][s] for n, a in arms.items()}, ds["sweep_primary"])
                for s in sweeps
            }
            files.append(
                studies.plot_curves(
                    os.path.join(workdir, f"{name}_quality_vs_nfe.png"),
                    panels,
                    x="nfe",
                    xlabel="NFE",
                    title=f"{name}: quality vs NFE (mean over seeds)",
                )
            )
        pics = shown[name]
        files.append(
            studies.plot_samples(
                os.path.join(workdir, f"{name}_samples.png"),
                pics["arms"],
                reference=pics["reference"],
                title=f"{name}: final samples, seed {results['seeds'][0]}",
            )
        )
        np.savez_compressed(
            os.path.join(workdir, f"{name}_samples.npz"),
            **{n: np.asarray(x) for n, x in pics["arms"].items()},
        )
        out[name] = files
    return out
