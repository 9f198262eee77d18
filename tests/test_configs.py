"""Configs: every variant validates, every smoke variant trains, bad configs fail early.

Also the launcher (`python -m experiments.main`) in train, eval and sample modes.
"""

import importlib
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from _scripts import launch

import flowjax as fj
from configs import common, default
from flowjax.train import validate

CONFIGS = ("toy2d", "gmm", "digits", "mnist", "cifar10")
ARGS = ("fm", "ddpm", "fm,smoke", "ddpm,smoke")


def _config(name, arg=None):
    return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_variant_validates(name):
    for arg in ARGS:
        config = _config(name, arg)
        validate(config, num_devices=1, num_processes=1)
        validate(config, num_devices=8, num_processes=2)
        method = common.METHODS[arg.split(",")[0]]
        assert config.objective.name == method["name"]
        assert config.objective.path == method["path"]
        assert config.objective.target == method["target"]
        if "smoke" in arg:
            assert config.train.num_steps <= 20 and config.model.variant == "tiny"


def test_default_config_validates_and_has_every_section():
    config = default.get_config()
    validate(config, 1)
    assert set(config.keys()) == {
        "seed",
        "data",
        "model",
        "objective",
        "optim",
        "ema",
        "train",
        "mesh",
        "eval",
        "distributed",
        "source",
    }


def _set(path, value):
    def mutate(config):
        *parents, leaf = path.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value

    return mutate


def _delete(path):
    def mutate(config):
        *parents, leaf = path.split(".")
        node = config
        for p in parents:
            node = node[p]
        del node[leaf]

    return mutate


def _both(first, second):
    return lambda config: (first(config), second(config))


def _retype(section, field, value):
    """Replaces a value by one of another type (ConfigDict itself would refuse the cast)."""

    def mutate(config):
        config[section] = ml_collections.ConfigDict({**config[section].to_dict(), field: value})

    return mutate


def _registries():
    from flowjax import couplings, models, objectives, paths, sampling

    return {
        "data.name": fj.data.DATASETS,
        "model.name": models.REGISTRY,
        "objective.name": objectives.OBJECTIVES,
        "objective.path": paths.PATHS,
        "objective.coupling": couplings.COUPLINGS,
        "objective.time_dist": objectives.TIME_DISTS,
        "source.name": fj.sources.SOURCES,
        "eval.solver": sampling.SOLVERS,
        "optim.schedule": ("constant", "cosine"),
        "train.on_nonfinite": ("skip", "stop"),
    }


@pytest.mark.parametrize("field", sorted(_registries()))
def test_unknown_name_lists_the_registry(field):
    config = _config("toy2d", "fm")
    _set(field, "nonexistent")(config)
    with pytest.raises(ValueError) as err:
        validate(config, num_devices=1)
    valid = sorted(_registries()[field])
    assert str(err.value) == f"config.{field}: unknown name 'nonexistent'; valid choices: {valid}"


BAD = [
    (
        _set("model.variant", "huge"),
        "config.model.variant: unknown variant 'huge' of model 'mlp'; "
        "valid choices: ['tiny', 'base', 'residual']",
    ),
    (
        _set("objective.weighting", "snr"),
        "config.objective.weighting: objective 'flow_matching' takes no weighting",
    ),
    (_set("optim.lr", -1e-3), "config.optim.lr: must be > 0, got -0.001"),
    (_set("optim.weight_decay", -0.1), "config.optim.weight_decay: must be >= 0, got -0.1"),
    (_set("ema.decays", (0.999, 1.5)), "config.ema.decays: every decay must be in [0, 1), got 1.5"),
    (
        _set("data.batch_size", 100),
        "config.data.batch_size: 100 is not divisible by the number of devices (8)",
    ),
    (
        _set("mesh.data", 3),
        "config.mesh.data: data * fsdp = 3 * 1 must equal the number of devices (8)",
    ),
    (_set("mesh.fsdp", 3), "config.mesh.fsdp: 3 does not divide the number of devices (8)"),
    (
        _set("optim.accum_steps", 64),
        "config.optim.accum_steps: data.batch_size=256 must be divisible by "
        "accum_steps * devices = 64 * 8",
    ),
    (_retype("train", "num_steps", "1000"), "config.train.num_steps: must be an int, got '1000'"),
    (_retype("ema", "warmup", 1), "config.ema.warmup: must be a bool, got 1"),
    (_set("eval.ema_index", 1), "config.eval.ema_index: 1 but there are 1 EMA decay(s)"),
    (
        _both(_set("eval.solver", "euler"), _set("eval.num_steps", 0)),
        "config.eval.solver: 'euler' needs eval.num_steps > 0",
    ),
    (
        _set("objective.time_dist_kwargs", ml_collections.ConfigDict({"sd": 1.0})),
        "config.objective.time_dist_kwargs:",
    ),
    (_delete("optim.b2"), "config.optim.b2: missing field (default: 0.999)"),
    (
        _set("optim.learning_rate", 1e-3),
        "config.optim.learning_rate: unknown field; valid fields of optim: [",
    ),
]


@pytest.mark.parametrize("mutate, message", BAD)
def test_bad_config_is_a_one_line_value_error(mutate, message):
    config = _config("toy2d", "fm")
    with config.unlocked():
        mutate(config)
    with pytest.raises(ValueError) as err:
        validate(config, num_devices=8, num_processes=1)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(message), str(err.value)


def test_heun_adaptive_is_allowed_and_bad_variant_names_fail():
    config = _config("toy2d", "fm")
    config.eval.num_steps = 0  # heun has an embedded error estimate
    validate(config, 1)
    with pytest.raises(ValueError, match=r"unknown config variant\(s\) \['ddim'\]"):
        _config("toy2d", "ddim")
    with pytest.raises(ValueError, match="unknown config option 'dataset'"):
        _config("toy2d", "fm,dataset=moons")
    assert _config("toy2d", "fm,data=moons").data.name == "moons"


def _losses(workdir):
    return [r["train/loss"] for r in fj.train.read_metrics(workdir) if "train/loss" in r]


def _train_smoke(name, arg, workdir):
    config = _config(name, arg)
    spec = fj.data.spec(config.data.name)
    if spec.kind == "images" and name != "digits":  # TFDS: the real data_source path, mocked
        tfds = pytest.importorskip("tensorflow_datasets")
        with tfds.testing.mock_data(num_examples=64):
            summary = fj.train.train_and_evaluate(config, str(workdir))
    else:
        summary = fj.train.train_and_evaluate(config, str(workdir))
    assert summary["step"] == config.train.num_steps == 20
    assert summary["latest_checkpoint"] == 20
    records = fj.train.read_metrics(str(workdir))
    assert [r["step"] for r in records if "train/loss" in r] == [10, 20]
    assert all(np.isfinite(_losses(str(workdir))))
    assert os.path.exists(workdir / "samples" / "step_0000020.png")
    _, state = fj.train.restore(config, str(workdir))
    assert int(state.step) == 20
    return summary


@pytest.mark.parametrize("name, arg", [("toy2d", "fm,smoke"), ("gmm", "ddpm,smoke")])
def test_point_smoke_variants_train(name, arg, tmp_path):
    summary = _train_smoke(name, arg, tmp_path)
    assert summary["eval"]["eval/nfe"] == 8  # Heun, 4 steps
    assert np.isfinite(summary["eval"]["eval/energy"])


# One TFDS set through the mocked data_source path (cifar10); mnist's config is the same TFDS
# path at another shape (validated above). The in-memory image set (digits) trains, checkpoints,
# restores and draws its grid in tests/test_train.py::test_digits_learns.
@pytest.mark.slow
def test_image_smoke_variant_trains(tmp_path):
    _train_smoke("cifar10", "fm,smoke", tmp_path)


# ----------------------------------------------------------------------------- launcher


def _main(*args, expect=0):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.main", *args],
        env=launch.env(),
        cwd=launch.ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == expect, proc.stderr[-3000:]
    return proc


def test_launcher_reports_a_bad_override_in_one_line(tmp_path):
    proc = _main(
        "--config=configs/toy2d.py:fm,smoke",
        f"--workdir={tmp_path}",
        "--config.optim.lr=-1",
        expect=1,
    )
    assert proc.stderr.strip().splitlines()[-1] == "error: config.optim.lr: must be > 0, got -1.0"
    assert not os.path.exists(tmp_path / "checkpoints")


@pytest.mark.slow
def test_launcher_train_eval_sample(tmp_path):
    base = [
        "--config=configs/toy2d.py:fm,smoke",
        f"--workdir={tmp_path}",
        "--config.eval.at_start=False",
    ]
    _main(*base, "--config.train.num_steps=10", "--config.eval.every=-1")
    assert [r["step"] for r in fj.train.read_metrics(str(tmp_path))] == [10]
    # Resumes and continues to 20 with a command-line override.
    _main(*base, "--config.train.num_steps=20", "--config.eval.every=-1")
    assert [r["step"] for r in fj.train.read_metrics(str(tmp_path))] == [10, 20]
    _main(*base, "--mode=eval")
    with open(tmp_path / "eval_summary.json") as f:
        result = json.load(f)
    assert result["step"] == 20 and np.isfinite(result["eval/energy"])
    _main(*base, "--mode=sample", "--num_samples=100")
    samples = np.load(tmp_path / "samples" / "samples_0000020.npz")
    assert samples["x"].shape == (100, 2) and np.isfinite(samples["x"]).all()


# ----------------------------------------------------------------------------- build_objective


def test_config_source_and_components_reach_the_objective():
    """`config.source` and the objective's component names become the objective's fields;
    "" leaves the objective's own default. Names turn into objects in build_objective only."""
    from flowjax.train.experiment import build_objective

    config = _config("toy2d", "fm")
    spec = fj.data.spec(config.data.name)
    default_obj = build_objective(config, spec)
    assert isinstance(default_obj.source, fj.sources.StandardGaussian)
    config.objective.coupling = ""  # the objective's default coupling
    assert build_objective(config, spec).coupling == fj.couplings.Independent()
    config.source.name = "gaussian"
    config.source.kwargs = ml_collections.ConfigDict({"mean": [1.0, -2.0], "scale_diag": [0.5, 2]})
    config.objective.coupling = "minibatch_ot"
    config.objective.coupling_kwargs = ml_collections.ConfigDict({"epsilon": 0.2})
    validate(config, num_devices=1)
    obj = build_objective(config, spec)
    assert isinstance(obj.source, fj.sources.Gaussian)
    np.testing.assert_array_equal(obj.source.mean, [1.0, -2.0])
    assert obj.coupling == fj.couplings.MinibatchOT(epsilon=0.2)
    assert obj.source != default_obj.source  # negative control
    exp_source = fj.train.build(config, objective=False).source
    np.testing.assert_array_equal(exp_source.mean, [1.0, -2.0])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (_set("source.name", "laplace"), "config.source.name: unknown name 'laplace'"),
        (
            _set("source.kwargs", ml_collections.ConfigDict({"mu": 1.0})),
            "config.source: ",
        ),
        (
            _set("objective.kwargs", ml_collections.ConfigDict({"num_levels": 3})),
            "config.objective.kwargs.num_levels: objective 'flow_matching' has no such field",
        ),
        (
            _both(_set("objective.name", "lmd"), _set("objective.label_dropout", 0.1)),
            "config.objective.label_dropout: objective 'lmd' takes no label_dropout",
        ),
        (
            _set("objective.name", "lmd"),
            "config.objective.kwargs.teacher: objective 'lmd' needs it",
        ),
        (
            _both(
                _set("objective.name", "lmd"),
                _set("objective.kwargs", ml_collections.ConfigDict({"teacher": ""})),
            ),
            "config.objective.kwargs.teacher: empty; set it to the workdir",
        ),
        (
            _set("objective.target", "eps"),
            "config.objective.target: objective 'flow_matching' takes no target",
        ),
        (
            _set("objective.context_dropout", 1.0),
            "config.objective.context_dropout: must be < 1",
        ),
    ],
)
def test_bad_objective_config_is_one_line(mutate, message):
    config = _config("toy2d", "fm")
    config.model.overrides.two_times = True  # (harmless for flow matching here)
    with config.unlocked():
        mutate(config)
    with pytest.raises(ValueError) as err:
        validate(config, num_devices=1)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(message), str(err.value)
