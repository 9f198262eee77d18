"""The Flax FID InceptionV3 equals pytorch-fid's network on shared random weights.

pytorch-fid itself cannot be imported here (it imports torchvision, which has no CPU build on
these machines), so the reference below re-states pytorch-fid's architecture in plain torch,
line by line from `pytorch_fid/inception.py` (FIDInceptionA/C/E_1/E_2 and the torchvision
InceptionB/D blocks and BasicConv2d they build on), including its input pipeline:
`F.interpolate(x, (299, 299), mode="bilinear", align_corners=False)` then `2 * x - 1`.
"""

import jax
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch (CPU wheel)")
nn = torch.nn
F = torch.nn.functional

from flowjax.metrics import _inception as inc  # noqa: E402

# ------------------------------------------------------------------------------------------
# PyTorch reference: pytorch-fid's FID Inception (use_fid_inception=True, block 3 output).


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class FIDInceptionA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([b1, b5, b3, self.branch_pool(bp)], 1)


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    def __init__(self, cin, channels_7x7):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_3(self.branch7x7dbl_2(bd))
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(bd))
        bp = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([b1, b7, bd, self.branch_pool(bp)], 1)


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(b7))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """FIDInceptionE_1 (use_max_pool=False) and FIDInceptionE_2 (use_max_pool=True)."""

    def __init__(self, cin, use_max_pool):
        super().__init__()
        self.use_max_pool = use_max_pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.use_max_pool:
            bp = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            bp = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([b1, b3, bd, self.branch_pool(bp)], 1)


class TorchFIDInception(nn.Module):
    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, use_max_pool=False)
        self.Mixed_7c = FIDInceptionE(2048, use_max_pool=True)

    def core(self, x):  # pytorch-fid's blocks 0..3 on an already-normalised input
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = nn.MaxPool2d(kernel_size=3, stride=2)(x)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = nn.MaxPool2d(kernel_size=3, stride=2)(x)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return nn.AdaptiveAvgPool2d(output_size=(1, 1))(x)[:, :, 0, 0]

    def forward(self, inp):  # pytorch-fid InceptionV3.forward: inp in [0, 1], NCHW
        x = F.interpolate(inp, size=(299, 299), mode="bilinear", align_corners=False)
        return self.core(2 * x - 1)


def _randomize(model: nn.Module, seed: int = 0) -> None:
    """Random weights that keep activations O(1) through the whole network."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(1.0 + 0.2 * torch.randn(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
    model.eval()


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    ref = TorchFIDInception()
    _randomize(ref)
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    return ref, state, inc.inception_from_state_dict(state)


def _torch_features(fn, x_nchw):
    with torch.no_grad():
        return fn(torch.from_numpy(x_nchw)).numpy()


def test_core_matches_pytorch_fid_architecture(models):
    ref, _, flax_model = models
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(2, 3, 75, 75)).astype(np.float32)  # smallest valid input
    want = _torch_features(ref.core, x)
    got = inc.inception_features(flax_model, x.transpose(0, 2, 3, 1), batch_size=2, resize=False)
    assert got.shape == (2, 2048)
    assert np.std(want) > 0.05  # the random network is not degenerate
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [(13, 13), (40, 64), (320, 320)])
def test_resize_matches_torch_interpolate(size):
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, size=(2, 3, *size)).astype(np.float32)
    want = F.interpolate(
        torch.from_numpy(x), size=(299, 299), mode="bilinear", align_corners=False
    ).numpy()
    got = np.asarray(inc.resize_bilinear(x.transpose(0, 2, 3, 1), 299)).transpose(0, 3, 1, 2)
    # torch computes the source coordinates in float32; with jax_enable_x64 JAX uses float64,
    # which moves sample points by ~1e-5 pixel when downsampling.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_full_pipeline_with_resize_matches(models):
    ref, _, flax_model = models
    rng = np.random.default_rng(3)
    u = rng.uniform(0, 1, size=(2, 32, 32, 3)).astype(np.float32)  # pytorch-fid range [0, 1]
    want = _torch_features(ref, u.transpose(0, 3, 1, 2))
    got = inc.inception_features(flax_model, 2.0 * u - 1.0, batch_size=2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_load_pth_and_npz_roundtrip(models, tmp_path):
    ref, _, flax_model = models
    pth = tmp_path / "random_inception.pth"
    torch.save(ref.state_dict(), pth)
    # Random weights are not pytorch-fid's: the checksum check must refuse them by default.
    with pytest.raises(ValueError, match="checksum mismatch"):
        inc.load_inception(pth)
    with pytest.raises(ValueError, match="checksum mismatch"):
        inc.convert_inception_weights(pth, tmp_path / "w.npz")
    loaded = inc.load_inception(pth, check_hash=False)
    npz = tmp_path / "random_inception.npz"
    inc.convert_inception_weights(pth, npz, check_hash=False)
    with pytest.raises(ValueError, match="checksum mismatch"):
        inc.load_inception(npz)  # the recorded source hash is not pytorch-fid's either
    from_npz = inc.load_inception(npz, check_hash=False)
    want = nnx.state(flax_model)
    for other in (loaded, from_npz):  # identical weights -> identical features
        jax.tree.map(np.testing.assert_array_equal, nnx.state(other), want)


def test_bad_weight_files_raise_clear_errors(models, tmp_path):
    _, state, flax_model = models
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        inc.load_inception(tmp_path / "nothing.pth")
    bad = dict(state)
    bad.pop("Mixed_7c.branch_pool.bn.running_var")
    with pytest.raises(ValueError, match="missing"):
        inc.inception_from_state_dict(bad)
    bad = dict(state)
    bad["Mixed_5b.branch1x1.conv.weight"] = bad["Mixed_5b.branch1x1.conv.weight"][:10]
    with pytest.raises(ValueError, match="shape"):
        inc.inception_from_state_dict(bad)
    other = tmp_path / "w.bin"
    other.write_bytes(b"0")
    with pytest.raises(ValueError, match="valid"):
        inc.load_inception(other)
    with pytest.raises(ValueError, match="NHWC"):
        inc.inception_features(flax_model, np.zeros((1, 3, 32, 32)))
