r"""Default config: the library's schema, `fj.train.config.default_config()`.

Experiment configs start from this one and override what they need; `validate` rejects a
config that misses one of its fields or adds an unknown one. On its own it trains flow
matching on the 2D checkerboard with a small MLP (same as `configs/toy2d.py:fm`):

  python -m experiments.main --config=configs/default.py --workdir=/tmp/fj_default

Names (data.name, model.name, objective.*, source.name, optim.name/schedule, eval.solver,
eval.metric) are keys of the registries listed in `flowjax.train.config.NAME_FIELDS`.
"""

from flowjax.train.config import default_config


def get_config(arg=None):
    del arg
    return default_config()
