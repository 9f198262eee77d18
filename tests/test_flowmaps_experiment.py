"""The flow-map study, teacher loading and flow-map training through the trainer.

- a tiny study run writes results.json / report.md / plots with the documented keys, is
  reproducible from its seed (identical numbers twice), and every ratio figure in the report
  is recomputed here from the recorded numbers;
- a teacher restored from a checkpoint written by the real trainer is exactly the trainer's
  EMA model as a velocity field (and a diffusion model's prediction is converted exactly);
- a flow-map student trains through `fj.train.train_and_evaluate` (the sharded train step and
  checkpoints) from a loaded teacher, and restores as a flow map.
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import flowjax as fj
from configs import flowmap_distill, flowmaps_default, toy2d
from flowjax import studies
from flowjax.flowmaps.teacher import (
    MixtureTeacher,
    VelocityTeacher,
    bind_teacher,
    load_flow_map,
    load_teacher,
)
from flowjax.studies import flowmaps as experiment

PATH = fj.paths.CondOT()


def _quiet(*args):
    del args


# ----------------------------------------------------------------------------- harness


def _tiny_config():
    c = flowmaps_default.get_config("smoke")
    c.datasets = "gmm"
    c.methods = "lmd,consistency_training"  # a distillation and a consistency-sampled method
    c.num_seeds = 2
    c.train.num_steps = 20
    c.train.steps_per_dispatch = 10
    c.train.batch_size = 32
    c.eval.nfe = (1, 2)
    c.eval.w2_samples = 100
    c.eval.energy_samples = 100
    c.eval.batch_size = 200
    c.suites.gmm.eval_samples = 200
    c.guidance.nfe = 2
    c.guidance.scales = (1.0,)
    c.guidance.temperatures = (1.0,)
    c.guidance.num_samples = 64
    c.guidance.repeats = 1
    return c


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    config = _tiny_config()
    dirs = [tmp_path_factory.mktemp(f"fmx{i}") for i in range(2)]
    results = [experiment.run(config, str(d), log=_quiet) for d in dirs]
    return config, dirs, results


_VOLATILE = ("timing", "machine", "wall_seconds", "cpu_seconds")


def _strip_volatile(obj):
    """results without wall-clock timings and machine state (everything else must repeat)."""
    if isinstance(obj, dict):
        return {k: _strip_volatile(v) for k, v in obj.items() if k not in _VOLATILE}
    return obj


@pytest.mark.slow
def test_harness_writes_results_report_and_plots(tiny_runs):
    config, dirs, _ = tiny_runs
    workdir = dirs[0]
    with open(workdir / "results.json") as f:
        results = json.load(f)
    report = (workdir / "report.md").read_text()
    for key in ("study", "config", "seeds", "methods", "machine", "datasets", "wall_seconds"):
        assert key in results, key
    assert results["study"] == "flowmaps" and results["seeds"] == [0, 1]
    ds = results["datasets"]["gmm"]
    assert results["wall_seconds"] > 0 and ds["timing"]["total_s"] > 0
    assert ds["num_seeds"] == 2 and ds["verdicts"]
    assert ds["primary_metric"] == "map_mse" and ds["metrics"] == ["map_mse", "w2", "energy"]
    # The perfect teacher: dopri5 on the exact mixture velocity reproduces the exact flow map;
    # the reference solve (Heun, 8 steps in the smoke config) costs 2 NFE per step.
    dopri5, heun = ds["teacher"]["solves"]["dopri5"], ds["teacher"]["solves"]["heun"]
    assert dopri5["nfe"] > 10 and dopri5["metrics"]["map_mse"] < 1e-6
    assert ds["teacher"]["reference"] == "heun" and heun["nfe"] == 16 == ds["teacher"]["nfe"]
    assert ds["teacher"]["metrics"] == heun["metrics"] and heun["metrics"]["map_mse"] < 1e-2
    assert ds["floors"]["map_mse"] == 0.0
    assert set(ds["teacher_euler"]) == {"1", "2"}
    for name in ("lmd", "consistency_training"):
        m = ds["methods"][name]
        assert set(m["nfe"]) == {"1", "2"}
        for metric in ("map_mse", "w2", "energy"):
            cell = m["nfe"]["1"][metric]
            assert len(cell["values"]) == 2 and cell["n"] == 2
            assert cell["mean"] == pytest.approx(np.mean(cell["values"]), rel=1e-12)
            assert cell["ci_low"] <= cell["mean"] <= cell["ci_high"]
    assert ds["methods"]["consistency_training"]["sampler"] == "consistency"
    g = ds["guidance"]
    assert g["method"] == "lmd"  # the only jump-sampled method
    assert set(g["approaches"]) == {
        "unguided_1",
        "unguided_2",
        "grad_flowmap@1",
        "grad_denoiser@1",
        "best_of_2",
        "smc@1",
    }
    for a in g["approaches"].values():
        assert a["nfe"] in (1, 2) and 0.0 <= a["hit"]["mean"] <= 1.0
    for plot in results["plots"]["gmm"]:
        assert (workdir / plot).stat().st_size > 1000
        assert f"]({plot})" in report
    assert ds["findings"] and ds["findings"][0] in report
    for v in ds["verdicts"]:
        assert v["claim"] in report and v["verdict"] in studies.VERDICTS


@pytest.mark.slow
def test_tiny_run_writes_the_shared_schema(tiny_runs):
    from test_studies_core import check_study_schema

    _, dirs, _ = tiny_runs
    r = check_study_schema(dirs[0], "flowmaps")
    ds = r["datasets"]["gmm"]
    v, e = ds["verdicts"][0], ds["ratios"]["best_one_step"]
    assert (v["ratio"], v["ci_low"], v["ci_high"]) == (
        e["ratio"],
        e["ratio_ci_low"],
        e["ratio_ci_high"],
    )


@pytest.mark.slow
def test_harness_is_reproducible_from_its_seed(tiny_runs):
    _, dirs, _ = tiny_runs
    runs = []
    for d in dirs:
        with open(d / "results.json") as f:
            runs.append(_strip_volatile(json.load(f)))
    # NaN-free here, so plain equality is exact equality of every recorded number.
    assert runs[0] == runs[1]
    values = runs[0]["datasets"]["gmm"]["methods"]["lmd"]["nfe"]["1"]["map_mse"]["values"]
    assert values[0] != values[1]  # the two seeds are different runs


@pytest.mark.slow
def test_report_ratios_recomputed_from_recorded_numbers(tiny_runs):
    config, dirs, _ = tiny_runs
    with open(dirs[0] / "results.json") as f:
        results = json.load(f)
    report = (dirs[0] / "report.md").read_text()
    ds = results["datasets"]["gmm"]
    metric = ds["ratio_metric"]
    teacher = ds["teacher"]["metrics"][metric]
    # Recompute from the per-seed values alone (not from the recorded means).
    means = {
        m: {k: float(np.mean(r["nfe"][k][metric]["values"])) for k in ("1", "2")}
        for m, r in ds["methods"].items()
    }
    best = min(means, key=lambda m: means[m]["1"])
    one, two = means[best]["1"] / teacher, means[best]["2"] / teacher
    recorded = ds["ratios"]
    assert recorded["best_one_step"]["method"] == best
    assert recorded["best_one_step"]["ratio"] == pytest.approx(one, rel=1e-12)
    assert recorded["two_step_of_best"]["ratio"] == pytest.approx(two, rel=1e-12)
    assert recorded["best_one_step"]["met"] == (one <= config.targets.one_step)
    assert recorded["two_step_of_best"]["met"] == (two <= config.targets.two_step)
    # The verdicts are the same ratios with their intervals against the targets.
    v1 = ds["verdicts"][0]
    assert v1["ratio"] == pytest.approx(one, rel=1e-12) and v1["metric"] == metric
    assert v1["verdict"] == (
        "supported"
        if v1["ci_high"] <= config.targets.one_step
        else "not supported"
        if v1["ci_low"] > config.targets.one_step
        else "not significant"
    )
    for ratio in (one, two):
        assert experiment.format_ratio(ratio) in report
    for m, r in means.items():
        assert f"{m} {experiment.format_ratio(r['1'] / teacher)} / " in report
    # The same function recomputes them from the results file.
    again = experiment.teacher_ratios(ds, {"one_step": 1.15, "two_step": 1.05})
    assert again["best_one_step"]["ratio"] == recorded["best_one_step"]["ratio"]


def test_teacher_ratios_closed_form():
    def cell(values):
        return studies.mean_ci(values)

    ds = {
        "ratio_metric": "kl",
        "teacher": {"metrics": {"kl": 0.05}, "nfe": 120},
        "methods": {
            "a": {"nfe": {"1": {"kl": cell([0.06, 0.05])}, "2": {"kl": cell([0.052, 0.052])}}},
            "b": {"nfe": {"1": {"kl": cell([0.1, 0.1])}, "2": {"kl": cell([0.05, 0.05])}}},
        },
    }
    r = experiment.teacher_ratios(ds, {"one_step": 1.15, "two_step": 1.05})
    assert r["best_one_step"]["method"] == "a"
    assert r["best_one_step"]["ratio"] == pytest.approx(1.1)
    assert r["best_one_step"]["met"]
    assert r["two_step_of_best"]["ratio"] == pytest.approx(1.04) and r["two_step_of_best"]["met"]
    assert r["best_two_step"]["method"] == "b" and r["best_two_step"]["ratio"] == pytest.approx(1.0)
    # Student-t interval of [0.06, 0.05]: mean 0.055, half-width t_{0.975,1} * 0.005 / 1.
    assert r["best_one_step"]["ratio_ci_high"] == pytest.approx(
        (0.055 + 12.7062 * 0.005) / 0.05, rel=1e-4
    )
    ds["methods"]["a"]["nfe"]["1"]["kl"] = cell([0.2, 0.2])
    r = experiment.teacher_ratios(ds, {"one_step": 1.15, "two_step": 1.05})
    assert r["best_one_step"]["method"] == "b" and not r["best_one_step"]["met"]


def test_config_errors_name_the_field():
    c = _tiny_config()
    c.methods = "lmd,flow_matching"
    with pytest.raises(ValueError, match="config.methods: unknown name 'flow_matching'"):
        experiment.check_config(c)
    c = _tiny_config()
    c.datasets = "gmm,moons"
    with pytest.raises(ValueError, match="config.datasets: unknown name 'moons'"):
        experiment.check_config(c)
    c = _tiny_config()
    c.train.num_steps = 25
    with pytest.raises(ValueError, match="steps_per_dispatch"):
        experiment.check_config(c)
    c = _tiny_config()
    c.eval.nfe = (1, 4)
    with pytest.raises(ValueError, match="config.eval.nfe: must contain 1 and 2"):
        experiment.check_config(c)
    with pytest.raises(ValueError, match="unknown config variant.*valid: smoke, target"):
        flowmaps_default.get_config("smoke,fast")
    # The target variant is a valid experiment: LMD alone on the checkerboard, trained longer.
    c = flowmaps_default.get_config("target")
    experiment.check_config(c)
    assert (c.datasets, c.methods) == ("checkerboard", "lmd")
    assert (
        c.suites.checkerboard.num_steps
        > flowmaps_default.get_config().suites.checkerboard.num_steps
    )


def test_guidance_approaches_share_the_nfe_budget():
    apps = experiment.approaches(8, scales=(0.5, 2.0), temperatures=(1.0,))
    guided = [a for a in apps if a.family != "unguided"]
    assert {a.nfe for a in guided} == {8}
    grads = [a for a in apps if a.family.startswith("grad_")]
    assert {a.vjp for a in grads} == {4} and len(grads) == 4
    with pytest.raises(ValueError, match="even number"):
        experiment.approaches(3, scales=(1.0,), temperatures=())


def test_run_time_step_samplers_match_the_library():
    """The study samples through fj.flowmaps (no copy): the run-time k grid is the explicit
    uniform grid, and the consistency sampler is Song et al.'s Algorithm 1."""
    from flax import nnx

    mlp = fj.models.MLP(
        (2,), width=16, depth=2, freq_dim=8, two_times=True, time_scale=10.0, rngs=nnx.Rngs(0)
    )
    X = fj.flowmaps.as_callable(*fj.models.functional(mlp))
    x0 = jax.random.normal(jax.random.key(0), (32, 2))
    for k in (1, 3):
        np.testing.assert_allclose(
            fj.flowmaps.sample(X, x0, num_steps=k),
            fj.flowmaps.sample(X, x0, ts=jnp.linspace(0.0, 1.0, k + 1)),
            atol=1e-5,
        )
    key = jax.random.key(7)
    x1 = X(x0, 0.0, 1.0)
    one = fj.flowmaps.sample_stochastic(X, x0, path=PATH, key=key, num_steps=1)
    np.testing.assert_allclose(one, x1, atol=1e-6)
    eps = jax.random.normal(jax.random.fold_in(key, 1), x0.shape)
    want = X(PATH.alpha(0.5) * x1 + PATH.sigma(0.5) * eps, 0.5, 1.0)  # Song et al., Alg. 1
    two = fj.flowmaps.sample_stochastic(X, x0, path=PATH, key=key, num_steps=2)
    np.testing.assert_allclose(two, want, atol=1e-5)


def test_box_reward_is_a_soft_indicator():
    r = experiment.BoxReward(jnp.array([0.0, 0.0]), jnp.array([2.0, 2.0]), 0.1)
    x = jnp.array([[1.0, 1.0], [3.0, 1.0], [5.0, 1.0], [1.0, -2.0]])
    val = np.asarray(r(x))
    assert abs(val[0]) < 1e-3  # well inside: log of ~1
    # Far outside: about -distance / tau.
    np.testing.assert_allclose(val[1:], [-10.0, -30.0, -20.0], atol=1e-3)
    g = np.asarray(jax.grad(lambda z: jnp.sum(r(z)))(jnp.array([[2.0, 1.0]])))
    np.testing.assert_allclose(g, [[-5.0, 0.0]], atol=1e-4)  # at the edge: -1 / (2 tau)
    np.testing.assert_array_equal(np.asarray(r.hit(x)), [True, False, False, False])


# ----------------------------------------------------------------------------- teachers


def test_velocity_teacher_converts_predictions_exactly():
    """A network predicting eps on the VP path is the exact field once wrapped: take the
    mixture's exact eps = -sigma * score as the "network"."""
    gmm = fj.analytic.GaussianMixture(
        means=[[2.0, 0.0], [-1.0, 1.0]], stds=[0.5, 0.3], weights=[0.6, 0.4]
    )
    path = fj.paths.VP()

    def eps_net(params, x, t, *, s=None, y=None, key=None):
        sigma = path.sigma(jnp.asarray(t))
        return -params["c"] * fj._types.expand_time(sigma, x) * gmm.score(path, x, t)

    teacher = VelocityTeacher(eps_net, {"c": jnp.float32(1.0)}, "eps", path)
    x = jax.random.normal(jax.random.key(0), (16, 2))
    t = jnp.array([0.2, 0.6, 0.9])

    @jax.jit
    def both(teacher, exact, t):
        return teacher(x, t), exact(x, t), gmm.velocity(path, x, t)

    exact = MixtureTeacher(gmm, path)
    for tt in t:
        got, oracle, want = both(teacher, exact, tt)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
        np.testing.assert_array_equal(oracle, want)


def _train_teacher(workdir, method="fm"):
    config = toy2d.get_config(f"{method},smoke")
    config.eval.every = -1
    config.train.num_steps = 20
    config.train.checkpoint_every = 10
    fj.train.train_and_evaluate(config, str(workdir))
    return config


@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("toy2d_fm")
    return workdir, _train_teacher(workdir)


def test_load_teacher_equals_trainer_ema_velocity(trained_teacher):
    workdir, config = trained_teacher
    exp, state = fj.train.restore(config, str(workdir))
    x = jax.random.normal(jax.random.key(1), (32, 2))
    t = jax.random.uniform(jax.random.key(2), (32,))
    want = exp.apply_fn(state.ema[0], x, t)  # a velocity model: its output is the field
    raw = exp.apply_fn(state.params, x, t)
    assert not np.allclose(want, raw, atol=1e-4)  # 20 steps: the EMA is not the raw params
    v = load_teacher(str(workdir))  # config read back from the checkpoint
    assert v.kind == "velocity" and isinstance(v.path, fj.paths.CondOT)
    np.testing.assert_array_equal(np.asarray(v(x, t)), np.asarray(want))
    np.testing.assert_array_equal(
        np.asarray(load_teacher(str(workdir), ema_index=-1, config=config)(x, t)), np.asarray(raw)
    )
    # The earlier checkpoint by its folder, and the checkpoints/ folder itself.
    exp10, state10 = fj.train.restore(config, str(workdir), step=10)
    v10 = load_teacher(os.path.join(str(workdir), "checkpoints", "10"))
    np.testing.assert_array_equal(
        np.asarray(v10(x, t)), np.asarray(exp10.apply_fn(state10.ema[0], x, t))
    )
    np.testing.assert_array_equal(
        np.asarray(load_teacher(os.path.join(str(workdir), "checkpoints"))(x, t)), np.asarray(want)
    )
    # A pytree: jit takes it as an argument.
    np.testing.assert_allclose(jax.jit(lambda f, x: f(x, 0.3))(v, x), v(x, 0.3), atol=1e-6)


def test_load_teacher_errors(tmp_path, trained_teacher):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_teacher(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="neither a run directory"):
        load_teacher(str(tmp_path))
    workdir, _ = trained_teacher
    with pytest.raises(ValueError, match="ema_index"):
        load_teacher(str(workdir), ema_index=3)
    with pytest.raises(ValueError, match="config.objective.kwargs.teacher: empty"):
        bind_teacher({"teacher": "", "path": PATH})
    with pytest.raises(ValueError, match="config.objective.kwargs.teacher: .*no such directory"):
        bind_teacher({"teacher": str(tmp_path / "missing"), "path": PATH})
    with pytest.raises(ValueError, match="config.objective.path: the teacher"):
        bind_teacher({"teacher": str(workdir), "path": fj.paths.VP()})
    bound = bind_teacher({"teacher": str(workdir), "path": PATH, "directions": "forward"})
    assert isinstance(bound["teacher"], VelocityTeacher) and bound["directions"] == "forward"
    # No module-level cache of loaded teachers (issue 10): binding again loads an equal one.
    again = bind_teacher({"teacher": str(workdir), "path": PATH})["teacher"]
    assert again is not bound["teacher"]
    x = jax.random.normal(jax.random.key(4), (8, 2))
    np.testing.assert_array_equal(np.asarray(again(x, 0.3)), np.asarray(bound["teacher"](x, 0.3)))


def _distill_config(teacher, num_steps=10):
    config = flowmap_distill.get_config("lmd,smoke")
    config.train.num_steps = num_steps
    config.train.checkpoint_every = num_steps
    config.objective.kwargs = ml_collections.ConfigDict({"teacher": teacher})
    return config


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, trained_teacher):
    """An LMD student trained by fj.train from the loaded teacher object."""
    workdir, _ = trained_teacher
    config = _distill_config(load_teacher(str(workdir)))
    out = tmp_path_factory.mktemp("lmd")
    summary = fj.train.train_and_evaluate(config, str(out))
    return out, config, summary


def test_flow_map_distillation_through_the_trainer(distilled, trained_teacher):
    out, config, summary = distilled
    assert summary["step"] == 10 and summary["latest_checkpoint"] == 10
    assert math.isfinite(summary["train"]["train/loss"])
    X = load_flow_map(str(out), config=config)
    exp, state = fj.train.restore(config, str(out))
    x = jax.random.normal(jax.random.key(3), (16, 2))
    want = x + 0.5 * exp.apply_fn(state.ema[0], x, 0.75, s=0.25)
    np.testing.assert_allclose(X(x, 0.25, 0.75), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(X(x, 0.4, 0.4)), np.asarray(x))
    assert fj.flowmaps.sample(X, x, num_steps=2).shape == (16, 2)
    with pytest.raises(ValueError, match="two-time"):
        load_teacher(str(out), config=config)
    with pytest.raises(ValueError, match="one-time"):
        load_flow_map(str(trained_teacher[0]))


def test_teacher_named_by_its_workdir_in_the_config(tmp_path, trained_teacher, distilled):
    """The launch path of experiments/main.py: the config names the teacher by its workdir;
    the run equals the one given the loaded teacher object, parameter for parameter."""
    workdir, _ = trained_teacher
    config = flowmap_distill.get_config(f"lmd,smoke,teacher={workdir}")
    config.train.num_steps = 10
    config.train.checkpoint_every = 10
    fj.train.validate(config, jax.device_count())
    summary = fj.train.train_and_evaluate(config, str(tmp_path / "lmd"))
    assert summary["step"] == 10
    ref_dir, ref_config, _ = distilled
    _, a = fj.train.restore(ref_config, str(tmp_path / "lmd"))
    _, b = fj.train.restore(ref_config, str(ref_dir))
    for p, q in zip(jax.tree.leaves(a.ema), jax.tree.leaves(b.ema), strict=True):
        np.testing.assert_array_equal(np.asarray(p), np.asarray(q))
    config.objective.kwargs.teacher = ""
    with pytest.raises(ValueError, match="config.objective.kwargs.teacher: empty"):
        fj.train.validate(config, jax.device_count())
