r"""CIFAR-10 (TFDS, 32x32x3) with the DDPM U-Net (35.7M parameters).

The recipe shared by the DDPM and torchcfm CIFAR-10 runs: batch 128, Adam lr 2e-4 after a
5k-step warmup then constant, gradient clipping at 1, dropout 0.1, EMA 0.9999. `:fm` is
conditional flow matching (CondOT, velocity, uniform t; as torchcfm's OT-free `fm` run),
`:ddpm` is DDPM's eps objective on the VP path at its 1000 discrete steps. Needs the
prepared TFDS dataset in `data.data_dir`; on several hosts add the multi-host flags of
`experiments/main.py`.

  python -m experiments.main --config=configs/cifar10.py:fm --workdir=/tmp/cifar_fm \
      --config.data.data_dir=$HOME/tensorflow_datasets
  python -m experiments.main --config=configs/cifar10.py:ddpm,smoke --workdir=/tmp/cifar_smoke \
      --config.data.data_dir=$HOME/tensorflow_datasets

Expected (8 accelerators, about a day for 400k steps): recognisable CIFAR-10 samples in
samples/; FID (computed separately with `fj.metrics.inception_features` on 50k samples)
in the low single digits published for this recipe (DDPM: 3.17, Ho et al. 2020, table 1).
The smoke variant (tiny U-Net, 20 steps) runs in well under a minute on a CPU.
"""

import ml_collections

from configs import common, default


def get_config(arg=None):
    flags, _ = common.parse_arg(arg)
    method = common.method_of(flags)
    config = default.get_config()
    config.data.name = "cifar10"
    config.data.batch_size = 128
    config.model.name = "unet"
    config.model.variant = "cifar10"
    config.model.dtype = "bfloat16"  # bf16 compute, float32 parameters
    config.optim.lr = 2e-4
    config.optim.schedule = "constant"
    config.optim.warmup_steps = 5_000
    config.optim.grad_clip = 1.0
    config.ema.decays = (0.9999,)
    config.train.num_steps = 400_000
    config.train.steps_per_dispatch = 10
    config.train.log_every = 1_000
    config.train.checkpoint_every = 10_000
    config.eval.every = 20_000
    config.eval.num_samples = 64
    config.eval.batch_size = 64
    config.eval.solver = "dopri5"
    config.eval.num_steps = 0  # adaptive
    config.eval.rtol = 1e-5
    config.eval.atol = 1e-5
    config.eval.metric = "none"
    common.set_method(config, method)
    if method == "ddpm":
        config.objective.time_dist = "discrete_ddpm"  # Ho et al. 2020: T = 1000 steps
    if "smoke" in flags:
        common.set_smoke(config, steps_per_dispatch=1)
        config.model.dtype = "float32"
        # One resolution, no attention: the smallest U-Net that runs on 32x32.
        config.model.overrides = ml_collections.ConfigDict(
            {"ch_mult": (1,), "attn_resolutions": ()}
        )
        config.eval.solver = "heun"
        config.eval.num_steps = 4
    return config
