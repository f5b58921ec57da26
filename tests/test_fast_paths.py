"""The fast paths of the truncations choose the same masks as the float64 reference.

``top_k`` and ``top_p`` have three ways to their threshold: a candidate list (the largest
values, from the blocked top-k), for ``top_p`` a search that brackets the nucleus boundary with
mass passes and then reads the few tokens inside exactly, and the 32-pass bisection over bit
patterns. Each is forced here on adversarial rows (ties, -inf, NaN, +inf, huge and denormal
values) and on long rows where the blocked candidate search is used, and must give the
reference's mask and values exactly.
"""

import hypothesis
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st

from jaxlogits import truncation
from tests import reference as R
from tests import strategies as S
from tests.compare import MARGIN, assert_same_masks_and_values

# (candidates, passes, estimate): candidates only; search (few candidates) with and without its
# subsample estimate; bisection only.
TOP_P_PATHS = {"candidates": (truncation.TOP_P_CANDIDATES, truncation.NUCLEUS_PASSES, None),
               "search": (2, truncation.NUCLEUS_PASSES, True),
               "search without estimate": (2, truncation.NUCLEUS_PASSES, False),
               "bisection": (2, 0, None)}


def _top_p(logits, p, path):
  candidates, passes, estimate = TOP_P_PATHS[path]
  return truncation._top_p(jnp.asarray(logits), jnp.asarray(p, jnp.float32)[:, None],
                           candidates=candidates, passes=passes, estimate=estimate)


@pytest.mark.parametrize("path", sorted(TOP_P_PATHS))
@hypothesis.given(data=st.data())
def test_top_p_paths_match_reference_on_adversarial_rows(path, data):
  logits = data.draw(S.logit_batches(max_rows=3, max_size=200), label="logits")
  p = np.array([data.draw(S.top_ps(allow_zero=True)) for _ in range(logits.shape[0])])
  hypothesis.assume(R.row_margins(R.top_p_margin, logits, p).min() >= MARGIN)
  assert_same_masks_and_values(_top_p(logits, p, path), R.apply_rows(R.top_p_ref, logits, p),
                               exact_values=True)


def _safe_p(row, target):
  """The p nearest ``target`` whose boundary is not a float32 knife edge for this row."""
  for p in target + np.linspace(0.0, 0.05, 101) * np.resize([1, -1], 101):
    if 0 < p < 1 and R.top_p_margin(row, float(np.float32(p))) >= MARGIN:
      return float(np.float32(p))
  raise AssertionError(f"no safe p near {target}")


@pytest.mark.parametrize("path", sorted(TOP_P_PATHS))
@pytest.mark.parametrize("scale,p", [(0.5, 0.5), (2.0, 0.9), (4.0, 0.9), (8.0, 0.3)])
def test_top_p_paths_on_long_rows(path, scale, p):
  rng = np.random.default_rng(int(scale * 10 + p * 1000))
  logits = (rng.normal(size=(4, 1000)) * scale).astype(np.float32)
  logits[0, rng.integers(0, 1000, 100)] = -np.inf
  logits[1, :500] = np.round(logits[1, :500])  # many ties
  logits[2, 17] = np.nan
  ps = np.array([_safe_p(row, p) for row in logits])
  assert_same_masks_and_values(_top_p(logits, ps, path), R.apply_rows(R.top_p_ref, logits, ps),
                               exact_values=True)


@pytest.mark.parametrize("k", [50, 700])
def test_top_k_then_top_p_on_a_blocked_row(k):
  # V long enough for the blocked candidate search; after top_k the candidates hold the row.
  rng = np.random.default_rng(k)
  logits = (rng.normal(size=(2, 70000)) * 3).astype(np.float32)
  x = np.asarray(truncation._top_k(jnp.asarray(logits), jnp.full((2, 1), k, jnp.int32)))
  ps = np.array([_safe_p(row, 0.9) for row in x])
  got = truncation._top_p(jnp.asarray(x), jnp.asarray(ps, jnp.float32)[:, None])
  assert_same_masks_and_values(got, R.apply_rows(R.top_p_ref, x, ps), exact_values=True)


@pytest.mark.parametrize("estimate", [True, False])
def test_the_search_decides_long_rows_without_bisection(estimate):
  # The search must close its bracket on ordinary long rows (otherwise it only costs time).
  from jaxlogits import _numerics as nm
  rng = np.random.default_rng(0)
  e = jnp.asarray(rng.normal(size=(4, 20000)) * 2.0, jnp.float32)
  p = jnp.full((4, 1), 0.95)
  shift, log_z = nm.log_normalizer(e)
  vals, _ = nm.top_values(e, 128)
  above = truncation._mass_above(vals, jnp.exp((vals - shift) - log_z), jnp.zeros_like(shift))
  ok, _ = truncation._nucleus_search(e, shift, log_z, p, vals[:, -1:], above[:, -1:],
                                     jnp.ones((4, 1), bool), truncation.NUCLEUS_PASSES,
                                     truncation.NUCLEUS_EXTRACT,
                                     truncation._one_device(20000, estimate))
  assert bool(jnp.all(ok))


def test_a_nearly_uniform_row_closes_its_bracket_without_bisection():
  # Logits within 0.01 of each other: the probit of the masses is far from straight there, so
  # the probit secants stall; after LINEAR_AFTER points the secants run on the masses and the
  # bracket closes (14 mass sums here; 50 when the probit secants go on and the row falls back
  # to the 32 passes of the bisection). Its tokens carry 1.7e-5 each, so every p lies within
  # the reference's knife-edge margin: the mask is checked against the bisection's instead.
  from jaxlogits._bench_sharded import top_p_calls
  rng = np.random.default_rng(0)
  x = (rng.random(size=(2, 60000)) * 0.01).astype(np.float32)
  assert top_p_calls(x, 0.9)["row_sum"] < 20
  p = np.full(2, 0.9)
  np.testing.assert_array_equal(np.asarray(_top_p(x, p, "search without estimate")),
                                np.asarray(_top_p(x, p, "bisection")))


def test_the_gaussian_first_point_lands_near_the_boundary_of_normal_rows():
  # The search's first point fits N(mu, s^2) to the normaliser and one measured mass: on normal
  # logits of any scale it must land within 2% of the vocabulary of the true boundary (on the
  # bench's rows it saves the bound's pass and about one more), and a fit that cannot hold
  # must give a point that is not finite, which the search drops for its bracket's secant.
  from jaxlogits import _numerics as nm
  rng = np.random.default_rng(3)
  v = 60000
  for scale, p in ((0.5, 0.99), (1.0, 0.9), (2.0, 0.95), (2.5, 0.5)):
    e = (rng.normal(size=(1, v)) * scale).astype(np.float32)
    shift, log_z = nm.log_normalizer(jnp.asarray(e))
    x = np.sort(e[0].astype(np.float64))[::-1]
    probs = np.exp(x - x[0]) / np.exp(x - x[0]).sum()
    t = x[127]  # the 128th largest value, as the search's upper end
    w_t = probs[x > t].sum()
    guess = float(truncation._gaussian_guess(shift, log_z, v, jnp.float32(p), jnp.float32(t),
                                             jnp.float32(w_t))[0, 0])
    boundary = x[np.searchsorted(np.cumsum(probs), p)]
    between = np.sum((x > min(guess, boundary)) & (x <= max(guess, boundary)))
    assert between < 0.02 * v, (scale, p, guess, boundary, between)
  # A measured mass of 1 (nothing fits) gives NaN or an infinite point, which the search drops.
  bad = truncation._gaussian_guess(jnp.float32(0), jnp.float32(1), v, jnp.float32(0.9),
                                   jnp.float32(-1), jnp.float32(1.0))
  assert not np.isfinite(float(bad))


def test_a_nucleus_too_wide_for_the_candidates_skips_them():
  # A flat row (every logit finite) at p = 0.9 keeps most of its tokens: its normaliser and
  # the mass at q = p / 256 show that the 64 candidates cannot hold the nucleus, so they are
  # skipped: the search makes its passes and gathers only its final bracket's 64. A peaked row
  # (26 tokens) takes the candidates and no pass beyond those two. Together in one block, each
  # row gets the mask it gets alone, and the reference's.
  from jaxlogits._bench_sharded import top_p_calls
  rng = np.random.default_rng(7)
  flat = (rng.normal(size=(1, 1000)) * 0.5).astype(np.float32)
  peaked = (rng.normal(size=(1, 1000)) * 4.0).astype(np.float32)
  ps = np.array([_safe_p(flat[0], 0.9), _safe_p(peaked[0], 0.9)])
  assert truncation.TOP_P_CANDIDATES == truncation.NUCLEUS_EXTRACT == 64
  flat_calls, peaked_calls = top_p_calls(flat, ps[0]), top_p_calls(peaked, ps[1])
  assert flat_calls["top"] == [64] and flat_calls["row_sum"] > 2
  assert peaked_calls == {"row_sum": 2, "sub_sum": 0, "top": [64]}
  both = np.concatenate([flat, peaked])
  got = np.asarray(_top_p(both, ps, "candidates"))
  assert_same_masks_and_values(got, R.apply_rows(R.top_p_ref, both, ps), exact_values=True)
  for i in range(2):
    np.testing.assert_array_equal(got[i], np.asarray(_top_p(both[i:i + 1], ps[i:i + 1],
                                                            "candidates"))[0])


@pytest.mark.parametrize("candidates", [truncation.TOP_K_CANDIDATES, 2])
@hypothesis.given(data=st.data())
def test_top_k_paths_match_reference_on_adversarial_rows(candidates, data):
  logits = data.draw(S.logit_batches(max_rows=3, max_size=200), label="logits")
  k = np.array([data.draw(S.top_ks(logits.shape[1])) for _ in range(logits.shape[0])])
  got = truncation._top_k(jnp.asarray(logits), jnp.asarray(k, jnp.int32)[:, None],
                          candidates=candidates)
  assert_same_masks_and_values(got, R.apply_rows(R.top_k_ref, logits, k), exact_values=True)


@pytest.mark.parametrize("ks,exact,v", [([65, 256, 3], 0, 39_999), ([257, 1024, 64], 0, 39_998),
                                        ([100, 1025, 1], 1, 39_997)])
def test_top_k_beyond_its_candidates_takes_one_longer_list(ks, exact, v, monkeypatch):
  # Rows beyond the 64 candidates take the smallest longer list (256, then 1024) holding all of
  # their k, and the exact search runs only where none does: each batch ends in a different
  # way, rows of every kind beside them, and every row gets the reference's mask.
  assert [truncation.TOP_K_CANDIDATES * m for m in truncation.TOP_K_TIERS] == [64, 256, 1024]
  searches = []
  bisect = truncation.nm.bisect_threshold

  def counted(*args):
    jax.debug.callback(lambda: searches.append(1))
    return bisect(*args)

  monkeypatch.setattr(truncation.nm, "bisect_threshold", counted)
  rng = np.random.default_rng(sum(ks))
  # v: a shape no other case or test compiles, so that this trace calls this case's counter.
  logits = rng.integers(-300, 300, size=(3, v)).astype(np.float32)  # ties at every k
  logits[1, rng.integers(0, v, 5000)] = -np.inf
  k = np.array(ks)
  got = truncation._top_k(jnp.asarray(logits), jnp.asarray(k, jnp.int32)[:, None])
  assert_same_masks_and_values(got, R.apply_rows(R.top_k_ref, logits, k), exact_values=True)
  jax.effects_barrier()
  assert len(searches) == exact


@pytest.mark.parametrize("k", [1, 7, 50, 64, 65, 700])
def test_top_k_long_rows_with_ties_and_denormals(k):
  rng = np.random.default_rng(k)
  v = 40000  # long enough for the blocked candidate search
  logits = rng.integers(-50, 50, size=(3, v)).astype(np.float32)  # heavy ties
  logits[0, rng.integers(0, v, 2000)] = -np.inf
  logits[1] = rng.choice(np.array([1e-40, -1e-40, 0.0, -0.0, 1e-45], np.float32), v)
  logits[2, 5] = np.nan
  got = truncation._top_k(jnp.asarray(logits), jnp.full((3, 1), k, jnp.int32))
  assert_same_masks_and_values(got, R.apply_rows(R.top_k_ref, logits, k), exact_values=True)


@hypothesis.given(data=st.data())
def test_min_p_key_threshold_matches_reference(data):
  logits = data.draw(S.logit_batches(max_rows=3, max_size=100), label="logits")
  p = np.array([data.draw(S.min_ps()) for _ in range(logits.shape[0])])
  hypothesis.assume(R.row_margins(R.min_p_margin, logits, p).min() >= MARGIN)
  got = truncation._min_p(jnp.asarray(logits), jnp.asarray(p, jnp.float32)[:, None])
  assert_same_masks_and_values(got, R.apply_rows(R.min_p_ref, logits, p), exact_values=True)


# --------------------------------------------------------------------------------------------
# the pipeline runs top_p on top_k's candidates where top_k keeps few tokens


def _in_turn(logits, k, p):
  return truncation._top_p(truncation._top_k(jnp.asarray(logits), jnp.asarray(k)[:, None]),
                           jnp.asarray(p)[:, None])


def _fused(logits, k, p):
  x = jnp.asarray(logits)
  thr, ok = truncation._top_k_top_p_keys(x, jnp.asarray(k)[:, None], jnp.asarray(p)[:, None])
  return truncation._write(x, None, thr, x.dtype), np.asarray(ok)[:, 0]


def _pipeline_top_k_top_p(logits, k, p):
  """The pipeline's top_k then top_p, and the two rules in turn on the same input (the
  pipeline's temperature 1, which flushes denormals as any float arithmetic does on CPU)."""
  from jaxlogits import pipeline
  from jaxlogits.temperature import _temperature
  params = pipeline.SamplingParams.create(logits.shape[0], top_k=k, top_p=p)
  x = _temperature(jnp.asarray(logits), jnp.ones((logits.shape[0], 1)))
  return (np.asarray(pipeline.process_logits(jnp.asarray(logits), params)),
          np.asarray(_in_turn(x, k, p)))


@hypothesis.given(data=st.data())
def test_top_p_on_top_k_candidates_gives_the_bits_of_the_two_rules(data):
  logits = data.draw(S.logit_batches(max_rows=3, max_size=200), label="logits")
  n, v = logits.shape
  k = np.array([data.draw(S.top_ks(v)) for _ in range(n)], np.int32)
  p = np.array([data.draw(S.top_ps()) for _ in range(n)], np.float32)
  want = np.asarray(_in_turn(logits, k, p))
  got, ok = _fused(logits, k, p)
  np.testing.assert_array_equal(np.asarray(got)[ok], want[ok])
  np.testing.assert_array_equal(*_pipeline_top_k_top_p(logits, k, p))


@pytest.mark.parametrize("k", [1, 7, 50, 63, 64, 700])
def test_top_p_on_top_k_candidates_on_long_rows(k):
  # Long rows (the blocked candidate search): heavy ties, -inf, denormals, NaN, +inf, p = 1.
  rng = np.random.default_rng(k)
  v = 40000
  logits = (rng.normal(size=(7, v)) * 3).astype(np.float32)
  logits[1] = rng.integers(-50, 50, size=v)
  logits[2, rng.integers(0, v, 2000)] = -np.inf
  logits[3] = rng.choice(np.array([1e-40, -1e-40, 0.0, -0.0, 1e-45], np.float32), v)
  logits[4, 5] = np.nan
  logits[5, 9] = np.inf
  kk = np.full(7, k, np.int32)
  p = np.array([0.9, 0.5, 0.9, 0.9, 0.8, 0.9, 1.0], np.float32)
  want = np.asarray(_in_turn(logits, kk, p))
  got, ok = _fused(logits, kk, p)
  np.testing.assert_array_equal(np.asarray(got)[ok], want[ok])
  np.testing.assert_array_equal(*_pipeline_top_k_top_p(logits, kk, p))
  # The shortcut is taken where top_k keeps fewer tokens than its candidates, and not for
  # +inf or denormal rows, nor where ties carry top_k past its candidates.
  if k < 64:
    assert ok[[0, 2, 4, 6]].all()
    assert not ok[[3, 5]].any()
  else:
    assert not ok.any()
  ps = np.array([_safe_p(row, pi) if pi < 1 else 1.0 for row, pi in zip(want, p)])
  ref = R.apply_rows(R.top_p_ref, R.apply_rows(R.top_k_ref, logits, kk), ps)
  ours = _pipeline_top_k_top_p(logits, kk, ps.astype(np.float32))[0]
  rows = [0, 1, 2, 4, 5, 6]  # (the pipeline's temperature flushes row 3's denormals)
  assert_same_masks_and_values(ours[rows], ref[rows], exact_values=True)


# --------------------------------------------------------------------------------------------
# the pipeline skips top_p where the min_p cut lies inside the nucleus


def _pipeline_top_p_min_p(logits, p, mp):
  from jaxlogits import pipeline
  params = pipeline.SamplingParams.create(logits.shape[0], top_p=p, min_p=mp)
  return pipeline.process_logits(jnp.asarray(logits), params)


def _composed_top_p_min_p(logits, p, mp):
  p32 = jnp.asarray(p, jnp.float32)[:, None]
  return truncation._min_p(truncation._top_p(jnp.asarray(logits), p32),
                           jnp.asarray(mp, jnp.float32)[:, None])


@hypothesis.given(data=st.data())
def test_min_p_inside_top_p_matches_the_full_path_on_adversarial_rows(data):
  logits = data.draw(S.logit_batches(max_rows=3, max_size=200), label="logits")
  n = logits.shape[0]
  p = np.array([data.draw(S.top_ps()) for _ in range(n)], np.float32)
  mp = np.array([data.draw(S.min_ps()) for _ in range(n)], np.float32)
  # bitwise the same as top_p then min_p without the shortcut
  np.testing.assert_array_equal(np.asarray(_pipeline_top_p_min_p(logits, p, mp)),
                                np.asarray(_composed_top_p_min_p(logits, p, mp)))
  hypothesis.assume(R.row_margins(R.top_p_margin, logits, p).min() >= MARGIN)
  hypothesis.assume(R.row_margins(R.min_p_margin, logits, mp).min() >= MARGIN)
  want = np.stack([R.min_p_ref(R.top_p_ref(row, pi), mi) for row, pi, mi in zip(logits, p, mp)])
  assert_same_masks_and_values(_pipeline_top_p_min_p(logits, p, mp), want, exact_values=True)


@pytest.mark.parametrize("scale", [0.5, 2.0, 6.0])
def test_min_p_inside_top_p_on_long_rows_near_and_far_from_the_margin(scale):
  rng = np.random.default_rng(int(scale * 10))
  v = 30000
  logits = (rng.normal(size=(6, v)) * scale).astype(np.float32)
  logits[1, rng.integers(0, v, 3000)] = -np.inf
  logits[2, :5000] = np.round(logits[2, :5000])  # ties
  logits[3, 7] = np.nan
  mp = np.full(6, 0.05, np.float32)
  x = np.where(np.isnan(logits), -np.inf, logits).astype(np.float64)
  w = np.exp(x - x.max(-1, keepdims=True))
  kept_mass = np.sum(np.where(x >= x.max(-1, keepdims=True) + np.log(0.05), w, 0), -1) / w.sum(-1)
  # rows 0-3: p well above the min_p cut's mass (the shortcut); row 4 just above it, inside the
  # margin (the full search); row 5 below it (top_p cuts deeper than min_p)
  p = np.minimum(kept_mass + 0.2, 0.999)
  p[4] = kept_mass[4] + 5e-5
  p[5] = kept_mass[5] * 0.5
  p = p.astype(np.float32)
  inside = np.asarray(truncation._min_p_inside_top_p(jnp.asarray(logits), jnp.asarray(p)[:, None],
                                                     jnp.asarray(mp)[:, None]))[:, 0]
  assert inside[:4].all() and not inside[4] and not inside[5]
  got = _pipeline_top_p_min_p(logits, p, mp)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(_composed_top_p_min_p(logits, p, mp)))
  want = np.stack([R.min_p_ref(R.top_p_ref(row, pi), mi)
                   for row, pi, mi in zip(logits, p, mp)])
  assert_same_masks_and_values(got, want, exact_values=True)


# --- rows in blocks ----------------------------------------------------------------------------
import jax  # noqa: E402

from jaxlogits import _numerics as nm  # noqa: E402


def _adversarial_batch(v, seed):
  rng = np.random.default_rng(seed)
  x = (rng.normal(size=(7, v)) * 3).astype(np.float32)
  x[1, rng.integers(0, v, 20)] = np.nan
  x[2, :5] = np.inf
  x[3] = -np.inf
  x[4] = np.round(x[4])  # ties everywhere
  x[5] = rng.normal(size=v).astype(np.float32) * 1e-39  # denormals
  x[6, : v // 2] = -np.inf
  return x


@pytest.mark.parametrize("rule", ["top_k", "min_p"] + [f"top_p {p}" for p in TOP_P_PATHS])
def test_rules_give_the_same_bits_in_row_blocks(monkeypatch, rule):
  # 7 rows in blocks of 2 (the last block overlaps); each row alone is one block. Shapes of their
  # own, so that no earlier trace with other blocks is reused.
  v = 1031
  monkeypatch.setattr(nm, "ROW_BLOCK_BYTES", 2 * 4 * v)
  x = _adversarial_batch(v, seed=len(rule))
  rows = np.arange(7)
  if rule == "top_k":
    param, fn = np.array([1, 3, 50, 70, 200, 0, 1031]), lambda l, k: truncation._top_k(l, k)
  elif rule == "min_p":
    param, fn = np.array([0.0, 0.05, 0.1, 0.3, 0.5, 0.9, 1.0]), truncation._min_p
  else:
    path = rule[len("top_p "):]
    param = np.array([0.1, 0.5, 0.9, 0.95, 0.99, 0.3, 1.0])
    fn = lambda l, p: _top_p(l, p[:, 0], path)
  as_param = lambda a: jnp.asarray(a, jnp.int32 if rule == "top_k" else jnp.float32)[:, None]
  assert nm.block_rows(7, v) in (2, 7)
  got = np.asarray(jax.jit(fn)(jnp.asarray(x), as_param(param)))
  for r in rows:
    want = np.asarray(fn(jnp.asarray(x[r:r + 1]), as_param(param[r:r + 1])))
    np.testing.assert_array_equal(got[r:r + 1].view(np.int32), want.view(np.int32))
