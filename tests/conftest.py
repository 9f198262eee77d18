"""Shared test fixtures.

Tests run float32 by default (what users train in); numerical-truth tests that need oracle
accuracy request the `x64` fixture, which enables double precision for that test only.
"""

import jax
import pytest


@pytest.fixture
def x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)
