r"""The flow-map experiment on scikit-learn's 8x8 digits, with classifier guidance.

A flow-matching U-Net teacher, then every flow-map method on the same two-time U-Net; quality
is the digits FD (Frechet distance in the shipped digits classifier's features) after 1, 2,
4, 8, 16 steps, against the teacher's dopri5 and Heun solves. Guidance steers the best map
towards one class: reward r(x1) = log p(class | x1) under the shipped classifier
(`fj.metrics.classifier_log_prob`), comparing at equal NFE the look-ahead through the flow
map with the one-step denoiser, best-of-N and SMC.

  python -m experiments.flowmaps --config=configs/flowmaps_digits.py --workdir=/tmp/fmx_digits
  python -m experiments.flowmaps --config=configs/flowmaps_digits.py:smoke --workdir=/tmp/fmd_s
  python -m experiments.flowmaps --config=configs/flowmaps_digits.py --workdir=/tmp/fmx_d3 \
      --config.suites.digits.label=3 --config.methods=lmd,lsd,meanflow

Variants: `smoke` (a tiny U-Net, two methods, 40 steps, one seed: it checks the pipeline,
its numbers mean nothing; measured 9 minutes on 2 shared CPU cores, nearly all of it compiling
the U-Net's forward-mode derivatives). The full run is sized for a GPU and has not been run
or timed yet; on a CPU reduce `train.num_steps` and the method list.
"""

import ml_collections

from configs import flowmaps_default


def get_config(arg=None):
    flags = {t.strip() for t in (arg or "").split(",") if t.strip()}
    unknown = flags - {"smoke"}
    if unknown:
        raise ValueError(f"unknown config variant(s) {sorted(unknown)}; valid: smoke")
    c = flowmaps_default.get_config()
    c.datasets = "digits"
    c.num_seeds = 3
    c.model.name = "unet"
    c.model.variant = "digits"
    # time_scale 10: the flow-map losses differentiate the network in its times (jvp).
    c.model.overrides = ml_collections.ConfigDict(dict(time_scale=10.0, dropout=0.0))
    c.optim.lr = 2e-4
    c.optim.warmup_steps = 500
    c.train.num_steps = 20_000
    c.train.batch_size = 128
    c.train.steps_per_dispatch = 500
    c.eval.batch_size = 500
    c.suites = ml_collections.ConfigDict(
        {
            "digits": {
                "num_steps": 0,  # 0: train.num_steps
                "eval_samples": 2000,  # digits FD against the 297 held-out test images
                "label": 3,  # the class guidance steers towards
                "teacher_steps": 20_000,
                "teacher_variant": "",
                "teacher_overrides": {},
                "teacher_batch_size": 0,
                "teacher_lr": 0.0,
            }
        }
    )
    c.guidance.scales = (0.1, 1.0)
    c.guidance.temperatures = (0.3, 1.0)
    c.guidance.num_samples = 256
    c.guidance.repeats = 2
    if "smoke" in flags:
        c.methods = "lmd,lsd"
        c.num_seeds = 1
        c.model.variant = "tiny"
        c.train.num_steps = 40
        c.train.batch_size = 32
        c.train.steps_per_dispatch = 20
        c.optim.warmup_steps = 5
        c.eval.nfe = (1, 2, 4)
        c.eval.batch_size = 200
        c.teacher_eval.heun_steps = 8
        c.teacher_eval.rtol = 1e-3
        c.teacher_eval.atol = 1e-3
        c.suites.digits.eval_samples = 200
        c.suites.digits.teacher_steps = 40
        c.guidance.num_samples = 32
        c.guidance.repeats = 1
        c.guidance.scales = (1.0,)
        c.guidance.temperatures = (1.0,)
    return c
