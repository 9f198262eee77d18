"""A transformer over tokens for discrete flow matching and masked diffusion.

x (B, L) int token ids in [0, num_states) -> token embedding + positions (learned, or rotary
in the attention, Su et al. 2021, RoFormer eq. (34)) -> `depth` pre-norm blocks modulated by
c = emb(t) [+ emb(s)] [+ label] [+ context] with adaLN-Zero (Peebles & Xie 2023, sec. 3.2) ->
final adaLN + linear -> logits (B, L, vocab_size) of x1 (float32). The output layer is
zero-initialised, so the untrained model predicts the uniform posterior. `num_states` defaults
to vocab_size + 1 (room for the mask id V of the mask source).

A context (shape `context_shape`, one example, no batch axis) is flattened and linearly
embedded into c; `context=None` on a context-conditioned model means a learned null context
(INTERFACES.md, classifier-free guidance). `token_features=F` adds per-token input features
(B, L, F) (`features=` at call time), used by the discrete flow map for its noise. A float
input (B, L, V) is embedded through the same matrix, x @ E, and the (B, L, V) output can be
read as a velocity: continuous flow matching on one-hot vectors with the same network.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from flowjax._types import Key, Labels, Time
from flowjax.models._embed import ConditionEmbedding
from flowjax.models._layers import dropout_rngs

_XAVIER = nnx.initializers.xavier_uniform()
_ZERO = nnx.initializers.zeros_init()

VARIANTS: dict[str, dict] = {
    "tiny": dict(hidden_size=64, depth=2, num_heads=4, freq_dim=64),
    "small": dict(hidden_size=128, depth=4, num_heads=4, freq_dim=128),
    "base": dict(hidden_size=384, depth=8, num_heads=6, freq_dim=256),
    "gpt2s": dict(hidden_size=768, depth=12, num_heads=12, freq_dim=256),
}


def rotary(x: Float[Array, "b l h d"]) -> Float[Array, "b l h d"]:
    """Rotary position embedding on the last axis (pairs of channels rotated by pos * theta_i)."""
    _, length, _, dim = x.shape
    half = dim // 2
    theta = 10000.0 ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = jnp.arange(length, dtype=jnp.float32)[:, None] * theta[None]  # (L, half)
    cos, sin = jnp.cos(angle)[None, :, None], jnp.sin(angle)[None, :, None]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return out.astype(x.dtype)


class _Block(nnx.Module):
    def __init__(self, hidden, num_heads, mlp_ratio, dropout, use_rotary, *, kw):
        ln = dict(use_scale=False, use_bias=False, epsilon=1e-6, **kw)
        self.num_heads, self.use_rotary = num_heads, use_rotary
        self.norm1 = nnx.LayerNorm(hidden, **ln)
        self.qkv = nnx.Linear(hidden, 3 * hidden, kernel_init=_XAVIER, **kw)
        self.proj = nnx.Linear(hidden, hidden, kernel_init=_XAVIER, **kw)
        self.norm2 = nnx.LayerNorm(hidden, **ln)
        self.fc1 = nnx.Linear(hidden, int(hidden * mlp_ratio), kernel_init=_XAVIER, **kw)
        self.fc2 = nnx.Linear(int(hidden * mlp_ratio), hidden, kernel_init=_XAVIER, **kw)
        self.ada_ln = nnx.Linear(hidden, 6 * hidden, kernel_init=_ZERO, **kw)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, h, c, rngs):
        b, n, d = h.shape
        mod = self.ada_ln(jax.nn.silu(c))[:, None, :]
        sh1, sc1, g1, sh2, sc2, g2 = jnp.split(mod, 6, axis=-1)
        qkv = self.qkv(self.norm1(h) * (1 + sc1) + sh1)
        q, k, v = jnp.split(qkv.reshape(b, n, 3, self.num_heads, d // self.num_heads), 3, axis=2)
        q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]
        if self.use_rotary:
            q, k = rotary(q), rotary(k)
        # Bidirectional softmax(q k^T / sqrt(d_head)) v (Vaswani et al. 2017, eq. (1)).
        att = jax.nn.dot_product_attention(q, k, v).reshape(b, n, d)
        det = rngs is None
        h = h + g1 * self.dropout(self.proj(att), deterministic=det, rngs=rngs)
        m = self.fc2(jax.nn.gelu(self.fc1(self.norm2(h) * (1 + sc2) + sh2)))
        return h + g2 * self.dropout(m, deterministic=det, rngs=rngs)


class TokenTransformer(nnx.Module):
    """Bidirectional transformer: tokens (B, L) and time(s) -> logits (B, L, vocab_size)."""

    def __init__(
        self,
        input_shape: tuple[int],
        *,
        vocab_size: int,
        num_states: int | None = None,
        hidden_size: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        freq_dim: int = 128,
        dropout: float = 0.0,
        positions: str = "learned",
        time_scale: float = 1000.0,
        num_classes: int | None = None,
        two_times: bool = False,
        context_shape: tuple[int, ...] | None = None,
        token_features: int | None = None,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != 1 or shape[0] < 1:
            raise ValueError(f"TokenTransformer: input_shape must be (L,), got {input_shape!r}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(
                f"TokenTransformer: vocab_size must be an int >= 2, got {vocab_size!r}"
            )
        num_states = vocab_size + 1 if num_states is None else int(num_states)
        if num_states < vocab_size:
            raise ValueError(f"TokenTransformer: num_states={num_states} < vocab_size={vocab_size}")
        if positions not in ("learned", "rotary"):
            raise ValueError(
                f"TokenTransformer: positions must be 'learned' or 'rotary', got {positions!r}"
            )
        if hidden_size % num_heads or (positions == "rotary" and (hidden_size // num_heads) % 2):
            raise ValueError(
                f"TokenTransformer: num_heads={num_heads} must divide hidden_size={hidden_size} "
                "(into an even head size for rotary positions)"
            )
        if depth < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"TokenTransformer: need depth >= 1, 0 <= dropout < 1; got {depth}, {dropout}"
            )
        self.input_shape = shape
        self.vocab_size, self.num_states = vocab_size, num_states
        self.context_shape = None if context_shape is None else tuple(context_shape)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.embed = nnx.Embed(
            num_states, hidden_size, embedding_init=nnx.initializers.normal(0.02), **kw
        )
        self.pos = (
            nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (shape[0], hidden_size)))
            if positions == "learned"
            else None
        )
        self.cond = ConditionEmbedding(
            hidden_size,
            freq_dim=freq_dim,
            act=jax.nn.silu,
            num_classes=num_classes,
            two_times=two_times,
            time_scale=time_scale,
            **kw,
        )
        if self.context_shape is not None:
            size = math.prod(self.context_shape)
            self.context_embed = nnx.Linear(size, hidden_size, kernel_init=_XAVIER, **kw)
            self.null_context = nnx.Param(jnp.zeros((hidden_size,), param_dtype))
        else:
            self.context_embed, self.null_context = None, None
        # Optional per-token input features (B, L, F), e.g. the noise of a discrete flow map.
        self.feature_embed = (
            nnx.Linear(int(token_features), hidden_size, kernel_init=_XAVIER, **kw)
            if token_features
            else None
        )
        self.blocks = nnx.List(
            [
                _Block(hidden_size, num_heads, mlp_ratio, dropout, positions == "rotary", kw=kw)
                for _ in range(depth)
            ]
        )
        self.norm = nnx.LayerNorm(hidden_size, use_scale=False, use_bias=False, epsilon=1e-6, **kw)
        self.ada_final = nnx.Linear(hidden_size, 2 * hidden_size, kernel_init=_ZERO, **kw)
        self.head = nnx.Linear(hidden_size, vocab_size, kernel_init=_ZERO, **kw)

    def __call__(
        self,
        x: Int[Array, "batch length"],
        t: Time,
        *,
        s: Time | None = None,
        y: Labels | None = None,
        context: Float[Array, "batch *context"] | None = None,
        features: Float[Array, "batch length feat"] | None = None,
        key: Key | None = None,
    ) -> Float[Array, "batch length vocab"]:
        """Logits (B, L, vocab_size) of x1 given x_t = x; `key` turns dropout on.

        `x` is int token ids (B, L), or a float array (B, L, F) with F <= num_states (a point
        near the one-hot simplex, for continuous flow matching on one-hot vectors), embedded
        as x @ E[:F]: for a one-hot x this is exactly the id lookup.
        """
        x = jnp.asarray(x)
        soft = jnp.issubdtype(x.dtype, jnp.floating) and x.ndim == 3
        if not soft and not jnp.issubdtype(x.dtype, jnp.integer):
            raise TypeError(
                f"TokenTransformer expects integer token ids (B, L) or float one-hot vectors "
                f"(B, L, F); got dtype {x.dtype} with shape {x.shape}"
            )
        if x.ndim != 2 + soft or x.shape[1:2] != self.input_shape:
            raise ValueError(
                f"TokenTransformer expects x of shape (B, {self.input_shape[0]}); got {x.shape}"
            )
        if soft and x.shape[2] > self.num_states:
            raise ValueError(
                f"TokenTransformer: one-hot input has {x.shape[2]} > num_states="
                f"{self.num_states} channels"
            )
        b = x.shape[0]
        if soft:  # x @ E (the lookup of a one-hot row)
            table = self.embed.embedding[: x.shape[2]]
            h = jnp.einsum("blf,fd->bld", x.astype(table.dtype), table).astype(self.embed.dtype)
        else:
            h = self.embed(x)
        if self.pos is not None:
            h = h + self.pos[...].astype(h.dtype)
        if (features is None) != (self.feature_embed is None):
            raise ValueError("features= is given exactly when the model has token_features")
        if features is not None:
            h = h + self.feature_embed(jnp.asarray(features, h.dtype))
        c = self.cond(t, batch=b, s=s, y=y)
        if self.context_embed is not None:
            if context is None:
                c = c + self.null_context[...].astype(c.dtype)
            else:
                context = jnp.asarray(context)
                if context.shape != (b, *self.context_shape):
                    raise ValueError(
                        f"context must have shape (B, *{self.context_shape}); got {context.shape}"
                    )
                c = c + self.context_embed(context.reshape(b, -1).astype(c.dtype))
        elif context is not None:
            raise ValueError("got a context for a model built without context_shape")
        rngs = dropout_rngs(key)
        for block in self.blocks:
            h = block(h, c, rngs)
        shift, scale = jnp.split(self.ada_final(jax.nn.silu(c)), 2, axis=-1)
        h = self.norm(h) * (1 + scale[:, None]) + shift[:, None]
        return self.head(h).astype(jnp.float32)
