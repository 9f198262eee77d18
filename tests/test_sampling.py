"""Samplers against the analytic Gaussian mixture: exact flow maps, orders, NFE, distributions."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

import flowjax as fj

N = 1000  # samples per two-sample test


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


@jax.jit
def _energy(x, y):
    def mean_dist(a, b):
        return jnp.mean(jnp.sqrt(jnp.sum((a[:, None] - b[None]) ** 2, -1) + 1e-30))

    return 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)


_sample = eqx.filter_jit(lambda gmm, key: gmm.sample(key, N))


def mixture_samples(gmm, seed):
    return _sample(gmm, jax.random.key(seed))


def energy_distance(x, y):
    """Szekely-Rizzo energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| (V-statistic)."""
    return float(_energy(x, y))


_flow_map = eqx.filter_jit(lambda gmm, path, x, s, t: gmm.flow_map(path, x, s, t))


def exact_flow(gmm, path, x, s, t):
    """The oracle's flow map, compiled once per path and shape (s, t are run-time values)."""
    return _flow_map(gmm, path, x, jnp.asarray(s, x.dtype), jnp.asarray(t, x.dtype))


@pytest.fixture(scope="module")
def floor(gmm):
    """Threshold: 4x the mean energy distance between fresh mixture sample sets of size N.

    (Over 200 such pairs the null distances have mean 0.005 and 99th percentile 0.016;
    moving 5% of the weight between components already gives 0.02.)
    """
    pair = lambda k: _energy(
        gmm.sample(jax.random.fold_in(k, 0), N), gmm.sample(jax.random.fold_in(k, 1), N)
    )
    d = jax.jit(jax.vmap(pair))(jax.random.split(jax.random.key(123), 8))
    return 4 * float(jnp.mean(d))


@pytest.fixture(scope="module")
def fields(gmm):
    """One velocity field object per path, shared so that compiled solves are reused."""
    paths = {"condot": fj.paths.CondOT(), "cosine": fj.paths.Cosine(), "vp": fj.paths.VP()}
    return {k: (p, gmm.velocity_field(p)) for k, p in paths.items()}


@pytest.fixture(scope="module")
def counted(fields):
    return Counter(fields["condot"][1])


def noise(seed, n=N):
    return jax.random.normal(jax.random.key(seed), (n, 2))


class Counter:
    """Counts real evaluations of a field (an io_callback per call, executed at run time)."""

    def __init__(self, v):
        self.v, self.calls = v, 0

    def _tick(self):
        self.calls += 1
        return np.zeros((), np.float64)

    def __call__(self, x, t):
        z = io_callback(self._tick, jax.ShapeDtypeStruct((), jnp.float64), ordered=True)
        return self.v(x, t) + z


# ------------------------------------------------------------------ ODE sampling


@pytest.mark.parametrize("name", ["condot", pytest.param("cosine", marks=pytest.mark.slow)])
def test_ode_matches_exact_flow_map_and_reaches_mixture(gmm, floor, fields, name):
    path, v = fields[name]
    x0 = noise(0)
    ts = jnp.array([0.0, 0.3, 0.6, 1.0])
    # Every example within 1e-5: the per-example norm's promise (the RMS norm lets one hard
    # example near a component boundary miss it, test_error_norms_keep_their_promise).
    x1, info = fj.sampling.sample_ode(
        v, x0, rtol=1e-7, atol=1e-7, save_ts=ts, error_norm="per_example"
    )
    np.testing.assert_allclose(x1, exact_flow(gmm, path, x0, 0.0, 1.0), atol=1e-5)
    # States at save_ts come from the dense interpolant between steps.
    for t, xt in zip(ts, info["trajectory"], strict=True):
        np.testing.assert_allclose(xt, exact_flow(gmm, path, x0, 0.0, t), atol=1e-5)
    assert int(info["num_accepted"]) + int(info["num_rejected"]) == int(info["num_steps"])
    ref = mixture_samples(gmm, 100)
    assert energy_distance(x1, ref) < floor
    assert energy_distance(x0, ref) > 10 * floor  # the test can fail: noise is far off


@pytest.mark.slow
def test_ode_vp_path_and_backwards_solve(gmm, fields):
    # VP's sigma'(t) is singular at t = 1 (sigma ~ sqrt(1 - t)): stop just short of it.
    path, v = fields["vp"]
    x0 = noise(1, 16)
    x1, _ = fj.sampling.sample_ode(v, x0, rtol=1e-8, atol=1e-8, t1=0.999)
    np.testing.assert_allclose(x1, exact_flow(gmm, path, x0, 0.0, 0.999), atol=1e-6)
    back, info = fj.sampling.sample_ode(v, x1, rtol=1e-8, atol=1e-8, t0=0.999, t1=0.0)
    np.testing.assert_allclose(back, x0, atol=1e-6)
    assert int(info["nfe"]) > 0


def test_convergence_orders_and_nfe(gmm, fields, counted):
    path, _ = fields["condot"]
    x0 = noise(2, 16)
    exact = exact_flow(gmm, path, x0, 0.0, 1.0)
    steps = np.array([32, 64, 128])
    for solver, order, stages in (("euler", 1, 1), ("midpoint", 2, 2), ("heun", 2, 2)):
        err = []
        for n in steps:
            counted.calls = 0
            x1, info = fj.sampling.sample_ode(counted, x0, solver, int(n))
            assert int(info["nfe"]) == counted.calls == n * stages
            err.append(float(jnp.max(jnp.abs(x1 - exact))))
        slope = np.polyfit(np.log(1.0 / steps), np.log(err), 1)[0]
        assert abs(slope - order) < 0.2, (solver, slope, err)


@pytest.mark.parametrize(
    "solver,stages", [pytest.param("tsit5", 7, marks=pytest.mark.slow), ("dopri5", 7)]
)
def test_nfe_fixed_steps_fsal(counted, solver, stages):
    for n in (3, 8):
        counted.calls = 0
        _, info = fj.sampling.sample_ode(counted, noise(3, 16), solver, n)
        # First-same-as-last: all stages on the first step, one fewer on each later one.
        assert int(info["nfe"]) == counted.calls == 1 + n * (stages - 1)
        assert int(info["num_steps"]) == n


@pytest.mark.parametrize("solver", ["dopri5", pytest.param("heun", marks=pytest.mark.slow)])
def test_nfe_adaptive_is_exact_with_rejected_steps(solver):
    # Stiff enough that the first step (1% of the interval) is rejected, after which dopri5
    # evaluates its first stage again, which a count of steps * (stages - 1) + 1 misses.
    f = Counter(lambda x, t: -300.0 * (x - jnp.sin(t)))
    _, info = fj.sampling.sample_ode(f, noise(4, 4), solver, rtol=1e-3, atol=1e-3)
    assert int(info["nfe"]) == f.calls
    assert int(info["num_rejected"]) > 0
    if solver == "dopri5":
        assert f.calls > 1 + int(info["num_steps"]) * 6
    else:
        assert f.calls == 2 * int(info["num_steps"])


def test_jit_vmap_and_no_recompilation(gmm, fields):
    path, _ = fields["condot"]
    traces = []

    def field_of(g):
        def v(x, t):
            traces.append(1)  # runs only while tracing
            return g.velocity(path, x, t)

        return v

    v = field_of(gmm)
    x0 = noise(5, 16)
    ref, _ = fj.sampling.sample_ode(v, x0)
    n = len(traces)
    fj.sampling.sample_ode(v, x0 + 0.1, rtol=1e-6, t1=0.9)  # new values and options: cached
    assert len(traces) == n

    # The field itself traced: the mixture is a jit argument (a pytree of arrays).
    sample = jax.jit(lambda g, x: fj.sampling.sample_ode(field_of(g), x)[0])
    np.testing.assert_allclose(sample(gmm, x0), ref, atol=1e-12)
    n = len(traces)
    shifted = eqx.tree_at(lambda g: g.means, gmm, gmm.means + 1.0)
    assert not np.allclose(sample(shifted, x0 + 0.1), ref, atol=1e-2)
    assert len(traces) == n

    # vmap over independent batches: each is its own adaptive solve.
    xs = jnp.stack([x0, x0 + 0.5, -x0])
    out, info = jax.vmap(lambda x: fj.sampling.sample_ode(v, x))(xs)
    assert info["nfe"].shape == (3,)
    for i in range(3):
        np.testing.assert_allclose(out[i], fj.sampling.sample_ode(v, xs[i])[0], atol=1e-9)


def _scaled_errors(x, exact, tol):
    """Per-example RMS of the error scaled as the controller scales it, atol + rtol |x|."""
    e = (x - exact) / (tol + tol * jnp.abs(exact))
    return float(jnp.sqrt(jnp.mean(e**2))), np.asarray(jnp.sqrt(jnp.mean(e**2, axis=1)))


def test_error_norms_keep_their_promise(gmm, fields):
    # The controller bounds each step's scaled local error; the global error is then a small
    # multiple of the tolerance: over the whole state for "rms", for each example for
    # "per_example". Measured at 1e-5 (1000 points): rms -> global 12x, worst example 281x
    # (one point near a component boundary); per_example -> worst example 8.7x, NFE 109 vs 67.
    path, v = fields["condot"]
    x0, tol = noise(21), 1e-5
    exact = exact_flow(gmm, path, x0, 0.0, 1.0)
    x_rms, info_rms = fj.sampling.sample_ode(v, x0, rtol=tol, atol=tol)
    x_ex, info_ex = fj.sampling.sample_ode(v, x0, rtol=tol, atol=tol, error_norm="per_example")
    glob_rms, per_rms = _scaled_errors(x_rms, exact, tol)
    _, per_ex = _scaled_errors(x_ex, exact, tol)
    assert glob_rms < 30, glob_rms
    assert per_ex.max() < 30, per_ex.max()
    # Negative control: the RMS norm does not make the per-example promise, and costs less.
    assert per_rms.max() > 60, per_rms.max()
    assert int(info_ex["nfe"]) > int(info_rms["nfe"])
    # The same check on a batch where one example is hard and the rest easy: x' = w cos(w t).
    w = jnp.ones((1000, 1)).at[0].set(40.0)
    f = lambda x, t: w * jnp.cos(w * t) * jnp.ones_like(x)
    y0, worst = jnp.zeros((1000, 2)), {}
    for norm in fj.sampling.ERROR_NORMS:
        y1, _ = fj.sampling.sample_ode(f, y0, rtol=1e-6, atol=1e-6, error_norm=norm)
        worst[norm] = float(jnp.max(jnp.abs(y1 - jnp.sin(w)))) / 1e-6
    # Measured: per_example 0.26x the tolerance, rms 10.7x (the hard row hides behind 999).
    assert worst["per_example"] < 2 and worst["rms"] > 5, worst
    with pytest.raises(ValueError, match="valid norms: rms, per_example"):
        fj.sampling.sample_ode(v, x0, error_norm="max")


def test_return_trajectory_fixed_steps(fields):
    _, v = fields["condot"]
    x0 = noise(6, 16)
    x1, info = fj.sampling.sample_ode(v, x0, "heun", 10, return_trajectory=True)
    assert info["trajectory"].shape == (11, 16, 2)
    np.testing.assert_allclose(info["ts"], np.linspace(0, 1, 11), atol=1e-15)
    np.testing.assert_allclose(info["trajectory"][0], x0, atol=1e-15)
    np.testing.assert_allclose(info["trajectory"][-1], x1, atol=1e-12)
    with pytest.raises(ValueError, match="needs save_ts"):
        fj.sampling.sample_ode(v, x0, return_trajectory=True)


def test_errors():
    x0 = noise(7, 4)
    with pytest.raises(Exception, match="produced NaN/inf"):
        fj.sampling.sample_ode(lambda x, t: x * jnp.where(t > 0.5, jnp.nan, 1.0), x0, "euler", 8)
    with pytest.raises(Exception, match="produced NaN/inf"):
        fj.sampling.sample_ode(lambda x, t: x * jnp.nan, x0)
    with pytest.raises(Exception, match="reached max_steps=5"):
        fj.sampling.sample_ode(lambda y, t: -300.0 * y, x0, max_steps=5)
    with pytest.raises(ValueError, match=r"shape \(B, \*D\)"):
        fj.sampling.sample_ode(lambda x, t: x, jnp.ones(3))
    with pytest.raises(ValueError, match="valid solvers: euler, midpoint"):
        fj.sampling.sample_ode(lambda x, t: x, x0, solver="rk4")
    with pytest.raises(ValueError, match="needs a fixed step count"):
        fj.sampling.sample_ode(lambda x, t: x, x0, solver="euler")
    with pytest.raises(ValueError, match="must return the shape of x"):
        fj.sampling.sample_ode(lambda x, t: x[:, :1], x0, "euler", 2)
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        fj.sampling.sample_ode(lambda x, t: x, x0, "euler", 0)
    with pytest.raises(ValueError, match="t0 and t1 must differ"):
        fj.sampling.sample_ode(lambda x, t: x, x0, t0=0.5, t1=0.5)


# ------------------------------------------------------------------ guidance and kinds


def _labelled_model(gmm, path):
    k = gmm.num_components

    def model(x, t, y):  # conditional on component y; y = K (null) is the full mixture
        own = gmm.velocity(path, x, t, label=jnp.minimum(y, k - 1))
        return jnp.where((y == k)[:, None], gmm.velocity(path, x, t), own)

    return model


def test_cfg_endpoints_and_extrapolation(gmm, fields):
    path, _ = fields["condot"]
    model = _labelled_model(gmm, path)
    k = gmm.num_components
    x = noise(8, 6)
    y = jnp.array([0, 1, 2, 0, 1, 2])

    @jax.jit
    def fields_at(w, t):
        guided = fj.sampling.cfg(model, y, null_label=k, guidance=w)(x, t)
        return guided, gmm.velocity(path, x, t, label=y), gmm.velocity(path, x, t)

    for t in (jnp.array(0.4), jnp.linspace(0.1, 0.9, 6)):
        v1, cond, uncond = fields_at(1.0, t)
        v0, _, _ = fields_at(0.0, t)
        v3, _, _ = fields_at(3.0, t)
        np.testing.assert_allclose(v1, cond, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(v0, uncond, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(v3, uncond + 3.0 * (cond - uncond), rtol=1e-10, atol=1e-10)
        assert not np.allclose(v3, cond, atol=1e-3)

    shapes = []
    fj.sampling.cfg(lambda x, t, y: shapes.append(x.shape) or x, y, null_label=k, guidance=2.0)(
        x, 0.5
    )
    assert shapes == [(12, 2)]  # one batched call
    with pytest.raises(ValueError, match="integer labels of shape"):
        fj.sampling.cfg(model, jnp.zeros((6, 1), jnp.int32), null_label=k, guidance=1.0)


@pytest.mark.slow
def test_cfg_sampling_reaches_the_class(gmm, floor, fields):
    path, _ = fields["condot"]
    k = gmm.num_components
    v = fj.sampling.cfg(_labelled_model(gmm, path), jnp.full((N,), 1), null_label=k, guidance=1.0)
    x1, _ = fj.sampling.sample_ode(v, noise(9))
    ref = gmm.means[1] + gmm.stds[1] * noise(10)
    assert energy_distance(x1, ref) < floor
    assert energy_distance(mixture_samples(gmm, 11), ref) > 10 * floor


def test_as_velocity_recovers_the_velocity(gmm, fields):
    path, _ = fields["cosine"]
    x, t = noise(11, 8), jnp.linspace(0.05, 0.95, 8)

    def model_of(kind):
        def model(x, t):
            x1 = gmm.posterior_mean(path, x, t)
            return fj.paths.convert(x1, src="x1", dst=kind, path=path, x=x, t=t)

        return model

    @jax.jit
    def all_kinds(x, t):
        v = {k: fj.sampling.as_velocity(model_of(k), k, path)(x, t) for k in fj.paths.KINDS}
        # t_eps clamps the time the model sees: at t = 0 it is evaluated at t_eps.
        v_eps = fj.sampling.as_velocity(model_of("eps"), "eps", path, t_eps=0.01)(x, 0.0)
        return v, v_eps, gmm.velocity(path, x, t), gmm.velocity(path, x, 0.01)

    v, v_eps, exact, exact_eps = all_kinds(x, t)
    for kind in fj.paths.KINDS:
        np.testing.assert_allclose(v[kind], exact, rtol=1e-9, atol=1e-9, err_msg=kind)
    np.testing.assert_allclose(v_eps, exact_eps, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="valid kinds"):
        fj.sampling.as_velocity(model_of("eps"), "noise_pred", path)


# ------------------------------------------------------------------ SDE and DDPM


def test_diffusion_coefficient_closed_forms():
    t = jnp.linspace(0.05, 0.95, 7)
    vp = fj.paths.VP()
    # VP: dx = -beta/2 x dtau + sqrt(beta) dW (Song et al. 2021, eq. (32)), so g^2 = beta.
    np.testing.assert_allclose(fj.sampling.diffusion_g2(vp, t), vp.beta(t), rtol=1e-10)
    # CondOT: 2 (1 - t) ((1 - t) / t + 1) = 2 (1 - t) / t.
    np.testing.assert_allclose(
        fj.sampling.diffusion_g2(fj.paths.CondOT(), t), 2 * (1 - t) / t, rtol=1e-12
    )


def test_sde_noise_zero_is_euler(fields):
    path, v = fields["condot"]
    x0 = noise(12, 16)
    key = jax.random.key(0)
    ode, _ = fj.sampling.sample_ode(v, x0, "euler", 50, t0=1e-3)
    sde, info = fj.sampling.sample_sde(v, x0, path=path, key=key, num_steps=50, noise=0.0)
    np.testing.assert_array_equal(sde, ode)
    assert int(info["nfe"]) == 50
    # The SDE program itself (noise only known at run time) agrees to rounding ...
    run = jax.jit(
        lambda e: fj.sampling.sample_sde(v, x0, path=path, key=key, num_steps=50, noise=e)[0]
    )
    np.testing.assert_allclose(run(0.0), ode, atol=1e-12)
    # ... and does add noise when asked.
    assert not np.allclose(run(0.5), ode, atol=1e-2)


def test_sde_reaches_mixture(gmm, floor, fields):
    path, v = fields["condot"]
    x1, info = fj.sampling.sample_sde(v, noise(13), path=path, key=jax.random.key(1), num_steps=400)
    assert int(info["nfe"]) == 400
    assert energy_distance(x1, mixture_samples(gmm, 14)) < floor


@pytest.mark.slow
def test_sde_with_given_score_on_vp(gmm, floor, fields):
    path, v = fields["vp"]
    score = lambda x, t: gmm.score(path, x, t)
    x1, _ = fj.sampling.sample_sde(
        v, noise(15), path=path, key=jax.random.key(2), num_steps=1000, score=score, t1=0.999
    )
    assert energy_distance(x1, mixture_samples(gmm, 16)) < floor


def test_ddpm_reaches_mixture(gmm, floor, fields):
    path, _ = fields["condot"]
    model = lambda x, t: gmm.posterior_mean(path, x, t)
    x1, info = fj.sampling.sample_ddpm(
        model, noise(17), path=path, key=jax.random.key(3), num_steps=200, kind="x1"
    )
    assert int(info["nfe"]) == 200
    assert energy_distance(x1, mixture_samples(gmm, 18)) < floor


def test_ddpm_is_ho_algorithm_2_on_vp(gmm, fields):
    path, _ = fields["vp"]
    steps = 20

    def eps_model(x, t):
        x1 = gmm.posterior_mean(path, x, t)
        return fj.paths.convert(x1, src="x1", dst="eps", path=path, x=x, t=t)

    x0, key = noise(19, 8), jax.random.key(4)
    out, _ = fj.sampling.sample_ddpm(eps_model, x0, path=path, key=key, num_steps=steps)

    # Ho et al. 2020, Algorithm 2 with sigma_t^2 = beta-tilde_t, on the grid t_i = i / N read
    # as DDPM indices running from noise (i = 0) to data (i = N), abar = alpha^2.
    ts = np.linspace(0.0, 1.0, steps + 1)
    abar = np.asarray(path.alpha(jnp.asarray(ts))) ** 2
    keys = jax.random.split(key, steps)
    eps_at = jax.jit(eps_model)
    x = x0
    for i in range(steps):
        alpha_t = abar[i] / abar[i + 1]  # this step's 1 - beta_t
        beta_t = 1 - alpha_t
        eps = eps_at(x, jnp.asarray(ts[i]))
        mean = (x - beta_t / np.sqrt(1 - abar[i]) * eps) / np.sqrt(alpha_t)
        var = (1 - abar[i + 1]) / (1 - abar[i]) * beta_t
        z = jax.random.normal(keys[i], x.shape, x.dtype) if i < steps - 1 else 0.0
        x = mean + np.sqrt(var) * z
    np.testing.assert_allclose(out, x, rtol=1e-9, atol=1e-9)


def test_sde_and_ddpm_errors(fields):
    path, v = fields["condot"]
    x0, key = noise(20, 4), jax.random.key(0)
    # Only the standard Gaussian source: their noising process starts from N(0, I).
    samplers = {
        "sde": lambda **kw: fj.sampling.sample_sde(v, x0, path=path, key=key, num_steps=4, **kw),
        "ddpm": lambda **kw: fj.sampling.sample_ddpm(
            v, x0, path=path, key=key, num_steps=4, kind="velocity", **kw
        ),
    }
    try:
        standard = fj.sources.StandardGaussian()
    except (ImportError, AttributeError):  # flowjax.sources is written concurrently
        standard = None
    for run in samplers.values():
        with pytest.raises(ValueError, match="source must be None or fj.sources.StandardGaussian"):
            run(source=object())
        run(source=None)
        if standard is not None:
            run(source=standard)
    with pytest.raises(ValueError, match="t0 < t1"):
        fj.sampling.sample_sde(v, x0, path=path, key=key, num_steps=4, t0=1.0, t1=0.5)
    with pytest.raises(ValueError, match="noise must be a scalar >= 0"):
        fj.sampling.sample_sde(v, x0, path=path, key=key, num_steps=4, noise=-1.0)
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        fj.sampling.sample_ddpm(v, x0, path=path, key=key, num_steps=None)
    with pytest.raises(Exception, match="NaN/inf"):  # eps -> x1 divides by alpha(0) = 0
        fj.sampling.sample_ddpm(lambda x, t: x, x0, path=path, key=key, num_steps=4)
