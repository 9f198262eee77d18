"""Metric writers: `workdir/metrics.jsonl` (one JSON object per logged step) and TensorBoard."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

__all__ = ["MetricWriter", "read_metrics"]


def _plain(value: Any):
    value = float(value) if hasattr(value, "__float__") else value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them readable
    return value


def _summary_writer_class():
    # tensorboardX imports torch (seconds) only to recognise torch tensors; we log floats, so
    # unless torch is already loaded, make that optional import fail fast.
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class MetricWriter:
    """Appends `{"step": step, **scalars}` lines to metrics.jsonl and TensorBoard events.

    Only the writing process (process 0) writes; the others get a writer that does nothing.
    """

    def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._file = open(self.path, "a")
        if tensorboard:
            self._tb = _summary_writer_class()(os.path.join(workdir, "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drops the records of steps > `step` (logged by a run killed after its checkpoint)."""
        if not self.enabled:
            return
        self._file.close()
        with open(self.path) as f:
            lines = [line for line in f if line.strip()]
        kept = [line for line in lines if json.loads(line)["step"] <= step]
        if len(kept) != len(lines):
            with open(self.path, "w") as f:
                f.writelines(kept)
        self._file = open(self.path, "a")

    def write(self, step: int, scalars: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in scalars.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, int(step))
            self._tb.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    """All records of `workdir/metrics.jsonl`, in order."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
