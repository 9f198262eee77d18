"""Turning models into velocity fields: prediction-kind conversion and classifier-free guidance."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Int

from flowjax.paths import AffinePath, canonical_kind, convert

__all__ = ["as_velocity", "cfg"]


def as_velocity(
    fn: Callable[..., Array],
    kind: str,
    path: AffinePath,
    *,
    t_eps: float = 0.0,
) -> Callable[..., Array]:
    """Wraps a model predicting `kind` on `path` as a velocity field v(x, t, *args, **kwargs).

    The prediction is converted with `fj.paths.convert`. Some kinds are singular at an end of
    the path (eps -> velocity divides by alpha, which is 0 at t = 0 on CondOT; score needs
    sigma > 0 at t = 1): `t_eps > 0` evaluates the model and the conversion at
    t clamped to [t_eps, 1 - t_eps].

    Args:
      fn: fn(x, t, *args, **kwargs) -> prediction of `kind`, shape of x.
      kind: "velocity", "x1", "eps" or "score" (aliases as in `fj.paths.convert`).
      path: the path the model was trained on.
      t_eps: clamp margin for t, in [0, 0.5).
    """
    kind = canonical_kind(kind, "kind")
    if not isinstance(path, AffinePath):
        raise TypeError(f"as_velocity: path must be an AffinePath, got {path!r}")
    if not 0.0 <= float(t_eps) < 0.5:
        raise ValueError(f"as_velocity: t_eps must lie in [0, 0.5), got {t_eps!r}")

    def v(x, t, *args, **kwargs):
        x = jnp.asarray(x)
        t = jnp.asarray(t, x.dtype)
        if t_eps > 0:
            t = jnp.clip(t, t_eps, 1.0 - t_eps)
        pred = fn(x, t, *args, **kwargs)
        return convert(pred, src=kind, dst="velocity", path=path, x=x, t=t)

    return v


def cfg(
    model_fn: Callable[..., Array],
    y: Int[ArrayLike, " B"] | None = None,
    *,
    null_label: int | None = None,
    guidance: float,
    context: ArrayLike | None = None,
) -> Callable[[Array, Array], Array]:
    """Classifier-free guidance (Ho & Salimans 2022) as a field v(x, t).

    v = (1 - w) v_u + w v_c with v_c = model_fn(x, t, y) and v_u = model_fn(x, t, null):
    Ho & Salimans 2022, eq. (6), whose weight is w - 1 here, so w = 1 is exactly the
    conditional model and w = 0 exactly the unconditional one. Both predictions come from
    one batched call (conditional and null labels stacked on the batch axis). Guidance is
    an affine combination, and `convert` is affine in the prediction with the same
    coefficients for both halves, so guiding eps, x1 or score and then converting equals
    guiding the velocity: `as_velocity(cfg(model, y, ...), kind, path)` is correct.

    Args:
      model_fn: model_fn(x, t, y) -> prediction (B, *D); t a scalar or (B,), y int (B,).
        For a flowjax model use `lambda x, t, y: model(x, t, y=y)`.
      y: class labels, shape (B,).
      null_label: the label of the unconditional model (`num_classes` in flowjax).
      guidance: the weight w (scalar; may be a traced array).
      context: a float context (B, *C) instead of (or with) labels: then
        model_fn(x, t, context) (or model_fn(x, t, y, context) with labels too), the null
        context being a NaN row, which flowjax models read as their learned null context
        (`fj.models.drop_context`). For a flowjax model use
        `lambda x, t, c: model(x, t, context=c)`.
    """
    if jnp.ndim(guidance) != 0:
        raise ValueError(f"cfg: guidance must be a scalar, got shape {jnp.shape(guidance)}")
    if y is None and context is None:
        raise ValueError("cfg: give labels y or a context (or both)")
    both = []
    if y is not None:
        y = jnp.asarray(y)
        if y.ndim != 1 or not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(f"cfg: y must be integer labels of shape (B,), got {y.dtype}{y.shape}")
        if isinstance(null_label, bool) or not isinstance(null_label, (int, np.integer)):
            raise TypeError(f"cfg: null_label must be an int (num_classes), got {null_label!r}")
        both.append(jnp.concatenate([y, jnp.full_like(y, null_label)]))
    if context is not None:
        context = jnp.asarray(context)
        if context.ndim < 1 or not jnp.issubdtype(context.dtype, jnp.floating):
            raise ValueError(
                f"cfg: context must be a float array (B, *C), got {context.dtype}{context.shape}"
            )
        if y is not None and context.shape[0] != y.shape[0]:
            raise ValueError(f"cfg: {y.shape[0]} labels but {context.shape[0]} contexts")
        both.append(jnp.concatenate([context, jnp.full_like(context, jnp.nan)]))
    num = (y if y is not None else context).shape[0]

    def v(x, t):
        x = jnp.asarray(x)
        b = x.shape[0]
        if b != num:
            raise ValueError(f"cfg: x has {b} examples but there are {num} labels / contexts")
        t = jnp.asarray(t, x.dtype)
        t_both = jnp.concatenate([t, t]) if t.ndim == 1 else t
        out = model_fn(jnp.concatenate([x, x]), t_both, *both)
        v_c, v_u = out[:b], out[b:]
        w = jnp.asarray(guidance, out.dtype)
        return (1 - w) * v_u + w * v_c

    return v
