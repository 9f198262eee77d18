"""InceptionV3 for FID in Flax NNX, matching pytorch-fid's FID network (the TF FID graph).

pytorch-fid (Seitzer 2020) ports TensorFlow's 2015-12-05 Inception graph, the network of the
original FID (Heusel et al. 2017), as torchvision's Inception3 with patched blocks
`FIDInceptionA/C/E_1/E_2`: their pooling branch averages without counting the zero padding
(TF's average pool), and the last block max-pools instead. The FID features are the 2048-d
global average pool of `Mixed_7c` ("pool3"). Input: images bilinearly resized to 299 x 299
(half-pixel centres, no antialiasing, as `F.interpolate(..., align_corners=False)`) and
scaled to [-1, 1].

Weights: these machines cannot download them. Give `load_inception` pytorch-fid's file
`pt_inception-2015-12-05-6726825d.pth` (its sha256 starts with 6726825d and is checked), or
an .npz of the same tensors made once by `convert_inception_weights` (needs torch only for
the conversion). Parameter names are pytorch-fid's (`Mixed_5b.branch1x1.conv.weight`, ...).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, ArrayLike, Float

from flowjax.metrics import _io

__all__ = [
    "InceptionV3",
    "PT_INCEPTION_FILENAME",
    "PT_INCEPTION_SHA256_PREFIX",
    "convert_inception_weights",
    "inception_features",
    "inception_from_state_dict",
    "load_inception",
    "resize_bilinear",
]

PT_INCEPTION_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
PT_INCEPTION_SHA256_PREFIX = "6726825d"
INCEPTION_SIZE = 299
FEATURE_DIM = 2048
_SOURCE_HASH_KEY = "__source_sha256__"
# Tensors of the checkpoint that the feature extractor does not use.
_IGNORED_PREFIXES = ("fc.", "AuxLogits.")
_IGNORED_SUFFIXES = ("num_batches_tracked",)
_HIGHEST = jax.lax.Precision.HIGHEST
_DEFAULT_KERNEL_INIT = nnx.initializers.lecun_normal()  # nnx.Conv's default


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _avg_pool_3x3(x):
    # TF's average pool ignores the zero padding (pytorch-fid's count_include_pad=False patch).
    return nnx.avg_pool(
        x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False
    )


def _max_pool_3x3(x):
    # FIDInceptionE_2's patch: a max pool in the last block's pooling branch.
    return nnx.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_s2(x):
    return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class BasicConv2d(nnx.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, inference statistics) -> ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size,
        *,
        stride=1,
        padding=0,
        kernel_init=_DEFAULT_KERNEL_INIT,
        rngs: nnx.Rngs,
    ):
        ph, pw = _pair(padding)
        self.conv = nnx.Conv(
            cin,
            cout,
            _pair(kernel_size),
            strides=_pair(stride),
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            precision=_HIGHEST,
            kernel_init=kernel_init,
            rngs=rngs,
        )
        self.bn = nnx.BatchNorm(cout, use_running_average=True, epsilon=1e-3, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.bn(self.conv(x)))


class InceptionA(nnx.Module):
    """pytorch-fid's FIDInceptionA (35 x 35 grid)."""

    def __init__(self, cin: int, pool_features: int, *, conv=BasicConv2d, rngs: nnx.Rngs):
        self.branch1x1 = conv(cin, 64, 1, rngs=rngs)
        self.branch5x5_1 = conv(cin, 48, 1, rngs=rngs)
        self.branch5x5_2 = conv(48, 64, 5, padding=2, rngs=rngs)
        self.branch3x3dbl_1 = conv(cin, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = conv(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = conv(96, 96, 3, padding=1, rngs=rngs)
        self.branch_pool = conv(cin, pool_features, 1, rngs=rngs)

    def __call__(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_3x3(x))
        return jnp.concatenate([self.branch1x1(x), b5, b3, bp], axis=-1)


class InceptionB(nnx.Module):
    """torchvision's InceptionB (grid reduction 35 -> 17)."""

    def __init__(self, cin: int, *, conv=BasicConv2d, rngs: nnx.Rngs):
        self.branch3x3 = conv(cin, 384, 3, stride=2, rngs=rngs)
        self.branch3x3dbl_1 = conv(cin, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = conv(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = conv(96, 96, 3, stride=2, rngs=rngs)

    def __call__(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nnx.Module):
    """pytorch-fid's FIDInceptionC (17 x 17 grid, factorised 7 x 7 convolutions)."""

    def __init__(self, cin: int, channels_7x7: int, *, conv=BasicConv2d, rngs: nnx.Rngs):
        c7 = channels_7x7
        self.branch1x1 = conv(cin, 192, 1, rngs=rngs)
        self.branch7x7_1 = conv(cin, c7, 1, rngs=rngs)
        self.branch7x7_2 = conv(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7_3 = conv(c7, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_1 = conv(cin, c7, 1, rngs=rngs)
        self.branch7x7dbl_2 = conv(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_3 = conv(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7dbl_4 = conv(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_5 = conv(c7, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch_pool = conv(cin, 192, 1, rngs=rngs)

    def __call__(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_3x3(x))
        return jnp.concatenate([self.branch1x1(x), b7, bd, bp], axis=-1)


class InceptionD(nnx.Module):
    """torchvision's InceptionD (grid reduction 17 -> 8)."""

    def __init__(self, cin: int, *, conv=BasicConv2d, rngs: nnx.Rngs):
        self.branch3x3_1 = conv(cin, 192, 1, rngs=rngs)
        self.branch3x3_2 = conv(192, 320, 3, stride=2, rngs=rngs)
        self.branch7x7x3_1 = conv(cin, 192, 1, rngs=rngs)
        self.branch7x7x3_2 = conv(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7x3_3 = conv(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7x3_4 = conv(192, 192, 3, stride=2, rngs=rngs)

    def __call__(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nnx.Module):
    """pytorch-fid's FIDInceptionE_1 (pool = average) or FIDInceptionE_2 (pool = max)."""

    def __init__(self, cin: int, pool: Callable, *, conv=BasicConv2d, rngs: nnx.Rngs):
        self.pool = pool
        self.branch1x1 = conv(cin, 320, 1, rngs=rngs)
        self.branch3x3_1 = conv(cin, 384, 1, rngs=rngs)
        self.branch3x3_2a = conv(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3_2b = conv(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch3x3dbl_1 = conv(cin, 448, 1, rngs=rngs)
        self.branch3x3dbl_2 = conv(448, 384, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3a = conv(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3dbl_3b = conv(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch_pool = conv(cin, 192, 1, rngs=rngs)

    def __call__(self, x):
        b3 = self.branch3x3_1(x)
        b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = jnp.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=-1)
        bp = self.branch_pool(self.pool(x))
        return jnp.concatenate([self.branch1x1(x), b3, bd, bp], axis=-1)


def resize_bilinear(
    x: Float[ArrayLike, "B H W C"], size: int = INCEPTION_SIZE
) -> Float[Array, "B S S C"]:
    """Bilinear resize to size x size, as torch's `F.interpolate(mode="bilinear",
    align_corners=False)` (half-pixel centres, no antialiasing, edges clamped)."""
    x = jnp.asarray(x)
    return jax.image.resize(
        x, (x.shape[0], size, size, x.shape[3]), method="linear", antialias=False
    )


class InceptionV3(nnx.Module):
    """FID InceptionV3 up to the 2048-d pool3 features (NHWC, inference mode).

    `model(images)` takes (B, H, W, 3) images in [-1, 1], resizes them to 299 x 299 and returns
    (B, 2048) features, as pytorch-fid's `InceptionV3([3])` does on (images + 1) / 2.
    `model.features(x)` skips the resize (x at least 75 x 75, already in [-1, 1]).
    Build one with random weights with `InceptionV3(rngs=nnx.Rngs(0))`; load the real ones
    with `load_inception`. `conv` builds each conv-BN-ReLU unit (torchvision's `conv_block`).
    """

    def __init__(self, *, rngs: nnx.Rngs, conv: Callable = BasicConv2d):
        self.Conv2d_1a_3x3 = conv(3, 32, 3, stride=2, rngs=rngs)
        self.Conv2d_2a_3x3 = conv(32, 32, 3, rngs=rngs)
        self.Conv2d_2b_3x3 = conv(32, 64, 3, padding=1, rngs=rngs)
        self.Conv2d_3b_1x1 = conv(64, 80, 1, rngs=rngs)
        self.Conv2d_4a_3x3 = conv(80, 192, 3, rngs=rngs)
        self.Mixed_5b = InceptionA(192, 32, conv=conv, rngs=rngs)
        self.Mixed_5c = InceptionA(256, 64, conv=conv, rngs=rngs)
        self.Mixed_5d = InceptionA(288, 64, conv=conv, rngs=rngs)
        self.Mixed_6a = InceptionB(288, conv=conv, rngs=rngs)
        self.Mixed_6b = InceptionC(768, 128, conv=conv, rngs=rngs)
        self.Mixed_6c = InceptionC(768, 160, conv=conv, rngs=rngs)
        self.Mixed_6d = InceptionC(768, 160, conv=conv, rngs=rngs)
        self.Mixed_6e = InceptionC(768, 192, conv=conv, rngs=rngs)
        self.Mixed_7a = InceptionD(768, conv=conv, rngs=rngs)
        self.Mixed_7b = InceptionE(1280, _avg_pool_3x3, conv=conv, rngs=rngs)
        self.Mixed_7c = InceptionE(2048, _max_pool_3x3, conv=conv, rngs=rngs)

    def features(self, x: Float[ArrayLike, "B H W 3"]) -> Float[Array, "B 2048"]:
        """pool3 features of images already at the network's resolution, in [-1, 1]."""
        x = jnp.asarray(x, jnp.float32)
        if x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) < 75:
            raise ValueError(
                f"InceptionV3.features: need (B, H, W, 3) with H, W >= 75, got {x.shape}"
            )
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = _max_pool_3x3_s2(x)
        x = _max_pool_3x3_s2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d((1, 1))

    def __call__(self, images: Float[ArrayLike, "B H W 3"]) -> Float[Array, "B 2048"]:
        """pool3 features of (B, H, W, 3) images in [-1, 1], resized to 299 x 299."""
        images = jnp.asarray(images, jnp.float32)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"InceptionV3: need images (B, H, W, 3), got {images.shape}")
        # pytorch-fid resizes u in [0, 1] and then maps 2u - 1; resizing is affine-equivariant,
        # so resizing x = 2u - 1 directly is the same computation.
        return self.features(resize_bilinear(images, INCEPTION_SIZE))


# ------------------------------------------------------------------------------------------
# Weights


def _torch_name(path: str) -> tuple[str, bool]:
    """Our variable path -> (pytorch-fid state-dict key, is a conv kernel)."""
    head, leaf = path.rsplit(".", 1)
    mapping = {
        "kernel": "weight",
        "scale": "weight",
        "bias": "bias",
        "mean": "running_mean",
        "var": "running_var",
    }
    if leaf not in mapping:
        raise AssertionError(f"unexpected InceptionV3 variable {path}")
    return f"{head}.{mapping[leaf]}", leaf == "kernel"


def _is_ignored(key: str) -> bool:
    return (
        key == _SOURCE_HASH_KEY
        or key.startswith(_IGNORED_PREFIXES)
        or key.endswith(_IGNORED_SUFFIXES)
    )


def inception_from_state_dict(state_dict: Mapping[str, ArrayLike]) -> InceptionV3:
    """Builds the model from pytorch-fid tensors (torch layouts, e.g. conv weights OIHW).

    Raises:
      ValueError: a tensor is missing, has the wrong shape, or is unknown to this model.
    """
    # Zero-initialised kernels: every value is overwritten, and tracing the default random
    # initialisers under eval_shape costs seconds.
    conv = functools.partial(BasicConv2d, kernel_init=nnx.initializers.zeros)
    model = nnx.eval_shape(lambda: InceptionV3(rngs=nnx.Rngs(0), conv=conv))
    targets = {}
    for path, var in _io.variables(model).items():
        key, is_kernel = _torch_name(path)
        targets[key] = (var, is_kernel)
    missing = sorted(set(targets) - set(state_dict))
    unknown = sorted(k for k in state_dict if k not in targets and not _is_ignored(k))
    if missing or unknown:
        raise ValueError(
            f"not pytorch-fid InceptionV3 weights: {len(missing)} tensors missing "
            f"(e.g. {missing[:3]}), {len(unknown)} unknown (e.g. {unknown[:3]})"
        )
    for key, (var, is_kernel) in targets.items():
        value = np.asarray(state_dict[key], dtype=np.float32)
        if is_kernel:
            if value.ndim != 4:
                raise ValueError(f"weight {key!r} must be a 4-d conv kernel, got {value.shape}")
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        _io.assign(var, value, key)
    return model


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_source_hash(digest: str, path: Path) -> None:
    if not digest.startswith(PT_INCEPTION_SHA256_PREFIX):
        raise ValueError(
            f"checksum mismatch for {path}: sha256 starts with {digest[:8]!r}, expected "
            f"{PT_INCEPTION_SHA256_PREFIX!r} (pytorch-fid's {PT_INCEPTION_FILENAME}). The file "
            f"is corrupt or holds other weights; pass check_hash=False to load other weights "
            f"of this architecture (their FID is not comparable to published numbers)."
        )


def _read_pth(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"reading {path.name} (a PyTorch .pth file) needs torch: `pip install torch`, or "
            f"on a machine with torch run `convert_inception_weights(pth, npz)` once and load "
            f"the .npz instead"
        ) from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def _read_weights(path: str | os.PathLike, check_hash: bool) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no InceptionV3 weights at {path}; get pytorch-fid's {PT_INCEPTION_FILENAME} from "
            f"its GitHub release 'fid_weights'"
        )
    suffix = path.suffix.lower()
    if suffix in (".pth", ".pt"):
        if check_hash:
            _check_source_hash(_sha256(path), path)
        return _read_pth(path)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            tensors = {k: data[k] for k in data.files}
        if check_hash:
            if _SOURCE_HASH_KEY not in tensors:
                raise ValueError(
                    f"{path} records no source checksum; make it with "
                    f"convert_inception_weights, or pass check_hash=False"
                )
            _check_source_hash(str(tensors[_SOURCE_HASH_KEY]), path)
        return tensors
    raise ValueError(
        f"load_inception: unknown weight file type {suffix!r} for {path}; "
        f"valid: .pth / .pt (PyTorch, needs torch) or .npz"
    )


def load_inception(path: str | os.PathLike, *, check_hash: bool = True) -> InceptionV3:
    """Loads the FID InceptionV3 from pytorch-fid's .pth file or an .npz of the same tensors.

    Args:
      path: `pt_inception-2015-12-05-6726825d.pth` (torch needed to read it) or an .npz
        written by `convert_inception_weights`.
      check_hash: verify that the weights are pytorch-fid's (sha256 prefix 6726825d of the
        .pth, or the source checksum recorded in the .npz).

    Returns:
      The model, in inference mode.

    Raises:
      FileNotFoundError: no file at path.
      ValueError: checksum mismatch, unknown file type, or tensors that do not fit the model.
      ImportError: a .pth file without torch installed.
    """
    return inception_from_state_dict(_read_weights(path, check_hash))


def convert_inception_weights(
    src: str | os.PathLike, dst: str | os.PathLike, *, check_hash: bool = True
) -> None:
    """Converts pytorch-fid's .pth to an .npz (same names and layouts) that loads without torch.

    The .pth file's sha256 is stored in the .npz, so `load_inception(dst)` can check it.
    """
    src = Path(src)
    if src.suffix.lower() not in (".pth", ".pt"):
        raise ValueError(f"convert_inception_weights: src must be a .pth/.pt file, got {src}")
    tensors = _read_weights(src, check_hash)
    inception_from_state_dict(tensors)  # validate before writing
    np.savez(dst, **tensors, **{_SOURCE_HASH_KEY: np.asarray(_sha256(src))})


def _to_model_range(images) -> np.ndarray:
    x = np.asarray(images)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 127.5 - 1.0
    elif not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"images must be float in [-1, 1] or uint8 in [0, 255], got {x.dtype}")
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must be NHWC (N, H, W, 1 or 3), got shape {x.shape}")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)  # grayscale (e.g. MNIST) -> RGB
    return x.astype(np.float32)


def inception_features(
    model: InceptionV3,
    images: Float[ArrayLike, "N H W C"],
    *,
    batch_size: int = 50,
    resize: bool = True,
    quantize: bool = False,
) -> Float[np.ndarray, "N 2048"]:
    """pool3 features of NHWC images, computed in jitted batches of a fixed size.

    Args:
      model: an `InceptionV3` (see `load_inception`).
      images: (N, H, W, C) float in [-1, 1] (C = 1 is repeated to RGB) or uint8 in [0, 255].
      batch_size: images per jitted call (the last batch is padded: one compilation).
      resize: resize to 299 x 299 first (pytorch-fid's default); False feeds them as they are.
      quantize: round to 8-bit levels first, as when samples are saved to PNG, which is how
        published FIDs are usually computed.

    Returns:
      (N, 2048) float32 features.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = _to_model_range(images)
    if quantize:
        x = np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0
    graphdef, state = nnx.split(model)
    method = "__call__" if resize else "features"
    out = []
    for i in range(0, x.shape[0], batch_size):
        batch = x[i : i + batch_size]
        n = batch.shape[0]
        if n < batch_size:
            batch = np.concatenate(
                [batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)]
            )
        out.append(np.asarray(_io.apply_jitted(graphdef, state, batch, method))[:n])
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float32)
