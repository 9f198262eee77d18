"""Shared test fixtures and the strict checks the test modules run under.

Tests run float32 by default (what users train in); numerical-truth tests that need oracle
accuracy request the `x64` fixture, which enables double precision for that test only.

Strict checks (diffrax's habit), per test module as listed in `STRICT`:
- rank promotion raises (`jax_numpy_rank_promotion="raise"`): no implicit broadcasting of
  arrays of different rank;
- dtype promotion is "strict" (`jax_numpy_dtype_promotion`), no implicit int -> float or
  float32 -> float64, where the code under test allows it: optax 0.2.8's Adam itself mixes
  Python floats with its int32 count, so modules that train keep "standard";
- the jaxtyping annotations of the public API (`TYPECHECKED`) are checked at run time by
  beartype, through jaxtyping's import hook installed here before any test imports flowjax.
A module not listed runs with JAX's defaults and no type checks; list it once it passes.
"""

import os
import shutil
import tempfile

import beartype  # noqa: F401  (the run-time checker of the import hook below)
import jax
import jaxtyping
import pytest

TYPECHECKED = (
    "flowjax.analytic",
    "flowjax.couplings",
    "flowjax.discrete",
    "flowjax.flowmaps",
    "flowjax.likelihood",
    "flowjax.manifolds",
    "flowjax.paths",
    "flowjax.sampling",
    "flowjax.sources",
)
# PEP 484's numeric tower: an int is a valid `float` argument (`t0=1`), as type checkers say.
jaxtyping.install_import_hook(
    TYPECHECKED, "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))"
)
# Checks are switched on per test by `_strict_checks` (also off while modules are collected).
jaxtyping.config.update("jaxtyping_disable", True)

# test module -> (dtype promotion, check the annotations, tests that check the library's own
# one-line error for an input its annotations already reject: run without the type checks).
# Rank promotion raises in every module listed. Not listed yet, and why (2026-12-04):
#   test_couplings: ott-jax broadcasts (n,) against (1, 1) inside its costs; int64/int32 mix.
#   test_likelihood: implicit broadcasts in the test's fields; error-message tests.
#   test_multistep, test_sampling: implicit int -> float promotion in the samplers.
#   test_sources and the rest: not tried yet.
STRICT = {
    "test_analytic": ("strict", True, ()),
    "test_grids": (
        "strict",
        True,
        ("test_bad_grids_raise_one_clear_error", "test_bad_grid_parameters"),
    ),
    "test_paths": ("strict", True, ("test_convert_rejects_bad_input",)),
    "test_resume": ("strict", True, ()),
    "test_strict_checks": ("strict", True, ()),
    "test_train": ("standard", True, ()),  # optax's Adam
}


# One persistent XLA compilation cache per test run, shared by the xdist workers and by the
# child processes of launcher / notebook / multi-process tests (they inherit the environment).
# Most programs are compiled more than once in a run: studies run twice to check reproducibility,
# resumed runs recompile what the uninterrupted one compiled, smoke configs repeat across files.
# JAX keys an entry by the program's HLO, compile options, devices and versions, so a hit returns
# the executable that compiling would give. Created by the controller before the workers start
# and removed at the end, so every run starts cold (as CI does). FLOWJAX_TEST_XLA_CACHE="" turns
# it off.
_CACHE_ENV = "FLOWJAX_TEST_XLA_CACHE"


def pytest_configure(config):
    if not hasattr(config, "workerinput") and _CACHE_ENV not in os.environ:
        os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="flowjax-xla-cache-")
        config._flowjax_xla_cache = os.environ[_CACHE_ENV]
    cache = os.environ.get(_CACHE_ENV, "")
    if cache:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.3"
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.3)


def pytest_unconfigure(config):
    cache = getattr(config, "_flowjax_xla_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(autouse=True)
def _strict_checks(request):
    module = request.module.__name__.rpartition(".")[2]
    if module not in STRICT:
        yield
        return
    dtype, types, unchecked = STRICT[module]
    jaxtyping.config.update(
        "jaxtyping_disable", not types or request.function.__name__ in unchecked
    )
    try:
        with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion(dtype):
            yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", True)


@pytest.fixture
def x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)
