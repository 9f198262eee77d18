"""Teachers for flow-map distillation: a trained flowjax run as a velocity field.

    from flowjax.flowmaps.teacher import load_teacher
    v = load_teacher("/tmp/toy2d_fm")              # a workdir of experiments.main
    loss = fj.objectives.make_objective("lmd", path=v.path, teacher=v)

`load_teacher` restores the EMA parameters of a run trained by `fj.train` (through
`fj.train.restore`, so the checkpoint lands in the run's own sharding) and wraps the network
with `fj.sampling.as_velocity` for the prediction kind and path it was trained with: an
eps-, x1- or score-predicting diffusion model is as good a teacher as a velocity model.

Launching a distillation through the standard trainer (`experiments/main.py` with
`configs/flowmap_distill.py`) names the teacher by a string,
`config.objective.kwargs.teacher = "/path/to/teacher_workdir"`; `fj.train.build` loads it
(once, when the objective is built; `validate` and `restore` never touch it). `load_flow_map`
restores a trained two-time student as a flow map X(x, s, t) for the jump samplers; like
every restore it builds no objective, so it works with the student's teacher deleted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import ml_collections
import orbax.checkpoint as ocp
from jaxtyping import Array, Float

from flowjax._types import Time
from flowjax.flowmaps._map import as_callable
from flowjax.objectives._common import with_context
from flowjax.paths import AffinePath
from flowjax.sampling import as_velocity
from flowjax.train.loop import restore

__all__ = [
    "MixtureTeacher",
    "VelocityTeacher",
    "bind_teacher",
    "checkpoint_location",
    "load_flow_map",
    "load_teacher",
    "read_checkpoint_config",
]

TEACHER_KEYS = ("teacher",)  # objective keywords that take a velocity field


class VelocityTeacher(eqx.Module):
    """v(x, t, y=None) of a trained network, its prediction converted to a velocity.

    A pytree whose leaves are the parameters (and the path's), so it can be passed through
    `jax.jit` as an argument without recompiling for new parameter values.

    Attributes:
      apply_fn: `apply_fn(params, x, t, *, s=None, y=None, key=None)` of the network.
      params: its parameters (e.g. an EMA).
      kind: what the network predicts: "velocity", "x1", "eps" or "score".
      path: the affine path it was trained on.
      t_eps: the network and the conversion are evaluated at t clamped to [t_eps, 1 - t_eps].
      source: where it was loaded from (for messages and configs; "" if built in memory).
    """

    apply_fn: Callable = eqx.field(static=True)
    params: Any
    kind: str = eqx.field(static=True)
    path: AffinePath
    t_eps: float = eqx.field(static=True, default=0.0)
    source: str = eqx.field(static=True, default="")

    def __call__(
        self, x: Float[Array, " B *D"], t: Time, y=None, context=None
    ) -> Float[Array, " B *D"]:
        def fn(x_, t_):
            return self.apply_fn(self.params, x_, t_, y=y, **with_context(context))

        return as_velocity(fn, self.kind, self.path, t_eps=self.t_eps)(x, t)


class MixtureTeacher(eqx.Module):
    """The exact velocity of an analytic Gaussian mixture on a path: the perfect teacher.

    The same field as `gmm.velocity_field(path)`, as a pytree (so it can be a jit argument).
    """

    gmm: Any
    path: AffinePath

    def __call__(self, x: Float[Array, " B D"], t: Time, y=None) -> Float[Array, " B D"]:
        return self.gmm.velocity(self.path, x, t, label=y)


def checkpoint_location(workdir_or_checkpoint: str | os.PathLike) -> tuple[str, int | None]:
    """(workdir, step) of a run directory, its `checkpoints/` folder, or one step's folder.

    The step is None unless a step folder (`.../checkpoints/<step>`) was given.

    Raises:
      FileNotFoundError: the directory does not exist or holds no flowjax checkpoints.
    """
    where = os.path.abspath(os.fspath(workdir_or_checkpoint))
    if not os.path.isdir(where):
        raise FileNotFoundError(f"load_teacher: no such directory {where!r}")
    if os.path.isdir(os.path.join(where, "checkpoints")):
        return where, None
    parent, leaf = os.path.split(where)
    if leaf == "checkpoints":
        return parent, None
    if leaf.isdigit() and os.path.basename(parent) == "checkpoints":
        return os.path.dirname(parent), int(leaf)
    raise FileNotFoundError(
        f"load_teacher: {where!r} is neither a run directory (with checkpoints/), its "
        "checkpoints/ folder, nor a checkpoints/<step> folder"
    )


def _latest_step(workdir: str) -> int:
    folder = os.path.join(workdir, "checkpoints")
    steps = [int(d) for d in os.listdir(folder) if d.isdigit()] if os.path.isdir(folder) else []
    # Only finished checkpoints: orbax renames a step folder into place when it is complete.
    steps = [s for s in steps if os.path.isdir(os.path.join(folder, str(s), "state"))]
    if not steps:
        raise FileNotFoundError(f"load_teacher: no checkpoint in {folder}")
    return max(steps)


def read_checkpoint_config(workdir: str, step: int):
    """The config saved with checkpoint `step` of `workdir`, as an ml_collections ConfigDict."""
    manager = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"),
        item_names=("config",),
        options=ocp.CheckpointManagerOptions(read_only=True),
    )
    try:
        raw = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    finally:
        manager.close()
    # JSON turned tuples into lists; the config validator accepts either.
    return ml_collections.ConfigDict(json.loads(json.dumps(raw["config"])))


def _restore(workdir_or_checkpoint, config, step, ema_index, devices):
    workdir, folder_step = checkpoint_location(workdir_or_checkpoint)
    step = folder_step if step is None else int(step)
    step = _latest_step(workdir) if step is None else step
    if config is None:
        config = read_checkpoint_config(workdir, step)
    exp, state = restore(config, workdir, step=step, devices=devices)
    index = int(config.eval.ema_index) if ema_index is None else int(ema_index)
    if index >= len(state.ema) or index < -1:
        raise ValueError(
            f"load_teacher: ema_index must be -1 (raw parameters) or in "
            f"[0, {len(state.ema) - 1}], got {index}"
        )
    params = state.params if index < 0 else state.ema[index]
    return exp, params, f"{workdir}/checkpoints/{step}"


def load_teacher(
    workdir_or_checkpoint: str | os.PathLike,
    *,
    config=None,
    step: int | None = None,
    ema_index: int | None = None,
    t_eps: float | None = None,
    devices: Sequence[Any] | None = None,
) -> VelocityTeacher:
    """The velocity field v(x, t, y=None) of a run trained with `fj.train`.

    Args:
      workdir_or_checkpoint: the run's workdir, its `checkpoints/` folder, or one
        `checkpoints/<step>` folder.
      config: the run's config; None reads the one saved with the checkpoint.
      step: checkpoint step (default: the step folder given, else the latest).
      ema_index: which EMA to use (-1: the raw parameters); default `config.eval.ema_index`.
      t_eps: clamp margin of the prediction -> velocity conversion; default
        `config.eval.t_eps` (the margin the run was evaluated with).
      devices: devices of the restore mesh (default: all, as the trainer).

    Returns:
      A `VelocityTeacher`; `teacher.path` is the path it was trained on.

    Raises:
      FileNotFoundError: no such run or no checkpoint in it.
      ValueError: a config that does not validate, or a bad ema_index.
    """
    exp, params, source = _restore(workdir_or_checkpoint, config, step, ema_index, devices)
    if exp.config.model.overrides.get("two_times", False):
        raise ValueError(
            f"load_teacher: {source} holds a two-time (flow-map) network; a teacher must be a "
            "velocity/diffusion model (use load_flow_map for a flow-map student)"
        )
    t_eps = float(exp.config.eval.t_eps if t_eps is None else t_eps)
    return VelocityTeacher(exp.apply_fn, params, exp.kind, exp.path, t_eps, source)


def load_flow_map(
    workdir_or_checkpoint: str | os.PathLike,
    *,
    config=None,
    step: int | None = None,
    ema_index: int | None = None,
    y=None,
    devices: Sequence[Any] | None = None,
):
    """A flow-map student trained with `fj.train` as a callable X(x, s, t) (`BoundFlowMap`).

    Arguments as `load_teacher`; `y` binds labels of a class-conditional student.

    Raises:
      ValueError: the run's network is not a two-time network.
    """
    exp, params, source = _restore(workdir_or_checkpoint, config, step, ema_index, devices)
    if not exp.config.model.overrides.get("two_times", False):
        raise ValueError(
            f"load_flow_map: {source} holds a one-time network; a flow map needs "
            "config.model.overrides.two_times=True (use load_teacher for a velocity model)"
        )
    return as_callable(exp.apply_fn, params, y=y)


def bind_teacher(kwargs: Mapping[str, Any], *, devices: Sequence[Any] | None = None) -> dict:
    """Objective keyword arguments with a teacher named by a string replaced by its field.

    `kwargs["teacher"]` may be a velocity field (kept as is) or a run directory or checkpoint
    of `fj.train` (see `load_teacher`); `kwargs["path"]`, if given, must be the teacher's path.
    Each call loads the teacher afresh (`fj.train.build` calls it once per run).

    Raises:
      ValueError: an empty teacher string, or a teacher that cannot be loaded.
    """
    out = dict(kwargs)
    for name in TEACHER_KEYS:
        value = out.get(name)
        if not isinstance(value, str):
            continue
        if not value:
            raise ValueError(
                f"config.objective.kwargs.{name}: empty; set it to the workdir (or "
                f"checkpoints/<step> folder) of a trained flowjax run, e.g. "
                f"--config.objective.kwargs.{name}=/tmp/toy2d_fm"
            )
        try:
            teacher = load_teacher(value, devices=devices)
        except FileNotFoundError as e:
            raise ValueError(f"config.objective.kwargs.{name}: {e}") from None
        path = out.get("path")
        if path is not None and repr(path) != repr(teacher.path):
            raise ValueError(
                f"config.objective.path: the teacher {teacher.source} was trained on "
                f"{teacher.path!r}, the student on {path!r}; a flow map of the teacher's field "
                "must start from points of the teacher's path (set the same path)"
            )
        out[name] = teacher
    return out
