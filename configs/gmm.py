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

from configs import common


def get_config(arg=None):
    flags, _ = common.parse_arg(arg)
    return common.points_config("gmm", num_steps=8_000, eval_every=2_000, flags=flags)
