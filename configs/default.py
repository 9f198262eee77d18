r"""Default config: every field flowjax's trainer reads, with its default value.

Experiment configs start from this one and override what they need; `validate` rejects a
config that misses one of these fields or adds an unknown one. On its own it trains flow
matching on the 2D checkerboard with a small MLP (same as `configs/toy2d.py:fm`):

  python -m experiments.main --config=configs/default.py --workdir=/tmp/fj_default

Names (data.name, model.name, objective.*, optim.name/schedule, eval.solver, eval.metric)
are keys of the registries listed in `flowjax.train.config.NAME_FIELDS`.
"""

import ml_collections


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "checkerboard"  # fj.data.DATASETS
    c.data.batch_size = 256  # global batch, over all devices and processes
    c.data.data_dir = ""  # TFDS data_dir ("" = TFDS default)
    c.data.kwargs = ml_collections.ConfigDict()  # dataset options (e.g. gmm means=)

    c.model = ml_collections.ConfigDict()
    c.model.name = "mlp"  # fj.models.REGISTRY
    c.model.variant = "base"
    c.model.dtype = "float32"  # compute dtype; parameters stay float32
    c.model.overrides = ml_collections.ConfigDict()  # constructor arguments (e.g. dropout)

    c.objective = ml_collections.ConfigDict()
    c.objective.name = "flow_matching"  # fj.objectives.OBJECTIVES
    c.objective.path = "condot"  # fj.paths.PATHS
    c.objective.path_kwargs = ml_collections.ConfigDict()
    c.objective.target = "velocity"  # what the network predicts: velocity, x1, eps, score
    c.objective.coupling = "independent"  # fj.couplings.COUPLINGS (flow matching)
    c.objective.coupling_kwargs = ml_collections.ConfigDict()
    c.objective.time_dist = "uniform"  # fj.objectives.TIME_DISTS
    c.objective.time_dist_kwargs = ml_collections.ConfigDict()
    c.objective.weighting = "uniform"  # fj.objectives.WEIGHTINGS (diffusion)
    c.objective.weighting_kwargs = ml_collections.ConfigDict()
    c.objective.label_dropout = 0.0  # classifier-free guidance training (class-conditional)
    c.objective.kwargs = ml_collections.ConfigDict()  # further objective arguments

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adamw"
    c.optim.lr = 1e-3
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.schedule = "cosine"  # or "constant" (both after a linear warmup)
    c.optim.warmup_steps = 100
    c.optim.min_lr_ratio = 0.0  # final lr / peak lr of the cosine
    c.optim.grad_clip = 1.0  # global-norm clipping; 0 disables
    c.optim.accum_steps = 1  # gradient accumulation micro-batches per step

    c.ema = ml_collections.ConfigDict()
    c.ema.decays = (0.999,)
    c.ema.warmup = True  # decay min(d, (1 + step) / (10 + step))

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 5000
    c.train.steps_per_dispatch = 10  # optimizer steps per jitted call (lax.scan)
    # lax.scan unroll factor; 0: auto (no loop on CPU, where convolution gradients run
    # ~10x slower inside loops, jax#12868; a rolled loop on GPU/TPU).
    c.train.scan_unroll = 0
    c.train.log_every = 100
    c.train.checkpoint_every = 1000  # 0: only at the end
    c.train.keep_checkpoints = 3
    c.train.on_nonfinite = "stop"  # or "skip"
    c.train.prefetch = 2  # dispatches of batches prepared ahead
    c.train.async_checkpoint = True

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all devices not used by fsdp
    c.mesh.fsdp = 1
    c.mesh.fsdp_min_size = 2**14  # arrays smaller than this stay replicated

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 1000  # 0: only at the end; -1: never
    c.eval.at_start = False  # also evaluate the untrained model (step 0)
    c.eval.num_samples = 2000
    c.eval.solver = "heun"  # fj.sampling.SOLVERS
    c.eval.num_steps = 50  # fixed steps; 0: adaptive steps at (rtol, atol)
    c.eval.rtol = 1e-4
    c.eval.atol = 1e-4
    c.eval.metric = "auto"  # auto: energy distance for points, digits_fd for digits
    c.eval.ema_index = 0  # which EMA to evaluate; -1: the raw parameters
    c.eval.guidance = 1.0  # classifier-free guidance scale (1: plain conditional)
    c.eval.batch_size = 1000  # samples per jitted sampling call
    c.eval.t_eps = 0.0  # clamp t to [t_eps, 1 - t_eps] when converting predictions
    c.eval.num_images = 64  # images in the saved sample grid
    c.eval.seed = 1234

    c.distributed = ml_collections.ConfigDict()
    c.distributed.initialize = False  # call jax.distributed.initialize in the launcher
    c.distributed.coordinator_address = ""  # "" = auto-detect (SLURM, TPU, ...)
    c.distributed.num_processes = 0  # 0 = auto-detect
    c.distributed.process_id = -1  # -1 = auto-detect
    return c
