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

    Args:
      workdir: where metrics.jsonl and tensorboard/ go.
      enabled: False on the processes that do not write.
      tensorboard: also write TensorBoard events.
      resume_step: the step a run resumes from (0: from scratch). The records of later steps,
        logged by a run stopped after its last checkpoint, are dropped from metrics.jsonl,
        and if any were, the TensorBoard events are written anew from the records kept, so
        every step appears once in both.
    """

    def __init__(
        self,
        workdir: str,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        resume_step: int | None = None,
    ):
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, "metrics.jsonl")
        kept, changed = None, False
        if resume_step is not None:
            kept, changed = self._truncate(resume_step)
        self._file = open(self.path, "a")
        if tensorboard:
            tb_dir = os.path.join(workdir, "tensorboard")
            if changed and os.path.isdir(tb_dir):
                for name in os.listdir(tb_dir):
                    if name.startswith("events.out.tfevents."):
                        os.remove(os.path.join(tb_dir, name))
            self._tb = _summary_writer_class()(tb_dir)
            if changed:
                for record in kept:
                    self._add_scalars(record)
                self._tb.flush()

    def _truncate(self, step: int) -> tuple[list[dict], bool]:
        # A resumed run logs every step after `step` again; a run from scratch logs them all.
        records, changed = _read(self.path)
        kept = [r for r in records if 0 < step and r["step"] <= step]
        changed = changed or len(kept) != len(records)
        if changed:
            with open(self.path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
        return kept, changed

    def _add_scalars(self, record: dict) -> None:
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)):
                self._tb.add_scalar(k, v, int(record["step"]))

    def write(self, step: int, scalars: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in scalars.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            self._add_scalars(record)
            self._tb.flush()

    def update(self, step: int, scalars: dict[str, Any]) -> None:
        """Merges `scalars` into the record of `step` (metrics.jsonl only; appended if none)."""
        if not self.enabled:
            return
        self._file.close()
        records, _ = _read(self.path)
        new = {k: _plain(v) for k, v in scalars.items()}
        for r in records:
            if r["step"] == step:
                r.update(new)
                break
        else:
            records.append({"step": int(step), **new})
        with open(self.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        self._file = open(self.path, "a")

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _read(path: str) -> tuple[list[dict], bool]:
    """(records, whether a line was torn): a run killed while writing leaves a partial line."""
    if not os.path.exists(path):
        return [], False
    with open(path) as f:
        text = f.read()
    records, torn = [], bool(text) and not text.endswith("\n")
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            torn = torn or bool(line.strip())
    return records, torn


def read_metrics(workdir: str) -> list[dict]:
    """All records of `workdir/metrics.jsonl`, in order (a torn last line is left out)."""
    return _read(os.path.join(workdir, "metrics.jsonl"))[0]
