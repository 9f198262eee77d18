"""Train-step throughput: flowjax's own train step against the peers' training loops.

flowjax runs exactly what `python -m experiments.main` runs: the config of `configs/*.py`,
`fj.train.validate`, `fj.train.build` and the jitted, sharded `train_step` (flow-matching
objective, AdamW, clipping, EMA, non-finite guard, K steps per dispatch in `lax.scan`, donated
state). The 2D MLP uses `configs/toy2d.py:fm` with a constant learning rate, which the peers'
loops (see `_torch_peers`) reproduce on the same network with the same weights.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

import flowjax as fj
from benchmarks._context import Context
from benchmarks._harness import AgreementError, agreement, cost_flops, memory_analysis, speedup

__all__ = ["mlp_config", "image_config", "build", "mlp_hyper", "run_train", "check_ported_mlp"]


def mlp_config(
    variant: str, batch: int, k: int, dtype: str, time_scale: float | None = None
) -> ml_collections.ConfigDict:
    """`configs/toy2d.py:fm` at this batch, K and dtype, with a constant learning rate
    (and the MLP's time-embedding scale `time_scale` unless None)."""
    from configs import toy2d

    config = toy2d.get_config("fm")
    config.data.batch_size = batch
    config.model.variant = variant
    if time_scale is not None:
        config.model.overrides = ml_collections.ConfigDict({"time_scale": float(time_scale)})
    config.model.dtype = dtype
    config.optim.schedule = "constant"
    config.optim.warmup_steps = 0
    config.train.steps_per_dispatch = k
    return config


def image_config(model: str, batch: int, k: int, dtype: str) -> ml_collections.ConfigDict:
    """`configs/digits.py:fm` for "unet/digits", else `configs/cifar10.py:fm` with `model`."""
    from configs import cifar10, digits

    name, variant = model.split("/", 1)
    config = (digits if variant == "digits" else cifar10).get_config("fm")
    config.model.name = name
    config.model.variant = variant
    config.model.overrides = ml_collections.ConfigDict()
    config.model.dtype = dtype
    config.data.batch_size = batch
    config.train.steps_per_dispatch = k
    return config


def build(config) -> fj.train.Experiment:
    fj.train.validate(config, jax.device_count(), jax.process_count())
    return fj.train.build(config)


def mlp_hyper(variant: str, time_scale: float | None = None) -> dict:
    """Constructor arguments of the MLP variant, defaults filled in."""
    import inspect

    sig = inspect.signature(fj.models.MLP.__init__)
    hyper = {
        p.name: p.default
        for p in sig.parameters.values()
        if p.default is not inspect.Parameter.empty and p.name not in ("dtype", "param_dtype")
    }
    hyper.update(fj.models.mlp.VARIANTS[variant])
    if time_scale is not None:
        hyper["time_scale"] = float(time_scale)
    return hyper


def _one_step_batches(batches):
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((1,) + a.shape[1:], a.dtype, sharding=a.sharding), batches
    )


def flowjax_train(ctx: Context, case: str, config, local: dict, *, model: str) -> dict:
    """Times `exp.train_step` on fixed stacked batches `local` (K, B, ...)."""
    exp = build(config)
    k = int(next(iter(local.values())).shape[0])
    batch = int(next(iter(local.values())).shape[1])
    batches = fj.train.make_global_batch(local, exp.mesh, stacked=True)
    holder = [exp.new_state()]
    params0 = jax.device_get(holder[0].params)  # before the first call donates the state

    def call():
        holder[0], metrics = exp.train_step(holder[0], batches)
        return holder[0].step, metrics

    timing = ctx.measure(call, units_per_call=k)
    _, metrics = call()
    state = holder[0]
    # XLA counts a scan body once, so the per-step count comes from a K = 1 compile
    # (a cache hit when K = 1 was timed with this experiment).
    flops_key = ("train_flops", model, batch, config.model.dtype)
    flops = ctx.cache.get(flops_key)
    if flops is None:
        flops = cost_flops(exp.train_step, exp.abstract_state, _one_step_batches(batches))
        ctx.cache[flops_key] = flops
    peak = ctx.peak(config.model.dtype)
    row = {
        "suite": "train",
        "case": case,
        "impl": "flowjax",
        "model": model,
        "batch": batch,
        "K": k,
        "dtype": config.model.dtype,
        "unit": "step",
        **timing,
        "per_s": 1.0 / timing["median_s"],
        "flops_per_unit": flops,
        "flops_per_s": None if flops is None else flops / timing["median_s"],
        "frac_of_peak": None if flops is None or not peak else flops / timing["median_s"] / peak,
        "xla_memory": memory_analysis(exp.train_step, exp.abstract_state, batches),
        "final_loss": float(np.asarray(metrics["loss"])[-1]),
        "nonfinite_step": int(state.nonfinite_step),
        "num_params": int(sum(x.size for x in jax.tree.leaves(state.params))),
    }
    ctx.cache[("experiment", model, batch, k, config.model.dtype)] = (exp, state, params0)
    return ctx.recorder.add(row)


def check_ported_mlp(apply_fn, params, torch_model, x, t, *, tol: float = 1e-4) -> list[dict]:
    """Output and parameter gradient of the MSE agree between flowjax and the torch port.

    Same inputs, same target; the gradients of every layer are compared with an absolute
    tolerance of `tol` times the largest gradient entry.
    """
    import torch

    x = np.asarray(x, np.float32)
    t = np.asarray(t, np.float32)
    target = np.cos(3.0 * x)

    def loss(p):
        return jax.numpy.mean((apply_fn(p, x, t) - target) ** 2)

    out_j = np.asarray(apply_fn(params, x, t))
    grads = jax.grad(loss)(params)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    torch_model.zero_grad(set_to_none=True)
    out_t = torch_model(xt, tt)
    torch.mean((out_t - torch.from_numpy(target)) ** 2).backward()

    def jax_layers(g):
        layers = [g["cond"]["t_embed"]["dense0"], g["cond"]["t_embed"]["dense1"], g["dense_in"]]
        layers += [g["hidden"][i] for i in sorted(g.get("hidden", {}))]
        return layers + [g["dense_out"]]

    mods = [
        torch_model.t_dense0,
        torch_model.t_dense1,
        torch_model.dense_in,
        *torch_model.hidden,
        torch_model.dense_out,
    ]
    g_j = np.concatenate(
        [
            np.concatenate([np.asarray(gl["kernel"]).T.ravel(), np.asarray(gl["bias"]).ravel()])
            for gl in jax_layers(grads)
        ]
    )
    g_t = np.concatenate(
        [np.concatenate([m.weight.grad.numpy().ravel(), m.bias.grad.numpy().ravel()]) for m in mods]
    )
    scale = float(np.max(np.abs(g_j))) or 1.0
    return [
        agreement(
            "network outputs (flowjax vs torch port)",
            out_t.detach().numpy(),
            out_j,
            atol=tol,
            rtol=tol,
        ),
        agreement("loss gradients (flowjax vs torch port)", g_t, g_j, atol=tol * scale),
    ]


def _peer_rows(ctx: Context, batch: int, config, local_x1: np.ndarray, exp, params0, fj_rows):
    import torch

    from benchmarks._torch_peers import PEER_LOSSES, make_peer_train_step, port_mlp

    s = ctx.settings
    hyper = mlp_hyper(s.mlp_variant, s.mlp_time_scale)
    rng = np.random.default_rng(s.seed + 7)
    x = rng.standard_normal((min(batch, 512), 2)).astype(np.float32)
    t = rng.uniform(size=x.shape[0]).astype(np.float32)
    checks = check_ported_mlp(exp.apply_fn, params0, port_mlp(params0, hyper, 2), x, t)
    x1_batches = [torch.from_numpy(np.ascontiguousarray(b)) for b in local_x1]
    o = config.optim
    flops_key = ("train_flops", f"mlp/{s.mlp_variant}", batch, config.model.dtype)
    for peer in PEER_LOSSES:
        model = port_mlp(params0, hyper, 2)
        step = make_peer_train_step(
            peer,
            model,
            x1_batches,
            lr=o.lr,
            b1=o.b1,
            b2=o.b2,
            eps=o.eps,
            weight_decay=o.weight_decay,
            grad_clip=o.grad_clip,
            ema_decay=config.ema.decays[0],
            seed=s.seed,
        )
        timing = ctx.measure(step, sync=lambda out: None)
        loss = float(step().detach())
        flops = ctx.cache.get(flops_key)
        row = ctx.recorder.add(
            {
                "suite": "train",
                "case": f"mlp_b{batch}",
                "impl": peer,
                "model": f"mlp/{s.mlp_variant}",
                "batch": batch,
                "K": 1,
                "dtype": "float32",
                "unit": "step",
                **timing,
                "per_s": 1.0 / timing["median_s"],
                "flops_per_unit": flops,
                "flops_per_s": None if flops is None else flops / timing["median_s"],
                "frac_of_peak": None
                if flops is None or not ctx.peak("float32")
                else flops / timing["median_s"] / ctx.peak("float32"),
                "final_loss": loss,
                "torch_threads": torch.get_num_threads(),
            }
        )
        for fj_row in fj_rows:
            comp = {
                "name": f"train mlp B={batch}: flowjax K={fj_row['K']} vs {peer}",
                "kind": "train",
                "batch": batch,
                "K": fj_row["K"],
                "peer": peer,
                "flowjax_s": fj_row["median_s"],
                "peer_s": row["median_s"],
                "checks": checks,
            }
            try:
                comp["speedup"] = speedup(fj_row["median_s"], row["median_s"], checks)
                comp["refused"] = None
            except AgreementError as e:
                comp["speedup"], comp["refused"] = None, str(e)
            ctx.recorder.comparisons.append(comp)


def run_mlp(ctx: Context) -> None:
    s = ctx.settings
    rng = np.random.default_rng(s.seed)
    for batch in s.mlp_batches:
        kmax = max(s.dispatch_ks)
        x1, _ = fj.data.sample_toy("checkerboard", kmax * batch, rng)
        x1 = x1.reshape(kmax, batch, 2)
        fj_rows, exp, params0 = [], None, None
        for k in sorted(s.dispatch_ks):
            config = mlp_config(s.mlp_variant, batch, k, s.dtype, s.mlp_time_scale)
            row = flowjax_train(
                ctx, f"mlp_b{batch}_k{k}", config, {"x1": x1[:k]}, model=f"mlp/{s.mlp_variant}"
            )
            fj_rows.append(row)
            exp, _, params0 = ctx.cache[("experiment", row["model"], batch, k, s.dtype)]
        if s.peers and jax.default_backend() == "cpu":
            _peer_rows(ctx, batch, config, x1, exp, params0, fj_rows)


def _image_batches(model: str, batch: int, k: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    if model == "unet/digits":
        x, y = fj.data.digits_arrays("train")
        idx = rng.choice(len(x), size=(k, batch))
        return {"x1": x[idx], "label": y[idx]}
    shape = (k, batch, 32, 32, 3)
    return {
        "x1": rng.uniform(-1.0, 1.0, size=shape).astype(np.float32),
        "label": rng.integers(0, 10, size=(k, batch)).astype(np.int32),
    }


def run_images(ctx: Context) -> None:
    s = ctx.settings
    models = [("unet/digits", s.image_batch)]
    if s.large:
        models += [(m, s.large_batch) for m in s.large_models]
    for model, batch in models:
        config = image_config(model, batch, 1, s.dtype)
        local = _image_batches(model, batch, 1, s.seed)
        flowjax_train(ctx, f"{model.replace('/', '_')}_b{batch}_k1", config, local, model=model)


def run_train(ctx: Context) -> None:
    """The `train` suite: MLP at each batch and K (with peers), then the image networks."""
    run_mlp(ctx)
    run_images(ctx)
