"""The pieces every study shares: config checks, machine info, networks, batches, training.

Training goes through `fj.train.step.make_update` (the library's one train step), vmapped
over seeds: one compiled program trains every seed of an arm at once, K steps per dispatch.
Step i of seed s draws its randomness from `fold_in(key_s, i)` and its batch from seed s's
own data stream, so every arm sees the same initialisation, data and noise per seed (a paired
design: differences between arms are not differences of luck).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BatchStream",
    "Network",
    "SeedTrainer",
    "build_network",
    "check_positive",
    "dataset_config",
    "eval_steps",
    "machine_info",
    "merge_config",
    "names",
    "unstack",
]


def names(value: str, field: str, valid: Sequence[str] | None = None) -> list[str]:
    """The names of a comma-separated config string, checked (one-line ValueError)."""
    if not isinstance(value, str):
        raise TypeError(f"config.{field}: a comma-separated string, got {value!r}")
    out = [n.strip() for n in value.split(",") if n.strip()]
    if not out:
        raise ValueError(f"config.{field}: empty" + (f"; valid: {list(valid)}" if valid else ""))
    if len(set(out)) != len(out):
        raise ValueError(f"config.{field}: a name is listed twice: {out}")
    for n in out:
        if valid is not None and n not in valid:
            raise ValueError(f"config.{field}: unknown name {n!r}; valid: {list(valid)}")
    return out


def check_positive(config, *fields: str) -> None:
    """Raises a one-line ValueError naming the first of `fields` (dotted) not a positive int."""
    for field in fields:
        value = config
        for part in field.split("."):
            value = value[part]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"config.{field}: a positive int, got {value!r}")


def merge_config(cfg, over, where: str, free: Sequence[str] = (), _path: str = "") -> None:
    """Overwrites fields of ConfigDict `cfg` by the (nested) mapping `over`, in place, leaving
    the fields `over` does not name. A field `cfg` lacks is a one-line ValueError naming
    `where` (a typo never silently does nothing), except under a free-form mapping: a field
    named `overrides` or ending in `_kwargs`, or one of `free` (dotted paths below `cfg`)."""
    import ml_collections

    over = over.to_dict() if hasattr(over, "to_dict") else dict(over)
    is_free = _path.split(".")[-1] == "overrides" or _path.endswith("_kwargs") or _path in free
    for key, value in over.items():
        if key not in cfg and not is_free:
            raise ValueError(f"{where}.{key}: unknown field; valid: {sorted(cfg.keys())}")
        sub = f"{_path}.{key}" if _path else key
        if isinstance(value, dict) and key in cfg and hasattr(cfg[key], "keys"):
            merge_config(cfg[key], value, f"{where}.{key}", free, sub)
        else:
            with cfg.unlocked():
                cfg[key] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value


def dataset_config(
    config, dataset: str, field: str = "overrides", valid: Sequence[str] = (), free=()
):
    """A copy of `config` with `config.<field>[dataset]` merged in (`merge_config`; `free`:
    its free-form mappings): the one way a study changes its settings per dataset (sizes,
    network, sampler). `valid`: the dataset names `config.<field>` may name (checked when
    given)."""
    import ml_collections

    cfg = ml_collections.ConfigDict(config.to_dict())
    table = config.get(field, None) or {}
    unknown = sorted(set(table) - set(valid)) if valid else []
    if unknown:
        raise ValueError(f"config.{field}: unknown dataset(s) {unknown}; valid: {sorted(valid)}")
    if dataset in table:
        merge_config(cfg, table[dataset], f"config.{field}.{dataset}", free)
    return cfg


def eval_steps(steps_per_dispatch: int, num_steps: int, num_evals: int) -> list[int]:
    """About `num_evals` log-spaced evaluation steps in [K, num_steps], multiples of K.

    Multiples of K keep every dispatch at K steps (one compiled shape); the last is
    num_steps (which must be a multiple of K).
    """
    k = int(steps_per_dispatch)
    if num_steps % k:
        raise ValueError(
            f"config: num_steps={num_steps} must be a multiple of steps_per_dispatch={k}"
        )
    if num_evals < 1:
        raise ValueError(f"config: num_evals must be >= 1, got {num_evals}")
    raw = np.geomspace(k, num_steps, max(num_evals, 2)) if num_evals > 1 else [num_steps]
    return sorted({max(k, int(round(s / k)) * k) for s in raw} | {num_steps})


def machine_info() -> dict:
    """What the run ran on (timings are only comparable on the same machine and load)."""
    dev = jax.devices()[0]
    info: dict[str, Any] = {
        "platform": dev.platform,
        "device_kind": getattr(dev, "device_kind", ""),
        "num_devices": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        info["load_average"] = list(os.getloadavg())
    return info


class Network(NamedTuple):
    """A network's pure apply function and parameter initialiser (`key -> params`)."""

    apply_fn: Callable
    init_params: Callable
    input_shape: tuple[int, ...]


def build_network(
    name: str,
    variant: str,
    input_shape: Sequence[int],
    *,
    num_classes: int | None = None,
    dtype=jnp.float32,
    **overrides,
) -> Network:
    """(apply_fn, init_params) of a registered model, through `fj.models.build_model`.

    Build it once per run and share it: compiled samplers and train steps are cached by JAX
    on the apply function, so arms and seeds of one network reuse them.
    """
    from flax import nnx

    from flowjax import models

    def module(key):
        return models.build_model(
            name,
            variant,
            input_shape=tuple(input_shape),
            num_classes=num_classes,
            key=key,
            dtype=dtype,
            **overrides,
        )

    apply_fn, _ = models.functional(nnx.eval_shape(lambda: module(jax.random.key(0))))
    return Network(apply_fn, lambda key: models.functional(module(key))[1], tuple(input_shape))


class BatchStream:
    """Training batches of several seeds, K steps at a time: dicts of arrays (S, K, B, ...).

    Seed s reads `fj.data.make_iterator(dataset, seed=s, split="train")` (the trainer's own
    pipeline). The stream is kept in memory when it fits in `cache_mb`, so every arm of a
    study re-reads the same batches instead of regenerating them.
    """

    def __init__(
        self,
        dataset: str,
        seeds: Sequence[int],
        batch_size: int,
        num_steps: int,
        steps_per_dispatch: int,
        *,
        keys: Sequence[str] = ("x1",),
        cache_mb: float = 256.0,
        data_dir: str | None = None,
        **source_kwargs,
    ):
        if num_steps % steps_per_dispatch:
            raise ValueError(
                f"num_steps={num_steps} must be a multiple of "
                f"steps_per_dispatch={steps_per_dispatch}"
            )
        self.dataset, self.seeds = dataset, tuple(int(s) for s in seeds)
        self.batch_size, self.num_steps, self.k = (
            int(batch_size),
            int(num_steps),
            steps_per_dispatch,
        )
        self.keys = tuple(keys)
        self._kwargs = dict(data_dir=data_dir, **source_kwargs)
        first = next(self._iterator(self.seeds[0]))
        size = sum(np.asarray(first[k]).nbytes for k in self.keys)
        self._cache = None
        if size * len(self.seeds) * self.num_steps <= cache_mb * 2**20:
            self._cache = list(self._chunks())

    def _iterator(self, seed: int) -> Iterator:
        from flowjax import data

        return data.make_iterator(
            self.dataset,
            global_batch_size=self.batch_size,
            seed=seed,
            split="train",
            **self._kwargs,
        )

    def _chunks(self) -> Iterator[dict]:
        its = [self._iterator(s) for s in self.seeds]
        for _ in range(self.num_steps // self.k):
            per_seed = [[next(it) for _ in range(self.k)] for it in its]
            yield {
                key: np.stack([np.stack([np.asarray(b[key]) for b in c]) for c in per_seed])
                for key in self.keys
            }

    def __iter__(self) -> Iterator[dict]:
        return iter(self._cache) if self._cache is not None else self._chunks()


def unstack(tree, index: int):
    """Seed `index` of a tree with a leading seed axis."""
    return jax.tree.map(lambda x: x[index], tree)


class SeedTrainer:
    """Trains every seed of an arm at once through `fj.train.step.make_update` (vmapped).

    Args:
      loss_fn: `loss(params, key, batch) -> (scalar, aux)`, the objective with its model bound.
      network: the trained `Network`.
      optim: an `optim` config (`configs/default.py` fields) for `fj.train.make_optimizer`.
      num_steps: the run's length (for the learning-rate schedule).
      ema_decay: EMA decay (with the trainer's warmup), evaluated as `state.ema[0]`.
      on_nonfinite: "stop" or "skip" (`fj.train.step.NONFINITE_POLICIES`).
    """

    def __init__(
        self,
        loss_fn: Callable,
        network: Network,
        optim,
        num_steps: int,
        *,
        ema_decay: float,
        on_nonfinite: str = "stop",
    ):
        from flowjax.train import make_optimizer
        from flowjax.train.state import init_state
        from flowjax.train.step import make_update

        self.optimizer, self.schedule = make_optimizer(optim, num_steps)
        update = make_update(
            loss_fn,
            self.optimizer,
            self.schedule,
            ema_decays=(float(ema_decay),),
            on_nonfinite=on_nonfinite,
        )
        self._update = jax.jit(jax.vmap(update), donate_argnums=(0,))
        init = lambda seed: init_state(network.init_params, self.optimizer, seed, 1)  # noqa: E731
        self._init = jax.jit(jax.vmap(init))

    def init(self, seeds: Sequence[int]):
        """Fresh states, one per seed (seed s's parameters come from key(s) alone)."""
        return self._init(jnp.asarray(list(seeds), jnp.int32))

    def train(self, stream: BatchStream) -> tuple[Any, np.ndarray]:
        """Trains every seed of `stream` from scratch: (final states, losses (S, num_steps))."""
        state = self.init(stream.seeds)
        losses = []
        for chunk in stream:
            state, metrics = self._update(state, {k: jnp.asarray(v) for k, v in chunk.items()})
            losses.append(metrics["loss"])
        return state, np.concatenate([np.asarray(v) for v in losses], axis=1)
