"""Tests for flowjax.models: shapes, exact zero init, conditioning, dropout, precision, counts.

Cost note: on CPU, compiling threefry random bits is slow, and every jit of a U-Net is a few
seconds, so these tests use "rbg" keys, build each tiny network once, draw perturbations with
numpy, and run most checks eagerly, where JAX caches each op's compilation across calls.
"""

import functools
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flowjax.models import (
    DiT,
    UNet,
    build_model,
    functional,
    param_count,
    sincos_pos_embed_2d,
    sinusoidal_embedding,
)

B = 3
NUM_CLASSES = 4
# name -> (variant, input_shape); tiny networks, each with labels, two times and dropout on.
TINY = {"mlp": ("tiny", (3,)), "unet": ("tiny", (8, 8, 2)), "dit": ("tiny", (8, 8, 2))}
NAMES = sorted(TINY)


def _key(seed):
    return jax.random.key(seed, impl="rbg")


def _build(name, *, abstract=False, **kw):
    variant, shape = TINY[name]
    kw = {"num_classes": NUM_CLASSES, "two_times": True, "dropout": 0.2, **kw}
    make = lambda: build_model(name, variant, input_shape=shape, key=_key(0), **kw)
    return nnx.eval_shape(make) if abstract else make()


def _apply_of(name, **kw):
    """The apply function of a variant, without materialising (or compiling) its init."""
    return functional(_build(name, abstract=True, **kw))[0]


def _perturb(params, seed, scale=0.3):
    """Adds noise to every parameter so zero-initialised heads and gates become active."""
    rng = np.random.default_rng(seed)
    noise = lambda p: np.asarray(p) + scale * rng.standard_normal(p.shape).astype(np.float32)
    return jax.tree.map(lambda p: jnp.asarray(noise(p)), params)


@functools.cache
def _net(name):
    model = _build(name)
    apply_fn, params = functional(model)
    kx, kt = np.random.default_rng(1).standard_normal((B, *TINY[name][1])), np.linspace(0.1, 0.9, B)
    return SimpleNamespace(
        name=name,
        model=model,
        apply=apply_fn,
        init_params=params,
        params=_perturb(params, 7),
        x=jnp.asarray(kx, jnp.float32),
        t=jnp.asarray(kt, jnp.float32),
        y=jnp.arange(B, dtype=jnp.int32) % NUM_CLASSES,
    )


def test_sinusoidal_embedding_closed_form():
    t = jnp.array([0.0, 0.25, 1.0])
    emb = sinusoidal_embedding(t, 8, scale=1000.0, max_period=10000.0)
    freqs = 10000.0 ** (-np.arange(4) / 4)
    args = 1000.0 * np.asarray(t)[:, None] * freqs
    np.testing.assert_allclose(emb, np.concatenate([np.cos(args), np.sin(args)], 1), atol=3e-5)
    odd = sinusoidal_embedding(t, 9)
    assert odd.shape == (3, 9) and np.all(odd[:, -1] == 0)


def test_sincos_pos_embed_closed_form():
    # dim 4: omega = 1 for both halves -> [sin(col), cos(col), sin(row), cos(row)].
    emb = sincos_pos_embed_2d(4, 2, 3)
    rows, cols = np.divmod(np.arange(6), 3)
    expected = np.stack([np.sin(cols), np.cos(cols), np.sin(rows), np.cos(rows)], 1)
    np.testing.assert_allclose(emb, expected, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_time_broadcast(name):
    n = _net(name)
    out = n.apply(n.params, n.x, jnp.full((B,), 0.4))
    assert out.shape == n.x.shape and out.dtype == jnp.float32
    # A scalar time is the same time for every example.
    np.testing.assert_array_equal(n.apply(n.params, n.x, 0.4), out)
    # With one time per example, example i sees t[i] (same batch size: same compiled ops).
    np.testing.assert_array_equal(n.apply(n.params, n.x, n.t)[1], n.apply(n.params, n.x, n.t[1])[1])


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_output_exactly_zero_at_init(name):
    n = _net(name)
    out = n.model(n.x, n.t, s=0.5 * n.t, y=n.y)
    assert out.shape == n.x.shape and np.all(np.asarray(out) == 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_labels_change_output_and_null_label(name):
    n = _net(name)
    out0 = n.apply(n.params, n.x, n.t, y=jnp.zeros(B, jnp.int32))
    out1 = n.apply(n.params, n.x, n.t, y=jnp.ones(B, jnp.int32))
    assert np.max(np.abs(out0 - out1)) > 1e-3
    null = n.apply(n.params, n.x, n.t, y=jnp.full(B, NUM_CLASSES, jnp.int32))
    assert np.all(np.isfinite(null)) and np.max(np.abs(null - out0)) > 1e-3
    # y=None on a class-conditional model is the null (unconditional) label.
    np.testing.assert_array_equal(n.apply(n.params, n.x, n.t), null)
    # Each example uses its own label.
    mixed = n.apply(n.params, n.x, n.t, y=jnp.array([0, 1, 0], jnp.int32))
    np.testing.assert_allclose(mixed[1], out1[1], rtol=1e-6, atol=1e-6)


# name -> context shapes: a vector (FiLM on the time embedding) and, for images, an image of
# the data's spatial size (channel concatenation).
CONTEXTS = {"mlp": [(2,)], "unet": [(5,), (8, 8, 3)], "dit": [(5,), (8, 8, 3)]}


@pytest.mark.parametrize(
    ("name", "cshape"), [(n, c) for n in NAMES for c in CONTEXTS[n]], ids=lambda v: str(v)
)
def test_context_changes_output_and_null_context(name, cshape):
    variant, shape = TINY[name]
    model = build_model(name, variant, input_shape=shape, context_shape=cshape, key=_key(0))
    assert model.context.mode == ("concat" if len(cshape) == 3 else "film")
    apply_fn, params = functional(model)
    params = _perturb(params, 3)
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((B, *shape)), jnp.float32)
    c0, c1 = (jnp.asarray(rng.standard_normal((B, *cshape)), jnp.float32) for _ in range(2))
    out0 = apply_fn(params, x, 0.3, context=c0)
    assert np.max(np.abs(out0 - apply_fn(params, x, 0.3, context=c1))) > 1e-3
    null = apply_fn(params, x, 0.3)  # context=None: the null context
    assert np.all(np.isfinite(null)) and np.max(np.abs(null - out0)) > 1e-3
    # A NaN row is the null context for that example only (context dropout for CFG).
    from flowjax.models import drop_context

    mixed = c0.at[1].set(jnp.nan)
    got = apply_fn(params, x, 0.3, context=mixed)
    np.testing.assert_allclose(got[1], null[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[0], out0[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(drop_context(_key(1), c0, 1.0).shape, c0.shape)
    assert np.all(np.isnan(drop_context(_key(1), c0, 1.0)))
    np.testing.assert_array_equal(drop_context(_key(1), c0, 0.0), c0)


@pytest.mark.parametrize("name", NAMES)
def test_second_time_enters_only_when_given(name):
    n = _net(name)
    no_s = n.apply(n.params, n.x, n.t)
    with_s = n.apply(n.params, n.x, n.t, s=0.5 * n.t)
    assert np.max(np.abs(no_s - with_s)) > 1e-3
    # With s=None the flow-map network is exactly the one-time network on the shared params.
    one_time = _build(name, abstract=True, two_times=False)
    one_apply, one_params = functional(one_time)
    shared = {k: v for k, v in n.params["cond"].items() if k != "s_embed"}
    assert jax.tree.structure(shared) == jax.tree.structure(one_params["cond"])
    np.testing.assert_array_equal(one_apply({**n.params, "cond": shared}, n.x, n.t), no_s)
    with pytest.raises(ValueError, match="two_times=True"):
        one_apply({**n.params, "cond": shared}, n.x, n.t, s=n.t)


@pytest.mark.parametrize("name", NAMES)
def test_dropout_is_key_driven(name):
    n = _net(name)
    det1, det2 = n.apply(n.params, n.x, n.t), n.apply(n.params, n.x, n.t)
    np.testing.assert_array_equal(det1, det2)
    a, a_again, b = (n.apply(n.params, n.x, n.t, key=_key(s)) for s in (11, 11, 12))
    np.testing.assert_array_equal(a, a_again)
    assert np.max(np.abs(a - b)) > 1e-4 and np.max(np.abs(a - det1)) > 1e-4
    # With dropout off a key changes nothing.
    no_drop = _apply_of(name, dropout=0.0)
    np.testing.assert_array_equal(no_drop(n.params, n.x, n.t, key=_key(11)), det1)


@pytest.mark.parametrize("name", ["dit", "mlp", pytest.param("unet", marks=pytest.mark.slow)])
def test_bf16_compute_close_to_fp32(name):
    n = _net(name)
    bf16 = _build(name, abstract=True, dtype=jnp.bfloat16)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    out16 = jax.jit(functional(bf16)[0])(n.params, n.x, n.t, y=n.y)  # jit: one compile
    out32 = n.apply(n.params, n.x, n.t, y=n.y)
    assert out16.dtype == jnp.float32
    rel = float(jnp.linalg.norm(out16 - out32) / jnp.linalg.norm(out32))
    assert 0 < rel < 0.05, rel


@pytest.mark.parametrize("name", NAMES)
def test_functional_under_jit_equals_module_call(name):
    n = _net(name)
    jitted = jax.jit(n.apply)(n.params, n.x, n.t, s=0.5 * n.t, y=n.y)
    module = nnx.merge(*nnx.split(n.model))
    nnx.update(module, n.params)
    np.testing.assert_allclose(module(n.x, n.t, s=0.5 * n.t, y=n.y), jitted, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["mlp", "dit", pytest.param("unet", marks=pytest.mark.slow)])
def test_grad_wrt_params_is_finite(name):
    n = _net(name)

    def loss(p):
        out = n.apply(p, n.x, n.t, s=0.5 * n.t, y=n.y, key=_key(3))
        return jnp.mean(out**2)

    grads = jax.jit(jax.grad(loss))(n.params)
    assert jax.tree.structure(grads) == jax.tree.structure(n.params)
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    # Every parameter, down to the label and s embeddings, receives gradient.
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


def test_dit_patch_layout_is_local():
    # At init every adaLN-Zero block is the identity, so with an active head each output patch
    # depends on its own input patch only: this pins patchify/unpatchify to the same layout.
    n = _net("dit")  # patch size 2 on 8x8x2 inputs
    params = {
        **n.init_params,
        "ada_ln_final": _perturb(n.init_params["ada_ln_final"], 5, 1.0),
        "linear_final": _perturb(n.init_params["linear_final"], 6, 1.0),
    }
    bumped = n.x.at[0, 3, 5, 1].add(1.0)
    diff = jnp.abs(n.apply(params, bumped, n.t) - n.apply(params, n.x, n.t))
    changed = np.asarray(jnp.max(diff, axis=-1)[0] > 0)
    expected = np.zeros((8, 8), bool)
    expected[2:4, 4:6] = True
    np.testing.assert_array_equal(changed, expected)
    assert np.all(np.asarray(diff[1:]) == 0)


def test_mlp_base_is_four_hidden_layers_of_256():
    model = nnx.eval_shape(lambda: build_model("mlp", "base", input_shape=(2,), key=_key(0)))
    kernels = [k.shape for k in jax.tree.leaves(nnx.state(model, nnx.Param)) if len(k.shape) == 2]
    # Time MLP (64 -> 256 -> 256), input layer on [x, c], 3 more hidden layers, output.
    expected = [(64, 256), (256, 256), (258, 256), (256, 256), (256, 256), (256, 256), (256, 2)]
    assert sorted(kernels) == sorted(expected)


def _abstract_count(name, variant, **kw):
    return param_count(nnx.eval_shape(lambda: build_model(name, variant, key=_key(0), **kw)))


def test_unet_parameter_counts():
    # Ho et al. 2020, appendix B: the CIFAR-10 network has 35.7M parameters.
    n = _abstract_count("unet", "cifar10", input_shape=(32, 32, 3))
    assert abs(n - 35.7e6) / 35.7e6 < 0.01
    assert n == 35_746_307  # the count of the reference implementation (and its PyTorch ports)
    # Labels add exactly one (K + 1) x 4ch table; a flow map's second time one more time MLP
    # (ch -> 4ch -> 4ch); nothing else changes. ch = 32 for "digits".
    base = _abstract_count("unet", "digits", input_shape=(8, 8, 1))
    cond = _abstract_count("unet", "digits", input_shape=(8, 8, 1), num_classes=10)
    assert cond - base == 11 * 128
    two = _abstract_count("unet", "digits", input_shape=(8, 8, 1), two_times=True)
    assert two - base == (32 * 128 + 128) + (128 * 128 + 128)
    assert _abstract_count("unet", "tiny", input_shape=(8, 8, 1)) < 20_000


@pytest.mark.parametrize("variant,paper_millions", [("S/2", 33.0), ("B/2", 130.5)])
def test_dit_parameter_counts(variant, paper_millions):
    # Peebles & Xie 2023, Table 4: ImageNet-256 latents (32x32x4), 1000 classes (+1 null row),
    # learned sigma (8 output channels). Their count, sum(p.numel() for p in
    # model.parameters()), includes the frozen 2D sin-cos position embedding (256 x hidden),
    # which here is a constant rather than a parameter.
    shape = (32, 32, 4)
    n = _abstract_count("dit", variant, input_shape=shape, num_classes=1000, out_channels=8)
    hidden = {"S/2": 384, "B/2": 768}[variant]
    pos_embed = sincos_pos_embed_2d(hidden, 16, 16).size
    assert round((n + pos_embed) / 1e6, 1) == paper_millions
    assert abs(n - paper_millions * 1e6) / (paper_millions * 1e6) < 0.01


def test_unknown_name_or_variant_lists_choices():
    # Other architectures register themselves too: the list is sorted and names these three.
    with pytest.raises(ValueError, match=r"valid names: \[.*'dit'.*'mlp'.*'unet'.*\]"):
        build_model("resnet", "tiny", input_shape=(2,), key=_key(0))
    with pytest.raises(ValueError, match=r"valid variants: \['tiny', 'digits', 'cifar10'\]"):
        build_model("unet", "huge", input_shape=(8, 8, 1), key=_key(0))
    with pytest.raises(TypeError, match="valid ones"):
        build_model("mlp", "tiny", input_shape=(2,), key=_key(0), widht=3)


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_clear_errors(name):
    n = _net(name)
    apply_fn = _apply_of(name, num_classes=None)
    no_label_params = {**n.params, "cond": {**n.params["cond"], "label_embed": None}}
    del no_label_params["cond"]["label_embed"]
    with pytest.raises(ValueError, match=r"expects x of shape \(B, "):
        n.apply(n.params, n.x[0], n.t)  # missing batch axis
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(batch,\)"):
        n.apply(n.params, n.x, jnp.ones((B + 1,)))
    with pytest.raises(TypeError, match="labels y must be integers"):
        n.apply(n.params, n.x, n.t, y=jnp.zeros(B))
    with pytest.raises(ValueError, match="num_classes"):
        apply_fn(no_label_params, n.x, n.t, y=n.y)


def test_bad_construction_raises():
    rngs = nnx.Rngs(_key(0))
    with pytest.raises(ValueError, match="divisible by 2"):
        UNet((6, 6, 1), ch=4, ch_mult=(1, 2, 2), num_groups=2, rngs=rngs)
    with pytest.raises(ValueError, match=r"attn_resolutions=\(16,\) must be among"):
        UNet((8, 8, 1), ch=4, ch_mult=(1, 2), attn_resolutions=(16,), num_groups=2, rngs=rngs)
    with pytest.raises(ValueError, match="num_groups=32 must divide"):
        UNet((8, 8, 1), ch=4, ch_mult=(1, 2), attn_resolutions=(), rngs=rngs)
    with pytest.raises(ValueError, match="patch_size"):
        DiT((6, 6, 1), patch_size=4, hidden_size=16, num_heads=2, depth=1, rngs=rngs)
    with pytest.raises(ValueError, match=r"input_shape must be \(H, W, C\)"):
        UNet((8, 8), rngs=rngs)
    with pytest.raises(ValueError, match="activation"):
        build_model("mlp", "tiny", input_shape=(2,), key=_key(0), activation="sigmoidish")
