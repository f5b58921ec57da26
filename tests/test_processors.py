"""Tests of the processor protocol (jaxlogits/processors.py)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxlogits as jl
from jaxlogits import processors as P


def _logits(b, v, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(b, v)) * 3, jnp.float32)


def test_chain_applies_in_order_and_matches_functions():
  logits = _logits(3, 20)
  hist = jl.History.empty((3,))
  proc = jl.chain(P.temperature(0.5), P.top_k(jnp.array([2, 5, 0])), P.top_p(0.8), P.min_p(0.1),
                  P.typical_p(0.9), P.epsilon_cutoff(1e-3), P.eta_cutoff(1e-3),
                  P.top_n_sigma(2.0))
  out, _ = proc.process(logits, proc.init(logits, hist), hist)
  want = jl.top_n_sigma(jl.eta_cutoff(jl.epsilon_cutoff(jl.typical_p(jl.min_p(jl.top_p(
      jl.top_k(jl.temperature(logits, 0.5), jnp.array([2, 5, 0])), 0.8), 0.1), 0.9), 1e-3),
      1e-3), 2.0)
  np.testing.assert_array_equal(out, want)
  reversed_ = jl.chain(P.top_k(2), P.temperature(0.5))
  out2, _ = reversed_.process(logits, reversed_.init(logits, hist), hist)
  np.testing.assert_array_equal(out2, jl.temperature(jl.top_k(logits, 2), 0.5))


def test_hyperparameters_live_in_state_and_do_not_recompile():
  logits = _logits(2, 10)
  hist = jl.History.empty((2,))
  proc = jl.chain(P.temperature(1.0), P.top_p(1.0))
  fn = jax.jit(lambda l, s: proc.process(l, s, hist)[0])
  state = proc.init(logits, hist)
  for t, p in [(0.5, 0.9), (1.5, 0.3), (0.1, 0.99)]:
    s = (state[0]._replace(value=jnp.full((2, 1), t)), state[1]._replace(value=jnp.full((2, 1), p)))
    np.testing.assert_array_equal(fn(logits, s), jl.top_p(jl.temperature(logits, t), p))
  assert fn._cache_size() == 1


def _decode(proc, logits_fn, prompt, steps, key):
  """A small decode loop under lax.scan carrying processor state and history."""
  b = prompt.shape[0]
  hist = jl.History.from_prompt(prompt, capacity=prompt.shape[1] + steps)
  template = jax.ShapeDtypeStruct((b, 16), jnp.float32)
  state = proc.init(template, hist)

  def body(carry, i):
    hist, state = carry
    logits = logits_fn(hist)
    tokens, state, _ = jl.sample_with(jax.random.fold_in(key, i), logits, proc, state, hist)
    return (hist.append(tokens), state), tokens

  (hist, state), tokens = lax.scan(body, (hist, state), jnp.arange(steps))
  return hist, state, tokens.T


def _toy_model(hist):
  # logits depend on the last token, so penalties and state matter
  last = jnp.take_along_axis(hist.tokens, jnp.maximum(hist.length - 1, 0)[:, None], 1)[:, 0]
  return jnp.sin(jnp.arange(16)[None, :] * (last[:, None] + 1.0)) * 3


def test_penalty_state_counts_match_recounting_in_a_scan():
  prompt = jnp.array([[1, 2, 3, 4], [5, 5, 5, 5]])
  proc = P.penalties(repetition=1.3, frequency=0.4, presence=0.2)
  hist, state, tokens = jax.jit(lambda k: _decode(proc, _toy_model, prompt, 12, k))(
      jax.random.key(0))
  recount = jl.token_counts(hist.tokens, 16, length=hist.length)
  np.testing.assert_array_equal(state.counts, recount)
  # the penalised step equals the stateless functions on recounted context
  logits = _toy_model(hist)
  got, _ = proc.process(logits, state, hist)
  want = jl.presence_penalty(jl.frequency_penalty(jl.repetition_penalty(
      logits, recount, 1.3), recount, 0.4), recount, 0.2)
  np.testing.assert_array_equal(got, want)


def test_output_only_counting():
  prompt = jnp.array([[1, 2, 3]])
  proc = P.penalties(frequency=1.0, count_prompt=False)
  hist = jl.History.from_prompt(prompt)
  state = proc.init(jnp.zeros((1, 8)), hist)
  assert int(state.counts.sum()) == 0


def test_standard_processor_equals_process_logits():
  prompt = jnp.array([[1, 2, 3, 1, 2], [4, 4, 5, 6, 7]])
  params = jl.SamplingParams.create(temperature=[0.7, 1.0], top_p=[0.9, 0.8],
                                    repetition_penalty=1.2, no_repeat_ngram_size=[2, 0],
                                    min_tokens=[1, 0])
  proc = P.standard(params, eos_token_id=0)
  hist = jl.History.from_prompt(prompt, capacity=8)
  logits = _logits(2, 16, seed=3)
  state = proc.init(logits, hist)
  got, _ = proc.process(logits, state, hist)
  want = jl.process_logits(logits, params, tokens=hist.tokens, length=hist.length,
                           num_generated=jnp.zeros(2, jnp.int32), eos_token_id=0)
  np.testing.assert_array_equal(got, want)
  assert got[0, 0] == -jnp.inf  # min_tokens bans eos on the first step


def test_mirostat_steers_surprise_towards_target():
  b, v = 64, 200
  logits = jnp.broadcast_to(jnp.linspace(0, -12, v), (b, v))
  proc = P.mirostat(tau=3.0, eta=0.2)
  hist = jl.History.empty((b,))
  state = proc.init(logits, hist)

  def body(state, i):
    tokens, state, processed = jl.sample_with(jax.random.fold_in(jax.random.key(1), i), logits,
                                              proc, state, hist)
    surprise = -jl.token_logprobs(processed, tokens) / jnp.log(2.0)
    return state, surprise

  state, surprise = jax.jit(lambda s: lax.scan(body, s, jnp.arange(300)))(state)
  mean_late = float(jnp.mean(surprise[100:]))
  assert abs(mean_late - 3.0) < 0.3, mean_late
  assert np.all(np.isfinite(np.asarray(state.mu)))


def test_no_repeat_processor_reads_history():
  prompt = jnp.array([[1, 2, 3, 1, 2]])
  proc = P.no_repeat_ngram(2)
  hist = jl.History.from_prompt(prompt)
  out, _ = proc.process(jnp.zeros((1, 5)), proc.init(jnp.zeros((1, 5)), hist), hist)
  np.testing.assert_array_equal(out[0] == -jnp.inf, [False, False, False, True, False])


def test_history_append_respects_lengths():
  hist = jl.History.from_prompt(jnp.array([[1, 2, 0], [3, 0, 0]]), length=jnp.array([2, 1]),
                                capacity=4)
  hist = hist.append(jnp.array([7, 8]))
  np.testing.assert_array_equal(hist.tokens, [[1, 2, 7, 0], [3, 8, 0, 0]])
  np.testing.assert_array_equal(hist.length, [3, 2])
