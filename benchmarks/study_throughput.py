r"""Throughput of the compare study's training: seed-steps per second of three ways to train
every arm x seed of one dataset, measured in one run on the same batches.

    python -m benchmarks.study_throughput                     # 6 arms x 8 seeds, 200 steps
    python -m benchmarks.study_throughput --steps=200 --rounds=3 \
        --json=benchmarks/results/study_throughput_cpu.json
    python -m benchmarks.study_throughput --arms=fm_ot --methods=loop,seed,nested,fused \
        --steps=100 --no_cost --json=benchmarks/results/study_throughput_cpu_ot.json

(a) the per-arm loop: the compare study's `Trainer` as at commit 350f820 (removed since),
    re-created here: one `fj.train.make_train_step` over a `lax.switch` of the arms' full
    losses on a run-time arm index, one (arm, seed) at a time (seeds outer, arms inner, as
    `compare._run_dataset` ran them), one dispatch per K steps;
(b) `studies.SeedTrainer` per arm: every seed of an arm in one vmapped program;
(c) `studies.ArmTrainer`: every arm x seed in one program (one network call per instance,
    minibatch OT in a group of its own);
and, with `--methods=...,nested`, (b') (b) with the seeds' vmap nested under a size-1 arm axis,
    as `ArmTrainer` runs a group of one arm: what that nesting alone costs.

The arms are `configs/compare_default.py`'s six (fm, fm_ot, fm_lognorm, ddpm, cosine_v, edm
with EDM preconditioning), MLP 3 x 128, batch 256, K = 50, on the checkerboard; the batches
are the study's own `BatchStream`, on the device before any timing. Every method is compiled
(and run once) before the first timed round, and its compilation is reported apart. The
timed rounds interleave the methods (their order rotates from round to round), so a change of
the machine's load hits every method alike; each round's ratios to (a) are computed within
the round. Wall and process CPU seconds (all threads) of the dispatches are both reported,
with the load average. Also printed: `ArmTrainer.cost` per arm (XLA flops and bytes of one
step, peak memory, seconds per step alone).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "main",
    "study_config",
    "build_arms",
    "PerArmLoop",
    "SeedTrainers",
    "NestedSeeds",
    "Fused",
]

LOOP, SEED, FUSED = "per-arm loop (compare.Trainer @350f820)", "SeedTrainer per arm", "ArmTrainer"
NESTED = "SeedTrainer under a size-1 arm axis"
ARM_KEY = "arm"  # as compare.ARM_KEY at 350f820: the arm index, one copy per example


class _Clock:
    """Wall and process (all threads) seconds of the blocks it times."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c


class _Both:
    """Two clocks timing the same blocks."""

    def __init__(self, *clocks):
        self.clocks = clocks

    def __enter__(self):
        for c in self.clocks:
            c.__enter__()
        return self

    def __exit__(self, *exc):
        for c in reversed(self.clocks):
            c.__exit__(*exc)


def _result(clock, per_arm) -> dict:
    return {
        "wall": clock.wall,
        "cpu": clock.cpu,
        "per_arm_wall": [c.wall for c in per_arm],
        "per_arm_cpu": [c.cpu for c in per_arm],
    }


def build_arms(config, dataset):
    """(resolved arms, spec, network, [(objective, model)]) exactly as the compare study builds
    them (`compare.build_arms`: one network, EDM arms wrapped in their preconditioning)."""
    from flowjax import data
    from flowjax.studies import compare

    spec = data.spec(dataset)
    arms = compare.resolve_arms(config, dataset, jax.device_count())
    net, pairs, _ = compare.build_arms(arms, spec, float(config.eval.t_eps))
    return arms, spec, net, pairs


def study_config(variant=None, *, arms: str, seeds: int, steps: int, k: int, batch_size: int):
    """`configs/compare_default.py` (its `variant`) with the benchmark's sizes."""
    from configs import compare_default

    config = compare_default.get_config(variant)
    config.arms, config.num_seeds = arms, seeds
    config.base.train.num_steps = steps
    config.base.train.steps_per_dispatch = k
    config.base.data.batch_size = batch_size
    # The learning-rate schedule does not change the cost of a step; it must fit the run.
    config.base.optim.warmup_steps = min(config.base.optim.warmup_steps, steps // 2)
    return config


def _scalars(value, aux):
    # compare._scalars at 350f820: every branch of lax.switch returns the same structure.
    return value, {"loss": value, "t_mean": aux["t_mean"]}


class PerArmLoop:
    """(a) compare.Trainer's step as at commit 350f820, one (arm, seed) at a time."""

    name = LOOP

    def __init__(self, arms, net, pairs, chunks, seeds):
        from flowjax.train import (
            make_global_batch,
            make_mesh,
            make_optimizer,
            make_train_step,
            state_shardings,
        )
        from flowjax.train.state import init_state

        base = arms[0].config
        self.num_arms, self.seeds = len(pairs), list(seeds)
        mesh = make_mesh(base.mesh.data, base.mesh.fsdp)
        optimizer, schedule = make_optimizer(base.optim, base.train.num_steps)
        losses = [functools.partial(o, model=m) for o, m in pairs]

        def switched(params, key, batch):
            inner = {k: v for k, v in batch.items() if k != ARM_KEY}
            branches = [functools.partial(lambda f, *a: _scalars(*f(*a)), f) for f in losses]
            return jax.lax.switch(batch[ARM_KEY][0], branches, params, key, inner)

        num_ema = len(base.ema.decays)
        init = lambda seed: init_state(net.init_params, optimizer, seed, num_ema)  # noqa: E731
        sharding = state_shardings(jax.eval_shape(init, 0), mesh, min_size=base.mesh.fsdp_min_size)
        self.step = make_train_step(
            switched,
            optimizer,
            schedule,
            mesh=mesh,
            state_sharding=sharding,
            ema_decays=base.ema.decays,
            ema_warmup=base.ema.warmup,
            on_nonfinite=base.train.on_nonfinite,
            accum_steps=base.optim.accum_steps,
        )
        self._init = jax.jit(init, out_shardings=sharding)

        # compare.Trainer.device_batches, built before any timing: [seed][arm][chunk].
        def device(chunk, s, a):
            batch = {"x1": chunk["x1"][s]}
            k, b = batch["x1"].shape[:2]
            batch[ARM_KEY] = np.full((k, b), a, np.int32)
            return make_global_batch(batch, mesh, stacked=True)

        self.batches = [
            [[device(c, s, a) for c in chunks] for a in range(self.num_arms)]
            for s in range(len(self.seeds))
        ]
        t0 = time.perf_counter()
        warm, _ = self.step(self.init(self.seeds[0]), self.batches[0][0][0])
        jax.block_until_ready(warm)
        self.compile_seconds = time.perf_counter() - t0

    def init(self, seed):
        return self._init(jnp.asarray(seed, jnp.int32))

    def train(self, s: int, a: int, clock: _Clock | None = None):
        """Arm a's final state for seed index s (as compare._train_arm, evaluation aside)."""
        clock = _Clock() if clock is None else clock
        state = self.init(self.seeds[s])
        jax.block_until_ready(state)
        for batch in self.batches[s][a]:
            with clock:
                state, metrics = self.step(state, batch)
                jax.block_until_ready(state)
        return state

    def run(self) -> dict:
        clock, per_arm = _Clock(), [_Clock() for _ in range(self.num_arms)]
        for s in range(len(self.seeds)):  # compare._run_dataset: seeds outer, arms inner
            for a in range(self.num_arms):
                self.train(s, a, _Both(clock, per_arm[a]))
        return _result(clock, per_arm)


class SeedTrainers:
    """(b) one `studies.SeedTrainer` per arm (every seed of the arm in one program)."""

    name = SEED

    def __init__(self, arms, net, pairs, chunks, seeds):
        from flowjax import studies

        base = arms[0].config
        self.seeds, self.chunks = list(seeds), chunks
        self.programs = []  # (init(seeds) -> states, update(states, chunk)) per arm
        for objective, model in pairs:
            trainer = studies.SeedTrainer(
                functools.partial(objective, model=model),
                net,
                base.optim,
                base.train.num_steps,
                ema_decay=base.ema.decays[0],
                on_nonfinite=base.train.on_nonfinite,
            )
            self.programs.append((trainer.init, trainer._update))
        self._compile()

    def _compile(self):
        self.compile_seconds = 0.0
        for init, update in self.programs:
            t0 = time.perf_counter()
            jax.block_until_ready(update(init(self.seeds), self.chunks[0]))
            self.compile_seconds += time.perf_counter() - t0

    def run(self) -> dict:
        clock, per_arm = _Clock(), [_Clock() for _ in self.programs]
        for (init, update), arm_clock in zip(self.programs, per_arm, strict=True):
            state = init(self.seeds)
            jax.block_until_ready(state)
            for chunk in self.chunks:
                with clock, arm_clock:
                    state, metrics = update(state, chunk)
                    jax.block_until_ready(state)
        return _result(clock, per_arm)


class NestedSeeds(SeedTrainers):
    """(b') as (b), but each arm's seeds vmapped under a size-1 arm axis,
    `jax.vmap(jax.vmap(update), in_axes=(0, None))` over (1, S): how `ArmTrainer` runs a group
    of one arm (fm_ot). Not a way to train; it isolates what that nesting costs."""

    name = NESTED

    def __init__(self, arms, net, pairs, chunks, seeds):
        from flowjax.train import make_optimizer
        from flowjax.train.state import init_state
        from flowjax.train.step import make_update

        base = arms[0].config
        self.seeds, self.chunks = list(seeds), chunks
        optimizer, schedule = make_optimizer(base.optim, base.train.num_steps)
        one = lambda seed: init_state(net.init_params, optimizer, seed, 1)  # noqa: E731
        states = jax.jit(jax.vmap(jax.vmap(one)))
        init = lambda seeds: states(jnp.asarray([list(seeds)], jnp.int32))  # noqa: E731
        self.programs = []
        for objective, model in pairs:
            update = make_update(
                functools.partial(objective, model=model),
                optimizer,
                schedule,
                ema_decays=(float(base.ema.decays[0]),),
                on_nonfinite=base.train.on_nonfinite,
            )
            nested = jax.vmap(jax.vmap(update), in_axes=(0, None))
            self.programs.append((init, jax.jit(nested, donate_argnums=(0,))))
        self._compile()


class Fused:
    """(c) one `studies.ArmTrainer` for every arm x seed."""

    name = FUSED

    def __init__(self, arms, net, pairs, chunks, seeds):
        from flowjax import studies

        base = arms[0].config
        self.seeds, self.chunks = list(seeds), chunks
        self.trainer = studies.ArmTrainer(
            pairs,
            net,
            base.optim,
            base.train.num_steps,
            ema_decay=base.ema.decays[0],
            on_nonfinite=base.train.on_nonfinite,
        )
        state = self.trainer.init(self.seeds)
        self.exe = self.trainer._executable(state, chunks[0])  # ahead-of-time compile
        t0 = time.perf_counter()
        jax.block_until_ready(self.exe(state, chunks[0]))
        self.compile_seconds = self.trainer.compile_seconds + time.perf_counter() - t0

    def train(self, clock: _Clock | None = None):
        """The final state of every (arm, seed), leaves (A, S, ...)."""
        clock = _Clock() if clock is None else clock
        state = self.trainer.init(self.seeds)
        jax.block_until_ready(state)
        for chunk in self.chunks:
            with clock:
                state, losses = self.exe(state, chunk)
                jax.block_until_ready(state)
        return state

    def run(self) -> dict:
        clock = _Clock()
        self.train(clock)
        return {"wall": clock.wall, "cpu": clock.cpu}


def _median(xs):
    return float(statistics.median(xs))


def main(argv=None) -> dict:
    from benchmarks._harness import environment, loadavg
    from flowjax import studies

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="checkerboard")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=200, help="timed steps per (arm, seed) a round")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (methods interleaved)")
    p.add_argument("--k", type=int, default=50, help="steps per dispatch")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--arms", default="fm,fm_ot,fm_lognorm,ddpm,cosine_v,edm")
    p.add_argument(
        "--methods", default="loop,seed,fused", help="of loop, seed, nested, fused (see above)"
    )
    p.add_argument("--no_cost", action="store_true", help="skip ArmTrainer.cost")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)

    config = study_config(
        arms=args.arms, seeds=args.seeds, steps=args.steps, k=args.k, batch_size=args.batch_size
    )
    k, seeds = args.k, list(range(args.seeds))
    arms, spec, net, pairs = build_arms(config, args.dataset)
    stream = studies.BatchStream(args.dataset, seeds, args.batch_size, args.steps, k)
    chunks = [{key: jnp.asarray(v) for key, v in c.items()} for c in stream]
    units = len(pairs) * len(seeds) * args.steps  # seed-steps per round

    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m benchmarks.study_throughput", *given])
    env = environment()
    load0 = loadavg()
    print(f"command: {command}", flush=True)
    print(
        f"date: {env['date_utc']}  machine: {env['cpu_model']} ({env['cpu_usable']} usable "
        f"CPUs), {env['backend']}; jax {jax.__version__}; load average {load0}",
        flush=True,
    )
    print(
        f"{len(pairs)} arms ({args.arms}) x {len(seeds)} seeds x {args.steps} steps = {units} "
        f"seed-steps a round, {args.rounds} rounds; batch {args.batch_size}, K = {k}, "
        f"{args.dataset}",
        flush=True,
    )
    builders = {"loop": PerArmLoop, "seed": SeedTrainers, "nested": NestedSeeds, "fused": Fused}
    methods = [builders[m](arms, net, pairs, chunks, seeds) for m in args.methods.split(",")]
    for m in methods:
        print(f"compiled {m.name} in {m.compile_seconds:.1f} s (load {loadavg()})", flush=True)

    rounds = []
    for r in range(args.rounds):
        order = methods[r % len(methods) :] + methods[: r % len(methods)]
        this = {"load_start": loadavg(), "order": [m.name for m in order]}
        for m in order:
            this[m.name] = m.run()
        this["load_end"] = loadavg()
        ref = this.get(LOOP)
        line = f"round {r}: load {this['load_start']} -> {this['load_end']}; "
        for m in methods:
            t = this[m.name]
            t["seed_steps_per_s"], t["seed_steps_per_cpu_s"] = units / t["wall"], units / t["cpu"]
            if ref is not None:
                t["x_loop_wall"], t["x_loop_cpu"] = ref["wall"] / t["wall"], ref["cpu"] / t["cpu"]
            line += f"{m.name} {t['wall']:.2f} s wall / {t['cpu']:.2f} s CPU; "
        print(line, flush=True)
        rounds.append(this)

    summary = {}
    for m in methods:
        rs = [r[m.name] for r in rounds]
        s = {
            "wall_s_median": _median([r["wall"] for r in rs]),
            "cpu_s_median": _median([r["cpu"] for r in rs]),
            "seed_steps_per_s_median": _median([r["seed_steps_per_s"] for r in rs]),
            "seed_steps_per_cpu_s_median": _median([r["seed_steps_per_cpu_s"] for r in rs]),
            "compile_s": m.compile_seconds,
        }
        if LOOP in rounds[0]:
            for key in ("x_loop_wall", "x_loop_cpu"):
                vals = [r[key] for r in rs]
                s[key + "_median"], s[key + "_range"] = _median(vals), [min(vals), max(vals)]
        for key in ("per_arm_wall", "per_arm_cpu"):
            if key in rs[0]:
                s[key + "_median"] = [_median([r[key][a] for r in rs]) for a in range(len(arms))]
        summary[m.name] = s
    load1 = loadavg()

    print(f"\nload average: {load0} at start, {load1} at end")
    print(
        "\n| method | seed-steps/s (wall) | seed-steps/CPU-s | x loop (wall) | x loop (CPU) | "
        "compile s |"
    )
    print("|---|---|---|---|---|---|")
    for name, s in summary.items():
        xw = xc = "-"
        if "x_loop_wall_median" in s:
            lo, hi = s["x_loop_wall_range"]
            xw = f"{s['x_loop_wall_median']:.2f} [{lo:.2f}, {hi:.2f}]"
            lo, hi = s["x_loop_cpu_range"]
            xc = f"{s['x_loop_cpu_median']:.2f} [{lo:.2f}, {hi:.2f}]"
        print(
            f"| {name} | {s['seed_steps_per_s_median']:.0f} | "
            f"{s['seed_steps_per_cpu_s_median']:.0f} | {xw} | {xc} | {s['compile_s']:.1f} |"
        )
    print("(medians over rounds; [min, max] of the per-round ratios)")
    for name, s in summary.items():
        if "per_arm_cpu_median" in s:
            walls, cpus = s["per_arm_wall_median"], s["per_arm_cpu_median"]
            print(
                f"{name}: per arm, wall / CPU s (medians over rounds): "
                + ", ".join(
                    f"{a.name} {w:.2f} / {c:.2f}" for a, w, c in zip(arms, walls, cpus, strict=True)
                )
            )
    fused = next((m for m in methods if m.name == FUSED), None)
    cost = None
    if fused is not None:
        groups = [[arms[i].name for i in g] for g in fused.trainer.groups]
        print(f"ArmTrainer groups: {groups}")
        if not args.no_cost:
            cost = fused.trainer.cost({k_: np.asarray(v) for k_, v in stream._cache[0].items()})
            print("\nArmTrainer.cost (one (arm, seed) step of a separate run):")
            print("| arm | MFLOP/step | MB accessed/step | peak memory MB | ms/step alone |")
            print("|---|---|---|---|---|")
            for a, c in zip(arms, cost, strict=True):
                mflop, mb = c["flops_per_step"] / 1e6, c["bytes_per_step"] / 1e6
                peak, ms = c["peak_memory_bytes"] / 1e6, c["seconds_per_step"] * 1e3
                print(f"| {a.name} | {mflop:.1f} | {mb:.2f} | {peak:.2f} | {ms:.2f} |")
    out = {
        "command": command,
        "environment": env,
        "loadavg": [load0, load1],
        "arms": [a.name for a in arms],
        "seeds": len(seeds),
        "steps_per_round": args.steps,
        "k": k,
        "batch_size": args.batch_size,
        "units_seed_steps_per_round": units,
        "summary": summary,
        "rounds": rounds,
        "cost": cost,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
    return out


if __name__ == "__main__":
    main()
