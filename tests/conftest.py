"""Test settings: strict numerics, deterministic hypothesis profiles, key-reuse checking, one
compilation cache for the whole run."""

import os
import shutil
import tempfile

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


_CACHE_ENV = "JAXLOGITS_TEST_XLA_CACHE"


def pytest_configure(config):
  """One persistent XLA compilation cache for the run, shared by the pytest-xdist workers.

  Most of the suite's time is XLA compiling, and many programs are compiled again: after each
  module (see ``_release_compiled_programs``), in the other worker, for every fresh closure of
  the same function (the bench's workloads, the docstring examples). The cache keys programs by
  their content, so a program compiled once loads in a fraction of the time everywhere else.
  The directory is made by the first process (the controller, which the workers inherit it
  from) and removed when that process ends.
  """
  if _CACHE_ENV not in os.environ:
    os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="jaxlogits-xla-cache-")
    config._jaxlogits_cache_owner = True
  # (Also as JAX's own variables, for the subprocesses that tests start: the CLI's, the
  # multi-device checks'.)
  settings = {"jax_compilation_cache_dir": os.environ[_CACHE_ENV],
              "jax_persistent_cache_min_compile_time_secs": 0,
              "jax_persistent_cache_min_entry_size_bytes": 0}
  for name, value in settings.items():
    jax.config.update(name, value)
    os.environ[name.upper()] = str(value)


def pytest_unconfigure(config):
  if getattr(config, "_jaxlogits_cache_owner", False):
    shutil.rmtree(os.environ.pop(_CACHE_ENV), ignore_errors=True)
