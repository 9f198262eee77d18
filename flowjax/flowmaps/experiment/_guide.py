"""Reward guidance with a trained flow map, every approach at the same NFE budget.

With a budget of B network evaluations per delivered sample (B even):

  unguided         B jumps of the map (and 1 jump, the cheapest sampler), no reward;
  grad/flowmap     B/2 jumps, each adding scale * grad r(X(x, t, 1)) (the look-ahead through
                   the flow map itself; Sabour et al. 2025): per step one jump + one
                   look-ahead = 2 evaluations, plus one vector-Jacobian product;
  grad/denoiser    the same with the one-step denoiser E[x1 | x_t] ~ x + (1 - t) u(x, t, t)
                   (universal guidance / DPS look-ahead): also 2 evaluations + 1 VJP per step;
  best-of-B        B candidate noises, each scored by its one-jump sample; keep the best;
  SMC              sequential importance resampling of a population towards
                   p(x1) exp(r(x1) / T) with consistency re-noising between B - 1 grid times:
                   B look-ahead evaluations per particle (`fj.flowmaps.importance_sample`).

For each approach: mean reward, hit rate (sample inside the target) and a support measure
(is the sample still data-like?), with a Student-t interval over independent batches
(seeds of the map x repeats).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from flowjax.flowmaps._guidance import best_of_n, guided_sample, importance_sample
from flowjax.flowmaps.experiment._sampling import jumps
from flowjax.flowmaps.experiment._stats import mean_ci

__all__ = ["Approach", "ConstantScale", "approaches", "compare"]


class ConstantScale(eqx.Module):
    """A guidance scale as a pytree, so new values do not recompile the sampler."""

    value: jax.Array

    def __call__(self, t):
        return self.value


@dataclasses.dataclass(frozen=True)
class Approach:
    """One guided (or unguided) sampler at a given cost.

    Attributes:
      name: key in the results ("grad_flowmap@1", ...).
      label: what it does.
      family: "unguided", "grad_flowmap", "grad_denoiser", "best_of_n" or "smc".
      nfe: network evaluations per delivered sample.
      vjp: vector-Jacobian products (reward gradients) per sample.
      setting: the scale (gradient) or temperature (SMC), else None.
    """

    name: str
    label: str
    family: str
    nfe: int
    vjp: int
    setting: float | None = None


def approaches(budget: int, scales: Sequence[float], temperatures: Sequence[float]):
    """The compared approaches at `budget` evaluations per sample (see module docstring)."""
    if budget < 2 or budget % 2:
        raise ValueError(f"config.guidance.nfe: an even number >= 2, got {budget}")
    half = budget // 2
    out = [
        Approach("unguided_1", "unguided, 1 jump", "unguided", 1, 0),
        Approach(f"unguided_{budget}", f"unguided, {budget} jumps", "unguided", budget, 0),
    ]
    for s in scales:
        out.append(
            Approach(
                f"grad_flowmap@{s:g}",
                f"gradient through X(x, t, 1), {half} steps, scale {s:g}",
                "grad_flowmap",
                budget,
                half,
                float(s),
            )
        )
        out.append(
            Approach(
                f"grad_denoiser@{s:g}",
                f"gradient through the denoiser, {half} steps, scale {s:g}",
                "grad_denoiser",
                budget,
                half,
                float(s),
            )
        )
    out.append(
        Approach(
            f"best_of_{budget}", f"best of {budget} one-jump candidates", "best_of_n", budget, 0
        )
    )
    for temp in temperatures:
        out.append(
            Approach(
                f"smc@{temp:g}",
                f"SMC, {budget - 1} re-noised steps, T = {temp:g}",
                "smc",
                budget,
                0,
                float(temp),
            )
        )
    return out


@eqx.filter_jit
def _best_of(X, x0, reward):
    return best_of_n(X, x0, reward, num_steps=1)[0]


def _run(approach: Approach, X, x0, reward, *, path, key, budget: int, num_samples: int):
    """Samples (num_samples, *D) of one approach from noise x0 of shape (budget, N, *D)."""
    first = x0[0]
    if approach.family == "unguided":
        return jumps(X, first, approach.nfe)
    if approach.family in ("grad_flowmap", "grad_denoiser"):
        return guided_sample(
            X,
            first,
            reward,
            path=path,
            scale=ConstantScale(jnp.asarray(approach.setting, first.dtype)),
            num_steps=budget // 2,
            kind="flow_map",
            lookahead="flowmap" if approach.family == "grad_flowmap" else "denoiser",
        )
    if approach.family == "best_of_n":
        return _best_of(X, x0, reward)
    if approach.family == "smc":
        x, _ = importance_sample(
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
    raise ValueError(f"unknown guidance family {approach.family!r}")


def compare(
    maps: Sequence[Callable],
    reward,
    support: Callable,
    *,
    path,
    shape: tuple[int, ...],
    budget: int,
    scales: Sequence[float],
    temperatures: Sequence[float],
    num_samples: int,
    repeats: int,
    seed: int,
) -> tuple[dict, dict]:
    """Every approach on every map (one per training seed) x `repeats` noise batches.

    Returns:
      (results {approach: {"label", "family", "nfe", "vjp", "setting", "reward", "hit",
      "support"}}, samples {approach: first batch as numpy} for the plots). Each statistic is
      `mean_ci` over the batch means (len(maps) x repeats batches of num_samples).
    """
    results, pictures = {}, {}
    for approach in approaches(budget, scales, temperatures):
        rewards, hits, supports = [], [], []
        for j, X in enumerate(maps):
            for r in range(repeats):
                key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), j), r)
                k_noise, k_run = jax.random.split(key)
                x0 = jax.random.normal(k_noise, (budget, num_samples, *shape), jnp.float32)
                x = _run(
                    approach,
                    X,
                    x0,
                    reward,
                    path=path,
                    key=k_run,
                    budget=budget,
                    num_samples=num_samples,
                )
                x = np.asarray(x)
                if not np.all(np.isfinite(x)):
                    rewards.append(np.nan)
                    hits.append(np.nan)
                    supports.append(np.nan)
                    continue
                rewards.append(float(np.mean(np.asarray(reward(jnp.asarray(x))))))
                hits.append(float(np.mean(np.asarray(reward.hit(jnp.asarray(x))))))
                supports.append(float(np.mean(support(x))))
                if j == 0 and r == 0:
                    pictures[approach.name] = x
        results[approach.name] = {
            **dataclasses.asdict(approach),
            "reward": mean_ci(rewards),
            "hit": mean_ci(hits),
            "support": mean_ci(supports),
        }
    return results, pictures
