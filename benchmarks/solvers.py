"""Sampling and likelihood: `fj.sampling.sample_ode` and `fj.likelihood.log_prob` against
flow_matching's `ODESolver` (torchdiffeq), on the same trained 2D MLP ported to torch.

Before any speed ratio is reported, both results are compared with a float64 reference solve
at a tight tolerance (samples within `sample_atol`, log-likelihoods within `logp_atol`); the
ratio is refused otherwise. Image figures (Heun with 50 steps, Hutchinson likelihoods) are
flowjax's own: no peer runs the same U-Net.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

import flowjax as fj
from benchmarks import train
from benchmarks._context import Context
from benchmarks._harness import (
    AgreementError,
    agreement,
    cost_flops,
    memory_analysis,
    speedup,
)

__all__ = ["trained_2d", "run_sample", "run_likelihood", "run_images"]


def trained_2d(ctx: Context):
    """(apply_fn, params, hyper) of the 2D MLP trained `train_steps_2d` steps on the
    checkerboard with flowjax's train step (batch 256, 100 steps per dispatch, float32)."""
    if "trained_2d" in ctx.cache:
        return ctx.cache["trained_2d"]
    s = ctx.settings
    k, batch = min(100, s.train_steps_2d), 256
    cached = ctx.cache.get(("experiment", f"mlp/{s.mlp_variant}", batch, k, "float32"))
    if cached is None:
        exp = train.build(
            train.mlp_config(s.mlp_variant, batch, k, "float32", s.mlp_time_scale)
        )
    else:
        exp = cached[0]
    state = exp.new_state()
    rng = np.random.default_rng(s.seed + 1)
    for _ in range(math.ceil(s.train_steps_2d / k)):
        x1, _ = fj.data.sample_toy("checkerboard", k * batch, rng)
        batches = fj.train.make_global_batch({"x1": x1.reshape(k, batch, 2)}, exp.mesh,
                                             stacked=True)
        state, metrics = exp.train_step(state, batches)
    if int(state.nonfinite_step) >= 0:
        raise RuntimeError("benchmark 2D model: training hit a non-finite loss")
    params = jax.device_get(state.params)
    out = (exp.apply_fn, params, train.mlp_hyper(s.mlp_variant, s.mlp_time_scale))
    ctx.cache["trained_2d"] = out
    ctx.recorder.notes.append(
        f"2D solver model: mlp/{s.mlp_variant} (time_scale={s.mlp_time_scale}) trained "
        f"{int(state.step)} steps on the checkerboard "
        f"(final loss {float(metrics['loss'][-1]):.4f})"
    )
    return out


def _row(ctx: Context, suite: str, case: str, impl: str, timing: dict, *, nfe, flops_per_eval,
         n: int, **extra) -> dict:
    flops = None if flops_per_eval is None or nfe is None else nfe * flops_per_eval
    peak = ctx.peak(extra.get("dtype", "float32"))
    return ctx.recorder.add({
        "suite": suite,
        "case": case,
        "impl": impl,
        "unit": "call",
        "batch": n,
        **timing,
        "per_s": 1.0 / timing["median_s"],
        "nfe": nfe,
        "flops_per_eval": flops_per_eval,
        "flops_per_unit": flops,
        "flops_per_s": None if flops is None else flops / timing["median_s"],
        "frac_of_peak": None if flops is None or not peak else flops / timing["median_s"] / peak,
        **extra,
    })


def _compare(ctx: Context, name: str, kind: str, fj_row: dict, peer_row: dict, checks,
             match: str):
    comp = {
        "name": name,
        "kind": kind,
        "match": match,
        "peer": peer_row["impl"],
        "peer_rtol": peer_row.get("rtol"),
        "flowjax_s": fj_row["median_s"],
        "peer_s": peer_row["median_s"],
        "flowjax_nfe": fj_row["nfe"],
        "peer_nfe": peer_row["nfe"],
        "checks": checks,
    }
    try:
        comp["speedup"], comp["refused"] = speedup(fj_row["median_s"], peer_row["median_s"],
                                                   checks), None
    except AgreementError as e:
        comp["speedup"], comp["refused"] = None, str(e)
    ctx.recorder.comparisons.append(comp)
    return comp


def _no_sync(out) -> None:
    del out


# Tolerances tried for the peer, as multiples of (rtol, atol), when its result at flowjax's
# tolerance misses the reference: the first that meets it gives the equal-result ratio.
PEER_TOL_FACTORS = (1.0, 0.3, 0.1, 0.03, 0.01)


def _peer_ladder(ctx: Context, *, suite: str, case: str, label: str, fj_row: dict, fj_check,
                 peer_fn, ref, atol: float, flops_eval, n: int, extra: dict) -> None:
    """Times the peer at flowjax's tolerance (equal-tolerance ratio, refused if either result
    misses the reference) and, if the peer missed it, at the loosest tighter tolerance whose
    result meets it (equal-result ratio).

    `peer_fn(tol, count)` returns (result as numpy, nfe or None) and runs untimed with
    counting when `count` is True.
    """
    s = ctx.settings
    for i, factor in enumerate(PEER_TOL_FACTORS):
        tol = s.rtol * factor
        got, nfe = peer_fn(tol, True)
        check = agreement(f"flow_matching {label} vs float64 reference (rtol=atol={tol:g})",
                          got, ref, atol=atol)
        if i > 0 and not check["ok"]:
            continue
        timing = ctx.measure(lambda tol=tol: peer_fn(tol, False), sync=_no_sync)
        row = _row(ctx, suite, case, "flow_matching", timing, nfe=nfe, flops_per_eval=flops_eval,
                   n=n, **{**extra, "rtol": tol, "atol": tol * s.atol / s.rtol},
                   max_abs_err_vs_ref=check["max_abs_err"])
        match = "equal_tolerance" if i == 0 else "equal_result"
        what = ("equal tolerance" if i == 0
                else f"equal result: flow_matching tightened to rtol=atol={tol:g}")
        _compare(ctx, f"{case}: flowjax vs flow_matching ODESolver ({what})", suite, fj_row,
                 row, [fj_check, check], match)
        if check["ok"] or not fj_check["ok"]:
            return
    ctx.recorder.notes.append(f"{case}: flow_matching met the reference at no tolerance down "
                              f"to {s.rtol * PEER_TOL_FACTORS[-1]:g}")


def _fj_solver_row(ctx, suite, case, call, jitted, args, flops_eval, n, extra):
    timing = ctx.measure(call)
    out, info = call()
    row = _row(ctx, suite, case, "flowjax", timing, nfe=int(info["nfe"]),
               flops_per_eval=flops_eval, n=n, xla_memory=memory_analysis(jitted, *args),
               **extra)
    return row, out


def run_sample(ctx: Context) -> None:
    """dopri5 from N(0, I) to data for `n_sample` 2D points at rtol = atol."""
    s = ctx.settings
    apply_fn, params, hyper = trained_2d(ctx)
    x0 = np.random.default_rng(s.seed + 2).standard_normal((s.n_sample, 2)).astype(np.float32)
    v = Partial(apply_fn, jax.device_put(params))
    x0_j = jnp.asarray(x0)

    def solve(v, x):
        return fj.sampling.sample_ode(v, x, solver="dopri5", rtol=s.rtol, atol=s.atol)

    flops_eval = cost_flops(jax.jit(apply_fn), params, x0_j, jnp.float32(0.5))
    case = f"dopri5_2d_n{s.n_sample}"
    extra = {"rtol": s.rtol, "atol": s.atol, "model": f"mlp/{s.mlp_variant}"}
    fj_row, x1_fj = _fj_solver_row(ctx, "sample", case, lambda: solve(v, x0_j), jax.jit(solve),
                                   (v, x0_j), flops_eval, s.n_sample, extra)
    if not (s.peers and jax.default_backend() == "cpu"):
        return
    import torch

    from benchmarks._torch_peers import count_calls, fm_sample, port_mlp

    model = port_mlp(params, hyper, 2).eval()
    x0_t = torch.from_numpy(x0)

    def peer_fn(tol, count):
        m = count_calls(model) if count else model
        out = fm_sample(m, x0_t, rtol=tol, atol=tol * s.atol / s.rtol)
        return (out.numpy(), m.calls) if count else out

    model64 = port_mlp(params, hyper, 2, dtype=torch.float64).eval()
    ref = fm_sample(model64, x0_t.double(), rtol=s.ref_tol, atol=s.ref_tol).numpy()
    fj_check = agreement("flowjax samples vs float64 reference", x1_fj, ref, atol=s.sample_atol)
    fj_row["max_abs_err_vs_ref"] = fj_check["max_abs_err"]
    ctx.recorder.notes.append(f"{case}: reference = float64 torch port, torchdiffeq dopri5 at "
                              f"rtol = atol = {s.ref_tol:g}")
    _peer_ladder(ctx, suite="sample", case=case, label="samples", fj_row=fj_row,
                 fj_check=fj_check, peer_fn=peer_fn, ref=ref, atol=s.sample_atol,
                 flops_eval=flops_eval, n=s.n_sample, extra=extra)


def run_likelihood(ctx: Context) -> None:
    """Exact-divergence log-likelihood of `n_likelihood` 2D data points (dopri5, t = 1 -> 0)."""
    s = ctx.settings
    apply_fn, params, hyper = trained_2d(ctx)
    x1, _ = fj.data.sample_toy("checkerboard", s.n_likelihood, s.seed + 3)
    v = Partial(apply_fn, jax.device_put(params))
    x1_j = jnp.asarray(x1)

    def solve(v, x):
        return fj.likelihood.log_prob(v, x, divergence="exact", rtol=s.rtol, atol=s.atol)

    def augmented(p, x, t):
        return fj.likelihood.exact_divergence(lambda y: apply_fn(p, y, t), x)

    flops_eval = cost_flops(jax.jit(augmented), params, x1_j, jnp.float32(0.5))
    case = f"exact_logp_2d_n{s.n_likelihood}"
    extra = {"rtol": s.rtol, "atol": s.atol, "model": f"mlp/{s.mlp_variant}",
             "divergence": "exact"}
    fj_row, logp_fj = _fj_solver_row(ctx, "likelihood", case, lambda: solve(v, x1_j),
                                     jax.jit(solve), (v, x1_j), flops_eval, s.n_likelihood,
                                     extra)
    fj_row["mean_logp"] = float(jnp.mean(logp_fj))
    if not (s.peers and jax.default_backend() == "cpu"):
        return
    import torch

    from benchmarks._torch_peers import count_calls, fm_log_prob, port_mlp

    model = port_mlp(params, hyper, 2).eval()
    x1_t = torch.from_numpy(x1)

    def peer_fn(tol, count):
        m = count_calls(model) if count else model
        out = fm_log_prob(m, x1_t, rtol=tol, atol=tol * s.atol / s.rtol, exact=True)
        return (out.detach().numpy(), m.calls) if count else out

    model64 = port_mlp(params, hyper, 2, dtype=torch.float64).eval()
    ref = fm_log_prob(model64, x1_t.double(), rtol=s.ref_tol, atol=s.ref_tol).detach().numpy()
    fj_check = agreement("flowjax log p vs float64 reference", logp_fj, ref, atol=s.logp_atol)
    fj_row["max_abs_err_vs_ref"] = fj_check["max_abs_err"]
    _peer_ladder(ctx, suite="likelihood", case=case, label="log p", fj_row=fj_row,
                 fj_check=fj_check, peer_fn=peer_fn, ref=ref, atol=s.logp_atol,
                 flops_eval=flops_eval, n=s.n_likelihood, extra=extra)


def _image_model(ctx: Context, model: str):
    """(apply_fn, params, batch shape) of an image network, from the train suite if it ran
    (its state after the timed steps), else built and trained a few steps here."""
    s = ctx.settings
    batch = s.image_batch if model == "unet/digits" else s.large_batch
    cached = ctx.cache.get(("experiment", model, batch, 1, s.dtype))
    if cached is None:
        config = train.image_config(model, batch, 1, s.dtype)
        exp = train.build(config)
        state = exp.new_state()
        batches = fj.train.make_global_batch(train._image_batches(model, batch, 1, s.seed),
                                             exp.mesh, stacked=True)
        for _ in range(10):
            state, _ = exp.train_step(state, batches)
    else:
        exp, state, _ = cached
    return exp.apply_fn, jax.device_get(state.params), tuple(exp.spec.shape)


def run_images(ctx: Context) -> None:
    """Heun (50 steps) on `n_images` images, and Hutchinson log-likelihoods of as many."""
    s = ctx.settings
    models = ["unet/digits"]
    if s.large and jax.default_backend() != "cpu":
        models += list(s.large_models)
    for model in models:
        _images_of(ctx, model)


def _images_of(ctx: Context, model: str) -> None:
    """Heun-50 sampling and Hutchinson log-likelihood rows of one image network."""
    s = ctx.settings
    apply_fn, params, shape = _image_model(ctx, model)
    v = Partial(apply_fn, jax.device_put(params))
    x0 = jax.random.normal(jax.random.key(s.seed), (s.n_images, *shape), jnp.float32)
    flops_eval = cost_flops(jax.jit(apply_fn), params, x0, jnp.float32(0.5))
    tag = model.replace("/", "_")

    def heun(v, x):
        return fj.sampling.sample_ode(v, x, solver="heun", num_steps=50)

    _fj_solver_row(ctx, "images", f"heun50_{tag}_n{s.n_images}", lambda: heun(v, x0),
                   jax.jit(heun), (v, x0), flops_eval, s.n_images,
                   {"model": model, "dtype": s.dtype})

    if model == "unet/digits":
        images, _ = fj.data.digits_arrays("test")
        x1 = jnp.asarray(images[: s.n_images])
    else:
        x1 = jax.random.uniform(jax.random.key(s.seed + 1), x0.shape, jnp.float32, -1, 1)
    key = jax.random.key(s.seed + 2)

    def logp(v, x):
        return fj.likelihood.log_prob(v, x, divergence="hutchinson", key=key,
                                      rtol=s.rtol, atol=s.atol)

    def augmented(p, x, t, probes):
        return fj.likelihood.hutchinson_divergence(lambda y: apply_fn(p, y, t), x, probes)

    probes = jnp.ones((1, *x1.shape), x1.dtype)
    flops_aug = cost_flops(jax.jit(augmented), params, x1, jnp.float32(0.5), probes)
    row, lp = _fj_solver_row(
        ctx, "images", f"hutchinson_logp_{tag}_n{x1.shape[0]}", lambda: logp(v, x1),
        jax.jit(logp), (v, x1), flops_aug, int(x1.shape[0]),
        {"model": model, "dtype": s.dtype, "rtol": s.rtol, "atol": s.atol},
    )
    row["mean_logp"] = float(jnp.mean(lp))
