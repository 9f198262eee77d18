r"""MNIST (TFDS, 28x28x1, 10 classes) with a small U-Net.

Needs the prepared TFDS dataset in `data.data_dir` (these machines have no internet; prepare
it elsewhere with `tfds build mnist --data_dir=DIR` and copy DIR):

  python -m experiments.main --config=configs/mnist.py:fm --workdir=/tmp/mnist_fm \
      --config.data.data_dir=$HOME/tensorflow_datasets
  python -m experiments.main --config=configs/mnist.py:ddpm,smoke --workdir=/tmp/mnist_smoke \
      --config.data.data_dir=$HOME/tensorflow_datasets

Expected (one GPU, ~30 min): legible, class-consistent samples in samples/ after 20k steps
and a training loss that has flattened. No FID (no MNIST feature network ships with flowjax).
"""

import ml_collections

from configs import common, default


def get_config(arg=None):
    flags, _ = common.parse_arg(arg)
    config = default.get_config()
    config.data.name = "mnist"
    config.data.batch_size = 128
    config.model.name = "unet"
    config.model.variant = "digits"  # 32 channels, (1, 2) multipliers: ample for 28x28
    config.model.overrides = ml_collections.ConfigDict({"attn_resolutions": (14,)})
    config.objective.label_dropout = 0.1
    config.optim.lr = 2e-4
    config.optim.warmup_steps = 1_000
    config.ema.decays = (0.9999,)
    config.train.num_steps = 20_000
    config.train.steps_per_dispatch = 10
    config.train.log_every = 500
    config.train.checkpoint_every = 5_000
    config.eval.every = 5_000
    config.eval.num_samples = 256
    config.eval.batch_size = 256
    config.eval.solver = "heun"
    config.eval.num_steps = 50
    config.eval.metric = "none"
    common.set_method(config, common.method_of(flags))
    if "smoke" in flags:
        common.set_smoke(config, steps_per_dispatch=1)
        # One resolution, no attention: the smallest U-Net that runs on 28x28.
        config.model.overrides = ml_collections.ConfigDict(
            {"ch_mult": (1,), "attn_resolutions": ()}
        )
    return config
