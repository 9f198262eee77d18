"""What every suite receives: the settings of the run, the recorder, and shared models."""

from __future__ import annotations

import dataclasses
from typing import Any

from benchmarks._harness import Recorder, measure


@dataclasses.dataclass
class Settings:
    """Sizes and repeat counts of a run (the `python -m benchmarks.run` flags)."""

    repeats: int = 7
    warmup: int = 2
    warmup_s: float = 1.0
    min_repeat_s: float = 0.2
    dtype: str = "float32"  # compute dtype of the flowjax models ("bfloat16" on GPU)
    peers: bool = True
    large: bool = True  # U-Net cifar10 and DiT training (small batch on CPU)
    mlp_variant: str = "base"
    # Time-embedding scale of the 2D MLP. flowjax's MLP default (1000, DDPM's integer steps)
    # makes the learned field oscillate in t and multiplies the adaptive NFE of every solver
    # by ~15 on the 2D toys (BENCHMARKS.md); the peers' 2D examples feed t in [0, 1] as is.
    mlp_time_scale: float = 1.0
    mlp_batches: tuple[int, ...] = (256, 4096)
    dispatch_ks: tuple[int, ...] = (1, 100)
    image_batch: int = 32  # digits U-Net train step
    large_batch: int = 4  # cifar10 U-Net / DiT train step
    large_models: tuple[str, ...] = ("unet/cifar10", "dit/S/2")
    train_steps_2d: int = 2000  # training of the 2D model that the solvers then integrate
    n_sample: int = 10_000
    n_likelihood: int = 2_000
    n_images: int = 64
    rtol: float = 1e-5
    atol: float = 1e-5
    ref_tol: float = 1e-8  # float64 reference solve
    sample_atol: float = 1e-4  # agreement of samples with the reference
    logp_atol: float = 1e-3  # agreement of log-likelihoods with the reference
    seed: int = 0


@dataclasses.dataclass
class Context:
    settings: Settings
    recorder: Recorder
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)

    def measure(self, call, **kwargs) -> dict:
        s = self.settings
        kwargs.setdefault("warmup", s.warmup)
        kwargs.setdefault("warmup_s", s.warmup_s)
        kwargs.setdefault("repeats", s.repeats)
        kwargs.setdefault("min_repeat_s", s.min_repeat_s)
        return measure(call, **kwargs)

    def peak(self, dtype: str) -> float | None:
        """Measured matmul FLOP/s of `dtype` (float32 when that dtype was not measured)."""
        entry = self.recorder.peaks.get(dtype) or self.recorder.peaks.get("float32")
        return None if entry is None else entry["flops_per_s"]
