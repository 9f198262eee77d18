"""Time grids: closed forms (Karras et al. eq. 5, log-SNR, SD3 shift), explicit grids used
exactly, clear errors for bad grids, and no recompilation for new grids or step counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj
from flowjax.sampling import grids

PATHS = {"condot": fj.paths.CondOT(), "vp": fj.paths.VP(), "cosine": fj.paths.Cosine()}


def karras_sigmas(n, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """Karras et al. 2022, eq. (5), with sigma_N = 0 (float64 NumPy)."""
    i = np.arange(n)
    s = sigma_max ** (1 / rho) + i / (n - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return np.r_[s**rho, 0.0]


@pytest.mark.parametrize("name", list(PATHS))
def test_edm_grid_is_karras_eq5(x64, name):
    path = PATHS[name]
    for n, rho in ((8, 7.0), (25, 3.0)):
        ts = np.asarray(grids.EDM(path, rho=rho)(n))
        sig = karras_sigmas(n, rho=rho)
        assert ts.shape == (n + 1,) and ts[-1] == 1.0
        # The path's noise level sigma / alpha at the grid times is eq. (5).
        level = np.asarray(path.sigma(ts[:-1]) / path.alpha(ts[:-1]))
        np.testing.assert_allclose(level, sig[:-1], rtol=1e-9)
        # Negative control: the neighbouring rho gives other levels.
        other = karras_sigmas(n, rho=rho + 1)[:-1]
        assert not np.allclose(level, other, rtol=1e-2)
    # CondOT in closed form: sigma / alpha = (1 - t) / t, so t = 1 / (1 + s) (Meta's recipe).
    if name == "condot":
        np.testing.assert_allclose(
            grids.EDM(path)(10), np.r_[1 / (1 + karras_sigmas(10)[:-1]), 1.0], rtol=1e-12
        )


def test_edm_grid_clipped_to_the_path_and_single_step(x64):
    # t1 = 0.9 on CondOT has noise level 1/9 > sigma_min: no final step to sigma = 0, the grid
    # runs N steps by eq. (5) from sigma_max to sigma(t1).
    path = PATHS["condot"]
    ts = np.asarray(grids.EDM(path)(6, 0.0, 0.9))
    s = (80 ** (1 / 7) + np.arange(7) / 6 * ((1 / 9) ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(ts, 1 / (1 + s), rtol=1e-12)
    assert ts[-1] == 0.9
    # VP at t0 = 0.5 is less noisy than sigma_max: the grid starts exactly at t0.
    ts = np.asarray(grids.EDM(PATHS["vp"])(4, 0.5, 1.0))
    assert ts[0] == 0.5 and ts[-1] == 1.0 and np.all(np.diff(ts) > 0)
    np.testing.assert_allclose(grids.EDM(path)(1), [1 / 81, 1.0], rtol=1e-12)


@pytest.mark.parametrize("name", list(PATHS))
def test_logsnr_grid_is_uniform_in_log_snr(x64, name):
    path = PATHS[name]
    ts = np.asarray(grids.LogSNR(path)(9))
    lam = np.asarray(path.log_snr(ts[:-1]))
    np.testing.assert_allclose(lam[[0, -1]], [-2 * np.log(80), -2 * np.log(0.002)], rtol=1e-9)
    np.testing.assert_allclose(np.diff(lam), np.full(8, (lam[-1] - lam[0]) / 8), rtol=1e-8)
    assert ts[-1] == 1.0


def test_uniform_and_shift_grids(x64):
    np.testing.assert_array_equal(grids.Uniform()(4), [0.0, 0.25, 0.5, 0.75, 1.0])
    # SD3 (Esser et al. 2024, eq. 23) in their time tau = 1 - t (1 = noise):
    # tau' = s tau / (1 + (s - 1) tau) on the uniform tau grid from 1 to 0.
    s, n = 3.0, 10
    tau = 1 - np.linspace(0, 1, n + 1)
    expect = 1 - s * tau / (1 + (s - 1) * tau)
    np.testing.assert_allclose(grids.Shift(s)(n), expect, atol=1e-15)
    assert not np.allclose(grids.Shift(2.0)(n), expect, atol=1e-3)
    # On [t0, t1] the warp is applied to the interval.
    np.testing.assert_allclose(grids.Shift(s)(n, 0.2, 0.6), 0.2 + 0.4 * expect, atol=1e-15)
    assert grids.get_grid("edm", PATHS["vp"], rho=5.0) == grids.EDM(PATHS["vp"], rho=5.0)


def test_explicit_grid_is_used_exactly(x64):
    ts = np.array([0.0, 0.1, 0.35, 0.36, 0.8, 1.0])
    a = 0.7
    x0 = jnp.ones((3, 2))
    x1, info = fj.sampling.sample_ode(lambda x, t: -a * x, x0, "euler", grid=ts)
    np.testing.assert_array_equal(info["ts"], ts)
    assert int(info["nfe"]) == 5 and int(info["num_steps"]) == 5
    # Euler on exactly these steps: prod(1 - a dt).
    np.testing.assert_allclose(x1, np.prod(1 - a * np.diff(ts)) * np.ones((3, 2)), rtol=1e-14)
    # Backwards, and the other samplers.
    back, info = fj.sampling.sample_ode(lambda x, t: -a * x, x0, "euler", grid=ts[::-1], t0=1, t1=0)
    np.testing.assert_array_equal(info["ts"], ts[::-1])
    path = PATHS["vp"]
    _, info = fj.sampling.sample_multistep(lambda x, t: x, x0, kind="x1", path=path, grid=ts[1:])
    np.testing.assert_array_equal(info["ts"], ts[1:])
    _, info = fj.sampling.sample_ddpm(
        lambda x, t: x, x0, kind="x1", path=path, key=jax.random.key(0), grid=ts[1:]
    )
    np.testing.assert_array_equal(info["ts"], ts[1:])


@pytest.mark.parametrize(
    "grid,kwargs,match",
    [
        (np.array([0.0, 0.6, 0.5, 1.0]), {}, "strictly increasing.*times 1 and 2 are 0.6, 0.5"),
        (np.array([0.0, 0.5, 1.2]), {}, r"must lie in \[0, 1\]"),
        (np.array([-0.1, 0.5, 1.0]), {}, r"must lie in \[0, 1\]"),
        (np.array([0.0, 0.5, 1.0]), {"num_steps": 4}, "grid has 3 times .2 steps. but num_steps=4"),
        (np.array([[0.0, 1.0]]), {}, "1-D array of at least 2 times"),
        (np.array([0.0, np.nan, 1.0]), {}, "non-finite"),
        (np.array([1.0, 0.5, 0.0]), {}, "strictly increasing"),
        (grids.EDM(PATHS["vp"]), {}, "needs num_steps"),
        (grids.EDM(PATHS["vp"]), {"num_steps": 4, "t0": 1.0, "t1": 0.0}, "needs t0 < t1"),
        ("edm", {"num_steps": 4}, "get_grid"),
    ],
)
def test_bad_grids_raise_one_clear_error(grid, kwargs, match):
    kwargs = {"solver": "heun", **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        fj.sampling.sample_ode(lambda x, t: -x, jnp.ones((2, 2)), grid=grid, **kwargs)


@pytest.mark.parametrize("sampler", ["multistep", "ddpm"])
def test_bad_grids_raise_the_same_error_in_the_diffusion_samplers(sampler):
    path = PATHS["vp"]
    run = {
        "multistep": lambda g: fj.sampling.sample_multistep(
            lambda x, t: x, jnp.ones((2, 2)), kind="x1", path=path, grid=g
        ),
        "ddpm": lambda g: fj.sampling.sample_ddpm(
            lambda x, t: x, jnp.ones((2, 2)), kind="x1", path=path, key=jax.random.key(0), grid=g
        ),
    }[sampler]
    for grid, match in (
        (np.array([0.1, 0.6, 0.5, 1.0]), "strictly increasing.*times 1 and 2 are 0.6, 0.5"),
        (np.array([0.1, 0.5, 1.2]), r"must lie in \[0, 1\]"),
    ):
        with pytest.raises(ValueError, match=match):
            run(grid)


def test_bad_grid_parameters():
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        grids.EDM(PATHS["vp"], sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="rho must be a positive"):
        grids.EDM(PATHS["vp"], rho=-1.0)
    with pytest.raises(TypeError, match="path must be an AffinePath"):
        grids.LogSNR("vp")
    with pytest.raises(ValueError, match="valid grids: uniform, shift, edm, logsnr"):
        grids.get_grid("karras")


def test_traced_explicit_grid_checked_at_run_time():
    run = jax.jit(lambda ts: fj.sampling.sample_ode(lambda x, t: -x, jnp.ones((2, 2)), grid=ts)[0])
    np.testing.assert_allclose(
        run(jnp.array([0.0, 0.5, 1.0])), jnp.exp(-1.0) * jnp.ones((2, 2)), rtol=5e-3
    )
    with pytest.raises(Exception, match="strictly monotone"):
        run(jnp.array([0.0, 0.7, 0.5]))


def test_no_recompilation_for_new_grids_and_step_counts():
    traces = []

    def v(x, t):
        traces.append(1)  # runs only while tracing
        return -x

    x0 = jnp.ones((4, 2))
    path = PATHS["vp"]
    fj.sampling.sample_ode(v, x0, "heun", 10, grid=grids.EDM(path))
    fj.sampling.sample_multistep(v, x0, kind="x1", path=path, num_steps=10)
    fj.sampling.sample_ode(v, x0, "heun", grid=np.linspace(0, 1, 5))
    n = len(traces)
    fj.sampling.sample_ode(v, x0, "heun", 17, grid=grids.EDM(path, rho=3.0))
    fj.sampling.sample_ode(v, x0, "heun", 5, grid=grids.EDM(path, sigma_max=20.0), t1=0.9)
    fj.sampling.sample_ode(v, x0, "heun", grid=np.linspace(0, 1, 9) ** 2)  # another length
    fj.sampling.sample_multistep(v, x0, kind="x1", path=path, num_steps=23)
    fj.sampling.sample_multistep(v, x0, kind="x1", path=path, grid=np.linspace(0.1, 1, 7))
    assert len(traces) == n
