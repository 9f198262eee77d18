"""The analytic Gaussian-mixture oracle satisfies the identities that make it an oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj

PATHS = [fj.paths.CondOT(), fj.paths.VP(), fj.paths.Cosine(), fj.paths.EDM(sigma_min=0.0)]
IDS = ["condot", "vp", "cosine", "edm"]


def _gmm():
    return fj.analytic.GaussianMixture(
        means=jnp.array([[2.0, 0.0, 1.0], [-1.0, 1.5, 0.0], [0.0, -2.0, -1.0]]),
        stds=jnp.array([0.3, 0.5, 0.2]),
        weights=jnp.array([0.5, 0.3, 0.2]),
    )


@pytest.mark.parametrize("path", PATHS, ids=IDS)
@pytest.mark.parametrize("t", [0.05, 0.4, 0.9])
def test_continuity_equation(x64, path, t):
    # d/dt log p_t + div u_t + u_t . grad log p_t = 0 (Fokker-Planck without noise),
    # every term by autodiff of the closed forms.
    gmm = _gmm()
    x = 1.5 * jax.random.normal(jax.random.key(0), (16, 3))
    logp = lambda xi, ti: gmm.log_prob_t(path, xi[None], ti)[0]
    dlogp_dt = jax.vmap(jax.grad(logp, argnums=1), (0, None))(x, t)
    grad_logp = jax.vmap(jax.grad(logp), (0, None))(x, t)
    u = gmm.velocity(path, x, t)
    div = jax.vmap(
        lambda xi: jnp.trace(jax.jacfwd(lambda y: gmm.velocity(path, y[None], t)[0])(xi))
    )(x)
    residual = dlogp_dt + div + jnp.sum(u * grad_logp, -1)
    np.testing.assert_allclose(residual, 0.0, atol=1e-9)


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_score_is_gradient_of_log_density(x64, path):
    gmm = _gmm()
    x = jax.random.normal(jax.random.key(1), (16, 3))
    t = jnp.linspace(0.05, 0.95, 16)
    auto = jax.vmap(jax.grad(lambda xi, ti: gmm.log_prob_t(path, xi[None], ti)[0]))(x, t)
    np.testing.assert_allclose(gmm.score(path, x, t), auto, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_velocity_score_and_posterior_are_one_prediction(x64, path):
    # The exact velocity, score and E[x1|x_t] are three kinds of the same prediction.
    gmm = _gmm()
    x = jax.random.normal(jax.random.key(2), (16, 3))
    # Up to t = 0.8: converting to the score divides by sigma, which EDM makes ~1e-8 near t = 1.
    t = jnp.linspace(0.05, 0.8, 16)
    x1_hat = gmm.posterior_mean(path, x, t)
    for kind, exact in (("velocity", gmm.velocity(path, x, t)), ("score", gmm.score(path, x, t))):
        conv = fj.paths.convert(x1_hat, src="x1", dst=kind, path=path, x=x, t=t)
        np.testing.assert_allclose(conv, exact, rtol=1e-9, atol=1e-9)


def test_marginals_at_the_ends(x64):
    gmm = _gmm()
    x = jax.random.normal(jax.random.key(3), (10, 3))
    path = fj.paths.CondOT()
    np.testing.assert_allclose(gmm.log_prob_t(path, x, 1.0), gmm.log_prob(x), rtol=1e-12)
    std_normal = -0.5 * jnp.sum(x**2, -1) - 1.5 * jnp.log(2 * jnp.pi)
    np.testing.assert_allclose(gmm.log_prob_t(path, x, 0.0), std_normal, rtol=1e-12)


def test_log_prob_against_scipy(x64):
    from scipy.stats import multivariate_normal

    gmm = _gmm()
    x = np.asarray(jax.random.normal(jax.random.key(4), (7, 3)))
    ref = np.log(
        sum(
            float(w) * multivariate_normal(np.asarray(m), float(s) ** 2 * np.eye(3)).pdf(x)
            for m, s, w in zip(gmm.means, gmm.stds, gmm.weights, strict=True)
        )
    )
    np.testing.assert_allclose(gmm.log_prob(x), ref, rtol=1e-10)


def test_sample_moments(x64):
    gmm = _gmm()
    x = gmm.sample(jax.random.key(5), 200_000)
    mean = jnp.sum(gmm.weights[:, None] * gmm.means, 0)
    second = jnp.sum(gmm.weights[:, None] * (gmm.means**2 + gmm.stds[:, None] ** 2), 0)
    np.testing.assert_allclose(x.mean(0), mean, atol=0.01)
    np.testing.assert_allclose((x**2).mean(0), second, atol=0.03)


def test_flow_map_identity_inverse_and_semigroup(x64):
    gmm, path = _gmm(), fj.paths.Cosine()
    x = jax.random.normal(jax.random.key(6), (32, 3))
    np.testing.assert_allclose(gmm.flow_map(path, x, 0.3, 0.3), x, atol=1e-12)
    there = gmm.flow_map(path, x, 0.1, 0.9)
    np.testing.assert_allclose(gmm.flow_map(path, there, 0.9, 0.1), x, atol=1e-7)
    two_jumps = gmm.flow_map(path, gmm.flow_map(path, x, 0.1, 0.5), 0.5, 0.9)
    np.testing.assert_allclose(two_jumps, there, atol=1e-8)
    # Per-example start and end times in one solve equal separate solves.
    s, t = jnp.full(32, 0.1), jnp.where(jnp.arange(32) < 16, 0.5, 0.9)
    both = gmm.flow_map(path, x, s, t)
    np.testing.assert_allclose(both[16:], there[16:], atol=1e-8)
    np.testing.assert_allclose(both[:16], gmm.flow_map(path, x[:16], 0.1, 0.5), atol=1e-8)


def test_flow_map_transports_noise_to_the_mixture(x64):
    # Pushing N(0, I) through the exact map gives mixture samples: compare the first two moments
    # and the average log-likelihood with fresh data.
    gmm, path = _gmm(), fj.paths.CondOT()
    x0 = jax.random.normal(jax.random.key(7), (4000, 3))
    x1 = gmm.flow_map(path, x0, 0.0, 1.0)
    ref = gmm.sample(jax.random.key(8), 4000)
    np.testing.assert_allclose(x1.mean(0), ref.mean(0), atol=0.08)
    np.testing.assert_allclose(jnp.cov(x1.T), jnp.cov(ref.T), atol=0.15)
    lp, lp_ref = gmm.log_prob(x1), gmm.log_prob(ref)
    stderr = jnp.sqrt(lp.var() / lp.size + lp_ref.var() / lp_ref.size)
    assert abs(float(lp.mean() - lp_ref.mean())) < 4 * float(stderr)


def test_label_restricts_to_one_component(x64):
    gmm, path = _gmm(), fj.paths.CondOT()
    single = fj.analytic.GaussianMixture(gmm.means[1:2], gmm.stds[1:2])
    x = jax.random.normal(jax.random.key(9), (8, 3))
    np.testing.assert_allclose(
        gmm.velocity(path, x, 0.6, label=1), single.velocity(path, x, 0.6), rtol=1e-10
    )
    np.testing.assert_allclose(
        gmm.log_prob_t(path, x, 0.6, label=jnp.full(8, 1)),
        single.log_prob_t(path, x, 0.6),
        rtol=1e-10,
    )


def test_bad_input():
    with pytest.raises(ValueError, match=r"means must have shape \(K, D\)"):
        fj.analytic.GaussianMixture(means=jnp.zeros(3), stds=1.0)
    with pytest.raises(ValueError, match="stds and weights must have shape"):
        fj.analytic.GaussianMixture(means=jnp.zeros((3, 2)), stds=jnp.ones(2))
    with pytest.raises(ValueError, match="stds must be positive"):
        fj.analytic.GaussianMixture(means=jnp.zeros((2, 2)), stds=jnp.array([1.0, 0.0]))
    gmm = _gmm()
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        gmm.velocity(fj.paths.CondOT(), jnp.zeros((4, 2)), 0.5)
    with pytest.raises(ValueError, match="t must be a scalar"):
        gmm.velocity(fj.paths.CondOT(), jnp.zeros((4, 3)), jnp.zeros(3))
