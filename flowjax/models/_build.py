"""Model registry, `build_model`, and the functional form `functional(module)`."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax import _registry
from flowjax.models import dit, manifold_mlp, mlp, sequence, token_transformer, unet

# name -> (class, named variants). A new architecture is one entry here.
REGISTRY: dict[str, tuple[type[nnx.Module], dict[str, dict]]] = {
    "mlp": (mlp.MLP, mlp.VARIANTS),
    "unet": (unet.UNet, unet.VARIANTS),
    "dit": (dit.DiT, dit.VARIANTS),
    "token_transformer": (token_transformer.TokenTransformer, token_transformer.VARIANTS),
    "sequence": (sequence.SequenceNet, sequence.VARIANTS),
    "manifold_mlp": (manifold_mlp.ManifoldMLP, manifold_mlp.VARIANTS),
}


def build_model(
    name: str,
    variant: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int | None = None,
    context_shape: tuple[int, ...] | None = None,
    key,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    **overrides,
) -> nnx.Module:
    """Builds a registered network at a named size.

    Args:
      name: architecture, one of `REGISTRY` ("mlp", "unet", "dit").
      variant: named size of that architecture (e.g. "tiny", "cifar10", "S/2").
      input_shape: one example's shape without the batch axis: (D,) or (H, W, C).
      num_classes: real classes for a class-conditional model (label `num_classes` is null).
      context_shape: one example's context shape (no batch axis) for a context-conditioned
        model (`ContextEmbedding`; `context=None` at call time is the learned null context).
      key: PRNG key (or int seed) for the parameter initialisation.
      dtype: compute dtype (e.g. jnp.bfloat16); outputs are float32 regardless.
      param_dtype: parameter dtype.
      **overrides: constructor arguments replacing the variant's (e.g. dropout=0.0,
        two_times=True for a flow-map network).

    Raises:
      ValueError: unknown name or variant (the message lists the valid ones).
      TypeError: an override the architecture does not take (the message lists valid ones).
    """
    cls, variants = _registry.lookup(REGISTRY, name, "model name", "names")
    if variant not in variants:
        raise ValueError(
            f"unknown variant {variant!r} for model {name!r}; valid variants: {list(variants)}"
        )
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "rngs")]
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise TypeError(f"{cls.__name__} takes no argument(s) {unknown}; valid ones: {accepted}")
    kwargs = {**variants[variant], **overrides}
    if context_shape is not None:
        if "context_shape" not in accepted:
            raise TypeError(f"{cls.__name__} takes no context (no context_shape argument)")
        kwargs["context_shape"] = tuple(context_shape)
    return cls(
        input_shape,
        num_classes=num_classes,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=nnx.Rngs(params=key),
        **kwargs,
    )


def functional(module: nnx.Module) -> tuple[Callable, dict]:
    """Splits a model into `(apply_fn, params)` for pure-function training code.

    `params` is the nested dict of parameter arrays (`nnx.to_pure_dict` of the `nnx.Param`
    state; an `nnx.State` of the same structure is accepted too). Any non-parameter state is
    kept static in the closure. `apply_fn(params, x, t, *, s=None, y=None, context=None,
    key=None)` merges
    and calls the module; it is pure, so it works under `jax.jit` and `jax.grad` (w.r.t. params).
    Dropout is on only when a `key` is given, and then is a function of that key.
    """
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def apply_fn(params, x, t, *, s=None, y=None, context=None, key=None):
        model = nnx.merge(graphdef, params, rest)
        if context is None:  # models without a context argument keep working
            return model(x, t, s=s, y=y, key=key)
        return model(x, t, s=s, y=y, context=context, key=key)

    return apply_fn, nnx.to_pure_dict(params)


def param_count(module_or_params) -> int:
    """Number of parameters of a module (concrete or from `nnx.eval_shape`) or a params tree."""
    tree = (
        nnx.state(module_or_params, nnx.Param)
        if isinstance(module_or_params, nnx.Module)
        else module_or_params
    )
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))
