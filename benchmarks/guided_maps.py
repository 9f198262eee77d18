r"""Guidance inside the map vs classifier-free guidance step by step on the teacher (digits).

  python -m benchmarks.guided_maps                       # the shipped models only (minutes)
  python -m benchmarks.guided_maps --meanflow_steps=2000 --shortcut_steps=2000

Class-guided digits (labels: the 297 test labels tiled to `--num_samples`), scored by the
digits FD against the 297 test digits, `--seeds` noise draws (mean and standard deviation):

* teacher: "digits_fm" with CFG (1 - w) v(x, t) + w v(x, t | y) at every Heun step (each
  step: two network halves per call, counted as 2 NFE per evaluation) and adaptive dopri5;
* "digits_map_cfg": the flow map distilled from the guided field, 1, 2, 4 jumps (1 NFE each);
* "digits_map" (unguided, conditional) at 1 and 2 jumps, for reference;
* optional, trained here from digits_map's weights (`--meanflow_steps`, `--shortcut_steps`):
  MeanFlow's guided target (omega, kappa; Geng et al. 2025) with the teacher's conditional
  velocity for v, and the shortcut model's guided bootstrap (Frans et al.) from data.

Target (issue 16): the 1-NFE guided map within 1.2x of the teacher's guided FD at >= 32 NFE.
Prints the table with the command, machine and date; writes benchmarks/results/guided_maps.json.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import flowjax as fj
from flowjax import pretrained

flags.DEFINE_integer("num_samples", 1485, "samples per evaluation (test labels tiled)")
flags.DEFINE_integer("seeds", 3, "noise draws per row")
flags.DEFINE_float("guidance", 0.0, "CFG weight w (0: the one digits_map_cfg was made with)")
flags.DEFINE_integer("meanflow_steps", 0, "train a MeanFlow-guided map for this many steps")
flags.DEFINE_integer("shortcut_steps", 0, "train a shortcut guided-bootstrap map")
flags.DEFINE_float("omega", 1.0, "MeanFlow omega (with kappa: effective w = omega/(1-kappa))")
flags.DEFINE_float("kappa", 0.5, "MeanFlow kappa")
flags.DEFINE_float("adaptive_p", 0.0, "MeanFlow adaptive loss weight power (0: plain MSE)")
flags.DEFINE_string("out", "benchmarks/results/guided_maps.json", "JSON results ('' : none)")
FLAGS = flags.FLAGS


def _fd(x, ref):
    return float(fj.metrics.digits_fd(np.asarray(x).reshape(-1, 8, 8, 1), ref))


def _rows_of(label, fn, steps_list, ref, labels, seeds):
    """FD (mean, sd over seeds) and the mean log p(label | x) under the digits classifier (how
    strongly the samples show their class: CFG raises it)."""
    rows = []
    for k in steps_list:
        vals, logps, nfe = [], [], None
        for s in range(seeds):
            x, nfe = fn(jax.random.fold_in(jax.random.key(2024), s), k)
            vals.append(_fd(x, ref))
            lp = fj.metrics.classifier_log_prob(jnp.reshape(x, (-1, 8, 8, 1)), labels)
            logps.append(float(jnp.mean(lp)))
        rows.append(
            dict(
                model=label,
                steps=k,
                nfe=nfe,
                fd_mean=float(np.mean(vals)),
                fd_std=float(np.std(vals)),
                fd=vals,
                logp_mean=float(np.mean(logps)),
            )
        )
        print(
            f"{label:<44} steps {str(k):>3}  NFE {nfe:>4}  FD {np.mean(vals):7.3f} "
            f"+- {np.std(vals):.3f}  log p(y|x) {np.mean(logps):7.3f}",
            flush=True,
        )
    return rows


def _finetune(objective, init, num_steps, batch_fn, lr=2e-4):
    """AdamW on `objective(params, key, batch)` in jitted scan chunks; returns the EMA."""
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, weight_decay=0.0))
    chunk = min(250, num_steps)

    @jax.jit
    def run(carry, key):
        def step(carry, k):
            p, ema, o = carry
            kb, kl = jax.random.split(k)
            (_, _), g = jax.value_and_grad(objective, has_aux=True)(p, kl, batch_fn(kb))
            u, o = opt.update(g, o, p)
            p = optax.apply_updates(p, u)
            ema = jax.tree.map(lambda e, q: 0.995 * e + 0.005 * q, ema, p)
            return (p, ema, o), None

        return jax.lax.scan(step, carry, jax.random.split(key, chunk))[0]

    carry = (init, init, opt.init(init))
    for i in range(num_steps // chunk):
        carry = run(carry, jax.random.fold_in(jax.random.key(7), i))
    return carry[1]


def main(argv):
    del argv
    t_start = time.time()
    (x_tr, y_tr), (x_te, y_te) = fj.data.digits_arrays("train"), fj.data.digits_arrays("test")
    reps = -(-FLAGS.num_samples // len(y_te))
    labels = jnp.asarray(np.tile(y_te, reps)[: FLAGS.num_samples], jnp.int32)
    teacher = pretrained.load("digits_fm")
    gmap = pretrained.load("digits_map_cfg")
    umap = pretrained.load("digits_map")
    w = FLAGS.guidance or float(gmap.metadata["training"]["teacher_guidance"])
    seeds, ref = FLAGS.seeds, x_te
    rows = []
    print(
        f"class-guided digits, w = {w}, {FLAGS.num_samples} samples x {seeds} seeds; "
        f"FD vs the 297 test digits",
        flush=True,
    )

    def teacher_fn(key, k):
        return teacher.sample(key, labels, num_steps=k, guidance=w)

    rows += _rows_of(
        f"teacher CFG w={w} (Heun; dopri5 = 0)", teacher_fn, (8, 16, 32, 0), ref, labels, seeds
    )

    def map_fn(m):
        return lambda key, k: m.sample(key, labels, num_steps=k)

    rows += _rows_of("digits_map_cfg (guided map)", map_fn(gmap), (1, 2, 4), ref, labels, seeds)
    rows += _rows_of("digits_map (unguided, conditional)", map_fn(umap), (1, 2), ref, labels, seeds)
    rows += _rows_of(
        "teacher unguided (w=1, Heun)",
        lambda key, k: teacher.sample(key, labels, num_steps=k),
        (32,),
        ref,
        labels,
        seeds,
    )

    x1 = jnp.asarray(x_tr.reshape(len(x_tr), -1))
    y1 = jnp.asarray(y_tr)

    def batch_fn(key, b=256):
        i = jax.random.randint(key, (b,), 0, x1.shape[0])
        return {"x1": x1[i], "label": y1[i]}

    net_apply = umap.apply_fn.net_apply  # the MLP on the 64 pixels
    path = fj.paths.CondOT()
    extra = {}
    if FLAGS.meanflow_steps:
        v_teacher = lambda x, t, y: teacher.apply_fn(teacher.params, x, t, y=y)  # noqa: E731
        obj = fj.flowmaps.MeanFlow(
            path=path,
            model=net_apply,
            teacher=v_teacher,
            num_classes=10,
            label_dropout=0.1,
            omega=FLAGS.omega,
            kappa=FLAGS.kappa,
            adaptive_p=FLAGS.adaptive_p,
        )
        t0 = time.time()
        params = _finetune(obj, umap.params, FLAGS.meanflow_steps, batch_fn)
        extra["meanflow_seconds"] = time.time() - t0
        m = eqx.tree_at(lambda mm: mm.params, umap, params)
        name = (
            f"MeanFlow guided (omega={FLAGS.omega}, kappa={FLAGS.kappa}, {FLAGS.meanflow_steps} st)"
        )
        rows += _rows_of(name, map_fn(m), (1, 2), ref, labels, seeds)
    if FLAGS.shortcut_steps:
        obj = fj.flowmaps.Shortcut(
            path=path, model=net_apply, num_classes=10, label_dropout=0.1, guidance=w, num_levels=4
        )
        t0 = time.time()
        params = _finetune(obj, umap.params, FLAGS.shortcut_steps, batch_fn)
        extra["shortcut_seconds"] = time.time() - t0
        m = eqx.tree_at(lambda mm: mm.params, umap, params)
        rows += _rows_of(
            f"shortcut guided bootstrap ({FLAGS.shortcut_steps} st)",
            map_fn(m),
            (1, 2),
            ref,
            labels,
            seeds,
        )

    ref_rows = [r for r in rows if r["model"].startswith("teacher CFG") and (r["nfe"] >= 32)]
    best_teacher = min(r["fd_mean"] for r in ref_rows)
    one = [r for r in rows if r["model"].startswith("digits_map_cfg") and r["steps"] == 1][0]
    ratio = one["fd_mean"] / best_teacher
    print(
        f"\n1-NFE guided map FD {one['fd_mean']:.3f} / best teacher guided FD at >= 32 NFE "
        f"{best_teacher:.3f} = {ratio:.3f} (target <= 1.2: "
        f"{'met' if ratio <= 1.2 else 'not met'})"
    )
    command = " ".join(["python -m benchmarks.guided_maps", *sys.argv[1:]])
    machine = (
        f"{platform.machine()} {os.cpu_count()} CPUs, {platform.system()}, jax "
        f"{jax.__version__} on {jax.devices()[0].platform}; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"command: {command}\nmachine: {machine}\ndate: {date}; wall {time.time() - t_start:.0f} s"
    )
    if FLAGS.out:
        os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
        with open(FLAGS.out, "w") as f:
            json.dump(
                dict(
                    command=command,
                    machine=machine,
                    date=date,
                    guidance=w,
                    num_samples=FLAGS.num_samples,
                    seeds=seeds,
                    rows=rows,
                    ratio_1nfe_vs_teacher=ratio,
                    **extra,
                ),
                f,
                indent=1,
            )


if __name__ == "__main__":
    app.run(main)
