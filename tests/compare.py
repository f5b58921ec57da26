"""Comparison of implementation output with the float64 reference."""

import numpy as np

F32_MAX = float(np.finfo(np.float32).max)
MARGIN = 1e-4  # examples closer than this to a float32 knife edge are skipped (see reference.py)


def assert_same_masks_and_values(got, want, *, exact_values=False, rtol=2e-6, atol=1e-37,
                                 dtype=np.float32):
  """``got`` (implementation) matches ``want`` (float64 reference).

  The -inf and +inf patterns must be identical; finite values must agree (exactly for pure
  truncations, to float32 rounding for arithmetic transforms). The output dtype is checked too.
  ``atol`` is a number or an array of ``want``'s shape (a bound per entry).
  """
  got_arr = np.asarray(got)
  assert got_arr.dtype == dtype, (got_arr.dtype, dtype)
  g = got_arr.astype(np.float64)
  w = np.asarray(want, np.float64)
  assert g.shape == w.shape
  assert not np.any(np.isnan(g)), "NaN in output"
  np.testing.assert_array_equal(g == -np.inf, w == -np.inf, err_msg="masks differ")
  np.testing.assert_array_equal(g == np.inf, w == np.inf, err_msg="+inf entries differ")
  fin = np.isfinite(w)
  if exact_values:
    np.testing.assert_array_equal(g[fin], w[fin])
  else:
    atol = np.broadcast_to(atol, w.shape)[fin]
    # (assert_allclose takes one atol; the per-entry bound is checked first, the same way.)
    bad = np.abs(g[fin] - w[fin]) > atol + rtol * np.abs(w[fin])
    np.testing.assert_allclose(g[fin][bad], w[fin][bad], rtol=rtol, atol=0,
                               err_msg=f"beyond the per-entry atol {atol[bad]}")


def flush_denormals(x):
  """Denormal float32 values set to zero, as XLA's CPU arithmetic reads them.

  XLA runs float arithmetic with flush-to-zero and denormals-are-zero, so an arithmetic
  transform (temperature, penalties, bias, guidance) sees a denormal logit as 0. Comparisons in
  jaxlogits are made on bit patterns and stay exact; arithmetic tests feed the reference the
  flushed row.
  """
  x = np.array(x, copy=True)
  tiny = np.finfo(np.float32).tiny
  with np.errstate(invalid="ignore"):
    x[np.abs(x) < tiny] = 0.0
  return x
