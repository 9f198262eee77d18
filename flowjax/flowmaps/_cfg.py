"""Classifier-free guidance inside flow-map training: label dropout and the guided halves.

Shared by MeanFlow's guided target (`meanflow`) and shortcut models' guided bootstrap
(`shortcut`). The null label is `num_classes` (flowjax models' convention).
"""

from __future__ import annotations

import jax.numpy as jnp

from flowjax.flowmaps._map import FlowMap
from flowjax.objectives._common import check_label_config, check_labels, drop_labels

__all__ = ["cfg_average_velocity", "check_guidance", "labels_for_training"]


def check_guidance(objective, name: str) -> None:
    """num_classes / label_dropout checks (label dropout needs num_classes)."""
    check_label_config(objective.num_classes, objective.label_dropout, name)


def labels_for_training(objective, labels, key, name: str):
    """The batch's labels checked against num_classes, with label dropout applied.

    Objectives built without num_classes pass labels through unchecked (the unguided
    behaviour of before, where labels only reach the model)."""
    if objective.num_classes is None:
        return labels
    labels, _ = check_labels(labels, objective.num_classes, name)
    return drop_labels(key, labels, objective.num_classes, objective.label_dropout)


def cfg_average_velocity(
    X: FlowMap, params, x, s, t, y, *, null_label: int, guidance, context=None
):
    """(1 - w) u(x, s, t | null) + w u(x, s, t | y): CFG (Ho & Salimans 2022, eq. (6), weight
    w - 1 there) of a flow map's average velocity, in one batched call. w = 1 is u(. | y);
    an example whose label is the null label gets u(. | null) whatever w."""
    n = x.shape[0]
    y = jnp.broadcast_to(jnp.asarray(y), (n,))

    def both(a):
        a = jnp.broadcast_to(jnp.asarray(a, x.dtype), (n,))
        return jnp.concatenate([a, a])

    out = X.average_velocity(
        params,
        jnp.concatenate([x, x]),
        both(s),
        both(t),
        y=jnp.concatenate([y, jnp.full_like(y, null_label)]),
        context=None if context is None else jnp.concatenate([context, context]),
    )
    u_c, u_u = out[:n], out[n:]
    w = jnp.asarray(guidance, out.dtype)
    return (1 - w) * u_u + w * u_c
