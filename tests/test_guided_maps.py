"""Guidance inside flow maps: MeanFlow's guided target and shortcut models' guided bootstrap.

Truths: the guided targets equal their definitions; omega = 1, kappa = 0 (w = 1) is the
unguided target; at the exact fields of an analytic class-conditional Gaussian mixture the
MeanFlow guided velocity is the closed-form CFG velocity at scale omega / (1 - kappa) (its
fixed point); negative controls (a wrong scale, a wrong level) fail.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj
from flowjax.flowmaps import meanflow, shortcut
from flowjax.flowmaps._map import FlowMap

K, D = 3, 2
NULL = K  # the null label


def _gmm():
    means = jnp.array([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]])
    return fj.analytic.GaussianMixture(
        means=means, stds=jnp.array([0.5, 0.7, 0.4]), weights=jnp.array([0.5, 0.3, 0.2])
    )


def _exact_model(gmm, path, w):
    """A 'flow map network' whose diagonal is exact: u(x, s, s | y) = CFG velocity at scale w
    (closed form), u(x, s, s | null) = the unconditional velocity."""

    def apply_fn(params, x, t, *, s=None, y=None, key=None, context=None):
        s = t if s is None else s
        y = jnp.broadcast_to(jnp.asarray(y), x.shape[:1])
        v_u = gmm.velocity(path, x, s)
        v_c = gmm.velocity(path, x, s, jnp.minimum(y, K - 1))
        guided = (1 - w) * v_u + w * v_c
        return jnp.where((y == NULL)[:, None], v_u, guided)

    return apply_fn


def _points(key, n=64):
    kx, ky, kt = jax.random.split(key, 3)
    x = 2.0 * jax.random.normal(kx, (n, D))
    y = jax.random.randint(ky, (n,), 0, K)
    s = jax.random.uniform(kt, (n,), minval=0.05, maxval=0.95)
    return x, y, s


def _mf_target(apply_fn):
    return jax.jit(lambda p, x, s, t, v, y: meanflow.target(apply_fn, p, x, s, t, v, y=y))


def _mf_guided(apply_fn, omega, kappa):
    def f(p, x, s, t, v, y):
        return meanflow.guided_target(
            apply_fn, p, x, s, t, v, y=y, null_label=NULL, omega=omega, kappa=kappa
        )

    return jax.jit(f)


def _net(key=0):
    net = fj.models.build_model(
        "mlp",
        "tiny",
        input_shape=(D,),
        num_classes=K,
        two_times=True,
        time_scale=10.0,
        key=jax.random.key(key),
    )
    return fj.models.functional(net)


def test_meanflow_guided_target_reduces_to_unguided():
    apply_fn, params = _net()
    x, y, s = _points(jax.random.key(1))
    t = jnp.minimum(s + 0.3, 1.0)
    v = jax.random.normal(jax.random.key(2), x.shape)
    u0, tgt0 = _mf_target(apply_fn)(params, x, s, t, v, y)
    u1, tgt1 = _mf_guided(apply_fn, 1.0, 0.0)(params, x, s, t, v, y)
    np.testing.assert_array_equal(u1, u0)
    np.testing.assert_allclose(tgt1, tgt0, rtol=1e-6, atol=1e-6)
    # negative control: real guidance changes the target
    _, tgt2 = _mf_guided(apply_fn, 1.5, 0.0)(params, x, s, t, v, y)
    assert float(jnp.max(jnp.abs(tgt2 - tgt0))) > 1e-3


def test_meanflow_guided_target_definition():
    """u_tgt = v~ + (t - s) d/ds u along (v~, 1, 0), v~ = omega v + kappa u_c + (1-omega-kappa)
    u_null on real labels and v~ = v on null labels (finite differences for d/ds u)."""
    apply_fn, params = _net(3)
    x, y, s = _points(jax.random.key(4), n=16)
    y = y.at[:4].set(NULL)
    t = jnp.minimum(s + 0.4, 1.0)
    v = jax.random.normal(jax.random.key(5), x.shape)
    omega, kappa = 1.7, 0.3
    _, tgt = _mf_guided(apply_fn, omega, kappa)(params, x, s, t, v, y)
    X = FlowMap(apply_fn)
    u_avg = jax.jit(lambda xx, ss, tt, yy: X.average_velocity(params, xx, ss, tt, y=yy))
    u_c = u_avg(x, s, s, y)
    u_u = u_avg(x, s, s, jnp.full_like(y, NULL))
    vt = omega * v + kappa * u_c + (1 - omega - kappa) * u_u
    vt = jnp.where((y == NULL)[:, None], v, vt)
    h = 1e-3
    up = u_avg(x + h * vt, s + h, t, y)
    um = u_avg(x - h * vt, s - h, t, y)
    expect = vt + (t - s)[:, None] * (up - um) / (2 * h)
    np.testing.assert_allclose(tgt, expect, rtol=2e-2, atol=2e-2)
    # negative control: forgetting the null-label rule
    wrong = omega * v + kappa * u_c + (1 - omega - kappa) * u_u
    assert float(jnp.max(jnp.abs(tgt[:4] - wrong[:4]))) > 1e-2


@pytest.mark.parametrize("omega,kappa", [(2.0, 0.0), (1.0, 0.5), (1.5, 0.25)])
def test_meanflow_guided_velocity_at_exact_fields_is_cfg(x64, omega, kappa):
    """With v = the exact class-conditional velocity and the network's diagonal = the exact
    CFG field at w' = omega / (1 - kappa), v~ equals that closed-form CFG velocity (the
    guided target's fixed point), and the target on the diagonal s = t is v~ itself."""
    gmm, path = _gmm(), fj.paths.CondOT()
    w_eff = omega / (1 - kappa)
    apply_fn = _exact_model(gmm, path, w_eff)
    x, y, s = _points(jax.random.key(6))
    v_c = gmm.velocity(path, x, s, y)
    v_cfg = (1 - w_eff) * gmm.velocity(path, x, s) + w_eff * v_c
    _, tgt = _mf_guided(apply_fn, omega, kappa)(None, x, s, s, v_c, y)
    np.testing.assert_allclose(tgt, v_cfg, rtol=1e-10, atol=1e-10)
    # negative control: a network at the naive scale omega is not a fixed point when kappa > 0
    if kappa > 0:
        naive = _exact_model(gmm, path, omega)
        _, tgt_n = _mf_guided(naive, omega, kappa)(None, x, s, s, v_c, y)
        v_naive = (1 - omega) * gmm.velocity(path, x, s) + omega * v_c
        assert float(jnp.max(jnp.abs(tgt_n - v_naive))) > 1e-2


def test_meanflow_objective_unguided_unchanged_and_checks():
    apply_fn, params = _net()
    x1 = jax.random.normal(jax.random.key(7), (32, D))
    batch = {"x1": x1, "label": jax.random.randint(jax.random.key(8), (32,), 0, K)}
    path = fj.paths.CondOT()
    key = jax.random.key(9)

    def loss(**kw):
        obj = fj.flowmaps.MeanFlow(path=path, model=apply_fn, **kw)
        return jax.jit(lambda p: obj(p, key, batch)[0])(params)

    base = loss()
    np.testing.assert_allclose(loss(num_classes=K), base, rtol=1e-6)
    guided = loss(num_classes=K, omega=2.0, label_dropout=0.1)
    assert np.isfinite(float(guided)) and abs(float(guided) - float(base)) > 1e-6
    with pytest.raises(ValueError, match="num_classes"):
        fj.flowmaps.MeanFlow(path=path, omega=2.0)
    with pytest.raises(ValueError, match="kappa"):
        fj.flowmaps.MeanFlow(path=path, num_classes=K, kappa=1.0)


def _linear_map():
    """u(x, s, t | y) = a_y x + b_y (t + s): a map whose CFG combination is easy by hand."""
    a = jnp.array([0.5, -0.3, 0.2, 0.1])
    b = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0], [0.3, 0.3]])

    def apply_fn(params, x, t, *, s=None, y=None, key=None, context=None):
        y = jnp.broadcast_to(jnp.asarray(y), x.shape[:1])
        tt = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        ss = jnp.broadcast_to(jnp.asarray(s, x.dtype), x.shape[:1])
        return a[y][:, None] * x + b[y] * (tt + ss)[:, None]

    return apply_fn


def test_shortcut_guided_bootstrap_definition():
    X = FlowMap(_linear_map())
    x, y, t = _points(jax.random.key(10), n=8)
    t, d, w = 0.5 * t, 0.125, 2.5
    unguided = shortcut.bootstrap_target(X, None, x, t, d, y=y)
    one = shortcut.bootstrap_target(X, None, x, t, d, y=y, guidance=1.0, null_label=NULL)
    np.testing.assert_allclose(one, unguided, rtol=1e-6, atol=1e-6)

    def u(xx, s0, s1, yy):
        return X.average_velocity(None, xx, s0, s1, y=yy)

    null = jnp.full_like(y, NULL)
    u1 = (1 - w) * u(x, t, t + d, null) + w * u(x, t, t + d, y)
    xm = x + d * u1
    u2 = (1 - w) * u(xm, t + d, t + 2 * d, null) + w * u(xm, t + d, t + 2 * d, y)
    got = shortcut.bootstrap_target(X, None, x, t, d, y=y, guidance=w, null_label=NULL)
    np.testing.assert_allclose(got, 0.5 * (u1 + u2), rtol=1e-5, atol=1e-6)
    # negative control: guiding only the first half-step is a different target
    u2_plain = u(xm, t + d, t + 2 * d, y)
    assert float(jnp.max(jnp.abs(got - 0.5 * (u1 + u2_plain)))) > 1e-2
    # the null label is unchanged by guidance
    got_null = shortcut.bootstrap_target(X, None, x, t, d, y=null, guidance=w, null_label=NULL)
    np.testing.assert_allclose(
        got_null, shortcut.bootstrap_target(X, None, x, t, d, y=null), rtol=1e-6, atol=1e-6
    )


def test_shortcut_objective_guided_only_at_smallest_level():
    """num_levels = 1: every bootstrap example is at the smallest level, so guidance changes
    the loss; bootstrap_fraction = 0 (flow matching only): guidance cannot change it."""
    apply_fn, params = _net(11)
    x1 = jax.random.normal(jax.random.key(12), (32, D))
    batch = {"x1": x1, "label": jax.random.randint(jax.random.key(13), (32,), 0, K)}
    path, key = fj.paths.CondOT(), jax.random.key(14)

    def loss(labelled=True, **kw):
        obj = fj.flowmaps.Shortcut(
            path=path, model=apply_fn, **({"num_classes": K} if labelled else {}), **kw
        )
        return float(jax.jit(lambda p: obj(p, key, batch)[0])(params))

    base = loss(labelled=False, num_levels=1)
    assert loss(num_levels=1) == pytest.approx(base, rel=1e-6)
    assert loss(num_levels=1, guidance=1.0) == pytest.approx(base, rel=1e-6)
    assert abs(loss(num_levels=1, guidance=3.0) - base) > 1e-6
    fm_only = dict(num_levels=1, bootstrap_fraction=0.0)
    assert loss(guidance=3.0, **fm_only) == pytest.approx(loss(**fm_only), rel=1e-6)
    with pytest.raises(ValueError, match="num_classes"):
        fj.flowmaps.Shortcut(path=path, guidance=2.0)
