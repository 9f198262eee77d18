"""Checks, time-pair sampling and reductions shared by the flow-map objectives."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from flowjax.objectives.timesteps import resolve_time_dist
from flowjax.paths import AffinePath


def check_model(model, objective: str) -> None:
    if not callable(model):
        raise TypeError(
            f"{objective}: model must be a two-time apply function "
            f"model(params, x, t, *, s=None, y=None, key=None), got {model!r}"
        )


def check_path(path, objective: str) -> None:
    if not isinstance(path, AffinePath):
        raise TypeError(
            f"{objective}: path must be an AffinePath (e.g. fj.paths.CondOT()), got {path!r}"
        )


def check_callable_or_none(value, name: str, what: str, objective: str) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{objective}: {name} must be {what} or None, got {value!r}")


def check_teacher(teacher, objective: str) -> None:
    if not callable(teacher):
        raise TypeError(
            f"{objective}: teacher must be a velocity field teacher(x, t) (a trained model "
            f"wrapped as a field, or e.g. gmm.velocity_field(path)), got {teacher!r}"
        )


def check_fraction(value, name: str, objective: str, *, open_upper: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and 0.0 <= value and (value < 1.0 if open_upper else value <= 1.0)
    if not ok:
        rng = "[0, 1)" if open_upper else "[0, 1]"
        raise ValueError(f"{objective}: {name} must be a number in {rng}, got {value!r}")


def check_positive(value, name: str, objective: str, *, integer: bool = False) -> None:
    types = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, types) or not value > 0:
        what = "a positive int" if integer else "a positive number"
        raise ValueError(f"{objective}: {name} must be {what}, got {value!r}")


def check_choice(value, name: str, choices, objective: str) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{objective}: {name} must be one of {sorted(choices)}, got {value!r}")


def check_time_dist(time_dist, objective: str):
    try:
        return resolve_time_dist(time_dist)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{objective}: {err}") from None


def check_batch(batch, objective: str):
    """(x1, labels or None) after checking keys, dtypes and shapes."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"{objective}: batch must be a dict with key 'x1', got {type(batch)}")
    if "x1" not in batch:
        raise ValueError(f"{objective}: batch must contain 'x1', got keys {sorted(batch)}")
    x1 = jnp.asarray(batch["x1"])
    if not jnp.issubdtype(x1.dtype, jnp.floating):
        raise TypeError(f"{objective}: batch['x1'] must be floating point, got {x1.dtype}")
    if x1.ndim < 2 or x1.shape[0] == 0:
        raise ValueError(f"{objective}: batch['x1'] must have shape (B, *D), got {x1.shape}")
    labels = batch.get("label")
    if labels is not None:
        labels = jnp.asarray(labels)
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise TypeError(f"{objective}: batch['label'] must be integer, got {labels.dtype}")
        if labels.shape != x1.shape[:1]:
            raise ValueError(
                f"{objective}: batch['label'] must have shape ({x1.shape[0]},), got {labels.shape}"
            )
    return x1, labels


def with_labels(fn: Callable, labels) -> Callable:
    """fn itself, or fn with `y=labels` bound when the batch carries labels."""
    return fn if labels is None else functools.partial(fn, y=labels)


def take(labels, sl):
    return None if labels is None else labels[sl]


def sample_pairs(key, n: int, *, dtype, time_dist, path, ordered: bool = True):
    """(s, t), each (n,): two independent draws of `time_dist`, sorted to s <= t if ordered."""
    k1, k2 = jax.random.split(key)
    a = time_dist.sample(k1, (n,), path).astype(dtype)
    b = time_dist.sample(k2, (n,), path).astype(dtype)
    if ordered:
        return jnp.minimum(a, b), jnp.maximum(a, b)
    return a, b


def per_example_mse(diff):
    """Mean of squares over all but the batch axis: (B, *D) -> (B,)."""
    return jnp.mean(diff.reshape(diff.shape[0], -1) ** 2, axis=1)


def pseudo_huber(diff, c):
    """sqrt(||d||^2 / D + c^2) - c per example (Song & Dhariwal 2023, iCT)."""
    return jnp.sqrt(per_example_mse(diff) + c**2) - c


DISTANCES = ("l2", "pseudo_huber")


def distance(diff, kind: str, huber_c: float):
    return per_example_mse(diff) if kind == "l2" else pseudo_huber(diff, huber_c)


def split_count(batch_size: int, fraction: float) -> int:
    """round(batch_size * fraction), kept in [1, batch_size - 1] when 0 < fraction < 1."""
    k = int(round(batch_size * fraction))
    if 0.0 < fraction < 1.0 and batch_size >= 2:
        k = min(max(k, 1), batch_size - 1)
    return k


def masked_mean(values, count: int):
    """Mean of a possibly empty term (0 when empty) for the aux dict."""
    return jnp.mean(values) if count > 0 else jnp.zeros((), values.dtype)
