"""Test settings: strict numerics, deterministic hypothesis profiles, key-reuse checking."""

import os

import hypothesis
import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "allow")

hypothesis.settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow,
                           hypothesis.HealthCheck.data_too_large])
hypothesis.settings.register_profile(
    "thorough", max_examples=1000, deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def key_reuse_checked():
  """Turns on JAX's key-reuse checker for one test."""
  with jax.debug_key_reuse(True):
    yield


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops compiled programs after each test module.

  The suite compiles thousands of programs (every hypothesis shape); keeping them all in one
  process grows memory without bound, and late in a full run XLA's CPU compiler has crashed.
  """
  yield
  jax.clear_caches()
