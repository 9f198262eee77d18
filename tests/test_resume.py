"""Resume is exact: an interrupted run continues bit for bit like an uninterrupted one.

Subprocesses (CPU), all of the same 40-step run (checkpoints every 10, 5 steps per dispatch):
  A: straight through (the reference, shared by the tests of this module).
  B: killed with SIGKILL at step 25 (after the step-20 checkpoint, with batches prefetched
     beyond it), then rerun in the same workdir: resumes from step 20.
  D: sent SIGTERM at step 10: saves at the next dispatch boundary (step 15) and exits
     cleanly; then resumed in the same process.
  K: killed four times at places no cleanup reaches (before the first checkpoint, half-way
     through writing a record, right after a checkpoint, between checkpoints); then the
     files of its latest checkpoint (step 30) are overwritten in the middle, and the rerun
     names the damaged step in one line, resumes from step 20 and finishes.
The final parameters, EMA and optimizer state must equal A's bit for bit, and every logged
step must appear once in metrics.jsonl and in the TensorBoard events.
"""

import json
import os
import struct

import jax
import numpy as np
import pytest
from _scripts import launch

from flowjax.train import Checkpointer, CheckpointError, read_metrics
from flowjax.train.writers import MetricWriter

STEPS = 40


def _worker(tmp_path, name, *args, cache):
    return launch.start(
        "train_worker.py",
        "--workdir",
        str(tmp_path / name),
        "--steps",
        str(STEPS),
        "--out",
        str(tmp_path / f"{name}.npz"),
        *args,
        cache_dir=str(cache),
    )


def _summary(result):
    rc, out, err = result
    assert rc == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _assert_identical(a_path, b_path):
    a, b = np.load(a_path), np.load(b_path)
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _steps(workdir) -> list[int]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f]


def _tensorboard_points(workdir) -> list[tuple[str, int]]:
    """(tag, step) of every scalar in the TensorBoard event files of `workdir`, read from the
    TFRecord framing (length, crc, Event proto, crc) with tensorboardX's Event proto."""
    from tensorboardX.proto.event_pb2 import Event

    folder = os.path.join(workdir, "tensorboard")
    points = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            points += [(v.tag, event.step) for v in event.summary.value]
    return points


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Run A: (its folder, the jax cache that every run of this module shares)."""
    tmp = tmp_path_factory.mktemp("reference")
    cache = tmp / "jax_cache"  # all runs compile the same programs once
    _summary(launch.finish(_worker(tmp, "full", cache=cache)))
    return tmp, cache


@pytest.mark.slow
def test_resume_after_sigkill_and_sigterm_is_bit_identical(tmp_path, reference):
    ref, cache = reference
    killed = _worker(tmp_path, "killed", "--kill_at", "25", cache=cache)
    rc, _, err = launch.finish(killed)
    assert rc == -9, err[-3000:]  # SIGKILL: no cleanup of any kind ran
    ckpt_dir = tmp_path / "killed" / "checkpoints"
    assert sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) == [10, 20]
    logged = [json.loads(line)["step"] for line in open(tmp_path / "killed" / "metrics.jsonl")]
    assert logged == [5, 10, 15, 20, 25]
    # A save that crashed half-way: orbax's temporary directory must be ignored.
    partial = ckpt_dir / "30.orbax-checkpoint-tmp-1234567"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_text("not a checkpoint")

    resumed = _worker(tmp_path, "killed", cache=cache)
    terminated = _worker(tmp_path, "terminated", "--term_at", "10", "--resume_twice", cache=cache)
    s_resumed, s_term = (_summary(launch.finish(p)) for p in (resumed, terminated))

    assert s_resumed["step"] == s_term["step"] == STEPS
    assert s_resumed["resumed_from"] == 20
    assert s_term["first"] == {"step": 15, "preempted": True, "latest_checkpoint": 15}
    assert s_term["resumed_from"] == 15
    _assert_identical(ref / "full.npz", tmp_path / "killed.npz")
    _assert_identical(ref / "full.npz", tmp_path / "terminated.npz")
    # metrics.jsonl: one record per logged step, the killed run's step-25 record replaced.
    logged = [json.loads(line)["step"] for line in open(tmp_path / "killed" / "metrics.jsonl")]
    assert logged == list(range(5, STEPS + 1, 5))
    full_log = [json.loads(line) for line in open(ref / "full" / "metrics.jsonl")]
    resumed_log = [json.loads(line) for line in open(tmp_path / "killed" / "metrics.jsonl")]
    for a, b in zip(full_log, resumed_log, strict=True):
        assert a["train/loss"] == b["train/loss"], (a["step"], a, b)


def _overwrite_middles(folder, data=b"\xd1" * 16):
    for where, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(where, name), "r+b") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(size // 2)
                f.write(data[: max(size - size // 2, 1)])


@pytest.mark.slow
def test_sigkills_and_a_damaged_checkpoint_log_every_step_once_and_end_bit_identical(
    tmp_path, reference
):
    ref, cache = reference
    kills = [
        ("--kill_at", "5"),  # before the first checkpoint: starts again from scratch
        ("--kill_in_write", "15"),  # leaves a torn record behind
        ("--kill_after_save", "20"),  # checkpoint 20 written, nothing after it
        ("--kill_at", "35"),  # step 35 logged past checkpoint 30
    ]
    logged_before_kill = []
    for flag, at in kills:
        rc, _, err = launch.finish(
            _worker(tmp_path, "k", "--eval_at_start", flag, at, "--out", "", cache=cache)
        )
        assert rc == -9, err[-3000:]
        logged_before_kill.append(_steps(tmp_path / "k") if flag != "--kill_in_write" else None)
    # The kills happened where they were meant to (the negative control of the counts below:
    # kept as they were, steps 0, 5 and 25 to 35 would be logged twice).
    assert logged_before_kill[0] == [0, 5]
    assert logged_before_kill[2] == [0, 5, 10, 15, 20]
    assert logged_before_kill[3] == [0, 5, 10, 15, 20, 25, 30, 35]
    ckpt_dir = tmp_path / "k" / "checkpoints"
    assert sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) == [10, 20, 30]
    # Then the latest checkpoint is damaged: bytes in the middle of each of its files.
    _overwrite_middles(ckpt_dir / "30")

    rc, out, err = launch.finish(_worker(tmp_path, "k", "--eval_at_start", cache=cache))
    assert rc == 0, err[-3000:]
    lines = [line for line in (out + err).splitlines() if "cannot be read" in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"checkpoint: step 30 at {ckpt_dir / '30'} cannot be read (")
    assert lines[0].endswith("; falling back to step 20")
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["resumed_from"] == 20 and summary["step"] == STEPS
    assert (ckpt_dir / "30.damaged").is_dir()  # set aside, and step 30 written anew
    _assert_identical(ref / "full.npz", tmp_path / "k.npz")

    want = [0, *range(5, STEPS + 1, 5)]
    assert _steps(tmp_path / "k") == want
    points = _tensorboard_points(tmp_path / "k")
    assert len(points) == len(set(points))
    assert sorted(s for tag, s in points if tag == "train/loss") == want[1:]
    assert {s for tag, s in points if tag.startswith("eval/")} == {0}
    full_log = [json.loads(line) for line in open(ref / "full" / "metrics.jsonl")]
    k_log = [json.loads(line) for line in open(tmp_path / "k" / "metrics.jsonl")][1:]
    assert [r["train/loss"] for r in full_log] == [r["train/loss"] for r in k_log]


def test_metric_writer_drops_records_past_the_resume_step_and_torn_lines(tmp_path):
    w = MetricWriter(str(tmp_path))
    for step in (5, 10, 15):
        w.write(step, {"train/loss": float(step)})
    w.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 20, "train/lo')  # killed while writing
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [5, 10, 15]
    # Resuming from the last record's step: only the torn line goes.
    w = MetricWriter(str(tmp_path), resume_step=15)
    w.write(20, {"train/loss": 20.0})
    w.close()
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [5, 10, 15, 20]
    assert sorted(_tensorboard_points(tmp_path)) == [("train/loss", s) for s in (5, 10, 15, 20)]
    # Resuming from step 10: 15 and 20 go from both; the events are written anew.
    w = MetricWriter(str(tmp_path), resume_step=10)
    w.write(15, {"train/loss": -15.0})
    w.update(15, {"eval/energy": 1.5})  # an evaluation of that step joins its record
    w.close()
    records = read_metrics(str(tmp_path))
    assert [r["step"] for r in records] == [5, 10, 15]
    assert records[-1] == {"step": 15, "train/loss": -15.0, "eval/energy": 1.5}
    assert sorted(_tensorboard_points(tmp_path)) == [("train/loss", s) for s in (5, 10, 15)]
    # From scratch (no checkpoint): nothing logged before is kept.
    MetricWriter(str(tmp_path), resume_step=0).close()
    assert read_metrics(str(tmp_path)) == [] and _tensorboard_points(tmp_path) == []


def _small_state():
    return {
        "w": np.arange(600.0, dtype=np.float32).reshape(20, 30),
        "b": np.linspace(-1, 1, 7).astype(np.float32),
        "step": np.int32(5),
    }


def _abstract(state):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), state)


def test_overwritten_array_bytes_are_detected_and_skipped(tmp_path):
    """Array chunks carry no checksum: without the fingerprint this restore returns wrong
    values silently. Damage only the newest step's chunk data ("d/" files)."""
    state = _small_state()
    ckpt = Checkpointer(str(tmp_path), async_save=False)
    for step in (1, 2):
        ckpt.save(step, jax.tree.map(lambda x, s=step: x * s, state), {"step": step}, {})
    ckpt.close()
    chunks = [
        os.path.join(where, name)
        for where, _, names in os.walk(tmp_path / "2")
        for name in names
        if os.path.basename(where) == "d" and "ocdbt.process_" in where
    ]
    assert chunks
    for path in chunks:  # an in-place overwrite of values: the files still parse
        with open(path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(size // 2)
            f.write(b"\x3f" * 4)
    ckpt = Checkpointer(str(tmp_path), async_save=False)
    with pytest.raises(ValueError, match="state differs from the one saved"):
        ckpt.restore(2, _abstract(state))
    lines = []
    step, restored, data_state, _ = ckpt.restore_latest(_abstract(state), report=lines.append)
    assert step == 1 and data_state == {"step": 1} and len(lines) == 1
    assert lines[0].startswith(f"checkpoint: step 2 at {tmp_path / '2'} cannot be read (")
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert ckpt.all_steps() == [1] and (tmp_path / "2.damaged").is_dir()
    # Nothing intact: the same kind of line, raised.
    _overwrite_middles(tmp_path / "1")
    ckpt.close()
    ckpt = Checkpointer(str(tmp_path), async_save=False)
    with pytest.raises(CheckpointError, match=r"^checkpoint: step 1 at .* no intact checkpoint$"):
        ckpt.restore_latest(_abstract(state))
    assert ckpt.all_steps() == [1]  # left in place for the user to look at
    ckpt.close()


def test_checkpointer_ignores_partial_save(tmp_path):
    state = {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3), "step": np.int32(5)}
    ckpt = Checkpointer(str(tmp_path), async_save=False)
    ckpt.save(5, state, {"step": 5, "dataset": "x"}, {"lr": 0.1})
    ckpt.close()
    partial = tmp_path / "9.orbax-checkpoint-tmp-42"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "junk").write_bytes(b"\x00" * 10)
    ckpt = Checkpointer(str(tmp_path), async_save=False)
    assert ckpt.latest_step() == 5 and ckpt.all_steps() == [5]
    import jax

    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), state)
    restored, data_state, config = ckpt.restore(5, abstract)
    ckpt.close()
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert int(restored["step"]) == 5
    assert data_state == {"step": 5, "dataset": "x"} and config == {"lr": 0.1}
