"""Measuring: timings, compile counts, memory, XLA cost analysis, matmul peak, environment.

Every figure of the benchmarks goes through `measure`: the first call (trace + compile + run)
is timed on its own, then warm-up calls (`warmup` calls in all and at least `warmup_s`
seconds), then `repeats` timed blocks of `number`
calls each, synchronised at the end of each block (`jax.block_until_ready`); the reported
time is the median block time divided by the work units per block. Compiles are counted
through `jax.monitoring` events, so a recompilation after warm-up is seen wherever it happens
(inside `eqx.filter_jit`, diffrax, eager ops), not only in the function under test.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import monitoring

__all__ = [
    "AgreementError",
    "CompileWatch",
    "HostMemory",
    "agreement",
    "cost_flops",
    "environment",
    "loadavg",
    "matmul_peak",
    "measure",
    "memory_analysis",
    "speedup",
]

# Event names recorded by jax._src.dispatch for every trace / lowering / backend compile.
_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
_LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileWatch:
    """Counts jaxpr traces and XLA compiles (and their seconds) while the context is open."""

    def __init__(self):
        self.traces = 0
        self.compiles = 0
        self.seconds = 0.0

    def _listener(self, event: str, duration: float, **kwargs) -> None:
        del kwargs
        if event == _TRACE_EVENT:
            self.traces += 1
        elif event == _COMPILE_EVENT:
            self.compiles += 1
        else:
            if event != _LOWER_EVENT:
                return
        self.seconds += float(duration)

    def __enter__(self) -> CompileWatch:
        monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc) -> None:
        monitoring.unregister_event_duration_listener(self._listener)


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class HostMemory:
    """Peak resident set size over a region, relative to the RSS when it was entered.

    Linux only: the high-water mark VmHWM is reset on entry by writing "5" to
    /proc/self/clear_refs (see proc(5)) and read on exit. `delta_bytes` is None where that
    is not available.
    """

    def __init__(self):
        self.start_bytes: int | None = None
        self.peak_bytes: int | None = None

    def __enter__(self) -> HostMemory:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            rss = _proc_status_kib("VmRSS")
        except OSError:
            rss = None
        self.start_bytes = None if rss is None else rss * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.start_bytes is not None:
            hwm = _proc_status_kib("VmHWM")
            self.peak_bytes = None if hwm is None else hwm * 1024

    @property
    def delta_bytes(self) -> int | None:
        if self.start_bytes is None or self.peak_bytes is None:
            return None
        return max(self.peak_bytes - self.start_bytes, 0)


def _device_memory() -> dict | None:
    stats = jax.local_devices()[0].memory_stats()
    if not stats:
        return None
    keys = ("bytes_in_use", "peak_bytes_in_use", "bytes_limit")
    return {k: int(stats[k]) for k in keys if k in stats}


def _sync_jax(out: Any) -> None:
    jax.block_until_ready(out)


def measure(
    call: Callable[[], Any],
    *,
    units_per_call: float = 1.0,
    warmup: int = 2,
    warmup_s: float = 0.5,
    repeats: int = 5,
    min_repeat_s: float = 0.2,
    max_number: int = 1000,
    sync: Callable[[Any], None] = _sync_jax,
) -> dict:
    """Times `call()` (see the module docstring).

    Args:
      call: runs one call and returns its outputs (for `sync`); it may carry state across
        calls in a closure (e.g. a donated train state).
      units_per_call: work units per call (e.g. K optimizer steps per dispatch); times are
        reported per unit.
      warmup: calls before timing, the first included (>= 1; at least 2 are made, so that
        the block length is chosen from a call without compilation).
      warmup_s: after the first call, warm-up calls go on while one more fits in this many
        seconds (thread pools, allocators and caches settle over many calls, not one).
      repeats: timed blocks; their median is reported.
      min_repeat_s: a block runs enough calls to last at least this long.
      max_number: cap on calls per block.
      sync: waits for the outputs of a call (block_until_ready for JAX).

    Returns:
      dict with median_s (per unit), per-block times_s (per unit), number (calls per block),
      first_call_s, compile_s (trace + lowering + XLA compile seconds in the first call),
      traces/compiles in the first call, `retraces` / `recompiles` (every trace / compile
      after the first call, warm-up calls included: same shapes must not recompile), and
      memory: `host_rss_delta_bytes`, the peak resident set over all calls above the RSS
      before the first call (for JAX this includes the compiler's memory), and the device
      memory stats where the backend reports them.
    """
    if warmup < 1 or repeats < 1:
        raise ValueError(f"measure: warmup and repeats must be >= 1, got {warmup}, {repeats}")
    with HostMemory() as host:
        with CompileWatch() as first:
            t0 = time.perf_counter()
            sync(call())
            first_call_s = time.perf_counter() - t0
        with CompileWatch() as steady:
            last, calls, start = first_call_s, 1, time.perf_counter()
            # At least one call after the first (which may include compilation) times a
            # steady call; more only while one more fits in warmup_s.
            while calls < max(warmup, 2) or time.perf_counter() - start + last < warmup_s:
                t0 = time.perf_counter()
                sync(call())
                last = time.perf_counter() - t0
                calls += 1
            number = int(min(max_number, max(1, math.ceil(min_repeat_s / max(last, 1e-9)))))
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                out = None
                for _ in range(number):
                    out = call()
                sync(out)
                times.append((time.perf_counter() - t0) / (number * units_per_call))
    median = statistics.median(times)
    return {
        "median_s": median,
        "times_s": times,
        "number": number,
        "repeats": repeats,
        "warmup_calls": calls,
        "units_per_call": units_per_call,
        "first_call_s": first_call_s,
        "compile_s": first.seconds,
        "traces_first_call": first.traces,
        "compiles_first_call": first.compiles,
        "retraces": steady.traces,
        "recompiles": steady.compiles,
        "host_rss_delta_bytes": host.delta_bytes,
        "device_memory": _device_memory(),
    }


def _cost_dict(compiled) -> dict:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0] if cost else {}
    return dict(cost or {})


def cost_flops(jitted, *args, **kwargs) -> float | None:
    """FLOPs of one call from XLA's cost analysis of the compiled computation.

    XLA counts a while loop's body once, whatever its trip count: divide loops out yourself.
    """
    flops = _cost_dict(jitted.lower(*args, **kwargs).compile()).get("flops")
    return None if flops is None or flops < 0 else float(flops)


def memory_analysis(jitted, *args, **kwargs) -> dict | None:
    """XLA's static memory plan of the compiled computation (bytes), or None."""
    stats = jitted.lower(*args, **kwargs).compile().memory_analysis()
    if stats is None:
        return None
    fields = (
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "alias_size_in_bytes",
        "temp_size_in_bytes",
        "generated_code_size_in_bytes",
    )
    out = {f: int(getattr(stats, f)) for f in fields if hasattr(stats, f)}
    if {"argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes"} <= set(out):
        out["total_bytes"] = (
            out["argument_size_in_bytes"]
            + out["output_size_in_bytes"]
            + out["temp_size_in_bytes"]
            - out.get("alias_size_in_bytes", 0)
        )
    return out


def matmul_peak(dtype=jnp.float32, n: int | None = None, repeats: int = 5) -> dict:
    """FLOP/s of an (n, n) @ (n, n) matmul on the default device: the peak to compare with.

    n defaults to 2048 on CPU and 8192 on accelerators (large enough to be compute bound).
    """
    if n is None:
        n = 2048 if jax.default_backend() == "cpu" else 8192
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(key_b, (n, n), jnp.float32).astype(dtype)
    f = jax.jit(jnp.matmul)
    timing = measure(lambda: f(a, b), warmup=2, repeats=repeats, min_repeat_s=0.3)
    flops = 2.0 * n**3
    return {
        "dtype": jnp.dtype(dtype).name,
        "n": n,
        "flops": flops,
        "median_s": timing["median_s"],
        "flops_per_s": flops / timing["median_s"],
        "xla_flops": cost_flops(f, a, b),
    }


def loadavg() -> list[float] | None:
    try:
        with open("/proc/loadavg") as f:
            return [float(v) for v in f.read().split()[:3]]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Device, host and library versions, date and load: what a figure was measured on."""
    device = jax.local_devices()[0]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    dists = (
        "jax",
        "jaxlib",
        "flax",
        "optax",
        "diffrax",
        "equinox",
        "numpy",
        "torch",
        "torchcfm",
        "flow-matching",
        "torchdiffeq",
        "POT",
    )
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {d: _version(d) for d in dists},
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "loadavg_start": loadavg(),
    }


class AgreementError(AssertionError):
    """Two implementations disagree: their speeds must not be compared."""


def agreement(name: str, got, ref, *, atol: float, rtol: float = 0.0) -> dict:
    """max |got - ref| against atol + rtol |ref|, elementwise; `ok` says whether all pass."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return {
            "name": name,
            "ok": False,
            "max_abs_err": None,
            "atol": atol,
            "rtol": rtol,
            "detail": f"shapes differ: {got.shape} vs {ref.shape}",
        }
    err = np.abs(got - ref)
    finite = bool(np.all(np.isfinite(got)))
    ok = finite and bool(np.all(err <= atol + rtol * np.abs(ref)))
    return {
        "name": name,
        "ok": ok,
        "max_abs_err": float(np.max(err)) if finite else None,
        "atol": atol,
        "rtol": rtol,
    }


def speedup(flowjax_s: float, peer_s: float, checks: list[dict]) -> float:
    """peer time / flowjax time (> 1: flowjax faster), only when every check passed.

    Raises:
      AgreementError: a check failed; the speeds of different results are not compared.
    """
    failed = [c for c in checks if not c["ok"]]
    if failed:
        detail = "; ".join(
            f"{c['name']}: max |err| = {c['max_abs_err']} > atol {c['atol']} + rtol {c['rtol']}"
            + (f" ({c['detail']})" if "detail" in c else "")
            for c in failed
        )
        raise AgreementError(f"results disagree, no speed ratio reported: {detail}")
    if not checks:
        raise AgreementError("no agreement check was run, no speed ratio reported")
    return peer_s / flowjax_s


@dataclasses.dataclass
class Recorder:
    """Collects result rows and comparisons; `to_json` gives the output document."""

    env: dict
    settings: dict
    results: list = dataclasses.field(default_factory=list)
    comparisons: list = dataclasses.field(default_factory=list)
    peaks: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)

    def add(self, row: dict) -> dict:
        self.results.append(row)
        return row

    def to_json(self) -> dict:
        env = dict(self.env)
        env["loadavg_end"] = loadavg()
        return {
            "schema_version": 1,
            "env": env,
            "settings": self.settings,
            "matmul_peak": self.peaks,
            "results": self.results,
            "comparisons": self.comparisons,
            "notes": self.notes,
        }
