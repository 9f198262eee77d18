r"""The analytic 2D Gaussian mixture (`fj.data.gmm_params("gmm")`) with an MLP.

Its marginals, velocity and score are known in closed form (`fj.analytic.GaussianMixture`),
so a trained model can be checked against the exact field.

  python -m experiments.main --config=configs/gmm.py:fm --workdir=/tmp/gmm_fm
  python -m experiments.main --config=configs/gmm.py:ddpm --workdir=/tmp/gmm_ddpm
  python -m experiments.main --config=configs/gmm.py:ddpm,smoke --workdir=/tmp/gmm_smoke

Expected (CPU, a few minutes): energy distance of 2000 EMA samples to held-out mixture
samples from ~1 at initialisation to below 0.01 after 8k steps; W2 (eval.metric=w2) of
the same order as its sampling noise.
"""

from configs import common, default


def get_config(arg=None):
    flags, _ = common.parse_arg(arg)
    config = default.get_config()
    config.data.name = "gmm"
    config.data.batch_size = 256
    config.model.name = "mlp"
    config.model.variant = "base"
    # t in [0, 1] enters the sinusoidal embedding unscaled: the DDPM-style 1000 t made the 2D
    # field oscillate in t and multiplied dopri5's NFE ~15x at the same training loss
    # (BENCHMARKS.md, finding 1). Smoke variants reset the overrides.
    config.model.overrides.time_scale = 1.0
    config.optim.lr = 1e-3
    config.optim.warmup_steps = 200
    config.ema.decays = (0.999,)
    config.train.num_steps = 8_000
    config.train.steps_per_dispatch = 50
    config.train.scan_unroll = 1  # MLPs run at full speed in a rolled loop everywhere
    config.train.log_every = 500
    config.train.checkpoint_every = 2_000
    config.eval.every = 2_000
    config.eval.at_start = True
    config.eval.num_samples = 2_000
    config.eval.solver = "heun"
    config.eval.num_steps = 50
    config.eval.metric = "energy"
    common.set_method(config, common.method_of(flags))
    if "smoke" in flags:
        common.set_smoke(config)
    return config
