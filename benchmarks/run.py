r"""Entry point: run the benchmark suites, print a table, write JSON.

    python -m benchmarks.run                                # every suite, default sizes
    python -m benchmarks.run --suite=train --out=train.json
    python -m benchmarks.run --suite=sample,likelihood --repeats=3
    python -m benchmarks.run --dtype=bfloat16 --out=gpu.json   # on a GPU
    python -m benchmarks.run --suite=smoke --out=/tmp/smoke.json   # seconds, for tests

Suites: `train` (train-step throughput: `train_mlp`, the 2D MLP at each batch and
steps-per-dispatch K with the torchcfm and flow_matching loops side by side, then
`train_images`, the U-Net digits / cifar10 and DiT networks), `sample` (dopri5 on 2D points
against flow_matching's ODESolver), `likelihood` (exact-divergence 2D log-likelihood against
ODESolver), `images` (Heun 50 steps and Hutchinson likelihoods on images), `smoke` (a tiny
MLP train step with both peers). `all` runs train_mlp, sample, likelihood, train_images,
images, in this order. The JSON holds the
environment, the measured matmul peaks, one row per (case, implementation), the peer
comparisons (a speed ratio only where the results agree) and the issue's targets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp

from benchmarks import solvers, train
from benchmarks._context import Context, Settings
from benchmarks._harness import Recorder, environment, loadavg, matmul_peak

__all__ = ["SUITES", "main", "parse_args", "evaluate_targets", "format_table"]


def _smoke(ctx: Context) -> None:
    train.run_mlp(ctx)


SUITES = {
    "train": train.run_train,
    "train_mlp": train.run_mlp,
    "train_images": train.run_images,
    "sample": solvers.run_sample,
    "likelihood": solvers.run_likelihood,
    "images": solvers.run_images,
    "smoke": _smoke,
}
# The slow image networks last, so that the 2D figures are taken first.
_ALL = ("train_mlp", "sample", "likelihood", "train_images", "images")

# The issue's targets (CPU): see BENCHMARKS.md.
TARGETS = {
    "train_b256_vs_torchcfm": 10.0,
    "train_b4096_vs_torchcfm": 1.5,
    "train_b4096_frac_of_matmul_peak": 0.6,
    "sample_vs_flow_matching": 2.5,
}


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv=None) -> argparse.Namespace:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--suite",
        default="all",
        help=f"comma-separated suites of {sorted(SUITES)}, or 'all' (= {_ALL})",
    )
    p.add_argument("--out", default="bench_results.json", help="JSON output file")
    p.add_argument("--repeats", type=int, default=d.repeats, help="timed blocks (median)")
    p.add_argument("--warmup", type=int, default=d.warmup, help="calls before timing")
    p.add_argument(
        "--warmup-s",
        type=float,
        default=d.warmup_s,
        help="warm-up calls go on for at least this many seconds",
    )
    p.add_argument(
        "--min-repeat-s",
        type=float,
        default=d.min_repeat_s,
        help="each timed block lasts at least this long",
    )
    p.add_argument(
        "--dtype",
        default=d.dtype,
        choices=("float32", "bfloat16"),
        help="compute dtype of the flowjax networks",
    )
    p.add_argument("--no-peers", action="store_true", help="skip torchcfm / flow_matching")
    p.add_argument(
        "--skip-large",
        action="store_true",
        help="skip the U-Net cifar10 and DiT train steps (slow on CPU)",
    )
    p.add_argument("--mlp-batches", type=_ints, default=d.mlp_batches)
    p.add_argument(
        "--mlp-time-scale",
        type=float,
        default=d.mlp_time_scale,
        help="time-embedding scale of the 2D MLP (flowjax's MLP default: 1000)",
    )
    p.add_argument("--ks", type=_ints, default=d.dispatch_ks, help="steps per dispatch")
    p.add_argument("--image-batch", type=int, default=d.image_batch)
    p.add_argument("--large-batch", type=int, default=d.large_batch)
    p.add_argument("--n-sample", type=int, default=d.n_sample)
    p.add_argument("--n-likelihood", type=int, default=d.n_likelihood)
    p.add_argument("--n-images", type=int, default=d.n_images)
    p.add_argument("--train-steps-2d", type=int, default=d.train_steps_2d)
    p.add_argument("--matmul-n", type=int, default=None, help="size of the peak matmul")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="first wait up to this many seconds for the 1-minute load average "
        "to fall below --max-load (polled every 60 s)",
    )
    p.add_argument("--max-load", type=float, default=1.5)
    args = p.parse_args(argv)
    names = _ALL if args.suite == "all" else tuple(x for x in args.suite.split(",") if x)
    bad = [n for n in names if n not in SUITES]
    if bad or not names:
        p.error(f"--suite: unknown suite(s) {bad}; valid: {sorted(SUITES)} or 'all'")
    if args.repeats < 1 or args.warmup < 1:
        p.error("--repeats and --warmup must be >= 1")
    args.suites = names
    return args


def settings_from(args) -> Settings:
    s = Settings(
        repeats=args.repeats,
        warmup=args.warmup,
        warmup_s=args.warmup_s,
        min_repeat_s=args.min_repeat_s,
        dtype=args.dtype,
        peers=not args.no_peers,
        large=not args.skip_large,
        mlp_batches=args.mlp_batches,
        mlp_time_scale=args.mlp_time_scale,
        dispatch_ks=args.ks,
        image_batch=args.image_batch,
        large_batch=args.large_batch,
        n_sample=args.n_sample,
        n_likelihood=args.n_likelihood,
        n_images=args.n_images,
        train_steps_2d=args.train_steps_2d,
    )
    if jax.default_backend() != "cpu" and args.large_batch == Settings().large_batch:
        s = dataclasses.replace(
            s, image_batch=128, large_batch=128, large_models=("unet/cifar10", "dit/S/2", "dit/B/2")
        )
    if "smoke" in args.suites:
        s = dataclasses.replace(
            s,
            mlp_variant="tiny",
            mlp_batches=(32,),
            dispatch_ks=(2,),
            min_repeat_s=0.02,
            warmup_s=0.05,
        )
    return s


def wait_quiet(max_wait_s: float, max_load: float, poll_s: float = 60.0) -> dict:
    """Polls /proc/loadavg until the 1-minute load is below `max_load` or time runs out."""
    start, seen = time.time(), []
    while True:
        load = loadavg()
        seen.append(load[0] if load else None)
        if load is None or load[0] < max_load or time.time() - start >= max_wait_s:
            return {
                "waited_s": round(time.time() - start, 1),
                "quiet": bool(load and load[0] < max_load),
                "max_load": max_load,
                "polled_1min_loads": seen,
            }
        print(f"[benchmarks] load {load[0]:.2f} >= {max_load}; waiting", flush=True)
        time.sleep(min(poll_s, max(1.0, max_wait_s - (time.time() - start))))


def _find(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def evaluate_targets(doc: dict) -> list[dict]:
    """The issue's targets against the measured rows and comparisons (None: not measured)."""
    comps, rows = doc["comparisons"], doc["results"]
    kmax = max((r["K"] for r in rows if r.get("suite") == "train" and "K" in r), default=None)
    out = []

    def add(name, threshold, measured, detail):
        met = None if measured is None else bool(measured >= threshold)
        out.append(
            {
                "name": name,
                "threshold": threshold,
                "measured": measured,
                "met": met,
                "detail": detail,
            }
        )

    for batch, key in ((256, "train_b256_vs_torchcfm"), (4096, "train_b4096_vs_torchcfm")):
        c = _find(comps, kind="train", batch=batch, K=kmax, peer="torchcfm")
        add(
            key,
            TARGETS[key],
            None if c is None else c["speedup"],
            f"flowjax steps/s (K={kmax}) / torchcfm steps/s, 2D MLP, batch {batch}"
            + ("" if c is None or c["refused"] is None else f"; refused: {c['refused']}"),
        )
    r = _find(rows, suite="train", impl="flowjax", batch=4096, K=kmax)
    add(
        "train_b4096_frac_of_matmul_peak",
        TARGETS["train_b4096_frac_of_matmul_peak"],
        None if r is None else r["frac_of_peak"],
        "achieved FLOP/s of the batch-4096 step (XLA cost analysis) / measured matmul peak",
    )
    c = _find(comps, kind="sample", peer="flow_matching", match="equal_tolerance")
    detail = "flow_matching ODESolver time / flowjax sample_ode time, dopri5, equal tolerance"
    if c is not None and c["refused"] is not None:
        detail += f"; at the requested tolerance refused ({c['refused']})"
        c = _find(comps, kind="sample", peer="flow_matching", match="equal_tolerance_tightened")
        if c is not None:
            detail += (
                f"; both tightened to rtol=atol={c['peer_rtol']:g}, where both results "
                "meet the reference"
            )
    add(
        "sample_vs_flow_matching",
        TARGETS["sample_vs_flow_matching"],
        None if c is None else c["speedup"],
        detail,
    )
    fj_rows = [r for r in rows if r["impl"] == "flowjax"]
    recompiles = sum(r["recompiles"] for r in fj_rows)
    out.append(
        {
            "name": "no_recompilation",
            "threshold": 0,
            "measured": recompiles,
            "met": (recompiles == 0) if fj_rows else None,
            "detail": "XLA compiles (jax.monitoring events) after the first call, all flowjax rows",
        }
    )
    return out


def _fmt(x, spec: str, scale: float = 1.0) -> str:
    if x is None:
        return "-"
    return format(x * scale if scale != 1.0 else x, spec)


def format_table(doc: dict) -> str:
    env = doc["env"]
    lines = [
        f"device: {env['backend']} / {env['device_kind']} ({env['cpu_model']}, "
        f"{env['cpu_usable']} usable cores); jax {env['versions']['jax']}, "
        f"torch {env['versions']['torch']}; {env['date_utc']}; "
        f"load {env['loadavg_start']} -> {env.get('loadavg_end')}",
    ]
    for dtype, p in doc["matmul_peak"].items():
        lines.append(f"matmul peak {dtype} (n={p['n']}): {p['flops_per_s'] / 1e9:.1f} GFLOP/s")
    head = (
        f"{'suite':<10} {'case':<28} {'impl':<14} {'ms/unit':>10} {'unit/s':>10} "
        f"{'compile s':>9} {'nfe':>5} {'GFLOP/s':>8} {'%peak':>6} {'xla MB':>7} "
        f"{'rss MB':>7} {'recomp':>6}"
    )
    lines += ["", head, "-" * len(head)]
    for r in doc["results"]:
        xla = (r.get("xla_memory") or {}).get("total_bytes")
        lines.append(
            f"{r['suite']:<10} {r['case']:<28} {r['impl']:<14} "
            f"{_fmt(r['median_s'], '10.3f', 1e3)} {_fmt(r['per_s'], '10.1f')} "
            f"{_fmt(r['compile_s'], '9.2f')} {_fmt(r.get('nfe'), '5d')} "
            f"{_fmt(r.get('flops_per_s'), '8.1f', 1e-9)} {_fmt(r.get('frac_of_peak'), '6.1%')} "
            f"{_fmt(xla, '7.1f', 1e-6)} {_fmt(r.get('host_rss_delta_bytes'), '7.1f', 1e-6)} "
            f"{r['recompiles']:>6d}"
        )
    if doc["comparisons"]:
        lines += ["", "speed ratios (peer time / flowjax time; > 1 means flowjax is faster):"]
        for c in doc["comparisons"]:
            status = f"{c['speedup']:.2f}x" if c["speedup"] is not None else "REFUSED"
            errs = ", ".join(
                f"{ch['name']}: {_fmt(ch['max_abs_err'], '.1e')}" for ch in c["checks"]
            )
            lines.append(f"  {c['name']:<62} {status:>9}   [{errs}]")
            if c["refused"]:
                lines.append(f"    {c['refused']}")
    if doc.get("targets"):
        lines += ["", "targets:"]
        for t in doc["targets"]:
            mark = {True: "MET", False: "MISSED", None: "not measured"}[t["met"]]
            lines.append(
                f"  {t['name']:<34} >= {t['threshold']:<5} measured "
                f"{_fmt(t['measured'], '.3g')} -> {mark}"
            )
    return "\n".join(lines)


def _document(ctx: Context, *, smoke: bool, final: bool) -> dict:
    recorder = ctx.recorder
    if final:
        # The peak again at the end: the larger of the two is the peak every row is held to.
        for dtype, start in list(recorder.peaks.items()):
            end = matmul_peak(jnp.dtype(dtype), start["n"], repeats=3 if smoke else 7)
            best = max(start, end, key=lambda p: p["flops_per_s"])
            recorder.peaks[dtype] = {
                **best,
                "flops_per_s_start": start["flops_per_s"],
                "flops_per_s_end": end["flops_per_s"],
            }
        for row in recorder.results:
            peak = ctx.peak(row.get("dtype", "float32"))
            if row.get("flops_per_s") is not None and peak:
                row["frac_of_peak"] = row["flops_per_s"] / peak
    doc = recorder.to_json()
    doc["complete"] = final
    doc["targets"] = evaluate_targets(doc)
    return doc


def _write(doc: dict, out: str | None) -> None:
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(doc, f, indent=1)


def main(argv=None) -> dict:
    args = parse_args(argv)
    wait = wait_quiet(args.wait_quiet, args.max_load) if args.wait_quiet > 0 else None
    settings = settings_from(args)
    env = environment()
    if wait is not None:
        env["wait_quiet"] = wait
    recorder = Recorder(env=env, settings=dataclasses.asdict(settings))
    recorder.settings["suites"] = list(args.suites)
    recorder.settings["command"] = "python -m benchmarks.run " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    if settings.peers:
        try:
            import torch

            recorder.env["torch_threads"] = torch.get_num_threads()
        except ImportError:
            recorder.notes.append("torch is not installed: peers skipped")
            settings = dataclasses.replace(settings, peers=False)
        if settings.peers and jax.default_backend() != "cpu":
            recorder.notes.append(
                "peers skipped: flowjax runs on an accelerator and the torch peers on CPU "
                "would not compare like with like"
            )
    smoke = "smoke" in args.suites
    n = args.matmul_n or (512 if smoke else None)
    recorder.peaks["float32"] = matmul_peak(jnp.float32, n, repeats=3 if smoke else 7)
    if jax.default_backend() != "cpu" or settings.dtype == "bfloat16":
        recorder.peaks["bfloat16"] = matmul_peak(jnp.bfloat16, n, repeats=7)
    ctx = Context(settings=settings, recorder=recorder)
    for name in args.suites:
        print(f"[benchmarks] suite {name} (load {loadavg()})", flush=True)
        SUITES[name](ctx)
        _write(_document(ctx, smoke=False, final=False), args.out)  # partial, in case of a crash
    doc = _document(ctx, smoke=smoke, final=True)
    _write(doc, args.out)
    print(format_table(doc), flush=True)
    if args.out:
        print(f"[benchmarks] wrote {args.out}")
    return doc


if __name__ == "__main__":
    main()
