"""Tests for fj.flowmaps: parameterization, objectives at the exact map, samplers, guidance.

The oracle is the analytic Gaussian mixture: its exact velocity, its exact flow map
(`gmm.flow_map`, diffrax at 1e-10), and a differentiable RK4 version of the same map whose
average velocity `ode_average_velocity` serves as the "exact two-time network" of the
objectives (checked against `gmm.flow_map` below).
"""

import dataclasses
import importlib
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flowjax as fj
from flowjax import flowmaps as fm
from flowjax._types import expand_time

PATH = fj.paths.CondOT()
ORACLE_STEPS = 64


def _mixture():
    """4 components in 2D (built inside each test so it follows the x64 setting)."""
    return fj.analytic.GaussianMixture(
        means=[[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0]],
        stds=[0.4, 0.3, 0.5, 0.35],
        weights=[0.3, 0.2, 0.25, 0.25],
    )


def _exact_model(gmm, steps=ORACLE_STEPS):
    """Two-time apply function u = exact average velocity + params["eps"] * smooth bump."""
    v = gmm.velocity_field(PATH)

    def apply_fn(params, x, t, *, s=None, y=None, key=None):
        u = fm.ode_average_velocity(v, x, s, t, solver="rk4", num_steps=steps)
        ss, tt = expand_time(jnp.broadcast_to(s, x.shape[:1]), x), expand_time(t, x)
        return u + params["eps"] * jnp.sin(1.5 * x[:, ::-1] + 2.0 * ss - tt)

    return apply_fn


def _jitted_exact_map(gmm):
    """gmm.flow_map as X(x, s, t), compiled once for all (s, t) of one batch size."""
    jitted = jax.jit(lambda x, s, t: gmm.flow_map(PATH, x, s, t))

    def X(x, s, t):
        b = x.shape[:1]
        return jitted(
            x, jnp.broadcast_to(s, b).astype(x.dtype), jnp.broadcast_to(t, b).astype(x.dtype)
        )

    return X


def _tiny_mlp(key=0, dim=2):
    mlp = fj.models.MLP((dim,), width=32, depth=2, freq_dim=16, two_times=True, rngs=nnx.Rngs(key))
    return fj.models.functional(mlp)


# ----------------------------------------------------------------------------- parameterization


def test_identity_at_equal_times_is_bitwise():
    apply_fn, params = _tiny_mlp()
    X = fm.flow_map_apply(apply_fn)
    x = jax.random.normal(jax.random.key(1), (16, 2))
    t = jax.random.uniform(jax.random.key(2), (16,))
    for s_, t_ in [(0.3, 0.3), (t, t), (0.0, 0.0), (1.0, 1.0)]:
        out = X(params, x, s_, t_)
        assert np.array_equal(np.asarray(out), np.asarray(x))
    assert np.array_equal(np.asarray(fm.as_callable(apply_fn, params)(x, t, t)), np.asarray(x))
    # ... and a genuine map elsewhere: X - x = (t - s) u exactly.
    out = X(params, x, 0.2, 0.7)
    u = apply_fn(params, x, 0.7, s=0.2)
    assert not np.allclose(out, x)
    np.testing.assert_allclose(out, x + 0.5 * u, rtol=1e-6, atol=1e-6)


def test_network_time_convention():
    """The network gets the destination time positionally and the start time as s=."""

    def apply_fn(params, x, t, *, s=None, y=None, key=None):
        return jnp.zeros_like(x) + expand_time(10.0 * jnp.asarray(t) + jnp.asarray(s), x)

    X = fm.as_callable(apply_fn, None)
    x = jnp.ones((3, 2))
    out = X(x, 0.25, 0.75)  # x + (t - s) (10 t + s) = 1 + 0.5 * 7.75
    np.testing.assert_allclose(out, 1.0 + 0.5 * 7.75)
    np.testing.assert_allclose(X.velocity(x, 0.5), 5.5)  # u(x, t, t) = 11 t


@pytest.mark.slow
def test_ode_oracle_matches_exact_flow_map(x64):
    gmm = _mixture()
    v = gmm.velocity_field(PATH)
    x = jax.random.normal(jax.random.key(0), (64, 2))
    s = jax.random.uniform(jax.random.key(1), (64,)) * 0.6
    t = s + jax.random.uniform(jax.random.key(2), (64,)) * 0.4
    exact = _jitted_exact_map(gmm)(x, s, t)
    X16 = fm.ode_flow_map(v, solver="rk4", num_steps=16)
    X64 = fm.ode_flow_map(v, solver="rk4", num_steps=ORACLE_STEPS)

    @jax.jit
    def compute():
        return (
            X16(x, s, t),
            X64(x, s, t),
            fm.ode_average_velocity(v, x, s, s, solver="rk4", num_steps=4),
            fm.velocity_of(lambda x, s, t: X16(x, s, t))(x, s),  # jvp of a plain callable
            v(x, s),
        )

    x16, x64, u_diag, v_jvp, vel = compute()
    errs = [float(jnp.max(jnp.abs(out - exact))) for out in (x16, x64)]
    assert errs[-1] < 1e-6
    assert errs[0] / errs[1] > 50  # fourth order: ~256x for 4x the steps
    # The average velocity is the instantaneous one on the diagonal, with no 0/0.
    np.testing.assert_allclose(u_diag, vel, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(v_jvp, vel, rtol=1e-10, atol=1e-10)


def test_exact_mixture_map_semigroup(x64):
    gmm = _mixture()
    X = _jitted_exact_map(gmm)
    x = jax.random.normal(jax.random.key(3), (32, 2))
    s, t, u = 0.1, jnp.linspace(0.2, 0.8, 32), 0.95
    np.testing.assert_allclose(X(X(x, s, t), t, u), X(x, s, u), atol=1e-8)
    assert float(fm.semigroup_violation(X, x, s, t, u)) < 1e-16
    # The inverse direction too: X(X(x, s, t), t, s) = x.
    np.testing.assert_allclose(X(X(x, s, u), u, s), x, atol=1e-8)


# ----------------------------------------------------------------------------- objectives


def _objective(name):
    """The module-level `loss(params, key, batch, *, model, path, **hyperparameters)`."""
    module, _, _ = fm.FLOWMAP_OBJECTIVES[name].partition(":")
    return importlib.import_module(module).loss


# case -> (objective, keyword arguments besides model and path) with the exact field as teacher.
_CASES = {
    "lmd": ("lmd", lambda v: dict(teacher=v)),
    "lmd_both": ("lmd", lambda v: dict(teacher=v, directions="both")),
    "emd": ("emd", lambda v: dict(teacher=v)),
    "progressive_map": (
        "progressive",
        lambda v: dict(teacher_map=fm.ode_flow_map(v, solver="rk4", num_steps=ORACLE_STEPS)),
    ),
    "progressive_ode": ("progressive", lambda v: dict(teacher=v, solver="rk4", solver_steps=8)),
    "consistency_distill": (
        "consistency_distill",
        lambda v: dict(teacher=v, solver="rk4", solver_steps=2),
    ),
    "shortcut": ("shortcut", lambda v: dict(teacher=v)),
    "meanflow": ("meanflow", lambda v: dict(teacher=v)),
    "lsd": ("lsd", lambda v: dict(teacher=v)),
}


# The first few run in the quick suite; the rest are marked slow (still run in CI).
_QUICK_CASES = ("lmd", "meanflow", "progressive_map", "shortcut")


@pytest.mark.parametrize(
    "case",
    [c if c in _QUICK_CASES else pytest.param(c, marks=pytest.mark.slow) for c in sorted(_CASES)],
)
def test_objective_vanishes_at_exact_map(x64, case):
    gmm = _mixture()
    v = gmm.velocity_field(PATH)
    name, kwargs = _CASES[case]
    loss_fn = _objective(name)
    batch = {"x1": gmm.sample(jax.random.key(4), 64)}
    model = _exact_model(gmm)
    f = jax.jit(lambda p, k: loss_fn(p, k, batch, model=model, path=PATH, **kwargs(v)))
    exact = float(f({"eps": 0.0}, jax.random.key(5))[0])
    perturbed, aux = f({"eps": 0.1}, jax.random.key(5))
    assert exact < 1e-8, exact
    assert float(perturbed) > 1e-5 and float(perturbed) > 1e4 * exact
    assert aux["per_example_loss"].shape == (64,)


@pytest.mark.slow
def test_consistency_training_leading_order(x64):
    """Per example, CT at the exact map = dt^2 ||grad_x X(x_t, t, 1) (u_cond - v)||^2 + O(dt^3).

    (Song et al. 2023, Thm. 2: CT equals CD up to the conditional-velocity variance carried
    through the map.) A perturbed map breaks the identity. The comparison is per example
    (median ratio): near the boundaries between modes the map bends sharply and a few examples
    need a much finer grid, which would dominate a batch mean.
    """
    gmm = _mixture()
    v = gmm.velocity_field(PATH)
    n_grid = 256
    batch = {"x1": gmm.sample(jax.random.key(6), 256)}
    key = jax.random.key(7)
    model = _exact_model(gmm, steps=32)
    f = jax.jit(
        lambda p: fm.consistency_training.loss(
            p, key, batch, model=model, path=PATH, num_steps=n_grid
        )[1]["per_example_loss"]
    )
    x0, t, _, x_t, _, _ = fm.consistency_training.sample_points(key, batch["x1"], PATH, n_grid)
    X1 = lambda x: fm.FlowMap(model)({"eps": 0.0}, x, t, jnp.ones_like(t))
    w = PATH.velocity_target(x0, batch["x1"], t) - v(x_t, t)
    _, jw = jax.jvp(X1, (x_t,), (w,))
    predicted = jnp.mean(jw**2, axis=1) / n_grid**2
    exact = np.median(np.abs(f({"eps": 0.0}) / predicted - 1))
    perturbed = np.median(np.abs(f({"eps": 1.0}) / predicted - 1))
    assert exact < 0.05, exact
    assert perturbed > 0.5, perturbed


def test_meanflow_target_matches_finite_differences(x64):
    gmm = _mixture()
    v = gmm.velocity_field(PATH)
    model = _exact_model(gmm, steps=16)
    u_fn = fm.FlowMap(model).average_velocity
    n, h = 8, 1e-5
    x = jax.random.normal(jax.random.key(8), (n, 2))
    s = jax.random.uniform(jax.random.key(9), (n,)) * 0.5
    t = s + 0.4

    @jax.jit
    def compute(params):
        vel = v(x, s)
        u, u_tgt = fm.meanflow.target(model, params, x, s, t, vel)
        fd = (u_fn(params, x + h * vel, s + h, t) - u_fn(params, x - h * vel, s - h, t)) / (2 * h)
        # MeanFlow's identity in its own time (t = 0 data; Geng et al. 2025, eq. (6)) for
        # u_MF(z, r, t) = -u(z, 1 - t, 1 - r) and v_MF(z, t) = -v(z, 1 - t).
        u_mf = lambda z, r, tm: -u_fn(params, z, 1 - tm, 1 - r)
        t_mf, r_mf = 1 - s, 1 - t
        v_mf = -v(x, 1 - t_mf)
        u0, du_dt = jax.jvp(u_mf, (x, r_mf, t_mf), (v_mf, jnp.zeros(n), jnp.ones(n)))
        residual_mf = u0 - (v_mf - (t_mf - r_mf)[:, None] * du_dt)
        return vel, u, u_tgt, fd, u_fn(params, x, s, t), residual_mf

    for eps in (0.3, 0.0):
        vel, u, u_tgt, fd, u_direct, residual_mf = compute({"eps": eps})
        np.testing.assert_allclose(u_tgt, vel + (t - s)[:, None] * fd, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(u, u_direct, rtol=1e-12)
        # The translated identity is the flowjax one with signs flipped, for any u ...
        np.testing.assert_allclose(residual_mf, -(u - u_tgt), rtol=1e-10, atol=1e-12)
    # ... and it holds at the exact map (up to the RK4 oracle's error).
    assert float(jnp.max(jnp.abs(residual_mf))) < 1e-4


def test_objectives_registry_and_signatures():
    assert set(fm.FLOWMAP_OBJECTIVES) == {
        "lmd",
        "emd",
        "progressive",
        "consistency_distill",
        "shortcut",
        "meanflow",
        "lsd",
        "consistency_training",
    }
    for name in fm.FLOWMAP_OBJECTIVES:
        for fn in (_objective(name), fj.objectives.get_objective(name).__call__):
            params = inspect.signature(fn).parameters
            names = [p for p in params if p != "self"]
            assert names[:3] == ["params", "key", "batch"], name
            assert params["model"].kind is inspect.Parameter.KEYWORD_ONLY, name
        cls = fj.objectives.get_objective(name)
        assert issubclass(cls, fj.objectives.AbstractObjective), name
        assert {"path", "model", "source"} <= {f.name for f in dataclasses.fields(cls)}, name


def test_bad_arguments_raise_early():
    gmm = _mixture()
    v = gmm.velocity_field(PATH)
    apply_fn, params = _tiny_mlp()
    batch = {"x1": jnp.zeros((4, 2))}
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="directions"):
        fm.lmd.loss(params, key, batch, model=apply_fn, path=PATH, teacher=v, directions="up")
    with pytest.raises(ValueError, match="exactly one of teacher"):
        fm.progressive.loss(params, key, batch, model=apply_fn, path=PATH)
    with pytest.raises(ValueError, match="solver"):
        fm.consistency_distill.loss(
            params, key, batch, model=apply_fn, path=PATH, teacher=v, solver="rk45"
        )
    with pytest.raises(ValueError, match="offdiag_fraction"):
        fm.meanflow.loss(params, key, batch, model=apply_fn, path=PATH, offdiag_fraction=1.5)
    with pytest.raises(TypeError, match="path"):
        fm.lsd.loss(params, key, batch, model=apply_fn, path="condot")
    with pytest.raises(ValueError, match="'x1'"):
        fm.shortcut.loss(params, key, {"x": batch["x1"]}, model=apply_fn, path=PATH)
    with pytest.raises(ValueError, match="distance"):
        fm.ConsistencyTraining(path=PATH, distance="l1")
    X = fm.as_callable(apply_fn, params)
    with pytest.raises(ValueError, match="num_steps"):
        fm.sample(X, batch["x1"], num_steps=0)
    with pytest.raises(ValueError, match="ts"):
        fm.sample_stochastic(X, batch["x1"], path=PATH, key=key, ts=jnp.array([0.5, 0.2]))
    with pytest.raises(ValueError, match="lookahead"):
        fm.guided_sample(
            X, batch["x1"], lambda x: -jnp.sum(x**2, -1), path=PATH, lookahead="oracle"
        )
    with pytest.raises(ValueError, match="lookahead_map"):
        fm.guided_sample(
            v,
            batch["x1"],
            lambda x: -jnp.sum(x**2, -1),
            path=PATH,
            kind="velocity",
            lookahead="flowmap",
        )
    with pytest.raises(ValueError, match="resample"):
        fm.importance_sample(X, batch["x1"], lambda x: x[:, 0], key=key, resample="stratified")


# ----------------------------------------------------------------------------- samplers


def test_sample_on_exact_map_is_exact_transport(x64):
    gmm = _mixture()
    X = _jitted_exact_map(gmm)
    x0 = jax.random.normal(jax.random.key(10), (32, 2))
    exact = X(x0, 0.0, 1.0)
    for k in (1, 3):
        np.testing.assert_allclose(fm.sample(X, x0, num_steps=k), exact, atol=1e-7)
    ts = jnp.array([0.0, 0.1, 0.5, 0.9, 1.0])
    np.testing.assert_allclose(fm.sample(X, x0, ts=ts), exact, atol=1e-7)
    # Backwards along a decreasing grid: data -> noise inverts the map.
    np.testing.assert_allclose(fm.sample(X, exact, ts=ts[::-1]), x0, atol=1e-7)


def test_sample_composes_network_jumps():
    apply_fn, params = _tiny_mlp(1)
    X = fm.as_callable(apply_fn, params)
    x0 = jax.random.normal(jax.random.key(11), (16, 2))
    manual = X(X(X(x0, 0.0, 1 / 3), 1 / 3, 2 / 3), 2 / 3, 1.0)
    np.testing.assert_allclose(fm.sample(X, x0, num_steps=3), manual, rtol=1e-5, atol=1e-6)
    # Jitted with the bound parameters as a pytree argument.
    out = jax.jit(lambda X, x: fm.sample(X, x, num_steps=3))(X, x0)
    np.testing.assert_allclose(out, manual, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_stochastic_sampler_on_exact_map_preserves_the_data_law():
    gmm = _mixture()
    X = fm.ode_flow_map(gmm.velocity_field(PATH), solver="rk4", num_steps=32)
    x0 = jax.random.normal(jax.random.key(12), (4000, 2))
    key = jax.random.key(13)
    out = fm.sample_stochastic(X, x0, path=PATH, key=key, ts=jnp.array([0.0, 0.4, 0.8]))
    mean = jnp.sum(gmm.weights[:, None] * gmm.means, 0)
    second = jnp.sum(
        gmm.weights[:, None, None]
        * (gmm.stds[:, None, None] ** 2 * jnp.eye(2) + gmm.means[:, :, None] * gmm.means[:, None]),
        0,
    )
    cov = second - jnp.outer(mean, mean)
    np.testing.assert_allclose(out.mean(0), mean, atol=0.1)
    np.testing.assert_allclose(jnp.cov(out.T), cov, atol=0.2)
    # A single start time is the one-jump sampler.
    one = fm.sample_stochastic(X, x0[:8], path=PATH, key=key, ts=jnp.array([0.0]))
    np.testing.assert_allclose(one, fm.sample(X, x0[:8], num_steps=1), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- guidance

_TARGET = jnp.array([1.0, 1.5])


def _reward(x):
    return -jnp.sum((x - _TARGET) ** 2, axis=-1)


def test_guidance_and_best_of_n_raise_the_reward():
    gmm = _mixture()
    X = fm.ode_flow_map(gmm.velocity_field(PATH), solver="rk4", num_steps=16)
    x0 = jax.random.normal(jax.random.key(14), (512, 2))
    base_rewards = _reward(fm.sample(X, x0, num_steps=8))
    base, base_median = float(jnp.mean(base_rewards)), float(jnp.median(base_rewards))
    for lookahead in fm.LOOKAHEADS:
        guided = fm.guided_sample(
            X, x0, _reward, path=PATH, scale=lambda t: t, num_steps=8, lookahead=lookahead
        )
        # Mean and median: the flow-map look-ahead has a steep Jacobian near the boundaries
        # between modes, which kicks a few samples far (a heavy tail of the reward).
        assert float(jnp.mean(_reward(guided))) > base + 3.0, lookahead
        assert float(jnp.median(_reward(guided))) > base_median + 3.0, lookahead
    candidates = jax.random.normal(jax.random.key(15), (8, 512, 2))
    best, info = fm.best_of_n(X, candidates, _reward, num_steps=2)
    assert info["rewards"].shape == (8, 512)
    assert float(jnp.mean(_reward(best))) > base + 3.0
    np.testing.assert_allclose(_reward(best), info["rewards"].max(0), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "resample,renoise",
    [("systematic", False), pytest.param("multinomial", True, marks=pytest.mark.slow)],
)
def test_importance_sampling_targets_the_tilted_law(resample, renoise):
    """With an exact map, the particles follow p(x1) exp(r(x1) / T); for r = -|x - c|^2 the
    tilted mixture is a mixture again (product of Gaussians), so its mean is closed form."""
    gmm = _mixture()
    X = fm.ode_flow_map(gmm.velocity_field(PATH), solver="rk4", num_steps=16)
    temp = 2.0
    m, sd, w = gmm.means, gmm.stds, gmm.weights
    prec = 1 / sd**2 + 2 / temp
    mu = (m / sd[:, None] ** 2 + 2 * _TARGET / temp) / prec[:, None]
    var = sd**2 + temp / 2  # N(c; m_k, var I) in 2D
    wt = jax.nn.softmax(jnp.log(w) - jnp.sum((_TARGET - m) ** 2, -1) / (2 * var) - jnp.log(var))
    tilted_mean = jnp.sum(wt[:, None] * mu, 0)
    x0 = jax.random.normal(jax.random.key(16), (2048, 2))
    out, info = fm.importance_sample(
        X,
        x0,
        _reward,
        key=jax.random.key(17),
        num_steps=2,
        temperature=temp,
        resample=resample,
        renoise=renoise,
        path=PATH,
    )
    np.testing.assert_allclose(out.mean(0), tilted_mean, atol=0.12)
    assert float(jnp.linalg.norm(tilted_mean - jnp.sum(w[:, None] * m, 0))) > 1.0
    assert info["ess"].shape == (3,) and float(info["ess"][0]) < 2048
    np.testing.assert_allclose(info["log_weights"], -np.log(2048), rtol=1e-5)  # resampled


# ----------------------------------------------------------------------------- distillation


@pytest.mark.slow
def test_lmd_distillation_beats_one_euler_step():
    """A small MLP flow map distilled (LMD) from the exact field: its 1-step samples are far
    closer in W2 than one Euler step of the teacher, and its semigroup violation shrinks."""
    gmm = _mixture()
    v = gmm.velocity_field(PATH)
    mlp = fj.models.MLP(
        (2,), width=64, depth=3, two_times=True, freq_dim=16, time_scale=10.0, rngs=nnx.Rngs(0)
    )
    apply_fn, params = fj.models.functional(mlp)
    chunk, chunks = 200, 6
    opt = optax.adam(optax.cosine_decay_schedule(3e-3, chunk * chunks, alpha=0.02))
    opt_state = opt.init(params)

    def loss_fn(p, k):
        x1 = gmm.sample(jax.random.fold_in(k, 1), 256)
        return fm.lmd.loss(p, k, {"x1": x1}, model=apply_fn, path=PATH, teacher=v)[0]

    @jax.jit
    def train(params, opt_state, keys):
        def step(carry, k):
            p, s = carry
            value, g = jax.value_and_grad(loss_fn)(p, k)
            updates, s = opt.update(g, s, p)
            return (optax.apply_updates(p, updates), s), value

        (params, opt_state), values = jax.lax.scan(step, (params, opt_state), keys)
        return params, opt_state, values

    x0 = jax.random.normal(jax.random.key(7), (500, 2))
    tm = jax.random.uniform(jax.random.key(9), (500,))
    data = gmm.sample(jax.random.key(8), 500)

    def violation(p):
        X = fm.as_callable(apply_fn, p)
        absolute = float(fm.semigroup_violation(X, x0, 0.0, tm, 1.0))
        return absolute, absolute / float(jnp.mean((X(x0, 0.0, 1.0) - x0) ** 2))

    init_abs, init_rel = violation(params)
    keys = jax.random.split(jax.random.key(1), chunk * chunks).reshape(chunks, chunk)
    params, opt_state, values = train(params, opt_state, keys[0])
    early_abs, _ = violation(params)
    for i in range(1, chunks):
        params, opt_state, values = train(params, opt_state, keys[i])
    final_abs, final_rel = violation(params)

    X = fm.as_callable(apply_fn, params)
    w2_map = fj.metrics.wasserstein2(fm.sample(X, x0, num_steps=1), data)
    w2_euler = fj.metrics.wasserstein2(x0 + v(x0, 0.0), data)
    assert w2_map < 0.5 * w2_euler and w2_map < 0.6, (w2_map, w2_euler)
    # Relative to the size of the jump (an untrained map is nearly the identity, which is a
    # trivial semigroup), and in absolute terms after the first chunk of training.
    assert final_rel < init_rel / 3, (init_rel, final_rel)
    assert final_abs < early_abs / 2, (early_abs, final_abs)


def test_flowmap_objectives_are_in_the_global_registry():
    # The trainer resolves objectives by name through fj.objectives; every flow-map method
    # must be reachable there and resolve to the module's own loss.
    assert len(fm.FLOWMAP_OBJECTIVES) == 8
    for name, target in fm.FLOWMAP_OBJECTIVES.items():
        assert fj.objectives.OBJECTIVES[name] == target
        module, _, attr = target.partition(":")
        assert fj.objectives.get_objective(name) is getattr(importlib.import_module(module), attr)
