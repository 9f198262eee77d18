"""The jitted, sharded train step: K optimizer steps per dispatch with `lax.scan`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from flowjax.train import sharding as shd
from flowjax.train.state import TrainState, ema_decay, ema_update, rng_key, tree_where

__all__ = ["NONFINITE_POLICIES", "applied_step", "loss_and_grads", "make_train_step", "make_update"]

LossFn = Callable[[Any, jax.Array, dict], tuple[jax.Array, dict]]


def _stop(state: TrainState, new: TrainState, finite) -> TrainState:
    # The first non-finite step freezes the state for good: the loop sees `nonfinite_step`
    # at its next sync, stops, and the last checkpoint (all finite) stays the latest.
    active = state.nonfinite_step < 0
    apply = finite & active
    out = tree_where(apply, new, state)
    return out.replace(
        step=state.step + apply.astype(jnp.int32),
        num_skipped=state.num_skipped,
        nonfinite_step=jnp.where(active & ~finite, state.step, state.nonfinite_step),
    )


def _skip(state: TrainState, new: TrainState, finite) -> TrainState:
    out = tree_where(finite, new, state)
    return out.replace(
        step=state.step + 1,
        num_skipped=state.num_skipped + (~finite).astype(jnp.int32),
        nonfinite_step=state.nonfinite_step,
    )


NONFINITE_POLICIES: dict[str, Callable[[TrainState, TrainState, jax.Array], TrainState]] = {
    "stop": _stop,
    "skip": _skip,
}


def _scalars(aux: dict) -> dict:
    return {k: jnp.asarray(v, jnp.float32) for k, v in aux.items() if jnp.ndim(v) == 0}


def loss_and_grads(loss_fn: LossFn, params, key, batch: dict, accum_steps: int = 1):
    """(loss, scalar aux, grads), averaged over `accum_steps` micro-batches of the batch.

    Micro-batch i is every `accum_steps`-th example starting at i, so on a sharded batch each
    device keeps its own examples, and uses the key `fold_in(key, i)`.
    """
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    if accum_steps == 1:
        (loss, aux), grads = value_and_grad(params, key, batch)
        return loss, _scalars(aux), grads

    def split(x):
        x = x.reshape((x.shape[0] // accum_steps, accum_steps) + x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    micro = jax.tree.map(split, batch)

    def body(carry, inputs):
        i, mb = inputs
        (loss, aux), grads = value_and_grad(params, jax.random.fold_in(key, i), mb)
        out = (loss, _scalars(aux), grads)
        return jax.tree.map(jnp.add, carry, out), None

    first = jax.tree.map(lambda x: x[0], micro)
    shapes = jax.eval_shape(lambda: value_and_grad(params, key, first))
    (l_shape, aux_shape), g_shape = shapes
    zeros = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype), (l_shape, _scalars_shape(aux_shape), g_shape)
    )
    total, _ = jax.lax.scan(body, zeros, (jnp.arange(accum_steps), micro))
    return jax.tree.map(lambda x: x / accum_steps, total)


def _scalars_shape(aux: dict) -> dict:
    return {k: jax.ShapeDtypeStruct((), jnp.float32) for k, v in aux.items() if v.ndim == 0}


def applied_step(opt_state, default):
    """The optimizer's own update count (what its schedule is evaluated at), else `default`.

    Skipped non-finite steps keep the old optimizer state, so this count (not `state.step`)
    gives the learning rate optax actually applied.
    """
    found = optax.tree_utils.tree_get_all_with_path(opt_state, "count")
    return found[-1][1] if found else default


def make_update(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    ema_decays: Sequence[float],
    ema_warmup: bool = True,
    on_nonfinite: str = "stop",
    accum_steps: int = 1,
    unroll: int | bool = 1,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """The pure (unjitted) `(state, batches) -> (state, metrics)` that takes K steps.

    `make_train_step` jits it with shardings; a study trains several seeds at once with
    `jax.jit(jax.vmap(make_update(...)))` (one compiled program for all seeds). See
    `make_train_step` for the arguments.
    """
    if on_nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"on_nonfinite: one of {sorted(NONFINITE_POLICIES)}, got {on_nonfinite!r}")
    policy = NONFINITE_POLICIES[on_nonfinite]
    decays = tuple(float(d) for d in ema_decays)

    def one_step(state: TrainState, batch: dict):
        key = jax.random.fold_in(rng_key(state), state.step)
        loss, aux, grads = loss_and_grads(loss_fn, state.params, key, batch, accum_steps)
        finite = jnp.isfinite(loss) & jnp.all(
            jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = tuple(
            ema_update(e, params, ema_decay(d, state.step, ema_warmup))
            for e, d in zip(state.ema, decays, strict=True)
        )
        new = state.replace(params=params, ema=ema, opt_state=opt_state)
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "lr": jnp.asarray(schedule(applied_step(state.opt_state, state.step)), jnp.float32),
            "finite": finite.astype(jnp.float32),
            **aux,
        }
        return policy(state, new, finite), metrics

    def run(state: TrainState, batches: dict):
        if unroll is not True:
            return jax.lax.scan(one_step, state, batches, unroll=unroll)
        # No loop at all (even a length-1 scan lowers to a while loop).
        metrics = []
        for i in range(jax.tree.leaves(batches)[0].shape[0]):
            state, m = one_step(state, jax.tree.map(lambda x, i=i: x[i], batches))
            metrics.append(m)
        return state, jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)

    return run


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    mesh: Mesh,
    state_sharding: Any,
    ema_decays: Sequence[float],
    ema_warmup: bool = True,
    on_nonfinite: str = "stop",
    accum_steps: int = 1,
    unroll: int | bool = 1,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """A jitted `(state, batches) -> (state, metrics)` that takes K steps.

    `batches` is a dict of global arrays of shape (K, B, ...), sharded over the mesh on B;
    `metrics` holds arrays of shape (K,) (loss, grad_norm, lr, finite and the objective's
    scalar aux values). The input state is donated. The logged `lr` is the rate optax applied
    (its schedule at the optimizer's own count, which skipped steps do not advance).

    Args:
      loss_fn: `loss(params, key, batch) -> (scalar, aux)` (an objective with its keyword
        arguments bound).
      optimizer, schedule: from `make_optimizer`.
      mesh: the ("data", "fsdp") mesh.
      state_sharding: NamedShardings of the state (see `sharding.state_shardings`).
      ema_decays: one EMA per decay, in the order of `state.ema`.
      ema_warmup: use min(decay, (1 + step) / (10 + step)).
      on_nonfinite: "stop" or "skip" (see `NONFINITE_POLICIES`).
      accum_steps: gradient accumulation over this many micro-batches per step.
      unroll: `lax.scan` unroll factor over the K steps; True: no loop at all (the K steps
        are traced one after the other).
    """
    run = make_update(
        loss_fn,
        optimizer,
        schedule,
        ema_decays=ema_decays,
        ema_warmup=ema_warmup,
        on_nonfinite=on_nonfinite,
        accum_steps=accum_steps,
        unroll=unroll,
    )
    return jax.jit(
        run,
        in_shardings=(state_sharding, shd.batch_sharding(mesh, stacked=True)),
        out_shardings=(state_sharding, shd.replicated(mesh)),
        donate_argnums=(0,),
    )
