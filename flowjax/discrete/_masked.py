"""Exact ancestral sampler of masked diffusion (Sahoo et al. 2024, MDLM, eq. (7); Austin et al.
2021; Shi et al. 2024, MD4, sec. 4).

With the mask source, a token masked at time t is still masked at s > t with probability
(1 - kappa(s)) / (1 - kappa(t)), and otherwise takes the value x1^i ~ p_{1|t}(. | x_t); unmasked
tokens are carried over. So the step t -> s unmasks each masked token with the exact probability

    (kappa(s) - kappa(t)) / (1 - kappa(t)),

with no time-discretisation error beyond the posterior being held fixed on [t, s]. The last
step (s = 1) unmasks every token left. One posterior call per step (two with CFG).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PRNGKeyArray

from flowjax.discrete._euler import check_sampler_args, sample_categorical
from flowjax.discrete._guidance import guided_posterior
from flowjax.discrete._path import MixturePath
from flowjax.discrete._sources import MaskSource, check_tokens

__all__ = ["sample_masked"]


@eqx.filter_jit
def _run(posterior, x0, path, key, num_steps, mask, t0):
    # num_steps is traced (a while loop), so every step count shares one compiled program.
    b = x0.shape[0]
    h = (1.0 - t0) / num_steps

    def body(k, x_t):
        k_unmask, k_draw = jax.random.split(jax.random.fold_in(key, k))
        t, s = t0 + k * h, t0 + (k + 1) * h
        p = posterior(x_t, jnp.full((b,), t))
        kt, ks = path.kappa(t), path.kappa(s)
        prob = jnp.where(k == num_steps - 1, 1.0, (ks - kt) / (1.0 - kt))
        unmask = (x_t == mask) & (jax.random.uniform(k_unmask, x_t.shape) < prob)
        return jnp.where(unmask, sample_categorical(k_draw, p), x_t)

    return jax.lax.fori_loop(0, num_steps, body, x0)


def sample_masked(
    posterior: Callable,
    x0: Int[Array, "b l"],
    *,
    path: MixturePath,
    num_steps: int,
    key: PRNGKeyArray,
    source: MaskSource,
    unconditional: Callable | None = None,
    guidance_scale: float = 1.0,
    temperature: float = 1.0,
    t0: float = 0.0,
    return_info: bool = False,
):
    """Masked-diffusion sampler from t0 to 1 with the exact per-step unmasking probability.

    Args as `sample_euler`; `source` must be the `MaskSource` of the path and x0 may hold
    already-revealed tokens (infilling): only masked positions are ever changed.

    Returns:
      x1 (B, L) int32 with no mask left, or (x1, info) with return_info.
    """
    if not isinstance(source, MaskSource):
        raise TypeError(f"sample_masked needs source=fj.discrete.MaskSource(V), got {source!r}")
    x0, vocab = check_sampler_args(posterior, x0, path, num_steps, key, float(t0), 1.0)
    if vocab != source.vocab_size:
        raise ValueError(f"source.vocab_size={source.vocab_size} but the posterior has V={vocab}")
    x0 = check_tokens(x0, source.num_states, "x0")
    fn = guided_posterior(posterior, unconditional, guidance_scale, temperature)
    x1 = _run(fn, x0, path, key, jnp.asarray(num_steps, jnp.int32), source.mask, float(t0))
    info = {"nfe": fn.nfe * num_steps, "ts": jnp.linspace(float(t0), 1.0, num_steps + 1)}
    return (x1, info) if return_info else x1
