"""Riemannian flow matching: manifolds, geodesic paths, the RCFM loss, the projected solver,
likelihoods, sources, data and the manifold MLP (fj.manifolds; Chen & Lipman 2024).

Truths checked: closed-form geometry, autodiff velocities, Meta's `flow_matching` on shared
inputs, the marginal field by quadrature as the loss minimiser, convergence orders on a
rotation flow with a known solution, exact pushforward densities, and negative controls.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

import flowjax as fj
from flowjax.data import _manifold as dm

M = fj.manifolds
S2 = M.Sphere(dim=2)
T2 = M.FlatTorus(dim=2)


def _uniform(manifold, n, seed, dtype=jnp.float64):
    return M.Uniform(manifold).sample(jax.random.key(seed), (n, manifold.ambient_dim), dtype=dtype)


def _sphere_grid(n_z=64, n_phi=128):
    """Gauss-Legendre in z x uniform in phi on S^2: points (N, 3) and area weights (N,)."""
    z, wz = np.polynomial.legendre.leggauss(n_z)
    phi = (np.arange(n_phi) + 0.5) * 2 * np.pi / n_phi
    zz, pp = np.meshgrid(z, phi, indexing="ij")
    r = np.sqrt(1 - zz**2)
    x = np.stack([r * np.cos(pp), r * np.sin(pp), zz], -1).reshape(-1, 3)
    w = np.repeat(wz, n_phi) * (2 * np.pi / n_phi)
    return x, w


def _torus_grid(n=128):
    a = (np.arange(n) + 0.5) * 2 * np.pi / n
    xx, yy = np.meshgrid(a, a, indexing="ij")
    return np.stack([xx, yy], -1).reshape(-1, 2), np.full(n * n, (2 * np.pi / n) ** 2)


# ------------------------------------------------------------------------------ geometry


@pytest.mark.parametrize(
    "manifold",
    [M.Sphere(dim=2), M.Sphere(dim=4), M.FlatTorus(dim=3), M.Product((S2, T2, M.Euclidean(dim=1)))],
    ids=["S2", "S4", "T3", "S2xT2xR"],
)
def test_exp_log_round_trips(x64, manifold):
    key = jax.random.key(0)
    n = 64
    if isinstance(manifold, M.Product):
        x = jnp.concatenate(
            [_uniform(S2, n, 1), _uniform(T2, n, 2), jax.random.normal(key, (n, 1))], -1
        )
        y = jnp.concatenate(
            [_uniform(S2, n, 3), _uniform(T2, n, 4), jax.random.normal(key, (n, 1)) + 1], -1
        )
    else:
        x, y = _uniform(manifold, n, 1), _uniform(manifold, n, 2)
    u = manifold.logmap(x, y)
    np.testing.assert_allclose(manifold.proju(x, u), u, atol=1e-12)  # log is tangent
    np.testing.assert_allclose(manifold.projx(manifold.expmap(x, u)), manifold.projx(y), atol=1e-10)
    # log(exp(u)) = u inside the injectivity radius (|u| < pi on S^d and per angle on T^d).
    v = manifold.proju(x, jax.random.normal(jax.random.key(5), x.shape))
    v = 2.5 * v / jnp.maximum(manifold.norm(x, v)[:, None], 2.5)
    np.testing.assert_allclose(manifold.logmap(x, manifold.expmap(x, v)), v, atol=1e-9)
    np.testing.assert_allclose(manifold.dist(x, y), manifold.norm(x, u), atol=1e-12)


def test_geodesic_distances_closed_forms(x64):
    x, y = _uniform(S2, 100, 0), _uniform(S2, 100, 1)
    np.testing.assert_allclose(
        S2.dist(x, y), np.arccos(np.clip(np.sum(x * y, -1), -1, 1)), atol=1e-7
    )
    chord = np.linalg.norm(np.asarray(x - y), axis=-1)
    assert np.max(np.abs(S2.dist(x, y) - chord)) > 0.1  # negative control: the chord is shorter
    # Near-antipodal and coincident points stay accurate (atan2, not arccos).
    e = jnp.array([[1.0, 0.0, 0.0]])
    near = S2.projx(jnp.array([[-1.0, 1e-9, 0.0]]))
    np.testing.assert_allclose(S2.dist(e, near), math.pi - 1e-9, rtol=1e-12)
    np.testing.assert_allclose(S2.dist(e, e), 0.0, atol=1e-12)
    np.testing.assert_allclose(S2.logmap(e, e), 0.0, atol=1e-12)

    a, b = _uniform(T2, 100, 2), _uniform(T2, 100, 3)
    d = np.abs(np.asarray(a - b))
    np.testing.assert_allclose(
        T2.dist(a, b), np.sqrt(np.sum(np.minimum(d, 2 * np.pi - d) ** 2, -1)), atol=1e-12
    )
    P = M.Product((S2, T2))
    pa, pb = jnp.concatenate([x, a], -1), jnp.concatenate([y, b], -1)
    np.testing.assert_allclose(P.dist(pa, pb) ** 2, S2.dist(x, y) ** 2 + T2.dist(a, b) ** 2)
    # Volumes: 4 pi for S^2, 2 pi^2 for S^3, (2 pi)^2 for T^2.
    assert math.isclose(S2.log_volume(2), math.log(4 * math.pi))
    assert math.isclose(M.Sphere().log_volume(3), math.log(2 * math.pi**2))
    assert math.isclose(T2.log_volume(2), 2 * math.log(2 * math.pi))


# ------------------------------------------------------------------------------ paths

_SCHEDULERS = {
    "condot": fj.paths.CondOT(),
    "poly2": fj.paths.Polynomial(n=2.0),
    "cosine": fj.paths.Cosine(),
}


@pytest.mark.parametrize(
    "name,sched",
    [
        ("sphere", "condot"),
        ("sphere", "poly2"),
        ("sphere", "cosine"),
        ("torus", "cosine"),
        ("product", "condot"),
    ],
)
def test_path_velocity_is_time_derivative_and_tangent(x64, name, sched):
    manifold = {"sphere": S2, "torus": T2, "product": M.Product((S2, T2))}[name]
    gpath = M.GeodesicPath(manifold, _SCHEDULERS[sched])
    x0, x1 = _uniform(manifold, 32, 0), _uniform(manifold, 32, 1)
    t = jax.random.uniform(jax.random.key(2), (32,), jnp.float64, 0.05, 0.95)
    x_t, dx_t = gpath.sample(x0, x1, t)
    # d/dt x_t by forward-mode autodiff, one example at a time.
    auto = jax.vmap(
        lambda a, b, s: jax.jvp(
            lambda r: gpath.sample(a[None], b[None], r[None])[0][0], (s,), (1.0,)
        )[1]
    )(x0, x1, t)
    np.testing.assert_allclose(dx_t, auto, atol=1e-10)
    np.testing.assert_allclose(manifold.proju(x_t, dx_t), dx_t, atol=1e-12)
    assert float(jnp.max(manifold.distance_to_manifold(x_t))) < 1e-12
    # Ends: x_0 = x0, x_1 = x1, and the speed is kappa'(t) d(x0, x1).
    np.testing.assert_allclose(manifold.dist(gpath.sample(x0, x1, 0.0)[0], x0), 0.0, atol=1e-7)
    np.testing.assert_allclose(manifold.dist(gpath.sample(x0, x1, 1.0)[0], x1), 0.0, atol=1e-7)
    np.testing.assert_allclose(
        manifold.norm(x_t, dx_t), gpath.d_kappa(t) * manifold.dist(x0, x1), rtol=1e-9
    )
    # The premetric form of the field agrees along the path.
    np.testing.assert_allclose(gpath.conditional_velocity(x_t, x1, t), dx_t, atol=1e-8)


def test_x_t_stays_on_sphere_float32():
    x0, x1 = _uniform(S2, 4096, 0, jnp.float32), _uniform(S2, 4096, 1, jnp.float32)
    t = jax.random.uniform(jax.random.key(3), (4096,))
    x_t, dx_t = M.GeodesicPath(S2).sample(x0, x1, t)
    assert float(jnp.max(jnp.abs(jnp.linalg.norm(x_t, axis=-1) - 1))) < 1e-6
    assert float(jnp.max(jnp.abs(jnp.sum(x_t * dx_t, -1)))) < 1e-5


@pytest.mark.parametrize("name", ["sphere", "torus"])
def test_agreement_with_meta_geodesic_prob_path(x64, name):
    torch = pytest.importorskip("torch")
    fm_path = pytest.importorskip("flow_matching.path")
    sched = pytest.importorskip("flow_matching.path.scheduler")
    fm_man = pytest.importorskip("flow_matching.utils.manifolds")
    manifold = S2 if name == "sphere" else T2
    theirs_m = fm_man.Sphere() if name == "sphere" else fm_man.FlatTorus()
    x0, x1 = _uniform(manifold, 64, 10), _uniform(manifold, 64, 11)
    t = jax.random.uniform(jax.random.key(12), (64,), jnp.float64, 0.02, 0.98)
    pairs = [
        (fj.paths.CondOT(), sched.CondOTScheduler()),
        (fj.paths.Polynomial(n=3.0), sched.PolynomialConvexScheduler(n=3.0)),
        (fj.paths.Cosine(), sched.CosineScheduler()),
    ]
    for ours_s, theirs_s in pairs:
        x_t, dx_t = M.GeodesicPath(manifold, ours_s).sample(x0, x1, t)
        ref = fm_path.GeodesicProbPath(theirs_s, theirs_m).sample(
            x_0=torch.from_numpy(np.asarray(x0)),
            x_1=torch.from_numpy(np.asarray(x1)),
            t=torch.from_numpy(np.asarray(t)),
        )
        np.testing.assert_allclose(x_t, ref.x_t.numpy(), atol=1e-10)
        np.testing.assert_allclose(dx_t, ref.dx_t.numpy(), atol=1e-9)
    # Negative control: another scheduler does not match theirs.
    x_t, _ = M.GeodesicPath(manifold, fj.paths.Polynomial(n=2.0)).sample(x0, x1, t)
    assert np.max(np.abs(np.asarray(x_t) - ref.x_t.numpy())) > 1e-3


# ------------------------------------------------------------------------------ the loss


def _vmf():
    return dm.preset("vmf_mixture")


def _marginal_field(x, t, grid, weights, log_q):
    """u_t(x) = int u_t(x | x1) p_t(x | x1) q(x1) dx1 / p_t(x) by quadrature over x1, for the
    uniform source and kappa(t) = t on S^2.

    With x0 uniform, x_t lies on the geodesic to x1 at distance r = (1 - k) r0, so
    p_t(x | x1) = sin(r / (1 - k)) / (4 pi (1 - k) sin r) for r < (1 - k) pi (else 0), and
    u_t(x | x1) = k' / (1 - k) log_x(x1)."""
    k, dk = t, jnp.ones_like(t)

    def one(xi, ti, ki, dki):
        r = S2.dist(xi[None], grid)
        inside = r < (1 - ki) * jnp.pi
        sin_r = jnp.where(inside, jnp.sin(r), 1.0)
        ratio = jnp.where(r < 1e-6, 1.0, jnp.sin(r / (1 - ki)) / sin_r)
        kern = jnp.where(inside, jnp.clip(ratio, 0.0) / (1 - ki), 0.0)
        w = weights * jnp.exp(log_q) * kern
        u = dki / (1 - ki) * S2.logmap(xi[None], grid)
        return jnp.sum(w[:, None] * u, 0) / jnp.sum(w)

    return jax.lax.map(lambda a: one(*a), (x, t, k, dk), batch_size=64)


@pytest.mark.slow
def test_rcfm_loss_is_minimised_by_the_marginal_field(x64):
    vmf = _vmf()
    grid, weights = _sphere_grid(40, 80)
    grid = jnp.asarray(grid)
    log_q = vmf.log_prob(grid)
    n = 768
    x1 = vmf.sample(jax.random.key(0), n, jnp.float64)
    x0 = _uniform(S2, n, 1)
    t = jax.random.uniform(jax.random.key(2), (n,), jnp.float64, 0.0, 0.8)
    obj = M.RiemannianFlowMatching(path=M.GeodesicPath(S2))
    x_t, target = obj.path.sample(x0, x1, t)
    v_star = jax.jit(_marginal_field)(x_t, t, grid, jnp.asarray(weights), log_q)

    def loss_of(field):
        return obj.regression(None, lambda p, x, s, **kw: field, x0, x1, t)

    base = loss_of(v_star)
    # Perturbations raise the loss by E|delta|^2: the cross term E<v* - u, delta> is 0 (the
    # marginal field is the conditional expectation of the target), to Monte Carlo error.
    for seed in range(3):
        delta = 0.3 * S2.proju(x_t, jax.random.normal(jax.random.key(10 + seed), x_t.shape))
        cross = 2 * jnp.sum((v_star - target) * delta, -1)
        assert abs(float(jnp.mean(cross))) < 4 * float(jnp.std(cross)) / math.sqrt(n)
        gain = float(jnp.mean(loss_of(v_star + delta)) - jnp.mean(base))
        assert gain > 0.5 * float(jnp.mean(jnp.sum(delta**2, -1)))
    # Negative controls: a shrunken or stretched v* loses (a - 1)^2 E|v*|^2 in expectation.
    for a in (0.7, 1.3):
        gain = float(jnp.mean(loss_of(a * v_star) - base))
        assert gain > 0.5 * (a - 1) ** 2 * float(jnp.mean(jnp.sum(v_star**2, -1)))
    # The same value through the objective's __call__ signature.
    value, aux = obj(None, jax.random.key(3), {"x1": x1}, model=lambda p, x, s, **kw: 0 * x)
    assert aux["per_example_loss"].shape == (n,) and np.isfinite(float(value))


# ------------------------------------------------------------------------------ solver


def _rotation(axis):
    axis = jnp.asarray(axis, jnp.float64) / jnp.linalg.norm(jnp.asarray(axis, jnp.float64))

    def v(x, t):  # angular speed 1 + t about `axis`: angle A(t) = t + t^2 / 2
        return (1.0 + t) * jnp.cross(axis, x)

    def exact(x, t):  # Rodrigues' rotation formula
        a = t + 0.5 * t**2
        return (
            x * jnp.cos(a)
            + jnp.cross(axis, x) * jnp.sin(a)
            + axis * jnp.sum(axis * x, -1, keepdims=True) * (1 - jnp.cos(a))
        )

    return v, exact


@pytest.mark.parametrize("solver,order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_projected_solver_convergence_order(x64, solver, order):
    v, exact = _rotation([1.0, 2.0, 2.0])
    x0 = _uniform(S2, 16, 0)
    errs = []
    for n in (16, 32, 64):
        x1, info = M.sample_ode(S2, v, x0, solver=solver, num_steps=n)
        assert int(info["nfe"]) == n * {"euler": 1, "midpoint": 2, "rk4": 4}[solver]
        assert float(jnp.max(jnp.abs(jnp.linalg.norm(x1, axis=-1) - 1))) < 1e-12
        errs.append(float(jnp.max(jnp.linalg.norm(x1 - exact(x0, 1.0), axis=-1))))
    rates = np.log2(np.asarray(errs[:-1]) / np.asarray(errs[1:]))
    assert np.all(np.abs(rates - order) < 0.3), (errs, rates)


@pytest.mark.slow
def test_solver_keeps_samples_on_manifold_and_counts_nfe():
    v32, _ = _rotation([0.0, 0.0, 1.0])
    x0 = _uniform(S2, 64, 0, jnp.float32)
    calls = []

    def counted(x, t):
        jax.debug.callback(lambda: calls.append(1))
        # A field with a radial component: projection must remove it.
        return v32(x, t).astype(x.dtype) + 0.3 * x

    for solver, n in [("dopri5", None)]:  # fixed-step counts: the convergence test
        calls.clear()
        x1, info = M.sample_ode(S2, counted, x0, solver=solver, num_steps=n, rtol=1e-5, atol=1e-5)
        jax.block_until_ready(x1)
        assert float(jnp.max(jnp.abs(jnp.linalg.norm(x1, axis=-1) - 1))) < 1e-6
        assert int(info["nfe"]) == len(calls), solver
    # Torus: translation by a constant field, wrapped to [0, 2 pi).
    y0 = _uniform(T2, 8, 1, jnp.float32)
    y1, _ = M.sample_ode(T2, lambda x, t: jnp.full_like(x, 7.0), y0, solver="rk4", num_steps=4)
    np.testing.assert_allclose(y1, np.mod(np.asarray(y0) + 7.0, 2 * np.pi), atol=1e-5)
    assert float(jnp.min(y1)) >= 0 and float(jnp.max(y1)) < 2 * np.pi


# ------------------------------------------------------------------------------ likelihood


def test_likelihood_of_uniform_pushed_by_rotation_is_uniform(x64):
    v, _ = _rotation([1.0, -1.0, 0.5])
    x1 = _uniform(S2, 32, 3)
    logp, info = M.log_prob(S2, v, x1, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(logp, -math.log(4 * math.pi), atol=1e-7)
    assert int(info["nfe"]) > 0


def test_likelihood_matches_closed_form_pushforward(x64):
    """Height-gradient flow v = c P_x e_z: z_t = tanh(atanh(z_0) + c t), so the uniform law is
    pushed to p_1(x) = (1 - z_0^2) / ((1 - z_1^2) 4 pi) (Archimedes: z is uniform on S^2)."""
    c = 0.8
    ez = jnp.array([0.0, 0.0, 1.0])

    def v(x, t):
        return c * (ez - x[:, 2:3] * x)

    x1 = _uniform(S2, 32, 4)
    z1 = x1[:, 2]
    z0 = jnp.tanh(jnp.arctanh(z1) - c)
    exact = jnp.log((1 - z0**2) / (1 - z1**2) / (4 * math.pi))
    logp, _ = M.log_prob(S2, v, x1, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(logp, exact, atol=1e-7)
    assert float(jnp.max(jnp.abs(exact + math.log(4 * math.pi)))) > 0.3  # non-trivial
    # Negative control: the ambient divergence tr(J) (no tangent frame) gives another answer.
    _, div_ambient = fj.likelihood.exact_divergence(lambda x: v(x, 0.0), x1)
    _, div_tangent = M.riemannian_divergence(S2, lambda x: v(x, 0.0), x1)
    np.testing.assert_allclose(div_tangent, -2 * c * z1, atol=1e-12)  # div_S2 (c P e_z) = -2cz
    assert float(jnp.max(jnp.abs(div_ambient - div_tangent))) > 0.1


@pytest.mark.slow
def test_hutchinson_tangent_probes_are_unbiased(x64):
    """The Hutchinson estimate with tangent probes z = P_x eps averages to the exact answer."""
    c = 0.8
    ez = jnp.array([0.0, 0.0, 1.0])

    def v(x, t):
        return c * (ez - x[:, 2:3] * x)

    x1 = _uniform(S2, 32, 4)
    z1 = x1[:, 2]
    z0 = jnp.tanh(jnp.arctanh(z1) - c)
    exact = jnp.log((1 - z0**2) / (1 - z1**2) / (4 * math.pi))
    # Hutchinson with tangent probes is unbiased: the mean over many probes converges.
    logp_h, _ = M.log_prob(
        S2,
        v,
        x1,
        divergence="hutchinson",
        key=jax.random.key(0),
        num_probes=32,
        solver="rk4",
        num_steps=8,
    )
    err = np.asarray(logp_h - exact)
    assert abs(err.mean()) < 4 * err.std() / math.sqrt(len(err)) and np.max(np.abs(err)) < 0.5


def test_torus_likelihood_closed_form(x64):
    """dx/dt = sin(x) per angle: tan(x_t / 2) = tan(x_0 / 2) e^t, so
    dx_0/dx_1 = e^{-1} / (cos^2(x_1/2) + e^{-2} sin^2(x_1/2))."""
    x1 = _uniform(T2, 32, 5)
    logp, _ = M.log_prob(T2, lambda x, t: jnp.sin(x), x1, rtol=1e-9, atol=1e-9)
    jac = math.exp(-1) / (jnp.cos(x1 / 2) ** 2 + math.exp(-2) * jnp.sin(x1 / 2) ** 2)
    np.testing.assert_allclose(
        logp, -2 * math.log(2 * math.pi) + jnp.sum(jnp.log(jac), -1), atol=1e-7
    )


@pytest.mark.slow
def test_trained_model_nll_approaches_vmf_entropy():
    """A small ManifoldMLP trained with the RCFM loss on the vMF mixture: its exact NLL on held-out
    draws approaches the mixture's entropy (uniform prior: log 4 pi = 2.53 nats)."""
    import optax

    vmf = _vmf()
    model = fj.models.build_model(
        "manifold_mlp", "small", input_shape=(3,), key=jax.random.key(0), manifold=S2
    )
    apply_fn, params = fj.models.functional(model)
    obj = M.RiemannianFlowMatching(path=M.GeodesicPath(S2), model=apply_fn)
    opt = optax.adam(2e-3)

    @jax.jit
    def steps(params, state, key):
        def step(carry, k):
            params, state = carry
            k1, k2 = jax.random.split(k)
            batch = {"x1": vmf.sample(k1, 128)}
            (_, _), grads = jax.value_and_grad(obj, has_aux=True)(params, k2, batch)
            updates, state = opt.update(grads, state)
            return (optax.apply_updates(params, updates), state), None

        (params, state), _ = jax.lax.scan(step, (params, state), jax.random.split(key, 300))
        return params, state

    state = opt.init(params)
    for i in range(3):
        params, state = steps(params, state, jax.random.key(100 + i))
    x_test = vmf.sample(jax.random.key(7), 128)
    entropy = -float(jnp.mean(vmf.log_prob(vmf.sample(jax.random.key(8), 50_000))))
    logp, _ = M.log_prob(S2, lambda x, t: apply_fn(params, x, t), x_test, rtol=1e-5, atol=1e-5)
    nll = -float(jnp.mean(logp))
    exact_nll = -float(jnp.mean(vmf.log_prob(x_test)))
    # The model's NLL is an upper bound of the data's cross-entropy (up to sampling error).
    assert exact_nll - 0.1 < nll < entropy + 0.3, (nll, entropy, exact_nll)
    assert nll < math.log(4 * math.pi) - 0.8  # far better than the uniform prior


# ------------------------------------------------------------------------------ sources / data


def test_sources_normalised_and_consistent(x64):
    grid, w = _sphere_grid()
    pn = M.ProjectedNormal(mean=jnp.array([0.5, -1.0, 1.5]), scale=0.8)
    dens = np.exp(np.asarray(pn.log_prob(jnp.asarray(grid))))
    np.testing.assert_allclose(np.sum(dens * w), 1.0, atol=1e-8)
    samples = pn.sample(jax.random.key(0), 50_000)
    np.testing.assert_allclose(
        np.mean(np.asarray(samples), 0), np.sum(grid * (dens * w)[:, None], 0), atol=0.012
    )
    # mean = 0 is the uniform law; S^3 normalises too (1-D radial integral check).
    np.testing.assert_allclose(
        M.ProjectedNormal(jnp.zeros(3), 1.0).log_prob(jnp.asarray(grid[:5])), -math.log(4 * math.pi)
    )
    pn4 = M.ProjectedNormal(jnp.array([1.0, 0.0, 0.0, 0.0]), 0.7)
    # On S^3 the density depends on w = x1 only; surface measure 4 pi sqrt(1 - w^2) dw.
    ws, wts = np.polynomial.legendre.leggauss(200)
    pts = np.stack([ws, np.sqrt(1 - ws**2), 0 * ws, 0 * ws], -1)
    dens4 = np.exp(np.asarray(pn4.log_prob(jnp.asarray(pts))))
    np.testing.assert_allclose(np.sum(dens4 * 4 * np.pi * np.sqrt(1 - ws**2) * wts), 1.0, atol=1e-4)

    tg, tw = _torus_grid()
    wn = M.WrappedNormal(mean=jnp.array([0.3, 6.0]), scale=jnp.array([0.5, 1.5]))
    dens = np.exp(np.asarray(wn.log_prob(jnp.asarray(tg))))
    np.testing.assert_allclose(np.sum(dens * tw), 1.0, atol=1e-8)
    s = np.asarray(wn.sample(jax.random.key(1), 50_000))
    assert s.min() >= 0 and s.max() < 2 * np.pi
    np.testing.assert_allclose(
        np.mean(np.cos(s), 0), np.sum(np.cos(tg) * (dens * tw)[:, None], 0), atol=0.012
    )
    np.testing.assert_allclose(
        M.Uniform(T2).log_prob(jnp.asarray(tg[:3])), -2 * math.log(2 * np.pi)
    )


@pytest.mark.slow
def test_vmf_mixture_density_and_wood_sampler(x64):
    grid, w = _sphere_grid()
    vmf = _vmf()
    np.testing.assert_allclose(
        np.sum(np.exp(np.asarray(vmf.log_prob(jnp.asarray(grid)))) * w), 1.0, rtol=1e-5
    )  # the product quadrature's own error at this kappa is ~4e-7 (measured)
    # Wood's sampler: E[mu . x] = A_p(kappa) = I_{p/2}(kappa) / I_{p/2-1}(kappa), here on S^4.
    for p, kappa in [(5, 12.0)]:
        mu = np.eye(p)[:1]
        one = dm.VonMisesFisherMixture(mu, [kappa])
        x = np.asarray(one.sample(jax.random.key(2), 20_000))
        np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0, atol=1e-12)
        a_p = scipy.special.ive(p / 2, kappa) / scipy.special.ive(p / 2 - 1, kappa)
        assert abs(x[:, 0].mean() - a_p) < 4 * x[:, 0].std() / math.sqrt(len(x))
        assert abs(x[:, 0].mean() - (a_p - 0.02)) > 4 * x[:, 0].std() / math.sqrt(len(x))
    # The exact inverse-CDF stream and Wood's sampler give the same law (E[log p] agrees).
    u = np.random.default_rng(0).uniform(size=(20_000, 3))
    xs, _ = vmf.from_uniforms(u)
    xw = vmf.sample(jax.random.key(3), 20_000)
    a, b = np.asarray(vmf.log_prob(jnp.asarray(xs))), np.asarray(vmf.log_prob(xw))
    assert abs(a.mean() - b.mean()) < 4 * math.hypot(a.std(), b.std()) / math.sqrt(len(a))


def test_torus_data_densities(x64):
    tg, tw = _torus_grid()
    for name in ("torus_checkerboard", "wrapped_gaussians"):
        dist = dm.preset(name)
        np.testing.assert_allclose(
            np.sum(np.exp(np.asarray(dist.log_prob(jnp.asarray(tg)))) * tw), 1.0, atol=1e-6
        )
        x, _ = dist.from_uniforms(np.random.default_rng(1).uniform(size=(5000, 3)))
        assert np.all(np.isfinite(np.asarray(dist.log_prob(jnp.asarray(x)))))
        assert np.all(np.isfinite(np.asarray(dist.log_prob(dist.sample(jax.random.key(0), 5000)))))
    it = fj.data.make_iterator("vmf_mixture", global_batch_size=16, seed=0)
    batch = next(it)
    np.testing.assert_allclose(np.linalg.norm(batch["x1"], axis=-1), 1.0, atol=1e-6)
    assert fj.data.manifold_of("torus_checkerboard") == T2


def test_file_loaders(tmp_path):
    (tmp_path / "volcano.csv").write_text("latitude,longitude\n0,0\n90,0\n0,90\n-45,180\n")
    (tmp_path / "quakes.csv").write_text("10.5,-20\n-3,45\n")  # Mathieu & Nickel: no header
    x = dm.load_earth("volcano", str(tmp_path))
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(x, [[1, 0, 0], [0, 0, 1], [0, 1, 0], [-r, 0, -r]], atol=1e-12)
    assert dm.load_earth("earthquake", str(tmp_path)).shape == (2, 3)
    src = fj.data.open_source("volcano", split="train", data_dir=str(tmp_path))
    assert len(src) == 3
    (tmp_path / "dihedral.tsv").write_text("amino\tphi\tpsi\nGLY\t-60\t180\nPRO\t90\t-45\n")
    ang = dm.load_dihedral(str(tmp_path / "dihedral.tsv"))
    np.testing.assert_allclose(ang, np.deg2rad([[300, 180], [90, 315]]), atol=1e-12)
    np.testing.assert_allclose(
        dm.load_dihedral(str(tmp_path / "dihedral.tsv"), amino="PRO"), np.deg2rad([[90, 315]])
    )
    with pytest.raises(FileNotFoundError, match="flood"):
        dm.load_earth("flood", str(tmp_path))
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="phi and psi"):
        dm.load_dihedral(str(tmp_path / "bad.csv"))


# ------------------------------------------------------------------------------ OT, model


@pytest.mark.parametrize("manifold", [S2, T2], ids=["sphere", "torus"])
def test_geodesic_ot_is_optimal(manifold):
    n = 6
    x0, x1 = _uniform(manifold, n, 20, jnp.float32), _uniform(manifold, n, 21, jnp.float32)
    p0, p1, _ = M.GeodesicOT(manifold)(jax.random.key(0), x0, x1)
    np.testing.assert_allclose(p1, x1)
    cost = np.asarray(manifold.dist(x0[:, None], x1[None])) ** 2
    best = min(sum(cost[p[j], j] for j in range(n)) for p in itertools.permutations(range(n)))
    got = float(jnp.sum(manifold.dist(p0, p1) ** 2))
    assert abs(got - best) < 1e-4
    ident = float(jnp.sum(manifold.dist(x0, x1) ** 2))
    assert ident > best + 1e-3  # negative control: the drawn pairing is not optimal


def test_manifold_mlp_is_tangent_and_periodic():
    model = fj.models.build_model(
        "manifold_mlp", "tiny", input_shape=(3,), key=jax.random.key(0), manifold="sphere"
    )
    f, params = fj.models.functional(model)
    x = _uniform(S2, 8, 0, jnp.float32)
    out = f(params, x, jnp.linspace(0, 1, 8))
    assert float(jnp.max(jnp.abs(jnp.sum(out * x, -1)))) < 1e-6
    assert float(jnp.max(jnp.abs(out))) > 1e-4
    tm = fj.models.build_model(
        "manifold_mlp", "tiny", input_shape=(2,), key=jax.random.key(1), manifold=T2
    )
    g, p = fj.models.functional(tm)
    a = _uniform(T2, 8, 1, jnp.float32)
    np.testing.assert_allclose(g(p, a, 0.5), g(p, a + 2 * jnp.pi, 0.5), atol=1e-5)
    with pytest.raises(ValueError, match="input_shape"):
        fj.models.build_model(
            "manifold_mlp", "tiny", input_shape=(4,), key=jax.random.key(1), manifold=S2
        )


# ------------------------------------------------------------------------------ bad input


def test_bad_input_raises_one_clear_error():
    gpath = M.GeodesicPath(S2)
    x = _uniform(S2, 4, 0, jnp.float32)
    with pytest.raises(ValueError, match="x0 is not on Sphere"):
        gpath.sample(2 * x, x, 0.5)
    with pytest.raises(ValueError, match="coordinates per point"):
        gpath.sample(x[:, :2], x[:, :2], 0.5)
    with pytest.raises(ValueError, match="kappa"):
        M.GeodesicPath(S2, fj.paths.VP())
    with pytest.raises(ValueError, match="source lives on FlatTorus"):
        M.RiemannianFlowMatching(path=gpath, source=M.Uniform(T2))
    with pytest.raises(ValueError, match="prior lives on"):
        M.log_prob(S2, lambda y, t: 0 * y, x, prior=M.WrappedNormal(jnp.zeros(2), 1.0))
    with pytest.raises(ValueError, match="not on Sphere"):
        M.sample_ode(S2, lambda y, t: 0 * y, 3 * x, solver="euler", num_steps=2)
    with pytest.raises(ValueError, match="needs a fixed step count"):
        M.sample_ode(S2, lambda y, t: 0 * y, x, solver="rk4")
    with pytest.raises(ValueError, match="not compact"):
        M.Uniform(M.Euclidean(dim=2))
    with pytest.raises(ValueError, match="needs dim"):
        M.Product((M.Sphere(), T2))
    obj = M.RiemannianFlowMatching(path=gpath)
    with pytest.raises(Exception, match="not on Sphere"):
        jax.jit(lambda b: obj(None, jax.random.key(0), b, model=lambda p, z, t, **k: 0 * z)[0])(
            {"x1": 2 * x}
        ).block_until_ready()


# ------------------------------------------------------------------------------ notebook


@pytest.mark.slow
def test_riemannian_notebook_runs_and_learns(monkeypatch):
    """notebooks/riemannian.ipynb at a small size (FLOWJAX_NB_STEPS=200): runs end to end and
    both models beat the uniform law (KL to the data below the uniform law's)."""
    import json
    import os
    from pathlib import Path

    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    root = Path(__file__).resolve().parent.parent
    nb = nbformat.read(root / "notebooks" / "riemannian.ipynb", as_version=4)
    paths = [str(root), os.environ.get("PYTHONPATH")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("FLOWJAX_NB_STEPS", "200")
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(root)}}
    ).execute()
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outs if o.output_type == "stream")
    summary = json.loads(next(s for s in text.splitlines() if s.startswith("SUMMARY "))[8:])
    uniform_kl = math.log(4 * math.pi) - summary["sphere"]["entropy"]
    assert 0 < summary["sphere"]["kl"] < 0.7 * uniform_kl, summary
    torus_uniform_kl = 2 * math.log(2 * math.pi) - summary["torus"]["entropy"]
    assert 0 < summary["torus"]["kl"] < 0.7 * torus_uniform_kl, summary
    assert sum("image/png" in o.get("data", {}) for o in outs) >= 4
