"""Language-model classification (jaxlogits/classify.py) against full forward passes and float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxlogits as jl
from jaxlogits import classify as cl
from jaxlogits.model import create_model, get_config

BOS = 256


@pytest.fixture(scope="module")
def model():
  return create_model(get_config("tiny"), seed=1)


@pytest.fixture(scope="module")
def fns(model):
  return cl.for_model(model)


@pytest.fixture(scope="module")
def batched(fns):
  """Every candidate of every prompt of PROMPTS, CANDS in one call."""
  return cl.score_candidates(*fns, PROMPTS, CANDS)


def reference_logprobs(model, pairs, width=16):
  """Each candidate's token log-probs from one full forward pass (no cache) over all pairs.

  A row is ``prompt ++ candidate`` followed by zeros; the attention is causal, so the trailing
  zeros do not change the logits at the earlier positions.
  """
  rows = [list(p) + list(c) for p, c in pairs]
  tokens = jnp.asarray([r + [0] * (width - len(r)) for r in rows], jnp.int32)
  logits = model.forward(tokens)
  lp = np.asarray(jl.token_logprobs(logits[:, :-1], tokens[:, 1:]), np.float64)
  return [lp[i, len(p) - 1:len(p) - 1 + len(c)] for i, (p, c) in enumerate(pairs)]


def softmax64(x):
  x = np.asarray(x, np.float64)
  m = x.max(axis=-1, keepdims=True)
  u = np.exp(x - m)
  return u / u.sum(axis=-1, keepdims=True)


PROMPTS = [[BOS, 100, 101, 102], [BOS, 50], [BOS, 1, 2, 3, 4, 5, 6]]
CANDS = [[[32], [32, 120, 121], [9, 8, 7, 6, 5]],
         [[65, 66, 67, 68], [70], [71, 72]],
         [[0, 255], [10], [11, 12, 13, 14, 15, 16]]]


# --------------------------------------------------------------------------------------------
# score_candidates


def test_scores_equal_summed_token_logprobs_of_a_full_forward_pass(model, batched):
  out = batched
  assert out.total.shape == (3, 3) and out.length.shape == (3, 3)
  assert out.token_logprobs.shape == (3, 3, 6)
  pairs = [(p, c) for p, cands in zip(PROMPTS, CANDS) for c in cands]
  refs = iter(reference_logprobs(model, pairs))
  for b, prompt in enumerate(PROMPTS):
    for k, cand in enumerate(CANDS[b]):
      ref = next(refs)
      n = len(cand)
      assert int(out.length[b, k]) == n
      np.testing.assert_allclose(out.token_logprobs[b, k, :n], ref, rtol=1e-5, atol=1e-4)
      assert np.all(np.asarray(out.token_logprobs[b, k, n:]) == 0)
      np.testing.assert_allclose(out.total[b, k], ref.sum(), rtol=1e-5, atol=1e-4)


def test_batched_call_equals_scoring_each_pair_alone(fns, batched):
  for b, prompt in enumerate(PROMPTS[:2]):  # two prompts, two candidates: 4 small compiles
    for k, cand in enumerate(CANDS[b][:2]):
      alone = cl.score_candidates(*fns, prompt, [cand])
      assert alone.total.shape == (1,)
      np.testing.assert_allclose(batched.total[b, k], alone.total[0], rtol=1e-5, atol=1e-5)


def test_one_prompt_and_shared_candidates(fns, batched):
  single = cl.score_candidates(*fns, PROMPTS[0], CANDS[0])
  assert single.total.shape == (3,) and single.token_logprobs.shape == (3, 5)
  shared = cl.score_candidates(*fns, PROMPTS[:2], CANDS[0])  # one list for every prompt
  explicit = cl.score_candidates(*fns, PROMPTS[:2], [CANDS[0], CANDS[0]])
  np.testing.assert_allclose(shared.total, explicit.total, rtol=1e-6)
  np.testing.assert_allclose(shared.total[0], single.total, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(single.total, batched.total[0], rtol=1e-5, atol=1e-5)
  arrays = cl.score_candidates(*fns, np.asarray(PROMPTS[0]), [np.asarray(c) for c in CANDS[0]])
  np.testing.assert_allclose(arrays.total, single.total, rtol=1e-6)


def test_any_callback_and_cache_factory_work(model, batched):
  """The functions know the model only through tokens_to_logits and make_cache."""
  fn, _ = jl.model_callback(model, 1, 1)
  calls = []

  def make_cache(batch_size, max_len):
    calls.append((batch_size, max_len))
    return jl.model_callback(model, batch_size, max_len)[1]

  out = cl.score_candidates(fn, make_cache, PROMPTS[1], CANDS[1])
  assert calls == [(3, 2 + 4)]  # one call: rows = prompts x candidates, room for P + C
  np.testing.assert_allclose(out.total, batched.total[1], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# class_probabilities


@given(st.lists(st.floats(-50, 0), min_size=2, max_size=5),
       st.lists(st.integers(1, 9), min_size=5, max_size=5),
       st.lists(st.floats(-50, 0), min_size=5, max_size=5))
def test_normalisations_match_float64_softmax(totals, lengths, cf):
  k = len(totals)
  t, n, c = np.asarray(totals, np.float32), np.asarray(lengths[:k]), np.asarray(cf[:k], np.float32)
  expected = {"sum": softmax64(t), "mean": softmax64(t / n), "calibrated": softmax64(t - c)}
  for norm, ref in expected.items():
    out = cl.class_probabilities(t, n, normalisation=norm,
                                 content_free_logprobs=c if norm == "calibrated" else None)
    np.testing.assert_allclose(out.probs, ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(jnp.sum(out.probs)), 1.0, atol=1e-5)
    np.testing.assert_allclose(out.logprobs, np.log(ref), rtol=1e-4, atol=1e-5)


def test_probabilities_sum_to_one_per_prompt_for_every_normalisation(fns, batched):
  s = batched
  cf = cl.score_candidates(*fns, [[BOS]] * 3, CANDS).total
  for norm in cl.NORMALISATIONS:
    out = cl.class_probabilities(s.total, s.length, normalisation=norm,
                                 content_free_logprobs=cf if norm == "calibrated" else None)
    assert out.probs.shape == (3, 3)
    np.testing.assert_allclose(jnp.sum(out.probs, axis=-1), 1.0, atol=1e-5)


def test_mean_is_softmax_of_totals_over_lengths():
  totals = jnp.array([[-12.0, -3.0, -20.0], [-1.0, -2.0, -3.0]])
  lengths = jnp.array([[4, 1, 10], [1, 2, 3]])
  out = cl.class_probabilities(totals, lengths, normalisation="mean")
  np.testing.assert_allclose(out.probs, softmax64(np.asarray(totals) / np.asarray(lengths)),
                             rtol=1e-5)
  np.testing.assert_allclose(out.probs[1], 1 / 3, rtol=1e-5)  # every mean is -1


def test_calibrated_is_softmax_of_totals_minus_content_free_totals():
  totals = jnp.array([[-5.0, -6.0], [-9.0, -2.0]])
  cf = jnp.array([-7.0, -3.0])  # one content-free total per candidate, shared by the prompts
  out = cl.class_probabilities(totals, normalisation="calibrated", content_free_logprobs=cf)
  np.testing.assert_allclose(out.probs, softmax64(np.asarray(totals) - np.asarray(cf)),
                             rtol=1e-5)
  # a per-prompt constant added to the content-free totals changes nothing
  shifted = cl.class_probabilities(totals, normalisation="calibrated",
                                   content_free_logprobs=cf - 40.0)
  np.testing.assert_allclose(shifted.probs, out.probs, rtol=1e-5)


def test_stable_for_very_negative_totals():
  base = np.array([0.0, -1.0, -2.0, -0.5])
  for shift in (-1e4, -1e5):
    out = cl.class_probabilities(jnp.asarray(base + shift, jnp.float32), jnp.array([3, 2, 5, 1]),
                                 normalisation="sum")
    assert np.all(np.isfinite(out.probs)) and np.all(np.isfinite(out.logprobs))
    np.testing.assert_allclose(out.probs, softmax64(base), atol=2e-2 if shift < -1e4 else 2e-3)
  far = cl.class_probabilities(jnp.array([-1e4, -1.0, -jnp.inf]))
  np.testing.assert_array_equal(far.probs, [0.0, 1.0, 0.0])
  assert float(far.logprobs[1]) == 0.0 and float(far.logprobs[2]) == -np.inf
  assert np.isfinite(float(far.logprobs[0]))
  cal = cl.class_probabilities(jnp.array([-1e4, -1e4 - 2.0]), normalisation="calibrated",
                               content_free_logprobs=jnp.array([-1e4 + 1.0, -1e4 - 1.0]))
  np.testing.assert_allclose(cal.probs, softmax64([-1.0, -1.0]), atol=1e-3)


def test_masked_candidates_get_probability_zero():
  totals = jnp.array([[-1.0, -2.0, -3.0], [-1.0, -2.0, 0.0]])
  lengths = jnp.array([[1, 1, 1], [1, 1, 0]])  # the padding candidate may be empty
  where = jnp.array([[True, True, True], [True, True, False]])
  out = cl.class_probabilities(totals, lengths, normalisation="mean", where=where)
  assert float(out.probs[1, 2]) == 0.0 and float(out.logprobs[1, 2]) == -np.inf
  np.testing.assert_allclose(out.probs[1, :2], softmax64([-1.0, -2.0]), rtol=1e-5)


def test_jitted_call_never_gives_nan():
  f = jax.jit(lambda t, n, w: cl.class_probabilities(t, n, normalisation="mean", where=w))
  out = f(jnp.array([[-1.0, jnp.nan], [-2.0, -3.0]]), jnp.array([[1, 0], [1, 1]]),
          jnp.array([[True, True], [False, False]]))
  assert not np.any(np.isnan(np.asarray(out.probs)))
  np.testing.assert_array_equal(out.probs, [[1.0, 0.0], [0.0, 0.0]])


# --------------------------------------------------------------------------------------------
# classify


def test_classify_combines_scoring_and_normalisation(fns, batched):
  cf_prompt = [BOS, 78, 47, 65]
  out = cl.classify(*fns, PROMPTS, CANDS, normalisation="calibrated",
                    content_free_prompt=cf_prompt)
  s = batched
  cf = cl.score_candidates(*fns, [cf_prompt] * 3, CANDS).total
  np.testing.assert_allclose(out.total, s.total, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.content_free_total, cf, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(out.length, s.length)
  np.testing.assert_allclose(out.mean, np.asarray(s.total) / np.asarray(s.length), rtol=1e-5)
  ref = softmax64(np.asarray(s.total, np.float64) - np.asarray(cf, np.float64))
  np.testing.assert_allclose(out.probs, ref, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(out.prediction, np.argmax(ref, axis=-1))
  # shared candidates: the content-free rows are scored once and broadcast
  shared = cl.classify(*fns, PROMPTS[:2], CANDS[0], normalisation="calibrated",
                       content_free_prompt=cf_prompt)
  assert shared.content_free_total.shape == (2, 3)
  np.testing.assert_allclose(shared.content_free_total[1], cf[0], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("prompts,cands,error,message", [
    ([BOS, 1], [[2], []], ValueError, "candidate 1 is empty"),
    ([], [[2], [3]], ValueError, "is empty"),
    ([[BOS], [BOS, 1]], [[[2], [3]], [[4]]], ValueError, "same number"),
    ([[BOS], [BOS, 1]], [[[2], [3]]], ValueError, "1 lists for 2 prompts"),
    ([BOS, 1], [[2, -1], [3]], ValueError, "ids >= 0"),
    ([BOS, 1], [[2.0], [3]], TypeError, "integer token ids"),
    ("text", [[2], [3]], TypeError, "encode the text first"),
    ([BOS, 1], [], ValueError, "at least one candidate"),
])
def test_bad_scoring_input_raises(fns, prompts, cands, error, message):
  with pytest.raises(error, match=message):
    cl.score_candidates(*fns, prompts, cands)


@pytest.mark.parametrize("kwargs,message", [
    (dict(normalisation="max"), "normalisation must be one of"),
    (dict(normalisation="mean", lengths=None), "needs the candidates' lengths"),
    (dict(lengths=[2, 0]), "lengths must be >= 1"),
    (dict(normalisation="calibrated"), "content_free_logprobs is required"),
    (dict(content_free_logprobs=[-1.0, -1.0]), "only used by it"),
    (dict(normalisation="calibrated", content_free_logprobs=[-1.0, -np.inf]), "must be finite"),
    (dict(total_logprobs=[-1.0, np.nan]), "must not be NaN"),
    (dict(total_logprobs=[-np.inf, -np.inf]), "no candidate has a finite score"),
    (dict(total_logprobs=[[-1.0, -2.0], [-np.inf, -np.inf]]), r"prompt \(1,\)"),
    (dict(lengths=[1, 2, 3]), "does not broadcast"),
    (dict(total_logprobs=np.zeros((2, 0))), "K >= 1"),
])
def test_bad_normalisation_input_raises(kwargs, message):
  args = dict(total_logprobs=[-1.0, -2.0], lengths=[1, 2])
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    cl.class_probabilities(args.pop("total_logprobs"), args.pop("lengths"), **args)


def test_classify_checks_the_content_free_prompt(fns):
  with pytest.raises(ValueError, match="content_free_prompt is required"):
    cl.classify(*fns, [BOS], [[1], [2]], normalisation="calibrated")
  with pytest.raises(ValueError, match="only used by it"):
    cl.classify(*fns, [BOS], [[1], [2]], content_free_prompt=[BOS])
  with pytest.raises(ValueError, match="content_free_prompt is empty"):
    cl.classify(*fns, [BOS], [[1], [2]], normalisation="calibrated", content_free_prompt=[])
