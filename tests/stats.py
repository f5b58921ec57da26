"""Shared statistics helpers for the sampling tests."""

import numpy as np
from scipy import stats


def softmax64(row) -> np.ndarray:
  """Float64 softmax with the semantics.md rules (NaN = -inf, +inf rows uniform over +inf)."""
  x = np.asarray(row, np.float64).copy()
  x[np.isnan(x)] = -np.inf
  if np.any(x == np.inf):
    return (x == np.inf) / np.sum(x == np.inf)
  if not np.any(np.isfinite(x)):
    return np.zeros_like(x)
  e = np.exp(x - np.max(x))
  return e / e.sum()


def chi_squared_pvalue(samples, probs) -> float:
  """Goodness-of-fit p-value of integer ``samples`` against ``probs``.

  Raises AssertionError if a zero-probability category was drawn. Categories whose expected count
  is below 5 are pooled, as the test requires.
  """
  samples = np.asarray(samples)
  probs = np.asarray(probs, np.float64)
  n = samples.size
  counts = np.bincount(samples, minlength=probs.size).astype(np.float64)
  assert counts.size == probs.size, "a sample fell outside the vocabulary"
  zero = probs == 0
  assert counts[zero].sum() == 0, f"drew zero-probability tokens {np.nonzero(counts * zero)[0]}"
  expected = probs * n
  big = expected >= 5
  obs = list(counts[big])
  exp = list(expected[big])
  if (~big & ~zero).any():
    obs.append(counts[~big & ~zero].sum())
    exp.append(expected[~big & ~zero].sum())
  if len(obs) < 2:
    return 1.0
  obs, exp = np.array(obs), np.array(exp)
  exp *= obs.sum() / exp.sum()
  return float(stats.chisquare(obs, exp).pvalue)
