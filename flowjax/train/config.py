"""The config schema and its validation: every mistake caught before anything is built.

`default_config()` is the schema: every field the trainer reads, with its default value
(`configs/default.py` returns it; experiment configs start from it and override).
`validate(config, num_devices, num_processes)` checks a config against it (missing or
misspelled fields, types), checks every name against the registry that will build it, the
numbers (positive rates, divisible batch sizes, a mesh that fits the devices), and the
objective's own construction checks. It is pure: it reads no file and no checkpoint (a teacher
named by its run directory is only checked to be named; `build` loads it). Each problem raises
a one-line ValueError naming the field by its dotted path and, for names, the valid choices.
"""

from __future__ import annotations

import numbers
from typing import Any

import ml_collections

from flowjax import _registry, data, models, sampling
from flowjax.train.experiment import build_objective, unloaded_teacher

__all__ = ["validate", "NAME_FIELDS", "FREE_FIELDS", "DTYPES", "default_config", "choices"]

# Sub-dicts whose keys are free (passed as keyword arguments to a registered constructor).
FREE_FIELDS = (
    "data.kwargs",
    "model.overrides",
    "objective.path_kwargs",
    "objective.coupling_kwargs",
    "objective.time_dist_kwargs",
    "objective.weighting_kwargs",
    "objective.kwargs",
    "source.kwargs",
)

DTYPES = ("float32", "bfloat16", "float16")


# Field -> registry its value must be a key of (a lazy "module:attr" target, or the names
# themselves). The same registries build the run. OPTIONAL_NAMES may also be "" (the
# objective's own default).
NAME_FIELDS: dict[str, Any] = {
    "data.name": "flowjax.data:DATASETS",
    "model.name": "flowjax.models:REGISTRY",
    "model.dtype": DTYPES,
    "objective.name": "flowjax.objectives:OBJECTIVES",
    "objective.path": "flowjax.paths:PATHS",
    "objective.target": "flowjax.paths:KINDS",
    "objective.coupling": "flowjax.couplings:COUPLINGS",
    "objective.time_dist": "flowjax.objectives:TIME_DISTS",
    "objective.weighting": "flowjax.objectives:WEIGHTINGS",
    "source.name": "flowjax.sources:SOURCES",
    "optim.name": "flowjax.train.optim:OPTIMIZERS",
    "optim.schedule": "flowjax.train.optim:SCHEDULES",
    "train.on_nonfinite": "flowjax.train.step:NONFINITE_POLICIES",
    "eval.solver": "flowjax.sampling:SOLVERS",
    "eval.metric": "flowjax.train.evaluation:METRICS",
}


def default_config() -> ml_collections.ConfigDict:
    """The full default config: every field flowjax's trainer reads, with its default value.

    On its own it trains flow matching on the 2D checkerboard with a small MLP. Names
    (data.name, model.name, objective.*, source.name, optim.name/schedule, eval.solver,
    eval.metric) are keys of the registries listed in `NAME_FIELDS`.
    """
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "checkerboard"  # fj.data.DATASETS
    c.data.batch_size = 256  # global batch, over all devices and processes
    c.data.data_dir = ""  # TFDS data_dir ("" = TFDS default)
    c.data.kwargs = ml_collections.ConfigDict()  # dataset options (e.g. gmm means=)

    c.model = ml_collections.ConfigDict()
    c.model.name = "mlp"  # fj.models.REGISTRY
    c.model.variant = "base"
    c.model.dtype = "float32"  # compute dtype; parameters stay float32
    c.model.overrides = ml_collections.ConfigDict()  # constructor arguments (e.g. dropout)

    c.objective = ml_collections.ConfigDict()
    c.objective.name = "flow_matching"  # fj.objectives.OBJECTIVES
    c.objective.path = "condot"  # fj.paths.PATHS
    c.objective.path_kwargs = ml_collections.ConfigDict()
    c.objective.target = "velocity"  # what the network predicts: velocity, x1, eps, score
    # Components by name; "" leaves the objective's own default (independent coupling,
    # uniform times, uniform weighting). A name is passed to the objective, which must take it.
    c.objective.coupling = ""  # fj.couplings.COUPLINGS (flow matching)
    c.objective.coupling_kwargs = ml_collections.ConfigDict()
    c.objective.time_dist = ""  # fj.objectives.TIME_DISTS
    c.objective.time_dist_kwargs = ml_collections.ConfigDict()
    c.objective.weighting = ""  # fj.objectives.WEIGHTINGS (diffusion)
    c.objective.weighting_kwargs = ml_collections.ConfigDict()
    c.objective.label_dropout = 0.0  # classifier-free guidance training (class-conditional)
    c.objective.context_dropout = 0.0  # the same for a continuous context (null context)
    c.objective.kwargs = ml_collections.ConfigDict()  # further objective arguments

    # What x0 is drawn from (fj.sources.SOURCES), built into Experiment.source.
    c.source = ml_collections.ConfigDict()
    c.source.name = "standard_gaussian"
    c.source.kwargs = ml_collections.ConfigDict()  # e.g. mean=, scale_diag= of "gaussian"

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adamw"
    c.optim.lr = 1e-3
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.schedule = "cosine"  # or "constant" (both after a linear warmup)
    c.optim.warmup_steps = 100
    c.optim.min_lr_ratio = 0.0  # final lr / peak lr of the cosine
    c.optim.grad_clip = 1.0  # global-norm clipping; 0 disables
    c.optim.accum_steps = 1  # gradient accumulation micro-batches per step

    c.ema = ml_collections.ConfigDict()
    c.ema.decays = (0.999,)
    c.ema.warmup = True  # decay min(d, (1 + step) / (10 + step))

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 5000
    c.train.steps_per_dispatch = 10  # optimizer steps per jitted call (lax.scan)
    # lax.scan unroll factor; 0: auto (no loop on CPU, where convolution gradients run
    # ~10x slower inside loops, jax#12868; a rolled loop on GPU/TPU).
    c.train.scan_unroll = 0
    c.train.log_every = 100
    c.train.checkpoint_every = 1000  # 0: only at the end
    c.train.keep_checkpoints = 3
    c.train.on_nonfinite = "stop"  # or "skip"
    c.train.prefetch = 2  # dispatches of batches prepared ahead
    c.train.async_checkpoint = True

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all devices not used by fsdp
    c.mesh.fsdp = 1
    c.mesh.fsdp_min_size = 2**14  # arrays smaller than this stay replicated

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 1000  # 0: only at the end; -1: never
    c.eval.at_start = False  # also evaluate the untrained model (step 0)
    c.eval.num_samples = 2000
    c.eval.solver = "heun"  # fj.sampling.SOLVERS
    c.eval.num_steps = 50  # fixed steps; 0: adaptive steps at (rtol, atol)
    c.eval.rtol = 1e-4
    c.eval.atol = 1e-4
    c.eval.metric = "auto"  # auto: energy distance for points, digits_fd for digits
    c.eval.ema_index = 0  # which EMA to evaluate; -1: the raw parameters
    c.eval.guidance = 1.0  # classifier-free guidance scale (1: plain conditional)
    c.eval.batch_size = 1000  # samples per jitted sampling call
    c.eval.t_eps = 0.0  # clamp t to [t_eps, 1 - t_eps] when converting predictions
    c.eval.num_images = 64  # images in the saved sample grid
    c.eval.seed = 1234

    c.distributed = ml_collections.ConfigDict()
    c.distributed.initialize = False  # call jax.distributed.initialize in the launcher
    c.distributed.coordinator_address = ""  # "" = auto-detect (SLURM, TPU, ...)
    c.distributed.num_processes = 0  # 0 = auto-detect
    c.distributed.process_id = -1  # -1 = auto-detect
    return c


OPTIONAL_NAMES = ("objective.coupling", "objective.time_dist", "objective.weighting")


def choices(field: str) -> list[str]:
    """Valid values of a name field (see `NAME_FIELDS`)."""
    return sorted(_registry.load(NAME_FIELDS[field]))


def _fail(field: str, message: str):
    raise ValueError(f"config.{field}: {message}")


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _check_structure(config, default, prefix: str = "") -> None:
    for key in default.keys():
        field = f"{prefix}{key}"
        if key not in config:
            _fail(field, f"missing field (default: {default[key]!r})")
        if field in FREE_FIELDS:
            continue
        want, got = default[key], config[key]
        if isinstance(want, (ml_collections.ConfigDict, dict)):
            if not isinstance(got, (ml_collections.ConfigDict, dict)):
                _fail(field, f"must be a group of fields, got {got!r}")
            _check_structure(got, want, field + ".")
        else:
            _check_type(field, want, got)
    extra = sorted(set(config.keys()) - set(default.keys()))
    if extra:
        where = prefix.rstrip(".") or "config"
        _fail(
            f"{prefix}{extra[0]}",
            f"unknown field; valid fields of {where}: {sorted(default.keys())}",
        )


_TYPES = (  # (default's type, accepted types, description); bool before int
    (bool, (bool,), "a bool"),
    (str, (str,), "a string"),
    (int, (numbers.Integral,), "an int"),
    (float, (numbers.Real,), "a number"),
    (tuple, (tuple, list), "a tuple"),
)


def _check_type(field: str, want, got) -> None:
    for kind, accepted, what in _TYPES:
        if isinstance(want, kind):
            if not isinstance(got, accepted) or (kind is not bool and isinstance(got, bool)):
                _fail(field, f"must be {what}, got {got!r}")
            return


def _number(config, field, *, low=None, high=None, low_open=False, high_open=False, integer=False):
    value = _get(config, field)
    kind = "an int" if integer else "a number"
    if isinstance(value, bool) or not isinstance(
        value, numbers.Integral if integer else numbers.Real
    ):
        _fail(field, f"must be {kind}, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        _fail(field, f"must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value >= high if high_open else value > high):
        _fail(field, f"must be {'<' if high_open else '<='} {high}, got {value!r}")
    return value


def _name(config, field) -> None:
    value = _get(config, field)
    if field in OPTIONAL_NAMES and value == "":
        return
    valid = choices(field)
    if value not in valid:
        _fail(field, f"unknown name {value!r}; valid choices: {valid}")


def validate(config: ml_collections.ConfigDict, num_devices: int, num_processes: int = 1) -> None:
    """Checks a config before anything is built; raises a one-line ValueError naming the field.

    Args:
      config: a full config (`default_config()` with overrides, e.g. `configs/*.py`).
      num_devices: devices of the mesh (all processes together).
      num_processes: number of JAX processes.
    """
    if not isinstance(config, (ml_collections.ConfigDict, dict)):
        raise TypeError(f"config must be an ml_collections.ConfigDict, got {type(config)}")
    _check_structure(config, default_config())
    for field in NAME_FIELDS:
        _name(config, field)
    variants = models.REGISTRY[config.model.name][1]
    if config.model.variant not in variants:
        _fail(
            "model.variant",
            f"unknown variant {config.model.variant!r} of model {config.model.name!r}; "
            f"valid choices: {list(variants)}",
        )

    _number(config, "seed", low=0, integer=True)
    # Optimizer.
    _number(config, "optim.lr", low=0, low_open=True)
    _number(config, "optim.b1", low=0, high=1, high_open=True)
    _number(config, "optim.b2", low=0, high=1, high_open=True)
    _number(config, "optim.eps", low=0, low_open=True)
    _number(config, "optim.weight_decay", low=0)
    _number(config, "optim.warmup_steps", low=0, integer=True)
    _number(config, "optim.min_lr_ratio", low=0, high=1)
    _number(config, "optim.grad_clip", low=0)
    accum = _number(config, "optim.accum_steps", low=1, integer=True)
    # EMA.
    decays = config.ema.decays
    if not isinstance(decays, (tuple, list)) or not decays:
        _fail("ema.decays", f"must be a non-empty tuple of decays in [0, 1), got {decays!r}")
    for d in decays:
        if isinstance(d, bool) or not isinstance(d, numbers.Real) or not 0 <= d < 1:
            _fail("ema.decays", f"every decay must be in [0, 1), got {d!r}")
    # Objective.
    _number(config, "objective.label_dropout", low=0, high=1, high_open=True)
    _number(config, "objective.context_dropout", low=0, high=1, high_open=True)
    # Schedule of the loop.
    num_steps = _number(config, "train.num_steps", low=1, integer=True)
    _number(config, "train.steps_per_dispatch", low=1, integer=True)
    _number(config, "train.scan_unroll", low=0, integer=True)
    _number(config, "train.log_every", low=1, integer=True)
    _number(config, "train.checkpoint_every", low=0, integer=True)
    _number(config, "train.keep_checkpoints", low=1, integer=True)
    _number(config, "train.prefetch", low=1, integer=True)
    if config.optim.warmup_steps > num_steps:
        _fail(
            "optim.warmup_steps", f"{config.optim.warmup_steps} exceeds train.num_steps={num_steps}"
        )
    # Mesh and batch.
    fsdp = _number(config, "mesh.fsdp", low=1, integer=True)
    dp = config.mesh.data
    if isinstance(dp, bool) or not isinstance(dp, int) or (dp < 1 and dp != -1):
        _fail("mesh.data", f"must be a positive int or -1 (all remaining devices), got {dp!r}")
    if dp == -1 and num_devices % fsdp:
        _fail("mesh.fsdp", f"{fsdp} does not divide the number of devices ({num_devices})")
    if dp != -1 and dp * fsdp != num_devices:
        _fail(
            "mesh.data",
            f"data * fsdp = {dp} * {fsdp} must equal the number of devices ({num_devices}); "
            "use -1 for all remaining devices",
        )
    _number(config, "mesh.fsdp_min_size", low=0, integer=True)
    batch = _number(config, "data.batch_size", low=1, integer=True)
    if batch % num_devices:
        _fail(
            "data.batch_size", f"{batch} is not divisible by the number of devices ({num_devices})"
        )
    if batch % num_processes:
        _fail(
            "data.batch_size",
            f"{batch} is not divisible by the number of processes ({num_processes})",
        )
    if batch % (accum * num_devices):
        _fail(
            "optim.accum_steps",
            f"data.batch_size={batch} must be divisible by accum_steps * devices "
            f"= {accum} * {num_devices}",
        )
    # Evaluation.
    _number(config, "eval.every", low=-1, integer=True)
    _number(config, "eval.num_samples", low=1, integer=True)
    if _number(config, "eval.num_steps", low=0, integer=True) == 0:
        adaptive = sampling.ADAPTIVE_SOLVERS
        if config.eval.solver not in adaptive:
            _fail(
                "eval.solver",
                f"{config.eval.solver!r} needs eval.num_steps > 0; adaptive solvers "
                f"(eval.num_steps=0): {sorted(adaptive)}",
            )
    _number(config, "eval.batch_size", low=1, integer=True)
    _number(config, "eval.t_eps", low=0, high=0.5, high_open=True)
    _number(config, "eval.rtol", low=0, low_open=True)
    _number(config, "eval.atol", low=0, low_open=True)
    _number(config, "eval.guidance", low=0)
    _number(config, "eval.num_images", low=1, integer=True)
    _number(config, "eval.seed", low=0, integer=True)
    ema_index = _number(config, "eval.ema_index", low=-1, integer=True)
    if ema_index >= len(decays):
        _fail(
            "eval.ema_index",
            f"{ema_index} but there are {len(decays)} EMA decay(s); -1: raw params",
        )
    # The objective's own construction checks, with every name resolved but no teacher loaded.
    spec = data.spec(config.data.name)
    build_objective(config, spec, load_teacher=unloaded_teacher)
