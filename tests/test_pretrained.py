"""The shipped models (`fj.pretrained`): they load bit-identically from checksummed files,
reproduce their recorded quality within noise, and damaged or swapped files are refused."""

import fnmatch
import json
import os
import shutil
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tomllib

import flowjax as fj
from flowjax import pretrained

MANIFEST = pretrained.read_manifest()
SHIPPED = [n for n in pretrained.NAMES if n in MANIFEST]
ROOT = Path(__file__).resolve().parent.parent


def _flat(params, prefix=""):
    out = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def test_the_shipped_models_are_there():
    assert SHIPPED[:2] == ["digits_fm", "digits_map"], sorted(MANIFEST)


@pytest.mark.parametrize("name", SHIPPED)
def test_loads_bit_identically(name):
    model = pretrained.load(name)
    entry = MANIFEST[name]
    file = Path(model.file)
    assert file.stat().st_size < 2 * 1024 * 1024
    assert pretrained.file_sha256(file) == entry["sha256"]
    stored = pretrained.read_arrays(file)
    loaded = _flat(jax.device_get(model.params))
    assert set(loaded) == set(stored)
    for k, a in stored.items():
        assert a.dtype == np.float32 and loaded[k].dtype == np.float32, k
        np.testing.assert_array_equal(loaded[k].view(np.uint32), a.view(np.uint32), err_msg=k)
    assert model.kind == entry["kind"] and model.num_classes == 10
    assert model.metadata["sha256"] == entry["sha256"]
    x = jnp.zeros((2, 8, 8, 1))
    out = model(
        x,
        jnp.full((2,), 0.5),
        s=jnp.full((2,), 0.25) if model.kind == "flow_map" else None,
        y=jnp.array([3, 10]),
    )
    assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))


def _check_fd(model, params=None):
    check = model.metadata["quality"]["check"]
    if params is not None:
        model = eqx.tree_at(lambda m: m.params, model, params)
    x_te, y_te = fj.data.digits_arrays("test")
    assert check["n"] == len(y_te)
    # a fresh seed (the manifest used seeds 0, 1, 2 of the same key)
    key = jax.random.fold_in(jax.random.key(4321), 3)
    x, _ = model.sample(
        key, jnp.asarray(y_te, jnp.int32), num_steps=check["steps"], guidance=check["guidance"]
    )
    return float(fj.metrics.digits_fd(np.asarray(x), x_te)), check


def _band(check):
    return max(4 * check["fd_std"], 0.15 * check["fd_mean"])


@pytest.mark.parametrize("name", SHIPPED)
def test_reproduces_recorded_quality(name):
    model = pretrained.load(name)
    fd, check = _check_fd(model)
    assert abs(fd - check["fd_mean"]) <= _band(check), (fd, check)


def test_quality_check_catches_a_perturbed_model():
    """Negative control: the same check on the teacher with noise on its weights fails."""
    model = pretrained.load("digits_map")
    leaves, tree = jax.tree.flatten(model.params)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    noisy = [
        p + 0.05 * jnp.std(p) * jax.random.normal(k, p.shape) + 0.02
        for p, k in zip(leaves, keys, strict=True)
    ]
    fd, check = _check_fd(model, jax.tree.unflatten(tree, noisy))
    assert abs(fd - check["fd_mean"]) > _band(check), (fd, check)


def _copy(tmp_path):
    for f in pretrained.DEFAULT_DIR.iterdir():
        if f.suffix in (".npz", ".json"):
            shutil.copy(f, tmp_path / f.name)
    return tmp_path


def test_damaged_file_is_refused(tmp_path):
    d = _copy(tmp_path)
    f = d / MANIFEST["digits_map"]["file"]
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit of one byte
    f.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"{f.name}.*damaged") as err:
        pretrained.load("digits_map", directory=d)
    assert str(f) in str(err.value) and "\n" not in str(err.value)
    pretrained.load("digits_fm", directory=d)  # the others still load


def test_swapped_file_is_refused(tmp_path):
    d = _copy(tmp_path)
    fm, fmap = d / MANIFEST["digits_fm"]["file"], d / MANIFEST["digits_map"]["file"]
    shutil.copy(fm, fmap)
    with pytest.raises(ValueError, match=fmap.name):
        pretrained.load("digits_map", directory=d)
    # even with the manifest's checksum forged, a velocity model's arrays do not fit the map
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["digits_map"]["sha256"] = pretrained.file_sha256(fmap)
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"{fmap.name}.*parameters"):
        pretrained.load("digits_map", directory=d)


def test_pickled_or_missing_file_is_refused(tmp_path):
    d = _copy(tmp_path)
    f = d / MANIFEST["digits_fm"]["file"]
    np.savez(f, evil=np.array([object()], dtype=object))
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["digits_fm"]["sha256"] = pretrained.file_sha256(f)
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"cannot read {f}"):
        pretrained.load("digits_fm", directory=d)
    os.remove(f)
    with pytest.raises(ValueError, match="missing"):
        pretrained.load("digits_fm", directory=d)
    with pytest.raises(ValueError, match="unknown model"):
        pretrained.load("digits_nope", directory=d)


def test_package_data_ships_the_weights():
    """pyproject's package-data globs cover every file of the manifest (so `pip install .`
    installs them)."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = cfg["tool"]["setuptools"]["package-data"]["flowjax"]
    files = ["pretrained/manifest.json"] + [f"pretrained/{e['file']}" for e in MANIFEST.values()]
    for f in files:
        assert any(fnmatch.fnmatch(f, g) for g in globs), (f, globs)
        assert (ROOT / "flowjax" / f).is_file()
