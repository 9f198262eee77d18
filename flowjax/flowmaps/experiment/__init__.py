"""The flow-map experiment: teacher, every method, quality against NFE, and guidance.

    from configs import flowmaps_default
    from flowjax.flowmaps import experiment
    results = experiment.run(flowmaps_default.get_config(), "/tmp/fmx")

Command line: `python -m experiments.flowmaps [--config=configs/flowmaps_NAME.py] --workdir=DIR`.
Writes `DIR/report.md`, `DIR/results.json` and PNG plots (see `_harness.py`).
"""

from flowjax.flowmaps.experiment._guide import Approach as Approach
from flowjax.flowmaps.experiment._guide import approaches as approaches
from flowjax.flowmaps.experiment._harness import check_config as check_config
from flowjax.flowmaps.experiment._harness import lookahead_comparison as lookahead_comparison
from flowjax.flowmaps.experiment._harness import method_loss as method_loss
from flowjax.flowmaps.experiment._harness import run as run
from flowjax.flowmaps.experiment._methods import METHODS as METHODS
from flowjax.flowmaps.experiment._methods import Method as Method
from flowjax.flowmaps.experiment._methods import resolve_methods as resolve_methods
from flowjax.flowmaps.experiment._report import findings as findings
from flowjax.flowmaps.experiment._report import render as render
from flowjax.flowmaps.experiment._stats import format_ratio as format_ratio
from flowjax.flowmaps.experiment._stats import mean_ci as mean_ci
from flowjax.flowmaps.experiment._stats import teacher_ratios as teacher_ratios
from flowjax.flowmaps.experiment._suites import SUITES as SUITES
from flowjax.flowmaps.experiment._suites import BoxReward as BoxReward
from flowjax.flowmaps.experiment._suites import ClassifierReward as ClassifierReward

__all__ = [
    "METHODS",
    "SUITES",
    "Approach",
    "BoxReward",
    "ClassifierReward",
    "Method",
    "approaches",
    "check_config",
    "findings",
    "format_ratio",
    "lookahead_comparison",
    "mean_ci",
    "method_loss",
    "render",
    "resolve_methods",
    "run",
    "teacher_ratios",
]
