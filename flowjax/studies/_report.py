"""The results record of a study, its report.md and PNG plots: written once for every study.

`Record` starts the results dict of one run (study name, command, config, seeds, machine,
datasets) and `Record.finish` adds the timings and writes `results.json` (strict JSON:
NaN -> null), `report.md` and the plots. Formatting helpers give every report the same
numbers: `fmt`, `fmt_ci`, `fmt_ratio`, `table`, `verdict_table`; plot helpers draw curves
with their 95% bands and sample pictures.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "Record",
    "fmt",
    "fmt_ci",
    "fmt_ratio",
    "machine_lines",
    "plot_curves",
    "plot_samples",
    "table",
    "verdict_table",
    "write_json",
]


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


def fmt_ci(st: Mapping, digits: int = 3) -> str:
    """'mean ± half-width' of a `mean_ci` cell, or the mean alone without an interval."""
    m, lo, hi = st.get("mean"), st.get("ci_low"), st.get("ci_high")
    if m is None or not math.isfinite(m):
        return "n/a"
    if lo is None or hi is None or not math.isfinite(lo):
        return fmt(m, digits)
    half = (hi - lo) / 2
    if half <= 1e-9 * max(1.0, abs(m)):  # identical values up to rounding
        half = 0.0
    return f"{fmt(m, digits)} ± {fmt(half, 2)}"


def fmt_ratio(st: Mapping) -> str:
    """'r× [low, high]' of a ratio cell ({"ratio", "ci_low", "ci_high"})."""
    r = st.get("ratio")
    if r is None or not math.isfinite(r):
        return "n/a"
    lo = st.get("ci_low")
    if lo is None or not math.isfinite(lo):
        return f"{r:.2f}×"
    return f"{r:.2f}× [{lo:.2f}, {st['ci_high']:.2f}]"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table."""
    out = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def verdict_table(verdicts: Sequence[Mapping]) -> list[str]:
    """The verdicts of a dataset (the schema every study shares) as a Markdown table."""
    if not verdicts:
        return []
    return table(
        ("claim", "metric", "ratio [95% CI]", "verdict"),
        [(v["claim"], v["metric"], fmt_ratio(v), f"**{v['verdict']}**") for v in verdicts],
    )


def _clean(x):
    """NaN/inf -> None and numpy scalars -> Python, so results.json is strict JSON."""
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(obj, path: str) -> None:
    with open(path, "w") as f:
        json.dump(_clean(obj), f, indent=1, allow_nan=False)


class Record:
    """The results of one study run (the schema of DESIGN.md), built up dataset by dataset.

    Attributes:
      results: {"study", "command", "config", "seeds", "machine", "datasets": {name: {...,
        "verdicts": [...], "num_seeds": n}}, and after `finish` "wall_seconds",
        "cpu_seconds"}.
    """

    def __init__(self, study: str, config, seeds: Sequence[int], command: str | None = None):
        from flowjax.studies._core import machine_info

        self._t0, self._cpu0 = time.perf_counter(), time.process_time()
        self.results: dict[str, Any] = {
            "study": study,
            "command": command or "",
            "config": json.loads(config.to_json_best_effort()),
            "seeds": [int(s) for s in seeds],
            "machine": machine_info(),
            "datasets": {},
        }

    def add(self, name: str, dataset: dict, *, verdicts: Sequence[dict], num_seeds: int) -> dict:
        """Records one dataset's results with its verdicts and number of seeds."""
        dataset["verdicts"] = list(verdicts)
        dataset["num_seeds"] = int(num_seeds)
        self.results["datasets"][name] = dataset
        return dataset

    def finish(
        self,
        workdir: str,
        render: Callable[[dict], str],
        plots: Callable[[dict, str], Any] | None = None,
    ) -> dict:
        """Adds the timings, then writes results.json, report.md (`render`) and the plots."""
        os.makedirs(workdir, exist_ok=True)
        r = self.results
        r["wall_seconds"] = time.perf_counter() - self._t0
        r["cpu_seconds"] = time.process_time() - self._cpu0
        if hasattr(os, "getloadavg"):
            r["machine"]["load_average_end"] = list(os.getloadavg())
        if plots is not None:
            r["plots"] = plots(r, workdir)
        write_json(r, os.path.join(workdir, "results.json"))
        with open(os.path.join(workdir, "report.md"), "w") as f:
            f.write(render(r))
        return r


def machine_lines(results: Mapping) -> list[str]:
    """Command, machine and timing lines of a report."""
    m = results["machine"]
    load, end = m.get("load_average"), m.get("load_average_end")
    lines = [f"Command: `{results['command']}`", ""] if results.get("command") else []
    lines.append(
        f"Machine: {m['platform']} ({m['device_kind'] or m['processor']}), "
        f"{m.get('usable_cpus', m['cpu_count'])} usable CPU(s), jax {m['jax']}"
        + (f"; load average at start {load[0]:.1f}" if load else "")
        + (f", at end {end[0]:.1f}" if end else "")
        + f". Wall time {results.get('wall_seconds', math.nan):.0f} s (process CPU "
        f"{results.get('cpu_seconds', math.nan):.0f} s). Seeds {results['seeds']}; intervals "
        "are 95% Student-t over seeds (none with one seed)."
    )
    return lines


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, filename: str, title: str) -> str:
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(filename, dpi=100)
    plt.close(fig)
    return os.path.basename(filename)


def plot_curves(
    filename: str,
    panels: Mapping[str, tuple[Mapping[str, Mapping[str, Any]], str]],
    *,
    x: str = "step",
    xlabel: str = "training step",
    title: str = "",
    hlines: Mapping[str, float] | None = None,
    xticks: Sequence[float] | None = None,
) -> str:
    """One panel per entry: each arm's mean curve with its 95% band, log-log where positive.

    Args:
      panels: panel title -> (curves, metric), curves: arm -> {x: [...] or {"mean": [...]},
        metric: {"mean", "ci_low", "ci_high"}}.
      hlines: panel title -> a horizontal reference line (e.g. the threshold).
    """
    plt = _pyplot()
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    for ax, (panel, (curves, m)) in zip(axes[0], panels.items(), strict=True):
        ys = []
        for i, (arm, c) in enumerate(curves.items()):
            xs = np.asarray(c[x]["mean"] if isinstance(c[x], Mapping) else c[x], float)
            y = np.asarray(c[m]["mean"], float)
            ax.plot(xs, y, "-o", ms=3, color=f"C{i % 10}", label=arm)
            lo, hi = np.asarray(c[m]["ci_low"], float), np.asarray(c[m]["ci_high"], float)
            ax.fill_between(xs, lo, hi, color=f"C{i % 10}", alpha=0.15)
            ys.append(y)
        if hlines and panel in hlines:
            ax.axhline(hlines[panel], color="k", ls="--", lw=1, label="reference")
        ax.set_xscale("log")
        ys = np.concatenate(ys) if ys else np.zeros(0)
        if ys.size and np.all(ys[np.isfinite(ys)] > 0):
            ax.set_yscale("log")
        if xticks is not None:
            ax.set_xticks(list(xticks), [f"{v:g}" for v in xticks])
            ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel(m)
        ax.set_title(panel, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(plt, fig, filename, title)


def _image_grid(x) -> np.ndarray:
    imgs = np.clip((np.asarray(x)[:64] + 1) / 2, 0, 1)
    cols = int(math.ceil(math.sqrt(len(imgs))))
    h, w, c = imgs.shape[1:]
    canvas = np.ones((cols * (h + 1), cols * (w + 1), c))
    for i, img in enumerate(imgs):
        r, q = divmod(i, cols)
        canvas[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = img
    return canvas[..., 0] if c == 1 else canvas


def plot_samples(
    filename: str,
    panels: Mapping[str, np.ndarray],
    *,
    reference: np.ndarray | None = None,
    title: str = "",
    lim: float = 5.0,
    boxes: Mapping[str, Sequence[float]] | None = None,
) -> str:
    """One panel per entry: a scatter of 2D points over the reference, or an image grid."""
    plt = _pyplot()
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    for ax, (name, x) in zip(axes[0], panels.items(), strict=True):
        x = np.asarray(x)
        if x.ndim == 2:
            x = x[np.all(np.isfinite(x), axis=1)]
            if reference is not None:
                ax.scatter(reference[:, 0], reference[:, 1], s=0.5, c="0.8")
            ax.scatter(x[:2000, 0], x[:2000, 1], s=0.5, alpha=0.5, c="C0")
            if boxes and name in boxes:
                lx, ly, hx, hy = boxes[name]
                ax.add_patch(plt.Rectangle((lx, ly), hx - lx, hy - ly, fill=False, ec="r", lw=1))
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
        else:
            img = _image_grid(x)
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
            ax.axis("off")
        ax.set_title(name, fontsize=8)
    return _save(plt, fig, filename, title)
