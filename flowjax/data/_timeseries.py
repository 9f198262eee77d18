"""Time series for probabilistic forecasting: loaders, shipped series, (context, horizon) windows.

Two on-disk formats the field publishes in, read without pandas:
  * Monash `.tsf` (Godahewa et al. 2021): `read_tsf(path)`;
  * GluonTS datasets (Alexandrov et al. 2020), a folder with `metadata.json`, `train/` and
    `test/` JSON lines (`start`, `target`, optional `feat_dynamic_real`): `read_gluonts(path)`.
The standard benchmarks (electricity, solar, traffic, exchange_rate, m4_hourly, uber_tlc,
kdd_cup, wiki2000) load from `data_dir/<GluonTS name>/` with their published metadata
(`BENCHMARKS`); nothing is downloaded. Series that ship inside packages need no data_dir:
M1 yearly (the `.tsf` in the `aeon` wheel; 181 series, horizon 6), statsmodels' co2
(weekly), elnino (monthly), sunspots (yearly) and macrodata (quarterly, 12 channels).

    ds = fj.data.load_series("m1_yearly")             # SeriesDataset: 181 series, horizon 6
    win = fj.data.SeriesWindows(ds, context_length=12, pad=True)
    it = fj.data.make_iterator("m1_yearly", global_batch_size=64, seed=0, context_length=12)
    batch = next(it)   # x1 (64, 6, 1), context (64, 12, 3), scale (64, 1), label = series index

Splits (GluonTS rolling evaluation): the last `num_test_windows * horizon` points of every
series are test targets; training windows end at or before the first of them, so no test
point ever enters a training window (neither as context nor as target). Test window k
forecasts the k-th block of `horizon` points from the context just before it (earlier test
blocks are revealed history then, as in GluonTS' rolling test sets).
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import json
import math
import os
from collections.abc import Sequence

import numpy as np
from jaxtyping import Float

# GluonTS' seasonality of a frequency (gluonts.time_feature.seasonality.DEFAULT_SEASONALITIES),
# used for MASE's in-sample seasonal-naive scale; yearly (and anything unlisted) is 1.
SEASONALITIES = {"S": 3600, "T": 1440, "min": 1440, "H": 24, "D": 1, "B": 5, "W": 1, "M": 12}
SEASONALITIES |= {"Q": 4, "Y": 1, "A": 1, "h": 24}

# Monash `@frequency` words -> pandas-style frequency strings (as GluonTS' TSF reader maps them).
_TSF_FREQ = {
    "seconds": "S",
    "minutely": "T",
    "minutes": "T",
    "hourly": "H",
    "hours": "H",
    "daily": "D",
    "days": "D",
    "weekly": "W",
    "weeks": "W",
    "monthly": "M",
    "months": "M",
    "quarterly": "Q",
    "quarters": "Q",
    "yearly": "Y",
    "years": "Y",
}


def seasonality(freq: str) -> int:
    """GluonTS' seasonality of a pandas-style frequency ("H" -> 24, "2H" -> 12, "Y" -> 1)."""
    digits = len(freq) - len(freq.lstrip("0123456789"))
    mult, base = int(freq[:digits] or 1), freq[digits:].split("-")[0]
    base = {"A": "Y", "YE": "Y", "ME": "M", "QE": "Q", "h": "H"}.get(base, base)
    season = SEASONALITIES.get(base, 1)
    return season // mult if season % mult == 0 else 1


@dataclasses.dataclass(frozen=True)
class SeriesDataset:
    """A set of series with one forecast horizon, checked at construction.

    Attributes:
      name: dataset name.
      values: one float64 array (T_i, C) per series (C channels; multivariate = C > 1).
      names: one name per series.
      freq: pandas-style frequency ("Y", "Q", "M", "W", "D", "B", "H", ...).
      horizon: forecast horizon H.
      num_test_windows: rolling test windows W; the last W * H points of each series are test.
      season: the seasonal lag of MASE's scale; default `seasonality(freq)`.
      starts: start timestamp of each series (strings), or None.
      dynamic_features: one float64 array (T_i, F) per series aligned with `values`, or None.
    """

    name: str
    values: tuple[np.ndarray, ...]
    names: tuple[str, ...]
    freq: str
    horizon: int
    num_test_windows: int = 1
    season: int | None = None
    starts: tuple[str, ...] | None = None
    dynamic_features: tuple[np.ndarray, ...] | None = None

    def __post_init__(self):
        values = tuple(_as_2d(np.asarray(v, np.float64)) for v in self.values)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if self.season is None:
            object.__setattr__(self, "season", seasonality(self.freq))
        for field in ("horizon", "num_test_windows", "season"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{self.name}: {field} must be a positive int; got {value!r}")
        if not values:
            raise ValueError(f"{self.name}: no series")
        if len(self.names) != len(values):
            raise ValueError(f"{self.name}: {len(values)} series but {len(self.names)} names")
        channels = {v.shape[1] for v in values}
        if len(channels) != 1:
            raise ValueError(f"{self.name}: series have different channel counts {channels}")
        test = self.horizon * self.num_test_windows
        for name, v in zip(self.names, values, strict=True):
            bad = np.argwhere(~np.isfinite(v))
            if len(bad):
                raise ValueError(
                    f"{self.name}: series {name!r} has a non-finite value {v[tuple(bad[0])]} at "
                    f"index {int(bad[0][0])}; fill or drop missing values before loading"
                )
            if len(v) <= test:
                raise ValueError(
                    f"{self.name}: series {name!r} has {len(v)} points, not more than the "
                    f"{self.num_test_windows} test window(s) x horizon {self.horizon} = {test}"
                )
        if self.dynamic_features is not None:
            feats = tuple(_as_2d(np.asarray(f, np.float64)) for f in self.dynamic_features)
            object.__setattr__(self, "dynamic_features", feats)
            for name, v, f in zip(self.names, values, feats, strict=True):
                if len(f) != len(v) or not np.isfinite(f).all():
                    raise ValueError(
                        f"{self.name}: series {name!r}: dynamic features must be finite and "
                        f"cover its {len(v)} points; got {len(f)}"
                    )

    @property
    def num_series(self) -> int:
        return len(self.values)

    @property
    def num_channels(self) -> int:
        return self.values[0].shape[1]

    def train_values(self, i: int) -> np.ndarray:
        """Series i without its test points (the only part training ever reads)."""
        return self.values[i][: len(self.values[i]) - self.horizon * self.num_test_windows]

    def holdout(self, min_train: int = 1) -> SeriesDataset:
        """The validation dataset: every series without its test points, so that its last
        `num_test_windows * horizon` training points are the test windows (the same protocol
        one block earlier; no test point is read). Series left with fewer than `min_train`
        points before those windows are dropped (compare `names` to see which); none left is
        a ValueError.
        """
        need = 2 * self.horizon * self.num_test_windows + max(int(min_train), 1)
        keep = [i for i, v in enumerate(self.values) if len(v) >= need]
        if not keep:
            raise ValueError(
                f"{self.name}: no series has the {need} points a validation split needs "
                f"(2 x {self.num_test_windows} test window(s) x horizon {self.horizon} + "
                f"{max(int(min_train), 1)} training points)"
            )
        feats = self.dynamic_features
        cut = [len(self.train_values(i)) for i in keep]
        return dataclasses.replace(
            self,
            values=tuple(self.train_values(i) for i in keep),
            names=tuple(self.names[i] for i in keep),
            starts=None if self.starts is None else tuple(self.starts[i] for i in keep),
            dynamic_features=(
                None
                if feats is None
                else tuple(feats[i][:c] for i, c in zip(keep, cut, strict=True))
            ),
        )

    def test_split(self) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
        """(pasts, targets, names) of every test window, series-major then window order.

        pasts[j] is everything before window j's forecast start (T_j, C), the in-sample data of
        MASE; targets is (num_series * W, H, C) on the original scale.
        """
        pasts, targets, names = [], [], []
        for name, v in zip(self.names, self.values, strict=True):
            for k in range(self.num_test_windows):
                end = len(v) - (self.num_test_windows - 1 - k) * self.horizon
                pasts.append(v[: end - self.horizon])
                targets.append(v[end - self.horizon : end])
                names.append(name if self.num_test_windows == 1 else f"{name}/{k}")
        return pasts, np.stack(targets), names


def _as_2d(v: np.ndarray) -> np.ndarray:
    if v.ndim == 1:
        return v[:, None]
    if v.ndim != 2:
        raise ValueError(f"a series must be (T,) or (T, C); got shape {v.shape}")
    return v


# --------------------------------------------------------------------------------------------
# Monash .tsf


def read_tsf(path: str | os.PathLike, *, name: str | None = None) -> SeriesDataset:
    """Reads a Monash `.tsf` file (the format of forecastingdata.org).

    Header lines `@relation`, `@attribute NAME TYPE`, `@frequency`, `@horizon`, `@missing`,
    `@equallength`, then `@data` and one line per series `attr1:...:attrK:v1,v2,...` with `?`
    for a missing value (which `SeriesDataset` then refuses: fill them first). The first
    string attribute names the series, a `date` attribute gives its start. `@horizon` is
    required (the Monash forecast horizon; the last `horizon` points are the test targets).
    """
    attributes, meta, rows = [], {}, []
    with open(path, encoding="latin-1") as f:
        in_data = False
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise ValueError(f"{path}:{lineno}: expected an @-tag before @data: {line!r}")
                tag, _, rest = line[1:].partition(" ")
                if tag == "attribute":
                    attributes.append(tuple(rest.split()))
                elif tag == "data":
                    in_data = True
                else:
                    meta[tag] = rest.strip()
                continue
            *attrs, target = line.split(":")
            if len(attrs) != len(attributes):
                raise ValueError(
                    f"{path}:{lineno}: {len(attrs)} attribute values for {len(attributes)} "
                    "@attribute lines"
                )
            values = np.array(
                [math.nan if s.strip() == "?" else float(s) for s in target.split(",")]
            )
            rows.append((dict(zip([a[0] for a in attributes], attrs, strict=True)), values))
    if not in_data:
        raise ValueError(f"{path}: no @data section")
    if "horizon" not in meta:
        raise ValueError(f"{path}: no @horizon line; give the forecast horizon in the file")
    freq_word = meta.get("frequency", "yearly")
    freq = _TSF_FREQ.get(freq_word.split("_")[-1])
    if freq is None:
        raise ValueError(f"{path}: unknown @frequency {freq_word!r}; valid: {sorted(_TSF_FREQ)}")
    if "_" in freq_word:  # e.g. "4_seconds", "half_hourly"
        mult = freq_word.split("_")[0]
        freq = {"half": "30T" if freq == "H" else freq}.get(mult, mult + freq)
    string_attrs = [a for a, kind in attributes if kind == "string"]
    date_attrs = [a for a, kind in attributes if kind == "date"]
    names = [r[string_attrs[0]] if string_attrs else f"T{i + 1}" for i, (r, _) in enumerate(rows)]
    starts = tuple(r[date_attrs[0]] for r, _ in rows) if date_attrs else None
    return SeriesDataset(
        name or meta.get("relation", os.path.basename(str(path))),
        tuple(v for _, v in rows),
        tuple(names),
        freq,
        int(meta["horizon"]),
        starts=starts,
    )


def write_tsf(path: str | os.PathLike, ds: SeriesDataset) -> None:
    """Writes a univariate `SeriesDataset` as a Monash `.tsf` file (`read_tsf` inverts it)."""
    if ds.num_channels != 1:
        raise ValueError(f"write_tsf: .tsf holds univariate series; got {ds.num_channels} channels")
    words = {v: k for k, v in reversed(list(_TSF_FREQ.items()))}
    lines = [f"@relation {ds.name}", "@attribute series_name string"]
    lines += ["@attribute start_timestamp date"] if ds.starts else []
    lines += [f"@frequency {words.get(ds.freq, 'yearly')}", f"@horizon {ds.horizon}"]
    lines += ["@missing false", "@equallength false", "@data"]
    for i, (name, v) in enumerate(zip(ds.names, ds.values, strict=True)):
        head = f"{name}:{ds.starts[i]}:" if ds.starts else f"{name}:"
        lines.append(head + ",".join(repr(float(x)) for x in v[:, 0]))
    with open(path, "w", encoding="latin-1") as f:
        f.write("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# GluonTS folders


def _read_json_lines(folder: str) -> list[dict]:
    files = sorted(
        f for f in os.listdir(folder) if f.endswith((".json", ".json.gz")) and f[0] not in "._"
    )
    if not files:
        raise ValueError(f"{folder}: no .json or .json.gz files")
    entries = []
    for f in files:
        opener = gzip.open if f.endswith(".gz") else open
        with opener(os.path.join(folder, f), "rt", encoding="utf-8") as fh:
            entries += [json.loads(line) for line in fh if line.strip()]
    return entries


def _target(entry: dict) -> np.ndarray:
    # Univariate targets are (T,); multivariate GluonTS targets are (C, T).
    v = np.asarray([math.nan if x in (None, "NaN", "nan") else x for x in entry["target"]], float)
    return v if v.ndim == 1 else v.T


def read_gluonts(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    freq: str | None = None,
    horizon: int | None = None,
    num_test_windows: int | None = None,
) -> SeriesDataset:
    """Reads a GluonTS dataset folder: `metadata.json` (or `metadata/metadata.json`), and JSON
    lines (optionally gzipped) in `train/` and `test/`, one entry per line with `start`,
    `target` and optionally `feat_dynamic_real` ((F, T) over the whole entry).

    The test split holds W rolling windows per train series, each entry the train series
    extended by k * horizon points (k = 1..W), in window-major order (as GluonTS writes them)
    or series-major; the result holds the longest one of each series, and `SeriesDataset`'s
    split reproduces the train and test entries exactly (checked here: a train entry that is
    not the prefix of its test entries is an error). freq / horizon default to the metadata
    (`freq`, `prediction_length`); num_test_windows defaults to what the files hold.
    """
    path = os.fspath(path)
    meta_file = next(
        (
            p
            for p in (f"{path}/metadata.json", f"{path}/metadata/metadata.json")
            if os.path.exists(p)
        ),
        None,
    )
    meta = {}
    if meta_file:
        with open(meta_file, encoding="utf-8") as f:
            meta = json.loads(f.readline())
    freq = freq or meta.get("freq")
    horizon = horizon or meta.get("prediction_length")
    if freq is None or horizon is None:
        raise ValueError(f"{path}: no metadata.json with freq and prediction_length; pass them")
    train = _read_json_lines(f"{path}/train")
    test = _read_json_lines(f"{path}/test")
    n = len(train)
    if len(test) % n:
        raise ValueError(f"{path}: {len(test)} test entries is not a multiple of {n} train series")
    windows = len(test) // n
    if num_test_windows is not None and num_test_windows != windows:
        raise ValueError(
            f"{path}: expected {num_test_windows} test windows; the files hold {windows}"
        )
    train_t = [_target(e) for e in train]

    def grouping(order):
        groups = [[] for _ in range(n)]
        for j, e in enumerate(test):
            i = j % n if order == "window-major" else j // windows
            v = _target(e)
            m = len(train_t[i])
            if e.get("start") != train[i].get("start") or not np.array_equal(
                v[:m], train_t[i], equal_nan=True
            ):
                return None
            groups[i].append((v, e))
        return groups

    groups = grouping("window-major") or grouping("series-major")
    if groups is None:
        raise ValueError(f"{path}: the test entries are not extensions of the train series")
    for i, g in enumerate(groups):
        lengths = sorted(len(v) for v, _ in g)
        expected = [len(train_t[i]) + k * horizon for k in range(1, windows + 1)]
        if lengths != expected:
            raise ValueError(
                f"{path}: series {i} test lengths {lengths} are not train length "
                f"{len(train_t[i])} + k * horizon {horizon} (k = 1..{windows})"
            )
    longest = [max(g, key=lambda ve: len(ve[0])) for g in groups]
    feats = None
    if all("feat_dynamic_real" in e for _, e in longest):
        feats = tuple(np.asarray(e["feat_dynamic_real"], float).T for _, e in longest)
    names = [str(e.get("item_id", i)) for i, e in enumerate(train)]
    return SeriesDataset(
        name or os.path.basename(path.rstrip("/")),
        tuple(v for v, _ in longest),
        tuple(names),
        freq,
        int(horizon),
        num_test_windows=windows,
        starts=tuple(str(e.get("start")) for e in train),
        dynamic_features=feats,
    )


def write_gluonts(path: str | os.PathLike, ds: SeriesDataset, *, gzip_files: bool = False) -> None:
    """Writes `ds` as a GluonTS dataset folder (`read_gluonts` inverts it)."""
    path = os.fspath(path)
    for sub in ("train", "test"):
        os.makedirs(f"{path}/{sub}", exist_ok=True)
    with open(f"{path}/metadata.json", "w", encoding="utf-8") as f:
        json.dump({"freq": ds.freq, "prediction_length": ds.horizon}, f)

    def entry(i, length):
        v = ds.values[i][:length]
        out = {"start": ds.starts[i] if ds.starts else "2000-01-01", "item_id": ds.names[i]}
        out["target"] = (v[:, 0] if ds.num_channels == 1 else v.T).tolist()
        if ds.dynamic_features is not None:
            out["feat_dynamic_real"] = ds.dynamic_features[i][:length].T.tolist()
        return out

    w, h = ds.num_test_windows, ds.horizon
    train = [entry(i, len(v) - w * h) for i, v in enumerate(ds.values)]
    test = [entry(i, len(v) - (w - 1 - k) * h) for k in range(w) for i, v in enumerate(ds.values)]
    for sub, entries in (("train", train), ("test", test)):
        name = f"{path}/{sub}/data.json" + (".gz" if gzip_files else "")
        opener = gzip.open if gzip_files else open
        with opener(name, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(e) + "\n" for e in entries)


# --------------------------------------------------------------------------------------------
# Registered datasets: benchmarks from a data_dir and series shipped inside packages.


@dataclasses.dataclass(frozen=True)
class SeriesInfo:
    """What a registered series dataset is.

    Attributes:
      freq, horizon, num_test_windows: the published evaluation protocol.
      num_series: series count (for checks and docs).
      channels: channels per series.
      context_length: the default context window (a multiple of the season where one helps).
      gluonts_name: the folder name under data_dir for a GluonTS benchmark, or None (shipped).
      description: one line on the source.
    """

    freq: str
    horizon: int
    num_test_windows: int
    num_series: int
    channels: int = 1
    context_length: int = 0
    gluonts_name: str | None = None
    description: str = ""


# The GluonTS benchmarks of TimeGrad / TSDiff / TSFlow with their published protocol (the
# *_nips sets of Salinas et al. 2019 have 7 or 5 rolling test windows).
BENCHMARKS: dict[str, SeriesInfo] = {
    "electricity": SeriesInfo(
        "H", 24, 7, 370, 1, 336, "electricity_nips", "hourly kW, 370 clients"
    ),
    "solar": SeriesInfo("H", 24, 7, 137, 1, 336, "solar_nips", "hourly solar power, 137 plants"),
    "traffic": SeriesInfo("H", 24, 7, 963, 1, 336, "traffic_nips", "hourly occupancy, 963 lanes"),
    "exchange_rate": SeriesInfo(
        "B", 30, 5, 8, 1, 360, "exchange_rate_nips", "daily exchange rates, 8 currencies"
    ),
    "m4_hourly": SeriesInfo("H", 48, 1, 414, 1, 336, "m4_hourly", "M4 competition, hourly"),
    "uber_tlc": SeriesInfo("H", 24, 1, 262, 1, 336, "uber_tlc_hourly", "Uber pickups, hourly"),
    "kdd_cup": SeriesInfo(
        "H", 48, 1, 270, 1, 336, "kdd_cup_2018_without_missing", "KDD Cup 2018 air quality"
    ),
    "wiki2000": SeriesInfo("D", 30, 5, 2000, 1, 360, "wiki2000_nips", "daily Wikipedia views"),
}

SHIPPED: dict[str, SeriesInfo] = {
    "m1_yearly": SeriesInfo(
        "Y", 6, 1, 181, 1, 12, None, "M1 competition yearly (Makridakis et al. 1982), aeon's .tsf"
    ),
    "co2": SeriesInfo(
        "W",
        52,
        4,
        1,
        1,
        208,
        None,
        "Mauna Loa CO2, weekly 1958-2001 (statsmodels), gaps linearly interpolated",
    ),
    "elnino": SeriesInfo(
        "M",
        12,
        5,
        1,
        1,
        48,
        None,
        "El Nino sea surface temperature, monthly 1950-2010 (statsmodels)",
    ),
    "sunspots": SeriesInfo(
        "Y", 11, 3, 1, 1, 44, None, "yearly sunspot numbers 1700-2008 (statsmodels)"
    ),
    "macrodata": SeriesInfo(
        "Q",
        8,
        3,
        1,
        12,
        32,
        None,
        "US macroeconomic data 1959-2009, 12 quarterly channels (statsmodels)",
    ),
}

SERIES: dict[str, SeriesInfo] = {**SHIPPED, **BENCHMARKS}


def _package_file(package: str, *parts: str) -> str:
    """A data file inside an installed package, found without importing the package."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ValueError(
            f"this dataset ships inside the {package!r} package, which is not installed; "
            f"pip install {package} (it is in flowjax-fm's `test` extra)"
        )
    path = os.path.join(found.submodule_search_locations[0], *parts)
    if not os.path.exists(path):
        raise ValueError(f"{package!r} is installed but has no {'/'.join(parts)}")
    return path


def m1_yearly_path() -> str:
    """Path of the M1 yearly `.tsf` file shipped in the `aeon` wheel (aeon need not import)."""
    return _package_file("aeon", "datasets", "data", "m1_yearly_dataset", "m1_yearly_dataset.tsf")


def _statsmodels_csv(name: str) -> tuple[list[str], np.ndarray]:
    path = _package_file("statsmodels", "datasets", name, f"{name}.csv")
    with open(path, encoding="utf-8") as f:
        header = [h.strip().strip('"') for h in f.readline().split(",")]
        rows = [[float(x) if x.strip() else math.nan for x in line.split(",")] for line in f]
    return header, np.asarray(rows)


def _interpolate_gaps(v: np.ndarray) -> np.ndarray:
    idx = np.arange(len(v))
    ok = np.isfinite(v)
    return np.interp(idx, idx[ok], v[ok])


def _load_shipped(name: str) -> SeriesDataset:
    info = SHIPPED[name]
    kw = dict(freq=info.freq, horizon=info.horizon, num_test_windows=info.num_test_windows)
    if name == "m1_yearly":
        return read_tsf(m1_yearly_path(), name=name)
    header, data = _statsmodels_csv(name)
    if name == "co2":  # 59 missing weeks in 2284: linear interpolation (documented above).
        values, start = _interpolate_gaps(data[:, 1]), "1958-03-29"
    elif name == "elnino":  # one row per year, one column per month
        values, start = data[:, 1:].reshape(-1), "1950-01"
    elif name == "sunspots":
        values, start = data[:, 1], "1700"
    else:  # macrodata: the 12 value columns after year and quarter
        values, start = data[:, 2:], "1959Q1"
        header = header[2:]
    return SeriesDataset(name, (values,), (name,), starts=(start,), **kw)


def load_series(name: str, *, data_dir: str | None = None) -> SeriesDataset:
    """A registered series dataset (`SERIES`): shipped ones need no data_dir; a GluonTS
    benchmark is read from `data_dir/<gluonts_name>/` (e.g. electricity_nips) and checked
    against its published protocol."""
    if name not in SERIES:
        raise ValueError(f"unknown series dataset {name!r}; valid: {sorted(SERIES)}")
    info = SERIES[name]
    if info.gluonts_name is None:
        ds = _load_shipped(name)
    else:
        if data_dir is None:
            raise ValueError(
                f"dataset {name!r} is read from data_dir/{info.gluonts_name}/ (GluonTS layout); "
                "give data_dir (these machines cannot download it)"
            )
        ds = read_gluonts(
            os.path.join(data_dir, info.gluonts_name),
            name=name,
            horizon=info.horizon,
            num_test_windows=info.num_test_windows,
        )
    if ds.num_series != info.num_series or ds.horizon != info.horizon:
        raise ValueError(
            f"dataset {name!r}: expected {info.num_series} series with horizon {info.horizon}; "
            f"the files hold {ds.num_series} with horizon {ds.horizon}"
        )
    return ds


def to_multivariate(ds: SeriesDataset, *, name: str | None = None) -> SeriesDataset:
    """Stacks equal-length univariate series as the channels of one series (as TimeGrad and
    CRPS-sum evaluate electricity, traffic, ...)."""
    lengths = {len(v) for v in ds.values}
    if ds.num_channels != 1 or len(lengths) != 1:
        raise ValueError(
            f"{ds.name}: to_multivariate needs univariate series of one length; got "
            f"{ds.num_channels} channel(s) and lengths {sorted(lengths)[:5]}"
        )
    return dataclasses.replace(
        ds,
        name=name or ds.name,
        values=(np.concatenate(ds.values, axis=1),),
        names=(ds.name,),
        starts=None if ds.starts is None else ds.starts[:1],
        dynamic_features=None,
    )


# --------------------------------------------------------------------------------------------
# Windows


FEATURES = ("observed", "log_scale", "phase")
LOCS = (None, "last", "drift")


class SeriesWindows:
    """(context, horizon) pairs of a `SeriesDataset` with per-window mean scaling.

    Training windows (split "train") end at or before each series' first test point; test
    windows (split "test") are the dataset's rolling test windows. Every window is scaled by
    its context's mean absolute value per channel (GluonTS' MeanScaler, as DeepAR
    (Salinas et al. 2020, sec. 3.3) and TSFlow (Kollovieh et al. 2025) do):
    scale_c = max(mean_t |context[t, c]|, min_scale), 1 where that mean is 0, the mean over
    observed points; padded training windows with fewer than `min_observed` of them are
    skipped (their scale is noise). Both context and target are divided by it; `unscale`
    maps forecasts back.

    Context channels: the C scaled values, then the chosen `features`:
      "observed": 1 on observed context points, 0 on left padding (always on with pad=True);
      "log_scale": log(scale_c), constant over time (DeepAR's scale feature);
      "phase": sin and cos of 2 pi (index mod season) / season (skipped when season == 1).
    Dynamic real features of the dataset follow as further channels (over the context).

    Args:
      ds: the dataset.
      context_length: T, the context window.
      pad: False: every series needs T + H training points (else ValueError naming the
        series). True: windows may start before a series does; the missing context is zeros
        (and "observed" 0), and a training window needs >= `min_past` observed context points.
      features: a subset of `FEATURES`.
      min_past: observed context points a padded window needs (>= 1); a series with fewer
        training points than min_past + H is an error.
      min_observed: training windows whose context holds fewer observed points than
        min(min_observed, T) are skipped (padding only; test windows are never skipped). A mean
        scale of 1-3 points is noise: a short series' first value alone divides its later
        values, and on M1 yearly 1-point contexts scale targets up to 2e4 (2-3 points: up to
        70; 4 or more: below 30, like full windows), outliers that dominate a squared loss.
        DeepAR / GluonTS avoid them the same way (a minimum of observed past per training
        instance). A series too short for any such window still trains nothing but is
        forecast at test. 1 keeps every padded window.
      min_scale: floor of the scale.
      loc: None (mean scaling alone, as DeepAR), "last": subtract each window's last
        observed context value before scaling, (z - z_last) / scale, so the model forecasts
        the departure from the naive forecast (whose MASE is 1 step ahead by construction),
        or "drift": the context as with "last", the target's location the random walk with
        drift through the window's first and last observed context values,
        z_last + k (z_last - z_first) / (n_observed - 1) at horizon step k = 1 .. H (0 slope
        for one observed point), so the model forecasts the departure from that classical
        benchmark (Hyndman & Athanasopoulos, "Forecasting: principles and practice", 5.2).
      holdout: True: the validation split. The windows are those of `ds.holdout(...)` (kept as
        `self.ds`): the test windows are the last `num_test_windows * horizon` training points
        of each series and training ends before them, so settings chosen on it never saw a
        test point. Series too short for a training window then are dropped (`self.dropped`).
    """

    def __init__(
        self,
        ds: SeriesDataset,
        context_length: int,
        *,
        pad: bool = False,
        features: Sequence[str] = ("log_scale",),
        min_past: int = 1,
        min_observed: int = 4,
        min_scale: float = 1e-10,
        loc: str | None = None,
        holdout: bool = False,
    ):
        if isinstance(context_length, bool) or not isinstance(context_length, (int, np.integer)):
            raise ValueError(f"context_length must be a positive int; got {context_length!r}")
        if context_length < 1 or min_past < 1 or min_observed < 1:
            raise ValueError(
                "context_length, min_past and min_observed must be >= 1; got "
                f"{context_length}, {min_past}, {min_observed}"
            )
        bad = sorted(set(features) - set(FEATURES))
        if bad:
            raise ValueError(f"unknown window feature(s) {bad}; valid: {list(FEATURES)}")
        self.context_length = int(context_length)
        self.pad = bool(pad)
        self.holdout = bool(holdout)
        self.dropped: tuple[str, ...] = ()
        if self.holdout:
            full = ds
            ds = ds.holdout(ds.horizon + (min_past if self.pad else self.context_length))
            self.dropped = tuple(n for n in full.names if n not in set(ds.names))
        self.ds = ds
        feats = [f for f in FEATURES if f in features or (f == "observed" and pad)]
        if ds.season == 1 and "phase" in feats:
            feats.remove("phase")
        self.features = tuple(feats)
        self.min_past = int(min_past)
        self.min_observed = int(min_observed)
        if loc not in LOCS:
            raise ValueError(f"loc must be one of {LOCS}; got {loc!r}")
        self.loc = loc
        self.min_scale = float(min_scale)
        t, h = self.context_length, ds.horizon
        first_end = h + (min_past if pad else t)  # smallest window end (exclusive index)
        # Smallest end of a kept window: enough observed context for a stable mean scale.
        first_kept = max(first_end, h + min(self.min_observed, t)) if pad else first_end
        ends = []
        for i in range(ds.num_series):
            n_train = len(ds.train_values(i))
            if n_train < first_end:
                need = (
                    f"{min_past} observed context + horizon {h}"
                    if pad
                    else f"context {t} + horizon {h}"
                )
                raise ValueError(
                    f"{ds.name}: series {ds.names[i]!r} has {n_train} training points, fewer "
                    f"than {need} = {first_end}"
                    + ("" if pad else "; use pad=True or a shorter context_length")
                )
            ends += [(i, e) for e in range(first_kept, n_train + 1)]
        self._train = np.asarray(ends, np.int64).reshape(-1, 2)
        w = ds.num_test_windows
        test = []
        for i, v in enumerate(ds.values):
            for k in range(w):
                e = len(v) - (w - 1 - k) * h
                if not pad and e - h < t:
                    raise ValueError(
                        f"{ds.name}: series {ds.names[i]!r} has {e - h} points before test "
                        f"window {k}, fewer than context_length {t}; use pad=True"
                    )
                test.append((i, e))
        self._test = np.asarray(test, np.int64)

    @property
    def context_shape(self) -> tuple[int, int]:
        """One example's context shape (T, C') for the model's `context_shape`."""
        c = self.ds.num_channels
        extra = {"observed": 1, "log_scale": c, "phase": 2}
        f = 0 if self.ds.dynamic_features is None else self.ds.dynamic_features[0].shape[1]
        return (self.context_length, c + sum(extra[k] for k in self.features) + f)

    @property
    def target_shape(self) -> tuple[int, int]:
        """One example's target shape (H, C)."""
        return (self.ds.horizon, self.ds.num_channels)

    def index(self, split: str) -> np.ndarray:
        """(n, 2) int64: (series, end) of each window, end exclusive."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test' for series data; got {split!r}")
        return self._train if split == "train" else self._test

    def num_windows(self, split: str) -> int:
        return len(self.index(split))

    def windows(self, split: str, indices=None) -> dict[str, np.ndarray]:
        """The windows `indices` (default all) of `split` as arrays:

        "x1" float32 (n, H, C) scaled target, "context" float32 (n, T, C') scaled context with
        features, "scale" float32 (n, C), "loc" float32 (n, H, C) the location per horizon step
        (zeros for loc=None), "label" int32 (n,) the series index.
        """
        idx = self.index(split)
        idx = idx if indices is None else idx[np.asarray(indices, np.int64)]
        t, h, c = self.context_length, self.ds.horizon, self.ds.num_channels
        ctx = np.zeros((len(idx), t, c))
        obs = np.zeros((len(idx), t))
        target = np.empty((len(idx), h, c))
        phase = np.zeros((len(idx), t))
        dyn = None if self.ds.dynamic_features is None else []
        for j, (i, e) in enumerate(idx):
            v = self.ds.values[i]
            lo = max(e - h - t, 0)
            n = e - h - lo
            ctx[j, t - n :] = v[lo : e - h]
            obs[j, t - n :] = 1.0
            target[j] = v[e - h : e]
            phase[j] = np.arange(e - h - t, e - h) % self.ds.season
            if dyn is not None:
                f = np.zeros((t, self.ds.dynamic_features[i].shape[1]))
                f[t - n :] = self.ds.dynamic_features[i][lo : e - h]
                dyn.append(f)
        count = obs.sum(1, keepdims=True)
        mean_abs = np.abs(ctx).sum(1) / np.maximum(count, 1.0)
        scale = np.where(mean_abs > 0, np.maximum(mean_abs, self.min_scale), 1.0)
        last = ctx[:, -1, :] if self.loc else np.zeros_like(scale)
        loc = np.broadcast_to(last[:, None, :], target.shape)
        if self.loc == "drift":
            first = ctx[np.arange(len(idx)), t - np.maximum(count[:, 0], 1).astype(np.int64)]
            slope = (last - first) / np.maximum(count - 1.0, 1.0)
            loc = last[:, None, :] + np.arange(1, h + 1)[None, :, None] * slope[:, None, :]
        chans = [(ctx - last[:, None, :]) * obs[..., None] / scale[:, None, :]]
        if "observed" in self.features:
            chans.append(obs[..., None])
        if "log_scale" in self.features:
            chans.append(np.broadcast_to(np.log(scale)[:, None, :], (len(idx), t, c)))
        if "phase" in self.features:
            angle = 2 * np.pi * phase / self.ds.season
            chans += [np.sin(angle)[..., None], np.cos(angle)[..., None]]
        if dyn is not None:
            chans.append(np.stack(dyn))
        return {
            "x1": ((target - loc) / scale[:, None, :]).astype(np.float32),
            "context": np.concatenate(chans, axis=-1).astype(np.float32),
            "scale": scale.astype(np.float32),
            "loc": loc.astype(np.float32),
            "label": idx[:, 0].astype(np.int32),
        }

    @staticmethod
    def unscale(
        samples: Float[np.ndarray, "n *sample h c"],
        scale: Float[np.ndarray, "n c"],
        loc: Float[np.ndarray, "n c"] | None = None,
    ) -> np.ndarray:
        """Scaled forecasts (n, [S,] H, C) back on the original scale: x * scale + loc, loc
        (n, C) or per horizon step (n, H, C) as `windows` gives it."""
        samples = np.asarray(samples, np.float64)
        shape = (len(scale), *([1] * (samples.ndim - 2)), np.shape(scale)[-1])
        out = samples * np.asarray(scale, np.float64).reshape(shape)
        if loc is None:
            return out
        loc = np.asarray(loc, np.float64)
        if loc.ndim == 3:  # (n, H, C): broadcast over the sample axes
            return out + loc.reshape(len(loc), *([1] * (samples.ndim - 3)), *loc.shape[1:])
        return out + loc.reshape(shape)


class WindowSource:
    """The pipeline's finite record source over one split of `SeriesWindows`.

    `read(indices)` returns (x1, label, extras) with extras {"context", "scale"}, so batches
    are {"x1", "label", "context", "scale"} and the pipeline shuffles and checkpoints them
    like any finite dataset.
    """

    def __init__(self, name: str, windows: SeriesWindows, split: str):
        self.name = name
        self.windows = windows
        self.split = split
        self.shape = windows.target_shape
        if windows.num_windows(split) == 0:
            raise ValueError(f"dataset {name!r}: no {split} windows")

    def __len__(self) -> int:
        return self.windows.num_windows(self.split)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        b = self.windows.windows(self.split, indices)
        return b["x1"], b["label"], {"context": b["context"], "scale": b["scale"], "loc": b["loc"]}


def open_series(
    name: str,
    split: str,
    seed: int,
    data_dir: str | None,
    *,
    context_length: int | None = None,
    pad: bool | None = None,
    features: Sequence[str] = ("log_scale",),
    min_observed: int = 4,
    loc: str | None = None,
    holdout: bool = False,
) -> WindowSource:
    """`DatasetSpec.make_source` of a registered series dataset (see `SeriesWindows`).

    context_length defaults to the dataset's `SeriesInfo.context_length`; pad defaults to
    True for M1 (its shortest series has 9 training points) and False otherwise.
    """
    del seed
    info = SERIES[name]
    windows = SeriesWindows(
        load_series(name, data_dir=data_dir),
        context_length or info.context_length,
        pad=(name == "m1_yearly") if pad is None else pad,
        features=features,
        min_observed=min_observed,
        loc=loc,
        holdout=holdout,
    )
    return WindowSource(name, windows, split)
