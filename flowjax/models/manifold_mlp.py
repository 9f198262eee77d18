"""An MLP vector field on a manifold: inputs embedded for the manifold, output tangent.

v(x, t) = P_x MLP([phi(x), c(t, y)]) with phi the manifold's features (the ambient point on
the sphere, (cos, sin) of each angle on the torus, so the field is continuous across the
seam; Chen & Lipman 2024, app. on experimental details) and P_x the projection onto T_xM, so
the output is a tangent vector whatever the weights.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from flowjax._types import Batch, Key, Labels, Time
from flowjax.models._embed import ConditionEmbedding, make_context_embedding, no_context
from flowjax.models._layers import check_input, check_input_shape, dropout_rngs, get_activation

__all__ = ["ManifoldMLP", "VARIANTS", "resolve_manifold"]

# "base" is the size of Chen & Lipman's Earth-data networks (512 wide, 6 layers) halved in
# depth; "tiny" is for tests.
VARIANTS: dict[str, dict] = {
    "tiny": dict(width=32, depth=2, freq_dim=16),
    "small": dict(width=128, depth=3, freq_dim=32),
    "base": dict(width=256, depth=4),
}


def resolve_manifold(manifold, dim: int):
    """A manifold object, or one named "sphere" / "torus" / "euclidean" for points of length
    `dim` (configs name it by a string)."""
    from flowjax import manifolds

    if isinstance(manifold, manifolds.AbstractManifold):
        return manifold
    named = {
        "sphere": lambda: manifolds.Sphere(dim=dim - 1),
        "torus": lambda: manifolds.FlatTorus(dim=dim),
        "euclidean": lambda: manifolds.Euclidean(dim=dim),
    }
    if isinstance(manifold, str) and manifold in named:
        return named[manifold]()
    raise ValueError(
        f"ManifoldMLP: manifold must be a fj.manifolds manifold or one of {sorted(named)}, got "
        f"{manifold!r}"
    )


class ManifoldMLP(nnx.Module):
    """v(x, t[, s, y, context]) in T_xM for x of shape (B, D) on `manifold`."""

    def __init__(
        self,
        input_shape: tuple[int],
        *,
        manifold="sphere",
        width: int = 256,
        depth: int = 4,
        activation: str | Callable = "silu",
        emb_dim: int | None = None,
        freq_dim: int = 64,
        time_scale: float = 1000.0,
        dropout: float = 0.0,
        num_classes: int | None = None,
        two_times: bool = False,
        context_shape: tuple[int, ...] | None = None,
        context_mode: str | None = None,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        (dim,) = check_input_shape(input_shape, 1, "ManifoldMLP", "(D,)")
        if width < 1 or depth < 1:
            raise ValueError(f"ManifoldMLP: width and depth must be >= 1; got {width=}, {depth=}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ManifoldMLP: dropout must be in [0, 1); got {dropout}")
        self.manifold = resolve_manifold(manifold, dim)
        self.manifold.check_dim(dim, "ManifoldMLP", "input_shape")
        self.input_shape = (dim,)
        self.num_classes = num_classes
        self.two_times = bool(two_times)
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
        feat = self.manifold.feature_dim_of(dim)
        self.dense_in = nnx.Linear(feat + emb_dim, width, **kw)
        self.hidden = nnx.List([nnx.Linear(width, width, **kw) for _ in range(depth - 1)])
        self.dropout = nnx.Dropout(dropout)
        self.dense_out = nnx.Linear(width, dim, **kw)

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
        """A tangent vector at each x (float32, shape of x); `key` turns dropout on."""
        x = check_input(x, self.input_shape, "ManifoldMLP")
        rngs = dropout_rngs(key)
        c = self.cond(t, batch=x.shape[0], s=s, y=y)
        if self.context is None:
            no_context(context, "ManifoldMLP")
        else:
            c = self.context.modulate(c, context)
        feats = self.manifold.features(x.astype(jnp.float32)).astype(c.dtype)
        h = self.act(self.dense_in(jnp.concatenate([feats, c], axis=-1)))
        h = self.dropout(h, deterministic=rngs is None, rngs=rngs)
        for layer in self.hidden:
            h = self.dropout(self.act(layer(h)), deterministic=rngs is None, rngs=rngs)
        out = self.dense_out(h).astype(jnp.float32)
        return self.manifold.proju(x.astype(jnp.float32), out)
