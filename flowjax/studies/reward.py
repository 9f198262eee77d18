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
TASKS = ("mixture", "checkerboard", "digits")
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
        if name == "digits":
            ds, all_samples[name] = _digits(config, seeds, log)
            record.add(name, ds, verdicts=ds.pop("verdicts"), num_seeds=len(seeds))
            continue
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


class _Stream:
    """Data-free fine-tuning chunks (zeros: the batch only gives the shape) for `SeedTrainer`."""

    def __init__(self, seeds, chunk, num_chunks):
        self.seeds, self._chunk, self._n = tuple(seeds), chunk, num_chunks

    def __iter__(self):
        return iter([self._chunk] * self._n)


DIGITS_ARMS = ("draft", "rw_map")


def _digits(config, seeds, log):
    """The digits task: fine-tune the shipped 1-step map (null label) towards one class.

    Reward r(x) = log p(label | x) under the shipped digits classifier, so at strength 1 the
    tilt p* ~ p(x) p(label | x) is the class-conditional p(x | label) (for a calibrated
    classifier) and its samples are the real images of that class. Arms, from
    `fj.pretrained.load("digits_map")` with the null label: DRaFT (L2 anchor to the base map)
    and reward-weighted LSD on the base map's own one-step samples. Against: look-ahead
    gradient guidance of the same base map, one jump (forward + backward: 2 NFE, twice the
    fine-tuned map's 1) at each of `guide_scales`, and, as context, the map's own
    class-conditional 1-step sample (what supervised conditioning reaches). Metrics per seed:
    mean class log-prob, digits FD to the class's real images (to p*) and to as many images
    drawn from all digits (the base map's target; same sizes, so the FDs share their bias).
    """
    c = config.digits
    pre = fj.pretrained.load("digits_map")
    null, label, lam = pre.num_classes, int(c.label), float(c.strength)
    clf = fj.metrics.digits_classifier()
    reward = fj.reward.ClassLogProb(clf, label)

    def map_apply(p, x, t, *, s=None, y=None, **kw):
        return pre.apply_fn(p, x, t, s=s, y=jnp.full((x.shape[0],), null, jnp.int32), **kw)

    net = studies.Network(map_apply, lambda key: pre.params, pre.event_shape)
    base = _OneStep(pre.params, map_apply)
    objectives = {
        "draft": lambda: fj.reward.DRaFT(reward, lam, float(c.draft_anchor), base, model=map_apply),
        "rw_map": lambda: fj.reward.RewardWeighted(
            fj.flowmaps.LSD(path=pre.path, diagonal_fraction=float(c.lsd_diagonal_fraction)),
            reward,
            lam,
            proposal=fj.reward.MapProposal(map_apply, pre.params),
            model=map_apply,
        ),
    }
    arms = [a for a in studies.names(config.arms, "arms", list(ARMS)) if a in DIGITS_ARMS]
    if not arms:
        raise ValueError(f"digits: arms {config.arms!r} hold none of {list(DIGITS_ARMS)}")
    scales = [float(s) for s in str(c.guide_scales).split(",")]
    k, b = config.steps_per_dispatch, int(c.batch_size)
    studies.check_positive(c, "finetune_steps", "batch_size", "eval_samples")
    if c.finetune_steps % k:
        raise ValueError(f"digits.finetune_steps={c.finetune_steps} must be a multiple of {k}")
    zeros = {"x1": np.zeros((len(seeds), k, b, *pre.event_shape), np.float32)}
    stream = _Stream(seeds, zeros, c.finetune_steps // k)
    data = fj.metrics.load_digits_split()
    x_all = np.concatenate([data["x_train"], data["x_test"]])
    y_all = np.concatenate([data["y_train"], data["y_test"]])
    x_cls = x_all[y_all == label]
    x_any = x_all[np.random.default_rng(0).choice(len(x_all), len(x_cls), replace=False)]
    n, per, samples = int(c.eval_samples), {}, {}
    log_prob = jax.jit(reward)
    jump = jax.jit(lambda p, x0, y: fj.flowmaps.FlowMap(pre.apply_fn)(p, x0, 0.0, 1.0, y=y))
    scaled = lambda x: lam * reward(x)  # noqa: E731  (one object: guided_sample compiles once)

    def score(name, x, nfe, i):
        x = np.asarray(x)
        per.setdefault(name, []).append(
            {
                "log_prob": float(jnp.mean(log_prob(jnp.asarray(x)))),
                "fd_class": float(fj.metrics.digits_fd(x, x_cls, classifier=clf)),
                "fd_all": float(fj.metrics.digits_fd(x, x_any, classifier=clf)),
                "nfe": nfe,
            }
        )
        if i == 0:
            samples[name] = x[:64]

    optim = config.finetune_optim.copy_and_resolve_references()
    optim.lr = float(c.lr)
    trained = {}
    for arm in arms:
        log(f"[digits] fine-tuning {arm} ({len(seeds)} seeds x {c.finetune_steps})")
        trainer = studies.SeedTrainer(
            objectives[arm](),
            net,
            optim,
            c.finetune_steps,
            ema_decay=config.ema_decay,
            on_nonfinite="skip",
        )
        state, losses = trainer.train(stream)
        trained[arm] = (state.ema[0], bool(not np.all(np.isfinite(losses))))
    ess, y_null, y_label = [], jnp.full((n,), null, jnp.int32), jnp.full((n,), label, jnp.int32)
    for i in range(len(seeds)):
        x0 = jax.random.normal(jax.random.key(700 + i), (n, *pre.event_shape))
        for arm in arms:
            score(arm, jump(studies.unstack(trained[arm][0], i), x0, y_null), 1.0, i)
        x_base = jump(pre.params, x0, y_null)
        score("base_map", x_base, 1.0, i)
        _, e = fj.reward.normalized_weights(lam * log_prob(x_base))
        ess.append(float(e) / n)  # what rw_map's self-normalised weights keep of a batch
        score("label_map", jump(pre.params, x0, y_label), 1.0, i)
        for s in scales:
            x = fj.flowmaps.guided_sample(pre.flow_map(), x0, scaled, scale=s, num_steps=1)
            score(f"guided@{s:g}", x, 2.0, i)
        # p* to Monte Carlo error: the base map's samples resampled by exp(lam r) from a pool of
        # `pool` x n (sampling-time importance resampling, `pool` NFE per sample): the quality
        # any p*-exact fine-tuning of this base can reach.
        pool = jax.random.normal(jax.random.key(800 + i), (int(c.pool) * n, *pre.event_shape))
        x_pool = jump(pre.params, pool, jnp.full((len(pool),), null, jnp.int32))
        idx = jax.random.categorical(jax.random.key(900 + i), lam * log_prob(x_pool), shape=(n,))
        score("p*_resampled", x_pool[idx], float(c.pool), i)
    finals = {a: {m: studies.mean_ci([r[m] for r in rs]) for m in rs[0]} for a, rs in per.items()}
    cost = {"draft": 1 + 3, "rw_map": 1 + 6}  # forward units per example per step (_cost)
    for arm in arms:
        finals[arm]["train_evals"] = b * c.finetune_steps * cost[arm]
        finals[arm]["diverged"] = trained[arm][1]
    for a, f in finals.items():
        log(f"    {a}: " + ", ".join(f"{m} {f[m]['mean']:.4g}" for m in per[a][0]))
    verdicts, findings = _digits_verdicts(finals, arms, scales, label)
    findings.append(f"ESS of the reward weights on base samples: {np.mean(ess):.3f} of the batch")
    ds = {
        "strength": lam,
        "label": label,
        "ess_fraction": float(np.mean(ess)),
        "finals": finals,
        "verdicts": verdicts,
        "findings": findings,
    }
    return ds, samples


def _digits_verdicts(finals, arms, scales, label, budget=1.2):
    """The issue's digits target, per fine-tuned arm: class log-prob above look-ahead guidance
    at equal sampling NFE, and FD to p* (the class) within `budget` x the base map's FD to its
    own target (all digits); and, as context, its FD against that of p* resampled from the base
    (no method that targets p* exactly can beat the base's own quality on the class).

    The guided competitor of an arm is guidance at equal or better quality: the scale with the
    highest log-prob among those whose FD to the class is at most the arm's; where every scale
    is worse in FD, the scale with the best FD.
    """

    def mean(a, m):
        return finals[a][m]["mean"]

    def vals(a, m):
        return finals[a][m]["values"]

    limit = budget * mean("base_map", "fd_all")
    guided = [f"guided@{s:g}" for s in scales]
    verdicts, findings = [], []
    for arm in arms:
        fair = [g for g in guided if mean(g, "fd_class") <= mean(arm, "fd_class")]
        rival = (
            max(fair, key=lambda g: mean(g, "log_prob"))
            if fair
            else min(guided, key=lambda g: mean(g, "fd_class"))
        )
        nll = lambda a: [-v for v in vals(a, "log_prob")]  # noqa: E731
        verdicts.append(
            studies.verdict(
                f"fine-tuned 1-NFE map ({arm}) has a higher class-{label} log-prob than "
                f"look-ahead guidance of the base map at no worse FD ({rival}, 2 NFE)",
                "log_prob (ratio of -log p: guided / fine-tuned)",
                studies.paired_log_ratio(nll(rival), nll(arm)),
            )
        )
        verdicts.append(
            studies.verdict(
                f"fine-tuned map ({arm}) digits FD to class {label} (p*) within {budget}x of "
                f"the base map's FD to all digits (its own target; limit {limit:.1f})",
                "digits_fd",
                studies.paired_log_ratio(vals(arm, "fd_class"), vals("base_map", "fd_all")),
                threshold=budget,
                above=False,
            )
        )
        verdicts.append(
            studies.verdict(
                f"(context) fine-tuned map ({arm}) digits FD to class {label} within {budget}x of "
                "p* resampled from the base map's own samples (the base's quality on p*)",
                "digits_fd",
                studies.paired_log_ratio(vals(arm, "fd_class"), vals("p*_resampled", "fd_class")),
                threshold=budget,
                above=False,
            )
        )
        fd = mean(arm, "fd_class")
        findings.append(
            f"{arm}: FD to the class {fd / mean('p*_resampled', 'fd_class'):.2f}x that of p* "
            f"resampled from the base, {fd / mean('label_map', 'fd_class'):.2f}x the "
            "class-conditional map's"
        )
    met = [
        a
        for a, v1, v2 in zip(arms, verdicts[::3], verdicts[1::3], strict=True)
        if v1["verdict"] == v2["verdict"] == "supported"
    ]
    findings.append(f"digits target met by: {', '.join(met) if met else 'none'}")
    ceiling = mean("p*_resampled", "fd_class") / mean("base_map", "fd_all")
    findings.append(
        f"p* itself (base samples resampled by the reward) has {ceiling:.2f}x the base map's FD"
    )
    return verdicts, findings


def _plots(all_samples, workdir):
    import os

    out = {}
    for name, panels in all_samples.items():
        if name == "digits":
            path = os.path.join(workdir, "samples_digits.png")
            out[name] = studies.plot_samples(path, panels, title="digits: 1-step samples")
            continue
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
        if name == "digits":
            header = [
                "arm",
                f"class-{ds['label']} log-prob",
                "FD to the class (p*)",
                "FD to all digits",
                "sampling NFE",
                "training evals / run",
            ]
            for arm, c in ds["finals"].items():
                rows.append(
                    [
                        arm,
                        studies.fmt_ci(c["log_prob"]),
                        studies.fmt_ci(c["fd_class"]),
                        studies.fmt_ci(c["fd_all"]),
                        studies.fmt(c["nfe"]["mean"]),
                        studies.fmt(c.get("train_evals")),
                    ]
                )
            lines += studies.table(header, rows) + [""]
            continue
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
