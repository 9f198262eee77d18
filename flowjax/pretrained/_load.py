"""Reading and writing the shipped models: .npz weights + manifest.json (sha256, config)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from flowjax.paths import AffinePath, get_path

__all__ = [
    "DEFAULT_DIR",
    "NAMES",
    "Pretrained",
    "file_sha256",
    "load",
    "read_arrays",
    "read_manifest",
    "save",
]

DEFAULT_DIR = Path(__file__).resolve().parent
MANIFEST = "manifest.json"
KINDS = ("velocity", "flow_map", "eps")
# The names the manifest is meant to hold (INTERFACES.md); `read_manifest()` says which exist.
NAMES: tuple[str, ...] = ("digits_fm", "digits_map", "digits_map_cfg", "digits_ddpm")
_SEP = "/"  # params {"a": {"b": w}} <-> npz key "a/b"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(directory: str | os.PathLike | None = None) -> dict[str, dict]:
    """name -> entry (file, sha256, kind, model, path, quality, ...) of `directory`'s manifest."""
    where = Path(directory or DEFAULT_DIR) / MANIFEST
    if not where.is_file():
        return {}
    with open(where) as f:
        return json.load(f)


def _flatten(params, prefix=""):
    out = {}
    for k in sorted(params, key=str):
        v = params[k]
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + _SEP))
        else:
            out[name] = v
    return out


def _unflatten_like(template, arrays, file):
    flat = _flatten(template)
    if set(flat) != set(arrays):
        missing, extra = sorted(set(flat) - set(arrays)), sorted(set(arrays) - set(flat))
        raise ValueError(
            f"pretrained: {file} does not hold this model's parameters "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )

    def fill(node, prefix=""):
        out = {}
        for k, v in node.items():
            name = f"{prefix}{k}"
            if isinstance(v, dict):
                out[k] = fill(v, name + _SEP)
            else:
                a = arrays[name]
                if a.shape != tuple(v.shape) or a.dtype != np.float32:
                    raise ValueError(
                        f"pretrained: {file}: array {name} is {a.dtype}{a.shape}, "
                        f"the model needs float32{tuple(v.shape)}"
                    )
                out[k] = jnp.asarray(a)
        return out

    return fill(template)


def read_arrays(file: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a weight file (no pickle), by their flattened parameter names."""
    try:
        with np.load(file, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as err:  # a damaged zip raises BadZipFile, OSError, ValueError ...
        raise ValueError(f"pretrained: cannot read {file}: {err}") from None


def _build(model_cfg: dict):
    from flowjax.models import build_model, functional

    net = build_model(
        model_cfg["name"],
        model_cfg["variant"],
        input_shape=tuple(model_cfg["input_shape"]),
        num_classes=model_cfg.get("num_classes"),
        key=jax.random.key(0),
        **model_cfg.get("overrides", {}),
    )
    return functional(net)


class _EventApply(eqx.Module):
    """apply_fn on examples of any shape whose size is the network's flat input size."""

    net_apply: Callable = eqx.field(static=True)
    net_shape: tuple[int, ...] = eqx.field(static=True)

    def __call__(self, params, x, t, *, s=None, y=None, context=None, key=None):
        x = jnp.asarray(x)
        flat = x.reshape((x.shape[0], *self.net_shape))
        out = self.net_apply(params, flat, t, s=s, y=y, context=context, key=key)
        return out.reshape(x.shape)


class Pretrained(eqx.Module):
    """A shipped model: `apply_fn(params, x, t, *, s=None, y=None)` and its parameters.

    Attributes:
      name: its name in the manifest.
      apply_fn: the network; x of shape (B, 8, 8, 1) (or any shape of the same size per
        example), t scalar or (B,), `s=` the start time of a flow map, `y=` labels (B,)
        (label `num_classes` is the null label).
      params: the parameters (nested dict of float32 arrays, bit-identical to the file).
      path: the probability path it was trained on (`fj.paths`).
      kind: "velocity", "flow_map" (u of X(x, s, t) = x + (t - s) u) or "eps".
      num_classes: real classes (None: unconditional).
      event_shape: one example's shape, e.g. (8, 8, 1).
      file: the weight file it was read from.
      metadata_json: the manifest entry (config, training, quality, sha256) as JSON; the
        `metadata` property parses it.
    """

    name: str = eqx.field(static=True)
    apply_fn: Callable = eqx.field(static=True)
    params: Any
    path: AffinePath
    kind: str = eqx.field(static=True)
    num_classes: int | None = eqx.field(static=True)
    event_shape: tuple[int, ...] = eqx.field(static=True)
    file: str = eqx.field(static=True)
    metadata_json: str = eqx.field(static=True)  # hashable, so the module can be a jit argument

    @property
    def metadata(self) -> dict:
        """The manifest entry: config, training, quality, sha256."""
        return json.loads(self.metadata_json)

    def _labels(self, y, guidance):
        if y is None:
            if guidance is not None:
                raise ValueError(f"{self.name}: guidance needs labels y")
            return None
        y = jnp.asarray(y)
        if not jnp.issubdtype(y.dtype, jnp.integer) or y.ndim != 1:
            raise ValueError(f"{self.name}: y must be int labels (B,), got {y.dtype}{y.shape}")
        return y

    def prediction(self, y: Int[Array, " B"] | None = None, *, guidance: float | None = None):
        """The raw prediction f(x, t) of the model's kind ("velocity"; "eps"; u(x, t, t) of a
        flow map) for labels y (None: the null label of a class model); `guidance` w:
        classifier-free guidance (1 - w) f(x, t) + w f(x, t | y) (`fj.sampling.cfg`)."""
        from flowjax.sampling import cfg

        y = self._labels(y, guidance)
        diagonal = self.kind == "flow_map"

        def fn(x, t, yy=None):
            return self.apply_fn(self.params, x, t, s=t if diagonal else None, y=yy)

        if y is None:
            if self.num_classes is None:
                return fn
            null = self.num_classes
            return lambda x, t: fn(x, t, jnp.full((x.shape[0],), null, jnp.int32))
        if guidance is None:
            return lambda x, t: fn(x, t, y)
        return cfg(fn, y, null_label=self.num_classes, guidance=guidance)

    def velocity_field(
        self, y: Int[Array, " B"] | None = None, *, guidance: float | None = None
    ) -> Callable:
        """v(x, t) for labels y (None: the null label), optionally CFG-guided with weight w.

        An "eps" prediction is converted on the model's path (t clamped to
        [t_eps, 1 - t_eps], the manifest's t_eps); a flow map gives u(x, t, t).
        """
        from flowjax.sampling import as_velocity

        kind = "velocity" if self.kind == "flow_map" else self.kind
        t_eps = float(self.metadata.get("t_eps", 0.0))
        return as_velocity(self.prediction(y, guidance=guidance), kind, self.path, t_eps=t_eps)

    def flow_map(self, y: Int[Array, " B"] | None = None):
        """X(x, s, t) for labels y (None: the null label of a class model)."""
        from flowjax.flowmaps import as_callable

        if self.kind != "flow_map":
            raise ValueError(f"{self.name} is a {self.kind!r} model, not a flow map")
        y = self._labels(y, None)
        if y is None and self.num_classes is not None:
            y = jnp.asarray(self.num_classes, jnp.int32)
        return as_callable(self.apply_fn, self.params, y=y)

    def __call__(self, x: Float[Array, " B *D"], t, *, s=None, y=None) -> Float[Array, " B *D"]:
        return self.apply_fn(self.params, x, t, s=s, y=y)

    def sample(
        self,
        key,
        y: Int[Array, " B"] | None = None,
        *,
        num_samples: int | None = None,
        num_steps: int = 1,
        guidance: float | None = None,
        solver: str | None = None,
    ) -> tuple[Float[Array, " B *D"], int]:
        """(samples, NFE) from x0 = N(0, I) draws of `key`, one per label of y (or
        `num_samples` with the null label).

        A flow map jumps `num_steps` times on the uniform grid (guidance: not available, use
        "digits_map_cfg"); a velocity model takes `num_steps` steps of `solver` (default
        "heun"; "dopri5" adaptive when num_steps is 0); an eps model `num_steps` DPM-Solver++
        2M steps (`solver` any `fj.sampling.sample_multistep` solver).
        """
        from flowjax.flowmaps import sample as jump
        from flowjax.sampling import sample_multistep, sample_ode

        n = num_samples if y is None else int(jnp.shape(y)[0])
        if n is None:
            raise ValueError(f"{self.name}.sample: give labels y or num_samples")
        x0 = jax.random.normal(key, (n, *self.event_shape), jnp.float32)
        if self.kind == "flow_map":
            if guidance is not None:
                raise ValueError(f"{self.name}.sample: a flow map takes no guidance")
            return jump(self.flow_map(y), x0, num_steps=num_steps), num_steps
        if self.kind == "eps":
            pred = self.prediction(y, guidance=guidance)
            x1, info = sample_multistep(
                pred,
                x0,
                kind="eps",
                path=self.path,
                solver=solver or "dpm++2m",
                num_steps=num_steps,
            )
            return x1, int(info["nfe"]) * (2 if guidance is not None else 1)
        v = self.velocity_field(y, guidance=guidance)
        if num_steps == 0:
            x1, info = sample_ode(v, x0, solver=solver or "dopri5", rtol=1e-4, atol=1e-4)
        else:
            x1, info = sample_ode(v, x0, solver=solver or "heun", num_steps=num_steps)
        cost = 2 if guidance is not None else 1  # CFG: a conditional and a null half per call
        return x1, int(info["nfe"]) * cost


def load(name: str, *, directory: str | os.PathLike | None = None) -> Pretrained:
    """A shipped model by name, its file's sha256 checked against the manifest.

    Args:
      name: one of `NAMES` present in the manifest (`read_manifest()`).
      directory: where the manifest and weights are (default: the installed package's).

    Raises:
      ValueError: an unknown name, or a weight file that is missing, damaged or swapped
        (its sha256 or its arrays do not match the manifest); the message names the file.
    """
    manifest = read_manifest(directory)
    if name not in manifest:
        raise ValueError(f"pretrained: unknown model {name!r}; available: {sorted(manifest)}")
    entry = manifest[name]
    file = Path(directory or DEFAULT_DIR) / entry["file"]
    if not file.is_file():
        raise ValueError(f"pretrained: weight file {file} of {name!r} is missing")
    digest = file_sha256(file)
    if digest != entry["sha256"]:
        raise ValueError(
            f"pretrained: {file} is damaged or not the file of {name!r} "
            f"(sha256 {digest[:12]}..., manifest {entry['sha256'][:12]}...)"
        )
    arrays = read_arrays(file)
    net_apply, template = _build(entry["model"])
    params = _unflatten_like(template, arrays, file)
    event = tuple(entry["event_shape"])
    net_shape = tuple(entry["model"]["input_shape"])
    apply_fn = (
        net_apply if net_shape == event else _EventApply(net_apply, net_shape)
    )  # e.g. an MLP on the 64 pixels of an (8, 8, 1) image
    return Pretrained(
        name=name,
        apply_fn=apply_fn,
        params=params,
        path=get_path(entry["path"], **entry.get("path_kwargs", {})),
        kind=entry["kind"],
        num_classes=entry["model"].get("num_classes"),
        event_shape=event,
        file=str(file),
        metadata_json=json.dumps(entry, sort_keys=True),
    )


def save(
    name: str,
    params,
    *,
    model: dict,
    kind: str,
    path: str,
    event_shape: tuple[int, ...],
    directory: str | os.PathLike | None = None,
    **extra,
) -> dict:
    """Writes `name.npz` (float32 arrays, no pickle) and its manifest entry; returns the entry.

    Args:
      name: the model's name.
      params: nested dict of arrays (from `fj.models.functional`).
      model: the `build_model` config: name, variant, input_shape, num_classes, overrides.
      kind: "velocity", "flow_map" or "eps".
      path: a `fj.paths.PATHS` name.
      event_shape: one example's shape as users pass it.
      directory: where to write (default: the package's folder).
      **extra: JSON-serialisable metadata (quality, training, t_eps, ...).
    """
    if kind not in KINDS:
        raise ValueError(f"save: kind must be one of {KINDS}, got {kind!r}")
    flat = {k: np.asarray(v) for k, v in _flatten(jax.device_get(params)).items()}
    bad = [k for k, v in flat.items() if v.dtype != np.float32]
    if bad:
        raise ValueError(f"save: parameters must be float32; {bad[:3]} are not")
    where = Path(directory or DEFAULT_DIR)
    where.mkdir(parents=True, exist_ok=True)
    file = where / f"{name}.npz"
    np.savez(file, **flat)
    entry = dict(
        file=file.name,
        sha256=file_sha256(file),
        size_bytes=file.stat().st_size,
        num_params=int(sum(math.prod(v.shape) for v in flat.values())),
        kind=kind,
        path=path,
        event_shape=list(event_shape),
        model=json.loads(json.dumps(model)),
        **json.loads(json.dumps(extra)),
    )
    manifest = read_manifest(where)
    manifest[name] = entry
    with open(where / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    return entry
