"""results.json, report.md and the PNG plots of a comparison, all from the results dict.

Findings are sentences computed from the numbers (never written in advance): a ratio whose
95% interval excludes 1 is reported as a speed-up of whichever side wins, one whose interval
contains 1 as no clear difference.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

__all__ = ["write_all", "findings", "fmt", "render_report"]


def fmt(x, digits: int = 3) -> str:
    """A number with `digits` significant digits ("n/a" for None / NaN)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) >= 10**digits or abs(x) < 10**-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def _ci(st: dict, digits: int = 3) -> str:
    """ "mean ± half-width" (Student-t), or the mean alone when n < 2."""
    m, lo, hi = st.get("mean"), st.get("ci_low"), st.get("ci_high")
    if m is None or not math.isfinite(m):
        return "n/a"
    if lo is None or not math.isfinite(lo):
        return fmt(m, digits)
    half = (hi - lo) / 2
    if half <= 1e-9 * max(1.0, abs(m)):  # identical values up to rounding
        half = 0.0
    return f"{fmt(m, digits)} ± {fmt(half, 2)}"


def _ratio(st: dict) -> str:
    r = st.get("ratio")
    if r is None or not math.isfinite(r):
        return "n/a"
    if not math.isfinite(st.get("ci_low", math.nan)):
        return f"{r:.2f}×"
    return f"{r:.2f}× [{st['ci_low']:.2f}, {st['ci_high']:.2f}]"


def _label(arms, name):
    return f"{name} ({arms[name]['label']})"


def _censored_sentence(name, base, ds, what: str) -> str | None:
    """A bound when one side missed the threshold in some seeds: a seed that never reached it
    is counted as reaching it at the last evaluation, which can only favour it."""
    arms, last = ds["arms"], ds["eval_steps"][-1]
    key = "steps" if what == "steps" else "seconds"
    mine = arms[name]["to_threshold"][key]["per_seed"]
    ref = arms[base]["to_threshold"][key]["per_seed"]
    if what != "steps":
        return None
    pairs = [(r, m) for r, m in zip(ref, mine, strict=True) if (r is None) != (m is None)]
    if not pairs or any(r is None and m is None for r, m in zip(ref, mine, strict=True)):
        return None
    if all(r is None for r, _ in pairs):
        bound = math.exp(
            np.mean(
                [math.log((last if r is None else r) / m) for r, m in zip(ref, mine, strict=True)]
            )
        )
        return (
            f"{name} reached the threshold in every seed, {base} missed it within {last} "
            f"steps in {len(pairs)} of {len(ref)}: counting those at step {last}, "
            f"{name} needed at least {bound:.2f}× fewer steps (geometric mean over seeds)."
        )
    if all(m is None for _, m in pairs):
        bound = math.exp(
            np.mean(
                [math.log((last if m is None else m) / r) for r, m in zip(ref, mine, strict=True)]
            )
        )
        return (
            f"{base} reached the threshold in every seed, {name} missed it within {last} "
            f"steps in {len(pairs)} of {len(mine)}: counting those at step {last}, "
            f"{base} needed at least {bound:.2f}× fewer steps (geometric mean over seeds)."
        )
    return None


def _speed_sentence(name, base, st, what: str) -> str:
    n, missing = st["n"], st["n_missing"]
    tail = f"n = {n} seed{'s' if n != 1 else ''}"
    if missing:
        tail += f"; {missing} seed(s) left out where one side did not reach the threshold"
    r, lo, hi = st["ratio"], st["ci_low"], st["ci_high"]
    if not math.isfinite(r):
        return (
            f"{name} vs {base}: no {what} ratio (the threshold was not reached by both in "
            "any seed)."
        )
    if not math.isfinite(lo):
        where = "fewer" if r >= 1 else "more"
        return (
            f"{name} reached the threshold in {max(r, 1 / r):.2f}× {where} {what} than "
            f"{base} (one paired seed, no interval; {tail})."
        )
    if lo > 1:
        return (
            f"{name} reached the threshold in {r:.2f}× fewer {what} than {base} "
            f"(95% CI [{lo:.2f}, {hi:.2f}]; {tail})."
        )
    if hi < 1:
        return (
            f"{base} reached the threshold in {1 / r:.2f}× fewer {what} than {name} "
            f"(95% CI [{1 / hi:.2f}, {1 / lo:.2f}]; {tail})."
        )
    return (
        f"No clear difference in {what} to the threshold between {name} and {base}: "
        f"speed-up of {name} over {base} {r:.2f}× (95% CI [{lo:.2f}, {hi:.2f}] contains 1; "
        f"{tail})."
    )


def findings(ds: dict) -> list[str]:
    """Plain-language findings for one dataset, computed from its analysed results."""
    arms, base, th = ds["arms"], ds["baseline"], ds["threshold"]
    primary = th["metric"]
    out = []
    steps_total = ds["eval_steps"][-1]
    ranked = sorted(
        (n for n in arms if math.isfinite(arms[n]["final"][primary]["mean"])),
        key=lambda n: arms[n]["final"][primary]["mean"],
    )
    if ranked:
        best = ranked[0]
        out.append(
            f"Best final {primary} after {steps_total} steps: {best} "
            f"({_ci(arms[best]['final'][primary])}); worst: {ranked[-1]} "
            f"({_ci(arms[ranked[-1]]['final'][primary])})."
        )
    for name, arm in arms.items():
        tt = arm["to_threshold"]
        if tt["n_reached"] < tt["n_seeds"]:
            out.append(
                f"{name} did not reach the threshold ({primary} <= {fmt(th['value'])}) within "
                f"{steps_total} steps in {tt['n_seeds'] - tt['n_reached']} of {tt['n_seeds']} "
                "seeds."
            )
    if base is not None:
        for name, arm in arms.items():
            if name == base:
                continue
            vs = arm["vs_baseline"]
            censored = _censored_sentence(name, base, ds, "steps")
            if math.isfinite(vs["steps_speedup"]["ratio"]):
                out.append(_speed_sentence(name, base, vs["steps_speedup"], "steps"))
                out.append(_speed_sentence(name, base, vs["seconds_speedup"], "training seconds"))
            elif censored is None:
                out.append(
                    f"{name} vs {base}: no speed-up to report (no seed in which both "
                    "reached the threshold)."
                )
            if censored:
                out.append(censored)
            diff = vs["final_difference"][primary]
            if math.isfinite(diff.get("ci_low", math.nan)) and (
                diff["ci_low"] > 0 or diff["ci_high"] < 0
            ):
                better = name if diff["mean"] < 0 else base
                out.append(
                    f"Final {primary}: {better} is lower (better); {name} - {base} = "
                    f"{fmt(diff['mean'])} (95% CI [{fmt(diff['ci_low'])}, {fmt(diff['ci_high'])}])."
                )
            cost = vs["seconds_per_step_ratio"]
            if math.isfinite(cost.get("ci_low", math.nan)) and (
                cost["ci_low"] > 1.1 or cost["ci_high"] < 1 / 1.1
            ):
                out.append(
                    f"A training step of {name} costs {cost['ratio']:.2f}× the wall-clock time "
                    f"of one of {base} (95% CI [{cost['ci_low']:.2f}, {cost['ci_high']:.2f}])."
                )
    out.extend(_nfe_findings(ds))
    return out


def _nfe_findings(ds: dict) -> list[str]:
    arms = ds["arms"]
    metric = ds["suite"]["sweep_primary"]
    out = []
    for sampler in ("euler", "heun"):
        table = {n: a["sweep"].get(sampler) for n, a in arms.items() if a["sweep"].get(sampler)}
        if not table:
            continue
        settings = next(iter(table.values()))["setting"]
        parts = []
        for i, nfe in enumerate(settings):
            vals = {
                n: t[metric]["mean"][i]
                for n, t in table.items()
                if math.isfinite(t[metric]["mean"][i])
            }
            if vals:
                best = min(vals, key=vals.get)
                parts.append(f"NFE {nfe}: {best} ({fmt(vals[best])})")
        if parts:
            out.append(
                f"{sampler.capitalize()} sampler, lowest {metric} per NFE: "
                + "; ".join(parts)
                + "."
            )
    # Sample metrics such as the histogram KL are biased by the sample size: compare sweep
    # values with the training threshold only when both use as many samples.
    same_n = ds.get("sweep_num_samples") == ds.get("eval_num_samples")
    if metric == ds["threshold"]["metric"] and same_n:
        value = ds["threshold"]["value"]
        for sampler in ("euler", "heun"):
            need = {}
            for n, a in arms.items():
                t = a["sweep"].get(sampler)
                if not t:
                    continue
                ok = [
                    s
                    for s, v in zip(t["setting"], t[metric]["mean"], strict=True)
                    if math.isfinite(v) and v <= value
                ]
                need[n] = min(ok) if ok else None
            if need:
                out.append(
                    f"Smallest {sampler.capitalize()} NFE at which the mean {metric} is at or "
                    f"below the training threshold {fmt(value)}: "
                    + ", ".join(f"{n} {v if v is not None else '> max'}" for n, v in need.items())
                    + "."
                )
    return out


# ------------------------------------------------------------------------------------ report


def _arms_table(ds) -> list[str]:
    arms = ds["arms"]
    rows = [
        "| arm | description | objective | path | target | weighting | time dist | "
        "coupling | precond |",
        "|" + "---|" * 9,
    ]
    for name, a in arms.items():
        f = a["factors"]
        rows.append(
            f"| {name} | {a['label']} | {f['name']} | {f['path']} | {f['target']} | "
            f"{f['weighting']} | {f['time_dist']} | {f['coupling']} | {f['precond']} |"
        )
    return rows


def _final_table(ds) -> list[str]:
    arms = ds["arms"]
    metrics = ds["suite"]["metrics"]
    head = "| arm | " + " | ".join(metrics) + " | train seconds | ms / step |"
    rows = [head, "|" + "---|" * (len(metrics) + 3)]
    for name, a in arms.items():
        cells = [_ci(a["final"][m]) for m in metrics]
        sps = a["final"]["seconds_per_step"]
        ms = {
            k: (v * 1e3 if isinstance(v, float) else v)
            for k, v in sps.items()
            if k in ("mean", "ci_low", "ci_high")
        }
        rows.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {_ci(a['final']['train_seconds'])} | {_ci(ms)} |"
        )
    return rows


def _threshold_table(ds) -> list[str]:
    arms, base = ds["arms"], ds["baseline"]
    head = "| arm | reached | steps to threshold | seconds to threshold |"
    if base is not None:
        head += f" speed-up vs {base}, steps [95% CI] | speed-up vs {base}, seconds [95% CI] |"
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, a in arms.items():
        tt = a["to_threshold"]
        row = (
            f"| {name} | {tt['n_reached']}/{tt['n_seeds']} | {_ci(tt['steps'], 4)} | "
            f"{_ci(tt['seconds'])} |"
        )
        if base is not None:
            vs = a["vs_baseline"]
            row += f" {_ratio(vs['steps_speedup'])} | {_ratio(vs['seconds_speedup'])} |"
        rows.append(row)
    return rows


def _sweep_tables(ds) -> list[str]:
    arms = ds["arms"]
    metric = ds["suite"]["sweep_primary"]
    out = []
    first = next(iter(arms.values()))["sweep"]
    for sampler, entry in first.items():
        settings = entry["setting"]
        what = "rtol = atol" if sampler == "dopri5" else "NFE"
        out.append(
            f"**{sampler}** ({metric}, mean ± 95% CI over seeds; "
            f"columns: {what}{'; mean NFE in brackets' if sampler == 'dopri5' else ''})"
        )
        out.append("")
        out.append("| arm | " + " | ".join(fmt(s) for s in settings) + " |")
        out.append("|" + "---|" * (len(settings) + 1))
        for name, a in arms.items():
            t = a["sweep"][sampler]
            cells = []
            for i in range(len(settings)):
                st = {k: t[metric][k][i] for k in ("mean", "ci_low", "ci_high")}
                cell = _ci(st)
                if sampler == "dopri5":
                    cell += f" [{fmt(t['nfe'][i])}]"
                if t["errors"][i]:
                    cell += " (failed)"
                cells.append(cell)
            mark = " †" if sampler == "sde" and a["factors"]["coupling"] != "independent" else ""
            out.append(f"| {name}{mark} | " + " | ".join(cells) + " |")
        out.append("")
        if sampler == "sde" and any(
            a["factors"]["coupling"] != "independent" for a in arms.values()
        ):
            out.append(
                "† The SDE drift needs the score, obtained from the velocity with "
                "`fj.paths.convert`, which assumes the marginals of the independent coupling; "
                "with another coupling (minibatch OT) the paths' marginals differ and this "
                "score is not that of the model's marginals, so its SDE row measures that "
                "mismatch rather than the model."
            )
            out.append("")
    return out


def _ablation_table(ds) -> list[str]:
    arms, base = ds["arms"], ds["baseline"]
    primary = ds["threshold"]["metric"]
    rows = [
        f"| factor changed | arm | final {primary}: arm - base [95% CI] | "
        "speed-up in steps vs base [95% CI] |",
        "|---|---|---|---|",
    ]
    for name, a in arms.items():
        if name == base:
            continue
        diff = a["vs_baseline"]["final_difference"][primary]
        d = (
            f"{fmt(diff['mean'])} [{fmt(diff['ci_low'])}, {fmt(diff['ci_high'])}]"
            if math.isfinite(diff.get("mean", math.nan))
            else "n/a"
        )
        speed = _ratio(a["vs_baseline"]["steps_speedup"])
        rows.append(f"| {a['changed']} | {name} | {d} | {speed} |")
    return rows


def render_report(results: dict) -> str:
    """The Markdown report of a comparison."""
    dev = results["device"]
    cfg = results["config"]
    base = cfg["base"]
    lines = [
        "# flowjax head-to-head: flow matching vs diffusion",
        "",
        f"Mode: **{results['mode']}**; seeds {results['seeds']}; "
        f"{base['train']['num_steps']} steps of batch {base['data']['batch_size']} per arm; "
        f"network {base['model']['name']}/{base['model']['variant']} "
        f"{base['model']['overrides'] or ''}; optimizer {base['optim']['name']} "
        f"lr {base['optim']['lr']} ({base['optim']['schedule']}, warmup "
        f"{base['optim']['warmup_steps']}); EMA {base['ema']['decays']} evaluated.",
        f"Machine: {dev['platform']} ({dev['device_kind']}), {dev['cpu_count']} CPU cores, "
        f"jax {dev['jax']}. Total wall time {results['wall_seconds']:.0f} s (process CPU time "
        f"{results.get('cpu_seconds', math.nan):.0f} s).",
        f"Command: `{results['command']}`" if results.get("command") else "",
        "",
        "Every arm uses the same network, optimizer, batch size, number of steps, initial "
        "parameters, data stream and evaluation noise for a given seed; only the objective "
        "differs. Samples for the curves come from the ODE of each model's velocity "
        f"({cfg['eval']['solver']}, {cfg['eval']['num_steps'] or 'adaptive'} steps), obtained "
        "with `fj.paths.convert` whatever the model predicts.",
        "",
    ]
    for name, ds in results["datasets"].items():
        th = ds["threshold"]
        lines += [f"## {name}", ""]
        lines += _arms_table(ds) + [""]
        lines += [
            "Metrics (lower is better): "
            + "; ".join(f"`{m}`: {d}" for m, d in ds["suite"]["descriptions"].items())
            + "."
        ]
        if ds["suite"]["info"]:
            lines += [
                "Reference values: "
                + ", ".join(f"{k} = {fmt(v, 4)}" for k, v in ds["suite"]["info"].items())
                + "."
            ]
        lines += ["", f"### Final quality (step {ds['eval_steps'][-1]}, mean ± 95% CI)", ""]
        lines += _final_table(ds) + [""]
        lines += [
            "### Steps and seconds to the threshold",
            "",
            f"Threshold: `{th['metric']}` <= {fmt(th['value'], 4)} ({th['rule']}). Steps: first "
            "evaluation at or below the threshold"
            + (
                ", interpolated linearly in log(step) from the evaluation before"
                if th["interpolate"]
                else ""
            )
            + "; seconds: training seconds at that step.",
            "",
        ]
        lines += _threshold_table(ds) + [""]
        if results["mode"] == "ablation" and ds["baseline"] is not None:
            lines += ["### Factor attribution (one factor changed per arm)", ""]
            lines += _ablation_table(ds) + [""]
        if any(a["sweep"] for a in ds["arms"].values()):
            lines += ["### Quality vs number of function evaluations", ""]
            lines += _sweep_tables(ds)
        lines += ["### Findings", ""]
        lines += [f"- {f}" for f in ds["findings"]] + [""]
        lines += ["### Plots", ""]
        for kind in ("quality_vs_steps", "quality_vs_seconds", "quality_vs_nfe", "samples"):
            fn = f"{name}_{kind}.png"
            lines.append(f"![{name} {kind}]({fn})")
        lines.append("")
    lines += [
        "## Method",
        "",
        "- Intervals are Student-t 95% intervals over seeds (mean ± t_{n-1} s / sqrt(n)); with "
        "one seed there is none.",
        "- Steps to threshold: per seed, the first evaluation at or below the threshold, "
        "placed by linear interpolation of the metric in log(step) between it and the "
        "evaluation before (evaluations are log-spaced); never reached = missing. Seconds to "
        "threshold: cumulative training seconds interpolated linearly at that step.",
        "- Speed-up vs the baseline: per seed the ratio baseline / arm of steps (seconds) to "
        "threshold; reported as the geometric mean with a Student-t interval on the log "
        "ratios (delta method on the log scale), over the seeds where both reached it. "
        "Seeds are paired: the same seed gives every arm the same initial parameters and data.",
        "- Training seconds count the train-step dispatches only (waited for), not data "
        "preparation, evaluation or compilation. On a shared machine they are noisy; the "
        "steps are exact.",
        "- All arms are trained by one compiled train step that switches on the arm "
        "(`jax.lax.switch`), so no arm pays for another's objective.",
        "- Minibatch OT (Sinkhorn) pairs are drawn from the plan in two stages (a row from the "
        "row sums, then a column from that row): the same distribution as drawing from the "
        "flattened plan, at O(B^2) instead of O(B^3) cost.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- plots


def _plots(results: dict, workdir: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, ds in results["datasets"].items():
        arms = ds["arms"]
        th = ds["threshold"]
        first_arm = next(iter(arms.values()))
        metrics = [m for m in ds["suite"]["metrics"] if m in first_arm["curve_mean"]]
        for xkey, fname in (("step", "quality_vs_steps"), ("seconds", "quality_vs_seconds")):
            fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
            for ax, m in zip(axes[0], metrics, strict=True):
                for i, (arm_name, a) in enumerate(arms.items()):
                    cm = a["curve_mean"]
                    x = np.asarray(cm["step"] if xkey == "step" else cm["seconds"]["mean"], float)
                    y = np.asarray(cm[m]["mean"], float)
                    lo, hi = np.asarray(cm[m]["ci_low"], float), np.asarray(cm[m]["ci_high"], float)
                    ax.plot(x, y, "-o", ms=3, color=f"C{i}", label=arm_name)
                    ax.fill_between(x, lo, hi, color=f"C{i}", alpha=0.15)
                if m == th["metric"]:
                    ax.axhline(th["value"], color="k", ls="--", lw=1, label="threshold")
                ax.set_xscale("log")
                ys = np.concatenate(
                    [np.asarray(a["curve_mean"][m]["mean"], float) for a in arms.values()]
                )
                if np.all(ys[np.isfinite(ys)] > 0):
                    ax.set_yscale("log")
                ax.set_xlabel("training step" if xkey == "step" else "training seconds")
                ax.set_ylabel(m)
                ax.grid(alpha=0.3)
            axes[0][0].legend(fontsize=7)
            fig.suptitle(f"{name}: quality vs {xkey} (mean, 95% CI band)")
            fig.tight_layout()
            fig.savefig(os.path.join(workdir, f"{name}_{fname}.png"), dpi=100)
            plt.close(fig)

        first = next(iter(arms.values()))["sweep"]
        metric = ds["suite"]["sweep_primary"]
        samplers = list(first)
        fig, axes = plt.subplots(
            1, max(len(samplers), 1), figsize=(4.5 * max(len(samplers), 1), 4), squeeze=False
        )
        for ax, sampler in zip(axes[0], samplers, strict=False):
            for i, (arm_name, a) in enumerate(arms.items()):
                t = a["sweep"][sampler]
                ax.plot(t["nfe"], t[metric]["mean"], "-o", ms=3, color=f"C{i}", label=arm_name)
            ax.set_xscale("log")
            vals = np.concatenate(
                [np.asarray(a["sweep"][sampler][metric]["mean"], float) for a in arms.values()]
            )
            if np.all(vals[np.isfinite(vals)] > 0):
                ax.set_yscale("log")
            if sampler != "dopri5":  # fixed-step samplers: tick the NFE values themselves
                ticks = first[sampler]["setting"]
                ax.set_xticks(ticks, [str(int(x)) for x in ticks])
                ax.minorticks_off()
            ax.set_title(sampler)
            ax.set_xlabel("NFE")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{name}: quality vs NFE (mean over seeds)")
        fig.tight_layout()
        fig.savefig(os.path.join(workdir, f"{name}_quality_vs_nfe.png"), dpi=100)
        plt.close(fig)
        _sample_plot(plt, name, ds, workdir)


def _sample_plot(plt, name, ds, workdir):
    path = os.path.join(workdir, f"{name}_samples.npz")
    if not os.path.exists(path):
        return
    shown = dict(np.load(path))
    reference = shown.get("__reference__")
    names = [n for n in ds["arms"] if n in shown]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False)
    for ax, n in zip(axes[0], names, strict=True):
        x = shown[n]
        if ds["spec"]["kind"] == "points":
            x = x[np.all(np.isfinite(x), axis=1)]
            if reference is not None:
                ax.scatter(reference[:, 0], reference[:, 1], s=0.5, c="0.8")
            ax.scatter(x[:, 0], x[:, 1], s=0.5, alpha=0.5, c="C0")
            ax.set_xlim(-5, 5)
            ax.set_ylim(-5, 5)
            ax.set_aspect("equal")
        else:
            imgs = np.clip((x[:64] + 1) / 2, 0, 1)
            cols = int(math.ceil(math.sqrt(len(imgs))))
            h, w, c = imgs.shape[1:]
            canvas = np.ones((cols * (h + 1), cols * (w + 1), c))
            for i, img in enumerate(imgs):
                r, q = divmod(i, cols)
                canvas[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = img
            ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None)
            ax.axis("off")
        ax.set_title(n, fontsize=8)
    fig.suptitle(f"{name}: final samples, seed {ds.get('first_seed', '')}")
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, f"{name}_samples.png"), dpi=100)
    plt.close(fig)


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def _clean(x):
    """NaN/inf -> None, so results.json is strict JSON."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_all(results: dict, workdir: str) -> None:
    """Computes the findings, then writes results.json, report.md and the plots."""
    for ds in results["datasets"].values():
        ds["findings"] = findings(ds)
        ds["first_seed"] = results["seeds"][0]
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(_clean(results), f, indent=1, default=_json_default, allow_nan=False)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(render_report(results))
    _plots(results, workdir)
