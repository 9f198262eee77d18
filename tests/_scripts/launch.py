"""Runs the helper scripts of this folder in fresh Python processes (JAX flags need that)."""

import json
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(ROOT, "tests", "_scripts")


def env(num_devices: int = 1, cache_dir: str | None = None) -> dict:
    """Environment of a CPU-only JAX child process with `num_devices` host devices."""
    out = dict(os.environ)
    out["PYTHONPATH"] = ROOT + os.pathsep + out.get("PYTHONPATH", "")
    out["JAX_PLATFORMS"] = "cpu"
    out["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    out.pop("JAX_ENABLE_X64", None)
    if cache_dir:  # the same programs compile once across the processes of a test
        out["JAX_COMPILATION_CACHE_DIR"] = cache_dir
        out["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return out


def start(script: str, *args: str, num_devices: int = 1, cache_dir: str | None = None):
    return subprocess.Popen(
        [sys.executable, os.path.join(SCRIPTS, script), *args],
        env=env(num_devices, cache_dir),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def run(script: str, *args: str, expect_rc: int = 0, **kwargs) -> dict | None:
    """Runs a script to completion; returns the JSON object on its last stdout line."""
    rc, out, err = finish(start(script, *args, **kwargs))
    assert rc == expect_rc, f"{script} {args}: exit {rc}, expected {expect_rc}\n{err[-3000:]}"
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
