"""The head-to-head run: train every arm on every dataset and seed, evaluate, sweep samplers.

For each dataset, each seed and each arm (in that order) a fresh state from the seed is
trained for `base.train.num_steps` steps on the seed's data stream, K steps per dispatch
(`base.train.steps_per_dispatch`), and evaluated at log-spaced steps. All arms of a seed start
from the same parameters and see the same batches and the same evaluation noise (a paired
design: differences between arms are not differences of luck). Training seconds are the
wall-clock time of the train-step dispatches only (each one waited for), so they exclude
data preparation, evaluation and compilation (the first dispatch of the shared step is run
once beforehand, on a throw-away state, and timed as `compile_seconds`).

Afterwards every trained arm is sampled with each sampler of `config.sweep` (Euler and Heun
at a list of NFE, dopri5 at a list of tolerances, the SDE sampler at a list of NFE), always
through its velocity (`fj.sampling.as_velocity`, i.e. `fj.paths.convert`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowjax.compare import _stats
from flowjax.compare._arms import resolve_arms
from flowjax.compare._programs import build_trainer
from flowjax.compare._suites import DESCRIPTIONS, make_suite

__all__ = ["run", "eval_steps", "device_info", "analyse_dataset", "SAMPLERS"]


def eval_steps(steps_per_dispatch: int, num_steps: int, num_evals: int) -> list[int]:
    """About `num_evals` log-spaced evaluation steps in [K, num_steps], multiples of K.

    Multiples of K keep every dispatch at K steps (one compiled shape); the last is
    num_steps (which must be a multiple of K).
    """
    k = int(steps_per_dispatch)
    if num_steps % k:
        raise ValueError(
            f"config.base.train.num_steps={num_steps} must be a multiple of "
            f"config.base.train.steps_per_dispatch={k}"
        )
    if num_evals < 1:
        raise ValueError(f"config.eval.num_evals must be >= 1, got {num_evals}")
    raw = np.geomspace(k, num_steps, max(num_evals, 2)) if num_evals > 1 else [num_steps]
    out = sorted({max(k, int(round(s / k)) * k) for s in raw} | {num_steps})
    return [int(s) for s in out]


def device_info() -> dict:
    """What the run ran on."""
    dev = jax.devices()[0]
    return {
        "platform": dev.platform,
        "device_kind": getattr(dev, "device_kind", ""),
        "num_devices": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "hostname": platform.node(),
    }


class _Batches:
    """The stacked batches (K, B, ...) of one seed's data stream, dispatch by dispatch.

    Kept in memory when they fit in `cache_mb` (every arm of the seed reads the same ones);
    otherwise each arm reads the stream again (the stream is a pure function of the seed).
    """

    def __init__(self, config, seed: int, k: int, num_dispatches: int, cache_mb: float):
        from flowjax.train import make_data_iterator

        self._config, self._seed, self._k, self._n = config, seed, k, num_dispatches
        self._make = make_data_iterator
        self._cache: list | None = None
        first = next(self._iterator())
        per_batch = sum(v.nbytes for v in first.values())
        if per_batch * k * num_dispatches <= cache_mb * 2**20:
            self._cache = list(self._stream())

    def _iterator(self):
        cfg = self._config.copy_and_resolve_references()
        cfg.seed = self._seed
        return self._make(cfg)

    def _stream(self):
        it = self._iterator()
        for _ in range(self._n):
            chunk = [next(it) for _ in range(self._k)]
            yield {key: np.stack([b[key] for b in chunk]) for key in chunk[0]}

    def __iter__(self):
        return iter(self._cache) if self._cache is not None else self._stream()


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


def _sde_draw(path_fn, key, num_steps: int, noise: float, t0: float):
    from flowjax.sampling import sample_sde

    def draw(v, x0, offset):
        x, info = sample_sde(
            v,
            x0,
            path=path_fn(),
            key=jax.random.fold_in(key, offset),
            num_steps=num_steps,
            noise=noise,
            t0=t0,
        )
        return x, info["nfe"]

    return draw


# Sampler families of the sweep: name -> (config field with its settings, NFE of a setting
# when known in advance, draw function builder).
SAMPLERS = ("euler", "heun", "dopri5", "sde")


def _sweep_settings(sweep) -> list[tuple[str, float, dict]]:
    """(sampler, setting value, kwargs) of every point of the sweep."""
    out = []
    for nfe in sweep.euler_nfe:
        out.append(("euler", int(nfe), dict(solver="euler", num_steps=int(nfe))))
    for nfe in sweep.heun_nfe:
        if int(nfe) % 2 or int(nfe) < 2:
            raise ValueError(
                f"config.sweep.heun_nfe: Heun takes 2 evaluations per step, so NFE must be even "
                f"and >= 2, got {nfe}"
            )
        out.append(("heun", int(nfe), dict(solver="heun", num_steps=int(nfe) // 2)))
    for tol in sweep.dopri5_tol:
        out.append(("dopri5", float(tol), dict(solver="dopri5", num_steps=None, tol=float(tol))))
    for nfe in sweep.sde_nfe:
        out.append(("sde", int(nfe), dict(num_steps=int(nfe))))
    return out


def _noise(spec, n: int, seed: int, eval_seed: int, salt: int):
    """Evaluation noise x0 (and labels) of one seed: the same for every arm."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(eval_seed), seed), salt)
    k_x, k_y = jax.random.split(key)
    x0 = jax.random.normal(k_x, (n, *spec.shape), jnp.float32)
    y = None
    if spec.num_classes is not None:
        y = jax.random.randint(k_y, (n,), 0, spec.num_classes)
    return x0, y


def _params(state, ema_index: int):
    return state.params if ema_index < 0 else state.ema[ema_index]


def _train_arm(trainer, arm_index, seed, batches, evals, suite, x0, y, cfg, log) -> tuple:
    """Trains one arm for one seed; (record, final EMA params, final samples)."""
    ev = cfg.eval
    k = trainer.arms[0].config.train.steps_per_dispatch
    state = trainer.init(seed)
    curve: dict[str, list] = {"step": [], "seconds": [], "loss": [], "nfe": []}
    curve.update({name: [] for name in suite.curve_metrics})
    step, seconds, pending, errors = 0, 0.0, [], []
    samples = None
    eval_iter = iter(evals)
    target = next(eval_iter)
    for stacked in batches:
        device_batch = trainer.device_batches(stacked, arm_index)
        t0 = time.perf_counter()
        state, metrics = trainer.step(state, device_batch)
        jax.block_until_ready(state)
        seconds += time.perf_counter() - t0
        pending.append(metrics["loss"])
        step += k
        if step < target:
            continue
        t_eval = time.perf_counter()
        params = _params(state, ev.ema_index)

        def field(lo, hi, params=params):
            return trainer.field(params, arm_index, None if y is None else y[lo:hi])

        samples, nfe, err = _sample(
            field,
            x0,
            batch_size=int(ev.batch_size),
            draw=_ode_draw(ev.solver, int(ev.num_steps) or None, float(ev.rtol), float(ev.atol)),
        )
        if err:
            errors.append(f"step {step}: {err}")
        full_field = trainer.field(params, arm_index, y)
        scores = suite.curve(samples, full_field)
        curve["step"].append(step)
        curve["seconds"].append(seconds)
        curve["loss"].append(
            float(np.mean(np.concatenate([np.ravel(jax.device_get(m)) for m in pending])))
        )
        curve["nfe"].append(nfe)
        for name, value in scores.items():
            curve[name].append(value)
        pending = []
        log(
            f"  step {step:>6}  train {seconds:7.2f}s  loss {curve['loss'][-1]:.4g}  "
            + "  ".join(f"{n} {v:.4g}" for n, v in scores.items())
            + f"  (eval {time.perf_counter() - t_eval:.1f}s)"
        )
        target = next(eval_iter, None)
        if target is None:
            break
    # The last evaluation is at the final step: its samples and field give the final metrics
    # (the same field object, so a likelihood solve is shared with the curve's last point).
    params = _params(state, ev.ema_index)
    final = {n: curve[n][-1] for n in suite.curve_metrics}
    final.update(suite.final(samples, full_field))
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


def _sweep_arm(trainer, arm_index, params, seed, suite, cfg, settings) -> list[dict]:
    sw, ev = cfg.sweep, cfg.eval
    spec = trainer.spec
    x0, y = _noise(spec, int(sw.num_samples), seed, int(ev.seed), salt=1)
    sde_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(int(ev.seed)), seed), 2)
    out = []
    for sampler, value, kw in settings:
        if sampler == "sde":
            draw = _sde_draw(
                lambda: trainer.path(arm_index),
                sde_key,
                kw["num_steps"],
                float(sw.sde_noise),
                float(sw.sde_t0),
            )
        else:
            tol = kw.get("tol", 1e-5)
            draw = _ode_draw(kw["solver"], kw["num_steps"], tol, tol)
        field = lambda lo, hi: trainer.field(params, arm_index, None if y is None else y[lo:hi])  # noqa: E731
        samples, nfe, err = _sample(field, x0, batch_size=int(ev.batch_size), draw=draw)
        out.append(
            {"sampler": sampler, "setting": value, "nfe": nfe, "error": err, **suite.sweep(samples)}
        )
    return out


def run(
    config, workdir: str, *, log: Callable[[str], Any] = print, command: str | None = None
) -> dict:
    """Runs the comparison of `config` and writes results.json, report.md and plots to workdir.

    Args:
      config: a comparison config (`configs/compare_*.py`).
      workdir: output directory (created).
      log: progress printer.
      command: the command line, recorded in the report.

    Returns:
      The results dictionary (what results.json holds).
    """
    from flowjax.compare import _report

    t_begin, cpu_begin = time.perf_counter(), time.process_time()
    _check(config)
    os.makedirs(workdir, exist_ok=True)
    seeds = [int(config.seed) + i for i in range(int(config.num_seeds))]
    datasets = [d.strip() for d in config.datasets.split(",") if d.strip()]
    results: dict[str, Any] = {
        "mode": config.mode,
        "command": command,
        "seeds": seeds,
        "config": json.loads(config.to_json_best_effort()),
        "device": device_info(),
        "datasets": {},
    }
    for dataset in datasets:
        results["datasets"][dataset] = _run_dataset(config, dataset, seeds, workdir, log)
    results["wall_seconds"] = time.perf_counter() - t_begin
    results["cpu_seconds"] = time.process_time() - cpu_begin
    _report.write_all(results, workdir)
    return results


def _check(config) -> None:
    if int(config.num_seeds) < 1:
        raise ValueError(f"config.num_seeds must be >= 1, got {config.num_seeds}")
    if not isinstance(config.datasets, str) or not config.datasets.strip():
        raise ValueError(
            f"config.datasets must be a comma-separated list of dataset names, got "
            f"{config.datasets!r}"
        )
    th = config.threshold
    if not th.factor > 0 or th.value < 0:
        raise ValueError(
            f"config.threshold: need factor > 0 and value >= 0, got factor={th.factor}, "
            f"value={th.value}"
        )


def _run_dataset(config, dataset, seeds, workdir, log) -> dict:
    from flowjax import data

    spec = data.spec(dataset)
    arms = resolve_arms(config, dataset, jax.device_count())
    base = arms[0].config
    k, n = int(base.train.steps_per_dispatch), int(base.train.num_steps)
    evals = eval_steps(k, n, int(config.eval.num_evals))
    log(
        f"[{dataset}] arms: {', '.join(a.name for a in arms)}; seeds {seeds}; "
        f"{n} steps; evaluations at {evals}"
    )
    suite = make_suite(dataset, spec, base.data, config.metrics, int(config.eval.seed))
    trainer = build_trainer(arms, spec, t_eps=float(config.eval.t_eps))

    records: dict[str, dict] = {a.name: {} for a in arms}
    final_params: dict[tuple[str, int], Any] = {}
    shown: dict[str, np.ndarray] = {}
    compile_seconds = None
    for seed in seeds:
        batches = _Batches(base, seed, k, n // k, float(config.data_cache_mb))
        if compile_seconds is None:
            t0 = time.perf_counter()
            first = trainer.device_batches(next(iter(batches)), 0)
            warm, _ = trainer.step(trainer.init(seed), first)
            jax.block_until_ready(warm)
            compile_seconds = time.perf_counter() - t0
            del warm
            log(f"[{dataset}] train step compiled and run once in {compile_seconds:.1f}s")
        x0, y = _noise(spec, int(config.eval.num_samples), seed, int(config.eval.seed), salt=0)
        for a, arm in enumerate(arms):
            log(f"[{dataset}] seed {seed} arm {arm.name}")
            rec, params, samples = _train_arm(
                trainer, a, seed, batches, evals, suite, x0, y, config, log
            )
            records[arm.name][str(seed)] = rec
            final_params[(arm.name, seed)] = params
            if seed == seeds[0]:
                shown[arm.name] = samples

    settings = _sweep_settings(config.sweep) if config.sweep.enabled else []
    sweeps: dict[str, dict] = {a.name: {} for a in arms}
    if settings:
        log(
            f"[{dataset}] sampler sweep: {len(settings)} settings x {len(arms)} arms x "
            f"{len(seeds)} seeds"
        )
        t_sweep = time.perf_counter()
        for a, arm in enumerate(arms):
            for seed in seeds:
                sweeps[arm.name][str(seed)] = _sweep_arm(
                    trainer, a, final_params[(arm.name, seed)], seed, suite, config, settings
                )
            log(f"  {arm.name}: swept ({time.perf_counter() - t_sweep:.0f}s so far)")
    _save_samples(workdir, dataset, shown, suite.reference if spec.kind == "points" else None)
    raw = {
        "spec": {"shape": list(spec.shape), "kind": spec.kind, "num_classes": spec.num_classes},
        "eval_steps": evals,
        "eval_num_samples": int(config.eval.num_samples),
        "sweep_num_samples": int(config.sweep.num_samples),
        "compile_seconds": compile_seconds,
        "suite": {
            "primary": suite.primary,
            "sweep_primary": suite.sweep_primary,
            "metrics": suite.metric_names(),
            "sweep_metrics": list(suite.sweep_metrics),
            "descriptions": {
                m: DESCRIPTIONS[m]
                for m in dict.fromkeys([*suite.metric_names(), *suite.sweep_metrics])
            },
            "info": suite.info,
        },
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
    return analyse_dataset(raw, config.threshold, baseline if baseline in raw["arms"] else None)


REFERENCE_KEY = "__reference__"


def _save_samples(workdir, dataset, shown, reference=None):
    """Final samples of the first seed per arm (and held-out data) in DIR/{dataset}_samples.npz."""
    arrays = {name: np.asarray(x) for name, x in shown.items()}
    if reference is not None:
        arrays[REFERENCE_KEY] = np.asarray(reference)
    np.savez_compressed(os.path.join(workdir, f"{dataset}_samples.npz"), **arrays)


def analyse_dataset(raw: dict, threshold_cfg, baseline: str | None) -> dict:
    """Adds statistics to the raw records of one dataset: final metrics with CIs, mean curves,
    the threshold, steps/seconds to it and their ratios to the baseline, sweep summaries.

    A pure function of `raw` (and the threshold settings), so results.json can be re-analysed.
    """
    arms = raw["arms"]
    primary = threshold_cfg.metric or raw["suite"]["primary"]
    metrics = raw["suite"]["metrics"]
    if primary not in raw["suite"]["metrics"]:
        raise ValueError(
            f"config.threshold.metric: {primary!r} is not measured on this dataset; "
            f"valid: {raw['suite']['metrics']}"
        )
    for arm in arms.values():
        seeds = list(arm["seeds"])
        arm["final"] = {
            m: {
                **_stats.mean_ci([arm["seeds"][s]["final"].get(m) for s in seeds]),
                "values": [arm["seeds"][s]["final"].get(m) for s in seeds],
            }
            for m in metrics
        }
        for extra in ("train_seconds", "seconds_per_step"):
            values = [arm["seeds"][s][extra] for s in seeds]
            arm["final"][extra] = {**_stats.mean_ci(values), "values": values}
        curve0 = arm["seeds"][seeds[0]]["curve"]
        arm["curve_mean"] = {"step": curve0["step"]}
        for m in ["seconds", "loss", *[c for c in curve0 if c not in ("step", "seconds", "loss")]]:
            per_step = list(zip(*[arm["seeds"][s]["curve"][m] for s in seeds], strict=True))
            stats = [_stats.mean_ci(v) for v in per_step]
            arm["curve_mean"][m] = {
                key: [st[key] for st in stats] for key in ("mean", "ci_low", "ci_high")
            }

    # Threshold: factor x the best final mean over arms, unless given.
    finals = {name: arm["final"][primary]["mean"] for name, arm in arms.items()}
    best_arm = min((n for n in finals if math.isfinite(finals[n])), key=finals.get, default=None)
    if threshold_cfg.value > 0:
        value, rule = float(threshold_cfg.value), "given (config.threshold.value)"
    elif best_arm is None:
        value, rule = math.nan, "none: no arm has a finite final value"
    elif finals[best_arm] > 0:
        value = float(threshold_cfg.factor) * finals[best_arm]
        rule = f"{threshold_cfg.factor} x the best final mean ({best_arm}: {finals[best_arm]:.4g})"
    else:
        # A best value <= 0 is an unbiased estimate at its noise floor (e.g. KL or energy of a
        # near-perfect model): take the upper end of its 95% interval instead.
        st = arms[best_arm]["final"][primary]
        value = st["ci_high"] if math.isfinite(st["ci_high"]) else 0.0
        rule = (
            f"upper end of the 95% interval of the best final mean ({best_arm}: "
            f"{finals[best_arm]:.4g} <= 0, at the metric's noise floor)"
        )
    threshold = {
        "metric": primary,
        "value": value,
        "rule": rule,
        "best_arm": best_arm,
        "interpolate": bool(threshold_cfg.interpolate),
    }

    for arm in arms.values():
        steps, secs = [], []
        for rec in arm["seeds"].values():
            c = rec["curve"]
            st = _stats.steps_to_threshold(
                c["step"], c[primary], value, interpolate=threshold["interpolate"]
            )
            steps.append(st)
            secs.append(_stats.value_at_step([0, *c["step"]], [0.0, *c["seconds"]], st))
        arm["to_threshold"] = {
            "steps": {**_stats.mean_ci(steps), "per_seed": steps},
            "seconds": {**_stats.mean_ci(secs), "per_seed": secs},
            "n_reached": sum(v is not None for v in steps),
            "n_seeds": len(steps),
        }
    if baseline is not None:
        ref = arms[baseline]["to_threshold"]
        ref_final = arms[baseline]["final"]
        for arm in arms.values():
            tt = arm["to_threshold"]
            arm["vs_baseline"] = {
                # speedup > 1: this arm needs fewer steps (seconds) than the baseline.
                "steps_speedup": _stats.paired_log_ratio(
                    ref["steps"]["per_seed"], tt["steps"]["per_seed"]
                ),
                "seconds_speedup": _stats.paired_log_ratio(
                    ref["seconds"]["per_seed"], tt["seconds"]["per_seed"]
                ),
                "final_difference": {
                    m: _stats.paired_difference(arm["final"][m]["values"], ref_final[m]["values"])
                    for m in metrics
                },
                "seconds_per_step_ratio": _stats.paired_log_ratio(
                    arm["final"]["seconds_per_step"]["values"],
                    ref_final["seconds_per_step"]["values"],
                ),
            }
    for arm in arms.values():
        arm["sweep"] = _summarise_sweep(arm["sweep_raw"], raw["suite"]["sweep_metrics"])
    raw["threshold"] = threshold
    raw["baseline"] = baseline
    return raw


def _summarise_sweep(sweep_raw: dict, metric_names: list[str]) -> dict:
    """Per sampler: settings, mean NFE and each metric's mean and CI over seeds."""
    seeds = list(sweep_raw)
    if not seeds:
        return {}
    out: dict[str, dict] = {}
    for i, point in enumerate(sweep_raw[seeds[0]]):
        rows = [sweep_raw[s][i] for s in seeds]
        entry = out.setdefault(point["sampler"], {"setting": [], "nfe": [], "errors": []})
        entry["setting"].append(point["setting"])
        entry["nfe"].append(_stats.mean_ci([r["nfe"] for r in rows])["mean"])
        entry["errors"].append(sorted({r["error"] for r in rows if r["error"]}))
        for m in metric_names:
            st = _stats.mean_ci([r[m] for r in rows])
            for key in ("mean", "ci_low", "ci_high"):
                entry.setdefault(m, {"mean": [], "ci_low": [], "ci_high": []})[key].append(st[key])
    return out
