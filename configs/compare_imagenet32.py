r"""Flow matching vs diffusion on ImageNet 32x32 (TFDS imagenet_resized/32x32), scored by FID.

The CIFAR-10 study (`configs/compare_cifar10.py`) at ImageNet-32 scale: the same DDPM U-Net
(bf16 compute) made class-conditional over the 1,000 classes (label dropout 0.1, so a null
label exists for guidance-free sampling), batch 256, 200k steps, the arms fm, ddpm, cosine_v,
edm, 3 seeds. Quality: FID of 5,000 EMA samples against 10,000 validation images (the
`test` split is the validation split), its floor the FID of 5,000 training images against the
same reference. Needs the prepared TFDS dataset (`--config.base.data.data_dir`) and the FID
InceptionV3 weights (`--config.metrics.inception_path`). Not run on these machines (no
internet, no accelerator); its smoke variant is built and checked in tests.

  python -m experiments.compare --config=configs/compare_imagenet32.py --workdir=/tmp/cmp_in32 \
      --config.base.data.data_dir=$HOME/tensorflow_datasets \
      --config.metrics.inception_path=$HOME/pt_inception-2015-12-05-6726825d.pth

Expected cost (an ESTIMATE from FLOPs per step, not a measurement): XLA's cost analysis of
the lowered U-Net (36.3M parameters with the class embedding) gives 11.7 GFLOP per image
forward and 4.48 TFLOP per training step at batch 128, so 8.96 TFLOP per step at batch 256.
At an assumed 125 TFLOP/s sustained (40% of an A100's dense bf16 peak) that is ~72 ms per
(arm, seed) step: 200k steps ~4 GPU-hours per (arm, seed), ~48 GPU-hours for 4 arms x 3
seeds. Evaluation: 5,000 samples x 50 NFE x 11.7 GFLOP ~2.9 PFLOP (~25 s) per (arm, seed)
and evaluation, x 8 evaluations, plus the sweep (6 samplers at 4 + 8 + 16 + 32 NFE:
~21 PFLOP, ~3 minutes per (arm, seed)): ~1.3 GPU-hours. About 50 A100-hours in all; spread a
(arm, seed) batch over a host's devices with `base.mesh.data=-1`.

Expected result: FIDs in the tens after 200k steps (published ImageNet-32 models trained 10x
longer reach single digits); report.md gives the steps and hours each arm needs to reach each
multiple of the FID floor it reaches and the speed-ups over DDPM with 95% intervals.
"""

import ml_collections

from configs import compare_cifar10


def get_config(arg=None):
    c = compare_cifar10.get_config(arg)
    c.datasets = "imagenet32"
    b = c.base
    b.data.name = "imagenet32"
    b.objective.label_dropout = 0.1  # class-conditional, with a learned null label
    if "smoke" not in (arg or ""):
        b.data.batch_size = 256
        b.train.num_steps = 200_000
        c.eval.num_evals = 8
    c.metrics.by_dataset = ml_collections.ConfigDict()
    return c
