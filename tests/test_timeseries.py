"""Forecasting: series loaders, windows, GluonTS-definition metrics, the sequence backbone.

References nobody here wrote: GluonTS' TSF reader and dataset loader, its `Evaluator` /
`MultivariateEvaluator`, aeon's `.tsf` loader (where it imports), scoringrules' CRPS.
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flowjax as fj
from flowjax.data import SeriesDataset, SeriesWindows
from flowjax.models.sequence import SequenceNet


def _dataset(rng, num=4, horizon=3, windows=1, channels=1, features=False, lo=20, hi=30):
    lengths = rng.integers(lo, hi, size=num)
    values = tuple(rng.gamma(2.0, 10.0, size=(n, channels)) for n in lengths)
    feats = tuple(rng.normal(size=(n, 2)) for n in lengths) if features else None
    return SeriesDataset(
        "toy",
        values,
        tuple(f"S{i}" for i in range(num)),
        "M",
        horizon,
        num_test_windows=windows,
        starts=tuple(f"2000-0{i + 1}-01 00-00-00" for i in range(num)),
        dynamic_features=feats,
    )


# ------------------------------------------------------------------------------- loaders


def test_tsf_round_trip_and_agrees_with_gluonts_reader(tmp_path):
    from gluonts.dataset.repository._tsf_reader import TSFReader

    ds = _dataset(np.random.default_rng(0))
    path = tmp_path / "toy.tsf"
    fj.data.write_tsf(path, ds)
    back = fj.data.read_tsf(path, name="toy")
    assert back.names == ds.names and back.starts == ds.starts
    assert (back.freq, back.horizon, back.season) == ("M", 3, 12)
    for a, b in zip(back.values, ds.values, strict=True):
        np.testing.assert_array_equal(a, b)  # repr(float) round-trips exactly
    meta, rows = TSFReader(str(path)).read()
    assert int(meta.forecast_horizon) == 3 and meta.frequency == "monthly"
    for row, v in zip(rows, ds.values, strict=True):
        np.testing.assert_array_equal(row["target"], v[:, 0])


def test_tsf_agrees_with_aeon_loader(tmp_path):
    # aeon's loader imports numba, whose wheels lag numpy releases: skip where it cannot import.
    try:
        from aeon.datasets import load_from_tsf_file
    except ImportError as err:
        pytest.skip(f"aeon's .tsf loader does not import here: {err}")
    ds = _dataset(np.random.default_rng(1))
    path = tmp_path / "toy.tsf"
    fj.data.write_tsf(path, ds)
    frame, meta = load_from_tsf_file(str(path))
    assert meta["forecast_horizon"] == 3
    for series, v in zip(frame["series_value"], ds.values, strict=True):
        np.testing.assert_array_equal(np.asarray(series, float), v[:, 0])


def test_tsf_missing_value_and_header_errors(tmp_path):
    path = tmp_path / "bad.tsf"
    path.write_text("@relation x\n@attribute series_name string\n@horizon 2\n@data\nA:1,2,?,4,5\n")
    with pytest.raises(ValueError, match=r"series 'A' has a non-finite value nan at index 2"):
        fj.data.read_tsf(path)
    path.write_text("@relation x\n@attribute series_name string\n@data\nA:1,2,3\n")
    with pytest.raises(ValueError, match="no @horizon"):
        fj.data.read_tsf(path)


@pytest.mark.parametrize("gz", [False, True])
def test_gluonts_folder_round_trip_and_gluonts_reads_it(tmp_path, gz):
    from gluonts.dataset.common import load_datasets

    ds = _dataset(np.random.default_rng(2), windows=2, features=True)
    fj.data.write_gluonts(tmp_path / "toy", ds, gzip_files=gz)
    back = fj.data.read_gluonts(tmp_path / "toy")
    assert (back.num_test_windows, back.horizon, back.freq, back.names) == (2, 3, "M", ds.names)
    for a, b, fa, fb in zip(
        back.values, ds.values, back.dynamic_features, ds.dynamic_features, strict=True
    ):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(fa, fb)
    # GluonTS' own loader sees train = all but the last 2 x 3 points, test = 2 rolling windows.
    gl = load_datasets(tmp_path / "toy", tmp_path / "toy" / "train", tmp_path / "toy" / "test")
    train, test = list(gl.train), list(gl.test)
    assert gl.metadata.prediction_length == 3 and len(test) == 2 * ds.num_series
    for i, entry in enumerate(train):
        np.testing.assert_allclose(entry["target"], ds.train_values(i)[:, 0], rtol=1e-6)
    pasts, targets, _ = back.test_split()
    for j, entry in enumerate(test):  # window-major in the file, series-major in test_split
        i, k = j % ds.num_series, j // ds.num_series
        full = np.concatenate([pasts[2 * i + k][:, 0], targets[2 * i + k][:, 0]])
        np.testing.assert_allclose(entry["target"], full, rtol=1e-6)


def test_gluonts_folder_inconsistent_test_split_is_an_error(tmp_path):
    ds = _dataset(np.random.default_rng(3), windows=1)
    fj.data.write_gluonts(tmp_path / "toy", ds)
    with pytest.raises(ValueError, match="expected 3 test windows; the files hold 1"):
        fj.data.read_gluonts(tmp_path / "toy", num_test_windows=3)
    test_file = tmp_path / "toy" / "test" / "data.json"
    test_file.write_text(test_file.read_text().replace('"target": [', '"target": [1e9, ', 1))
    with pytest.raises(ValueError, match="not extensions of the train series"):
        fj.data.read_gluonts(tmp_path / "toy")


def test_benchmark_needs_data_dir_and_checks_protocol(tmp_path):
    with pytest.raises(ValueError, match="give data_dir"):
        fj.data.load_series("electricity")
    ds = _dataset(np.random.default_rng(4), horizon=30, windows=5, lo=200, hi=210)
    fj.data.write_gluonts(tmp_path / "exchange_rate_nips", ds)
    with pytest.raises(ValueError, match="expected 8 series with horizon 30"):
        fj.data.load_series("exchange_rate", data_dir=str(tmp_path))
    info = fj.data.BENCHMARKS["electricity"]
    assert (info.freq, info.horizon, info.num_test_windows, info.num_series) == ("H", 24, 7, 370)


@pytest.mark.skipif(importlib.util.find_spec("aeon") is None, reason="aeon not installed")
def test_shipped_m1_yearly_loads_181_series_horizon_6():
    from gluonts.dataset.repository._tsf_reader import TSFReader

    ds = fj.data.load_series("m1_yearly")
    assert (ds.num_series, ds.horizon, ds.freq, ds.season) == (181, 6, "Y", 1)
    assert ds.names[0] == "T1" and min(len(v) for v in ds.values) == 15
    _, rows = TSFReader(fj.data.m1_yearly_path()).read()
    for row, v in zip(rows, ds.values, strict=True):
        np.testing.assert_array_equal(row["target"], v[:, 0])
    assert fj.data.spec("m1_yearly").shape == (6, 1) and fj.data.spec("m1_yearly").kind == "series"


@pytest.mark.skipif(importlib.util.find_spec("statsmodels") is None, reason="no statsmodels")
def test_shipped_statsmodels_series():
    from statsmodels.datasets import co2 as sm_co2
    from statsmodels.datasets import elnino as sm_elnino

    co2 = fj.data.load_series("co2")
    raw = sm_co2.load_pandas().data["co2"].to_numpy()
    ok = np.isfinite(raw)
    np.testing.assert_array_equal(co2.values[0][ok, 0], raw[ok])  # gaps only are interpolated
    elnino = fj.data.load_series("elnino")
    np.testing.assert_array_equal(
        elnino.values[0][:12, 0], sm_elnino.load_pandas().data.iloc[0, 1:].to_numpy()
    )
    macro = fj.data.load_series("macrodata")
    assert macro.values[0].shape == (203, 12) and macro.season == 4
    assert fj.data.load_series("sunspots").values[0].shape == (309, 1)


# ------------------------------------------------------------------------------- windows


def test_windows_never_include_test_points_and_cover_every_train_window():
    # Values encode (series, time), so every window can be traced back to its source points.
    lengths = (17, 25, 40)
    values = tuple(1000.0 * (i + 1) + np.arange(n) for i, n in enumerate(lengths))
    ds = SeriesDataset("trace", values, ("a", "b", "c"), "D", 4, num_test_windows=2)
    t, h = 5, 4
    win = SeriesWindows(ds, t, features=())
    train = win.windows("train")
    ctx = SeriesWindows.unscale(train["context"], train["scale"])
    tgt = SeriesWindows.unscale(train["x1"], train["scale"])
    assert win.num_windows("train") == sum(n - 2 * h - t - h + 1 for n in lengths)
    seen = set()
    for c, y, i in zip(ctx[..., 0], tgt[..., 0], train["label"], strict=True):
        first_test = 1000.0 * (i + 1) + lengths[i] - 2 * h
        assert y.max() < first_test - 0.5 and c.max() < first_test - 0.5
        window = np.concatenate([c, y])
        np.testing.assert_allclose(np.diff(window), 1.0, atol=1e-3)  # one contiguous slice
        seen.add((int(i), round(float(y[-1]) - 1000.0 * (i + 1))))
    assert len(seen) == len(train["label"])  # all distinct
    # The training windows' mean scaling uses the context only.
    np.testing.assert_allclose(train["scale"][:, 0], np.abs(ctx[..., 0]).mean(1), rtol=1e-5)
    test = win.windows("test")
    _, targets, names = ds.test_split()
    np.testing.assert_allclose(SeriesWindows.unscale(test["x1"], test["scale"]), targets, rtol=1e-5)
    assert names[:2] == ["a/0", "a/1"] and len(names) == 6


def test_holdout_is_the_test_protocol_one_block_earlier_and_reads_no_test_point():
    lengths = (9, 25, 40)  # "a" is too short for a validation training window
    values = tuple(1000.0 * (i + 1) + np.arange(n) for i, n in enumerate(lengths))
    ds = SeriesDataset("trace", values, ("a", "b", "c"), "D", 4, num_test_windows=2)
    t, h = 5, 4
    win = SeriesWindows(ds, t, features=(), holdout=True)
    assert win.dropped == ("a",) and win.ds.names == ("b", "c")
    _, targets, names = win.ds.test_split()
    assert names == ["b/0", "b/1", "c/0", "c/1"]
    # The validation targets are the last 2 x 4 training points: the real test blocks moved
    # one protocol length (8 points) back.
    for j, (i, n) in enumerate([(1, 25), (1, 25), (2, 40), (2, 40)]):
        end = n - 2 * h + (j % 2 + 1) * h - 2 * h
        np.testing.assert_allclose(targets[j, :, 0], 1000.0 * (i + 1) + np.arange(end - h, end))
    test = win.windows("test")
    np.testing.assert_allclose(SeriesWindows.unscale(test["x1"], test["scale"]), targets, rtol=1e-5)
    train = win.windows("train")
    tgt = SeriesWindows.unscale(train["x1"], train["scale"])[..., 0]
    first_val = np.where(train["label"] == 0, 1000.0 * 2 + 25, 1000.0 * 3 + 40) - 4 * h
    assert (tgt.max(1) < first_val - 0.5).all()  # training stops before validation
    assert win.num_windows("train") == sum(n - 4 * h - t - h + 1 for n in (25, 40))
    # Dynamic features are cut with their series; nothing left is an error.
    feats = _dataset(np.random.default_rng(0), features=True, lo=30, hi=31)
    held = feats.holdout()
    assert [len(f) for f in held.dynamic_features] == [len(v) for v in held.values] == [27] * 4
    with pytest.raises(ValueError, match="no series has the 7 points a validation split needs"):
        _dataset(np.random.default_rng(0), lo=6, hi=7).holdout()


def test_padded_windows_observed_channel_and_features():
    ds = _dataset(np.random.default_rng(5), lo=8, hi=10)  # 5..6 training points per series
    with pytest.raises(ValueError, match=r"fewer than context 12 \+ horizon 3 = 15; use pad=True"):
        SeriesWindows(ds, 12)
    win = SeriesWindows(ds, 12, pad=True, features=("log_scale", "phase"), min_observed=1)
    assert win.features == ("observed", "log_scale", "phase")
    b = win.windows("train")
    assert b["context"].shape == (win.num_windows("train"), *win.context_shape)
    assert win.context_shape == (12, 1 + 1 + 1 + 2)
    observed = b["context"][..., 1]
    assert np.all(observed.sum(1) >= 1)
    np.testing.assert_array_equal(b["context"][..., 0][observed == 0], 0.0)  # zero padding
    log_scale = np.broadcast_to(np.log(b["scale"]), b["context"][..., 2].shape)
    np.testing.assert_allclose(b["context"][..., 2], log_scale, rtol=1e-6)
    np.testing.assert_allclose(b["context"][..., 3] ** 2 + b["context"][..., 4] ** 2, 1.0, 1e-5)


def test_short_context_windows_are_skipped_not_scaled_into_outliers():
    # z = (1, 1000, 1000, ...), a series that starts small (as many M1 series do): a padded
    # window with k observed context points has scale (1 + 1000 (k - 1)) / k, so its scaled
    # target is 1000 k / (1 + 1000 (k - 1)): 1000 for k = 1, 4/3 at most for k >= 4.
    h, t = 6, 12
    ds = SeriesDataset("jump", (np.r_[1.0, np.full(29, 1000.0)],), ("g",), "Y", h)

    def peak(k):
        return 1000.0 * k / (1 + 1000.0 * (k - 1))

    every = SeriesWindows(ds, t, pad=True, min_observed=1)  # negative control: all windows
    b = every.windows("train")
    assert b["context"][..., 1].sum(1).min() == 1
    assert np.abs(b["x1"]).max() == pytest.approx(peak(1), rel=1e-5)
    kept = SeriesWindows(ds, t, pad=True)  # default min_observed = 4
    b = kept.windows("train")
    counts = b["context"][..., 1].sum(1)
    assert counts.min() == 4 and kept.num_windows("train") == every.num_windows("train") - 3
    assert np.abs(b["x1"][counts == 4]).max() == pytest.approx(peak(4), rel=1e-5)
    assert kept.num_windows("test") == 1  # test windows are never skipped
    if importlib.util.find_spec("aeon") is not None:  # the real case: M1's short series
        m1 = fj.data.load_series("m1_yearly")
        raw = np.abs(SeriesWindows(m1, t, pad=True, min_observed=1).windows("train")["x1"])
        fixed = np.abs(SeriesWindows(m1, t, pad=True).windows("train")["x1"])
        assert raw.max() > 1e4 and fixed.max() < 50


def test_last_value_location_inverts_and_zero_is_the_naive_forecast():
    ds = _dataset(np.random.default_rng(11), windows=2)
    win = SeriesWindows(ds, 5, loc="last")
    pasts, targets, _ = ds.test_split()
    test = win.windows("test")
    back = SeriesWindows.unscale(test["x1"], test["scale"], test["loc"])
    np.testing.assert_allclose(back, targets, rtol=1e-5)
    naive = SeriesWindows.unscale(np.zeros_like(test["x1"]), test["scale"], test["loc"])
    last = np.stack([p[-1] for p in pasts])[:, None, :]
    np.testing.assert_allclose(naive, np.broadcast_to(last, naive.shape), rtol=1e-6)
    assert np.abs(SeriesWindows.unscale(test["x1"], test["scale"]) - targets).max() > 1.0
    np.testing.assert_allclose(test["context"][:, -1, 0], 0.0, atol=1e-6)  # z_last - z_last
    with pytest.raises(ValueError, match="loc must be one of"):
        SeriesWindows(ds, 5, loc="mean")


@pytest.mark.parametrize("pad", [False, True])
def test_drift_location_inverts_and_zero_is_the_random_walk_with_drift(pad):
    ds = _dataset(np.random.default_rng(12), windows=2, lo=6 if pad else 20)
    t = 8
    win = SeriesWindows(ds, t, pad=pad, min_observed=1, loc="drift")
    pasts, targets, _ = ds.test_split()
    test = win.windows("test")
    back = SeriesWindows.unscale(test["x1"], test["scale"], test["loc"])
    np.testing.assert_allclose(back, targets, rtol=1e-5)
    # x = 0 is the random walk with drift through the first and last observed context values.
    zero = SeriesWindows.unscale(
        np.zeros((len(targets), 2, *win.target_shape)), test["scale"], test["loc"]
    )
    for j, (i, e) in enumerate(win.index("test")):
        seen = ds.values[i][max(e - ds.horizon - t, 0) : e - ds.horizon, 0]
        slope = (seen[-1] - seen[0]) / (len(seen) - 1)
        drift = seen[-1] + slope * np.arange(1, ds.horizon + 1)
        np.testing.assert_allclose(
            zero[j, :, :, 0], np.broadcast_to(drift, (2, ds.horizon)), rtol=1e-6
        )
    last = SeriesWindows(ds, t, pad=pad, min_observed=1, loc="last").windows("train")
    drift_train = win.windows("train")
    np.testing.assert_array_equal(drift_train["context"], last["context"])  # context as "last"


def test_bad_series_input_errors():
    rng = np.random.default_rng(6)
    with pytest.raises(ValueError, match=r"series 'x' has 5 points, not more than the 1 test"):
        SeriesDataset("d", (rng.normal(size=5),), ("x",), "Y", 6)
    bad = rng.normal(size=20)
    bad[7] = np.nan
    with pytest.raises(ValueError, match=r"series 'x' has a non-finite value nan at index 7"):
        SeriesDataset("d", (bad,), ("x",), "Y", 6)
    ds = SeriesDataset("d", (rng.normal(size=20),), ("x",), "Y", 6)
    with pytest.raises(ValueError, match=r"'x' has 14 training points, fewer than context 30"):
        SeriesWindows(ds, 30)
    with pytest.raises(ValueError, match="unknown window feature"):
        SeriesWindows(ds, 4, features=("lags",))
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        SeriesWindows(ds, 4).windows("validation")


@pytest.mark.skipif(importlib.util.find_spec("aeon") is None, reason="aeon not installed")
def test_pipeline_batches_carry_context_and_resume():
    it = fj.data.make_iterator("m1_yearly", global_batch_size=16, seed=0, num_threads=0)
    b = next(it)
    assert b["x1"].shape == (16, 6, 1) and b["context"].shape == (16, 12, 3)
    assert b["scale"].shape == (16, 1) and b["label"].dtype == np.int32
    state = it.get_state()
    nxt = next(it)
    it.set_state(state)
    again = next(it)
    for key in nxt:
        np.testing.assert_array_equal(nxt[key], again[key])
    test = fj.data.open_source("m1_yearly", split="test")
    assert len(test) == 181
    # reference_samples reads series sources too: the scaled test horizons of 5 series.
    x, labels = fj.data.reference_samples("m1_yearly", 5, return_labels=True)
    np.testing.assert_array_equal(x, test.windows.windows("test", labels)["x1"])


# ------------------------------------------------------------------------------- metrics


def _gluonts_eval(samples, target, pasts, season, multivariate=False):
    import pandas as pd
    from gluonts.evaluation import Evaluator, MultivariateEvaluator
    from gluonts.model.forecast import SampleForecast

    start = pd.Period("2000-01", freq="M")
    series, forecasts = [], []
    for i, past in enumerate(pasts):
        full = np.concatenate([past, target[i]])
        index = pd.period_range(start, periods=len(full), freq="M")
        series.append(pd.DataFrame(full, index=index) if multivariate else pd.Series(full, index))
        forecasts.append(SampleForecast(samples[i], start_date=start + len(past), item_id=str(i)))
    if multivariate:
        ev = MultivariateEvaluator(
            num_workers=0, seasonality=season, target_agg_funcs={"sum": np.sum}
        )
    else:
        ev = Evaluator(num_workers=0, seasonality=season)
    agg, _ = ev(series, forecasts)
    return agg


_NAMES = {"crps": "mean_wQuantileLoss", "nd": "ND", "nrmse": "NRMSE", "mase": "MASE"}
_NAMES |= {"smape": "sMAPE"}


@pytest.mark.filterwarnings("ignore")
def test_metrics_equal_gluonts_evaluator():
    rng = np.random.default_rng(7)
    n, s, h = 9, 40, 6
    pasts = [rng.gamma(2.0, 10.0, size=12 + i) for i in range(n)]
    target = rng.gamma(2.0, 10.0, size=(n, h))
    samples = rng.gamma(2.0, 10.0, size=(n, s, h))
    ours = fj.metrics.forecast_metrics(samples, target, pasts, season=3)
    ref = _gluonts_eval(samples, target, pasts, season=3)
    for name, gname in _NAMES.items():
        assert ours[name] == pytest.approx(ref[gname], rel=1e-6, abs=1e-9), name
    wql = fj.metrics.quantile_losses(samples, target)
    for q, value in wql.items():
        assert value == pytest.approx(ref[f"wQuantileLoss[{q}]"], rel=1e-6)
    # Negative control: one shifted sample path changes the CRPS.
    shifted = samples.copy()
    shifted[0, :, :] *= 1.5
    assert abs(fj.metrics.crps(shifted, target) - ref["mean_wQuantileLoss"]) > 1e-3


@pytest.mark.filterwarnings("ignore")
def test_multivariate_metrics_and_crps_sum_equal_gluonts():
    rng = np.random.default_rng(8)
    n, s, h, c = 5, 30, 4, 3
    pasts = [rng.gamma(2.0, 10.0, size=(15, c)) for _ in range(n)]
    target = rng.gamma(2.0, 10.0, size=(n, h, c))
    samples = rng.gamma(2.0, 10.0, size=(n, s, h, c))
    ours = fj.metrics.forecast_metrics(samples, target, pasts, season=1)
    ref = _gluonts_eval(samples, target, pasts, season=1, multivariate=True)
    for name, gname in _NAMES.items():
        assert ours[name] == pytest.approx(ref[gname], rel=1e-6), name
    assert ours["crps_sum"] == pytest.approx(ref["m_sum_mean_wQuantileLoss"], rel=1e-6)
    assert abs(fj.metrics.crps_sum(samples[..., ::-1] * 1.2, target) - ours["crps_sum"]) > 1e-3


def test_mase_perfect_and_naive_forecasts():
    h = 5
    past = [np.arange(1.0, 21.0)]  # z_t = t: the in-sample naive error is 1 per step
    target = np.arange(21.0, 21.0 + h)[None]
    perfect = np.repeat(target[:, None], 3, axis=1)
    assert fj.metrics.mase(perfect, target, past, season=1) == 0.0
    naive = np.full((1, 3, h), 20.0)  # repeat the last value: errors 1..h
    assert fj.metrics.mase(naive, target, past, season=1) == pytest.approx((h + 1) / 2)
    # Seasonal naive on a noisy seasonal series: MASE = mean|y - y_{t-m}| / in-sample scale.
    rng = np.random.default_rng(9)
    m = 4
    z = np.tile(rng.normal(10, 1, m), 8) + rng.normal(0, 0.1, 8 * m)
    past, y = z[:-m], z[-m:]
    snaive = np.repeat(past[-m:][None, None], 2, axis=1)
    scale = np.mean(np.abs(past[m:] - past[:-m]))
    expected = np.mean(np.abs(y - past[-m:])) / scale
    assert fj.metrics.mase(snaive, y[None], [past], season=m) == pytest.approx(expected, 1e-12)
    assert fj.metrics.seasonal_error(np.arange(3.0), season=12) == 1.0  # m >= len -> lag 1


def test_crps_energy_equals_brute_force_ensemble_crps():
    rng = np.random.default_rng(10)
    samples = rng.normal(5.0, 2.0, size=(3, 25, 4))
    target = rng.normal(5.0, 2.0, size=(3, 4))
    x, y = samples.transpose(0, 2, 1), target  # (N, H, S)
    e1 = np.abs(x - y[..., None]).mean(-1)
    e2 = np.abs(x[..., :, None] - x[..., None, :]).mean((-1, -2))
    expected = (e1 - 0.5 * e2).sum() / np.abs(y).sum()
    assert fj.metrics.crps_energy(samples, target) == pytest.approx(expected, rel=1e-10)
    assert fj.metrics.crps_energy(samples, target, backend="jax") == pytest.approx(expected, 1e-5)
    assert abs(fj.metrics.crps_energy(samples + 5.0, target) - expected) > 0.1
    # Calibrated Gaussian forecasts: the 9-quantile grid (GluonTS' "CRPS") reads
    # 2 mean_q phi(z_q) sigma against the exact sigma / sqrt(pi), 1.094x (no tails in the grid).
    from scipy.stats import norm

    big = rng.normal(0.0, 1.0, size=(300, 400, 1)) + 3.0
    obs = rng.normal(0.0, 1.0, size=(300, 1)) + 3.0
    ratio = fj.metrics.crps(big, obs) / fj.metrics.crps_energy(big, obs)
    grid = 2 * np.mean(norm.pdf(norm.ppf(fj.metrics.QUANTILES))) * np.sqrt(np.pi)
    assert ratio == pytest.approx(grid, rel=0.03) and grid == pytest.approx(1.094, abs=1e-3)


def test_metric_shape_errors():
    with pytest.raises(ValueError, match=r"samples must be \(N, S, H\[, C\]\)"):
        fj.metrics.crps(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="past has 1 series"):
        fj.metrics.mase(np.ones((2, 3, 4)), np.ones((2, 4)), [np.ones(5)])
    with pytest.raises(ValueError, match="non-finite"):
        fj.metrics.nd(np.full((1, 2, 3), np.nan), np.ones((1, 3)))


# ------------------------------------------------------------------------------- model


# Every test network shares one size and its data shapes, so JAX's compiled eager ops (the
# parameter initialisers) are reused across tests; the calls themselves are jitted.
_NET = dict(width=16, depth=2, freq_dim=16)
_X, _CTX = (4, 1), (8, 2)


@jax.jit
def _perturbed(params, key):
    # The zero-initialised read-outs make an untrained net predict 0, which hides the wiring.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        tree, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    )


@pytest.mark.parametrize("variant", ["tiny", "transformer_tiny"])
def test_sequence_model_shapes_and_context_conditioning(variant):
    model = fj.models.build_model(
        "sequence", variant, input_shape=_X, key=jax.random.key(0), context_shape=_CTX, **_NET
    )
    apply, params = fj.models.functional(model)
    f = jax.jit(lambda p, x, t, c: apply(p, x, t, context=c))
    x = jax.random.normal(jax.random.key(1), (4, *_X))
    ctx = jax.random.normal(jax.random.key(2), (4, *_CTX))
    t = jnp.linspace(0.0, 1.0, 4)
    noisy = _perturbed(params, jax.random.key(3))
    # One call: the context, example 1's context negated, and the all-NaN (null) context.
    contexts = jnp.concatenate([ctx, ctx.at[1].multiply(-1.0), jnp.full_like(ctx, jnp.nan)])
    out = np.asarray(f(noisy, jnp.tile(x, (3, 1, 1)), jnp.tile(t, 3), contexts))
    assert out.shape == (12, *_X) and out.dtype == np.float32
    same, other, nan_null = out[:4], out[4:8], out[8:]
    np.testing.assert_allclose(other[[0, 2, 3]], same[[0, 2, 3]], atol=1e-5)  # per example
    assert np.abs(other[1] - same[1]).max() > 1e-3
    assert np.abs(nan_null - same).max() > 1e-3
    # Null context: None for the batch equals a NaN row per example.
    null = jax.jit(lambda p, x, t: apply(p, x, t))(noisy, x, t)
    np.testing.assert_allclose(null, nan_null, atol=1e-5)
    assert not np.any(f(params, jnp.tile(x, (3, 1, 1)), jnp.tile(t, 3), contexts))  # zero init
    with pytest.raises(ValueError, match=r"context must have shape \(B, T, C'\)"):
        f(noisy, x, t, ctx[:, :5])
    with pytest.raises(ValueError, match=r"expects x of shape \(B, 4, 1\)"):
        f(noisy, x[:, :3], t, ctx)


def test_sequence_model_two_times_labels_and_no_context():
    model = SequenceNet(_X, num_classes=3, two_times=True, rngs=nnx.Rngs(0), **_NET)
    apply, params = fj.models.functional(model)
    f = jax.jit(lambda p, x, t, s, y: apply(p, x, t, s=s, y=y))
    x = jnp.ones((3, *_X))
    out = f(
        _perturbed(params, jax.random.key(4)),
        x,
        0.5,
        jnp.array([0.1, 0.2, 0.1]),
        jnp.array([0, 0, 1]),
    )
    assert out.shape == (3, *_X)
    assert np.abs(out[0] - out[1]).max() > 1e-4 and np.abs(out[0] - out[2]).max() > 1e-4
    with pytest.raises(ValueError, match="got a context for a model without one"):
        jax.eval_shape(lambda: apply(params, x, 0.5, context=jnp.ones((3, *_CTX))))
    with pytest.raises(ValueError, match="unknown backbone"):
        SequenceNet(_X, backbone="lstm", rngs=nnx.Rngs(0))


def test_sequence_model_learns_from_its_context():
    # Regress x1 = 2 * (last context value of channel 0): trained on the true contexts, the
    # model predicts held-out examples; trained on shuffled contexts (negative control) it
    # can only memorise, and fails on them.
    ctx = jax.random.normal(jax.random.key(5), (512, *_CTX))
    target = jnp.repeat(2.0 * ctx[:, -1:, :1], _X[0], axis=1)
    model = SequenceNet(_X, context_shape=_CTX, rngs=nnx.Rngs(1), **_NET)
    apply, params0 = fj.models.functional(model)
    opt = optax.adam(1e-2)

    def loss(p, context, y):
        return jnp.mean((apply(p, jnp.zeros_like(y), 0.5, context=context) - y) ** 2)

    @jax.jit
    def fit_and_test(context):
        def step(carry, _):
            p, o = carry
            g = jax.grad(loss)(p, context[:256], target[:256])
            updates, o = opt.update(g, o, p)
            return (optax.apply_updates(p, updates), o), None

        (p, _), _ = jax.lax.scan(step, (params0, opt.init(params0)), None, length=300)
        return loss(p, ctx[256:], target[256:])

    var = float(jnp.mean(target[256:] ** 2))
    fitted = float(fit_and_test(ctx)) / var
    shuffled = float(fit_and_test(ctx[jax.random.permutation(jax.random.key(6), 512)])) / var
    assert fitted < 0.4 and shuffled > 0.9


# ------------------------------------------------------------------------------- study


def test_flowmap_warm_start_is_the_teachers_euler_step():
    # The warm-started two-time student is X(x, s, t) = x + (t - s) v(x, s), the teacher's
    # Euler step from s: the teacher's weights, its time embedding on s and the t-embedding's
    # last layer zeroed (without it, t leaks in).
    from flowjax.studies import forecast

    teacher = SequenceNet(_X, context_shape=_CTX, rngs=nnx.Rngs(0), **_NET)
    student = SequenceNet(_X, context_shape=_CTX, two_times=True, rngs=nnx.Rngs(1), **_NET)
    apply_t, p_t = fj.models.functional(teacher)
    apply_s, p_s = fj.models.functional(student)
    p_t = _perturbed(p_t, jax.random.key(7))
    p_s = _perturbed(p_s, jax.random.key(8))
    stacked = jax.tree.map(lambda x: x[None], p_s)  # one seed
    warm = jax.tree.map(lambda x: x[0], forecast._warm_start(p_t, stacked))
    x = jax.random.normal(jax.random.key(9), (3, *_X))
    ctx = jax.random.normal(jax.random.key(10), (3, *_CTX))
    t, s = jnp.array([0.5, 0.9, 1.0]), jnp.array([0.0, 0.3, 0.5])
    X = fj.flowmaps.as_callable(apply_s, warm, context=ctx)
    v = apply_t(p_t, x, s, context=ctx)
    euler = x + (t - s)[:, None, None] * v
    np.testing.assert_allclose(X(x, s, t), euler, atol=1e-5)
    leaky = dict(warm, cond=dict(warm["cond"], t_embed=p_s["cond"]["t_embed"]))
    X_leaky = fj.flowmaps.as_callable(apply_s, leaky, context=ctx)
    assert np.abs(X_leaky(x, s, t) - euler).max() > 1e-3


def test_dataset_overrides_change_only_their_dataset():
    from configs import forecast_default
    from flowjax.studies import forecast

    c = forecast_default.get_config()
    c.overrides.m1_yearly = dict(train=dict(num_steps=300))
    el, m1 = forecast.dataset_config(c, "elnino"), forecast.dataset_config(c, "m1_yearly")

    def sizes(cfg):
        return cfg.train.num_steps, cfg.train.steps_per_dispatch, cfg.flowmap.num_steps

    assert sizes(el) == (400, 50, 400) and sizes(m1) == (300, 100, 400)
    assert el.train.batch_size == m1.train.batch_size == c.train.batch_size == 64
    assert c.train.num_steps == 1000  # the base config is left alone
    # A misspelt field is an error naming it, not a silent no-op (the shared merge).
    c.overrides.m1_yearly = dict(train=dict(num_stpes=300))
    with pytest.raises(ValueError, match=r"overrides.m1_yearly.train.num_stpes: unknown field"):
        forecast.dataset_config(c, "m1_yearly")
    c.overrides.m1_yearly = dict(train=dict(num_steps=300))
    c.overrides.m1_yearly_typo = dict(seed=1)
    with pytest.raises(ValueError, match=r"overrides: unknown dataset\(s\) \['m1_yearly_typo'\]"):
        forecast.run(c, "/nonexistent", log=lambda *a: None)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("aeon") is None, reason="aeon not installed")
def test_forecast_study_writes_schema_and_recomputable_npz(tmp_path):
    import json

    from configs import forecast_default
    from flowjax.studies import forecast

    c = forecast_default.get_config("smoke")
    c.arms, c.baselines, c.num_seeds = "fm", "naive", 1
    c.train.num_steps, c.train.steps_per_dispatch, c.eval.nfe = 10, 10, "1"
    c.eval.curve_nfe = 1  # the training curve reuses the NFE-1 Euler sampler (one compile)
    results = forecast.run(c, str(tmp_path), log=lambda *a: None)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    entry = on_disk["datasets"]["m1_yearly"]
    assert entry["num_seeds"] == 1 and (tmp_path / "report.md").exists()
    for v in entry["verdicts"]:
        assert set(v) == {"claim", "metric", "ratio", "ci_low", "ci_high", "verdict"}
    ds = fj.data.load_series("m1_yearly")
    pasts, _, names = ds.test_split()
    for arm, final in (
        ("fm", entry["arms"]["fm"]["final"]["crps"]["mean"]),
        ("naive", entry["baselines"]["naive"]["crps"]),
    ):
        npz = np.load(tmp_path / "m1_yearly" / f"forecasts_{arm}.npz")
        assert npz["samples"].shape[0] == 181 and npz["target"].shape == (181, 6)
        assert list(npz["series"]) == names
        again = fj.metrics.forecast_metrics(npz["samples"], npz["target"], pasts, season=1)
        assert again["crps"] == pytest.approx(final, rel=1e-9)
    assert results["datasets"]["m1_yearly"]["baselines"]["naive"]["nd"] == pytest.approx(
        0.2093, abs=1e-4
    )  # the seasonal-naive figure of the published M1 tables
    # Reproducible from the seeds, and the NFE-1 column reused from the training curve's last
    # point equals a fresh draw: a rerun whose curve uses 2 steps draws NFE 1 anew. The rerun
    # adds the flow-map arm (fm is trained first, so its numbers cannot change).
    c.eval.curve_nfe, c.arms, c.flowmap.num_steps = 2, "fm,diffusion_v,flowmap", 10
    again = forecast.run(c, str(tmp_path / "again"), log=lambda *a: None)
    arms2 = again["datasets"]["m1_yearly"]["arms"]
    fm, fm2 = entry["arms"]["fm"], arms2["fm"]
    assert fm2["final"]["crps"]["values"] == pytest.approx(fm["final"]["crps"]["values"], rel=1e-6)
    assert fm["curve"]["nfe"] == 1 and fm2["curve"]["nfe"] == 2
    fresh, reused = fm2["crps_vs_nfe"]["1"]["values"], fm["crps_vs_nfe"]["1"]["values"]
    assert fresh == pytest.approx(reused, rel=1e-6)
    # The flow map's teacher is fm seed 0 on the same noise; its forecasts recompute.
    fmap = arms2["flowmap_1"]
    assert fmap["teacher_crps"] == pytest.approx(fm["final"]["crps"]["values"][0], rel=1e-9)
    ratio = fmap["final"]["crps"]["values"][0] / fmap["teacher_crps"]
    assert fmap["teacher_ratio"]["ratio"] == pytest.approx(ratio, rel=1e-9)
    for arm, final in (("flowmap", fmap["final"]), ("diffusion_v", arms2["diffusion_v"]["final"])):
        npz = np.load(tmp_path / "again" / "m1_yearly" / f"forecasts_{arm}.npz")
        again_crps = fj.metrics.forecast_metrics(npz["samples"], npz["target"], pasts, season=1)
        assert again_crps["crps"] == pytest.approx(final["crps"]["mean"], rel=1e-9)
    assert arms2["diffusion_v"]["fixed_solver"] == "euler"  # an ODE velocity, like fm


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("aeon") is None, reason="aeon not installed")
def test_forecasting_notebook_beats_naive():
    import json
    import os
    from pathlib import Path

    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    root = Path(__file__).resolve().parent.parent
    nb = nbformat.read(root / "notebooks" / "forecasting.ipynb", as_version=4)
    with pytest.MonkeyPatch.context() as mp:
        paths = [str(root), os.environ.get("PYTHONPATH")]
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
        mp.setenv("JAX_PLATFORMS", "cpu")
        nbclient.NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(root)}}
        ).execute()
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outs if o.output_type == "stream")
    summary = json.loads(next(s for s in text.splitlines() if s.startswith("SUMMARY "))[8:])
    assert summary["naive"]["nd"] == pytest.approx(0.2093, abs=1e-4)
    # Trained, the forecaster beats the naive forecast (the untrained, zero-output field
    # leaves the N(0, I) draws in place: crps ~ 0.6).
    assert summary["fm"]["crps"] < summary["naive"]["crps"]
