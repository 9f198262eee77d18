"""The scaling and stability studies and the README generator.

Truths checked: the d-dimensional mixture's construction (closest means `separation` stds
apart, unit variance per coordinate); the likelihood KL of the mixture's own flow is 0 and that
of a perturbed mixture's flow equals the closed-form KL estimate on the same draws; the
regression target's irreducible variance of flow matching on a Gaussian matches its closed
form; steps-to-level ratios, censoring, trends and verdicts computed from known curves; a
huge learning rate is counted as diverged; same seeds give the same numbers; the README
section is regenerated between its markers only, idempotently.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj
from flowjax import studies
from flowjax.studies import scaling, stability

# ----------------------------------------------------------------------------- the mixture


@pytest.mark.parametrize("dim", [2, 8, 128])
def test_mixture_construction(dim):
    gmm = scaling.mixture(dim, seed=3, separation=6.0)
    m, s = np.asarray(gmm.means, np.float64), float(gmm.stds[0])
    dist = np.linalg.norm(m[:, None] - m[None], axis=-1)[np.triu_indices(4, 1)]
    np.testing.assert_allclose(dist.min() / s, 6.0, rtol=1e-5)
    # d s^2 + mean |m_k|^2 = d: unit variance per coordinate on average.
    np.testing.assert_allclose(dim * s**2 + np.mean(np.sum(m**2, -1)), dim, rtol=1e-5)
    with pytest.raises(ValueError, match="dim"):
        scaling.mixture(1)


def test_kl_of_exact_flow_is_zero_and_of_perturbed_flow_is_its_kl():
    """KL through the likelihood ODE: 0 for the mixture's own velocity, and for the flow of
    a perturbed mixture exactly mean(log p - log p') on the same draws (its flow's density)."""
    gmm = scaling.mixture(4, seed=0)
    other = fj.analytic.GaussianMixture(gmm.means * 1.15, gmm.stds * 0.9, gmm.weights)
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), gmm, other)
    x = gmm.sample(jax.random.key(0), 64)
    path = fj.paths.CondOT()

    @jax.jit
    def gaps(models, x):  # one compiled solve for both models
        def one(model):
            return scaling.kl_of_field(model.velocity_field(path), gmm, x, rtol=1e-4, atol=1e-4)[0]

        return jax.vmap(one)(models)

    exact, wrong = np.asarray(gaps(both, x), np.float64)
    closed = np.asarray(gmm.log_prob(x) - other.log_prob(x), np.float64)
    assert abs(exact.mean()) < 5e-3  # the exact model: KL = 0 up to the solve's tolerance
    assert wrong.mean() > 0.1  # negative control: the perturbed flow is visibly worse
    np.testing.assert_allclose(wrong.mean(), closed.mean(), atol=5e-3)
    np.testing.assert_allclose(wrong, closed, atol=0.1)  # per point, float32 solve at 1e-4


def test_target_noise_matches_closed_form_on_a_gaussian():
    """CondOT velocity target u = x1 - x0, x1 ~ N(0, s^2 I): Var[u | x_t] = s^2 / (t^2 s^2 +
    (1 - t)^2) per coordinate; its mean over t ~ U(0, 1) is the irreducible variance."""
    s = 0.5
    gmm = fj.analytic.GaussianMixture(jnp.zeros((1, 3)), jnp.asarray([s]), jnp.ones(1))
    out = stability.target_noise(scaling.ARMS["fm"], gmm, key=jax.random.key(1),
                                 num_batches=4, batch_size=20_000, t_eps=1e-4)  # fmt: skip
    t = np.linspace(0, 1, 200_001)
    closed = np.trapezoid(s**2 / (t**2 * s**2 + (1 - t) ** 2), t)
    st = studies.mean_ci(out["irreducible"])
    assert abs(st["mean"] - closed) < 0.02 * closed
    np.testing.assert_allclose(studies.mean_ci(out["total"])["mean"], 1 + s**2, rtol=0.02)
    # negative control: the eps target's irreducible noise is a different number
    eps = stability.target_noise(scaling.ARMS["ddpm"], gmm, key=jax.random.key(1),
                                 num_batches=1, batch_size=20_000, t_eps=1e-4)  # fmt: skip
    assert abs(eps["irreducible"][0] - closed) > 0.1


# ----------------------------------------------------------------------------- analysis


def test_steps_to_level_ratios_and_verdicts_from_known_curves():
    steps = [100, 200, 400, 800]
    # fm reaches 0.5 at 200 (seeds 0-2) or 400 (seed 3); ddpm at 800 in every seed.
    fm = [[2.0, 0.5, 0.3, 0.2], [2.0, 0.4, 0.3, 0.2], [2.0, 0.45, 0.3, 0.2], [2.0, 1.0, 0.5, 0.2]]
    ddpm = [[3.0, 2.0, 1.0, 0.5], [3.0, 2.0, 1.0, 0.5], [3.0, 2.0, 0.9, 0.4], [3.0, 2.0, 1.0, 0.3]]
    an = scaling.analyse_dimension(steps, {"fm": fm, "ddpm": ddpm},
                                   {"fm": [40, 44, 42, 41], "ddpm": [100, 110, 90, 95]}, [0.5],
                                   arm="fm", baseline="ddpm", interpolate=False)  # fmt: skip
    assert an["steps_to_level"]["fm"][0] == [200, 200, 200, 400]
    assert an["steps_to_level"]["ddpm"][0] == [800, 800, 800, 800]
    r = an["ratios"][0]
    np.testing.assert_allclose(r["ratio"], math.exp(np.mean(np.log([0.25, 0.25, 0.25, 0.5]))))
    v = scaling.censored_verdict("fm faster", "steps", r)
    assert v["verdict"] == "supported" and v["ci_high"] < 1
    nfe = studies.verdict("fewer NFE", "nfe", an["nfe_ratio"], above=False)
    assert nfe["verdict"] == "supported"
    # swapped arms: the same numbers say "not supported"
    an2 = scaling.analyse_dimension(steps, {"fm": ddpm, "ddpm": fm}, {"fm": [1] * 4,
                                    "ddpm": [1] * 4}, [0.5], arm="fm", baseline="ddpm",
                                    interpolate=False)  # fmt: skip
    assert scaling.censored_verdict("c", "m", an2["ratios"][0])["verdict"] == "not supported"


def test_censored_levels_give_bounds_not_ratios():
    steps = [100, 200, 400, 800]
    fm = [[1.0, 0.4, 0.3, 0.2], [1.0, 0.45, 0.3, 0.2], [1.0, 0.5, 0.3, 0.2]]
    never = [[3.0, 2.0, 1.0, 0.9]] * 3  # ddpm never reaches 0.5 in 800 steps
    an = scaling.analyse_dimension(steps, {"fm": fm, "ddpm": never},
                                   {"fm": [1, 1, 1], "ddpm": [1, 1, 1]}, [0.5],
                                   arm="fm", baseline="ddpm", interpolate=False)  # fmt: skip
    r = an["ratios"][0]
    assert r["n"] == 0 and r["reached"] == {"fm": 3, "ddpm": 0}
    assert r["censored"]["kind"] == "upper"
    v = scaling.censored_verdict("fm faster", "steps", r)
    assert v["bound"] == "upper" and v["verdict"] == "supported"  # <= 200/800 in every seed
    np.testing.assert_allclose(v["ratio"], 0.25)
    # an arm that never gets there cannot be "supported" by its censored bound
    an = scaling.analyse_dimension(steps, {"fm": never, "ddpm": fm},
                                   {"fm": [1, 1, 1], "ddpm": [1, 1, 1]}, [0.5],
                                   arm="fm", baseline="ddpm", interpolate=False)  # fmt: skip
    v = scaling.censored_verdict("fm faster", "steps", an["ratios"][0])
    assert v["bound"] == "lower" and v["verdict"] == "not supported"


def test_trend_slope_per_doubling():
    dims = [2, 8, 32, 128]
    # ratio halves per doubling of d (x 1/4 per factor 4), seed-to-seed jitter
    rng = np.random.default_rng(0)
    rows = [[0.5 ** math.log2(d) * math.exp(rng.normal(0, 0.05)) for _ in range(5)] for d in dims]
    t = scaling.trend(dims, rows)
    assert t["n"] == 5 and t["ci_high"] < 1
    np.testing.assert_allclose(t["ratio"], 0.5, rtol=0.05)
    flat = [[math.exp(rng.normal(0, 0.3)) for _ in range(5)] for _ in dims]
    ft = scaling.trend(dims, flat)
    assert ft["ci_low"] < 1 < ft["ci_high"]
    assert studies.verdict("c", "m", ft, above=False)["verdict"] == "not significant"


def test_classify_runs_and_stability_verdicts_from_known_numbers():
    ok = np.linspace(2.0, 1.0, 200)
    blow = np.concatenate([np.linspace(2.0, 1.0, 150), np.full(50, 50.0)])
    kw = dict(chunk=20)
    assert not any(
        stability.classify_run(ok, 0, 0.1, 1.0, **kw)[k] for k in ("diverged", "stalled")
    )
    assert stability.classify_run(blow, 0, 0.1, 1.0, **kw)["diverged"]
    assert stability.classify_run(ok, 10, 0.1, 1.0, **kw)["diverged"]  # 5% steps skipped
    assert stability.classify_run(ok, 0, None, 1.0, **kw)["diverged"]
    assert stability.classify_run(ok, 0, 0.9, 1.0, **kw)["stalled"]
    # noise CV: white noise of std 0.1 around 1 -> 0.1, a pure trend -> ~0
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(
        stability.noise_cv(1 + 0.1 * rng.normal(size=20_000)), 0.1, rtol=0.03
    )
    assert stability.noise_cv(np.linspace(2, 1, 1000)) < 1e-3
    # known per-run numbers -> verdicts: fm's quality spreads 2x more over rates
    lrs, bss, seeds = [1e-3, 1e-2], [32], [0, 1, 2, 3]
    runs = []
    for a, scale in (("fm", 2.0), ("ddpm", 1.0)):
        for lr in lrs:
            for s in seeds:
                kl = math.exp(scale * (0.5 if lr == 1e-3 else -0.5) + 0.01 * s)
                runs.append(dict(arm=a, lr=lr, batch_size=32, seed=s, final_kl=kl,
                                 diverged=a == "fm" and lr == 1e-2 and s == 0, stalled=False,
                                 loss_noise=0.2 * scale, grad_noise=0.3))  # fmt: skip
    sm = stability.summarise(runs, ["fm", "ddpm"], lrs, bss, seeds, kl_cap=10.0)
    assert sm["arms"]["fm"]["diverged"]["k"] == 1
    target = {"fm": {"fraction": [0.6, 0.7, 0.65]}, "ddpm": {"fraction": [0.3, 0.35, 0.3]}}
    vs = {v["metric"].split(" (")[0]: v for v in
          stability.stability_verdicts(sm, target, arm="fm", baseline="ddpm")}  # fmt: skip
    assert vs["loss step-noise CV"]["verdict"] == "supported"
    np.testing.assert_allclose(vs["loss step-noise CV"]["ratio"], 2.0)
    assert vs["grad-norm step-noise CV"]["verdict"] == "not significant"  # equal: no interval
    assert vs["unexplainable fraction of target variance"]["verdict"] == "supported"
    assert vs["failure fraction difference fm - ddpm"]["verdict"] == "not significant"


# ----------------------------------------------------------------------------- end to end


def _scaling_smoke():
    from configs import scaling_default

    c = scaling_default.get_config("smoke")
    c.dims = (2,)
    return c


def _numbers(results):
    """results.json without timings, machine and plots (what must be reproducible)."""
    drop = {"wall_seconds", "cpu_seconds", "machine", "plots", "train_seconds", "command"}

    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if k not in drop}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return clean(results)


@pytest.fixture(scope="module")
def scaling_smoke(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("scal")
    results = scaling.run(_scaling_smoke(), str(workdir), log=lambda *_: None)
    return workdir, results


def _same(a, b):
    a, b = (None if v is None or not math.isfinite(v) else v for v in (a, b))  # NaN -> null
    return (a is None and b is None) or (a is not None and b is not None and a == pytest.approx(b))


def test_scaling_smoke_writes_the_schema(scaling_smoke):
    workdir, _ = scaling_smoke
    on_disk = json.loads((workdir / "results.json").read_text())
    assert set(on_disk["datasets"]) == {"gmm_d2", "trend"}
    for ds in on_disk["datasets"].values():
        assert ds["num_seeds"] == 2 and ds["verdicts"]
        for v in ds["verdicts"]:
            assert {"claim", "metric", "ratio", "ci_low", "ci_high", "verdict"} <= set(v)
            assert v["verdict"] in studies.VERDICTS
    d2 = on_disk["datasets"]["gmm_d2"]
    assert len(d2["arms"]["fm"]["kl_by_seed"]) == 2
    assert all(isinstance(n, int) and n > 0 for n in d2["arms"]["ddpm"]["nfe_by_seed"])
    report = (workdir / "report.md").read_text()
    assert report.splitlines()[2].startswith("| claim |")  # opens with the verdict table
    assert (workdir / "kl_curves.png").exists()
    # the recorded ratios are those the recorded curves give
    an = scaling.analyse_dimension(
        d2["arms"]["fm"]["curve"]["step"],
        {a: d2["arms"][a]["kl_by_seed"] for a in ("fm", "ddpm")},
        {a: d2["arms"][a]["nfe_by_seed"] for a in ("fm", "ddpm")},
        d2["levels_nats"], arm="fm", baseline="ddpm",
    )  # fmt: skip
    for new, old in zip(an["ratios"], d2["analysis"]["ratios"], strict=True):
        assert all(_same(new[k], old[k]) for k in ("ratio", "ci_low", "ci_high"))
    assert _same(an["nfe_ratio"]["ratio"], d2["analysis"]["nfe_ratio"]["ratio"])


@pytest.mark.slow
def test_scaling_smoke_is_reproducible(scaling_smoke, tmp_path):
    workdir, _ = scaling_smoke
    scaling.run(_scaling_smoke(), str(tmp_path), log=lambda *_: None)
    first, again = (json.loads((d / "results.json").read_text()) for d in (workdir, tmp_path))
    assert _numbers(first) == _numbers(again)  # strict JSON: NaN is null, comparable
    assert first["datasets"]["gmm_d2"]["arms"]["fm"]["kl_by_seed"][0][0] is not None


def test_stability_smoke_counts_the_huge_rate_as_diverged(tmp_path):
    from configs import stability_default

    cfg = stability_default.get_config("smoke")  # rates (2e-3, 1e4)
    stability.run(cfg, str(tmp_path), log=lambda *_: None)
    r = json.loads((tmp_path / "results.json").read_text())
    (ds,) = r["datasets"].values()
    assert ds["num_seeds"] == 2 and len(ds["verdicts"]) == 7
    assert all(v["verdict"] in studies.VERDICTS for v in ds["verdicts"])
    for run in ds["runs"]:
        assert run["diverged"] == (run["lr"] == 1e4), run
    for a in ("fm", "ddpm"):
        assert ds["summary"][a]["diverged"]["k"] == 2  # both seeds at the huge rate
    assert (tmp_path / "report.md").read_text().startswith("# Stability")
    assert (tmp_path / "loss_curves.png").exists()


# ----------------------------------------------------------------------------- README


def _fixture_results(path, ratio=0.5):
    results = {
        "study": "scaling",
        "claim": "flow matching scales better with dimension than diffusion",
        "command": "python -m experiments.scaling --workdir=/tmp/scal",
        "machine": {
            "platform": "cpu",
            "device_kind": "cpu",
            "usable_cpus": 2,
            "jax": "0.10.2",
            "load_average": [1.0, 1.0, 1.0],
        },  # fmt: skip
        "wall_seconds": 300.0,
        "cpu_seconds": 400.0,
        "date": "2026-12-04 05:00 UTC",
        "datasets": {
            "trend": {
                "num_seeds": 5,
                "verdicts": [
                    {
                        "claim": "fm scales better",
                        "metric": "steps ratio per doubling",
                        "ratio": ratio,
                        "ci_low": 0.4,
                        "ci_high": 0.6,
                        "verdict": "supported",
                        "headline": True,
                    },
                    {
                        "claim": "not shown",
                        "metric": "x",
                        "ratio": 1.0,
                        "ci_low": 0.5,
                        "ci_high": 2.0,
                        "verdict": "not significant",
                    },
                ],  # fmt: skip
            }
        },
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(results))


def test_readme_section_regenerated_idempotently(tmp_path):
    from experiments import readme

    _fixture_results(tmp_path / "scal")
    before = "# flowjax\n\nintro text\n\n## What we measured\n\n"
    after = "\n\n## Next section\n\nuntouched ✓\n"
    doc = tmp_path / "README.md"
    doc.write_text(before + readme.START + "\nold hand-written text\n" + readme.END + after)
    argv = ["readme", f"--results={tmp_path / 'scal'}", f"--readme={doc}"]

    def main(*extra):
        from absl import flags

        for name in ("results", "readme", "check"):
            if name in flags.FLAGS:
                delattr(flags.FLAGS, name)
        return readme.main(argv + list(extra))

    assert main("--check") == 1  # stale
    assert main() == 0
    text = doc.read_text()
    assert text.startswith(before + readme.START) and text.endswith(readme.END + after)
    assert "old hand-written text" not in text
    assert "### scaling: flow matching scales better with dimension" in text
    assert "| trend | fm scales better | steps ratio per doubling | 0.50× [0.40, 0.60] |" in text
    assert "**supported**" in text and "not shown" not in text  # headline rows only
    assert "python -m experiments.scaling --workdir=/tmp/scal" in text and "2026-12-04" in text
    assert main() == 0 and doc.read_text() == text  # idempotent
    assert main("--check") == 0
    _fixture_results(tmp_path / "scal", ratio=0.7)  # new numbers: stale again
    assert main("--check") == 1
    doc.write_text("no markers here\n")
    assert main() == 2
    with pytest.raises(ValueError, match="markers"):
        readme.replace_section("text", "x")
