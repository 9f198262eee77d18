r"""Flow-map training through the standard trainer: distil a trained run into X(x, s, t).

The student is a two-time network X(x, s, t) = x + (t - s) u(x, s, t) (`two_times=True`)
trained by `experiments/main.py` with the same sharded train step, EMA, checkpoints and
resumption as any other run. Distillation objectives read the teacher from
`config.objective.kwargs.teacher`: the workdir (or a `checkpoints/<step>` folder) of a run
trained by flowjax, loaded with `fj.flowmaps.teacher.load_teacher` (its EMA parameters, its
prediction kind converted to a velocity on its own path).

  # 1. a teacher (flow matching on the checkerboard)
  python -m experiments.main --config=configs/toy2d.py:fm --workdir=/tmp/toy2d_fm
  # 2. its flow map by Lagrangian map distillation
  python -m experiments.main --config=configs/flowmap_distill.py:lmd --workdir=/tmp/fm_lmd \
      --config.objective.kwargs.teacher=/tmp/toy2d_fm
  #    (or --config=configs/flowmap_distill.py:lmd,teacher=/tmp/toy2d_fm)
  # 3. sample it in 1 or 2 jumps
  python -c "import jax, flowjax as fj; from flowjax.flowmaps.teacher import load_flow_map;
  X = load_flow_map('/tmp/fm_lmd');
  print(fj.flowmaps.sample(X, jax.random.normal(jax.random.key(0), (8, 2)), num_steps=2))"

Variants (comma-separated): a method, one of lmd, emd, progressive, consistency_distill
(distillation: need the teacher) or shortcut, meanflow, lsd, consistency_training
(self-distillation: the teacher is not used); `smoke` (a few steps of a tiny network);
`teacher=DIR`; `data=NAME` (must be the teacher's data).

The trainer's periodic evaluation samples a network as a velocity field with one time, which
does not apply to a two-time student: evaluation is off (eval.every = -1); evaluate the
student with `load_flow_map` + `fj.flowmaps.sample` or with `python -m experiments.flowmaps`.
Expected: the smoke variant runs in seconds (tests/test_flowmaps_experiment.py trains it from
a toy2d smoke teacher, also with the teacher named by its workdir). The full-length run was not
timed here; for scale, `python -m experiments.flowmaps` measured LMD on the checkerboard with a
smaller MLP (128 x 3) after 3000 steps at batch 128: histogram KL 0.67 at 1 jump and 0.57 at 2
jumps, against 0.31 for its teacher at 128 NFE.
"""

import ml_collections

from configs import default

DISTILLATION = ("lmd", "emd", "progressive", "consistency_distill")
SELF_DISTILLATION = ("shortcut", "meanflow", "lsd", "consistency_training")

# Objective arguments per method besides model, path and teacher (see fj.flowmaps).
METHOD_KWARGS = {
    "lmd": {},
    "emd": {},
    "progressive": {"solver": "rk4", "solver_steps": 2},
    "consistency_distill": {"num_steps": 32, "solver": "heun"},
    "shortcut": {},
    "meanflow": {},
    "lsd": {},
    "consistency_training": {"num_steps": 32},
}


def _parse(arg):
    flags, options = set(), {"teacher": "", "data": "checkerboard"}
    for token in filter(None, (t.strip() for t in (arg or "").split(","))):
        if "=" in token:
            key, value = token.split("=", 1)
            if key not in options:
                raise ValueError(f"unknown config option {key!r}; valid options: {sorted(options)}")
            options[key] = value
        else:
            flags.add(token)
    unknown = flags - set(METHOD_KWARGS) - {"smoke"}
    if unknown:
        raise ValueError(
            f"unknown config variant(s) {sorted(unknown)}; valid: {list(METHOD_KWARGS)} and 'smoke'"
        )
    methods = flags & set(METHOD_KWARGS)
    if len(methods) > 1:
        raise ValueError(f"choose one method, got {sorted(methods)}")
    return (methods.pop() if methods else "lmd"), "smoke" in flags, options


def get_config(arg=None):
    method, smoke, options = _parse(arg)
    c = default.get_config()
    c.data.name = options["data"]
    c.data.batch_size = 256
    c.model.name = "mlp"
    c.model.variant = "base"
    # time_scale 10: the flow-map losses differentiate the network in its times.
    c.model.overrides = ml_collections.ConfigDict(dict(two_times=True, time_scale=10.0))
    c.objective.name = method
    c.objective.path = "condot"  # the teacher's own path is used for its velocity
    c.objective.kwargs = ml_collections.ConfigDict(dict(METHOD_KWARGS[method]))
    if method in DISTILLATION:
        # A string: the workdir or checkpoint of a trained flowjax run, bound to a velocity
        # field by fj.flowmaps.teacher.bind_teacher when the objective is built.
        c.objective.kwargs.teacher = options["teacher"]
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 200
    c.ema.decays = (0.999,)
    c.train.num_steps = 10_000
    c.train.steps_per_dispatch = 50
    # A rolled loop: MLPs run at full speed in it everywhere, and on CPU the unrolled default
    # multiplies the compile time of the flow-map losses' jvps (5 steps: 56 s against 10 s).
    c.train.scan_unroll = 1
    c.train.log_every = 500
    c.train.checkpoint_every = 2_500
    c.eval.every = -1  # the trainer's evaluator samples one-time velocity fields
    c.eval.at_start = False
    if smoke:
        c.model.variant = "tiny"
        c.data.batch_size = 32
        c.train.num_steps = 20
        c.train.steps_per_dispatch = 5
        c.train.log_every = 10
        c.train.checkpoint_every = 10
        c.optim.warmup_steps = 2
    return c
