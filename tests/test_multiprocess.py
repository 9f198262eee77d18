"""Two JAX processes on 127.0.0.1 (jax.distributed, gloo collectives) train exactly as one.

Each process reads its half of every global batch (`fj.data.make_iterator` with its
process index); the gradients are all-reduced across processes by the jitted step. The
final parameters, EMA and optimizer state must match a single process that sees the whole
batch, up to float summation order. The run also exercises multi-process checkpointing
(orbax, the gathered data-iterator states), restore and evaluation.
"""

import json

import numpy as np
import pytest
from _scripts import launch

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

STEPS = 20


def test_two_processes_train_like_one(tmp_path):
    port = launch.free_port()
    common = ["--steps", str(STEPS), "--eval", "--async_checkpoint"]
    multi = [
        launch.start(
            "train_worker.py",
            "--workdir",
            str(tmp_path / "multi"),
            "--out",
            str(tmp_path / "multi.npz"),
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num_processes",
            "2",
            "--process_id",
            str(i),
            *common,
        )
        for i in range(2)
    ]
    single = launch.start(
        "train_worker.py",
        "--workdir",
        str(tmp_path / "single"),
        "--out",
        str(tmp_path / "single.npz"),
        *common,
    )
    results = [launch.finish(p) for p in (*multi, single)]
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    summaries = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results]
    assert [s["num_processes"] for s in summaries] == [2, 2, 1]
    assert all(s["step"] == STEPS and s["latest_checkpoint"] == STEPS for s in summaries)

    a, b = np.load(tmp_path / "multi.npz"), np.load(tmp_path / "single.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        scale = max(float(np.max(np.abs(b[k]))), 1e-12)
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=2e-6 * scale, err_msg=k)
    # Training happened: the parameters moved from their (identical) initialisation.
    assert int(b["['step']"]) == STEPS
    # Both processes evaluated the same replicated samples.
    e0, e1 = (s["eval"]["eval/energy"] for s in summaries[:2])
    assert e0 == e1
    np.testing.assert_allclose(e0, summaries[2]["eval"]["eval/energy"], rtol=1e-3)
