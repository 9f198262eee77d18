"""U-Net of the DDPM / ADM family for NHWC images (Ho et al. 2020; Dhariwal & Nichol 2021)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from flowjax._types import Batch, Key, Labels, Time
from flowjax.models._embed import ConditionEmbedding, make_context_embedding, no_context
from flowjax.models._layers import (
    SelfAttention,
    check_input,
    check_input_shape,
    dropout_rngs,
    get_activation,
)

# DDPM initialises every conv/dense with variance_scaling(1, fan_avg, uniform) and the last
# layer of each residual branch with zeros (init_scale=0), so every block starts as identity.
_DEFAULT_INIT = nnx.initializers.variance_scaling(1.0, "fan_avg", "uniform")
_ZERO_INIT = nnx.initializers.zeros_init()

# Named sizes. `cifar10` is exactly the DDPM CIFAR-10 network (Ho et al. 2020, appendix B:
# 35.7M parameters); `digits` suits the 8x8 sklearn digits; `tiny` is for tests.
VARIANTS: dict[str, dict] = {
    "tiny": dict(
        ch=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_groups=2, dropout=0.0
    ),
    "digits": dict(
        ch=32, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(4,), num_groups=8, dropout=0.1
    ),
    "cifar10": dict(
        ch=128,
        ch_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attn_resolutions=(16,),
        num_groups=32,
        dropout=0.1,
    ),
}


class ResBlock(nnx.Module):
    """GroupNorm-act-conv, + dense(act(emb)), GroupNorm-act-dropout-conv(zero init), + skip."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        *,
        num_groups: int,
        dropout: float,
        scale_shift: bool,
        act: Callable,
        dtype,
        param_dtype,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.act = act
        self.scale_shift = scale_shift
        self.norm1 = nnx.GroupNorm(in_ch, num_groups, **kw)
        self.conv1 = nnx.Conv(in_ch, out_ch, (3, 3), kernel_init=_DEFAULT_INIT, **kw)
        self.emb_proj = nnx.Linear(
            emb_dim, out_ch * (2 if scale_shift else 1), kernel_init=_DEFAULT_INIT, **kw
        )
        self.norm2 = nnx.GroupNorm(out_ch, num_groups, **kw)
        self.dropout = nnx.Dropout(dropout)
        self.conv2 = nnx.Conv(out_ch, out_ch, (3, 3), kernel_init=_ZERO_INIT, **kw)
        # DDPM's "nin_shortcut": a 1x1 conv when the width changes.
        self.skip = (
            nnx.Conv(in_ch, out_ch, (1, 1), kernel_init=_DEFAULT_INIT, **kw)
            if in_ch != out_ch
            else None
        )

    def __call__(self, x, emb, rngs):
        h = self.conv1(self.act(self.norm1(x)))
        e = self.emb_proj(self.act(emb))[:, None, None, :]
        if self.scale_shift:
            # ADM's "use_scale_shift_norm": GroupNorm(h) * (1 + scale) + shift.
            scale, shift = jnp.split(e, 2, axis=-1)
            h = self.act(self.norm2(h) * (1 + scale) + shift)
        else:
            h = self.act(self.norm2(h + e))
        h = self.conv2(self.dropout(h, deterministic=rngs is None, rngs=rngs))
        return (x if self.skip is None else self.skip(x)) + h


class AttnBlock(nnx.Module):
    """Residual self-attention over the H*W positions, output projection zero-initialised."""

    def __init__(self, ch: int, *, num_groups: int, num_heads: int, dtype, param_dtype, rngs):
        self.norm = nnx.GroupNorm(ch, num_groups, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.attn = SelfAttention(
            ch,
            num_heads,
            kernel_init=_DEFAULT_INIT,
            out_kernel_init=_ZERO_INIT,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, x):
        b, h, w, c = x.shape
        return x + self.attn(self.norm(x).reshape(b, h * w, c)).reshape(b, h, w, c)


class Stage(nnx.Module):
    """A residual block, followed by attention at the resolutions that ask for it."""

    def __init__(self, res: ResBlock, attn: AttnBlock | None):
        self.res = res
        self.attn = attn

    def __call__(self, x, emb, rngs):
        h = self.res(x, emb, rngs)
        return h if self.attn is None else self.attn(h)


class Downsample(nnx.Module):
    """3x3 convolution with stride 2 (DDPM `resamp_with_conv=True`)."""

    def __init__(self, ch: int, *, dtype, param_dtype, rngs):
        self.conv = nnx.Conv(
            ch,
            ch,
            (3, 3),
            strides=2,
            kernel_init=_DEFAULT_INIT,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, x):
        return self.conv(x)


class Upsample(nnx.Module):
    """Nearest-neighbour x2 then a 3x3 convolution."""

    def __init__(self, ch: int, *, dtype, param_dtype, rngs):
        self.conv = nnx.Conv(
            ch,
            ch,
            (3, 3),
            kernel_init=_DEFAULT_INIT,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, x):
        return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


class UNet(nnx.Module):
    """DDPM/ADM U-Net on NHWC images (Ho et al. 2020, appendix B; Dhariwal & Nichol 2021).

    Layout as in DDPM's `diffusion_utils` model: conv_in; per level `num_res_blocks`
    residual blocks (with attention where the feature map's height is in `attn_resolutions`)
    then a strided-conv downsample; middle res-attn-res; per level upward `num_res_blocks + 1`
    residual blocks on [h, skip] then a nearest+conv upsample; GroupNorm-act-conv out, with
    the output conv zero-initialised (so the network outputs exactly 0 at initialisation).
    The conditioning vector (time [+ s] [+ label], width 4 ch) enters every residual block;
    a context of the image's size is concatenated to x at the input, any other context
    modulates the conditioning vector by FiLM (`ContextEmbedding`).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        *,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        num_groups: int = 32,
        num_heads: int = 1,
        scale_shift: bool = False,
        out_channels: int | None = None,
        activation: str | Callable = "silu",
        time_scale: float = 1000.0,
        num_classes: int | None = None,
        two_times: bool = False,
        context_shape: tuple[int, ...] | None = None,
        context_mode: str | None = None,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        height, width, in_ch = check_input_shape(input_shape, 3, "UNet", "(H, W, C), NHWC")
        ch_mult = tuple(int(m) for m in ch_mult)
        levels = len(ch_mult)
        if levels < 1 or num_res_blocks < 1 or ch < 1:
            raise ValueError(
                f"UNet: need ch >= 1, len(ch_mult) >= 1 and num_res_blocks >= 1; got {ch=}, "
                f"{ch_mult=}, {num_res_blocks=}"
            )
        factor = 2 ** (levels - 1)
        if height % factor or width % factor:
            raise ValueError(
                f"UNet: input H, W = {height}, {width} must be divisible by 2**(len(ch_mult) - 1) "
                f"= {factor} for ch_mult={ch_mult}"
            )
        bad = [c for c in {ch * m for m in ch_mult} if c % num_groups]
        if bad:
            raise ValueError(f"UNet: num_groups={num_groups} must divide every width; not {bad}")
        resolutions = [height // 2**i for i in range(levels)]
        if not set(attn_resolutions) <= set(resolutions):
            raise ValueError(
                f"UNet: attn_resolutions={tuple(attn_resolutions)} must be among the feature-map "
                f"heights {resolutions} of this input and ch_mult"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"UNet: dropout must be in [0, 1); got {dropout}")

        self.input_shape = (height, width, in_ch)
        self.num_classes = num_classes
        self.two_times = bool(two_times)
        self.levels = levels
        self.num_res_blocks = num_res_blocks
        self.act = act = get_activation(activation)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        emb_dim = 4 * ch
        self.cond = ConditionEmbedding(
            emb_dim,
            freq_dim=ch,
            act=act,
            num_classes=num_classes,
            two_times=two_times,
            time_scale=time_scale,
            kernel_init=_DEFAULT_INIT,
            **kw,
        )
        self.context_shape = None if context_shape is None else tuple(context_shape)
        self.context = make_context_embedding(
            context_shape,
            emb_dim,
            input_shape=self.input_shape,
            context_mode=context_mode,
            act=act,
            **kw,
        )
        extra = 0 if self.context is None else self.context.extra_channels
        block_kw = dict(
            num_groups=num_groups, dropout=dropout, scale_shift=scale_shift, act=act, **kw
        )

        def stage(cin, cout, res):
            attn = (
                AttnBlock(cout, num_groups=num_groups, num_heads=num_heads, **kw)
                if res in attn_resolutions
                else None
            )
            return Stage(ResBlock(cin, cout, emb_dim, **block_kw), attn)

        self.conv_in = nnx.Conv(in_ch + extra, ch, (3, 3), kernel_init=_DEFAULT_INIT, **kw)
        skip_chs, cur = [ch], ch
        down, downsample = [], []
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                down.append(stage(cur, ch * mult, resolutions[level]))
                cur = ch * mult
                skip_chs.append(cur)
            if level != levels - 1:
                downsample.append(Downsample(cur, **kw))
                skip_chs.append(cur)
        self.down = nnx.List(down)
        self.downsample = nnx.List(downsample)

        self.mid_res1 = ResBlock(cur, cur, emb_dim, **block_kw)
        self.mid_attn = AttnBlock(cur, num_groups=num_groups, num_heads=num_heads, **kw)
        self.mid_res2 = ResBlock(cur, cur, emb_dim, **block_kw)

        up, upsample = [], []
        for level in reversed(range(levels)):
            for _ in range(num_res_blocks + 1):
                cout = ch * ch_mult[level]
                up.append(stage(cur + skip_chs.pop(), cout, resolutions[level]))
                cur = cout
            if level != 0:
                upsample.append(Upsample(cur, **kw))
        self.up = nnx.List(up)
        self.upsample = nnx.List(upsample)

        self.norm_out = nnx.GroupNorm(cur, num_groups, **kw)
        self.conv_out = nnx.Conv(cur, out_channels or in_ch, (3, 3), kernel_init=_ZERO_INIT, **kw)

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
        x = check_input(x, self.input_shape, "UNet", " (NHWC)")
        rngs = dropout_rngs(key)
        emb = self.cond(t, batch=x.shape[0], s=s, y=y)
        if self.context is None:
            no_context(context, "UNet")
        else:
            emb = self.context.modulate(emb, context)
            x = self.context.concat(x, context)

        h = self.conv_in(x)
        hs = [h]
        blocks = iter(self.down)
        for level in range(self.levels):
            for _ in range(self.num_res_blocks):
                h = next(blocks)(h, emb, rngs)
                hs.append(h)
            if level != self.levels - 1:
                h = self.downsample[level](h)
                hs.append(h)

        h = self.mid_res2(self.mid_attn(self.mid_res1(h, emb, rngs)), emb, rngs)

        blocks = iter(self.up)
        for i, level in enumerate(reversed(range(self.levels))):
            for _ in range(self.num_res_blocks + 1):
                h = next(blocks)(jnp.concatenate([h, hs.pop()], axis=-1), emb, rngs)
            if level != 0:
                h = self.upsample[i](h)

        h = self.conv_out(self.act(self.norm_out(h)))
        return h.astype(jnp.float32)
