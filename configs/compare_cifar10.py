r"""Flow matching vs diffusion on CIFAR-10 (TFDS) with the DDPM U-Net, scored by FID.

The shared recipe is `configs/cifar10.py` (35.7M-parameter DDPM U-Net, batch 128, Adam 2e-4,
EMA 0.9999, bf16 compute); the arms: flow matching, DDPM-style diffusion (the baseline),
cosine v-prediction and EDM. Needs the prepared TFDS dataset (`--config.base.data.data_dir`)
and the FID InceptionV3 weights (`--config.metrics.inception_path`: pytorch-fid's
pt_inception-2015-12-05-6726825d.pth, or an .npz from `fj.metrics.convert_inception_weights`).
These machines have no internet, so it is not run in tests.

  python -m experiments.compare --config=configs/compare_cifar10.py --workdir=/tmp/cmp_cifar \
      --config.base.data.data_dir=$HOME/tensorflow_datasets \
      --config.metrics.inception_path=$HOME/pt_inception-2015-12-05-6726825d.pth

Expected cost (an ESTIMATE from FLOPs per step, not a measurement): XLA's cost analysis of
the lowered U-Net gives 11.7 GFLOP per image forward and 4.48 TFLOP per training step at batch
128. At an assumed 125 TFLOP/s sustained (40% of an A100's dense bf16 peak) that is ~36 ms
per (arm, seed) step: 100k steps ~1 GPU-hour per (arm, seed), ~12 GPU-hours for 4 arms x 3
seeds; evaluation (5,000 samples x 50 NFE at each of 8 evaluations, ~23 s each, and the
sweep of 6 samplers at 4 + 8 + 16 + 32 NFE, ~3 minutes per (arm, seed)) adds ~1.2 GPU-hours.
About 13 A100-hours in all (the FID floor: 5,000 training images vs the 10,000 test images,
3 times). Expected result: FIDs in the tens after 100k steps for every arm (published
full-length runs reach ~3-4); report.md gives the steps and hours each arm needs to reach each
multiple of the FID floor it reaches, and the speed-ups over DDPM with 95% intervals.
"""

import ml_collections

from configs import cifar10, compare_default


def get_config(arg=None):
    c = compare_default.get_config(arg)
    c.datasets = "cifar10"
    c.arms = "fm,ddpm,cosine_v,edm"
    c.num_seeds = 3
    b = cifar10.get_config("fm")
    b.train.num_steps = 100_000
    b.train.steps_per_dispatch = 10
    b.train.on_nonfinite = "skip"
    c.base = b
    c.data_cache_mb = 0.0  # stream the batches (the dataset is read through TFDS)
    c.eval.num_evals = 8
    c.eval.num_samples = 5000
    c.eval.batch_size = 500
    # Curves: Heun at 50 NFE; the eps arm (ddpm) with DPM-Solver++(2M), which never turns
    # eps into a velocity near t = 0.
    c.eval.sampler = "heun"
    c.eval.nfe = 50
    c.eval.arm_samplers = ml_collections.ConfigDict({"ddpm": "dpm++2m", "edm": "heun@edm"})
    c.metrics.num_reference = 10_000
    c.metrics.by_dataset = ml_collections.ConfigDict()
    c.levels.floor_reps = 3  # 5,000 training images vs the 10,000 test images, 3 times
    c.sweep.num_samples = 5000
    c.sweep.specs = ("euler", "heun", "heun@edm", "ddim", "dpm++2m", "unipc")
    c.sweep.spec_nfe = (4, 8, 16, 32)
    c.sweep.grid_kwargs = ml_collections.ConfigDict({"sigma_min": 0.002, "sigma_max": 80.0})
    if "smoke" in (arg or ""):
        b = cifar10.get_config("fm,smoke")
        b.train.on_nonfinite = "skip"
        c.base = b
        c.arms = "fm,ddpm"
        c.eval.num_evals = 2
        c.eval.num_samples = 16
        c.eval.batch_size = 16
        c.eval.nfe = 4
        c.metrics.num_reference = 16
        c.levels.floor_reps = 2
        c.sweep.num_samples = 16
        c.sweep.specs = ("euler", "dpm++2m")
        c.sweep.spec_nfe = (4,)
    return c
