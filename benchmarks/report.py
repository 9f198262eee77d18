"""Markdown tables of a results JSON (for BENCHMARKS.md).

python -m benchmarks.report benchmarks/results/cpu.json
"""

from __future__ import annotations

import json
import sys

__all__ = ["markdown"]


def _f(x, spec: str, scale: float = 1.0) -> str:
    if x is None:
        return "–"
    return format(x * scale if scale != 1.0 else x, spec)


def markdown(doc: dict) -> str:
    env, v = doc["env"], doc["env"]["versions"]
    out = [
        f"- command: `{doc['settings'].get('command', '')}`",
        f"- date (UTC): {env['date_utc']}",
        f"- device: {env['backend']} ({env['cpu_model']}, {env['cpu_usable']} usable cores of "
        f"{env['cpu_count']}); torch threads: {env.get('torch_threads', '–')}",
        f"- versions: jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, diffrax "
        f"{v['diffrax']}, torch {v['torch']}, torchcfm {v['torchcfm']}, flow-matching "
        f"{v['flow-matching']}, torchdiffeq {v['torchdiffeq']}",
        f"- 1/5/15-min load average: start {env['loadavg_start']}, end {env.get('loadavg_end')}",
    ]
    wait = env.get("wait_quiet")
    if wait:
        out.append(
            f"- waited {wait['waited_s']} s for a 1-min load < {wait['max_load']}: "
            f"{'reached' if wait['quiet'] else 'NOT reached (figures taken under load)'}"
        )
    for dtype, p in doc["matmul_peak"].items():
        out.append(
            f"- matmul peak {dtype}, n = {p['n']}: {p['flops_per_s'] / 1e9:.1f} GFLOP/s "
            f"(start {_f(p.get('flops_per_s_start'), '.1f', 1e-9)}, "
            f"end {_f(p.get('flops_per_s_end'), '.1f', 1e-9)})"
        )
    out += [
        "",
        "| suite | case | impl | batch | K | ms / unit | units / s | compile s | NFE | GFLOP/s "
        "| % peak | XLA MB | RSS Δ MB | recompiles |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        xla = (r.get("xla_memory") or {}).get("total_bytes")
        out.append(
            f"| {r['suite']} | {r['case']} | {r['impl']} | {r.get('batch', '–')} "
            f"| {r.get('K', '–')} | {_f(r['median_s'], '.3f', 1e3)} | {_f(r['per_s'], '.2f')} "
            f"| {_f(r['compile_s'], '.1f')} | {_f(r.get('nfe'), 'd')} "
            f"| {_f(r.get('flops_per_s'), '.1f', 1e-9)} | {_f(r.get('frac_of_peak'), '.1%')} "
            f"| {_f(xla, '.1f', 1e-6)} | {_f(r.get('host_rss_delta_bytes'), '.1f', 1e-6)} "
            f"| {r['recompiles']} |"
        )
    if doc["comparisons"]:
        out += [
            "",
            "| comparison | speed ratio (peer s / flowjax s) | checks (max abs error) |",
            "|---|---:|---|",
        ]
        for c in doc["comparisons"]:
            ratio = f"{c['speedup']:.2f}×" if c["speedup"] is not None else "refused"
            checks = "; ".join(
                f"{ch['name']}: {_f(ch['max_abs_err'], '.1e')} "
                f"({'ok' if ch['ok'] else 'FAIL'}, atol {ch['atol']:g})"
                for ch in c["checks"]
            )
            out.append(f"| {c['name']} | {ratio} | {checks} |")
    if doc.get("targets"):
        out += ["", "| target | threshold | measured | met |", "|---|---:|---:|---|"]
        for t in doc["targets"]:
            met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
            out.append(f"| {t['name']} | {t['threshold']} | {_f(t['measured'], '.3g')} | {met} |")
    if doc.get("notes"):
        out += [""] + [f"- {n}" for n in doc["notes"]]
    return "\n".join(out)


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m benchmarks.report RESULTS.json")
    with open(args[0]) as f:
        print(markdown(json.load(f)))


if __name__ == "__main__":
    main()
