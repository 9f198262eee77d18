"""Discrete flow matching: closed forms, the Markov-chain oracle, Meta's flow_matching, models.

Every check has a negative control: the exact answer passes and a perturbed one fails.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj
from flowjax.discrete import analytic

D = fj.discrete
L, V = 4, 3
N = 4096  # samples per sampler test (one shape, so one compiled sampler per source)


@functools.cache
def _chain(seed=0, length=L, vocab=V):
    return analytic.MarkovTokens.random(jax.random.key(seed), length, vocab)


def _sources(vocab=V):
    return {"mask": D.MaskSource(vocab), "uniform": D.UniformSource(vocab)}


def _tv_floor(probs, n, reps=200):
    """Mean and sd of the TV of n exact samples to the exact pmf (the sampling-noise floor)."""
    rng = np.random.default_rng(0)
    p = np.asarray(probs, np.float64)
    p = p / p.sum()
    tvs = [0.5 * np.abs(rng.multinomial(n, p) / n - p).sum() for _ in range(reps)]
    return float(np.mean(tvs)), float(np.std(tvs))


# --------------------------------------------------------------------------- schedulers, path


@pytest.mark.parametrize("kappa", [D.LinearKappa(), D.PolynomialKappa(n=2.0), D.CosineKappa()])
def test_kappa_endpoints_and_derivative(kappa, x64):
    t = jnp.linspace(0.05, 0.95, 7)
    assert float(kappa(0.0)) == 0.0 and abs(float(kappa(1.0)) - 1.0) < 1e-12
    fd = (kappa(t + 1e-6) - kappa(t - 1e-6)) / 2e-6
    np.testing.assert_allclose(kappa.derivative(t), fd, rtol=1e-7)
    np.testing.assert_allclose(kappa.jump_rate(t), fd / (1 - kappa(t)), rtol=1e-7)
    assert not np.allclose(kappa.derivative(t), 1.1 * fd, rtol=1e-3)  # negative control


def test_path_sample_marginal_and_meta_agreement():
    torch = pytest.importorskip("torch")
    from flow_matching.path import MixtureDiscreteProbPath
    from flow_matching.path.scheduler import PolynomialConvexScheduler

    n, t = 40000, 0.3
    dpath = D.MixturePath(kappa=D.PolynomialKappa(n=2.0))
    x0 = jnp.zeros((n, 2), jnp.int32)
    x1 = jnp.ones((n, 2), jnp.int32)
    xt = dpath.sample(jax.random.key(0), x0, x1, jnp.full((n,), t))
    freq = float(jnp.mean(xt == 1))
    sd = np.sqrt(t**2 * (1 - t**2) / (2 * n))
    assert abs(freq - t**2) < 4 * sd  # kappa(t) = t^2
    assert abs(freq - t) > 20 * sd  # negative control: the linear scheduler's answer
    torch.manual_seed(0)
    meta = MixtureDiscreteProbPath(PolynomialConvexScheduler(n=2.0))
    xt_meta = meta.sample(
        torch.zeros((n, 2), dtype=torch.long),
        torch.ones((n, 2), dtype=torch.long),
        torch.full((n,), t),
    ).x_t
    assert abs(freq - float(xt_meta.float().mean())) < 6 * sd


@pytest.mark.parametrize("n_poly", [1.0, 3.0])
def test_posterior_to_velocity_matches_meta(n_poly, x64):
    torch = pytest.importorskip("torch")
    from flow_matching.path import MixtureDiscreteProbPath
    from flow_matching.path.scheduler import PolynomialConvexScheduler

    key = jax.random.key(1)
    logits = jax.random.normal(key, (5, 6, 7))
    x_t = jax.random.randint(jax.random.key(2), (5, 6), 0, 7)
    t = jnp.linspace(0.1, 0.9, 5)
    dpath = D.MixturePath(kappa=D.PolynomialKappa(n=n_poly))
    ours = dpath.posterior_to_velocity(jax.nn.softmax(logits), x_t, t)
    meta = MixtureDiscreteProbPath(PolynomialConvexScheduler(n=n_poly)).posterior_to_velocity(
        torch.from_numpy(np.asarray(logits)),
        torch.from_numpy(np.asarray(x_t)).long(),
        torch.from_numpy(np.asarray(t)),
    )
    np.testing.assert_allclose(ours, meta.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jnp.sum(ours, -1), 0.0, atol=1e-12)  # rows of a rate matrix


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_oracle_and_rates_closed_forms(source, x64):
    """Forward-backward posterior == brute force; the posterior-form rates are the posterior
    average of the conditional rates; they satisfy the Kolmogorov forward equation of the exact
    marginals; the corrector is divergence-free; a scaled rate violates it."""
    chain, src = _chain(0, 3, 3), _sources()[source]
    dpath = D.MixturePath(kappa=D.PolynomialKappa(n=2.0))
    S, t = src.num_states, 0.45
    states = jnp.asarray(np.array(np.meshgrid(*[np.arange(S)] * 3, indexing="ij")).reshape(3, -1).T)
    x1s, p1 = chain.all_sequences(), chain.probs()
    k, p0 = float(dpath.kappa(t)), np.asarray(src.probs())
    lik = np.prod(
        k * (np.asarray(states)[:, None] == np.asarray(x1s)[None]) + (1 - k) * p0[states][:, None],
        axis=-1,
    )  # (N_states, N_x1): p_t(x_t | x1)
    joint = lik * np.asarray(p1)[None]
    pt = joint.sum(1)
    assert abs(pt.sum() - 1) < 1e-12
    np.testing.assert_allclose(chain.log_prob_t(dpath, src, states, t), np.log(pt), rtol=1e-10)
    post_x1 = joint / pt[:, None]
    onehot_x1 = np.asarray(jax.nn.one_hot(x1s, V))  # (N_x1, L, V)
    brute = np.einsum("sn,nlv->slv", post_x1, onehot_x1)
    post = chain.posterior(dpath, src, states, t)
    np.testing.assert_allclose(post, brute, atol=1e-12)

    # The marginal rate is E_{x1 | x_t}[u_t(. | x_t, x1)] (Gat et al. 2024, marginalization).
    u = chain.velocity(dpath, src, states, t)
    rate = float(dpath.kappa.jump_rate(t))
    delta = np.asarray(jax.nn.one_hot(states, S))
    cond = rate * (np.pad(onehot_x1, ((0, 0), (0, 0), (0, S - V)))[None] - delta[:, None])
    np.testing.assert_allclose(u, np.einsum("sn,snlv->slv", post_x1, cond), atol=1e-12)

    # Kolmogorov forward equation d/dt p_t(x) = sum_y p_t(y) u(x|y) - p_t(x) sum_y u(y|x)
    # over single-token changes, with d/dt p_t from finite differences of the exact marginals.
    def flux(rates):
        idx = {tuple(s): j for j, s in enumerate(np.asarray(states).tolist())}
        out = np.zeros(len(pt))
        for j, x in enumerate(np.asarray(states).tolist()):
            for i in range(3):
                for y in range(S):
                    if y == x[i]:
                        continue
                    z = list(x)
                    z[i] = y
                    jz = idx[tuple(z)]
                    out[j] += pt[jz] * rates[jz, i, x[i]] - pt[j] * rates[j, i, y]
        return out

    h = 1e-5
    dpt = (
        np.exp(chain.log_prob_t(dpath, src, states, t + h))
        - np.exp(chain.log_prob_t(dpath, src, states, t - h))
    ) / (2 * h)
    np.testing.assert_allclose(flux(np.asarray(u)), dpt, atol=1e-7)
    assert np.abs(flux(1.2 * np.asarray(u)) - dpt).max() > 1e-2  # negative control
    pad = D.pad_posterior(post, S)
    corr = np.asarray(dpath.corrector_velocity(pad, states, jnp.full((len(pt),), t), src.probs()))
    np.testing.assert_allclose(flux(corr), 0.0, atol=1e-10)  # divergence-free
    assert np.abs(flux(np.asarray(u) + 0.5 * corr) - dpt).max() < 1e-7


# --------------------------------------------------------------------------- samplers


@pytest.fixture(scope="module")
def euler_tvs():
    """TV of Euler / exact-masked samples with the oracle posterior, per source and steps."""
    chain, dpath, n = _chain(), D.MixturePath(), N
    out = {"floor": _tv_floor(chain.probs(), n)}
    for name, src in _sources().items():
        post = chain.posterior_fn(dpath, src)
        x0 = src.sample(jax.random.key(3), (n, L))
        for steps in (1, 4, 16, 64):
            x = D.sample_euler(post, x0, path=dpath, num_steps=steps, key=jax.random.key(4))
            out[name, "euler", steps] = float(analytic.tv(x, chain))
            if name == "mask":
                x = D.sample_masked(
                    post, x0, path=dpath, num_steps=steps, key=jax.random.key(4), source=src
                )
                out[name, "masked", steps] = float(analytic.tv(x, chain))
    return out


@pytest.mark.parametrize(
    "source,sampler", [("mask", "euler"), ("uniform", "euler"), ("mask", "masked")]
)
def test_sampler_reproduces_oracle_and_converges(euler_tvs, source, sampler):
    mean, sd = euler_tvs["floor"]
    tvs = [euler_tvs[source, sampler, s] for s in (1, 4, 16, 64)]
    assert tvs[-1] < mean + 4 * sd + 0.004, (tvs, mean, sd)  # at the noise floor (+ O(1/N) bias)
    assert tvs[0] > tvs[1] > tvs[2] > tvs[3]  # error shrinks with the number of steps
    assert tvs[0] > 0.3  # negative control: one step samples tokens independently


def test_corrector_sampling_keeps_the_distribution():
    chain, dpath, n, t0 = _chain(), D.MixturePath(), N, 0.1
    src = D.MaskSource(V)
    x1 = chain.sample(jax.random.key(5), n)
    x_t0 = dpath.sample(jax.random.key(6), src.sample(None, (n, L)), x1, jnp.full((n,), t0))
    post = chain.posterior_fn(dpath, src)
    kw = dict(path=dpath, num_steps=64, key=jax.random.key(7), source=src, t0=t0)
    mean, sd = _tv_floor(chain.probs(), n)
    x = D.sample_euler(post, x_t0, corrector=1.0, **kw)
    assert float(analytic.tv(x, chain)) < mean + 4 * sd + 0.004
    with pytest.raises(ValueError, match="t0 > 0"):
        D.sample_euler(
            post, x_t0, path=dpath, num_steps=4, key=kw["key"], source=src, corrector=1.0
        )


def test_cfg_scale_one_is_conditional_and_reproducible():
    dpath, src = D.MixturePath(), D.MaskSource(V)
    cond = _chain(0).posterior_fn(dpath, src)
    uncond = _chain(1).posterior_fn(dpath, src)
    x0 = src.sample(None, (N, L))
    kw = dict(path=dpath, num_steps=8, key=jax.random.key(8))
    base, info = D.sample_euler(cond, x0, return_info=True, **kw)
    guided, ginfo = D.sample_euler(
        cond, x0, unconditional=uncond, guidance_scale=1.0, return_info=True, **kw
    )
    np.testing.assert_array_equal(base, guided)  # bit-identical
    assert info["nfe"] == 8 and ginfo["nfe"] == 16
    np.testing.assert_array_equal(base, D.sample_euler(cond, x0, **kw))  # reproducible
    other = D.sample_euler(cond, x0, path=dpath, num_steps=8, key=jax.random.key(9))
    assert not np.array_equal(base, other)
    strong = D.sample_euler(cond, x0, unconditional=uncond, guidance_scale=3.0, **kw)
    assert not np.array_equal(base, strong)  # negative control: guidance changes samples
    # Scale 0 is the unconditional posterior; low temperature concentrates it.
    x_t, t = src.sample(None, (64, L)), jnp.full((64,), 0.5)
    g0 = D.guided_posterior(cond, uncond, 0.0)(x_t, t)
    np.testing.assert_allclose(g0, uncond(x_t, t), rtol=1e-5, atol=1e-7)
    cold = D.guided_posterior(cond, temperature=0.5)(x_t, t)
    assert float(jnp.mean(jnp.max(cold, -1))) > float(jnp.mean(jnp.max(cond(x_t, t), -1)))


# --------------------------------------------------------------------------- losses, ELBO


def _oracle_model(chain, dpath, src):
    """model(eps, x_t, t) = logits of (1 - eps) * exact posterior + eps * uniform."""

    def model(eps, x_t, t, *, key=None, **kwargs):
        p = chain.posterior(dpath, src, x_t, t)
        return jnp.log((1 - eps) * p + eps / p.shape[-1])

    return model


@pytest.mark.parametrize(
    "cls,source",
    [
        (D.CrossEntropy, "mask"),
        (D.CrossEntropy, "uniform"),
        (D.GeneralizedKL, "mask"),
        (D.GeneralizedKL, "uniform"),
        (D.MDLM, "mask"),
    ],
)
def test_losses_minimised_by_oracle_posterior(cls, source):
    chain, dpath, src = _chain(), D.MixturePath(), _sources()[source]
    objective = cls(path=dpath, source=src, model=_oracle_model(chain, dpath, src))
    batch = {"x1": chain.sample(jax.random.key(11), 20000)}
    key = jax.random.key(12)  # common random numbers across the perturbations
    values = {eps: float(objective(eps, key, batch)[0]) for eps in (0.0, 0.05, 0.2)}
    assert values[0.0] < values[0.05] < values[0.2], values
    # Sharpening the posterior (another direction) raises it too.
    sharp = cls(
        path=dpath,
        source=src,
        model=lambda p, x, t, **kw: 2.0 * _oracle_model(chain, dpath, src)(0.0, x, t),
    )
    assert float(sharp(None, key, batch)[0]) > values[0.0]


def test_generalized_kl_matches_meta(x64):
    torch = pytest.importorskip("torch")
    from flow_matching.loss import MixturePathGeneralizedKL
    from flow_matching.path import MixtureDiscreteProbPath
    from flow_matching.path.scheduler import PolynomialConvexScheduler

    logits = jax.random.normal(jax.random.key(13), (6, 5, 4))
    x1 = jax.random.randint(jax.random.key(14), (6, 5), 0, 4)
    x_t = jnp.where(jax.random.bernoulli(jax.random.key(15), 0.5, (6, 5)), x1, (x1 + 1) % 4)
    t = jnp.linspace(0.05, 0.9, 6)
    dpath = D.MixturePath(kappa=D.PolynomialKappa(n=1.5))
    ours = D.generalized_kl(dpath, jax.nn.log_softmax(logits), x1, x_t, t)
    meta = MixturePathGeneralizedKL(
        MixtureDiscreteProbPath(PolynomialConvexScheduler(n=1.5)), reduction="none"
    )(*(torch.from_numpy(np.asarray(a)) for a in (logits, x1, x_t, t)))
    np.testing.assert_allclose(ours, meta.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_elbo_with_oracle_matches_exact_bound(source, x64):
    """MC ELBO (bits/token) with the oracle == the exact bound (enumeration + quadrature);
    for the mask source that bound is -log2 p(x1) / L itself (any-order chain rule)."""
    chain, dpath, src = _chain(0, 3, 3), D.MixturePath(), _sources()[source]
    x1 = chain.all_sequences()[jnp.array([0, 5, 13, 26])]
    exact = chain.elbo_bpt_exact(dpath, src, x1, num_points=128)
    nll = -chain.log_prob(x1) / (3 * np.log(2.0))
    if source == "mask":
        np.testing.assert_allclose(exact, nll, rtol=1e-8)
    else:
        assert np.all(exact > nll + 0.05)  # a strict bound for the uniform source
    reps = 2000
    xb = jnp.repeat(x1, reps, axis=0)
    post = chain.posterior_fn(dpath, src)
    bpt, se = D.elbo_bpt(post, xb, path=dpath, source=src, key=jax.random.key(16), num_samples=8)
    mc = bpt.reshape(4, reps).mean(1)
    err = np.sqrt((se.reshape(4, reps) ** 2).mean(1) / reps)
    assert np.all(np.abs(mc - exact) < 4 * err + 1e-3), (mc, exact, err)
    assert np.any(np.abs(mc - 1.05 * exact) > 4 * err)  # negative control


# --------------------------------------------------------------------------- discrete flow maps


def _teacher_student(chain, dpath, src, teacher_steps):
    """A 'student' that is the teacher's noise-driven map itself (logits = one-hot of it)."""
    from flowjax.discrete import flowmap

    post = chain.posterior_fn(dpath, src)

    def student(params, x_s, s, t, feats):
        u, g = feats[..., 0], feats[..., 1:]
        x_t = flowmap.teacher_map(
            post, x_s, s, t, u, g, path=dpath, source=src, num_steps=teacher_steps
        )
        return 30.0 * jax.nn.one_hot(jnp.where(x_t == src.mask, 0, x_t), src.vocab_size)

    return post, student


def test_flowmap_teacher_is_exact_and_a_semigroup():
    from flowjax.discrete import flowmap

    chain, dpath, src = _chain(), D.MixturePath(), D.MaskSource(V)
    post = chain.posterior_fn(dpath, src)
    u, g = flowmap.draw_noise(jax.random.key(20), (N, L), V)
    x0 = src.sample(None, (N, L))
    kw = dict(path=dpath, source=src)
    full = flowmap.teacher_map(post, x0, 0.0, 1.0, u, g, num_steps=64, **kw)
    mean, sd = _tv_floor(chain.probs(), N)
    assert float(analytic.tv(full, chain)) < mean + 4 * sd + 0.004  # the law of sample_masked
    half = flowmap.teacher_map(post, x0, 0.0, 0.5, u, g, num_steps=32, **kw)
    two = flowmap.teacher_map(post, half, 0.5, 1.0, u, g, num_steps=32, **kw)
    np.testing.assert_array_equal(full, two)  # X(0, 1) = X(0.5, 1) o X(0, 0.5) on one grid
    one_step = flowmap.teacher_map(post, x0, 0.0, 1.0, u, g, num_steps=1, **kw)
    assert float(analytic.tv(one_step, chain)) > 0.3  # negative control


def test_flowmap_jump_sampler_and_distillation_loss():
    from flowjax.discrete import flowmap

    chain, dpath, src = _chain(), D.MixturePath(), D.MaskSource(V)
    post, student = _teacher_student(chain, dpath, src, teacher_steps=16)
    key, shape = jax.random.key(21), (512, L)
    jumped = flowmap.sample_jump(
        student, None, key=key, shape=shape, path=dpath, source=src, num_steps=1
    )
    u, g = flowmap.draw_noise(key, shape, V)
    direct = flowmap.teacher_map(
        post, src.sample(None, shape), 0.0, 1.0, u, g, path=dpath, source=src, num_steps=16
    )
    np.testing.assert_array_equal(jumped, direct)  # one jump == the teacher's 16 steps
    objective = flowmap.FlowMapDistillation(teacher=post, path=dpath, source=src, teacher_steps=16)
    batch = {"x1": chain.sample(jax.random.key(22), 512)}
    exact, aux = objective(None, jax.random.key(23), batch, model=student)
    assert float(exact) < 1e-6 and float(aux["accuracy"]) == 1.0

    def marginal_student(params, x_s, s, t, feats):  # ignores the noise: cannot be exact
        return jnp.log(post(x_s, s))

    worse, _ = objective(None, jax.random.key(23), batch, model=marginal_student)
    assert float(worse) > 0.05


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises_one_clear_error():
    dpath, src = D.MixturePath(), D.MaskSource(V)
    post = _chain().posterior_fn(dpath, src)
    with pytest.raises(ValueError, match=r"x0 must lie in \[0, 4\)"):
        D.sample_euler(post, jnp.full((2, L), 7), path=dpath, num_steps=2, key=jax.random.key(0))
    with pytest.raises(TypeError, match="integer array of token ids"):
        D.sample_euler(post, jnp.zeros((2, L)), path=dpath, num_steps=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="collides with the data tokens"):
        D.MaskSource(5, mask_id=3)
    obj = D.GeneralizedKL(path=dpath, source=src, model=_oracle_model(_chain(), dpath, src))
    with pytest.raises(ValueError, match=r"x1'\] must lie in \[0, 3\)"):  # the mask id in data
        obj(0.0, jax.random.key(0), {"x1": jnp.full((2, L), V)})
    with pytest.raises(TypeError, match="integer array"):
        obj(0.0, jax.random.key(0), {"x1": jnp.zeros((2, L), jnp.float32)})
    with pytest.raises(TypeError, match="MaskSource"):
        D.MDLM(path=dpath, source=D.UniformSource(V))
    with pytest.raises(TypeError, match="MixturePath"):
        D.CrossEntropy(path=fj.paths.CondOT(), source=src)
    with pytest.raises(ValueError, match="num_steps"):
        D.sample_euler(
            post, src.sample(None, (2, L)), path=dpath, num_steps=0, key=jax.random.key(0)
        )


# --------------------------------------------------------------------------- data, model


def test_token_datasets():
    from flowjax.data import _tokens

    it = fj.data.make_iterator(
        "digits_tokens", global_batch_size=16, seed=0, process_count=1, process_index=0
    )
    b = next(it)
    assert b["x1"].dtype == np.int32 and b["x1"].shape == (16, 64)
    assert b["x1"].min() >= 0 and b["x1"].max() <= 16
    train, test = _tokens.pydoc_text("train", 64), _tokens.pydoc_text("test", 64)
    assert len(_tokens._pydoc_corpus()) > 400_000 and test.shape[1] == 64
    assert _tokens.decode_text(_tokens.encode_text("def f(x):")) == "def f(x):"
    # held out: no test window appears in train
    assert not set(map(bytes, np.asarray(test[:50]))) & set(map(bytes, np.asarray(train)))


def _unigram_bpt(train, test, vocab):
    counts = np.bincount(np.asarray(train).ravel(), minlength=vocab) + 0.5
    p = counts / counts.sum()
    return float(-np.mean(np.log2(p[np.asarray(test).ravel()])))


def _train_and_score(train, test, vocab, steps, seq_len, seed=0):
    import optax

    src, dpath = D.MaskSource(vocab), D.MixturePath()
    net = fj.models.build_model(
        "token_transformer",
        "tiny",
        input_shape=(seq_len,),
        key=seed,
        vocab_size=vocab,
        hidden_size=32,
        depth=1,
        freq_dim=32,
    )
    apply_fn, params = fj.models.functional(net)
    objective = D.MDLM(path=dpath, source=src, model=apply_fn)
    opt = optax.adam(3e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state, key, x1):
        (loss, _), g = jax.value_and_grad(objective, has_aux=True)(params, key, {"x1": x1})
        updates, state = opt.update(g, state)
        return optax.apply_updates(params, updates), state

    def score(params):
        post = D.model_posterior(apply_fn, params, source=src)
        bpt, _ = D.elbo_bpt(
            post, test, path=dpath, source=src, key=jax.random.key(1), num_samples=4
        )
        return float(jnp.mean(bpt))

    before = score(params)
    rng = np.random.default_rng(seed)
    for i in range(steps):
        x1 = jnp.asarray(train[rng.integers(0, len(train), 32)])
        params, state = step(params, state, jax.random.key(100 + i), x1)
    return before, score(params)


@pytest.mark.slow
@pytest.mark.parametrize("data", ["digits", "text"])
def test_small_model_beats_unigram(data):
    from flowjax.data import _tokens

    if data == "digits":
        train, test, vocab, steps = (
            _tokens.digits_tokens("train")[0],
            _tokens.digits_tokens("test")[0],
            17,
            300,
        )
    else:
        train, test = _tokens.pydoc_text("train", 16), _tokens.pydoc_text("test", 16)[:256]
        vocab, steps = len(_tokens.text_vocab()), 200
    seq = train.shape[1]
    test = jnp.asarray(test[:256])
    before, after = _train_and_score(train, test, vocab, steps, seq)
    unigram = _unigram_bpt(train, test, vocab)
    assert after < unigram, (before, after, unigram)
    assert after < before - 1.0, (before, after)


# --------------------------------------------------------------------------- one-hot flow matching


def test_token_transformer_embeds_one_hot_floats_as_the_id_lookup():
    net = fj.models.build_model(
        "token_transformer", "tiny", input_shape=(L,), key=0, vocab_size=V, hidden_size=32,
        depth=1, freq_dim=32,
    )  # fmt: skip
    apply_fn, params = fj.models.functional(net)
    apply_fn = jax.jit(apply_fn)  # compiled: far cheaper than op-by-op here
    leaves, tree = jax.tree.flatten(params)  # a non-zero head, so the output depends on x
    keys = jax.random.split(jax.random.key(0), len(leaves))
    noisy = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    params = jax.tree.unflatten(tree, noisy)
    ids, t = jax.random.randint(jax.random.key(1), (5, L), 0, V), jnp.full((5,), 0.3)
    out = apply_fn(params, ids, t)
    np.testing.assert_allclose(apply_fn(params, jax.nn.one_hot(ids, V), t), out, atol=1e-5)
    np.testing.assert_allclose(apply_fn(params, jax.nn.one_hot(ids, V + 1), t), out, atol=1e-5)
    assert not np.allclose(apply_fn(params, 0.8 * jax.nn.one_hot(ids, V), t), out, atol=1e-3)
    with pytest.raises(TypeError, match="integer token ids"):
        apply_fn(params, jnp.zeros((5, L)), t)  # a float array given as tokens
    with pytest.raises(ValueError, match="num_states"):
        apply_fn(params, jnp.zeros((5, L, V + 2)), t)


def _onehot_oracle(chain, std):
    """The chain's law on one-hot vectors as a Gaussian mixture (one narrow component each)."""
    seqs = chain.all_sequences()
    means = jax.nn.one_hot(seqs, chain.vocab_size).reshape(len(seqs), -1)
    return fj.analytic.GaussianMixture(means=means, stds=std, weights=chain.probs())


def _onehot_velocity(gmm, length, vocab):
    path = fj.paths.CondOT()

    def v(x, t):
        b = x.shape[0]
        return gmm.velocity(path, x.reshape(b, -1), t).reshape(b, length, vocab)

    return v


def test_onehot_sampler_with_exact_velocity_reproduces_the_tokens():
    chain = _chain(0, 3, 3)
    v = _onehot_velocity(_onehot_oracle(chain, 0.05), 3, 3)
    tvs = [
        float(analytic.tv(D.sample_onehot(v, jax.random.key(30), (N, 3), 3, num_steps=k), chain))
        for k in (1, 4, 32)
    ]
    mean, sd = _tv_floor(chain.probs(), N)
    assert tvs[2] < mean + 4 * sd + 0.01, (tvs, mean)
    assert tvs[0] > tvs[1] > tvs[2]  # error shrinks with the number of steps
    assert tvs[0] > 0.5  # negative control: one Euler step lands every x0 on E[e(x1)]
    again = D.sample_onehot(v, jax.random.key(30), (N, 3), 3, num_steps=4)
    np.testing.assert_array_equal(
        again, D.sample_onehot(v, jax.random.key(30), (N, 3), 3, num_steps=4)
    )  # bit-reproducible from the key


def test_onehot_loss_minimised_by_the_exact_velocity(x64):
    chain = _chain(0, 3, 3)
    v = _onehot_velocity(_onehot_oracle(chain, 1e-3), 3, 3)
    model = lambda eps, x, t, **kw: (1.0 + eps) * v(x, t)  # noqa: E731
    objective = fj.objectives.make_objective("onehot_flow_matching", vocab_size=3, model=model)
    batch, key = {"x1": chain.sample(jax.random.key(31), 8000)}, jax.random.key(32)
    values = {eps: float(objective(eps, key, batch)[0]) for eps in (-0.1, 0.0, 0.1)}
    assert values[0.0] < values[-0.1] and values[0.0] < values[0.1], values
    shifted = lambda p, x, t, **kw: v(x, t) + 0.1  # noqa: E731
    assert float(objective(0.0, key, batch, model=shifted)[0]) > values[0.0]
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        objective(0.0, key, {"x1": jnp.full((2, 3), 3)})
    with pytest.raises(TypeError, match="integer array"):
        objective(0.0, key, {"x1": jnp.zeros((2, 3), jnp.float32)})


# --------------------------------------------------------------------------- the study's pieces


def test_study_metrics_and_censored_steps_verdict():
    from flowjax.data import _sources, _tokens
    from flowjax.studies import discrete as study

    x = np.array([[0, 1, 1], [1, 1, 0]])
    f = study.bigram_freq(x, 2)  # pairs (0,1), (1,1), (1,1), (1,0)
    np.testing.assert_allclose(f, [0.0, 0.25, 0.25, 0.5])
    images = _sources.digits_arrays("test")[0]  # the continuous digits data, [-1, 1]
    tokens = _tokens.digits_tokens("test")[0]
    np.testing.assert_allclose(study.tokens_to_digits(tokens), images.reshape(-1, 8, 8, 1))

    def finals(a, b):
        return {"a": {"steps_to_threshold": a}, "b": {"steps_to_threshold": b}}

    v = lambda a, b: study._steps_verdict("a", "b", finals(a, b), 400.0, "tv", 0.1)  # noqa: E731
    assert v([50, 60, 55], [200, 260, 230])["verdict"] == "supported"
    assert v([200, 260, 230], [50, 60, 55])["verdict"] == "not supported"
    # b never reaches it: counted at 400, which only favours b, so "supported" stands...
    assert v([50, 60, 55], [None, None, None])["verdict"] == "supported"
    # ...but a censored a cannot win, and "not supported" for a censored b is not shown.
    assert v([None, None, None], [50, 60, 55])["verdict"] == "not supported"
    assert v([300, 380, 390], [None, None, 100])["verdict"] == "not significant"
    assert v([50, 60, 55], [None, None, None])["censored"] == {"a": 0, "b": 3}
    import ml_collections

    c = ml_collections.ConfigDict(dict(num_steps=400, model={}, thresholds={"x": 0.0}))
    c.overrides = {"digits_tokens": {"num_steps": 300, "model": {"depth": 1}}}
    c.lock()
    d = study.dataset_config(c, "digits_tokens")
    assert d.num_steps == 300 and d.model.depth == 1 and c.num_steps == 400
    assert study.dataset_config(c, "oracle").num_steps == 400


def test_discrete_modules_raise_no_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        D.LinearKappa(), D.PolynomialKappa(n=2.0), D.MixturePath()
        D.OneHotFlowMatching(vocab_size=3)
    assert D.LinearKappa().n == 1.0 and isinstance(D.LinearKappa(), D.PolynomialKappa)
