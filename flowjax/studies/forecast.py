"""Probabilistic forecasting: flow matching vs diffusion on real series, against ETS in one run.

Arms (all on one `SequenceNet`, the same optimizer, batches, steps and seeds; paired design):
  fm         conditional flow matching, CondOT path, velocity target, x0 ~ N(0, I)
             (Lipman et al. 2023), context window as the condition;
  fm_gp      the same with x0 from a Gaussian-process prior over the horizon (OU kernel, as
             TSFlow's prior, Kollovieh et al. 2025);
  diffusion  conditional diffusion, VP path, eps target (Ho et al. 2020; TSDiff's family).
Baselines, scored by the same metric code: seasonal naive, AutoETS, AutoARIMA (statsforecast,
a `test` extra; imported here only, never by the library).

Every arm is sampled `num_samples` times per test window (the rolling GluonTS test windows
of `fj.data.SeriesWindows`) with dopri5 (the final numbers) and with fixed steps at each NFE of
`eval.nfe` (Euler for velocity arms, DPM-Solver++(2M) for eps; CRPS against NFE). Forecasts
are unscaled to the original values and scored with `fj.metrics.forecast_metrics` (GluonTS
definitions). Writes DIR/report.md, DIR/results.json (shared schema), a fan chart per dataset
and DIR/<dataset>/forecasts_<arm>.npz with `series`, `samples` (num_series, num_samples,
horizon[, dims]) and `target` (num_series, horizon[, dims]) of the first seed.

Not yet here: the flow-map arm distilled from the FM forecaster (1- and 2-step forecasts) and
the training steps / seconds each arm needs to reach a CRPS threshold.
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

ARMS = ("fm", "fm_gp", "diffusion")
BASELINES = ("naive", "ets", "arima")
METRICS = ("crps", "crps_energy", "mase", "smape", "nd", "nrmse", "crps_sum")
# Published M1 yearly references (Monash archive ETS MASE; Chronos-T5-small wQL).
M1_TARGETS = {"mase": 3.77, "crps": 0.173}

# ---------------------------------------------------------------------------- baselines

_ENSEMBLE_Q = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
_SF_MODELS = {"naive": "SeasonalNaive", "ets": "AutoETS", "arima": "AutoARIMA"}


def baseline_forecast(ds: SeriesDataset, model: str) -> np.ndarray:
    """statsforecast's `model` ("naive", "ets", "arima") on every test window of `ds`.

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
    sf = StatsForecast(models=[getattr(sfm, name)(season_length=ds.season)], freq=1, n_jobs=1)
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
    baselines = studies.names(config.baselines, "baselines") if config.baselines else []
    bad = sorted(set(baselines) - set(BASELINES))
    if bad:
        raise ValueError(f"config.baselines: unknown baseline(s) {bad}; valid: {list(BASELINES)}")
    nfe = [int(n) for n in studies.names(config.eval.nfe, "eval.nfe")]
    return arms, baselines, nfe


def _to_forecasts(samples_scaled, scale, n, s):
    """(N * S, H, C) scaled draws -> (N, S, H[, C]) on the original scale."""
    x = samples_scaled.reshape(n, s, *samples_scaled.shape[1:])
    x = SeriesWindows.unscale(x, scale)
    return x[..., 0] if x.shape[-1] == 1 else x


def run(config, workdir: str, *, log: Callable = print, command: str | None = None) -> dict:
    """Runs the forecasting study of `config` (configs/forecast_default.py) into `workdir`."""
    arms, baselines, nfe_grid = _check(config)
    seeds = [config.seed + i for i in range(config.num_seeds)]
    record = studies.Record("forecast", config, seeds, command)
    data_dir = config.data_dir or None
    for dataset in studies.names(config.datasets, "datasets"):
        info = fj.data.SERIES.get(dataset)
        if info is None:
            raise ValueError(f"unknown dataset {dataset!r}; valid: {sorted(fj.data.SERIES)}")
        ds = fj.data.load_series(dataset, data_dir=data_dir)
        win_kw = dict(
            context_length=int(config.context_length or info.context_length),
            pad=dataset == "m1_yearly",
            features=tuple(studies.names(config.features, "features")),
            min_observed=int(config.get("min_observed", 4)),
        )
        windows = SeriesWindows(ds, **win_kw)
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
            "arms": {},
            "baselines": {},
        }
        fan: dict[str, np.ndarray] = {}
        for arm in arms:
            t0 = time.perf_counter()
            objective, path, kind, source = _arm(arm, net, windows.target_shape)
            trainer = studies.SeedTrainer(
                objective, net, config.optim, config.train.num_steps, ema_decay=config.train.ema
            )
            state, losses = trainer.train(stream)
            train_s = time.perf_counter() - t0
            per_seed, curve = [], {n_: [] for n_ in nfe_grid}
            for i, seed in enumerate(seeds):
                params = studies.unstack(state.ema[0], i)
                field = Field(net.apply_fn, params, context, kind, path)
                x0 = source.sample(jax.random.key(10_000 + seed), (n * s, *windows.target_shape))
                x, nfe = _draw(field, x0, "dopri5", None, config.eval.rtol)
                fc = _to_forecasts(x, test["scale"], n, s)
                metrics = score(fc)
                metrics["nfe"] = nfe
                per_seed.append(metrics)
                fixed = "euler" if kind == "velocity" else config.eval.eps_solver
                for steps in nfe_grid:
                    xs, _ = _draw(field, x0, fixed, steps, config.eval.rtol)
                    curve[steps].append(
                        fj.metrics.crps(_to_forecasts(xs, test["scale"], n, s), target_out)
                    )
                if i == 0:
                    fan[arm] = fc
                    np.savez(
                        os.path.join(out_dir, f"forecasts_{arm}.npz"),
                        series=np.asarray(series_names),
                        samples=fc,
                        target=target_out,
                    )
            finals = {m: studies.mean_ci([p[m] for p in per_seed]) for m in per_seed[0]}
            entry["arms"][arm] = {
                "final": finals,
                "crps_vs_nfe": {str(k): studies.mean_ci(v) for k, v in curve.items()},
                "fixed_solver": "euler" if kind == "velocity" else config.eval.eps_solver,
                "final_loss": studies.mean_ci(losses[:, -100:].mean(1)),
                "seconds": time.perf_counter() - t0,
                "train_seconds": train_s,
            }
            log(
                f"[{dataset}] {arm}: crps {studies.fmt_ci(finals['crps'])}"
                + (f", mase {studies.fmt_ci(finals['mase'])}" if "mase" in finals else "")
                + f" ({time.perf_counter() - t0:.0f} s)"
            )
        for base in baselines:
            t0 = time.perf_counter()
            fc = baseline_forecast(ds, base)
            metrics = score(fc)
            metrics["seconds"] = time.perf_counter() - t0
            entry["baselines"][base] = metrics
            fan[base] = fc
            np.savez(
                os.path.join(out_dir, f"forecasts_{base}.npz"),
                series=np.asarray(series_names),
                samples=fc,
                target=target_out,
            )
            log(f"[{dataset}] {base}: crps {metrics['crps']:.4f}, mase {metrics['mase']:.3f}")
        entry["verdicts"] = _verdicts(dataset, entry)
        entry["fan_chart"] = _fan_chart(dataset, fan, pasts, target_out, series_names, workdir)
        record.add(dataset, entry, verdicts=entry.pop("verdicts"), num_seeds=len(seeds))
    return record.finish(workdir, render=_render)


def _verdicts(dataset: str, entry: dict) -> list[dict]:
    arms, out = entry["arms"], []
    if "fm" in arms and "diffusion" in arms:
        for m in ("crps", "mase"):
            if m in arms["fm"]["final"]:
                ratio = studies.paired_log_ratio(
                    arms["fm"]["final"][m]["values"], arms["diffusion"]["final"][m]["values"]
                )
                out.append(
                    studies.verdict(
                        f"fm's {m} is lower than diffusion's (fm / diffusion < 1)",
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
    arms = [a for a in ("fm", "fm_gp", "diffusion", "ets") if a in fan]
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
                        studies.fmt(a["final"]["crps"]["mean"]),
                    ]
                    for arm, a in d["arms"].items()
                ],
            ) + [""]
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
