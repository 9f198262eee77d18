"""Periodic evaluation: samples from the (EMA) model, a quality metric, and pictures.

Samples come from `fj.sampling.sample_ode` on the velocity field of the model (any
prediction kind is converted by `fj.sampling.as_velocity`, guidance by `fj.sampling.cfg`),
inside one jitted function per run. The metric (a name of the one metric vocabulary,
`fj.metrics.METRICS`, computed by `fj.metrics.Evaluator`) compares them with
`fj.data.reference_samples` of the held-out split.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["METRICS", "resolve_metric", "make_sampler", "compute_metric", "save_picture", "to_host"]

# The trainer's `eval.metric`: a name of the one metric vocabulary (`fj.metrics.METRICS`) that
# needs only samples and held-out data, "none", or "auto" (by dataset, then by kind of data).
METRICS: dict[str, str | None] = {
    "auto": None,
    "none": None,
    **{name: name for name in ("energy", "mmd", "w2", "digits_fd")},
}
AUTO_BY_DATASET = {"digits": "digits_fd"}
AUTO_BY_KIND = {"points": "energy", "images": "none"}


def resolve_metric(name: str, spec) -> str:
    """The metric "auto" stands for on a dataset (see AUTO_BY_DATASET / AUTO_BY_KIND)."""
    if name != "auto":
        return name
    return AUTO_BY_DATASET.get(spec.name, AUTO_BY_KIND.get(spec.kind, "none"))


def to_host(x: jax.Array) -> np.ndarray:
    """A replicated (or fully addressable) array as numpy, on every process."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    return np.asarray(x.addressable_data(0))


def make_sampler(
    apply_fn: Callable,
    *,
    path,
    kind: str,
    shape: tuple[int, ...],
    num_classes: int | None,
    batch_size: int,
    solver: str,
    num_steps: int | None,
    rtol: float,
    atol: float,
    guidance: float = 1.0,
    t_eps: float = 0.0,
    source: Any = None,
    out_sharding: Any = None,
) -> Callable[[Any, jax.Array], tuple[jax.Array, jax.Array | None, jax.Array]]:
    """A jitted `(params, key) -> (x (n, *shape), labels (n,) or None, nfe)`.

    x0 ~ `source` (the training source, `config.source`; N(0, I) when None) is transported
    from t = 0 to t = 1. A class-conditional model gets uniform
    random labels and, with guidance != 1, classifier-free guidance.
    """
    from flowjax import sampling

    def draw(params, key):
        k_x, k_y = jax.random.split(key)
        if source is None:
            x0 = jax.random.normal(k_x, (batch_size, *shape), jnp.float32)
        else:
            x0 = source.sample(k_x, (batch_size, *shape), dtype=jnp.float32)
        labels = None
        if num_classes is None:
            fn = lambda x, t: apply_fn(params, x, t)  # noqa: E731
        else:
            labels = jax.random.randint(k_y, (batch_size,), 0, num_classes)
            if guidance == 1.0:
                fn = lambda x, t: apply_fn(params, x, t, y=labels)  # noqa: E731
            else:
                fn = sampling.cfg(
                    lambda x, t, y: apply_fn(params, x, t, y=y),
                    labels,
                    null_label=num_classes,
                    guidance=guidance,
                )
        v = sampling.as_velocity(fn, kind, path, t_eps=t_eps)
        x, info = sampling.sample_ode(
            v, x0, solver=solver, num_steps=num_steps, rtol=rtol, atol=atol
        )
        return x, labels, info["nfe"]

    return jax.jit(draw, out_shardings=out_sharding)


def compute_metric(
    name: str, samples: np.ndarray, reference: np.ndarray, spec=None
) -> float | None:
    """`name` of samples against held-out data through `fj.metrics.Evaluator` (None for "none").

    Without a dataset spec only the sample metrics (energy, mmd, w2, digits_fd) are available.
    """
    from flowjax import metrics

    if name == "none":
        return None
    if spec is None:
        from flowjax.data import DatasetSpec

        spec = DatasetSpec("", tuple(np.shape(reference)[1:]), None, "points", make_source=None)
    n = max(len(samples), len(reference))  # every sample and every reference point
    options = metrics.EvalOptions(energy_samples=n, w2_samples=n)
    return metrics.Evaluator(spec, (name,), reference=reference, options=options)(samples)[name]


def _scatter(ax, x, reference):
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], s=1, c="0.75", label="data")
    ax.scatter(x[:, 0], x[:, 1], s=1, c="C0", label="samples")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=5, fontsize=7)


def _grid(ax, x, reference):
    del reference
    n = len(x)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w, c = x.shape[1:]
    canvas = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, c), np.float32)
    for i, img in enumerate(np.clip((x + 1.0) / 2.0, 0.0, 1.0)):
        r, q = divmod(i, cols)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = img
    ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None)
    ax.axis("off")


PICTURES = {"points": _scatter, "images": _grid}


def save_picture(
    filename: str, samples: np.ndarray, kind: str, *, reference=None, title: str = ""
) -> str:
    """Scatter plot (points) or image grid (images) of samples, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(filename) or ".", exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    PICTURES[kind](ax, samples, reference)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(filename)
    plt.close(fig)
    return filename
