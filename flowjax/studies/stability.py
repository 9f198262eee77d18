"""The stability study: does diffusion train more smoothly than flow matching?

Every arm (`fm`: CondOT, velocity; `ddpm`: VP, eps, unweighted; optionally `cosine_v`; the
arms of `flowjax.studies.scaling`) trains the same MLP on the analytic 4-mode mixture of
`scaling.mixture(d)` over a learning-rate sweep (`config.lrs`, >= 5 rates spanning >= 30x) x
batch sizes (`config.batch_sizes`) x seeds. One compiled program per batch size trains every
arm x rate x seed (`scaling.RunTrainer`: AdamW's update is linear in its rate, so a rate is a
per-run scale of the update), each through the library's one train step with the "skip"
non-finite policy (a non-finite step is skipped and counted).

Measured per run: the training loss and gradient norm at every step, skipped steps, and the
final KL(data || model) of the EMA parameters (exact likelihood, `scaling.Evaluator`). A run

- *diverged* when a step was non-finite in more than `max_skipped_frac` of the steps, or its
  loss blew up (the mean loss of the last `1/10` of training above `blowup_factor` x the lowest
  mean loss of any K-step chunk), or its final KL is not finite;
- *stalled* when it did not diverge but its final KL is above `stall_fraction` x
  KL(data || N(0, I)) (it closed less than half of the gap from a model that learned nothing).

Reported per arm, with 95% intervals: the fraction of runs that diverged or stalled (Wilson
intervals), the spread of final quality across seeds (the std of log final KL over seeds per
(rate, batch) cell) and across rates (the std of log final KL over rates per (batch, seed);
diverged runs counted at `kl_cap` x KL(data || N(0, I))), the step-to-step noise of the loss and
of the gradient norm (std of successive differences / (sqrt(2) mean), over the second half of
training: scale-free, so the velocity and eps losses compare), and the regression target's
noise: E||target - E[target | x_t]||^2 / E||target - E target||^2, the fraction of the target's
variance no network can fit, estimated by Monte Carlo with the mixture's exact posterior mean
(the same draws for every arm). Verdicts are ratios fm / ddpm (paired over seeds, cells or
Monte Carlo batches) on the claim "ddpm is smoother", plus the paired difference of failure
fractions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from flowjax import studies
from flowjax.studies import scaling

__all__ = [
    "classify_run",
    "noise_cv",
    "run",
    "summarise",
    "target_noise",
    "wilson",
]


# ---------------------------------------------------------------------------------- per run


def noise_cv(values: Sequence[float]) -> float:
    """Step-to-step noise of a curve relative to its level: std(diff) / (sqrt(2) |mean|).

    For independent noise around a slow trend this is the noise's coefficient of variation
    (differencing removes the trend); NaN for fewer than 3 finite values.
    """
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if x.size < 3 or np.mean(x) == 0:
        return math.nan
    return float(np.std(np.diff(x), ddof=1) / (math.sqrt(2) * abs(np.mean(x))))


def classify_run(
    losses: Sequence[float],
    num_skipped: int,
    final_kl: float | None,
    kl_reference: float,
    *,
    chunk: int,
    max_skipped_frac: float = 0.01,
    blowup_factor: float = 3.0,
    stall_fraction: float = 0.5,
) -> dict:
    """{"diverged", "stalled", "reason"} of one run from its recorded loss curve and final KL."""
    loss = np.asarray(losses, np.float64)
    n = loss.size
    reasons = []
    if num_skipped > max_skipped_frac * n:
        reasons.append(f"{num_skipped} non-finite steps")
    finite = loss[np.isfinite(loss)]
    if finite.size < n:
        reasons.append("non-finite loss")
    if finite.size:
        k = max(1, int(chunk))
        m = n // k
        parts = np.split(loss[: m * k], m) if m else [finite]
        chunks = np.asarray([np.mean(c[np.isfinite(c)]) if np.isfinite(c).any() else np.nan
                             for c in parts])  # fmt: skip
        tail = loss[-max(1, n // 10) :]
        tail = tail[np.isfinite(tail)]
        lowest = np.nanmin(chunks) if np.any(np.isfinite(chunks)) else math.nan
        if tail.size == 0 or (lowest > 0 and np.mean(tail) > blowup_factor * lowest):
            reasons.append("loss blow-up")
    if final_kl is None or not math.isfinite(final_kl):
        reasons.append("non-finite KL")
    diverged = bool(reasons)
    stalled = (not diverged) and final_kl > stall_fraction * kl_reference
    return {
        "diverged": diverged,
        "stalled": bool(stalled),
        "reason": "; ".join(reasons) if diverged else ("stalled" if stalled else ""),
    }


def wilson(k: int, n: int, confidence: float = studies.CONFIDENCE) -> dict:
    """{"mean", "ci_low", "ci_high", "k", "n"}: a fraction k / n with its Wilson interval."""
    if n == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "k": 0, "n": 0}
    ci = scipy.stats.binomtest(int(k), int(n)).proportion_ci(confidence, method="wilson")
    return {"mean": k / n, "ci_low": float(ci.low), "ci_high": float(ci.high), "k": k, "n": n}


# ---------------------------------------------------------------------------------- target noise


def target_noise(arm: scaling.Arm, gmm, *, key, num_batches: int, batch_size: int, t_eps: float):
    """Per Monte Carlo batch: the arm's regression target's noise at fixed x_t (exact oracle).

    target = a(t) x1 + b(t) x0 (eps: x0; velocity: alpha' x1 + sigma' x0), and its conditional
    mean given x_t is a(t) E[x1 | x_t] + b(t) E[x0 | x_t], with E[x1 | x_t] the mixture's exact
    posterior mean and E[x0 | x_t] = (x_t - alpha E[x1 | x_t]) / sigma. t follows the arm's
    time law clamped to [t_eps, 1 - t_eps]; batch i uses fold_in(key, i) for every arm.

    Returns:
      {"irreducible", "total", "fraction", "loss_cv"}: lists over batches of
      E||target - E[target | x_t]||^2 / d, E||target - E target||^2 / d, their ratio, and the
      coefficient of variation over examples of the irreducible per-example loss.
    """
    path, kind, time_dist = arm.path, arm.kind, arm.objective.time_dist

    @jax.jit
    def one(i):
        k1, k0, kt = jax.random.split(jax.random.fold_in(key, i), 3)
        x1 = gmm.sample(k1, batch_size)
        x0 = jax.random.normal(k0, x1.shape, x1.dtype)
        t = jnp.clip(time_dist.sample(kt, (batch_size,), path), t_eps, 1 - t_eps)
        tt = t[:, None]
        al, si = path.alpha(tt), path.sigma(tt)
        a, b = (0.0, 1.0) if kind == "eps" else (path.d_alpha(tt), path.d_sigma(tt))
        x_t = al * x1 + si * x0
        e_x1 = gmm.posterior_mean(path, x_t, t)
        e_x0 = (x_t - al * e_x1) / si
        target, mean = a * x1 + b * x0, a * e_x1 + b * e_x0
        per = jnp.mean((target - mean) ** 2, axis=-1)
        total = jnp.mean(jnp.var(target, axis=0))
        return jnp.mean(per), total, jnp.std(per) / jnp.mean(per)

    out = {"irreducible": [], "total": [], "fraction": [], "loss_cv": []}
    for i in range(num_batches):
        irr, tot, cv = (float(v) for v in one(i))
        out["irreducible"].append(irr)
        out["total"].append(tot)
        out["fraction"].append(irr / tot)
        out["loss_cv"].append(cv)
    return out


# ---------------------------------------------------------------------------------- analysis


def _log_kl(kl, cap):
    return math.log(cap if kl is None or not math.isfinite(kl) else max(kl, 1e-12))


def summarise(runs: Sequence[Mapping], arms: Sequence[str], lrs, batch_sizes, seeds, *,
              kl_cap: float) -> dict:  # fmt: skip
    """Per-arm aggregates and paired ratios from the per-run records.

    Args:
      runs: dicts {"arm", "lr", "batch_size", "seed", "final_kl", "diverged", "stalled",
        "loss_noise", "grad_noise"}.
      kl_cap: a run without a finite KL counts as the larger of kl_cap and the worst
        finite final KL of any run, in the spreads.

    Returns:
      {"arms": {arm: {...}}, "paired": {statistic: {arm: per-unit values}}} where the per-unit
      values of each arm are in the same order (paired units).
    """
    by = {(r["arm"], r["lr"], r["batch_size"], r["seed"]): r for r in runs}
    finite = [r["final_kl"] for r in runs if r["final_kl"] is not None]
    finite = [v for v in finite if math.isfinite(v)]
    kl_cap = max([kl_cap, *finite])  # a diverged run is at least as bad as the worst one
    out, paired = {}, {k: {} for k in ("lr_spread", "seed_spread", "loss_noise", "grad_noise",
                                       "failed", "final_kl")}  # fmt: skip
    for a in arms:
        mine = [r for r in runs if r["arm"] == a]
        n = len(mine)
        div = sum(r["diverged"] for r in mine)
        stall = sum(r["stalled"] for r in mine)
        cells = {
            f"lr={lr:g},B={b}": studies.mean_ci([by[(a, lr, b, s)]["final_kl"] for s in seeds])
            for b in batch_sizes
            for lr in lrs
        }
        lr_spread = [
            float(np.std([_log_kl(by[(a, lr, b, s)]["final_kl"], kl_cap) for lr in lrs], ddof=1))
            for b in batch_sizes
            for s in seeds
        ]
        seed_spread = [
            float(np.std([_log_kl(by[(a, lr, b, s)]["final_kl"], kl_cap) for s in seeds], ddof=1))
            if len(seeds) > 1 else math.nan
            for b in batch_sizes
            for lr in lrs
        ]  # fmt: skip
        order = [(lr, b, s) for b in batch_sizes for lr in lrs for s in seeds]
        final_kl = [by[(a, *u)]["final_kl"] for u in order]
        loss_noise = [by[(a, *u)]["loss_noise"] for u in order]
        grad_noise = [by[(a, *u)]["grad_noise"] for u in order]
        failed = [float(by[(a, *u)]["diverged"] or by[(a, *u)]["stalled"]) for u in order]
        best = min(cells, key=lambda c: cells[c]["mean"] if math.isfinite(cells[c]["mean"])
                   else math.inf)  # fmt: skip
        out[a] = {
            "num_runs": n,
            "diverged": wilson(div, n),
            "stalled": wilson(stall, n),
            "failed": wilson(div + stall, n),
            "final_kl_by_cell": cells,
            "best_cell": best,
            "lr_spread": studies.mean_ci(lr_spread),
            "seed_spread": studies.mean_ci(seed_spread),
            "loss_noise": studies.mean_ci(loss_noise),
            "grad_noise": studies.mean_ci(grad_noise),
        }
        for k, v in (
            ("lr_spread", lr_spread),
            ("seed_spread", seed_spread),
            ("loss_noise", loss_noise),
            ("grad_noise", grad_noise),
            ("failed", failed),
            ("final_kl", final_kl),
        ):
            paired[k][a] = v
    return {"arms": out, "paired": paired}


_CLAIMS = {
    "lr_spread": ("final quality depends less on the learning rate",
                  "std over rates of log final KL (ratio {a}/{b})"),
    "seed_spread": ("final quality varies less across seeds",
                    "std over seeds of log final KL (ratio {a}/{b})"),
    "loss_noise": ("the training loss is less noisy from step to step",
                   "loss step-noise CV (ratio {a}/{b})"),
    "grad_noise": ("the gradient norm is less noisy from step to step",
                   "grad-norm step-noise CV (ratio {a}/{b})"),
    "target_noise": ("its regression target is less noisy at fixed x_t",
                     "unexplainable fraction of target variance (ratio {a}/{b})"),
}  # fmt: skip


def stability_verdicts(summary: Mapping, target: Mapping, *, arm: str, baseline: str) -> list:
    """Verdicts on "baseline (diffusion) trains more smoothly than arm" from the numbers."""
    a, b = arm, baseline
    pr = summary["paired"]
    diff = studies.paired_difference(pr["failed"][a], pr["failed"][b])
    out = [
        studies.verdict(
            f"{b} diverges or stalls less often than {a} over the learning-rate x batch sweep",
            f"failure fraction difference {a} - {b}",
            {"ratio": diff["mean"], "ci_low": diff["ci_low"], "ci_high": diff["ci_high"]},
            threshold=0.0,
        )
        | {"statistic": "difference", "headline": True},
    ]
    stats = {k: studies.paired_log_ratio(pr[k][a], pr[k][b]) for k in
             ("lr_spread", "seed_spread", "loss_noise", "grad_noise")}  # fmt: skip
    stats["target_noise"] = studies.paired_log_ratio(target[a]["fraction"], target[b]["fraction"])
    for k, st in stats.items():
        claim, metric = _CLAIMS[k]
        v = studies.verdict(f"{b} trains more smoothly: {claim} than {a}",
                            metric.format(a=a, b=b), st)  # fmt: skip
        out.append(v | ({"headline": True} if k in ("lr_spread", "loss_noise") else {}))
    # Context for the spreads: which arm ends better, run by run (same rate, batch and seed).
    st = studies.paired_log_ratio(pr["final_kl"][a], pr["final_kl"][b])
    out.append(
        studies.verdict(
            f"{b} ends at a lower KL than {a} over the sweep (paired per run)",
            f"final KL (ratio {a}/{b}; runs with a finite KL)",
            st,
        )  # fmt: skip
        | {"headline": True}
    )
    return out


# ---------------------------------------------------------------------------------- run


def _check(config):
    studies.check_positive(
        config, "num_seeds", "num_steps", "steps_per_dispatch", "eval_samples", "width",
        "depth", "dim", "target_batches", "target_batch_size",
    )  # fmt: skip
    arms = studies.names(config.arms, "arms", list(scaling.ARMS))
    for f in ("arm", "baseline"):
        if config[f] not in arms:
            raise ValueError(f"config.{f}: {config[f]!r} is not in config.arms")
    lrs = [float(v) for v in config.lrs]
    if len(lrs) < 2 or any(v <= 0 for v in lrs) or len(set(lrs)) != len(lrs):
        raise ValueError(f"config.lrs: >= 2 distinct positive rates, got {tuple(config.lrs)}")
    bss = [int(v) for v in config.batch_sizes]
    if not bss or any(v < 1 for v in bss):
        raise ValueError(f"config.batch_sizes: positive ints, got {tuple(config.batch_sizes)}")
    return arms, lrs, bss


def run(config, workdir, *, log=print, command=None):
    """Runs the study; returns the results dict (also written to workdir)."""
    arms, lrs, bss = _check(config)
    seeds = [config.seed + i for i in range(config.num_seeds)]
    record = studies.Record("stability", config, seeds, command)
    record.results["claim"] = "diffusion trains more smoothly than flow matching"
    dim = int(config.dim)
    gmm = scaling.mixture(dim, seed=config.mixture_seed, separation=config.separation)
    key = jax.random.key(config.eval_seed)
    k_test, k_x0 = jax.random.split(key)
    x_test = gmm.sample(k_test, config.eval_samples)
    x0 = jax.random.normal(k_x0, (8, dim))  # unused by the KL (NFE is not measured here)
    kl_ref = scaling.gaussian_kl(gmm, gmm.sample(jax.random.fold_in(key, 1), 20_000))
    net = studies.build_network("mlp", "base", (dim,), width=config.width, depth=config.depth,
                                freq_dim=config.freq_dim)  # fmt: skip
    chosen = [scaling.ARMS[a] for a in arms]
    evaluator = scaling.Evaluator(chosen, net.apply_fn, gmm, x_test, x0, config)
    optim = config.optim.copy_and_resolve_references()
    optim.lr = 1.0  # the rate of run r is its update scale (scaling._lr_scaled)
    run_seeds = [s for _ in lrs for s in seeds]  # run r = (rate r // S, seed r % S)
    run_lrs = [lr for lr in lrs for _ in seeds]
    take = jnp.asarray([i for _ in lrs for i in range(len(seeds))])
    runs, curves = [], {}
    for b in bss:
        log(f"[B={b}] training {', '.join(arms)} x {len(lrs)} rates x {len(seeds)} seeds "
            f"({config.num_steps} steps)")  # fmt: skip
        trainer = scaling.RunTrainer(
            [(a.objective, net.apply_fn) for a in chosen], net, optim, config.num_steps,
            ema_decay=config.ema_decay,
        )  # fmt: skip
        state = trainer.init(run_seeds, run_lrs)
        stream = scaling.MixtureStream(gmm, seeds, b, config.num_steps, config.steps_per_dispatch)
        metrics = {"loss": [], "grad_norm": []}
        for chunk in stream:
            state, m = trainer.update(state, {"x1": jnp.take(chunk["x1"], take, axis=0)})
            for k in metrics:
                metrics[k].append(m[k])
        loss = np.concatenate(metrics["loss"], axis=-1)  # (A, R, N)
        gnorm = np.concatenate(metrics["grad_norm"], axis=-1)
        skipped = np.asarray(state.num_skipped)  # (A, R)
        pre = [[classify_run(loss[i, r], int(skipped[i, r]), 0.0, kl_ref,
                             chunk=config.steps_per_dispatch, **_thresholds(config))
                for r in range(len(run_seeds))] for i in range(len(arms))]  # fmt: skip
        # A run whose loss already blew up is not integrated (its field can stall the adaptive
        # solve of every run in the batch): it is scored with a healthy run's parameters and
        # its KL recorded as NaN.
        bad = np.asarray([[p["diverged"] for p in row] for row in pre])
        ema = state.ema[0]
        if bad.any() and not bad.all():
            ema = _replace_runs(ema, bad)
        kl = np.asarray(evaluator(ema)["kl"]) if not bad.all() else np.full(bad.shape, np.nan)
        kl = np.where(bad, np.nan, kl)
        half = loss.shape[-1] // 2
        for i, a in enumerate(arms):
            for r, (lr, s) in enumerate(zip(run_lrs, run_seeds, strict=True)):
                final = float(kl[i, r]) if math.isfinite(kl[i, r]) else None
                cls = classify_run(
                    loss[i, r], int(skipped[i, r]), final, kl_ref,
                    chunk=config.steps_per_dispatch, **_thresholds(config),
                )  # fmt: skip
                runs.append({
                    "arm": a, "lr": lr, "batch_size": b, "seed": s, "final_kl": final,
                    "num_skipped": int(skipped[i, r]), **cls,
                    "loss_noise": noise_cv(loss[i, r, half:]),
                    "grad_noise": noise_cv(gnorm[i, r, half:]),
                    "final_loss": float(np.mean(loss[i, r, -max(1, half // 5):])),
                })  # fmt: skip
            curves[f"{a}/B={b}"] = {
                "step_every": int(config.curve_every),
                "loss_mean_by_lr": [
                    _thin(np.nanmean(loss[i, [r for r in range(len(run_lrs)) if run_lrs[r] == lr]],
                                     axis=0), config.curve_every)
                    for lr in lrs
                ],
            }  # fmt: skip
        for a in arms:
            mine = [x for x in runs if x["arm"] == a and x["batch_size"] == b]
            fails = sum(x["diverged"] or x["stalled"] for x in mine)
            by_lr = [[x["final_kl"] for x in mine if x["lr"] == lr] for lr in lrs]
            cells = [f"{lr:g}: {studies.fmt_ci(studies.mean_ci(v))}"
                     for lr, v in zip(lrs, by_lr, strict=True)]  # fmt: skip
            log(f"  [B={b}] {a}: final KL by rate {', '.join(cells)}; {fails} of {len(mine)} "
                "runs diverged or stalled")  # fmt: skip
    summary = summarise(runs, arms, lrs, bss, seeds, kl_cap=config.kl_cap * kl_ref)
    tkey = jax.random.key(config.eval_seed + 1)
    target = {
        a: target_noise(scaling.ARMS[a], gmm, key=tkey, num_batches=config.target_batches,
                        batch_size=config.target_batch_size, t_eps=config.t_eps)
        for a in arms
    }  # fmt: skip
    verdicts = stability_verdicts(summary, target, arm=config.arm, baseline=config.baseline)
    ds = {
        "dim": dim,
        "kl_gaussian": kl_ref,
        "lrs": lrs,
        "batch_sizes": bss,
        "runs": runs,
        "summary": summary["arms"],
        "paired": summary["paired"],
        "target_noise": {
            a: {k: studies.mean_ci(v) for k, v in t.items()} for a, t in target.items()
        },
        "curves": curves,
    }
    record.add(f"gmm_d{dim}", ds, verdicts=verdicts, num_seeds=len(seeds))
    return record.finish(workdir, render=render, plots=_plots)


def _replace_runs(tree, bad):
    """Leaves (A, R, ...) with the (arm, run) entries where `bad` replaced by a good one's."""
    good = tuple(np.argwhere(~bad)[0])
    mask = jnp.asarray(bad)
    return jax.tree.map(
        lambda x: jnp.where(mask.reshape(bad.shape + (1,) * (x.ndim - 2)), x[good], x), tree
    )


def _thresholds(config):
    return dict(max_skipped_frac=config.max_skipped_frac, blowup_factor=config.blowup_factor,
                stall_fraction=config.stall_fraction)  # fmt: skip


def _thin(x, every):
    return [float(v) for v in np.asarray(x)[every - 1 :: every]]


# ---------------------------------------------------------------------------------- report


def render(r) -> str:
    c = r["config"]
    ((name, ds),) = r["datasets"].items()
    lines = [
        f"# Stability: flow matching vs diffusion over a learning-rate x batch sweep ({name})",
        "",
        *studies.table(
            ("claim", "metric", "ratio [95% CI]", "verdict"),
            [(v["claim"], v["metric"], fmt_stat(v), f"**{v['verdict']}**") for v in ds["verdicts"]],
        ),
        "",
        *studies.machine_lines(r),
        "",
        f"Arms {c['arms']} ({c['width']} x {c['depth']} MLP, {c['num_steps']} steps, AdamW "
        f"with warmup + cosine, grad clip {c['optim']['grad_clip']}); rates {ds['lrs']}, batch "
        f"sizes {ds['batch_sizes']}, {ds['num_seeds']} seeds each; mixture in d = {ds['dim']} "
        f"(KL of N(0, I): {studies.fmt(ds['kl_gaussian'])} nats). Diverged: > "
        f"{c['max_skipped_frac']:.0%} non-finite steps, loss blow-up (> {c['blowup_factor']}x "
        f"its lowest chunk mean at the end) or non-finite KL; stalled: final KL > "
        f"{c['stall_fraction']} x KL of N(0, I).",
        "",
        "## Per arm",
        "",
    ]
    rows = []
    for a, s in ds["summary"].items():
        rows.append([
            a, _frac(s["diverged"]), _frac(s["stalled"]), studies.fmt_ci(s["lr_spread"]),
            studies.fmt_ci(s["seed_spread"]), studies.fmt_ci(s["loss_noise"]),
            studies.fmt_ci(s["grad_noise"]), studies.fmt_ci(ds["target_noise"][a]["fraction"]),
            f"{s['best_cell']}: {studies.fmt_ci(s['final_kl_by_cell'][s['best_cell']])}",
        ])  # fmt: skip
    lines += studies.table(
        ["arm", "diverged", "stalled", "std_lr log KL", "std_seed log KL", "loss noise CV",
         "grad-norm noise CV", "target noise fraction", "best cell: final KL"], rows,
    )  # fmt: skip
    lines += ["", "## Final KL (nats) by cell", ""]
    cells = list(next(iter(ds["summary"].values()))["final_kl_by_cell"])
    lines += studies.table(
        ["cell", *ds["summary"]],
        [[cell, *(studies.fmt_ci(s["final_kl_by_cell"][cell]) for s in ds["summary"].values())]
         for cell in cells],
    )  # fmt: skip
    bad = [x for x in ds["runs"] if x["diverged"] or x["stalled"]]
    if bad:
        lines += ["", "Failed runs: " + "; ".join(
            f"{x['arm']} lr={x['lr']:g} B={x['batch_size']} seed {x['seed']} ({x['reason']})"
            for x in bad)]  # fmt: skip
    tn = ds["target_noise"]
    lines += ["", "Regression target at fixed x_t (Monte Carlo with the exact posterior mean, "
              "per dimension): " + "; ".join(
                  f"{a}: irreducible {studies.fmt_ci(t['irreducible'])} of total "
                  f"{studies.fmt_ci(t['total'])}, per-example loss CV "
                  f"{studies.fmt_ci(t['loss_cv'])}"
                  for a, t in tn.items())]  # fmt: skip
    if r.get("plots"):
        lines += ["", *[f"![{k}]({v})" for k, v in r["plots"].items()]]
    return "\n".join(lines) + "\n"


def fmt_stat(v: Mapping) -> str:
    """A verdict's statistic: 'r× [lo, hi]' for ratios, '+d [lo, hi]' for differences."""
    if v.get("statistic") != "difference":
        return studies.fmt_ratio(v)
    r, lo, hi = v.get("ratio"), v.get("ci_low"), v.get("ci_high")
    if r is None or not math.isfinite(r):
        return "n/a"
    if lo is None or not math.isfinite(lo):
        return f"{r:+.2f}"
    return f"{r:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def _frac(w):
    return f"{w['k']}/{w['n']} [{w['ci_low']:.2f}, {w['ci_high']:.2f}]"


def _plots(results, workdir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ((name, ds),) = results["datasets"].items()
    keys = list(ds["curves"])
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=True):
        cur = ds["curves"][k]
        for lr, y in zip(ds["lrs"], cur["loss_mean_by_lr"], strict=True):
            x = np.arange(1, len(y) + 1) * cur["step_every"]
            ax.plot(x, y, label=f"lr {lr:g}")
        ax.set_yscale("log")
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("training loss (mean over seeds)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(workdir, "loss_curves.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return {"loss_curves": os.path.basename(path)}
