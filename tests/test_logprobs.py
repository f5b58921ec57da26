"""Tests of the log-probability utilities (jaxlogits/logprobs.py)."""

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st

import jaxlogits as jl
from tests.stats import softmax64


def _logsoftmax64(row):
  """Float64 log-softmax in log space, with the NaN and +inf rules of semantics.md."""
  x = np.asarray(row, np.float64).copy()
  x[np.isnan(x)] = -np.inf
  if np.any(x == np.inf):
    x = np.where(x == np.inf, 0.0, -np.inf)
  if not np.any(np.isfinite(x)):
    return np.full_like(x, -np.inf)
  m = np.max(x)
  out = x - m - np.log(np.sum(np.exp(x - m)))
  # float32 cannot hold a log-prob below -3.4e38: finite ones saturate there (documented)
  return np.where(np.isfinite(x), np.maximum(out, -np.finfo(np.float32).max), out)


ROWS = [
    [0.0, 1.0, 2.0],
    [1e4, -1e4, 0.0],
    [-1e4, -1e4 + 1, -jnp.inf],
    [jnp.nan, 0.0, jnp.inf, jnp.inf],
    [-jnp.inf, -jnp.inf],
    [3.4e38, -3.4e38, 3.4e38],
    [5.0],
]


@pytest.mark.parametrize("row", ROWS)
def test_log_softmax_matches_float64(row):
  row = np.asarray(row, np.float32)
  got = np.asarray(jl.log_softmax(row))
  want = _logsoftmax64(row)
  assert got.dtype == np.float32
  assert not np.any(np.isnan(got))
  np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
  fin = np.isfinite(want)
  np.testing.assert_allclose(got[fin], want[fin], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("row", ROWS)
def test_entropy_matches_float64(row):
  p = softmax64(np.asarray(row, np.float32))
  want = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0))
  got = float(jl.entropy(jnp.asarray(row, jnp.float32)))
  assert np.isclose(got, want, rtol=1e-5, atol=1e-6)


def test_bf16_log_softmax_is_float32_of_the_bf16_values():
  row = jnp.asarray([1e4, 1e4 - 64, -3.0, 0.0], jnp.bfloat16)
  got = jl.log_softmax(row)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, _logsoftmax64(np.asarray(row.astype(jnp.float32))), atol=1e-6)


def test_token_logprobs_sequence_shape():
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 7)), jnp.float32)
  tokens = jnp.array([[0, 1, 2, 3, 4], [6, 5, 4, 3, 2]])
  got = jl.token_logprobs(logits, tokens)
  want = jnp.take_along_axis(jl.log_softmax(logits), tokens[..., None], -1)[..., 0]
  np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match=r"token ids in \[0, 7\)"):
    jl.token_logprobs(logits, tokens.at[0, 0].set(7))
  with pytest.raises(ValueError, match="shape"):
    jl.token_logprobs(logits, tokens[:, :3])
  jitted = jax.jit(jl.token_logprobs)(logits, tokens.at[0, 0].set(-1))
  assert jitted[0, 0] == -jnp.inf


@hypothesis.given(
    st.lists(st.sampled_from([0.0, 1.0, -1.0, 2.5, -jnp.inf, 7.0]), min_size=1, max_size=30),
    st.integers(1, 30))
def test_top_logprobs_sorted_with_lower_id_on_ties(values, n):
  row = np.asarray(values, np.float32)
  n = min(n, row.size)
  lp, ids = jl.top_logprobs(row, n)
  want_ids = sorted(range(row.size), key=lambda i: (-row[i], i))[:n]
  np.testing.assert_array_equal(ids, want_ids)
  np.testing.assert_allclose(lp, _logsoftmax64(row)[want_ids], rtol=1e-6, atol=1e-6)


def test_top_logprobs_has_no_cap_and_checks_n():
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(3, 500)), jnp.float32)
  lp, ids = jl.top_logprobs(logits, 500)
  assert lp.shape == (3, 500)
  np.testing.assert_allclose(jnp.exp(lp).sum(-1), 1.0, rtol=1e-5)
  with pytest.raises(ValueError, match="n must be an int in"):
    jl.top_logprobs(logits, 0)
  with pytest.raises(ValueError, match="n must be an int in"):
    jl.top_logprobs(logits, 501)
