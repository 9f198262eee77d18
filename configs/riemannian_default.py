r"""The embedded default of `python -m experiments.riemannian`: Riemannian flow matching vs a
Euclidean flow matched around the manifold and projected onto it, CPU.

Arms (same width / depth / optimizer / batch / steps / seeds): `rfm` (RCFM on the geodesic
path from the uniform law, manifold MLP, projected dopri5) and `euclidean` (CondOT flow
matching from a Gaussian in R^3 / the angle chart R^2, plain MLP, then projected). Datasets:
the vMF mixture on S^2 and the wrapped-normal mixture on T^2 (exact densities: KL in nats and
energy distance to held-out draws).

  python -m experiments.riemannian --workdir=/tmp/rfm
  python -m experiments.riemannian --config=configs/riemannian_default.py:smoke --workdir=/tmp/rfm_s

Variants: `smoke` (seconds: one dataset, two seeds, few steps); `checkerboard` adds the torus
checkerboard. Timing and results: see the README section (measured on a shared, loaded
machine; see results.json "machine").
"""

import ml_collections

from flowjax.train.config import default_config


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_seeds = 3
    c.datasets = "vmf_mixture,wrapped_gaussians"
    c.arms = "rfm,euclidean"
    c.width = 128
    c.depth = 3
    c.freq_dim = 32
    c.num_steps = 3000
    c.steps_per_dispatch = 100
    c.batch_size = 256
    c.ema_decay = 0.999
    c.eval_samples = 1024  # held-out draws for the KL (exact data density)
    c.sample_size = 2048  # model samples for the energy distance
    c.radial_nodes = 48  # Gauss-Legendre nodes of the Euclidean arm's radial integral on S^2
    c.solver = "dopri5"
    c.rtol = 1e-5
    c.atol = 1e-5
    c.optim = default_config().optim
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 100
    for variant in (arg or "").split(","):
        if variant == "smoke":
            c.datasets, c.num_seeds, c.num_steps, c.steps_per_dispatch = "vmf_mixture", 2, 100, 50
            c.eval_samples, c.sample_size, c.radial_nodes = 128, 256, 16
            c.width, c.depth = 32, 2
            c.optim.warmup_steps = 10
        elif variant == "checkerboard":
            c.datasets = "vmf_mixture,wrapped_gaussians,torus_checkerboard"
        elif variant:
            raise ValueError(f"unknown variant {variant!r}; valid: smoke, checkerboard")
    return c
