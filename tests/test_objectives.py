"""Objectives: minimised by the analytic field; weightings, time laws, labels, registry."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj
from flowjax.objectives import (
    DiscreteDDPM,
    EDMLogNormal,
    EDMPrecond,
    EDMWeighting,
    LogitNormal,
    MinSNRWeighting,
    SNRWeighting,
    Uniform,
    UniformWeighting,
    diffusion,
    flow_matching,
    get_objective,
    get_time_dist,
    get_weighting,
    make_objective,
)
from flowjax.objectives.weighting import x1_error_factor


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


@functools.cache
def _gmm():
    return fj.analytic.GaussianMixture(
        means=jnp.array([[2.0, 0.0], [-1.0, 1.5], [0.0, -2.0]]),
        stds=jnp.array([0.5, 0.4, 0.6]),
        weights=jnp.array([0.5, 0.3, 0.2]),
    )


@functools.cache
def _full_batch():
    # A key of its own: the objectives split their keys the same way the sampler does.
    x1, labels = _gmm().sample_with_labels(jax.random.key(1234), 8192)
    return {"x1": x1, "label": labels.astype(jnp.int32)}


def _batch(n=8192):
    return {k: v[:n] for k, v in _full_batch().items()}


_PERTURBATIONS = ("constant", "scale", "time_shift", "linear")


def _perturbed(oracle):
    """Model = oracle + sum_k a_k h_k for four fixed directions h_k (params = a, shape (4,))."""

    def model(a, x, t, *, y=None, key=None):
        f = oracle(x, t)
        h = (
            jnp.ones_like(x) * jnp.array([1.0, -0.5]),
            f,
            (oracle(x, t + 0.05 * (1.0 - t)) - f) / 0.05,  # the oracle at a later time
            x,
        )
        return f + sum(ak * hk for ak, hk in zip(a, h, strict=True))

    return model


_STEP = 0.2
_K = len(_PERTURBATIONS)
_PAIRS = [(k, m) for k in range(_K) for m in range(k + 1, _K)]
# Evaluation points: 0, +-STEP e_k, STEP (e_k + e_m). The oracle does not depend on a, so
# vmapping the loss over these points evaluates the oracle once. NumPy float64, so that the
# points are exact multiples of STEP whatever JAX's default dtype is at import time.
_POINTS = _STEP * np.concatenate(
    [
        np.zeros((1, _K)),
        np.eye(_K),
        -np.eye(_K),
        np.stack([np.eye(_K)[k] + np.eye(_K)[m] for k, m in _PAIRS]),
    ]
)


def _quadratic_fit(loss_of_a):
    """The loss is exactly quadratic in a: L(a) = L0 + g.a + a.H.a / 2; fit it from _POINTS.

    Returns (H, L0, gain, L(+-STEP e_k)) with gain = (L0 - min_a L) / L0 = g.H^-1.g / (2 L0),
    the fraction of the loss any combination of the perturbations could remove. When the oracle
    is the minimiser the slope g vanishes in expectation, so the gain is Monte Carlo noise of
    order (number of directions) / (batch size); a wrong field gives a gain of order 1e-2..1.
    """
    vals = jax.vmap(loss_of_a)(jnp.asarray(_POINTS))
    l0, lp, lm, lpair = vals[0], vals[1 : 1 + _K], vals[1 + _K : 1 + 2 * _K], vals[1 + 2 * _K :]
    g = (lp - lm) / (2 * _STEP)
    h = jnp.diag((lp + lm - 2 * l0) / _STEP**2)
    for (k, m), v in zip(_PAIRS, lpair, strict=True):
        hkm = (v - lp[k] - lp[m] + l0) / _STEP**2
        h = h.at[k, m].set(hkm).at[m, k].set(hkm)
    return h, l0, 0.5 * g @ jnp.linalg.solve(h, g) / l0, jnp.concatenate([lp, lm])


def _check_fit(fit, tol, name=""):
    hess, l0, gain, perturbed = fit
    assert np.all(np.linalg.eigvalsh(np.asarray(hess)) > 0), name  # strictly convex in a
    assert float(gain) < tol, name
    assert np.all(np.asarray(perturbed) > float(l0)), name  # finite perturbations cost more


# ---------------------------------------------------------------------------- flow matching


def _fm_fit(path, oracle):
    batch = {"x1": _batch()["x1"]}
    model = _perturbed(oracle)
    return jax.jit(
        lambda: _quadratic_fit(
            lambda a: flow_matching.loss(
                a, jax.random.key(1), batch, model=model, path=path, time_dist=Uniform(eps=0.01)
            )[0]
        )
    )()


@pytest.mark.parametrize("path", [fj.paths.CondOT(), fj.paths.Cosine()], ids=["condot", "cosine"])
def test_flow_matching_minimised_by_exact_velocity(path):
    _check_fit(_fm_fit(path, lambda x, t: _gmm().velocity(path, x, t)), tol=2e-3)


def test_flow_matching_detects_wrong_field():
    # Negative control: the exact velocity of another path is not the minimiser.
    fit = _fm_fit(fj.paths.CondOT(), lambda x, t: _gmm().velocity(fj.paths.Cosine(), x, t))
    assert float(fit[2]) > 0.01


# ---------------------------------------------------------------------------- diffusion


def _exact_prediction(path, target):
    gmm = _gmm()

    def oracle(x, t):
        x1_hat = gmm.posterior_mean(path, x, t)
        return fj.paths.convert(x1_hat, src="x1", dst=target, path=path, x=x, t=t)

    return oracle


_WEIGHTINGS = {
    "uniform": UniformWeighting(),
    "snr": SNRWeighting(),
    "min_snr": MinSNRWeighting(gamma=5.0),
    "edm": EDMWeighting(sigma_data=0.5),
}


def _diffusion_gains(path, oracle_path, target, batch):
    """Gain statistic for all four weightings in one compilation, common random numbers."""
    model = _perturbed(_exact_prediction(oracle_path, target))

    @jax.jit
    def gains(weightings):
        out = []
        for w in weightings:
            loss_of_a = lambda a, w=w: diffusion.loss(  # noqa: E731
                a,
                jax.random.key(2),
                batch,
                model=model,
                path=path,
                target=target,
                weighting=w,
                time_dist=Uniform(eps=0.02),
            )[0]
            out.append(_quadratic_fit(loss_of_a))
        return out

    return dict(zip(_WEIGHTINGS, gains(tuple(_WEIGHTINGS.values())), strict=True))


@pytest.mark.parametrize(
    "path, target",
    [
        (fj.paths.CondOT(), "eps"),
        (fj.paths.CondOT(), "x1"),
        (fj.paths.CondOT(), "velocity"),
        (fj.paths.VP(), "velocity"),
    ],
    ids=["condot-eps", "condot-x1", "condot-velocity", "vp-velocity"],
)
def test_diffusion_minimised_by_exact_prediction(path, target):
    batch = {"x1": _batch()["x1"]}
    for name, fit in _diffusion_gains(path, path, target, batch).items():
        _check_fit(fit, 2e-3, name)


def test_diffusion_detects_wrong_prediction():
    # Negative control: the posterior mean under another path is not the minimiser.
    batch = {"x1": _batch()["x1"]}
    gains = _diffusion_gains(fj.paths.CondOT(), fj.paths.Cosine(), "x1", batch)
    for name, fit in gains.items():
        assert float(fit[2]) > 0.01, name


# ---------------------------------------------------------------------------- weightings

_PATHS = {
    "condot": fj.paths.CondOT(),
    "cosine": fj.paths.Cosine(),
    "vp": fj.paths.VP(),
    "edm": fj.paths.EDM(),
}


@pytest.mark.parametrize("path", list(_PATHS.values()), ids=list(_PATHS))
def test_weightings_agree_across_targets(path):
    """w_k ||pred_k - target_k||^2 = w_x1 ||x1_hat - x1||^2 pointwise, for every weighting."""
    key = jax.random.key(3)
    n = 64
    t = jnp.linspace(0.02, 0.98, n)
    x1 = jax.random.normal(key, (n, 3))
    x0 = jax.random.normal(jax.random.fold_in(key, 1), (n, 3))
    x1_hat = x1 + 0.3 * jax.random.normal(jax.random.fold_in(key, 2), (n, 3))
    x_t = path.interpolate(x0, x1, t)
    truth = {"x1": x1, "eps": x0, "velocity": path.velocity_target(x0, x1, t)}
    err_x1 = jnp.sum((x1_hat - x1) ** 2, -1)
    for target in ("eps", "velocity"):
        pred = fj.paths.convert(x1_hat, src="x1", dst=target, path=path, x=x_t, t=t)
        err = jnp.sum((pred - truth[target]) ** 2, -1)
        np.testing.assert_allclose(err, x1_error_factor(path, t, target) * err_x1, rtol=1e-9)
        for name, w in _WEIGHTINGS.items():
            if name == "uniform":
                continue
            np.testing.assert_allclose(
                w(path, t, target) * err, w(path, t, "x1") * err_x1, rtol=1e-9, err_msg=name
            )


def test_weighting_closed_forms():
    t = jnp.linspace(0.05, 0.95, 19)
    for path in _PATHS.values():
        a, s = path.alpha(t), path.sigma(t)
        snr = a**2 / s**2
        # SNR weighting: the x1 loss weighted by SNR is the plain eps loss (Kingma et al. 2021).
        np.testing.assert_allclose(SNRWeighting()(path, t, "x1"), snr, rtol=1e-12)
        np.testing.assert_array_equal(SNRWeighting()(path, t, "eps"), 1.0)
        np.testing.assert_allclose(MinSNRWeighting(5.0)(path, t, "x1"), jnp.minimum(snr, 5.0))
        np.testing.assert_allclose(
            MinSNRWeighting(5.0)(path, t, "eps"), jnp.minimum(snr, 5.0) / snr, rtol=1e-12
        )
        # EDM lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 with sigma = s / a (table 1).
        sig = s / a
        np.testing.assert_allclose(
            EDMWeighting(0.5)(path, t, "x1"), (sig**2 + 0.25) / (sig * 0.5) ** 2, rtol=1e-12
        )
        np.testing.assert_array_equal(UniformWeighting()(path, t, "v"), 1.0)
    # Hang et al. 2023, v-prediction: min(SNR, gamma) / (SNR + 1) on the v of Salimans & Ho,
    # and flowjax's Cosine velocity is -(pi / 2) v.
    path = fj.paths.Cosine()
    snr = path.alpha(t) ** 2 / path.sigma(t) ** 2
    np.testing.assert_allclose(
        MinSNRWeighting(5.0)(path, t, "velocity") * (jnp.pi / 2) ** 2,
        jnp.minimum(snr, 5.0) / (snr + 1.0),
        rtol=1e-12,
    )
    # Finite at the ends of the path where the loss is finite.
    ends = jnp.array([0.0, 1.0])
    np.testing.assert_array_equal(MinSNRWeighting(5.0)(fj.paths.CondOT(), ends, "eps"), [1.0, 0.0])
    np.testing.assert_array_equal(SNRWeighting()(fj.paths.CondOT(), ends, "velocity"), [0.0, 1.0])


def test_snr_weighted_x1_loss_equals_plain_eps_loss():
    """Loss level: diffusion(target=eps, uniform) == diffusion(target=x1, snr) per example, and
    min-SNR gives the same per-example loss for all three targets (models related by convert)."""
    path = fj.paths.Cosine()
    batch = {"x1": _batch(256)["x1"]}

    def g(params, x, t, *, y=None, key=None):  # an arbitrary x1 predictor
        return jnp.tanh(x) * params + t[:, None]

    def as_target(target):
        def model(params, x, t, *, y=None, key=None):
            return fj.paths.convert(g(params, x, t), src="x1", dst=target, path=path, x=x, t=t)

        return model

    configs = [
        ("eps", "uniform"),
        ("x1", "snr"),
        ("x1", "min_snr"),
        ("eps", "min_snr"),
        ("velocity", "min_snr"),
        ("x1", "uniform"),
    ]

    @jax.jit
    def per_example():
        return [
            diffusion.loss(
                1.3,
                jax.random.key(4),
                batch,
                model=as_target(target),
                path=path,
                target=target,
                weighting=weighting,
                time_dist=Uniform(eps=0.01),
            )[1]["per_example_loss"]
            for target, weighting in configs
        ]

    eps_plain, x1_snr, x1_min, eps_min, v_min, x1_plain = per_example()
    np.testing.assert_allclose(eps_plain, x1_snr, rtol=1e-9)
    np.testing.assert_allclose(eps_min, x1_min, rtol=1e-9)
    np.testing.assert_allclose(v_min, x1_min, rtol=1e-9)
    assert not np.allclose(x1_plain, eps_plain)


# ---------------------------------------------------------------------------- EDM preconditioning


def test_edm_precond_matches_karras_table1():
    path, sd = fj.paths.VP(), 0.5
    seen = {}

    def net(params, x, t, *, y=None, key=None):
        seen["in"], seen["noise"] = x, t
        return jnp.sin(3 * x) + params

    pre = EDMPrecond(net, path, sigma_data=sd)
    t = jnp.linspace(0.05, 0.95, 7)
    x = jax.random.normal(jax.random.key(5), (7, 2)) * 2
    out = pre(0.1, x, t)
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    sig, y = s / a, x / a  # EDM's noise level and noisy input
    c_skip = sd**2 / (sig**2 + sd**2)
    c_out = sig * sd / jnp.sqrt(sig**2 + sd**2)
    c_in = 1 / jnp.sqrt(sig**2 + sd**2)
    np.testing.assert_allclose(seen["in"], c_in * y, rtol=1e-12)
    np.testing.assert_allclose(seen["noise"], jnp.log(sig[:, 0]) / 4, rtol=1e-12)
    np.testing.assert_allclose(out, c_skip * y + c_out * (jnp.sin(3 * c_in * y) + 0.1), rtol=1e-12)
    # lambda(sigma) = 1 / c_out^2: the raw network's loss has unit weight (Karras et al. 2022).
    np.testing.assert_allclose(EDMWeighting(sd)(path, t, "x1") * c_out[:, 0] ** 2, 1.0, rtol=1e-12)


def test_edm_precond_as_diffusion_model():
    path, gmm = fj.paths.CondOT(), _gmm()
    batch = {"x1": _batch(512)["x1"]}

    def exact_x1(params, x, t, *, y=None, key=None):
        return gmm.posterior_mean(path, x, t)

    def f_exact(params, x_in, t, *, y=None, key=None):  # the F whose D is E[x1 | x_t]
        c_skip, c_out, c_in, _ = pre.coefficients(t)
        x = x_in / c_in[:, None]
        return (gmm.posterior_mean(path, x, t) - c_skip[:, None] * x) / c_out[:, None]

    pre = EDMPrecond(f_exact, path, sigma_data=0.5, c_noise_time=False)

    kw = dict(path=path, target="x1", weighting="edm", time_dist=EDMLogNormal())
    ref, got = jax.jit(
        lambda: [
            diffusion.loss(None, jax.random.key(6), batch, model=m, **kw)[0]
            for m in (exact_x1, pre)
        ]
    )()
    np.testing.assert_allclose(got, ref, rtol=1e-9)


# ---------------------------------------------------------------------------- time distributions


def test_time_distribution_moments():
    key = jax.random.key(7)
    n = 40000
    t = Uniform(eps=0.1).sample(key, n)
    assert float(t.min()) >= 0.1 and float(t.max()) <= 0.9
    assert abs(float(t.mean()) - 0.5) < 0.01 and abs(float(t.var()) - 0.8**2 / 12) < 0.003
    t = LogitNormal(mean=0.5, std=0.8).sample(key, (n,))
    logit = jnp.log(t) - jnp.log1p(-t)
    assert abs(float(logit.mean()) - 0.5) < 0.02 and abs(float(logit.std()) - 0.8) < 0.02
    assert abs(float(LogitNormal().sample(key, n).mean()) - 0.5) < 0.01
    d = DiscreteDDPM(num_steps=10)
    t = d.sample(key, (n,))
    grid = 1.0 - jnp.arange(1, 11) / 10
    np.testing.assert_allclose(d.grid(), grid)
    idx = jnp.argmin(jnp.abs(t[:, None] - grid[None]), axis=1)
    np.testing.assert_allclose(t, grid[idx], atol=1e-12)  # only grid values, never t = 1
    np.testing.assert_allclose(jnp.bincount(idx, length=10) / n, 0.1, atol=0.01)


@pytest.mark.parametrize(
    "path", [fj.paths.CondOT(), fj.paths.VP(), fj.paths.EDM()], ids=["condot", "vp", "edm"]
)
def test_edm_lognormal_noise_levels(path):
    t = EDMLogNormal(p_mean=-1.2, p_std=1.2).sample(jax.random.key(8), 40000, path)
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    log_sigma = -0.5 * path.log_snr(t)
    assert abs(float(log_sigma.mean()) + 1.2) < 0.03
    assert abs(float(log_sigma.std()) - 1.2) < 0.03


def test_time_distribution_errors():
    with pytest.raises(ValueError, match="path"):
        EDMLogNormal().sample(jax.random.key(0), 3)
    with pytest.raises(ValueError, match="eps"):
        Uniform(eps=0.5)
    with pytest.raises(ValueError, match="std"):
        LogitNormal(std=0.0)
    with pytest.raises(ValueError, match="num_steps"):
        DiscreteDDPM(num_steps=0)
    with pytest.raises(ValueError, match="valid time distributions"):
        get_time_dist("beta")
    assert get_time_dist("logit_normal", std=2.0) == LogitNormal(std=2.0)
    with pytest.raises(ValueError, match="valid weightings"):
        get_weighting("p2")
    with pytest.raises(ValueError, match="gamma"):
        MinSNRWeighting(gamma=-1.0)


# ---------------------------------------------------------------------------- labels


def _label_probe():
    seen = {}

    def model(params, x, t, *, y=None, key=None):
        seen["y"], seen["key"] = y, key
        return jnp.zeros_like(x)

    return model, seen


_LOSSES = {"flow_matching": flow_matching.loss, "diffusion": diffusion.loss}


@pytest.mark.parametrize("name", ["flow_matching", "diffusion"])
def test_label_dropout(name):
    loss = _LOSSES[name]
    model, seen = _label_probe()
    b = _batch(2000)
    path = fj.paths.CondOT()
    probs = (0.0, 1.0, 0.5)

    @jax.jit
    def labels_seen():
        out = []
        for p in probs:
            loss(None, jax.random.key(9), b, model=model, path=path, num_classes=3, label_dropout=p)
            out.append(seen["y"])
        return out

    for p, y in zip(probs, labels_seen(), strict=True):
        y = np.asarray(y)
        dropped = y == 3
        np.testing.assert_array_equal(y[~dropped], np.asarray(b["label"])[~dropped])
        assert abs(dropped.mean() - p) < 0.04
        assert seen["key"] is not None
    jax.eval_shape(lambda: loss(None, jax.random.key(9), {"x1": b["x1"]}, model=model, path=path))
    assert seen["y"] is None  # a loss without labels calls the model with y=None


@pytest.mark.parametrize("name", ["flow_matching", "diffusion"])
def test_bad_inputs_raise(name):
    loss = _LOSSES[name]
    model, _ = _label_probe()
    path, b = fj.paths.CondOT(), _batch(16)
    call = functools.partial(loss, None, jax.random.key(0), model=model, path=path)
    with pytest.raises(ValueError, match="'x1'"):
        call({"x": b["x1"]})
    with pytest.raises(ValueError, match="num_classes"):
        call(b)  # labels but no num_classes
    with pytest.raises(ValueError, match="no 'label'"):
        call({"x1": b["x1"]}, num_classes=3)
    with pytest.raises(ValueError, match="label_dropout"):
        call({"x1": b["x1"]}, label_dropout=0.1)
    with pytest.raises(ValueError, match="label_dropout"):
        call(b, num_classes=3, label_dropout=1.5)
    with pytest.raises(ValueError, match="shape"):
        call({"x1": b["x1"], "label": b["label"][:5]}, num_classes=3)
    with pytest.raises(TypeError, match="integer"):
        call({"x1": b["x1"], "label": b["label"] * 1.0}, num_classes=3)
    with pytest.raises(RuntimeError, match="label"):
        call(b, num_classes=2)  # label 2 is out of range for 2 classes
    with pytest.raises(RuntimeError, match="label"):
        jax.jit(lambda bb: call(bb, num_classes=2))(b)[0].block_until_ready()
    with pytest.raises(ValueError, match="shape"):
        loss(
            None,
            jax.random.key(0),
            {"x1": b["x1"]},
            path=path,
            model=lambda p, x, t, *, y=None, key=None: x[:, :1],
        )
    with pytest.raises(TypeError, match="path"):
        call({"x1": b["x1"]}, path="condot")
    with pytest.raises(ValueError, match="valid time distributions"):
        call({"x1": b["x1"]}, time_dist="sd3")


def test_diffusion_bad_config():
    path = fj.paths.VP()
    with pytest.raises(ValueError, match="valid targets"):
        make_objective("diffusion", path=path, target="score")
    with pytest.raises(ValueError, match="valid weightings"):
        make_objective("diffusion", path=path, weighting="p2")
    with pytest.raises(TypeError, match="weighting"):
        make_objective("diffusion", path=path, weighting=3)
    with pytest.raises(ValueError, match="valid couplings"):
        make_objective("flow_matching", path=path, coupling="ot")


def test_registry():
    assert get_objective("flow_matching") is flow_matching.FlowMatching
    assert get_objective("diffusion") is diffusion.Diffusion
    with pytest.raises(ValueError, match="diffusion.*flow_matching"):
        get_objective("consistency")
    with pytest.raises(TypeError, match="valid keywords"):
        make_objective("flow_matching", target="eps")
    obj = make_objective(
        "diffusion",
        model=lambda p, x, t, *, y=None, key=None: p * x,
        path=fj.paths.VP(),
        target="v",
        weighting="min_snr",
    )
    assert obj.target == "velocity"  # the alias, resolved once at construction
    value, aux = jax.jit(obj)(2.0, jax.random.key(0), {"x1": _batch(64)["x1"]})
    assert value.shape == () and np.isfinite(float(value)) and aux["loss"] == value
    assert aux["per_example_loss"].shape == (64,)


def test_flow_matching_with_exact_ot_uses_optimal_pairs():
    """With CondOT the target is x1 - x0, so a zero model's loss is the mean pairing cost / D;
    under exact minibatch OT it must equal scipy's optimal assignment cost for the same x0."""
    import scipy.optimize

    path, n = fj.paths.CondOT(), 32
    x1 = _batch(n)["x1"]
    zero = lambda p, x, t, *, y=None, key=None: p  # noqa: E731
    key, p0 = jax.random.key(10), jnp.zeros((n, 2))

    @jax.jit
    def run():
        ind = lambda p: flow_matching.loss(p, key, {"x1": x1}, model=zero, path=path)[0]  # noqa: E731
        u = -jax.grad(ind)(p0) * n  # u = x1 - x0 for the independent pairing
        ot = flow_matching.loss(
            p0,
            key,
            {"x1": x1},
            model=zero,
            path=path,
            coupling=fj.couplings.MinibatchOT(method="exact"),
        )[0]
        return x1 - u, ind(p0), ot

    x0, ind_loss, ot_loss = run()
    c = np.sum((np.asarray(x0)[:, None] - np.asarray(x1)[None]) ** 2, -1)
    r, col = scipy.optimize.linear_sum_assignment(c)
    np.testing.assert_allclose(ot_loss * 2, c[r, col].mean(), rtol=1e-10)
    assert float(ot_loss) < 0.5 * float(ind_loss)


# ---------------------------------------------------------------------------- objectives as modules
#
# Loss values of the objectives before they became modules with a source (computed with the old
# code, commit 1ef866f, on this repository's CPU; the new code reproduced every one bit for bit
# there). Fixed model, teacher, batch and key; x0 ~ N(0, I) drawn by jax.random.normal before,
# by fj.sources.StandardGaussian now.
_PINNED_F64 = {
    "fm": 6.82061284260598,
    "fm_labels": 6.623553741792438,
    "fm_sb": 3.3092287806473144,
    "diffusion_eps_vp": 0.4380908355725624,
    "diffusion_labels": 4.657394970635073,
    "lmd": 1.0047317964917117,
    "lmd_labels": 0.9293282151439377,
    "emd": 0.32404096420856315,
    "progressive": 0.03936885764994287,
    "consistency_distill": 0.11787174084191286,
    "shortcut": 4.094459951524291,
    "shortcut_teacher": 0.7238613872377241,
    "meanflow": 0.999233479495068,
    "lsd": 4.047076913791663,
    "consistency_training": 0.09218535516425304,
}
_PINNED_F32 = {
    "fm": 6.350154876708984,
    "fm_labels": 6.0470428466796875,
    "fm_sb": 2.2996301651000977,
    "diffusion_eps_vp": 0.7264609336853027,
    "diffusion_labels": 4.6654582023620605,
    "lmd": 0.9958324432373047,
    "lmd_labels": 0.9828534722328186,
    "emd": 0.24572236835956573,
    "progressive": 0.08096501976251602,
    "consistency_distill": 0.11360906809568405,
    "shortcut": 5.993626117706299,
    "shortcut_teacher": 0.36415648460388184,
    "meanflow": 0.999565839767456,
    "lsd": 5.93648099899292,
    "consistency_training": 0.12176202982664108,
}


def _probe_net(p, x, t, *, s=None, y=None, key=None):
    tt = jnp.broadcast_to(t, x.shape[:1])[:, None]
    out = jnp.tanh(x * p["a"] + tt) + p["b"] * x
    if s is not None:
        out = out + 0.3 * jnp.broadcast_to(s, x.shape[:1])[:, None] * x[:, ::-1]
    if y is not None:
        out = out + 0.1 * y[:, None].astype(x.dtype)
    return out


def _probe_teacher(x, t, y=None):
    tt = jnp.broadcast_to(t, x.shape[:1])[:, None]
    return -x * tt + 0.5 + (0 if y is None else 0.05 * y[:, None].astype(x.dtype))


def _pinned_cases(dtype, source=None):
    fm = fj.flowmaps
    x1 = jax.random.normal(jax.random.key(11), (16, 2), dtype) * 2 + 1
    lab = jax.random.randint(jax.random.key(12), (16,), 0, 3)
    p = {"a": jnp.asarray(0.7, dtype), "b": jnp.asarray(-0.2, dtype)}
    P, VP = fj.paths.CondOT(), fj.paths.VP()
    b, bl, k, m, v = (
        {"x1": x1},
        {"x1": x1, "label": lab},
        jax.random.key(5),
        _probe_net,
        _probe_teacher,
    )
    kw = {} if source is None else {"source": source}
    sb = fj.couplings.SchrodingerBridge(sigma=0.5)
    return {
        "fm": lambda: flow_matching.loss(p, k, b, model=m, path=P, **kw),
        "fm_labels": lambda: flow_matching.loss(
            p, k, bl, model=m, path=P, num_classes=3, label_dropout=0.5, **kw
        ),
        "fm_sb": lambda: flow_matching.loss(p, k, b, model=m, path=P, coupling=sb, **kw),
        "diffusion_eps_vp": lambda: diffusion.loss(
            p, k, b, model=m, path=VP, target="eps", weighting="min_snr", **kw
        ),
        "diffusion_labels": lambda: diffusion.loss(
            p, k, bl, model=m, path=P, target="x1", num_classes=3, label_dropout=0.3, **kw
        ),
        "lmd": lambda: fm.lmd.loss(p, k, b, model=m, path=P, teacher=v, **kw),
        "lmd_labels": lambda: fm.lmd.loss(
            p, k, bl, model=m, path=P, teacher=v, directions="both", **kw
        ),
        "emd": lambda: fm.emd.loss(p, k, b, model=m, path=P, teacher=v, **kw),
        "progressive": lambda: fm.progressive.loss(
            p, k, b, model=m, path=P, teacher=v, solver="rk4", solver_steps=2, max_gap=0.5, **kw
        ),
        "consistency_distill": lambda: fm.consistency_distill.loss(
            p, k, b, model=m, path=P, teacher=v, num_steps=8, distance="pseudo_huber", **kw
        ),
        "shortcut": lambda: fm.shortcut.loss(p, k, bl, model=m, path=P, num_levels=3, **kw),
        "shortcut_teacher": lambda: fm.shortcut.loss(p, k, b, model=m, path=P, teacher=v, **kw),
        "meanflow": lambda: fm.meanflow.loss(p, k, b, model=m, path=P, **kw),
        "lsd": lambda: fm.lsd.loss(p, k, b, model=m, path=P, **kw),
        "consistency_training": lambda: fm.consistency_training.loss(
            p, k, b, model=m, path=P, num_steps=8, **kw
        ),
    }


def _pinned_values(dtype, source=None, names=None):
    cases = _pinned_cases(dtype, source)
    return {name: float(cases[name]()[0]) for name in names or cases}  # eager: small programs


_SOME = ("fm", "diffusion_eps_vp", "lmd", "consistency_training")


def test_standard_source_reproduces_the_losses_of_the_old_code():
    got = _pinned_values(jnp.float64)
    assert set(got) == set(_PINNED_F64)
    for name, want in _PINNED_F64.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-12, err_msg=name)
    with jax.enable_x64(False):
        got32 = _pinned_values(jnp.float32, names=_SOME)
    for name in _SOME:
        np.testing.assert_allclose(got32[name], _PINNED_F32[name], rtol=2e-6, err_msg=name)
    # Negative control: x0 drawn from another source (N(0.05, I)) moves the losses.
    shifted = _pinned_values(jnp.float64, fj.sources.Gaussian(mean=jnp.full((2,), 0.05)), _SOME)
    for name in _SOME:
        assert abs(shifted[name] - _PINNED_F64[name]) > 1e-6 * _PINNED_F64[name], name


def _recorder():
    """A model that records its inputs and returns zeros; works as a one- or two-time net."""
    seen = []

    def model(params, x, t, *, s=None, y=None, context=None, key=None):
        seen.append({"x": x, "t": t, "s": s, "y": y, "context": context})
        return jnp.zeros_like(x)

    return model, seen


def test_objectives_draw_x0_from_the_given_source():
    """x0 is exactly `source.sample(k_x0, x1.shape)` with the objective's key split: recovered
    from the model's input x_t = t x1 + (1 - t) x0 on CondOT (flow matching, diffusion, CT)."""
    path, n = fj.paths.CondOT(), 4096
    x1 = _batch(n)["x1"]
    source = fj.sources.Gaussian(mean=jnp.array([3.0, -1.0]), scale_diag=jnp.array([0.5, 2.0]))
    key = jax.random.key(21)
    cases = {  # objective -> the key its x0 is drawn with
        "flow_matching": (fj.objectives.FlowMatching, jax.random.split(key, 6)[1]),
        "diffusion": (fj.objectives.Diffusion, jax.random.split(key, 4)[0]),
        "consistency_training": (fj.flowmaps.ConsistencyTraining, jax.random.split(key, 3)[0]),
    }
    for name, (cls, k_x0) in cases.items():
        model, seen = _recorder()
        cls(path=path, source=source)(None, key, {"x1": x1}, model=model)
        x_t, t = seen[0]["x"], seen[0]["t"][:, None]
        x0 = (x_t - t * x1) / (1 - t)
        keep = np.asarray(t[:, 0] < 0.99)  # away from t = 1, where x0 is not identifiable
        want = source.sample(k_x0, x1.shape, dtype=x1.dtype)
        np.testing.assert_allclose(x0[keep], want[keep], rtol=1e-6, atol=1e-6, err_msg=name)
        assert np.allclose(np.mean(want, 0), [3.0, -1.0], atol=0.1)
        assert np.allclose(np.std(want, 0), [0.5, 2.0], rtol=0.05)
        # Negative control: the default source's x0 is another array.
        model, seen = _recorder()
        cls(path=path)(None, key, {"x1": x1}, model=model)
        assert not np.allclose(seen[0]["x"], x_t), name


def test_context_reaches_model_and_teacher_and_stays_with_its_example():
    path, n = fj.paths.CondOT(), 64
    x1 = _batch(n)["x1"]
    labels = jnp.arange(n, dtype=jnp.int32)
    context = jnp.stack([labels.astype(x1.dtype), jnp.sin(labels)], 1)  # context[:, 0] = label
    batch = {"x1": x1, "label": labels, "context": context}
    key = jax.random.key(22)
    taught = []

    def teacher(x, t, y=None, context=None):
        taught.append({"y": y, "context": context})
        return jnp.zeros_like(x)

    objectives = {
        "flow_matching": fj.objectives.FlowMatching(path=path, num_classes=n),
        "flow_matching_ot": fj.objectives.FlowMatching(
            path=path, num_classes=n, coupling=fj.couplings.MinibatchOT(epsilon=0.5)
        ),
        "diffusion": fj.objectives.Diffusion(path=path, num_classes=n),
        "lmd": fj.flowmaps.LMD(path=path, teacher=teacher),
        "shortcut": fj.flowmaps.Shortcut(path=path, teacher=teacher),
        "meanflow": fj.flowmaps.MeanFlow(path=path, teacher=teacher),
        "consistency_distill": fj.flowmaps.ConsistencyDistillation(path=path, teacher=teacher),
    }
    for name, objective in objectives.items():
        model, seen = _recorder()
        taught.clear()
        objective(None, key, batch, model=model)
        assert seen and all(c["context"] is not None for c in seen + taught), name
        for call in seen + taught:  # every call: each example's context next to its label
            np.testing.assert_array_equal(call["context"][:, 0], call["y"], err_msg=name)
        first = np.asarray(seen[0]["context"])
        if name == "flow_matching_ot":  # re-paired: each x1 took its context along
            assert not np.array_equal(first[:, 0], np.asarray(labels)), name
        elif name != "shortcut":  # the batch's own context (shortcut splits the batch)
            np.testing.assert_array_equal(first, np.asarray(context), err_msg=name)
    # Without a context in the batch the model is called without the keyword at all.
    model, seen = _recorder()
    fj.objectives.FlowMatching(path=path)(None, key, {"x1": x1}, model=model)
    assert seen[0]["context"] is None
    with pytest.raises(ValueError, match=r"batch\['context'\] must have shape \(64, \*C\)"):
        fj.objectives.FlowMatching(path=path)(
            None, key, {"x1": x1, "context": context[:5]}, model=model
        )
    with pytest.raises(TypeError, match=r"batch\['context'\] must be floating"):
        fj.objectives.FlowMatching(path=path)(
            None, key, {"x1": x1, "context": labels[:, None]}, model=model
        )


def test_context_dropout_gives_the_null_context():
    """With context_dropout=p a share p of the examples gets the null context, a NaN row (the
    models' learned null context, fj.models.drop_context); labels are dropped exactly as
    without a context."""
    path, n = fj.paths.CondOT(), 4000
    b = _batch(n)
    context = jnp.ones((n, 3))

    def model(params, x, t, *, y=None, context=None, key=None):
        null = jnp.any(jnp.isnan(context), axis=1, keepdims=True)
        return jnp.where(null, 0.0, 100.0 + jnp.sum(context, 1, keepdims=True)) * jnp.ones_like(x)

    for p in (0.0, 0.3):
        obj = fj.objectives.FlowMatching(path=path, context_dropout=p)
        _, aux = obj(None, jax.random.key(23), {"x1": b["x1"], "context": context}, model=model)
        null = np.asarray(aux["per_example_loss"]) < 1000.0
        assert abs(null.mean() - p) < 0.03, (p, null.mean())
    model_y, seen = _label_probe()
    kw = dict(path=path, num_classes=3, label_dropout=0.5, context_dropout=0.5)
    with_ctx = {**b, "context": context}
    fj.objectives.FlowMatching(**kw)(None, jax.random.key(24), b, model=model_y)
    y_plain = seen["y"]
    fj.objectives.FlowMatching(**kw)(
        None,
        jax.random.key(24),
        with_ctx,
        model=lambda p, x, t, *, y=None, context=None, key=None: model_y(p, x, t, y=y, key=key),
    )
    np.testing.assert_array_equal(seen["y"], y_plain)


def _one_line_error(make, exc, field):
    with pytest.raises(exc) as err:
        make()
    message = str(err.value)
    assert "\n" not in message and field in message, message


def test_objective_hyperparameters_are_checked_at_construction():
    P, v = fj.paths.CondOT(), _gmm().velocity_field(fj.paths.CondOT())
    fm, cases = fj.flowmaps, []
    cases += [
        (lambda: fj.objectives.FlowMatching(path="condot"), TypeError, "path"),
        (
            lambda: fj.objectives.FlowMatching(path=P, label_dropout=1.5),
            ValueError,
            "label_dropout",
        ),
        (
            lambda: fj.objectives.FlowMatching(path=P, context_dropout=-0.1),
            ValueError,
            "context_dropout",
        ),
        (lambda: fj.objectives.FlowMatching(path=P, source=3), TypeError, "source"),
        (lambda: fj.objectives.FlowMatching(path=P, coupling="ot"), ValueError, "coupling"),
        (lambda: fj.objectives.Diffusion(path=P, target="score"), ValueError, "target"),
        (lambda: fj.objectives.Diffusion(path=P, time_dist="sd3"), ValueError, "time distribution"),
        (lambda: fm.LMD(path=P, teacher=v, directions="up"), ValueError, "directions"),
        (lambda: fm.EMD(path=P, teacher="/a/run"), TypeError, "teacher"),
        (lambda: fm.Progressive(path=P), ValueError, "teacher"),
        (lambda: fm.Progressive(path=P, teacher=v, max_gap=0.0), ValueError, "max_gap"),
        (
            lambda: fm.ConsistencyDistillation(path=P, teacher=v, solver="rk45"),
            ValueError,
            "solver",
        ),
        (lambda: fm.ConsistencyTraining(path=P, huber_c=-1.0), ValueError, "huber_c"),
        (lambda: fm.Shortcut(path=P, num_levels=0), ValueError, "num_levels"),
        (lambda: fm.MeanFlow(path=P, adaptive_c=0.0), ValueError, "adaptive_c"),
        (lambda: fm.LSD(path=P, diagonal_fraction=2.0), ValueError, "diagonal_fraction"),
        (
            lambda: make_objective("lmd", path=P, teacher=v, direction="both"),
            TypeError,
            "direction",
        ),
        (lambda: make_objective("flow_map"), ValueError, "valid objectives"),
    ]
    for make, exc, field in cases:
        _one_line_error(make, exc, field)
    # Valid hyperparameters build, and the names resolve once (not on every call).
    obj = make_objective("flow_matching", path=P, coupling="minibatch_ot", time_dist="logit_normal")
    assert isinstance(obj.coupling, fj.couplings.MinibatchOT)
    assert obj.time_dist == LogitNormal()
    assert isinstance(obj, fj.objectives.AbstractObjective)
    with pytest.raises(TypeError, match="no model"):
        obj(None, jax.random.key(0), _batch(8))
