r"""The embedded default of `python -m experiments.scaling`: flow matching vs diffusion on the
analytic 4-mode mixture in d = 2, 8, 32, 128 (flowjax.studies.scaling), CPU.

Arms (same MLP, optimizer, batch, steps, seeds and data per d): `fm` (CondOT, velocity,
uniform t) and `ddpm` (VP, eps, unweighted eps MSE), the arms of configs/compare_default.py
with those names. Metrics: exact KL(data || model) through the likelihood ODE (exact
divergence up to d = 8, Hutchinson above), steps to reach f x KL(data || N(0, I)) and the NFE
of adaptive dopri5 at tol 1e-3; ratios fm/ddpm per d and their trend in d, 95% CIs over seeds.

  python -m experiments.scaling --workdir=/tmp/scal
  python -m experiments.scaling --config=configs/scaling_default.py:smoke --workdir=/tmp/scal_s
  python -m experiments.scaling --workdir=/tmp/scal --config.arms=fm,ddpm,cosine_v

Variants: `smoke` (seconds: d = 2, 4, two seeds, tiny network, few steps); `cosine` adds the
cosine-path v-prediction arm. Timing and result: see the README's "What we measured" section
(generated from results.json by experiments/readme.py).
"""

import ml_collections

from configs import compare_default


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_seeds = 5
    c.dims = (2, 8, 32, 128)
    c.mixture_seed = 0  # picks the random plane of the 4-mode square in R^d
    c.separation = 6.0  # closest two means, in component stds
    c.arms = "fm,ddpm"
    c.arm = "fm"  # the ratios are arm / baseline
    c.baseline = "ddpm"
    c.width = 128
    c.depth = 3
    c.freq_dim = 16
    c.num_steps = 1200
    c.steps_per_dispatch = 50
    c.batch_size = 256
    c.ema_decay = 0.99
    c.optim = compare_default.base_config().optim  # AdamW, warmup + cosine, grad clip 1
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 50
    c.num_evals = 6  # log-spaced evaluation steps
    c.levels = (0.5, 0.25, 0.1)  # KL <= f x KL(data || N(0, I))
    c.headline_level = 1
    c.eval_samples = 512  # held-out draws of the KL
    c.eval_seed = 1234
    c.exact_max_dim = 8  # exact divergence up to this d, Hutchinson (Rademacher) above
    c.num_probes = 1
    c.likelihood_tol = 1e-3
    c.t_eps = 1e-3  # every arm's field is evaluated at t clamped to [t_eps, 1 - t_eps]
    c.nfe_tol = 1e-3
    c.nfe_samples = 512
    for variant in (arg or "").split(","):
        if variant == "smoke":
            c.dims, c.num_seeds, c.num_steps, c.steps_per_dispatch = (2, 4), 2, 60, 20
            c.width, c.depth, c.batch_size, c.num_evals = 32, 2, 64, 3
            c.eval_samples, c.nfe_samples, c.exact_max_dim = 64, 64, 2
            c.optim.warmup_steps = 5
            c.levels = (0.9, 0.5)
            c.headline_level = 0
        elif variant == "cosine":
            c.arms = "fm,ddpm,cosine_v"
        elif variant:
            raise ValueError(f"unknown variant {variant!r}; valid: smoke, cosine")
    return c
