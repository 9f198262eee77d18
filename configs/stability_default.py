r"""The embedded default of `python -m experiments.stability`: does diffusion train more
smoothly than flow matching? A learning-rate x batch-size sweep on the analytic mixture, CPU.

Arms `fm` (CondOT, velocity) and `ddpm` (VP, eps, unweighted) with the same MLP and AdamW
(warmup + cosine, grad clip 1, as configs/compare_default.py); 5 rates log-spaced over 100x
(3e-4 ... 3e-2) x batch sizes 64 and 256 x 6 seeds per arm, on the 4-mode mixture of
flowjax.studies.scaling in d = 8 (exact KL through the likelihood). Reported: fractions of
runs that diverge or stall, spread of final KL across seeds and rates, step-to-step noise of
the loss and gradient norm, and the regression target's irreducible noise, fm / ddpm with 95%
intervals and verdicts.

  python -m experiments.stability --workdir=/tmp/stab
  python -m experiments.stability --config=configs/stability_default.py:smoke --workdir=/tmp/stab_s

Variants: `smoke` (seconds: d = 2, two rates of which one diverges, one batch size, two seeds,
tiny network); `cosine` adds the cosine-path v-prediction arm. Timing and result: the README's
"What we measured" (generated from results.json by experiments/readme.py).
"""

import ml_collections

from configs import compare_default


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_seeds = 6
    c.dim = 8
    c.mixture_seed = 0
    c.separation = 6.0
    c.arms = "fm,ddpm"
    c.arm = "fm"  # ratios are arm / baseline; the claim is that the baseline is smoother
    c.baseline = "ddpm"
    c.lrs = (3e-4, 9.5e-4, 3e-3, 9.5e-3, 3e-2)  # log-spaced, 100x
    c.batch_sizes = (64, 256)
    c.width = 64
    c.depth = 3
    c.freq_dim = 16
    c.num_steps = 1500
    c.steps_per_dispatch = 50
    c.ema_decay = 0.99
    c.optim = compare_default.base_config().optim  # AdamW, warmup + cosine, grad clip 1
    c.optim.warmup_steps = 50
    c.eval_samples = 512
    c.eval_seed = 1234
    c.exact_max_dim = 8
    c.num_probes = 1
    c.likelihood_tol = 1e-3
    c.nfe_tol = 1e-3
    c.t_eps = 1e-3
    # Run classification (flowjax.studies.stability.classify_run).
    c.max_skipped_frac = 0.01
    c.blowup_factor = 3.0
    c.stall_fraction = 0.5
    c.kl_cap = 3.0  # a diverged run counts as 3 x KL(data || N(0, I)) in the spreads
    c.target_batches = 20  # Monte Carlo batches of the regression-target noise
    c.target_batch_size = 4000
    c.curve_every = 10  # loss curves in results.json: every 10th step
    for variant in (arg or "").split(","):
        if variant == "smoke":
            c.dim, c.num_seeds, c.num_steps, c.steps_per_dispatch = 2, 2, 60, 20
            c.lrs, c.batch_sizes = (2e-3, 1e4), (32,)
            c.width, c.depth, c.eval_samples = 32, 2, 64
            c.optim.warmup_steps = 5
            c.target_batches, c.target_batch_size = 4, 256
        elif variant == "cosine":
            c.arms = "fm,ddpm,cosine_v"
        elif variant:
            raise ValueError(f"unknown variant {variant!r}; valid: smoke, cosine")
    return c
