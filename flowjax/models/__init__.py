"""Networks for flow matching and diffusion (Flax NNX): MLP, U-Net (DDPM/ADM), DiT.

Every model is called `model(x, t, *, s=None, y=None, context=None, key=None)` with x of
shape (B, *D), t a scalar or (B,), an optional second time s (flow maps; needs
`two_times=True`), optional integer labels y (label `num_classes` is the null label), an
optional float context (B, *context_shape) (built with `context_shape=`; `context=None` or a
NaN row, see `drop_context`, is the learned null context), and `key` turning dropout on.
Outputs are float32 whatever the compute `dtype`.

    model = build_model("unet", "cifar10", input_shape=(32, 32, 3), key=jax.random.key(0))
    apply_fn, params = functional(model)
    v = apply_fn(params, x, t)
"""

from flowjax.models._build import REGISTRY as REGISTRY
from flowjax.models._build import build_model as build_model
from flowjax.models._build import functional as functional
from flowjax.models._build import param_count as param_count
from flowjax.models._embed import ConditionEmbedding as ConditionEmbedding
from flowjax.models._embed import ContextEmbedding as ContextEmbedding
from flowjax.models._embed import TimestepEmbedding as TimestepEmbedding
from flowjax.models._embed import drop_context as drop_context
from flowjax.models._embed import sinusoidal_embedding as sinusoidal_embedding
from flowjax.models.dit import DiT as DiT
from flowjax.models.dit import sincos_pos_embed_2d as sincos_pos_embed_2d
from flowjax.models.mlp import MLP as MLP
from flowjax.models.unet import UNet as UNet

__all__ = [
    "DiT",
    "MLP",
    "REGISTRY",
    "ConditionEmbedding",
    "ContextEmbedding",
    "TimestepEmbedding",
    "UNet",
    "build_model",
    "drop_context",
    "functional",
    "param_count",
    "sincos_pos_embed_2d",
    "sinusoidal_embedding",
]
