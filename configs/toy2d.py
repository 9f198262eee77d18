r"""2D toy data (checkerboard, moons, 8gaussians, spirals, rings, pinwheel) with an MLP.

Flow matching or diffusion on the same network, data, optimizer and sampler:

  python -m experiments.main --config=configs/toy2d.py:fm --workdir=/tmp/toy2d_fm
  python -m experiments.main --config=configs/toy2d.py:ddpm --workdir=/tmp/toy2d_ddpm
  python -m experiments.main --config=configs/toy2d.py:fm,data=moons --workdir=/tmp/moons
  python -m experiments.main --config=configs/toy2d.py:fm,smoke --workdir=/tmp/toy2d_smoke

Expected (checkerboard, CPU, a few minutes): the energy distance of 2000 EMA samples
(Heun, 50 steps) to held-out data falls from ~0.6 at initialisation to ~0.005 (fm) after
10k steps; the picture under samples/ shows the 8 squares. Smoke: 20 steps, seconds.
"""

from configs import common, default


def get_config(arg=None):
    flags, opts = common.parse_arg(arg, data="checkerboard")
    config = default.get_config()
    config.data.name = opts["data"]
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
    config.train.num_steps = 10_000
    config.train.steps_per_dispatch = 50
    config.train.scan_unroll = 1  # MLPs run at full speed in a rolled loop everywhere
    config.train.log_every = 500
    config.train.checkpoint_every = 2_500
    config.eval.every = 2_500
    config.eval.at_start = True
    config.eval.num_samples = 2_000
    config.eval.solver = "heun"
    config.eval.num_steps = 50
    config.eval.metric = "energy"
    common.set_method(config, common.method_of(flags))
    if "smoke" in flags:
        common.set_smoke(config)
    return config
