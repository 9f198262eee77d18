"""Optimizer and learning-rate schedule from `config.optim`.

AdamW (Loshchilov & Hutter 2019) after global-norm clipping (Pascanu et al. 2013), with a
linear warmup followed by a cosine decay (Loshchilov & Hutter 2017) or a constant rate.
Weight decay applies to matrices and kernels only (ndim >= 2), not to biases and norm scales.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax

__all__ = ["SCHEDULES", "OPTIMIZERS", "make_schedule", "make_optimizer"]


def _warmup(lr: float, warmup_steps: int, after: optax.Schedule) -> optax.Schedule:
    if warmup_steps <= 0:
        return after
    ramp = optax.linear_schedule(0.0, lr, warmup_steps)
    return optax.join_schedules([ramp, after], [warmup_steps])


def _cosine(lr, warmup_steps, num_steps, min_lr_ratio):
    decay = optax.cosine_decay_schedule(lr, max(num_steps - warmup_steps, 1), alpha=min_lr_ratio)
    return _warmup(lr, warmup_steps, decay)


def _constant(lr, warmup_steps, num_steps, min_lr_ratio):
    del num_steps, min_lr_ratio
    return _warmup(lr, warmup_steps, optax.constant_schedule(lr))


SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {"cosine": _cosine, "constant": _constant}


def make_schedule(optim, num_steps: int) -> optax.Schedule:
    """The learning rate as a function of the optimizer step."""
    return SCHEDULES[optim.schedule](
        float(optim.lr), int(optim.warmup_steps), int(num_steps), float(optim.min_lr_ratio)
    )


def _decay_mask(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def _adamw(optim, schedule):
    return optax.adamw(
        schedule,
        b1=float(optim.b1),
        b2=float(optim.b2),
        eps=float(optim.eps),
        weight_decay=float(optim.weight_decay),
        mask=_decay_mask,
    )


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {"adamw": _adamw}


def make_optimizer(optim, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(transformation, schedule) for `config.optim` and a run of `num_steps` steps."""
    schedule = make_schedule(optim, num_steps)
    parts = []
    if optim.grad_clip and optim.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(float(optim.grad_clip)))
    parts.append(OPTIMIZERS[optim.name](optim, schedule))
    return optax.chain(*parts), schedule
