"""The head-to-head experiment: does flow matching train faster than diffusion?

Trains several objectives (arms) with an identical network, optimizer, batch, steps, seeds
and data, evaluates them at log-spaced steps, measures steps and seconds to a quality
threshold, sweeps samplers over the number of function evaluations, and writes
`report.md`, `results.json` and plots.

    from configs import compare_default
    import flowjax.compare
    results = flowjax.compare.run(compare_default.get_config(), "/tmp/cmp")

Command line: `python -m experiments.compare [--config=configs/compare_NAME.py] --workdir=DIR`.
"""

from flowjax.compare._arms import FACTORS as FACTORS
from flowjax.compare._arms import ResolvedArm as ResolvedArm
from flowjax.compare._arms import arm_variants as arm_variants
from flowjax.compare._arms import estimate_sigma_data as estimate_sigma_data
from flowjax.compare._arms import resolve_arms as resolve_arms
from flowjax.compare._harness import analyse_dataset as analyse_dataset
from flowjax.compare._harness import eval_steps as eval_steps
from flowjax.compare._harness import run as run
from flowjax.compare._programs import ArmField as ArmField
from flowjax.compare._programs import SwitchPath as SwitchPath
from flowjax.compare._report import findings as findings
from flowjax.compare._report import render_report as render_report
from flowjax.compare._stats import mean_ci as mean_ci
from flowjax.compare._stats import paired_difference as paired_difference
from flowjax.compare._stats import paired_log_ratio as paired_log_ratio
from flowjax.compare._stats import steps_to_threshold as steps_to_threshold
from flowjax.compare._stats import value_at_step as value_at_step

__all__ = [
    "FACTORS",
    "ArmField",
    "ResolvedArm",
    "SwitchPath",
    "analyse_dataset",
    "arm_variants",
    "estimate_sigma_data",
    "eval_steps",
    "findings",
    "mean_ci",
    "paired_difference",
    "paired_log_ratio",
    "render_report",
    "resolve_arms",
    "run",
    "steps_to_threshold",
    "value_at_step",
]
