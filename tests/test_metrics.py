"""Numerical truths for fj.metrics: exact identities, closed forms, and hand computations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

import flowjax as fj
from flowjax import metrics as M


def _normal(seed, n, d, scale=1.0):
    return np.random.default_rng(seed).normal(size=(n, d)) * scale


# ------------------------------------------------------------------------------------------
# W2, energy distance, MMD


def test_identical_sets_give_zero_or_the_exact_u_statistic_offset():
    x = _normal(0, 200, 3)
    n = x.shape[0]
    assert M.wasserstein2(x, x) == 0.0
    assert M.wasserstein2(x, x, squared=True) == 0.0
    # Unbiased (U-statistic) estimators on identical sets are O(1/n) and negative, exactly:
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    s = d.sum()  # the diagonal is 0
    assert M.energy_distance(x, x) == pytest.approx(-2 * s / (n * n * (n - 1)), rel=1e-10)
    assert abs(M.energy_distance(x, x)) <= 2.0 / n * d.mean() * 1.01
    h = 1.3
    k = np.exp(-(d**2) / (2 * h * h)).sum()
    want = 2 * (k - n) / (n * (n - 1)) - 2 * k / n**2
    assert M.mmd2(x, x, bandwidth=h) == pytest.approx(want, rel=1e-10)
    assert abs(M.mmd2(x, x)) <= 2.0 / n


def test_w2_of_a_translation_is_the_norm_of_the_shift():
    x = _normal(1, 64, 3)
    c = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(M.wasserstein2(x, x + c), np.linalg.norm(c), rtol=1e-12)
    np.testing.assert_allclose(M.wasserstein2(x + c, x, squared=True), c @ c, rtol=1e-12)


def test_w2_unequal_sizes_lp_equals_assignment_on_replicated_points():
    # Uniform measures on 6 and 9 points equal those on 3 and 2 copies of them (18 each).
    x, y = _normal(2, 6, 2), _normal(3, 9, 2, scale=2.0) + 1.0
    lp = M.wasserstein2(x, y)
    exact = M.wasserstein2(np.repeat(x, 3, axis=0), np.repeat(y, 2, axis=0))
    assert lp == pytest.approx(exact, rel=1e-8)


def test_w2_1d_quantile_formula_is_exact_and_matches_the_gaussian_closed_form():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(300, 1)), 0.5 + 2.0 * rng.normal(size=(300, 1))
    # D = 1 takes the sorted-coupling path; it equals the general assignment solver ...
    cost = (x - y.T) ** 2
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    assert M.wasserstein2(x, y, squared=True) == pytest.approx(cost[rows, cols].mean(), rel=1e-10)
    # ... and, for unequal sizes, the exact LP (the same points embedded in 2D, y-coordinate 0).
    x7, y5 = x[:7], y[:5]
    pad = lambda a: np.concatenate([a, np.zeros_like(a)], axis=1)  # noqa: E731
    assert M.wasserstein2(x7, y5) == pytest.approx(M.wasserstein2(pad(x7), pad(y5)), rel=1e-8)
    # W2(N(m1, s1^2), N(m2, s2^2)) = sqrt((m1 - m2)^2 + (s1 - s2)^2); large samples, unequal
    # sizes (relative sampling error ~0.4% here; tolerance 2%).
    m1, s1, m2, s2 = 1.0, 2.0, -0.5, 0.5
    big_x = m1 + s1 * rng.normal(size=(100_000, 1))
    big_y = m2 + s2 * rng.normal(size=(80_000, 1))
    assert M.wasserstein2(big_x, big_y) == pytest.approx(math.hypot(m1 - m2, s1 - s2), rel=0.02)


def test_energy_distance_and_mmd_grow_monotonically_with_the_shift():
    x, y0 = _normal(5, 300, 2), _normal(6, 300, 2)
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    e1 = np.array([1.0, 0.0])
    energy = [M.energy_distance(x, y0 + s * e1) for s in shifts]
    mmd_fixed = [M.mmd2(x, y0 + s * e1, bandwidth=1.0) for s in shifts]
    mmd_multi = [M.mmd2(x, y0 + s * e1, bandwidth=[0.5, 1.0, 2.0]) for s in shifts]
    mmd_median = [M.mmd2(x, y0 + s * e1) for s in shifts]
    for values in (energy, mmd_fixed, mmd_multi, mmd_median):
        assert np.all(np.diff(values) > 0), values
    assert abs(energy[0]) < 0.05 and abs(mmd_fixed[0]) < 0.02  # same law: near 0
    # Population value for N(0, I) vs N(c, I) in 2D: X - Y ~ N(c, 2I), so E|X - Y| is a Rice
    # mean and E|X - X'| = sqrt(pi) (Rayleigh): 2 E|X - Y| - 2 sqrt(pi).
    rice = scipy.stats.rice(b=4.0 / np.sqrt(2.0), scale=np.sqrt(2.0))
    assert energy[-1] == pytest.approx(2 * rice.mean() - 2 * np.sqrt(np.pi), rel=0.05)


def test_sample_metric_inputs_are_validated():
    with pytest.raises(ValueError, match="D = 2"):
        M.wasserstein2(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="shape"):
        M.energy_distance(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="bandwidth"):
        M.mmd2(np.zeros((3, 2)), np.ones((3, 2)), bandwidth=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        M.mmd2(np.full((3, 2), np.nan), np.ones((3, 2)))


# ------------------------------------------------------------------------------------------
# Histogram KL (Boffi et al. 2025 protocol)


def test_histogram_kl_matches_a_hand_computation():
    # 2 x 2 bins on [0, 1]^2, bin area 1/4. Target: half its mass in bin (0, 0), half in (1, 1)
    # -> density 2 there. Model: 3 of 4 samples in (0, 0), 1 in (1, 1) -> densities 3 and 1.
    target = np.array([[0.25, 0.25], [0.2, 0.3], [0.75, 0.75], [0.8, 0.6]])
    model = np.array([[0.1, 0.1], [0.4, 0.2], [0.3, 0.45], [0.9, 0.9]])
    want = 0.25 * (2 * math.log(2 / 3) + 2 * math.log(2 / 1))  # = 0.5 log(4/3)
    got = M.histogram_kl(target, model, bins=2, range=(0.0, 1.0), eps=0.0)
    assert got == pytest.approx(want, rel=1e-12)
    # The analytic target (2 x 2 checkerboard on [0, 1]^2, cells (0,0), (1,1)) gives the same.
    density = lambda p: M.checkerboard_density(p, num_cells=2, low=0.0, high=1.0)  # noqa: E731
    assert M.histogram_kl(density, model, bins=2, range=(0.0, 1.0), eps=0.0) == pytest.approx(
        want, rel=1e-12
    )
    # A model sample outside the grid still counts in the normalisation: densities 2.4, 0.8.
    leaky = np.concatenate([model, [[5.0, 5.0]]])
    want_leaky = 0.25 * (2 * math.log(2 / 2.4) + 2 * math.log(2 / 0.8))
    assert M.histogram_kl(target, leaky, bins=2, range=(0.0, 1.0), eps=0.0) == pytest.approx(
        want_leaky, rel=1e-12
    )


def _checkerboard_samples(rng, n, num_cells):
    width = 2.0 / num_cells
    cells = [(i, j) for i in range(num_cells) for j in range(num_cells) if (i + j) % 2 == 0]
    idx = rng.integers(len(cells), size=n)
    corner = np.array(cells, dtype=float)[idx] * width - 1.0
    return corner + width * rng.uniform(size=(n, 2))


def test_checkerboard_kl_protocol_limits():
    rng = np.random.default_rng(7)
    density = lambda p: M.checkerboard_density(p, num_cells=5)  # noqa: E731  cells on bin edges
    exact = _checkerboard_samples(rng, 64_000, 5)
    assert M.checkerboard_density(exact, num_cells=5).min() > 0  # the sampler is right
    # Plug-in bias, to first order: sum over target bins of p_bin / (2 E[model count in bin]).
    # 1,300 of the 2,500 bins lie on the checkerboard, each holding 1/1300 of its mass.
    n = 64_000
    assert M.histogram_kl(density, exact) == pytest.approx(1300 / (2 * n), abs=0.0015)
    # Uniform on the square: the checkerboard fills 13 of 25 cells, so KL = log(25 / 13), plus
    # the bias, now 2500 / (2 n) since each bin expects n / 2500 model samples.
    uniform = rng.uniform(-1, 1, size=(n, 2))
    assert M.histogram_kl(density, uniform) == pytest.approx(
        math.log(25 / 13) + 2500 / (2 * n), abs=0.012
    )


# ------------------------------------------------------------------------------------------
# Likelihood and straightness


def test_nll_of_gaussian_samples_is_the_entropy():
    s, d = 0.7, 2
    gmm = fj.analytic.GaussianMixture(means=np.zeros((1, d)), stds=[s])
    x = gmm.sample(jax.random.key(0), 20_000)
    entropy = 0.5 * d * math.log(2 * math.pi * math.e * s * s)
    assert M.nll(gmm.log_prob, x) == pytest.approx(entropy, abs=0.03)
    np.testing.assert_allclose(
        M.nll(gmm.log_prob, x), -np.mean(np.asarray(gmm.log_prob(x))), rtol=1e-6
    )


@pytest.mark.slow
def test_flow_nll_of_the_exact_velocity_is_the_exact_nll():
    pytest.importorskip("flowjax.likelihood")
    gmm = fj.analytic.GaussianMixture(means=[[-1.0, 0.0], [1.0, 0.5]], stds=[0.5, 0.4])
    path = fj.paths.CondOT()
    x = gmm.sample(jax.random.key(1), 8)
    got, info = M.flow_nll(gmm.velocity_field(path), x, rtol=1e-6, atol=1e-6)
    assert got == pytest.approx(M.nll(gmm.log_prob, x), abs=2e-3)
    assert info["nfe"] > 0


def test_straightness_is_zero_for_straight_lines():
    rng = np.random.default_rng(8)
    x0, x1 = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    times = np.sort(np.concatenate([[0.0, 1.0], rng.uniform(size=7)]))  # non-uniform grid
    traj = x0[None] + times[:, None, None] * (x1 - x0)[None]
    assert M.straightness(traj, times) == pytest.approx(0.0, abs=1e-20)
    # A constant field v = c moves every point on a straight line: S = 0 with v given too.
    c = np.array([0.3, -1.0, 2.0])
    traj_c = x0[None] + times[:, None, None] * c
    assert M.straightness(
        traj_c, times, velocity=lambda x, t: np.broadcast_to(c, x.shape)
    ) == pytest.approx(0.0, abs=1e-20)


def test_straightness_of_a_rotation_matches_the_closed_form():
    # v(x) = theta J x moves x0 on a circle: x(t) = R(theta t) x0. With r = |x0| and chord
    # x1 - x0, int_0^1 v dt = x1 - x0, so S = E[r^2 theta^2 - |x1 - x0|^2]
    #   = E[r^2] (theta^2 - 2 (1 - cos theta)).
    theta = 2.0
    jmat = np.array([[0.0, -1.0], [1.0, 0.0]])
    x0 = np.random.default_rng(9).normal(size=(40, 2))
    times = np.linspace(0.0, 1.0, 801)
    rot = lambda a: np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])  # noqa: E731
    traj = np.stack([x0 @ rot(theta * t).T for t in times])
    want = np.mean(np.sum(x0**2, axis=1)) * (theta**2 - 2 * (1 - np.cos(theta)))
    got_v = M.straightness(traj, times, velocity=lambda x, t: theta * x @ jmat.T)
    got_fd = M.straightness(traj, times)
    assert got_v == pytest.approx(want, rel=1e-5)
    assert got_fd == pytest.approx(want, rel=1e-4)
    with pytest.raises(ValueError, match="increasing"):
        M.straightness(traj, times[::-1])


# ------------------------------------------------------------------------------------------
# Fréchet distance


def _sqrt_psd(a):
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(w)) @ v.T


def test_frechet_distance_closed_forms():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    # Commuting (diagonal) covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-10)
    # Non-commuting 2 x 2: tr sqrt(S1 S2) = sqrt(tr(S1 S2) + 2 sqrt(det(S1 S2))).
    s1 = np.array([[2.0, 0.8], [0.8, 1.0]])
    s2 = np.array([[0.5, -0.3], [-0.3, 1.5]])
    p = s1 @ s2
    tr_sqrt = math.sqrt(np.trace(p) + 2 * math.sqrt(np.linalg.det(p)))
    want2 = 1.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    got2 = M.frechet_distance([0.0, 0.0], s1, [1.0, 0.0], s2)
    assert got2 == pytest.approx(want2, rel=1e-10)
    # ... which is also the Bures form tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2).
    r = _sqrt_psd(s1)
    assert got2 == pytest.approx(1.0 + np.trace(s1 + s2 - 2 * _sqrt_psd(r @ s2 @ r)), rel=1e-10)


def test_fid_from_features_self_is_zero_and_large_samples_match_the_closed_form():
    rng = np.random.default_rng(10)
    s1 = np.array([[2.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
    s2 = np.diag([1.0, 0.5, 2.0])
    mu1, mu2 = np.zeros(3), np.array([0.5, -0.5, 1.0])
    f1 = rng.multivariate_normal(mu1, s1, size=50_000)
    f2 = rng.multivariate_normal(mu2, s2, size=50_000)
    assert abs(M.fid_from_features(f1, f1)) < 1e-8
    want = M.frechet_distance(mu1, s1, mu2, s2)
    assert M.fid_from_features(f1, f2) == pytest.approx(want, abs=0.03)


def test_feature_stats_streaming_equals_one_shot(tmp_path):
    f = np.random.default_rng(11).normal(size=(103, 5)) * 3.0 + 100.0  # offset: stability
    stats = M.FeatureStats.empty(5)
    for chunk in np.array_split(f, [1, 10, 50]):
        stats = stats.update(chunk)
    assert stats.count == 103
    np.testing.assert_allclose(stats.mean, f.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(stats.cov, np.cov(f, rowvar=False), rtol=1e-10, atol=1e-12)
    merged = M.FeatureStats.from_features(f[60:]).merge(M.FeatureStats.from_features(f[:60]))
    np.testing.assert_allclose(merged.cov, stats.cov, rtol=1e-10)
    stats.save(tmp_path / "s.npz")
    loaded = M.FeatureStats.load(tmp_path / "s.npz")
    assert M.fid_from_stats(loaded, stats) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="D = 5"):
        stats.update(np.zeros((2, 4)))


# ------------------------------------------------------------------------------------------
# Precision / recall


def test_precision_recall_identical_partial_and_disjoint():
    rng = np.random.default_rng(12)
    a = rng.normal(size=(200, 4))
    b = rng.normal(size=(200, 4)) + 50.0  # a far-away second mode
    real = np.concatenate([a, b])
    assert M.precision_recall(real, real) == (1.0, 1.0)
    # Generating only mode a (exactly those points): every fake point is real -> precision 1;
    # real points of mode b are far from every fake ball -> recall 1/2.
    assert M.precision_recall(real, a) == (1.0, 0.5)
    assert M.precision_recall(a, b) == (0.0, 0.0)
    with pytest.raises(ValueError, match="more than k"):
        M.precision_recall(a[:3], a)


# ------------------------------------------------------------------------------------------
# Digits classifier


@pytest.fixture(scope="module")
def digits():
    return M.digits_classifier(), M.load_digits_split()


def test_digits_classifier_accuracy_on_the_sklearn_test_split(digits):
    clf, data = digits
    pred = np.argmax(np.asarray(clf(data["x_test"])), axis=-1)
    assert data["x_test"].shape[1:] == (8, 8, 1) and data["x_test"].min() >= -1.0
    assert np.mean(pred == data["y_test"]) >= 0.95


def test_digits_fd_orders_real_versus_corrupted(digits):
    clf, data = digits
    x_test, x_train = data["x_test"], data["x_train"]
    feats = M.digits_features(x_test, classifier=clf)
    assert feats.shape == (x_test.shape[0], 64)
    assert abs(M.digits_fd(x_test, x_test, classifier=clf)) < 1e-6
    # Flattened (B, 64) input is the same images.
    assert M.digits_fd(x_test.reshape(-1, 64), x_test, classifier=clf) == pytest.approx(0, abs=1e-6)
    real = M.digits_fd(x_test, x_train, classifier=clf)
    noisy = x_test + 0.5 * np.random.default_rng(13).normal(size=x_test.shape).astype(np.float32)
    assert real < M.digits_fd(x_test, np.clip(noisy, -1, 1), classifier=clf)
    zeros_only = x_train[data["y_train"] == 0]  # a mode-collapsed "model"
    assert real < M.digits_fd(x_test, zeros_only, classifier=clf)


def test_classifier_log_prob_is_normalised_and_differentiable(digits):
    clf, data = digits
    x = jnp.asarray(data["x_test"][:8])
    log_prob = jax.jit(lambda z, k: M.classifier_log_prob(z, k, classifier=clf))
    logps = jnp.stack([log_prob(x, k) for k in range(10)], axis=1)
    np.testing.assert_allclose(jnp.sum(jnp.exp(logps), axis=1), 1.0, rtol=1e-5)
    labels = jnp.asarray(data["y_test"][:8])
    per_example = log_prob(x, labels)
    np.testing.assert_allclose(per_example, logps[jnp.arange(8), labels], rtol=1e-6)
    # Gradient ascent on log p(y = 3 | x) raises it (what reward guidance relies on).
    f = jax.jit(lambda z: jnp.sum(M.classifier_log_prob(z, 3, classifier=clf)))
    g = jax.grad(f)(x)
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))
    assert f(x + 0.01 * g / jnp.max(jnp.abs(g))) > f(x)
    with pytest.raises(ValueError, match=r"\(B, 8, 8, 1\)"):
        M.classifier_log_prob(jnp.zeros((2, 7, 7, 1)), 0, classifier=clf)
    with pytest.raises(TypeError, match="integer"):
        M.classifier_log_prob(x, 1.5, classifier=clf)


# ------------------------------------------------------------------------------------------
# Inception weight files without torch (the numerical equivalence is in test_inception.py)


def test_inception_pth_checksum_and_missing_torch_errors(tmp_path, monkeypatch):
    fake = tmp_path / M.PT_INCEPTION_FILENAME
    fake.write_bytes(b"not the real weights")
    with pytest.raises(ValueError, match="checksum mismatch"):
        M.load_inception(fake)  # checked before torch is needed
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ImportError, match="needs torch"):
        M.load_inception(fake, check_hash=False)
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        M.load_inception(tmp_path / "absent.npz")
