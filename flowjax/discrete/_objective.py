"""The shared part of the discrete objectives: fields, checks, and the draw of (x1, x_t, t).

Objectives are `eqx.Module`s called with the one loss signature `(params, key, batch, *,
model=None) -> (scalar, aux)` (the pattern of fj.objectives: the model is bound as a field or
passed at call time). `model(params, x_t, t, *, y=None, context=None, key=None)` returns logits
(B, L, V) of x1 given x_t, where x_t takes `source.num_states` values (V + 1 with a mask).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp

from flowjax.discrete._path import MixturePath
from flowjax.discrete._sources import AbstractDiscreteSource


class AbstractDiscreteObjective(eqx.Module):
    """Fields: path, source, model (or pass it at call time), time_eps (t ~ U[0, 1 - time_eps]),
    num_classes, label_dropout (null label = num_classes, for classifier-free guidance)."""

    path: MixturePath
    source: AbstractDiscreteSource
    model: Callable | None = eqx.field(default=None, static=True)
    time_eps: float = eqx.field(default=1e-3, static=True)
    num_classes: int | None = eqx.field(default=None, static=True)
    label_dropout: float = eqx.field(default=0.0, static=True)

    def __check_init__(self):
        name = type(self).__name__
        if self.model is not None and not callable(self.model):
            raise TypeError(f"{name}: model must be an apply function, got {self.model!r}")
        if not isinstance(self.path, MixturePath):
            raise TypeError(f"{name}: path must be a fj.discrete.MixturePath, got {self.path!r}")
        if not isinstance(self.source, AbstractDiscreteSource):
            raise TypeError(
                f"{name}: source must be fj.discrete.MaskSource(V) or UniformSource(V), "
                f"got {self.source!r}"
            )
        if not 0.0 <= self.time_eps < 1.0:
            raise ValueError(f"{name}: time_eps must be in [0, 1), got {self.time_eps}")
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ValueError(f"{name}: label_dropout must be in [0, 1], got {self.label_dropout}")
        if self.label_dropout > 0 and self.num_classes is None:
            raise ValueError(f"{name}: label_dropout > 0 needs num_classes (the null label)")

    def draw(self, params, key, batch, model=None, *, antithetic: bool = False):
        """Returns (x1, x_t, t, log p_theta(x1 | x_t) over the states (B, L, S))."""
        name = type(self).__name__
        model = self.model if model is None else model
        if model is None or not callable(model):
            raise TypeError(f"{name}: no model; bind model=... or pass it at call time")
        if not isinstance(batch, Mapping) or "x1" not in batch:
            raise ValueError(f"{name}: batch must be a dict with 'x1' (B, L) int tokens")
        x1 = self.source.check_data(batch["x1"], f"{name}: batch['x1']")
        b = x1.shape[0]
        k_x0, k_t, k_xt, k_drop, k_model = jax.random.split(key, 5)
        u = jax.random.uniform(k_t, (b,))
        if antithetic:  # low-discrepancy times (Kingma et al. 2021, VDM, sec. 5; MDLM sec. 3)
            u = jnp.mod(u[0] + jnp.arange(b) / b, 1.0)
        t = (1.0 - self.time_eps) * u
        x_t = self.path.sample(k_xt, self.source.sample(k_x0, x1.shape), x1, t)

        kwargs = {}
        labels = batch.get("label")
        if self.num_classes is not None:
            if labels is None:
                raise ValueError(f"{name}: num_classes is set but the batch has no 'label'")
            if self.label_dropout > 0:
                drop = jax.random.bernoulli(k_drop, self.label_dropout, labels.shape)
                labels = jnp.where(drop, self.num_classes, labels)
            kwargs["y"] = labels
        if batch.get("context") is not None:
            kwargs["context"] = batch["context"]
        logits = model(params, x_t, t, key=k_model, **kwargs)
        v = self.source.vocab_size
        if getattr(logits, "shape", None) != (*x1.shape, v):
            raise ValueError(
                f"{name}: the model must return logits (B, L, V) = {(*x1.shape, v)}, "
                f"got {getattr(logits, 'shape', type(logits))}"
            )
        log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        extra = self.source.num_states - v
        if extra:  # p_theta(x1 = mask | x_t) = 0
            log_p = jnp.pad(log_p, ((0, 0), (0, 0), (0, extra)), constant_values=-jnp.inf)
        return x1, x_t, t, log_p


def gather(log_p, x):
    """log_p[..., x] for x of shape log_p.shape[:-1]."""
    return jnp.take_along_axis(log_p, x[..., None], axis=-1)[..., 0]
