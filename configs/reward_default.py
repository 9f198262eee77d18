r"""The embedded default of `python -m experiments.reward`: reward fine-tuning (Adjoint
Matching, reward-weighted flow matching / flow-map training, DRaFT) against a reference trained
on p* and guidance at sampling time, on the 2D mixture (exact p*) and the checkerboard, CPU.

  python -m experiments.reward --workdir=/tmp/reward
  python -m experiments.reward --config=configs/reward_default.py:smoke --workdir=/tmp/reward_s

Variants: `smoke` (one task, two seeds, few steps); `digits` (the digits task alone: the
shipped `fj.pretrained` 1-step map fine-tuned towards one class, reward
`fj.reward.ClassLogProb` under the shipped digits classifier, vs look-ahead guidance);
`digits,smoke` shrinks it. Results: see the README section.
"""

import ml_collections

from flowjax.train.config import default_config


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_seeds = 3
    c.tasks = "mixture,checkerboard"
    c.arms = "am,rw_fm,rw_map,draft,ref_fm,ref_map"
    c.width, c.depth = 64, 2
    c.batch_size = 256
    c.steps_per_dispatch = 50
    c.pretrain_steps = 1000
    c.finetune_steps = 200
    c.ema_decay = 0.99
    c.eval_samples = 512
    c.am_steps = 16  # Euler-Maruyama steps of each Adjoint Matching trajectory
    c.am_loss_times = 4
    c.am_t_min = 0.01
    c.proposal_steps = 8  # Heun steps of the velocity route's proposals
    c.draft_anchor = 0.5
    c.guide_steps, c.guide_scale, c.best_of = 1, 1.0, 2
    c.mixture = ml_collections.ConfigDict(dict(center=[2.0, 2.0], scale=1.0, strength=1.0))
    c.checkerboard = ml_collections.ConfigDict(
        dict(low=[0.0, 0.0], high=[4.0, 4.0], width=0.5, strength=1.0)
    )
    c.digits = ml_collections.ConfigDict(
        dict(
            label=3,
            # p* ~ p(x) p(label | x)^strength (strength 1: the class-conditional p(x | label))
            strength=2.0,
            draft_anchor=0.2,
            guide_scales="0.1,0.3,1.0",  # look-ahead guidance, one jump (2 NFE) at each
            batch_size=256,
            finetune_steps=1000,
            lr=2e-3,
            lsd_diagonal_fraction=0.25,  # rw_map: the share of LSD's diagonal term
            eval_samples=256,
            pool=8,  # p*_resampled: base samples resampled from a pool of pool x eval_samples
        )
    )
    c.optim = default_config().optim
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 100
    c.finetune_optim = default_config().optim
    c.finetune_optim.lr = 5e-4
    c.finetune_optim.warmup_steps = 20
    for variant in (arg or "").split(","):
        if variant == "smoke":
            c.tasks = "digits" if c.tasks == "digits" else "mixture"
            c.num_seeds, c.pretrain_steps, c.finetune_steps = 2, 100, 50
            c.steps_per_dispatch, c.eval_samples, c.width = 50, 256, 32
            c.optim.warmup_steps, c.finetune_optim.warmup_steps = 10, 5
            c.digits.finetune_steps, c.digits.eval_samples, c.digits.batch_size = 50, 128, 64
        elif variant == "digits":
            c.tasks = "digits"
        elif variant:
            raise ValueError(f"unknown variant {variant!r}; valid: smoke, digits")
    return c
