"""The reward study: fine-tuning towards p* ~ p exp(lambda r) against guidance at sampling time.

Per task and seed (paired: same data, initialisation and noise per seed), a base velocity model
(flow matching) and a base flow map (LSD, `fj.flowmaps.LSD`) are trained on the base data;
then each fine-tuning arm starts from its base and trains `finetune_steps` steps through the
library's one train step (`fj.train.step.make_update`, vmapped over seeds):

  am       Adjoint Matching (`fj.reward.AdjointMatching`) of the velocity model;
  rw_fm    reward-weighted flow matching on the base velocity model's own ODE samples
           (`fj.reward.RewardWeighted` + `ODEProposal`): the velocity route;
  rw_map   reward-weighted LSD on the base map's own one-step samples (`MapProposal`):
           the flow-map route, one evaluation per proposal sample;
  draft    reward back-propagation through the one-step map with an L2 anchor to the base map
           (`fj.reward.DRaFT`; biased by construction);
  ref_fm / ref_map   the reference: the same model trained the same number of steps from its
           base on exact p* samples (what a fine-tuner could reach with perfect data).

Guidance on the base map at comparable NFE (`fj.flowmaps`): look-ahead gradient guidance,
best-of-N by look-ahead reward, importance resampling (SMC) with the look-ahead potential.

Tasks: `mixture` (the `gmm` preset, a quadratic reward: p* exact by
`GaussianMixture.tilt`; metrics: exact reverse KL(q || p*) through the likelihood for velocity
models and through the one-step map's Jacobian for maps, energy distance to p* samples, mean
reward); `checkerboard` (a smooth box reward `fj.reward.Region`; p* samples by rejection from
the data; energy distance and reward). Model evaluations are counted per example in forward
units (a backward pass counts 2): training (proposals, rollouts, adjoints, losses) and sampling.
Writes DIR/report.md, DIR/results.json (the shared schema) and DIR/samples_<task>.png.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import flowjax as fj
from flowjax import studies

__all__ = ["ARMS", "TASKS", "run"]

ARMS = ("am", "rw_fm", "rw_map", "draft", "ref_fm", "ref_map")
VELOCITY_ARMS = ("base_fm", "am", "rw_fm", "ref_fm")
TASKS = ("mixture", "checkerboard")
PATH = fj.paths.CondOT()


class _Field(eqx.Module):
    params: Any
    apply_fn: Callable = eqx.field(static=True)

    def __call__(self, x, t):
        return self.apply_fn(self.params, x, t)


class _OneStep(eqx.Module):
    params: Any
    apply_fn: Callable = eqx.field(static=True)

    def __call__(self, x0):
        return fj.flowmaps.FlowMap(self.apply_fn)(self.params, x0, 0.0, 1.0)


class _Task:
    def __init__(self, name, config):
        self.name, self.dataset = name, {"mixture": "gmm", "checkerboard": "checkerboard"}[name]
        c = config[name]
        self.lam = float(c.strength)
        if name == "mixture":
            self.gmm = fj.analytic.GaussianMixture(**fj.data.gmm_params("gmm").as_dict())
            self.reward = fj.reward.Quadratic(center=jnp.asarray(c.center), scale=float(c.scale))
            self.star = self.reward.tilt(self.gmm, self.lam)
        else:
            self.gmm = self.star = None
            self.reward = fj.reward.Region(
                low=jnp.asarray(c.low), high=jnp.asarray(c.high), width=float(c.width)
            )

    def sample_star(self, seed, n):
        if self.star is not None:
            return np.asarray(self.star.sample(jax.random.key(seed), n))
        x = np.asarray(fj.data.reference_samples(self.dataset, 40 * n, seed=seed), np.float32)
        r = np.asarray(self.reward(jnp.asarray(x)))  # <= 0: accept with exp(lam r)
        u = np.random.default_rng(seed).uniform(size=len(x))
        keep = x[u < np.exp(self.lam * r)]
        if len(keep) < n:
            raise ValueError(f"{self.name}: rejection sampling kept {len(keep)} < {n} samples")
        return keep[:n]


def _cost(arm, config):
    """Training cost per example per step, forward units (backward = 2)."""
    k, m, q = config.am_steps, config.am_loss_times, config.proposal_steps
    return {
        "am": k + 3 * k + 3 * m + m,  # rollout, base VJPs, loss (fwd + bwd), base at loss times
        "rw_fm": 2 * q + 3,  # Heun proposal (2 evals a step), flow matching step
        "rw_map": 1 + 6,  # one-step proposal, LSD step (diagonal + JVP branch + its backward)
        "draft": 1 + 3,  # base map, one-step map forward + backward
        "ref_fm": 3,
        "ref_map": 6,
    }[arm]


def _objective(arm, task, nets, config):
    """base -> objective (base: dict of this seed's base parameters, "fm" and "map")."""
    fm_apply, map_apply = nets["fm"].apply_fn, nets["map"].apply_fn
    lsd = fj.flowmaps.LSD(path=PATH)
    fm = fj.objectives.FlowMatching(path=PATH)
    r, lam = task.reward, task.lam

    def make(base):
        if arm == "am":
            return fj.reward.AdjointMatching(
                PATH,
                r,
                lam,
                _Field(base["fm"], fm_apply),
                model=fm_apply,
                num_steps=config.am_steps,
                num_loss_times=config.am_loss_times,
                t_min=config.am_t_min,
            )
        if arm == "rw_fm":
            prop = fj.reward.ODEProposal(fm_apply, base["fm"], num_steps=config.proposal_steps)
            return fj.reward.RewardWeighted(fm, r, lam, proposal=prop, model=fm_apply)
        if arm == "rw_map":
            prop = fj.reward.MapProposal(map_apply, base["map"])
            return fj.reward.RewardWeighted(lsd, r, lam, proposal=prop, model=map_apply)
        if arm == "draft":
            base_map = _OneStep(base["map"], map_apply)
            return fj.reward.DRaFT(r, lam, config.draft_anchor, base_map, model=map_apply)
        return (
            fj.objectives.FlowMatching(path=PATH, model=fm_apply)
            if arm == "ref_fm"
            else (fj.flowmaps.LSD(path=PATH, model=map_apply))
        )

    return make


def _finetune(arm, task, nets, bases, seeds, config):
    """(final params (S-stacked), losses (S, N), seconds) of one arm from its bases."""
    from flowjax.train import make_optimizer
    from flowjax.train.state import init_state
    from flowjax.train.step import make_update

    n = config.finetune_steps
    optimizer, schedule = make_optimizer(config.finetune_optim, n)
    make = _objective(arm, task, nets, config)
    apply_fn = nets["fm" if arm in VELOCITY_ARMS else "map"].apply_fn
    start = bases["fm" if arm in VELOCITY_ARMS else "map"]

    def update(state, base, chunk):
        objective = make(base)
        loss = lambda p, k, b: objective(p, k, b, model=apply_fn)  # noqa: E731
        step = make_update(
            loss, optimizer, schedule, ema_decays=(config.ema_decay,), on_nonfinite="skip"
        )
        return step(state, chunk)

    init = jax.jit(jax.vmap(lambda s, p: init_state(lambda k: p, optimizer, s, 1)))
    upd = jax.jit(jax.vmap(update))
    state = init(jnp.asarray(seeds, jnp.int32) + 7919, start)
    b, k = config.batch_size, config.steps_per_dispatch
    losses, t0 = [], time.perf_counter()
    for i in range(n // k):
        if arm.startswith("ref"):  # exact p* samples
            x1 = np.stack(
                [task.sample_star(10_000 * s + i, k * b).reshape(k, b, -1) for s in seeds]
            )
        else:  # data-free: the batch only gives the shape
            x1 = np.zeros((len(seeds), k, b, 2), np.float32)
        state, metrics = upd(state, bases, {"x1": jnp.asarray(x1, jnp.float32)})
        losses.append(np.asarray(metrics["loss"]))
    extra = {}
    if "ess_fraction" in metrics:
        extra["ess_fraction"] = float(np.mean(np.asarray(metrics["ess_fraction"])))
    return state.ema[0], np.concatenate(losses, 1), time.perf_counter() - t0, extra


def _map_log_q(apply_fn, params, x0):
    """log q(X(x0)) = log N(x0) - log |det dX/dx0| for the one-step map (2D: exact Jacobian)."""
    one = lambda z: fj.flowmaps.FlowMap(apply_fn)(params, z[None], 0.0, 1.0)[0]  # noqa: E731
    jac = jax.vmap(jax.jacfwd(one))(x0)
    logdet = jnp.linalg.slogdet(jac)[1]
    log_n = -0.5 * jnp.sum(x0**2, -1) - x0.shape[-1] * 0.5 * np.log(2 * np.pi)
    return jax.vmap(one)(x0), log_n - logdet


def _evaluate(kind, apply_fn, params, task, x_star, key, config):
    """Metrics of one model: samples, reward, energy to p*, reverse KL (mixture), NFE."""
    x0 = jax.random.normal(key, (config.eval_samples, 2))
    out = {}
    if kind == "fm":
        field = _Field(params, apply_fn)
        x1, info = fj.sampling.sample_ode(field, x0, solver="dopri5", rtol=1e-4, atol=1e-4)
        out["nfe"] = float(info["nfe"])
        if task.star is not None:
            log_q, _ = fj.likelihood.log_prob(field, x1, rtol=1e-4, atol=1e-4)
            out["kl"] = float(jnp.mean(log_q - task.star.log_prob(x1)))
    else:
        x1, log_q = jax.jit(_map_log_q, static_argnums=0)(apply_fn, params, x0)
        out["nfe"] = 1.0
        if task.star is not None:
            out["kl"] = float(jnp.mean(log_q - task.star.log_prob(x1)))
    return np.asarray(x1), _sample_metrics(out, np.asarray(x1), task, x_star)


def _sample_metrics(out, x1, task, x_star):
    out["reward"] = float(jnp.mean(task.reward(jnp.asarray(x1))))
    out["energy"] = float(fj.metrics.energy_distance(x1, x_star))
    return out


def _guidance(task, nets, base_map, x_star, key, config):
    """Guidance baselines on the base map: {name: (samples, metrics)} for one seed."""
    bound = fj.flowmaps.as_callable(nets["map"].apply_fn, base_map)
    n, r = config.eval_samples, task.reward
    k1, k2, k3 = jax.random.split(key, 3)
    res = {}
    x = fj.flowmaps.guided_sample(
        bound,
        jax.random.normal(k1, (n, 2)),
        r,
        scale=config.guide_scale,
        num_steps=config.guide_steps,
    )
    res["guided"] = (x, 2.0 * config.guide_steps)  # jump + look-ahead (and its gradient)
    lam = task.lam
    x, _ = fj.flowmaps.best_of_n(
        bound, jax.random.normal(k2, (config.best_of, n, 2)), lambda y: lam * r(y)
    )
    res["best_of_n"] = (x, float(config.best_of))
    x, _ = fj.flowmaps.importance_sample(
        bound, jax.random.normal(k3, (n, 2)), lambda y: lam * r(y), key=k3, num_steps=1
    )
    res["smc"] = (x, 2.0)  # look-ahead + jump per particle
    return {
        k: (np.asarray(x), _sample_metrics({"nfe": nfe}, np.asarray(x), task, x_star))
        for k, (x, nfe) in res.items()
    }


def _pretrain(task, nets, seeds, config, log):
    stream = studies.BatchStream(
        task.dataset, seeds, config.batch_size, config.pretrain_steps, config.steps_per_dispatch
    )
    out = {}
    for kind, obj in (
        ("fm", fj.objectives.FlowMatching(path=PATH, model=nets["fm"].apply_fn)),
        ("map", fj.flowmaps.LSD(path=PATH, model=nets["map"].apply_fn)),
    ):
        log(f"[{task.name}] pretraining base {kind} ({len(seeds)} seeds x {config.pretrain_steps})")
        trainer = studies.SeedTrainer(
            obj, nets[kind], config.optim, config.pretrain_steps, ema_decay=config.ema_decay
        )
        state, _ = trainer.train(stream)
        out[kind] = state.ema[0]
    return out


def run(config, workdir, *, log=print, command=None):
    """Runs the study; returns the results dict (also written to workdir)."""
    studies.check_positive(
        config, "num_seeds", "pretrain_steps", "finetune_steps", "batch_size", "eval_samples"
    )
    seeds = [config.seed + i for i in range(config.num_seeds)]
    record = studies.Record("reward", config, seeds, command)
    arms = studies.names(config.arms, "arms", list(ARMS))
    kw = dict(width=config.width, depth=config.depth)
    nets = {
        "fm": studies.build_network("mlp", "tiny", (2,), **kw),
        "map": studies.build_network("mlp", "tiny", (2,), two_times=True, **kw),
    }
    pretrain_cost = {"fm": 3, "map": 6}
    all_samples = {}
    for name in studies.names(config.tasks, "tasks", list(TASKS)):
        task = _Task(name, config)
        x_star = task.sample_star(1, config.eval_samples)
        bases = _pretrain(task, nets, seeds, config, log)
        models = {"base_fm": ("fm", bases["fm"]), "base_map": ("map", bases["map"])}
        finals, samples, train_info = {}, {}, {}
        for arm in arms:
            log(f"[{name}] fine-tuning {arm} ({len(seeds)} seeds x {config.finetune_steps})")
            params, losses, secs, extra = _finetune(arm, task, nets, bases, seeds, config)
            models[arm] = ("fm" if arm in VELOCITY_ARMS else "map", params)
            train_info[arm] = {
                "train_seconds": secs,
                "final_loss": float(np.mean(losses[:, -5:])),
                "diverged": bool(not np.all(np.isfinite(losses))),
                **extra,
            }
        guide = {}
        for arm, (kind, params) in models.items():
            per_seed = []
            for i in range(len(seeds)):
                x1, m = _evaluate(
                    kind,
                    nets[kind].apply_fn,
                    studies.unstack(params, i),
                    task,
                    x_star,
                    jax.random.key(500 + i),
                    config,
                )
                per_seed.append(m)
                if i == 0:
                    samples[arm] = x1
            finals[arm] = {k: studies.mean_ci([m[k] for m in per_seed]) for k in per_seed[0]}
            steps = config.pretrain_steps + (0 if arm.startswith("base") else config.finetune_steps)
            train_evals = config.batch_size * (
                config.pretrain_steps * pretrain_cost[kind]
                + (0 if arm.startswith("base") else config.finetune_steps * _cost(arm, config))
            )
            finals[arm].update(train_info.get(arm, {}), steps=steps, train_evals=train_evals)
            log(
                f"    {arm}: " + ", ".join(f"{k} {finals[arm][k]['mean']:.4g}" for k in per_seed[0])
            )
        for i in range(len(seeds)):
            for g, (x1, m) in _guidance(
                task,
                nets,
                studies.unstack(bases["map"], i),
                x_star,
                jax.random.key(900 + i),
                config,
            ).items():
                guide.setdefault(g, []).append(m)
                if i == 0:
                    samples[g] = x1
        for g, ms in guide.items():
            finals[g] = {k: studies.mean_ci([m[k] for m in ms]) for k in ms[0]}
            finals[g]["train_evals"] = config.batch_size * config.pretrain_steps * 6
        samples["p*"] = x_star
        all_samples[name] = samples
        verdicts, findings = _verdicts(task, finals)
        ds = {"strength": task.lam, "finals": finals, "findings": findings}
        if task.star is not None:
            ds["p_star"] = {
                "means": np.asarray(task.star.means).tolist(),
                "weights": np.asarray(task.star.weights).tolist(),
            }
        record.add(name, ds, verdicts=verdicts, num_seeds=len(seeds))
    return record.finish(workdir, render=_render, plots=lambda r, w: _plots(all_samples, w))


def _vals(finals, arm, metric):
    return finals[arm][metric]["values"] if arm in finals and metric in finals[arm] else None


def _verdicts(task, finals):
    verdicts, findings = [], []
    metric = "kl" if task.star is not None else "energy"
    tuned = [a for a in ("am", "rw_fm", "rw_map", "draft") if a in finals]
    for arm in tuned:
        base = "base_fm" if arm in VELOCITY_ARMS else "base_map"
        r = studies.paired_log_ratio(_vals(finals, base, metric), _vals(finals, arm, metric))
        verdicts.append(
            studies.verdict(f"{arm} moves the model towards p* (lower {metric})", metric, r)
        )
    if tuned:
        best = min(tuned, key=lambda a: finals[a][metric]["mean"])
        ref = "ref_fm" if best in VELOCITY_ARMS else "ref_map"
        if ref in finals:
            r = studies.paired_log_ratio(_vals(finals, best, metric), _vals(finals, ref, metric))
            verdicts.append(
                studies.verdict(
                    f"best fine-tuned ({best}) {metric} to p* within 1.5x of {ref} (trained on p*)",
                    metric,
                    r,
                    threshold=1.5,
                    above=False,
                )
            )
    if "rw_fm" in finals and "rw_map" in finals:
        ratio = finals["rw_fm"]["train_evals"] / finals["rw_map"]["train_evals"]
        r = studies.paired_log_ratio(
            _vals(finals, "rw_map", metric), _vals(finals, "rw_fm", metric)
        )
        verdicts.append(
            studies.verdict(
                f"flow-map route (rw_map) within 1.5x of the velocity route's {metric} "
                f"for {1 / ratio:.2f}x its training evaluations",
                metric,
                r,
                threshold=1.5,
                above=False,
            )
        )
        findings.append(f"velocity / flow-map route training evaluations: {ratio:.2f}x")
    for g in ("guided", "best_of_n", "smc"):
        if g in finals and "rw_map" in finals:
            r = studies.paired_log_ratio(
                _vals(finals, g, "energy"), _vals(finals, "rw_map", "energy")
            )
            verdicts.append(
                studies.verdict(
                    f"fine-tuned 1-NFE map (rw_map) closer to p* than {g} on the base map "
                    f"({finals[g]['nfe']['mean']:.0f} NFE)",
                    "energy",
                    r,
                )
            )
    return verdicts, findings


def _plots(all_samples, workdir):
    import os

    out = {}
    for name, panels in all_samples.items():
        path = os.path.join(workdir, f"samples_{name}.png")
        out[name] = studies.plot_samples(path, panels, lim=4.5, title=f"{name}: samples")
    return out


def _render(r) -> str:
    lines = ["# Reward fine-tuning with flow maps vs guidance", ""]
    lines += ["## Verdicts", ""]
    for name, ds in r["datasets"].items():
        lines += [f"### {name}", "", *studies.verdict_table(ds["verdicts"]), ""]
        lines += [f"- {f}" for f in ds.get("findings", [])] + [""]
    lines += [*studies.machine_lines(r), ""]
    for name, ds in r["datasets"].items():
        lines += [f"## {name} (strength {ds['strength']})", ""]
        rows = []
        for arm, c in ds["finals"].items():
            rows.append(
                [
                    arm,
                    studies.fmt_ci(c["kl"]) if "kl" in c else "-",
                    studies.fmt_ci(c["energy"]),
                    studies.fmt_ci(c["reward"]),
                    studies.fmt(c["nfe"]["mean"]),
                    studies.fmt(c.get("train_evals")),
                    studies.fmt(c.get("ess_fraction")),
                    str(c.get("diverged", "-")),
                ]
            )
        header = [
            "arm",
            "reverse KL to p*",
            "energy to p*",
            "mean reward",
            "sampling NFE",
            "training evals / run",
            "ESS / B",
            "diverged",
        ]
        lines += studies.table(header, rows) + [""]
    return "\n".join(lines) + "\n"
