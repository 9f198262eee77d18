"""Conditioning embeddings: times t (and s, for flow maps) and class labels."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

_LECUN = nnx.initializers.lecun_normal()
_LABEL_INIT = nnx.initializers.normal(0.02)


def sinusoidal_embedding(
    t: Float[Array, " batch"],
    dim: int,
    *,
    scale: float = 1000.0,
    max_period: float = 10000.0,
) -> Float[Array, "batch {dim}"]:
    """Sinusoidal (Fourier-feature) embedding of a time in [0, 1].

    Transformer position encoding applied to `scale * t`, as in DDPM (Ho et al. 2020, sec. 4,
    integer steps 0..999) and ADM (Dhariwal & Nichol 2021): with `scale=1000` a time in [0, 1]
    gets the frequencies those networks were tuned for. Layout `[cos, sin]` as in ADM/DiT;
    an odd `dim` is zero-padded. Computed in float32 whatever the model's compute dtype.
    """
    if dim < 2:
        raise ValueError(f"embedding dim must be >= 2; got {dim}")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = (scale * jnp.asarray(t, jnp.float32))[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nnx.Module):
    """sinusoid(t) -> Linear -> act -> Linear: a time in [0, 1] to a `features`-vector."""

    def __init__(
        self,
        freq_dim: int,
        features: int,
        *,
        act: Callable[[Array], Array],
        scale: float = 1000.0,
        kernel_init: Callable = _LECUN,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.freq_dim = freq_dim
        self.scale = scale
        self.act = act
        kw = dict(kernel_init=kernel_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dense0 = nnx.Linear(freq_dim, features, **kw)
        self.dense1 = nnx.Linear(features, features, **kw)

    def __call__(self, t: Float[Array, " batch"]) -> Float[Array, "batch features"]:
        emb = sinusoidal_embedding(t, self.freq_dim, scale=self.scale)
        return self.dense1(self.act(self.dense0(emb)))


def batch_times(t, batch: int, name: str = "t") -> Float[Array, " batch"]:
    """Broadcasts a scalar time or checks a per-example one; returns float32 (batch,)."""
    t = jnp.asarray(t)
    if jnp.issubdtype(t.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real; got dtype {t.dtype}")
    t = t.astype(jnp.float32)
    if t.ndim == 0:
        return jnp.broadcast_to(t, (batch,))
    if t.shape != (batch,):
        raise ValueError(
            f"{name} must be a scalar or have shape (batch,) = ({batch},); got shape {t.shape}"
        )
    return t


class ConditionEmbedding(nnx.Module):
    """c = MLP_t(emb(t)) [+ MLP_s(emb(s))] [+ E[y]]: one conditioning vector per example.

    The second time `s` of a flow map X(x, s, t) has its own embedding MLP, present only when
    `two_times=True`; with `s=None` nothing about `s` enters, so the network is exactly the
    one-time network. Labels index a table of `num_classes + 1` rows; the last row (label
    `num_classes`) is the null label of classifier-free guidance (Ho & Salimans 2022), and
    `y=None` on a class-conditional model means that null label.
    """

    def __init__(
        self,
        features: int,
        *,
        freq_dim: int,
        act: Callable[[Array], Array],
        num_classes: int | None = None,
        two_times: bool = False,
        time_scale: float = 1000.0,
        kernel_init: Callable = _LECUN,
        label_init: Callable = _LABEL_INIT,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int or None; got {num_classes!r}")
        self.features = features
        self.num_classes = num_classes
        self.two_times = bool(two_times)
        kw = dict(
            act=act,
            scale=time_scale,
            kernel_init=kernel_init,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.t_embed = TimestepEmbedding(freq_dim, features, **kw)
        self.s_embed = TimestepEmbedding(freq_dim, features, **kw) if self.two_times else None
        self.label_embed = (
            nnx.Embed(
                num_classes + 1,
                features,
                embedding_init=label_init,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )
            if num_classes is not None
            else None
        )

    def __call__(
        self,
        t,
        *,
        batch: int,
        s=None,
        y: Int[Array, " batch"] | None = None,
    ) -> Float[Array, "batch features"]:
        c = self.t_embed(batch_times(t, batch, "t"))
        if s is not None:
            if self.s_embed is None:
                raise ValueError(
                    "this model takes one time; got a second time s. Build it with "
                    "two_times=True to use it as a flow map X(x, s, t)."
                )
            c = c + self.s_embed(batch_times(s, batch, "s"))
        if self.label_embed is None:
            if y is not None:
                raise ValueError(
                    "got labels y for a model without classes; build it with num_classes=K"
                )
            return c
        if y is None:
            y = jnp.full((batch,), self.num_classes, jnp.int32)
        y = jnp.asarray(y)
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise TypeError(f"labels y must be integers in [0, {self.num_classes}]; got {y.dtype}")
        if y.ndim == 0:
            y = jnp.broadcast_to(y, (batch,))
        if y.shape != (batch,):
            raise ValueError(f"labels y must have shape (batch,) = ({batch},); got {y.shape}")
        return c + self.label_embed(y)


__all__ = ["ConditionEmbedding", "TimestepEmbedding", "batch_times", "sinusoidal_embedding"]
