"""One compiled program for every arm: a switched train step and switched velocity fields.

The arms share the network, optimizer and data shapes and differ only in their objective and
in how a prediction becomes a velocity. Compiling one train step and one sampler per arm
would dominate a CPU run (each diffrax solve takes seconds to trace and compile), so the arm
is a run-time integer instead: `jax.lax.switch` picks the arm's loss inside the train step of
`fj.train.make_train_step`, and the arm's velocity (`fj.sampling.as_velocity` of its model on
its own path) inside the field handed to `fj.sampling`. Only the chosen branch runs, so each
arm computes exactly what it would on its own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from flowjax.paths import AffinePath

__all__ = [
    "ArmModel",
    "ArmField",
    "SwitchPath",
    "Trainer",
    "build_trainer",
    "build_apply_fn",
]

ARM_KEY = "arm"  # batch entry carrying the arm index (one copy per example, see Trainer)


class ArmModel(eqx.Module):
    """How one arm's network output becomes a velocity.

    Attributes:
      model: apply function `(params, x, t, *, y=None, key=None)` of the arm: the network, or
        `fj.objectives.EDMPrecond` around it (its sigma_data is a NumPy scalar, so it is a
        run-time value and arms on data of different scale share one compiled sampler).
      path: the arm's path.
      kind: what `model` predicts ("velocity", "eps", "x1").
      t_eps: the model is evaluated at t clamped to [t_eps, 1 - t_eps].
    """

    model: Callable
    path: AffinePath
    kind: str = eqx.field(static=True)
    t_eps: float = eqx.field(static=True)

    def velocity(self, params, x, t, y=None):
        from flowjax.sampling import as_velocity

        fn = lambda x_, t_: self.model(params, x_, t_, y=y)  # noqa: E731
        return as_velocity(fn, self.kind, self.path, t_eps=self.t_eps)(x, t)


class ArmField(eqx.Module):
    """The velocity field v(x, t) of arm `index` with parameters `params` (and labels `y`)."""

    arms: tuple[ArmModel, ...]
    params: Any
    index: jax.Array
    y: jax.Array | None = None

    def __call__(self, x, t):
        branches = [
            functools.partial(lambda arm, p, x_, t_: arm.velocity(p, x_, t_, self.y), arm)
            for arm in self.arms
        ]
        return jax.lax.switch(self.index, branches, self.params, x, t)


class SwitchPath(AffinePath):
    """The path of arm `index` among `paths`, as one AffinePath (for `fj.sampling.sample_sde`)."""

    paths: tuple[AffinePath, ...]
    index: jax.Array

    def _pick(self, method: str, t):
        return jax.lax.switch(self.index, [getattr(p, method) for p in self.paths], t)

    def alpha(self, t):
        return self._pick("alpha", t)

    def sigma(self, t):
        return self._pick("sigma", t)

    def d_alpha(self, t):
        return self._pick("d_alpha", t)

    def d_sigma(self, t):
        return self._pick("d_sigma", t)

    def log_snr(self, t):
        return self._pick("log_snr", t)

    def t_from_log_snr(self, lam):
        return self._pick("t_from_log_snr", lam)


def build_apply_fn(model_config, spec) -> tuple[Callable, Callable]:
    """(apply_fn, init_params) of `config.model` on a dataset spec (as `fj.train.build` does)."""
    from flax import nnx

    from flowjax import models
    from flowjax.train.experiment import DTYPE_MAP

    kwargs = dict(
        input_shape=tuple(spec.shape),
        num_classes=spec.num_classes,
        dtype=DTYPE_MAP[model_config.dtype],
        **model_config.overrides.to_dict(),
    )

    def module(key):
        return models.build_model(model_config.name, model_config.variant, key=key, **kwargs)

    apply_fn, _ = models.functional(nnx.eval_shape(lambda: module(jax.random.key(0))))
    return apply_fn, lambda key: models.functional(module(key))[1]


def _arm_loss(arm, apply_fn, spec, t_eps: float):
    """(loss(params, key, batch), prediction kind, ArmModel) of one resolved arm."""
    from flowjax import objectives
    from flowjax.train.experiment import objective_kwargs

    kwargs, kind = objective_kwargs(arm.config, spec)
    path = kwargs["path"]
    model = apply_fn
    if arm.precond == "edm":
        model = objectives.EDMPrecond(apply_fn, path, sigma_data=np.float64(arm.sigma_data))
    loss = objectives.make_objective(arm.config.objective.name, **kwargs)
    sampler = ArmModel(model=model, path=path, kind=kind, t_eps=float(t_eps))
    return functools.partial(loss, model=model), kind, sampler


class Trainer:
    """The shared train step, state initialiser and per-arm velocity models of one dataset."""

    def __init__(self, arms: Sequence, spec, apply_fn, init_params, *, t_eps: float):
        from flowjax.train import make_mesh, make_optimizer, make_train_step, state_shardings
        from flowjax.train.state import init_state

        base = arms[0].config
        self.spec = spec
        self.arms = list(arms)
        losses, kinds, models = [], [], []
        for arm in arms:
            loss, kind, model = _arm_loss(arm, apply_fn, spec, t_eps)
            losses.append(loss)
            kinds.append(kind)
            models.append(model)
        self.kinds = kinds
        self.models = tuple(models)
        self.paths = tuple(m.path for m in models)
        self.mesh = make_mesh(base.mesh.data, base.mesh.fsdp)
        self.optimizer, self.schedule = make_optimizer(base.optim, base.train.num_steps)
        num_ema = len(base.ema.decays)

        def switched(params, key, batch):
            inner = {k: v for k, v in batch.items() if k != ARM_KEY}
            branches = [
                functools.partial(lambda f, p, k, b: _scalars(*f(p, k, b)), f) for f in losses
            ]
            return jax.lax.switch(batch[ARM_KEY][0], branches, params, key, inner)

        abstract = jax.eval_shape(lambda: init_state(init_params, self.optimizer, 0, num_ema))
        self.state_sharding = state_shardings(abstract, self.mesh, min_size=base.mesh.fsdp_min_size)
        self.step = make_train_step(
            switched,
            self.optimizer,
            self.schedule,
            mesh=self.mesh,
            state_sharding=self.state_sharding,
            ema_decays=base.ema.decays,
            ema_warmup=base.ema.warmup,
            on_nonfinite=base.train.on_nonfinite,
            accum_steps=base.optim.accum_steps,
        )
        self._init = jax.jit(
            lambda seed: init_state(init_params, self.optimizer, seed, num_ema),
            out_shardings=self.state_sharding,
        )
        self.batch_keys = ("x1", "label") if spec.num_classes is not None else ("x1",)

    def init(self, seed: int):
        """A fresh train state for `seed` (the same for every arm: paired comparison)."""
        return self._init(jnp.asarray(seed, jnp.int32))

    def device_batches(self, stacked: dict, arm_index: int) -> dict:
        """K stacked host batches (K, B, ...) plus the arm index, as global device arrays."""
        from flowjax.train import make_global_batch

        batch = {k: stacked[k] for k in self.batch_keys}
        k, b = batch["x1"].shape[:2]
        batch[ARM_KEY] = np.full((k, b), arm_index, np.int32)
        return make_global_batch(batch, self.mesh, stacked=True)

    def field(self, params, arm_index: int, y=None) -> ArmField:
        return ArmField(self.models, params, jnp.asarray(arm_index, jnp.int32), y)

    def path(self, arm_index: int) -> SwitchPath:
        return SwitchPath(self.paths, jnp.asarray(arm_index, jnp.int32))


def _scalars(value, aux):
    # Every branch of lax.switch must return the same structure; keep what all objectives share.
    return value, {"loss": value, "t_mean": aux["t_mean"]}


# Memoised builds (pure functions of their keys): datasets of one shape share the network's
# apply function, so the compiled samplers are shared too, and repeating a run in one process
# (e.g. a reproducibility check) recompiles nothing.
_APPLY_FNS: dict = {}
_TRAINERS: dict = {}


def build_trainer(arms, spec, *, t_eps: float) -> Trainer:
    """The `Trainer` of arms on one dataset (memoised on the arms' resolved configs)."""
    model_cfg = arms[0].config.model
    net_key = (model_cfg.to_json(), tuple(spec.shape), spec.num_classes)
    if net_key not in _APPLY_FNS:
        _APPLY_FNS[net_key] = build_apply_fn(model_cfg, spec)
    apply_fn, init_params = _APPLY_FNS[net_key]
    key = (
        spec.name,
        float(t_eps),
        tuple((a.name, a.config.to_json(), a.precond, a.sigma_data) for a in arms),
    )
    if key not in _TRAINERS:
        _TRAINERS[key] = Trainer(arms, spec, apply_fn, init_params, t_eps=t_eps)
    return _TRAINERS[key]
