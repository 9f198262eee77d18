r"""The embedded default of `python -m experiments.reward`: reward fine-tuning (Adjoint
Matching, reward-weighted flow matching / flow-map training, DRaFT) against a reference trained
on p* and guidance at sampling time, on the 2D mixture (exact p*) and the checkerboard, CPU.

  python -m experiments.reward --workdir=/tmp/reward
  python -m experiments.reward --config=configs/reward_default.py:smoke --workdir=/tmp/reward_s

Variants: `smoke` (one task, two seeds, few steps). `digits` is not implemented yet (the
shipped `fj.pretrained` digits models landed too late for this round; the reward would be
`fj.reward.ClassLogProb` on the digits classifier). Results: see the README section.
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
    c.optim = default_config().optim
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 100
    c.finetune_optim = default_config().optim
    c.finetune_optim.lr = 5e-4
    c.finetune_optim.warmup_steps = 20
    for variant in (arg or "").split(","):
        if variant == "smoke":
            c.tasks, c.num_seeds, c.pretrain_steps, c.finetune_steps = "mixture", 2, 100, 50
            c.steps_per_dispatch, c.eval_samples, c.width = 50, 256, 32
            c.optim.warmup_steps, c.finetune_optim.warmup_steps = 10, 5
        elif variant == "digits":
            raise ValueError("variant 'digits': not implemented in this round (see docstring)")
        elif variant:
            raise ValueError(f"unknown variant {variant!r}; valid: smoke")
    return c
