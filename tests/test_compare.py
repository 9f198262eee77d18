"""The head-to-head harness: statistics, arm resolution (ablations), and a tiny full run."""

import json
import math
import re

import numpy as np
import pytest
import scipy.stats

from configs import compare_default
from flowjax import compare
from flowjax.compare import _report

# ------------------------------------------------------------------------------ statistics


def test_mean_ci_is_the_student_t_interval():
    st = compare.mean_ci([1.0, 2.0, 3.0])
    half = scipy.stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # sd = 1
    assert st["mean"] == 2.0 and st["n"] == 3
    assert st["ci_low"] == pytest.approx(2.0 - half, rel=1e-12)
    assert st["ci_high"] == pytest.approx(2.0 + half, rel=1e-12)
    assert half == pytest.approx(2.4841377, rel=1e-6)


def test_mean_ci_collapses_for_identical_values_and_is_undefined_for_one():
    st = compare.mean_ci([0.25, 0.25, 0.25])
    assert st["ci_low"] == st["ci_high"] == st["mean"] == 0.25
    one = compare.mean_ci([0.25, None, float("nan")])
    assert one["n"] == 1 and one["mean"] == 0.25
    assert math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])


def test_paired_log_ratio_is_a_t_interval_on_log_ratios():
    st = compare.paired_log_ratio([4.0, 8.0, None], [2.0, 2.0, 3.0])
    d = np.log([2.0, 4.0])
    half = scipy.stats.t.ppf(0.975, 1) * np.std(d, ddof=1) / math.sqrt(2)
    assert st["n"] == 2 and st["n_missing"] == 1
    assert st["ratio"] == pytest.approx(math.sqrt(8.0), rel=1e-12)  # geometric mean of 2 and 4
    assert st["ci_low"] == pytest.approx(math.exp(d.mean() - half), rel=1e-12)
    assert st["ci_high"] == pytest.approx(math.exp(d.mean() + half), rel=1e-12)
    same = compare.paired_log_ratio([3.0, 6.0], [1.0, 2.0])
    assert same["ratio"] == same["ci_low"] == same["ci_high"] == pytest.approx(3.0, rel=1e-12)


def test_steps_to_threshold():
    steps, values = [10, 100, 1000], [1.0, 0.0, 0.5]
    # Linear in log(step) between (10, 1) and (100, 0): value 0.5 at sqrt(10 * 100).
    assert compare.steps_to_threshold(steps, values, 0.5) == pytest.approx(math.sqrt(1000.0))
    assert compare.steps_to_threshold(steps, values, 0.5, interpolate=False) == 100
    assert compare.steps_to_threshold(steps, values, 2.0) == 10  # the first evaluation
    assert compare.steps_to_threshold(steps, values, -1.0) is None
    # The first crossing counts, even if the curve goes back up later.
    assert compare.steps_to_threshold([1, 2, 4], [3.0, 1.0, 5.0], 1.0) == 2
    assert compare.steps_to_threshold([1, 2], [float("nan"), 0.1], 0.5) == 2
    assert compare.value_at_step([0, 10, 20], [0.0, 1.0, 3.0], 15.0) == pytest.approx(2.0)


def test_eval_steps_are_log_spaced_multiples_of_the_dispatch():
    steps = compare.eval_steps(50, 2000, 7)
    assert steps[0] == 50 and steps[-1] == 2000
    assert all(s % 50 == 0 for s in steps) and steps == sorted(set(steps))
    ratios = np.diff(np.log(steps))
    assert ratios.max() < 2 * ratios.min() + 0.3  # roughly even in log(step)
    with pytest.raises(ValueError, match="multiple"):
        compare.eval_steps(30, 100, 3)


# ----------------------------------------------------------------------------- arms


def _objective(arm):
    return arm.config.objective.to_dict()


def test_ablation_changes_exactly_one_factor_per_arm():
    config = compare_default.get_config("ablation")
    arms = compare.resolve_arms(config, "checkerboard")
    base, rest = arms[0], arms[1:]
    assert base.name == "ddpm" and base.changed is None
    assert [a.changed for a in rest] == list(config.ablation.factors.keys())
    kwargs_of = {
        "path": "path_kwargs",
        "time_dist": "time_dist_kwargs",
        "weighting": "weighting_kwargs",
        "target": None,
    }
    b = _objective(base)
    for arm in rest:
        o = _objective(arm)
        differ = {k for k in b if b[k] != o[k]}
        assert arm.changed in differ
        assert differ <= {arm.changed, kwargs_of[arm.changed]}, (arm.name, differ)
        assert o[arm.changed] == config.ablation.factors[arm.changed]
        # Everything but the objective is the shared training config.
        a_cfg, b_cfg = arm.config.to_dict(), base.config.to_dict()
        a_cfg.pop("objective"), b_cfg.pop("objective")
        assert a_cfg == b_cfg
        assert arm.precond == base.precond


def test_ablation_from_flow_matching_uses_its_diffusion_form():
    config = compare_default.get_config("ablation")
    config.ablation.base = "fm"
    config.ablation.factors = type(config.ablation.factors)({"path": "vp"})
    base, arm = compare.resolve_arms(config, "gmm")
    assert _objective(base)["name"] == "diffusion"
    assert (_objective(base)["target"], _objective(base)["weighting"]) == ("velocity", "uniform")
    assert _objective(arm)["path"] == "vp" and _objective(arm)["target"] == "velocity"

    config.ablation.factors = type(config.ablation.factors)({"path": "condot"})
    with pytest.raises(ValueError, match="change nothing"):
        compare.resolve_arms(config, "gmm")
    config.ablation.factors = type(config.ablation.factors)({"coupling": "minibatch_ot"})
    with pytest.raises(ValueError, match="not an ablation factor"):
        compare.resolve_arms(config, "gmm")


def test_compare_arms_are_the_listed_variants_with_shared_training():
    config = compare_default.get_config()
    arms = compare.resolve_arms(config, "checkerboard")
    assert [a.name for a in arms] == config.arms.split(",")
    shared = [{k: v for k, v in a.config.to_dict().items() if k != "objective"} for a in arms]
    assert all(s == shared[0] for s in shared)
    edm = next(a for a in arms if a.name == "edm")
    # The checkerboard is uniform on [-4, 4] per coordinate: sigma_data = 8 / sqrt(12).
    assert edm.sigma_data == pytest.approx(8 / math.sqrt(12), rel=0.02)
    assert edm.config.objective.weighting_kwargs.sigma_data == edm.sigma_data
    assert edm.config.objective.time_dist_kwargs.p_mean == pytest.approx(
        -1.2 + math.log(edm.sigma_data / 0.5), abs=1e-4
    )
    config.arms = "fm,nope"
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        compare.resolve_arms(config, "checkerboard")


# ----------------------------------------------------------------- analysis of recorded runs


def _raw(curves: dict, seconds_per_step: float = 1e-3) -> dict:
    """Raw records of one dataset: arm -> per-seed curve of metric "m" at steps 10, 100, 1000."""
    steps = [10, 100, 1000]
    arms = {}
    for name, per_seed in curves.items():
        seeds = {}
        for s, values in enumerate(per_seed):
            seeds[str(s)] = {
                "curve": {
                    "step": steps,
                    "seconds": [x * seconds_per_step for x in steps],
                    "loss": [1.0] * 3,
                    "nfe": [10.0] * 3,
                    "m": values,
                },
                "final": {"m": values[-1]},
                "train_seconds": 1000 * seconds_per_step,
                "seconds_per_step": seconds_per_step,
            }
        arms[name] = {
            "label": name,
            "factors": {},
            "changed": None,
            "seeds": seeds,
            "sweep_raw": {},
        }
    return {
        "eval_steps": steps,
        "suite": {
            "primary": "m",
            "sweep_primary": "m",
            "metrics": ["m"],
            "sweep_metrics": ["m"],
            "descriptions": {},
            "info": {},
        },
        "arms": arms,
    }


def test_analysis_with_identical_seeds_collapses_every_interval():
    th = compare_default.get_config().threshold
    th.factor = 1.5
    same = [2.0, 1.0, 0.5]
    raw = _raw({"fast": [same, same], "base": [[2.0, 1.5, 0.5], [2.0, 1.5, 0.5]]})
    ds = compare.analyse_dataset(raw, th, "base")
    assert ds["threshold"]["value"] == pytest.approx(0.75)  # 1.5 x the best final mean 0.5
    for arm in ds["arms"].values():
        f = arm["final"]["m"]
        assert f["ci_low"] == f["ci_high"] == f["mean"] == 0.5
        st = arm["to_threshold"]["steps"]
        assert st["ci_low"] == st["ci_high"] == st["mean"]
    # fast: from (100, 1.0) to (1000, 0.5), 0.75 halfway in log -> sqrt(1e5); base: 1.5 -> 0.5.
    fast = ds["arms"]["fast"]["to_threshold"]["steps"]["mean"]
    base = ds["arms"]["base"]["to_threshold"]["steps"]["mean"]
    assert fast == pytest.approx(10**2.5)
    assert base == pytest.approx(10 ** (2 + 0.75))
    speed = ds["arms"]["fast"]["vs_baseline"]["steps_speedup"]
    assert speed["ratio"] == speed["ci_low"] == speed["ci_high"] == pytest.approx(base / fast)
    text = " ".join(_report.findings(ds))
    assert f"fast reached the threshold in {base / fast:.2f}× fewer steps than base" in text


def test_findings_report_when_the_baseline_wins():
    th = compare_default.get_config().threshold
    th.factor = 1.5
    raw = _raw(
        {
            "fm": [[2.0, 1.5, 0.5], [2.0, 1.4, 0.5], [2.0, 1.6, 0.5]],
            "ddpm": [[2.0, 1.0, 0.5], [2.0, 0.9, 0.5], [2.0, 1.1, 0.5]],
        }
    )
    ds = compare.analyse_dataset(raw, th, "ddpm")
    speed = ds["arms"]["fm"]["vs_baseline"]["steps_speedup"]
    assert speed["ci_high"] < 1  # ddpm is faster in every seed
    text = " ".join(_report.findings(ds))
    assert re.search(r"ddpm reached the threshold in [\d.]+× fewer steps than fm \(95% CI", text)


# ----------------------------------------------------------------------- a tiny full run


def _tiny_config():
    c = compare_default.get_config("smoke")
    c.arms = "fm,ddpm"
    c.num_seeds = 2
    c.base.train.num_steps = 30
    c.base.train.steps_per_dispatch = 10
    c.eval.num_evals = 3
    c.eval.num_samples = 400
    c.eval.batch_size = 400
    c.sweep.num_samples = 200
    c.sweep.euler_nfe = (1, 2)
    c.sweep.heun_nfe = (2,)
    c.sweep.dopri5_tol = ()  # same code path as Euler/Heun with num_steps=None; saves a compile
    c.sweep.sde_nfe = (4,)
    return c


_TIMING = {
    "seconds",
    "train_seconds",
    "seconds_per_step",
    "seconds_speedup",
    "seconds_per_step_ratio",
    "wall_seconds",
    "cpu_seconds",
    "compile_seconds",
}


def _strip_timing(x):
    """Everything but wall-clock measurements (and the findings that quote them)."""
    if isinstance(x, dict):
        return {k: _strip_timing(v) for k, v in x.items() if k not in _TIMING}
    if isinstance(x, list):
        timed = ("seconds", "wall-clock")
        return [
            _strip_timing(v) for v in x if not (isinstance(v, str) and any(w in v for w in timed))
        ]
    return x


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    dirs = [tmp_path_factory.mktemp(f"cmp{i}") for i in range(2)]
    for d in dirs:
        compare.run(_tiny_config(), str(d), log=lambda *_: None)
    return dirs


@pytest.mark.slow
def test_tiny_run_is_reproducible(tiny_runs):
    a, b = (json.loads((d / "results.json").read_text()) for d in tiny_runs)
    ds_a, ds_b = a["datasets"]["checkerboard"], b["datasets"]["checkerboard"]
    for name in ("fm", "ddpm"):
        for seed in ("0", "1"):
            ra, rb = ds_a["arms"][name]["seeds"][seed], ds_b["arms"][name]["seeds"][seed]
            assert ra["curve"]["hist_kl"] == rb["curve"]["hist_kl"]  # bit-identical
            assert ra["final"] == rb["final"]
            assert ds_a["arms"][name]["sweep_raw"][seed] == ds_b["arms"][name]["sweep_raw"][seed]
    assert _strip_timing(ds_a) == _strip_timing(ds_b)
    # Different seeds train differently.
    assert ds_a["arms"]["fm"]["seeds"]["0"]["final"] != ds_a["arms"]["fm"]["seeds"]["1"]["final"]


@pytest.mark.slow
def test_report_matches_the_recorded_curves(tiny_runs):
    results = json.loads((tiny_runs[0] / "results.json").read_text())
    report = (tiny_runs[0] / "report.md").read_text()
    ds = results["datasets"]["checkerboard"]
    th = ds["threshold"]
    best = min(ds["arms"], key=lambda n: ds["arms"][n]["final"][th["metric"]]["mean"])
    factor = results["config"]["threshold"]["factor"]
    assert th["value"] == pytest.approx(factor * ds["arms"][best]["final"][th["metric"]]["mean"])
    table = report.split("### Steps and seconds to the threshold")[1].split("###")[0]
    for name, arm in ds["arms"].items():
        curves = [rec["curve"] for rec in arm["seeds"].values()]
        value, metric = th["value"], th["metric"]
        steps = [compare.steps_to_threshold(c["step"], c[metric], value) for c in curves]
        assert steps == arm["to_threshold"]["steps"]["per_seed"]
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        st = compare.mean_ci(steps)
        assert _report._ci(st, 4) in row
        assert f"{sum(s is not None for s in steps)}/{len(steps)}" in row
        # Final metrics: one row per arm with the recorded means.
        final_row = next(
            line
            for line in report.split("### Final quality")[1].splitlines()
            if line.startswith(f"| {name} |")
        )
        assert _report._ci(arm["final"][th["metric"]]) in final_row
    for png in ("quality_vs_steps", "quality_vs_seconds", "quality_vs_nfe", "samples"):
        assert (tiny_runs[0] / f"checkerboard_{png}.png").stat().st_size > 1000
    # The sweep recorded the exact NFE of each fixed-step sampler.
    sweep = ds["arms"]["fm"]["sweep"]
    assert sweep["euler"]["nfe"] == [1, 2] and sweep["heun"]["nfe"] == [2]
    assert sweep["sde"]["nfe"] == [4] and "dopri5" not in sweep


# --------------------------------------------------------------- shared programs and configs


def test_switch_path_is_the_selected_path():
    import jax
    import jax.numpy as jnp

    from flowjax import paths
    from flowjax.compare._programs import SwitchPath

    members = (paths.CondOT(), paths.VP(), paths.Cosine(), paths.EDM())
    methods = ("alpha", "sigma", "d_alpha", "d_sigma", "log_snr", "t_from_log_snr")
    t = jnp.linspace(0.05, 0.95, 7)

    @jax.jit
    def switched(index, t, lam):
        sp = SwitchPath(members, index)
        return [getattr(sp, m)(lam if m == "t_from_log_snr" else t) for m in methods]

    for k, p in enumerate(members):
        lam = p.log_snr(t)
        got = switched(jnp.asarray(k, jnp.int32), t, lam)
        for m, value in zip(methods, got, strict=True):
            want = getattr(p, m)(lam if m == "t_from_log_snr" else t)
            # Equal up to float32 rounding (compiled vs eager).
            np.testing.assert_allclose(value, want, rtol=1e-5, err_msg=m)


def test_arm_field_is_each_arms_velocity():
    import jax
    import jax.numpy as jnp

    from flowjax import data, sampling
    from flowjax.compare._programs import build_trainer

    config = compare_default.get_config()
    config.base.model.overrides.width = 16
    config.arms = "fm,ddpm,edm"
    arms = compare.resolve_arms(config, "checkerboard")
    trainer = build_trainer(arms, data.spec("checkerboard"), t_eps=1e-3)
    params = trainer.init(0).params
    x = jax.random.normal(jax.random.key(0), (5, 2))
    t = jnp.asarray(0.3)
    field = jax.jit(lambda k, x: trainer.field(params, k)(x, t))
    for k, arm in enumerate(trainer.models):
        direct = sampling.as_velocity(
            lambda x_, t_, arm=arm: arm.model(params, x_, t_), arm.kind, arm.path, t_eps=1e-3
        )(x, t)
        np.testing.assert_allclose(field(jnp.asarray(k), x), direct, rtol=1e-5, atol=1e-6)
    assert trainer.kinds == ["velocity", "eps", "x1"]


def test_compare_configs_build():
    from configs import compare_cifar10, compare_digits

    for module in (compare_default, compare_digits, compare_cifar10):
        for arg in (None, "ablation", "smoke"):
            config = module.get_config(arg)
            assert [n for n, _, _ in compare.arm_variants(config)]
    assert compare_digits.get_config("cpu").base.model.overrides.ch == 16
    digits = compare_digits.get_config("smoke")
    arms = compare.resolve_arms(digits, "digits")
    assert [a.name for a in arms] == ["fm", "ddpm"]
    assert all(a.config.objective.label_dropout == 0.1 for a in arms)
    with pytest.raises(ValueError, match="unknown config variant"):
        compare_default.get_config("bogus")
