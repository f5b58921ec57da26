"""Decode loops (jaxlogits/decode.py): generate, stream, score."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlogits as jl
from jaxlogits import decode
from jaxlogits.model import create_model, get_config

V = 12


class CountingCache(tuple):
  pass


def counting_model(tokens, cache):
  """A toy model: after token t it strongly predicts (t + 1) % V. The cache is the last token."""
  valid = tokens >= 0
  last = jnp.where(valid, tokens, cache[:, None])
  # running "last valid token" along the time axis
  last = jax.lax.associative_scan(lambda a, b: jnp.where(b >= 0, b, a),
                                  jnp.where(valid, tokens, -1), axis=1)
  last = jnp.where(last >= 0, last, cache[:, None])
  logits = jax.nn.one_hot((last + 1) % V, V) * 20.0
  new_cache = last[:, -1]
  return logits, new_cache


def _counting_cache(b):
  return jnp.zeros((b,), jnp.int32)


def test_eos_ends_exactly_at_the_eos_token():
  out = decode.generate(jax.random.key(0), counting_model, _counting_cache(2),
                        jnp.array([[3, 0], [7, 8]]), jnp.array([1, 2]),
                        jl.SamplingParams.create(2, temperature=0.0), max_new_tokens=8,
                        eos_token_id=6)
  # row 0: 4 5 6 (eos); row 1: 9 10 11 0 1 2 3 4 (length)
  np.testing.assert_array_equal(out.tokens[0], [4, 5, 6, -1, -1, -1, -1, -1])
  np.testing.assert_array_equal(out.tokens[1], [9, 10, 11, 0, 1, 2, 3, 4])
  np.testing.assert_array_equal(out.length, [3, 8])
  assert [decode.FINISH_REASONS[int(r)] for r in out.finish_reason] == ["eos", "length"]


def test_stop_sequences_end_exactly_after_the_sequence_and_only_in_the_output():
  # the prompt already contains "4 5": a stop sequence must match generated tokens only
  out = decode.generate(jax.random.key(0), counting_model, _counting_cache(1),
                        jnp.array([[4, 5, 2]]), None,
                        jl.SamplingParams.create(1, temperature=0.0), max_new_tokens=10,
                        stop_sequences=[[4, 5], [11, 11]])
  np.testing.assert_array_equal(out.tokens[0, :3], [3, 4, 5])
  assert int(out.length[0]) == 3
  assert decode.FINISH_REASONS[int(out.finish_reason[0])] == "stop"


def test_min_tokens_suppresses_eos():
  params = jl.SamplingParams.create(1, temperature=0.0, min_tokens=5)
  out = decode.generate(jax.random.key(0), counting_model, _counting_cache(1),
                        jnp.array([[4]]), None, params, max_new_tokens=8, eos_token_id=5)
  assert int(out.tokens[0, 0]) != 5  # eos was most likely but banned
  assert int(out.length[0]) >= 5


def test_invalid_logits_finish_reason():
  def nan_model(tokens, cache):
    return jnp.full(tokens.shape + (V,), jnp.nan), cache
  out = decode.generate(jax.random.key(0), nan_model, _counting_cache(1), jnp.array([[1]]),
                        max_new_tokens=4)
  assert decode.FINISH_REASONS[int(out.finish_reason[0])] == "invalid_logits"
  assert int(out.length[0]) == 0


@functools.lru_cache(maxsize=None)
def _tiny():
  return create_model(get_config("tiny"), seed=0)


def _callback(b, max_len=32):
  return decode.model_callback(_tiny(), b, max_len)


PROMPTS = jnp.array([[256, 100, 101, 102, 103], [256, 65, 0, 0, 0], [256, 1, 2, 3, 0]])
LENGTHS = jnp.array([5, 2, 4])


@pytest.mark.skipif(jax.default_backend() != "cpu", reason=(
    "a GPU picks matmul kernels by batch size, so the model's logits (not the sampling) can "
    "round differently for a row alone and in a batch"))
def test_rows_do_not_depend_on_batch_mates_or_padding():
  params = jl.SamplingParams.create(3, temperature=[1.0, 0.8, 1.2], top_p=[0.9, 1.0, 0.8],
                                    repetition_penalty=1.2)
  fn, cache = _callback(3)
  full = decode.generate(jax.random.key(3), fn, cache, PROMPTS, LENGTHS, params,
                         max_new_tokens=10)
  for i in range(3):
    fn1, cache1 = _callback(1)
    # the same row alone, with a different amount of padding and its own key derivation:
    # prompt index i is replaced by 0, so fold the key the same way by hand
    alone = decode._generate(
        fn1, cache1, decode._Prepared(
            jnp.pad(PROMPTS[i:i + 1, :int(LENGTHS[i])], ((0, 0), (0, 3))), LENGTHS[i:i + 1],
            jax.tree.map(lambda a: a[i:i + 1], params),
            decode._row_keys(jax.random.key(3), 3, 1)[i:i + 1],
            jnp.zeros((1, 0), jnp.int32), jnp.zeros((1, 0, 0), jnp.int32),
            jnp.zeros((1, 0), bool), jnp.array([10], jnp.int32)),
        max_new_tokens=10, top_k=0)
    np.testing.assert_array_equal(alone.tokens[0], full.tokens[i])


def test_same_key_same_tokens_and_samples_are_distinct():
  fn, cache = _callback(6)
  params = jl.SamplingParams.create(2, temperature=1.0)
  run = lambda: decode.generate(jax.random.key(5), fn, cache, PROMPTS[:2], LENGTHS[:2], params,
                                max_new_tokens=12, num_samples=3)
  a, b = run(), run()
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert len({tuple(np.asarray(t)) for t in a.tokens[:3]}) == 3  # 3 distinct samples


def test_stream_matches_compiled_loop():
  params = jl.SamplingParams.create(3, temperature=[0.9, 0.0, 1.1], top_k=[0, 0, 20],
                                    min_p=0.05)
  fn, cache = _callback(3)
  kwargs = dict(max_new_tokens=9, eos_token_id=10, top_logprobs=3)
  compiled = decode.generate(jax.random.key(1), fn, cache, PROMPTS, LENGTHS, params, **kwargs)
  states = list(decode.stream(jax.random.key(1), fn, cache, PROMPTS, LENGTHS, params, **kwargs))
  streamed = states[-1].out
  for a, b in zip(compiled, streamed):
    np.testing.assert_array_equal(a, b)
  # tokens appear step by step
  np.testing.assert_array_equal(states[0].out.tokens[:, 0], compiled.tokens[:, 0])


def test_logprobs_and_top_alternatives():
  fn, cache = _callback(3)
  out = decode.generate(jax.random.key(2), fn, cache, PROMPTS, LENGTHS,
                        jl.SamplingParams.create(3, top_k=5), max_new_tokens=4, top_logprobs=5)
  # processed log-probs (after top_k 5) are >= raw ones, and the chosen token is in the top 5
  assert np.all(np.asarray(out.processed_logprobs) >= np.asarray(out.logprobs) - 1e-6)
  assert np.all(np.any(np.asarray(out.top_ids) == np.asarray(out.tokens)[..., None], -1))
  np.testing.assert_allclose(out.top_logprobs[..., 0] >= out.top_logprobs[..., 1], True)


def test_score_equals_summed_token_logprobs():
  model = _tiny()
  fn, cache = _callback(2)
  prompts = jnp.array([[256, 72, 105], [256, 0, 0]])
  conts = jnp.array([[33, 10, 0], [65, 66, 67]])
  out = decode.score(fn, cache, prompts, jnp.array([3, 1]), conts, jnp.array([2, 3]))
  for b, (p, c) in enumerate([([256, 72, 105], [33, 10]), ([256], [65, 66, 67])]):
    seq = jnp.array([p + c])
    logits = model.forward(seq)[0]
    want = jl.token_logprobs(logits[len(p) - 1:-1], jnp.array(c))
    np.testing.assert_allclose(out.token_logprobs[b, :len(c)], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.total[b], want.sum(), rtol=1e-5, atol=1e-5)


def test_bad_arguments():
  fn, cache = _callback(1)
  with pytest.raises(ValueError, match="max_new_tokens"):
    decode.generate(jax.random.key(0), fn, cache, jnp.array([[256]]), max_new_tokens=0)
  with pytest.raises(ValueError, match="prompt_lengths"):
    decode.generate(jax.random.key(0), fn, cache, jnp.array([[256]]), jnp.array([2]),
                    max_new_tokens=2)


def test_beam_one_equals_greedy():
  fn, cache = _callback(3)
  params = jl.SamplingParams.create(3, repetition_penalty=1.3, top_k=[0, 5, 10])
  greedy = decode.generate(jax.random.key(0), fn, cache, PROMPTS, LENGTHS,
                           params._replace(temperature=jnp.zeros(3)), max_new_tokens=8)
  beams = decode.beam_search(fn, cache, PROMPTS, LENGTHS, params, num_beams=1, max_new_tokens=8)
  np.testing.assert_array_equal(beams.tokens[:, 0], greedy.tokens)


def _two_step_model(tokens, cache):
  """After token 0: p(1)=0.6, p(2)=0.4; after 1: uniform; after 2: p(2)=0.99."""
  table = jnp.log(jnp.array([[1e-9, 0.6, 0.4], [1 / 3, 1 / 3, 1 / 3], [0.005, 0.005, 0.99]]))
  valid = tokens >= 0
  last = jax.lax.associative_scan(lambda a, b: jnp.where(b >= 0, b, a),
                                  jnp.where(valid, tokens, -1), axis=1)
  last = jnp.where(last >= 0, last, cache[:, None])
  return table[last], last[:, -1]


def test_beam_search_beats_greedy_and_ranks_hypotheses():
  cache = jnp.zeros((2,), jnp.int32)
  out = decode.beam_search(_two_step_model, cache, jnp.array([[0]]), num_beams=2,
                           max_new_tokens=2, length_penalty=0.0)
  np.testing.assert_array_equal(out.tokens[0, 0], [2, 2])  # 0.4 * 0.99 beats 0.6 * 1/3
  np.testing.assert_allclose(out.logprob[0, 0], np.log(0.4 * 0.99), rtol=1e-5)
  assert out.scores[0, 0] >= out.scores[0, 1]
  greedy = decode.generate(jax.random.key(0), _two_step_model, cache[:1], jnp.array([[0]]),
                           params=jl.SamplingParams.create(1, temperature=0.0), max_new_tokens=2)
  np.testing.assert_array_equal(greedy.tokens[0], [1, 0])


def test_beam_search_honours_bias_and_eos_with_length_penalty():
  cache = jnp.zeros((3,), jnp.int32)
  params = jl.SamplingParams.create(1, logit_bias={2: -jnp.inf})
  out = decode.beam_search(_two_step_model, cache, jnp.array([[0]]), params=params,
                           num_beams=3, max_new_tokens=3, eos_token_id=0, length_penalty=1.0)
  assert not np.any(np.asarray(out.tokens) == 2)
  ended = np.asarray(out.finished[0])
  for h in range(3):
    n = int(out.length[0, h])
    toks = np.asarray(out.tokens[0, h])
    assert np.all(toks[n:] == -1)
    if ended[h]:
      assert toks[n - 1] == 0
    np.testing.assert_allclose(out.scores[0, h], out.logprob[0, h] / n, rtol=1e-5)
  assert np.all(np.diff(np.asarray(out.scores[0])) <= 1e-6)


def test_surviving_mass_and_prompt_logprobs():
  model = _tiny()
  fn, cache = _callback(3)
  out = decode.generate(jax.random.key(4), fn, cache, PROMPTS, LENGTHS,
                        jl.SamplingParams.create(3, top_k=[3, 0, 10], top_p=[1.0, 1.0, 0.5]),
                        max_new_tokens=3)
  mass = np.asarray(out.surviving_mass)
  assert np.all((mass > 0) & (mass <= 1 + 1e-6))
  np.testing.assert_allclose(mass[1], 1.0, rtol=1e-5)  # no truncation on row 1
  # S equals the raw probability of the kept set: check step 0 of row 0 (top_k 3) by hand
  logits0 = model.forward(PROMPTS[:1, :5])[0, 4]
  top3 = np.sort(np.asarray(jax.nn.softmax(logits0)))[-3:].sum()
  np.testing.assert_allclose(mass[0, 0], top3, rtol=1e-5)
  # prompt log-probs: position t scored given the tokens before it; 0 at t = 0 and padding
  for b in range(3):
    n = int(LENGTHS[b])
    full = model.forward(PROMPTS[b:b + 1, :n])[0]
    want = jl.token_logprobs(full[:-1], PROMPTS[b, 1:n])
    np.testing.assert_allclose(out.prompt_logprobs[b, 1:n], want, rtol=1e-5, atol=1e-5)
    assert float(out.prompt_logprobs[b, 0]) == 0.0
    assert np.all(np.asarray(out.prompt_logprobs[b, n:]) == 0.0)


def test_per_row_eos_stop_sequences_and_max_new_tokens():
  params = jl.SamplingParams.create(3, temperature=0.0)
  prompts = jnp.array([[3], [3], [3]])  # the counting model then emits 4 5 6 7 8 ...
  out = decode.generate(jax.random.key(0), counting_model, _counting_cache(3), prompts,
                        params=params, max_new_tokens=[8, 8, 2],
                        eos_token_id=jnp.array([[6, -1], [-1, -1], [-1, -1]]),
                        stop_sequences=[[], [[5, 6, 7]], []])
  np.testing.assert_array_equal(out.length, [3, 4, 2])
  assert [decode.FINISH_REASONS[int(r)] for r in out.finish_reason] == ["eos", "stop", "length"]
  np.testing.assert_array_equal(out.tokens[2], [4, 5, -1, -1, -1, -1, -1, -1])


def test_a_cache_too_small_is_an_error():
  fn, cache = _callback(1, max_len=4)
  with pytest.raises(ValueError, match="cache holds 4 positions"):
    decode.generate(jax.random.key(0), fn, cache, jnp.array([[256, 1]]), max_new_tokens=3)


def test_beam_search_with_length_penalty_keeps_looking_for_longer_hypotheses():
  # start -> EOS (-0.5), A (-1.5), B (-1.6); A -> EOS; B -> C (-0.4); C -> EOS (~0).
  # With length_penalty 1, [B, C, EOS] (-2.0 / 3 = -0.67) beats [A, EOS] (-1.53 / 2).
  lp = np.full((5, 5), -30.0)
  lp[0, [1, 2, 3]] = [-0.5, -1.5, -1.6]  # ids: 0 start, 1 EOS, 2 A, 3 B, 4 C
  lp[2, 1] = -0.03
  lp[3, 4] = -0.4
  lp[4, 1] = -0.001
  table = jnp.asarray(lp, jnp.float32)

  def model(tokens, cache):
    valid = tokens >= 0
    last = jax.lax.associative_scan(lambda a, b: jnp.where(b >= 0, b, a),
                                    jnp.where(valid, tokens, -1), axis=1)
    last = jnp.where(last >= 0, last, cache[:, None])
    return table[last], last[:, -1]

  out = decode.beam_search(model, jnp.zeros((2,), jnp.int32), jnp.array([[0]]), num_beams=2,
                           max_new_tokens=4, eos_token_id=1, length_penalty=1.0)
  hyps = {tuple(int(t) for t in out.tokens[0, h, :int(out.length[0, h])]) for h in range(2)}
  assert (3, 4, 1) in hyps, hyps


def test_model_callbacks_share_one_compilation_and_see_their_own_weights():
  # The weights travel in the cache, so a second model of the same structure reuses the compiled
  # loop (no recompilation) and still decodes with its own weights.
  prompts = jnp.array([[256, 65, 66], [256, 67, 68]])
  params = jl.SamplingParams.create(2, temperature=0.0)
  before = decode._generate._cache_size()
  outs = []
  for seed in (11, 12):
    fn, cache = decode.model_callback(create_model(get_config("tiny"), seed=seed), 2, 16)
    outs.append(decode.generate(jax.random.key(0), fn, cache, prompts, params=params,
                                max_new_tokens=6))
  assert decode._generate._cache_size() == before + 1
  ref = create_model(get_config("tiny"), seed=12)
  fn, cache = decode.model_callback(ref, 2, 16)
  logits, _ = fn(prompts, cache)
  np.testing.assert_array_equal(outs[1].tokens[:, 0], jnp.argmax(logits[:, -1], axis=-1))
  # Random tiny models repeat tokens greedily; their log-probs show whose weights ran.
  assert not np.allclose(outs[0].prompt_logprobs, outs[1].prompt_logprobs)
  np.testing.assert_allclose(
      outs[1].prompt_logprobs[:, 1:],
      jl.token_logprobs(logits[:, :-1], prompts[:, 1:]), rtol=1e-5, atol=1e-6)
  # Beam search reorders the cache's rows and leaves the weights alone.
  fn, cache = decode.model_callback(ref, 4, 16)
  beams = decode.beam_search(fn, cache, prompts, num_beams=2, max_new_tokens=3)
  assert beams.tokens.shape[0] == 2
