"""The Riemannian study: Riemannian flow matching on the manifold against a Euclidean flow
matched in a Euclidean space around it and projected onto it, one network size, one budget,
several seeds (paired: same data stream and initialisation key per seed).

Arms:
  rfm        RCFM on the geodesic path (Chen & Lipman 2024) from the uniform law, a
             `manifold_mlp` (tangent output), sampled with the projected dopri5 solver; exact
             log-likelihood by the Riemannian change of variables (fj.manifolds.log_prob).
  euclidean  conditional flow matching (CondOT, Gaussian source) with a plain `mlp` of the
             same width and depth, sampled by fj.sampling.sample_ode and then projected:
             on S^2 in the ambient R^3, projected radially, x / |x|; on T^2 in the covering
             chart R^2 of the angles, projected by wrapping mod 2 pi. The projected model's
             density is the pushforward of the Euclidean one, computed from the exact
             Euclidean likelihood: p(x) = int_0^inf r^2 p_R3(r x) dr on S^2 (Gauss-Legendre
             quadrature over the radii where the model puts its mass, [1 - 6 s, 1 + 6 s] with
             s the spread of its sample radii; the mass outside is reported), and
             p(x) = sum_k p_R2(x + 2 pi k) over the 3 x 3 lattice images on T^2.

Datasets: the synthetic manifold datasets with exact densities (fj.data: vmf_mixture on S^2,
wrapped_gaussians and torus_checkerboard on T^2). Metrics (lower is better): `kl`, the
KL(data || model) = E_data[log p_data - log p_model] on held-out draws (nats), and `energy`,
the energy distance of model samples to held-out data (in the embedding: ambient R^3 for the
sphere, (cos, sin) features for the torus). Writes DIR/report.md, DIR/results.json (the shared
schema) and DIR/samples_<dataset>.png.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

import flowjax as fj
from flowjax import studies

__all__ = ["ARMS", "DATASETS", "run"]

ARMS = ("rfm", "euclidean")
DATASETS = ("vmf_mixture", "wrapped_gaussians", "torus_checkerboard")


class _Field(eqx.Module):
    """v(x, t) = apply_fn(params, x, t) as a pytree, so compiled solves are reused per seed."""

    params: Any
    apply_fn: Callable = eqx.field(static=True)

    def __call__(self, x, t):
        return self.apply_fn(self.params, x, t)


def _features(kind, x):
    x = np.asarray(x, np.float64)
    return x if kind == "sphere" else np.concatenate([np.cos(x), np.sin(x)], -1)


class _Setup:
    """What one dataset needs: its manifold, the Euclidean arm's source and projection."""

    def __init__(self, name):
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; valid: {list(DATASETS)}")
        self.name = name
        self.manifold = fj.data.manifold_of(name)
        self.kind = "sphere" if isinstance(self.manifold, fj.manifolds.Sphere) else "torus"
        self.dim = self.manifold.ambient_dim
        self.log_density = fj.data.spec(name).log_density
        if self.kind == "sphere":
            self.euclid_source = fj.sources.StandardGaussian()
        else:  # centred on the chart [0, 2 pi)^2 of the data
            self.euclid_source = fj.sources.Gaussian(
                mean=jnp.full((self.dim,), math.pi), scale_diag=jnp.ones((self.dim,))
            )

    def project(self, y):
        return self.manifold.projx(y)


def _objective(arm, setup, net):
    if arm == "rfm":
        return fj.manifolds.RiemannianFlowMatching(
            path=fj.manifolds.GeodesicPath(setup.manifold), model=net.apply_fn
        )
    return fj.objectives.make_objective(
        "flow_matching", path=fj.paths.CondOT(), model=net.apply_fn, source=setup.euclid_source
    )


def _network(arm, setup, config):
    kw = dict(width=config.width, depth=config.depth, freq_dim=config.freq_dim, time_scale=1.0)
    if arm == "rfm":
        return studies.build_network(
            "manifold_mlp", "tiny", (setup.dim,), manifold=setup.kind, **kw
        )
    return studies.build_network("mlp", "tiny", (setup.dim,), **kw)


def _sample(arm, setup, field, n, key, config):
    """(samples on M, unprojected samples or None, nfe)."""
    solve = dict(solver=config.solver, rtol=config.rtol, atol=config.atol)
    if arm == "rfm":
        x0 = fj.manifolds.Uniform(setup.manifold).sample(key, n)
        x, info = fj.manifolds.sample_ode(setup.manifold, field, x0, **solve)
        return np.asarray(x), None, int(info["nfe"])
    y0 = setup.euclid_source.sample(key, (n, setup.dim))
    y, info = fj.sampling.sample_ode(field, y0, **solve)
    return np.asarray(setup.project(y)), np.asarray(y), int(info["nfe"])


def _log_model(arm, setup, field, x, y_model, config):
    """log p_model(x) on M (B,) and the fraction of the model's mass the formula leaves out."""
    tol = dict(rtol=config.rtol, atol=config.atol)
    x = jnp.asarray(x, jnp.float32)
    if arm == "rfm":
        logp, _ = fj.manifolds.log_prob(setup.manifold, field, x, **tol)
        return np.asarray(logp, np.float64), 0.0
    if setup.kind == "sphere":
        r = np.linalg.norm(y_model, axis=-1)
        spread = float(np.std(r))
        lo, hi = max(0.02, 1.0 - 6.0 * spread), 1.0 + 6.0 * spread
        nodes, weights = np.polynomial.legendre.leggauss(config.radial_nodes)
        radii = 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)
        log_w = np.log(0.5 * (hi - lo) * weights) + 2.0 * np.log(radii)
        pts = (jnp.asarray(radii, x.dtype)[:, None, None] * x[None]).reshape(-1, x.shape[-1])
        missed = float(np.mean((r < lo) | (r > hi)))
    else:
        shifts = 2 * math.pi * np.asarray(list(np.ndindex(3, 3)), np.float64) - 2 * math.pi
        log_w = np.zeros(len(shifts))
        pts = (x[None] + jnp.asarray(shifts, x.dtype)[:, None, :]).reshape(-1, x.shape[-1])
        box = (y_model >= -2 * math.pi) & (y_model < 4 * math.pi)
        missed = float(np.mean(~np.all(box, axis=-1)))
    logp, _ = fj.likelihood.log_prob(field, pts, prior=setup.euclid_source, **tol)
    logp = np.asarray(logp, np.float64).reshape(len(log_w), -1)
    return np.asarray(logsumexp(jnp.asarray(log_w[:, None] + logp), axis=0)), missed


def _evaluate(arm, setup, net, state, seeds, config, x_test, x_ref, log):
    out = {"kl": [], "energy": [], "nll": [], "nfe": [], "missed_mass": []}
    samples = None
    log_data = setup.log_density(np.asarray(x_test, np.float64))
    for i, _ in enumerate(seeds):
        field = _Field(studies.unstack(state.ema[0], i), net.apply_fn)
        key = jax.random.key(10_000 + i)
        x, y, nfe = _sample(arm, setup, field, config.sample_size, key, config)
        logp, missed = _log_model(arm, setup, field, x_test, y, config)
        out["kl"].append(float(np.mean(log_data - logp)))
        out["nll"].append(float(-np.mean(logp)))
        out["energy"].append(
            fj.metrics.energy_distance(_features(setup.kind, x), _features(setup.kind, x_ref))
        )
        out["nfe"].append(nfe)
        out["missed_mass"].append(missed)
        samples = x if samples is None else samples
        log(f"    seed {i}: KL {out['kl'][-1]:.4f}, energy {out['energy'][-1]:.5f}, NFE {nfe}")
    return {k: studies.mean_ci(v) for k, v in out.items()}, samples


def run(config, workdir, *, log=print, command=None):
    """Runs the study; returns the results dict (also written to workdir)."""
    studies.check_positive(
        config, "num_seeds", "num_steps", "batch_size", "eval_samples", "sample_size"
    )
    seeds = [config.seed + i for i in range(config.num_seeds)]
    record = studies.Record("riemannian", config, seeds, command)
    arms = studies.names(config.arms, "arms", list(ARMS))
    all_samples = {}
    for name in studies.names(config.datasets, "datasets", list(DATASETS)):
        setup = _Setup(name)
        x_test = fj.data.reference_samples(name, config.eval_samples, seed=1)
        x_ref = fj.data.reference_samples(name, config.sample_size, seed=2)
        x_ref2 = fj.data.reference_samples(name, config.sample_size, seed=3)
        entropy = float(-np.mean(setup.log_density(np.asarray(x_test, np.float64))))
        stream = studies.BatchStream(
            name, seeds, config.batch_size, config.num_steps, config.steps_per_dispatch
        )
        finals, all_samples[name] = {}, {}
        for arm in arms:
            log(f"[{name}] training {arm} ({len(seeds)} seeds x {config.num_steps} steps)")
            net = _network(arm, setup, config)
            trainer = studies.SeedTrainer(
                _objective(arm, setup, net),
                net,
                config.optim,
                config.num_steps,
                ema_decay=config.ema_decay,
            )
            t0 = time.perf_counter()
            state, losses = trainer.train(stream)
            train_s = time.perf_counter() - t0
            finals[arm], all_samples[name][arm] = _evaluate(
                arm, setup, net, state, seeds, config, x_test, x_ref, log
            )
            finals[arm]["train_seconds"] = train_s
            finals[arm]["final_loss"] = float(np.mean(losses[:, -10:]))
        ds = {
            "manifold": repr(setup.manifold),
            "entropy_test": entropy,
            "energy_floor": fj.metrics.energy_distance(
                _features(setup.kind, x_ref2), _features(setup.kind, x_ref)
            ),
            "finals": finals,
        }
        verdicts = []
        if "rfm" in finals and "euclidean" in finals:
            for metric, what in (("kl", "a lower KL"), ("energy", "a lower energy distance")):
                r = studies.paired_log_ratio(
                    finals["euclidean"][metric]["values"], finals["rfm"][metric]["values"]
                )
                claim = f"Riemannian FM has {what} than Euclidean FM + projection"
                verdicts.append(studies.verdict(claim, metric, r))
        record.add(name, ds, verdicts=verdicts, num_seeds=len(seeds))
    return record.finish(workdir, render=_render, plots=lambda r, w: _plots(all_samples, r, w))


def _plots(all_samples, results, workdir):
    import os

    out = {}
    for name, by_arm in all_samples.items():
        kind = "sphere" if "Sphere" in results["datasets"][name]["manifold"] else "torus"
        ref = np.asarray(fj.data.reference_samples(name, 2000, seed=2))
        panels = {f"{arm}": _chart(kind, x) for arm, x in by_arm.items()}
        panels = {"data": _chart(kind, ref), **panels}
        path = os.path.join(workdir, f"samples_{name}.png")
        label = "(lon, lat)" if kind == "sphere" else "(phi - pi, psi - pi)"
        out[name] = studies.plot_samples(
            path, panels, lim=math.pi, title=f"{name}: samples in {label}"
        )
    return out


def _chart(kind, x):
    x = np.asarray(x, np.float64)
    if kind == "sphere":
        return np.stack([np.arctan2(x[:, 1], x[:, 0]), np.arcsin(np.clip(x[:, 2], -1, 1))], -1)
    return x - math.pi


def _render(r) -> str:
    lines = [
        "# Riemannian flow matching vs Euclidean flow matching + projection",
        "",
        *studies.machine_lines(r),
        "",
    ]
    for name, ds in r["datasets"].items():
        lines += [f"## {name} ({ds['manifold']})", ""]
        rows = [
            [
                arm,
                studies.fmt_ci(c["kl"]),
                studies.fmt_ci(c["nll"]),
                studies.fmt_ci(c["energy"]),
                studies.fmt(c["nfe"]["mean"]),
                studies.fmt(c["missed_mass"]["mean"]),
                studies.fmt(c["train_seconds"]),
            ]
            for arm, c in ds["finals"].items()
        ]
        header = ["arm", "KL (nats)", "NLL (nats)", "energy", "NFE", "mass left out", "train s"]
        lines += studies.table(header, rows)
        lines += [
            "",
            f"Entropy of the test draws (exact density): {ds['entropy_test']:.4f} nats; "
            f"energy distance between two data samples: {ds['energy_floor']:.5f}.",
            "",
            *studies.verdict_table(ds["verdicts"]),
            "",
        ]
    return "\n".join(lines) + "\n"
