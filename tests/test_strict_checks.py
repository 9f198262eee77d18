"""The strict checks of tests/conftest.py are on where they are listed, and catch what they
are for (the negative control of every strict module: these would pass with them off)."""

import jax
import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest

import flowjax as fj


def test_rank_promotion_raises():
    with pytest.raises(ValueError, match="rank_promotion"):
        jnp.ones((4, 3)) + jnp.ones(3)
    assert (jnp.ones((4, 3)) + jnp.ones(3)[None, :]).shape == (4, 3)  # explicit is fine


def test_dtype_promotion_is_strict():
    with pytest.raises(jax.dtypes.TypePromotionError):
        jnp.arange(3) + jnp.ones(3)
    with pytest.raises(jax.dtypes.TypePromotionError):
        jnp.ones(3, jnp.float32) + np.ones(3, np.float16)


def test_public_annotations_are_checked_at_run_time():
    path = fj.paths.CondOT()
    x = jnp.zeros((4, 2))
    # Shapes that disagree with `Float[Array, "B *D"]` for both pred and x.
    with pytest.raises(jaxtyping.TypeCheckError, match="parameter 'x'"):
        fj.paths.convert(jnp.zeros((4, 3)), src="eps", dst="x1", path=path, x=x, t=0.5)
    # An int where an array of floats is annotated.
    with pytest.raises(jaxtyping.TypeCheckError):
        fj.paths.convert(jnp.zeros((4, 2), jnp.int32), src="eps", dst="x1", path=path, x=x, t=0.5)
    out = fj.paths.convert(x, src="eps", dst="x1", path=path, x=x, t=0.5)
    assert out.shape == (4, 2)
