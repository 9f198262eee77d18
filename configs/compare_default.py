r"""The embedded default of `python -m experiments.compare`: flow matching vs diffusion in 2D.

Two arms, 8 seeds, the same MLP (3 x 128), optimizer, batch (256) and data for both arms, on the
analytic Gaussian mixture (`fj.data.gmm_params("gmm")`, 4,000 steps) and the 2D checkerboard
(12,000 steps, Fourier features of x: `config.base_by_dataset`), every arm x seed of a dataset
trained in one compiled program (`studies.ArmTrainer`):

  fm          flow matching: CondOT path, velocity target, uniform t (Lipman et al. 2023)
  ddpm        DDPM-style diffusion: VP path, eps target, plain eps MSE (Ho et al. 2020) [baseline]

and, by config (`--config.arms=fm,fm_ot,fm_lognorm,ddpm,cosine_v,edm`), the catalogue's others:
fm_ot (+ minibatch OT, Tong et al. 2024), fm_lognorm (+ logit-normal t, Esser et al. 2024),
cosine_v (cosine path, v-prediction; Salimans & Ho 2022), edm (Karras et al. 2022, with its
preconditioning).

  python -m experiments.compare --workdir=/tmp/cmp
  python -m experiments.compare --config=configs/compare_default.py:ablation --workdir=/tmp/abl
  python -m experiments.compare --workdir=/tmp/cmp --config.num_seeds=12 \
      --config.base_by_dataset.checkerboard.train.num_steps=24000 --config.datasets=checkerboard

Variants (comma-separated): `ablation` (start from `ablation.base` = ddpm and change one
factor at a time: path -> condot, target -> velocity, weighting -> min_snr, time -> logit-normal),
`smoke` (seconds: one dataset, two arms, tiny network, few steps).

Quality is the histogram KL (data || model) against the exact density, measured against its
data-vs-data floor at the evaluation size (2,000 samples): levels 32x ... 1.25x the floor;
report.md opens with the verdict table (steps, seconds and FLOPs to each level, final quality,
4-NFE quality at each arm's best sampler), computed from results.json.

Runtime (measured 2026-12-04 21:55-22:13 UTC, `/usr/bin/time -v python -m experiments.compare
--workdir=/work/runs/compare` under `nice -n 5`, jax 0.10.2, 2 CPU cores shared with other jobs
at load average 8-13): 580 CPU seconds (562 user + 18 sys), 17:09 of wall time on that loaded
machine. Less loaded (2026-12-04 22:53 UTC, load 1.4-4.6, `--workdir=/tmp/cmp_quiet`): 555 CPU
seconds (544 user + 11 sys), 7:53 wall; every step and quality number equal to the loaded run's.
Of it the checkerboard's fused
training is ~3x the mixture's (514 s vs 133 s of loaded wall time).

Expected result (that run, 8 seeds). Mixture (unchanged set-up, identical numbers to the
4,000-step default before): floor 0.232 [0.211, 0.254]; fm ends at 0.98x the floor and ddpm at
1.06x; fm reaches 1.25x the floor in 1.46x fewer steps than ddpm (95% CI [1.07, 1.99], width
1.86x; a lower bound: ddpm missed it in 1 of 8 seeds), 1.5x in 1.67x [1.34, 2.10] fewer; same
FLOPs per step; fm's final likelihood KL is 2.0x [1.6, 2.5] lower (0.041 vs 0.082 nats).
Checkerboard: floor 0.0347 [0.031, 0.038]; after 12,000 steps ddpm ends at 0.113 (3.3x the
floor) and fm at 0.136 (3.9x): ddpm's final hist_kl is 0.83x [0.79, 0.87] fm's. fm reaches 32x
the floor 1.87x [1.70, 2.06] sooner, but ddpm reaches 16x, 8x and 4x sooner (fm / ddpm speed-up
0.85x [0.73, 0.98], 0.66x [0.60, 0.73], 0.68x [0.61, 0.76]; fm missed 4x in 3 of 8 seeds).
Neither arm reaches 2x the floor in any seed: the 1.5x-floor target and the 1.25x headline are
NOT met on the checkerboard (best arm 3.3x the floor; the headline ratio is censored, n/a).
At 4 NFE ddpm at its best sampler (Euler) beats fm at its best on both datasets (ratio 0.46x,
0.65x).

Why the checkerboard misses (diagnosis, fm, seeds 0-1, 2 CPU cores): hist_kl here is close to
the mass the model puts outside the black cells (its exact KL against the data blurred by a
Gaussian of std s is 0.016 at s = 0.02, 0.08 at s = 0.1: 1.5x the floor needs < ~1.7% of the
mass outside the cells), and the samples leak 25% (3 x 128 plain MLP, 4,000 steps), 11% (fm,
Fourier features, 12,000 steps) and 8% (ddpm). Plain MLP: 0.43 at 4,000 steps, 0.37 at 8,000,
0.28 at 16,000; width 256, lr 1e-3 / 4e-3, batch 1024 change it by < 15%. Fourier features:
0.27 at 4,000 steps, 0.17 at 12,000 (fm at the 16-NFE sampler; 0.115 with dopri5 at tol 1e-5,
so the 16-NFE sampler was costing ~40% there: hence 32 NFE for the curves). ddpm with Fourier
features at 36,000 steps (2 seeds, 32 NFE): 0.070 = 2.0x the floor (0.060 with that sampler on
fresh noise); at its rate from 12,000 to 36,000 steps (hist_kl ~ steps^-0.44) 1.5x the floor
needs ~70,000 steps, ~6x this default's checkerboard training: ~25 minutes on 2 quiet cores.
"""

import ml_collections

from configs import default

# Variant catalogue: the objective fields of configs/default.py plus EDM preconditioning.
# sigma_data = 0: the data's standard deviation, estimated from the training data. A component
# name "" is the objective's default (independent coupling, uniform t, uniform weighting).
_OBJECTIVE_DEFAULTS = dict(
    name="diffusion",
    path="condot",
    path_kwargs={},
    target="velocity",
    coupling="",
    coupling_kwargs={},
    time_dist="",
    time_dist_kwargs={},
    weighting="",
    weighting_kwargs={},
)

VARIANTS = {
    "fm": dict(
        label="flow matching (CondOT, velocity, uniform t)",
        objective=dict(name="flow_matching", path="condot"),
    ),
    "fm_ot": dict(
        label="flow matching + minibatch OT coupling (Sinkhorn)",
        # Entropic OT at epsilon = 0.1 x the mean cost (Sinkhorn converges in < 200 iterations
        # here; epsilon = 0.01 needs ~1000 and makes an OT step ~15x dearer on CPU).
        objective=dict(
            name="flow_matching",
            path="condot",
            coupling="minibatch_ot",
            coupling_kwargs={"epsilon": 0.1, "num_iters": 200},
        ),
    ),
    "fm_lognorm": dict(
        label="flow matching + logit-normal t",
        objective=dict(name="flow_matching", path="condot", time_dist="logit_normal"),
    ),
    "ddpm": dict(
        label="DDPM-style diffusion (VP, eps, unweighted eps MSE)",
        objective=dict(name="diffusion", path="vp", target="eps", weighting="uniform"),
    ),
    "cosine_v": dict(
        label="cosine path, v-prediction",
        objective=dict(name="diffusion", path="cosine", target="velocity", weighting="uniform"),
    ),
    "edm": dict(
        label="EDM (EDM schedule, log-normal sigma, x1 target, EDM weighting + precond)",
        objective=dict(
            name="diffusion",
            path="edm",
            target="x1",
            weighting="edm",
            time_dist="edm_lognormal",
        ),
        precond="edm",
    ),
}


def variants() -> ml_collections.ConfigDict:
    """The catalogue as a ConfigDict (every variant has every field, so overrides type-check)."""
    out = ml_collections.ConfigDict()
    for name, spec in VARIANTS.items():
        v = ml_collections.ConfigDict()
        v.label = spec["label"]
        v.objective = ml_collections.ConfigDict({**_OBJECTIVE_DEFAULTS, **spec["objective"]})
        if v.objective.name == "flow_matching":
            v.objective.target = "velocity"  # flow matching regresses the velocity
        v.precond = spec.get("precond", "none")
        v.sigma_data = 0.0
        out[name] = v
    return out


def _parse(arg):
    flags = {t.strip() for t in (arg or "").split(",") if t.strip()}
    unknown = flags - {"ablation", "smoke"}
    if unknown:
        raise ValueError(f"unknown config variant(s) {sorted(unknown)}; valid: ablation, smoke")
    return flags


def base_config() -> ml_collections.ConfigDict:
    """The training config shared by every arm (configs/default.py fields)."""
    b = default.get_config()
    b.data.batch_size = 256
    b.model.name = "mlp"
    b.model.variant = "base"
    # 3 x 128 hidden layers with a small time embedding: enough for both 2D sets, and cheap.
    b.model.overrides = ml_collections.ConfigDict(dict(width=128, depth=3, emb_dim=32, freq_dim=16))
    b.optim.lr = 2e-3
    b.optim.warmup_steps = 100
    b.optim.schedule = "cosine"
    b.ema.decays = (0.999,)
    b.train.num_steps = 4000
    b.train.steps_per_dispatch = 100
    b.train.on_nonfinite = "skip"  # a rare non-finite step is skipped and counted, not fatal
    return b


def get_config(arg=None):
    flags = _parse(arg)
    c = ml_collections.ConfigDict()
    c.mode = "ablation" if "ablation" in flags else "compare"
    c.datasets = "gmm,checkerboard"  # comma-separated fj.data names
    c.num_seeds = 8
    c.seed = 0  # seeds are seed, seed + 1, ...
    c.arms = "fm,ddpm"  # compare mode: variants to train, in order (the others: by config)
    c.baseline = "ddpm"  # compare mode: the arm the others are measured against
    c.variants = variants()
    c.ablation = ml_collections.ConfigDict()
    c.ablation.base = "ddpm"
    c.ablation.factors = ml_collections.ConfigDict(
        dict(path="condot", target="velocity", weighting="min_snr", time_dist="logit_normal")
    )
    c.base = base_config()
    # Per-dataset changes to c.base, shared by every arm on that dataset. The checkerboard's
    # sharp cell edges are what a plain MLP on raw x learns slowest (spectral bias): Fourier
    # features of x (frequencies 1, 2, ..., 32 rad per unit) cut its histogram KL at 4,000
    # steps from 0.43 to 0.27 (fm, 2 seeds, same cost), and 12,000 steps to 0.17 (ddpm 0.14);
    # the mixture (smooth, meets its targets in 4,000 steps) keeps the plain network.
    c.base_by_dataset = ml_collections.ConfigDict(
        {
            "checkerboard": {
                "train": {"num_steps": 12_000},
                "model": {"overrides": {"fourier_features": 6, "fourier_scale": 1.0}},
            }
        }
    )
    c.data_cache_mb = 256.0  # keep a seed's batches in memory when they fit

    c.eval = ml_collections.ConfigDict()
    c.eval.num_evals = 10  # log-spaced evaluation steps during training (the level crossings)
    c.eval.num_samples = 2000  # per seed and evaluation; also the size of the floor's samples
    c.eval.batch_size = 2000  # samples per seed per sampling call (all seeds in one call)
    # The sampler of the training curves, "solver@grid" at exactly eval.nfe evaluations, on
    # each arm's own path and prediction; eval.arm_samplers overrides it per arm.
    c.eval.sampler = "dpm++2m"  # DPM-Solver++(2M), log-SNR grid: each arm's native prediction
    c.eval.nfe = 16
    c.eval.arm_samplers = ml_collections.ConfigDict()
    # Per dataset: the checkerboard's sharper models at 12,000 steps lose up to 25% of their
    # histogram KL to the 16-NFE sampler's error (fm 0.16 at 16 NFE, 0.13 at 32, 0.125 at 64,
    # 0.12 with dopri5 at tol 1e-5); at 32 NFE the curves measure the model, not the sampler.
    c.eval.by_dataset = ml_collections.ConfigDict({"checkerboard": {"nfe": 32}})
    # Models are evaluated at t clamped to [t_eps, 1 - t_eps] when turned into a velocity (eps
    # targets are singular at t = 0 on CondOT and velocity conversions at t = 1 on VP).
    c.eval.t_eps = 1e-3
    c.eval.seed = 1234
    c.eval.ema_index = 0  # -1: raw parameters

    c.metrics = ml_collections.ConfigDict()
    c.metrics.num_reference = 2000  # held-out samples
    c.metrics.hist_bins = 16  # histogram KL grid on [-4, 4]^2: 4 x 4 bins per checkerboard cell
    c.metrics.energy_samples = 1500
    c.metrics.w2_samples = 1000
    c.metrics.likelihood_samples = 250
    c.metrics.likelihood_tol = 1e-3
    c.metrics.likelihood_t_eps = 1e-3
    c.metrics.inception_path = ""  # FID weights, for image datasets other than digits
    # Per-dataset overrides of the fields above; hist_range gives a histogram box to a dataset
    # with an exact density but no box of its own (the mixture: 24 bins of 0.5 on [-6, 6]^2,
    # the checkerboard's bin width; its narrowest component has std 0.25).
    c.metrics.by_dataset = ml_collections.ConfigDict(
        {"gmm": {"hist_bins": 24, "hist_range": (-6.0, 6.0)}}
    )

    # Quality levels: multiples of the data-vs-data floor of the primary metric (two
    # independent data samples of eval.num_samples through the same metric, floor_reps times).
    c.levels = ml_collections.ConfigDict()
    # Coarse to fine. 32x and 16x: on the checkerboard the histogram KL's floor at 2,000
    # samples (0.035) is far below what a 3 x 128 MLP reaches in a CPU budget (~0.3 after
    # 4,000-6,000 steps), so only the coarse levels are reached there.
    c.levels.factors = (32.0, 16.0, 8.0, 4.0, 2.0, 1.5, 1.25)
    c.levels.floor_reps = 10
    c.levels.floor_seed = 100_000  # seeds of the floor's data samples (not a training seed)
    c.levels.interpolate = True  # interpolate each crossing in log(step)
    c.headline = "fm"  # the arm of report.md's opening verdict table (vs the baseline)
    c.measure_cost = True  # FLOPs, memory and seconds per step of each arm (ArmTrainer.cost)

    c.sweep = ml_collections.ConfigDict()
    c.sweep.enabled = True
    c.sweep.num_samples = 2000  # = eval.num_samples: the levels' floor holds for the sweep too
    c.sweep.euler_nfe = ()  # plain Euler / Heun on the uniform grid, dopri5, SDE: off by default
    c.sweep.heun_nfe = ()
    c.sweep.dopri5_tol = ()
    c.sweep.sde_nfe = ()
    c.sweep.sde_noise = 1.0  # 1: the reverse-time SDE of the noising process
    c.sweep.sde_t0 = 1e-3
    # fj.sampling specs ("solver@grid", issue 12) at an exact NFE each, for every arm through
    # its path (flow-matching arms too): DDIM / DPM-Solver++(2M) / UniPC on their log-SNR grid,
    # Euler / Heun on the EDM and log-SNR grids. The report adds each arm's best sampler per NFE.
    c.sweep.specs = ("euler", "heun@edm", "dpm++2m", "unipc")
    c.sweep.spec_nfe = (4, 16)
    # Noise range (sigma / alpha) of the EDM / log-SNR grids. Their defaults (0.002, 80) are
    # EDM's image setting; the 2D data here have std ~1-2, so sigma_max = 20 (~10x the data
    # std) spends no steps at useless noise levels while N(0, I) started at t(sigma_max) is off
    # the path's marginal by <= 5% in scale; sigma_min = 0.002 (~0.002x data std) as in EDM.
    c.sweep.grid_kwargs = ml_collections.ConfigDict({"sigma_min": 0.002, "sigma_max": 20.0})
    c.sweep.t_eps = 1e-3  # ODE solvers see eps / x1 models as velocities: clamp t as in eval

    if "smoke" in flags:
        c.datasets = "checkerboard"
        c.num_seeds = 2
        c.arms = "fm,ddpm"
        c.base.model.variant = "tiny"
        c.base.model.overrides = ml_collections.ConfigDict()
        c.base_by_dataset = ml_collections.ConfigDict()
        c.eval.by_dataset = ml_collections.ConfigDict()
        c.base.data.batch_size = 64
        c.base.train.num_steps = 40
        c.base.train.steps_per_dispatch = 10
        c.base.optim.warmup_steps = 5
        c.eval.num_evals = 3
        c.eval.num_samples = 500
        c.eval.batch_size = 500
        c.eval.nfe = 8
        c.levels.floor_reps = 3
        c.metrics.num_reference = 500
        c.metrics.energy_samples = 500
        c.metrics.w2_samples = 200
        c.metrics.likelihood_samples = 100
        c.sweep.num_samples = 300
        c.sweep.euler_nfe = (1, 4)
        c.sweep.heun_nfe = (4,)
        c.sweep.dopri5_tol = (1e-2,)
        c.sweep.sde_nfe = (8,)
        c.sweep.specs = ("heun@edm", "dpm++2m", "unipc")
        c.sweep.spec_nfe = (4,)
    return c
