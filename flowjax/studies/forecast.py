"""Probabilistic forecasting: flow matching vs diffusion on real series, against ETS in one run.

Arms (all on one `SequenceNet`, the same optimizer, batches, steps and seeds; paired design):
  fm         conditional flow matching, CondOT path, velocity target, x0 ~ N(0, I)
             (Lipman et al. 2023), context window as the condition;
  fm_gp      the same with x0 from a Gaussian-process prior over the horizon (OU kernel, as
             TSFlow's prior, Kollovieh et al. 2025);
  diffusion  conditional diffusion, VP path, eps target (Ho et al. 2020; TSDiff's family);
  diffusion_v  the compare study's `cosine_v` (cosine path, v-prediction, Salimans & Ho 2022:
             the path velocity, -(pi/2) v), sampled as an ODE like fm;
  flowmap    a flow map X(x, s, t) distilled from fm (LMD, Boffi et al. 2024), warm-started
             from it, sampled with 1 and 2 jumps (rows flowmap_1, flowmap_2).
Baselines, scored by the same metric code: seasonal naive, random walk with drift, AutoETS,
AutoARIMA (statsforecast, a `test` extra; imported here only, never by the library).

Every arm is sampled `num_samples` times per test window (the rolling GluonTS test windows
of `fj.data.SeriesWindows`) with dopri5 (the final numbers) and with fixed steps at each NFE of
`eval.nfe` (Euler for velocity arms, DPM-Solver++(2M) for eps; CRPS against NFE). Forecasts
are unscaled to the original values and scored with `fj.metrics.forecast_metrics` (GluonTS
definitions). Writes DIR/report.md, DIR/results.json (shared schema), a fan chart per dataset
and DIR/<dataset>/forecasts_<arm>.npz with `series`, `samples` (num_series, num_samples,
horizon[, dims]) and `target` (num_series, horizon[, dims]) of the first seed.

The report also gives training steps and seconds to a CRPS threshold (CRPS during training
with a fixed-step sampler), fm / diffusion at equal training steps, the flow map's ratio to
its teacher, and ratios to AutoETS. `config.overrides[<dataset>]` changes sizes per dataset.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import flowjax as fj
from flowjax import studies
from flowjax.data import SeriesDataset, SeriesWindows

ARMS = ("fm", "fm_gp", "diffusion", "diffusion_v", "flowmap")
FLOWMAP_STEPS = (1, 2)  # the flow-map arm's jump counts (rows "flowmap_1", "flowmap_2")
BASELINES = ("naive", "drift", "ets", "arima")
METRICS = ("crps", "crps_energy", "mase", "smape", "nd", "nrmse", "crps_sum")
# Published M1 yearly references (Monash archive ETS MASE; Chronos-T5-small wQL).
M1_TARGETS = {"mase": 3.77, "crps": 0.173}

# ---------------------------------------------------------------------------- baselines

_ENSEMBLE_Q = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
_SF_MODELS = {
    "naive": "SeasonalNaive",
    "drift": "RandomWalkWithDrift",
    "ets": "AutoETS",
    "arima": "AutoARIMA",
}


def baseline_forecast(ds: SeriesDataset, model: str) -> np.ndarray:
    """statsforecast's `model` ("naive", "drift", "ets", "arima") on every test window of `ds`
    ("drift": the random walk with drift over each series' whole past).

    Returns an 11-member quantile ensemble (N, 11, H) [q_0.05, q_0.1 .. q_0.9, q_0.95] from
    its Gaussian prediction intervals: GluonTS' nearest-rank quantile of it at q = 0.1 .. 0.9
    is exactly the model's q-quantile and its median the point forecast.
    """
    import pandas as pd
    import statsforecast.models as sfm
    from statsforecast import StatsForecast

    if ds.num_channels != 1:
        raise ValueError(f"{ds.name}: the classical baselines are univariate")
    name = _SF_MODELS[model]
    pasts, _, _ = ds.test_split()
    frame = pd.concat(
        pd.DataFrame({"unique_id": j, "ds": np.arange(len(p)), "y": p[:, 0]})
        for j, p in enumerate(pasts)
    )
    kw = dict(alias=name) | ({} if model == "drift" else dict(season_length=ds.season))
    sf = StatsForecast(models=[getattr(sfm, name)(**kw)], freq=1, n_jobs=1)
    fc = sf.forecast(df=frame, h=ds.horizon, level=[20, 40, 60, 80, 90])
    fc = fc.sort_values(["unique_id", "ds"])
    cols = [
        name if q == 0.5 else f"{name}-{'lo' if q < 0.5 else 'hi'}-{round(abs(1 - 2 * q) * 100)}"
        for q in _ENSEMBLE_Q
    ]
    values = fc[cols].to_numpy().reshape(len(pasts), ds.horizon, len(cols))
    return np.moveaxis(values, 2, 1)


# ---------------------------------------------------------------------------- arms


class Field(eqx.Module):
    """v(x, t) of a trained arm given the (repeated) test contexts: a pytree, so compiled
    samplers are reused across seeds and NFE."""

    apply_fn: Callable = eqx.field(static=True)
    params: Any
    context: jax.Array
    kind: str = eqx.field(static=True)
    path: Any

    def pred(self, x, t):
        return self.apply_fn(self.params, x, t, context=self.context)

    def __call__(self, x, t):
        if self.kind == "velocity":
            return self.pred(x, t)
        # eps -> velocity needs d_sigma, infinite at t = 1 on VP: clamp t to [0, 1 - 1e-3].
        t = jnp.minimum(t, 1.0 - 1e-3)
        out = self.pred(x, t)
        return fj.paths.convert(out, src=self.kind, dst="velocity", path=self.path, x=x, t=t)


def _arm(name: str, net: studies.Network, shape: tuple[int, int]):
    """(objective, path, prediction kind, source) of an arm."""
    horizon, channels = shape
    if name == "diffusion":
        path = fj.paths.VP()
        objective = fj.objectives.make_objective(
            "diffusion", model=net.apply_fn, path=path, target="eps"
        )
        return objective, path, "eps", fj.sources.StandardGaussian()
    source = fj.sources.StandardGaussian()
    if name == "diffusion_v":
        path = fj.paths.Cosine()
        objective = fj.objectives.make_objective(
            "diffusion", model=net.apply_fn, path=path, target="velocity"
        )
        return objective, path, "velocity", source
    if name == "fm_gp":
        # Unit-variance OU prior over the horizon, correlation length of a quarter horizon.
        source = fj.sources.GaussianProcess(
            jnp.arange(horizon, dtype=jnp.float32),
            fj.sources.OrnsteinUhlenbeck(length_scale=max(horizon / 4, 1.0)),
            num_channels=channels,
        )
    path = fj.paths.CondOT()
    objective = fj.objectives.make_objective(
        "flow_matching", model=net.apply_fn, path=path, source=source
    )
    return objective, path, "velocity", source


class _Trainer(studies.SeedTrainer):
    """`SeedTrainer` with evaluations during training and an optional warm start.

    `train(stream, eval_at=, callback=, params=)` follows the shared `ArmTrainer.train`
    interface: after the chunk that ends at each step of `eval_at`, `callback(step, state,
    seconds)` with the training seconds so far (update calls only, synchronised; the one
    compilation is timed apart, as `compile_seconds`).
    """

    def train(self, stream, *, eval_at=(), callback=None, params=None):
        state = self.init(stream.seeds)
        if params is not None:  # warm start; Adam's moments are zeros whatever the params
            # Separate buffers: the update donates params and EMA.
            state = state.replace(params=params, ema=(jax.tree.map(jnp.copy, params),))
        losses, step, seconds, update = [], 0, 0.0, None
        for chunk in stream:
            chunk = {k: jnp.asarray(v) for k, v in chunk.items()}
            if update is None:  # compiled ahead, so that `seconds` counts training alone
                t0 = time.perf_counter()
                update = self._update.lower(state, chunk).compile()
                self.compile_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            state, metrics = update(state, chunk)
            jax.block_until_ready(metrics["loss"])
            seconds += time.perf_counter() - t0
            losses.append(metrics["loss"])
            step += stream.k
            if callback is not None and step in eval_at:
                callback(step, state, seconds)
        self.train_seconds = seconds
        return state, np.concatenate([np.asarray(v) for v in losses], axis=1)


def _warm_start(teacher_params, student_params):
    """The two-time student's parameters from its one-time teacher's (Boffi et al. 2024 start
    distillation from the teacher) such that X(x, s, t) = x + (t - s) v(x, s), the teacher's
    Euler step from s: every shared weight copied, the teacher's time embedding moved to the
    student's s-embedding and the t-embedding's last layer zeroed (adaLN-Zero style, so it
    learns from there). (Copying the time embedding to t and zeroing s instead starts from
    x + (t - s) v(x, t), the velocity at the end time, which is not a first-order map: on M1
    yearly its 1-jump crps was 1.18x the teacher's after 500 LMD steps, worse than the
    teacher's own 1-step Euler, 1.16x.)"""
    num = jax.tree.leaves(student_params)[0].shape[0]
    out = jax.tree.map(lambda x: jnp.broadcast_to(x, (num, *x.shape)), teacher_params)
    t_embed = dict(out["cond"]["t_embed"])
    s_embed = jax.tree.map(jnp.copy, t_embed)
    t_embed["dense1"] = jax.tree.map(jnp.zeros_like, t_embed["dense1"])
    out["cond"] = dict(out["cond"], s_embed=s_embed, t_embed=t_embed)
    return out


def _draw(field: Field, x0, solver: str, num_steps: int | None, rtol: float):
    if solver == "dopri5":
        x, info = fj.sampling.sample_ode(field, x0, solver="dopri5", rtol=rtol, atol=rtol)
    elif solver == "euler":
        x, info = fj.sampling.sample_ode(field, x0, solver="euler", num_steps=num_steps)
    else:
        x, info = fj.sampling.sample_multistep(
            field.pred, x0, kind=field.kind, path=field.path, solver=solver, num_steps=num_steps
        )
    return np.asarray(x), float(np.mean(info["nfe"]))


# ---------------------------------------------------------------------------- run


def _check(config):
    studies.check_positive(config, "num_seeds")
    studies.check_positive(config.train, "batch_size", "num_steps", "steps_per_dispatch")
    studies.check_positive(config.eval, "num_samples")
    arms = studies.names(config.arms, "arms", ARMS)
    bad = sorted(set(arms) - set(ARMS))
    if bad:
        raise ValueError(f"config.arms: unknown arm(s) {bad}; valid: {list(ARMS)}")
    if "flowmap" in arms:
        if "fm" not in arms:
            raise ValueError("config.arms: the flowmap arm distils the fm arm; add fm to arms")
        studies.check_positive(config.flowmap, "num_steps")
        if config.flowmap.num_steps % config.train.steps_per_dispatch:
            raise ValueError(
                f"config.flowmap.num_steps={config.flowmap.num_steps} must be a multiple of "
                f"config.train.steps_per_dispatch={config.train.steps_per_dispatch}"
            )
    studies.check_positive(config.eval, "num_curve", "curve_nfe")
    baselines = studies.names(config.baselines, "baselines") if config.baselines else []
    bad = sorted(set(baselines) - set(BASELINES))
    if bad:
        raise ValueError(f"config.baselines: unknown baseline(s) {bad}; valid: {list(BASELINES)}")
    nfe = [int(n) for n in studies.names(config.eval.nfe, "eval.nfe")]
    return arms, baselines, nfe


def _to_forecasts(samples_scaled, test, n, s):
    """(N * S, H, C) scaled draws -> (N, S, H[, C]) on the original scale."""
    x = samples_scaled.reshape(n, s, *samples_scaled.shape[1:])
    x = SeriesWindows.unscale(x, test["scale"], test["loc"])
    return x[..., 0] if x.shape[-1] == 1 else x


def dataset_config(config, name: str):
    """`config` with `config.overrides[name]` (if any) merged in: per-dataset sizes, e.g.
    fewer training steps on a long-context series."""
    return studies.dataset_config(config, name, valid=tuple(fj.data.SERIES))


def run(config, workdir: str, *, log: Callable = print, command: str | None = None) -> dict:
    """Runs the forecasting study of `config` (configs/forecast_default.py) into `workdir`."""
    config_all = config
    arms, baselines, nfe_grid = _check(config_all)
    seeds = [config_all.seed + i for i in range(config_all.num_seeds)]
    record = studies.Record("forecast", config_all, seeds, command)
    data_dir = config_all.data_dir or None
    names = studies.names(config_all.datasets, "datasets")
    for dataset in names:
        config = dataset_config(config_all, dataset)
        arms, baselines, nfe_grid = _check(config)
        info = fj.data.SERIES.get(dataset)
        if info is None:
            raise ValueError(f"unknown dataset {dataset!r}; valid: {sorted(fj.data.SERIES)}")
        win_kw = dict(
            context_length=int(config.context_length or info.context_length),
            pad=dataset == "m1_yearly",
            features=tuple(studies.names(config.features, "features")),
            min_observed=int(config.get("min_observed", 4)),
            loc=config.get("loc") or None,
            holdout=bool(config.get("validation", False)),
        )
        windows = SeriesWindows(fj.data.load_series(dataset, data_dir=data_dir), **win_kw)
        ds = windows.ds  # the validation dataset under config.validation
        if windows.dropped:
            log(f"[{dataset}] validation split: {len(windows.dropped)} series too short, dropped")
        test = windows.windows("test")
        pasts, target, series_names = ds.test_split()
        target_out = target[..., 0] if ds.num_channels == 1 else target
        n, s = len(target), int(config.eval.num_samples)
        context = jnp.repeat(jnp.asarray(test["context"]), s, axis=0)
        net = studies.build_network(
            config.model.name,
            config.model.variant,
            windows.target_shape,
            context_shape=windows.context_shape,
        )
        stream = studies.BatchStream(
            dataset,
            seeds,
            config.train.batch_size,
            config.train.num_steps,
            config.train.steps_per_dispatch,
            keys=("x1", "context"),
            data_dir=data_dir,
            **win_kw,
        )
        score = functools.partial(
            fj.metrics.forecast_metrics, target=target_out, past=pasts, season=ds.season
        )
        out_dir = os.path.join(workdir, dataset)
        os.makedirs(out_dir, exist_ok=True)
        entry: dict[str, Any] = {
            "num_series": n,
            "horizon": ds.horizon,
            "context_shape": list(windows.context_shape),
            "num_train_windows": windows.num_windows("train"),
            "split": "validation" if windows.holdout else "test",
            "dropped_series": len(windows.dropped),
            "arms": {},
            "ensembles": {},
            "baselines": {},
        }
        fan: dict[str, np.ndarray] = {}
        curve_steps = studies.eval_steps(
            config.train.steps_per_dispatch, config.train.num_steps, int(config.eval.num_curve)
        )
        teacher = None
        for arm in [a for a in arms if a != "flowmap"]:
            t0 = time.perf_counter()
            objective, path, kind, source = _arm(arm, net, windows.target_shape)
            trainer = _Trainer(
                objective, net, config.optim, config.train.num_steps, ema_decay=config.train.ema
            )
            # The same noise for every arm of one source kind and seed (paired comparisons).
            x0s = [
                source.sample(jax.random.key(10_000 + seed), (n * s, *windows.target_shape))
                for seed in seeds
            ]
            fixed = "euler" if kind == "velocity" else config.eval.eps_solver
            train_curve: dict[str, list] = {"step": [], "seconds": [], "crps": []}

            on_eval = functools.partial(
                _record_curve,
                train_curve,
                (net.apply_fn, context, kind, path),
                (x0s, fixed, int(config.eval.curve_nfe), config.eval.rtol),
                (test, target_out),
            )
            state, losses = trainer.train(stream, eval_at=curve_steps, callback=on_eval)
            train_s = trainer.train_seconds
            per_seed, curve, pooled = [], {n_: [] for n_ in nfe_grid}, []
            for i in range(len(seeds)):
                params = studies.unstack(state.ema[0], i)
                field = Field(net.apply_fn, params, context, kind, path)
                x, nfe = _draw(field, x0s[i], "dopri5", None, config.eval.rtol)
                fc = _to_forecasts(x, test, n, s)
                metrics = score(fc)
                metrics["nfe"] = nfe
                per_seed.append(metrics)
                for steps in nfe_grid:
                    if steps == int(config.eval.curve_nfe) and train_curve["step"][-1:] == [
                        int(config.train.num_steps)
                    ]:  # the curve's last point: the same parameters, noise and sampler
                        curve[steps].append(train_curve["crps"][-1][i])
                        continue
                    xs, _ = _draw(field, x0s[i], fixed, steps, config.eval.rtol)
                    curve[steps].append(fj.metrics.crps(_to_forecasts(xs, test, n, s), target_out))
                pooled.append(fc)
                if i == 0:
                    fan[arm] = fc
                    _save(out_dir, arm, series_names, fc, target_out)
            # The seeds' forecasts pooled into one ensemble of S x seeds paths per window.
            entry["ensembles"][arm] = score(np.concatenate(pooled, axis=1))
            if arm == "fm":
                teacher = (studies.unstack(state.ema[0], 0), per_seed[0]["crps"], x0s)
            finals = {m: studies.mean_ci([p[m] for p in per_seed]) for m in per_seed[0]}
            entry["arms"][arm] = {
                "final": finals,
                "crps_vs_nfe": {str(k): studies.mean_ci(v) for k, v in curve.items()},
                "fixed_solver": fixed,
                # CRPS (curve_nfe fixed steps) during training, one list per evaluation.
                "curve": {**train_curve, "nfe": int(config.eval.curve_nfe), "solver": fixed},
                "final_loss": studies.mean_ci(losses[:, -100:].mean(1)),
                "seconds": time.perf_counter() - t0,
                "train_seconds": train_s,
            }
            log(
                f"[{dataset}] {arm}: crps {studies.fmt_ci(finals['crps'])}"
                + (f", mase {studies.fmt_ci(finals['mase'])}" if "mase" in finals else "")
                + f" ({time.perf_counter() - t0:.0f} s)"
            )
        if "flowmap" in arms:
            t0 = time.perf_counter()
            maps = _flowmap_arms(
                config,
                net,
                windows,
                teacher,
                context,
                test,
                score,
                seeds,
                nfe_grid,
                stream if int(config.flowmap.num_steps) == int(config.train.num_steps) else None,
                dict(dataset=dataset, data_dir=data_dir, **win_kw),
            )
            for name, a in maps.items():
                entry["arms"][name] = a
                log(
                    f"[{dataset}] {name}: crps {studies.fmt_ci(a['final']['crps'])}, "
                    f"{a['teacher_ratio']['ratio']:.3f}x the teacher's "
                    f"({time.perf_counter() - t0:.0f} s)"
                )
            fc = maps[f"flowmap_{FLOWMAP_STEPS[0]}"].pop("forecasts")
            fan["flowmap"] = fc
            _save(out_dir, "flowmap", series_names, fc, target_out)
            for a in maps.values():
                a.pop("forecasts", None)
        entry["to_threshold"] = _to_threshold(entry["arms"], float(config.eval.threshold_factor))
        for base in baselines:
            t0 = time.perf_counter()
            fc = baseline_forecast(ds, base)
            metrics = score(fc)
            metrics["seconds"] = time.perf_counter() - t0
            entry["baselines"][base] = metrics
            fan[base] = fc
            _save(out_dir, base, series_names, fc, target_out)
            log(f"[{dataset}] {base}: crps {metrics['crps']:.4f}, mase {metrics['mase']:.3f}")
        entry["verdicts"] = _verdicts(dataset, entry)
        entry["fan_chart"] = _fan_chart(dataset, fan, pasts, target_out, series_names, workdir)
        record.add(dataset, entry, verdicts=entry.pop("verdicts"), num_seeds=len(seeds))
    return record.finish(workdir, render=_render)


def _record_curve(curve, model, sampler, data, step, state, seconds):
    """`_Trainer` callback: every seed's CRPS at `step` with a fixed-step sampler."""
    apply_fn, context, kind, path = model
    x0s, solver, nfe, rtol = sampler
    test, target = data
    n = len(test["scale"])
    curve["step"].append(step)
    curve["seconds"].append(seconds)
    row = []
    for i, x0 in enumerate(x0s):
        field = Field(apply_fn, studies.unstack(state.ema[0], i), context, kind, path)
        xs, _ = _draw(field, x0, solver, nfe, rtol)
        row.append(fj.metrics.crps(_to_forecasts(xs, test, n, len(x0) // n), target))
    curve["crps"].append(row)


def _save(out_dir, arm, series_names, samples, target):
    np.savez(
        os.path.join(out_dir, f"forecasts_{arm}.npz"),
        series=np.asarray(series_names),
        samples=samples,
        target=target,
    )


def _flowmap_arms(
    config, net, windows, teacher, context, test, score, seeds, nfe_grid, stream, stream_kwargs
) -> dict:
    """A flow map X(x, s, t) distilled from the fm arm (seed 0's EMA, the teacher of every
    student seed) on the same SequenceNet with a second time, warm-started from the teacher,
    sampled with 1 and 2 jumps (`fj.flowmaps.sample`) from the teacher's noise (seed 0's)."""
    from flowjax.flowmaps.teacher import VelocityTeacher

    if teacher is None:
        raise ValueError("the flowmap arm distils the fm arm; add fm to config.arms")
    teacher_params, teacher_crps, x0s = teacher
    fm_cfg = config.flowmap
    path = fj.paths.CondOT()
    student = studies.build_network(
        config.model.name,
        config.model.variant,
        windows.target_shape,
        context_shape=windows.context_shape,
        two_times=True,
    )
    velocity = VelocityTeacher(net.apply_fn, teacher_params, "velocity", path)
    objective = fj.objectives.make_objective(
        fm_cfg.method, model=student.apply_fn, path=path, teacher=velocity
    )
    optim = config.optim.copy_and_resolve_references()
    optim.lr = float(fm_cfg.lr)
    num_steps = int(fm_cfg.num_steps)
    trainer = _Trainer(objective, student, optim, num_steps, ema_decay=config.train.ema)
    if stream is None:
        kw = dict(stream_kwargs)
        stream = studies.BatchStream(
            kw.pop("dataset"),
            seeds,
            config.train.batch_size,
            num_steps,
            config.train.steps_per_dispatch,
            keys=("x1", "context"),
            **kw,
        )
    t0 = time.perf_counter()
    warm = _warm_start(teacher_params, trainer.init(seeds).params)
    state, losses = trainer.train(stream, params=warm)
    n = len(test["scale"])
    s = len(x0s[0]) // n
    # Every student jumps from the teacher's own noise draw x0s[0]: X(x0, 0, 1) should equal
    # the teacher's ODE solution from that same x0, so the ratio to the teacher's crps on it
    # measures distillation error alone (not the Monte Carlo error of another 50-sample draw),
    # and the seeds' spread is the spread of distillation runs.
    ks = sorted(set(FLOWMAP_STEPS) | set(nfe_grid))
    per_k: dict[int, list] = {k: [] for k in ks}
    first = None
    for i in range(len(seeds)):
        X = fj.flowmaps.as_callable(
            student.apply_fn, studies.unstack(state.ema[0], i), context=context
        )
        for k in ks:
            fc = _to_forecasts(np.asarray(fj.flowmaps.sample(X, x0s[0], num_steps=k)), test, n, s)
            m = (
                score(fc)
                if k in FLOWMAP_STEPS
                else {"crps": fj.metrics.crps(fc, score.keywords["target"])}
            )
            per_k[k].append(m | {"nfe": float(k)})
            if i == 0 and k == FLOWMAP_STEPS[0]:
                first = fc
    seconds = time.perf_counter() - t0
    out = {}
    for k in FLOWMAP_STEPS:
        finals = {m: studies.mean_ci([p[m] for p in per_k[k]]) for m in per_k[k][0]}
        out[f"flowmap_{k}"] = {
            "final": finals,
            "crps_vs_nfe": {
                str(j): studies.mean_ci([p["crps"] for p in per_k[j]]) for j in nfe_grid
            },
            "fixed_solver": "jumps",
            "method": fm_cfg.method,
            "teacher": "fm (seed 0, dopri5, the same noise)",
            "teacher_crps": teacher_crps,
            # Each student seed / the teacher, both on the noise x0s[0], over student seeds.
            "teacher_ratio": studies.paired_log_ratio(
                finals["crps"]["values"], [teacher_crps] * len(seeds)
            ),
            "distill_steps": num_steps,
            "distill_lr": float(fm_cfg.lr),
            "final_loss": studies.mean_ci(losses[:, -100:].mean(1)),
            "seconds": seconds,
            "train_seconds": trainer.train_seconds,
            "forecasts": first,
        }
    return out


def _to_threshold(arms: dict, factor: float) -> dict:
    """Training steps and seconds each arm needs to reach factor x the best final curve CRPS
    (the same fixed-step sampler all along), and fm vs diffusion at equal training steps."""
    curves = {a: v["curve"] for a, v in arms.items() if v.get("curve", {}).get("step")}
    if not curves:
        return {}
    last = {a: float(np.mean(c["crps"][-1])) for a, c in curves.items()}
    best = min(last, key=last.get)
    value = factor * last[best]
    out = {
        "metric": "crps",
        "value": value,
        "rule": f"{factor} x the best final curve crps ({best}: {last[best]:.4g})",
        "arms": {},
    }
    for a, c in curves.items():
        per_seed = np.asarray(c["crps"]).T  # (S, evaluations)
        steps = [studies.steps_to_threshold(c["step"], v, value) for v in per_seed]
        secs = [studies.value_at_step([0, *c["step"]], [0.0, *c["seconds"]], st) for st in steps]
        out["arms"][a] = {
            "steps": {**studies.mean_ci(steps), "per_seed": steps},
            "seconds": {**studies.mean_ci(secs), "per_seed": secs},
            "n_reached": sum(v is not None for v in steps),
        }
    if "fm" in curves and "diffusion" in curves:
        fm, df = out["arms"]["fm"], out["arms"]["diffusion"]
        end = float(curves["fm"]["step"][-1])
        out["fm_vs_diffusion"] = {
            # > 1: fm needs fewer steps (seconds) than diffusion.
            "steps_speedup": studies.paired_log_ratio(
                df["steps"]["per_seed"], fm["steps"]["per_seed"]
            ),
            "steps_speedup_censored": studies.censored_log_ratio(
                df["steps"]["per_seed"], fm["steps"]["per_seed"], end
            ),
            "seconds_speedup": studies.paired_log_ratio(
                df["seconds"]["per_seed"], fm["seconds"]["per_seed"]
            ),
            # fm / diffusion crps at each evaluation step (same steps, same batches).
            "crps_ratio_at_step": {
                str(st): studies.paired_log_ratio(a, b)
                for st, a, b in zip(
                    curves["fm"]["step"],
                    curves["fm"]["crps"],
                    curves["diffusion"]["crps"],
                    strict=True,
                )
            },
        }
    return out


def _verdicts(dataset: str, entry: dict) -> list[dict]:
    arms, out = entry["arms"], []
    for diff in ("diffusion", "diffusion_v"):
        if "fm" not in arms or diff not in arms:
            continue
        for m in ("crps", "mase"):
            if m in arms["fm"]["final"]:
                ratio = studies.paired_log_ratio(
                    arms["fm"]["final"][m]["values"], arms[diff]["final"][m]["values"]
                )
                out.append(
                    studies.verdict(
                        f"fm's {m} is lower than {diff}'s (fm / {diff} < 1)",
                        m,
                        ratio,
                        above=False,
                    )
                )
    if "fm" in arms and "fm_gp" in arms:
        ratio = studies.paired_log_ratio(
            arms["fm_gp"]["final"]["crps"]["values"], arms["fm"]["final"]["crps"]["values"]
        )
        out.append(
            studies.verdict(
                "the GP source lowers fm's crps (fm_gp / fm < 1)", "crps", ratio, above=False
            )
        )
    if "fm" in arms and "diffusion" in arms:
        for k in arms["fm"]["crps_vs_nfe"]:
            ratio = studies.paired_log_ratio(
                arms["fm"]["crps_vs_nfe"][k]["values"],
                arms["diffusion"]["crps_vs_nfe"][k]["values"],
            )
            out.append(
                studies.verdict(
                    f"at {k} sampling steps fm's crps ({arms['fm']['fixed_solver']}) is lower than "
                    f"diffusion's ({arms['diffusion']['fixed_solver']})",
                    "crps",
                    ratio,
                    above=False,
                )
            )
    vs = entry.get("to_threshold", {}).get("fm_vs_diffusion")
    if vs:
        out.append(
            studies.verdict(
                "fm reaches the crps threshold in fewer training steps than diffusion "
                "(speed-up diffusion / fm > 1)",
                "crps",
                vs["steps_speedup"],
            )
        )
    for k in FLOWMAP_STEPS:
        if f"flowmap_{k}" in arms:
            out.append(
                studies.verdict(
                    f"the {k}-step flow map's crps is within 1.1x its teacher's (fm, dopri5)",
                    "crps",
                    arms[f"flowmap_{k}"]["teacher_ratio"],
                    threshold=1.1,
                    above=False,
                )
            )
    ets = entry["baselines"].get("ets")
    best = min(arms, key=lambda a: arms[a]["final"]["crps"]["mean"]) if arms else None
    if ets is not None and best is not None:
        for m in ("crps", "mase"):
            if m in arms[best]["final"]:
                out.append(
                    studies.verdict(
                        f"the best flowjax arm ({best}) beats AutoETS on {m} (ratio < 1)",
                        m,
                        studies.ratio_to(arms[best]["final"][m], ets[m]),
                        above=False,
                    )
                )
    if dataset == "m1_yearly" and best is not None:
        for m, ref in M1_TARGETS.items():
            out.append(
                studies.verdict(
                    f"M1 target: the best arm's ({best}) {m} <= {ref}",
                    m,
                    studies.ratio_to(arms[best]["final"][m], ref),
                    above=False,
                )
            )
    return out


def _fan_chart(dataset, fan, pasts, target, names, workdir, num=4) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if target.ndim != 2 or not fan:
        return ""
    arms = [a for a in (*ARMS, "ets", "drift") if a in fan]
    idx = np.linspace(0, len(target) - 1, num).astype(int)
    fig, axes = plt.subplots(len(arms), num, figsize=(3.2 * num, 2.4 * len(arms)), squeeze=False)
    h = target.shape[1]
    for r, arm in enumerate(arms):
        for c, j in enumerate(idx):
            ax = axes[r, c]
            past = pasts[j][-3 * h :, 0]
            tp, tf = np.arange(-len(past), 0), np.arange(h)
            q = np.quantile(fan[arm][j], [0.1, 0.5, 0.9], axis=0)
            ax.plot(tp, past, "k-", lw=1)
            ax.plot(tf, target[j], "k--", lw=1)
            ax.fill_between(tf, q[0], q[2], alpha=0.3)
            ax.plot(tf, q[1], lw=1)
            ax.set_title(f"{arm}: {names[j]}", fontsize=8)
    fig.tight_layout()
    path = os.path.join(workdir, f"fan_{dataset}.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return os.path.basename(path)


def _render(r: dict) -> str:
    lines = ["# Probabilistic forecasting: flow matching vs diffusion vs classical baselines", ""]
    lines += studies.machine_lines(r) + [""]
    lines += [
        "Metrics (lower is better) use GluonTS' definitions on the original scale: crps = "
        "mean_wQuantileLoss over q = 0.1..0.9, crps_energy = exact sample CRPS / sum|y|, "
        "mase (in-sample seasonal-naive scale), smape, nd, nrmse. Arms: mean ± 95% CI over "
        "seeds, sampled with dopri5; baselines are deterministic (one fit).",
        "",
    ]
    for name, d in r["datasets"].items():
        lines += [
            f"## {name}",
            "",
            f"{d['num_series']} test windows, horizon {d['horizon']}, "
            f"context {tuple(d['context_shape'])}, {d['num_train_windows']} training "
            f"windows; {d['num_seeds']} seeds.",
            "",
        ]
        if d.get("split") == "validation":
            lines += [
                "**Validation split** (config.validation): the test windows are each series' "
                "last training points, one protocol block before the real test windows, which "
                f"are never read; {d['dropped_series']} series too short for it dropped.",
                "",
            ]
        metrics = [m for m in METRICS if any(m in a["final"] for a in d["arms"].values())]
        rows = [
            [
                arm,
                *[studies.fmt_ci(a["final"][m]) for m in metrics],
                f"{a['final']['nfe']['mean']:.0f}",
                f"{a['seconds']:.0f}",
            ]
            for arm, a in d["arms"].items()
        ]
        rows += [
            [
                f"{arm} ({d['num_seeds']}-seed ensemble)",
                *[studies.fmt(v.get(m, math.nan)) for m in metrics],
                "-",
                "-",
            ]
            for arm, v in d.get("ensembles", {}).items()
        ]
        rows += [
            [
                f"{b} (statsforecast)",
                *[studies.fmt(v.get(m, math.nan)) for m in metrics],
                "-",
                f"{v['seconds']:.0f}",
            ]
            for b, v in d["baselines"].items()
        ]
        lines += studies.table(["arm", *metrics, "NFE", "seconds"], rows) + [""]
        if d["arms"]:
            nfes = list(next(iter(d["arms"].values()))["crps_vs_nfe"])
            lines += ["CRPS against NFE (fixed steps, then adaptive dopri5):", ""]
            lines += studies.table(
                ["arm", "solver", *[f"NFE {k}" for k in nfes], "adaptive (dopri5)"],
                [
                    [
                        arm,
                        a["fixed_solver"],
                        *[studies.fmt(a["crps_vs_nfe"][k]["mean"]) for k in nfes],
                        "-" if arm.startswith("flowmap") else studies.fmt_ci(a["final"]["crps"]),
                    ]
                    for arm, a in d["arms"].items()
                    if arm != "flowmap_2"
                ],
            ) + [""]
        maps = [a for a in d["arms"] if a.startswith("flowmap")]
        if maps:
            a0 = d["arms"][maps[0]]
            lines += [
                f"Flow map ({a0['method']}, {a0['distill_steps']} steps, warm-started from its "
                f"teacher {a0['teacher']}, crps {studies.fmt(a0['teacher_crps'])}); ratio to "
                "the teacher's crps:",
                "",
            ]
            lines += studies.table(
                ["jumps", "crps", "ratio to teacher"],
                [
                    [
                        m.split("_")[1],
                        studies.fmt_ci(d["arms"][m]["final"]["crps"]),
                        studies.fmt_ratio(d["arms"][m]["teacher_ratio"]),
                    ]
                    for m in maps
                ],
            ) + [""]
        th = d.get("to_threshold") or {}
        if th:
            a0 = next(a for a in d["arms"].values() if a.get("curve"))
            lines += [
                f"Training steps to a crps threshold of {studies.fmt(th['value'])} ({th['rule']}; "
                f"crps with {a0['curve']['nfe']} fixed steps, evaluated at steps "
                f"{a0['curve']['step']}):",
                "",
            ]
            lines += studies.table(
                ["arm", "steps", "train seconds", "seeds reached"],
                [
                    [
                        a,
                        studies.fmt_ci(v["steps"]),
                        studies.fmt_ci(v["seconds"]),
                        str(v["n_reached"]),
                    ]
                    for a, v in th["arms"].items()
                ],
            ) + [""]
            vs = th.get("fm_vs_diffusion")
            if vs:
                cens = vs.get("steps_speedup_censored")
                lines += [
                    f"fm vs diffusion: steps speed-up (diffusion / fm) "
                    f"{studies.fmt_ratio(vs['steps_speedup'])}"
                    + (
                        f" (censored seeds: {cens['kind']} bound {cens['bound']:.2f})"
                        if cens
                        else ""
                    )
                    + "; crps ratio fm / diffusion at equal training steps: "
                    + ", ".join(
                        f"{k}: {studies.fmt_ratio(r)}" for k, r in vs["crps_ratio_at_step"].items()
                    ),
                    "",
                ]
        lines += studies.verdict_table(d["verdicts"]) + [""]
        if d.get("fan_chart"):
            lines += [f"![fan chart]({d['fan_chart']})", ""]
    lines += [
        "Forecasts: `DIR/<dataset>/forecasts_<arm>.npz` (series, samples (num_series, "
        "num_samples, horizon), target) of the first seed; `fj.metrics.forecast_metrics` "
        "recomputes every number above from them (with the series' pasts from "
        "`fj.data.load_series(name).test_split()`)."
    ]
    return "\n".join(lines) + "\n"
