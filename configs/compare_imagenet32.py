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

Expected cost (an ESTIMATE from FLOPs per step, not a measurement): XLA's cost analysis of the
U-Net's forward and backward at batch 128 on CPU gives the FLOPs quoted in
configs/compare_cifar10.py; at batch 256 a step costs twice that. At 40% of an H100's dense
bf16 peak (~400 TFLOP/s effective) that is about 0.1 s per (arm, seed) step, so 4 arms x 3
seeds x 200k steps is ~70 GPU-hours, plus evaluation: every evaluation draws 5,000 samples
per (arm, seed) at 50 NFE (~1/3 of a training step's FLOPs per 128 samples and NFE... about
2 minutes each on that GPU), 8 evaluations and the sweep: ~10 more GPU-hours. Use
`base.mesh.data=-1` to spread the batch over all devices of a host.

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
