"""Everything a run needs, built from a validated config through the registries.

`build(config, devices=None)` returns an `Experiment`: the mesh, dataset spec, model (apply
function and a pure parameter initialiser), objective, optimizer, the abstract train state
and its shardings, and the jitted train step. Nothing here reads flags or globals.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from flowjax.train import sharding as shd
from flowjax.train.checkpoint import abstract_with_shardings
from flowjax.train.optim import make_optimizer
from flowjax.train.state import TrainState, init_state
from flowjax.train.step import make_train_step

__all__ = ["Experiment", "build", "objective_kwargs", "DTYPE_MAP"]

DTYPE_MAP = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A run's static pieces (no arrays but the abstract state).

    Attributes:
      config: the validated config.
      mesh: the ("data", "fsdp") device mesh.
      spec: `fj.data.DatasetSpec` of the training data.
      apply_fn: `apply_fn(params, x, t, *, s=None, y=None, key=None)`.
      init_params: `key -> params` (pure; jit it).
      kind: what the network predicts ("velocity", "eps", "x1", "score").
      path: the affine path of the objective.
      num_classes: real classes of a class-conditional model, else None.
      loss_fn: `loss(params, key, batch) -> (scalar, aux)`.
      optimizer, schedule: optax transformation and learning-rate schedule.
      abstract_state: the TrainState as ShapeDtypeStructs carrying shardings.
      state_sharding: NamedShardings of the TrainState.
      train_step: jitted `(state, batches (K, B, ...)) -> (state, metrics (K,))`.
      new_state: `() -> TrainState`, a fresh state created directly in its sharding
        (identical on every process).
    """

    config: Any
    mesh: Mesh
    spec: Any
    apply_fn: Callable
    init_params: Callable
    kind: str
    path: Any
    num_classes: int | None
    loss_fn: Callable
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    abstract_state: Any
    state_sharding: Any
    train_step: Callable

    @property
    def local_batch_size(self) -> int:
        return self.config.data.batch_size // jax.process_count()

    @property
    def batch_keys(self) -> tuple[str, ...]:
        """Batch entries the objective reads ("label" only for a class-conditional model)."""
        return ("x1", "label") if self.num_classes is not None else ("x1",)

    new_state: Callable[[], TrainState]


def _model(config, spec):
    from flax import nnx

    from flowjax import models

    build_kwargs = dict(
        input_shape=tuple(spec.shape),
        num_classes=spec.num_classes,
        dtype=DTYPE_MAP[config.model.dtype],
        **config.model.overrides.to_dict(),
    )

    def module(key):
        return models.build_model(config.model.name, config.model.variant, key=key, **build_kwargs)

    # The graph (and apply function) from an abstract module: no parameters are allocated.
    apply_fn, _ = models.functional(nnx.eval_shape(lambda: module(jax.random.key(0))))

    def init_params(key):
        return models.functional(module(key))[1]

    return apply_fn, init_params


# Parameter initialisation runs once: skip LLVM's optimisations, which on CPU otherwise
# spend most of the compile time (several x) on the unrolled RNG of hundreds of tensors.
_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def _state_initializer(init_params, optimizer, num_ema: int, shardings, seed: int):
    compiled = []

    def new_state() -> TrainState:
        # The seed is an argument, not a constant, so XLA cannot constant-fold the RNG.
        seed_arr = np.asarray(seed, np.int32)
        if not compiled:
            fn = jax.jit(
                lambda s: init_state(init_params, optimizer, s, num_ema), out_shardings=shardings
            )
            lowered = fn.lower(seed_arr)
            compiled.append(lowered.compile(compiler_options=_INIT_COMPILER_OPTIONS))
        return compiled[0](seed_arr)

    return new_state


# Objective keyword -> (config field, builder from a name and kwargs field).
def _components():
    from flowjax import couplings, objectives

    return {
        "coupling": ("coupling", couplings.get_coupling, "coupling_kwargs"),
        "time_dist": ("time_dist", objectives.get_time_dist, "time_dist_kwargs"),
        "weighting": ("weighting", objectives.get_weighting, "weighting_kwargs"),
    }


def objective_kwargs(config, spec, devices: Sequence[Any] | None = None) -> tuple[dict, str]:
    """(keyword arguments of the objective, prediction kind of the network).

    A config field the objective does not take must keep its default value; anything else
    is a mistake (e.g. a weighting on flow matching) and raises a ValueError naming it.
    A teacher named by a string in `objective.kwargs` (a run directory of a trained flowjax
    model, for the flow-map distillation objectives) is loaded here, on `devices`.
    """
    from configs import default
    from flowjax import objectives, paths
    from flowjax.flowmaps.teacher import bind_teacher

    obj = config.objective
    accepted = [
        p.name
        for p in inspect.signature(objectives.get_objective(obj.name)).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    defaults = default.get_config().objective
    kwargs: dict[str, Any] = {"path": paths.get_path(obj.path, **obj.path_kwargs.to_dict())}
    for key, (field, builder, kw_field) in _components().items():
        if key in accepted:
            try:
                kwargs[key] = builder(obj[field], **obj[kw_field].to_dict())
            except (TypeError, ValueError) as e:
                raise ValueError(f"config.objective.{kw_field}: {e}") from None
        elif obj[field] != defaults[field] or obj[kw_field].to_dict():
            raise ValueError(
                f"config.objective.{field}: objective {obj.name!r} takes no {key} "
                f"(got {obj[field]!r}); its arguments: {accepted}"
            )
    for key in ("target", "label_dropout"):
        if key in accepted:
            kwargs[key] = obj[key]
        elif obj[key] != defaults[key]:
            raise ValueError(
                f"config.objective.{key}: objective {obj.name!r} takes no {key} "
                f"(got {obj[key]!r}); its arguments: {accepted}"
            )
    if "num_classes" in accepted:
        kwargs["num_classes"] = spec.num_classes
    kwargs.update(obj.kwargs.to_dict())
    kwargs = bind_teacher(kwargs, devices=devices)  # raises a ValueError naming the field
    try:
        objectives.make_objective(obj.name, **kwargs)  # the objective's own early checks
    except (TypeError, ValueError) as e:
        raise ValueError(f"config.objective: {e}") from None
    return kwargs, paths.canonical_kind(kwargs.get("target", "velocity"), "objective.target")


def _scan_unroll(setting: int, mesh: Mesh) -> int | bool:
    """`train.scan_unroll`: 0 is "auto": no loop on CPU, where XLA runs the gradients of
    convolutions inside loops on a slow path (an order of magnitude slower; jax#12868),
    and a rolled loop elsewhere."""
    if setting:
        return setting
    return mesh.devices.flat[0].platform == "cpu" or 1


def build(config, devices: Sequence[Any] | None = None) -> Experiment:
    """Builds the experiment of a validated config on `devices` (default: all)."""
    from flowjax import data, objectives

    mesh = shd.make_mesh(config.mesh.data, config.mesh.fsdp, devices)
    spec = data.spec(config.data.name)
    apply_fn, init_params = _model(config, spec)
    kwargs, kind = objective_kwargs(config, spec, devices)
    loss = objectives.make_objective(config.objective.name, **kwargs)
    loss_fn = functools.partial(loss, model=apply_fn)
    optimizer, schedule = make_optimizer(config.optim, config.train.num_steps)

    num_ema = len(config.ema.decays)
    abstract = jax.eval_shape(lambda: init_state(init_params, optimizer, int(config.seed), num_ema))
    state_sharding = shd.state_shardings(abstract, mesh, min_size=config.mesh.fsdp_min_size)
    train_step = make_train_step(
        loss_fn,
        optimizer,
        schedule,
        mesh=mesh,
        state_sharding=state_sharding,
        ema_decays=config.ema.decays,
        ema_warmup=config.ema.warmup,
        on_nonfinite=config.train.on_nonfinite,
        accum_steps=config.optim.accum_steps,
        unroll=_scan_unroll(config.train.scan_unroll, mesh),
    )
    return Experiment(
        config=config,
        mesh=mesh,
        spec=spec,
        apply_fn=apply_fn,
        init_params=init_params,
        kind=kind,
        path=kwargs["path"],
        num_classes=spec.num_classes,
        loss_fn=loss_fn,
        optimizer=optimizer,
        schedule=schedule,
        abstract_state=abstract_with_shardings(abstract, state_sharding),
        state_sharding=state_sharding,
        train_step=train_step,
        new_state=_state_initializer(
            init_params, optimizer, num_ema, state_sharding, int(config.seed)
        ),
    )
