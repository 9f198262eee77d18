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

from configs import common


def get_config(arg=None):
    flags, opts = common.parse_arg(arg, data="checkerboard")
    return common.points_config(opts["data"], num_steps=10_000, eval_every=2_500, flags=flags)
