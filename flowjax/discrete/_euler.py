"""CTMC Euler sampler of the mixture path (Gat et al. 2024, Alg. 1; Campbell et al. 2024).

Per step from t to t + h, each token independently jumps with

    P(x_{t+h}^i = y) = delta_{x_t^i}(y) + h u_t(y | x_t),      y != x_t^i,

with u_t the posterior-form velocity (plus an optional divergence-free corrector, see
`MixturePath.corrector_velocity`). Where h * sum_y u_t(y) > 1 the jump probabilities are
rescaled to sum to one. The last step draws x1 from the posterior itself, since kappa(1) = 1
(Meta's `MixtureDiscreteEulerSolver` does the same). One posterior call per step (two with CFG),
all inside one `lax.scan`.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PRNGKeyArray

from flowjax.discrete._guidance import check_scalar, guided_posterior
from flowjax.discrete._path import MixturePath, pad_posterior
from flowjax.discrete._sources import AbstractDiscreteSource, check_tokens

__all__ = ["sample_euler"]

_TINY = 1e-30


def check_sampler_args(posterior, x0, path, num_steps, key, t0, t1):
    if not callable(posterior):
        raise TypeError(
            f"posterior must be a callable (x_t, t) -> (B, L, V) probs, got {posterior!r}"
        )
    if not isinstance(path, MixturePath):
        raise TypeError(f"path must be a fj.discrete.MixturePath, got {path!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if key is None:
        raise ValueError("key must be a PRNG key (the sampler is stochastic)")
    if not 0.0 <= t0 < t1 <= 1.0:
        raise ValueError(f"need 0 <= t0 < t1 <= 1, got t0={t0}, t1={t1}")
    x0 = check_tokens(x0, jnp.iinfo(jnp.int32).max, "x0")
    out = jax.eval_shape(posterior, x0, jnp.full((x0.shape[0],), t0))
    if out.ndim != 3 or out.shape[:2] != x0.shape:
        raise ValueError(
            f"posterior must return (B, L, V) = ({x0.shape[0]}, {x0.shape[1]}, V), got {out.shape}"
        )
    return x0, int(out.shape[-1])


def sample_categorical(key, probs):
    """One draw per row of unnormalised non-negative weights (B, L, S)."""
    return jax.random.categorical(
        key, jnp.log(jnp.maximum(probs, _TINY)) + jnp.where(probs > 0, 0, -jnp.inf)
    )


def euler_step(key, x_t, p, t, h, path: MixturePath, p0, corrector):
    """One Euler step from t to t + h given the posterior p over the states (B, L, S)."""
    delta = jax.nn.one_hot(x_t, p.shape[-1], dtype=p.dtype)
    u = path.posterior_to_velocity(p, x_t, t)
    # Corrector weight c (traced; c = 0 adds exactly nothing, also at t = 0 where it is infinite).
    safe_t = jnp.where(corrector > 0, t, 0.5)
    u = u + jnp.where(corrector > 0, corrector, 0.0) * path.corrector_velocity(p, x_t, safe_t, p0)
    u = jnp.maximum(u, 0.0) * (1 - delta)  # off-diagonal rates
    intensity = jnp.sum(u, axis=-1, keepdims=True)
    scale = h[:, None, None] / jnp.maximum(1.0, h[:, None, None] * intensity)
    probs = scale * u + (1 - scale * intensity) * delta
    return sample_categorical(key, probs)


@eqx.filter_jit
def _run(posterior, x0, path, p0, key, num_steps, num_states, t0, t1, corrector):
    # num_steps is traced (a while loop), so every step count shares one compiled program.
    b = x0.shape[0]
    h = (t1 - t0) / num_steps

    def posterior_at(x, k):
        tb = jnp.full((b,), t0 + k * h)
        return tb, pad_posterior(posterior(x, tb), num_states)

    def body(k, x):
        tb, p = posterior_at(x, k)
        hb = jnp.full((b,), h)
        return euler_step(jax.random.fold_in(key, k), x, p, tb, hb, path, p0, corrector)

    x = jax.lax.fori_loop(0, num_steps - 1, body, x0)
    # Last step: x1 ~ p_{1|t} (kappa(1) = 1) when t1 = 1, else one more Euler step.
    tb, p = posterior_at(x, num_steps - 1)
    k_last = jax.random.fold_in(key, num_steps - 1)
    if t1 == 1.0:
        return sample_categorical(k_last, p)
    return euler_step(k_last, x, p, tb, jnp.full((b,), h), path, p0, corrector)


def sample_euler(
    posterior: Callable,
    x0: Int[Array, "b l"],
    *,
    path: MixturePath,
    num_steps: int,
    key: PRNGKeyArray,
    source: AbstractDiscreteSource | None = None,
    unconditional: Callable | None = None,
    guidance_scale: float = 1.0,
    temperature: float = 1.0,
    corrector: float = 0.0,
    t0: float = 0.0,
    t1: float = 1.0,
    return_info: bool = False,
):
    """Samples the CTMC of the mixture path with `num_steps` Euler steps on a uniform grid.

    Args:
      posterior: (x_t (B, L) int, t (B,)) -> (B, L, V) probabilities of x1 given x_t.
      x0: source tokens (B, L) int (mask id V for the mask source).
      path: the mixture path the posterior was trained on.
      num_steps: number of steps; NFE = num_steps (2 * num_steps with CFG).
      key: PRNG key; the result is a deterministic function of it.
      source: the source (needed for `corrector`; its `num_states` bounds x0).
      unconditional: posterior with the null condition, for classifier-free guidance.
      guidance_scale: CFG weight w (1 = conditional, 0 = unconditional).
      temperature: posterior temperature (1 = unchanged).
      corrector: coefficient c >= 0 of the divergence-free corrector (0 = none).
      t0, t1: time interval (t1 = 1 ends with a draw from the posterior).
      return_info: also return {"nfe", "ts"}.

    Returns:
      x1 (B, L) int32 tokens, or (x1, info) with return_info.
    """
    t0, t1 = float(t0), float(t1)
    x0, vocab = check_sampler_args(posterior, x0, path, num_steps, key, t0, t1)
    corrector = check_scalar(corrector, "corrector", 0.0, strict=False)
    num_states = vocab + 1 if source is None else source.num_states
    if source is not None and source.vocab_size != vocab:
        raise ValueError(f"source.vocab_size={source.vocab_size} but the posterior has V={vocab}")
    if corrector and source is None:
        raise ValueError("corrector > 0 needs the `source` (its p0 enters the corrector)")
    if corrector and t0 == 0.0:
        raise ValueError(
            "corrector > 0 needs t0 > 0 (its rate kappa'/(kappa (1-kappa)) is infinite at 0)"
        )
    x0 = check_tokens(x0, num_states, "x0")
    p0 = (
        pad_posterior(source.probs()[None, None], num_states)[0, 0]
        if source
        else jnp.zeros(num_states)
    )
    fn = guided_posterior(posterior, unconditional, guidance_scale, temperature)
    n = jnp.asarray(num_steps, jnp.int32)
    x1 = _run(fn, x0, path, p0, key, n, num_states, jnp.float32(t0), t1, jnp.float32(corrector))
    info = {"nfe": fn.nfe * num_steps, "ts": jnp.linspace(t0, t1, num_steps + 1)}
    return (x1, info) if return_info else x1
