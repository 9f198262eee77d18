r"""Trains the shipped digits models and writes them with `fj.pretrained.save`.

  python -m experiments.make_pretrained --config=configs/pretrained_digits.py
  python -m experiments.make_pretrained --config=configs/pretrained_digits.py:smoke \
      --config.out=/tmp/pre_smoke

See configs/pretrained_digits.py for what each model is. Each model is trained with plain
optax AdamW in jitted `lax.scan` chunks, batches drawn on device from the 1500 training digits,
then scored (digits FD against the 297 test digits) and saved with its quality.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

import flowjax as fj
from flowjax import pretrained

_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
config_flags.DEFINE_config_file(
    "config", os.path.join(_CONFIGS, "pretrained_digits.py"), "configs/pretrained_digits.py"
)

NUM_CLASSES = 10
EVENT = (8, 8, 1)


# ------------------------------------------------------------------------------ training


def model_config(c, two_times=False):
    over = dict(c.net.overrides)
    if two_times:
        over["two_times"] = True
    return dict(
        name=c.net.name,
        variant=c.net.variant,
        input_shape=[64],
        num_classes=NUM_CLASSES,
        overrides=over,
    )


def build(cfg, seed):
    net = fj.models.build_model(
        cfg["name"],
        cfg["variant"],
        input_shape=tuple(cfg["input_shape"]),
        num_classes=cfg["num_classes"],
        key=jax.random.key(seed),
        **cfg["overrides"],
    )
    return fj.models.functional(net)


def warm_start(params, source):
    """params with every leaf that `source` has at the same place and shape copied from it."""

    def walk(p, s):
        if isinstance(p, dict):
            return {k: walk(v, s.get(k) if isinstance(s, dict) else None) for k, v in p.items()}
        return s if s is not None and getattr(s, "shape", None) == p.shape else p

    return walk(params, source)


def train(loss_fn, params, tc, num_steps, key, sample_batch, *, lr=None, log=""):
    """AdamW + EMA in jitted chunks; loss_fn(params, key, batch) -> (loss, aux)."""
    lr = tc.lr if lr is None else lr
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, tc.warmup, num_steps, lr * 0.05)
    opt = optax.chain(optax.clip_by_global_norm(tc.clip), optax.adamw(sched, weight_decay=0.0))
    opt_state, ema = opt.init(params), params
    chunk = min(tc.chunk, num_steps)

    @jax.jit
    def run(carry, key):
        def step(carry, k):
            params, ema, opt_state = carry
            kb, kl = jax.random.split(k)
            (loss, _), g = jax.value_and_grad(loss_fn, has_aux=True)(params, kl, sample_batch(kb))
            upd, opt_state = opt.update(g, opt_state, params)
            params = optax.apply_updates(params, upd)
            ema = jax.tree.map(lambda e, p: tc.ema * e + (1 - tc.ema) * p, ema, params)
            return (params, ema, opt_state), loss

        return jax.lax.scan(step, carry, jax.random.split(key, chunk))

    carry, t0 = (params, ema, opt_state), time.time()
    for i in range(num_steps // chunk):
        carry, losses = run(carry, jax.random.fold_in(key, i))
        print(
            f"{log} step {(i + 1) * chunk}: loss {float(jnp.mean(losses)):.4f} "
            f"({time.time() - t0:.0f} s)",
            flush=True,
        )
    return carry[1], time.time() - t0  # the EMA


def data_sampler(x, y, batch_size):
    x, y = jnp.asarray(x.reshape(x.shape[0], -1)), jnp.asarray(y)

    def sample_batch(key):
        idx = jax.random.randint(key, (batch_size,), 0, x.shape[0])
        return {"x1": x[idx], "label": y[idx]}

    return sample_batch


# ------------------------------------------------------------------ teacher trajectories


def trajectories(v, key, n, null_fraction, steps, grid, batch=4000):
    """Heun solves of dx/dt = v(x, t, y) from x0 ~ N(0, I): states and velocities at the
    `grid` + 1 uniform times, labels (null with probability `null_fraction`)."""
    ky, kn, kx = jax.random.split(key, 3)
    y = jax.random.randint(ky, (n,), 0, NUM_CLASSES)
    y = jnp.where(jax.random.uniform(kn, (n,)) < null_fraction, NUM_CLASSES, y)
    x0 = jax.random.normal(kx, (n, 64))
    every = steps // grid
    h = 1.0 / steps

    @jax.jit
    def solve(x0, y):
        def step(x, i):
            t = i * h
            k1 = v(x, t, y)
            k2 = v(x + h * k1, t + h, y)
            return x + 0.5 * h * (k1 + k2), (x, k1)

        x1, (xs, vs) = jax.lax.scan(step, x0, jnp.arange(steps, dtype=jnp.float32))
        xs = jnp.concatenate([xs[::every], x1[None]])
        vs = jnp.concatenate([vs[::every], v(x1, 1.0, y)[None]])
        return xs, vs

    out = [solve(x0[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]
    xs = jnp.concatenate([o[0] for o in out], axis=1)  # (grid + 1, n, 64)
    vs = jnp.concatenate([o[1] for o in out], axis=1)
    return xs, vs, y


def map_loss_fn(apply_fn, xs, vs, ys, mc):
    """Regression of the flow map on teacher trajectories (flow map matching on pairs of
    trajectory points; Boffi et al. 2024): u(x_a, t_a, t_b) on (x_b - x_a) / (t_b - t_a),
    and on the diagonal u(x_a, t_a, t_a) on the teacher velocity v(x_a, t_a)."""
    grid = xs.shape[0] - 1
    n = xs.shape[1]
    levels = int(np.log2(grid))
    X = fj.flowmaps.FlowMap(apply_fn)

    def loss(params, key, batch_size):
        k_i, k_a, k_b, k_al, k_lv, k_pos, k_d = jax.random.split(key, 7)
        b = batch_size
        nd = int(round(b * mc.diag_fraction))
        nj = b - nd
        i = jax.random.randint(k_i, (b,), 0, n)
        # jumps: half on the dyadic grid the samplers use, half any pair a < b
        a1 = jax.random.randint(k_a, (nj,), 0, grid)
        b1 = jax.random.randint(k_b, (nj,), 0, grid)
        lo, hi = jnp.minimum(a1, b1), jnp.maximum(a1, b1) + 1
        lv = jax.random.randint(k_lv, (nj,), 0, levels + 1)
        width = grid // (2**lv)
        pos = jax.random.randint(k_pos, (nj,), 0, 2**lv)
        aligned = jax.random.uniform(k_al, (nj,)) < mc.aligned_fraction
        lo = jnp.where(aligned, pos * width, lo)
        hi = jnp.where(aligned, pos * width + width, hi)
        ij = i[:nj]
        xa, xb = xs[lo, ij], xs[hi, ij]
        ta, tb = lo / grid, hi / grid
        u = X.average_velocity(params, xa, ta, tb, y=ys[ij])
        tgt = (xb - xa) / (tb - ta)[:, None]
        jump = jnp.mean((u - tgt) ** 2, axis=1)
        # diagonal: the teacher's velocity at a grid point
        idd = i[nj:]
        ad = jax.random.randint(k_d, (nd,), 0, grid + 1)
        vd = X.velocity(params, xs[ad, idd], ad / grid, y=ys[idd])
        diag = jnp.mean((vd - vs[ad, idd]) ** 2, axis=1)
        value = (jnp.sum(jump) + jnp.sum(diag)) / b
        return value, {"jump": jnp.mean(jump), "diag": jnp.mean(diag)}

    return loss


# ------------------------------------------------------------------------------ quality


def fd(samples, ref):
    return float(fj.metrics.digits_fd(np.asarray(samples).reshape(-1, *EVENT), ref))


def eval_labels(test_y, n):
    reps = -(-n // len(test_y))
    return jnp.asarray(np.tile(test_y, reps)[:n], jnp.int32)


def quality(model, ec, ref, labels, key, *, guidance=None):
    """{f"steps_{k}": {"nfe", "fd"}} for the model's sampler at each step count."""
    steps = {"flow_map": ec.map_steps, "eps": ec.ddpm_steps, "velocity": ec.heun_steps}
    out = {}
    for k in steps[model.kind]:
        x, nfe = model.sample(key, labels, num_steps=int(k), guidance=guidance)
        out[f"steps_{k}"] = {"nfe": nfe, "fd": fd(x, ref)}
        print(f"  {model.name} w={guidance} steps={k} nfe={nfe}: FD {out[f'steps_{k}']['fd']:.3f}")
    if model.kind == "velocity":
        x, nfe = model.sample(key, labels, num_steps=0, guidance=guidance)
        out["dopri5"] = {"nfe": nfe, "fd": fd(x, ref)}
        print(f"  {model.name} w={guidance} dopri5 nfe={nfe}: FD {out['dopri5']['fd']:.3f}")
    return out


def check_values(model, ref, labels, key, steps, guidance=None, seeds=3):
    """FD of `len(labels)` samples at `steps` over a few seeds: the value tests reproduce."""
    vals = []
    for s in range(seeds):
        x, nfe = model.sample(
            jax.random.fold_in(key, s), labels, num_steps=steps, guidance=guidance
        )
        vals.append(fd(x, ref))
    return dict(
        n=int(labels.shape[0]),
        steps=steps,
        nfe=nfe,
        guidance=guidance,
        seed_key=0,
        fd=vals,
        fd_mean=float(np.mean(vals)),
        fd_std=float(np.std(vals)),
    )


# --------------------------------------------------------------------------------- main


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    c = flags.FLAGS.config
    out = c.out or str(pretrained.DEFAULT_DIR)
    names = [n.strip() for n in c.models.split(",") if n.strip()]
    command = " ".join(["python -m experiments.make_pretrained", *sys.argv[1:]])
    split = {s: fj.data.digits_arrays(s) for s in ("train", "test")}
    (x_tr, y_tr), (x_te, y_te) = split["train"], split["test"]
    ref = x_te
    floor = fd(x_tr, ref)
    print(f"data floor FD(train 1500, test 297) = {floor:.3f}", flush=True)
    labels = eval_labels(y_te, c.eval.num_samples)
    small = jnp.asarray(y_te, jnp.int32)  # 297 samples: the tests' check
    key = jax.random.key(c.seed)
    k_eval, k_check = jax.random.key(1234), jax.random.key(4321)
    tc = c.train
    sample_batch = data_sampler(x_tr, y_tr, tc.batch_size)
    common = dict(
        event_shape=list(EVENT),
        command=command,
        floor_fd=floor,
        eval=dict(
            num_samples=int(c.eval.num_samples),
            reference="digits test split (297)",
            labels="test labels tiled",
            metric="digits_fd",
            key=1234,
        ),
    )
    path_cond = fj.paths.CondOT()

    def finish(name, params, mcfg, kind, path, seconds, steps, extra, guid=None):
        entry = pretrained.save(
            name,
            params,
            model=mcfg,
            kind=kind,
            path=path,
            directory=out,
            training=dict(seconds=seconds, num_steps=steps, **extra),
            **common,
            **({"t_eps": extra["t_eps"]} if "t_eps" in extra else {}),
        )
        model = pretrained.load(name, directory=out)
        q = {"conditional": quality(model, c.eval, ref, labels, k_eval)}
        if kind != "flow_map":
            q["guided"] = quality(model, c.eval, ref, labels, k_eval, guidance=c.eval.guidance)
        check_steps = {"velocity": 32, "flow_map": 1, "eps": 16}[kind]
        q["check"] = check_values(model, ref, small, k_check, check_steps, guidance=guid)
        pretrained.save(
            name,
            params,
            model=mcfg,
            kind=kind,
            path=path,
            directory=out,
            training=entry["training"],
            quality=q,
            guidance=guid,
            **common,
            **({"t_eps": entry["t_eps"]} if "t_eps" in entry else {}),
        )
        print(
            f"saved {name}: {entry['size_bytes']} bytes, {entry['num_params']} params", flush=True
        )

    if "digits_fm" in names:
        mcfg = model_config(c)
        apply_fn, params = build(mcfg, c.seed)
        obj = fj.objectives.FlowMatching(
            path=path_cond,
            model=apply_fn,
            num_classes=NUM_CLASSES,
            label_dropout=c.fm.label_dropout,
        )
        ema, sec = train(obj, params, tc, c.fm.num_steps, key, sample_batch, log="digits_fm")
        finish(
            "digits_fm",
            ema,
            mcfg,
            "velocity",
            "condot",
            sec,
            c.fm.num_steps,
            dict(objective="flow_matching", label_dropout=c.fm.label_dropout),
        )

    for name, w in (("digits_map", None), ("digits_map_cfg", c.map_cfg.guidance)):
        if name not in names:
            continue
        teacher = pretrained.load("digits_fm", directory=out)
        mc = c.map

        def v(x, t, y, teacher=teacher, w=w):
            f = lambda xx, tt, yy: teacher.apply_fn(teacher.params, xx, tt, y=yy)  # noqa: E731
            if w is None:
                return f(x, t, y)
            # guided field on real labels; the null label keeps the unguided field
            both = f(jnp.concatenate([x, x]), t, jnp.concatenate([y, jnp.full_like(y, 10)]))
            vc, vu = both[: x.shape[0]], both[x.shape[0] :]
            return jnp.where((y == NUM_CLASSES)[:, None], vc, (1 - w) * vu + w * vc)

        t0 = time.time()
        xs, vs, ys = trajectories(
            v, jax.random.fold_in(key, 2), mc.num_traj, mc.null_fraction, mc.traj_steps, mc.grid
        )
        traj_sec = time.time() - t0
        print(f"{name}: {mc.num_traj} teacher trajectories in {traj_sec:.0f} s", flush=True)
        mcfg = model_config(c, two_times=True)
        apply_fn, params = build(mcfg, c.seed + 2)
        if w is None:
            params = warm_start(params, teacher.params)
            steps = mc.num_steps
        else:
            params = warm_start(params, pretrained.load("digits_map", directory=out).params)
            steps = c.map_cfg.num_steps
        lfn = map_loss_fn(apply_fn, xs, vs, ys, mc)
        ema, sec = train(
            lambda p, k, _b, lfn=lfn: lfn(p, k, tc.batch_size),
            params,
            tc,
            steps,
            jax.random.fold_in(key, 3),
            lambda k: None,
            lr=mc.lr,
            log=name,
        )
        extra = dict(
            objective="trajectory distillation (flow map matching on teacher pairs)",
            teacher="digits_fm",
            teacher_guidance=w,
            trajectory_seconds=traj_sec,
            **{f"map_{k}": mc[k] for k in mc},
        )
        finish(name, ema, mcfg, "flow_map", "condot", sec, steps, extra, guid=None)
        del xs, vs

    if "digits_ddpm" in names:
        mcfg = model_config(c)
        apply_fn, params = build(mcfg, c.seed + 1)
        obj = fj.objectives.make_objective(
            "diffusion",
            path=fj.paths.VP(),
            model=apply_fn,
            target="eps",
            num_classes=NUM_CLASSES,
            label_dropout=c.ddpm.label_dropout,
        )
        ema, sec = train(
            obj,
            params,
            tc,
            c.ddpm.num_steps,
            jax.random.fold_in(key, 1),
            sample_batch,
            log="digits_ddpm",
        )
        finish(
            "digits_ddpm",
            ema,
            mcfg,
            "eps",
            "vp",
            sec,
            c.ddpm.num_steps,
            dict(
                objective="diffusion (eps, VP, uniform t)",
                label_dropout=c.ddpm.label_dropout,
                t_eps=c.ddpm.t_eps,
            ),
        )


if __name__ == "__main__":
    app.run(main)
