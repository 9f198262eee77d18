"""The fused arms x seeds trainer (`studies.ArmTrainer`) trains each (arm, seed) exactly as a
separate run of `fj.train.step.make_update` for that arm and seed would."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj
from flowjax import objectives, paths, studies

K, B, STEPS, SEEDS = 10, 32, 20, (0, 3)


def _apply(params, x, t, *, y=None, key=None, context=None, s=None):
    """A tiny MLP of (x, t) (few parameter leaves: the tests' programs compile quickly)."""
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])[:, None]
    h = jnp.tanh(jnp.concatenate([x, jnp.sin(3 * t), jnp.cos(3 * t)], 1) @ params["w1"])
    return jnp.tanh(h @ params["w2"] + params["b"]) @ params["w3"]


def _init(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": jax.random.normal(k1, (4, 32)) / 2,
        "w2": jax.random.normal(k2, (32, 32)) / 32**0.5,
        "b": jnp.zeros(32),
        "w3": jax.random.normal(k3, (32, 2)) / 32**0.5,
    }


def _network():
    return studies.Network(_apply, _init, (2,))


def _optim():
    from configs import default

    optim = default.get_config().optim
    optim.lr, optim.warmup_steps = 3e-3, 5
    return optim


def _arms(net, extra=()):
    """fm, fm_ot, ddpm, cosine_v, edm (EDM preconditioning), as configs/compare_default.py."""
    edm_path = paths.EDM()
    edm = objectives.Diffusion(
        path=edm_path,
        target="x1",
        weighting=objectives.EDMWeighting(0.8),
        time_dist=objectives.EDMLogNormal(),
    )
    ot = fj.couplings.MinibatchOT(epsilon=0.1, num_iters=50)
    return [
        (objectives.FlowMatching(path=paths.CondOT()), net.apply_fn),
        (objectives.FlowMatching(path=paths.CondOT(), coupling=ot), net.apply_fn),
        (objectives.Diffusion(path=paths.VP(), target="eps"), net.apply_fn),
        (objectives.Diffusion(path=paths.Cosine(), target="velocity"), net.apply_fn),
        (edm, objectives.EDMPrecond(net.apply_fn, edm_path, sigma_data=0.8)),
        *extra,
    ]


def _chunks(nan_at=None):
    """STEPS / K chunks (S, K, B, 2) of checkerboard-like data; optionally one NaN batch."""
    shape = (STEPS // K, len(SEEDS), K, B, 2)
    x = np.array(jax.random.uniform(jax.random.key(7), shape, minval=-2, maxval=2))
    if nan_at is not None:
        s, step = nan_at
        x[step // K, s, step % K, 0, 0] = np.nan
    return [{"x1": c} for c in x]


@functools.cache
def _optimizer():
    """The optimizer and schedule of every trainer here (_optim(), STEPS), built once."""
    return fj.train.make_optimizer(_optim(), STEPS)


@functools.cache
def _separate_step(objective, model, optimizer, schedule):
    # One compiled step per arm, shared by its seeds (the tests' optimizers are all _optim()).
    return jax.jit(
        fj.train.step.make_update(
            functools.partial(objective, model=model),
            optimizer,
            schedule,
            ema_decays=(0.9,),
            on_nonfinite="skip",
        )
    )


def _separate(objective, model, seed_index, seed, chunks):
    """One separate run of one arm and one seed through the library's train step."""
    run = _separate_step(objective, model, *_optimizer())
    state = fj.train.state.init_state(_network().init_params, _optimizer()[0], seed, 1)
    losses = []
    for c in chunks:
        state, m = run(state, {"x1": jnp.asarray(c["x1"][seed_index])})
        losses.append(np.asarray(m["loss"]))
    return state, np.concatenate(losses)


def _close(a, b, rtol=2e-4, atol=2e-5):
    return all(
        np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _max_diff(a, b):
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_every_arm_and_seed_equals_its_separate_run():
    net = _network()
    arms = _arms(net)
    trainer = studies.ArmTrainer(arms, net, _optim(), STEPS, ema_decay=0.9)
    # fm, ddpm, cosine_v and edm share one network call; minibatch OT trains alone.
    assert trainer.groups == [(0, 2, 3, 4), (1,)]
    chunks = _chunks()
    state = trainer.init(SEEDS)
    steps = []
    trainer_losses = []
    for c in chunks:
        state, loss = trainer.update(state, c)
        trainer_losses.append(np.asarray(loss))
        steps.append(int(np.asarray(state.step)[0, 0]))
    losses = np.concatenate(trainer_losses, axis=2)
    assert losses.shape == (len(arms), len(SEEDS), STEPS) and steps == [K, STEPS]

    separate = {}
    for a, (objective, model) in enumerate(arms):
        for s, seed in enumerate(SEEDS):
            ref, ref_losses = _separate(objective, model, s, seed, chunks)
            separate[a, s] = ref
            mine = studies.unstack(trainer.arm_state(state, a), s)
            assert _close(mine.params, ref.params), (a, s, _max_diff(mine.params, ref.params))
            assert _close(mine.ema, ref.ema), (a, s)
            np.testing.assert_allclose(losses[a, s], ref_losses, rtol=2e-4, atol=1e-6)
    # Negative controls: another seed of the same arm, or another arm of the same seed, is
    # far from this instance (the tolerance above separates runs).
    mine = studies.unstack(trainer.arm_state(state, 0), 0)
    assert not _close(mine.params, separate[0, 1].params)
    assert not _close(mine.params, separate[2, 0].params)
    assert not _close(mine.params, separate[4, 0].params)


def test_train_runs_the_stream_and_calls_back_at_eval_steps():
    net = _network()
    arms = _arms(net)[2:4]  # ddpm, cosine_v: one group
    trainer = studies.ArmTrainer(arms, net, _optim(), STEPS, ema_decay=0.9)
    stream = studies.BatchStream("checkerboard", SEEDS, B, STEPS, K)
    seen = []
    state, losses = trainer.train(
        stream, eval_at=(K, STEPS), callback=lambda step, st: seen.append((step, st.step.copy()))
    )
    assert losses.shape == (2, len(SEEDS), STEPS) and np.all(np.isfinite(losses))
    assert [s for s, _ in seen] == [K, STEPS]
    assert np.all(np.asarray(seen[0][1]) == K) and np.all(np.asarray(state.step) == STEPS)
    assert trainer.train_seconds > 0
    # Same result as the seed trainer on the same stream (arm 1 = cosine_v).
    seed_trainer = studies.SeedTrainer(
        functools.partial(arms[1][0], model=arms[1][1]),
        net,
        _optim(),
        STEPS,
        ema_decay=0.9,
        on_nonfinite="skip",
    )
    ref, ref_losses = seed_trainer.train(stream)
    assert _close(trainer.arm_state(state, 1).params, ref.params)
    np.testing.assert_allclose(losses[1], ref_losses, rtol=2e-4, atol=1e-6)
    with pytest.raises(ValueError, match="eval_at"):
        trainer.train(stream, eval_at=(K + 1,))


class _NaNWeighting(objectives.UniformWeighting):
    """A weighting that is NaN on part of the batch: every step of its arm is non-finite."""

    def for_eps(self, path, t):
        return jnp.where(t > 0.3, jnp.nan, 1.0)


def test_a_nonfinite_instance_leaves_the_others_unchanged():
    net = _network()
    bad = objectives.Diffusion(path=paths.VP(), target="eps", weighting=_NaNWeighting())
    arms = [_arms(net)[0], (bad, net.apply_fn), _arms(net)[2]]  # fm, NaN arm, ddpm: one group
    trainer = studies.ArmTrainer(arms, net, _optim(), STEPS, ema_decay=0.9, on_nonfinite="skip")
    assert trainer.groups == [(0, 1, 2)]
    chunks = _chunks(nan_at=(1, 13))  # and seed 1's step 13 has a NaN datum
    state = trainer.init(SEEDS)
    fresh = trainer.init(SEEDS)
    for c in chunks:
        state, _ = trainer.update(state, c)
    skipped = np.asarray(state.num_skipped)
    np.testing.assert_array_equal(skipped, [[0, 1], [STEPS, STEPS], [0, 1]])
    # The NaN arm never moved; the others are their separate runs (seed 1 skipping step 13).
    assert _close(trainer.arm_state(state, 1).params, trainer.arm_state(fresh, 1).params, 0, 0)
    for a in (0, 2):
        for s, seed in enumerate(SEEDS):
            ref, _ = _separate(*arms[a], s, seed, chunks)
            mine = studies.unstack(trainer.arm_state(state, a), s)
            assert _close(mine.params, ref.params), (a, s)
    assert not _close(trainer.arm_state(state, 0).params, trainer.arm_state(fresh, 0).params)


def test_one_network_call_per_instance():
    """Four arms in one group cost about four single-arm programs (one network call per
    instance), not sixteen (a call per arm per instance)."""
    net = _network()
    cheap = [a for i, a in enumerate(_arms(net)) if i != 1]
    chunk = _chunks()[0]

    def flops(arms):
        trainer = studies.ArmTrainer(arms, net, _optim(), STEPS, ema_decay=0.9)
        state = trainer.init(SEEDS)
        lowered = trainer._update.lower(state, {"x1": jnp.asarray(chunk["x1"])})
        ca = lowered.cost_analysis()
        return float((ca[0] if isinstance(ca, list) else ca)["flops"])

    one, four = flops(cheap[:1]), flops(cheap)
    assert 3.5 < four / one < 5.0, four / one


def test_cost_counts_flops_memory_and_seconds():
    net = _network()
    arms = [_arms(net)[i] for i in (0, 2)]  # fm, ddpm
    trainer = studies.ArmTrainer(arms, net, _optim(), STEPS, ema_decay=0.9)
    small = trainer.cost({"x1": np.zeros((1, 2, 32, 2), np.float32)}, repeats=1)
    large = trainer.cost({"x1": np.zeros((1, 2, 128, 2), np.float32)}, repeats=1)
    assert len(small) == 2
    for s, lg in zip(small, large, strict=True):
        assert set(s) == {
            "flops_per_step",
            "bytes_per_step",
            "peak_memory_bytes",
            "seconds_per_step",
        }
        assert 0 < s["flops_per_step"] < lg["flops_per_step"]
        assert 0 < s["peak_memory_bytes"] <= lg["peak_memory_bytes"]
        assert s["bytes_per_step"] > 0 and s["seconds_per_step"] > 0
    # Forward and backward through the network's matmuls alone take 6 B W flops (W weights).
    w = sum(x.size for x in jax.tree.leaves(net.init_params(jax.random.key(0))) if np.ndim(x) == 2)
    for size, c in ((32, small[0]), (128, large[0])):
        assert 6 * size * w <= c["flops_per_step"] < 40 * size * w, (size, c, w)


def test_bad_arms_raise():
    net = _network()
    with pytest.raises(ValueError, match="arms is empty"):
        studies.ArmTrainer([], net, _optim(), STEPS, ema_decay=0.9)
    with pytest.raises(TypeError, match="arms\\[0\\]"):
        fm = objectives.FlowMatching(path=paths.CondOT())
        studies.ArmTrainer([fm], net, _optim(), 5, ema_decay=0.9)
    with pytest.raises(ValueError, match="on_nonfinite"):
        studies.ArmTrainer(_arms(net)[:1], net, _optim(), 5, ema_decay=0.9, on_nonfinite="x")
