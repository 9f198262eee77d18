"""Time- (label-, context-) conditioned MLP for vector data (B, D)."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from flowjax._types import Batch, Key, Labels, Time
from flowjax.models._embed import ConditionEmbedding, make_context_embedding, no_context
from flowjax.models._layers import check_input, check_input_shape, dropout_rngs, get_activation

# Named sizes. "base" is the benchmark network (4 hidden layers x 256, as in the torchcfm /
# flow_matching 2D examples); "tiny" is for tests.
VARIANTS: dict[str, dict] = {
    "tiny": dict(width=32, depth=2, freq_dim=16),
    "base": dict(width=256, depth=4),
    "residual": dict(width=256, depth=4, residual=True),
}


class MLP(nnx.Module):
    """v(x, t[, s, y]) for x of shape (B, D).

    The conditioning vector c (time embedding [+ s embedding] [+ label embedding]) is
    concatenated to x at the input; a context (any shape, flattened) modulates c by FiLM
    (`ContextEmbedding`). `residual=False`: `depth` hidden layers
    h <- act(W h + b). `residual=True`: a first layer then `depth - 1` pre-norm residual layers
    h <- h + act(W LN(h) + U act(c)), which also re-inject c at every layer.

    `fourier_features=F > 0` (opt-in; 0, the default, feeds x as it is) replaces the input x
    by [x, sin(w_k x), cos(w_k x)], k = 0..F-1, per coordinate, at the fixed log-spaced
    frequencies w_k = fourier_scale * 2**k (the positional encoding of NeRF, Mildenhall et al.
    2020; Fourier features against the spectral bias of MLPs, Tancik et al. 2020): no
    parameters, so a network with F = 0 is the plain MLP.
    """

    def __init__(
        self,
        input_shape: tuple[int],
        *,
        width: int = 256,
        depth: int = 4,
        activation: str | Callable = "silu",
        residual: bool = False,
        emb_dim: int | None = None,
        freq_dim: int = 64,
        time_scale: float = 1000.0,
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
        dropout: float = 0.0,
        num_classes: int | None = None,
        two_times: bool = False,
        context_shape: tuple[int, ...] | None = None,
        context_mode: str | None = None,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        (dim,) = check_input_shape(input_shape, 1, "MLP", "(D,)")
        if width < 1 or depth < 1:
            raise ValueError(f"MLP: width and depth must be >= 1; got {width=}, {depth=}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLP: dropout must be in [0, 1); got {dropout}")
        if int(fourier_features) < 0 or not float(fourier_scale) > 0:
            raise ValueError(
                f"MLP: need fourier_features >= 0 and fourier_scale > 0; got "
                f"{fourier_features=}, {fourier_scale=}"
            )
        self.input_shape = (dim,)
        self.fourier_features = int(fourier_features)
        self.fourier_scale = float(fourier_scale)
        self.num_classes = num_classes
        self.two_times = bool(two_times)
        self.residual = bool(residual)
        self.act = get_activation(activation)
        emb_dim = emb_dim or width
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.cond = ConditionEmbedding(
            emb_dim,
            freq_dim=freq_dim,
            act=self.act,
            num_classes=num_classes,
            two_times=two_times,
            time_scale=time_scale,
            **kw,
        )
        self.context_shape = None if context_shape is None else tuple(context_shape)
        self.context = make_context_embedding(
            context_shape,
            emb_dim,
            input_shape=self.input_shape,
            context_mode=context_mode,
            act=self.act,
            **kw,
        )
        in_dim = dim * (1 + 2 * self.fourier_features)
        self.dense_in = nnx.Linear(in_dim + emb_dim, width, **kw)
        self.hidden = nnx.List([nnx.Linear(width, width, **kw) for _ in range(depth - 1)])
        if self.residual:
            self.norms = nnx.List([nnx.LayerNorm(width, **kw) for _ in range(depth - 1)])
            self.cond_proj = nnx.List([nnx.Linear(emb_dim, width, **kw) for _ in range(depth - 1)])
        self.dropout = nnx.Dropout(dropout)
        self.dense_out = nnx.Linear(width, dim, **kw)

    def _features(self, x):
        if not self.fourier_features:
            return x
        x = x.astype(jnp.float32)
        w = self.fourier_scale * 2.0 ** jnp.arange(self.fourier_features, dtype=jnp.float32)
        arg = (x[:, :, None] * w).reshape(x.shape[0], -1)
        return jnp.concatenate([x, jnp.sin(arg), jnp.cos(arg)], axis=-1)

    def __call__(
        self,
        x: Batch,
        t: Time,
        *,
        s: Time | None = None,
        y: Labels | None = None,
        context: Float[Array, "batch *C"] | None = None,
        key: Key | None = None,
    ) -> Float[Array, "batch dim"]:
        """Output of the same shape as x, in float32; `key` turns dropout on."""
        x = check_input(x, self.input_shape, "MLP")
        rngs = dropout_rngs(key)
        c = self.cond(t, batch=x.shape[0], s=s, y=y)
        if self.context is None:
            no_context(context, "MLP")
        else:
            c = self.context.modulate(c, context)
        h = self.act(self.dense_in(jnp.concatenate([self._features(x).astype(c.dtype), c], -1)))
        h = self.dropout(h, deterministic=rngs is None, rngs=rngs)
        for i, layer in enumerate(self.hidden):
            if self.residual:
                u = self.act(layer(self.norms[i](h)) + self.cond_proj[i](self.act(c)))
                h = h + self.dropout(u, deterministic=rngs is None, rngs=rngs)
            else:
                h = self.dropout(self.act(layer(h)), deterministic=rngs is None, rngs=rngs)
        return self.dense_out(h).astype(jnp.float32)
