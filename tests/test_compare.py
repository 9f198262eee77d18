"""The head-to-head study: arm resolution (ablations), analysis of recorded runs, the switched
programs, and a tiny full run (reproducible, report consistent with the recorded curves).
The statistics themselves are tested in tests/test_studies_core.py."""

import json
import math
import re

import numpy as np
import pytest

from configs import compare_default
from flowjax import studies
from flowjax.studies import compare

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
    with pytest.raises(ValueError, match="config.arms: unknown name 'nope'"):
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
        "primary_metric": "m",
        "sweep_primary": "m",
        "metrics": ["m"],
        "sweep_metrics": ["m"],
        "descriptions": {},
        "info": {},
        "eval_num_samples": 10,
        "sweep_num_samples": 10,
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
    text = " ".join(compare.findings(ds))
    assert f"fast reached the threshold in {base / fast:.2f}× fewer steps than base" in text
    # Identical seeds: the speed-up has no spread, so its verdict has no interval to decide.
    v = compare._verdicts(ds)[0]
    assert v["claim"].startswith("fast reaches the threshold in fewer steps than base")
    assert v["ratio"] == pytest.approx(base / fast) and v["verdict"] == "supported"


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
    text = " ".join(compare.findings(ds))
    assert re.search(r"ddpm reached the threshold in [\d.]+× fewer steps than fm \(95% CI", text)
    steps_verdict = compare._verdicts(ds)[0]
    assert steps_verdict["metric"] == "m" and steps_verdict["verdict"] == "not supported"


def test_censored_seeds_give_a_bound():
    th = compare_default.get_config().threshold
    th.factor = 1.5
    # ddpm never reaches 0.75 in seed 1: fm needs at least this many fewer steps.
    fm, ddpm = [[2.0, 0.7, 0.5], [2.0, 0.7, 0.5]], [[2.0, 1.0, 0.5], [2.0, 1.0, 0.9]]
    raw = _raw({"fm": fm, "ddpm": ddpm})
    ds = compare.analyse_dataset(raw, th, "ddpm")
    cens = ds["arms"]["fm"]["vs_baseline"]["steps_speedup_censored"]
    fm = ds["arms"]["fm"]["to_threshold"]["steps"]["per_seed"]
    dd = ds["arms"]["ddpm"]["to_threshold"]["steps"]["per_seed"]
    assert dd[1] is None and cens["kind"] == "lower"
    assert cens["bound"] == pytest.approx(math.exp(np.mean(np.log([dd[0] / fm[0], 1000 / fm[1]]))))
    text = " ".join(compare.findings(ds))
    assert f"fm needed at least {cens['bound']:.2f}× fewer steps" in text


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
    c.sweep.specs = ("heun@edm", "ddim", "dpm++2m", "unipc")
    c.sweep.spec_nfe = (2,)
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
    "machine",
}


def _strip_timing(x):
    """Everything but wall-clock measurements (and the findings that quote them)."""
    if isinstance(x, dict):
        return {k: _strip_timing(v) for k, v in x.items() if k not in _TIMING}
    if isinstance(x, list):
        timed = ("seconds", "wall-clock")

        def is_timed(v):
            text = v if isinstance(v, str) else v.get("claim", "") if isinstance(v, dict) else ""
            return any(w in text for w in timed)

        return [_strip_timing(v) for v in x if not is_timed(v)]
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
def test_tiny_run_writes_the_shared_schema(tiny_runs):
    from test_studies_core import check_study_schema

    r = check_study_schema(tiny_runs[0], "compare")
    # The checkerboard histogram KL has the same name as in the flow-map study.
    assert r["datasets"]["checkerboard"]["primary_metric"] == "hist_kl"


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
        steps = [studies.steps_to_threshold(c["step"], c[metric], value) for c in curves]
        assert steps == arm["to_threshold"]["steps"]["per_seed"]
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        st = studies.mean_ci(steps)
        assert studies.fmt_ci(st, 4) in row
        assert f"{sum(s is not None for s in steps)}/{len(steps)}" in row
        # Final metrics: one row per arm with the recorded means.
        final_row = next(
            line
            for line in report.split("### Final quality")[1].splitlines()
            if line.startswith(f"| {name} |")
        )
        assert studies.fmt_ci(arm["final"][th["metric"]]) in final_row
    # Verdicts in the shared schema, one per claim, and in the report.
    assert results["study"] == "compare" and ds["num_seeds"] == 2
    for v in ds["verdicts"]:
        assert v["claim"] in report and v["verdict"] in studies.VERDICTS
    for png in ("quality_vs_steps", "quality_vs_seconds", "quality_vs_nfe", "samples"):
        assert (tiny_runs[0] / f"checkerboard_{png}.png").stat().st_size > 1000
    # The sweep recorded the exact NFE of each fixed-step sampler.
    sweep = ds["arms"]["fm"]["sweep"]
    assert sweep["euler"]["nfe"] == [1, 2] and sweep["heun"]["nfe"] == [2]
    assert sweep["sde"]["nfe"] == [4] and "dopri5" not in sweep
    # The fj.sampling specs ran at exactly their NFE, for every arm (issue 12).
    specs = ("heun@edm", "ddim@logsnr", "dpm++2m@logsnr", "unipc@logsnr")
    for a in ds["arms"].values():
        for s in specs:
            assert a["sweep"][s]["nfe"] == [2] and a["sweep"][s]["setting"] == [2], s
    # Best sampler per NFE: the argmin of the recorded means over the fixed-NFE samplers.
    metric = ds["sweep_primary"]
    for name, a in ds["arms"].items():
        cands = {
            s: e[metric]["mean"][e["setting"].index(2)]
            for s, e in a["sweep"].items()
            if s != "dopri5" and 2 in e["setting"]
        }
        assert set(cands) == {"euler", "heun", *specs}
        cands = {s: v for s, v in cands.items() if math.isfinite(v)}
        best = a["best_sampler"]["2"]
        assert best["sampler"] == min(cands, key=cands.get)
        assert best["mean"] == min(cands.values())
        assert set(a["best_sampler"]) == {"1", "2", "4"}  # euler 1; sde 4
        # Negative control: a perturbed sweep changes the pick.
        other = sorted(cands, key=cands.get)[1]
        perturbed = json.loads(json.dumps(a["sweep"]))
        perturbed[other][metric]["mean"][perturbed[other]["setting"].index(2)] = -1.0
        assert compare._best_sampler(perturbed, metric)["2"]["sampler"] == other
        cell = f"{best['sampler']}: {studies.fmt(best['mean'])}"
        assert any(ln.startswith(f"| {name} |") and cell in ln for ln in report.splitlines())


# --------------------------------------------------------------- shared programs and configs


def test_switch_path_is_the_selected_path():
    import jax
    import jax.numpy as jnp

    from flowjax import paths

    SwitchPath = compare.SwitchPath
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

    config = compare_default.get_config()
    config.base.model.overrides.width = 16
    config.arms = "fm,ddpm,edm"
    arms = compare.resolve_arms(config, "checkerboard")
    trainer = compare.Trainer(arms, data.spec("checkerboard"), t_eps=1e-3)
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
