"""The scaling study: does flow matching scale better with dimension than diffusion?

Data: the analytic Gaussian mixture `mixture(d)` in d = 2, 8, 32, 128 (the same construction
in every d, below), so the metric is exact: KL(data || model) = E_data[log p_data(x) -
log p_model(x)] with log p_model from the likelihood ODE (`fj.likelihood.log_prob`, N(0, I)
prior at t = 0), a Monte Carlo mean over fixed held-out draws shared by every arm and seed.
The divergence is exact (d jvps per evaluation) up to `config.exact_max_dim` and Hutchinson's
Rademacher estimate above it (unbiased, so the KL estimate stays unbiased; its extra noise is
in the reported Monte Carlo error).

Arms (same MLP, optimizer, batch, steps, seeds and data per d; `ARMS`): `fm` (CondOT path,
velocity target, uniform t; Lipman et al. 2023), `ddpm` (VP path, eps target, unweighted eps
MSE; Ho et al. 2020), optionally `cosine_v` (cosine path, velocity target). Every arm is
sampled and scored as a velocity field through `fj.sampling.as_velocity` on its own path with
the same time clamp `t_eps`.

Measured per d, arm and seed: the KL curve at log-spaced steps (EMA parameters), the steps to
reach each level (a fraction of KL(data || N(0, I)), the KL of a model that learned nothing;
`studies.steps_to_threshold`, censored when not reached), and the exact NFE of adaptive
dopri5 at a tolerance (`config.nfe_tol`) on the final model. Reported per d: the ratio fm / ddpm
of steps-to-level and of NFE-at-tolerance with 95% CIs over seeds (`studies.paired_log_ratio`,
one-sided bounds from `studies.censored_log_ratio` when one side is censored), and across d
the trend: each seed's log ratio regressed on log2 d, the slope's Student-t CI over seeds,
reported as the factor by which the ratio changes per doubling of d.

The mixture (`mixture`): K = 4 isotropic components with equal weights and means
{+R q1, -R q1, +R q2, -R q2}, where (q1, q2) is an orthonormal pair in R^d drawn from the
mixture seed (QR of a Gaussian (d, 2) matrix): a square in a random plane. The component std s
and radius R hold two things fixed across d: the two closest means are `separation` (6)
component stds apart (R sqrt(2) = separation s), and the data have unit variance per coordinate
on average (d s^2 + R^2 = d). So the multimodal structure is the same in every d, and the
network must also learn d - 2 directions of plain Gaussian noise.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import flowjax as fj
from flowjax import studies

__all__ = [
    "ARMS",
    "Arm",
    "Evaluator",
    "MixtureStream",
    "RunTrainer",
    "analyse_dimension",
    "field",
    "kl_of_field",
    "mixture",
    "run",
    "trend",
]


class Arm(NamedTuple):
    """An arm: its label, its unbound objective, what its network predicts and on which path."""

    label: str
    objective: Any
    kind: str
    path: Any


def _arms() -> dict[str, Arm]:
    condot, vp, cosine = fj.paths.CondOT(), fj.paths.VP(), fj.paths.Cosine()
    return {
        "fm": Arm(
            "flow matching (CondOT, velocity, uniform t)",
            fj.objectives.FlowMatching(path=condot),
            "velocity",
            condot,
        ),
        "ddpm": Arm(
            "DDPM-style diffusion (VP, eps, unweighted eps MSE)",
            fj.objectives.Diffusion(path=vp, target="eps", weighting="uniform"),
            "eps",
            vp,
        ),
        "cosine_v": Arm(
            "cosine path, velocity target",
            fj.objectives.Diffusion(path=cosine, target="velocity", weighting="uniform"),
            "velocity",
            cosine,
        ),
    }


ARMS: dict[str, Arm] = _arms()

_DATA_TAG = 0x5CA1E  # folded into a seed's key for its data stream (init uses key(seed) alone)


# ---------------------------------------------------------------------------------- data


def mixture(dim: int, *, seed: int = 0, separation: float = 6.0) -> fj.analytic.GaussianMixture:
    """The d-dimensional mixture of the study (module docstring): a square of 4 modes.

    Args:
      dim: the dimension d >= 2.
      seed: picks the random plane of the square.
      separation: distance between the two closest means in component stds.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"mixture: dim must be an int >= 2, got {dim!r}")
    if not separation > 0:
        raise ValueError(f"mixture: separation must be > 0, got {separation!r}")
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, 2)))
    s = math.sqrt(dim / (dim + separation**2 / 2))  # d s^2 + R^2 = d
    r = separation * s / math.sqrt(2)  # |m_i - m_j| = R sqrt(2) for adjacent corners
    means = r * np.concatenate([q.T, -q.T])  # (4, d)
    return fj.analytic.GaussianMixture(means, np.full(4, s), np.full(4, 0.25))


class MixtureStream:
    """Training batches of several seeds from a mixture, K steps at a time: {"x1": (S, K, B, D)}.

    Chunk c of seed s is `gmm.sample(fold_in(fold_in(key(s), tag), c), K B)`, so every arm
    sees the same data per seed (a paired design), drawn on the fly (nothing cached).
    """

    def __init__(self, gmm, seeds, batch_size: int, num_steps: int, steps_per_dispatch: int):
        if num_steps % steps_per_dispatch:
            raise ValueError(
                f"num_steps={num_steps} must be a multiple of "
                f"steps_per_dispatch={steps_per_dispatch}"
            )
        self.gmm, self.seeds = gmm, tuple(int(s) for s in seeds)
        self.batch_size, self.num_steps, self.k = (
            int(batch_size),
            int(num_steps),
            steps_per_dispatch,
        )
        k, b = self.k, self.batch_size

        def draw(gmm, seeds, c):
            def one(seed):
                key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _DATA_TAG), c)
                return gmm.sample(key, k * b).reshape(k, b, -1)

            return jax.vmap(one)(seeds)

        self._draw = jax.jit(draw)

    def __iter__(self):
        seeds = jnp.asarray(self.seeds, jnp.int32)
        for c in range(self.num_steps // self.k):
            yield {"x1": self._draw(self.gmm, seeds, c)}


# ---------------------------------------------------------------------------------- training


def _lr_scaled(optimizer):
    """`optimizer` whose updates are multiplied by a per-run scale kept in its state.

    AdamW's update is linear in its learning rate (-lr (adam + wd p)), so a scale s on the
    update is exactly a learning rate s x the schedule's; runs of different rates then share
    one compiled program.
    """
    import optax

    def init(params):
        return (optimizer.init(params), jnp.ones((), jnp.float32))

    def update(grads, state, params=None):
        updates, inner = optimizer.update(grads, state[0], params)
        return jax.tree.map(lambda u: u * state[1].astype(u.dtype), updates), (inner, state[1])

    return optax.GradientTransformation(init, update)


def _plain_loss(objective, model):
    """The objective's loss with only the scalar aux every arm shares (so arms can switch)."""

    def loss(params, key, batch):
        value, _ = objective(params, key, batch, model=model)
        return value, {}

    return loss


class RunTrainer:
    """A arms x R runs of one network in one compiled program, with every train-step metric.

    Each (arm, run) is the library's one train step (`fj.train.step.make_update`): runs are
    vmapped and arms are a `lax.map` over a `lax.switch` on the arm index (no arm computes
    another's loss). Run r starts from the parameters of seed `seeds[r]` (key(seed) alone, as
    `studies.SeedTrainer` and `studies.ArmTrainer`) and trains on chunk row r with learning
    rate `lr_scales[r]` x the schedule of `optim` (`_lr_scaled`), so a learning-rate sweep is
    one program. `update` returns the logged scalars (loss, grad_norm, finite) as (A, R, K).

    Args:
      arms: `(objective, model)` per arm, as `studies.ArmTrainer`.
      network: the trained `studies.Network`.
      optim: an `optim` config for `fj.train.make_optimizer`.
      num_steps: the run's length (for the schedule).
      ema_decay: EMA decay (with the trainer's warmup), as `state.ema[0]`.
      on_nonfinite: "skip" (a non-finite step is skipped and counted in `num_skipped`) or "stop".
    """

    def __init__(self, arms, network, optim, num_steps, *, ema_decay, on_nonfinite="skip"):
        from flowjax.train import make_optimizer
        from flowjax.train.state import init_state
        from flowjax.train.step import make_update

        base, self.schedule = make_optimizer(optim, num_steps)
        self.optimizer = _lr_scaled(base)
        self.num_arms = len(arms)
        runs = [
            jax.vmap(
                make_update(
                    _plain_loss(objective, model),
                    self.optimizer,
                    self.schedule,
                    ema_decays=(float(ema_decay),),
                    on_nonfinite=on_nonfinite,
                )
            )
            for objective, model in arms
        ]

        def update(state, chunk):
            def one(inputs):
                a, st = inputs
                return jax.lax.switch(a, runs, st, chunk) if len(runs) > 1 else runs[0](st, chunk)

            return jax.lax.map(one, (jnp.arange(len(runs)), state))

        self._update = jax.jit(update, donate_argnums=(0,))

        def init(seed, scale):
            state = init_state(network.init_params, self.optimizer, seed, 1)
            return state.replace(opt_state=(state.opt_state[0], scale))

        def init_all(seeds, scales):
            one = jax.vmap(init)(seeds, scales)
            return jax.tree.map(lambda x: jnp.broadcast_to(x, (len(runs),) + x.shape), one)

        self._init = jax.jit(init_all)

    def init(self, seeds: Sequence[int], lr_scales: Sequence[float] | None = None):
        """Fresh states, leaves (A, R, ...)."""
        scales = np.ones(len(seeds)) if lr_scales is None else np.asarray(lr_scales, np.float64)
        if scales.shape != (len(seeds),):
            raise ValueError(f"lr_scales: one per run ({len(seeds)}), got shape {scales.shape}")
        return self._init(jnp.asarray(list(seeds), jnp.int32), jnp.asarray(scales, jnp.float32))

    def update(self, state, chunk: Mapping[str, Any]):
        """K steps of every (arm, run); chunk arrays (R, K, B, ...), the same for every arm.

        Returns (state, metrics): numpy arrays (A, R, K) of loss, grad_norm, finite, lr.
        """
        state, metrics = self._update(state, {k: jnp.asarray(v) for k, v in chunk.items()})
        return state, {k: np.asarray(v) for k, v in metrics.items()}


# ---------------------------------------------------------------------------------- metrics


def field(arm: Arm, apply_fn: Callable, params, t_eps: float) -> Callable:
    """The arm's network as a velocity field v(x, t) (its prediction converted on its path)."""
    return fj.sampling.as_velocity(
        lambda x, t: apply_fn(params, x, t), arm.kind, arm.path, t_eps=t_eps
    )


def kl_of_field(v, gmm, x, *, divergence="exact", key=None, num_probes=1, rtol=1e-4, atol=1e-4):
    """(per-point log p_data(x) - log p_model(x) (B,), NFE) of a velocity field v (jit-able).

    The mean over x ~ data is the Monte Carlo estimate of KL(data || model) in nats.
    """
    kw = dict(divergence=divergence, rtol=rtol, atol=atol)
    if divergence == "hutchinson":
        kw.update(key=key, num_probes=num_probes)
    logp, info = fj.likelihood.log_prob(v, x, **kw)
    return gmm.log_prob(x) - logp, info["nfe"]


def _over_arms(fn, num_arms):
    """fn(a, params_R, *args) mapped over the arm axis of params (A, R, ...) with `lax.map`.

    Inside, `a` is an unbatched index, so a `lax.switch` on it runs one arm's branch only.
    """

    def mapped(params, *args):
        return jax.lax.map(lambda inp: fn(inp[0], inp[1], *args), (jnp.arange(num_arms), params))

    return mapped


class Evaluator:
    """KL(data || model) and NFE-at-tolerance of every (arm, run), in one program each.

    `__call__(params)` with leaves (A, R, ...) -> {"kl", "kl_se" (Monte Carlo standard error),
    "nfe_likelihood"}, lists (A, R); `nfe(params)` -> the exact NFE (A, R) of adaptive dopri5
    at `config.nfe_tol` from `x0`. The held-out draws, Hutchinson probes and x0 are fixed and
    shared by every arm and run (paired).
    """

    def __init__(self, arms: Sequence[Arm], apply_fn, gmm, x_test, x0, config):
        dim = x_test.shape[-1]
        self.divergence = "exact" if dim <= config.exact_max_dim else "hutchinson"
        self.x_test, self.x0 = jnp.asarray(x_test), jnp.asarray(x0)
        tol, nfe_tol, t_eps = float(config.likelihood_tol), float(config.nfe_tol), config.t_eps
        key, probes, div = jax.random.key(config.eval_seed), config.num_probes, self.divergence
        branches = [functools.partial(field, arm, apply_fn, t_eps=t_eps) for arm in arms]

        def velocity(a, params):
            if len(branches) == 1:
                return branches[0](params)
            return lambda x, t: jax.lax.switch(a, [lambda p, x, t, b=b: b(p)(x, t)
                                                   for b in branches], params, x, t)  # fmt: skip

        def kl(a, params, x):
            one = lambda p: kl_of_field(  # noqa: E731
                velocity(a, p), gmm, x, divergence=div, key=key, num_probes=probes,
                rtol=tol, atol=tol,
            )  # fmt: skip
            return jax.vmap(one)(params)

        def nfe(a, params, x0):
            def one(p):
                _, info = fj.sampling.sample_ode(
                    velocity(a, p), x0, solver="dopri5", rtol=nfe_tol, atol=nfe_tol
                )
                return info["nfe"]

            return jax.vmap(one)(params)

        self._kl = jax.jit(_over_arms(kl, len(arms)))
        self._nfe = jax.jit(_over_arms(nfe, len(arms)))

    def __call__(self, params) -> dict:
        gap, nfe = self._kl(params, self.x_test)
        gap = np.asarray(gap, np.float64)  # (A, R, n)
        n = gap.shape[-1]
        ok = np.all(np.isfinite(gap), axis=-1)
        with np.errstate(invalid="ignore"):
            kl = np.where(ok, gap.mean(axis=-1), np.nan)
            se = np.where(ok, gap.std(axis=-1, ddof=1) / math.sqrt(n), np.nan)
        return {"kl": kl.tolist(), "kl_se": se.tolist(), "nfe_likelihood": np.asarray(nfe).tolist()}

    def nfe(self, params) -> list[list[int]]:
        return np.asarray(self._nfe(params, self.x0)).astype(int).tolist()


def gaussian_kl(gmm, x) -> float:
    """KL(data || N(0, I)) by Monte Carlo on x: the KL of a model that learned nothing."""
    x = jnp.asarray(x)
    log_n = -0.5 * jnp.sum(x**2, -1) - 0.5 * x.shape[-1] * math.log(2 * math.pi)
    return float(jnp.mean(gmm.log_prob(x) - log_n))


# ---------------------------------------------------------------------------------- analysis


def analyse_dimension(
    steps: Sequence[float],
    kl: Mapping[str, Sequence[Sequence[float | None]]],
    nfe: Mapping[str, Sequence[float]],
    levels: Sequence[float],
    *,
    arm: str,
    baseline: str,
    interpolate: bool = True,
) -> dict:
    """Steps-to-level and NFE ratios of `arm` over `baseline` from recorded curves.

    Args:
      steps: the evaluation steps (E,).
      kl: arm -> per-seed KL curves (S, E) (None or NaN where not finite).
      nfe: arm -> per-seed NFE-at-tolerance (S,).
      levels: KL levels in nats (lower is better).

    Returns:
      {"steps_to_level": {arm: [[step or None per seed] per level]}, "levels": [...],
       "ratios": [per level: paired_log_ratio + "censored" (censored_log_ratio or None) +
       "reached" ({arm: seeds that reached it})], "nfe_ratio": paired_log_ratio}.
    """
    last = float(steps[-1])
    stl = {
        a: [
            [studies.steps_to_threshold(steps, c, lvl, interpolate=interpolate) for c in curves]
            for lvl in levels
        ]
        for a, curves in kl.items()
    }
    ratios = []
    for i, _ in enumerate(levels):
        num, den = stl[arm][i], stl[baseline][i]
        r = studies.paired_log_ratio(num, den)
        r["censored"] = studies.censored_log_ratio(num, den, last)
        if r["censored"] is not None:  # censored seeds counted at the last step: a bound
            fill = lambda v: [last if x is None else x for x in v]  # noqa: E731
            r["censored"]["filled"] = studies.paired_log_ratio(fill(num), fill(den))
        r["reached"] = {a: sum(v is not None for v in stl[a][i]) for a in (arm, baseline)}
        ratios.append(r)
    return {
        "levels": [float(v) for v in levels],
        "steps_to_level": stl,
        "ratios": ratios,
        "nfe_ratio": studies.paired_log_ratio(nfe[arm], nfe[baseline]),
    }


def trend(dims: Sequence[int], ratios_by_seed: Sequence[Sequence[float | None]]) -> dict:
    """The change of a paired ratio with dimension: per-seed OLS slope of log ratio on log2 d.

    Args:
      dims: the dimensions (N,).
      ratios_by_seed: (N, S) per-seed ratios (None or non-positive: left out of that seed).

    Returns:
      {"ratio", "ci_low", "ci_high", "n", "slopes"}: the factor by which the ratio changes per
      doubling of d, exp(mean slope) with the Student-t interval over seeds; a seed with fewer
      than two dimensions left is left out.
    """
    x = np.log2(np.asarray(dims, np.float64))
    r = np.asarray([[np.nan if v is None else float(v) for v in row] for row in ratios_by_seed])
    slopes = []
    for s in range(r.shape[1]):
        ok = np.isfinite(r[:, s]) & (r[:, s] > 0)
        if ok.sum() >= 2:
            slopes.append(float(np.polyfit(x[ok], np.log(r[ok, s]), 1)[0]))
    st = studies.mean_ci(slopes)
    out = {"slopes": slopes, "n": st["n"]}
    out.update({k: math.exp(st[k]) if math.isfinite(st[k]) else math.nan
                for k in ("mean", "ci_low", "ci_high")})  # fmt: skip
    out["ratio"] = out.pop("mean")
    return out


def per_seed_ratios(num: Sequence[float | None], den: Sequence[float | None]) -> list:
    return [
        None if (a is None or b is None or not (a > 0 and b > 0)) else float(a) / float(b)
        for a, b in zip(num, den, strict=True)
    ]


def censored_verdict(claim: str, metric: str, stats: dict) -> dict:
    """The verdict on "ratio < 1" from a steps ratio whose seeds may be censored.

    Without censoring: `studies.verdict`. When only the baseline missed the level in some seeds
    (an "upper" bound), counting them as reaching it at the last step can only raise the
    ratio, so the interval of those filled values bounds the truth from above: "supported" when
    its upper end is below 1. Symmetrically a "lower" bound (only the arm censored) can show
    "not supported". The verdict then carries "bound": "upper" / "lower" and the filled ratio.
    """
    cens = stats.get("censored")
    if not cens or not stats.get("n_missing"):
        return studies.verdict(claim, metric, stats, above=False)
    filled = cens["filled"]
    v = studies.verdict(claim, metric, filled, above=False)
    if (cens["kind"] == "upper") != (v["verdict"] == "supported"):
        if not (cens["kind"] == "lower" and v["verdict"] == "not supported"):
            v["verdict"] = "not significant"  # the bound points the other way: no conclusion
    return v | {"bound": cens["kind"], "n_censored": cens["n_censored"]}


def verdicts_for(dim_results: Mapping[int, dict], trends: dict, config) -> dict:
    """The verdict lists: per d (steps at the headline level, NFE) and for the trend."""
    h = int(config.headline_level)
    arm, base = config.arm, config.baseline
    out = {}
    for d, res in dim_results.items():
        lvl = res["analysis"]["levels"][h]
        frac = config.levels[h]
        out[d] = [
            censored_verdict(
                f"{arm} closes {1 - frac:.0%} of the KL gap from N(0, I) to the data "
                f"(KL <= {lvl:.3g} nats) in fewer steps than {base} (d = {d})",
                f"steps to KL level (ratio {arm}/{base})",
                res["analysis"]["ratios"][h],
            )
            | {"headline": True},
            studies.verdict(
                f"{arm} needs fewer NFE than {base} at dopri5 tol {config.nfe_tol:g} (d = {d})",
                f"NFE at tolerance (ratio {arm}/{base})",
                res["analysis"]["nfe_ratio"],
                above=False,
            ),
        ]
    out["trend"] = [
        studies.verdict(
            f"{arm} scales better with dimension: its steps-to-level ratio to {base} falls as "
            "d grows",
            "steps-ratio factor per doubling of d",
            trends["steps"],
            above=False,
        )
        | {"headline": True},
        studies.verdict(
            f"{arm}'s NFE-at-tolerance ratio to {base} falls as d grows",
            "NFE-ratio factor per doubling of d",
            trends["nfe"],
            above=False,
        ),
    ]
    return out


# ---------------------------------------------------------------------------------- run


def _check(config):
    studies.check_positive(
        config, "num_seeds", "num_steps", "batch_size", "steps_per_dispatch", "eval_samples",
        "nfe_samples", "num_evals", "width", "depth", "num_probes",
    )  # fmt: skip
    dims = [int(d) for d in config.dims]
    if not dims or any(d < 2 for d in dims) or len(set(dims)) != len(dims):
        raise ValueError(f"config.dims: distinct ints >= 2, got {tuple(config.dims)}")
    arms = studies.names(config.arms, "arms", list(ARMS))
    for field_name in ("arm", "baseline"):
        if config[field_name] not in arms:
            raise ValueError(f"config.{field_name}: {config[field_name]!r} is not in config.arms")
    levels = [float(v) for v in config.levels]
    if not levels or any(not 0 < v < 1 for v in levels):
        raise ValueError(f"config.levels: fractions in (0, 1), got {tuple(config.levels)}")
    if not 0 <= int(config.headline_level) < len(levels):
        raise ValueError(f"config.headline_level: an index into config.levels, got "
                         f"{config.headline_level!r}")  # fmt: skip
    return dims, arms, levels


def _arm_trainer(pairs, net, config):
    """`studies.ArmTrainer` (every arm x seed in one program) where the core has it."""
    cls = getattr(studies, "ArmTrainer", None) or _RunArmTrainer
    return cls(pairs, net, config.optim, config.num_steps, ema_decay=config.ema_decay)


class _RunArmTrainer(RunTrainer):
    """`RunTrainer` with `studies.ArmTrainer`'s `train` (for a core without ArmTrainer)."""

    def train(self, stream, *, eval_at=(), callback=None):
        state, losses, step, self.train_seconds = self.init(stream.seeds), [], 0, 0.0
        for chunk in stream:
            t0 = time.perf_counter()
            state, metrics = self.update(state, chunk)
            self.train_seconds += time.perf_counter() - t0
            losses.append(metrics["loss"])
            step += stream.k
            if step in eval_at and callback is not None:
                callback(step, state)
        return state, np.concatenate(losses, axis=-1)


def _train_dimension(dim, arms, config, seeds, log):
    """Trains every arm on the mixture in d = dim; returns the per-d results."""
    gmm = mixture(dim, seed=config.mixture_seed, separation=config.separation)
    key = jax.random.key(config.eval_seed)
    k_test, k_x0 = jax.random.split(key)
    x_test = gmm.sample(k_test, config.eval_samples)
    x0 = jax.random.normal(k_x0, (config.nfe_samples, dim))
    kl_ref = gaussian_kl(gmm, gmm.sample(jax.random.fold_in(key, 1), 20_000))
    levels = [f * kl_ref for f in config.levels]
    net = studies.build_network(
        "mlp", "base", (dim,), width=config.width, depth=config.depth, freq_dim=config.freq_dim
    )
    stream = MixtureStream(gmm, seeds, config.batch_size, config.num_steps,
                           config.steps_per_dispatch)  # fmt: skip
    eval_at = studies.eval_steps(config.steps_per_dispatch, config.num_steps, config.num_evals)
    out = {"dim": dim, "kl_gaussian": kl_ref, "levels_nats": levels, "arms": {}}
    chosen = [ARMS[a] for a in arms]
    evaluator = Evaluator(chosen, net.apply_fn, gmm, x_test, x0, config)
    curve = {"step": [], "kl": [], "kl_se": [], "nfe_likelihood": []}

    def callback(step, state):
        e = evaluator(state.ema[0])
        curve["step"].append(step)
        for k in ("kl", "kl_se", "nfe_likelihood"):
            curve[k].append(e[k])  # (A, S) per evaluation
        log(
            f"  [d={dim}] step {step}: KL "
            + "; ".join(
                f"{a} " + ", ".join(f"{v:.3f}" for v in e["kl"][i]) for i, a in enumerate(arms)
            )
        )

    pairs = [(a.objective, net.apply_fn) for a in chosen]
    trainer = _arm_trainer(pairs, net, config)
    state, losses = trainer.train(stream, eval_at=eval_at, callback=callback)
    nfe = evaluator.nfe(state.ema[0])
    skipped = np.asarray(state.num_skipped).tolist()
    tail = max(1, losses.shape[-1] // 10)
    for i, name in enumerate(arms):
        kl_by_seed = [[e[i][s] for e in curve["kl"]] for s in range(len(seeds))]  # (S, E)
        out["arms"][name] = {
            "label": chosen[i].label,
            "curve": {
                "step": curve["step"],
                **{k: [e[i] for e in curve[k]] for k in ("kl", "kl_se", "nfe_likelihood")},
            },
            "kl_by_seed": kl_by_seed,
            "final_kl": studies.mean_ci(curve["kl"][-1][i]),
            "nfe": studies.mean_ci(nfe[i]),
            "nfe_by_seed": nfe[i],
            "final_loss": studies.mean_ci(np.asarray(losses[i])[:, -tail:].mean(-1)),
            "num_skipped": skipped[i],
            "divergence": evaluator.divergence,
        }
        log(f"  [d={dim}] {name}: final KL {studies.fmt_ci(out['arms'][name]['final_kl'])}, "
            f"NFE {nfe[i]}")  # fmt: skip
    out["train_seconds"] = trainer.train_seconds
    out["trainer"] = type(trainer).__name__
    steps = out["arms"][arms[0]]["curve"]["step"]
    out["analysis"] = analyse_dimension(
        steps,
        {a: out["arms"][a]["kl_by_seed"] for a in arms},
        {a: out["arms"][a]["nfe_by_seed"] for a in arms},
        levels,
        arm=config.arm,
        baseline=config.baseline,
    )
    return out


def run(config, workdir, *, log=print, command=None):
    """Runs the study; returns the results dict (also written to workdir)."""
    dims, arms, _ = _check(config)
    seeds = [config.seed + i for i in range(config.num_seeds)]
    record = studies.Record("scaling", config, seeds, command)
    per_dim = {}
    for dim in dims:
        log(f"[d={dim}] training {', '.join(arms)} ({len(seeds)} seeds x {config.num_steps} steps)")
        per_dim[dim] = _train_dimension(dim, arms, config, seeds, log)
    h, arm, base = int(config.headline_level), config.arm, config.baseline
    steps_ratios = [
        per_seed_ratios(
            per_dim[d]["analysis"]["steps_to_level"][arm][h],
            per_dim[d]["analysis"]["steps_to_level"][base][h],
        )
        for d in dims
    ]
    nfe_ratios = [
        per_seed_ratios(
            per_dim[d]["arms"][arm]["nfe_by_seed"], per_dim[d]["arms"][base]["nfe_by_seed"]
        )
        for d in dims
    ]
    trends = {"steps": trend(dims, steps_ratios), "nfe": trend(dims, nfe_ratios)}
    verdicts = verdicts_for(per_dim, trends, config)
    for d in dims:
        record.add(f"gmm_d{d}", per_dim[d], verdicts=verdicts[d], num_seeds=len(seeds))
    record.add(
        "trend",
        {"dims": dims, "steps": trends["steps"], "nfe": trends["nfe"],
         "steps_ratios_by_seed": steps_ratios, "nfe_ratios_by_seed": nfe_ratios},
        verdicts=verdicts["trend"],
        num_seeds=len(seeds),
    )  # fmt: skip
    record.results["claim"] = "flow matching scales better with dimension than diffusion"
    return record.finish(workdir, render=render, plots=_plots)


# ---------------------------------------------------------------------------------- report


def _headline(results) -> list[dict]:
    return [v for ds in results["datasets"].values() for v in ds["verdicts"] if v.get("headline")]


def render(r) -> str:
    c = r["config"]
    lines = [
        "# Scaling with dimension: flow matching vs diffusion on the d-dimensional mixture",
        "",
        *studies.verdict_table([v for ds in r["datasets"].values() for v in ds["verdicts"]]),
        "",
        *studies.machine_lines(r),
        "",
        f"Arms {c['arms']} ({c['width']} x {c['depth']} MLP, batch {c['batch_size']}, "
        f"{c['num_steps']} steps, lr {c['optim']['lr']}); levels: KL <= f x KL(data || N(0, I)) "
        f"for f in {list(c['levels'])} (headline f = {c['levels'][c['headline_level']]}); "
        f"NFE of adaptive dopri5 at rtol = atol = {c['nfe_tol']} on {c['nfe_samples']} "
        f"samples; KL over {c['eval_samples']} held-out draws.",
        "",
    ]
    arm, base = c["arm"], c["baseline"]
    rows = []
    for name, ds in r["datasets"].items():
        if name == "trend":
            continue
        an = ds["analysis"]
        for i, lvl in enumerate(an["levels"]):
            rr = an["ratios"][i]
            cens = rr.get("censored")
            rows.append([
                ds["dim"], f"{c['levels'][i]} ({studies.fmt(lvl)} nats)",
                f"{rr['reached'][arm]}/{ds['num_seeds']}",
                f"{rr['reached'][base]}/{ds['num_seeds']}",
                studies.fmt_ratio(rr),
                "" if not cens else f"{cens['kind']} bound {cens['bound']:.2f}",
            ])  # fmt: skip
    lines += ["## Steps to level", ""]
    lines += studies.table(
        ["d", "level", f"{arm} reached", f"{base} reached",
         f"steps ratio {arm}/{base} [95% CI]", "censored"], rows,
    )  # fmt: skip
    lines += ["", "## Final quality and NFE at tolerance", ""]
    rows = []
    for name, ds in r["datasets"].items():
        if name == "trend":
            continue
        for a, st in ds["arms"].items():
            rows.append([
                ds["dim"], a, studies.fmt_ci(st["final_kl"]), studies.fmt(ds["kl_gaussian"]),
                studies.fmt_ci(st["nfe"]), st["divergence"], studies.fmt(ds["train_seconds"]),
            ])  # fmt: skip
        rows.append([ds["dim"], f"{arm}/{base} NFE", studies.fmt_ratio(ds["analysis"]["nfe_ratio"]),
                     "", "", "", ""])  # fmt: skip
    lines += studies.table(
        ["d", "arm", "final KL (nats)", "KL of N(0, I)", "NFE", "divergence", "train s"], rows
    )
    t = r["datasets"].get("trend")
    if t:
        lines += [
            "",
            "## Trend",
            "",
            f"Per doubling of d the steps ratio changes by {studies.fmt_ratio(t['steps'])} and "
            f"the NFE ratio by {studies.fmt_ratio(t['nfe'])} (per-seed slopes of the log ratio "
            "on log2 d, Student-t over seeds; < 1: the ratio falls as d grows).",
        ]
    if r.get("plots"):
        lines += ["", *[f"![{k}]({v})" for k, v in r["plots"].items()]]
    return "\n".join(lines) + "\n"


def _plots(results, workdir):
    if True:
        panels = {}
        for name, ds in results["datasets"].items():
            if name == "trend":
                continue
            curves = {
                a: {"step": st["curve"]["step"],
                    "kl": {"mean": [studies.mean_ci(v)["mean"] for v in st["curve"]["kl"]],
                           "ci_low": [studies.mean_ci(v)["ci_low"] for v in st["curve"]["kl"]],
                           "ci_high": [studies.mean_ci(v)["ci_high"] for v in st["curve"]["kl"]]}}
                for a, st in ds["arms"].items()
            }  # fmt: skip
            panels[f"d = {ds['dim']}"] = (curves, "kl")
        hl = {f"d = {ds['dim']}": ds["levels_nats"][results["config"]["headline_level"]]
              for n, ds in results["datasets"].items() if n != "trend"}  # fmt: skip
        f = studies.plot_curves(os.path.join(workdir, "kl_curves.png"), panels, hlines=hl,
                                title="KL(data || model) vs training step")  # fmt: skip
        return {"kl_curves": f}
