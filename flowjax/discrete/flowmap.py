"""Discrete flow maps for the mask source: jump from time s to time t in one evaluation.

A masked-diffusion sampler is driven by per-token noise: a reveal level u^i ~ U[0, 1] (token i
is revealed by time t iff u^i <= kappa(t): its reveal time has the exact CDF kappa) and Gumbel
noise g^i (V values; the revealed value is argmax_v log p_{1|tau}(v | x_tau) + g^i_v, a draw of
the posterior at the reveal time tau, the Gumbel-max trick). Each token uses its noise once,
so this noise-driven teacher has the law of the ancestral sampler (`sample_masked`), yet its
state at t is a deterministic function T(x_s, s, t, u, g): the discrete analogue of a flow
map, whose randomness sits in the noise as a continuous flow map's sits in x0.

The student X_theta(x_s, s, t, u, g) (a two-time token network with the noise as per-token
features) is distilled from the teacher's `teacher_steps`-step map with cross-entropy on the
tokens revealed in (s, t] (`FlowMapDistillation`); `sample_jump` then makes K jumps with K
evaluations. Since the target is deterministic given the noise, a factorised student can be
exact, which a factorised few-step sampler without the noise cannot (it samples tokens revealed
in the same step independently).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int, PRNGKeyArray

from flowjax.discrete._path import MixturePath
from flowjax.discrete._sources import MaskSource

__all__ = [
    "FlowMapDistillation",
    "draw_noise",
    "flowmap_apply",
    "noise_features",
    "sample_jump",
    "teacher_map",
]


def draw_noise(key: PRNGKeyArray, shape: tuple[int, int], vocab_size: int):
    """(u (B, L) reveal levels, g (B, L, V) Gumbel noise)."""
    k_u, k_g = jax.random.split(key)
    return jax.random.uniform(k_u, shape), jax.random.gumbel(k_g, (*shape, vocab_size))


def noise_features(u, g) -> Float[Array, "b l f"]:
    """Per-token student features [u, g] of width V + 1."""
    return jnp.concatenate([u[..., None], g], axis=-1)


def _reveal(x, values, u, k_from, k_to, mask):
    new = (x == mask) & (u > k_from) & (u <= k_to)
    return jnp.where(new, values, x), new


def teacher_map(
    posterior: Callable,
    x_s: Int[Array, "b l"],
    s,
    t,
    u,
    g,
    *,
    path: MixturePath,
    source: MaskSource,
    num_steps: int,
) -> Int[Array, "b l"]:
    """The noise-driven teacher from s to t with `num_steps` posterior calls (t = 1 reveals
    every token: its last step uses u <= 1). Jitted; the step count is traced."""
    return _teacher_map(posterior, x_s, s, t, u, g, path, source, jnp.asarray(num_steps))


@eqx.filter_jit
def _teacher_map(posterior, x_s, s, t, u, g, path, source, num_steps):
    b = x_s.shape[0]
    s, t = jnp.broadcast_to(s, (b,)), jnp.broadcast_to(t, (b,))

    def body(k, x):
        tau = s + (t - s) * k / num_steps
        tau_next = s + (t - s) * (k + 1) / num_steps
        logp = jnp.log(jnp.maximum(posterior(x, tau), 1e-30))
        values = jnp.argmax(logp + g, axis=-1).astype(x.dtype)
        k_to = jnp.where(tau_next >= 1.0, 1.0, path.kappa(tau_next))
        return _reveal(x, values, u, path.kappa(tau)[:, None], k_to[:, None], source.mask)[0]

    return jax.lax.fori_loop(0, num_steps, body, x_s)


def flowmap_apply(module: nnx.Module):
    """(apply_fn(params, x_s, s, t, features) -> logits, params) of a two-time token network
    built with `token_features=V + 1`."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def apply_fn(params, x_s, s, t, features):
        return nnx.merge(graphdef, params, rest)(x_s, t, s=s, features=features)

    return apply_fn, nnx.to_pure_dict(params)


class FlowMapDistillation(eqx.Module):
    """CE of the student's jump s -> t to the teacher's multi-step map (same noise).

    Fields: teacher (posterior callable), path, source (MaskSource), student
    `model(params, x_s, s, t, features) -> logits (B, L, V)` (or pass model= at call time),
    teacher_steps (the teacher's steps over [s, t]).
    Batch: {"x1": (B, L) data tokens}; x_s is the path sample with the noise's reveal set.
    """

    teacher: Callable
    path: MixturePath
    source: MaskSource
    model: Callable | None = eqx.field(default=None, static=True)
    teacher_steps: int = eqx.field(default=16, static=True)

    def __check_init__(self):
        if not isinstance(self.source, MaskSource):
            raise TypeError(f"FlowMapDistillation: source must be MaskSource(V), got {self.source}")
        if not isinstance(self.path, MixturePath):
            raise TypeError(f"FlowMapDistillation: path must be a MixturePath, got {self.path}")
        if not isinstance(self.teacher_steps, int) or self.teacher_steps < 1:
            raise ValueError(f"FlowMapDistillation: teacher_steps >= 1, got {self.teacher_steps}")

    def __call__(self, params, key, batch: Mapping, *, model=None):
        model = self.model if model is None else model
        if model is None:
            raise TypeError("FlowMapDistillation: no model; bind model=... or pass it")
        x1 = self.source.check_data(batch["x1"], "FlowMapDistillation: batch['x1']")
        b = x1.shape[0]
        k_noise, k_s, k_t = jax.random.split(key, 3)
        u, g = draw_noise(k_noise, x1.shape, self.source.vocab_size)
        s = jax.random.uniform(k_s, (b,))
        t = s + (1.0 - s) * jax.random.uniform(k_t, (b,))
        t = jnp.where(jax.random.bernoulli(k_t, 0.25, (b,)), 1.0, t)  # jumps to t = 1 often
        x_s = jnp.where(u <= self.path.kappa(s)[:, None], x1, self.source.mask)
        target = jax.lax.stop_gradient(
            teacher_map(
                self.teacher,
                x_s,
                s,
                t,
                u,
                g,
                path=self.path,
                source=self.source,
                num_steps=self.teacher_steps,
            )
        )
        logits = model(params, x_s, s, t, noise_features(u, g))
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        new = (x_s == self.source.mask) & (target != self.source.mask)
        target_v = jnp.where(new, target, 0)
        ce = -jnp.take_along_axis(logp, target_v[..., None], axis=-1)[..., 0]
        per_example = jnp.sum(ce * new, axis=1) / x1.shape[1]
        value = jnp.mean(per_example)
        acc = jnp.sum((jnp.argmax(logp, -1) == target) * new) / jnp.maximum(jnp.sum(new), 1)
        return value, {"loss": value, "per_example_loss": per_example, "accuracy": acc}


def sample_jump(
    student: Callable,
    params: Any,
    *,
    key: PRNGKeyArray,
    shape: tuple[int, int],
    path: MixturePath,
    source: MaskSource,
    num_steps: int,
) -> Int[Array, "b l"]:
    """K = num_steps jumps 0 = s_0 < ... < s_K = 1 of the student (K evaluations): at each,
    tokens with u in (kappa(s_k), kappa(s_{k+1})] are revealed with the student's argmax."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    return _jump(student, params, key, tuple(shape), path, source, jnp.asarray(num_steps))


@eqx.filter_jit
def _jump(student, params, key, shape, path, source, num_steps):
    u, g = draw_noise(key, shape, source.vocab_size)
    feats = noise_features(u, g)
    b = shape[0]

    def body(k, x):
        s, t = k / num_steps, (k + 1) / num_steps
        logits = student(params, x, jnp.full((b,), s), jnp.full((b,), t), feats)
        values = jnp.argmax(logits, axis=-1).astype(x.dtype)
        k_to = jnp.where(t >= 1.0, 1.0, path.kappa(t))
        return _reveal(x, values, u, path.kappa(s), k_to, source.mask)[0]

    return jax.lax.fori_loop(0, num_steps, body, source.sample(None, shape))
