"""Model-agnostic decode loops: generate (one compiled ``lax.while_loop``), stream, beam search
and score.

The loops know the model only through a callback and its cache, as in t5x::

    tokens_to_logits(tokens: int32[B, T], cache) -> (logits: float[B, T, V], cache)

Rows are right-padded: a negative id is padding, which the model must neither write into its cache
nor count as a position. The loop calls the callback once with the (right-padded) prompts, then
once per step with one token per row (``-1`` for rows that have finished). Any JAX model fits;
:func:`model_callback` adapts the built-in transformer.

Each step calls :func:`jaxlogits.pipeline._process` (the standard pipeline of
:func:`jaxlogits.process_logits`) with per-row :class:`jaxlogits.SamplingParams`, the counts of
the prompt and the tokens so far (penalties), the history (n-gram bans) and the number of tokens
generated (``min_tokens``), then draws with :func:`jaxlogits.sample`. Row ``r`` (prompt ``b``,
sample ``j``) draws with ``fold_in(fold_in(fold_in(key, b), j), step)``: its tokens depend on its
own key, prompt and parameters only, never on the other rows or on padding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlogits import _checks
from jaxlogits import logprobs as _lp
from jaxlogits import penalties as _pen
from jaxlogits import pipeline as _pipeline
from jaxlogits import sampling as _sampling
from jaxlogits.processors import History
from jaxlogits.processors import add_tokens

__all__ = [
    "FINISH_REASONS",
    "BeamOutput",
    "DecodeState",
    "GenerateOutput",
    "ModelCache",
    "ScoreOutput",
    "beam_search",
    "generate",
    "model_callback",
    "score",
    "stream",
]

#: Finish reason codes of :attr:`GenerateOutput.finish_reason`, by index.
FINISH_REASONS = ("running", "eos", "stop", "length", "invalid_logits")
RUNNING, EOS, STOP, LENGTH, INVALID = range(5)


class GenerateOutput(NamedTuple):
  """What :func:`generate` returns, one row per (prompt, sample)."""

  tokens: jax.Array  # [R, N] int32 generated ids, -1 after the row finished
  length: jax.Array  # [R] int32 number of generated tokens
  finish_reason: jax.Array  # [R] int32 index into FINISH_REASONS
  logprobs: jax.Array  # [R, N] float32 raw log-prob of each token (model's distribution)
  processed_logprobs: jax.Array  # [R, N] float32 log-prob under the distribution sampled from
  top_ids: jax.Array  # [R, N, K] int32 top-K alternatives of the raw distribution
  top_logprobs: jax.Array  # [R, N, K] float32 their raw log-probs
  surviving_mass: jax.Array  # [R, N] float32 raw probability mass of the tokens that survived
  prompt_logprobs: jax.Array  # [R, P] float32 log p(prompt_t | prompt_<t); 0 at t = 0 and padding


class DecodeState(NamedTuple):
  """The loop state (a pytree) carried by ``lax.while_loop`` and by :func:`stream`."""

  step: jax.Array  # [] int32 tokens generated so far (per running row)
  history: History  # tokens [R, P + N], length [R], prompt_length [R]
  counts: jax.Array  # [R, V] int32 counts of the prompt and generated tokens
  next_logits: jax.Array  # [R, V] logits for the next token
  cache: Any  # the model's cache
  finished: jax.Array  # [R] bool
  out: GenerateOutput


class ModelCache(NamedTuple):
  """Cache of :func:`model_callback`: KV cache, each row's next free position, the weights.

  The weights travel in the cache (an argument of the compiled loop) rather than in the callback
  (where they would be compiled in as constants): a new callback for a model of the same
  structure, or new weights, reuse the compiled loop.
  """

  kv: Any  # jaxlogits.model.KVCache
  position: jax.Array  # [B] int32
  params: Any = None  # the model's nnx.State


def model_callback(model: Any, batch_size: int, max_len: int
                   ) -> tuple[Callable[[jax.Array, ModelCache], tuple[jax.Array, ModelCache]],
                              ModelCache]:
  """Adapts the built-in transformer to the ``tokens_to_logits(tokens, cache)`` protocol.

  Args:
    model: a :class:`jaxlogits.model.Transformer`.
    batch_size: rows ``B`` of the decode batch.
    max_len: cache slots per row (prompt plus new tokens).

  Returns:
    ``(tokens_to_logits, initial_cache)``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxlogits.model import create_model, get_config
    >>> fn, cache = model_callback(create_model(get_config("tiny")), 2, 16)
    >>> logits, cache = fn(jnp.array([[256, 65, 66], [256, 67, -1]]), cache)
    >>> logits.shape, cache.position
    ((2, 3, 259), Array([3, 2], dtype=int32))
  """
  from flax import nnx  # local: keeps `import jaxlogits` free of Flax

  from jaxlogits import model as _model

  graphdef, state = nnx.split(model)
  cache = ModelCache(_model.init_cache(model.config, batch_size, max_len),
                     jnp.zeros((batch_size,), jnp.int32), state)
  return _callback_for(graphdef), cache


_CALLBACKS: dict[Any, Callable] = {}


def _callback_for(graphdef: Any) -> Callable:
  """One ``tokens_to_logits`` per model structure, so jitted loops compile once per structure."""
  if graphdef not in _CALLBACKS:
    from jaxlogits import model as _model

    apply = _model.make_apply(graphdef)

    def tokens_to_logits(tokens, cache):
      tokens = jnp.asarray(tokens, jnp.int32)
      valid = tokens >= 0
      positions = cache.position[:, None] + jnp.arange(tokens.shape[1], dtype=jnp.int32)
      logits, kv = apply(cache.params, jnp.maximum(tokens, 0), positions, cache.kv, valid)
      return logits, ModelCache(kv, cache.position + jnp.sum(valid, axis=1, dtype=jnp.int32),
                                 cache.params)

    _CALLBACKS[graphdef] = tokens_to_logits
  return _CALLBACKS[graphdef]


def _gather_rows(gather: Callable, cache: Any) -> Any:
  """Applies a row gather to every leaf of a cache (a ``ModelCache``'s weights have no rows)."""
  if isinstance(cache, ModelCache):
    return ModelCache(jax.tree.map(gather, cache.kv), gather(cache.position), cache.params)
  return jax.tree.map(gather, cache)


def _last_valid(logits, lengths):
  idx = jnp.clip(lengths - 1, 0, logits.shape[1] - 1)
  return jnp.take_along_axis(logits, idx[:, None, None], axis=1)[:, 0]


def _stop_hit(history: History, stop: jax.Array, stop_valid: jax.Array) -> jax.Array:
  """Whether each row's generated text now ends with one of its stop sequences.

  ``stop`` is ``[R, S, L]``: each row's sequences right-aligned and left-padded with -1;
  ``stop_valid`` ``[R, S]`` marks the slots that hold a sequence.
  """
  _, s, l = stop.shape
  if s == 0:
    return jnp.zeros(history.length.shape, bool)
  idx = history.length[:, None] - l + jnp.arange(l)  # [R, L] the last L positions
  tail = jnp.take_along_axis(history.tokens, jnp.clip(idx, 0, None), axis=1)
  generated = idx >= history.prompt_length[:, None]
  ok = (stop < 0) | ((tail[:, None, :] == stop) & generated[:, None, :])
  return jnp.any(jnp.all(ok, axis=-1) & stop_valid, axis=-1)


def _init(tokens_to_logits, cache, prompts, prompt_lengths, *, max_new_tokens, top_k):
  r, p = prompts.shape
  prompt_tokens = jnp.where(jnp.arange(p) < prompt_lengths[:, None], prompts, -1)
  logits, cache = tokens_to_logits(prompt_tokens, cache)
  next_logits = _last_valid(logits, prompt_lengths).astype(jnp.float32)
  prompt_lp = jnp.zeros((r, p), jnp.float32)
  if p > 1:  # position t - 1 predicts prompt token t
    lp = _lp._token_logprobs(logits[:, :-1], jnp.maximum(prompt_tokens[:, 1:], 0))
    lp = jnp.where(jnp.arange(1, p) < prompt_lengths[:, None], lp, 0.0)
    prompt_lp = prompt_lp.at[:, 1:].set(lp)
  v = next_logits.shape[-1]
  history = History.from_prompt(jnp.maximum(prompt_tokens, 0), prompt_lengths,
                                capacity=p + max_new_tokens)
  counts = _pen._token_counts(history.tokens, prompt_lengths, prompt_lengths, 0, vocab_size=v,
                              has_length=True, has_start=False, has_pad=False)
  out = GenerateOutput(
      tokens=jnp.full((r, max_new_tokens), -1, jnp.int32),
      length=jnp.zeros((r,), jnp.int32),
      finish_reason=jnp.zeros((r,), jnp.int32),
      logprobs=jnp.zeros((r, max_new_tokens), jnp.float32),
      processed_logprobs=jnp.zeros((r, max_new_tokens), jnp.float32),
      top_ids=jnp.zeros((r, max_new_tokens, top_k), jnp.int32),
      top_logprobs=jnp.zeros((r, max_new_tokens, top_k), jnp.float32),
      surviving_mass=jnp.zeros((r, max_new_tokens), jnp.float32),
      prompt_logprobs=prompt_lp)
  return DecodeState(jnp.zeros((), jnp.int32), history, counts, next_logits, cache,
                     jnp.zeros((r,), bool), out)


def _step(tokens_to_logits, state: DecodeState, params, row_keys, eos_ids, stop, stop_valid,
          limit, *, max_new_tokens, top_k):
  hist, out = state.history, state.out
  active = ~state.finished
  generated = hist.length - hist.prompt_length
  processed = _pipeline._process(state.next_logits, params, state.counts, hist.tokens,
                                 hist.length, generated, eos_ids, None)
  keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, state.step)
  tok = _sampling._sample(keys, processed, nan_free=True)  # _process leaves no NaN
  tok = jnp.where(active, tok, -1)
  emitted = tok >= 0
  col = state.step
  raw_lp = _lp._token_logprobs(state.next_logits, tok)
  proc_lp = _lp._token_logprobs(processed, tok)
  # S: how much of the model's distribution the transforms kept (to correct for truncation)
  kept = jnp.where(jnp.isfinite(processed), _lp._log_softmax(state.next_logits), -jnp.inf)
  mass = jnp.exp(jax.nn.logsumexp(kept, axis=-1))
  keep = lambda new, old: jnp.where(active, new, old)
  out = out._replace(
      tokens=out.tokens.at[:, col].set(tok),
      length=out.length + emitted,
      logprobs=out.logprobs.at[:, col].set(keep(raw_lp, 0.0)),
      processed_logprobs=out.processed_logprobs.at[:, col].set(keep(proc_lp, 0.0)),
      surviving_mass=out.surviving_mass.at[:, col].set(keep(mass, 0.0)))
  if top_k:
    top_lp, top_ids = _lp._top_logprobs(state.next_logits, top_k)
    out = out._replace(top_ids=out.top_ids.at[:, col].set(top_ids),
                       top_logprobs=out.top_logprobs.at[:, col].set(top_lp))
  hist = hist.append(tok, where=emitted)
  counts = add_tokens(state.counts, tok)
  is_eos = emitted & jnp.any(tok[:, None] == eos_ids, axis=-1)
  is_stop = emitted & _stop_hit(hist, stop, stop_valid)
  at_length = emitted & (generated + 1 >= jnp.minimum(limit, max_new_tokens))
  reason = jnp.where(active & ~emitted, INVALID,
                     jnp.where(is_eos, EOS, jnp.where(is_stop, STOP,
                                                      jnp.where(at_length, LENGTH, RUNNING))))
  reason = jnp.where(active, reason, out.finish_reason)
  finished = reason != RUNNING
  out = out._replace(finish_reason=reason)
  feed = jnp.where(finished, -1, tok)[:, None]
  logits, cache = tokens_to_logits(feed, state.cache)
  return DecodeState(state.step + 1, hist, counts, logits[:, 0].astype(jnp.float32), cache,
                     finished, out)


def _row_keys(key, num_prompts, num_samples):
  typed = _sampling.row_keys(key, ())
  per_prompt = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(typed, jnp.arange(num_prompts))
  both = jax.vmap(lambda k: jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
      k, jnp.arange(num_samples)))(per_prompt)
  return both.reshape(num_prompts * num_samples)


class _Prepared(NamedTuple):
  prompts: jax.Array  # [R, P]
  lengths: jax.Array  # [R]
  params: Any  # SamplingParams with R rows
  row_keys: jax.Array  # [R] typed keys
  eos: jax.Array  # [R, E] end-of-sequence ids, -1 = unused
  stop: jax.Array  # [R, S, L] stop sequences, right-aligned, left-padded with -1
  stop_valid: jax.Array  # [R, S]
  limit: jax.Array  # [R] max new tokens per row


def _per_prompt(name, value, b, num_samples):
  """Repeats a per-prompt array ``[B, ...]`` for the samples; ``[R, ...]`` is kept."""
  r = b * num_samples
  if value.shape[0] == b:
    return jnp.repeat(value, num_samples, axis=0)
  if value.shape[0] == r:
    return value
  raise ValueError(f"{name} has {value.shape[0]} rows; expected {b} (one per prompt) or {r} "
                   "(one per prompt and sample)")


def _stop_array(stop_sequences, b):
  """``[B, S, L]`` stop sequences and ``[B, S]`` validity from a shared or per-prompt list."""
  if stop_sequences is None:
    return np.zeros((b, 0, 0), np.int32), np.zeros((b, 0), bool)
  items = list(stop_sequences)
  nested = [list(x) for x in items]
  per_prompt = bool(nested) and all(
      all(isinstance(y, (list, tuple, np.ndarray)) for y in x) for x in nested) and any(nested)
  rows = [[list(map(int, y)) for y in x] for x in nested] if per_prompt else [
      [list(map(int, x)) for x in nested]] * b
  if len(rows) != b:
    raise ValueError(f"stop_sequences per prompt must have {b} lists, got {len(rows)}")
  if any(len(seq) == 0 for row in rows for seq in row):
    raise ValueError("stop_sequences must not contain an empty sequence")
  s = max((len(row) for row in rows), default=0)
  l = max((len(seq) for row in rows for seq in row), default=0)
  stop = np.full((b, s, l), -1, np.int32)
  valid = np.zeros((b, s), bool)
  for i, row in enumerate(rows):
    for j, seq in enumerate(row):
      stop[i, j, l - len(seq):] = seq
      valid[i, j] = True
  return stop, valid


def _prepare(key, prompts, prompt_lengths, params, eos_token_id, stop_sequences, num_samples,
             max_new_tokens, cache=None) -> tuple[_Prepared, int]:
  """Validates the arguments of a decode loop; returns the prepared rows and the static N."""
  prompts = _checks.int_array("prompts", prompts)
  if prompts.ndim != 2 or prompts.shape[1] < 1:
    raise ValueError(f"prompts must be [B, P] right-padded token ids, got {prompts.shape}")
  b, p = prompts.shape
  lengths = jnp.broadcast_to(jnp.asarray(p if prompt_lengths is None else prompt_lengths,
                                         jnp.int32), (b,))
  _checks.check_range("prompt_lengths", lengths, lo=1, hi=p, integer=True)
  if not _checks.is_int(num_samples) or num_samples < 1:
    raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
  limit = np.asarray(max_new_tokens)
  if limit.ndim > 1 or limit.dtype.kind not in "iu" or limit.size < 1 or np.any(limit < 1):
    raise ValueError("max_new_tokens must be an int >= 1 or one such int per prompt, got "
                     f"{max_new_tokens!r}")
  n = int(limit.max())
  limit = jnp.broadcast_to(jnp.asarray(limit, jnp.int32), (b,)) if limit.ndim == 0 else \
      jnp.asarray(limit, jnp.int32)
  if limit.shape != (b,):
    raise ValueError(f"max_new_tokens has {limit.shape[0]} values for {b} prompts")
  if isinstance(cache, ModelCache) and cache.kv.max_len < p + n:
    raise ValueError(f"the cache holds {cache.kv.max_len} positions per row, fewer than the "
                     f"prompt width {p} plus max_new_tokens {n}; build it with "
                     f"model_callback(model, batch_size, max_len >= {p + n})")
  params = jax.tree.map(lambda a: _per_prompt("params", a, b, num_samples), params)
  eos = jnp.asarray([] if eos_token_id is None else eos_token_id, jnp.int32)
  if eos.ndim <= 1:
    eos = jnp.broadcast_to(eos.reshape(-1), (b, eos.size))
  elif eos.ndim != 2:
    raise ValueError(f"eos_token_id must be an int, [E] or [B, E] per prompt, got {eos.shape}")
  stop, stop_valid = _stop_array(stop_sequences, b)
  rep = lambda name, a: _per_prompt(name, jnp.asarray(a), b, num_samples)
  return _Prepared(rep("prompts", prompts), rep("prompt_lengths", lengths), params,
                   _row_keys(key, b, num_samples), rep("eos_token_id", eos),
                   rep("stop_sequences", stop), rep("stop_sequences", stop_valid),
                   rep("max_new_tokens", limit)), n


@functools.partial(jax.jit, static_argnames=("tokens_to_logits", "max_new_tokens", "top_k"))
def _generate(tokens_to_logits, cache, prep: _Prepared, *, max_new_tokens, top_k):
  state = _init(tokens_to_logits, cache, prep.prompts, prep.lengths,
                max_new_tokens=max_new_tokens, top_k=top_k)
  body = functools.partial(_step, tokens_to_logits, params=prep.params, row_keys=prep.row_keys,
                           eos_ids=prep.eos, stop=prep.stop, stop_valid=prep.stop_valid,
                           limit=prep.limit, max_new_tokens=max_new_tokens, top_k=top_k)
  state = lax.while_loop(lambda s: (s.step < max_new_tokens) & ~jnp.all(s.finished), body, state)
  return state.out


def generate(key: Any, tokens_to_logits: Callable, cache: Any, prompts: Any,
             prompt_lengths: Any = None, params: _pipeline.SamplingParams | None = None, *,
             max_new_tokens: int, eos_token_id: Any = None,
             stop_sequences: Sequence[Sequence[int]] | None = None, num_samples: int = 1,
             top_logprobs: int = 0) -> GenerateOutput:
  """Samples continuations of a batch of prompts in one compiled ``lax.while_loop``.

  The loop exits as soon as every row has finished: by an end-of-sequence id (``eos``), a stop
  sequence (``stop``; the stop tokens are kept in the output), ``max_new_tokens`` (``length``),
  or a step whose processed logits had no finite entry (``invalid_logits``).

  Args:
    key: a PRNG key. Row ``(b, j)`` uses ``fold_in(fold_in(key, b), j)``, folded with the step.
    tokens_to_logits: the model callback (see the module docstring); hashable (it is static).
    cache: the model's initial cache for ``B * num_samples`` rows.
    prompts: ``[B, P]`` right-padded prompt ids.
    prompt_lengths: ``[B]`` prompt lengths (``>= 1``), default ``P``.
    params: :class:`jaxlogits.SamplingParams` with ``B`` or ``B * num_samples`` rows (default:
      plain sampling).
    max_new_tokens: the most tokens generated per row: an int, or one int per prompt (their
      maximum sets the output width, a static shape).
    eos_token_id: end-of-sequence id(s), banned until ``min_tokens`` tokens were generated: an
      int, ``[E]`` ids for every row, or ``[B, E]`` per prompt (``-1`` = unused).
    stop_sequences: token-id sequences that end a row when its output ends with one: a list of
      sequences for every row, or one such list per prompt.
    num_samples: samples per prompt; rows are ordered prompt-major.
    top_logprobs: number of raw top alternatives recorded per position (static, up to ``V``).

  Returns:
    A :class:`GenerateOutput` with ``B * num_samples`` rows.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxlogits as jl
    >>> from jaxlogits.model import create_model, get_config
    >>> fn, cache = model_callback(create_model(get_config("tiny")), 2, 16)
    >>> out = generate(jax.random.key(0), fn, cache, jnp.array([[256, 65], [256, 0]]),
    ...                jnp.array([2, 1]), jl.SamplingParams.create(2, temperature=0.0),
    ...                max_new_tokens=4)
    >>> out.tokens.shape, [FINISH_REASONS[int(r)] for r in out.finish_reason]
    ((2, 4), ['length', 'length'])
  """
  prompts_arr = _checks.int_array("prompts", prompts)
  if params is None:
    params = _pipeline.SamplingParams.create(prompts_arr.shape[0] if prompts_arr.ndim else 1)
  if not isinstance(top_logprobs, int) or top_logprobs < 0:
    raise ValueError(f"top_logprobs must be an int >= 0, got {top_logprobs!r}")
  prep, n = _prepare(key, prompts_arr, prompt_lengths, params, eos_token_id, stop_sequences,
                     num_samples, max_new_tokens, cache)
  return _generate(tokens_to_logits, cache, prep, max_new_tokens=n, top_k=top_logprobs)


@functools.partial(jax.jit, static_argnames=("tokens_to_logits", "max_new_tokens", "top_k"))
def _stream_init(tokens_to_logits, cache, prep, *, max_new_tokens, top_k):
  return _init(tokens_to_logits, cache, prep.prompts, prep.lengths,
               max_new_tokens=max_new_tokens, top_k=top_k)


@functools.partial(jax.jit, static_argnames=("tokens_to_logits", "max_new_tokens", "top_k"))
def _stream_step(tokens_to_logits, state, prep, *, max_new_tokens, top_k):
  return _step(tokens_to_logits, state, prep.params, prep.row_keys, prep.eos, prep.stop,
               prep.stop_valid, prep.limit, max_new_tokens=max_new_tokens, top_k=top_k)


def stream(key: Any, tokens_to_logits: Callable, cache: Any, prompts: Any,
           prompt_lengths: Any = None, params: _pipeline.SamplingParams | None = None, *,
           max_new_tokens: int, eos_token_id: Any = None,
           stop_sequences: Sequence[Sequence[int]] | None = None, num_samples: int = 1,
           top_logprobs: int = 0) -> Iterator[DecodeState]:
  """Like :func:`generate`, but yields the state after every step, as tokens are decoded.

  It runs the same step function as the compiled loop, one jitted call per token, so it produces
  exactly the same tokens for the same key. The newest token of each row is
  ``state.out.tokens[:, state.step - 1]`` (``-1`` for rows that had already finished).

  Args:
    key, tokens_to_logits, cache, prompts, prompt_lengths, params, max_new_tokens,
    eos_token_id, stop_sequences, num_samples, top_logprobs: as for :func:`generate`.

  Returns:
    An iterator of :class:`DecodeState`; the last one's ``out`` equals :func:`generate`'s result.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxlogits as jl
    >>> from jaxlogits.model import create_model, get_config
    >>> fn, cache = model_callback(create_model(get_config("tiny")), 1, 8)
    >>> steps = list(stream(jax.random.key(0), fn, cache, jnp.array([[256]]),
    ...                     max_new_tokens=3))
    >>> len(steps), steps[-1].out.tokens.shape
    (3, (1, 3))
  """
  prompts_arr = _checks.int_array("prompts", prompts)
  if params is None:
    params = _pipeline.SamplingParams.create(prompts_arr.shape[0] if prompts_arr.ndim else 1)
  prep, n = _prepare(key, prompts_arr, prompt_lengths, params, eos_token_id, stop_sequences,
                     num_samples, max_new_tokens, cache)
  static = dict(max_new_tokens=n, top_k=top_logprobs)
  state = _stream_init(tokens_to_logits, cache, prep, **static)
  while int(state.step) < n and not bool(jnp.all(state.finished)):
    state = _stream_step(tokens_to_logits, state, prep, **static)
    yield state


class ScoreOutput(NamedTuple):
  """What :func:`score` returns."""

  total: jax.Array  # [B] float32 sum of the continuation's token log-probs
  token_logprobs: jax.Array  # [B, C] float32 per continuation token (0 past its length)
  length: jax.Array  # [B] int32 continuation lengths


@functools.partial(jax.jit, static_argnames=("tokens_to_logits",))
def _score(tokens_to_logits, cache, prompts, prompt_lengths, conts, cont_lengths):
  b, p = prompts.shape
  c = conts.shape[1]
  total_len = prompt_lengths + cont_lengths
  pos = jnp.arange(p + c)
  # row = prompt[:len] ++ continuation[:clen], right-padded with -1
  from_prompt = jnp.take_along_axis(prompts, jnp.clip(pos, 0, p - 1)[None].repeat(b, 0), 1)
  cont_idx = jnp.clip(pos[None] - prompt_lengths[:, None], 0, c - 1)
  from_cont = jnp.take_along_axis(conts, cont_idx, 1)
  seq = jnp.where(pos[None] < prompt_lengths[:, None], from_prompt, from_cont)
  seq = jnp.where(pos[None] < total_len[:, None], seq, -1)
  logits, _ = tokens_to_logits(seq, cache)
  # the logits at position t predict the token at t + 1
  target_pos = prompt_lengths[:, None] + jnp.arange(c)[None]  # positions of continuation tokens
  pred = jnp.take_along_axis(logits, (target_pos - 1)[..., None], axis=1)
  lp = _lp._token_logprobs(pred, conts)
  lp = jnp.where(jnp.arange(c)[None] < cont_lengths[:, None], lp, 0.0)
  return ScoreOutput(jnp.sum(lp, axis=1), lp, cont_lengths)


def score(tokens_to_logits: Callable, cache: Any, prompts: Any, prompt_lengths: Any,
          continuations: Any, continuation_lengths: Any = None) -> ScoreOutput:
  r"""Log-likelihood of given continuations of given prompts, in one batched call.

  .. math::
    \log p(c \mid x) = \textstyle\sum_{t} \log p(c_t \mid x, c_{<t})

  Args:
    tokens_to_logits: the model callback; it is called once on the concatenated rows.
    cache: the model's initial cache for ``B`` rows (room for prompt plus continuation).
    prompts: ``[B, P]`` right-padded prompt ids; ``prompt_lengths`` ``[B]`` (``>= 1``).
    prompt_lengths: ``[B]`` prompt lengths.
    continuations: ``[B, C]`` right-padded continuation ids.
    continuation_lengths: ``[B]`` continuation lengths (default ``C``).

  Returns:
    A :class:`ScoreOutput`: totals ``[B]``, per-token log-probs ``[B, C]`` and lengths.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxlogits.model import create_model, get_config
    >>> fn, cache = model_callback(create_model(get_config("tiny")), 2, 8)
    >>> out = score(fn, cache, jnp.array([[256, 65], [256, 0]]), jnp.array([2, 1]),
    ...             jnp.array([[66, 67], [68, 0]]), jnp.array([2, 1]))
    >>> out.token_logprobs.shape, bool(out.token_logprobs[1, 1] == 0)
    ((2, 2), True)
  """
  prompts = _checks.int_array("prompts", prompts)
  conts = _checks.int_array("continuations", continuations)
  b = prompts.shape[0]
  if conts.ndim != 2 or conts.shape[0] != b:
    raise ValueError(f"continuations must be [{b}, C], got {conts.shape}")
  pl = jnp.broadcast_to(jnp.asarray(prompt_lengths, jnp.int32), (b,))
  cl = jnp.broadcast_to(jnp.asarray(conts.shape[1] if continuation_lengths is None
                                    else continuation_lengths, jnp.int32), (b,))
  _checks.check_range("prompt_lengths", pl, lo=1, hi=prompts.shape[1], integer=True)
  _checks.check_range("continuation_lengths", cl, lo=0, hi=conts.shape[1], integer=True)
  return _score(tokens_to_logits, cache, prompts, pl, conts, cl)


class BeamOutput(NamedTuple):
  """What :func:`beam_search` returns: ``K`` hypotheses per prompt, best first."""

  tokens: jax.Array  # [B, K, N] int32, -1 after each hypothesis' end
  length: jax.Array  # [B, K] int32 generated tokens (EOS included)
  scores: jax.Array  # [B, K] float32 sum of log-probs / length ** length_penalty
  logprob: jax.Array  # [B, K] float32 sum of processed log-probs (unnormalised)
  finished: jax.Array  # [B, K] bool: ended with EOS (else it ran out of max_new_tokens)


class _BeamState(NamedTuple):
  step: jax.Array  # [] int32
  history: History  # [B*K] rows
  counts: jax.Array  # [B*K, V]
  next_logits: jax.Array  # [B*K, V]
  cache: Any
  alive_tokens: jax.Array  # [B, K, N]
  alive_logprob: jax.Array  # [B, K]
  fin_tokens: jax.Array  # [B, K, N]
  fin_score: jax.Array  # [B, K] normalised, -inf = empty slot
  fin_logprob: jax.Array  # [B, K]
  fin_length: jax.Array  # [B, K]
  done: jax.Array  # [B] bool


def _normalise(logprob, length, length_penalty):
  return logprob / jnp.maximum(length, 1).astype(jnp.float32) ** length_penalty


def _beam_step(tokens_to_logits, s: _BeamState, params, eos_ids, length_penalty, *, k,
               max_new_tokens):
  from jaxlogits import _numerics as nm

  b = s.alive_logprob.shape[0]
  hist = s.history
  generated = hist.length - hist.prompt_length
  processed = _pipeline._process(s.next_logits, params, s.counts, hist.tokens, hist.length,
                                 generated, eos_ids, None)
  v = processed.shape[-1]
  logp = _lp._log_softmax(processed).reshape(b, k, v)
  cand = (s.alive_logprob[..., None] + logp).reshape(b, k * v)
  width = min(2 * k, k * v)
  top_lp, top_idx = nm.top_values(cand, width)  # ties: lower beam, then lower token id first
  beam, tok = top_idx // v, (top_idx % v).astype(jnp.int32)
  is_eos = jnp.any(tok[..., None] == eos_ids[:1, None, :], axis=-1) & (top_lp > -jnp.inf)
  length = s.step + 1
  # finished hypotheses: the EOS candidates, merged with the ones kept so far
  parent_tokens = jnp.take_along_axis(s.alive_tokens, beam[..., None], axis=1)
  new_tokens = parent_tokens.at[:, :, s.step].set(tok)
  cand_score = jnp.where(is_eos, _normalise(top_lp, length, length_penalty), -jnp.inf)
  all_score = jnp.concatenate([s.fin_score, cand_score], axis=1)
  best_score, best = nm.top_values(all_score, k)
  pick = lambda old, new: jnp.take_along_axis(
      jnp.concatenate([old, new], axis=1), best.reshape(best.shape + (1,) * (old.ndim - 2)),
      axis=1)
  fin_tokens = pick(s.fin_tokens, new_tokens)
  fin_logprob = pick(s.fin_logprob, top_lp)
  fin_length = pick(s.fin_length, jnp.full(top_lp.shape, length, jnp.int32))
  # alive beams: the best k candidates that are not EOS
  alive_lp, order = nm.top_values(jnp.where(is_eos, -jnp.inf, top_lp), k)
  src_beam = jnp.take_along_axis(beam, order, axis=1)
  alive_tok = jnp.take_along_axis(tok, order, axis=1)
  alive_tokens = jnp.take_along_axis(new_tokens, order[..., None], axis=1)
  rows = (jnp.arange(b)[:, None] * k + src_beam).reshape(-1)
  gather = lambda x: x[rows]
  history = jax.tree.map(gather, hist).append(alive_tok.reshape(-1))
  counts = add_tokens(gather(s.counts), alive_tok.reshape(-1))
  # HF's heuristic stop: k finished hypotheses, none of the alive ones can still beat the worst
  full = jnp.all(best_score > -jnp.inf, axis=1)
  # With a positive length penalty a live beam improves as it grows: bound it at the longest
  # length it can reach (as Hugging Face does), so the stop never discards a better hypothesis.
  reach = jnp.where(length_penalty > 0, max_new_tokens, length)
  best_alive = _normalise(jnp.max(alive_lp, axis=1), reach, length_penalty)
  done = s.done | (full & (best_alive <= jnp.min(best_score, axis=1))) | jnp.all(
      alive_lp == -jnp.inf, axis=1)
  feed = jnp.where(jnp.repeat(done, k), -1, alive_tok.reshape(-1))[:, None]
  logits, cache = tokens_to_logits(feed, _gather_rows(gather, s.cache))
  # A prompt that was already done keeps its hypotheses while the others go on.
  frozen = lambda old, new: jnp.where(
      s.done.reshape((b,) + (1,) * (old.ndim - 1)), old, new)
  return _BeamState(s.step + 1, history, counts, logits[:, 0].astype(jnp.float32), cache,
                    frozen(s.alive_tokens, alive_tokens), frozen(s.alive_logprob, alive_lp),
                    frozen(s.fin_tokens, fin_tokens), frozen(s.fin_score, best_score),
                    frozen(s.fin_logprob, fin_logprob), frozen(s.fin_length, fin_length), done)


@functools.partial(jax.jit, static_argnames=("tokens_to_logits", "k", "max_new_tokens"))
def _beam_search(tokens_to_logits, cache, prep: _Prepared, length_penalty, *, k, max_new_tokens):
  from jaxlogits import _numerics as nm

  init = _init(tokens_to_logits, cache, prep.prompts, prep.lengths,
               max_new_tokens=max_new_tokens, top_k=0)
  b = prep.prompts.shape[0] // k
  first = jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf)
  neg = jnp.full((b, k), -jnp.inf)
  state = _BeamState(
      init.step, init.history, init.counts, init.next_logits, init.cache,
      jnp.full((b, k, max_new_tokens), -1, jnp.int32), jnp.broadcast_to(first, (b, k)),
      jnp.full((b, k, max_new_tokens), -1, jnp.int32), neg, neg,
      jnp.zeros((b, k), jnp.int32), jnp.zeros((b,), bool))
  body = functools.partial(_beam_step, tokens_to_logits, params=prep.params, eos_ids=prep.eos,
                           length_penalty=length_penalty, k=k, max_new_tokens=max_new_tokens)
  state = lax.while_loop(lambda s: (s.step < max_new_tokens) & ~jnp.all(s.done), body, state)
  # beams still alive at the end compete with the finished ones
  n = state.step
  alive_score = jnp.where(state.done[:, None], -jnp.inf,
                          _normalise(state.alive_logprob, n, length_penalty))
  scores = jnp.concatenate([state.fin_score, alive_score], axis=1)
  best_score, best = nm.top_values(scores, k)
  pick = lambda fin, alive: jnp.take_along_axis(
      jnp.concatenate([fin, alive], axis=1), best.reshape(best.shape + (1,) * (fin.ndim - 2)),
      axis=1)
  tokens = pick(state.fin_tokens, state.alive_tokens)
  return BeamOutput(tokens, pick(state.fin_length, jnp.full((b, k), n, jnp.int32)), best_score,
                    pick(state.fin_logprob, state.alive_logprob),
                    pick(jnp.ones((b, k), bool), jnp.zeros((b, k), bool)))


def beam_search(tokens_to_logits: Callable, cache: Any, prompts: Any, prompt_lengths: Any = None,
                params: _pipeline.SamplingParams | None = None, *, num_beams: int,
                max_new_tokens: int, eos_token_id: Any = None,
                length_penalty: float = 1.0) -> BeamOutput:
  r"""Beam search over the processed distribution, with a length penalty.

  Each step scores candidates with the log-probabilities of the logits after the standard
  pipeline (:func:`jaxlogits.process_logits`: masks, biases, penalties, n-gram bans, EOS
  suppression before ``min_tokens``, temperature and truncations), keeps the ``num_beams`` best
  unfinished beams and the ``num_beams`` best finished hypotheses, ranked by

  .. math::
    \text{score} = \frac{\sum_t \log p(y_t \mid x, y_{<t})}{|y|^{\alpha}}

  as in Hugging Face (``alpha = length_penalty``). It stops when every prompt has ``num_beams``
  finished hypotheses that no live beam can beat, or after ``max_new_tokens``. Ties go to the
  lower beam and then the lower token id, so ``num_beams=1`` is greedy decoding.

  Args:
    tokens_to_logits: the model callback; its cache's leaves must have the batch axis first (the
      beams are reordered by gathering rows; a ``ModelCache``'s weights are left as they are).
    cache: the model's initial cache for ``B * num_beams`` rows.
    prompts: ``[B, P]`` right-padded prompt ids.
    prompt_lengths: ``[B]`` prompt lengths (default ``P``).
    params: :class:`jaxlogits.SamplingParams` with ``B`` or ``B * num_beams`` rows.
    num_beams: beams per prompt ``K`` (static).
    max_new_tokens: the most tokens per hypothesis (static).
    eos_token_id: end-of-sequence id(s).
    length_penalty: ``alpha``; > 0 favours longer hypotheses.

  Returns:
    A :class:`BeamOutput` with ``[B, K, ...]`` hypotheses, best first.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxlogits.model import create_model, get_config
    >>> fn, cache = model_callback(create_model(get_config("tiny")), 2, 8)
    >>> out = beam_search(fn, cache, jnp.array([[256, 65]]), num_beams=2, max_new_tokens=3)
    >>> out.tokens.shape, bool(out.scores[0, 0] >= out.scores[0, 1])
    ((1, 2, 3), True)

  References:
    Wu et al., "Google's Neural Machine Translation System", 2016 (length penalty).
    https://arxiv.org/abs/1609.08144
  """
  if not isinstance(num_beams, int) or num_beams < 1:
    raise ValueError(f"num_beams must be an int >= 1, got {num_beams!r}")
  prompts_arr = _checks.int_array("prompts", prompts)
  if params is None:
    params = _pipeline.SamplingParams.create(prompts_arr.shape[0] if prompts_arr.ndim else 1)
  _checks.check_range("length_penalty", length_penalty, finite=True)
  if not _checks.is_int(max_new_tokens):
    raise ValueError(f"max_new_tokens must be an int >= 1 for beam search, got "
                     f"{max_new_tokens!r}")
  prep, _ = _prepare(jax.random.key(0), prompts_arr, prompt_lengths, params, eos_token_id,
                     None, num_beams, max_new_tokens, cache)
  return _beam_search(tokens_to_logits, cache, prep, jnp.float32(length_penalty), k=num_beams,
                      max_new_tokens=max_new_tokens)
