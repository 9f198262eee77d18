r"""scikit-learn handwritten digits (8x8x1, 10 classes, ships with sklearn) with the U-Net.

Class-conditional, with label dropout 0.1 so classifier-free guidance (eval.guidance) works.
Quality: the digits FD (Fréchet distance in the features of `fj.metrics.digits_classifier`).

  python -m experiments.main --config=configs/digits.py:fm --workdir=/tmp/digits_fm
  python -m experiments.main --config=configs/digits.py:ddpm --workdir=/tmp/digits_ddpm
  python -m experiments.main --config=configs/digits.py:ddpm,smoke --workdir=/tmp/digits_smoke

Expected (CPU, tens of minutes; a GPU, a minute): the digits FD of 297 EMA samples (Heun,
50 steps) against the 297 test digits falls by more than an order of magnitude from its
value at initialisation within 5k steps, and the grid under samples/ shows legible digits.
"""

from configs import common, default


def get_config(arg=None):
    flags, _ = common.parse_arg(arg)
    config = default.get_config()
    config.data.name = "digits"
    config.data.batch_size = 128
    config.model.name = "unet"
    config.model.variant = "digits"
    config.objective.label_dropout = 0.1
    config.optim.lr = 5e-4
    config.optim.warmup_steps = 200
    config.ema.decays = (0.999,)
    config.train.num_steps = 5_000
    # One step per dispatch: this is a CPU-sized problem, and on CPU the steps of a dispatch
    # are unrolled (XLA runs convolution gradients inside loops ~10x slower, jax#12868).
    config.train.steps_per_dispatch = 1
    config.train.log_every = 250
    config.train.checkpoint_every = 1_000
    config.eval.every = 1_000
    config.eval.at_start = True
    config.eval.num_samples = 297  # the size of the digits test split
    config.eval.batch_size = 297
    config.eval.solver = "heun"
    config.eval.num_steps = 50
    config.eval.metric = "digits_fd"
    common.set_method(config, common.method_of(flags))
    if "smoke" in flags:
        common.set_smoke(config, steps_per_dispatch=1)
    return config
