"""A sequence backbone for forecasting: generates the horizon x (B, H, C) given a context window.

The context (B, T, C') and the noisy horizon (B, H, C) are embedded per time step into
`width` channels, tagged by a learned segment embedding (context / horizon) and fixed
sinusoidal positions, and concatenated along time into one sequence of length T + H. `depth`
residual blocks process it, each modulated by c = emb(t) [+ emb(s)] [+ label] through
adaLN-Zero (Peebles & Xie 2023, sec. 3.2):
  * backbone "conv": dilated non-causal 1-D convolutions, dilation 2^(i mod cycle), kernel k
    (WaveNet-style, van den Oord et al. 2016; DiffWave, Kong et al. 2021);
  * backbone "transformer": pre-norm self-attention + MLP blocks over the T + H steps.
The last H positions are read out by a zero-initialised linear layer (so the untrained
network predicts 0), in float32. Multivariate series are channels.

Null context (classifier-free guidance): `context=None`, or a NaN row per example, replaces the
context tokens by a learned null sequence, like the null label.

    model = build_model("sequence", "small", input_shape=(6, 1), context_shape=(12, 3), key=0)
    v = model(x, t, context=ctx)   # x (B, 6, 1), ctx (B, 12, 3) -> (B, 6, 1)
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from flowjax._types import Key, Labels, Time
from flowjax.models._embed import ConditionEmbedding, sinusoidal_embedding
from flowjax.models._layers import (
    SelfAttention,
    check_input,
    check_input_shape,
    dropout_rngs,
    get_activation,
)

_ZERO = nnx.initializers.zeros_init()
_SMALL = nnx.initializers.normal(0.02)

VARIANTS: dict[str, dict] = {
    "tiny": dict(width=32, depth=2, freq_dim=32),
    "small": dict(width=64, depth=4, freq_dim=64),
    "base": dict(width=128, depth=6, freq_dim=128),
    "transformer_tiny": dict(width=32, depth=2, backbone="transformer", num_heads=4),
    "transformer_small": dict(width=64, depth=4, backbone="transformer", num_heads=4),
}

BACKBONES = ("conv", "transformer")


def _modulate(h, shift, scale):
    return h * (1 + scale[:, None]) + shift[:, None]


class _ConvBlock(nnx.Module):
    """h <- h + g * W2 act(conv_d(adaLN(h))) with (shift, scale, g) = f(c) (adaLN-Zero)."""

    def __init__(self, width, kernel_size, dilation, act, dropout, kw):
        self.norm = nnx.LayerNorm(width, use_scale=False, use_bias=False, epsilon=1e-6, **kw)
        self.conv = nnx.Conv(
            width, width, (kernel_size,), kernel_dilation=(dilation,), padding="SAME", **kw
        )
        self.out = nnx.Linear(width, width, **kw)
        self.ada = nnx.Linear(width, 3 * width, kernel_init=_ZERO, **kw)
        self.act = act
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, h, c, rngs):
        shift, scale, gate = jnp.split(self.ada(self.act(c)), 3, axis=-1)
        u = self.act(self.conv(_modulate(self.norm(h), shift, scale)))
        u = self.out(self.dropout(u, deterministic=rngs is None, rngs=rngs))
        return h + gate[:, None] * u


class _AttentionBlock(nnx.Module):
    """DiT block: attention and MLP, each behind adaLN-Zero (Peebles & Xie 2023, Fig. 3)."""

    def __init__(self, width, num_heads, act, dropout, kw):
        ln = dict(use_scale=False, use_bias=False, epsilon=1e-6, **kw)
        self.norm1, self.norm2 = nnx.LayerNorm(width, **ln), nnx.LayerNorm(width, **ln)
        self.attn = SelfAttention(width, num_heads, **kw)
        self.fc1 = nnx.Linear(width, 4 * width, **kw)
        self.fc2 = nnx.Linear(4 * width, width, **kw)
        self.ada = nnx.Linear(width, 6 * width, kernel_init=_ZERO, **kw)
        self.act = act
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, h, c, rngs):
        s1, sc1, g1, s2, sc2, g2 = jnp.split(self.ada(self.act(c)), 6, axis=-1)
        h = h + g1[:, None] * self.attn(_modulate(self.norm1(h), s1, sc1))
        u = self.act(self.fc1(_modulate(self.norm2(h), s2, sc2)))
        u = self.fc2(self.dropout(u, deterministic=rngs is None, rngs=rngs))
        return h + g2[:, None] * u


class SequenceNet(nnx.Module):
    """v(x, t[, s, y, context]) for a horizon x (B, H, C) and a context window (B, T, C')."""

    def __init__(
        self,
        input_shape: tuple[int, int],
        *,
        width: int = 64,
        depth: int = 4,
        backbone: str = "conv",
        kernel_size: int = 3,
        dilation_cycle: int = 6,
        num_heads: int = 4,
        activation: str | Callable = "silu",
        freq_dim: int = 64,
        time_scale: float = 1000.0,
        dropout: float = 0.0,
        num_classes: int | None = None,
        two_times: bool = False,
        context_shape: tuple[int, int] | None = None,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        horizon, channels = check_input_shape(input_shape, 2, "SequenceNet", "(H, C)")
        if backbone not in BACKBONES:
            raise ValueError(f"SequenceNet: unknown backbone {backbone!r}; valid: {BACKBONES}")
        if width < 1 or depth < 1 or kernel_size < 1 or dilation_cycle < 1:
            raise ValueError(
                f"SequenceNet: width, depth, kernel_size, dilation_cycle must be >= 1; got "
                f"{width=}, {depth=}, {kernel_size=}, {dilation_cycle=}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"SequenceNet: dropout must be in [0, 1); got {dropout}")
        if context_shape is not None:
            context_shape = check_input_shape(context_shape, 2, "SequenceNet context", "(T, C')")
        self.input_shape = (horizon, channels)
        self.context_shape = context_shape
        self.num_classes = num_classes
        self.two_times = bool(two_times)
        self.backbone = backbone
        self.act = get_activation(activation)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.cond = ConditionEmbedding(
            width,
            freq_dim=freq_dim,
            act=self.act,
            num_classes=num_classes,
            two_times=two_times,
            time_scale=time_scale,
            **kw,
        )
        self.embed_x = nnx.Linear(channels, width, **kw)
        length = horizon
        if context_shape is not None:
            self.embed_context = nnx.Linear(context_shape[1], width, **kw)
            self.null_context = nnx.Param(_SMALL(rngs.params(), (context_shape[0], width)))
            length += context_shape[0]
        self.segment = nnx.Param(_SMALL(rngs.params(), (2, width)))
        self.length, self.width = length, width
        if backbone == "conv":
            self.blocks = nnx.List(
                [
                    _ConvBlock(width, kernel_size, 2 ** (i % dilation_cycle), self.act, dropout, kw)
                    for i in range(depth)
                ]
            )
        else:
            self.blocks = nnx.List(
                [_AttentionBlock(width, num_heads, self.act, dropout, kw) for _ in range(depth)]
            )
        self.norm_out = nnx.LayerNorm(width, use_scale=False, use_bias=False, epsilon=1e-6, **kw)
        self.ada_out = nnx.Linear(width, 2 * width, kernel_init=_ZERO, **kw)
        self.dense_out = nnx.Linear(width, channels, kernel_init=_ZERO, **kw)

    def _context_tokens(self, context, batch: int, dtype):
        null = self.null_context[...].astype(dtype)
        null = jnp.broadcast_to(null, (batch, *null.shape))
        if context is None:
            return null
        context = jnp.asarray(context)
        if not jnp.issubdtype(context.dtype, jnp.floating):
            raise TypeError(f"SequenceNet: context must be floating point; got {context.dtype}")
        if context.shape != (batch, *self.context_shape):
            raise ValueError(
                f"SequenceNet: context must have shape (B, T, C') = "
                f"{(batch, *self.context_shape)}; got {context.shape}"
            )
        present = ~jnp.any(jnp.isnan(context), axis=(1, 2))
        tokens = self.embed_context(jnp.where(present[:, None, None], context, 0).astype(dtype))
        return jnp.where(present[:, None, None], tokens, null)

    def __call__(
        self,
        x: Float[Array, "batch horizon channels"],
        t: Time,
        *,
        s: Time | None = None,
        y: Labels | None = None,
        context: Float[Array, "batch context_len context_channels"] | None = None,
        key: Key | None = None,
    ) -> Float[Array, "batch horizon channels"]:
        """Output of x's shape in float32; `key` turns dropout on."""
        x = check_input(x, self.input_shape, "SequenceNet", " (horizon, channels)")
        batch = x.shape[0]
        rngs = dropout_rngs(key)
        c = self.cond(t, batch=batch, s=s, y=y)
        h = self.embed_x(x.astype(c.dtype)) + self.segment[1].astype(c.dtype)
        if self.context_shape is None:
            if context is not None:
                raise ValueError(
                    "SequenceNet: got a context for a model without one; build it with "
                    "context_shape=(T, C')"
                )
        else:
            ctx = self._context_tokens(context, batch, c.dtype) + self.segment[0].astype(c.dtype)
            h = jnp.concatenate([ctx, h], axis=1)
        # Fixed sinusoidal positions of the T + H steps (scale 1: integer positions).
        steps = jnp.arange(self.length, dtype=jnp.float32)
        pos = sinusoidal_embedding(steps, self.width, scale=1.0)
        h = h + pos.astype(c.dtype)
        for block in self.blocks:
            h = block(h, c, rngs)
        shift, scale = jnp.split(self.ada_out(self.act(c)), 2, axis=-1)
        h = _modulate(self.norm_out(h[:, -self.input_shape[0] :]), shift, scale)
        return self.dense_out(h).astype(jnp.float32)


__all__ = ["BACKBONES", "VARIANTS", "SequenceNet"]
