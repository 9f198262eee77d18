"""Runs the same train steps on 1 device and on 8 forced host devices; prints JSON.

Run with XLA_FLAGS=--xla_force_host_platform_device_count=8 (set before jax is imported).
Meshes: data=1 (the first device only), data=8, and data=2 x fsdp=4. Every mesh sees the
same global batches; the output gives the largest relative parameter difference to the
1-device run and which parameters the fsdp rule sharded.
"""

import json
import sys
import tempfile

import jax
import numpy as np

from configs import toy2d
from flowjax.train import Checkpointer, build, make_data_iterator, make_global_batch

STEPS, K = 6, 2


def run(config, devices):
    exp = build(config, devices)
    state = exp.new_state()
    init = jax.device_get(state.params)
    it = make_data_iterator(config)
    for _ in range(STEPS // K):
        batches = [next(it) for _ in range(K)]
        stacked = {"x1": np.stack([b["x1"] for b in batches])}
        state, _ = exp.train_step(state, make_global_batch(stacked, exp.mesh, stacked=True))
    specs = jax.tree.map(lambda x: str(x.sharding.spec), state.params)
    return exp, state, init, specs


def restore_round_trip(exp, state, directory):
    """Saves a sharded state and restores it into the experiment's target shardings."""
    ckpt = Checkpointer(directory, async_save=False)
    ckpt.save(6, state, {"step": 6}, {})
    restored, data_state, _ = ckpt.restore(6, exp.abstract_state)
    ckpt.close()
    equal = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), restored, state)
    same = jax.tree.map(lambda a, b: a.sharding == b.sharding, restored, state)
    return {
        "equal": all(jax.tree.leaves(equal)) and data_state == {"step": 6},
        "same_sharding": all(jax.tree.leaves(same)),
    }


def main():
    assert jax.device_count() == 8, jax.devices()
    config = toy2d.get_config("fm")
    config.model.variant = "tiny"
    config.data.batch_size = 64
    config.optim.warmup_steps = 2
    config.mesh.fsdp_min_size = 256  # shard the (32, 32) kernels; biases stay replicated
    _, ref, init, _ = run(config, jax.devices()[:1])
    ref = jax.device_get(ref)
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), ref.params, init)
    out = {"min_param_change": min(jax.tree.leaves(moved))}
    for name, (data, fsdp) in {"data8": (8, 1), "data2_fsdp4": (2, 4)}.items():
        config.mesh.data, config.mesh.fsdp = data, fsdp
        exp, state, _, specs = run(config, jax.devices())
        got = jax.device_get(state)
        rel = jax.tree.map(
            lambda a, b: float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)),
            (got.params, got.ema, got.opt_state),
            (ref.params, ref.ema, ref.opt_state),
        )
        out[name] = {
            "max_rel_diff": max(jax.tree.leaves(rel)),
            "sharded": sorted({s for s in jax.tree.leaves(specs) if "fsdp" in s}),
            "step": int(got.step),
        }
    with tempfile.TemporaryDirectory() as tmp:
        out["restore"] = restore_round_trip(exp, state, tmp)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
