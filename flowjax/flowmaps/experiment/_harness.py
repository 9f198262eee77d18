"""The flow-map experiment: teacher -> every method -> quality against NFE -> guidance.

`run(config, workdir)` does, for each dataset of `config.datasets`:

1. the teacher: the exact mixture velocity, or a flow-matching network trained here, and its
   quality with an adaptive dopri5 solve (its NFE recorded) and with 1..16 Euler steps;
2. every method of `config.methods` on the same two-time network, optimizer, batch, number of
   steps and seeds (distillation methods from the teacher, self-distillation from data);
3. each method's samples after 1, 2, 4, 8, 16 steps from the same noise, scored by the
   dataset's metrics, with Student-t intervals over the training seeds;
4. reward guidance with the best jump-sampled map, every approach at the same NFE;

and writes `report.md`, `results.json` and PNG plots to `workdir`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowjax.flowmaps.experiment import _guide, _report, _sampling
from flowjax.flowmaps.experiment._methods import METHODS, Method, resolve_methods
from flowjax.flowmaps.experiment._stats import mean_ci, teacher_ratios
from flowjax.flowmaps.experiment._suites import SUITES, Suite, make_suite
from flowjax.flowmaps.experiment._train import BatchStream, build_network, train, unstack

__all__ = ["run", "check_config", "method_loss", "machine_info"]


# ------------------------------------------------------------------------------ config


TEACHER_SOLVES = ("dopri5", "heun")  # the teacher's reference solves (see run_dataset)


def _names(value: str) -> list[str]:
    return [n.strip() for n in str(value).split(",") if n.strip()]


def check_config(config) -> None:
    """Raises a one-line ValueError naming the first bad field of an experiment config."""
    datasets = _names(config.datasets)
    if not datasets:
        raise ValueError(f"config.datasets: empty; valid: {sorted(SUITES)}")
    for name in datasets:
        if name not in SUITES:
            raise ValueError(f"config.datasets: unknown dataset {name!r}; valid: {sorted(SUITES)}")
        if name not in config.suites:
            raise ValueError(f"config.suites.{name}: missing (options of dataset {name!r})")
    methods = resolve_methods(config.methods)
    for name in config.method_kwargs.keys():
        if name not in METHODS:
            raise ValueError(f"config.method_kwargs.{name}: not a method; valid: {list(METHODS)}")
    for field, value in (
        ("num_seeds", config.num_seeds),
        ("train.num_steps", config.train.num_steps),
        ("train.batch_size", config.train.batch_size),
        ("train.steps_per_dispatch", config.train.steps_per_dispatch),
        ("eval.w2_samples", config.eval.w2_samples),
        ("eval.energy_samples", config.eval.energy_samples),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"config.{field}: a positive int, got {value!r}")
    nfe = tuple(config.eval.nfe)
    if not nfe or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in nfe):
        raise ValueError(f"config.eval.nfe: positive ints, got {nfe!r}")
    if 1 not in nfe or 2 not in nfe:
        raise ValueError(f"config.eval.nfe: must contain 1 and 2 (the ratio figures), got {nfe}")
    for name in datasets:
        opts = config.suites[name]
        steps = _steps(config, name)
        if steps % config.train.steps_per_dispatch:
            raise ValueError(
                f"config.suites.{name}.num_steps: {steps} is not a multiple of "
                f"config.train.steps_per_dispatch={config.train.steps_per_dispatch}"
            )
        if not SUITES[name].analytic_teacher:
            t_steps = int(opts.teacher_steps)
            if t_steps < 1 or t_steps % config.train.steps_per_dispatch:
                raise ValueError(
                    f"config.suites.{name}.teacher_steps: a positive multiple of "
                    f"config.train.steps_per_dispatch, got {t_steps}"
                )
        if SUITES[name].kind == "points" and int(opts.eval_samples) < max(
            config.eval.w2_samples, config.eval.energy_samples
        ):
            raise ValueError(
                f"config.suites.{name}.eval_samples: at least eval.w2_samples and "
                f"eval.energy_samples, got {opts.eval_samples}"
            )
    if config.teacher_eval.reference not in TEACHER_SOLVES:
        raise ValueError(
            f"config.teacher_eval.reference: one of {list(TEACHER_SOLVES)}, got "
            f"{config.teacher_eval.reference!r}"
        )
    heun = config.teacher_eval.heun_steps
    if isinstance(heun, bool) or not isinstance(heun, int) or heun < 1:
        raise ValueError(f"config.teacher_eval.heun_steps: a positive int, got {heun!r}")
    if config.guidance.enabled and not any(m.sampler == "jumps" for m in methods):
        raise ValueError("config.guidance.enabled: needs a method sampled by jumps")


def _steps(config, dataset: str) -> int:
    steps = int(config.suites[dataset].num_steps)
    return steps if steps > 0 else int(config.train.num_steps)


# ------------------------------------------------------------------------------ pieces


def method_loss(method: Method, kwargs: dict, apply_fn, path):
    """`loss(params, key, batch, teacher)` of a method (teacher ignored when not needed).

    The keyword arguments are checked now by the objective's own `validate_kwargs`.
    """
    from flowjax import objectives

    objectives.make_objective(method.name, model=apply_fn, path=path, **kwargs)
    fn = objectives.get_objective(method.name)

    def loss(params, key, batch, teacher):
        extra = {"teacher": teacher} if method.needs_teacher else {}
        return fn(params, key, batch, model=apply_fn, path=path, **kwargs, **extra)

    return loss


def machine_info() -> dict:
    """What the timings were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        info["load_average"] = list(os.getloadavg())
    return info


def _config_dict(config) -> dict:
    return json.loads(config.to_json_best_effort())


def _stat_table(per_seed: list[dict[str, dict[str, float]]], nfe, metrics) -> dict:
    """{nfe: {metric: mean_ci over seeds}} from per-seed {nfe: {metric: value}}."""
    return {str(k): {m: mean_ci([s[str(k)][m] for s in per_seed]) for m in metrics} for k in nfe}


class _Clock:
    def __init__(self):
        self.t = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        out, self.t = now - self.t, now
        return out


def _draw(method_sampler: str, X, x0, k: int, *, path, key, batch_size: int):
    """k-step samples of a flow map from x0, in batches of batch_size (one compilation for
    every k: `_sampling`)."""
    out = []
    for i in range(0, x0.shape[0], batch_size):
        xb = jnp.asarray(x0[i : i + batch_size])
        if method_sampler == "jumps":
            out.append(_sampling.jumps(X, xb, k))
        else:
            out.append(_sampling.consistency(X, xb, k, path=path, key=jax.random.fold_in(key, i)))
    return np.concatenate([np.asarray(o) for o in out])


def _solve(field, x0, *, batch_size: int, **kwargs) -> tuple[np.ndarray, float]:
    """fj.sampling.sample_ode in batches: (samples, mean NFE per batch)."""
    from flowjax import sampling

    xs, nfes = [], []
    for i in range(0, x0.shape[0], batch_size):
        x, info = sampling.sample_ode(field, jnp.asarray(x0[i : i + batch_size]), **kwargs)
        xs.append(np.asarray(x))
        nfes.append(float(info["nfe"]))
    return np.concatenate(xs), float(np.mean(nfes))


# ------------------------------------------------------------------------------ teacher


def _train_teacher(suite: Suite, config, path, optim_steps: int):
    """A flow-matching network on the suite's data (one seed) as a `VelocityTeacher`."""
    from flowjax import objectives
    from flowjax.flowmaps.teacher import VelocityTeacher
    from flowjax.train import make_optimizer

    opts = config.suites[suite.name]
    overrides = dict(config.model.overrides.to_dict(), **opts.teacher_overrides.to_dict())
    overrides.pop("two_times", None)
    net = build_network(
        config.model.name,
        opts.teacher_variant or config.model.variant,
        _shape(suite.name),
        overrides=overrides,
    )
    fm_loss = objectives.make_objective("flow_matching", path=path)

    def loss(params, key, batch, teacher):
        del teacher
        return fm_loss(params, key, batch, model=net.apply_fn)

    optim = config.optim.copy_and_resolve_references()
    optim.lr = float(opts.teacher_lr) or optim.lr
    optimizer, _ = make_optimizer(optim, optim_steps)
    batch_size = int(opts.teacher_batch_size) or int(config.train.batch_size)
    stream = BatchStream(
        suite.name,
        [int(config.seed) + 10_000],
        batch_size,
        optim_steps,
        cache_mb=config.data_cache_mb,
    )
    cache_key = (
        "teacher",
        suite.name,
        id(net.apply_fn),
        repr(path),
        optim_steps,
        optim.to_json(),
        config.train.ema_decay,
    )
    state, losses = train(
        cache_key,
        loss,
        net,
        optimizer,
        stream,
        ema_decay=config.train.ema_decay,
        steps_per_dispatch=config.train.steps_per_dispatch,
    )
    teacher = VelocityTeacher(net.apply_fn, unstack(state.ema, 0), "velocity", path)
    info = {
        "kind": "flow matching (trained here)",
        "model": {
            "name": config.model.name,
            "variant": opts.teacher_variant or config.model.variant,
            "overrides": overrides,
        },
        "num_steps": optim_steps,
        "batch_size": batch_size,
        "lr": float(optim.lr),
        "final_loss": float(np.mean(losses[0, -max(1, optim_steps // 20) :])),
    }
    return teacher, info


def _shape(name: str) -> tuple[int, ...]:
    from flowjax import data

    return tuple(data.spec(name).shape)


# ------------------------------------------------------------------------------ one dataset


def run_dataset(name: str, config, methods: list[Method], seeds: list[int], path, log):
    """Everything for one dataset; returns (results, pictures for the plots, timing)."""
    from flowjax import flowmaps as fm
    from flowjax.flowmaps.teacher import MixtureTeacher
    from flowjax.train import make_optimizer

    suite = make_suite(name, config.suites[name], config.eval)
    shape = _shape(name)
    steps = _steps(config, name)
    nfe = [int(k) for k in config.eval.nfe]
    batch_eval = int(config.eval.batch_size)
    timing: dict[str, Any] = {"methods": {}}
    clock = _Clock()

    # 1. Teacher.
    if suite.analytic_teacher:
        teacher = MixtureTeacher(suite.gmm, path)
        teacher_info = {"kind": "exact mixture velocity (analytic)"}
    else:
        log(f"[{name}] training the teacher ({config.suites[name].teacher_steps} steps)")
        teacher, teacher_info = _train_teacher(
            suite, config, path, int(config.suites[name].teacher_steps)
        )
    timing["teacher_train_s"] = clock.lap()

    x0 = np.asarray(
        jax.random.normal(jax.random.key(config.eval.seed), (suite.num_eval, *shape), jnp.float32)
    )
    suite.prepare(path, x0)
    floors = suite.floors()
    tc = config.teacher_eval
    solves = {}
    x_dopri, nfe_dopri = _solve(
        teacher, x0, batch_size=batch_eval, solver="dopri5", rtol=tc.rtol, atol=tc.atol
    )
    solves["dopri5"] = {
        "nfe": nfe_dopri,
        "rtol": tc.rtol,
        "atol": tc.atol,
        "metrics": suite.evaluate(x_dopri),
    }
    x_heun, nfe_heun = _solve(
        teacher, x0, batch_size=batch_eval, solver="heun", num_steps=int(tc.heun_steps)
    )
    solves["heun"] = {
        "nfe": nfe_heun,
        "num_steps": int(tc.heun_steps),
        "metrics": suite.evaluate(x_heun),
    }
    ref = solves[tc.reference]
    pictures: dict[str, Any] = {
        "data": suite.reference(),
        "teacher": x_heun if tc.reference == "heun" else x_dopri,
    }
    teacher_info.update(
        reference=tc.reference,
        nfe=ref["nfe"],
        metrics=ref["metrics"],
        solves=solves,
    )
    euler = {}
    for k in nfe:
        xk, _ = _solve(teacher, x0, batch_size=batch_eval, solver="euler", num_steps=k)
        euler[str(k)] = suite.evaluate(xk)
    timing["teacher_eval_s"] = clock.lap()
    log(
        f"[{name}] teacher: "
        + "; ".join(
            f"{k} NFE {v['nfe']:.0f}: " + ", ".join(f"{m}={x:.4g}" for m, x in v["metrics"].items())
            for k, v in solves.items()
        )
        + "; floors: "
        + ", ".join(f"{m}={v:.4g}" for m, v in floors.items())
    )

    # 2-3. Methods.
    student = build_network(
        config.model.name,
        config.model.variant,
        shape,
        overrides=dict(config.model.overrides.to_dict(), two_times=True),
    )
    optimizer, _ = make_optimizer(config.optim, steps)
    stream = BatchStream(name, seeds, config.train.batch_size, steps, cache_mb=config.data_cache_mb)
    method_results, maps = {}, {}
    for method in methods:
        kwargs = (
            config.method_kwargs[method.name].to_dict()
            if method.name in config.method_kwargs
            else {}
        )
        loss = method_loss(method, kwargs, student.apply_fn, path)
        cache_key = (
            "method",
            method.name,
            json.dumps(kwargs, sort_keys=True),
            id(student.apply_fn),
            repr(path),
            steps,
            config.optim.to_json(),
            config.train.ema_decay,
        )
        state, losses = train(
            cache_key,
            loss,
            student,
            optimizer,
            stream,
            ema_decay=config.train.ema_decay,
            steps_per_dispatch=config.train.steps_per_dispatch,
            teacher=teacher if method.needs_teacher else None,
        )
        train_s = clock.lap()
        per_seed, seed_maps = [], []
        eval_key = jax.random.key(config.eval.seed + 1)
        for j in range(len(seeds)):
            X = fm.as_callable(student.apply_fn, unstack(state.ema, j))
            seed_maps.append(X)
            row = {}
            for k in nfe:
                xk = _draw(method.sampler, X, x0, k, path=path, key=eval_key, batch_size=batch_eval)
                row[str(k)] = suite.evaluate(xk)
                if j == 0 and k in (1, 2, max(nfe)):
                    pictures[f"{method.name}/{k}"] = xk
            per_seed.append(row)
        eval_s = clock.lap()
        maps[method.name] = seed_maps
        tail = max(1, steps // 20)
        method_results[method.name] = {
            "label": method.label,
            "family": method.family,
            "sampler": method.sampler,
            "kwargs": kwargs,
            "final_loss": mean_ci([float(np.mean(losses[j, -tail:])) for j in range(len(seeds))]),
            "nfe": _stat_table(per_seed, nfe, suite.metrics),
        }
        timing["methods"][method.name] = {"train_s": train_s, "eval_s": eval_s}
        one = method_results[method.name]["nfe"]["1"][suite.primary]
        log(
            f"[{name}] {method.name}: train {train_s:.1f}s, eval {eval_s:.1f}s; 1-step "
            f"{suite.primary}={one['mean']:.4g}"
        )

    result: dict[str, Any] = {
        "kind": suite.kind,
        "metrics": list(suite.metrics),
        "primary_metric": suite.primary,
        "ratio_metric": suite.ratio_metric,
        "num_steps": steps,
        "eval_samples": suite.num_eval,
        "teacher": teacher_info,
        "teacher_euler": euler,
        "floors": floors,
        "notes": dict(suite.notes),
        "methods": method_results,
    }
    result["ratios"] = teacher_ratios(result, config.targets)

    # 4. Guidance with the best jump-sampled map at 1 step.
    if config.guidance.enabled:
        gc = config.guidance
        jump = [m.name for m in methods if m.sampler == "jumps"]
        chosen = gc.method or min(
            jump, key=lambda m: _nan_last(method_results[m]["nfe"]["1"][suite.primary]["mean"])
        )
        if chosen not in maps:
            raise ValueError(f"config.guidance.method: {chosen!r} is not a trained method")
        reward = suite.reward()
        g_results, g_pictures = _guide.compare(
            maps[chosen],
            reward,
            suite.support,
            path=path,
            shape=shape,
            budget=int(gc.nfe),
            scales=tuple(gc.scales),
            temperatures=tuple(gc.temperatures),
            num_samples=int(gc.num_samples),
            repeats=int(gc.repeats),
            seed=int(gc.seed),
        )
        result["guidance"] = {
            "method": chosen,
            "reward": _reward_description(suite, config.suites[name]),
            "box": [float(v) for v in config.suites[name].box] if suite.kind == "points" else None,
            "support_measure": suite.support_name,
            "nfe_budget": int(gc.nfe),
            "num_batches": len(seeds) * int(gc.repeats),
            "batch_size": int(gc.num_samples),
            "approaches": g_results,
            "comparison": lookahead_comparison(g_results),
        }
        pictures["guidance"] = g_pictures
        timing["guidance_s"] = clock.lap()
        log(f"[{name}] guidance with {chosen}: {timing['guidance_s']:.1f}s")
    return result, pictures, timing


def _nan_last(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def _reward_description(suite: Suite, opts) -> str:
    if suite.kind == "points":
        lx, ly, hx, hy = (float(v) for v in opts.box)
        return (
            f"log soft indicator of the box [{lx:g}, {hx:g}] x [{ly:g}, {hy:g}] "
            f"(edge width {float(opts.box_softness):g}; ~0 inside, ~-dist/width outside)"
        )
    return f"log p(class {int(opts.label)} | x) under the shipped digits classifier"


def lookahead_comparison(approaches: dict) -> dict:
    """Flow-map vs denoiser look-ahead, paired by scale (same NFE, same VJPs), and the best
    setting of every family by mean reward."""
    pairs = {}
    for name, a in approaches.items():
        if a["family"] == "grad_flowmap":
            other = approaches.get(name.replace("grad_flowmap", "grad_denoiser"))
            if other is None:
                continue
            fm_r, dn_r = a["reward"]["mean"], other["reward"]["mean"]
            pairs[f"{a['setting']:g}"] = {
                "flowmap": fm_r,
                "denoiser": dn_r,
                "flowmap_wins": bool(fm_r > dn_r),
                "separated": bool(
                    a["reward"]["ci_low"] > other["reward"]["ci_high"]
                    or other["reward"]["ci_low"] > a["reward"]["ci_high"]
                ),
            }
    best = {}
    for name, a in approaches.items():
        fam = a["family"]
        if fam not in best or _nan_last(-a["reward"]["mean"]) < _nan_last(
            -approaches[best[fam]]["reward"]["mean"]
        ):
            best[fam] = name
    return {"by_scale": pairs, "best_per_family": best}


# ------------------------------------------------------------------------------ run


def run(config, workdir: str, *, command: str | None = None, log=print) -> dict:
    """Runs the experiment of `config`; writes report.md, results.json and plots to workdir.

    Args:
      config: an experiment config (`configs/flowmaps_default.py`).
      workdir: output directory (created).
      command: the command line, recorded in the report.
      log: progress printer (`print`; pass `lambda *a: None` for silence).

    Returns:
      The results dict written to results.json.
    """
    check_config(config)
    methods = resolve_methods(config.methods)
    datasets = _names(config.datasets)
    seeds = [int(config.seed) + i for i in range(int(config.num_seeds))]
    from flowjax import paths

    path = paths.get_path(config.path)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    machine = machine_info()
    results: dict[str, Any] = {
        "command": command or "",
        "config": _config_dict(config),
        "seeds": seeds,
        "methods": {
            m.name: {"label": m.label, "family": m.family, "sampler": m.sampler} for m in methods
        },
        "machine": machine,
        "datasets": {},
        "timing": {"datasets": {}},
    }
    pictures = {}
    for name in datasets:
        t0 = time.perf_counter()
        ds, pics, timing = run_dataset(name, config, methods, seeds, path, log)
        timing["total_s"] = time.perf_counter() - t0
        results["datasets"][name] = ds
        results["timing"]["datasets"][name] = timing
        pictures[name] = pics
    results["timing"]["wall_s"] = time.perf_counter() - wall0
    results["timing"]["cpu_s"] = time.process_time() - cpu0
    if hasattr(os, "getloadavg"):
        results["machine"]["load_average_end"] = list(os.getloadavg())
    results["findings"] = {
        name: _report.findings(name, ds, config) for name, ds in results["datasets"].items()
    }
    os.makedirs(workdir, exist_ok=True)
    results["plots"] = _report.plots(results, pictures, workdir)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(_jsonable(results), f, indent=1, sort_keys=True, allow_nan=True)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(_report.render(results))
    return results


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
