"""Evaluation metrics: sample distances, likelihood, straightness, FID, digits FD, P/R.

Low-dimensional samples (host-side, float64): `wasserstein2`, `energy_distance`, `mmd2`,
`histogram_kl` (+ `checkerboard_density`), `nll` / `flow_nll`, `straightness`.
Images: `frechet_distance`, `fid_from_features`, `FeatureStats` (streaming), the FID
`InceptionV3` (`load_inception`, `inception_features`), the digits classifier
(`digits_classifier`, `digits_fd`, `classifier_log_prob`), and `precision_recall`.
"NFE at fixed tolerance" is `info["nfe"]` from `fj.sampling.sample_ode`.
Forecasts (GluonTS definitions): `crps` (mean_wQuantileLoss), `crps_energy`, `crps_sum`,
`nd`, `nrmse`, `mase`, `smape`, all at once by `forecast_metrics`.
One evaluator interface and metric vocabulary for the trainer and every study: `Evaluator`,
`make_evaluator`, `METRICS` (name -> metric), `DEFAULT_METRICS` (by dataset, then data kind).
"""

from flowjax.metrics._digits import DEFAULT_DIGITS_WEIGHTS as DEFAULT_DIGITS_WEIGHTS
from flowjax.metrics._digits import DigitsClassifier as DigitsClassifier
from flowjax.metrics._digits import classifier_log_prob as classifier_log_prob
from flowjax.metrics._digits import digits_classifier as digits_classifier
from flowjax.metrics._digits import digits_fd as digits_fd
from flowjax.metrics._digits import digits_features as digits_features
from flowjax.metrics._digits import load_digits_split as load_digits_split
from flowjax.metrics._digits import save_digits_classifier as save_digits_classifier
from flowjax.metrics._evaluate import DEFAULT_METRICS as DEFAULT_METRICS
from flowjax.metrics._evaluate import DESCRIPTIONS as DESCRIPTIONS
from flowjax.metrics._evaluate import METRICS as METRICS
from flowjax.metrics._evaluate import EvalOptions as EvalOptions
from flowjax.metrics._evaluate import Evaluator as Evaluator
from flowjax.metrics._evaluate import default_metrics as default_metrics
from flowjax.metrics._evaluate import make_evaluator as make_evaluator
from flowjax.metrics._forecast import QUANTILES as QUANTILES
from flowjax.metrics._forecast import crps as crps
from flowjax.metrics._forecast import crps_energy as crps_energy
from flowjax.metrics._forecast import crps_sum as crps_sum
from flowjax.metrics._forecast import forecast_metrics as forecast_metrics
from flowjax.metrics._forecast import mase as mase
from flowjax.metrics._forecast import nd as nd
from flowjax.metrics._forecast import nrmse as nrmse
from flowjax.metrics._forecast import quantile_losses as quantile_losses
from flowjax.metrics._forecast import sample_quantiles as sample_quantiles
from flowjax.metrics._forecast import seasonal_error as seasonal_error
from flowjax.metrics._forecast import smape as smape
from flowjax.metrics._frechet import FeatureStats as FeatureStats
from flowjax.metrics._frechet import fid_from_features as fid_from_features
from flowjax.metrics._frechet import fid_from_stats as fid_from_stats
from flowjax.metrics._frechet import frechet_distance as frechet_distance
from flowjax.metrics._inception import PT_INCEPTION_FILENAME as PT_INCEPTION_FILENAME
from flowjax.metrics._inception import PT_INCEPTION_SHA256_PREFIX as PT_INCEPTION_SHA256_PREFIX
from flowjax.metrics._inception import InceptionV3 as InceptionV3
from flowjax.metrics._inception import convert_inception_weights as convert_inception_weights
from flowjax.metrics._inception import inception_features as inception_features
from flowjax.metrics._inception import inception_from_state_dict as inception_from_state_dict
from flowjax.metrics._inception import load_inception as load_inception
from flowjax.metrics._inception import resize_bilinear as resize_bilinear
from flowjax.metrics._prdc import precision_recall as precision_recall
from flowjax.metrics._samples import checkerboard_density as checkerboard_density
from flowjax.metrics._samples import energy_distance as energy_distance
from flowjax.metrics._samples import flow_nll as flow_nll
from flowjax.metrics._samples import histogram_kl as histogram_kl
from flowjax.metrics._samples import median_bandwidth as median_bandwidth
from flowjax.metrics._samples import mmd2 as mmd2
from flowjax.metrics._samples import nll as nll
from flowjax.metrics._samples import straightness as straightness
from flowjax.metrics._samples import wasserstein2 as wasserstein2

__all__ = [
    "QUANTILES",
    "crps",
    "crps_energy",
    "crps_sum",
    "forecast_metrics",
    "mase",
    "nd",
    "nrmse",
    "quantile_losses",
    "sample_quantiles",
    "seasonal_error",
    "smape",
    "DEFAULT_DIGITS_WEIGHTS",
    "DEFAULT_METRICS",
    "DESCRIPTIONS",
    "METRICS",
    "EvalOptions",
    "Evaluator",
    "default_metrics",
    "make_evaluator",
    "DigitsClassifier",
    "FeatureStats",
    "InceptionV3",
    "PT_INCEPTION_FILENAME",
    "PT_INCEPTION_SHA256_PREFIX",
    "checkerboard_density",
    "classifier_log_prob",
    "convert_inception_weights",
    "digits_classifier",
    "digits_fd",
    "digits_features",
    "energy_distance",
    "fid_from_features",
    "fid_from_stats",
    "flow_nll",
    "frechet_distance",
    "histogram_kl",
    "inception_features",
    "inception_from_state_dict",
    "load_digits_split",
    "load_inception",
    "median_bandwidth",
    "mmd2",
    "nll",
    "precision_recall",
    "resize_bilinear",
    "save_digits_classifier",
    "straightness",
    "wasserstein2",
]
