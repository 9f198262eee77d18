"""validate is pure, build is where names become objects, restore needs no teacher.

- A distilled flow-map student restores, samples and evaluates with its teacher's run folder
  deleted, through the Python API (`load_flow_map`, `fj.train.restore`, `fj.train.sample`,
  `fj.train.evaluate`) and the launcher (`python -m experiments.main --mode=sample|eval`).
- `import flowjax` and `fj.train.validate` work from a directory holding an unrelated
  `configs/` package, and validate opens no checkpoint (the teacher it names may not exist).
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from _scripts import launch

import flowjax as fj
from configs import flowmap_distill, toy2d
from flowjax.flowmaps.teacher import load_flow_map, load_teacher


def _student_config(teacher: str):
    config = flowmap_distill.get_config(f"lmd,smoke,teacher={teacher}")
    config.train.num_steps = 10
    config.train.checkpoint_every = 10
    config.eval.num_samples = 64
    config.eval.batch_size = 64
    config.eval.num_steps = 4
    return config


@pytest.fixture(scope="module")
def orphan(tmp_path_factory):
    """(student workdir, its config, a flow-map output before the teacher was deleted)."""
    root = tmp_path_factory.mktemp("orphan")
    teacher_dir, student_dir = str(root / "teacher"), str(root / "student")
    teacher = toy2d.get_config("fm,smoke")
    teacher.train.num_steps = 10
    teacher.train.checkpoint_every = 10
    teacher.eval.every = -1
    teacher.eval.at_start = False
    teacher.train.scan_unroll = 1  # one compiled step body (the unrolled CPU default: 5)
    fj.train.train_and_evaluate(teacher, teacher_dir)
    config = _student_config(teacher_dir)
    summary = fj.train.train_and_evaluate(config, student_dir)
    assert summary["step"] == 10
    x0 = jax.random.normal(jax.random.key(0), (16, 2))
    before = np.asarray(fj.flowmaps.sample(load_flow_map(student_dir), x0, num_steps=2))
    # The student really was trained from that teacher: it loads, on the student's path.
    assert load_teacher(teacher_dir).path == fj.paths.CondOT()
    shutil.rmtree(teacher_dir)
    return student_dir, config, x0, before


@pytest.mark.slow  # trains a teacher and a student (~30 s on a quiet 2-core machine)
def test_student_restores_samples_and_evaluates_without_its_teacher(orphan):
    student_dir, config, x0, before = orphan
    assert not os.path.exists(config.objective.kwargs.teacher)
    # The config still names the deleted teacher: validate and restore do not touch it.
    fj.train.validate(config, jax.device_count())
    exp, state = fj.train.restore(config, student_dir)
    assert exp.objective is None and exp.train_step is None and int(state.step) == 10
    X = load_flow_map(student_dir)  # config read back from the checkpoint
    after = np.asarray(fj.flowmaps.sample(X, x0, num_steps=2))
    np.testing.assert_array_equal(after, before)
    # The same parameters as the restored EMA: X(x, s, t) = x + (t - s) u(x, s, t).
    want = x0 + 0.5 * exp.apply_fn(state.ema[0], x0, 0.75, s=0.25)
    np.testing.assert_allclose(X(x0, 0.25, 0.75), want, rtol=1e-6, atol=1e-6)
    out = fj.train.sample(config, student_dir, num_samples=32)
    assert np.isfinite(np.load(out)["x"]).all()
    result = fj.train.evaluate(config, student_dir)
    assert result["step"] == 10 and np.isfinite(result["eval/energy"])
    # Building the objective (what training needs) does load the teacher, and says it is gone.
    with pytest.raises(ValueError, match="config.objective.kwargs.teacher: .*no such directory"):
        fj.train.build(config)


def _main(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.main", *args],
        env=launch.env(),
        cwd=launch.ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_launcher_samples_and_evaluates_a_student_without_its_teacher(orphan):
    student_dir, config, _, _ = orphan
    flags = [
        f"--config=configs/flowmap_distill.py:lmd,smoke,teacher={config.objective.kwargs.teacher}",
        f"--workdir={student_dir}",
        "--config.train.num_steps=10",
        "--config.eval.num_samples=64",
        "--config.eval.batch_size=64",
        "--config.eval.num_steps=4",
    ]
    proc = _main(*flags, "--mode=sample", "--num_samples=50")
    assert proc.returncode == 0, proc.stderr[-3000:]
    x = np.load(os.path.join(student_dir, "samples", "samples_0000010.npz"))["x"]
    assert x.shape == (50, 2) and np.isfinite(x).all()
    proc = _main(*flags, "--mode=eval")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(student_dir, "eval_summary.json")) as f:
        assert np.isfinite(json.load(f)["eval/energy"])


_PROBE = """
import json, os, sys
import flowjax as fj
import orbax.checkpoint as ocp
from flowjax.train import config as schema

opened = []
for cls in (ocp.CheckpointManager, ocp.Checkpointer):
    init = cls.__init__
    def spy(self, *a, _init=init, **k):
        opened.append(str(a[:1]))
        _init(self, *a, **k)
    cls.__init__ = spy
c = schema.default_config()
c.objective.name = "lmd"
c.model.overrides.two_times = True
c.objective.kwargs.teacher = os.path.abspath("no_such_teacher_run")
fj.train.validate(c, num_devices=1)
bad = None
try:
    c.objective.kwargs.directions = "sideways"
    fj.train.validate(c, num_devices=1)
except ValueError as e:
    bad = str(e)
app = [m for m in sys.modules if m.split(".")[0] in ("configs", "experiments")]
import importlib.util
user = importlib.util.find_spec("configs").origin  # what `import configs` would run here
print(json.dumps({"opened": opened, "bad": bad, "flowjax": fj.__file__, "app": app,
                  "user": user}))
"""


def test_validate_is_pure_and_ignores_an_unrelated_configs_package(tmp_path):
    """From a directory with its own `configs` package: flowjax imports and validates, reads
    no checkpoint (the teacher named does not exist), and never imports the app."""
    pkg = tmp_path / "configs"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('the user configs package')\n")
    (pkg / "default.py").write_text("raise RuntimeError('the user configs.default')\n")
    (tmp_path / "probe.py").write_text(textwrap.dedent(_PROBE))
    env = launch.env()
    env["PYTHONPATH"] = ""  # only the installed library; the repository root is not on the path
    proc = subprocess.run(
        [sys.executable, "probe.py"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["opened"] == []  # no checkpoint manager or checkpointer was created
    assert out["app"] == []  # nothing of configs/ or experiments/ was imported
    assert out["bad"].startswith("config.objective: lmd: directions must be one of")
    assert not out["flowjax"].startswith(str(tmp_path))
    # Control: `import configs` there is the user's package (which raises when imported), so
    # a library that imported configs would have failed above.
    assert out["user"] == str(pkg / "__init__.py")
