"""Likelihoods by the augmented ODE against the analytic Gaussian mixture."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj


@pytest.fixture(autouse=True, scope="module")
def x64():
    prev = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", prev)


@pytest.fixture(scope="module")
def gmm(x64):
    return fj.analytic.GaussianMixture(
        means=jnp.array([[2.0, 0.0], [-2.0, 1.0], [0.0, -2.0]]),
        stds=jnp.array([0.5, 0.4, 0.6]),
        weights=jnp.array([0.5, 0.3, 0.2]),
    )


@pytest.fixture(scope="module")
def fields(gmm):
    paths = {"condot": fj.paths.CondOT(), "cosine": fj.paths.Cosine()}
    return {k: (p, gmm.velocity_field(p)) for k, p in paths.items()}


@pytest.fixture(scope="module")
def data(gmm):
    x = gmm.sample(jax.random.key(0), 12)
    return jnp.concatenate([x, jnp.array([[0.0, 0.0], [4.0, -3.0]])])  # and two off-mode points


@pytest.mark.parametrize("name", ["condot", pytest.param("cosine", marks=pytest.mark.slow)])
def test_exact_log_prob_matches_mixture(gmm, fields, data, name):
    path, v = fields[name]
    logp, info = fj.likelihood.log_prob(v, data, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(logp, gmm.log_prob(data), atol=1e-4)
    np.testing.assert_allclose(info["prior_logp"] + info["delta"], logp, atol=1e-12)
    np.testing.assert_allclose(
        info["prior_logp"], fj.likelihood.standard_normal_log_prob(info["x0"])
    )
    assert int(info["nfe"]) == 1 + 6 * int(info["num_steps"])  # dopri5, FSAL
    if name == "condot":
        # t_eps integrates from 1 - t_eps down to t_eps (the same compiled solve): with the
        # exact marginal at t_eps in place of the prior, the change of variables gives the
        # exact marginal at 1 - t_eps.
        t_eps = 0.01
        logp_eps, info = fj.likelihood.log_prob(v, data, rtol=1e-8, atol=1e-8, t_eps=t_eps)
        np.testing.assert_allclose(
            gmm.log_prob_t(path, info["x0"], t_eps) + info["delta"],
            gmm.log_prob_t(path, data, 1 - t_eps),
            atol=1e-4,
        )
        np.testing.assert_allclose(logp_eps, info["prior_logp"] + info["delta"], atol=1e-12)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(fields, data, probe):
    _, v = fields["condot"]
    x = data[:4]
    # Fixed steps: every probe draw sees the same trajectory and stage times, so the mean of
    # the Hutchinson estimates converges to the exact-divergence value of the same solve.
    exact, info = fj.likelihood.log_prob(v, x, solver="dopri5", num_steps=16)
    assert int(info["nfe"]) == 1 + 6 * 16
    keys = jax.random.split(jax.random.key(1 if probe == "rademacher" else 2), 100)
    est = np.stack(
        [
            fj.likelihood.log_prob(
                v,
                x,
                divergence="hutchinson",
                key=k,
                num_probes=4,
                probe=probe,
                solver="dopri5",
                num_steps=16,
            )[0]
            for k in keys
        ]
    )
    mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(len(keys))
    assert np.all(se > 1e-4)  # the estimates do vary from draw to draw
    assert np.all(np.abs(mean - exact) < 3 * se), (mean - exact, se)


class TinyField(eqx.Module):
    w: jax.Array
    b: jax.Array
    u: jax.Array

    def __call__(self, x, t):
        return jnp.tanh(x @ self.w + t * self.b) @ self.u


def test_gradient_through_log_prob_matches_finite_differences(data):
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    field = TinyField(
        0.5 * jax.random.normal(k1, (2, 3)),
        jax.random.normal(k2, (3,)),
        0.5 * jax.random.normal(k3, (3, 2)),
    )
    x = data[:6]

    def loss(f):
        return jnp.mean(fj.likelihood.log_prob(f, x, solver="dopri5", num_steps=8)[0])

    grad = jax.grad(loss)(field)
    flat, unravel = jax.flatten_util.ravel_pytree(field)
    g_ad = jax.flatten_util.ravel_pytree(grad)[0]
    h = 1e-6
    g_fd = np.array(
        [
            (loss(unravel(flat.at[i].add(h))) - loss(unravel(flat.at[i].add(-h)))) / (2 * h)
            for i in range(flat.size)
        ]
    )
    assert np.max(np.abs(g_fd)) > 1e-2  # a non-trivial gradient
    np.testing.assert_allclose(g_ad, g_fd, rtol=1e-6, atol=1e-8)


@pytest.mark.slow
def test_linear_field_closed_form():
    # v = a x: x(0) = exp(-a) x1 and div v = a D, so log p1(x1) = log N(exp(-a) x1) - a D.
    a, x = 0.7, jnp.array([[0.3, -1.2, 2.0], [1.0, 0.0, -0.5]])
    logp, info = fj.likelihood.log_prob(lambda y, t: a * y, x, rtol=1e-10, atol=1e-10)
    expected = fj.likelihood.standard_normal_log_prob(np.exp(-a) * x) - a * 3
    np.testing.assert_allclose(logp, expected, atol=1e-8)
    np.testing.assert_allclose(info["delta"], -a * 3, atol=1e-9)


def test_bits_per_dim_and_dequantize():
    d = 3 * 4 * 4
    # Uniform on [-1, 1]^D in model space (log p = -D ln 2) is 8 bits: 256 equal levels.
    np.testing.assert_allclose(fj.likelihood.bits_per_dim(-d * np.log(2.0), d), 8.0)
    # The same data scaled to [0, 1) (scale 1/256) with a uniform density there: also 8 bits.
    np.testing.assert_allclose(fj.likelihood.bits_per_dim(0.0, d, scale=1 / 256), 8.0)
    # A density twice as high everywhere saves exactly one bit per dimension.
    np.testing.assert_allclose(fj.likelihood.bits_per_dim(0.0, d), 7.0)

    images = jnp.arange(256, dtype=jnp.uint8).reshape(4, 8, 8, 1)
    y = fj.likelihood.dequantize(jax.random.key(0), images)
    lo = -1.0 + images.astype(jnp.float32) * (2 / 256)
    assert y.dtype == jnp.float32 and y.shape == images.shape
    assert np.all(y >= lo) and np.all(y < lo + 2 / 256)
    assert float(jnp.std((y - lo) / (2 / 256))) > 0.2  # really spread over each bin
    with pytest.raises(TypeError, match="must be integers"):
        fj.likelihood.dequantize(jax.random.key(0), y)
    with pytest.raises(ValueError, match="num_dims"):
        fj.likelihood.bits_per_dim(0.0, 0)


def test_errors(fields, data):
    _, v = fields["condot"]
    with pytest.raises(ValueError, match="needs a PRNG key"):
        fj.likelihood.log_prob(v, data, divergence="hutchinson")
    with pytest.raises(ValueError, match="valid: exact, hutchinson"):
        fj.likelihood.log_prob(v, data, divergence="skilling")
    with pytest.raises(ValueError, match="valid: rademacher, gaussian"):
        fj.likelihood.log_prob(v, data, divergence="hutchinson", key=jax.random.key(0), probe="x")
    with pytest.raises(ValueError, match="t_eps"):
        fj.likelihood.log_prob(v, data, t_eps=0.7)
    with pytest.raises(ValueError, match=r"shape \(B, \*D\)"):
        fj.likelihood.log_prob(v, data[0])
