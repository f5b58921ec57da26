"""Tests of the batched parameter record and the standard pipeline (jaxlogits/pipeline.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlogits as jl
from tests.stats import chi_squared_pvalue, softmax64


def _logits(b=4, v=64, seed=0, scale=3.0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(b, v)) * scale, jnp.float32)


def test_one_compilation_serves_every_setting():
  step = jax.jit(lambda key, logits, params: jl.sample_step(key, logits, params)[0])
  logits = _logits()
  rng = np.random.default_rng(0)
  for i in range(20):
    params = jl.SamplingParams.create(
        temperature=rng.uniform(0, 2, 4).round(2) * (i % 3 != 0),
        top_k=rng.integers(0, 70, 4), top_p=rng.uniform(0.05, 1.0, 4),
        min_p=rng.uniform(0, 0.5, 4) * (i % 2))
    tokens = step(jax.random.key(i), logits, params)
    assert tokens.shape == (4,)
  assert step._cache_size() == 1


def test_every_field_changes_value_without_recompiling():
  step = jax.jit(lambda key, logits, params, counts, tokens: jl.sample_step(
      key, logits, params, counts=counts, tokens=tokens)[1])
  logits = _logits(2, 16)
  tokens = jnp.array([[1, 2, 3, 1, 2], [4, 4, 4, 4, 4]])
  counts = jl.token_counts(tokens, 16)
  base = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0,
              epsilon_cutoff=0.0, eta_cutoff=0.0, top_n_sigma=0.0, repetition_penalty=1.0,
              frequency_penalty=0.0, presence_penalty=0.0, no_repeat_ngram_size=0,
              min_tokens=0, temperature_last=False)
  changes = dict(temperature=0.5, top_k=3, top_p=0.5, min_p=0.2, typical_p=0.5,
                 epsilon_cutoff=0.01, eta_cutoff=0.01, top_n_sigma=1.0, repetition_penalty=1.3,
                 frequency_penalty=0.5, presence_penalty=0.5, no_repeat_ngram_size=2,
                 min_tokens=3, temperature_last=True)
  outs = []
  for name, value in changes.items():
    params = jl.SamplingParams.create(2, **{**base, name: value})
    outs.append(np.asarray(step(jax.random.key(0), logits, params, counts, tokens)))
  assert step._cache_size() == 1
  identity = np.asarray(step(jax.random.key(0), logits, jl.SamplingParams.create(2), counts,
                             tokens))
  np.testing.assert_array_equal(identity, np.asarray(logits))
  changed = [name for name, out in zip(changes, outs) if not np.array_equal(out, identity)]
  # min_tokens alone changes nothing without eos ids; every other setting must act.
  assert set(changed) == set(changes) - {"min_tokens", "temperature_last"}


def test_pipeline_equals_composed_transforms():
  logits = _logits(3, 50, seed=5)
  tokens = jnp.array([[1, 2, 3, 1, 2, 0], [5, 5, 6, 7, 5, 5], [9, 8, 9, 8, 9, 0]])
  length = jnp.array([5, 6, 5])
  params = jl.SamplingParams.create(
      temperature=[0.7, 1.3, 0.9], top_k=[10, 0, 5], top_p=[0.9, 0.8, 1.0], min_p=[0.0, 0.05, 0.1],
      typical_p=[1.0, 0.95, 0.9], epsilon_cutoff=[0.0, 0.001, 0.0], eta_cutoff=[0.0, 0.0, 0.002],
      top_n_sigma=[0.0, 2.0, 3.0], repetition_penalty=[1.2, 1.0, 1.5],
      frequency_penalty=[0.0, 0.3, 0.1], presence_penalty=[0.5, 0.0, 0.2],
      no_repeat_ngram_size=[2, 0, 3], logit_bias=[{3: 2.0}, None, {7: -1.0, 8: 0.5}],
      vocab_size=50)
  got = jl.process_logits(logits, params, tokens=tokens, length=length)
  counts = jl.token_counts(tokens, 50, length=length)
  x = jl.logit_bias(logits, jl.token_bias([{3: 2.0}, {}, {7: -1.0, 8: 0.5}], 50))
  x = jl.repetition_penalty(x, counts, params.repetition_penalty)
  x = jl.frequency_penalty(x, counts, params.frequency_penalty)
  x = jl.presence_penalty(x, counts, params.presence_penalty)
  x = jl.no_repeat_ngram(x, tokens, params.no_repeat_ngram_size, length=length)
  x = jl.temperature(x, params.temperature)
  x = jl.top_k(x, params.top_k)
  x = jl.top_p(x, params.top_p)
  x = jl.min_p(x, params.min_p)
  x = jl.typical_p(x, params.typical_p)
  x = jl.epsilon_cutoff(x, params.epsilon_cutoff)
  x = jl.eta_cutoff(x, params.eta_cutoff)
  x = jl.top_n_sigma(x, params.top_n_sigma)
  np.testing.assert_array_equal(got, x)


def test_temperature_last_applies_after_truncation():
  logits = _logits(2, 30, seed=2)
  params = jl.SamplingParams.create(temperature=[2.0, 2.0], min_p=0.2,
                                    temperature_last=[True, False])
  got = jl.process_logits(logits, params)
  np.testing.assert_array_equal(got[0], jl.temperature(jl.min_p(logits[0], 0.2), 2.0))
  np.testing.assert_array_equal(got[1], jl.min_p(jl.temperature(logits[1], 2.0), 0.2))


def test_min_tokens_suppresses_eos_until_reached():
  logits = jnp.array([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0]])
  params = jl.SamplingParams.create(min_tokens=[3, 3])
  out = jl.process_logits(logits, params, num_generated=jnp.array([2, 3]), eos_token_id=1)
  assert out[0, 1] == -jnp.inf and out[1, 1] == 5.0


def test_temperature_zero_rows_are_greedy_and_others_sample():
  logits = _logits(2, 20, seed=3)
  params = jl.SamplingParams.create(temperature=[0.0, 1.0])
  draws = [jl.sample_step(jax.random.key(i), logits, params)[0] for i in range(200)]
  draws = np.asarray(draws)
  assert np.all(draws[:, 0] == int(jl.greedy(logits[0])))
  assert len(np.unique(draws[:, 1])) > 3


def test_pipeline_draws_follow_processed_distribution():
  row = _logits(1, 40, seed=4)[0]
  params = jl.SamplingParams.create(4000, temperature=0.8, top_p=0.9, min_p=0.02)
  batch = jnp.broadcast_to(row, (4000, 40))
  tokens, processed = jl.sample_step(jax.random.key(3), batch, params)
  assert chi_squared_pvalue(np.asarray(tokens), softmax64(np.asarray(processed[0]))) > 1e-3


def test_create_validates_ranges_and_lengths():
  with pytest.raises(ValueError, match="top_p must be in"):
    jl.SamplingParams.create(top_p=0.0)
  with pytest.raises(ValueError, match="temperature must be in"):
    jl.SamplingParams.create(temperature=[-1.0, 1.0])
  with pytest.raises(ValueError, match="different lengths"):
    jl.SamplingParams.create(temperature=[1.0, 1.0], top_k=[1, 2, 3])
  with pytest.raises(ValueError, match="top_k must be an integer"):
    jl.SamplingParams.create(top_k=2.5)
  with pytest.raises(ValueError, match="logit_bias token id"):
    jl.SamplingParams.create(logit_bias={70: 1.0}, vocab_size=50)
  with pytest.raises(ValueError, match="repetition_penalty"):
    jl.SamplingParams.create(repetition_penalty=0.0)


def test_params_are_a_pytree_of_row_arrays():
  params = jl.SamplingParams.create(3, logit_bias={1: 1.0}, logit_bias_capacity=4)
  leaves = jax.tree.leaves(params)
  assert len(leaves) == 16
  assert params.logit_bias_ids.shape == (3, 4)
  assert all(leaf.shape[0] == 3 for leaf in leaves)


# --- against the float64 reference -------------------------------------------------------------
import hypothesis  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests import reference as R  # noqa: E402
from tests import strategies as S  # noqa: E402
from tests.compare import MARGIN, assert_same_masks_and_values, flush_denormals  # noqa: E402


@hypothesis.settings(max_examples=40)
@hypothesis.given(data=st.data())
def test_process_logits_matches_reference_pipeline(data):
  # (Few shapes, each compiled once: V from S.row_lengths, three rows, the bias list as long as
  # the row.)
  v = data.draw(S.row_lengths(1, 24))
  b = 3
  rows = [flush_denormals(data.draw(S.logit_rows(v, v))) for _ in range(b)]
  params = [data.draw(S.pipeline_params(v)) for _ in range(b)]
  counts = np.stack([data.draw(S.counts(v)) for _ in range(b)])
  contexts = [data.draw(S.token_contexts(v, 12)) for _ in range(b)]
  length = np.array([c.size for c in contexts])
  tokens = np.stack([np.pad(c, (0, 12 - c.size)) for c in contexts])
  margins = [R.pipeline_margin(rows[i], params[i], counts[i], contexts[i], round_f32=True)
             for i in range(b)]
  hypothesis.assume(min(margins) >= MARGIN)
  biases = [{j: float(x) for j, x in enumerate(p.get("bias", np.zeros(v))) if x != 0}
            for p in params]
  fields = {k: [p.get(k, R.PIPELINE_DEFAULTS[k]) for p in params]
            for k in R.PIPELINE_DEFAULTS if k not in ("allowed", "banned", "bias", "suppress")}
  sp = jl.SamplingParams.create(b, **fields, logit_bias=biases, logit_bias_capacity=v,
                                 vocab_size=v)
  got = jl.process_logits(jnp.asarray(np.stack(rows)), sp, counts=counts, tokens=tokens,
                          length=length)
  want = np.stack([R.pipeline_ref(rows[i], params[i], counts[i], contexts[i], round_f32=True)
                   for i in range(b)])
  assert_same_masks_and_values(got, want, rtol=1e-5, atol=1e-30)


# --- row blocks --------------------------------------------------------------------------------
from jaxlogits import _numerics as nm  # noqa: E402
from jaxlogits import pipeline as pl  # noqa: E402
from jaxlogits import sampling as sp_  # noqa: E402


def _mixed_batch(b, v, seed, rare=True):
  """A batch whose rows use every setting (and rows at the identity), with per-row context;
  with ``rare=False`` no row uses min_p, typical_p, the cutoffs, top-n-sigma, temperature-last
  or temperature 0 (sample_step's program without that group and without the greedy branch);
  with ``rare="greedy"`` no row uses the rarer rules but some rows have temperature 0 (which
  alone takes the program with them)."""
  rng = np.random.default_rng(seed)
  logits = _logits(b, v, seed=seed)
  logits = logits.at[1, 3].set(jnp.nan).at[2].set(-jnp.inf).at[3, :4].set(jnp.inf)
  tokens = jnp.asarray(rng.integers(0, v, (b, 9)), jnp.int32)
  length = jnp.asarray(rng.integers(0, 10, b), jnp.int32)
  pick = lambda *opts: [opts[i % len(opts)] for i in rng.permutation(b)]
  params = jl.SamplingParams.create(
      b, temperature=pick(0.0, 0.7, 1.0, 1.3), top_k=pick(0, 5, 40), top_p=pick(1.0, 0.9, 0.5),
      min_p=pick(0.0, 0.05, 0.2), typical_p=pick(1.0, 0.9), epsilon_cutoff=pick(0.0, 0.01),
      eta_cutoff=pick(0.0, 0.02), top_n_sigma=pick(0.0, 1.5), repetition_penalty=pick(1.0, 1.3),
      frequency_penalty=pick(0.0, 0.4), presence_penalty=pick(0.0, 0.6),
      no_repeat_ngram_size=pick(0, 2), min_tokens=pick(0, 5), temperature_last=pick(False, True),
      logit_bias=pick(None, {1: 2.0, 5: -3.0}), logit_bias_capacity=2, vocab_size=v)
  if rare is not True:
    off = jl.SamplingParams.create(b)
    params = params._replace(**{f: getattr(off, f) for f in (
        "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_n_sigma", "temperature_last")})
    greedy = params.temperature == 0
    assert bool(jnp.any(greedy))
    if rare is False:
      params = params._replace(temperature=jnp.where(greedy, 0.8, params.temperature))
  context = (jl.token_counts(tokens, v, length=length), tokens, length,
             jnp.asarray(rng.integers(0, 8, b), jnp.int32),
             jnp.broadcast_to(jnp.array([0, 7], jnp.int32), (b, 2)))
  allowed = jnp.asarray(rng.random((b, v)) < 0.9)
  return logits, params, context, allowed


def _bits(a):
  a = np.asarray(a)
  return a.view(np.int32) if a.dtype == np.float32 else a


# Every block size (1 to 6 of 7 rows) and program (rare) once, each kind of allowed mask with
# several of them: a pair (rows, allowed) is a compilation of its own, 22 to 42 s on a 2-core
# machine, so the full grid of the three (24 cases) cost about 8 minutes of worker time.
@pytest.mark.parametrize("rows,rare,allowed", [
    (1, True, "rows"), (2, True, "shared"), (3, True, None), (4, True, "shared"),
    (6, True, "rows"), (2, False, "rows"), (4, False, None), (3, "greedy", "shared")])
def test_row_blocks_give_the_same_bits_as_one_block(rows, rare, allowed):
  # Blocks of 1..6 rows over 7 rows: the last block overlaps the one before it (4, 6) or not.
  # One block runs sample_step's tested program; several, the program for the case (rare).
  b, v = 7, 300
  logits, params, context, mask = _mixed_batch(b, v, seed=rows, rare=rare)
  mask = {"rows": mask, "shared": mask[0], None: None}[allowed]
  keys = sp_.row_keys(jax.random.key(rows), (b,))
  args = (logits, params, *context, mask)
  want = pl._process(*args, rows=b)
  np.testing.assert_array_equal(_bits(pl._process(*args, rows=rows)), _bits(want))
  tok_want, x_want = pl._sample_step(keys, *args, rows=b)
  tok, x = pl._sample_step(keys, *args, rows=rows)
  np.testing.assert_array_equal(tok, tok_want)
  np.testing.assert_array_equal(_bits(x), _bits(x_want))
  np.testing.assert_array_equal(_bits(x), _bits(want))


def test_by_row_blocks_runs_each_row_once_per_block_and_keeps_shared_values():
  x = jnp.arange(10.0)[:, None] * jnp.ones((1, 3))
  calls = []

  def fn(r, s):
    calls.append(r.shape)
    return {"y": r * s, "first": r[:, 0].astype(jnp.int32)}

  out = jax.jit(lambda x: nm.by_row_blocks(fn, 4, x, jnp.float32(2.0)))(x)
  np.testing.assert_array_equal(out["y"], np.asarray(x) * 2)
  np.testing.assert_array_equal(out["first"], np.arange(10))
  assert set(calls) == {(4, 3)}  # one block shape: blocks at 0, 4 and (overlapping) 6
  assert nm.by_row_blocks(fn, 10, x, 1.0)["y"].shape == (10, 3)


def test_block_rows_fit_the_block_budget_on_cpu():
  assert nm.block_rows(1, 128256) == 1
  assert nm.block_rows(32, 128256) * 128256 * 4 <= nm.ROW_BLOCK_BYTES
  assert nm.block_rows(32, 128256) >= 1 and nm.block_rows(64, 16) == 64
  if jax.default_backend() != "cpu":
    assert nm.block_rows(32, 128256) == 32


def test_sample_step_temporaries_stay_below_the_logits_size():
  # The bench's shape: in blocks, the program's temporaries are a fraction of one copy of the
  # logits (a whole-batch program needs about five copies, which glibc maps afresh on every call).
  if jax.default_backend() != "cpu":
    pytest.skip("row blocks are for CPU")
  b, v = 32, 128256
  params = jl.SamplingParams.create(b, temperature=1.0, top_p=0.95, min_p=0.05)
  counts = jax.ShapeDtypeStruct((b, v), jnp.int32)
  f = jax.jit(lambda key, logits, counts: jl.sample_step(key, logits, params, counts=counts)[0])
  compiled = f.lower(jax.random.key(0), jax.ShapeDtypeStruct((b, v), jnp.float32),
                     counts).compile()
  assert compiled.memory_analysis().temp_size_in_bytes < b * v * 4
