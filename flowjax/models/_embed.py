"""Conditioning embeddings: times t (and s, for flow maps), class labels, and a context."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
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


# ------------------------------------------------------------------------------ context

CONTEXT_MODES = ("film", "concat")


def context_mode(context_shape, input_shape) -> str:
    """ "concat" when the context has the data's spatial size (images (H, W, C'), sequences
    (T, C') for sequence data), else "film" (vectors, or any other shape, flattened)."""
    context_shape, input_shape = tuple(context_shape), tuple(input_shape)
    spatial = len(input_shape) >= 2 and len(context_shape) == len(input_shape)
    return "concat" if spatial and context_shape[:-1] == input_shape[:-1] else "film"


def drop_context(key, context: Float[Array, "batch *C"], rate: float) -> Float[Array, "batch *C"]:
    """Replaces each example's context by the null context (a NaN row) with probability `rate`
    (context dropout for classifier-free guidance, like the null label)."""
    context = jnp.asarray(context)
    drop = jax.random.bernoulli(key, rate, context.shape[:1])
    drop = drop.reshape(drop.shape + (1,) * (context.ndim - 1))
    return jnp.where(drop, jnp.nan, context)


class ContextEmbedding(nnx.Module):
    """The one conditioning module for a per-example context of shape `context_shape`.

    mode "film" (vectors; any context not of the data's spatial size is flattened): the
    context is embedded by a two-layer MLP e = W2 act(W1 ctx) and modulates the conditioning
    vector c of the network (time [+ s] [+ label] embedding) by FiLM, c <- c (1 + gamma(e)) +
    beta(e) (Perez et al. 2018), the (gamma, beta) layer zero-initialised so a new model starts
    as the unconditional one. mode "concat" (images (H, W, C') or sequences (T, C') of the
    data's spatial size): [ctx, 1] is concatenated to x along channels at the input (SR3,
    Saharia et al. 2022; the extra 1 marks a present context).

    Null context (classifier-free guidance, Ho & Salimans 2022): `context=None` for the whole
    batch, or a NaN row per example (`drop_context`). In "film" mode the null context is a
    learned embedding (a parameter replacing e); in "concat" mode it is [0, 0] (context and
    presence channel), which the network learns to read as "no context".
    """

    def __init__(
        self,
        context_shape: tuple[int, ...],
        features: int,
        *,
        input_shape: tuple[int, ...],
        mode: str | None = None,
        act: Callable[[Array], Array] = jax.nn.silu,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        try:
            context_shape = tuple(int(d) for d in context_shape)
        except TypeError:
            raise TypeError(
                f"context_shape must be a tuple of ints (one example, no batch axis); got "
                f"{context_shape!r}"
            ) from None
        if not context_shape or any(d < 1 for d in context_shape):
            raise ValueError(
                f"context_shape must be positive ints, rank >= 1 (one example, no batch axis); "
                f"got {context_shape!r}"
            )
        mode = context_mode(context_shape, input_shape) if mode is None else mode
        if mode not in CONTEXT_MODES:
            raise ValueError(f"unknown context mode {mode!r}; valid: {CONTEXT_MODES}")
        if mode == "concat" and context_mode(context_shape, input_shape) != "concat":
            raise ValueError(
                f"context mode 'concat' needs a context of the data's spatial size "
                f"{tuple(input_shape[:-1])} + (C',); got context_shape {context_shape}"
            )
        self.context_shape = context_shape
        self.mode = mode
        self.act = act
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if mode == "film":
            size = math.prod(context_shape)
            self.dense0 = nnx.Linear(size, features, **kw)
            self.dense1 = nnx.Linear(features, features, **kw)
            self.film = nnx.Linear(
                features, 2 * features, kernel_init=nnx.initializers.zeros_init(), **kw
            )
            self.null = nnx.Param(_LABEL_INIT(rngs.params(), (features,), param_dtype))

    @property
    def extra_channels(self) -> int:
        """Channels added to x at the input ("concat" mode), 0 for "film"."""
        return self.context_shape[-1] + 1 if self.mode == "concat" else 0

    def _check(self, context, batch):
        """(context with null rows zeroed, presence (batch,)) or (None, None) for all-null."""
        if context is None:
            return None, None
        context = jnp.asarray(context)
        if not jnp.issubdtype(context.dtype, jnp.floating):
            raise TypeError(f"context must be floating point; got dtype {context.dtype}")
        if context.shape != (batch, *self.context_shape):
            raise ValueError(
                f"context must have shape (B, *{self.context_shape}) = "
                f"{(batch, *self.context_shape)}; got {context.shape}"
            )
        present = ~jnp.any(jnp.isnan(context.reshape(batch, -1)), axis=1)
        context = jnp.where(present.reshape((batch,) + (1,) * len(self.context_shape)), context, 0)
        return context, present

    def modulate(self, c: Float[Array, "batch F"], context) -> Float[Array, "batch F"]:
        """FiLM of the conditioning vector c by the context ("film" mode; else c)."""
        if self.mode != "film":
            return c
        batch = c.shape[0]
        context, present = self._check(context, batch)
        null = jnp.broadcast_to(self.null[...].astype(c.dtype), c.shape)
        if context is None:
            e = null
        else:
            e = self.dense1(self.act(self.dense0(context.reshape(batch, -1).astype(c.dtype))))
            e = jnp.where(present[:, None], e, null)
        gamma, beta = jnp.split(self.film(self.act(e)), 2, axis=-1)
        return c * (1 + gamma) + beta

    def concat(self, x: Float[Array, "batch *D"], context) -> Float[Array, "batch *D2"]:
        """[x, ctx, presence] along the channel axis ("concat" mode; else x)."""
        if self.mode != "concat":
            return x
        batch = x.shape[0]
        context, present = self._check(context, batch)
        shape = x.shape[:-1]
        if context is None:
            extra = jnp.zeros(shape + (self.extra_channels,), x.dtype)
        else:
            mark = jnp.broadcast_to(
                present.reshape((batch,) + (1,) * (x.ndim - 1)).astype(x.dtype), shape + (1,)
            )
            extra = jnp.concatenate([context.astype(x.dtype), mark], axis=-1)
        return jnp.concatenate([x, extra], axis=-1)


def make_context_embedding(context_shape, features, *, input_shape, context_mode=None, **kw):
    """A `ContextEmbedding`, or None for an unconditional model (context_shape=None)."""
    if context_shape is None:
        if context_mode is not None:
            raise ValueError("context_mode needs context_shape")
        return None
    return ContextEmbedding(
        context_shape, features, input_shape=input_shape, mode=context_mode, **kw
    )


def no_context(context, model: str):
    """Raises if a context is given to a model built without one."""
    if context is not None:
        raise ValueError(
            f"{model}: got a context for a model built without one; build it with "
            f"context_shape=(...) (one example's context shape)"
        )


__all__ = [
    "CONTEXT_MODES",
    "ConditionEmbedding",
    "ContextEmbedding",
    "TimestepEmbedding",
    "batch_times",
    "context_mode",
    "drop_context",
    "make_context_embedding",
    "no_context",
    "sinusoidal_embedding",
]
