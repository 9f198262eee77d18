"""Sources, priors, context conditioning and the Gaussian-source oracle, against closed forms."""

import functools

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optax
import pytest
from _scripts import launch
from flax import nnx
from scipy.stats import multivariate_normal

import flowjax as fj

SRC_MEAN = np.array([0.7, -0.4])
SRC_TRIL = np.array([[0.8, 0.0], [0.5, 0.6]])
PATHS = [fj.paths.CondOT(), fj.paths.VP(), fj.paths.Cosine()]
IDS = ["condot", "vp", "cosine"]


def _source():
    return fj.sources.Gaussian(mean=SRC_MEAN, scale_tril=SRC_TRIL)


def _mixture(full=False):
    means = np.array([[2.0, 0.5], [-1.5, 1.0], [0.0, -2.0]])
    weights = np.array([0.5, 0.3, 0.2])
    if not full:
        return fj.analytic.GaussianMixture(means, np.array([0.3, 0.5, 0.4]), weights)
    covs = np.array(
        [[[0.2, 0.08], [0.08, 0.1]], [[0.3, -0.1], [-0.1, 0.2]], [[0.1, 0.0], [0.0, 0.3]]]
    )
    return fj.analytic.GaussianMixture(means, weights=weights, covariances=covs)


def _energy(x, y):
    return fj.metrics.energy_distance(np.asarray(x, np.float64), np.asarray(y, np.float64))


# ----------------------------------------------------------------------------- sources


def test_standard_gaussian_is_bit_identical_to_jax_random_normal():
    src = fj.sources.StandardGaussian()
    for shape in [(5, 2), (3, 4, 4, 1)]:
        for dtype in [jnp.float32, jnp.bfloat16]:
            key = jax.random.key(7)
            got = src.sample(key, shape, context=jnp.ones((shape[0], 3)), dtype=dtype)
            np.testing.assert_array_equal(got, jax.random.normal(key, shape, dtype))
    x = jax.random.normal(jax.random.key(0), (6, 3))
    np.testing.assert_allclose(
        src.log_prob(x), multivariate_normal(np.zeros(3), np.eye(3)).logpdf(x), rtol=1e-5
    )
    assert fj.sources.StandardGaussian(shape=(3,)).sample(jax.random.key(0), 4).shape == (4, 3)


def test_gaussian_log_prob_against_scipy_for_every_scale(x64):
    m = np.array([0.5, -1.0, 2.0])
    a = np.array([[1.0, 0.0, 0.0], [0.3, 0.7, 0.0], [-0.2, 0.4, 1.5]])
    cov = a @ a.T
    x = np.asarray(jax.random.normal(jax.random.key(1), (9, 3))) * 2
    ref = multivariate_normal(m, cov).logpdf(x)
    for src in [
        fj.sources.Gaussian(m, scale_tril=a),
        fj.sources.Gaussian(m, covariance=cov),
        fj.sources.Gaussian(m, scale_operator=lx.MatrixLinearOperator(jnp.asarray(a))),
    ]:
        np.testing.assert_allclose(src.log_prob(x), ref, rtol=1e-10)
        np.testing.assert_allclose(src.covariance(), cov, rtol=1e-10)
    diag = fj.sources.Gaussian(m, scale_diag=np.array([0.5, 1.0, 2.0]))
    ref = multivariate_normal(m, np.diag([0.25, 1.0, 4.0])).logpdf(x)
    np.testing.assert_allclose(diag.log_prob(x), ref, rtol=1e-10)
    # Negative control: the transposed factor is a different covariance.
    wrong = fj.sources.Gaussian(m, covariance=a.T @ a)
    assert np.max(np.abs(wrong.log_prob(x) - multivariate_normal(m, cov).logpdf(x))) > 0.1


def test_gaussian_samples_have_the_mean_and_covariance():
    src = _source()
    n = 40_000
    x = np.asarray(src.sample(jax.random.key(2), n), np.float64)
    cov = SRC_TRIL @ SRC_TRIL.T
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - SRC_MEAN) < 5 * se_mean)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(np.cov(x.T) - cov) < 5 * se_cov)


# ----------------------------------------------------------------------------- GP sources

KERNELS = [
    fj.sources.SquaredExponential(length_scale=0.3, variance=1.5),
    fj.sources.OrnsteinUhlenbeck(length_scale=0.5),
    fj.sources.Periodic(length_scale=0.8, period=0.5, variance=0.7),
]
KIDS = ["se", "ou", "periodic"]


def _sklearn_kernel(kernel):
    from sklearn.gaussian_process import kernels as sk

    if isinstance(kernel, fj.sources.SquaredExponential):
        return kernel.variance * sk.RBF(kernel.length_scale)
    if isinstance(kernel, fj.sources.OrnsteinUhlenbeck):
        return kernel.variance * sk.Matern(kernel.length_scale, nu=0.5)
    return kernel.variance * sk.ExpSineSquared(kernel.length_scale, kernel.period)


@pytest.mark.parametrize("kernel", KERNELS, ids=KIDS)
def test_gp_kernel_matrix_and_log_prob_closed_form(x64, kernel):
    times = np.linspace(0.0, 1.0, 12)
    gp = fj.sources.GaussianProcess(times, kernel, mean=0.3, num_channels=2, jitter=1e-8)
    # The kernel agrees with scikit-learn's definition of the same kernel.
    ref_k = _sklearn_kernel(kernel)(times[:, None])
    np.testing.assert_allclose(kernel(times, times), ref_k, rtol=1e-10, atol=1e-12)
    x = np.asarray(gp.sample(jax.random.key(3), 5))
    assert x.shape == (5, 12, 2)
    cov = ref_k + 1e-8 * np.mean(np.diag(ref_k)) * np.eye(12)
    mvn = multivariate_normal(np.full(12, 0.3), cov)
    ref = mvn.logpdf(x[:, :, 0]) + mvn.logpdf(x[:, :, 1])
    np.testing.assert_allclose(gp.log_prob(x), ref, rtol=1e-7)


@pytest.mark.parametrize("kernel", KERNELS, ids=KIDS)
def test_gp_samples_have_the_kernel_covariance(kernel):
    times = np.linspace(0.0, 1.0, 6)
    gp = fj.sources.GaussianProcess(times, kernel)
    n = 20_000
    x = np.asarray(gp.sample(jax.random.key(4), n), np.float64)
    k = np.asarray(kernel(times, times), np.float64)
    se = np.sqrt((np.outer(np.diag(k), np.diag(k)) + k**2) / n)
    assert np.all(np.abs(np.cov(x.T) - k) < 5 * se)
    assert np.all(np.abs(x.mean(0)) < 5 * np.sqrt(np.diag(k) / n))


def test_conditioned_gp_interpolates_and_matches_sklearn(x64):
    from sklearn.gaussian_process import GaussianProcessRegressor

    kernel = fj.sources.SquaredExponential(length_scale=0.25)
    times = np.linspace(0.0, 1.0, 15)
    obs_t = times[::3]
    obs_y = np.sin(6 * obs_t)
    prior = fj.sources.GaussianProcess(times, kernel, jitter=1e-9)
    post = prior.condition(obs_t, obs_y)
    draws = np.asarray(post.sample(jax.random.key(5), 200))
    # It interpolates: every draw passes through the observations (to ~sqrt(jitter)).
    np.testing.assert_allclose(draws[:, ::3], np.broadcast_to(obs_y, (200, 5)), atol=1e-3)
    # Posterior mean and covariance agree with scikit-learn's GP regression.
    gpr = GaussianProcessRegressor(_sklearn_kernel(kernel), alpha=1e-9, optimizer=None)
    gpr.fit(obs_t[:, None], obs_y)
    mean, cov = gpr.predict(times[:, None], return_cov=True)
    np.testing.assert_allclose(post.loc, mean, atol=1e-6)
    np.testing.assert_allclose(post.covariance(), cov, atol=1e-6)
    # Context-fed conditioning: the same posterior per example, from the observations.
    fed = prior.condition(obs_t)
    ctx = np.stack([obs_y, -obs_y])
    key = jax.random.key(6)
    both = fed.sample(key, 2, context=ctx)
    np.testing.assert_allclose(both[0], post.sample(key, 2)[0], atol=1e-9)
    np.testing.assert_allclose(both[1, ::3], -obs_y, atol=1e-3)
    np.testing.assert_allclose(fed.log_prob(both, context=ctx)[:1], post.log_prob(both[:1]))
    with pytest.raises(ValueError, match="context of shape"):
        fed.sample(key, 2)


# ----------------------------------------------------------------------------- oracle


def _continuity_residual(gmm, path, x, t, source, field_source):
    """d/dt log p_t + div u_t + u_t . grad log p_t at (x, t), every term by autodiff; p_t is
    the marginal for `source`, u_t the velocity for `field_source`."""

    def logp(xi, ti):
        return gmm.log_prob_t(path, xi[None], ti, source=source)[0]

    def u(xi):
        return gmm.velocity(path, xi[None], t, source=field_source)[0]

    dlogp_dt = jax.vmap(jax.grad(logp, argnums=1), (0, None))(x, t)
    grad_logp = jax.vmap(jax.grad(logp), (0, None))(x, t)
    div = jax.vmap(lambda xi: jnp.trace(jax.jacfwd(u)(xi)))(x)
    return dlogp_dt + div + jnp.sum(jax.vmap(u)(x) * grad_logp, -1), grad_logp


@pytest.mark.parametrize(("path", "full"), [(PATHS[0], False), (PATHS[1], True)], ids=IDS[:2])
def test_oracle_continuity_equation_for_a_gaussian_source(x64, path, full):
    gmm, src = _mixture(full), _source()
    x = 1.5 * jax.random.normal(jax.random.key(0), (8, 2))
    t = jnp.asarray(0.4)
    residual_fn = jax.jit(_continuity_residual)
    residual, grad_logp = residual_fn(gmm, path, x, t, src, src)
    np.testing.assert_allclose(residual, 0.0, atol=1e-9)
    np.testing.assert_allclose(gmm.score(path, x, t, source=src), grad_logp, atol=1e-10)
    # Negative control: the velocity of another Gaussian source fails it.
    other = fj.sources.Gaussian(jnp.zeros(2), scale_diag=jnp.ones(2))
    assert np.max(np.abs(residual_fn(gmm, path, x, t, src, other)[0])) > 1e-2


def test_oracle_marginals_at_the_ends_and_fast_path(x64):
    gmm, src = _mixture(), _source()
    path = fj.paths.CondOT()
    x = jax.random.normal(jax.random.key(1), (7, 2))
    np.testing.assert_allclose(gmm.log_prob_t(path, x, 0.0, source=src), src.log_prob(x))
    np.testing.assert_allclose(gmm.log_prob_t(path, x, 1.0, source=src), gmm.log_prob(x))
    # The dense path with N(0, I) equals the isotropic fast path.
    std = fj.sources.Gaussian(jnp.zeros(2))
    for method in ("velocity", "score", "log_prob_t", "posterior_mean"):
        fast = getattr(gmm, method)(path, x, 0.3)
        np.testing.assert_allclose(getattr(gmm, method)(path, x, 0.3, source=std), fast, atol=1e-12)
    full = _mixture(True)
    ref = np.log(
        sum(
            w * multivariate_normal(m, c).pdf(np.asarray(x))
            for m, c, w in zip(full.means, full.covariances, full.weights, strict=True)
        )
    )
    np.testing.assert_allclose(full.log_prob(x), ref, rtol=1e-10)


def test_sample_ode_maps_the_source_onto_the_data():
    gmm, src = _mixture(True), _source()
    path = fj.paths.CondOT()
    n = 1000
    x0 = src.sample(jax.random.key(2), n)
    x1, _ = fj.sampling.sample_ode(gmm.velocity_field(path, source=src), x0, rtol=1e-5, atol=1e-5)
    ref = gmm.sample(jax.random.key(3), n)
    floor = abs(_energy(gmm.sample(jax.random.key(4), n), ref))
    got = _energy(x1, ref)
    assert got < max(3 * floor, 5e-3), (got, floor)
    # Negative control: the same samples pushed by the field of the N(0, I) source.
    wrong, _ = fj.sampling.sample_ode(gmm.velocity_field(path), x0, rtol=1e-5, atol=1e-5)
    assert _energy(wrong, ref) > 10 * max(got, floor)
    # flow_map (the oracle's own solve) agrees with sample_ode.
    np.testing.assert_allclose(
        gmm.flow_map(path, x0[:50], 0.0, 1.0, source=src), x1[:50], atol=1e-3
    )


def test_log_prob_with_a_gaussian_prior_is_exact(x64):
    gmm, src = _mixture(True), _source()
    path = fj.paths.CondOT()
    x1 = gmm.sample(jax.random.key(5), 6)
    v = gmm.velocity_field(path, source=src)
    logp, info = fj.likelihood.log_prob(v, x1, prior=src, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(logp, gmm.log_prob(x1), atol=1e-4)
    np.testing.assert_allclose(info["prior_logp"], src.log_prob(info["x0"]), rtol=1e-12)
    # Negative control: the same flow scored with the default N(0, I) prior is wrong.
    wrong = info["delta"] + fj.sources.StandardGaussian().log_prob(info["x0"])
    assert np.max(np.abs(wrong - gmm.log_prob(x1))) > 0.1


def _linear_field(x, t):
    return x @ jnp.array([[0.3, -0.2], [0.1, 0.5]]) + t


def test_log_p0_duck_typed_priors_hutchinson_and_gradients():
    src = _source()
    x1 = jax.random.normal(jax.random.key(6), (5, 2))
    kw = dict(solver="euler", num_steps=4)
    logp, info = fj.likelihood.log_prob(_linear_field, x1, prior=src, **kw)
    # log_p0= is the same thing as a callable, and any object with log_prob is a prior.
    logp2, _ = fj.likelihood.log_prob(_linear_field, x1, log_p0=src.log_prob, **kw)
    np.testing.assert_allclose(logp2, logp, rtol=1e-6)

    class Prior:
        def log_prob(self, x, *, context=None):
            return src.log_prob(x)

    logp3, _ = fj.likelihood.log_prob(_linear_field, x1, prior=Prior(), **kw)
    np.testing.assert_allclose(logp3, logp, rtol=1e-6)
    # Hutchinson: the same prior term at the same encoding x(0).
    _, hinfo = fj.likelihood.log_prob(
        _linear_field, x1, prior=src, divergence="hutchinson", key=jax.random.key(0), **kw
    )
    np.testing.assert_allclose(hinfo["prior_logp"], src.log_prob(hinfo["x0"]), rtol=1e-6)

    # Gradients through the prior: with a field independent of it,
    # d/dm sum log p = sum Sigma^{-1} (x(0) - m).
    def total(mean):
        prior = fj.sources.Gaussian(mean, scale_tril=SRC_TRIL)
        return jnp.sum(fj.likelihood.log_prob(_linear_field, x1, prior=prior, **kw)[0])

    grad = jax.grad(total)(jnp.asarray(SRC_MEAN, jnp.float32))
    ref = np.linalg.solve(SRC_TRIL @ SRC_TRIL.T, np.asarray(info["x0"] - SRC_MEAN).T).sum(1)
    np.testing.assert_allclose(grad, ref, rtol=1e-4, atol=1e-4)


def test_flow_matching_loss_is_minimised_by_the_oracle_field():
    gmm, src = _mixture(), _source()
    path = fj.paths.CondOT()
    n = 50_000
    k0, k1, kt = jax.random.split(jax.random.key(7), 3)
    x0, x1 = src.sample(k0, n), gmm.sample(k1, n)
    t = jax.random.uniform(kt, (n,))
    xt = t[:, None] * x1 + (1 - t[:, None]) * x0
    u = gmm.velocity(path, xt, t, source=src)

    def loss(pred):
        return float(jnp.mean(jnp.sum((pred - (x1 - x0)) ** 2, -1)))

    best = loss(u)
    delta = 0.1 * jnp.stack([jnp.sin(xt[:, 1]), jnp.cos(xt[:, 0] * t)], -1)
    # loss(u + delta) - loss(u) = E|delta|^2 (the cross term vanishes at the minimiser).
    np.testing.assert_allclose(
        loss(u + delta) - best, float(jnp.mean(jnp.sum(delta**2, -1))), rtol=0.1
    )
    assert loss(u + delta) > best
    assert loss(gmm.velocity(path, xt, t)) > best + 0.05  # the N(0, I)-source field is worse


@pytest.mark.parametrize("full", [False, True], ids=["iso", "full"])
def test_tilt_closed_form_equals_importance_weighting(x64, full):
    gmm = _mixture(full)
    c, scale, lam = jnp.array([1.0, -0.5]), 1.2, 2.0
    star = gmm.tilt(center=c, scale=scale, strength=lam)
    assert isinstance(star, fj.analytic.GaussianMixture) and star.isotropic == (not full)
    # Exactly: log p*(x) - log p(x) + lam |x - c|^2 / (2 s^2) is one constant, -log Z.
    x = 2 * jax.random.normal(jax.random.key(8), (50, 2))
    log_r = -lam * jnp.sum((x - c) ** 2, -1) / (2 * scale**2)
    diff = star.log_prob(x) - gmm.log_prob(x) - log_r
    np.testing.assert_allclose(diff, diff[0], atol=1e-10)
    # Importance weights on a large base sample: Z, the mean and the covariance.
    n = 100_000
    xs = gmm.sample(jax.random.key(9), n)
    w = jnp.exp(-lam * jnp.sum((xs - c) ** 2, -1) / (2 * scale**2))
    z = jnp.mean(w)
    np.testing.assert_allclose(-jnp.log(z), diff[0], atol=3 * jnp.std(w) / jnp.sqrt(n) / z)
    w = w / jnp.sum(w)
    ess = 1.0 / jnp.sum(w**2)
    ys = star.sample(jax.random.key(10), 100_000)
    mean_is = jnp.sum(w[:, None] * xs, 0)
    np.testing.assert_allclose(mean_is, ys.mean(0), atol=5 * jnp.std(ys, 0).max() / jnp.sqrt(ess))
    cov_is = jnp.einsum("n,ni,nj->ij", w, xs - mean_is, xs - mean_is)
    np.testing.assert_allclose(cov_is, jnp.cov(ys.T), atol=0.02)
    # strength 0 is the base mixture.
    base = gmm.tilt(center=c, scale=scale, strength=0.0)
    np.testing.assert_allclose(base.means, gmm.means, atol=1e-14)
    np.testing.assert_allclose(base.weights, gmm.weights, atol=1e-14)
    np.testing.assert_allclose(
        base.component_covariances(), gmm.component_covariances(), atol=1e-14
    )
    # Negative control: a different strength is a different distribution.
    other = gmm.tilt(center=c, scale=scale, strength=1.0)
    assert np.max(np.abs(other.log_prob(x) - star.log_prob(x))) > 0.1


def test_conditional_mixture_oracle_is_the_per_context_mixture(x64):
    mix = fj.data.CONTEXT_MIXTURES["context_gmm"]
    oracle = mix.oracle()
    ctx = jnp.array([[-0.8], [0.0], [0.5]])
    x = jax.random.normal(jax.random.key(11), (3, 2))
    path = fj.paths.CondOT()
    log_prob = jax.jit(oracle.log_prob)
    lp, vel = log_prob(x, ctx), oracle.velocity(path, x, 0.3, ctx)
    for i in range(3):
        one = fj.analytic.GaussianMixture(**mix.params(ctx[i]).as_dict())
        np.testing.assert_allclose(lp[i], one.log_prob(x[i : i + 1])[0])
        np.testing.assert_allclose(vel[i], one.velocity(path, x[i : i + 1], 0.3)[0])
    # The data pipeline draws from the same conditional law (mean log-likelihood check).
    batch = next(fj.data.make_iterator("context_gmm", global_batch_size=2000, seed=0))
    context = jnp.asarray(batch["context"], jnp.float64)
    own = float(jnp.mean(log_prob(jnp.asarray(batch["x1"], jnp.float64), context)))
    ref = jax.jit(oracle.sample)(jax.random.key(12), context)
    assert abs(own - float(jnp.mean(log_prob(ref, context)))) < 0.1
    shuffled = float(jnp.mean(log_prob(jnp.asarray(batch["x1"], jnp.float64), -context)))
    assert shuffled < own - 1.0  # negative control: the wrong context explains x1 badly


# ----------------------------------------------------------------------------- training


def _train_fm(sample_batch, *, steps, context_shape=None, coupling=None, dropout=0.0, seed=0):
    """Plain CondOT flow matching with a tiny MLP; sample_batch(key) -> (x0, x1, context)."""
    model = fj.models.build_model(
        "mlp",
        "tiny",
        input_shape=(2,),
        context_shape=context_shape,
        key=seed,
        width=64,
        depth=3,
        time_scale=1.0,
    )
    apply_fn, params = fj.models.functional(model)
    opt = optax.adam(optax.cosine_decay_schedule(5e-3, steps, alpha=0.05))

    def loss_fn(params, key):
        kb, kt, kc, kd = jax.random.split(key, 4)
        x0, x1, ctx = sample_batch(kb)
        if coupling is not None:
            x0, x1, _ = coupling(kc, x0, x1)
        t = jax.random.uniform(kt, (x1.shape[0],))
        xt = t[:, None] * x1 + (1 - t[:, None]) * x0
        if ctx is not None and dropout:
            ctx = fj.models.drop_context(kd, ctx, dropout)
        pred = apply_fn(params, xt, t, context=ctx)
        return jnp.mean(jnp.sum((pred - (x1 - x0)) ** 2, -1))

    @jax.jit
    def train(params):
        def step(carry, key):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, key)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        keys = jax.random.split(jax.random.key(seed + 1), steps)
        (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), keys)
        return params, losses

    params, _ = train(params)
    return apply_fn, params


def test_data_to_data_transport_reaches_the_target_and_ot_is_cheaper():
    # 8gaussians -> moons (torchcfm's OT-CFM example): x0 from another dataset.
    x0_pool = fj.sources.Empirical.from_dataset("8gaussians", 20_000, seed=0)
    x1_pool = fj.sources.Empirical.from_dataset("moons", 20_000, seed=1)

    def batch(key):
        k0, k1 = jax.random.split(key)
        return x0_pool.sample(k0, 128), x1_pool.sample(k1, 128), None

    x0 = jnp.asarray(fj.data.reference_samples("8gaussians", 1000, seed=2))
    target = fj.data.reference_samples("moons", 1000, seed=3)
    floor = abs(_energy(fj.data.reference_samples("moons", 1000, seed=4), target))
    start = _energy(x0, target)
    out = {}
    couplings = {"independent": None, "ot": fj.couplings.MinibatchOT(method="exact")}
    for name, coupling in couplings.items():
        apply_fn, params = _train_fm(batch, steps=400, coupling=coupling)
        x1, _ = fj.sampling.sample_ode(
            functools.partial(apply_fn, params), x0, solver="heun", num_steps=20
        )
        cost = float(jnp.mean(jnp.sum((x1 - x0) ** 2, -1)))
        out[name] = (_energy(x1, target), cost)
    # Measured: floor 0.003, start 0.36; OT 0.006 (cost 1.6), independent 0.02 (cost 2.0).
    assert out["ot"][0] < 3 * floor + 0.005, (out, floor)
    assert out["independent"][0] < 0.2 * start, (out, start)
    assert out["ot"][1] < 0.9 * out["independent"][1], out


def test_context_model_reproduces_each_contexts_mixture_and_cfg_one_is_conditional():
    oracle = fj.data.CONTEXT_MIXTURES["context_gmm"].oracle()
    src = fj.sources.StandardGaussian()

    def batch(key):
        kc, kx, k0 = jax.random.split(key, 3)
        ctx = jax.random.uniform(kc, (256, 1), minval=-1.0, maxval=1.0)
        return src.sample(k0, (256, 2)), oracle.sample(kx, ctx), ctx

    apply_fn, params = _train_fm(batch, steps=1000, context_shape=(1,), dropout=0.1)
    # Exact KL(p(.|c) || q(.|c)) = E_p[log p - log q] per context, log q by the likelihood ODE;
    # a fourth block scores the c = 0 samples with the model at c = -0.9 (negative control).
    n = 300
    ctx = jnp.repeat(jnp.array([-0.9, 0.0, 0.7]), n)[:, None]
    x1 = oracle.sample(jax.random.key(20), ctx)
    x1 = jnp.concatenate([x1, x1[n : 2 * n]])
    c_true = jnp.concatenate([ctx, ctx[n : 2 * n]])
    c_model = jnp.concatenate([ctx, jnp.full((n, 1), -0.9)])
    logq, _ = fj.likelihood.log_prob(
        functools.partial(apply_fn, params, context=c_model), x1, solver="heun", num_steps=40
    )
    kl = np.asarray(jnp.mean((oracle.log_prob(x1, c_true) - logq).reshape(4, n), axis=1))
    # Measured: 0.07 .. 0.10 nats for the three contexts, ~5 nats for the wrong context.
    assert np.all(kl[:3] < 0.15) and kl[3] > 1.0, kl
    # CFG with scale 1 is the conditional model; scale 0 the null-context model.
    x = jax.random.normal(jax.random.key(21), (8, 2))
    ctx = jnp.linspace(-1, 1, 8)[:, None]
    model = lambda x, t, c: apply_fn(params, x, t, context=c)  # noqa: E731
    cond = apply_fn(params, x, 0.4, context=ctx)
    one = fj.sampling.cfg(model, context=ctx, guidance=1.0)(x, 0.4)
    np.testing.assert_allclose(one, cond, atol=1e-6)
    zero = fj.sampling.cfg(model, context=ctx, guidance=0.0)(x, 0.4)
    np.testing.assert_allclose(zero, apply_fn(params, x, 0.4), atol=1e-6)
    assert np.max(np.abs(cond - apply_fn(params, x, 0.4))) > 0.1  # the context matters
    two = fj.sampling.cfg(model, context=ctx, guidance=2.0)(x, 0.4)
    np.testing.assert_allclose(two, 2 * cond - zero, atol=1e-5)


@pytest.mark.slow
def test_sharded_equals_single_device_with_context():
    out = launch.run("context_sharded.py", num_devices=8)
    assert out["context_matters"] > 1e-3
    assert out["max_rel_diff"] < 1e-5, out


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_one_clear_error():
    key = jax.random.key(0)
    src = _source()
    with pytest.raises(ValueError, match=r"Gaussian.sample: requested shape \(4, 3\)"):
        src.sample(key, (4, 3))
    with pytest.raises(ValueError, match="scale_tril must have shape"):
        fj.sources.Gaussian(jnp.zeros(3), scale_tril=jnp.eye(2))
    with pytest.raises(ValueError, match="lower triangular"):
        fj.sources.Gaussian(jnp.zeros(2), scale_tril=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="give at most one"):
        fj.sources.Gaussian(jnp.zeros(2), scale_tril=jnp.eye(2), scale_diag=jnp.ones(2))
    with pytest.raises(ValueError, match="not numerically positive definite"):
        fj.sources.Gaussian(jnp.zeros(2), covariance=-jnp.eye(2))
    with pytest.raises(ValueError, match="length_scale must be positive"):
        fj.sources.SquaredExponential(length_scale=0.0)
    with pytest.raises(ValueError, match="unknown source"):
        fj.sources.make_source("laplace")
    # A prior without log_prob: one TypeError naming it.
    v = _mixture().velocity_field(fj.paths.CondOT())
    x1 = jnp.zeros((3, 2))
    empirical = fj.sources.Empirical(jnp.ones((10, 2)))
    with pytest.raises(TypeError, match="prior Empirical has no log_prob"):
        fj.likelihood.log_prob(v, x1, prior=empirical)
    with pytest.raises(TypeError, match="is not a source"):
        fj.sources.check_source(object())
    with pytest.raises(TypeError, match="needs a Gaussian source"):
        _mixture().velocity(fj.paths.CondOT(), x1, 0.5, source=empirical)
    with pytest.raises(ValueError, match="source event shape"):
        _mixture().velocity(fj.paths.CondOT(), x1, 0.5, source=fj.sources.Gaussian(jnp.zeros(3)))
    # Context of the wrong shape or dtype, or a context for a model without one.
    model = fj.models.build_model("mlp", "tiny", input_shape=(2,), context_shape=(3,), key=0)
    with pytest.raises(ValueError, match=r"context must have shape \(B, \*\(3,\)\)"):
        model(x1, 0.5, context=jnp.zeros((3, 2)))
    with pytest.raises(TypeError, match="context must be floating point"):
        model(x1, 0.5, context=jnp.zeros((3, 3), jnp.int32))
    plain = fj.models.build_model("mlp", "tiny", input_shape=(2,), key=0)
    with pytest.raises(ValueError, match="got a context for a model built without one"):
        plain(x1, 0.5, context=jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="mode 'concat' needs a context of the data's spatial"):
        fj.models.ContextEmbedding(
            (4, 4, 1), 8, input_shape=(8, 8, 1), mode="concat", rngs=nnx.Rngs(0)
        )
    with pytest.raises(ValueError, match="tilt: strength must be >= 0"):
        _mixture().tilt(center=jnp.zeros(2), scale=1.0, strength=-1.0)
