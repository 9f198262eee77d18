"""Pieces shared by the objectives: the base class, checks, sources, labels and context."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from flowjax.paths import AffinePath
from flowjax.sources import StandardGaussian
from flowjax.sources import check_source as _check_source


class AbstractObjective(eqx.Module):
    """A training loss whose fields are its hyperparameters, checked once at construction.

    `objective(params, key, batch, *, model=None) -> (scalar, aux)`: `model` is the apply
    function `model(params, x, t, *, s=None, y=None, context=None, key=None)`, bound as the
    field `model` or passed at call time (the trainer binds it with functools.partial).
    """

    @abc.abstractmethod
    def __call__(
        self, params, key: PRNGKeyArray, batch: dict, *, model: Callable | None = None
    ) -> tuple[Float[Array, ""], dict]:
        raise NotImplementedError


def default_source():
    """x0 ~ N(0, I): `StandardGaussian().sample` is exactly `jax.random.normal`."""
    return StandardGaussian()


def check_source(source, objective: str) -> None:
    _check_source(source, f"{objective}: source")


def bound_model(field, given, objective: str):
    """The apply function passed at call time, else the one bound as a field."""
    model = field if given is None else given
    if model is None:
        raise TypeError(f"{objective}: no model; bind model=... or pass it at call time")
    check_model(model, objective)
    return model


def draw_x0(source, key, x1, context, objective: str):
    """x0 ~ source (given the batch's context), shaped and typed like x1."""
    x0 = source.sample(key, x1.shape, context=context, dtype=x1.dtype)
    if getattr(x0, "shape", None) != x1.shape:
        raise ValueError(
            f"{objective}: source.sample returned shape {getattr(x0, 'shape', type(x0))}, "
            f"the data batch['x1'] has shape {x1.shape}"
        )
    return jnp.asarray(x0, x1.dtype)


def check_context(batch, x1, objective: str):
    """batch["context"] (B, *C) floating, or None when the batch has none."""
    context = batch.get("context")
    if context is None:
        return None
    context = jnp.asarray(context)
    if not jnp.issubdtype(context.dtype, jnp.floating):
        raise TypeError(f"{objective}: batch['context'] must be floating, got {context.dtype}")
    if context.ndim < 1 or context.shape[0] != x1.shape[0]:
        raise ValueError(
            f"{objective}: batch['context'] must have shape ({x1.shape[0]}, *C) to match "
            f"batch['x1'] {x1.shape}, got {context.shape}"
        )
    return context


def check_dropout(value, name: str, objective: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{objective}: {name} must be a number in [0, 1], got {value!r}")


def with_context(context) -> dict:
    """Keyword arguments carrying the context (none at all without one, so that models
    written before context conditioning keep working)."""
    return {} if context is None else {"context": context}


def check_model(model, objective: str) -> None:
    if not callable(model):
        raise TypeError(
            f"{objective}: model must be an apply function model(params, x, t, *, y=None, "
            f"key=None), got {model!r}"
        )


def check_path(path, objective: str) -> None:
    if not isinstance(path, AffinePath):
        raise TypeError(
            f"{objective}: path must be an AffinePath (e.g. fj.paths.CondOT()), got {path!r}"
        )


def check_label_config(num_classes, label_dropout, objective: str) -> None:
    """Static checks of num_classes / label_dropout."""
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(
            f"{objective}: num_classes must be None or a positive int, got {num_classes!r}"
        )
    if (
        isinstance(label_dropout, bool)
        or not isinstance(label_dropout, (int, float))
        or not (0.0 <= label_dropout <= 1.0)
    ):
        raise ValueError(
            f"{objective}: label_dropout must be a number in [0, 1], got {label_dropout!r}"
        )
    if label_dropout > 0 and num_classes is None:
        raise ValueError(
            f"{objective}: label_dropout={label_dropout} needs num_classes (the null label is "
            "the integer num_classes)"
        )


def check_batch(batch, objective: str):
    """Returns (x1, labels or None) after checking keys, dtypes and shapes."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"{objective}: batch must be a dict with key 'x1', got {type(batch)}")
    if "x1" not in batch:
        raise ValueError(f"{objective}: batch must contain 'x1', got keys {sorted(batch)}")
    x1 = jnp.asarray(batch["x1"])
    if not jnp.issubdtype(x1.dtype, jnp.floating):
        raise TypeError(f"{objective}: batch['x1'] must be floating point, got {x1.dtype}")
    if x1.ndim < 1 or x1.shape[0] == 0:
        raise ValueError(f"{objective}: batch['x1'] must have shape (B, *D), got {x1.shape}")
    labels = batch.get("label")
    if labels is not None:
        labels = jnp.asarray(labels)
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise TypeError(f"{objective}: batch['label'] must be integer, got {labels.dtype}")
        if labels.shape != x1.shape[:1]:
            raise ValueError(
                f"{objective}: batch['label'] must have shape ({x1.shape[0]},) to match "
                f"batch['x1'] {x1.shape}, got {labels.shape}"
            )
    return x1, labels


def check_labels(labels, num_classes, objective: str):
    """Labels against the configuration: present iff num_classes is set, values in range.

    Returns (labels, guard): `guard(loss)` attaches the run-time range check (eqx.error_if)
    to the loss value, which is always used, so the check cannot be removed as dead code.
    """
    labels, bad, msg = label_range(labels, num_classes, objective)
    if not msg:
        return labels, lambda value: value
    return labels, lambda value: eqx.error_if(value, bad, msg)


def label_range(labels, num_classes, objective: str):
    """(labels, bad, message) of `check_labels`: `bad` is True where a label is out of range
    (a run-time scalar), `message` "" without labels."""
    if labels is None:
        if num_classes is not None:
            raise ValueError(
                f"{objective}: configured with num_classes={num_classes} but the batch has no "
                "'label'"
            )
        return None, jnp.zeros((), bool), ""
    if num_classes is None:
        raise ValueError(
            f"{objective}: the batch has 'label' but the objective was configured without "
            "num_classes; pass num_classes=... for a class-conditional model"
        )
    bad = jnp.any((labels < 0) | (labels >= num_classes))
    return labels, bad, f"{objective}: batch['label'] values must lie in [0, {num_classes})"


def drop_labels(key, labels, num_classes, label_dropout):
    """Replaces each label by the null label `num_classes` with probability label_dropout.

    Classifier-free guidance training (Ho & Salimans 2022, alg. 1).
    """
    if labels is None or label_dropout == 0:
        return labels
    drop = jax.random.bernoulli(key, label_dropout, labels.shape)
    return jnp.where(drop, jnp.asarray(num_classes, labels.dtype), labels)


def null_context(context, drop):
    """The context with the examples of a dropout mask `drop` (B,) set to the null context, a
    NaN row (the models' learned null context, as `fj.models.drop_context`; classifier-free
    guidance, Ho & Salimans 2022); unchanged when drop is None."""
    if drop is None:
        return context
    return jnp.where(drop.reshape(drop.shape + (1,) * (context.ndim - 1)), jnp.nan, context)


def call_model(model, params, x, t, labels, key, objective: str, context=None, drop=None):
    """model(x_t, t) with labels and context; the examples of a context-dropout mask `drop`
    (B,) get the null context (see `null_context`)."""
    pred = model(params, x, t, y=labels, key=key, **with_context(null_context(context, drop)))
    check_prediction(pred, x, objective)
    return pred


def check_prediction(pred, x, objective: str) -> None:
    if getattr(pred, "shape", None) != x.shape:
        raise ValueError(
            f"{objective}: the model must return an array of the input's shape {x.shape}, "
            f"got {getattr(pred, 'shape', type(pred))}"
        )


def per_example_mean(sq):
    return jnp.mean(sq.reshape(sq.shape[0], -1), axis=1)


def pair(coupling, key, x0, x1, labels, context):
    """The coupling's pairs; labels and context stay with their x1 (the context rides on the
    coupling's label slot as example indices, so every coupling carries it unchanged)."""
    if context is None:
        x0, x1, labels = coupling(key, x0, x1, labels)
        return x0, x1, labels, None
    x0, x1, index = coupling(key, x0, x1, jnp.arange(x1.shape[0]))
    return x0, x1, None if labels is None else labels[index], context[index]


def context_drop(key, context, context_dropout):
    """A mask (B,) of examples given the null context, or None (no context or no dropout).

    Classifier-free guidance training (Ho & Salimans 2022, alg. 1) with a continuous context.
    The key is folded, so label dropout draws the same labels with and without a context."""
    if context is None or context_dropout == 0:
        return None
    return jax.random.bernoulli(jax.random.fold_in(key, 1), context_dropout, context.shape[:1])


class Draws(NamedTuple):
    """The random pieces of one minibatch that flow matching and diffusion share."""

    x0: Array  # (B, *D) noise from the source, re-paired by the coupling
    x1: Array  # (B, *D) data, re-paired by the coupling
    t: Array  # (B,) training times
    labels: Array | None  # (B,) after label dropout
    context: Array | None  # (B, *C), the dropped examples still holding their context
    drop: Array | None  # (B,) context-dropout mask
    invalid: Array  # () True where a label is out of range (checked on the loss)
    message: str  # the error for `invalid`; "" without labels


def draw(objective, batch, name: str, *, k_x0, k_t, k_drop, coupling=None, k_pair=None) -> Draws:
    """x0 ~ source, the coupling's pairs (when given), label / context dropout and t ~ time_dist.

    `objective` supplies source, path, time_dist, num_classes, label_dropout, context_dropout;
    the keys are the caller's own split, so each objective keeps its random streams.
    """
    x1, labels = check_batch(batch, name)
    context = check_context(batch, x1, name)
    labels, invalid, message = label_range(labels, objective.num_classes, name)
    x0 = draw_x0(objective.source, k_x0, x1, context, name)
    if coupling is not None:
        x0, x1, labels, context = pair(coupling, k_pair, x0, x1, labels, context)
    labels = drop_labels(k_drop, labels, objective.num_classes, objective.label_dropout)
    drop = context_drop(k_drop, context, objective.context_dropout)
    t = objective.time_dist.sample(k_t, x1.shape[:1], objective.path).astype(x1.dtype)
    return Draws(x0, x1, t, labels, context, drop, invalid, message)


class Regression(eqx.Module):
    """One minibatch as a weighted regression of the network: what a Gaussian objective (flow
    matching, diffusion) is once its noise, pairs, times and labels are drawn,

        loss = mean_b weight_b mean_d (model(params, x, t, **model_kwargs)_b - target_b)^2.

    Drawing is cheap and independent of the parameters, so a trainer can draw the problems of
    several objectives and run the network once (see `flowjax.studies.ArmTrainer`).

    Attributes:
      x: the network input (B, *D) (x_t).
      t: the network's time input (B,).
      target: (B, *D).
      weight: per-example weight (B,).
      model_kwargs: the model's keyword arguments (y, key and, with a context, context).
      invalid: a run-time check of the batch (labels out of range), raised on the loss
        (a value always used, so the check is never removed as dead code).
      message: the error of `invalid` ("" for none).
    """

    x: Float[Array, "B *D"]
    t: Float[Array, " B"]
    target: Float[Array, "B *D"]
    weight: Float[Array, " B"]
    model_kwargs: dict
    invalid: Bool[Array, ""] = eqx.field(default_factory=lambda: jnp.zeros((), bool))
    message: str = eqx.field(static=True, default="")

    def predict(self, model, params, objective: str = "regression"):
        """model(params, x, t, **model_kwargs), shape-checked."""
        pred = model(params, self.x, self.t, **self.model_kwargs)
        check_prediction(pred, self.x, objective)
        return pred

    def loss(self, pred) -> tuple[Float[Array, ""], Float[Array, " B"], Float[Array, " B"]]:
        """(loss, weighted per-example loss (B,), unweighted per-example MSE (B,))."""
        mse = per_example_mean((pred - self.target) ** 2)
        per_example = self.weight * mse
        value = jnp.mean(per_example)
        if self.message:
            value = eqx.error_if(value, self.invalid, self.message)
        return value, per_example, mse


def regression(d: Draws, x, target, weight, key) -> Regression:
    """The Regression of draws `d` at network input x, target and weight."""
    model_kwargs = {"y": d.labels, "key": key, **with_context(null_context(d.context, d.drop))}
    return Regression(x, d.t, target, weight, model_kwargs, d.invalid, d.message)
