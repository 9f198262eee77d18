"""Diffusion Transformer with adaLN-Zero conditioning (Peebles & Xie 2023)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from flowjax._types import Batch, Key, Labels, Time
from flowjax.models._embed import ConditionEmbedding, make_context_embedding, no_context
from flowjax.models._layers import SelfAttention, check_input, check_input_shape, dropout_rngs

_XAVIER = nnx.initializers.xavier_uniform()
_ZERO_INIT = nnx.initializers.zeros_init()

# Peebles & Xie 2023, Table 1 (depth, hidden size, heads) with patch size p in the name.
VARIANTS: dict[str, dict] = {
    "tiny": dict(depth=2, hidden_size=32, num_heads=2, patch_size=2, freq_dim=32),
    "S/2": dict(depth=12, hidden_size=384, num_heads=6, patch_size=2),
    "S/4": dict(depth=12, hidden_size=384, num_heads=6, patch_size=4),
    "B/2": dict(depth=12, hidden_size=768, num_heads=12, patch_size=2),
    "B/4": dict(depth=12, hidden_size=768, num_heads=12, patch_size=4),
    "L/2": dict(depth=24, hidden_size=1024, num_heads=16, patch_size=2),
    "XL/2": dict(depth=28, hidden_size=1152, num_heads=16, patch_size=2),
}


@functools.lru_cache(maxsize=16)
def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """Fixed 2D sin-cos position embedding (grid_h * grid_w, dim), as in MAE/DiT.

    Half the channels encode the column, half the row, each as [sin, cos] of
    pos / 10000^(2i/(dim/2)) (Vaswani et al. 2017, sec. 3.5).
    """
    if dim % 4:
        raise ValueError(f"the 2D sin-cos position embedding needs dim % 4 == 0; got {dim}")

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    # MAE/DiT order: meshgrid(w, h), first half of channels from the w (column) coordinate.
    gw, gh = np.meshgrid(np.arange(grid_w, dtype=np.float64), np.arange(grid_h, dtype=np.float64))
    emb = np.concatenate([one_d(dim // 2, gw), one_d(dim // 2, gh)], axis=1)
    emb = emb.astype(np.float32)
    emb.setflags(write=False)
    return emb


def _modulate(x, shift, scale):
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class DiTBlock(nnx.Module):
    """Transformer block with adaLN-Zero (Peebles & Xie 2023, sec. 3.2, Fig. 3).

    The six modulation vectors (shift, scale, gate for attention and MLP) are regressed from
    c by a zero-initialised linear layer, so every block is the identity at initialisation.
    """

    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float, dropout: float, *, kw):
        ln = dict(use_scale=False, use_bias=False, epsilon=1e-6, dtype=kw["dtype"])
        ln["param_dtype"], ln["rngs"] = kw["param_dtype"], kw["rngs"]
        self.norm1 = nnx.LayerNorm(hidden, **ln)
        self.attn = SelfAttention(hidden, num_heads, kernel_init=_XAVIER, **kw)
        self.norm2 = nnx.LayerNorm(hidden, **ln)
        mlp_hidden = int(hidden * mlp_ratio)
        self.fc1 = nnx.Linear(hidden, mlp_hidden, kernel_init=_XAVIER, **kw)
        self.fc2 = nnx.Linear(mlp_hidden, hidden, kernel_init=_XAVIER, **kw)
        self.ada_ln = nnx.Linear(hidden, 6 * hidden, kernel_init=_ZERO_INIT, **kw)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x, c, rngs):
        mod = self.ada_ln(jax.nn.silu(c))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(mod, 6, -1)
        h = self.attn(_modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_msa[:, None, :] * self.dropout(h, deterministic=rngs is None, rngs=rngs)
        h = self.fc2(jax.nn.gelu(self.fc1(_modulate(self.norm2(x), shift_mlp, scale_mlp))))
        return x + gate_mlp[:, None, :] * self.dropout(h, deterministic=rngs is None, rngs=rngs)


class DiT(nnx.Module):
    """DiT (Peebles & Xie 2023) on NHWC inputs (images or latents).

    patchify (p x p patches, linear embedding) + fixed 2D sin-cos positions -> `depth`
    adaLN-Zero blocks conditioned on c = emb(t) [+ emb(s)] [+ label] -> final adaLN + linear
    -> unpatchify. A context of the image's size is concatenated to x before patchifying;
    any other context modulates c by FiLM (`ContextEmbedding`). The final layer is
    zero-initialised, so the output is exactly 0 at initialisation. The position embedding is
    a constant, not a parameter (the paper's parameter counts include it: PyTorch's
    `model.parameters()` lists the frozen buffer).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        *,
        patch_size: int = 2,
        hidden_size: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        freq_dim: int = 256,
        dropout: float = 0.0,
        out_channels: int | None = None,
        time_scale: float = 1000.0,
        num_classes: int | None = None,
        two_times: bool = False,
        context_shape: tuple[int, ...] | None = None,
        context_mode: str | None = None,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        height, width, in_ch = check_input_shape(input_shape, 3, "DiT", "(H, W, C), NHWC")
        p = int(patch_size)
        if p < 1 or height % p or width % p:
            raise ValueError(f"DiT: patch_size={patch_size} must divide H, W = {height}, {width}")
        if hidden_size % 4 or hidden_size % num_heads:
            raise ValueError(
                f"DiT: hidden_size={hidden_size} must be divisible by 4 (2D sin-cos positions) "
                f"and by num_heads={num_heads}"
            )
        if depth < 1:
            raise ValueError(f"DiT: depth must be >= 1; got {depth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"DiT: dropout must be in [0, 1); got {dropout}")
        self.input_shape = (height, width, in_ch)
        self.num_classes = num_classes
        self.two_times = bool(two_times)
        self.patch_size = p
        self.hidden_size = hidden_size
        self.out_channels = out_channels or in_ch
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.context_shape = None if context_shape is None else tuple(context_shape)
        self.context = make_context_embedding(
            context_shape,
            hidden_size,
            input_shape=self.input_shape,
            context_mode=context_mode,
            act=jax.nn.silu,
            **kw,
        )
        in_ch = in_ch + (0 if self.context is None else self.context.extra_channels)
        # DiT's PatchEmbed is a p x p stride-p conv; a linear map of flattened patches is the
        # same function, initialised the same way (xavier on the flattened kernel).
        self.patch_embed = nnx.Linear(p * p * in_ch, hidden_size, kernel_init=_XAVIER, **kw)
        self.cond = ConditionEmbedding(
            hidden_size,
            freq_dim=freq_dim,
            act=jax.nn.silu,
            num_classes=num_classes,
            two_times=two_times,
            time_scale=time_scale,
            kernel_init=nnx.initializers.normal(0.02),
            label_init=nnx.initializers.normal(0.02),
            **kw,
        )
        self.blocks = nnx.List(
            [DiTBlock(hidden_size, num_heads, mlp_ratio, dropout, kw=kw) for _ in range(depth)]
        )
        self.norm_final = nnx.LayerNorm(
            hidden_size, use_scale=False, use_bias=False, epsilon=1e-6, **kw
        )
        self.ada_ln_final = nnx.Linear(hidden_size, 2 * hidden_size, kernel_init=_ZERO_INIT, **kw)
        self.linear_final = nnx.Linear(
            hidden_size, p * p * self.out_channels, kernel_init=_ZERO_INIT, **kw
        )

    def __call__(
        self,
        x: Batch,
        t: Time,
        *,
        s: Time | None = None,
        y: Labels | None = None,
        context: Float[Array, "batch *C"] | None = None,
        key: Key | None = None,
    ) -> Float[Array, "batch height width channels"]:
        """Output (B, H, W, out_channels) in float32; `key` turns dropout on."""
        x = check_input(x, self.input_shape, "DiT", " (NHWC)")
        rngs = dropout_rngs(key)
        c = self.cond(t, batch=x.shape[0], s=s, y=y)
        if self.context is None:
            no_context(context, "DiT")
        else:
            c = self.context.modulate(c, context)
            x = self.context.concat(x, context)
        b, height, width, c_in = x.shape
        p, gh, gw = self.patch_size, height // self.patch_size, width // self.patch_size

        patches = x.reshape(b, gh, p, gw, p, c_in).transpose(0, 1, 3, 2, 4, 5)
        h = self.patch_embed(patches.reshape(b, gh * gw, p * p * c_in))
        h = h + jnp.asarray(sincos_pos_embed_2d(self.hidden_size, gh, gw), h.dtype)
        for block in self.blocks:
            h = block(h, c, rngs)

        shift, scale = jnp.split(self.ada_ln_final(jax.nn.silu(c)), 2, axis=-1)
        h = self.linear_final(_modulate(self.norm_final(h), shift, scale))
        out = h.reshape(b, gh, gw, p, p, self.out_channels).transpose(0, 1, 3, 2, 4, 5)
        return out.reshape(b, height, width, self.out_channels).astype(jnp.float32)
