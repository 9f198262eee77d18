"""Data for flowjax: 2D toys, Gaussian mixtures, digits, TFDS images and forecasting series
(`.tsf`, GluonTS folders, shipped M1 / statsmodels series; see `_timeseries`) through grain.

>>> it = fj.data.make_iterator("checkerboard", global_batch_size=256, seed=0)
>>> batch = next(it)  # {"x1": float32 (256, 2), "label": int32 (256,)}
>>> state = it.get_state()  # JSON-serialisable; it.set_state(state) resumes exactly
"""

from flowjax.data._gmm import CONTEXT_MIXTURES as CONTEXT_MIXTURES
from flowjax.data._gmm import GMM_PRESETS as GMM_PRESETS
from flowjax.data._gmm import ContextMixture as ContextMixture
from flowjax.data._gmm import MixtureParams as MixtureParams
from flowjax.data._gmm import gmm_params as gmm_params
from flowjax.data._gmm import sample_mixture as sample_mixture
from flowjax.data._manifold import manifold_distribution as manifold_distribution
from flowjax.data._manifold import manifold_of as manifold_of
from flowjax.data._pipeline import DataIterator as DataIterator
from flowjax.data._pipeline import make_iterator as make_iterator
from flowjax.data._pipeline import time_batches as time_batches
from flowjax.data._pipeline import validate_batch as validate_batch
from flowjax.data._registry import DATASETS as DATASETS
from flowjax.data._registry import DatasetSpec as DatasetSpec
from flowjax.data._registry import open_source as open_source
from flowjax.data._registry import reference_samples as reference_samples
from flowjax.data._registry import spec as spec
from flowjax.data._sources import ArraySource as ArraySource
from flowjax.data._sources import SyntheticSource as SyntheticSource
from flowjax.data._sources import TfdsSource as TfdsSource
from flowjax.data._sources import digits_arrays as digits_arrays
from flowjax.data._timeseries import BENCHMARKS as BENCHMARKS
from flowjax.data._timeseries import SERIES as SERIES
from flowjax.data._timeseries import SeriesDataset as SeriesDataset
from flowjax.data._timeseries import SeriesInfo as SeriesInfo
from flowjax.data._timeseries import SeriesWindows as SeriesWindows
from flowjax.data._timeseries import WindowSource as WindowSource
from flowjax.data._timeseries import load_series as load_series
from flowjax.data._timeseries import m1_yearly_path as m1_yearly_path
from flowjax.data._timeseries import read_gluonts as read_gluonts
from flowjax.data._timeseries import read_tsf as read_tsf
from flowjax.data._timeseries import seasonality as seasonality
from flowjax.data._timeseries import to_multivariate as to_multivariate
from flowjax.data._timeseries import write_gluonts as write_gluonts
from flowjax.data._timeseries import write_tsf as write_tsf
from flowjax.data._toys import TOYS as TOYS
from flowjax.data._toys import sample_toy as sample_toy

__all__ = [
    "CONTEXT_MIXTURES",
    "ContextMixture",
    "BENCHMARKS",
    "SERIES",
    "SeriesDataset",
    "SeriesInfo",
    "SeriesWindows",
    "WindowSource",
    "load_series",
    "m1_yearly_path",
    "read_gluonts",
    "read_tsf",
    "seasonality",
    "to_multivariate",
    "write_gluonts",
    "write_tsf",
    "DATASETS",
    "GMM_PRESETS",
    "TOYS",
    "ArraySource",
    "DataIterator",
    "DatasetSpec",
    "MixtureParams",
    "SyntheticSource",
    "TfdsSource",
    "digits_arrays",
    "gmm_params",
    "make_iterator",
    "open_source",
    "reference_samples",
    "sample_mixture",
    "sample_toy",
    "spec",
    "time_batches",
    "validate_batch",
]
