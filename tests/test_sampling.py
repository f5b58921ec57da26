"""Tests of the draw (jaxlogits/sampling.py): exactness, keys, independence, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlogits as jl
from jaxlogits import _numerics, sampling
from tests.stats import chi_squared_pvalue, softmax64

N = 20000
ALPHA = 1e-3  # fixed seeds make every run identical; this only guards against a wrong law

DISTRIBUTIONS = {
    "peaked": np.log(np.array([0.7, 0.2, 0.05, 0.03, 0.02])),
    "flat": np.zeros(7),
    "masked": np.array([1.0, -np.inf, 0.5, np.nan, -np.inf, 2.0]),
    "three_blocks": np.random.default_rng(0).normal(size=600) * 2.0,  # 256-token blocks
    "tiny_tail": np.array([0.0, -30.0, -5.0, -300.0, -2.0]),
    "single": np.array([3.0]),
}


def _draw_many(key, row, jit):
  batch = jnp.broadcast_to(jnp.asarray(row, jnp.float32), (N, len(row)))
  fn = jax.jit(jl.sample) if jit else jl.sample
  return np.asarray(fn(key, batch))


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("jit", [False, True])
def test_chi_squared_against_softmax(name, jit, key_reuse_checked):
  row = DISTRIBUTIONS[name].astype(np.float32)
  draws = _draw_many(jax.random.key(7), row, jit)
  assert chi_squared_pvalue(draws, softmax64(row)) > ALPHA


def test_chi_squared_with_per_row_keys_under_vmap(key_reuse_checked):
  row = jnp.asarray(DISTRIBUTIONS["peaked"], jnp.float32)
  keys = jax.random.split(jax.random.key(3), N)
  draws = jax.vmap(jl.sample, in_axes=(0, None))(keys, row)
  assert chi_squared_pvalue(np.asarray(draws), softmax64(row)) > ALPHA


def test_chi_squared_of_processed_logits(key_reuse_checked):
  rng = np.random.default_rng(1)
  row = (rng.normal(size=50) * 3).astype(np.float32)
  processed = jl.top_p(jl.top_k(jl.temperature(row, 0.7), 20), 0.9)
  draws = _draw_many(jax.random.key(11), np.asarray(processed), jit=True)
  assert chi_squared_pvalue(draws, softmax64(np.asarray(processed))) > ALPHA


def test_positive_infinity_rows_are_uniform_over_inf_entries(key_reuse_checked):
  row = np.array([0.0, np.inf, 5.0, np.inf, np.inf, -np.inf], np.float32)
  draws = _draw_many(jax.random.key(5), row, jit=False)
  assert set(np.unique(draws)) == {1, 3, 4}
  assert chi_squared_pvalue(draws, softmax64(row)) > ALPHA


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_inputs(dtype, key_reuse_checked):
  row = jnp.asarray(DISTRIBUTIONS["peaked"] * 1.3, dtype)
  draws = _draw_many(jax.random.key(9), np.asarray(row.astype(jnp.float32)), jit=True)
  low = np.asarray(jl.sample(jax.random.key(9), jnp.broadcast_to(row, (N, row.shape[0]))))
  np.testing.assert_array_equal(draws, low)  # computed in float32 from the same values
  assert chi_squared_pvalue(low, softmax64(np.asarray(row.astype(jnp.float32)))) > ALPHA


def test_rows_without_finite_logits_give_minus_one():
  logits = jnp.array([[-jnp.inf, -jnp.inf], [jnp.nan, -jnp.inf], [0.0, -jnp.inf]])
  np.testing.assert_array_equal(jl.sample(jax.random.key(0), logits), [-1, -1, 0])
  np.testing.assert_array_equal(jl.greedy(logits), [-1, -1, 0])


def test_batch_invariance_per_row_keys():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=(17, 700)) * 4, jnp.float32)
  keys = jax.random.split(jax.random.key(1), 17)
  full = np.asarray(jl.sample(keys, logits))
  for i in range(17):
    assert int(jl.sample(keys[i], logits[i])) == full[i]
  for lo, hi in [(0, 1), (3, 6), (5, 17)]:
    np.testing.assert_array_equal(jl.sample(keys[lo:hi], logits[lo:hi]), full[lo:hi])
  jitted = jax.jit(jl.sample)
  np.testing.assert_array_equal(jitted(keys[2:9], logits[2:9]), full[2:9])


def test_single_key_rows_are_independent_and_index_determined():
  row = jnp.zeros(1000)
  draws = np.asarray(jl.sample(jax.random.key(4), jnp.broadcast_to(row, (64, 1000))))
  assert len(np.unique(draws)) > 50  # not one frozen stream for every row
  # row i of a single-key batch uses fold_in(key, i): independent of the batch size
  small = np.asarray(jl.sample(jax.random.key(4), jnp.broadcast_to(row, (5, 1000))))
  np.testing.assert_array_equal(draws[:5], small)
  one = int(jl.sample(jax.random.fold_in(jax.random.key(4), 3), row[None])[0])
  assert one != -1


def test_vmap_over_keys_and_parameters():
  rng = np.random.default_rng(3)
  logits = jnp.asarray(rng.normal(size=(6, 40)) * 3, jnp.float32)
  keys = jax.random.split(jax.random.key(2), 6)
  ps = jnp.array([0.1, 0.5, 0.9, 1.0, 0.3, 0.99])
  ks = jnp.array([0, 3, 10, 1, 40, 7])
  fn = lambda k, l, p, kk: jl.sample(k, jl.top_p(jl.top_k(l, kk), p))
  batched = fn(keys, logits, ps, ks)
  mapped = jax.vmap(fn)(keys, logits, ps, ks)
  np.testing.assert_array_equal(batched, mapped)


def test_legacy_and_typed_keys_agree():
  logits = jnp.asarray(np.random.default_rng(4).normal(size=(8, 30)), jnp.float32)
  legacy = jax.random.PRNGKey(12)
  typed = jax.random.wrap_key_data(legacy)
  np.testing.assert_array_equal(jl.sample(legacy, logits), jl.sample(typed, logits))
  legacy_rows = jax.random.split(legacy, 8)
  np.testing.assert_array_equal(jl.sample(legacy_rows, logits),
                                jl.sample(jax.random.wrap_key_data(legacy_rows), logits))


def test_bad_keys_are_rejected():
  logits = jnp.zeros((4, 3))
  with pytest.raises(ValueError, match="one key per row"):
    jl.sample(jax.random.split(jax.random.key(0), 3), logits)
  with pytest.raises(TypeError, match="PRNG key"):
    jl.sample(jnp.array([1.0, 2.0]), logits)


def test_integer_logits_are_a_type_error():
  with pytest.raises(TypeError, match="logits must be a floating"):
    jl.sample(jax.random.key(0), jnp.array([1, 2, 3]))
  with pytest.raises(TypeError, match="logits must be a floating"):
    jl.greedy(jnp.array([1, 2, 3]))


def test_never_draws_zero_probability_tokens_at_block_edges():
  # Mass only at the last entry of each 256-block and in the padded tail.
  v = 3 * sampling.BLOCK + 5
  row = np.full(v, -np.inf, np.float32)
  row[[sampling.BLOCK - 1, 2 * sampling.BLOCK - 1, v - 1]] = [0.0, 1.0, 2.0]
  draws = _draw_many(jax.random.key(8), row, jit=True)
  assert set(np.unique(draws)) <= {sampling.BLOCK - 1, 2 * sampling.BLOCK - 1, v - 1}
  assert chi_squared_pvalue(draws, softmax64(row)) > ALPHA


def test_inverse_cdf_edge_uniforms():
  e = jnp.log(jnp.array([[0.0, 0.5, 0.0, 0.5]])).astype(jnp.float32)
  for u, want in [(0.0, 1), (0.4999, 1), (0.5, 3), (1.0 - 2**-24, 3), (1.0, 3)]:
    for u2 in (0.0, 0.5, 1.0 - 2**-24, 1.0):
      got = sampling.inverse_cdf(e, jnp.array([u], jnp.float32), jnp.array([u2], jnp.float32),
                                 block=2)
      assert int(got[0]) == want, (u, u2, int(got[0]))


def test_fixed_point_block_masses_are_exact_and_split_independent():
  from fractions import Fraction
  nm = _numerics
  rng = np.random.default_rng(11)
  nb = 501
  sums = (rng.random((3, nb)) ** 8 * 256).astype(np.float32)
  sums[0, :7] = [256.0, 0.0, 1e-30, 2.0**-37, 2.0**-38, 1.0, 3e-39]
  sums[1] = 0.0
  sums[1, 400] = 1.0
  width, frac = nm.limb_layout(nb)
  hi, lo = jax.jit(nm.to_limbs, static_argnums=(1, 2))(jnp.asarray(sums), width, frac)
  q = np.asarray(hi).astype(object) * 2**width + np.asarray(lo).astype(object)
  want = np.array([[int(Fraction(float(x)) * 2**frac) for x in row] for row in sums], object)
  np.testing.assert_array_equal(q, want)
  total = want.sum(axis=-1, keepdims=True)
  np.testing.assert_allclose(jax.jit(nm.exact_sum, static_argnums=1)(
      jnp.asarray(np.repeat(sums / 256, 256, axis=-1)), nb * 256),
                             (total / 2**frac).astype(float), rtol=2**-22)
  # Prefix sums built from one total per group of blocks (as a device of a sharded row adds
  # them) are the same integers as over the whole row, so the fractions are bitwise equal.
  prefix = lambda a, before: nm.exclusive_prefix(a) + jnp.sum(before, axis=-1, keepdims=True)
  whole = nm.normalize(nm.exclusive_prefix(hi), nm.exclusive_prefix(lo), width)
  for groups in (2, 3, 8):
    edges = np.linspace(0, nb, groups + 1).astype(int)
    spans = list(zip(edges[:-1], edges[1:]))
    split = nm.normalize(jnp.concatenate([prefix(hi[:, a:b], hi[:, :a]) for a, b in spans], -1),
                         jnp.concatenate([prefix(lo[:, a:b], lo[:, :a]) for a, b in spans], -1),
                         width)
    np.testing.assert_array_equal(split[0], whole[0])
    np.testing.assert_array_equal(split[1], whole[1])
  tot = nm.normalize(jnp.sum(hi, -1, keepdims=True), jnp.sum(lo, -1, keepdims=True), width)
  f = np.asarray(nm.fractions(*whole, *tot, width))
  assert np.all(np.diff(f, axis=-1) >= 0) and np.all(f[:, 0] == 0) and np.all(f <= 1)
  np.testing.assert_array_equal(nm.fractions(*tot, *tot, width), 1.0)
  exact = (np.cumsum(want, axis=-1) - want) / total
  np.testing.assert_allclose(f, exact.astype(float), rtol=0, atol=2**-23)


def test_rows_with_few_finite_blocks_draw_the_dense_draws_tokens(monkeypatch):
  # Rows left with tokens in at most SPARSE_BLOCKS blocks (after a top-k) sum their masses on
  # those blocks only. Their tokens are bitwise those of the dense draw: spread tokens, tokens
  # packed many to a block (float sums that depend on the order of addition), a row with one
  # token and a row with none.
  rng = np.random.default_rng(12)
  b, v = 8, 300 * sampling.BLOCK + 17
  x = (rng.normal(size=(b, v)) * 3).astype(np.float32)
  keep = np.zeros((b, v), bool)
  for r in range(b):
    pool = v if r % 2 else 700  # odd rows spread, even rows packed into three blocks
    keep[r, rng.choice(pool, int(rng.integers(20, 60)), replace=False)] = True
  keep[6] = False
  keep[6, v - 1] = True
  keep[7] = False
  x = np.where(keep, x, -np.inf).astype(np.float32)
  u, u2 = (jnp.asarray(rng.random(b), jnp.float32) for _ in range(2))
  draw = lambda: jax.jit(lambda a, u, u2: sampling.inverse_cdf(a, u, u2))(jnp.asarray(x), u, u2)
  monkeypatch.setattr(sampling, "SPARSE_BLOCKS", 0)
  dense = np.asarray(draw())
  monkeypatch.setattr(sampling, "SPARSE_BLOCKS", 64)
  real = sampling.block_sums

  def sparse_only(blocks, weigh):  # the dense mass pass now gives nonsense
    return real(blocks, weigh) * (1.0 if blocks.shape[1] == 64 else 0.0)

  monkeypatch.setattr(sampling, "block_sums", sparse_only)
  np.testing.assert_array_equal(draw(), dense)
  assert all(keep[r, dense[r]] for r in range(7)) and dense[6] == v - 1 and dense[7] == -1
  # One row over the limit sends the batch through the dense pass (here, the nonsense one).
  x[0, :65 * sampling.BLOCK:sampling.BLOCK] = 0.0
  assert not np.array_equal(draw(), dense)


def test_chi_squared_of_a_row_with_few_finite_blocks(key_reuse_checked):
  rng = np.random.default_rng(13)
  row = np.full(130 * sampling.BLOCK, -np.inf, np.float32)  # more blocks than 2 * 64
  ids = np.concatenate([np.arange(5, 25), rng.choice(row.size, 20, replace=False)])
  row[ids] = rng.normal(size=ids.size) * 1.5
  batch = jnp.broadcast_to(jnp.asarray(row), (250, row.size))
  draw = jax.jit(jl.sample)
  draws = np.concatenate([np.asarray(draw(k, batch))
                          for k in jax.random.split(jax.random.key(14), 16)])
  assert chi_squared_pvalue(draws, softmax64(row)) > ALPHA


@pytest.mark.parametrize("block_bytes", [None, 8 * 1000])
def test_rows_with_nan_draw_as_their_cleaned_rows(monkeypatch, block_bytes):
  # A batch with NaN takes the cleaning branch (in row blocks: two rows at a time with the small
  # budget); its draws are bitwise those of the same rows with NaN replaced by -inf, and the
  # draw that skips the NaN test gives the same tokens on rows without NaN (+inf rows too).
  if block_bytes:
    monkeypatch.setattr(_numerics, "ROW_BLOCK_BYTES", block_bytes)
  rng = np.random.default_rng(4)
  v = 1000
  x = (rng.normal(size=(6, v)) * 3).astype(np.float32)
  x[0, 7] = np.nan
  x[1, :] = np.nan
  x[2, 3] = np.inf
  x[3, [5, 900]] = [np.inf, np.nan]
  x[4, rng.integers(0, v, 900)] = -np.inf
  keys = sampling.row_keys(jax.random.key(2), (6,))
  clean = np.where(np.isnan(x), -np.inf, x)
  got = sampling._sample(keys, jnp.asarray(x))
  want = sampling._sample(keys, jnp.asarray(clean))
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(sampling._sample(keys, jnp.asarray(clean), nan_free=True), want)
  assert int(got[1]) == -1 and int(got[2]) == 3 and int(got[3]) == 5


def test_greedy_lowest_index_on_ties_and_nan():
  logits = jnp.array([[1.0, 3.0, 3.0, jnp.nan], [jnp.inf, 0.0, jnp.inf, 1.0]])
  np.testing.assert_array_equal(jl.greedy(logits), [1, 0])
