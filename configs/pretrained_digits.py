r"""The shipped digits models (`fj.pretrained`): teacher, flow maps, CFG map, DDPM baseline.

  python -m experiments.make_pretrained --config=configs/pretrained_digits.py
  python -m experiments.make_pretrained --config=configs/pretrained_digits.py \
      --config.models=digits_fm,digits_map          # only these (the later ones need digits_fm)
  python -m experiments.make_pretrained --config=configs/pretrained_digits.py:smoke \
      --config.out=/tmp/pre_smoke                   # a minute; its numbers mean nothing

All four are the same residual MLP on the 64 pixels (width 256, depth 4, embedding 128;
~0.4 M float32 parameters, < 2 MB a file), class-conditional with the null label 10:

* digits_fm: flow matching on CondOT, label dropout 0.1 (classifier-free guidance works);
* digits_map: a two-time flow map X(x, s, t) distilled from digits_fm's trajectories
  (Heun, `traj_steps` steps, states kept on a grid of `grid` intervals; regression of
  X(x_a, t_a, t_b) on x_b, plus u(x, t, t) on the teacher's velocity on the diagonal);
* digits_map_cfg: the same distillation of the guided field v_w = (1 - w) v(x, t) +
  w v(x, t | y) (MeanFlow's guided field, Geng et al. 2025 eq. (13), kappa = 0), from
  digits_map's weights: one evaluation gives a class-guided sample;
* digits_ddpm: eps prediction on the VP path (Ho et al. 2020 in continuous time).

Quality is the digits FD (`fj.metrics.digits_fd`) of `eval.num_samples` samples (labels the
test labels tiled) against the 297 test digits, with the data floor FD(train, test) beside it;
all of it lands in flowjax/pretrained/manifest.json. CPU: minutes per model (measured times in
the manifest's `training.seconds`).
"""

import ml_collections


def get_config(arg=None):
    flags = {t.strip() for t in (arg or "").split(",") if t.strip()}
    unknown = flags - {"smoke"}
    if unknown:
        raise ValueError(f"unknown config variant(s) {sorted(unknown)}; valid: smoke")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.out = ""  # "" : the package folder flowjax/pretrained
    c.models = "digits_fm,digits_map,digits_map_cfg,digits_ddpm"
    c.net = dict(
        name="mlp",
        variant="base",
        overrides=dict(width=256, depth=4, residual=True, emb_dim=128, time_scale=100.0),
    )
    c.train = dict(batch_size=256, lr=1e-3, warmup=500, ema=0.999, clip=1.0, chunk=500)
    c.fm = dict(num_steps=8_000, label_dropout=0.1)
    c.ddpm = dict(num_steps=8_000, label_dropout=0.1, t_eps=1e-3)
    c.map = dict(
        num_steps=6_000,
        num_traj=8_000,
        null_fraction=0.1,
        traj_steps=32,
        grid=16,
        diag_fraction=0.25,
        aligned_fraction=0.5,
        lr=5e-4,
    )
    c.map_cfg = dict(guidance=2.0, num_steps=4_000)
    c.eval = dict(
        num_samples=1485,  # the 297 test labels x 5
        heun_steps=(4, 8, 16, 32),
        map_steps=(1, 2, 4),
        ddpm_steps=(4, 8, 16, 32),
        guidance=2.0,
    )
    if "smoke" in flags:
        c.models = "digits_fm,digits_map"
        c.fm.num_steps = 200
        c.ddpm.num_steps = 200
        c.map.num_steps = 200
        c.map.num_traj = 512
        c.map.traj_steps = 8
        c.map.grid = 4
        c.map_cfg.num_steps = 100
        c.train.chunk = 100
        c.train.warmup = 10
        c.eval.num_samples = 297
        c.eval.heun_steps = (2, 4)
        c.eval.map_steps = (1, 2)
        c.eval.ddpm_steps = (4,)
    return c
