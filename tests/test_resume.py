"""Resume is exact: an interrupted run continues bit for bit like an uninterrupted one.

Three subprocesses (CPU):
  A: 40 steps straight through (checkpoints every 10, 5 steps per dispatch).
  B: the same, killed with SIGKILL at step 25 (after the step-20 checkpoint, with batches
     prefetched beyond it), then rerun in the same workdir: resumes from step 20.
  D: the same, sent SIGTERM at step 10: saves at the next dispatch boundary (step 15) and
     exits cleanly; then resumed in the same process.
The final parameters, EMA and optimizer state of B and D must equal A's bit for bit.
"""

import json
import os

import numpy as np
import pytest
from _scripts import launch

from flowjax.train import Checkpointer

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


@pytest.mark.slow
def test_resume_after_sigkill_and_sigterm_is_bit_identical(tmp_path):
    cache = tmp_path / "jax_cache"  # A, B and D compile the same programs once
    full = _worker(tmp_path, "full", cache=cache)
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
    s_full, s_resumed, s_term = (_summary(launch.finish(p)) for p in (full, resumed, terminated))

    assert s_full["step"] == s_resumed["step"] == s_term["step"] == STEPS
    assert s_resumed["resumed_from"] == 20
    assert s_term["first"] == {"step": 15, "preempted": True, "latest_checkpoint": 15}
    assert s_term["resumed_from"] == 15
    _assert_identical(tmp_path / "full.npz", tmp_path / "killed.npz")
    _assert_identical(tmp_path / "full.npz", tmp_path / "terminated.npz")
    # metrics.jsonl: one record per logged step, the killed run's step-25 record replaced.
    logged = [json.loads(line)["step"] for line in open(tmp_path / "killed" / "metrics.jsonl")]
    assert logged == list(range(5, STEPS + 1, 5))
    full_log = [json.loads(line) for line in open(tmp_path / "full" / "metrics.jsonl")]
    resumed_log = [json.loads(line) for line in open(tmp_path / "killed" / "metrics.jsonl")]
    for a, b in zip(full_log, resumed_log, strict=True):
        assert a["train/loss"] == b["train/loss"], (a["step"], a, b)


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
