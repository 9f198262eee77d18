"""Building blocks shared by the networks: activations, attention, input checks, dropout rngs."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

_LECUN = nnx.initializers.lecun_normal()

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "selu": jax.nn.selu,
    "elu": jax.nn.elu,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
}


def get_activation(activation: str | Callable[[Array], Array]) -> Callable[[Array], Array]:
    """An activation by name (see `ACTIVATIONS`) or the callable itself."""
    if callable(activation):
        return activation
    try:
        return ACTIVATIONS[activation]
    except KeyError:
        raise ValueError(
            f"unknown activation {activation!r}; valid names: {sorted(ACTIVATIONS)}"
        ) from None


def dropout_rngs(key) -> nnx.Rngs | None:
    """Dropout randomness built inside the call from `key`, so the module holds no RNG state.

    `key=None` means deterministic (no dropout). Each dropout layer draws its own key from the
    returned stream in call order, so the masks are a deterministic function of `key`.
    """
    return None if key is None else nnx.Rngs(dropout=key)


def check_input(x, input_shape: tuple[int, ...], model: str, layout: str = "") -> Array:
    """Checks x has shape (B, *input_shape), raising a ValueError that says what was expected."""
    x = jnp.asarray(x)
    if x.ndim != 1 + len(input_shape) or tuple(x.shape[1:]) != tuple(input_shape):
        expected = ", ".join(["B", *map(str, input_shape)])
        raise ValueError(
            f"{model} expects x of shape ({expected}){layout} (rank {1 + len(input_shape)}); "
            f"got shape {tuple(x.shape)} (rank {x.ndim})"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{model} expects floating-point x; got dtype {x.dtype}")
    return x


def check_input_shape(input_shape, rank: int, model: str, layout: str) -> tuple[int, ...]:
    """Validates a constructor's `input_shape` (without the batch axis)."""
    try:
        shape = tuple(int(d) for d in input_shape)
    except TypeError:
        raise TypeError(
            f"{model}: input_shape must be a tuple of ints; got {input_shape!r}"
        ) from None
    if len(shape) != rank or any(d < 1 for d in shape):
        raise ValueError(
            f"{model}: input_shape must be {layout} ({rank} positive ints, no batch axis); "
            f"got {input_shape!r}"
        )
    return shape


class SelfAttention(nnx.Module):
    """Multi-head self-attention over tokens (B, T, C) with a fused qkv projection."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kernel_init: Callable = _LECUN,
        out_kernel_init: Callable | None = None,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the attention width {dim}")
        self.num_heads = num_heads
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.qkv = nnx.Linear(dim, 3 * dim, kernel_init=kernel_init, **kw)
        self.proj = nnx.Linear(dim, dim, kernel_init=out_kernel_init or kernel_init, **kw)

    def __call__(self, x: Float[Array, "batch tokens dim"]) -> Float[Array, "batch tokens dim"]:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        # softmax(q k^T / sqrt(head_dim)) v (Vaswani et al. 2017, eq. 1); fused where available.
        out = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
        return self.proj(out.reshape(b, n, c))
