"""Tests for flowjax.data: toys, mixtures, digits, TFDS (mocked) and the grain pipeline."""

import json

import numpy as np
import pytest

import flowjax.data as fd
from flowjax.data._random import counter_uniforms, stream_key


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert sorted(x) == sorted(y)
        for key in x:  # x1, label and any further key (context, x0)
            np.testing.assert_array_equal(x[key], y[key])


def _iterator(name, batch=16, seed=0, pi=0, pc=1, **kw):
    return fd.make_iterator(
        name, global_batch_size=batch, seed=seed, process_index=pi, process_count=pc, **kw
    )


# ----------------------------------------------------------------------------- random streams


def test_counter_stream_does_not_depend_on_how_it_is_cut():
    key = stream_key(3, "train")
    whole = counter_uniforms(key, 0, 40, 6)
    np.testing.assert_array_equal(counter_uniforms(key, 7, 19, 6), whole[7:19])
    one_by_one = np.concatenate([counter_uniforms(key, i, i + 1, 6) for i in range(40)])
    np.testing.assert_array_equal(one_by_one, whole)
    assert 0.0 < whole.min() and whole.max() < 1.0
    assert not np.array_equal(counter_uniforms(stream_key(3, "test"), 0, 40, 6), whole)


# ----------------------------------------------------------------------------- toys


@pytest.mark.parametrize("name", sorted(fd.TOYS))
def test_toy_shapes_modes_and_determinism(name):
    x, label = fd.sample_toy(name, 4000, 0)
    assert x.shape == (4000, 2) and x.dtype == np.float32
    assert label.shape == (4000,) and label.dtype == np.int32
    assert np.isfinite(x).all() and np.abs(x).max() < 6.0
    # Every mode is populated and no label falls outside.
    np.testing.assert_array_equal(np.unique(label), np.arange(fd.TOYS[name].num_modes))
    x2, label2 = fd.sample_toy(name, 4000, np.random.default_rng(0))
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(label, label2)
    assert not np.array_equal(x, fd.sample_toy(name, 4000, 1)[0])


def test_checkerboard_support_and_balance():
    n = 64_000
    x, label = fd.sample_toy("checkerboard", n, 0)
    assert np.abs(x).max() <= 4.0
    col, row = np.floor(x[:, 0] / 2).astype(int), np.floor(x[:, 1] / 2).astype(int)
    # Every point lies in a 'black' square of the 4x4 board of 2x2 squares on [-4, 4]^2.
    assert np.all((col + row) % 2 == 0)
    squares, counts = np.unique(np.stack([col, row], 1), axis=0, return_counts=True)
    assert len(squares) == 8
    sd = np.sqrt(n * (1 / 8) * (7 / 8))
    assert np.all(np.abs(counts - n / 8) < 5 * sd), counts
    # Uniform inside the squares: the 128 occupied 0.5 x 0.5 cells are balanced too.
    cells = np.floor(x / 0.5).astype(int)
    _, cell_counts = np.unique(cells, axis=0, return_counts=True)
    assert len(cell_counts) == 128
    sd = np.sqrt(n * (1 / 128) * (127 / 128))
    assert np.all(np.abs(cell_counts - n / 128) < 5 * sd)
    # The label names the square: one label per square, eight labels.
    assert len(np.unique(label)) == 8
    for lab in range(8):
        assert len(np.unique(np.stack([col, row], 1)[label == lab], axis=0)) == 1


def test_eight_gaussians_is_the_preset_mixture():
    p = fd.gmm_params("8gaussians")
    np.testing.assert_allclose(np.linalg.norm(p.means, axis=1), 4 / 1.414)
    x, label = fd.sample_toy("8gaussians", 40_000, 0)
    for k in range(8):
        xk = x[label == k]
        np.testing.assert_allclose(xk.mean(0), p.means[k], atol=0.03)
        np.testing.assert_allclose(xk.std(0), p.stds[k], rtol=0.05)


# ----------------------------------------------------------------------------- mixtures


def test_gmm_pipeline_moments_match_the_mixture():
    p = fd.gmm_params("gmm")
    it = _iterator("gmm", batch=5000)
    batches = _take(it, 10)
    x = np.concatenate([b["x1"] for b in batches]).astype(np.float64)
    label = np.concatenate([b["label"] for b in batches])
    n = len(x)
    cov = p.cov()
    se = np.sqrt(np.diag(cov) / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - p.mean()), 5 * se)
    np.testing.assert_allclose(np.cov(x.T), cov, atol=0.08)
    freq = np.bincount(label, minlength=5) / n
    np.testing.assert_array_less(np.abs(freq - p.weights), 5 * np.sqrt(p.weights / n))
    for k in range(5):
        np.testing.assert_allclose(x[label == k].std(0), p.stds[k], rtol=0.05)


def test_custom_mixture_in_three_dimensions():
    means = np.array([[0.0, 1.0, -1.0], [3.0, 0.0, 2.0]])
    stds, weights = np.array([0.5, 1.5]), np.array([0.7, 0.3])
    x, comp = fd.sample_mixture(means, stds, weights, 40_000, 0)
    p = fd.MixtureParams(means, stds, weights)
    np.testing.assert_allclose(x.mean(0), p.mean(), atol=0.05)
    np.testing.assert_allclose(np.cov(x.T), p.cov(), atol=0.1)
    assert abs((comp == 0).mean() - 0.7) < 0.015
    it = _iterator("gmm", batch=8, means=means, stds=stds, weights=weights)
    assert next(it)["x1"].shape == (8, 3)


def test_mixture_params_are_validated():
    with pytest.raises(ValueError, match="weights"):
        fd.MixtureParams(np.zeros((2, 2)), np.ones(2), np.array([0.5, 0.6]))
    with pytest.raises(ValueError, match="stds"):
        fd.MixtureParams(np.zeros((2, 2)), np.array([1.0, -1.0]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="shape"):
        fd.MixtureParams(np.zeros(2), np.ones(2), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="unknown mixture"):
        fd.gmm_params("nope")


# ----------------------------------------------------------------------------- digits


def test_digits_range_shape_labels_and_split():
    from sklearn.datasets import load_digits

    xtr, ytr = fd.digits_arrays("train")
    xte, yte = fd.digits_arrays("test")
    assert xtr.shape == (1500, 8, 8, 1) and xte.shape == (297, 8, 8, 1)
    assert xtr.dtype == np.float32 and ytr.dtype == np.int32
    assert xtr.min() == -1.0 and xtr.max() == 1.0
    # Exactly the [0, 16] grid mapped affinely to [-1, 1].
    np.testing.assert_array_equal((xtr + 1) * 8, np.round((xtr + 1) * 8))
    assert set(ytr.tolist()) == set(range(10)) == set(yte.tolist())
    # The split is a partition of the 1,797 images, fixed across calls.
    raw = load_digits()
    both = np.concatenate([xtr, xte])[..., 0]
    ref = raw.images.astype(np.float32) / 8 - 1
    key = lambda a: sorted(map(bytes, a.reshape(len(a), -1)))  # noqa: E731
    assert key(both) == key(ref)
    np.testing.assert_array_equal(fd.digits_arrays("test")[0], xte)


def test_digits_epochs_are_reshuffled_permutations():
    xtr, _ = fd.digits_arrays("train")
    it = _iterator("digits", batch=500)
    epochs = [np.concatenate([b["x1"] for b in _take(it, 3)]) for _ in range(2)]
    key = lambda a: sorted(map(bytes, a.reshape(len(a), -1)))  # noqa: E731
    for e in epochs:
        assert key(e) == key(xtr)  # every record exactly once per epoch
    assert not np.array_equal(epochs[0], epochs[1])  # a new order each epoch


# ----------------------------------------------------------------------------- pipeline


@pytest.mark.parametrize("name", ["checkerboard", "gmm", "digits"])
def test_pipeline_is_deterministic_from_the_seed(name):
    a, b = _take(_iterator(name, seed=5), 4), _take(_iterator(name, seed=5), 4)
    _assert_batches_equal(a, b)
    c = _take(_iterator(name, seed=6), 1)
    assert not np.array_equal(a[0]["x1"], c[0]["x1"])
    assert not np.array_equal(a[0]["x1"], a[1]["x1"])


@pytest.mark.parametrize("name", ["checkerboard", "gmm", "digits"])
def test_process_slices_concatenate_to_the_global_batch(name):
    # 7 steps of 256 cross the 1500-record digits epoch boundary.
    steps, batch = 7, 256
    whole = _take(_iterator(name, batch=batch, pc=1), steps)
    for pc in (2, 4):
        parts = [_take(_iterator(name, batch=batch, pi=p, pc=pc), steps) for p in range(pc)]
        for k in range(steps):
            local = [parts[p][k] for p in range(pc)]
            assert all(b["x1"].shape[0] == batch // pc for b in local)
            np.testing.assert_array_equal(np.concatenate([b["x1"] for b in local]), whole[k]["x1"])
            np.testing.assert_array_equal(
                np.concatenate([b["label"] for b in local]), whole[k]["label"]
            )


@pytest.mark.parametrize(
    "name,threads",
    [("checkerboard", 0), ("digits", 2), ("context_gmm", 0), ("8gaussians_to_moons", 0)],
)
def test_state_round_trip_resumes_exactly(name, threads):
    it = _iterator(name, batch=64, seed=1, pi=1, pc=2, num_threads=threads)
    _take(it, 5)
    state = json.loads(json.dumps(it.get_state()))
    assert state["step"] == 5
    expected = _take(it, 4)
    fresh = _iterator(name, batch=64, seed=1, pi=1, pc=2, num_threads=threads)
    next(fresh)  # state is restored over whatever the fresh iterator had done
    fresh.set_state(state)
    _assert_batches_equal(_take(fresh, 4), expected)
    assert fresh.get_state()["step"] == 9


def test_context_and_pair_batches_split_over_processes_like_labels():
    # "context" and "x0" are per-example keys: the local batches of 2 processes concatenate
    # to the 1-process batch, key by key, as x1 and label do.
    for name, key in (("context_gmm", "context"), ("8gaussians_to_moons", "x0")):
        whole = next(_iterator(name, batch=64))
        assert whole[key].shape == (64, 1 if key == "context" else 2)
        assert whole[key].dtype == np.float32
        parts = [next(_iterator(name, batch=64, pi=p, pc=2)) for p in range(2)]
        for k in ("x1", "label", key):
            np.testing.assert_array_equal(np.concatenate([b[k] for b in parts]), whole[k])
    # The context indexes the mixture: x1 lies near the context's rotated means.
    batch = next(_iterator("context_gmm", batch=2000))
    mix = fd.CONTEXT_MIXTURES["context_gmm"]
    c, comp = batch["context"][:, 0], batch["label"]
    theta = np.asarray(mix.angles)[comp] + mix.rotation * c
    means = mix.radius * np.stack([np.cos(theta), np.sin(theta)], 1)
    z = (batch["x1"] - means) / np.asarray(mix.stds)[comp, None]
    assert abs(z.std() - 1.0) < 0.05 and abs(z.mean()) < 0.05
    assert fd.spec("context_gmm").context_shape == (1,)


def test_set_state_refuses_another_stream():
    it = _iterator("checkerboard", seed=0)
    state = it.get_state()
    with pytest.raises(ValueError, match="seed"):
        _iterator("checkerboard", seed=1).set_state(state)
    with pytest.raises(ValueError, match="global_batch_size"):
        _iterator("checkerboard", batch=32).set_state(state)
    with pytest.raises(ValueError, match="step"):
        it.set_state({"step": -1})


def test_default_process_layout_comes_from_jax():
    it = fd.make_iterator("moons", global_batch_size=12, seed=0)
    assert next(it)["x1"].shape == (12, 2)


def test_bad_arguments_raise_one_line_errors():
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'; valid: .*checkerboard"):
        _iterator("nope")
    with pytest.raises(ValueError, match="not divisible by process_count=3"):
        _iterator("checkerboard", batch=16, pc=3)
    with pytest.raises(ValueError, match="process_index"):
        _iterator("checkerboard", pi=2, pc=2)
    with pytest.raises(ValueError, match="global_batch_size"):
        _iterator("checkerboard", batch=0)
    with pytest.raises(ValueError, match="seed"):
        _iterator("checkerboard", seed=-1)
    with pytest.raises(ValueError, match="source option"):
        _iterator("checkerboard", radius=3)
    with pytest.raises(ValueError, match="split"):
        _iterator("checkerboard", split="validation")
    with pytest.raises(ValueError, match="split"):
        _iterator("digits", split="validation")


def test_validate_batch_names_dataset_shape_and_bad_value():
    good = {"x1": np.zeros((4, 2), np.float32), "label": np.zeros(4, np.int32)}
    assert fd.validate_batch("d", good, (2,), None) is good
    with pytest.raises(ValueError, match=r"'d': expected x1 of shape \(4, 3\), got \(4, 2\)"):
        fd.validate_batch("d", good, (3,), None)
    bad = {"x1": good["x1"].copy(), "label": good["label"]}
    bad["x1"][2, 1] = np.inf
    with pytest.raises(ValueError, match=r"'d': non-finite value inf in x1 at index \(2, 1\)"):
        fd.validate_batch("d", bad, (2,), None)
    with pytest.raises(ValueError, match=r"label 7 outside \[0, 5\)"):
        fd.validate_batch("d", {"x1": good["x1"], "label": np.full(4, 7, np.int32)}, (2,), 5)


def test_pipeline_rejects_nan_and_misshapen_records(monkeypatch):
    x = np.zeros((10, 2), np.float32)
    x[3, 0] = np.nan
    nan_spec = fd.DatasetSpec(
        "nanset",
        (2,),
        None,
        "images",
        lambda split, seed, data_dir: fd.ArraySource("nanset", x, np.zeros(10)),
    )
    monkeypatch.setitem(fd.DATASETS, "nanset", nan_spec)
    it = _iterator("nanset", batch=10, num_threads=0)
    with pytest.raises(ValueError, match="'nanset': non-finite value nan"):
        next(it)

    def wrong(u):  # a generator that emits 3-vectors for a 2D dataset
        return np.ones((len(u), 3)), np.zeros(len(u), np.int64)

    wrong_spec = fd.DatasetSpec(
        "wrongset",
        (2,),
        None,
        "points",
        lambda split, seed, data_dir: fd.SyntheticSource(
            "wrongset", wrong, 1, (2,), seed=seed, split=split
        ),
    )
    monkeypatch.setitem(fd.DATASETS, "wrongset", wrong_spec)
    msg = r"'wrongset': expected x1 of shape \(16, 2\), got \(16, 3\)"
    with pytest.raises(ValueError, match=msg):
        next(_iterator("wrongset"))


# ----------------------------------------------------------------------------- specs, references


def test_specs_and_reference_samples():
    assert fd.spec("cifar10").shape == (32, 32, 3) and fd.spec("cifar10").num_classes == 10
    assert fd.spec("checkerboard").kind == "points" and fd.spec("checkerboard").num_classes is None
    assert fd.spec("celeb_a").shape == (64, 64, 3)
    assert {"points", "images"} <= {s.kind for s in fd.DATASETS.values()}
    with pytest.raises(ValueError, match="valid"):
        fd.spec("imagenet")
    ref = fd.reference_samples("checkerboard", 1000, seed=0)
    assert ref.shape == (1000, 2) and ref.dtype == np.float32
    np.testing.assert_array_equal(ref, fd.reference_samples("checkerboard", 1000, seed=0))
    train = np.concatenate([b["x1"] for b in _take(_iterator("checkerboard", batch=500), 2)])
    assert not np.isin(ref, train).all(axis=1).any()  # test stream is not the train stream
    digits = fd.reference_samples("digits", 200, seed=0)
    assert digits.shape == (200, 8, 8, 1)
    test_rows = {bytes(r) for r in fd.digits_arrays("test")[0].reshape(297, -1)}
    assert all(bytes(r) in test_rows for r in digits.reshape(200, -1))
    np.testing.assert_array_equal(
        fd.reference_samples("digits", 297, seed=1).sum(0), fd.digits_arrays("test")[0].sum(0)
    )  # distinct records
    with pytest.raises(ValueError, match="297 records"):
        fd.reference_samples("digits", 298)


# ----------------------------------------------------------------------------- TFDS (mocked)


def test_mock_mnist_end_to_end():
    tfds = pytest.importorskip("tensorflow_datasets")
    n = 24
    with tfds.testing.mock_data(num_examples=n):
        raw = tfds.data_source("mnist", split="train")
        records = np.stack([np.asarray(raw[i]["image"]) for i in range(n)])
        raw_labels = np.array([raw[i]["label"] for i in range(n)])
        it = _iterator("mnist", batch=8, seed=2, data_dir="/nonexistent")
        epoch = _take(it, 3)  # 3 x 8 = one epoch of 24
        b = epoch[0]
        assert b["x1"].shape == (8, 28, 28, 1) and b["x1"].dtype == np.float32
        assert b["label"].dtype == np.int32
        assert b["x1"].min() >= -1.0 and b["x1"].max() <= 1.0
        # The epoch is exactly the 24 records, each scaled x / 127.5 - 1, with its label.
        x = np.concatenate([e["x1"] for e in epoch])
        labels = np.concatenate([e["label"] for e in epoch])
        pixels = np.round((x + 1) * 127.5).astype(np.uint8)
        index = {bytes(r): i for i, r in enumerate(records)}
        order = [index[bytes(p)] for p in pixels]
        assert sorted(order) == list(range(n))
        np.testing.assert_array_equal(labels, raw_labels[order])
        # Two processes each read half of every batch.
        halves = [_take(_iterator("mnist", batch=8, seed=2, pi=p, pc=2), 3) for p in range(2)]
        for k in range(3):
            np.testing.assert_array_equal(
                np.concatenate([halves[0][k]["x1"], halves[1][k]["x1"]]), epoch[k]["x1"]
            )
        ref = fd.reference_samples("mnist", 5, seed=0)
        assert ref.shape == (5, 28, 28, 1)


def test_mock_celeb_a_is_cropped_and_resized():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=4):
        b = next(_iterator("celeb_a", batch=2, num_threads=0))
        assert b["x1"].shape == (2, 64, 64, 3)
        np.testing.assert_array_equal(b["label"], 0)
        assert b["x1"].min() >= -1 and b["x1"].max() <= 1


def test_mock_record_of_wrong_shape_is_reported():
    tfds = pytest.importorskip("tensorflow_datasets")
    # The mock fills downsampled_imagenet's (None, None, 3) image feature with random sizes.
    with tfds.testing.mock_data(num_examples=4):
        it = _iterator("downsampled_imagenet32", batch=2, num_threads=0)
        with pytest.raises(ValueError, match=r"'downsampled_imagenet32': record \d+ has shape"):
            next(it)
