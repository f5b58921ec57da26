"""Penalties and n-gram bans (jaxlogits/penalties.py) against the float64 reference."""

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st

import jaxlogits as jl
from tests import reference as R
from tests import strategies as S
from tests.compare import assert_same_masks_and_values, flush_denormals

PENALTIES = {
    "repetition_penalty": (jl.repetition_penalty, R.repetition_penalty_ref,
                           S.repetition_penalties),
    "frequency_penalty": (jl.frequency_penalty, R.frequency_penalty_ref, S.freq_presence),
    "presence_penalty": (jl.presence_penalty, R.presence_penalty_ref, S.freq_presence),
}


def _atol(name, logits, counts, values):
  """The float32 error of each ``l - f * count`` (frequency) or ``l - q * (count > 0)``
  (presence) against the float64 reference: the product and the difference each round to half
  an ulp of their own magnitude, which cancellation can make large next to the result
  (16 - 3 * 5.386 is -0.158 +- 1e-6). ``l / r`` and ``l * r`` have no cancellation: the
  default bound, relative to the result."""
  if name == "repetition_penalty":
    return 1e-37
  values = np.asarray(values, np.float64)
  values = values[..., None] if values.ndim else values
  amount = counts if name == "frequency_penalty" else counts > 0
  scale = np.where(np.isfinite(logits), np.abs(logits), 0.0) + np.abs(values) * amount
  return 1e-37 + 2 * float(np.finfo(np.float32).eps) * scale


@pytest.mark.parametrize("name", sorted(PENALTIES))
@hypothesis.given(data=st.data())
def test_row_matches_reference(name, data):
  fn, ref, values = PENALTIES[name]
  row = data.draw(S.logit_rows())
  counts = data.draw(S.counts(row.size))
  value = data.draw(values())
  assert_same_masks_and_values(fn(row, counts, value), ref(flush_denormals(row), counts, value),
                               atol=_atol(name, row, counts, value))


@pytest.mark.parametrize("name", sorted(PENALTIES))
@hypothesis.given(data=st.data())
def test_batch_with_per_row_values(name, data):
  fn, ref, values = PENALTIES[name]
  logits = data.draw(S.logit_batches(max_rows=4, max_size=30))
  counts = data.draw(S.counts(logits.shape[1], batch_shape=logits.shape[:1]))
  vals = np.array([data.draw(values()) for _ in range(logits.shape[0])], np.float32)
  got = jax.jit(fn)(logits, counts, vals)
  assert_same_masks_and_values(got, R.apply_rows(ref, flush_denormals(logits), counts, vals),
                               atol=_atol(name, logits, counts, vals))


def test_repetition_penalty_always_lowers_seen_tokens():
  logits = jnp.array([2.0, -2.0, 0.0, 1.0])
  out = jl.repetition_penalty(logits, jnp.array([1, 1, 1, 0]), 1.5)
  np.testing.assert_allclose(out, [2.0 / 1.5, -3.0, 0.0, 1.0])


@hypothesis.given(data=st.data())
def test_token_counts_matches_reference(data):
  v = data.draw(st.integers(1, 12))
  tokens = data.draw(S.token_contexts(v, 20))
  hypothesis.assume(tokens.size > 0)
  length = data.draw(st.integers(0, tokens.size))
  pad = data.draw(st.one_of(st.none(), st.integers(0, v - 1)))
  got = jl.token_counts(tokens, v, length=length, pad_id=pad)
  np.testing.assert_array_equal(got, R.token_counts_ref(tokens, v, pad_id=pad, length=length))


def test_token_counts_output_only_and_batched():
  tokens = jnp.array([[1, 2, 2, 3, 0], [4, 4, 1, 0, 0]])
  got = jl.token_counts(tokens, 5, start=jnp.array([2, 1]), length=jnp.array([4, 3]))
  np.testing.assert_array_equal(got, [[0, 0, 1, 1, 0], [0, 1, 0, 0, 1]])
  assert jax.jit(lambda t: jl.token_counts(t, 5))(tokens).sum() == 10


@hypothesis.given(data=st.data())
def test_no_repeat_ngram_matches_reference(data):
  v = data.draw(st.integers(1, 10))
  tokens = data.draw(S.token_contexts(v, 24))
  hypothesis.assume(tokens.size > 0)
  row = data.draw(S.logit_rows(v, v))
  n = data.draw(S.ngram_sizes())
  length = data.draw(st.integers(0, tokens.size))
  got = jl.no_repeat_ngram(row, tokens, n, length=length)
  assert_same_masks_and_values(got, R.no_repeat_ngram_ref(row, tokens, n, length=length),
                               exact_values=True)


def test_no_repeat_ngram_per_row_sizes_under_jit():
  tokens = jnp.array([[1, 2, 3, 1, 2], [1, 2, 3, 1, 2], [4, 4, 4, 4, 4]])
  logits = jnp.zeros((3, 6))
  got = jax.jit(jl.no_repeat_ngram)(logits, tokens, jnp.array([2, 3, 1]))
  want = R.apply_rows(R.no_repeat_ngram_ref, np.zeros((3, 6)), np.asarray(tokens),
                      np.array([2, 3, 1]))
  assert_same_masks_and_values(got, want, exact_values=True)
