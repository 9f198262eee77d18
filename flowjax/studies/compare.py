"""The head-to-head study: does flow matching train faster than diffusion?

Arms (objectives) are trained with an identical network, optimizer, batch, steps, seeds and
data, evaluated at log-spaced steps; the study measures steps and seconds to a quality
threshold, sweeps samplers over the number of function evaluations, and writes `report.md`,
`results.json` (the shared studies schema) and plots.

A *variant* (`config.variants`) names an objective recipe: the objective fields of
`configs/default.py` plus `precond` ("none" or "edm") and `sigma_data`. An *arm* is a variant
resolved for one dataset: `config.base` with that objective, a full config that
`fj.train.validate` accepts. Compare mode trains `config.arms`; ablation mode starts from
`config.ablation.base` and adds one arm per entry of `config.ablation.factors`, each changing
exactly one of path, target, weighting, time distribution (flow matching with the independent
coupling *is* the diffusion objective with target "velocity" and uniform weighting).

For each dataset, seed and arm a fresh state from the seed is trained through the library's
train step (`fj.train.make_train_step`), K steps per dispatch. All arms of a seed start from
the same parameters and see the same batches and evaluation noise (a paired design). The arm
is a run-time integer: `jax.lax.switch` picks its loss inside the one compiled train step and
its velocity (`fj.sampling.as_velocity` on its own path) inside the one sampled field, so no
arm pays for another's objective and nothing compiles per arm. Training seconds count the
train-step dispatches only (each waited for), not data, evaluation or compilation.
"""

from __future__ import annotations

import dataclasses
import functools
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
    "ArmField",
    "ResolvedArm",
    "SwitchPath",
    "Trainer",
    "analyse_dataset",
    "arm_variants",
    "estimate_sigma_data",
    "findings",
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
# first curve metric is the primary one (the threshold's), the first sweep one the sweep's.
STAGES = {
    "checkerboard": {"curve": ("hist_kl", "energy"), "final": ("w2",), "sweep": ("hist_kl",)},
    "gmm": {
        "curve": ("kl", "sample_nll", "energy"),
        "final": ("nll", "w2", "mmd"),
        "sweep": ("energy", "sample_nll"),
    },
    "digits": {"curve": ("digits_fd",), "final": (), "sweep": ("digits_fd",)},
    "points": {"curve": ("w2", "energy"), "final": ("mmd",), "sweep": ("energy",)},
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
        cfg = ml_collections.ConfigDict(config.base.to_dict())
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
    """How one arm's network output becomes a velocity: its apply function (or EDMPrecond
    around it; sigma_data a NumPy scalar, so a run-time value), path, prediction kind, and
    the clamp of t to [t_eps, 1 - t_eps]."""

    model: Callable
    path: AffinePath
    kind: str = eqx.field(static=True)
    t_eps: float = eqx.field(static=True)

    def velocity(self, params, x, t, y=None):
        from flowjax.sampling import as_velocity

        fn = lambda x_, t_: self.model(params, x_, t_, y=y)  # noqa: E731
        return as_velocity(fn, self.kind, self.path, t_eps=self.t_eps)(x, t)


class ArmField(eqx.Module):
    """The velocity field v(x, t) of arm `index` with parameters `params` (and labels `y`)."""

    arms: tuple[ArmModel, ...]
    params: Any
    index: jax.Array
    y: jax.Array | None = None

    def __call__(self, x, t):
        branches = [
            functools.partial(lambda arm, p, x_, t_: arm.velocity(p, x_, t_, self.y), arm)
            for arm in self.arms
        ]
        return jax.lax.switch(self.index, branches, self.params, x, t)


class SwitchPath(AffinePath):
    """The path of arm `index` among `paths`, as one AffinePath (for `fj.sampling.sample_sde`)."""

    paths: tuple[AffinePath, ...]
    index: jax.Array

    def _pick(self, method: str, t):
        return jax.lax.switch(self.index, [getattr(p, method) for p in self.paths], t)

    def alpha(self, t):
        return self._pick("alpha", t)

    def sigma(self, t):
        return self._pick("sigma", t)

    def d_alpha(self, t):
        return self._pick("d_alpha", t)

    def d_sigma(self, t):
        return self._pick("d_sigma", t)

    def log_snr(self, t):
        return self._pick("log_snr", t)

    def t_from_log_snr(self, lam):
        return self._pick("t_from_log_snr", lam)


ARM_KEY = "arm"  # batch entry carrying the arm index (one copy per example)


def _scalars(value, aux):
    # Every branch of lax.switch must return the same structure; keep what all objectives share.
    return value, {"loss": value, "t_mean": aux["t_mean"]}


class Trainer:
    """The one switched train step, state initialiser and per-arm velocities of one dataset."""

    def __init__(self, arms: Sequence[ResolvedArm], spec, *, t_eps: float):
        from flowjax import objectives
        from flowjax.train import make_mesh, make_optimizer, make_train_step, state_shardings
        from flowjax.train.experiment import DTYPE_MAP, build_objective, prediction_kind
        from flowjax.train.state import init_state

        base = arms[0].config
        self.spec, self.arms = spec, list(arms)
        m = base.model
        net = studies.build_network(
            m.name,
            m.variant,
            spec.shape,
            num_classes=spec.num_classes,
            dtype=DTYPE_MAP[m.dtype],
            **m.overrides.to_dict(),
        )
        losses, models = [], []
        for arm in arms:
            objective = build_objective(arm.config, spec)
            path = objective.path
            model = net.apply_fn
            if arm.precond == "edm":
                sd = np.float64(arm.sigma_data)
                model = objectives.EDMPrecond(net.apply_fn, path, sigma_data=sd)
            losses.append(functools.partial(objective, model=model))
            models.append(ArmModel(model, path, prediction_kind(arm.config), float(t_eps)))
        self.kinds = [a.kind for a in models]
        self.models = tuple(models)
        self.mesh = make_mesh(base.mesh.data, base.mesh.fsdp)
        self.optimizer, self.schedule = make_optimizer(base.optim, base.train.num_steps)
        num_ema = len(base.ema.decays)

        def switched(params, key, batch):
            inner = {k: v for k, v in batch.items() if k != ARM_KEY}
            branches = [functools.partial(lambda f, *a: _scalars(*f(*a)), f) for f in losses]
            return jax.lax.switch(batch[ARM_KEY][0], branches, params, key, inner)

        init = lambda seed: init_state(net.init_params, self.optimizer, seed, num_ema)  # noqa: E731
        abstract = jax.eval_shape(init, 0)
        sharding = state_shardings(abstract, self.mesh, min_size=base.mesh.fsdp_min_size)
        self.step = make_train_step(
            switched,
            self.optimizer,
            self.schedule,
            mesh=self.mesh,
            state_sharding=sharding,
            ema_decays=base.ema.decays,
            ema_warmup=base.ema.warmup,
            on_nonfinite=base.train.on_nonfinite,
            accum_steps=base.optim.accum_steps,
        )
        self._init = jax.jit(init, out_shardings=sharding)
        self.batch_keys = ("x1", "label") if spec.num_classes is not None else ("x1",)

    def init(self, seed: int):
        """A fresh train state for `seed` (the same for every arm: paired comparison)."""
        return self._init(jnp.asarray(seed, jnp.int32))

    def device_batches(self, stacked: dict, arm_index: int) -> dict:
        """K stacked host batches (K, B, ...) plus the arm index, as global device arrays."""
        from flowjax.train import make_global_batch

        batch = {k: stacked[k] for k in self.batch_keys}
        k, b = batch["x1"].shape[:2]
        batch[ARM_KEY] = np.full((k, b), arm_index, np.int32)
        return make_global_batch(batch, self.mesh, stacked=True)

    def field(self, params, arm_index: int, y=None) -> ArmField:
        return ArmField(self.models, params, jnp.asarray(arm_index, jnp.int32), y)

    def path(self, arm_index: int) -> SwitchPath:
        paths = tuple(m.path for m in self.models)
        return SwitchPath(paths, jnp.asarray(arm_index, jnp.int32))


# ------------------------------------------------------------------------------ sampling


def _sample(field_fn, x0, *, batch_size: int, draw: Callable) -> tuple[np.ndarray, float, str]:
    """Samples in batches of `batch_size`; (samples, mean NFE, error message or "")."""
    xs, nfes = [], []
    try:
        for i in range(0, x0.shape[0], batch_size):
            x, nfe = draw(field_fn(i, i + batch_size), x0[i : i + batch_size], i)
            xs.append(np.asarray(x))
            nfes.append(float(nfe))
    except RuntimeError as e:  # a solve that failed at run time (max_steps, NaN)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return np.full(x0.shape, np.nan, np.float32), math.nan, msg[:300]
    return np.concatenate(xs), float(np.mean(nfes)), ""


def _ode_draw(solver: str, num_steps: int | None, rtol: float, atol: float):
    from flowjax.sampling import sample_ode

    def draw(v, x0, offset):
        x, info = sample_ode(v, x0, solver=solver, num_steps=num_steps, rtol=rtol, atol=atol)
        return x, info["nfe"]

    return draw


def _sde_draw(path, key, num_steps: int, noise: float, t0: float):
    from flowjax.sampling import sample_sde

    def draw(v, x0, offset):
        k = jax.random.fold_in(key, offset)
        x, info = sample_sde(v, x0, path=path, key=k, num_steps=num_steps, noise=noise, t0=t0)
        return x, info["nfe"]

    return draw


def _sweep_settings(sweep) -> list[tuple[str, float, dict]]:
    """(sampler, setting value, kwargs) of every point of the sweep."""
    out = [("euler", int(n), dict(solver="euler", num_steps=int(n))) for n in sweep.euler_nfe]
    for nfe in sweep.heun_nfe:
        if int(nfe) % 2 or int(nfe) < 2:
            raise ValueError(
                f"config.sweep.heun_nfe: Heun takes 2 evaluations per step, so NFE must be even "
                f"and >= 2, got {nfe}"
            )
        out.append(("heun", int(nfe), dict(solver="heun", num_steps=int(nfe) // 2)))
    out += [
        ("dopri5", float(t), dict(solver="dopri5", num_steps=None, tol=float(t)))
        for t in sweep.dopri5_tol
    ]
    out += [("sde", int(n), dict(num_steps=int(n))) for n in sweep.sde_nfe]
    out += _spec_settings(sweep)
    return out


def _spec_settings(sweep) -> list[tuple[str, float, dict]]:
    """Points of the `fj.sampling` spec sweep ("solver@grid" at an exact NFE; issue 12)."""
    from flowjax.sampling import parse_sampler

    specs, nfes = tuple(sweep.get("specs", ())), tuple(sweep.get("spec_nfe", ()))
    if specs and not nfes:
        raise ValueError("config.sweep.spec_nfe: need at least one NFE when sweep.specs is set")
    out = []
    for name in specs:
        s = parse_sampler(name)  # ValueError naming the valid solvers and grids
        for nfe in nfes:
            s.num_steps(int(nfe))  # ValueError if no step count spends exactly nfe
            out.append((s.name, int(nfe), dict(spec=s, nfe=int(nfe))))
    return out


def _spec_draw(spec, path, nfe: int, t_eps: float, grid_kwargs: dict):
    from flowjax.sampling import sample_with

    def draw(v, x0, offset):
        kw = dict(kind="velocity", path=path, nfe=nfe, t_eps=t_eps, grid_kwargs=grid_kwargs)
        x, info = sample_with(spec, v, x0, **kw)
        return x, info["nfe"]

    return draw


def _field_slice(trainer, params, a, y, lo, hi):
    return trainer.field(params, a, None if y is None else y[lo:hi])


def _noise(spec, n: int, seed: int, eval_seed: int, salt: int):
    """Evaluation noise x0 (and labels) of one seed: the same for every arm."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(eval_seed), seed), salt)
    k_x, k_y = jax.random.split(key)
    x0 = jax.random.normal(k_x, (n, *spec.shape), jnp.float32)
    y = None if spec.num_classes is None else jax.random.randint(k_y, (n,), 0, spec.num_classes)
    return x0, y


# ------------------------------------------------------------------------------ training


def _train_arm(trainer, a, seed, batches, evals, evaluator, stages, x0, y, cfg, log):
    """Trains arm `a` for one seed; (record, final samples)."""
    ev = cfg.eval
    k = trainer.arms[0].config.train.steps_per_dispatch
    state = trainer.init(seed)
    curve: dict[str, list] = {"step": [], "seconds": [], "loss": [], "nfe": []}
    curve.update({m: [] for m in stages["curve"]})
    step, seconds, pending, errors, final = 0, 0.0, [], [], {}
    evals_left = list(evals)
    draw = _ode_draw(ev.solver, int(ev.num_steps) or None, float(ev.rtol), float(ev.atol))
    for stacked in batches:
        batch = trainer.device_batches({key: v[0] for key, v in stacked.items()}, a)
        t0 = time.perf_counter()
        state, metrics = trainer.step(state, batch)
        jax.block_until_ready(state)
        seconds += time.perf_counter() - t0
        pending.append(metrics["loss"])
        step += k
        if step < evals_left[0]:
            continue
        evals_left.pop(0)
        t_eval = time.perf_counter()
        params = state.params if ev.ema_index < 0 else state.ema[ev.ema_index]
        field_fn = functools.partial(_field_slice, trainer, params, a, y)
        samples, nfe, err = _sample(field_fn, x0, batch_size=int(ev.batch_size), draw=draw)
        if err:
            errors.append(f"step {step}: {err}")
        last = not evals_left
        names = stages["curve"] + (stages["final"] if last else ())
        scores = evaluator(samples, field=trainer.field(params, a, y), metrics=names)
        curve["step"].append(step)
        curve["seconds"].append(seconds)
        curve["loss"].append(float(np.mean(np.concatenate([np.ravel(m) for m in pending]))))
        curve["nfe"].append(nfe)
        for m in stages["curve"]:
            curve[m].append(scores[m])
        pending = []
        log(
            f"  step {step:>6}  train {seconds:7.2f}s  loss {curve['loss'][-1]:.4g}  "
            + "  ".join(f"{n} {scores[n]:.4g}" for n in stages["curve"])
            + f"  (eval {time.perf_counter() - t_eval:.1f}s)"
        )
        if last:
            final = scores
            break
    record = {
        "curve": curve,
        "final": final,
        "train_seconds": seconds,
        "seconds_per_step": seconds / max(step, 1),
        "num_steps": step,
        "num_skipped": int(jax.device_get(state.num_skipped)),
        "nonfinite_step": int(jax.device_get(state.nonfinite_step)),
        "errors": errors,
    }
    return record, params, samples


def _sweep_arm(trainer, a, params, seed, evaluator, stages, cfg, settings) -> list[dict]:
    sw, ev = cfg.sweep, cfg.eval
    x0, y = _noise(trainer.spec, int(sw.num_samples), seed, int(ev.seed), salt=1)
    sde_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(int(ev.seed)), seed), 2)
    out = []
    for sampler, value, kw in settings:
        if sampler == "sde":
            draw = _sde_draw(
                trainer.path(a), sde_key, kw["num_steps"], float(sw.sde_noise), float(sw.sde_t0)
            )
        elif "spec" in kw:
            gk = sw.get("grid_kwargs", None) or {}
            grid_kwargs = dict(gk.to_dict() if hasattr(gk, "to_dict") else gk)
            # The EDM / log-SNR grids get the sigma range of config.sweep.grid_kwargs; the
            # uniform grid takes none.
            grid_kwargs = grid_kwargs if kw["spec"].grid in ("edm", "logsnr") else {}
            draw = _spec_draw(
                kw["spec"], trainer.path(a), kw["nfe"], float(sw.get("t_eps", 0.0)), grid_kwargs
            )
        else:
            draw = _ode_draw(
                kw["solver"], kw["num_steps"], kw.get("tol", 1e-5), kw.get("tol", 1e-5)
            )
        field_fn = functools.partial(_field_slice, trainer, params, a, y)
        samples, nfe, err = _sample(field_fn, x0, batch_size=int(ev.batch_size), draw=draw)
        scores = evaluator(samples, metrics=stages["sweep"])
        out.append({"sampler": sampler, "setting": value, "nfe": nfe, "error": err, **scores})
    return out


def _check(config) -> None:
    studies.check_positive(config, "num_seeds")
    studies.names(config.datasets, "datasets")
    th = config.threshold
    if not th.factor > 0 or th.value < 0:
        raise ValueError(
            f"config.threshold: need factor > 0 and value >= 0, got factor={th.factor}, "
            f"value={th.value}"
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
        record.add(dataset, ds, verdicts=_verdicts(ds), num_seeds=len(seeds))
    return record.finish(workdir, render, lambda r, d: _plots(r, shown, d))


def _run_dataset(config, dataset, seeds, log):
    from flowjax import data, metrics

    spec = data.spec(dataset)
    arms = resolve_arms(config, dataset, jax.device_count())
    base = arms[0].config
    k, n = int(base.train.steps_per_dispatch), int(base.train.num_steps)
    evals = studies.eval_steps(k, n, int(config.eval.num_evals))
    log(
        f"[{dataset}] arms: {', '.join(a.name for a in arms)}; seeds {seeds}; {n} steps; "
        f"evaluations at {evals}"
    )
    stages = STAGES.get(dataset, STAGES.get(spec.kind))
    mc = config.metrics
    evaluator = metrics.make_evaluator(
        dataset,
        stages["curve"] + stages["final"],
        num_reference=int(mc.num_reference),
        seed=int(config.eval.seed),
        options=metrics.EvalOptions(
            hist_bins=int(mc.hist_bins),
            energy_samples=int(mc.energy_samples),
            w2_samples=int(mc.w2_samples),
            likelihood_samples=int(mc.likelihood_samples),
            likelihood_tol=float(mc.likelihood_tol),
            likelihood_t_eps=float(mc.likelihood_t_eps),
            inception_path=str(mc.inception_path),
        ),
        data_dir=base.data.data_dir or None,
        **base.data.kwargs.to_dict(),
    )
    info = {}
    if "kl" in evaluator.metrics:
        info["data_entropy"] = float(-np.mean(evaluator.log_density(evaluator.reference)))
    trainer = Trainer(arms, spec, t_eps=float(config.eval.t_eps))
    records = {a.name: {} for a in arms}
    final_params, shown, compile_seconds = {}, {}, None
    for seed in seeds:
        batches = studies.BatchStream(
            dataset,
            [seed],
            base.data.batch_size,
            n,
            k,
            keys=trainer.batch_keys,
            cache_mb=float(config.data_cache_mb),
            data_dir=base.data.data_dir or None,
            **base.data.kwargs.to_dict(),
        )
        if compile_seconds is None:
            t0 = time.perf_counter()
            first = next(iter(batches))
            warm, _ = trainer.step(
                trainer.init(seed),
                trainer.device_batches({key: v[0] for key, v in first.items()}, 0),
            )
            jax.block_until_ready(warm)
            compile_seconds = time.perf_counter() - t0
            log(f"[{dataset}] train step compiled and run once in {compile_seconds:.1f}s")
        x0, y = _noise(spec, int(config.eval.num_samples), seed, int(config.eval.seed), salt=0)
        for a, arm in enumerate(arms):
            log(f"[{dataset}] seed {seed} arm {arm.name}")
            rec, params, samples = _train_arm(
                trainer, a, seed, batches, evals, evaluator, stages, x0, y, config, log
            )
            records[arm.name][str(seed)] = rec
            final_params[(arm.name, seed)] = params
            if seed == seeds[0]:
                shown[arm.name] = samples
    settings = _sweep_settings(config.sweep) if config.sweep.enabled else []
    sweeps = {a.name: {} for a in arms}
    if settings:
        log(
            f"[{dataset}] sampler sweep: {len(settings)} settings x {len(arms)} arms x "
            f"{len(seeds)} seeds"
        )
        t_sweep = time.perf_counter()
        for a, arm in enumerate(arms):
            for seed in seeds:
                sweeps[arm.name][str(seed)] = _sweep_arm(
                    trainer,
                    a,
                    final_params[(arm.name, seed)],
                    seed,
                    evaluator,
                    stages,
                    config,
                    settings,
                )
            log(f"  {arm.name}: swept ({time.perf_counter() - t_sweep:.0f}s so far)")
    names = list(dict.fromkeys(stages["curve"] + stages["final"]))
    raw = {
        "spec": {"shape": list(spec.shape), "kind": spec.kind, "num_classes": spec.num_classes},
        "eval_steps": evals,
        "eval_num_samples": int(config.eval.num_samples),
        "sweep_num_samples": int(config.sweep.num_samples),
        "compile_seconds": compile_seconds,
        "metrics": names,
        "primary_metric": stages["curve"][0],
        "sweep_metrics": list(stages["sweep"]),
        "sweep_primary": stages["sweep"][0],
        "descriptions": {
            m: metrics.DESCRIPTIONS[m] for m in dict.fromkeys(names + list(stages["sweep"]))
        },
        "info": info,
        "arms": {
            arm.name: {
                "label": arm.label,
                "factors": arm.factors,
                "changed": arm.changed,
                "sigma_data": arm.sigma_data,
                "resolved_config": json.loads(arm.config.to_json_best_effort()),
                "seeds": records[arm.name],
                "sweep_raw": sweeps[arm.name],
            }
            for arm in arms
        },
    }
    baseline = config.ablation.base if config.mode == "ablation" else config.baseline
    ds = analyse_dataset(raw, config.threshold, baseline if baseline in raw["arms"] else None)
    pictures = {"arms": shown, "reference": evaluator.reference if spec.kind == "points" else None}
    return ds, pictures


# ------------------------------------------------------------------------------ analysis


def analyse_dataset(raw: dict, threshold_cfg, baseline: str | None) -> dict:
    """Adds statistics to the raw records of one dataset: final metrics with CIs, mean curves,
    the threshold, steps/seconds to it and their ratios to the baseline, sweep summaries.

    A pure function of `raw` (and the threshold settings), so results.json can be re-analysed.
    """
    arms, metrics = raw["arms"], raw["metrics"]
    primary = threshold_cfg.metric or raw["primary_metric"]
    if primary not in metrics:
        raise ValueError(
            f"config.threshold.metric: {primary!r} is not measured on this dataset; "
            f"valid: {metrics}"
        )
    for arm in arms.values():
        seeds = list(arm["seeds"].values())
        arm["final"] = {m: studies.mean_ci([s["final"].get(m) for s in seeds]) for m in metrics}
        for extra in ("train_seconds", "seconds_per_step"):
            arm["final"][extra] = studies.mean_ci([s[extra] for s in seeds])
        arm["curve_mean"] = {"step": seeds[0]["curve"]["step"]}
        for m in seeds[0]["curve"]:
            if m != "step":
                per_step = [
                    studies.mean_ci(v) for v in zip(*[s["curve"][m] for s in seeds], strict=True)
                ]
                arm["curve_mean"][m] = {
                    k: [st[k] for st in per_step] for k in ("mean", "ci_low", "ci_high")
                }

    # Threshold: factor x the best final mean over arms, unless given.
    finals = {name: arm["final"][primary]["mean"] for name, arm in arms.items()}
    best = min((n for n in finals if math.isfinite(finals[n])), key=finals.get, default=None)
    if threshold_cfg.value > 0:
        value, rule = float(threshold_cfg.value), "given (config.threshold.value)"
    elif best is None:
        value, rule = math.nan, "none: no arm has a finite final value"
    elif finals[best] > 0:
        value = float(threshold_cfg.factor) * finals[best]
        rule = f"{threshold_cfg.factor} x the best final mean ({best}: {finals[best]:.4g})"
    else:
        # A best value <= 0 is an unbiased estimate at its noise floor (e.g. the energy of a
        # near-perfect model): take the upper end of its 95% interval instead.
        st = arms[best]["final"][primary]
        value = st["ci_high"] if math.isfinite(st["ci_high"]) else 0.0
        rule = (
            f"upper end of the 95% interval of the best final mean ({best}: {finals[best]:.4g} "
            "<= 0, at the metric's noise floor)"
        )
    interp = bool(threshold_cfg.interpolate)
    raw["threshold"] = {
        "metric": primary,
        "value": value,
        "rule": rule,
        "best_arm": best,
        "interpolate": interp,
    }
    for arm in arms.values():
        steps, secs = [], []
        for rec in arm["seeds"].values():
            c = rec["curve"]
            st = studies.steps_to_threshold(c["step"], c[primary], value, interpolate=interp)
            steps.append(st)
            secs.append(studies.value_at_step([0, *c["step"]], [0.0, *c["seconds"]], st))
        arm["to_threshold"] = {
            "steps": {**studies.mean_ci(steps), "per_seed": steps},
            "seconds": {**studies.mean_ci(secs), "per_seed": secs},
            "n_reached": sum(v is not None for v in steps),
            "n_seeds": len(steps),
        }
    if baseline is not None:
        ref, ref_final = arms[baseline]["to_threshold"], arms[baseline]["final"]
        last = raw["eval_steps"][-1]
        for arm in arms.values():
            tt = arm["to_threshold"]
            arm["vs_baseline"] = {
                # speedup > 1: this arm needs fewer steps (seconds) than the baseline.
                "steps_speedup": studies.paired_log_ratio(
                    ref["steps"]["per_seed"], tt["steps"]["per_seed"]
                ),
                "seconds_speedup": studies.paired_log_ratio(
                    ref["seconds"]["per_seed"], tt["seconds"]["per_seed"]
                ),
                "steps_speedup_censored": studies.censored_log_ratio(
                    ref["steps"]["per_seed"], tt["steps"]["per_seed"], last
                ),
                "final_difference": {
                    m: studies.paired_difference(arm["final"][m]["values"], ref_final[m]["values"])
                    for m in metrics
                },
                "final_ratio": studies.paired_log_ratio(
                    ref_final[primary]["values"], arm["final"][primary]["values"]
                ),
                "seconds_per_step_ratio": studies.paired_log_ratio(
                    arm["final"]["seconds_per_step"]["values"],
                    ref_final["seconds_per_step"]["values"],
                ),
            }
    for arm in arms.values():
        arm["sweep"] = _summarise_sweep(arm["sweep_raw"], raw["sweep_metrics"])
        arm["best_sampler"] = _best_sampler(arm["sweep"], raw["sweep_primary"])
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
    return out


def _best_sampler(sweep: dict, metric: str) -> dict:
    """Per exact NFE: the fixed-NFE sampler (all but adaptive dopri5) with the lowest mean metric.

    {str(nfe): {"sampler", "mean", "ci_low", "ci_high", "candidates"}}; samplers that failed or
    gave a non-finite mean are skipped (an NFE where all did has sampler None).
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
        out[str(nfe)] = row
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
    return [
        f"**Best sampler per arm and NFE** (lowest mean {metric} among the fixed-NFE samplers "
        "swept at that NFE; dopri5 excluded)",
        "",
        *studies.table(["arm", *[str(n) for n in nfes]], rows),
        "",
    ]


def _verdicts(ds: dict) -> list[dict]:
    """Per arm vs the baseline: fewer steps and seconds to the threshold, lower final metric."""
    base, metric = ds["baseline"], ds["threshold"]["metric"]
    out = []
    for name, arm in ds["arms"].items():
        if base is None or name == base:
            continue
        vs = arm["vs_baseline"]
        out += [
            studies.verdict(
                f"{name} reaches the threshold in fewer steps than {base}",
                metric,
                vs["steps_speedup"],
            ),
            studies.verdict(
                f"{name} reaches the threshold in fewer training seconds than {base}",
                metric,
                vs["seconds_speedup"],
            ),
            studies.verdict(
                f"{name} ends with a lower {metric} than {base}", metric, vs["final_ratio"]
            ),
        ]
    return out


# ------------------------------------------------------------------------------ report

fmt, fmt_ci = studies.fmt, studies.fmt_ci


def _speed_sentence(name, base, st, what: str) -> str:
    n, missing = st["n"], st["n_missing"]
    tail = f"n = {n} seed{'s' if n != 1 else ''}"
    if missing:
        tail += f"; {missing} seed(s) left out where one side did not reach the threshold"
    r, lo, hi = st["ratio"], st["ci_low"], st["ci_high"]
    if not math.isfinite(lo):
        where = "fewer" if r >= 1 else "more"
        return (
            f"{name} reached the threshold in {max(r, 1 / r):.2f}× {where} {what} than {base} "
            f"(one paired seed, no interval; {tail})."
        )
    if lo > 1:
        return (
            f"{name} reached the threshold in {r:.2f}× fewer {what} than {base} "
            f"(95% CI [{lo:.2f}, {hi:.2f}]; {tail})."
        )
    if hi < 1:
        return (
            f"{base} reached the threshold in {1 / r:.2f}× fewer {what} than {name} "
            f"(95% CI [{1 / hi:.2f}, {1 / lo:.2f}]; {tail})."
        )
    return (
        f"No clear difference in {what} to the threshold between {name} and {base}: speed-up of "
        f"{name} over {base} {r:.2f}× (95% CI [{lo:.2f}, {hi:.2f}] contains 1; {tail})."
    )


def findings(ds: dict) -> list[str]:
    """Plain-language findings for one dataset, computed from its analysed results."""
    arms, base, th = ds["arms"], ds["baseline"], ds["threshold"]
    primary, last = th["metric"], ds["eval_steps"][-1]
    out = []
    ranked = sorted(
        (n for n in arms if math.isfinite(arms[n]["final"][primary]["mean"])),
        key=lambda n: arms[n]["final"][primary]["mean"],
    )
    if ranked:
        out.append(
            f"Best final {primary} after {last} steps: {ranked[0]} "
            f"({fmt_ci(arms[ranked[0]]['final'][primary])}); worst: {ranked[-1]} "
            f"({fmt_ci(arms[ranked[-1]]['final'][primary])})."
        )
    for name, arm in arms.items():
        tt = arm["to_threshold"]
        if tt["n_reached"] < tt["n_seeds"]:
            out.append(
                f"{name} did not reach the threshold ({primary} <= {fmt(th['value'])}) within "
                f"{last} steps in {tt['n_seeds'] - tt['n_reached']} of {tt['n_seeds']} seeds."
            )
    for name, arm in arms.items():
        if base is None or name == base:
            continue
        vs = arm["vs_baseline"]
        cens = vs["steps_speedup_censored"]
        if math.isfinite(vs["steps_speedup"]["ratio"]):
            out.append(_speed_sentence(name, base, vs["steps_speedup"], "steps"))
            out.append(_speed_sentence(name, base, vs["seconds_speedup"], "training seconds"))
        elif cens is None:
            out.append(
                f"{name} vs {base}: no speed-up to report (no seed in which both reached the "
                "threshold)."
            )
        if cens is not None:
            fast, slow = (name, base) if cens["kind"] == "lower" else (base, name)
            bound = cens["bound"] if cens["kind"] == "lower" else 1 / cens["bound"]
            out.append(
                f"{fast} reached the threshold in every seed, {slow} missed it within {last} "
                f"steps in {cens['n_censored']} of {cens['n']}: counting those at step {last}, "
                f"{fast} needed at least {bound:.2f}× fewer steps (geometric mean over seeds)."
            )
        diff = vs["final_difference"][primary]
        if math.isfinite(diff["ci_low"]) and (diff["ci_low"] > 0 or diff["ci_high"] < 0):
            better = name if diff["mean"] < 0 else base
            out.append(
                f"Final {primary}: {better} is lower (better); {name} - {base} = "
                f"{fmt(diff['mean'])} (95% CI [{fmt(diff['ci_low'])}, {fmt(diff['ci_high'])}])."
            )
        cost = vs["seconds_per_step_ratio"]
        if math.isfinite(cost["ci_low"]) and (cost["ci_low"] > 1.1 or cost["ci_high"] < 1 / 1.1):
            out.append(
                f"A training step of {name} costs {cost['ratio']:.2f}× the wall-clock time of one "
                f"of {base} (95% CI [{cost['ci_low']:.2f}, {cost['ci_high']:.2f}])."
            )
    return out + _nfe_findings(ds)


def _nfe_findings(ds: dict) -> list[str]:
    arms, metric, out = ds["arms"], ds["sweep_primary"], []
    for sampler in ("euler", "heun"):
        table = {n: a["sweep"][sampler] for n, a in arms.items() if a["sweep"].get(sampler)}
        if not table:
            continue
        parts = []
        for i, nfe in enumerate(next(iter(table.values()))["setting"]):
            vals = {
                n: t[metric]["mean"][i]
                for n, t in table.items()
                if math.isfinite(t[metric]["mean"][i])
            }
            if vals:
                best = min(vals, key=vals.get)
                parts.append(f"NFE {nfe}: {best} ({fmt(vals[best])})")
        if parts:
            out.append(
                f"{sampler.capitalize()} sampler, lowest {metric} per NFE: "
                + "; ".join(parts)
                + "."
            )
        # Sample metrics such as the histogram KL are biased by the sample size: compare with
        # the training threshold only when both use as many samples.
        if (
            metric == ds["threshold"]["metric"]
            and ds["sweep_num_samples"] == ds["eval_num_samples"]
        ):
            value = ds["threshold"]["value"]
            need = {
                n: min(
                    (
                        s
                        for s, v in zip(t["setting"], t[metric]["mean"], strict=True)
                        if math.isfinite(v) and v <= value
                    ),
                    default=None,
                )
                for n, t in table.items()
            }
            out.append(
                f"Smallest {sampler.capitalize()} NFE at which the mean {metric} is at or below "
                f"the training threshold {fmt(value)}: "
                + ", ".join(f"{n} {v if v is not None else '> max'}" for n, v in need.items())
                + "."
            )
    return out


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
                "with minibatch OT this score is not that of the model's marginals, so its SDE "
                "row measures that mismatch rather than the model.",
                "",
            ]
    return out


def render(results: dict) -> str:
    """The Markdown report of a comparison."""
    cfg = results["config"]
    b = cfg["base"]
    lines = [
        "# flowjax head-to-head: flow matching vs diffusion",
        "",
        f"Mode: **{results['mode']}**; {b['train']['num_steps']} steps of batch "
        f"{b['data']['batch_size']} per arm; network {b['model']['name']}/{b['model']['variant']} "
        f"{b['model']['overrides'] or ''}; optimizer {b['optim']['name']} lr {b['optim']['lr']} "
        f"({b['optim']['schedule']}, warmup {b['optim']['warmup_steps']}); EMA "
        f"{b['ema']['decays']} evaluated.",
        *studies.machine_lines(results),
        "",
        "Every arm uses the same network, optimizer, batch size, number of steps, initial "
        "parameters, data stream and evaluation noise for a given seed; only the objective "
        "differs. Curve samples come from the ODE of each model's velocity "
        f"({cfg['eval']['solver']}, {cfg['eval']['num_steps'] or 'adaptive'} steps), obtained "
        "with `fj.paths.convert` whatever the model predicts.",
        "",
    ]
    for name, ds in results["datasets"].items():
        th, arms, base = ds["threshold"], ds["arms"], ds["baseline"]
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
            ],
            [
                [n, a["label"], *(a["factors"][k] for k in (*DESCRIPTIVE_FIELDS, "precond"))]
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
        lines += ["", f"### Final quality (step {ds['eval_steps'][-1]}, mean ± 95% CI)", ""]
        rows = []
        for n, a in arms.items():
            sps = {
                k: a["final"]["seconds_per_step"][k] * 1e3 for k in ("mean", "ci_low", "ci_high")
            }
            rows.append(
                [
                    n,
                    *(fmt_ci(a["final"][m]) for m in ds["metrics"]),
                    fmt_ci(a["final"]["train_seconds"]),
                    fmt_ci(sps),
                ]
            )
        lines += studies.table(["arm", *ds["metrics"], "train seconds", "ms / step"], rows)
        lines += [
            "",
            "### Steps and seconds to the threshold",
            "",
            f"Threshold: `{th['metric']}` <= {fmt(th['value'], 4)} ({th['rule']}). Steps: first "
            "evaluation at or below the threshold"
            + (
                ", interpolated linearly in log(step) from the evaluation before"
                if th["interpolate"]
                else ""
            )
            + "; seconds: training seconds at that step.",
            "",
        ]
        head = ["arm", "reached", "steps to threshold", "seconds to threshold"]
        if base is not None:
            head += [f"speed-up vs {base}, steps [95% CI]", f"speed-up vs {base}, seconds [95% CI]"]
        rows = []
        for n, a in arms.items():
            tt = a["to_threshold"]
            row = [
                n,
                f"{tt['n_reached']}/{tt['n_seeds']}",
                fmt_ci(tt["steps"], 4),
                fmt_ci(tt["seconds"]),
            ]
            if base is not None:
                row += [
                    studies.fmt_ratio(a["vs_baseline"][k])
                    for k in ("steps_speedup", "seconds_speedup")
                ]
            rows.append(row)
        lines += studies.table(head, rows) + [""]
        if results["mode"] == "ablation" and base is not None:
            lines += ["### Factor attribution (one factor changed per arm)", ""]
            rows = []
            for n, a in arms.items():
                if n != base:
                    d = a["vs_baseline"]["final_difference"][th["metric"]]
                    rows.append(
                        [
                            a["changed"],
                            n,
                            f"{fmt(d['mean'])} [{fmt(d['ci_low'])}, {fmt(d['ci_high'])}]",
                            studies.fmt_ratio(a["vs_baseline"]["steps_speedup"]),
                        ]
                    )
            lines += studies.table(
                [
                    "factor changed",
                    "arm",
                    f"final {th['metric']}: arm - base [95% CI]",
                    "speed-up in steps vs base [95% CI]",
                ],
                rows,
            ) + [""]
        if any(a["sweep"] for a in arms.values()):
            lines += ["### Quality vs number of function evaluations", "", *_sweep_tables(ds)]
            lines += _best_sampler_table(ds)
        lines += ["### Verdicts", "", *studies.verdict_table(ds["verdicts"]), ""]
        lines += ["### Findings", "", *[f"- {f}" for f in ds["findings"]], "", "### Plots", ""]
        lines += [f"![{p}]({p})" for p in results.get("plots", {}).get(name, [])] + [""]
    lines += [
        "## Method",
        "",
        "- Intervals are Student-t 95% intervals over seeds (mean ± t_{n-1} s / sqrt(n)).",
        "- Steps to threshold: per seed, the first evaluation at or below the threshold, placed "
        "by linear interpolation of the metric in log(step) between it and the evaluation before "
        "(evaluations are log-spaced); never reached = censored. Seconds to threshold: "
        "cumulative training seconds interpolated linearly at that step.",
        "- Speed-up vs the baseline: per seed the ratio baseline / arm of steps (seconds) to "
        "threshold; the geometric mean with a Student-t interval on the log ratios, over the "
        "seeds where both reached it (paired by seed). A verdict is 'supported' when the "
        "interval lies above 1, 'not supported' when below, else 'not significant'.",
        "- Training seconds count the train-step dispatches only (waited for). On a shared "
        "machine they are noisy; the steps are exact.",
        "- Minibatch OT (Sinkhorn) pairs are drawn from the plan in two stages (a row from the "
        "row sums, then a column from that row): the law of drawing from the flattened plan.",
        "",
    ]
    return "\n".join(lines)


def _plots(results: dict, shown: dict, workdir: str) -> dict[str, list[str]]:
    out = {}
    for name, ds in results["datasets"].items():
        arms, th = ds["arms"], ds["threshold"]
        curves = {n: a["curve_mean"] for n, a in arms.items()}
        metrics = [m for m in ds["metrics"] if m in next(iter(curves.values()))]
        files = [
            studies.plot_curves(
                os.path.join(workdir, f"{name}_quality_vs_{what}.png"),
                {m: (curves, m) for m in metrics},
                x=x,
                xlabel=f"training {x}",
                title=f"{name}: quality vs {x} (mean, 95% CI band)",
                hlines={th["metric"]: th["value"]},
            )
            for what, x in (("steps", "step"), ("seconds", "seconds"))
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
