"""Shared pieces of the experiment configs: argument parsing, methods and the smoke variant.

A config argument is a comma-separated list of tokens, e.g. `configs/digits.py:ddpm,smoke`
or `configs/toy2d.py:fm,data=moons`: bare tokens are flags (a method name from `METHODS`,
or `smoke`), `key=value` tokens set named options of that config file.
"""

import ml_collections

from flowjax.train.config import default_config

# Objective presets: flow matching vs diffusion differ in path, prediction target, time
# distribution and weighting, each a registered name (see flowjax.train.config.NAME_FIELDS).
METHODS = {
    # Conditional flow matching (Lipman et al. 2023): CondOT path, velocity, uniform t.
    "fm": dict(name="flow_matching", path="condot", target="velocity", time_dist="uniform"),
    # DDPM (Ho et al. 2020) in continuous time: VP path, eps prediction, unweighted loss.
    "ddpm": dict(
        name="diffusion", path="vp", target="eps", time_dist="uniform", weighting="uniform"
    ),
}


def parse_arg(arg, **options):
    """(flags, options) from a config argument; `options` gives the valid keys and defaults.

    Raises:
      ValueError: an unknown option key, or more than one method.
    """
    flags, values = set(), dict(options)
    for token in filter(None, (t.strip() for t in (arg or "").split(","))):
        if "=" in token:
            key, value = token.split("=", 1)
            if key not in options:
                raise ValueError(f"unknown config option {key!r}; valid options: {sorted(options)}")
            values[key] = type(options[key])(value) if options[key] is not None else value
        else:
            flags.add(token)
    unknown = flags - set(METHODS) - {"smoke"}
    if unknown:
        raise ValueError(
            f"unknown config variant(s) {sorted(unknown)}; valid: {sorted(METHODS)} and 'smoke'"
        )
    methods = flags & set(METHODS)
    if len(methods) > 1:
        raise ValueError(f"choose one method, got {sorted(methods)}")
    return flags, values


def method_of(flags, default="fm"):
    methods = flags & set(METHODS)
    return methods.pop() if methods else default


def set_method(config: ml_collections.ConfigDict, method: str) -> None:
    """Applies an objective preset of `METHODS`."""
    for key, value in METHODS[method].items():
        config.objective[key] = value
    if method == "ddpm":
        # eps -> velocity divides by sigma'(t)-related terms that blow up at t = 1 on VP.
        config.eval.t_eps = 1e-3


def set_smoke(config: ml_collections.ConfigDict, *, steps_per_dispatch: int = 5) -> None:
    """Shrinks a config to a few steps of a tiny model (laptop / CI).

    Convolutional models should pass steps_per_dispatch=1: on CPU the K steps of a dispatch
    are unrolled (see `train.scan_unroll`), so K multiplies their compile time.
    """
    config.model.variant = "tiny"
    config.model.overrides = ml_collections.ConfigDict()
    config.data.batch_size = 32
    config.train.num_steps = 20
    config.train.steps_per_dispatch = steps_per_dispatch
    config.train.log_every = 10
    config.train.checkpoint_every = 10
    config.optim.warmup_steps = 2
    config.eval.every = 0
    config.eval.num_samples = 64
    config.eval.batch_size = 64
    config.eval.num_steps = 4
    config.eval.num_images = 16


def points_config(
    data: str, *, num_steps: int, eval_every: int, flags
) -> ml_collections.ConfigDict:
    """The 2D-point recipe shared by `toy2d` and `gmm`: the `mlp/base` network, AdamW at 1e-3,
    EMA 0.999, Heun samples scored by energy distance every `eval_every` steps."""
    config = default_config()
    config.data.name = data
    config.data.batch_size = 256
    config.model.name = "mlp"
    config.model.variant = "base"
    # t in [0, 1] enters the sinusoidal embedding unscaled: the DDPM-style 1000 t made the 2D
    # field oscillate in t and multiplied dopri5's NFE ~15x at the same training loss
    # (BENCHMARKS.md, finding 6). Smoke variants reset the overrides.
    config.model.overrides.time_scale = 1.0
    config.optim.lr = 1e-3
    config.optim.warmup_steps = 200
    config.ema.decays = (0.999,)
    config.train.num_steps = num_steps
    config.train.steps_per_dispatch = 50
    config.train.scan_unroll = 1  # MLPs run at full speed in a rolled loop everywhere
    config.train.log_every = 500
    config.train.checkpoint_every = eval_every
    config.eval.every = eval_every
    config.eval.at_start = True
    config.eval.num_samples = 2_000
    config.eval.solver = "heun"
    config.eval.num_steps = 50
    config.eval.metric = "energy"
    set_method(config, method_of(flags))
    if "smoke" in flags:
        set_smoke(config)
    return config
