"""The shared experiment core: statistics on known inputs, verdicts from fed curves, the one
evaluator, training through the library's step (vmapped over seeds), one compilation of
`fj.flowmaps.sample` for every step count, and the one results schema of both studies."""

import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import flowjax as fj
from flowjax import studies

# ------------------------------------------------------------------------------ statistics


def test_mean_ci_is_the_student_t_interval():
    x = [0.3, 1.7, 0.9, 2.4]
    st = studies.mean_ci(x)
    lo, hi = scipy.stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=scipy.stats.sem(x))
    assert st["n"] == 4 and st["mean"] == pytest.approx(np.mean(x), rel=1e-12)
    assert (st["ci_low"], st["ci_high"]) == pytest.approx((lo, hi), rel=1e-12)
    assert st["values"] == x
    # Negative control: a normal (z) interval is narrower than the t interval at n = 4.
    z = 1.959964 * scipy.stats.sem(x)
    assert st["ci_high"] - st["mean"] > z * 1.5


def test_mean_ci_collapses_for_identical_values_and_is_undefined_for_one():
    st = studies.mean_ci([0.25, 0.25, 0.25])
    assert st["ci_low"] == st["ci_high"] == st["mean"] == 0.25
    one = studies.mean_ci([0.25, None, float("nan")])
    assert one["n"] == 1 and one["mean"] == 0.25
    assert math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    assert len(one["values"]) == 3


def test_paired_log_ratio_is_a_t_interval_on_log_ratios():
    st = studies.paired_log_ratio([4.0, 8.0, None], [2.0, 2.0, 3.0])
    d = np.log([2.0, 4.0])
    half = scipy.stats.t.ppf(0.975, 1) * np.std(d, ddof=1) / math.sqrt(2)
    assert st["n"] == 2 and st["n_missing"] == 1
    assert st["ratio"] == pytest.approx(math.sqrt(8.0), rel=1e-12)  # geometric mean of 2 and 4
    assert st["ci_low"] == pytest.approx(math.exp(d.mean() - half), rel=1e-12)
    assert st["ci_high"] == pytest.approx(math.exp(d.mean() + half), rel=1e-12)
    same = studies.paired_log_ratio([3.0, 6.0], [1.0, 2.0])
    assert same["ratio"] == same["ci_low"] == same["ci_high"] == pytest.approx(3.0, rel=1e-12)


def test_steps_to_threshold():
    steps, values = [10, 100, 1000], [1.0, 0.0, 0.5]
    # Linear in log(step) between (10, 1) and (100, 0): value 0.5 at sqrt(10 * 100).
    assert studies.steps_to_threshold(steps, values, 0.5) == pytest.approx(math.sqrt(1000.0))
    assert studies.steps_to_threshold(steps, values, 0.5, interpolate=False) == 100
    assert studies.steps_to_threshold(steps, values, 2.0) == 10  # the first evaluation
    assert studies.steps_to_threshold(steps, values, -1.0) is None  # censored
    assert studies.steps_to_threshold([1, 2, 4], [3.0, 1.0, 5.0], 1.0) == 2  # first crossing
    assert studies.steps_to_threshold([1, 2], [float("nan"), 0.1], 0.5) == 2
    assert studies.value_at_step([0, 10, 20], [0.0, 1.0, 3.0], 15.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="differ in length"):
        studies.steps_to_threshold([1, 2], [1.0], 0.5)


def test_censored_log_ratio_bounds():
    # The denominator side missed the threshold in seed 1: counted at the last step (1000),
    # the geometric-mean ratio num / den is an upper bound ... of num / den, i.e. the
    # numerator side is at least this much slower.
    b = studies.censored_log_ratio([100.0, 200.0], [50.0, None], 1000.0)
    assert b["kind"] == "upper" and b["n_censored"] == 1 and b["n"] == 2
    assert b["bound"] == pytest.approx(math.sqrt(2.0 * 0.2), rel=1e-12)
    b = studies.censored_log_ratio([None, 200.0], [50.0, 100.0], 1000.0)
    assert b["kind"] == "lower" and b["bound"] == pytest.approx(math.sqrt(20.0 * 2.0))
    assert studies.censored_log_ratio([1.0, 2.0], [1.0, 2.0], 10.0) is None  # nothing censored
    assert studies.censored_log_ratio([None, 2.0], [None, 2.0], 10.0) is None  # both sides


def test_eval_steps_are_log_spaced_multiples_of_the_dispatch():
    steps = studies.eval_steps(50, 2000, 7)
    assert steps[0] == 50 and steps[-1] == 2000
    assert all(s % 50 == 0 for s in steps) and steps == sorted(set(steps))
    ratios = np.diff(np.log(steps))
    assert ratios.max() < 2 * ratios.min() + 0.3  # roughly even in log(step)
    with pytest.raises(ValueError, match="multiple"):
        studies.eval_steps(30, 100, 3)


def _speedup_from_curves(fast, slow, threshold):
    steps = [10, 100, 1000]
    f = [studies.steps_to_threshold(steps, c, threshold) for c in fast]
    s = [studies.steps_to_threshold(steps, c, threshold) for c in slow]
    return studies.paired_log_ratio(s, f)


def test_verdicts_computed_from_fed_curves():
    threshold = 0.5
    # "fast" crosses at step 100 (value exactly at the threshold: no interpolation needed)
    # in every seed; "slow" at ~1000 / ~1000 / ~316: the speed-up CI lies above 1.
    fast = [[1.0, 0.5, 0.2], [1.0, 0.5, 0.1], [1.0, 0.5, 0.3]]
    slow = [[1.0, 0.9, 0.5], [1.0, 0.8, 0.5], [1.0, 0.6, 0.5]]
    st = _speedup_from_curves(fast, slow, threshold)
    v = studies.verdict("fast needs fewer steps", "m", st)
    assert v["verdict"] == "supported" and v["ci_low"] > 1
    assert set(v) == {"claim", "metric", "ratio", "ci_low", "ci_high", "verdict"}
    # The same claim the other way round is refuted, not merely unproven.
    back = studies.verdict("slow needs fewer steps", "m", _speedup_from_curves(slow, fast, 0.5))
    assert back["verdict"] == "not supported"
    # Negative control: seeds that disagree leave it open.
    mixed = _speedup_from_curves([fast[0], slow[1]], [slow[0], fast[1]], threshold)
    assert studies.verdict("x", "m", mixed)["verdict"] == "not significant"
    # A target claim ("ratio <= 1.15"): supported only when the whole interval is below it.
    cell = studies.mean_ci([0.30, 0.31, 0.32])
    r = studies.ratio_to(cell, 0.30)
    assert studies.verdict("c", "kl", r, threshold=1.15, above=False)["verdict"] == "supported"
    assert studies.verdict("c", "kl", r, threshold=0.9, above=False)["verdict"] == "not supported"
    assert studies.verdict("c", "kl", r, threshold=1.0, above=False)["verdict"] == "not significant"
    assert studies.verdict("c", "kl", {"ratio": 1.0})["verdict"] == "not significant"


# ------------------------------------------------------------------------------ evaluator


def test_evaluator_uses_the_dataset_density():
    spec = fj.data.spec("checkerboard")
    ref = fj.data.reference_samples("checkerboard", 2000, 3, "test")
    samples = fj.data.reference_samples("checkerboard", 4000, 4, "test")
    opts = fj.metrics.EvalOptions(hist_bins=16, energy_samples=500, w2_samples=200)
    ev = fj.metrics.make_evaluator("checkerboard", reference=ref, options=opts)
    assert ev.metrics == ("hist_kl", "energy", "w2") and ev.primary == "hist_kl"
    want = fj.metrics.histogram_kl(
        lambda x: fj.metrics.checkerboard_density(x, num_cells=4, low=-4.0, high=4.0),
        samples,
        bins=16,
        range=(-4.0, 4.0),
    )
    got = ev(samples)
    assert got["hist_kl"] == pytest.approx(want, rel=1e-12)
    # The spec's density is the checkerboard: 1/32 on the 8 filled cells, 0 on the others.
    np.testing.assert_allclose(
        np.exp(spec.log_density(np.array([[-3.0, -3.0], [-1.0, -3.0]]))), [1 / 32, 0.0]
    )
    # Negative control: samples spread over the whole square score much worse.
    uniform = np.random.default_rng(0).uniform(-4, 4, (4000, 2))
    assert ev(uniform)["hist_kl"] > 10 * got["hist_kl"]
    assert all(math.isnan(v) for v in ev(np.full((10, 2), np.nan)).values())
    with pytest.raises(ValueError, match="exact density"):
        fj.metrics.make_evaluator("moons", ("hist_kl",), reference=ref)


@pytest.mark.slow
def test_evaluator_kl_of_the_exact_field_is_zero():
    """KL(data || model) = E[log p - log q] with q the ODE likelihood of the exact mixture
    velocity: ~0, and nll = the data's entropy estimate on the same points."""
    from flowjax.flowmaps.teacher import MixtureTeacher

    gmm = fj.analytic.GaussianMixture(**fj.data.gmm_params("gmm").as_dict())
    path = fj.paths.CondOT()
    opts = fj.metrics.EvalOptions(likelihood_samples=16, likelihood_tol=1e-5)
    ev = fj.metrics.make_evaluator("gmm", ("kl", "nll"), num_reference=16, options=opts)
    exact = MixtureTeacher(gmm, path)
    out = ev(ev.reference, field=exact)
    assert abs(out["kl"]) < 2e-3
    points, log_p = ev.likelihood_points
    assert out["nll"] == pytest.approx(-np.mean(log_p), abs=2e-3)
    # Negative control: a field that is wrong by a constant drift has a clearly positive KL.
    drift = lambda x, t: exact(x, t) + 0.5  # noqa: E731
    assert ev(ev.reference, field=drift, metrics=("kl",))["kl"] > 0.05


def test_trainer_metric_goes_through_the_evaluator():
    from flowjax.train import evaluation

    x = fj.data.reference_samples("gmm", 300, 1)
    r = fj.data.reference_samples("gmm", 500, 2)
    assert evaluation.compute_metric("energy", x, r) == pytest.approx(
        fj.metrics.energy_distance(x, r), rel=1e-12
    )
    assert evaluation.compute_metric("none", x, r) is None
    assert evaluation.resolve_metric("auto", fj.data.spec("digits")) == "digits_fd"
    assert evaluation.resolve_metric("auto", fj.data.spec("moons")) == "energy"


# ------------------------------------------------------------------------------ training


def _toy_loss(net):
    def loss(params, key, batch):
        x1 = batch["x1"]
        k0, kt = jax.random.split(key)
        x0 = jax.random.normal(k0, x1.shape)
        t = jax.random.uniform(kt, (x1.shape[0],))
        xt = t[:, None] * x1 + (1 - t[:, None]) * x0
        value = jnp.mean((net.apply_fn(params, xt, t) - (x1 - x0)) ** 2)
        return value, {"t_mean": jnp.mean(t)}

    return loss


@pytest.mark.slow
def test_seed_trainer_is_the_train_step_per_seed():
    """Training every seed at once (vmap of `make_update`) equals the jitted, sharded
    `make_train_step` run on each seed alone; seeds differ."""
    from configs import default

    optim = default.get_config().optim
    net = studies.build_network("mlp", "tiny", (2,))
    loss = _toy_loss(net)
    trainer = studies.SeedTrainer(loss, net, optim, 10, ema_decay=0.9)
    stream = studies.BatchStream("gmm", [0, 5], 32, 10, 5)
    state, losses = trainer.train(stream)
    assert losses.shape == (2, 10) and list(np.asarray(state.step)) == [10, 10]

    mesh = fj.train.make_mesh(1, 1, jax.devices()[:1])
    one = fj.train.state.init_state(net.init_params, trainer.optimizer, 5, 1)
    one = jax.tree.map(jnp.copy, one)  # params and ema[0] are one buffer eagerly; donated twice
    shard = fj.train.state_shardings(one, mesh)
    step = fj.train.make_train_step(
        loss,
        trainer.optimizer,
        trainer.schedule,
        mesh=mesh,
        state_sharding=shard,
        ema_decays=(0.9,),
    )
    for chunk in stream:
        one, _ = step(one, {"x1": jnp.asarray(chunk["x1"][1])})
    for a, b in zip(jax.tree.leaves(one.ema), jax.tree.leaves(state.ema), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b)[1], rtol=1e-5, atol=1e-6)
    first = jax.tree.leaves(state.params)[0]
    assert not np.allclose(np.asarray(first[0]), np.asarray(first[1]))


def test_logged_lr_is_the_rate_applied_when_steps_are_skipped():
    """With on_nonfinite="skip" a skipped step does not advance the optimizer, so the logged
    lr is the schedule at the optimizer's own count (negative control: at state.step)."""
    import ml_collections
    import optax

    net = studies.build_network("mlp", "tiny", (2,))
    base = _toy_loss(net)

    def loss(params, key, batch):
        value, aux = base(params, key, batch)
        bad = batch["x1"][0, 0] > 1e6  # the marked batch gives a NaN loss
        return jnp.where(bad, jnp.nan, value), aux

    optim = ml_collections.ConfigDict(
        dict(
            name="adamw",
            lr=1e-2,
            warmup_steps=10,
            schedule="cosine",
            min_lr_ratio=0.0,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            grad_clip=0.0,
            accum_steps=1,
        )
    )
    optimizer, schedule = fj.train.make_optimizer(optim, 20)
    update = jax.jit(
        fj.train.step.make_update(loss, optimizer, schedule, ema_decays=(0.9,), on_nonfinite="skip")
    )
    state = fj.train.state.init_state(net.init_params, optimizer, 0, 1)
    x = np.array(jax.random.normal(jax.random.key(0), (6, 16, 2)))
    x[2, 0, 0] = 1e7  # step 2 is skipped
    state, m = update(state, {"x1": jnp.asarray(x)})
    assert list(np.asarray(m["finite"])) == [1, 1, 0, 1, 1, 1]
    assert int(state.step) == 6 and int(state.num_skipped) == 1
    applied = [float(schedule(c)) for c in (0, 1, 2, 2, 3, 4)]  # the skip keeps count 2
    np.testing.assert_allclose(np.asarray(m["lr"]), applied, rtol=1e-6)
    assert not np.allclose(np.asarray(m["lr"])[3:], [float(schedule(s)) for s in (3, 4, 5)])
    count = optax.tree_utils.tree_get_all_with_path(state.opt_state, "count")[-1][1]
    assert int(count) == 5


# ------------------------------------------------------------------------------ flow maps


class _Traces:
    """A hashable (by identity) trace log."""

    def __init__(self):
        self.calls = []

    def __len__(self):
        return len(self.calls)

    def clear(self):
        self.calls.clear()


class _CountingMap(eqx.Module):
    """X(x, s, t) = x + (t - s) w x; counts its traces (one per compilation of a sampler)."""

    w: jax.Array
    traces: _Traces = eqx.field(static=True)

    def __call__(self, x, s, t):
        self.traces.calls.append(1)
        return x + (t - s) * self.w * x


def test_flowmaps_sample_compiles_once_for_every_step_count():
    traces = _Traces()
    X = _CountingMap(jnp.float32(0.3), traces)
    x0 = jax.random.normal(jax.random.key(0), (5, 2))
    for k in (1, 2, 4, 8):
        x = fj.flowmaps.sample(X, x0, num_steps=k)
        # The k jumps of the exact linear flow: prod_i (1 + w / k) x0.
        np.testing.assert_allclose(x, (1 + 0.3 / k) ** k * x0, rtol=1e-5)
    assert len(traces) == 1
    # Negative control: explicit grids of new lengths compile again.
    for k in (3, 5):
        fj.flowmaps.sample(X, x0, ts=jnp.linspace(0, 1, k + 1))
    assert len(traces) == 3
    traces.clear()
    key, path = jax.random.key(1), fj.paths.CondOT()
    for k in (1, 2, 4, 8):
        fj.flowmaps.sample_stochastic(X, x0, path=path, key=key, num_steps=k)
    assert len(traces) == 2  # the first jump and the loop body, traced once
    # Song et al. 2023, Algorithm 1 at k = 2: re-noise at t = 1/2 with fold_in(key, 1).
    x1 = X(x0, 0.0, 1.0)
    eps = jax.random.normal(jax.random.fold_in(key, 1), x0.shape)
    want = X(path.alpha(0.5) * x1 + path.sigma(0.5) * eps, 0.5, 1.0)
    got = fj.flowmaps.sample_stochastic(X, x0, path=path, key=key, num_steps=2)
    np.testing.assert_allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        fj.flowmaps.sample(X, x0, num_steps=0)
    with pytest.raises(ValueError, match="exactly one of ts and num_steps"):
        fj.flowmaps.sample_stochastic(X, x0, path=path, key=key)


# ------------------------------------------------------------------------------ schema

SCHEMA_TOP = {
    "study",
    "command",
    "config",
    "seeds",
    "machine",
    "datasets",
    "wall_seconds",
    "cpu_seconds",
}
VERDICT_KEYS = {"claim", "metric", "ratio", "ci_low", "ci_high", "verdict"}


def check_study_schema(directory, study: str) -> dict:
    """The one results schema every study writes (DESIGN.md); used by test_compare.py and
    test_flowmaps_experiment.py on their tiny runs of the two studies."""
    r = json.loads((directory / "results.json").read_text())
    vocabulary = set(fj.metrics.METRICS) | {"map_mse"}  # map_mse: error to the exact flow map
    assert SCHEMA_TOP <= set(r) and r["study"] == study
    assert (directory / "report.md").read_text().strip() and list(directory.glob("*.png"))
    for ds in r["datasets"].values():
        assert ds["num_seeds"] == len(r["seeds"])
        assert ds["verdicts"] and all(set(v) == VERDICT_KEYS for v in ds["verdicts"])
        assert {v["verdict"] for v in ds["verdicts"]} <= set(studies.VERDICTS)
        assert set(ds["metrics"]) <= vocabulary and ds["primary_metric"] == ds["metrics"][0]
        assert ds["findings"]
    return r


def test_record_writes_the_schema(tmp_path):
    """A study written on the core in a few lines produces the shared schema (strict JSON)."""
    import ml_collections

    config = ml_collections.ConfigDict({"seed": 0})
    record = studies.Record("toy", config, [0, 1], "python -m experiments.toy")
    a, b = [1.0, 2.0], [2.0, 4.1]
    stats = studies.paired_log_ratio(b, a)
    ds = {"metrics": ["w2"], "primary_metric": "w2", "findings": ["b is worse"], "x": math.nan}
    record.add("gmm", ds, verdicts=[studies.verdict("b above a", "w2", stats)], num_seeds=2)
    record.finish(
        str(tmp_path),
        render=lambda r: "\n".join(studies.verdict_table(r["datasets"]["gmm"]["verdicts"])),
    )
    r = json.loads((tmp_path / "results.json").read_text())
    assert SCHEMA_TOP <= set(r) and r["datasets"]["gmm"]["x"] is None  # NaN -> null
    assert r["datasets"]["gmm"]["verdicts"][0]["verdict"] == "supported"
    assert "**supported**" in (tmp_path / "report.md").read_text()
