"""The flow-map study: teacher -> every flow-map method -> quality against NFE -> guidance.

`run(config, workdir)` does, for each dataset of `config.datasets`:

1. the teacher: the exact mixture velocity, or a flow-matching network trained here, and its
   quality with an adaptive dopri5 solve (its NFE recorded), with Heun steps and with 1..16
   Euler steps;
2. every method of `config.methods` on the same two-time network X(x, s, t) = x + (t - s)
   u(x, s, t), optimizer, batch, number of steps and seeds (distillation from the teacher,
   self-distillation from data), all seeds at once through `fj.train.step` (vmapped);
3. each method's samples after 1, 2, 4, 8, 16 steps from the same noise (`fj.flowmaps.sample`
   or the multistep consistency sampler `fj.flowmaps.sample_stochastic`, both with a run-time
   step count: one compilation for every k), scored by the dataset's metrics;
4. reward guidance with the best jump-sampled map, every approach at the same NFE;

and writes `report.md`, `results.json` (the shared studies schema) and PNG plots.

Samplers: "jumps" is x <- X(x, t_k, t_{k+1}) on the uniform grid, for methods that learn X on
all pairs s <= t. Consistency models learn only X(., t, 1), so k steps re-noise at t_k = k / K
(Song et al. 2023, Algorithm 1). Both cost one network evaluation per step.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from flowjax import studies

__all__ = [
    "DATASETS",
    "METHODS",
    "Approach",
    "BoxReward",
    "ClassifierReward",
    "Method",
    "approaches",
    "check_config",
    "lookahead_comparison",
    "resolve_methods",
    "run",
    "teacher_ratios",
]


# ------------------------------------------------------------------------------ methods


@dataclasses.dataclass(frozen=True)
class Method:
    """A flow-map method: objective name (`fj.objectives`), label, family and sampler.

    family: "distillation" (needs the teacher) or "self-distillation" (from data alone);
    sampler: "jumps" or "consistency" (see the module docstring).
    """

    name: str
    label: str
    family: str
    sampler: str

    @property
    def needs_teacher(self) -> bool:
        return self.family == "distillation"


_D, _S = "distillation", "self-distillation"
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("lmd", "Lagrangian map distillation (Boffi et al. 2024)", _D, "jumps"),
        Method("emd", "Eulerian map distillation (Boffi et al. 2024)", _D, "jumps"),
        Method(
            "progressive",
            "progressive flow-map distillation (Salimans & Ho 2022; Boffi et al. 2024)",
            _D,
            "jumps",
        ),
        Method(
            "consistency_distill", "consistency distillation (Song et al. 2023)", _D, "consistency"
        ),
        Method("shortcut", "shortcut model (Frans et al. 2024)", _S, "jumps"),
        Method("meanflow", "MeanFlow (Geng et al. 2025)", _S, "jumps"),
        Method("lsd", "Lagrangian self-distillation (Boffi et al. 2025)", _S, "jumps"),
        Method(
            "consistency_training", "consistency training (Song et al. 2023)", _S, "consistency"
        ),
    )
}


def resolve_methods(value: str) -> list[Method]:
    """The methods of a comma-separated list, in order (ValueError naming a bad one)."""
    return [METHODS[n] for n in studies.names(value, "methods", list(METHODS))]


# ------------------------------------------------------------------------------ datasets


class BoxReward(eqx.Module):
    """r(x) = sum_d log sigma((x_d - low_d) / tau) + log sigma((high_d - x_d) / tau): the log of
    a soft indicator of the box [low, high] (tau: edge width). About 0 well inside, about
    -dist / tau far outside; unlike -dist^2 its gradient does not vanish at the edge."""

    low: jax.Array
    high: jax.Array
    tau: float = eqx.field(static=True, default=0.1)

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        inside = jax.nn.log_sigmoid((x - self.low) / self.tau)
        return jnp.sum(inside + jax.nn.log_sigmoid((self.high - x) / self.tau), axis=1)

    def hit(self, x):
        return jnp.all((x >= self.low) & (x <= self.high), axis=-1)


class ClassifierReward(eqx.Module):
    """r(x) = log p(label | x) under the shipped digits classifier; a hit is a sample the
    classifier labels `label`."""

    graphdef: object = eqx.field(static=True)
    state: object
    label: int = eqx.field(static=True)

    def _model(self):
        from flax import nnx

        return nnx.merge(self.graphdef, self.state)

    def __call__(self, x):
        from flowjax.metrics import classifier_log_prob

        return classifier_log_prob(x, jnp.int32(self.label), classifier=self._model())

    def hit(self, x):
        return jnp.argmax(self._model()(x), axis=-1) == self.label


def _box_reward(opts, name):
    box = [float(v) for v in opts.box]
    if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
        raise ValueError(
            f"config.suites.{name}.box: must be (low_x, low_y, high_x, high_y) with low < high, "
            f"got {tuple(opts.box)}"
        )
    tau = float(opts.box_softness)
    if not tau > 0:
        raise ValueError(f"config.suites.{name}.box_softness: positive, got {tau}")
    return BoxReward(jnp.asarray(box[:2], jnp.float32), jnp.asarray(box[2:], jnp.float32), tau)


def _digits_reward(opts, evaluator):
    from flax import nnx

    label = int(opts.label)
    if not 0 <= label <= 9:
        raise ValueError(f"config.suites.digits.label: a digit 0..9, got {label}")
    graphdef, state = nnx.split(evaluator.classifier)
    return ClassifierReward(graphdef, state, label)


def _digits_confidence(evaluator, x):
    logits = evaluator.classifier(jnp.asarray(x, jnp.float32))
    return np.asarray(jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1))


@dataclasses.dataclass(frozen=True)
class Dataset:
    """How the study treats one dataset: its metrics (primary first; `map_mse` is the error
    against the exact flow map of an analytic teacher), the one reported as a ratio to the
    teacher, the guidance reward and the support measure of guided samples."""

    metrics: tuple[str, ...]
    ratio_metric: str
    analytic_teacher: bool
    reward: Callable
    support: Callable
    support_name: str
    notes: dict = dataclasses.field(default_factory=dict)


DATASETS: dict[str, Dataset] = {
    "gmm": Dataset(
        ("map_mse", "w2", "energy"),
        "w2",
        True,
        lambda opts, ev: _box_reward(opts, "gmm"),
        lambda ev, x: ev.log_density(x),
        "mean log p_data",
        {
            "map_mse": "The consistency sampler re-noises between steps, so for "
            "consistency_distill and consistency_training with 2 or more steps the sample is no "
            "longer a transport of its x0, and this column is not a transport error (their "
            "1-step value is)."
        },
    ),
    "checkerboard": Dataset(
        ("hist_kl", "w2", "energy"),
        "hist_kl",
        False,
        lambda opts, ev: _box_reward(opts, "checkerboard"),
        lambda ev, x: (ev.log_density(x) > -np.inf).astype(np.float64),
        "on-support fraction",
    ),
    "digits": Dataset(
        ("digits_fd",), "digits_fd", False, _digits_reward, _digits_confidence, "confidence"
    ),
}


# ------------------------------------------------------------------------------ config


TEACHER_SOLVES = ("dopri5", "heun")


def _steps(config, dataset: str) -> int:
    steps = int(config.suites[dataset].num_steps)
    return steps if steps > 0 else int(config.train.num_steps)


def check_config(config) -> None:
    """Raises a one-line ValueError naming the first bad field of a study config."""
    datasets = studies.names(config.datasets, "datasets", sorted(DATASETS))
    methods = resolve_methods(config.methods)
    for name in config.method_kwargs.keys():
        if name not in METHODS:
            raise ValueError(f"config.method_kwargs.{name}: not a method; valid: {list(METHODS)}")
    studies.check_positive(
        config,
        "num_seeds",
        "train.num_steps",
        "train.batch_size",
        "train.steps_per_dispatch",
        "eval.w2_samples",
        "eval.energy_samples",
        "teacher_eval.heun_steps",
    )
    nfe = tuple(config.eval.nfe)
    if not nfe or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in nfe):
        raise ValueError(f"config.eval.nfe: positive ints, got {nfe!r}")
    if 1 not in nfe or 2 not in nfe:
        raise ValueError(f"config.eval.nfe: must contain 1 and 2 (the ratio figures), got {nfe}")
    k = config.train.steps_per_dispatch
    for name in datasets:
        if name not in config.suites:
            raise ValueError(f"config.suites.{name}: missing (options of dataset {name!r})")
        opts = config.suites[name]
        if _steps(config, name) % k:
            raise ValueError(
                f"config.suites.{name}.num_steps: {_steps(config, name)} is not a multiple of "
                f"config.train.steps_per_dispatch={k}"
            )
        if not DATASETS[name].analytic_teacher and (
            int(opts.teacher_steps) < 1 or int(opts.teacher_steps) % k
        ):
            raise ValueError(
                f"config.suites.{name}.teacher_steps: a positive multiple of "
                f"config.train.steps_per_dispatch, got {opts.teacher_steps}"
            )
        if name != "digits" and int(opts.eval_samples) < max(
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
    if config.guidance.enabled and not any(m.sampler == "jumps" for m in methods):
        raise ValueError("config.guidance.enabled: needs a method sampled by jumps")


# ------------------------------------------------------------------------------ statistics


def teacher_ratios(dataset: dict, targets) -> dict:
    """Each method's mean `ratio_metric` at 1 and 2 steps over the teacher's (>= 100 NFE).

    Returns {"metric", "teacher_value", "teacher_nfe", "per_method": {name: {"1", "2"}},
    "best_one_step", "two_step_of_best", "best_two_step"}, each entry {"method", "steps",
    "value", "ratio", "ratio_ci_low", "ratio_ci_high", "target", "met"} ("met": ratio <= target).
    """
    metric = dataset["ratio_metric"]
    teacher = float(dataset["teacher"]["metrics"][metric])
    cells = {n: m["nfe"] for n, m in dataset["methods"].items()}
    per_method = {
        n: {k: studies.ratio_to(c[k][metric], teacher)["ratio"] for k in ("1", "2") if k in c}
        for n, c in cells.items()
    }

    def entry(name, steps, target):
        cell = cells[name][steps][metric]
        r = studies.ratio_to(cell, teacher)
        return {
            "method": name,
            "steps": int(steps),
            "value": float(cell["mean"]),
            "ratio": r["ratio"],
            "ratio_ci_low": r["ci_low"],
            "ratio_ci_high": r["ci_high"],
            "target": float(target),
            "met": bool(math.isfinite(r["ratio"]) and r["ratio"] <= target),
        }

    def best(steps):
        cands = [
            (r[steps], n) for n, r in per_method.items() if math.isfinite(r.get(steps, math.nan))
        ]
        return min(cands)[1] if cands else None

    b1, b2 = best("1"), best("2")
    return {
        "metric": metric,
        "teacher_value": teacher,
        "teacher_nfe": dataset["teacher"].get("nfe"),
        "per_method": per_method,
        "best_one_step": entry(b1, "1", targets["one_step"]) if b1 else None,
        "two_step_of_best": entry(b1, "2", targets["two_step"]) if b1 else None,
        "best_two_step": entry(b2, "2", targets["two_step"]) if b2 else None,
    }


def _verdicts(ratios: dict) -> list[dict]:
    out = []
    for key, what in (
        ("best_one_step", "1 step"),
        ("two_step_of_best", "2 steps (same method)"),
        ("best_two_step", "2 steps"),
    ):
        e = ratios[key]
        if e is None:
            continue
        claim = (
            f"{e['method']} at {what} is within {e['target']:g}x the teacher's {ratios['metric']}"
        )
        stats = {"ratio": e["ratio"], "ci_low": e["ratio_ci_low"], "ci_high": e["ratio_ci_high"]}
        out.append(
            studies.verdict(claim, ratios["metric"], stats, threshold=e["target"], above=False)
        )
    return out


# ------------------------------------------------------------------------------ sampling


def _draw(method: Method, X, x0, k: int, *, path, key, batch_size: int) -> np.ndarray:
    """k-step samples of a flow map from x0 in batches (one compilation for every k)."""
    from flowjax import flowmaps

    out = []
    for i in range(0, x0.shape[0], batch_size):
        xb = jnp.asarray(x0[i : i + batch_size])
        if method.sampler == "jumps":
            out.append(flowmaps.sample(X, xb, num_steps=k))
        else:
            kb = jax.random.fold_in(key, i)
            out.append(flowmaps.sample_stochastic(X, xb, path=path, key=kb, num_steps=k))
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


# ------------------------------------------------------------------------------ guidance


class _Scale(eqx.Module):
    """A guidance scale as a pytree, so new values do not recompile the sampler."""

    value: jax.Array

    def __call__(self, t):
        return self.value


@dataclasses.dataclass(frozen=True)
class Approach:
    """One guided (or unguided) sampler at a given cost: `nfe` network evaluations and `vjp`
    reward gradients per sample; `setting` is the scale (gradient) or temperature (SMC)."""

    name: str
    label: str
    family: str
    nfe: int
    vjp: int
    setting: float | None = None


def approaches(budget: int, scales: Sequence[float], temperatures: Sequence[float]):
    """The compared approaches at `budget` evaluations per sample.

    unguided (1 and `budget` jumps); gradient guidance through the map's look-ahead X(x, t, 1)
    (Sabour et al. 2025) or through the one-step denoiser x + (1 - t) u(x, t, t), budget / 2
    steps of 2 evaluations + 1 VJP; best of `budget` one-jump candidates; SMC with consistency
    re-noising over budget - 1 steps (`fj.flowmaps.importance_sample`).
    """
    if budget < 2 or budget % 2:
        raise ValueError(f"config.guidance.nfe: an even number >= 2, got {budget}")
    half = budget // 2
    out = [
        Approach("unguided_1", "unguided, 1 jump", "unguided", 1, 0),
        Approach(f"unguided_{budget}", f"unguided, {budget} jumps", "unguided", budget, 0),
    ]
    for s in scales:
        for fam, what in (("grad_flowmap", "X(x, t, 1)"), ("grad_denoiser", "the denoiser")):
            label = f"gradient through {what}, {half} steps, scale {s:g}"
            out.append(Approach(f"{fam}@{s:g}", label, fam, budget, half, float(s)))
    out.append(
        Approach(
            f"best_of_{budget}", f"best of {budget} one-jump candidates", "best_of_n", budget, 0
        )
    )
    for temp in temperatures:
        label = f"SMC, {budget - 1} re-noised steps, T = {temp:g}"
        out.append(Approach(f"smc@{temp:g}", label, "smc", budget, 0, float(temp)))
    return out


@eqx.filter_jit
def _best_of(X, x0, reward):
    from flowjax.flowmaps import best_of_n

    return best_of_n(X, x0, reward, num_steps=1)[0]


def _guided(approach: Approach, X, x0, reward, *, path, key, budget: int):
    """Samples of one approach from noise x0 of shape (budget, N, *D)."""
    from flowjax import flowmaps

    first = x0[0]
    if approach.family == "unguided":
        return flowmaps.sample(X, first, num_steps=approach.nfe)
    if approach.family in ("grad_flowmap", "grad_denoiser"):
        return flowmaps.guided_sample(
            X,
            first,
            reward,
            path=path,
            scale=_Scale(jnp.asarray(approach.setting, first.dtype)),
            num_steps=budget // 2,
            kind="flow_map",
            lookahead="flowmap" if approach.family == "grad_flowmap" else "denoiser",
        )
    if approach.family == "best_of_n":
        return _best_of(X, x0, reward)
    x, _ = flowmaps.importance_sample(
        X,
        first,
        reward,
        key=key,
        num_steps=budget - 1,
        temperature=approach.setting,
        resample="systematic",
        renoise=True,
        path=path,
    )
    return x


def _guidance(maps, reward, support, *, path, shape, gc) -> tuple[dict, dict]:
    """Every approach on every map (one per seed) x `repeats` noise batches: per approach
    `mean_ci` over batch means of the reward, hit rate and support measure."""
    budget, n = int(gc.nfe), int(gc.num_samples)
    results, pictures = {}, {}
    for a in approaches(budget, tuple(gc.scales), tuple(gc.temperatures)):
        rows = []
        for j, X in enumerate(maps):
            for r in range(int(gc.repeats)):
                key = jax.random.fold_in(jax.random.fold_in(jax.random.key(int(gc.seed)), j), r)
                k_noise, k_run = jax.random.split(key)
                x0 = jax.random.normal(k_noise, (budget, n, *shape), jnp.float32)
                x = np.asarray(_guided(a, X, x0, reward, path=path, key=k_run, budget=budget))
                if not np.all(np.isfinite(x)):
                    rows.append((math.nan,) * 3)
                    continue
                xj = jnp.asarray(x)
                rows.append(
                    (
                        float(np.mean(np.asarray(reward(xj)))),
                        float(np.mean(np.asarray(reward.hit(xj)))),
                        float(np.mean(support(x))),
                    )
                )
                if j == 0 and r == 0:
                    pictures[a.name] = x
        cols = list(zip(*rows, strict=True))
        results[a.name] = {
            **dataclasses.asdict(a),
            **{
                m: studies.mean_ci(c)
                for m, c in zip(("reward", "hit", "support"), cols, strict=True)
            },
        }
    return results, pictures


def lookahead_comparison(approaches: dict) -> dict:
    """Flow-map vs denoiser look-ahead, paired by scale (same NFE, same VJPs), and the best
    setting of every family by mean reward."""

    def key(name):
        m = approaches[name]["reward"]["mean"]
        return m if math.isfinite(m) else -math.inf

    pairs = {}
    for name, a in approaches.items():
        other = approaches.get(name.replace("grad_flowmap", "grad_denoiser"))
        if a["family"] != "grad_flowmap" or other is None:
            continue
        fm_r, dn_r = a["reward"], other["reward"]
        pairs[f"{a['setting']:g}"] = {
            "flowmap": fm_r["mean"],
            "denoiser": dn_r["mean"],
            "flowmap_wins": bool(fm_r["mean"] > dn_r["mean"]),
            "separated": bool(fm_r["ci_low"] > dn_r["ci_high"] or dn_r["ci_low"] > fm_r["ci_high"]),
        }
    best = {}
    for name, a in approaches.items():
        if a["family"] not in best or key(name) > key(best[a["family"]]):
            best[a["family"]] = name
    return {"by_scale": pairs, "best_per_family": best}


# ------------------------------------------------------------------------------ one dataset


def _teacher(name, config, path, spec, student_kwargs, log):
    """(teacher velocity field, info) of a dataset: the exact one, or flow matching here."""
    from flowjax import analytic, objectives
    from flowjax.flowmaps.teacher import MixtureTeacher, VelocityTeacher

    if DATASETS[name].analytic_teacher:
        from flowjax.data import gmm_params

        gmm = analytic.GaussianMixture(**gmm_params(name).as_dict())
        return MixtureTeacher(gmm, path), {"kind": "exact mixture velocity (analytic)"}, gmm
    opts = config.suites[name]
    steps = int(opts.teacher_steps)
    log(f"[{name}] training the teacher ({steps} steps)")
    overrides = dict(student_kwargs, **opts.teacher_overrides.to_dict())
    overrides.pop("two_times", None)
    variant = opts.teacher_variant or config.model.variant
    net = studies.build_network(config.model.name, variant, spec.shape, **overrides)
    loss = objectives.make_objective("flow_matching", model=net.apply_fn, path=path)
    optim = config.optim.copy_and_resolve_references()
    optim.lr = float(opts.teacher_lr) or optim.lr
    batch_size = int(opts.teacher_batch_size) or int(config.train.batch_size)
    stream = studies.BatchStream(
        name,
        [int(config.seed) + 10_000],
        batch_size,
        steps,
        config.train.steps_per_dispatch,
        cache_mb=config.data_cache_mb,
    )
    trainer = studies.SeedTrainer(loss, net, optim, steps, ema_decay=config.train.ema_decay)
    state, losses = trainer.train(stream)
    teacher = VelocityTeacher(net.apply_fn, studies.unstack(state.ema[0], 0), "velocity", path)
    info = {
        "kind": "flow matching (trained here)",
        "model": {"name": config.model.name, "variant": variant, "overrides": overrides},
        "num_steps": steps,
        "batch_size": batch_size,
        "lr": float(optim.lr),
        "final_loss": float(np.mean(losses[0, -max(1, steps // 20) :])),
    }
    return teacher, info, None


def _run_dataset(name, config, methods, seeds, path, student, log):
    from flowjax import data, flowmaps, metrics, objectives

    spec, ds_info, ev_cfg = data.spec(name), DATASETS[name], config.eval
    opts = config.suites[name]
    steps = _steps(config, name)
    nfe = [int(k) for k in ev_cfg.nfe]
    batch_eval = int(ev_cfg.batch_size)
    t0 = time.perf_counter()
    timing: dict[str, Any] = {"methods": {}}

    options = metrics.EvalOptions(
        hist_bins=int(ev_cfg.hist_bins),
        energy_samples=int(ev_cfg.energy_samples),
        w2_samples=int(ev_cfg.w2_samples),
    )
    num_ref = max(options.w2_samples, options.energy_samples)
    sample_metrics = tuple(m for m in ds_info.metrics if m != "map_mse")
    evaluator = metrics.make_evaluator(
        name, sample_metrics, num_reference=num_ref, seed=int(ev_cfg.seed), options=options
    )
    num_eval = int(opts.eval_samples)
    x0 = np.asarray(
        jax.random.normal(jax.random.key(ev_cfg.seed), (num_eval, *spec.shape), jnp.float32)
    )

    teacher, teacher_info, gmm = _teacher(
        name, config, path, spec, config.model.overrides.to_dict(), log
    )
    exact = None if gmm is None else np.asarray(gmm.flow_map(path, jnp.asarray(x0), 0.0, 1.0))

    def score(x) -> dict[str, float]:
        out = {}
        if exact is not None:
            x64 = np.asarray(x, np.float64)
            out["map_mse"] = (
                float(np.mean((x64 - exact) ** 2)) if np.all(np.isfinite(x64)) else math.nan
            )
        return {**out, **evaluator(x)}

    # Data against data of the same sample size: the finite-sample floor of each metric.
    if name == "digits":
        n = min(num_eval, len(data.open_source("digits", split="train")))
        twin = data.reference_samples("digits", n, int(ev_cfg.seed), "train")
    else:
        twin = data.reference_samples(name, max(num_eval, num_ref), int(ev_cfg.seed) + 1, "test")
        twin = twin[: num_eval if name == "checkerboard" else num_ref]
    floors = evaluator(twin)
    if exact is not None:
        floors = {"map_mse": 0.0, **floors}
    timing["teacher_train_s"] = time.perf_counter() - t0

    tc = config.teacher_eval
    x_dopri, nfe_dopri = _solve(
        teacher, x0, batch_size=batch_eval, solver="dopri5", rtol=tc.rtol, atol=tc.atol
    )
    x_heun, nfe_heun = _solve(
        teacher, x0, batch_size=batch_eval, solver="heun", num_steps=int(tc.heun_steps)
    )
    solves = {
        "dopri5": {"nfe": nfe_dopri, "rtol": tc.rtol, "atol": tc.atol, "metrics": score(x_dopri)},
        "heun": {"nfe": nfe_heun, "num_steps": int(tc.heun_steps), "metrics": score(x_heun)},
    }
    ref = solves[tc.reference]
    teacher_info.update(
        reference=tc.reference, nfe=ref["nfe"], metrics=ref["metrics"], solves=solves
    )
    euler = {
        str(k): score(_solve(teacher, x0, batch_size=batch_eval, solver="euler", num_steps=k)[0])
        for k in nfe
    }
    pictures: dict[str, Any] = {
        "data": evaluator.reference,
        "teacher": x_heun if tc.reference == "heun" else x_dopri,
    }
    timing["teacher_eval_s"] = time.perf_counter() - t0 - timing["teacher_train_s"]
    log(
        f"[{name}] teacher: "
        + "; ".join(
            f"{k} NFE {v['nfe']:.0f}: " + ", ".join(f"{m}={x:.4g}" for m, x in v["metrics"].items())
            for k, v in solves.items()
        )
    )

    stream = studies.BatchStream(
        name,
        seeds,
        config.train.batch_size,
        steps,
        config.train.steps_per_dispatch,
        cache_mb=config.data_cache_mb,
    )
    method_results, maps = {}, {}
    eval_key = jax.random.key(ev_cfg.seed + 1)
    for method in methods:
        t_m = time.perf_counter()
        kwargs = (
            config.method_kwargs[method.name].to_dict()
            if method.name in config.method_kwargs
            else {}
        )
        extra = {"teacher": teacher} if method.needs_teacher else {}
        loss = objectives.make_objective(
            method.name, model=student.apply_fn, path=path, **kwargs, **extra
        )
        trainer = studies.SeedTrainer(
            loss, student, config.optim, steps, ema_decay=config.train.ema_decay
        )
        state, losses = trainer.train(stream)
        train_s = time.perf_counter() - t_m
        per_seed, seed_maps = [], []
        for j in range(len(seeds)):
            X = flowmaps.as_callable(student.apply_fn, studies.unstack(state.ema[0], j))
            seed_maps.append(X)
            row = {}
            for k in nfe:
                xk = _draw(method, X, x0, k, path=path, key=eval_key, batch_size=batch_eval)
                row[str(k)] = score(xk)
                if j == 0 and k == 1:
                    pictures[method.name] = xk
            per_seed.append(row)
        maps[method.name] = seed_maps
        tail = max(1, steps // 20)
        method_results[method.name] = {
            "label": method.label,
            "family": method.family,
            "sampler": method.sampler,
            "kwargs": kwargs,
            "final_loss": studies.mean_ci([float(np.mean(v[-tail:])) for v in losses]),
            "nonfinite_step": [int(s) for s in np.asarray(state.nonfinite_step)],
            "nfe": {
                str(k): {
                    m: studies.mean_ci([s[str(k)][m] for s in per_seed]) for m in ds_info.metrics
                }
                for k in nfe
            },
        }
        timing["methods"][method.name] = {
            "train_s": train_s,
            "eval_s": time.perf_counter() - t_m - train_s,
        }
        one = method_results[method.name]["nfe"]["1"][ds_info.metrics[0]]
        log(
            f"[{name}] {method.name}: {time.perf_counter() - t_m:.1f}s; 1-step "
            f"{ds_info.metrics[0]}={one['mean']:.4g}"
        )

    result: dict[str, Any] = {
        "kind": spec.kind,
        "metrics": list(ds_info.metrics),
        "primary_metric": ds_info.metrics[0],
        "ratio_metric": ds_info.ratio_metric,
        "num_steps": steps,
        "eval_samples": num_eval,
        "teacher": teacher_info,
        "teacher_euler": euler,
        "floors": floors,
        "notes": dict(ds_info.notes),
        "methods": method_results,
    }
    result["ratios"] = teacher_ratios(result, config.targets)

    if config.guidance.enabled:
        gc = config.guidance
        jump = [m.name for m in methods if m.sampler == "jumps"]
        primary = ds_info.metrics[0]

        def one_step(m):
            v = method_results[m]["nfe"]["1"][primary]["mean"]
            return v if math.isfinite(v) else math.inf

        chosen = gc.method or min(jump, key=one_step)
        if chosen not in maps:
            raise ValueError(f"config.guidance.method: {chosen!r} is not a trained method")
        t_g = time.perf_counter()
        g_results, g_pictures = _guidance(
            maps[chosen],
            ds_info.reward(opts, evaluator),
            lambda x: ds_info.support(evaluator, x),
            path=path,
            shape=tuple(spec.shape),
            gc=gc,
        )
        result["guidance"] = {
            "method": chosen,
            "reward": _reward_text(name, opts),
            "box": [float(v) for v in opts.box] if spec.kind == "points" else None,
            "support_measure": ds_info.support_name,
            "nfe_budget": int(gc.nfe),
            "num_batches": len(seeds) * int(gc.repeats),
            "batch_size": int(gc.num_samples),
            "approaches": g_results,
            "comparison": lookahead_comparison(g_results),
        }
        pictures["guidance"] = g_pictures
        timing["guidance_s"] = time.perf_counter() - t_g
        log(f"[{name}] guidance with {chosen}: {timing['guidance_s']:.1f}s")
    timing["total_s"] = time.perf_counter() - t0
    result["timing"] = timing
    return result, pictures


def _reward_text(name, opts) -> str:
    if name == "digits":
        return f"log p(class {int(opts.label)} | x) under the shipped digits classifier"
    lx, ly, hx, hy = (float(v) for v in opts.box)
    return (
        f"log soft indicator of the box [{lx:g}, {hx:g}] x [{ly:g}, {hy:g}] "
        f"(edge width {float(opts.box_softness):g}; ~0 inside, ~-dist/width outside)"
    )


# ------------------------------------------------------------------------------ run


def run(config, workdir: str, *, command: str | None = None, log=print) -> dict:
    """Runs the study of `config`; writes report.md, results.json and plots to workdir.

    Args:
      config: a study config (`configs/flowmaps_default.py`).
      workdir: output directory (created).
      command: the command line, recorded in the report.
      log: progress printer (`print`; pass `lambda *a: None` for silence).

    Returns:
      The results dict written to results.json.
    """
    from flowjax import data, paths

    check_config(config)
    methods = resolve_methods(config.methods)
    seeds = [int(config.seed) + i for i in range(int(config.num_seeds))]
    path = paths.get_path(config.path)
    record = studies.Record("flowmaps", config, seeds, command)
    record.results["methods"] = {
        m.name: {"label": m.label, "family": m.family, "sampler": m.sampler} for m in methods
    }
    # One student network per data shape, shared by every method (and its compiled samplers).
    students: dict[tuple, studies.Network] = {}
    pictures = {}
    for name in studies.names(config.datasets, "datasets"):
        shape = tuple(data.spec(name).shape)
        if shape not in students:
            students[shape] = studies.build_network(
                config.model.name,
                config.model.variant,
                shape,
                **dict(config.model.overrides.to_dict(), two_times=True),
            )
        ds, pictures[name] = _run_dataset(name, config, methods, seeds, path, students[shape], log)
        ds["findings"] = findings(name, ds, config)
        record.add(name, ds, verdicts=_verdicts(ds["ratios"]), num_seeds=len(seeds))
    return record.finish(workdir, render, lambda r, d: _plots(r, pictures, d))


# ------------------------------------------------------------------------------ report

_METRIC_NAMES = {
    "map_mse": "MSE to the exact map",
    "w2": "W2 to data",
    "energy": "energy distance",
    "hist_kl": "histogram KL",
    "digits_fd": "digits FD",
}
fmt, fmt_ci = studies.fmt, studies.fmt_ci


def format_ratio(ratio: float) -> str:
    """How a ratio to the teacher is printed in the report (e.g. "1.234x")."""
    return "n/a" if not math.isfinite(ratio) else f"{ratio:.3f}x"


def findings(name: str, ds: dict, config) -> list[str]:
    """Plain-language findings of one dataset, computed from its recorded numbers."""
    out: list[str] = []
    primary, methods, teacher = ds["primary_metric"], ds["methods"], ds["teacher"]
    one = {m: r["nfe"]["1"][primary]["mean"] for m, r in methods.items()}
    finite = {m: v for m, v in one.items() if math.isfinite(v)}
    if len(finite) < len(one):
        out.append("diverged (non-finite samples): " + ", ".join(sorted(set(one) - set(finite))))
    if finite:
        order = sorted(finite, key=finite.get)
        out.append(
            f"1-step {_METRIC_NAMES.get(primary, primary)}, best to worst: "
            + ", ".join(f"{m} {fmt(finite[m])}" for m in order)
        )
        for family in ("distillation", "self-distillation"):
            fam = [m for m in order if methods[m]["family"] == family]
            if fam:
                cell = methods[fam[0]]["nfe"]["1"][primary]
                out.append(f"best {family} method at 1 step: {fam[0]} ({fmt_ci(cell)})")
        best = order[0]
        ks = sorted(int(k) for k in methods[best]["nfe"])
        first, last = (methods[best]["nfe"][str(k)][primary]["mean"] for k in (ks[0], ks[-1]))
        out.append(
            f"{best}: {primary} {fmt(first)} at {ks[0]} step(s) -> {fmt(last)} at {ks[-1]} steps"
        )
        e1 = ds["teacher_euler"]["1"][primary]
        times = f"{e1 / finite[best]:.1f}x" if finite[best] > 0 and math.isfinite(e1) else "n/a"
        out.append(
            f"teacher with one Euler step (NFE 1): {primary} {fmt(e1)}; best 1-step flow map "
            f"{fmt(finite[best])} ({times} lower)"
        )
    out.append(
        f"teacher ({teacher['kind']}): "
        + "; ".join(
            f"{solver} NFE {v['nfe']:.0f}: "
            + ", ".join(f"{m} {fmt(x)}" for m, x in v["metrics"].items())
            for solver, v in teacher["solves"].items()
        )
        + f" (ratios use {teacher['reference']}); data-vs-data floor at the same sample size: "
        + ", ".join(f"{m} {fmt(v)}" for m, v in ds["floors"].items() if v)
    )
    ratios = ds["ratios"]
    for key, what in (
        ("best_one_step", "best 1-step"),
        ("two_step_of_best", "same method, 2 steps"),
        ("best_two_step", "best 2-step"),
    ):
        e = ratios.get(key)
        if e:
            out.append(
                f"{what}: {e['method']} {ratios['metric']} {fmt(e['value'])} = "
                f"{format_ratio(e['ratio'])} the teacher's {fmt(ratios['teacher_value'])} "
                f"(NFE {ratios['teacher_nfe']:.0f}); target {e['target']:g}x: "
                + ("met" if e["met"] else "NOT met")
            )
    if name == "checkerboard":
        out.append(
            "reference (Boffi et al. 2025, 64k samples, 50 bins): KL 0.086 at 1 step vs 0.070 at "
            f"8 steps; here {ds['eval_samples']} samples, {config.eval.hist_bins} bins, "
            f"data-vs-data KL floor {fmt(ds['floors']['hist_kl'])}"
        )
    if "guidance" in ds:
        out.extend(_guidance_findings(ds["guidance"]))
    return out


def _guidance_findings(g: dict) -> list[str]:
    out = []
    pairs = g["comparison"]["by_scale"]
    if pairs:
        wins = [s for s, p in pairs.items() if p["flowmap_wins"]]
        detail = "; ".join(
            f"scale {s}: flow map {fmt(p['flowmap'])} vs denoiser {fmt(p['denoiser'])}"
            + ("" if p["separated"] else " (intervals overlap)")
            for s, p in pairs.items()
        )
        if len(wins) == len(pairs):
            verdict = "the flow-map look-ahead gave the higher mean reward at every scale"
        elif not wins:
            verdict = (
                "the flow-map look-ahead did NOT win: the denoiser look-ahead gave an equal or "
                "higher mean reward at every scale"
            )
        else:
            verdict = (
                f"mixed: the flow-map look-ahead won at scale(s) {', '.join(wins)} and did NOT "
                "win at the others"
            )
        out.append(
            f"guidance at equal NFE ({g['nfe_budget']} per sample, map: {g['method']}): "
            f"{verdict} ({detail})"
        )
    best = max(
        g["approaches"].values(),
        key=lambda a: a["reward"]["mean"] if math.isfinite(a["reward"]["mean"]) else -math.inf,
    )
    out.append(
        f"highest mean reward: {best['name']} ({fmt_ci(best['reward'])}; hit rate "
        f"{fmt(best['hit']['mean'])}, {g['support_measure']} {fmt(best['support']['mean'])})"
    )
    return out


def _cell(st) -> str:
    """'mean [low, high]' of a mean_ci cell (just the mean without an interval)."""
    if not math.isfinite(st["ci_low"]):
        return fmt(st["mean"])
    return f"{fmt(st['mean'])} [{fmt(st['ci_low'])}, {fmt(st['ci_high'])}]"


def render(results: dict) -> str:
    """The whole report.md."""
    cfg = results["config"]
    lines = ["# Flow maps: quality against NFE, and guidance", "", *studies.machine_lines(results)]
    lines += [
        "",
        f"Network (every method): {cfg['model']['name']}/{cfg['model']['variant']} "
        f"{cfg['model']['overrides']}, two_times=True; batch {cfg['train']['batch_size']}, "
        f"optimizer {cfg['optim']['name']} lr {cfg['optim']['lr']:g} ({cfg['optim']['schedule']}), "
        f"EMA {cfg['train']['ema_decay']:g}. Path: {cfg['path']}. Every seed's network is "
        "evaluated on the same noise.",
        "",
        "Methods:",
        "",
    ]
    for name, m in results["methods"].items():
        lines.append(f"- `{name}`: {m['label']} [{m['family']}; sampler: {m['sampler']}]")
    lines.append("")
    for name, ds in results["datasets"].items():
        lines += _dataset_section(name, ds, results)
    return "\n".join(lines) + "\n"


def _dataset_section(name: str, ds: dict, results: dict) -> list[str]:
    teacher, timing = ds["teacher"], ds["timing"]
    tline = f"Teacher: {teacher['kind']}"
    if "num_steps" in teacher:
        tline += (
            f", {teacher['num_steps']} steps at batch {teacher['batch_size']}, lr "
            f"{teacher['lr']:g} (final loss {fmt(teacher['final_loss'])})"
        )
    out = [
        f"## {name}",
        "",
        tline + f"; students: {ds['num_steps']} steps each; {ds['eval_samples']} samples per "
        f"evaluation. Time: {timing['total_s']:.0f} s.",
        "",
    ]
    nfe = sorted({int(k) for r in ds["methods"].values() for k in r["nfe"]})
    for metric in ds["metrics"]:
        out += [f"### {_METRIC_NAMES.get(metric, metric)} (`{metric}`, lower is better)", ""]
        rows = [
            [m] + [_cell(r["nfe"][str(k)][metric]) for k in nfe] for m, r in ds["methods"].items()
        ]
        rows.append(["teacher, Euler"] + [fmt(ds["teacher_euler"][str(k)][metric]) for k in nfe])
        out += studies.table(["method"] + [f"{k} step{'s' if k > 1 else ''}" for k in nfe], rows)
        dopri, heun = teacher["solves"]["dopri5"], teacher["solves"]["heun"]
        out += [
            "",
            f"Teacher: dopri5 (rtol {dopri['rtol']:g}, NFE {dopri['nfe']:.0f}) "
            f"{fmt(dopri['metrics'][metric])}; Heun ({heun['num_steps']} steps, NFE "
            f"{heun['nfe']:.0f}) {fmt(heun['metrics'][metric])}. Data-vs-data floor: "
            f"{fmt(ds['floors'][metric])}.",
            "",
        ]
        if metric in ds["notes"]:
            out += [f"Note: {ds['notes'][metric]}", ""]
    ratios = ds["ratios"]
    out += [
        f"### Ratio to the teacher ({ratios['metric']}, teacher NFE {ratios['teacher_nfe']:.0f})",
        "",
    ]
    rows = []
    for key, what in (
        ("best_one_step", "best at 1 step"),
        ("two_step_of_best", "same at 2 steps"),
        ("best_two_step", "best at 2 steps"),
    ):
        e = ratios.get(key)
        if e:
            ci = (
                f"[{format_ratio(e['ratio_ci_low'])}, {format_ratio(e['ratio_ci_high'])}]"
                if math.isfinite(e["ratio_ci_low"])
                else "n/a"
            )
            rows.append(
                [
                    what,
                    e["method"],
                    fmt(e["value"]),
                    format_ratio(e["ratio"]),
                    ci,
                    f"{e['target']:g}x",
                    "yes" if e["met"] else "no",
                ]
            )
    out += studies.table(["", "method", "value", "ratio", "ratio 95% CI", "target", "met"], rows)
    out += [
        "",
        "Per method (1 step / 2 steps): "
        + "; ".join(
            f"{m} {format_ratio(r.get('1', math.nan))} / {format_ratio(r.get('2', math.nan))}"
            for m, r in ratios["per_method"].items()
        ),
        "",
        "### Verdicts",
        "",
        *studies.verdict_table(ds["verdicts"]),
        "",
    ]
    if "guidance" in ds:
        g = ds["guidance"]
        out += [
            f"### Guidance (map: {g['method']}, budget {g['nfe_budget']} network evaluations per "
            "sample)",
            "",
            f"Reward r(x1) = {g['reward']}. Mean over {g['num_batches']} batches of "
            f"{g['batch_size']} (seeds x repeats), 95% t-intervals over batch means.",
            "",
        ]
        out += studies.table(
            ["approach", "NFE", "VJPs", "mean reward", "hit rate", g["support_measure"]],
            [
                [
                    a["label"],
                    a["nfe"],
                    a["vjp"],
                    _cell(a["reward"]),
                    _cell(a["hit"]),
                    _cell(a["support"]),
                ]
                for a in g["approaches"].values()
            ],
        )
        out.append("")
    out += ["### Findings", ""] + [f"- {f}" for f in ds["findings"]] + [""]
    out += [f"![{p}]({p})" for p in results.get("plots", {}).get(name, [])]
    out += [
        "",
        f"Timing (s): teacher train {timing['teacher_train_s']:.1f}, teacher eval "
        f"{timing['teacher_eval_s']:.1f}; "
        + "; ".join(
            f"{m} train {v['train_s']:.1f} / eval {v['eval_s']:.1f}"
            for m, v in timing["methods"].items()
        )
        + (f"; guidance {timing['guidance_s']:.1f}" if "guidance_s" in timing else ""),
        "",
    ]
    return out


def _plots(results: dict, pictures: dict, workdir: str) -> dict[str, list[str]]:
    """quality_vs_nfe, samples and guidance PNGs per dataset; {dataset: [file names]}."""
    import os

    out = {}
    for name, ds in results["datasets"].items():
        curves = {}
        for m, r in ds["methods"].items():
            ks = sorted(int(k) for k in r["nfe"])
            curves[m] = {
                "nfe": ks,
                **{
                    metric: {
                        s: [r["nfe"][str(k)][metric][s] for k in ks]
                        for s in ("mean", "ci_low", "ci_high")
                    }
                    for metric in ds["metrics"]
                },
            }
        ks = sorted(int(k) for k in ds["teacher_euler"])
        curves["teacher, Euler"] = {
            "nfe": ks,
            **{
                metric: {
                    s: [ds["teacher_euler"][str(k)][metric] for k in ks]
                    for s in ("mean", "ci_low", "ci_high")
                }
                for metric in ds["metrics"]
            },
        }
        ref = ds["teacher"]["metrics"]
        files = [
            studies.plot_curves(
                os.path.join(workdir, f"quality_vs_nfe_{name}.png"),
                {_METRIC_NAMES.get(m, m): (curves, m) for m in ds["metrics"]},
                x="nfe",
                xlabel="NFE (network evaluations per sample)",
                title=f"{name}: quality against NFE (line: the teacher's reference solve)",
                hlines={_METRIC_NAMES.get(m, m): ref[m] for m in ds["metrics"]},
                xticks=ks,
            )
        ]
        pics = pictures[name]
        panels = {"data (held out)": pics["data"], "teacher": pics["teacher"]}
        panels.update({f"{m}, 1 step": pics[m] for m in ds["methods"] if m in pics})
        reference = pics["data"] if ds["kind"] == "points" else None
        files.append(
            studies.plot_samples(
                os.path.join(workdir, f"samples_{name}.png"),
                panels,
                title=f"{name}: samples (1 step per method)",
                lim=4.5,
            )
        )
        if "guidance" in pics:
            box = ds["guidance"]["box"]
            files.append(
                studies.plot_samples(
                    os.path.join(workdir, f"guidance_{name}.png"),
                    pics["guidance"],
                    reference=reference,
                    title=f"{name}: guidance with {ds['guidance']['method']}",
                    lim=4.5,
                    boxes={a: box for a in pics["guidance"]} if box else None,
                )
            )
        out[name] = files
    return out
