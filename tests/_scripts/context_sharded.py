"""A context-conditioned loss and gradient on 1 device and on 8 forced host devices; JSON.

Run with XLA_FLAGS=--xla_force_host_platform_device_count=8 (set before jax is imported).
The batch (x1, label, context) of the context-indexed mixture comes from the data pipeline
and is placed with `make_global_batch` on a data=8 mesh; the loss is CondOT flow matching of
a context-conditioned MLP (FiLM), with the context dropped to the null context for some rows.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import flowjax as fj
from flowjax.train import make_global_batch, make_mesh


def main():
    assert jax.device_count() == 8, jax.devices()
    model = fj.models.build_model(
        "mlp", "tiny", input_shape=(2,), context_shape=(1,), key=0, time_scale=1.0
    )
    apply_fn, params = fj.models.functional(model)
    # Perturb every parameter so that the zero-initialised FiLM layer matters.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(
        tree, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    )
    batch = next(fj.data.make_iterator("context_gmm", global_batch_size=64, seed=0))

    def loss(params, batch, key):
        x1, ctx = batch["x1"], batch["context"]
        k0, kt, kd = jax.random.split(key, 3)
        x0 = fj.sources.StandardGaussian().sample(k0, x1.shape, context=ctx, dtype=x1.dtype)
        t = jax.random.uniform(kt, (x1.shape[0],))
        xt = t[:, None] * x1 + (1 - t[:, None]) * x0
        pred = apply_fn(params, xt, t, context=fj.models.drop_context(kd, ctx, 0.25))
        return jnp.mean(jnp.sum((pred - (x1 - x0)) ** 2, -1))

    step = jax.jit(jax.value_and_grad(loss))
    key = jax.random.key(2)
    ref_loss, ref_grad = step(params, {k: jnp.asarray(v) for k, v in batch.items()}, key)
    mesh = make_mesh(data=8, fsdp=1)
    sharded = make_global_batch(batch, mesh)
    got_loss, got_grad = step(params, sharded, key)
    rel = jax.tree.map(
        lambda a, b: float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)),
        (got_loss, got_grad),
        (ref_loss, ref_grad),
    )
    shuffled = dict(batch, context=-batch["context"])
    other = step(params, {k: jnp.asarray(v) for k, v in shuffled.items()}, key)[0]
    out = {
        "max_rel_diff": max(jax.tree.leaves(rel)),
        "context_matters": float(abs(other - ref_loss)),
        "context_sharding": str(sharded["context"].sharding.spec),
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
