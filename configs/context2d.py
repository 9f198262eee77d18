r"""A context-conditioned 2D task: the mixture `context_gmm`, whose three components turn with
a continuous context c ~ U[-1, 1] (batches carry "context" of shape (1,)).

The MLP is conditioned on c by FiLM on its time embedding (`fj.models.ContextEmbedding`,
`context_shape` from the dataset's spec); 10% of the examples get the learned null context,
so one network is both p(x | c) and the marginal p(x), and `fj.sampling.cfg(...,
context=c, guidance=w)` guides it. The exact p(x | c) is
`fj.data.CONTEXT_MIXTURES["context_gmm"].oracle()`:

  python -m experiments.main --config=configs/context2d.py --workdir=/tmp/c2d
  python -m experiments.main --config=configs/context2d.py:smoke --workdir=/tmp/c2d_smoke

Expected: per-context exact KL(p(.|c) || model) (likelihood against the oracle) below 0.15
nats; tests/test_sources.py reaches 0.07-0.10 nats with a 64x3 MLP after 1,000 steps on CPU. Not
measured at this config's full size yet.
"""

from configs import common


def get_config(arg=None):
    flags, _ = common.parse_arg(arg)
    config = common.points_config("context_gmm", num_steps=8_000, eval_every=2_000, flags=flags)
    config.objective.context_dropout = 0.1
    return config
