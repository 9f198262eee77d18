"""Affine paths and prediction conversions: closed forms, inverses and round trips."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj

PATHS = {
    "condot": fj.paths.CondOT(),
    "vp": fj.paths.VP(beta_min=0.1, beta_max=20.0),
    "cosine": fj.paths.Cosine(),
    "poly3": fj.paths.Polynomial(3.0),
    "edm": fj.paths.EDM(),
}
KINDS = fj.paths.KINDS


def _points(key, shape=(6, 3)):
    k0, k1, kt = jax.random.split(key, 3)
    x0 = jax.random.normal(k0, shape)
    x1 = 2.0 * jax.random.normal(k1, shape) + 1.0
    t = jax.random.uniform(kt, shape[:1], minval=0.05, maxval=0.95)
    return x0, x1, t


@pytest.mark.parametrize("name", PATHS)
def test_derivatives_are_exact(x64, name):
    path = PATHS[name]
    t = jnp.linspace(0.02, 0.98, 25)
    np.testing.assert_allclose(path.d_alpha(t), jax.vmap(jax.grad(path.alpha))(t), rtol=1e-10)
    np.testing.assert_allclose(path.d_sigma(t), jax.vmap(jax.grad(path.sigma))(t), rtol=1e-10)


@pytest.mark.parametrize("name", PATHS)
def test_endpoints_and_monotone_log_snr(x64, name):
    path = PATHS[name]
    assert abs(float(path.alpha(0.0))) < 0.02 and abs(float(path.sigma(0.0)) - 1) < 1e-3
    assert abs(float(path.alpha(1.0)) - 1) < 1e-5 and abs(float(path.sigma(1.0))) < 3e-3
    lam = path.log_snr(jnp.linspace(0.01, 0.99, 99))
    assert bool(jnp.all(jnp.diff(lam) > 0))


@pytest.mark.parametrize("name", PATHS)
def test_t_from_log_snr_inverts(x64, name):
    path = PATHS[name]
    t = jnp.linspace(0.01, 0.99, 50)
    np.testing.assert_allclose(path.t_from_log_snr(path.log_snr(t)), t, atol=1e-10)
    # The generic bisection of the base class agrees with the closed form.
    generic = fj.paths.AffinePath.t_from_log_snr(path, path.log_snr(t))
    np.testing.assert_allclose(generic, t, atol=1e-10)


def test_vp_matches_discrete_ddpm_schedule(x64):
    # Ho et al. 2020: betas linear in [1e-4, 0.02] over N = 1000 steps; the continuous VP path
    # with beta(tau) = N * beta_i has alpha^2 = prod(1 - beta_i) up to O(1/N).
    n = 1000
    betas = np.linspace(1e-4, 0.02, n)
    alpha_bar = np.cumprod(1 - betas)
    path = fj.paths.VP(beta_min=0.1, beta_max=20.0)
    tau = (np.arange(1, n + 1) - 0.5) / n  # sum of the first i betas ~ integral to (i - 1/2)/N
    # Compare -log(alpha^2) = int beta with -log(alpha_bar) = -sum log(1 - beta_i): they agree to
    # O(1/N) relative error once a few steps are in.
    np.testing.assert_allclose(
        -2 * np.log(path.alpha(1 - tau))[20:], -np.log(alpha_bar)[20:], rtol=0.02
    )


def test_cosine_velocity_is_scaled_v_prediction(x64):
    x0, x1, t = _points(jax.random.key(0))
    path = fj.paths.Cosine()
    tt = t[:, None]
    v_salimans = path.alpha(tt) * x0 - path.sigma(tt) * x1
    np.testing.assert_allclose(
        path.velocity_target(x0, x1, t), -jnp.pi / 2 * v_salimans, atol=1e-12
    )


def test_edm_noise_levels(x64):
    path = fj.paths.EDM(sigma_min=0.002, sigma_max=80.0, rho=7.0)
    np.testing.assert_allclose(path.noise_level(jnp.array([0.0, 1.0])), [80.0, 0.002], rtol=1e-12)
    t = jnp.linspace(0, 1, 11)
    np.testing.assert_allclose(path.sigma(t) / path.alpha(t), path.noise_level(t), rtol=1e-12)


def _definition(kind, path, x0, x1, t):
    """Each prediction kind from its definition for a single known pair (x0, x1)."""
    tt = t[:, None]
    return {
        "x1": x1,
        "eps": x0,
        "velocity": path.velocity_target(x0, x1, t),
        "score": -x0 / path.sigma(tt),  # score of N(alpha x1, sigma^2 I) at x_t
    }[kind]


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("src,dst", list(itertools.permutations(KINDS, 2)))
def test_convert_matches_definitions_and_round_trips(x64, name, src, dst):
    path = PATHS[name]
    x0, x1, t = _points(jax.random.key(1))
    x = path.interpolate(x0, x1, t)
    pred = _definition(src, path, x0, x1, t)
    out = fj.paths.convert(pred, src=src, dst=dst, path=path, x=x, t=t)
    np.testing.assert_allclose(out, _definition(dst, path, x0, x1, t), rtol=1e-8, atol=1e-8)
    back = fj.paths.convert(out, src=dst, dst=src, path=path, x=x, t=t)
    np.testing.assert_allclose(back, pred, rtol=1e-8, atol=1e-8)


def test_convert_scalar_time_and_images(x64):
    path = fj.paths.CondOT()
    x0, x1 = jax.random.normal(jax.random.key(2), (2, 4, 5, 5, 3))
    x = path.interpolate(x0, x1, 0.3)
    out = fj.paths.convert(x1, src="x1", dst="eps", path=path, x=x, t=0.3)
    np.testing.assert_allclose(out, x0, atol=1e-10)


def test_convert_rejects_bad_input():
    path = fj.paths.CondOT()
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="valid kinds: velocity, x1, eps, score"):
        fj.paths.convert(x, src="velocity", dst="noise_level", path=path, x=x, t=0.5)
    with pytest.raises(ValueError, match="same shape"):
        fj.paths.convert(jnp.zeros((4, 3)), src="eps", dst="x1", path=path, x=x, t=0.5)
    with pytest.raises(ValueError, match="one time per example"):
        fj.paths.convert(x, src="eps", dst="x1", path=path, x=x, t=jnp.ones(3))
    with pytest.raises(TypeError, match="AffinePath"):
        fj.paths.convert(x, src="eps", dst="x1", path="condot", x=x, t=0.5)


def test_bad_path_parameters():
    with pytest.raises(ValueError, match="beta_min < beta_max"):
        fj.paths.VP(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        fj.paths.EDM(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="positive"):
        fj.paths.Polynomial(-1.0)
    with pytest.raises(ValueError, match="valid paths"):
        fj.paths.get_path("ddim")


def test_paths_are_pytrees_under_jit():
    path = fj.paths.VP(beta_min=0.1, beta_max=20.0)

    @jax.jit
    def f(p, t):
        return p.alpha(t) + p.sigma(t)

    np.testing.assert_allclose(f(path, 0.5), path.alpha(0.5) + path.sigma(0.5), rtol=1e-6)
    other = fj.paths.VP(beta_min=0.2, beta_max=10.0)
    np.testing.assert_allclose(f(other, 0.5), other.alpha(0.5) + other.sigma(0.5), rtol=1e-6)


@pytest.mark.parametrize(
    "src_name,dst_name", [("condot", "cosine"), ("vp", "condot"), ("cosine", "edm")]
)
def test_change_path_is_exact_for_the_ideal_model(x64, src_name, dst_name):
    # A model that is exact on one path is exact on every other after the SNR change:
    # the analytic mixture's data prediction on src_path, re-expressed on dst_path, must equal
    # the mixture's exact velocity on dst_path.
    src_path, dst_path = PATHS[src_name], PATHS[dst_name]
    gmm = fj.analytic.GaussianMixture(
        means=jnp.array([[2.0, 0.0], [-1.0, 1.0]]),
        stds=jnp.array([0.3, 0.6]),
        weights=jnp.array([0.7, 0.3]),
    )
    x = 1.5 * jax.random.normal(jax.random.key(3), (8, 2))
    t = jnp.linspace(0.1, 0.9, 8)
    x1_model = lambda x, t: gmm.posterior_mean(src_path, x, t)
    v = fj.paths.change_path(x1_model, src_path=src_path, dst_path=dst_path, src="x1")
    np.testing.assert_allclose(v(x, t), gmm.velocity(dst_path, x, t), rtol=1e-7, atol=1e-7)
