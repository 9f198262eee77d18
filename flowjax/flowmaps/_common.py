"""Checks, time-pair sampling and reductions shared by the flow-map objectives."""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.flowmaps._map import FlowMap

# Batch, path, source and context handling are the same for every objective.
from flowjax.objectives._common import AbstractObjective as AbstractObjective
from flowjax.objectives._common import bound_model as bound_model
from flowjax.objectives._common import check_batch as check_batch
from flowjax.objectives._common import check_context as check_context
from flowjax.objectives._common import check_path as check_path
from flowjax.objectives._common import check_source as check_source
from flowjax.objectives._common import default_source as default_source
from flowjax.objectives._common import draw_x0 as draw_x0
from flowjax.objectives._common import with_context
from flowjax.objectives.timesteps import AbstractTimeDist, Uniform, resolve_time_dist
from flowjax.paths import AffinePath


def check_model(model, objective: str) -> None:
    if model is not None and not callable(model):
        raise TypeError(
            f"{objective}: model must be a two-time apply function "
            f"model(params, x, t, *, s=None, y=None, key=None), got {model!r}"
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


def check_common(objective, name: str) -> None:
    """The checks every flow-map objective shares: path, model (if bound), source."""
    check_path(objective.path, name)
    check_model(objective.model, name)
    check_source(objective.source, name)


def conditions(labels, context) -> dict:
    """Keyword arguments carrying the batch's labels (y=) and context (context=), if any."""
    return ({} if labels is None else {"y": labels}) | with_context(context)


def with_labels(fn: Callable, labels, context=None) -> Callable:
    """fn itself, or fn with the batch's labels (`y=`) and context bound."""
    kwargs = conditions(labels, context)
    return functools.partial(fn, **kwargs) if kwargs else fn


def take(labels, sl):
    return None if labels is None else labels[sl]


def read_batch(batch, name: str):
    """(x1, labels or None, context or None) of a checked batch."""
    x1, labels = check_batch(batch, name)
    return x1, labels, check_context(batch, x1, name)


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


# ----------------------------------------------------- shared by LMD and EMD (map distillation)

DIRECTIONS = ("forward", "both")


def check_map_distillation(objective, name: str) -> None:
    """The construction checks of LMD and EMD: path, model, source, teacher, directions."""
    check_common(objective, name)
    check_teacher(objective.teacher, name)
    check_choice(objective.directions, "directions", DIRECTIONS, name)


def map_distillation_points(objective, key, batch: dict, name: str):
    """The draw of LMD and EMD (Boffi et al. 2024): x0 ~ source, times s, t from `time_dist`
    (sorted to s <= t when directions == "forward") and the path point x_s.

    Returns (x_s, s, t, the batch's conditions (y=, context=), the teacher with them bound,
    key for the model).
    """
    path = objective.path
    x1, labels, context = read_batch(batch, name)
    k_x0, k_t, k_model = jax.random.split(key, 3)
    x0 = draw_x0(objective.source, k_x0, x1, context, name)
    s, t = sample_pairs(
        k_t,
        x1.shape[0],
        dtype=x1.dtype,
        time_dist=objective.time_dist,
        path=path,
        ordered=objective.directions == "forward",
    )
    x_s = path.interpolate(x0, x1, s)
    conds = conditions(labels, context)
    return x_s, s, t, conds, with_labels(objective.teacher, labels, context), k_model


class AbstractMapDistillation(AbstractObjective):
    """LMD and EMD (Boffi et al. 2024): the same fields, checks, draw and reduction; each
    defines its per-example `residual`, whose mean square is the loss.

    Attributes:
      path: the affine path the teacher velocity belongs to.
      teacher: velocity field teacher(x, t, y=None) -> (B, *D).
      model: two-time apply function model(params, x, t, *, s=None, y=None, context=None,
        key=None); None: pass it at call time.
      time_dist: law of each of the two times (object or name in TIME_DISTS).
      directions: "forward" (s <= t) or "both".
      source: what x0 is drawn from (default fj.sources.StandardGaussian()).
    """

    path: AffinePath
    teacher: Callable
    model: Callable | None = eqx.field(static=True, default=None)
    time_dist: AbstractTimeDist = eqx.field(default=Uniform(), converter=resolve_time_dist)
    directions: str = eqx.field(static=True, default="forward")
    source: Any = eqx.field(default_factory=default_source)

    name: ClassVar[str]

    def __check_init__(self):
        check_map_distillation(self, self.name)

    @abc.abstractmethod
    def residual(self, X, params, x_s, s, t, conds: dict, b: Callable, key):
        """(B, *D) residual of the flow map's defining equation at the drawn points."""

    def __call__(
        self, params, key: PRNGKeyArray, batch: dict, *, model: Callable | None = None
    ) -> tuple[Float[Array, ""], dict]:
        X = FlowMap(bound_model(self.model, model, self.name))
        x_s, s, t, conds, b, k_model = map_distillation_points(self, key, batch, self.name)
        per_example = per_example_mse(self.residual(X, params, x_s, s, t, conds, b, k_model))
        value = jnp.mean(per_example)
        return value, {
            "loss": value,
            "gap_mean": jnp.mean(jnp.abs(t - s)),
            "per_example_loss": per_example,
        }
