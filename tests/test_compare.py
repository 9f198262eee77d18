"""The head-to-head study: arm resolution (ablations), analysis of recorded runs, the switched
programs, and a tiny full run (reproducible, report consistent with the recorded curves).
The statistics themselves are tested in tests/test_studies_core.py."""

import json
import math

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
    config.arms = "fm,fm_ot,ddpm,edm"
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


def test_per_dataset_overrides_change_only_their_dataset():
    config = compare_default.get_config()
    config.base_by_dataset = type(config.base_by_dataset)(
        {"checkerboard": {"train": {"num_steps": 600}, "model": {"overrides": {"width": 16}}}}
    )
    config.eval.by_dataset = type(config.eval.by_dataset)({"checkerboard": {"nfe": 8}})
    gmm = compare.resolve_arms(config, "gmm")[0].config
    board = compare.resolve_arms(config, "checkerboard")[0].config
    assert gmm.train.num_steps == config.base.train.num_steps
    assert gmm.model.overrides.to_dict() == config.base.model.overrides.to_dict()
    assert board.train.num_steps == 600
    assert board.model.overrides.to_dict() == {**config.base.model.overrides.to_dict(), "width": 16}
    assert {k: v for k, v in board.to_dict().items() if k not in ("train", "model", "data")} == {
        k: v for k, v in gmm.to_dict().items() if k not in ("train", "model", "data")
    }
    assert compare._eval_draw(config, "fm", "checkerboard").nfe == 8
    assert compare._eval_draw(config, "fm", "gmm").nfe == config.eval.nfe
    config.base_by_dataset.checkerboard.trian = {"num_steps": 1}
    with pytest.raises(ValueError, match="base_by_dataset.checkerboard.trian: unknown field"):
        compare.resolve_arms(config, "checkerboard")
    config.eval.by_dataset.checkerboard.num_samples = 10
    with pytest.raises(ValueError, match="eval.by_dataset.checkerboard.num_samples: unknown field"):
        compare._eval_draw(config, "fm", "checkerboard")
    b = {"train": {"num_steps": 4}, "data": {"batch_size": 2}, "ema": {"decays": [0.9]}}
    b |= {"model": {"name": "mlp", "variant": "tiny", "overrides": {}}}
    b |= {"optim": {"name": "adamw", "lr": 1e-3, "schedule": "constant", "warmup_steps": 0}}
    b["model"]["overrides"] = {"width": 8, "depth": 2}
    own = {**b, "train": {"num_steps": 8}}
    same = {**b, "model": {**b["model"], "overrides": {"depth": 2, "width": 8}}}
    results = {
        "config": {"base": b},
        "datasets": {
            "a": {"setup": compare._setup_line(b)},
            "b": {"setup": compare._setup_line(own)},
            "c": {"setup": compare._setup_line(same)},  # the same overrides in another order
        },
    }
    line = compare._per_dataset_setup(results)
    assert "**b**: 8 steps of batch 2" in line and "**a**" not in line and "**c**" not in line


def test_mlp_fourier_features_are_opt_in_and_closed_form():
    import jax.numpy as jnp

    from flowjax import models

    x = jnp.array([[0.3, -1.7], [2.5, 0.0]])
    plain = models.build_model("mlp", "tiny", input_shape=(2,), key=0)
    off = models.build_model("mlp", "tiny", input_shape=(2,), key=0, fourier_features=0)
    np.testing.assert_array_equal(plain(x, 0.4), off(x, 0.4))  # the default MLP is unchanged
    on = models.build_model(
        "mlp", "tiny", input_shape=(2,), key=0, fourier_features=3, fourier_scale=0.5
    )
    w = 0.5 * np.array([1.0, 2.0, 4.0])
    arg = (np.asarray(x)[:, :, None] * w).reshape(2, -1)
    want = np.concatenate([np.asarray(x), np.sin(arg), np.cos(arg)], axis=1)
    np.testing.assert_allclose(on._features(x), want, rtol=1e-6, atol=1e-6)
    assert on.dense_in.kernel.shape[0] == 2 * 7 + plain.dense_in.kernel.shape[0] - 2
    with pytest.raises(ValueError, match="fourier_features >= 0"):
        models.build_model("mlp", "tiny", input_shape=(2,), key=0, fourier_features=-1)


# ----------------------------------------------------------------- analysis of recorded runs

STEPS = [10, 20, 40, 80, 160, 320, 640]


def _curve_crossing(cross_at: int | None, level: float) -> list[float]:
    """A decreasing curve that is above `level` before step `cross_at` and exactly at it from
    then on (never reaching it when cross_at is None)."""
    out = []
    for s in STEPS:
        if cross_at is not None and s >= cross_at:
            out.append(level * (1 - 1e-9 * STEPS.index(s)))  # at (a hair under) the level
        else:
            out.append(level * (10.0 - STEPS.index(s)))  # well above it
    return out


def _raw(curves: dict, floor: float, cost: dict | None = None) -> dict:
    """Raw records of one dataset: arm -> per-seed curves of metric "m" at STEPS."""
    arms = {}
    for name, per_seed in curves.items():
        seeds = {
            str(s): {
                "curve": {"step": STEPS, "loss": [1.0] * len(STEPS), "m": values},
                "final": {"m": values[-1]},
            }
            for s, values in enumerate(per_seed)
        }
        sweep = {
            str(s): [{"sampler": "euler", "setting": 4, "nfe": 4.0, "error": "", "m": values[-1]}]
            for s, values in enumerate(per_seed)
        }
        arms[name] = {
            "label": name,
            "factors": {},
            "changed": None,
            "seeds": seeds,
            "sweep_raw": sweep,
        }
    return {
        "eval_steps": STEPS,
        "primary_metric": "m",
        "sweep_primary": "m",
        "metrics": ["m"],
        "sweep_metrics": ["m"],
        "eval_num_samples": 100,
        "sweep_num_samples": 100,
        "floor_values": [floor * 0.9, floor * 1.1],
        "cost": cost,
        "arms": arms,
    }


def _levels_cfg(factors=(4.0, 2.0)):
    cfg = compare_default.get_config().levels
    cfg.factors, cfg.interpolate = factors, False
    return cfg


def _t_interval(logs):
    import scipy.stats

    logs = np.asarray(logs, float)
    h = scipy.stats.t.ppf(0.975, logs.size - 1) * logs.std(ddof=1) / math.sqrt(logs.size)
    return math.exp(logs.mean()), math.exp(logs.mean() - h), math.exp(logs.mean() + h)


def test_steps_to_level_and_speedup_from_known_crossings():
    floor, cross_fm, cross_dd = 0.1, [20, 40, 40, 20], [80, 160, 320, 160]
    lv = 2.0 * floor
    curves = {
        "fm": [_curve_crossing(c, lv) for c in cross_fm],
        "ddpm": [_curve_crossing(c, lv) for c in cross_dd],
    }
    cost = {
        "fm": {"seconds_per_step": 2e-3, "flops_per_step": 1e6},
        "ddpm": {"seconds_per_step": 1e-3, "flops_per_step": 1e6},
    }
    ds = compare.analyse_dataset(_raw(curves, floor, cost), _levels_cfg((2.0,)), "ddpm")
    assert ds["floor"]["mean"] == pytest.approx(floor)
    (level,) = ds["levels"]
    assert level["value"] == pytest.approx(lv)
    assert level["arms"]["fm"]["steps"]["per_seed"] == cross_fm
    assert level["arms"]["ddpm"]["steps"]["per_seed"] == cross_dd
    # The speed-up ddpm / fm: geometric mean and t-interval of the known per-seed ratios.
    want = _t_interval(np.log(np.asarray(cross_dd) / np.asarray(cross_fm)))
    st = level["vs_baseline"]["fm"]["steps"]
    assert (st["ratio"], st["ci_low"], st["ci_high"]) == pytest.approx(want)
    assert st["rule"] == "exact" and st["n"] == 4
    # Seconds: fm steps cost twice as much, so the speed-up in seconds is half; FLOPs equal.
    sec, flops = level["vs_baseline"]["fm"]["seconds"], level["vs_baseline"]["fm"]["flops"]
    assert sec["ratio"] == pytest.approx(want[0] / 2) and flops["ratio"] == pytest.approx(want[0])
    # The verdicts are the side of 1 that the computed interval lies on.
    verdicts = {v["claim"]: v for v in compare._verdicts(ds)}
    steps_v = verdicts["fm reaches m <= 2x floor in fewer training steps than ddpm"]
    assert steps_v["ratio"] == pytest.approx(want[0])
    expected = "supported" if want[1] > 1 else "not supported" if want[2] < 1 else "not significant"
    assert steps_v["verdict"] == expected == "supported"
    # Negative control: the same curves with the arms swapped give the opposite verdict.
    swapped = {"fm": curves["ddpm"], "ddpm": curves["fm"]}
    ds2 = compare.analyse_dataset(_raw(swapped, floor, cost), _levels_cfg((2.0,)), "ddpm")
    v2 = {v["claim"]: v for v in compare._verdicts(ds2)}
    assert v2["fm reaches m <= 2x floor in fewer training steps than ddpm"]["verdict"] == (
        "not supported"
    )
    # The opening table repeats the computed verdicts, and the report opens with it.
    rows = compare.headline(ds, "fm")
    assert rows[0]["claim"] == steps_v["claim"] and rows[0]["verdict"] == steps_v["verdict"]
    assert all(r["verdict"] == verdicts[r["claim"]]["verdict"] for r in rows)


def test_interpolated_crossing_in_log_step():
    # From (40, 1.5 lv) to (80, 0.5 lv), linear in the value against log(step): the level lv is
    # crossed halfway in log(step).
    floor, lv = 0.1, 0.2
    curve = [8 * lv, 6 * lv, 1.5 * lv, lv / 2, lv / 8, lv / 8, lv / 8]
    cfg = _levels_cfg((2.0,))
    cfg.interpolate = True
    ds = compare.analyse_dataset(_raw({"a": [curve]}, floor), cfg, None)
    assert ds["levels"][0]["arms"]["a"]["steps"]["per_seed"][0] == pytest.approx(math.sqrt(40 * 80))


def test_censored_seeds_keep_only_the_conclusion_they_allow():
    floor, lv = 0.1, 0.2
    # ddpm misses the level in two seeds: the speed-up is a lower bound.
    fm = [_curve_crossing(c, lv) for c in (20, 20, 40, 20)]
    dd = [_curve_crossing(c, lv) for c in (320, None, None, 640)]
    ds = compare.analyse_dataset(_raw({"fm": fm, "ddpm": dd}, floor), _levels_cfg((2.0,)), "ddpm")
    st = ds["levels"][0]["vs_baseline"]["fm"]["steps"]
    assert st["rule"] == "lower bound" and st["n_censored_baseline"] == 2
    last = STEPS[-1]
    want = _t_interval(np.log([320 / 20, last / 20, last / 40, 640 / 20]))
    assert (st["ratio"], st["ci_low"], st["ci_high"]) == pytest.approx(want)
    assert st["bound"]["kind"] == "lower"  # studies.censored_log_ratio agrees: at least
    # An arm censored where the baseline reached: an upper bound, and "faster" cannot stand
    # even though the imputed interval lies above 1.
    fm2 = [_curve_crossing(c, lv) for c in (20, None, 20, 20, 20, 20)]
    dd2 = [_curve_crossing(c, lv) for c in (320, 640, 640, 320, 320, 640)]
    raw2 = _raw({"fm": fm2, "ddpm": dd2}, floor)
    ds2 = compare.analyse_dataset(raw2, _levels_cfg((2.0,)), "ddpm")
    st2 = ds2["levels"][0]["vs_baseline"]["fm"]["steps"]
    assert st2["rule"] == "upper bound" and st2["ci_low"] > 1
    v = next(v for v in compare._verdicts(ds2) if "steps" in v["claim"])
    assert v["verdict"] == "not significant"
    # Neither reached in a seed: that seed is left out.
    assert compare.level_speedup([None, 10.0], [None, 5.0], 640)["n"] == 1


def test_floor_is_the_metric_of_independent_data_samples():
    from flowjax import data, metrics

    ev = metrics.make_evaluator(
        "checkerboard",
        ("hist_kl", "energy"),
        num_reference=400,
        seed=3,
        options=metrics.EvalOptions(hist_bins=8, energy_samples=400),
    )
    values = compare.data_floor(ev, "checkerboard", "energy", 400, 3, 50)
    for r, v in enumerate(values):
        x = data.reference_samples("checkerboard", 400, 50 + r, "train")
        assert v == ev(x, metrics=("energy",))["energy"]
    st = studies.mean_ci(values)
    assert st["ci_low"] < 0.01 and abs(st["mean"]) < 0.01  # unbiased: ~0 for the same law
    # Negative control: a shifted sample is far above the floor.
    x = data.reference_samples("checkerboard", 400, 50, "train") + 0.5
    assert ev(x, metrics=("energy",))["energy"] > st["ci_high"] + 0.02
    assert len(set(values)) == 3  # independent samples, not one sample thrice


# ----------------------------------------------------------------------- a tiny full run


def _tiny_config():
    c = compare_default.get_config("smoke")
    c.arms = "fm,ddpm"
    c.num_seeds = 2
    c.base.train.num_steps = 30
    c.base.train.steps_per_dispatch = 10
    c.eval.num_evals = 3
    c.eval.num_samples = 300
    c.eval.batch_size = 300
    c.eval.nfe = 4
    c.measure_cost = False  # the single-run cost programs compile per arm (tested in test_fused)
    c.levels.floor_reps = 3
    c.sweep.num_samples = 300
    c.sweep.euler_nfe = ()
    c.sweep.heun_nfe = ()
    c.sweep.dopri5_tol = ()
    c.sweep.sde_nfe = ()
    c.sweep.specs = ("euler", "dpm++2m")
    c.sweep.spec_nfe = (2,)
    return c


_TIMING = {
    "seconds",
    "fused_seconds",
    "train_seconds",
    "eval_seconds",
    "wall_seconds",
    "cpu_seconds",
    "compile_seconds",
    "machine",
    "cost",
}


def _strip_timing(x):
    """Everything but wall-clock measurements (and the verdicts that quote them)."""
    if isinstance(x, dict):
        return {k: _strip_timing(v) for k, v in x.items() if k not in _TIMING}
    if isinstance(x, list):

        def is_timed(v):
            text = v if isinstance(v, str) else v.get("claim", "") if isinstance(v, dict) else ""
            return "seconds" in text

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
    assert ds_a["floor_values"] == ds_b["floor_values"]
    assert _strip_timing(ds_a) == _strip_timing(ds_b)
    # Different seeds train differently.
    assert ds_a["arms"]["fm"]["seeds"]["0"]["final"] != ds_a["arms"]["fm"]["seeds"]["1"]["final"]


@pytest.mark.slow
def test_tiny_run_writes_the_shared_schema(tiny_runs):
    from test_studies_core import check_study_schema

    r = check_study_schema(tiny_runs[0], "compare")
    assert r["datasets"]["checkerboard"]["primary_metric"] == "hist_kl"


@pytest.mark.slow
def test_report_matches_the_recorded_curves(tiny_runs):
    results = json.loads((tiny_runs[0] / "results.json").read_text())
    report = (tiny_runs[0] / "report.md").read_text()
    assert compare.render(results) == report  # the report is a function of results.json alone
    ds = results["datasets"]["checkerboard"]
    # The report opens with the verdict table, each row a recorded verdict.
    assert report.index("## Verdicts") < report.index("## Setup")
    by_claim = {v["claim"]: v for v in ds["verdicts"]}
    for row in ds["headline"]:
        assert by_claim[row["claim"]]["verdict"] == row["verdict"]
        assert row["claim"] in report.split("## Setup")[0]
    # Steps to each level: recomputed from the recorded curves and the recorded floor.
    floor = studies.mean_ci(ds["floor_values"])["mean"]
    for level in ds["levels"]:
        assert level["value"] == pytest.approx(level["factor"] * floor)
        for name, arm in ds["arms"].items():
            curves = [rec["curve"] for rec in arm["seeds"].values()]
            steps = [
                studies.steps_to_threshold(c["step"], c["hist_kl"], level["value"]) for c in curves
            ]
            assert steps == level["arms"][name]["steps"]["per_seed"]
    for name, arm in ds["arms"].items():
        final_row = next(
            line
            for line in report.split("### Final quality")[1].splitlines()
            if line.startswith(f"| {name} |")
        )
        assert studies.fmt_ci(arm["final"]["hist_kl"]) in final_row
    assert results["study"] == "compare" and ds["num_seeds"] == 2
    for png in ("quality_vs_steps", "quality_vs_nfe", "samples"):
        assert (tiny_runs[0] / f"checkerboard_{png}.png").stat().st_size > 1000
    # The sweep ran every spec at exactly its NFE, and the best sampler is the argmin.
    metric = ds["sweep_primary"]
    for a in ds["arms"].values():
        for s in ("euler@uniform", "dpm++2m@logsnr"):
            assert a["sweep"][s]["nfe"] == [2] and a["sweep"][s]["setting"] == [2], s
        cands = {s: e[metric]["mean"][0] for s, e in a["sweep"].items()}
        cands = {s: v for s, v in cands.items() if math.isfinite(v)}
        best = a["best_sampler"]["2"]
        assert best["sampler"] == min(cands, key=cands.get)
        # Negative control: a perturbed sweep changes the pick.
        other = max(cands, key=cands.get)
        perturbed = json.loads(json.dumps(a["sweep"]))
        perturbed[other][metric]["mean"][0] = -1.0
        assert compare._best_sampler(perturbed, metric)["2"]["sampler"] == other


# --------------------------------------------------------------- configs


def test_compare_configs_build():
    from configs import compare_cifar10, compare_digits, compare_imagenet32

    for module in (compare_default, compare_digits, compare_cifar10, compare_imagenet32):
        for arg in (None, "ablation", "smoke"):
            config = module.get_config(arg)
            assert [n for n, _, _ in compare.arm_variants(config)]
            compare._check(config)
            compare._eval_draw(config, "fm")  # the curve sampler parses at its NFE
    default = compare_default.get_config()
    assert default.num_seeds >= 8 and default.levels.factors[-1] == 1.25
    digits = compare_digits.get_config("smoke")
    arms = compare.resolve_arms(digits, "digits")
    assert [a.name for a in arms] == ["fm", "ddpm"]
    assert all(a.config.objective.label_dropout == 0.1 for a in arms)
    with pytest.raises(ValueError, match="unknown config variant"):
        compare_default.get_config("bogus")
    bad = compare_default.get_config()
    bad.levels.factors = (1.25, 2.0)
    with pytest.raises(ValueError, match="config.levels.factors"):
        compare._check(bad)
