"""Multistep diffusion solvers against the exact mixture flow map and against diffusers."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

import flowjax as fj
from flowjax.sampling import grids

PATHS = {"vp": fj.paths.VP(), "cosine": fj.paths.Cosine(), "condot": fj.paths.CondOT()}


def mixture():
    return fj.analytic.GaussianMixture(
        means=jnp.array([[2.0, 0.0], [-2.0, 1.0], [0.0, -2.0]]),
        stds=jnp.array([0.5, 0.4, 0.6]),
        weights=jnp.array([0.5, 0.3, 0.2]),
    )


def eps_model(gmm, path):
    """The exact noise prediction E[x0 | x_t] of the mixture."""

    def eps(x, t):
        x1 = gmm.posterior_mean(path, x, t)
        return fj.paths.convert(x1, src="x1", dst="eps", path=path, x=x, t=t)

    return eps


_flow_map = eqx.filter_jit(lambda gmm, path, x, s, t: gmm.flow_map(path, x, s, t))


# (solver, expected order, step counts). UniPC-2 with its corrector is third order
# (Zhao et al. 2023, Thm. 3.1); tAB-DEIS through r + 1 points has order r + 1. Measured slopes
# (32 points, t1 = 0.8, LogSNR grid): DDIM 1.00-1.01, 2M 1.92-2.03, 3M 3.18-3.19, UniPC
# 2.94-3.08, DEIS-2 1.91-1.96, DEIS-3 2.84-2.87 on VP / cosine / CondOT.
ORDERS = [
    ("ddim", 1, (64, 128, 256)),
    ("dpm++2m", 2, (32, 64, 128)),
    ("dpm++3m", 3, (32, 64, 128)),
    ("unipc", 3, (32, 64, 128)),
    ("deis2", 2, (32, 64, 128)),
    ("deis", 3, (32, 64, 128)),
]


@pytest.mark.parametrize("name", ["vp", "condot", pytest.param("cosine", marks=pytest.mark.slow)])
def test_convergence_orders_against_the_exact_flow_map(x64, name):
    gmm, path = mixture(), PATHS[name]
    eps = eps_model(gmm, path)
    x0 = jax.random.normal(jax.random.key(0), (32, 2))
    t1 = 0.8  # the orders are asymptotic: stop before the mixture's stiff last stretch
    ts = grids.LogSNR(path)(8, 0.0, t1)
    exact = _flow_map(gmm, path, x0, ts[0], ts[-1])
    for solver, order, steps in ORDERS:
        err = []
        for n in steps:
            x, info = fj.sampling.sample_multistep(
                eps, x0, kind="eps", path=path, solver=solver, num_steps=n, t1=t1
            )
            assert float(info["ts"][0]) == float(ts[0]) and float(info["ts"][-1]) == t1
            err.append(float(jnp.sqrt(jnp.mean((x - exact) ** 2))))
        slope = np.polyfit(np.log(1.0 / np.asarray(steps)), np.log(err), 1)[0]
        assert abs(slope - order) < 0.3, (solver, slope, err)


def test_ddim_tends_to_the_exact_pf_ode(x64):
    # DDIM with the exact eps is a first-order solver of the probability-flow ODE: its error
    # to the exact flow map halves with the step and vanishes; to t1 = 1 (sigma = 0) it ends
    # with the data prediction at sigma_min.
    gmm, path = mixture(), PATHS["vp"]
    eps = eps_model(gmm, path)
    x0 = jax.random.normal(jax.random.key(1), (32, 2))
    t1 = 0.95
    ts = grids.LogSNR(path)(4, 0.0, t1)
    exact = _flow_map(gmm, path, x0, ts[0], t1)
    err = []
    for n in (128, 512, 2048):
        x, _ = fj.sampling.sample_multistep(
            eps, x0, kind="eps", path=path, solver="ddim", num_steps=n, t1=t1
        )
        err.append(float(jnp.sqrt(jnp.mean((x - exact) ** 2))))
    assert err[0] > 3.5 * err[1] > 12 * err[2], err
    assert err[2] < 2e-3, err
    # Negative control: a model off by 1% of eps is not the exact field, and DDIM shows it.
    biased = lambda x, t: 1.01 * eps(x, t)
    x, _ = fj.sampling.sample_multistep(
        biased, x0, kind="eps", path=path, solver="ddim", num_steps=2048, t1=t1
    )
    assert float(jnp.sqrt(jnp.mean((x - exact) ** 2))) > 5 * err[2]


@eqx.filter_jit
def _deis_step(solver, x, hist, t_next, path):
    from flowjax.sampling._multistep import _point

    return solver.step(x, None, hist, _point(path, t_next), False, path)[0]


@pytest.mark.parametrize("name", ["vp", "condot"])
def test_deis_step_is_exact_for_eps_polynomial_in_time(x64, name):
    # tAB-DEIS integrates the Lagrange polynomial in t through its points exactly:
    # x_t = alpha_t (x_s / alpha_s + int_s^t eps(tau) rho'(tau) dtau), rho = sigma / alpha.
    # Reference: that integral by scipy's 64-point Gauss-Legendre rule in t on a step far from
    # the ends (ours is 8 points in log-SNR). Negative control: one degree more than the
    # points carry is not exact.
    from scipy.integrate import fixed_quad

    from flowjax.sampling._exponential import History, Point
    from flowjax.sampling._multistep import _point

    path = PATHS[name]
    ts = np.asarray(grids.LogSNR(path)(12))[3:7]  # t_{i-2}, t_{i-1}, t_i, t_{i+1}
    a, b, c = np.array([0.3, -1.1]), np.array([0.7, 0.4]), np.array([-0.5, 0.9])
    x_s = np.array([[0.4, -0.2]])
    rho_dot = jax.jit(jax.vmap(jax.grad(lambda t: path.sigma(t) / path.alpha(t))))

    def run(order, poly):
        times = ts[:3][::-1][:order]  # newest first
        eps = poly(times)[:, None]
        pts = [_point(path, jnp.asarray(t)) for t in times]
        point = Point(*(jnp.stack(v) for v in zip(*pts, strict=True)))
        d = (x_s - point.sigma[:, None, None] * eps) / point.alpha[:, None, None]  # x1 at x_s
        hist = History(jnp.asarray(d), point, jnp.asarray(order), jnp.asarray(eps))
        x = _deis_step(fj.sampling.DEIS(order=order), jnp.asarray(x_s), hist, ts[3], path)
        t_s, t_t = ts[2], ts[3]
        integrand = lambda t: (poly(t) * np.asarray(rho_dot(jnp.asarray(t)))[:, None]).T
        integral = fixed_quad(integrand, t_s, t_t, n=64)[0]
        exact = path.alpha(t_t) * (x_s / path.alpha(t_s) + integral)
        return float(np.max(np.abs(np.asarray(x) - exact)) / np.max(np.abs(exact)))

    col = lambda t: np.asarray(t)[:, None]  # poly(t): (n,) times -> (n, 2)
    quadratic = lambda t: a + b * col(t) + c * col(t) ** 2
    assert run(2, lambda t: a + b * col(t)) < 1e-10
    assert run(3, quadratic) < 1e-10
    assert run(2, quadratic) > 1e-6
    # A polynomial in log-SNR is not one in t: DEIS in t is not exact for it.
    assert run(2, lambda t: a + b * col(path.log_snr(jnp.asarray(t)))) > 1e-6


def test_same_log_snr_grid_gives_the_same_samples_on_every_path(x64):
    # The solvers see a path only through its log-SNR: on two paths with the same log-SNR
    # grid, (alpha, sigma) differ by a factor c_t and so do the states (x = c_t x'), exactly.
    # Both grids end on the data (c = 1 there): the samples agree. (A Cosine end with
    # sigma = cos(pi/2) = 6e-17 not read as 0 once broke this: a final step over h ~ 35.)
    gmm = mixture()
    x0 = jax.random.normal(jax.random.key(6), (16, 2))
    out = {}
    for name, path in PATHS.items():
        t_start = grids.LogSNR(path)(4)[0]
        c = jnp.sqrt(path.alpha(t_start) ** 2 + path.sigma(t_start) ** 2)
        model = lambda x, t, path=path: gmm.posterior_mean(path, x, t)
        out[name] = {
            solver: fj.sampling.sample_multistep(
                model, c * x0, kind="x1", path=path, solver=solver, num_steps=10
            )[0]
            for solver in ("dpm++3m",)
        }
    for name in ("cosine", "condot"):
        for solver, x in out[name].items():
            np.testing.assert_allclose(x, out["vp"][solver], atol=1e-9, err_msg=(name, solver))
    # Negative control: the same noise unscaled on CondOT is another start, another sample.
    path = PATHS["condot"]
    model = lambda x, t: gmm.posterior_mean(path, x, t)
    x = fj.sampling.sample_multistep(
        model, x0, kind="x1", path=path, solver="dpm++3m", num_steps=10
    )[0]
    assert not np.allclose(x, out["vp"]["dpm++3m"], atol=1e-3)


@pytest.mark.slow
def test_every_kind_and_guidance_give_the_same_steps(x64):
    # The solvers see only the data prediction: eps, x1, velocity and score models of the same
    # field give the same samples; CFG at w = 1 is the conditional model.
    gmm, path = mixture(), PATHS["cosine"]
    x0 = jax.random.normal(jax.random.key(2), (16, 2))

    def model_of(kind, label=None):
        def model(x, t):
            x1 = gmm.posterior_mean(path, x, t, label)
            return fj.paths.convert(x1, src="x1", dst=kind, path=path, x=x, t=t)

        return model

    for solver in ("unipc", "deis"):  # data- and noise-prediction form
        out = {
            kind: fj.sampling.sample_multistep(
                model_of(kind), x0, kind=kind, path=path, solver=solver, num_steps=12
            )[0]
            for kind in fj.paths.KINDS
        }
        for kind in fj.paths.KINDS:
            np.testing.assert_allclose(out[kind], out["eps"], atol=1e-9, err_msg=(solver, kind))

    k = gmm.num_components
    y = jnp.arange(16) % k

    def labelled(x, t, y):
        own = model_of("eps", jnp.minimum(y, k - 1))(x, t)
        return jnp.where((y == k)[:, None], model_of("eps")(x, t), own)

    def run(pred):
        return fj.sampling.sample_multistep(pred, x0, kind="eps", path=path, num_steps=12)[0]

    cond = run(model_of("eps", y))
    np.testing.assert_allclose(
        run(fj.sampling.cfg(labelled, y, null_label=k, guidance=1.0)), cond, atol=1e-9
    )
    guided = run(fj.sampling.cfg(labelled, y, null_label=k, guidance=3.0))
    assert not np.allclose(guided, cond, atol=1e-2)


class Counter:
    """Counts real evaluations of a model (an io_callback per call, executed at run time)."""

    def __init__(self, f):
        self.f, self.calls = f, 0

    def _tick(self):
        self.calls += 1
        return np.zeros((), np.float32)

    def __call__(self, x, t):
        z = io_callback(self._tick, jax.ShapeDtypeStruct((), jnp.float32), ordered=True)
        return self.f(x, t) + z


@pytest.mark.parametrize("solver", list(fj.sampling.MULTISTEP_SOLVERS))
def test_exact_nfe_and_times(solver):
    path = PATHS["vp"]
    f = Counter(lambda x, t: 0.5 * x)
    x0 = jax.random.normal(jax.random.key(3), (4, 2))
    for n in (1, 2, 5):
        f.calls = 0
        _, info = fj.sampling.sample_multistep(
            f, x0, kind="x1", path=path, solver=solver, num_steps=n
        )
        assert int(info["nfe"]) == f.calls == n
        np.testing.assert_allclose(info["ts"], grids.LogSNR(path)(n), rtol=1e-6)


def test_endpoints_and_errors():
    path = PATHS["condot"]
    x0 = jax.random.normal(jax.random.key(4), (4, 2))
    target = jnp.array([1.0, -2.0])
    # A final step to sigma = 0 returns the data prediction; a velocity model may start at
    # alpha = 0 (t = 0), an eps model may not.
    for solver in fj.sampling.MULTISTEP_SOLVERS:
        x, _ = fj.sampling.sample_multistep(
            lambda x, t: jnp.broadcast_to(target, x.shape),
            x0,
            kind="x1",
            path=path,
            solver=solver,
            grid=grids.Uniform(),
            num_steps=6,
        )
        np.testing.assert_allclose(x, jnp.broadcast_to(target, x.shape), atol=1e-5)
    with pytest.raises(Exception, match="divides by alpha"):
        fj.sampling.sample_multistep(
            lambda x, t: x, x0, kind="eps", path=path, grid=grids.Uniform(), num_steps=4
        )
    with pytest.raises(ValueError, match="valid solvers: ddim, dpm"):
        fj.sampling.sample_multistep(lambda x, t: x, x0, path=path, solver="dpm++2s", num_steps=4)
    with pytest.raises(ValueError, match="num_steps"):
        fj.sampling.sample_multistep(lambda x, t: x, x0, path=path)
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        fj.sampling.UniPC(order=4)
    with pytest.raises(ValueError, match="DEIS: order must be 1, 2 or 3"):
        fj.sampling.DEIS(order=4)
    with pytest.raises(ValueError, match="must return the shape of x"):
        fj.sampling.sample_multistep(lambda x, t: x[:, :1], x0, path=path, num_steps=2)


# ------------------------------------------------------------------ diffusers


class TablePath(fj.paths.AffinePath):
    """Test-only path: alpha, sigma interpolated from a table of grid values."""

    ts: jax.Array
    alphas: jax.Array
    sigmas: jax.Array

    def alpha(self, t):
        return jnp.interp(t, self.ts, self.alphas)

    def sigma(self, t):
        return jnp.interp(t, self.ts, self.sigmas)

    def d_alpha(self, t):
        raise NotImplementedError

    def d_sigma(self, t):
        raise NotImplementedError


_W = np.random.default_rng(0).standard_normal((2, 2)).astype(np.float32)


def _eps_np(x, t):  # a shared, arbitrary smooth eps "model"
    return np.tanh(x @ _W + np.float32(t)).astype(np.float32)


def _eps_jax(x, t):
    return jnp.tanh(x @ jnp.asarray(_W) + t)


def _diffusers_run(name, n, x0):
    """(final sample, alphas, sigmas at the n + 1 steps) of a diffusers scheduler loop."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    if name == "ddim":
        sched = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True)
    elif name == "unipc":
        sched = diffusers.UniPCMultistepScheduler(solver_order=2, solver_type="bh2")
    else:
        sched = diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)
    sched.set_timesteps(n)
    if name == "ddim":
        abar = np.r_[sched.alphas_cumprod.numpy()[sched.timesteps.numpy()], 1.0]
        alphas, sigmas = np.sqrt(abar), np.sqrt(1 - abar)
    else:  # diffusers' VP sigmas are sigma / alpha, with a final 0
        s = sched.sigmas.numpy().astype(np.float64)
        alphas = 1 / np.sqrt(s**2 + 1)
        sigmas = s * alphas
    grid = np.linspace(0.0, 1.0, n + 1)
    x = torch.from_numpy(x0.copy())
    for i, t in enumerate(sched.timesteps):
        x = sched.step(torch.from_numpy(_eps_np(x.numpy(), grid[i])), t, x).prev_sample
    return x.numpy(), alphas, sigmas, grid


@pytest.mark.parametrize("name", ["dpm++2m", "ddim", "unipc"])
def test_agrees_with_diffusers_schedulers(name):
    # diffusers' discrete VP table, read as a path on the grid t_i = i / N (t_N: sigma = 0):
    # on shared eps predictions our updates equal the scheduler's to float32 precision.
    n = 10
    x0 = np.random.default_rng(1).standard_normal((6, 2)).astype(np.float32)
    ref, alphas, sigmas, grid = _diffusers_run(name, n, x0)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    path = TablePath(f32(grid), f32(alphas), f32(sigmas))

    def ours(solver):
        x, info = fj.sampling.sample_multistep(
            _eps_jax, jnp.asarray(x0), kind="eps", path=path, solver=solver, grid=f32(grid)
        )
        assert int(info["nfe"]) == n
        return np.asarray(x)

    scale = np.max(np.abs(ref))
    np.testing.assert_allclose(ours(name), ref, atol=2e-6 * scale, rtol=0)
    # Negative control: another solver on the same predictions misses by far more.
    other = "ddim" if name != "ddim" else "dpm++2m"
    assert np.max(np.abs(ours(other) - ref)) > 1e-3 * scale


def test_sampler_specs_spend_exactly_their_nfe():
    path = PATHS["condot"]
    f = Counter(lambda x, t: 0.5 * x)
    x0 = jax.random.normal(jax.random.key(5), (4, 2))
    assert set(fj.sampling.SAMPLER_SPECS) >= {"heun@edm", "dpm++2m", "unipc@edm", "euler"}
    for spec in ("heun@edm", "dpm++2m", "unipc@edm", "euler"):  # each family, each grid kind
        f.calls = 0
        # x1 -> velocity is singular at t = 1, which Heun visits: clamp the time (t_eps).
        x, info = fj.sampling.sample_with(spec, f, x0, kind="x1", path=path, nfe=10, t_eps=1e-3)
        assert int(info["nfe"]) == f.calls == 10, spec
        assert bool(jnp.all(jnp.isfinite(x))), spec
    heun = fj.sampling.parse_sampler("heun@edm")
    assert (heun.solver, heun.grid, heun.num_steps(10)) == ("heun", "edm", 5)
    assert fj.sampling.parse_sampler("dpm++2m").grid == "logsnr"
    for bad, match in (
        ("rk4@edm", "unknown solver 'rk4'"),
        ("heun@karras", "unknown grid 'karras'"),
        ("dopri5", "unknown solver"),
    ):
        with pytest.raises(ValueError, match=match):
            fj.sampling.parse_sampler(bad)
    with pytest.raises(ValueError, match="multiple of 2, got 9"):
        fj.sampling.sample_with("heun", f, x0, kind="x1", path=path, nfe=9)
