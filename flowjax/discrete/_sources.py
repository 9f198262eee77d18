"""Source distributions p(x0) of discrete paths and the checks on token arrays.

Tokens are int arrays (B, L) with data values in [0, V). A source has `num_states` states:
the V data tokens for `UniformSource`, plus one absorbing mask state `mask_id = V` for
`MaskSource` (Gat et al. 2024, sec. 2.2, "masked" source; Austin et al. 2021, absorbing state).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

__all__ = ["AbstractDiscreteSource", "UniformSource", "MaskSource", "check_tokens", "SOURCES"]


def _check_vocab(vocab_size, who: str) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
        raise TypeError(f"{who}: vocab_size must be an int, got {vocab_size!r}")
    if vocab_size < 2:
        raise ValueError(f"{who}: vocab_size must be >= 2, got {vocab_size}")


def check_tokens(x, num_states: int, name: str = "tokens") -> Int[Array, "batch length"]:
    """Checks `x` is an integer array (B, L) with values in [0, num_states).

    Raises TypeError for a non-integer array and ValueError for a wrong rank; values are
    checked eagerly when concrete and with `eqx.error_if` under `jit`.
    """
    if not hasattr(x, "dtype"):
        x = np.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array of token ids, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (B, L), got shape {tuple(x.shape)}")
    if not isinstance(x, jax.core.Tracer):
        xn = np.asarray(x)
        bad = (xn < 0) | (xn >= num_states)
        if bad.any():
            raise ValueError(f"{name} must lie in [0, {num_states}), got token id {xn[bad][0]}")
        return jnp.asarray(x)
    bad = jnp.any((x < 0) | (x >= num_states))
    return eqx.error_if(x, bad, f"{name} must lie in [0, {num_states})")


class AbstractDiscreteSource(eqx.Module):
    """p(x0) over `num_states` states, factorized over positions."""

    vocab_size: int = eqx.field(static=True)

    @property
    @abc.abstractmethod
    def num_states(self) -> int:
        """Number of states a token of x_t can take (V, or V + 1 with a mask)."""

    @abc.abstractmethod
    def probs(self) -> Float[Array, " states"]:
        """p0 over the `num_states` states of one token."""

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray, shape: tuple[int, int]) -> Int[Array, "batch length"]:
        """x0 of shape (B, L), int32."""

    def check_data(self, x1, name: str = "x1"):
        """x1 must be data tokens in [0, V) (so it never holds the mask id)."""
        return check_tokens(x1, self.vocab_size, name)


class UniformSource(AbstractDiscreteSource):
    """x0 uniform over the V data tokens."""

    def __check_init__(self):
        _check_vocab(self.vocab_size, "UniformSource")

    @property
    def num_states(self) -> int:
        return int(self.vocab_size)

    def probs(self):
        return jnp.full((self.vocab_size,), 1.0 / self.vocab_size)

    def sample(self, key, shape):
        return jax.random.randint(key, tuple(shape), 0, self.vocab_size, jnp.int32)


class MaskSource(AbstractDiscreteSource):
    """x0 = the mask token everywhere; the mask id is V (one past the data vocabulary)."""

    mask_id: int | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        _check_vocab(self.vocab_size, "MaskSource")
        if self.mask_id is not None and self.mask_id != self.vocab_size:
            raise ValueError(
                f"MaskSource: mask_id={self.mask_id} collides with the data tokens "
                f"[0, {self.vocab_size}) or leaves a gap; the mask id must be vocab_size="
                f"{self.vocab_size}"
            )

    @property
    def mask(self) -> int:
        return int(self.vocab_size)

    @property
    def num_states(self) -> int:
        return int(self.vocab_size) + 1

    def probs(self):
        return jax.nn.one_hot(self.vocab_size, self.vocab_size + 1)

    def sample(self, key, shape):
        del key
        return jnp.full(tuple(shape), self.vocab_size, jnp.int32)


SOURCES: dict[str, type[AbstractDiscreteSource]] = {"uniform": UniformSource, "mask": MaskSource}
