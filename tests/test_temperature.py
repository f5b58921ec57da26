"""temperature (jaxlogits/temperature.py) against the float64 reference."""

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

import jaxlogits as jl
from tests import reference as R
from tests import strategies as S
from tests.compare import assert_same_masks_and_values, flush_denormals


def _ref(row, t):
  """The reference: division reads a denormal as 0 (flush-to-zero); the argmax at ``t = 0``
  compares exactly, so it sees the row as it is."""
  return R.temperature_ref(row if t == 0 else flush_denormals(row), t)


@hypothesis.given(row=S.logit_rows(), t=S.temperatures())
def test_row_matches_reference(row, t):
  assert_same_masks_and_values(jl.temperature(row, t), _ref(row, t))


def test_zero_temperature_argmax_sees_denormals():
  # found by hypothesis on another machine: 1e-38 is denormal and still above 0
  row = np.array([0.0, 1e-38], np.float32)
  assert_same_masks_and_values(jl.temperature(row, 0.0), _ref(row, 0.0))
  np.testing.assert_array_equal(jl.temperature(row, 0.0), [-np.inf, np.float32(1e-38)])


@hypothesis.given(data=st.data())
def test_batch_with_per_row_temperatures(data):
  logits = data.draw(S.logit_batches(max_rows=5, max_size=40))
  ts = np.array([data.draw(S.temperatures()) for _ in range(logits.shape[0])], np.float32)
  got = jax.jit(jl.temperature)(logits, ts)
  want = np.stack([_ref(r, t) for r, t in zip(logits, ts)])
  assert_same_masks_and_values(got, want)


def test_zero_is_greedy_with_lowest_index_on_ties():
  got = jl.temperature(jnp.array([[1.0, 3.0, 3.0], [jnp.nan, -1.0, jnp.inf]]), 0.0)
  np.testing.assert_array_equal(got, [[-jnp.inf, 3.0, -jnp.inf], [-jnp.inf, -jnp.inf, jnp.inf]])


def test_tiny_temperature_saturates_instead_of_overflowing():
  got = jl.temperature(jnp.array([10.0, 9.0, -5.0]), 1e-37)
  assert np.all(np.isfinite(np.asarray(got)))
  assert int(jl.greedy(got)) == 0


def test_dtype_is_preserved():
  for dtype in (jnp.bfloat16, jnp.float16, jnp.float32):
    out = jl.temperature(jnp.array([1.0, 60000.0], dtype), 0.5)
    assert out.dtype == dtype
    assert np.isfinite(np.asarray(out.astype(jnp.float32))).all()
