"""The training system: schedules, EMA, the scanned step, non-finite handling, the loop.

End-to-end runs (toy2d checkerboard, sklearn digits) check that training
does what it is for: the loss falls and the sample-quality distance of the EMA model
improves clearly over the untrained model.
"""

import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import flowjax as fj
from configs import default, digits, toy2d
from flowjax.train import prefetch, sharding
from flowjax.train.optim import make_optimizer, make_schedule
from flowjax.train.state import init_state
from flowjax.train.step import make_train_step

# ----------------------------------------------------------------------------- units


def test_chunk_sizes_never_cross_event_boundaries():
    chunks = list(prefetch.chunk_sizes(0, 23, 4, [10, 6]))
    assert sum(chunks) == 23 and max(chunks) <= 4
    ends = np.cumsum(chunks)
    for boundary in (6, 10, 12, 18, 20, 23):
        assert boundary in ends
    # Resuming at a boundary gives the same later chunks as the uninterrupted run.
    assert list(prefetch.chunk_sizes(10, 23, 4, [10, 6])) == chunks[list(ends).index(10) + 1 :]


def test_warmup_cosine_schedule_closed_form():
    optim = default.get_config().optim
    optim.lr, optim.warmup_steps, optim.min_lr_ratio = 0.1, 10, 0.2
    s = make_schedule(optim, num_steps=110)
    np.testing.assert_allclose([s(0), s(5), s(10)], [0.0, 0.05, 0.1], rtol=1e-6)
    # Cosine over the remaining 100 steps: lr (alpha + (1 - alpha)(1 + cos(pi u)) / 2).
    for step in (35, 60, 110):
        u = (step - 10) / 100
        want = 0.1 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * u)))
        np.testing.assert_allclose(s(step), want, rtol=1e-5)
    optim.schedule = "constant"
    s = make_schedule(optim, num_steps=110)
    np.testing.assert_allclose([s(5), s(10), s(100)], [0.05, 0.1, 0.1], rtol=1e-6)


# A deterministic stand-in objective: least squares for a linear map (no randomness, so
# accumulation and skipping can be compared exactly).
def _lsq_loss(params, key, batch):
    del key
    pred = batch["x1"] @ params["w"] + params["b"][None, :]
    err = jnp.mean((pred - 2.0 * batch["x1"][:, ::-1]) ** 2)
    return err, {"mse": err}


def _lsq_setup(
    *, on_nonfinite="stop", accum_steps=1, ema_warmup=False, decays=(0.9,), warmup_steps=0
):
    optim = default.get_config().optim
    optim.lr, optim.warmup_steps, optim.schedule = 0.05, warmup_steps, "constant"
    optimizer, schedule = make_optimizer(optim, 100)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])

    def init_params(key):
        return {"w": 0.1 * jax.random.normal(key, (3, 3)), "b": jnp.zeros((3,))}

    abstract = jax.eval_shape(lambda: init_state(init_params, optimizer, 0, len(decays)))
    shardings = sharding.state_shardings(abstract, mesh)
    step = make_train_step(
        _lsq_loss,
        optimizer,
        schedule,
        mesh=mesh,
        state_sharding=shardings,
        ema_decays=decays,
        ema_warmup=ema_warmup,
        on_nonfinite=on_nonfinite,
        accum_steps=accum_steps,
    )
    state = jax.jit(lambda: init_state(init_params, optimizer, 0, len(decays)))()
    return step, state


def _batches(n, b=8, nan_at=None):
    x = np.random.default_rng(0).normal(size=(n, b, 3)).astype(np.float32)
    if nan_at is not None:
        x[nan_at, 0, 0] = np.nan
    return {"x1": x}


def _copy(state):
    return jax.tree.map(jnp.array, state)


def test_ema_is_the_exponential_average_of_the_iterates():
    step, state = _lsq_setup(decays=(0.9, 0.5))
    p0 = jax.device_get(state.params)
    state, metrics = step(state, _batches(1))
    p1 = jax.device_get(state.params)
    for decay, ema in zip((0.9, 0.5), state.ema, strict=True):
        for k in p0:
            np.testing.assert_allclose(ema[k], decay * p0[k] + (1 - decay) * p1[k], rtol=1e-6)
    assert int(state.step) == 1 and metrics["loss"].shape == (1,)
    # With warmup the first decay is min(d, 1/10): mostly the new iterate.
    step, state = _lsq_setup(ema_warmup=True)
    state, _ = step(state, _batches(1))
    p1 = jax.device_get(state.params)
    np.testing.assert_allclose(state.ema[0]["w"], 0.1 * p0["w"] + 0.9 * p1["w"], rtol=1e-6)


def test_gradient_accumulation_equals_the_full_batch_step():
    step1, s1 = _lsq_setup(accum_steps=1)
    step4, s4 = _lsq_setup(accum_steps=4)
    data = _batches(3, b=16)
    s1, m1 = step1(s1, data)
    s4, m4 = step4(s4, data)
    np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-5)
    for k in ("w", "b"):
        np.testing.assert_allclose(s4.params[k], s1.params[k], rtol=1e-5, atol=1e-7)


def test_nonfinite_skip_drops_exactly_that_update():
    step, state = _lsq_setup(on_nonfinite="skip")
    data = _batches(4, nan_at=1)
    state, metrics = step(state, data)
    np.testing.assert_array_equal(metrics["finite"], [1, 0, 1, 1])
    assert int(state.step) == 4 and int(state.num_skipped) == 1
    ref_step, ref = _lsq_setup(on_nonfinite="skip")
    ref, _ = ref_step(ref, {"x1": data["x1"][[0, 2, 3]]})
    for k in ("w", "b"):
        np.testing.assert_array_equal(state.params[k], ref.params[k])
        np.testing.assert_array_equal(state.ema[0][k], ref.ema[0][k])


def test_logged_lr_is_the_rate_applied_when_steps_are_skipped():
    # During warmup the rate changes every update. Skipped steps leave the optimizer (and its
    # count) as it was, so the run with NaN batches must log, at its finite steps, exactly the
    # rates of a run on the finite batches alone, whose steps all apply.
    data = _batches(7, nan_at=[1, 4])
    finite = [0, 2, 3, 5, 6]
    step, state = _lsq_setup(on_nonfinite="skip", warmup_steps=10)
    state, metrics = step(state, data)
    metrics = jax.device_get(metrics)
    assert int(state.num_skipped) == 2
    ref_step, ref = _lsq_setup(on_nonfinite="skip", warmup_steps=10)
    ref, ref_metrics = ref_step(ref, {"x1": data["x1"][finite]})
    ref_metrics = jax.device_get(ref_metrics)
    np.testing.assert_array_equal(metrics["lr"][finite], ref_metrics["lr"])
    np.testing.assert_allclose(ref_metrics["lr"], 0.005 * np.arange(5), rtol=1e-6)
    # A skipped step applies nothing: it logs the rate the next update will use.
    np.testing.assert_array_equal(metrics["lr"][[1, 4]], metrics["lr"][[2, 5]])
    # Negative control: the schedule at the loop's step count drifts after the first skip.
    assert not np.allclose(metrics["lr"][finite], 0.005 * np.asarray(finite))
    for k in ("w", "b"):
        np.testing.assert_array_equal(state.params[k], ref.params[k])


def test_nonfinite_stop_freezes_the_state_at_the_bad_step():
    step, state = _lsq_setup(on_nonfinite="stop")
    state, _ = step(state, _batches(4, nan_at=1))
    assert int(state.nonfinite_step) == 1 and int(state.step) == 1
    ref_step, ref = _lsq_setup()
    ref, _ = ref_step(ref, {"x1": _batches(4)["x1"][:1]})
    for k in ("w", "b"):
        np.testing.assert_array_equal(state.params[k], ref.params[k])
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def _toy_config(steps=20):
    config = toy2d.get_config("fm")
    config.model.variant = "tiny"
    config.data.batch_size = 32
    config.optim.warmup_steps = 2
    config.train.num_steps = steps
    config.train.log_every = 5
    config.train.checkpoint_every = 10
    config.train.async_checkpoint = False
    config.eval.every = -1
    config.eval.at_start = False
    return config


def test_steps_per_dispatch_does_not_change_the_result():
    config = _toy_config()
    exp = fj.train.build(config)
    it = fj.train.make_data_iterator(config)
    batches = np.stack([next(it)["x1"] for _ in range(8)])
    results = []
    for k in (1, 4):
        state = exp.new_state()
        for i in range(0, 8, k):
            stacked = fj.train.make_global_batch({"x1": batches[i : i + k]}, exp.mesh, stacked=True)
            state, _ = exp.train_step(state, stacked)
        results.append(jax.device_get(state))
    assert int(results[0].step) == int(results[1].step) == 8
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1]), strict=True):
        np.testing.assert_array_equal(a, b)


class _Corrupt:
    """Wraps a data iterator: puts a NaN (or a wrong shape) into the batch of one step."""

    def __init__(self, inner, at, kind="nan"):
        self.inner, self.at, self.kind = inner, at, kind

    def __iter__(self):
        return self

    def __next__(self):
        index = self.inner.get_state()["step"]
        batch = dict(next(self.inner))
        if index == self.at and self.kind == "nan":
            batch["x1"] = batch["x1"].copy()
            batch["x1"][0, 0] = np.nan
        elif index == self.at:
            batch["x1"] = np.concatenate([batch["x1"], batch["x1"][:, :1]], axis=1)
        return batch

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def test_nan_in_data_stops_with_a_message_naming_the_step(tmp_path):
    config = _toy_config()
    data = _Corrupt(fj.train.make_data_iterator(config), at=12)
    with pytest.raises(fj.train.NonFiniteError) as err:
        fj.train.train_and_evaluate(config, str(tmp_path), data_iterator=data)
    message = str(err.value)
    assert "\n" not in message
    assert "step 12" in message and "last checkpoint: step 10" in message
    ckpt = fj.train.Checkpointer(str(tmp_path / "checkpoints"))
    assert ckpt.all_steps() == [10]
    ckpt.close()
    # "skip" trains through it and counts it.
    config.train.on_nonfinite = "skip"
    data = _Corrupt(fj.train.make_data_iterator(config), at=12)
    summary = fj.train.train_and_evaluate(config, str(tmp_path / "skip"), data_iterator=data)
    assert summary["step"] == 20 and summary["train"]["train/num_skipped"] == 1
    # The logged lr (mean over the finite steps since the last log) is that of the updates
    # applied: optax's count lags the step count by one after step 12 was skipped.
    schedule = make_schedule(config.optim, config.train.num_steps)
    logged = {r["step"]: r["train/lr"] for r in fj.train.read_metrics(str(tmp_path / "skip"))}
    applied = {15: [10, 11, 12, 13], 20: [14, 15, 16, 17, 18]}
    for row, counts in applied.items():
        want = np.mean([np.float32(schedule(c)) for c in counts])
        np.testing.assert_allclose(logged[row], want, rtol=1e-6)
        old = np.mean([np.float32(schedule(c)) for c in range(row - 5, row) if c != 12])
        assert abs(logged[row] - old) > 1e-3 * abs(old)  # the schedule at the step count


def test_wrong_data_shape_is_a_one_line_error(tmp_path):
    config = _toy_config()
    data = _Corrupt(fj.train.make_data_iterator(config), at=3, kind="shape")
    with pytest.raises(ValueError) as err:
        fj.train.train_and_evaluate(config, str(tmp_path), data_iterator=data)
    assert "\n" not in str(err.value)
    assert "batch['x1'] has shape (32, 3), expected (32, 2)" in str(err.value)


# ----------------------------------------------------------------------------- end to end


def _losses(workdir):
    return [r["train/loss"] for r in fj.train.read_metrics(workdir) if "train/loss" in r]


@pytest.mark.slow
def test_toy2d_checkerboard_learns(tmp_path):
    config = toy2d.get_config("fm")
    config.train.num_steps = 1500
    config.optim.warmup_steps = 100
    config.train.log_every = 250
    config.train.checkpoint_every = 0
    config.eval.every = 0
    config.eval.num_samples = 1000
    config.eval.num_steps = 20
    summary = fj.train.train_and_evaluate(config, str(tmp_path))
    losses = _losses(tmp_path)
    # The flow-matching loss has a large floor (the conditional target's variance, ~3.4
    # here); the mean over the first 250 steps sits well above it.
    assert losses[-1] < losses[0] - 0.3, losses
    before, after = summary["initial_eval"]["eval/energy"], summary["eval"]["eval/energy"]
    print(f"checkerboard energy distance: {before:.4f} -> {after:.4f}")
    assert before > 0.3 and after < 0.25 * before, (before, after)
    assert (tmp_path / "samples" / "step_0001500.png").exists()
    assert (tmp_path / "summary.json").exists()
    # --mode=eval reloads the final checkpoint and gets the same samples and metric.
    again = fj.train.evaluate(config, str(tmp_path))
    np.testing.assert_allclose(again["eval/energy"], after, rtol=1e-6)


@pytest.mark.slow
def test_digits_learns(tmp_path):
    config = digits.get_config("fm")
    config.model.variant = "tiny"
    config.model.overrides = ml_collections.ConfigDict({"ch": 16, "num_groups": 4})
    config.data.batch_size = 64
    config.optim.lr = 2e-3
    config.optim.warmup_steps = 50
    config.train.num_steps = 200
    config.train.log_every = 50
    config.train.checkpoint_every = 100
    config.eval.every = 0
    config.eval.num_steps = 10
    summary = fj.train.train_and_evaluate(config, str(tmp_path))
    losses = _losses(tmp_path)
    assert losses[-1] < 0.7 * losses[0], losses
    before, after = summary["initial_eval"]["eval/digits_fd"], summary["eval"]["eval/digits_fd"]
    assert after < 0.25 * before, (before, after)
    # The in-memory image path end to end: checkpoints, the sample grid, and the restore.
    assert summary["latest_checkpoint"] == 200
    assert os.path.exists(tmp_path / "samples" / "step_0000200.png")
    _, state = fj.train.restore(config, str(tmp_path))
    assert int(state.step) == 200


def test_optax_state_is_part_of_the_checkpointed_state():
    config = _toy_config()
    exp = fj.train.build(config)
    leaves = jax.tree.leaves(exp.abstract_state.opt_state)
    assert any(isinstance(x, jax.ShapeDtypeStruct) and x.shape == (32, 32) for x in leaves)
    assert isinstance(exp.optimizer, optax.GradientTransformation)
