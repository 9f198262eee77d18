"""Every arm x seed of a study trained in one compiled program, one dispatch per K steps.

A study trains A arms (objectives) x S seeds of one network. `SeedTrainer` compiles one program
per arm (its seeds vmapped); `ArmTrainer` flattens (arm, seed) into instances of one program:

- every instance is the library's one train step (`fj.train.step.make_update`, so clipping,
  EMA and the non-finite policy stay per instance), vmapped over arms and then seeds;
- a Gaussian objective (flow matching, diffusion) is a cheap, parameter-free *draw* of a
  regression problem (`objective.draw_regression(key, batch)`: noise, times, x_t, target,
  weight) followed by one network call and one reduction. Inside the loss, a `lax.switch` on
  the instance's arm index picks its arm's draw (under vmap every branch is computed; they
  are elementwise and cheap) and the network runs ONCE per instance, whatever its arm. An EDM
  arm (`EDMPrecond` around the network) draws its x1-regression and turns it into the raw
  network's (`EDMPrecond.raw_regression`, Karras et al. 2022, eq. (8)), so it shares the call;
- arms whose draw is dear (a coupling other than `Independent`: minibatch OT's Sinkhorn) or
  that have no `draw_regression` (flow maps, ...) are groups of their own, their objective
  called as is (vmapped over seeds only), so no other arm pays for their draw.

All groups run in one jitted function with the state donated. (arm a, seed s) sees exactly what
a separate run of arm a and seed s sees: the parameters `init_state` gives seed s, seed s's
batches, and the keys `fold_in(key_s, step)`; its parameters equal that run's to float32
rounding (tests/test_fused.py).
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flowjax.studies._core import BatchStream, Network

__all__ = ["ArmTrainer"]

_LABEL_MESSAGE = "ArmTrainer: batch['label'] values out of range of an arm's num_classes"
_ARM = "_arm"  # batch entry carrying an instance's arm index within its group (one per step)


class _Group(NamedTuple):
    """Arms trained by one vmapped update: `arms` are indices into the trainer's arms."""

    arms: tuple[int, ...]
    run: Callable  # make_update(...) of the group's loss
    switched: bool  # the loss reads the arm index from the batch


def _shared_forward(objective, model):
    """(network forward, regression transform) when the arm's loss is a cheap draw of a
    regression of that forward, else None (the arm is trained through its own objective)."""
    from flowjax.couplings import Independent
    from flowjax.objectives import EDMPrecond

    if not hasattr(objective, "draw_regression"):
        return None
    if not isinstance(getattr(objective, "coupling", Independent()), Independent):
        return None  # Sinkhorn and the like: not computed for every arm
    if isinstance(model, EDMPrecond):
        if getattr(objective, "target", None) != "x1":
            return None  # D regressed on another target: no raw form; trained as is
        return model.net, model.raw_regression
    return model, None


def _draw(objective, transform, key, batch):
    reg = objective.draw_regression(key, batch)
    reg = reg if transform is None else transform(reg)
    if reg.message:  # the branches of lax.switch must agree on it (a static field)
        reg = dataclasses.replace(reg, message=_LABEL_MESSAGE)
    return reg


def _switched_loss(draws: Sequence[Callable], forward: Callable):
    """loss(params, key, batch): the draw of arm batch[_ARM], then one call of `forward`."""

    def loss(params, key, batch):
        inner = {k: v for k, v in batch.items() if k != _ARM}
        if len(draws) == 1:
            reg = draws[0](key, inner)
        else:
            reg = jax.lax.switch(batch[_ARM], draws, key, inner)
        value, _, _ = reg.loss(reg.predict(forward, params, "ArmTrainer"))
        return value, {"loss": value}

    return loss


def _cost_numbers(compiled) -> tuple[float, float, float]:
    """(flops, bytes accessed, peak memory bytes) of a compiled program (XLA's own analysis)."""
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    mem = compiled.memory_analysis()
    peak = (
        mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        + mem.temp_size_in_bytes
        - mem.alias_size_in_bytes
    )
    return float(ca.get("flops", 0.0)), float(ca.get("bytes accessed", 0.0)), float(peak)


class ArmTrainer:
    """Trains every (arm, seed) of one network at once: one compiled program, one dispatch
    per chunk of K steps.

    Args:
      arms: `(objective, model)` per arm: an objective module (`fj.objectives.*`, called as
        `objective(params, key, batch, model=model)`) and the apply function it trains
        (`network.apply_fn`, or `fj.objectives.EDMPrecond(network.apply_fn, ...)`).
      network: the `Network` every arm trains (its `init_params` gives seed s's parameters).
      optim: an `optim` config (`configs/default.py` fields) for `fj.train.make_optimizer`.
      num_steps: the run's length (for the learning-rate schedule).
      ema_decay: EMA decay (with the trainer's warmup), evaluated as `state.ema[0]`.
      on_nonfinite: "skip" or "stop" (`fj.train.step.NONFINITE_POLICIES`), per instance.

    Attributes:
      groups: the arm indices of each group of the program (arms sharing one network call,
        then each arm with a dear or opaque objective alone).
      train_seconds: seconds spent in update calls during the last `train` (compilation
        excluded: `compile_seconds`).
    """

    def __init__(
        self,
        arms: Sequence[tuple[Any, Callable]],
        network: Network,
        optim,
        num_steps: int,
        *,
        ema_decay: float,
        on_nonfinite: str = "skip",
    ):
        from flowjax.train import make_optimizer
        from flowjax.train.state import init_state
        from flowjax.train.step import NONFINITE_POLICIES, make_update

        arms = list(arms)
        if not arms:
            raise ValueError("ArmTrainer: arms is empty; give (objective, model) pairs")
        for i, arm in enumerate(arms):
            if not (isinstance(arm, (tuple, list)) and len(arm) == 2 and callable(arm[1])):
                raise TypeError(f"ArmTrainer: arms[{i}] must be an (objective, model) pair")
            if not callable(arm[0]):
                raise TypeError(f"ArmTrainer: arms[{i}][0] must be an objective, got {arm[0]!r}")
        if on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(
                f"on_nonfinite: one of {sorted(NONFINITE_POLICIES)}, got {on_nonfinite!r}"
            )
        self.arms = [tuple(a) for a in arms]
        self.network = network
        self.optimizer, self.schedule = make_optimizer(optim, num_steps)
        self.num_steps = int(num_steps)
        self._make_update = functools.partial(
            make_update,
            optimizer=self.optimizer,
            schedule=self.schedule,
            ema_decays=(float(ema_decay),),
            on_nonfinite=on_nonfinite,
        )

        # Arms sharing a network forward form one switched group (in order of first arm);
        # every other arm is a group of its own.
        shared: dict[Any, list[tuple[int, Callable]]] = {}
        alone = []
        for i, (objective, model) in enumerate(self.arms):
            plan = _shared_forward(objective, model)
            if plan is None:
                alone.append(i)
            else:
                forward, transform = plan
                draw = functools.partial(_draw, objective, transform)
                shared.setdefault(forward, []).append((i, draw))
        groups = []
        for forward, members in shared.items():
            loss = _switched_loss([d for _, d in members], forward)
            groups.append(_Group(tuple(i for i, _ in members), self._make_update(loss), True))
        for i in alone:
            objective, model = self.arms[i]
            loss = functools.partial(objective, model=model)
            groups.append(_Group((i,), self._make_update(loss), False))
        self._groups = groups
        self.groups = [g.arms for g in groups]
        order = np.concatenate([np.asarray(g.arms) for g in groups])
        self._inverse = None if np.all(order == np.arange(len(order))) else np.argsort(order)

        init = lambda seed: init_state(network.init_params, self.optimizer, seed, 1)  # noqa: E731
        self._init_one = jax.jit(init)
        self._init = jax.jit(jax.vmap(jax.vmap(init)))
        self._update = jax.jit(self._fused_update, donate_argnums=(0,))
        self._executables: dict = {}
        self.train_seconds = 0.0
        self.compile_seconds = 0.0

    # ------------------------------------------------------------------ the fused program

    def _fused_update(self, state, chunk: dict):
        k = jax.tree.leaves(chunk)[0].shape[1]
        news, losses = [], []
        for g in self._groups:
            lo, hi = g.arms[0], g.arms[-1] + 1
            if g.arms == tuple(range(lo, hi)):
                sub = jax.tree.map(lambda x, lo=lo, hi=hi: x[lo:hi], state)
            else:
                sub = jax.tree.map(lambda x, g=g: x[np.asarray(g.arms)], state)

            def instance(st, ch, a, run=g.run, switched=g.switched):
                if switched:
                    ch = {**ch, _ARM: jnp.full((k,), a, jnp.int32)}
                return run(st, ch)

            per_seed = jax.vmap(instance, in_axes=(0, 0, None))
            if len(g.arms) == 1:  # vmapped over seeds only: a size-1 arm axis cost ~1.4x
                one = jax.tree.map(lambda x: x[0], sub)
                new, metrics = per_seed(one, chunk, jnp.int32(0))
                new, metrics = jax.tree.map(lambda x: x[None], (new, metrics))
            else:
                arms = jnp.arange(len(g.arms), dtype=jnp.int32)
                new, metrics = jax.vmap(per_seed, in_axes=(0, None, 0))(sub, chunk, arms)
            news.append(new)
            losses.append(metrics["loss"])

        def merge(*parts):
            out = jnp.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
            return out if self._inverse is None else out[self._inverse]

        return jax.tree.map(merge, *news), merge(*losses)

    def _executable(self, state, chunk: dict):
        sig = tuple(sorted((k, v.shape, str(v.dtype)) for k, v in chunk.items()))
        if sig not in self._executables:
            t0 = time.perf_counter()
            self._executables[sig] = self._update.lower(state, chunk).compile()
            self.compile_seconds += time.perf_counter() - t0
        return self._executables[sig]

    # ------------------------------------------------------------------ public API

    def init(self, seeds: Sequence[int]):
        """Fresh states, leaves (A, S, ...): (arm a, seed s) from key(s) alone, as `SeedTrainer`."""
        seeds = jnp.asarray(list(seeds), jnp.int32)
        return self._init(jnp.broadcast_to(seeds, (len(self.arms), seeds.shape[0])))

    def update(self, state, chunk: dict):
        """K steps of every (arm, seed): chunk = one `BatchStream` chunk, arrays (S, K, B, ...),
        the same batches for every arm. Returns (state, losses (A, S, K)); `state` is donated."""
        chunk = {k: jnp.asarray(v) for k, v in chunk.items()}
        return self._executable(state, chunk)(state, chunk)

    def train(
        self,
        stream: BatchStream | Iterable[dict],
        *,
        eval_at: Sequence[int] = (),
        callback: Callable[[int, Any], Any] | None = None,
        state=None,
    ):
        """Trains every (arm, seed) on `stream` from fresh states (or from `state`).

        After the chunk that ends at each step of `eval_at`, calls `callback(step, state)`;
        the next update donates that state, so a callback keeps copies, not the arrays.
        Returns (final state, losses (A, S, num_steps)).
        """
        if state is None:
            state = self.init(stream.seeds)
        evals = {int(s) for s in eval_at}
        step, seconds, losses = 0, 0.0, []
        for chunk in stream:
            chunk = {k: jnp.asarray(v) for k, v in chunk.items()}
            exe = self._executable(state, chunk)
            t0 = time.perf_counter()
            state, loss = exe(state, chunk)
            jax.block_until_ready((state, loss))
            seconds += time.perf_counter() - t0
            losses.append(loss)
            step += int(chunk["x1"].shape[1])
            if step in evals:
                evals.discard(step)
                if callback is not None:
                    callback(step, state)
        if evals:
            raise ValueError(
                f"eval_at: step(s) {sorted(evals)} are not the end of a chunk of the stream "
                f"(it ended at step {step})"
            )
        self.train_seconds = seconds
        out = np.concatenate([np.asarray(v) for v in losses], axis=2) if losses else None
        return state, out

    def arm_state(self, state, a: int):
        """Arm a's state, leaves (S, ...): what `SeedTrainer` would hold for that arm."""
        return jax.tree.map(lambda x: x[a], state)

    def cost(self, chunk: dict, *, repeats: int = 5) -> list[dict]:
        """Per arm, the cost of ONE (arm, seed) step of a separate run of that arm.

        flops_per_step and bytes_per_step are XLA's cost analysis of the compiled one-step
        program (no loop: XLA counts a loop's body once, so a data-dependent loop inside the
        objective, e.g. Sinkhorn's iterations, is counted once: a lower bound there);
        peak_memory_bytes is its memory analysis (arguments + outputs + temporaries - aliased);
        seconds_per_step is the wall time of a K-step dispatch of seed 0's batches over K (what
        Sinkhorn really costs): the median of `repeats` dispatches, after one untimed call,
        timed round-robin over the arms (arm 1, arm 2, ..., arm 1, ...) so that a change of the
        machine's load during the measurement falls on every arm alike rather than on one.
        """
        batches = {k: jnp.asarray(np.asarray(v)[0]) for k, v in chunk.items()}  # (K, B, ...)
        num = int(batches["x1"].shape[0])
        one = {k: v[:1] for k, v in batches.items()}
        out, runs = [], []
        for objective, model in self.arms:
            loss = functools.partial(objective, model=model)
            state = self._init_one(jnp.asarray(0, jnp.int32))
            single = jax.jit(self._make_update(loss, unroll=True))
            flops, nbytes, peak = _cost_numbers(single.lower(state, one).compile())
            k_steps = jax.jit(self._make_update(loss), donate_argnums=(0,))
            exe = k_steps.lower(state, batches).compile()
            state, _ = exe(state, batches)
            jax.block_until_ready(state)
            runs.append([exe, state, []])
            out.append(
                {"flops_per_step": flops, "bytes_per_step": nbytes, "peak_memory_bytes": peak}
            )
        for _ in range(max(int(repeats), 1)):
            for run in runs:
                exe, state, times = run
                t0 = time.perf_counter()
                state, _ = exe(state, batches)
                jax.block_until_ready(state)
                times.append(time.perf_counter() - t0)
                run[1] = state
        for row, (_, _, times) in zip(out, runs, strict=True):
            row["seconds_per_step"] = statistics.median(times) / num
        return out
