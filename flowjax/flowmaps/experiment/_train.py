"""Training for the flow-map experiment: several seeds at once, K steps per dispatch.

One jitted program trains every seed: the train state carries a leading seed axis
(`jax.vmap`), and each dispatch runs K optimizer steps with `lax.scan`. The teacher is an
argument of that program (a pytree: the exact mixture velocity or a trained network), so
methods that need none share one compiled program across datasets of the same shape.
Step i of seed j draws its randomness from `fold_in(key_j, i)` and its batch from the seed's
own data stream, so every method sees the same data, initialisation and noise per seed
(a paired comparison).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "BatchStream",
    "Network",
    "TrainState",
    "build_network",
    "init_states",
    "train",
    "unstack",
]


class TrainState(NamedTuple):
    """Per-seed training state (every leaf has a leading seed axis when stacked)."""

    params: Any
    ema: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array  # raw key data; step i uses fold_in(key, i)


class Network(NamedTuple):
    """A network's apply function and pure parameter initialiser (`key -> params`)."""

    apply_fn: Callable
    init_params: Callable
    input_shape: tuple[int, ...]


# Memoised builds: equal model configs share one apply function, hence one compiled program.
_NETWORKS: dict = {}


def build_network(name: str, variant: str, input_shape, *, overrides: dict) -> Network:
    """(apply_fn, init_params) of a registered model (`fj.models.build_model`), memoised."""
    from flax import nnx

    from flowjax import models

    key = (name, variant, tuple(input_shape), tuple(sorted(overrides.items())))
    if key not in _NETWORKS:

        def module(k):
            return models.build_model(
                name, variant, input_shape=tuple(input_shape), key=k, **overrides
            )

        apply_fn, _ = models.functional(nnx.eval_shape(lambda: module(jax.random.key(0))))

        def init_params(k):
            return models.functional(module(k))[1]

        _NETWORKS[key] = Network(apply_fn, init_params, tuple(input_shape))
    return _NETWORKS[key]


_INITS: dict = {}


def init_states(network: Network, optimizer, seeds: Sequence[int]) -> TrainState:
    """Fresh states for `seeds`, stacked on a leading axis; seed j's parameters come from
    key(seed_j) alone, so every method starts seed j from the same network."""
    init = _INITS.get(id(network.init_params))
    if init is None:
        init = jax.jit(network.init_params)
        _INITS[id(network.init_params)] = init
    states = []
    for seed in seeds:
        init_key, train_key = jax.random.split(jax.random.key(int(seed)))
        params = init(init_key)
        states.append(
            TrainState(
                params=params,
                ema=params,
                opt_state=optimizer.init(params),
                step=jnp.zeros((), jnp.int32),
                key=jax.random.key_data(train_key),
            )
        )
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


class BatchStream:
    """The training batches of several seeds, K steps at a time: arrays (S, K, B, *D).

    Seed j reads `fj.data.make_iterator(name, seed=seed_j, split="train")`, the trainer's own
    pipeline. The whole stream is kept in memory when it fits in `cache_mb`, so the methods of
    one dataset re-read it instead of regenerating it.
    """

    def __init__(
        self,
        name: str,
        seeds: Sequence[int],
        batch_size: int,
        num_steps: int,
        *,
        cache_mb: float = 256.0,
        data_kwargs: dict | None = None,
    ):
        from flowjax import data

        self.name, self.seeds = name, tuple(int(s) for s in seeds)
        self.batch_size, self.num_steps = int(batch_size), int(num_steps)
        self.data_kwargs = dict(data_kwargs or {})
        shape = tuple(data.spec(name).shape)
        size_mb = len(self.seeds) * num_steps * batch_size * int(np.prod(shape)) * 4 / 2**20
        self._cache = None
        if size_mb <= cache_mb:
            self._cache = np.stack([self._read(s, num_steps) for s in self.seeds])

    def _iterator(self, seed: int) -> Iterator:
        from flowjax import data

        return data.make_iterator(
            self.name,
            global_batch_size=self.batch_size,
            seed=seed,
            split="train",
            **self.data_kwargs,
        )

    def _read(self, seed: int, n: int, it: Iterator | None = None) -> np.ndarray:
        it = self._iterator(seed) if it is None else it
        return np.stack([np.asarray(next(it)["x1"], np.float32) for _ in range(n)])

    def chunks(self, k: int) -> Iterator[np.ndarray]:
        """Consecutive (S, k', B, *D) chunks covering `num_steps` (the last may be shorter)."""
        its = None if self._cache is not None else [self._iterator(s) for s in self.seeds]
        for start in range(0, self.num_steps, k):
            n = min(k, self.num_steps - start)
            if self._cache is not None:
                yield self._cache[:, start : start + n]
            else:
                yield np.stack(
                    [self._read(s, n, it) for s, it in zip(self.seeds, its, strict=True)]
                )


def _ema_decay(decay: float, step):
    # Same warmup as the trainer (fj.train.state.ema_decay): min(d, (1 + i) / (10 + i)).
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


# (loss, optimizer, decay) -> jitted chunk; a loss is identified by the caller's cache key.
_PROGRAMS: dict = {}


def _program(cache_key, loss_fn: Callable, optimizer, ema_decay: float):
    if cache_key in _PROGRAMS:
        return _PROGRAMS[cache_key]

    def one_seed(state: TrainState, batches, teacher):
        def body(state: TrainState, x1):
            key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
            (value, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                state.params, key, {"x1": x1}, teacher
            )
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            d = _ema_decay(ema_decay, state.step)
            ema = jax.tree.map(lambda e, p: e + (1.0 - d) * (p - e), state.ema, params)
            return TrainState(params, ema, opt_state, state.step + 1, state.key), value

        return jax.lax.scan(body, state, batches)

    program = jax.jit(jax.vmap(one_seed, in_axes=(0, 0, None)), donate_argnums=(0,))
    _PROGRAMS[cache_key] = program
    return program


def train(
    cache_key,
    loss_fn: Callable,
    network: Network,
    optimizer: optax.GradientTransformation,
    stream: BatchStream,
    *,
    ema_decay: float,
    steps_per_dispatch: int,
    teacher: Any = None,
) -> tuple[TrainState, np.ndarray]:
    """Trains every seed of `stream` from scratch; returns (final states, losses (S, steps)).

    Args:
      cache_key: hashable identity of (loss_fn, optimizer, ema_decay): equal keys reuse the
        compiled program, so it must change whenever any of them does.
      loss_fn: `loss(params, key, batch, teacher) -> (scalar, aux)`.
      network: the trained network.
      optimizer: optax transformation.
      stream: the seeds' batches.
      ema_decay: EMA decay (with the trainer's warmup).
      steps_per_dispatch: optimizer steps per jitted call.
      teacher: pytree handed to every loss call (None for methods without a teacher).
    """
    program = _program(cache_key, loss_fn, optimizer, ema_decay)
    state = init_states(network, optimizer, stream.seeds)
    losses = []
    for batches in stream.chunks(steps_per_dispatch):
        state, values = program(state, jnp.asarray(batches), teacher)
        losses.append(values)
    losses = np.concatenate([np.asarray(v) for v in losses], axis=1)
    return state, losses


def unstack(tree, index: int):
    """Seed `index` of a tree with a leading seed axis."""
    return jax.tree.map(lambda x: x[index], tree)
