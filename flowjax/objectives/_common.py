"""Checks and steps shared by the objectives: batch, labels with dropout, the model call."""

from __future__ import annotations

from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp

from flowjax.paths import AffinePath


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
    if labels is None:
        if num_classes is not None:
            raise ValueError(
                f"{objective}: configured with num_classes={num_classes} but the batch has no "
                "'label'"
            )
        return None, lambda value: value
    if num_classes is None:
        raise ValueError(
            f"{objective}: the batch has 'label' but the objective was configured without "
            "num_classes; pass num_classes=... for a class-conditional model"
        )
    bad = jnp.any((labels < 0) | (labels >= num_classes))
    msg = f"{objective}: batch['label'] values must lie in [0, {num_classes})"
    return labels, lambda value: eqx.error_if(value, bad, msg)


def drop_labels(key, labels, num_classes, label_dropout):
    """Replaces each label by the null label `num_classes` with probability label_dropout.

    Classifier-free guidance training (Ho & Salimans 2022, alg. 1).
    """
    if labels is None or label_dropout == 0:
        return labels
    drop = jax.random.bernoulli(key, label_dropout, labels.shape)
    return jnp.where(drop, jnp.asarray(num_classes, labels.dtype), labels)


def call_model(model, params, x, t, labels, key, objective: str):
    pred = model(params, x, t, y=labels, key=key)
    if getattr(pred, "shape", None) != x.shape:
        raise ValueError(
            f"{objective}: the model must return an array of the input's shape {x.shape}, "
            f"got {getattr(pred, 'shape', type(pred))}"
        )
    return pred


def per_example_mean(sq):
    return jnp.mean(sq.reshape(sq.shape[0], -1), axis=1)
