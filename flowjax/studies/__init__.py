"""The shared experiment core: arms x seeds x evaluations -> one results schema -> report.

A *study* is a short module `flowjax/studies/<name>.py` with `run(config, workdir, *, log,
command) -> results`; `experiments/<name>.py` is its thin launcher and `configs/<name>_*.py`
its configs (the library core never imports this package, and this package never imports
`configs`: the launcher loads the config file and passes it in). What a study shares with
every other study is written once, here:

- statistics (`mean_ci`, `paired_log_ratio`, `paired_difference`, `ratio_to`,
  `steps_to_threshold`, `censored_log_ratio`, `verdict`), pure functions of recorded numbers;
- config checks (`names`, `check_positive`), per-dataset settings (`dataset_config`,
  `merge_config`), `eval_steps`, `machine_info`;
- models through `fj.models.build_model` (`build_network`), batches of several seeds from the
  trainer's pipeline (`BatchStream`), and training of every seed at once through the
  library's one train step (`SeedTrainer`, `fj.train.step.make_update` under `jax.vmap`);
- metrics through the library's one evaluator (`fj.metrics.make_evaluator`, the metric
  vocabulary of `fj.metrics.METRICS`);
- the results record (`Record`) and report helpers (`fmt`, `fmt_ci`, `table`,
  `verdict_table`, `plot_curves`, `plot_samples`).

The results schema (DESIGN.md; outside code reads it): `DIR/results.json` holds
`{"study", "command", "config", "seeds", "machine", "wall_seconds", "cpu_seconds",
"datasets": {name: {..., "verdicts": [{"claim", "metric", "ratio", "ci_low", "ci_high",
"verdict"}], "num_seeds": n}}}` with `verdict` one of "supported", "not supported",
"not significant"; `DIR/report.md` and PNG plots beside it.

A study, in full (arms trained on one dataset, compared by their final metric):

    import flowjax as fj
    from flowjax import objectives, paths, studies

    def run(config, workdir, *, log=print, command=None):
        seeds = [config.seed + i for i in range(config.num_seeds)]
        record = studies.Record("mystudy", config, seeds, command)
        for dataset in studies.names(config.datasets, "datasets"):
            net = studies.build_network("mlp", "tiny", (2,))
            stream = studies.BatchStream(dataset, seeds, config.batch_size,
                                         config.num_steps, config.steps_per_dispatch)
            evaluator = fj.metrics.make_evaluator(dataset)     # metrics by dataset / kind
            finals = {}
            for arm in studies.names(config.arms, "arms"):
                loss = objectives.make_objective(arm, model=net.apply_fn, path=paths.CondOT())
                trainer = studies.SeedTrainer(loss, net, config.optim, config.num_steps,
                                              ema_decay=0.999)
                state, losses = trainer.train(stream)          # every seed in one program
                scores = [evaluator(draw(net, studies.unstack(state.ema[0], s)))
                          for s in range(len(seeds))]          # draw: the study's sampler
                finals[arm] = {m: studies.mean_ci([x[m] for x in scores])
                               for m in evaluator.metrics}
            m = evaluator.primary
            ratio = studies.paired_log_ratio(finals["a"][m]["values"], finals["b"][m]["values"])
            record.add(dataset, {"finals": finals},
                       verdicts=[studies.verdict("b beats a", m, ratio)],
                       num_seeds=len(seeds))
        return record.finish(workdir, render=lambda r: "\\n".join(
            ["# My study", *studies.machine_lines(r),
             *studies.verdict_table(r["datasets"][dataset]["verdicts"])]))

`flowjax.studies.compare` (flow matching vs diffusion) and `flowjax.studies.flowmaps` (flow
maps against their teacher, and guidance) are the two studies written this way.
"""

from flowjax.studies._core import BatchStream as BatchStream
from flowjax.studies._core import Network as Network
from flowjax.studies._core import SeedTrainer as SeedTrainer
from flowjax.studies._core import build_network as build_network
from flowjax.studies._core import check_positive as check_positive
from flowjax.studies._core import dataset_config as dataset_config
from flowjax.studies._core import eval_steps as eval_steps
from flowjax.studies._core import machine_info as machine_info
from flowjax.studies._core import merge_config as merge_config
from flowjax.studies._core import names as names
from flowjax.studies._core import unstack as unstack
from flowjax.studies._fused import ArmTrainer as ArmTrainer
from flowjax.studies._report import Record as Record
from flowjax.studies._report import fmt as fmt
from flowjax.studies._report import fmt_ci as fmt_ci
from flowjax.studies._report import fmt_ratio as fmt_ratio
from flowjax.studies._report import machine_lines as machine_lines
from flowjax.studies._report import plot_curves as plot_curves
from flowjax.studies._report import plot_samples as plot_samples
from flowjax.studies._report import table as table
from flowjax.studies._report import verdict_table as verdict_table
from flowjax.studies._report import write_json as write_json
from flowjax.studies._stats import CONFIDENCE as CONFIDENCE
from flowjax.studies._stats import VERDICTS as VERDICTS
from flowjax.studies._stats import censored_log_ratio as censored_log_ratio
from flowjax.studies._stats import mean_ci as mean_ci
from flowjax.studies._stats import paired_difference as paired_difference
from flowjax.studies._stats import paired_log_ratio as paired_log_ratio
from flowjax.studies._stats import ratio_to as ratio_to
from flowjax.studies._stats import steps_to_threshold as steps_to_threshold
from flowjax.studies._stats import value_at_step as value_at_step
from flowjax.studies._stats import verdict as verdict

__all__ = [
    "CONFIDENCE",
    "VERDICTS",
    "ArmTrainer",
    "BatchStream",
    "Network",
    "Record",
    "SeedTrainer",
    "build_network",
    "censored_log_ratio",
    "check_positive",
    "eval_steps",
    "fmt",
    "fmt_ci",
    "fmt_ratio",
    "machine_info",
    "machine_lines",
    "mean_ci",
    "names",
    "paired_difference",
    "paired_log_ratio",
    "plot_curves",
    "plot_samples",
    "ratio_to",
    "steps_to_threshold",
    "table",
    "unstack",
    "value_at_step",
    "verdict",
    "verdict_table",
    "write_json",
]
