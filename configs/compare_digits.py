r"""Flow matching vs diffusion on scikit-learn's 8x8 digits with the digits U-Net.

The shared training recipe is `configs/digits.py` (class-conditional U-Net "digits", label
dropout 0.1, AdamW 5e-4, EMA 0.999); the arms are those of `configs/compare_default.py`
without minibatch OT and logit-normal t. Quality: the digits FD (Fréchet distance in the
features of the shipped digits classifier) of EMA samples against the 297 held-out test
digits; its floor is the FD of fresh training digits (as many as the evaluation draws)
against the same 297, and the levels are multiples of it. Curves sample each arm with the
sampler that suits its prediction: Heun at 32 NFE for velocity models, DPM-Solver++(2M) on
the log-SNR grid for the eps model (ddpm: no eps -> velocity conversion near t = 0, the
blow-up the 200-step probe showed), Heun on the EDM grid for EDM; the sweep then gives each
arm its own best sampler per NFE, and the few-step verdict compares arms at their best.

  python -m experiments.compare --config=configs/compare_digits.py --workdir=/tmp/cmp_digits
  python -m experiments.compare --config=configs/compare_digits.py:ablation --workdir=/tmp/abl_d
  python -m experiments.compare --config=configs/compare_digits.py:cpu --workdir=/tmp/cmp_d_cpu

Variants: `cpu` (a U-Net of 16 channels with one block per level and no attention, batch 64,
1,500 steps, 4 seeds, fm vs ddpm, a short sweep; sized for 2 CPU cores, NOT measured in this
round: the shared machine was too loaded to run it within the session), `ablation`, `smoke`
(seconds, for tests).

Expected runtime: the full config (4 arms x 8 seeds x 3000 steps of the 32-channel U-Net) is a
GPU job: minutes on one GPU, many hours on 2 CPU cores (a CPU step of that network at batch
128 takes about a second). Expected result: the digits FD of every arm falls by more than an
order of magnitude from its first evaluation towards its floor; report.md gives the steps
each arm needs to reach each multiple of the floor and the speed-ups over DDPM with 95%
intervals.
"""

import ml_collections

from configs import compare_default, digits

_FLAGS = ("ablation", "smoke", "cpu")


def get_config(arg=None):
    flags = {t.strip() for t in (arg or "").split(",") if t.strip()}
    unknown = flags - set(_FLAGS)
    if unknown:
        raise ValueError(f"unknown config variant(s) {sorted(unknown)}; valid: {', '.join(_FLAGS)}")
    c = compare_default.get_config(",".join(sorted(flags & {"ablation"})))
    c.datasets = "digits"
    c.arms = "fm,ddpm,cosine_v,edm"
    b = digits.get_config("fm")
    b.objective.label_dropout = 0.1
    b.train.num_steps = 3000
    b.train.steps_per_dispatch = 25
    b.train.on_nonfinite = "skip"
    c.base = b
    c.eval.num_evals = 7
    c.eval.num_samples = 500
    c.eval.batch_size = 500
    # Curves: Heun at 32 NFE for velocity / data models; the eps model (ddpm) with
    # DPM-Solver++(2M) on its log-SNR grid, which never turns eps into a velocity, so the
    # eps -> velocity blow-up near t = 0 cannot decide the answer.
    c.eval.sampler = "heun"
    c.eval.nfe = 32
    c.eval.arm_samplers = ml_collections.ConfigDict({"ddpm": "dpm++2m", "edm": "heun@edm"})
    c.metrics.by_dataset = ml_collections.ConfigDict()
    c.metrics.num_reference = 297  # the whole test split
    c.sweep.num_samples = 500
    c.sweep.specs = ("euler", "heun", "heun@edm", "ddim", "dpm++2m", "unipc")
    c.sweep.spec_nfe = (4, 8, 16, 32)
    # Image-scale noise range for the EDM / log-SNR grids (the digits are scaled to [-1, 1]).
    c.sweep.grid_kwargs = ml_collections.ConfigDict({"sigma_min": 0.002, "sigma_max": 80.0})
    if "cpu" in flags:
        c.arms = "fm,ddpm"
        c.num_seeds = 4
        b.model.overrides = ml_collections.ConfigDict(
            dict(ch=16, num_res_blocks=1, attn_resolutions=(), num_groups=4, dropout=0.0)
        )
        b.data.batch_size = 64
        b.train.num_steps = 1500
        b.optim.lr = 1e-3
        b.optim.warmup_steps = 50
        c.eval.num_evals = 8
        c.eval.num_samples = 300
        c.eval.batch_size = 300
        c.sweep.num_samples = 300
        c.sweep.specs = ("heun", "dpm++2m", "unipc")
        c.sweep.spec_nfe = (8, 32)
    if "smoke" in flags:
        c.arms = "fm,ddpm"
        c.num_seeds = 2
        b.model.variant = "tiny"
        b.model.overrides = ml_collections.ConfigDict()
        b.data.batch_size = 32
        b.train.num_steps = 20
        b.train.steps_per_dispatch = 10
        b.optim.warmup_steps = 2
        c.eval.num_evals = 2
        c.eval.num_samples = 100
        c.eval.batch_size = 100
        c.eval.nfe = 4
        c.levels.floor_reps = 2
        c.sweep.num_samples = 100
        c.sweep.specs = ("euler", "dpm++2m")
        c.sweep.spec_nfe = (4,)
    return c
