"""Couplings: exact assignment vs scipy, Sinkhorn plans, label bookkeeping, SB-CFM target."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import flowjax as fj
from flowjax.couplings import (
    Independent,
    MinibatchOT,
    SchrodingerBridge,
    get_coupling,
    linear_sum_assignment,
    sinkhorn_log_plan,
)
from flowjax.objectives import flow_matching


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


# Couplings are hashable (static hyperparameters): equal configurations share one compilation.
_couple = jax.jit(lambda c, key, x0, x1, labels: c(key, x0, x1, labels), static_argnums=0)


def _mixture():
    return fj.analytic.GaussianMixture(
        means=jnp.array([[3.0, 0.0], [-2.0, 2.0], [0.0, -3.0]]), stds=jnp.array([0.4, 0.5, 0.3])
    )


def _data(n, seed=0):
    k0, k1 = jax.random.split(jax.random.key(seed))
    x0 = jax.random.normal(k0, (n, 2))
    x1, _ = _mixture().sample_with_labels(k1, n)
    return x0, x1


def _mean_cost(x0, x1):
    return float(jnp.mean(jnp.sum((x0 - x1) ** 2, axis=-1)))


def _scipy_opt_cost(x0, x1):
    c = np.sum((np.asarray(x0)[:, None] - np.asarray(x1)[None]) ** 2, axis=-1)
    r, col = scipy.optimize.linear_sum_assignment(c)
    return c[r, col].mean()


def test_linear_sum_assignment_matches_scipy():
    rng = np.random.default_rng(0)
    lsa = jax.jit(linear_sum_assignment)
    for n in (1, 6, 20):
        for trial in range(4):
            if trial % 2:
                c = rng.normal(size=(n, n))
            else:  # many ties
                c = rng.integers(0, 3, size=(n, n)).astype(np.float64)
            col = np.asarray(lsa(jnp.asarray(c)))
            assert sorted(col.tolist()) == list(range(n))
            r, sc = scipy.optimize.linear_sum_assignment(c)
            np.testing.assert_allclose(c[np.arange(n), col].sum(), c[r, sc].sum(), atol=1e-10)


def test_exact_ot_is_optimal_permutation():
    x0, x1 = _data(64)
    labels = jnp.arange(64)
    y0, y1, lab = _couple(MinibatchOT(method="exact"), jax.random.key(1), x0, x1, labels)
    np.testing.assert_array_equal(y1, x1)
    np.testing.assert_array_equal(lab, labels)
    # x0 is reordered, every row used exactly once.
    np.testing.assert_array_equal(np.sort(np.asarray(y0), axis=0), np.sort(np.asarray(x0), axis=0))
    assert len({tuple(r) for r in np.asarray(y0).tolist()}) == 64
    np.testing.assert_allclose(_mean_cost(y0, y1), _scipy_opt_cost(x0, x1), rtol=1e-12)
    assert _mean_cost(y0, y1) < 0.5 * _mean_cost(x0, x1)


def test_sinkhorn_coupling_lowers_cost():
    x0, x1 = _data(64, seed=3)
    labels = jnp.arange(64)
    y0, y1, lab = _couple(MinibatchOT(), jax.random.key(4), x0, x1, labels)
    indep, opt, sink = _mean_cost(x0, x1), _scipy_opt_cost(x0, x1), _mean_cost(y0, y1)
    assert opt <= sink + 1e-9
    assert sink < 1.3 * opt
    assert sink < 0.5 * indep
    # Every pair is made of input rows (x0 from x0, x1 from x1).
    d0 = jnp.min(jnp.sum((y0[:, None] - x0[None]) ** 2, -1), axis=1)
    assert float(jnp.max(d0)) == 0.0
    np.testing.assert_array_equal(y1, x1[lab])


def test_sb_plan_is_entropic_with_eps_two_sigma_squared():
    # The static Schrodinger bridge plan is a_i b_j exp(-||x0_i - x1_j||^2 / (2 sigma^2)) with
    # uniform marginals: check both marginals, then that the plan times exp(cost / eps) is
    # separable (rank-one), which pins eps = 2 sigma^2 on the raw cost.
    x0, x1 = _data(32, seed=5)
    sb = SchrodingerBridge(sigma=1.5)
    solve = jax.jit(
        functools.partial(sinkhorn_log_plan, epsilon=sb.epsilon, threshold=1e-9, num_iters=5000)
    )
    log_plan = solve(x0, x1)
    plan = jnp.exp(log_plan)
    np.testing.assert_allclose(plan.sum(), 1.0, atol=1e-8)
    np.testing.assert_allclose(plan.sum(axis=1), 1 / 32, rtol=1e-6)
    np.testing.assert_allclose(plan.sum(axis=0), 1 / 32, rtol=1e-6)
    cost = jnp.sum((x0[:, None] - x1[None]) ** 2, -1)
    m = log_plan + cost / (2 * 1.5**2)
    resid = m - m[:, :1] - m[:1, :] + m[0, 0]
    np.testing.assert_allclose(resid, 0.0, atol=1e-9)
    assert sb.bridge_sigma == 1.5 and sb.epsilon == 2 * 1.5**2
    assert Independent().bridge_sigma == 0.0 and MinibatchOT().bridge_sigma == 0.0


@pytest.mark.parametrize(
    "coupling",
    [
        Independent(),
        MinibatchOT(),
        MinibatchOT(replace=False),
        MinibatchOT(method="exact"),
        SchrodingerBridge(sigma=0.5),
    ],
    ids=["independent", "sinkhorn", "sinkhorn_noreplace", "exact", "sb"],
)
def test_labels_stay_with_x1(coupling):
    x0, x1 = _data(64, seed=6)
    labels = jnp.arange(64) * 3
    y0, y1, lab = _couple(coupling, jax.random.key(7), x0, x1, labels)
    assert y0.shape == x0.shape and y1.shape == x1.shape and lab.shape == (64,)
    np.testing.assert_array_equal(y1, x1[lab // 3])
    assert jax.eval_shape(coupling, jax.random.key(7), x0, x1)[2] is None


def test_image_shaped_inputs_are_flattened():
    key = jax.random.key(6)
    x0 = jax.random.normal(key, (12, 2, 2, 1))
    x1 = jax.random.normal(jax.random.fold_in(key, 1), (12, 2, 2, 1)) + 1.0
    y0, y1, _ = _couple(MinibatchOT(method="exact"), key, x0, x1, None)
    np.testing.assert_allclose(
        _mean_cost(y0.reshape(12, -1), y1.reshape(12, -1)),
        _scipy_opt_cost(x0.reshape(12, -1), x1.reshape(12, -1)),
        rtol=1e-12,
    )


def test_sb_cfm_target_equals_torchcfm_formula():
    """u = x1 - x0 + (1 - 2t) / (2 t (1 - t)) (x_t - mu_t) on CondOT (Tong et al. 2024,
    torchcfm SchrodingerBridgeConditionalFlowMatcher.compute_conditional_flow)."""
    sigma, n = 0.7, 4000
    seen = {}

    class RecordingSB(SchrodingerBridge):
        def _pair(self, key, x0, x1, labels):  # identity pairing so x0 is observable
            seen["x0"], seen["x1"] = x0, x1
            return x0, x1, labels

    def model(params, x, t, *, y=None, key=None):
        seen["x_t"], seen["t"] = x, t
        return params

    x1 = _mixture().sample(jax.random.key(8), n)

    @jax.jit
    def run(x1):
        lossf = lambda p: flow_matching.loss(  # noqa: E731
            p,
            jax.random.key(9),
            {"x1": x1},
            model=model,
            path=fj.paths.CondOT(),
            coupling=RecordingSB(sigma=sigma),
        )[0]
        # loss(p) = mean (p - u)^2, so u = p - grad * (B D) / 2 at p = 0.
        u = -jax.grad(lossf)(jnp.zeros((n, 2))) * (n * 2) / 2
        return u, seen["x0"], seen["x_t"], seen["t"][:, None]

    u, x0, x_t, t = run(x1)
    mu_t = t * x1 + (1 - t) * x0
    torchcfm_u = x1 - x0 + (1 - 2 * t) / (2 * t * (1 - t)) * (x_t - mu_t)
    np.testing.assert_allclose(u, torchcfm_u, rtol=1e-8, atol=1e-8)
    # The bridge noise has scale sigma sqrt(t (1 - t)).
    z = (x_t - mu_t) / (sigma * jnp.sqrt(t * (1 - t)))
    assert abs(float(jnp.mean(z))) < 0.05 and abs(float(jnp.std(z)) - 1) < 0.03


def test_bridge_std_derivative():
    sb = SchrodingerBridge(sigma=0.3)
    t = jnp.linspace(0.01, 0.99, 7)
    g, dg = sb.bridge_std(t)
    np.testing.assert_allclose(g, 0.3 * jnp.sqrt(t * (1 - t)), rtol=1e-12)
    np.testing.assert_allclose(
        dg, jax.vmap(jax.grad(lambda s: sb.bridge_std(s)[0]))(t), rtol=1e-10, atol=1e-14
    )
    g0, dg0 = sb.bridge_std(jnp.array([0.0, 1.0]))
    np.testing.assert_array_equal(g0, 0.0)
    np.testing.assert_array_equal(dg0, 0.0)


def test_bad_inputs():
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="same shape"):
        Independent()(jax.random.key(0), x, jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match="labels"):
        MinibatchOT()(jax.random.key(0), x, x, jnp.zeros((3,), int))
    with pytest.raises(ValueError, match="method"):
        MinibatchOT(method="hungarian")
    with pytest.raises(ValueError, match="epsilon"):
        MinibatchOT(epsilon=0.0)
    with pytest.raises(ValueError, match="sigma"):
        SchrodingerBridge(sigma=0.0)
    with pytest.raises(ValueError, match="valid couplings"):
        get_coupling("ot-cfm")
    with pytest.raises(TypeError, match="minibatch_ot"):
        get_coupling("minibatch_ot", sigma=1.0)
    with pytest.raises(ValueError, match="square"):
        linear_sum_assignment(jnp.zeros((3, 4)))
    assert get_coupling("minibatch_ot", method="exact") == MinibatchOT(method="exact")


def test_draw_pairs_follows_the_plan():
    """The two-stage draw (row from row sums, then column) has the law of the flattened plan:
    every entry's frequency within 5 standard errors of its probability."""
    n, draws = 5, 200_000
    log_plan = jax.random.normal(jax.random.key(0), (n, n)) * 1.5
    plan = np.asarray(jax.nn.softmax(log_plan.reshape(-1)))
    i, j = jax.jit(fj.couplings.draw_pairs, static_argnums=2)(jax.random.key(1), log_plan, draws)
    freq = np.bincount(np.asarray(i * n + j), minlength=n * n) / draws
    se = np.sqrt(plan * (1 - plan) / draws)
    assert np.all(np.abs(freq - plan) < 5 * se + 1e-5)
    # The minibatch-OT coupling with replacement pairs rows of x0 with rows of x1.
    x0 = jax.random.normal(jax.random.key(2), (8, 2))
    x1 = jax.random.normal(jax.random.key(3), (8, 2)) + 2.0
    coupling = fj.couplings.MinibatchOT(epsilon=0.1, num_iters=200, replace=True)
    a, c, lab = jax.jit(coupling)(jax.random.key(4), x0, x1, jnp.arange(8))
    np.testing.assert_array_equal(c, x1[lab])
    assert all(any(np.array_equal(row, r) for r in np.asarray(x0)) for row in np.asarray(a))
