"""Sampling and likelihood: `fj.sampling.sample_ode` and `fj.likelihood.log_prob` against
flow_matching's `ODESolver` (torchdiffeq), on the same trained 2D MLP ported to torch.

Before any speed ratio is reported, both results are compared with a float64 reference solve
at a tight tolerance (samples within `sample_atol`, log-likelihoods within `logp_atol`); the
ratio is refused otherwise. Image figures (Heun with 50 steps, Hutchinson likelihoods) are
flowjax's own: no peer runs the same U-Net.
"""

from __future__ import annotations

import functools
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
        exp = train.build(train.mlp_config(s.mlp_variant, batch, k, "float32", s.mlp_time_scale))
    else:
        exp = cached[0]
    state = exp.new_state()
    rng = np.random.default_rng(s.seed + 1)
    for _ in range(math.ceil(s.train_steps_2d / k)):
        x1, _ = fj.data.sample_toy("checkerboard", k * batch, rng)
        batches = fj.train.make_global_batch(
            {"x1": x1.reshape(k, batch, 2)}, exp.mesh, stacked=True
        )
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


def _row(
    ctx: Context,
    suite: str,
    case: str,
    impl: str,
    timing: dict,
    *,
    nfe,
    flops_per_eval,
    n: int,
    **extra,
) -> dict:
    flops = None if flops_per_eval is None or nfe is None else nfe * flops_per_eval
    peak = ctx.peak(extra.get("dtype", "float32"))
    return ctx.recorder.add(
        {
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
            "frac_of_peak": None
            if flops is None or not peak
            else flops / timing["median_s"] / peak,
            **extra,
        }
    )


def _compare(ctx: Context, name: str, kind: str, fj_row: dict, peer_row: dict, checks, match: str):
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
        comp["speedup"], comp["refused"] = (
            speedup(fj_row["median_s"], peer_row["median_s"], checks),
            None,
        )
    except AgreementError as e:
        comp["speedup"], comp["refused"] = None, str(e)
    ctx.recorder.comparisons.append(comp)
    return comp


def _no_sync(out) -> None:
    del out


# Tolerances tried, as multiples of (rtol, atol), when a result at the requested tolerance
# misses the reference: both solvers are tightened together to the first level at which
# both results meet it.
TOL_FACTORS = (1.0, 0.3, 0.1, 0.03, 0.01)


def _first_passing(fn, ref, atol: float, name: str, tols, known=None) -> list:
    """[(tol, nfe, check)] for tol in `tols` until a result meets the reference.

    `fn(tol)` returns (result as numpy, nfe); `known` is the (result, nfe) at tols[0].
    """
    levels = []
    for i, tol in enumerate(tols):
        got, nfe = known if (i == 0 and known is not None) else fn(tol)
        check = agreement(f"{name} vs float64 reference (rtol=atol={tol:g})", got, ref, atol=atol)
        levels.append((tol, nfe, check))
        if check["ok"]:
            break
    return levels


def _solver_comparisons(
    ctx: Context,
    *,
    suite: str,
    case: str,
    label: str,
    fj_row: dict,
    fj_known,
    fj_fn,
    fj_time,
    peer_fn,
    peer_time,
    ref,
    atol: float,
    flops_eval,
    n: int,
    extra: dict,
) -> None:
    """Equal-tolerance ratio at the requested tolerance (refused unless both results meet
    the reference), then, if refused, at the loosest common tighter tolerance where both do.

    `*_fn(tol)` -> (numpy result, nfe), untimed; `*_time(tol)` runs one timed call.
    """
    s = ctx.settings
    tols = [s.rtol * f for f in TOL_FACTORS]
    fj_levels = _first_passing(fj_fn, ref, atol, f"flowjax {label}", tols, fj_known)
    peer_levels = _first_passing(peer_fn, ref, atol, f"flow_matching {label}", tols)
    fj_row["max_abs_err_vs_ref"] = fj_levels[0][2]["max_abs_err"]

    def peer_row(tol, nfe, check):
        timing = ctx.measure(lambda: peer_time(tol), sync=_no_sync)
        return _row(
            ctx,
            suite,
            case,
            "flow_matching",
            timing,
            nfe=nfe,
            flops_per_eval=flops_eval,
            n=n,
            **{**extra, "rtol": tol, "atol": tol * s.atol / s.rtol},
            max_abs_err_vs_ref=check["max_abs_err"],
        )

    row0 = peer_row(*peer_levels[0])
    _compare(
        ctx,
        f"{case}: flowjax vs flow_matching ODESolver (equal tolerance {tols[0]:g})",
        suite,
        fj_row,
        row0,
        [fj_levels[0][2], peer_levels[0][2]],
        "equal_tolerance",
    )
    if fj_levels[0][2]["ok"] and peer_levels[0][2]["ok"]:
        return
    if not (fj_levels[-1][2]["ok"] and peer_levels[-1][2]["ok"]):
        ctx.recorder.notes.append(
            f"{case}: no tolerance down to {tols[-1]:g} gave both results within {atol:g} "
            "of the reference; no tightened comparison"
        )
        return
    j = max(len(fj_levels), len(peer_levels)) - 1
    tol = tols[j]

    def at(levels, fn, name):
        if len(levels) - 1 == j:
            return levels[j][1], levels[j][2]
        got, nfe = fn(tol)
        return nfe, agreement(
            f"{name} vs float64 reference (rtol=atol={tol:g})", got, ref, atol=atol
        )

    fj_nfe, fj_check = at(fj_levels, fj_fn, f"flowjax {label}")
    peer_nfe, peer_check = at(peer_levels, peer_fn, f"flow_matching {label}")
    timing = ctx.measure(lambda: fj_time(tol))
    fj_row_j = _row(
        ctx,
        suite,
        case,
        "flowjax",
        timing,
        nfe=fj_nfe,
        flops_per_eval=flops_eval,
        n=n,
        **{**extra, "rtol": tol, "atol": tol * s.atol / s.rtol},
        max_abs_err_vs_ref=fj_check["max_abs_err"],
    )
    if len(peer_levels) - 1 == j:
        row_j = peer_row(tol, peer_nfe, peer_check)
    else:
        timing = ctx.measure(lambda: peer_time(tol), sync=_no_sync)
        row_j = _row(
            ctx,
            suite,
            case,
            "flow_matching",
            timing,
            nfe=peer_nfe,
            flops_per_eval=flops_eval,
            n=n,
            **{**extra, "rtol": tol, "atol": tol * s.atol / s.rtol},
            max_abs_err_vs_ref=peer_check["max_abs_err"],
        )
    _compare(
        ctx,
        f"{case}: flowjax vs flow_matching ODESolver (equal tolerance tightened to "
        f"{tol:g}, both meet the reference)",
        suite,
        fj_row_j,
        row_j,
        [fj_check, peer_check],
        "equal_tolerance_tightened",
    )


def _fj_solver_row(ctx, suite, case, call, jitted, args, flops_eval, n, extra):
    timing = ctx.measure(call)
    out, info = call()
    row = _row(
        ctx,
        suite,
        case,
        "flowjax",
        timing,
        nfe=int(info["nfe"]),
        flops_per_eval=flops_eval,
        n=n,
        xla_memory=memory_analysis(jitted, *args),
        **extra,
    )
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
    fj_row, x1_fj = _fj_solver_row(
        ctx,
        "sample",
        case,
        lambda: solve(v, x0_j),
        jax.jit(solve),
        (v, x0_j),
        flops_eval,
        s.n_sample,
        extra,
    )
    if not (s.peers and jax.default_backend() == "cpu"):
        return
    import torch

    from benchmarks._torch_peers import count_calls, fm_sample, port_mlp

    model = port_mlp(params, hyper, 2).eval()
    x0_t = torch.from_numpy(x0)

    def peer_fn(tol):
        m = count_calls(model)
        return fm_sample(m, x0_t, rtol=tol, atol=tol * s.atol / s.rtol).numpy(), m.calls

    def peer_time(tol):
        return fm_sample(model, x0_t, rtol=tol, atol=tol * s.atol / s.rtol)

    def fj_time(tol):
        return fj.sampling.sample_ode(
            v, x0_j, solver="dopri5", rtol=tol, atol=tol * s.atol / s.rtol
        )

    def fj_fn(tol):
        out, info = fj_time(tol)
        return np.asarray(out), int(info["nfe"])

    model64 = port_mlp(params, hyper, 2, dtype=torch.float64).eval()
    ref = fm_sample(model64, x0_t.double(), rtol=s.ref_tol, atol=s.ref_tol).numpy()
    ctx.recorder.notes.append(
        f"{case}: reference = float64 torch port, torchdiffeq dopri5 at rtol = atol = {s.ref_tol:g}"
    )
    _solver_comparisons(
        ctx,
        suite="sample",
        case=case,
        label="samples",
        fj_row=fj_row,
        fj_known=(np.asarray(x1_fj), fj_row["nfe"]),
        fj_fn=fj_fn,
        fj_time=fj_time,
        peer_fn=peer_fn,
        peer_time=peer_time,
        ref=ref,
        atol=s.sample_atol,
        flops_eval=flops_eval,
        n=s.n_sample,
        extra=extra,
    )


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
    extra = {"rtol": s.rtol, "atol": s.atol, "model": f"mlp/{s.mlp_variant}", "divergence": "exact"}
    fj_row, logp_fj = _fj_solver_row(
        ctx,
        "likelihood",
        case,
        lambda: solve(v, x1_j),
        jax.jit(solve),
        (v, x1_j),
        flops_eval,
        s.n_likelihood,
        extra,
    )
    fj_row["mean_logp"] = float(jnp.mean(logp_fj))
    if not (s.peers and jax.default_backend() == "cpu"):
        return
    import torch

    from benchmarks._torch_peers import count_calls, fm_log_prob, port_mlp

    model = port_mlp(params, hyper, 2).eval()
    x1_t = torch.from_numpy(x1)

    def peer_fn(tol):
        m = count_calls(model)
        out = fm_log_prob(m, x1_t, rtol=tol, atol=tol * s.atol / s.rtol, exact=True)
        return out.detach().numpy(), m.calls

    def peer_time(tol):
        return fm_log_prob(model, x1_t, rtol=tol, atol=tol * s.atol / s.rtol, exact=True)

    def fj_time(tol):
        return fj.likelihood.log_prob(
            v, x1_j, divergence="exact", rtol=tol, atol=tol * s.atol / s.rtol
        )

    def fj_fn(tol):
        out, info = fj_time(tol)
        return np.asarray(out), int(info["nfe"])

    model64 = port_mlp(params, hyper, 2, dtype=torch.float64).eval()
    ref = fm_log_prob(model64, x1_t.double(), rtol=s.ref_tol, atol=s.ref_tol).detach().numpy()
    _solver_comparisons(
        ctx,
        suite="likelihood",
        case=case,
        label="log p",
        fj_row=fj_row,
        fj_known=(np.asarray(logp_fj), fj_row["nfe"]),
        fj_fn=fj_fn,
        fj_time=fj_time,
        peer_fn=peer_fn,
        peer_time=peer_time,
        ref=ref,
        atol=s.logp_atol,
        flops_eval=flops_eval,
        n=s.n_likelihood,
        extra=extra,
    )


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
        batches = fj.train.make_global_batch(
            train._image_batches(model, batch, 1, s.seed), exp.mesh, stacked=True
        )
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

    _fj_solver_row(
        ctx,
        "images",
        f"heun50_{tag}_n{s.n_images}",
        lambda: heun(v, x0),
        jax.jit(heun),
        (v, x0),
        flops_eval,
        s.n_images,
        {"model": model, "dtype": s.dtype},
    )

    if model == "unet/digits":
        images, _ = fj.data.digits_arrays("test")
        x1 = jnp.asarray(images[: s.n_images])
    else:
        x1 = jax.random.uniform(jax.random.key(s.seed + 1), x0.shape, jnp.float32, -1, 1)
    key = jax.random.key(s.seed + 2)

    def logp(v, x):
        return fj.likelihood.log_prob(
            v, x, divergence="hutchinson", key=key, rtol=s.rtol, atol=s.atol
        )

    def augmented(p, x, t, probes):
        return fj.likelihood.hutchinson_divergence(lambda y: apply_fn(p, y, t), x, probes)

    probes = jnp.ones((1, *x1.shape), x1.dtype)
    flops_aug = cost_flops(jax.jit(augmented), params, x1, jnp.float32(0.5), probes)
    row, lp = _fj_solver_row(
        ctx,
        "images",
        f"hutchinson_logp_{tag}_n{x1.shape[0]}",
        lambda: logp(v, x1),
        jax.jit(logp),
        (v, x1),
        flops_aug,
        int(x1.shape[0]),
        {"model": model, "dtype": s.dtype, "rtol": s.rtol, "atol": s.atol},
    )
    row["mean_logp"] = float(jnp.mean(lp))


# ======================================================================================
# Solver study (issue: fast samplers and time grids). Self-contained; run it with
#   python -m benchmarks.solvers [--quick] [--out=benchmarks/results/solvers_cpu.json]
# It prints the markdown tables of BENCHMARKS.md's "Samplers and time grids" section.


def _tanh_mlp(seed: int, width: int = 256, depth: int = 3, dim: int = 2):
    """[(W, b)] of a depth x width tanh MLP on (x, t) -> R^dim (LeCun-normal weights)."""
    rng = np.random.default_rng(seed)
    sizes = [dim + 1] + [width] * depth + [dim]
    return [
        (
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
            (0.1 * rng.standard_normal(b)).astype(np.float32),
        )
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]


def _mlp_apply(params, x, t):
    h = jnp.concatenate([x, jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])[:, None]], 1)
    for w, b in params[:-1]:
        h = jnp.tanh(h @ w + b)
    w, b = params[-1]
    return h @ w + b


def _torch_mlp(params, dtype):
    import torch

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList()
            for w, b in params:
                lin = torch.nn.Linear(*w.shape).to(dtype)
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(np.asarray(w).T.copy()))
                    lin.bias.copy_(torch.from_numpy(np.asarray(b).copy()))
                self.layers.append(lin)

        def forward(self, x, t):
            t = torch.as_tensor(t, dtype=x.dtype).reshape(-1)
            h = torch.cat([x, t.expand(x.shape[0])[:, None]], 1)
            for lin in self.layers[:-1]:
                h = torch.tanh(lin(h))
            return self.layers[-1](h)

    return MLP().eval()


def adaptive_overhead(n: int = 10_000, tol: float = 1e-5, repeats: int = 5) -> dict:
    """dopri5 at rtol = atol = tol on n 2D points through a 3x256 tanh MLP (float32):
    sample_ode vs a plain jitted diffrax.diffeqsolve (same first step, RMS norm) vs
    flow_matching's ODESolver (torchdiffeq), each checked against a float64 reference."""
    import diffrax
    import torch

    from benchmarks._harness import CompileWatch, measure
    from benchmarks._torch_peers import count_calls, fm_sample

    params = _tanh_mlp(0)
    jparams = jax.device_put([(jnp.asarray(w), jnp.asarray(b)) for w, b in params])
    x0 = np.random.default_rng(1).standard_normal((n, 2)).astype(np.float32)
    x0_j = jnp.asarray(x0)
    v = Partial(_mlp_apply, jparams)

    def ours():
        return fj.sampling.sample_ode(v, x0_j, "dopri5", rtol=tol, atol=tol)

    @jax.jit
    def plain(p, x):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: _mlp_apply(args, y, t)),
            diffrax.Dopri5(),
            t0=0.0,
            t1=1.0,
            dt0=0.01,  # sample_ode's first step, so both take the same steps
            y0=x,
            args=p,
            stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol),
            saveat=diffrax.SaveAt(t1=True),
            max_steps=4096,
        )
        return sol.ys[0], sol.stats["num_steps"], sol.stats["num_rejected_steps"]

    model32 = _torch_mlp(params, torch.float32)
    x0_t = torch.from_numpy(x0)
    ref = fm_sample(_torch_mlp(params, torch.float64), x0_t.double(), rtol=1e-10, atol=1e-10)
    ref = ref.numpy()

    out = {"n": n, "tol": tol, "model": "tanh MLP 3x256 on (x, t), float32"}
    t_ours = measure(ours, repeats=repeats)
    x_ours, info = ours()
    t_plain = measure(lambda: plain(jparams, x0_j), repeats=repeats)
    x_plain, steps, rejected = plain(jparams, x0_j)
    counted = count_calls(model32)
    x_peer = fm_sample(counted, x0_t, rtol=tol, atol=tol).numpy()
    t_peer = measure(
        lambda: fm_sample(model32, x0_t, rtol=tol, atol=tol), repeats=repeats, sync=lambda o: None
    )
    x0_new = jax.block_until_ready(x0_j * 1.01)
    with CompileWatch() as watch:  # new values and tolerances: no recompilation
        jax.block_until_ready(
            fj.sampling.sample_ode(v, x0_new, "dopri5", rtol=2 * tol, atol=2 * tol)
        )
        jax.block_until_ready(plain(jparams, x0_new))
    err = lambda x: float(np.max(np.abs(np.asarray(x) - ref)))
    out["rows"] = {
        "flowjax sample_ode": {
            "median_s": t_ours["median_s"],
            "nfe": int(info["nfe"]),
            "max_err_vs_f64": err(x_ours),
            "recompiles": t_ours["recompiles"],
        },
        "plain jitted diffrax.diffeqsolve": {
            "median_s": t_plain["median_s"],
            # FSAL: 6 new stages per attempted step, plus the first; diffrax re-evaluates
            # the first stage after a rejection before the first acceptance (not counted).
            "nfe": int(6 * int(steps) + 1),
            "num_steps": int(steps),
            "max_err_vs_f64": err(x_plain),
            "recompiles": t_plain["recompiles"],
        },
        "flow_matching ODESolver": {
            "median_s": t_peer["median_s"],
            "nfe": int(counted.calls),
            "max_err_vs_f64": err(x_peer),
        },
    }
    out["recompiles_new_values"] = watch.compiles
    out["ratio_vs_plain"] = t_ours["median_s"] / t_plain["median_s"]
    out["speedup_vs_flow_matching"] = t_peer["median_s"] / t_ours["median_s"]
    out["agree_ours_plain"] = float(np.max(np.abs(np.asarray(x_ours) - np.asarray(x_plain))))
    return out


def interleaved_ratios(n: int = 10_000, rounds: int = 4, tol: float = 1e-5) -> dict:
    """Times sample_ode, the plain diffeqsolve and flow_matching in alternation (A, B, C, A,
    ...), so that a shared machine's drifting load hits all alike; min and median per solve."""
    import time

    import diffrax
    import torch

    from benchmarks._torch_peers import fm_sample

    raw = _tanh_mlp(0)
    params = jax.device_put([(jnp.asarray(w), jnp.asarray(b)) for w, b in raw])
    x0n = np.random.default_rng(1).standard_normal((n, 2)).astype(np.float32)
    x0, x0t = jnp.asarray(x0n), torch.from_numpy(x0n)
    v, model = Partial(_mlp_apply, params), _torch_mlp(raw, torch.float32)

    @jax.jit
    def plain(p, x):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, a: _mlp_apply(a, y, t)),
            diffrax.Dopri5(),
            t0=0.0,
            t1=1.0,
            dt0=0.01,
            y0=x,
            args=p,
            stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol),
            saveat=diffrax.SaveAt(t1=True),
            max_steps=4096,
        )
        return sol.ys[0]

    calls = {
        "sample_ode": lambda: jax.block_until_ready(
            fj.sampling.sample_ode(v, x0, "dopri5", rtol=tol, atol=tol)
        ),
        "plain_diffeqsolve": lambda: jax.block_until_ready(plain(params, x0)),
        "flow_matching": lambda: fm_sample(model, x0t, rtol=tol, atol=tol),
    }
    times = {k: [] for k in calls}
    for f in calls.values():
        f()  # compile / warm up
    for _ in range(rounds):
        for k, f in calls.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    out = {"n": n, "rounds": rounds, "times_s": times}
    for k, ts in times.items():
        out[k] = {"min_s": min(ts), "median_s": float(np.median(ts))}
    return out


def _mixture():
    return fj.analytic.GaussianMixture(
        means=jnp.array([[2.0, 0.0], [-2.0, 1.0], [0.0, -2.0]]),
        stds=jnp.array([0.5, 0.4, 0.6]),
        weights=jnp.array([0.5, 0.3, 0.2]),
    )


@functools.partial(jax.jit, static_argnames="chunk")
def _mean_dist(a, b, chunk: int):
    def row(c):
        return jnp.sum(jnp.sqrt(jnp.sum((c[:, None] - b[None]) ** 2, -1) + 1e-30))

    return jnp.sum(jax.lax.map(row, a.reshape(-1, chunk, a.shape[-1]))) / (a.shape[0] * b.shape[0])


def _energy(x, y, chunk: int = 1000):
    """Energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| (V-statistic), chunked; compiled once
    per shape (a jit inside would compile three programs per call)."""
    d = functools.partial(_mean_dist, chunk=chunk)
    return float(2 * d(x, y) - d(x, x) - d(y, y))


_MIXTURE_PATHS = {
    "condot": (lambda: fj.paths.CondOT(), 1.0),
    "cosine": (lambda: fj.paths.Cosine(), 1.0),
    "vp": (lambda: fj.paths.VP(), 0.999),  # VP's velocity is singular at t = 1
}


# Noise-level range for the mixture (component stds 0.4-0.6, data std ~1.7): EDM's image
# defaults (0.002, 80) spend most of 10 steps where nothing happens in 2D.
MIXTURE_RANGE = {"sigma_min": 0.05, "sigma_max": 10.0}


# Solvers benchmarked here that the compare study's sweep (SAMPLER_SPECS) does not run.
EXTRA_SPECS = ("deis", "deis2", "deis@edm")


def _sample_mixture(gmm, path, spec: str, x0, nfe: int, t1: float):
    """(samples, info) of one "solver@grid" spec ("*": `MIXTURE_RANGE`) with the exact model."""
    s = fj.sampling.parse_sampler(spec.rstrip("*"))
    kw = MIXTURE_RANGE if spec.endswith("*") and s.grid in ("edm", "logsnr") else {}
    grid = fj.sampling.grids.get_grid(s.grid, path, **kw)
    if s.multistep:  # the exact eps through the solver's own conversion

        def eps(x, t):
            x1 = gmm.posterior_mean(path, x, t)
            return fj.paths.convert(x1, src="x1", dst="eps", path=path, x=x, t=t)

        return fj.sampling.sample_multistep(
            eps, x0, kind="eps", path=path, solver=s.solver, num_steps=nfe, grid=grid, t1=t1
        )
    return fj.sampling.sample_ode(  # the exact velocity
        gmm.velocity_field(path), x0, s.solver, s.num_steps(nfe), grid=grid, t1=t1
    )


def target_dpm_vs_heun(nfe: int = 10, n: int = 2000, seeds: int = 5) -> dict:
    """The issue's target on each path: energy distance to exact samples of DPM-Solver++ 2M
    (its log-SNR grid; default and fitted range) and the other multistep solvers against Heun
    on the uniform grid, all at `nfe`, over `seeds` independent noise / reference draws
    (mean and min-max), with the null distance between two exact sample sets."""
    gmm = _mixture()
    specs = ("heun", "dpm++2m", "dpm++2m*", "dpm++3m", "unipc", "deis", "deis2")
    out = {"nfe": nfe, "n": n, "seeds": seeds, "paths": {}}
    nulls = [
        _energy(gmm.sample(jax.random.key(100 + i), n), gmm.sample(jax.random.key(200 + i), n))
        for i in range(seeds)
    ]
    out["null"] = {"mean": float(np.mean(nulls)), "max": float(np.max(nulls))}
    for name, (make, t1) in _MIXTURE_PATHS.items():
        path = make()
        vals = {spec: [] for spec in specs}
        for i in range(seeds):
            x0 = jax.random.normal(jax.random.key(10 + i), (n, 2), jnp.float64)
            ref = gmm.sample(jax.random.key(20 + i), n)
            for spec in specs:
                vals[spec].append(_energy(_sample_mixture(gmm, path, spec, x0, nfe, t1)[0], ref))
        rows = {
            k: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
            for k, v in vals.items()
        }
        heun = np.asarray(vals["heun"])
        for k, v in vals.items():
            rows[k]["wins_vs_heun"] = int(np.sum(np.asarray(v) < heun))  # paired by seed
        out["paths"][name] = rows
    return out


def mixture_samplers(nfe: int = 10, n: int = 4000, specs=None) -> dict:
    """Each sampler at `nfe` exact-model evaluations on the analytic mixture (float64): RMS
    distance to the exact flow map of the same noise, and energy distance to exact samples.
    Noise-level grids run with their defaults and, marked "*", with `MIXTURE_RANGE`."""
    every = (*fj.sampling.SAMPLER_SPECS, *EXTRA_SPECS)
    specs = specs or [
        *every,
        *(f"{s}*" for s in every if fj.sampling.parse_sampler(s).grid in ("edm", "logsnr")),
    ]
    gmm = _mixture()
    x0 = jax.random.normal(jax.random.key(0), (n, 2), jnp.float64)
    ref = gmm.sample(jax.random.key(1), n)
    floor = _energy(gmm.sample(jax.random.key(2), n), ref)
    out = {"nfe": nfe, "n": n, "energy_floor": floor, "paths": {}}
    for name, (make, t1) in _MIXTURE_PATHS.items():
        path = make()

        rows = {}
        for spec in specs:
            x, info = _sample_mixture(gmm, path, spec, x0, nfe, t1)
            ts = info["ts"]
            exact = gmm.flow_map(path, x0, ts[0], ts[-1])
            rows[spec] = {
                "nfe": int(info["nfe"]),
                "rms_to_flow_map": float(jnp.sqrt(jnp.mean((x - exact) ** 2))),
                "energy": _energy(x, ref),
            }
        out["paths"][name] = rows
    return out


def convergence_orders(steps=(32, 64, 128, 256), t1: float = 0.8, solvers=None) -> dict:
    """Slope of log RMS error to the exact flow map against log step size, LogSNR grid,
    float64; multistep solvers with the exact eps, Euler / Heun with the exact velocity."""
    gmm = _mixture()
    x0 = jax.random.normal(jax.random.key(3), (64, 2), jnp.float64)
    solvers = solvers or (
        *("ddim", "dpm++2m", "dpm++3m", "unipc", "unipc-bh1", "unipc3", "deis2", "deis"),
        *("euler", "heun"),
    )
    out = {"steps": list(steps), "t1": t1, "paths": {}}
    for name, (make, _) in _MIXTURE_PATHS.items():
        path = make()
        grid = fj.sampling.grids.LogSNR(path)

        def eps(x, t, path=path):
            x1 = gmm.posterior_mean(path, x, t)
            return fj.paths.convert(x1, src="x1", dst="eps", path=path, x=x, t=t)

        ts = grid(4, 0.0, t1)
        exact = gmm.flow_map(path, x0, ts[0], ts[-1])
        rows = {}
        for solver in solvers:
            err = []
            for k in steps:
                if solver in fj.sampling.MULTISTEP_SOLVERS:
                    x, _ = fj.sampling.sample_multistep(
                        eps, x0, kind="eps", path=path, solver=solver, num_steps=k, t1=t1
                    )
                else:
                    x, _ = fj.sampling.sample_ode(
                        gmm.velocity_field(path), x0, solver, k, grid=grid, t1=t1
                    )
                err.append(float(jnp.sqrt(jnp.mean((x - exact) ** 2))))
            slope = float(np.polyfit(np.log(1.0 / np.asarray(steps)), np.log(err), 1)[0])
            rows[solver] = {"errors": err, "order": slope}
        out["paths"][name] = rows
    return out


def _tables(res: dict) -> str:
    lines = []
    a = res.get("adaptive")
    if a:
        lines += [
            f"Adaptive dopri5, {a['n']} 2D points, rtol = atol = {a['tol']:g}, {a['model']}:",
            "",
            "| implementation | time per solve | NFE | max abs error vs float64 |",
            "|---|---|---|---|",
        ]
        for k, r in a["rows"].items():
            lines.append(
                f"| {k} | {1e3 * r['median_s']:.1f} ms | {r['nfe']} | {r['max_err_vs_f64']:.1e} |"
            )
        lines += [
            "",
            f"sample_ode / plain diffeqsolve = {a['ratio_vs_plain']:.3f}; flow_matching / "
            f"sample_ode = {a['speedup_vs_flow_matching']:.2f}x; max |sample_ode - plain| = "
            f"{a['agree_ours_plain']:.1e}; compiles on new values/tolerances: "
            f"{a['recompiles_new_values']}.",
            "",
        ]
    m = res.get("mixture")
    if m:
        paths = list(m["paths"])
        lines += [
            f"Analytic mixture, {m['nfe']} NFE, {m['n']} samples (exact eps / velocity), RMS "
            "distance to the exact flow map of the same noise | energy distance to exact "
            f"samples (noise floor {m['energy_floor']:.4f}):",
            "",
            "| sampler | " + " | ".join(paths) + " |",
            "|---|" + "---|" * len(paths),
        ]
        for spec in m["paths"][paths[0]]:
            rows = [m["paths"][p][spec] for p in paths]
            cells = [f"{r['rms_to_flow_map']:.4f} / {r['energy']:.4f}" for r in rows]
            lines.append(f"| {spec} | " + " | ".join(cells) + " |")
        lines.append("")
    g = res.get("target")
    if g:
        paths = list(g["paths"])
        lines += [
            f"Target, {g['nfe']} NFE, {g['n']} samples, {g['seeds']} seeds: energy distance to "
            f"exact samples, mean [min, max] (wins over uniform Heun, paired by seed); two "
            f"exact sample sets: mean {g['null']['mean']:.4f}, max {g['null']['max']:.4f}:",
            "",
            "| sampler | " + " | ".join(paths) + " |",
            "|---|" + "---|" * len(paths),
        ]
        for spec in g["paths"][paths[0]]:
            cells = [
                f"{r['mean']:.4f} [{r['min']:.4f}, {r['max']:.4f}] ({r['wins_vs_heun']})"
                for r in (g["paths"][p][spec] for p in paths)
            ]
            lines.append(f"| {spec} | " + " | ".join(cells) + " |")
        lines.append("")
    c = res.get("orders")
    if c:
        paths = list(c["paths"])
        lines += [
            f"Convergence orders (fitted slope, steps {c['steps']}, LogSNR grid to t1 = "
            f"{c['t1']}, float64):",
            "",
            "| solver | " + " | ".join(paths) + " |",
            "|---|" + "---|" * len(paths),
        ]
        for solver in c["paths"][paths[0]]:
            lines.append(
                f"| {solver} | "
                + " | ".join(f"{c['paths'][p][solver]['order']:.2f}" for p in paths)
                + " |"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    import argparse
    import json
    import os
    import time

    from benchmarks._harness import environment, loadavg

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="1000 points, 2 repeats (a smoke run)")
    ap.add_argument("--parts", default="adaptive,mixture,orders")
    ap.add_argument("--n", type=int, default=None, help="points of the adaptive solve")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--mixture-n", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/solvers_cpu.json")
    ap.add_argument("--specs", default=None, help="mixture: comma-separated specs (default all)")
    ap.add_argument("--solvers", default=None, help="orders: comma-separated (default all)")
    args = ap.parse_args(argv)
    res = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "argv": argv if argv is not None else __import__("sys").argv[1:],
        "loadavg_start": loadavg(),
        "environment": environment(),
    }
    n = args.n or (1000 if args.quick else 10_000)
    reps = args.repeats or (2 if args.quick else 5)
    parts = {
        "adaptive": lambda: adaptive_overhead(n=n, repeats=reps),
        "mixture": lambda: mixture_samplers(
            n=args.mixture_n or (1000 if args.quick else 4000),
            specs=args.specs.split(",") if args.specs else None,
        ),
        "orders": lambda: convergence_orders(
            solvers=tuple(args.solvers.split(",")) if args.solvers else None
        ),
        "target": lambda: target_dpm_vs_heun(n=args.mixture_n or 2000),
        "interleaved": lambda: interleaved_ratios(n=n, rounds=reps),
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    for part in args.parts.split(","):
        if part != "adaptive":
            jax.config.update("jax_enable_x64", True)  # oracle accuracy for the mixture
        res[part] = parts[part]()
        res[f"loadavg_after_{part}"] = loadavg()
        res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        with open(args.out, "w") as f:  # after each part, so a long run keeps what it did
            json.dump(res, f, indent=1, default=str)
        print(_tables({part: res[part]}) if part != "interleaved" else res[part], flush=True)


if __name__ == "__main__":
    main()
