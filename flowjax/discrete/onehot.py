"""Continuous flow matching on one-hot vectors: the baseline of discrete flow matching.

Tokens x1 (B, L) become one-hot vectors e(x1) in R^{L x V}; a Gaussian path x_t = alpha(t) e(x1) +
sigma(t) x0, x0 ~ N(0, I) (CondOT by default: alpha = t, sigma = 1 - t) is learned by the
conditional flow-matching loss of `fj.objectives.FlowMatching` (Lipman et al. 2023, eq. (9)),

    L(theta) = E_{t, x0, x1} || v_theta(x_t, t) - (alpha'(t) e(x1) + sigma'(t) x0) ||^2,

and samples come from the ODE dx/dt = v_theta(x, t) from t = 0 to 1 followed by argmax over V
(the "continuous relaxation" arm of Gat et al. 2024, sec. 6, and of Dieleman et al. 2022). The
token transformer takes the float x_t (B, L, V) through its embedding matrix (x_t @ E) and its
(B, L, V) output is read as the velocity, so this arm trains the same network as the others.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PRNGKeyArray

from flowjax import paths
from flowjax.discrete._sources import _check_vocab, check_tokens

__all__ = ["OneHotFlowMatching", "OneHotVelocity", "sample_onehot"]


class OneHotFlowMatching(eqx.Module):
    """Flow matching of one-hot tokens; `(params, key, batch, *, model=None) -> (loss, aux)`.

    Fields: vocab_size V; path (an affine `fj.paths` path, CondOT by default); model (an apply
    function (params, x (B, L, V) float, t) -> velocity (B, L, V), or pass it at call time);
    num_classes / label_dropout as in `fj.objectives.FlowMatching`.
    """

    vocab_size: int = eqx.field(static=True)
    path: paths.AffinePath = paths.CondOT()
    model: Callable | None = eqx.field(default=None, static=True)
    num_classes: int | None = eqx.field(default=None, static=True)
    label_dropout: float = eqx.field(default=0.0, static=True)

    def __check_init__(self):
        _check_vocab(self.vocab_size, "OneHotFlowMatching")
        # FlowMatching checks path, model and the label settings once, here.
        self.flow_matching(self.model)

    def flow_matching(self, model):
        from flowjax.objectives import FlowMatching

        return FlowMatching(
            path=self.path,
            model=model,
            num_classes=self.num_classes,
            label_dropout=self.label_dropout,
        )

    def __call__(self, params, key, batch, *, model=None):
        if not isinstance(batch, dict) or "x1" not in batch:
            raise ValueError("OneHotFlowMatching: batch must be a dict with 'x1' (B, L) tokens")
        x1 = check_tokens(batch["x1"], self.vocab_size, "OneHotFlowMatching: batch['x1']")
        e1 = jax.nn.one_hot(x1, self.vocab_size, dtype=jnp.float32)
        fm = self.flow_matching(self.model if model is None else model)
        return fm(params, key, {**batch, "x1": e1})


class OneHotVelocity(eqx.Module):
    """(x, t) -> apply_fn(params, x, t, **kwargs): a pytree, so compiled samplers are reused."""

    apply_fn: Callable = eqx.field(static=True)
    params: object
    kwargs: dict = eqx.field(default_factory=dict)

    def __call__(self, x, t):
        return self.apply_fn(self.params, x, t, **self.kwargs)


def sample_onehot(
    velocity: Callable,
    key: PRNGKeyArray,
    shape: tuple[int, int],
    vocab_size: int,
    *,
    num_steps: int,
    solver: str = "euler",
) -> Int[Array, "batch length"]:
    """Tokens argmax_V x(1) of the ODE dx/dt = velocity(x, t) from x(0) ~ N(0, I) (B, L, V).

    Fixed steps (NFE = num_steps for "euler"), through `fj.sampling.sample_ode` (diffrax,
    inside one jit).
    """
    from flowjax import sampling

    if not callable(velocity):
        raise TypeError(f"velocity must be a callable (x, t) -> (B, L, V), got {velocity!r}")
    _check_vocab(vocab_size, "sample_onehot")
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (B, L) with positive sizes, got {shape!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    x0 = jax.random.normal(key, (*shape, vocab_size), jnp.float32)
    x1, _ = sampling.sample_ode(velocity, x0, solver=solver, num_steps=num_steps)
    return jnp.argmax(x1, axis=-1).astype(jnp.int32)
