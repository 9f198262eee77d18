"""report.md, findings and plots of the flow-map experiment, from the results dict alone."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np

from flowjax.flowmaps.experiment._stats import format_ratio, teacher_ratios

__all__ = ["findings", "render", "plots", "fmt", "fmt_ci"]

_METRIC_NAMES = {
    "map_mse": "MSE to the exact map",
    "w2": "W2 to data",
    "energy": "energy distance",
    "kl": "histogram KL",
    "fd": "digits FD",
}


def fmt(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "nan"
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def fmt_ci(cell: Mapping) -> str:
    """'mean [low, high]' of a mean_ci cell (just the mean when there is no interval)."""
    if not math.isfinite(cell["ci_low"]):
        return fmt(cell["mean"])
    return f"{fmt(cell['mean'])} [{fmt(cell['ci_low'])}, {fmt(cell['ci_high'])}]"


def _targets(config) -> dict:
    return {
        "one_step": float(config["targets"]["one_step"]),
        "two_step": float(config["targets"]["two_step"]),
    }


# ------------------------------------------------------------------------------ findings


def findings(name: str, ds: Mapping, config) -> list[str]:
    """Plain-language findings of one dataset, computed from its recorded numbers."""
    cfg = config if isinstance(config, Mapping) else config.to_dict()
    out: list[str] = []
    primary, methods = ds["primary_metric"], ds["methods"]
    teacher = ds["teacher"]
    one = {m: r["nfe"]["1"][primary]["mean"] for m, r in methods.items()}
    finite = {m: v for m, v in one.items() if math.isfinite(v)}
    if len(finite) < len(one):
        out.append("diverged (non-finite samples): " + ", ".join(sorted(set(one) - set(finite))))
    if finite:
        order = sorted(finite, key=finite.get)
        out.append(
            f"1-step {_METRIC_NAMES.get(primary, primary)}, best to worst: "
            + ", ".join(f"{m} {fmt(finite[m])}" for m in order)
        )
        for family in ("distillation", "self-distillation"):
            fam = [m for m in order if methods[m]["family"] == family]
            if fam:
                b = fam[0]
                cell = methods[b]["nfe"]["1"][primary]
                out.append(f"best {family} method at 1 step: {b} ({fmt_ci(cell)})")
        best = order[0]
        nfe = sorted(int(k) for k in methods[best]["nfe"])
        first, last = methods[best]["nfe"][str(nfe[0])], methods[best]["nfe"][str(nfe[-1])]
        out.append(
            f"{best}: {primary} {fmt(first[primary]['mean'])} at {nfe[0]} step(s) -> "
            f"{fmt(last[primary]['mean'])} at {nfe[-1]} steps"
        )
        e1 = ds["teacher_euler"]["1"][primary]
        out.append(
            f"teacher with one Euler step (NFE 1): {primary} {fmt(e1)}; best 1-step flow map "
            f"{fmt(finite[best])} ({_times(e1, finite[best])} lower)"
        )
    out.append(
        f"teacher ({teacher['kind']}): "
        + "; ".join(
            f"{solver} NFE {v['nfe']:.0f}: "
            + ", ".join(f"{m} {fmt(x)}" for m, x in v["metrics"].items())
            for solver, v in teacher["solves"].items()
        )
        + f" (ratios use {teacher['reference']}); data-vs-data floor at the same sample size: "
        + ", ".join(f"{m} {fmt(v)}" for m, v in ds["floors"].items() if v)
    )
    ratios = teacher_ratios(ds, _targets(cfg))
    metric = ratios["metric"]
    for key, what in (
        ("best_one_step", "best 1-step"),
        ("two_step_of_best", "same method, 2 steps"),
        ("best_two_step", "best 2-step"),
    ):
        e = ratios.get(key)
        if e:
            out.append(
                f"{what}: {e['method']} {metric} {fmt(e['value'])} = "
                f"{format_ratio(e['ratio'])} the teacher's {fmt(ratios['teacher_value'])} "
                f"(NFE {ratios['teacher_nfe']:.0f}); target {e['target']:g}x: "
                + ("met" if e["met"] else "NOT met")
            )
    if name == "checkerboard":
        out.append(
            "reference (Boffi et al. 2025, 64k samples, 50 bins): KL 0.086 at 1 step vs 0.070 at "
            f"8 steps; here {ds['eval_samples']} samples, "
            f"{cfg['eval']['hist_bins']} bins, data-vs-data KL floor {fmt(ds['floors']['kl'])}"
        )
    if "guidance" in ds:
        out.extend(_guidance_findings(ds["guidance"]))
    return out


def _times(a: float, b: float) -> str:
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return "n/a"
    return f"{a / b:.1f}x"


def _guidance_findings(g: Mapping) -> list[str]:
    out = []
    comp = g["comparison"]
    pairs = comp["by_scale"]
    if pairs:
        wins = [s for s, p in pairs.items() if p["flowmap_wins"]]
        detail = "; ".join(
            f"scale {s}: flow map {fmt(p['flowmap'])} vs denoiser {fmt(p['denoiser'])}"
            + ("" if p["separated"] else " (intervals overlap)")
            for s, p in pairs.items()
        )
        if len(wins) == len(pairs):
            verdict = "the flow-map look-ahead gave the higher mean reward at every scale"
        elif not wins:
            verdict = (
                "the flow-map look-ahead did NOT win: the denoiser look-ahead gave an "
                "equal or higher mean reward at every scale"
            )
        else:
            verdict = (
                f"mixed: the flow-map look-ahead won at scale(s) {', '.join(wins)} and did "
                "NOT win at the others"
            )
        out.append(
            f"guidance at equal NFE ({g['nfe_budget']} per sample, map: {g['method']}): "
            f"{verdict} ({detail})"
        )
    best = max(
        g["approaches"].values(),
        key=lambda a: a["reward"]["mean"] if math.isfinite(a["reward"]["mean"]) else -math.inf,
    )
    out.append(
        f"highest mean reward: {best['name']} ({fmt_ci(best['reward'])}; hit rate "
        f"{fmt(best['hit']['mean'])}, {g['support_measure']} {fmt(best['support']['mean'])})"
    )
    return out


# ------------------------------------------------------------------------------ report


def render(results: Mapping) -> str:
    """The whole report.md."""
    cfg = results["config"]
    lines = ["# Flow maps: quality against NFE, and guidance", ""]
    if results.get("command"):
        lines += ["```", results["command"], "```", ""]
    t = results["timing"]
    m = results["machine"]
    load = m.get("load_average")
    lines += [
        f"Wall time {t['wall_s']:.0f} s (process CPU {t['cpu_s']:.0f} s) on {m['processor']}, "
        f"{m.get('usable_cpus', m['cpu_count'])} usable CPU(s), backend {m['backend']}"
        + (f"; load average at start {load[0]:.1f}" if load else "")
        + (f", at end {m['load_average_end'][0]:.1f}" if m.get("load_average_end") else "")
        + ".",
        f"Seeds {results['seeds']} ({len(results['seeds'])}); intervals are 95% Student-t over "
        "the training seeds (every seed's network is evaluated on the same noise); "
        "a single seed has no interval.",
        f"Network (every method): {cfg['model']['name']}/{cfg['model']['variant']} "
        f"{cfg['model']['overrides']}, two_times=True; batch {cfg['train']['batch_size']}, "
        f"optimizer {cfg['optim']['name']} lr {cfg['optim']['lr']:g} ({cfg['optim']['schedule']}), "
        f"EMA {cfg['train']['ema_decay']:g}. Path: {cfg['path']}.",
        "",
        "Methods:",
        "",
    ]
    for name, meth in results["methods"].items():
        lines.append(f"- `{name}`: {meth['label']} [{meth['family']}; sampler: {meth['sampler']}]")
    lines.append("")
    for name, ds in results["datasets"].items():
        lines += _dataset_section(name, ds, cfg, results)
    return "\n".join(lines) + "\n"


def _dataset_section(name: str, ds: Mapping, cfg: Mapping, results: Mapping) -> list[str]:
    teacher = ds["teacher"]
    timing = results["timing"]["datasets"].get(name, {})
    out = [f"## {name}", ""]
    tline = f"Teacher: {teacher['kind']}"
    if "num_steps" in teacher:
        tline += (
            f", {teacher['num_steps']} steps at batch {teacher['batch_size']}, lr "
            f"{teacher['lr']:g} (final loss {fmt(teacher['final_loss'])})"
        )
    out += [
        tline + f"; students: {ds['num_steps']} steps each; {ds['eval_samples']} samples per "
        f"evaluation. Time: {timing.get('total_s', math.nan):.0f} s.",
        "",
    ]
    nfe = sorted({int(k) for r in ds["methods"].values() for k in r["nfe"]})
    for metric in ds["metrics"]:
        out += [f"### {_METRIC_NAMES.get(metric, metric)} (`{metric}`, lower is better)", ""]
        out.append(
            "| method | " + " | ".join(f"{k} step{'s' if k > 1 else ''}" for k in nfe) + " |"
        )
        out.append("|---" * (len(nfe) + 1) + "|")
        for mname, r in ds["methods"].items():
            out.append(
                f"| {mname} | " + " | ".join(fmt_ci(r["nfe"][str(k)][metric]) for k in nfe) + " |"
            )
        out.append(
            "| teacher, Euler | "
            + " | ".join(fmt(ds["teacher_euler"][str(k)][metric]) for k in nfe)
            + " |"
        )
        dopri, heun = teacher["solves"]["dopri5"], teacher["solves"]["heun"]
        out += [
            "",
            f"Teacher: dopri5 (rtol {dopri['rtol']:g}, NFE {dopri['nfe']:.0f}) "
            f"{fmt(dopri['metrics'][metric])}; Heun ({heun['num_steps']} steps, "
            f"NFE {heun['nfe']:.0f}) {fmt(heun['metrics'][metric])}. "
            f"Data-vs-data floor: {fmt(ds['floors'][metric])}.",
            "",
        ]
        if metric in ds.get("notes", {}):
            out += [f"Note: {ds['notes'][metric]}", ""]
    ratios = teacher_ratios(ds, _targets(cfg))
    out += [
        f"### Ratio to the teacher ({ratios['metric']}, teacher NFE {ratios['teacher_nfe']:.0f})",
        "",
    ]
    out.append("| | method | value | ratio | ratio 95% CI | target | met |")
    out.append("|---|---|---|---|---|---|---|")
    for key, what in (
        ("best_one_step", "best at 1 step"),
        ("two_step_of_best", "same at 2 steps"),
        ("best_two_step", "best at 2 steps"),
    ):
        e = ratios.get(key)
        if e:
            ci = (
                f"[{format_ratio(e['ratio_ci_low'])}, {format_ratio(e['ratio_ci_high'])}]"
                if math.isfinite(e["ratio_ci_low"])
                else "n/a"
            )
            out.append(
                f"| {what} | {e['method']} | {fmt(e['value'])} | {format_ratio(e['ratio'])} "
                f"| {ci} | {e['target']:g}x | {'yes' if e['met'] else 'no'} |"
            )
    out += [
        "",
        "Per method (1 step / 2 steps): "
        + "; ".join(
            f"{m} {format_ratio(r.get('1', math.nan))} / {format_ratio(r.get('2', math.nan))}"
            for m, r in ratios["per_method"].items()
        ),
        "",
    ]
    if "guidance" in ds:
        out += _guidance_section(ds["guidance"])
    out += ["### Findings", ""] + [f"- {f}" for f in results["findings"][name]] + [""]
    plots = results.get("plots", {}).get(name, [])
    for p in plots:
        out.append(f"![{p}]({p})")
    out += [
        "",
        "Timing (s): teacher train {:.1f}, teacher eval {:.1f}; ".format(
            timing.get("teacher_train_s", math.nan), timing.get("teacher_eval_s", math.nan)
        )
        + "; ".join(
            f"{m} train {v['train_s']:.1f} / eval {v['eval_s']:.1f}"
            for m, v in timing.get("methods", {}).items()
        )
        + (f"; guidance {timing['guidance_s']:.1f}" if "guidance_s" in timing else ""),
        "",
    ]
    return out


def _guidance_section(g: Mapping) -> list[str]:
    out = [
        f"### Guidance (map: {g['method']}, budget {g['nfe_budget']} network evaluations per "
        "sample)",
        "",
        f"Reward r(x1) = {g['reward']}. Mean over {g['num_batches']} batches of "
        f"{g['batch_size']} (seeds x repeats), 95% t-intervals over batch means.",
        "",
        f"| approach | NFE | VJPs | mean reward | hit rate | {g['support_measure']} |",
        "|---|---|---|---|---|---|",
    ]
    for a in g["approaches"].values():
        out.append(
            f"| {a['label']} | {a['nfe']} | {a['vjp']} | {fmt_ci(a['reward'])} | "
            f"{fmt_ci(a['hit'])} | {fmt_ci(a['support'])} |"
        )
    return out + [""]


# ------------------------------------------------------------------------------ plots


def plots(results: Mapping, pictures: Mapping, workdir: str) -> dict[str, list[str]]:
    """Writes the PNGs; returns {dataset: [file names]}."""
    import matplotlib

    matplotlib.use("Agg")
    out = {}
    for name, ds in results["datasets"].items():
        files = [_plot_quality(name, ds, workdir)]
        pics = pictures.get(name, {})
        files.append(_plot_samples(name, ds, pics, workdir))
        if "guidance" in pics:
            files.append(_plot_guidance(name, ds, pics["guidance"], workdir))
        out[name] = files
    return out


def _plot_quality(name, ds, workdir) -> str:
    import matplotlib.pyplot as plt

    metrics = ds["metrics"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2), squeeze=False)
    teacher = ds["teacher"]
    for ax, metric in zip(axes[0], metrics, strict=True):
        shown = []
        for mname, r in ds["methods"].items():
            ks = sorted(int(k) for k in r["nfe"])
            mean = np.array([r["nfe"][str(k)][metric]["mean"] for k in ks])
            lo = np.array([r["nfe"][str(k)][metric]["ci_low"] for k in ks])
            hi = np.array([r["nfe"][str(k)][metric]["ci_high"] for k in ks])
            style = "-" if r["family"] == "distillation" else "--"
            (line,) = ax.plot(ks, mean, style, marker="o", ms=3, label=mname)
            shown.append(mean)
            if np.all(np.isfinite(lo)):
                ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.12)
        ks = sorted(int(k) for k in ds["teacher_euler"])
        euler = [ds["teacher_euler"][str(k)][metric] for k in ks]
        shown.append(np.asarray(euler))
        ax.plot(ks, euler, ":", color="grey", marker="x", label="teacher, Euler")
        for solver, marker in (("dopri5", "k*"), ("heun", "kD")):
            sv = teacher["solves"][solver]
            tv = sv["metrics"][metric]
            shown.append(np.asarray([tv]))
            ax.plot(
                [sv["nfe"]], [tv], marker, ms=8, label=f"teacher {solver} (NFE {sv['nfe']:.0f})"
            )
            if solver == teacher["reference"]:
                ax.axhline(tv, color="k", lw=0.6, alpha=0.5)
        floor = ds["floors"][metric]
        if floor != 0:  # 0 by definition for the error against the exact map
            ax.axhline(floor, color="tab:red", lw=0.8, ls="-.", label="data-vs-data floor")
            shown.append(np.asarray([floor]))
        values = np.concatenate([np.ravel(v) for v in shown])
        values = values[np.isfinite(values)]
        if values.size and values.min() > 0:
            ax.set_yscale("log")
        else:  # unbiased estimates (energy distance) can be negative near 0
            ax.set_yscale("symlog", linthresh=max(1e-4, float(np.median(np.abs(values))) / 10))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE (network evaluations per sample)")
        ax.set_title(_METRIC_NAMES.get(metric, metric))
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{name}: quality against NFE (solid: distillation, dashed: self-distillation)")
    fig.tight_layout()
    fname = f"quality_vs_nfe_{name}.png"
    fig.savefig(os.path.join(workdir, fname), dpi=110)
    plt.close(fig)
    return fname


def _panels(kind: str, ax, x: np.ndarray, title: str, lim=4.5) -> None:
    if kind == "points":
        n = min(len(x), 3000)
        ax.scatter(x[:n, 0], x[:n, 1], s=0.5, alpha=0.5)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    else:
        imgs = np.clip((np.asarray(x)[:36, ..., 0] + 1) / 2, 0, 1)
        rows = int(math.ceil(len(imgs) / 6))
        grid = np.ones((rows * 9, 6 * 9))
        for i, im in enumerate(imgs):
            r, c = divmod(i, 6)
            grid[r * 9 : r * 9 + 8, c * 9 : c * 9 + 8] = im
        ax.imshow(grid, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def _plot_samples(name, ds, pics, workdir) -> str:
    import matplotlib.pyplot as plt

    methods = list(ds["methods"])
    steps = sorted({int(k.split("/")[1]) for k in pics if "/" in k})
    rows = len(methods) + 1
    cols = max(len(steps), 2)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.3 * rows), squeeze=False)
    _panels(ds["kind"], axes[0][0], pics["data"], "data (held out)")
    _panels(
        ds["kind"],
        axes[0][1],
        pics["teacher"],
        f"teacher {ds['teacher']['reference']} (NFE {ds['teacher']['nfe']:.0f})",
    )
    for ax in axes[0][2:]:
        ax.axis("off")
    primary = ds["primary_metric"]
    for i, mname in enumerate(methods, start=1):
        for j, k in enumerate(steps):
            x = pics.get(f"{mname}/{k}")
            if x is None or not np.all(np.isfinite(x)):
                axes[i][j].axis("off")
                continue
            val = ds["methods"][mname]["nfe"][str(k)][primary]["mean"]
            _panels(ds["kind"], axes[i][j], x, f"{mname}, {k} step(s): {primary} {fmt(val)}")
    fig.tight_layout()
    fname = f"samples_{name}.png"
    fig.savefig(os.path.join(workdir, fname), dpi=100)
    plt.close(fig)
    return fname


def _plot_guidance(name, ds, pics, workdir) -> str:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    g = ds["guidance"]
    names = list(pics)
    cols = min(4, len(names))
    rows = int(math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 2.8 * rows), squeeze=False)
    box = g.get("box")
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    for ax, aname in zip(axes.ravel(), names, strict=False):
        a = g["approaches"][aname]
        _panels(
            ds["kind"],
            ax,
            pics[aname],
            f"{aname}\nreward {fmt(a['reward']['mean'])}, hit {fmt(a['hit']['mean'])}",
        )
        if box is not None:
            ax.add_patch(
                Rectangle(
                    (box[0], box[1]),
                    box[2] - box[0],
                    box[3] - box[1],
                    fill=False,
                    color="tab:red",
                    lw=1,
                )
            )
    fig.suptitle(f"{name}: guidance with {g['method']} at {g['nfe_budget']} NFE per sample")
    fig.tight_layout()
    fname = f"guidance_{name}.png"
    fig.savefig(os.path.join(workdir, fname), dpi=100)
    plt.close(fig)
    return fname
