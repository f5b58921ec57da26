"""Truncation rules (jaxlogits/truncation.py) against the float64 reference."""

import functools

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st

import jaxlogits as jl
from jaxlogits import truncation
from tests import reference as R
from tests import strategies as S
from tests.compare import MARGIN, assert_same_masks_and_values

CASES = {
    "top_k": (jl.top_k, R.top_k_ref, None, S.top_ks),
    "top_p": (jl.top_p, R.top_p_ref, R.top_p_margin, lambda v: S.top_ps()),
    "min_p": (jl.min_p, R.min_p_ref, R.min_p_margin, lambda v: S.min_ps()),
    "typical_p": (jl.typical_p, R.typical_p_ref, R.typical_p_margin, lambda v: S.typical_ps()),
    "epsilon_cutoff": (jl.epsilon_cutoff, R.epsilon_cutoff_ref, R.epsilon_cutoff_margin,
                       lambda v: S.epsilons()),
    "eta_cutoff": (jl.eta_cutoff, R.eta_cutoff_ref, R.eta_cutoff_margin, lambda v: S.etas()),
    "top_n_sigma": (jl.top_n_sigma, R.top_n_sigma_ref, R.top_n_sigma_margin,
                    lambda v: S.sigmas()),
}
NAMES = sorted(CASES)


@pytest.mark.parametrize("name", NAMES)
@hypothesis.given(data=st.data())
def test_row_matches_reference(name, data):
  fn, ref, margin, params = CASES[name]
  row = data.draw(S.logit_rows(), label="row")
  value = data.draw(params(row.size), label=name)
  if margin is not None:
    hypothesis.assume(margin(row, value) >= MARGIN)
  assert_same_masks_and_values(fn(row, value), ref(row, value), exact_values=True)


@pytest.mark.parametrize("name", NAMES)
@hypothesis.given(data=st.data())
def test_batch_with_per_row_parameters_matches_reference(name, data):
  fn, ref, margin, params = CASES[name]
  logits = data.draw(S.logit_batches(max_rows=5, max_size=40), label="logits")
  values = np.array([data.draw(params(logits.shape[1])) for _ in range(logits.shape[0])])
  if margin is not None:
    hypothesis.assume(R.row_margins(margin, logits, values).min() >= MARGIN)
  got = jax.jit(fn)(logits, values)
  assert_same_masks_and_values(got, R.apply_rows(ref, logits, values), exact_values=True)


@pytest.mark.parametrize("name", ["top_k", "top_p"])
@hypothesis.given(data=st.data())
def test_exact_fallback_agrees_when_candidates_are_few(name, data):
  # Force the bit-pattern search by allowing only 2 candidates for the fast path.
  private = {"top_k": truncation._top_k, "top_p": truncation._top_p}[name]
  fn, ref, margin, params = CASES[name]
  logits = data.draw(S.logit_batches(max_rows=3, min_size=3, max_size=40), label="logits")
  values = np.array([data.draw(params(logits.shape[1])) for _ in range(logits.shape[0])])
  if margin is not None:
    hypothesis.assume(R.row_margins(margin, logits, values).min() >= MARGIN)
  dtype = jnp.int32 if name == "top_k" else jnp.float32
  got = private(jnp.asarray(logits), jnp.asarray(values, dtype)[:, None], candidates=2)
  assert_same_masks_and_values(got, R.apply_rows(ref, logits, values), exact_values=True)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_dtypes(name, dtype):
  fn, ref, margin, _ = CASES[name]
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(4, 300)) * 3, dtype)
  value = {"top_k": 17, "top_p": 0.8, "min_p": 0.1, "typical_p": 0.7, "epsilon_cutoff": 0.003,
           "eta_cutoff": 0.003, "top_n_sigma": 1.5}[name]
  up = np.asarray(logits.astype(jnp.float32))
  if margin is not None:
    assert R.row_margins(margin, up, value).min() >= MARGIN
  got = fn(logits, value)
  assert_same_masks_and_values(got, R.apply_rows(ref, up, value), exact_values=True,
                               dtype=np.dtype(dtype))


@pytest.mark.parametrize("name", NAMES)
def test_identity_values_leave_rows_unchanged(name):
  fn = CASES[name][0]
  identity = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "epsilon_cutoff": 0.0,
              "eta_cutoff": 0.0, "top_n_sigma": 0.0}[name]
  logits = jnp.array([[1.0, -jnp.inf, 3.0, 3.0, -50.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(fn(logits, identity), logits)


@pytest.mark.parametrize("name", NAMES)
def test_results_do_not_depend_on_token_order(name):
  fn = CASES[name][0]
  value = {"top_k": 2, "top_p": 0.6, "min_p": 0.5, "typical_p": 0.5, "epsilon_cutoff": 0.2,
           "eta_cutoff": 0.2, "top_n_sigma": 0.5}[name]
  row = jnp.array([2.0, 1.0, 2.0, 0.0, 1.0, 2.0, -1.0])
  perm = np.random.default_rng(0).permutation(row.size)
  np.testing.assert_array_equal(np.asarray(fn(row, value))[perm], fn(row[perm], value))


def test_top_p_boundary_token_is_kept_and_ties_at_the_boundary_too():
  probs = np.array([0.5, 0.25, 0.125, 0.125])  # exact in binary
  l = jnp.log(jnp.asarray(probs, jnp.float32))
  # mass strictly above token 1 is 0.5 < 0.6: kept; above the 0.125 pair is 0.75 >= 0.6
  np.testing.assert_array_equal(jl.top_p(l, 0.6) > -jnp.inf, [True, True, False, False])
  np.testing.assert_array_equal(jl.top_p(l, 0.8) > -jnp.inf, [True, True, True, True])
  np.testing.assert_array_equal(jl.top_p(l, 0.5) > -jnp.inf, [True, False, False, False])


def test_large_vocabulary_slow_path():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(2, 5000)), jnp.float32)
  for p in [0.3, 0.95]:
    got = jl.top_p(logits, p)
    assert_same_masks_and_values(got, R.apply_rows(R.top_p_ref, np.asarray(logits), p),
                                 exact_values=True)
  got = jl.top_k(logits, 1000)
  assert_same_masks_and_values(got, R.apply_rows(R.top_k_ref, np.asarray(logits), 1000),
                               exact_values=True)


@pytest.mark.parametrize("fn", [
    functools.partial(jl.top_k, k=50), functools.partial(jl.top_p, p=0.9),
    functools.partial(jl.typical_p, mass=0.9), functools.partial(jl.min_p, p=0.1),
    lambda l: jl.sample(jax.random.key(0), l),
    lambda l: jl.top_logprobs(l, 5)[0]])
def test_compiled_graphs_never_sort_the_vocabulary(fn):
  logits = jnp.zeros((4, 4096))
  hlo = jax.jit(fn).lower(logits).compile().as_text()
  sorts = [line for line in hlo.splitlines() if " sort(" in line and "4096]" in line]
  if jax.default_backend() != "cpu":
    # XLA's GPU backend lowers lax.top_k to a sort, and at 4096 logits top-k runs lax.top_k on
    # the whole row; long rows keep the blocked path everywhere (tested below).
    sorts = [line for line in sorts if '/top_k"' not in line]
  assert not sorts, sorts


@pytest.mark.parametrize("k", [1, 50, 64, 128])
def test_blocked_top_values_equal_lax_top_k_with_ties(k):
  from jax import lax

  from jaxlogits import _numerics
  rng = np.random.default_rng(k)
  v = 4 * 128 * 128 + 1234  # long enough for the blocked path at every k here
  x = rng.integers(-4, 4, size=(3, v)).astype(np.float32)  # heavy ties
  x[0, rng.integers(0, v, 500)] = -np.inf
  x[1] = -np.inf
  x[1, [5, 7000, v - 1]] = [1.0, 1.0, 2.0]  # fewer finite values than k
  vals, ids = jax.jit(lambda a: _numerics.top_values(a, k))(x)
  want_vals, want_ids = lax.top_k(jnp.asarray(x), k)
  np.testing.assert_array_equal(vals, want_vals)
  np.testing.assert_array_equal(ids, want_ids)


def test_long_rows_never_sort_the_vocabulary():
  logits = jnp.zeros((2, 70000))
  for fn in (lambda l: jl.top_k(l, 50), lambda l: jl.top_p(l, 0.9),
             lambda l: jl.top_logprobs(l, 100)[0]):
    hlo = jax.jit(fn).lower(logits).compile().as_text()
    assert not [line for line in hlo.splitlines() if " sort(" in line and "70000]" in line]
