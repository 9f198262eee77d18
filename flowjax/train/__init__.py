"""Training: config validation, sharded train step, checkpoints and the train/eval loop.

    import flowjax as fj
    from configs import toy2d
    config = toy2d.get_config("fm")
    summary = fj.train.train_and_evaluate(config, "/tmp/fj_toy2d")

(`configs/` and `experiments/` are the application: run them from the repository root.)
Command line: `python -m experiments.main --config=configs/toy2d.py:fm --workdir=DIR`.
The config schema is `fj.train.config.default_config()`; `validate` checks a config without
touching any file, `build` turns its names into objects, `restore` is the inverse of saving.
"""

from flowjax.train.checkpoint import Checkpointer as Checkpointer
from flowjax.train.checkpoint import CheckpointError as CheckpointError
from flowjax.train.config import validate as validate
from flowjax.train.experiment import Experiment as Experiment
from flowjax.train.experiment import build as build
from flowjax.train.loop import NonFiniteError as NonFiniteError
from flowjax.train.loop import evaluate as evaluate
from flowjax.train.loop import make_data_iterator as make_data_iterator
from flowjax.train.loop import restore as restore
from flowjax.train.loop import sample as sample
from flowjax.train.loop import train_and_evaluate as train_and_evaluate
from flowjax.train.optim import make_optimizer as make_optimizer
from flowjax.train.optim import make_schedule as make_schedule
from flowjax.train.sharding import make_global_batch as make_global_batch
from flowjax.train.sharding import make_mesh as make_mesh
from flowjax.train.sharding import state_shardings as state_shardings
from flowjax.train.state import TrainState as TrainState
from flowjax.train.step import make_train_step as make_train_step
from flowjax.train.writers import read_metrics as read_metrics

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "Experiment",
    "NonFiniteError",
    "TrainState",
    "build",
    "evaluate",
    "make_data_iterator",
    "make_global_batch",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "read_metrics",
    "restore",
    "sample",
    "state_shardings",
    "train_and_evaluate",
    "validate",
]
