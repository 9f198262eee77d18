"""Everything a run needs, built from a validated config through the registries.

`build(config, devices=None)` returns an `Experiment`: the mesh, dataset spec, model (apply
function and a pure parameter initialiser), source, objective, optimizer, the abstract train
state and its shardings, and the jitted train step. This is the one place where names become
objects (a teacher named by its run directory included). `build(..., objective=False)` is what
`restore` needs: everything but the objective and the train step, so a distilled student
restores without its teacher. Nothing here reads flags or globals.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from flowjax import _registry, couplings, data, models, objectives, paths, sources
from flowjax.objectives import timesteps, weighting
from flowjax.train import sharding as shd
from flowjax.train.checkpoint import abstract_with_shardings
from flowjax.train.optim import make_optimizer
from flowjax.train.state import TrainState, init_state
from flowjax.train.step import make_train_step

__all__ = [
    "DTYPE_MAP",
    "Experiment",
    "build",
    "build_objective",
    "build_path",
    "build_source",
    "objective_kwargs",
    "prediction_kind",
]

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
      source: what x0 is drawn from (`config.source`).
      objective: the `fj.objectives.AbstractObjective` (None when built with objective=False).
      loss_fn: `loss(params, key, batch) -> (scalar, aux)` (None without the objective).
      optimizer, schedule: optax transformation and learning-rate schedule.
      abstract_state: the TrainState as ShapeDtypeStructs carrying shardings.
      state_sharding: NamedShardings of the TrainState.
      train_step: jitted `(state, batches (K, B, ...)) -> (state, metrics (K,))` (None
        without the objective).
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
    source: Any
    objective: Any
    loss_fn: Callable | None
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    abstract_state: Any
    state_sharding: Any
    train_step: Callable | None

    @property
    def local_batch_size(self) -> int:
        return self.config.data.batch_size // jax.process_count()

    @property
    def batch_keys(self) -> tuple[str, ...]:
        """Batch entries the objective reads ("label" only for a class-conditional model,
        "context" only for data with a context)."""
        keys = ("x1", "label") if self.num_classes is not None else ("x1",)
        return keys + (("context",) if _context_shape(self.spec) is not None else ())

    new_state: Callable[[], TrainState]


def _context_shape(spec):
    return getattr(spec, "context_shape", None)


def _model(config, spec):
    build_kwargs = dict(
        input_shape=tuple(spec.shape),
        num_classes=spec.num_classes,
        dtype=DTYPE_MAP[config.model.dtype],
        **config.model.overrides.to_dict(),
    )
    if _context_shape(spec) is not None:
        build_kwargs["context_shape"] = tuple(_context_shape(spec))

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


# A teacher named in objective.kwargs by a run directory becomes a velocity field here, through
# this loader (a lazy registry target: the loader restores a run, which builds a model).
TEACHER_LOADER = "flowjax.flowmaps.teacher:load_teacher"
TEACHER_KEYS = ("teacher",)  # objective fields that take a velocity field

# Objective field -> (config name field, its kwargs field, registry, what) of a component.
_COMPONENTS = {
    "coupling": ("coupling", "coupling_kwargs", couplings.COUPLINGS, "coupling"),
    "time_dist": ("time_dist", "time_dist_kwargs", timesteps.TIME_DISTS, "time distribution"),
    "weighting": ("weighting", "weighting_kwargs", weighting.WEIGHTINGS, "weighting"),
}


class UnloadedTeacher(eqx.Module):
    """Stands in for a teacher named by its run directory while a config is validated."""

    location: str = eqx.field(static=True)

    def __call__(self, x, t, y=None, context=None):
        raise RuntimeError(f"teacher {self.location!r} was not loaded (validate only)")


def unloaded_teacher(location: str, path, devices=None) -> UnloadedTeacher:
    del path, devices
    return UnloadedTeacher(location)


def load_teacher(location: str, path, devices=None):
    """The velocity field of the run at `location`, checked to live on the student's path."""
    teacher = _registry.load(TEACHER_LOADER)(location, devices=devices)
    if repr(path) != repr(teacher.path):
        raise ValueError(
            f"config.objective.path: the teacher {teacher.source} was trained on "
            f"{teacher.path!r}, the student on {path!r}; a flow map of the teacher's field "
            "must start from points of the teacher's path (set the same path)"
        )
    return teacher


def prediction_kind(config) -> str:
    """What the network predicts (`objective.target`, canonical)."""
    return paths.canonical_kind(config.objective.target, "objective.target")


def build_path(config):
    obj = config.objective
    try:
        return _registry.make(paths.PATHS, obj.path, "path", **obj.path_kwargs.to_dict())
    except (TypeError, ValueError) as e:
        raise ValueError(f"config.objective.path_kwargs: {e}") from None


def build_source(config):
    try:
        return sources.make_source(config.source.name, **config.source.kwargs.to_dict())
    except (TypeError, ValueError) as e:
        raise ValueError(f"config.source: {e}") from None


def build_objective(config, spec, *, devices=None, load_teacher: Callable = load_teacher):
    """The objective of a config: every name (a teacher's run directory included) an object.

    The config asks for what it sets: a component name (coupling, time_dist, weighting; ""
    leaves the objective's default), a label or context dropout above 0, a target other than
    "velocity"; the objective must take it (a field of that name) or a one-line ValueError
    names the config field. `config.source` and the path go to every objective.

    Args:
      config: a config of the `default_config()` schema.
      spec: the dataset's `fj.data.DatasetSpec` (its `num_classes`).
      devices: devices the teacher is restored on (default: all).
      load_teacher: `(location, path, devices) -> velocity field` for a teacher named by a
        string; `validate` passes one that reads nothing.
    """
    obj = config.objective
    cls = objectives.get_objective(obj.name)
    fields = {f.name for f in dataclasses.fields(cls)}

    def refuse(field: str, what: str):
        raise ValueError(
            f"config.objective.{field}: objective {obj.name!r} takes no {what} "
            f"(got {obj[field]!r}); its fields: {sorted(fields)}"
        )

    kwargs: dict[str, Any] = {"path": build_path(config), "source": build_source(config)}
    for key, (field, kw_field, registry, what) in _COMPONENTS.items():
        if not obj[field]:
            if obj[kw_field].to_dict():
                _fail_field(f"objective.{kw_field}", f"set, but objective.{field} is not")
            continue
        if key not in fields:
            refuse(field, key)
        try:
            kwargs[key] = _registry.make(registry, obj[field], what, **obj[kw_field].to_dict())
        except (TypeError, ValueError) as e:
            raise ValueError(f"config.objective.{kw_field}: {e}") from None
    if "target" in fields:
        kwargs["target"] = obj.target
    elif prediction_kind(config) != "velocity":
        refuse("target", "target (its network predicts a velocity)")
    for key in ("label_dropout", "context_dropout"):
        if key in fields:
            kwargs[key] = obj[key]
        elif obj[key] > 0:
            refuse(key, key)
    if "num_classes" in fields:
        kwargs["num_classes"] = spec.num_classes
    extra = obj.kwargs.to_dict()
    unknown = sorted(set(extra) - fields)
    if unknown:
        _fail_field(
            f"objective.kwargs.{unknown[0]}",
            f"objective {obj.name!r} has no such field; its fields: {sorted(fields)}",
        )
    for key in TEACHER_KEYS:
        if isinstance(extra.get(key), str):
            if not extra[key]:
                _fail_field(
                    f"objective.kwargs.{key}",
                    "empty; set it to the workdir (or checkpoints/<step> folder) of a trained "
                    f"flowjax run, e.g. --config.objective.kwargs.{key}=/tmp/toy2d_fm",
                )
            try:
                extra[key] = load_teacher(extra[key], kwargs["path"], devices)
            except FileNotFoundError as e:
                _fail_field(f"objective.kwargs.{key}", str(e))
    kwargs.update(extra)
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if f.name not in kwargs:
                _fail_field(f"objective.kwargs.{f.name}", f"objective {obj.name!r} needs it")
    try:
        return cls(**kwargs)  # the objective's own construction checks
    except (TypeError, ValueError) as e:
        raise ValueError(f"config.objective: {e}") from None


def _fail_field(field: str, message: str):
    raise ValueError(f"config.{field}: {message}")


def objective_kwargs(config, spec, devices: Sequence[Any] | None = None) -> tuple[dict, str]:
    """(the objective's fields as keyword arguments, prediction kind); see `build_objective`."""
    objective = build_objective(config, spec, devices=devices)
    kwargs = {f.name: getattr(objective, f.name) for f in dataclasses.fields(objective)}
    return {k: v for k, v in kwargs.items() if v is not None}, prediction_kind(config)


def _scan_unroll(setting: int, mesh: Mesh) -> int | bool:
    """`train.scan_unroll`: 0 is "auto": no loop on CPU, where XLA runs the gradients of
    convolutions inside loops on a slow path (an order of magnitude slower; jax#12868),
    and a rolled loop elsewhere."""
    if setting:
        return setting
    return mesh.devices.flat[0].platform == "cpu" or 1


def build(config, devices: Sequence[Any] | None = None, *, objective: bool = True) -> Experiment:
    """Builds the experiment of a validated config on `devices` (default: all).

    With `objective=False` the objective (and its teacher) and the train step are not built:
    what restoring, sampling and evaluating a checkpoint need.
    """
    mesh = shd.make_mesh(config.mesh.data, config.mesh.fsdp, devices)
    spec = data.spec(config.data.name)
    apply_fn, init_params = _model(config, spec)
    optimizer, schedule = make_optimizer(config.optim, config.train.num_steps)
    num_ema = len(config.ema.decays)
    abstract = jax.eval_shape(lambda: init_state(init_params, optimizer, int(config.seed), num_ema))
    state_sharding = shd.state_shardings(abstract, mesh, min_size=config.mesh.fsdp_min_size)
    loss = loss_fn = train_step = None
    if objective:
        loss = build_objective(config, spec, devices=devices)
        loss_fn = functools.partial(loss, model=apply_fn)
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
        kind=prediction_kind(config),
        path=build_path(config),
        num_classes=spec.num_classes,
        source=build_source(config),
        objective=loss,
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
