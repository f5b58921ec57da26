"""Composable logits processors with explicit state, in the manner of optax.

A :class:`LogitsProcessor` is a NamedTuple of three pure functions:

* ``init(logits, history) -> state``: the initial state; ``logits`` is a template (only its
  shape and dtype are read: an array or ``jax.ShapeDtypeStruct``), ``history`` the prompt.
* ``process(logits, state, history) -> (logits, state)``: transform one step's logits.
* ``observe(state, tokens, logits, history) -> state``: after a draw, update the state from the
  tokens drawn (``-1`` for rows with no valid token) and the final processed logits they were
  drawn from; ``history`` is the context before the new tokens are appended.

State is a pytree of arrays, so a whole decode loop carries it through ``lax.scan`` or
``lax.while_loop``. Hyperparameters live in the state too (as in ``optax.inject_hyperparams``):
changing them never recompiles, and ``state._replace`` edits them between calls.
:func:`chain` composes processors in any order. Stateful samplers fit the protocol: the
penalties processor keeps token counts up to date in ``observe`` instead of recounting, and
:func:`mirostat` keeps its running surprise target, updated from the drawn token's surprise.

Every processor calls the same private implementations as the public transforms and the fixed
pipeline (:func:`standard` wraps :func:`jaxlogits.process_logits`).

Example:
  >>> import jax, jax.numpy as jnp, jaxlogits as jl
  >>> proc = jl.chain(jl.processors.temperature(0.7), jl.processors.top_p(0.9))
  >>> logits = jnp.zeros((2, 5))
  >>> hist = jl.History.empty(batch_shape=(2,))
  >>> state = proc.init(logits, hist)
  >>> tokens, state, _ = jl.sample_with(jax.random.key(0), logits, proc, state, hist)
  >>> tokens.shape
  (2,)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxlogits import _numerics as nm
from jaxlogits import bias as _bias
from jaxlogits import penalties as _pen
from jaxlogits import pipeline as _pipeline
from jaxlogits import sampling as _sampling
from jaxlogits import temperature as _temp
from jaxlogits import truncation as _trunc

__all__ = [
    "History",
    "LogitsProcessor",
    "chain",
    "epsilon_cutoff",
    "eta_cutoff",
    "logit_bias",
    "min_p",
    "mirostat",
    "no_repeat_ngram",
    "penalties",
    "sample_with",
    "standard",
    "stateless",
    "temperature",
    "top_k",
    "top_n_sigma",
    "top_p",
    "typical_p",
]


class History(NamedTuple):
  """The token context of each row: the prompt followed by the tokens generated so far."""

  tokens: jax.Array  # [..., T] int32, right-padded
  length: jax.Array  # [...] int32, valid tokens per row
  prompt_length: jax.Array  # [...] int32, prompt tokens per row (length - prompt = generated)

  @classmethod
  def empty(cls, batch_shape: tuple[int, ...] = (), capacity: int = 0) -> "History":
    """A history with no tokens (room for ``capacity`` per row)."""
    zeros = jnp.zeros(batch_shape, jnp.int32)
    return cls(jnp.zeros(batch_shape + (capacity,), jnp.int32), zeros, zeros)

  @classmethod
  def from_prompt(cls, tokens: Any, length: Any = None, capacity: int | None = None
                  ) -> "History":
    """A history holding right-padded prompts, with room for ``capacity`` tokens per row."""
    tokens = jnp.asarray(tokens, jnp.int32)
    t = tokens.shape[-1]
    length = jnp.broadcast_to(jnp.asarray(t if length is None else length, jnp.int32),
                              tokens.shape[:-1])
    if capacity is not None and capacity > t:
      pad = [(0, 0)] * (tokens.ndim - 1) + [(0, capacity - t)]
      tokens = jnp.pad(tokens, pad)
    return cls(tokens, length, length)

  def append(self, new_tokens: jax.Array, where: jax.Array | None = None) -> "History":
    """Writes one token per row at its current length.

    Rows where ``where`` is False, and rows already at capacity, are left unchanged.
    """
    t = self.tokens.shape[-1]
    pos = jnp.arange(t) == self.length[..., None]
    grow = jnp.ones(self.length.shape, bool) if where is None else where
    pos &= grow[..., None]
    tokens = jnp.where(pos, new_tokens[..., None].astype(jnp.int32), self.tokens)
    return self._replace(tokens=tokens,
                         length=jnp.minimum(self.length + grow.astype(jnp.int32), t))


class LogitsProcessor(NamedTuple):
  """A composable logits processor: three pure functions (see the module docstring)."""

  init: Callable[[Any, History], Any]
  process: Callable[[jax.Array, Any, History], tuple[jax.Array, Any]]
  observe: Callable[[Any, jax.Array, jax.Array, History], Any]


class EmptyState(NamedTuple):
  """State of a processor that keeps none."""


def _no_observe(state, tokens, logits, history):
  del tokens, logits, history
  return state


def stateless(fn: Callable[[jax.Array, History], jax.Array]) -> LogitsProcessor:
  """Wraps ``fn(logits, history) -> logits`` as a processor with no state.

  Args:
    fn: a pure function of the logits and the history.

  Returns:
    A :class:`LogitsProcessor`.
  """
  return LogitsProcessor(
      init=lambda logits, history: EmptyState(),
      process=lambda logits, state, history: (fn(logits, history), state),
      observe=_no_observe)


class ParamState(NamedTuple):
  """State of a stateless transform: its per-row parameter, injected so it can change."""

  value: jax.Array  # [..., 1] parameter per row ([..., V] for a dense logit bias)


def _batch_shape(logits) -> tuple[int, ...]:
  return tuple(logits.shape[:-1])


def _param_processor(impl, value, dtype) -> LogitsProcessor:
  def init(logits, history):
    del history
    return ParamState(jnp.broadcast_to(jnp.asarray(value, dtype), _batch_shape(logits))[..., None])

  def process(logits, state, history):
    del history
    return impl(logits, state.value), state

  return LogitsProcessor(init, process, _no_observe)


def temperature(t: Any) -> LogitsProcessor:
  """Processor form of :func:`jaxlogits.temperature`."""
  return _param_processor(_temp._temperature, t, jnp.float32)


def top_k(k: Any) -> LogitsProcessor:
  """Processor form of :func:`jaxlogits.top_k`."""
  return _param_processor(_trunc._top_k, k, jnp.int32)


def top_p(p: Any) -> LogitsProcessor:
  """Processor form of :func:`jaxlogits.top_p`."""
  return _param_processor(_trunc._top_p, p, jnp.float32)


def min_p(p: Any) -> LogitsProcessor:
  """Processor form of :func:`jaxlogits.min_p`."""
  return _param_processor(_trunc._min_p, p, jnp.float32)


def typical_p(mass: Any) -> LogitsProcessor:
  """Processor form of :func:`jaxlogits.typical_p`."""
  return _param_processor(_trunc._typical_p, mass, jnp.float32)


def epsilon_cutoff(epsilon: Any) -> LogitsProcessor:
  """Processor form of :func:`jaxlogits.epsilon_cutoff`."""
  return _param_processor(_trunc._epsilon_cutoff, epsilon, jnp.float32)


def eta_cutoff(epsilon: Any) -> LogitsProcessor:
  """Processor form of :func:`jaxlogits.eta_cutoff`."""
  return _param_processor(_trunc._eta_cutoff, epsilon, jnp.float32)


def top_n_sigma(n: Any) -> LogitsProcessor:
  """Processor form of :func:`jaxlogits.top_n_sigma`."""
  return _param_processor(_trunc._top_n_sigma, n, jnp.float32)


def logit_bias(bias: Any) -> LogitsProcessor:
  """Processor form of :func:`jaxlogits.logit_bias` (``bias`` dense ``[V]`` or ``[..., V]``)."""

  def init(logits, history):
    del history
    return ParamState(jnp.broadcast_to(jnp.asarray(bias, jnp.float32), logits.shape))

  def process(logits, state, history):
    del history
    return _bias._logit_bias(logits, state.value), state

  return LogitsProcessor(init, process, _no_observe)


def no_repeat_ngram(n: Any) -> LogitsProcessor:
  """Processor form of :func:`jaxlogits.no_repeat_ngram`, reading the history."""

  def process(logits, state, history):
    return _pen._no_repeat_ngram(logits, history.tokens, state.value, history.length), state

  return _param_processor(None, n, jnp.int32)._replace(process=process)


def add_tokens(counts: jax.Array, tokens: jax.Array) -> jax.Array:
  """Adds one drawn token per row to ``counts`` (``-1`` adds nothing)."""
  hit = jnp.arange(counts.shape[-1]) == tokens[..., None]
  return counts + hit.astype(counts.dtype)


class PenaltyState(NamedTuple):
  """Token counts kept up to date by ``observe``, and the penalties."""

  counts: jax.Array  # [..., V] int32 occurrences in the counted context
  repetition: jax.Array  # [..., 1] float32
  frequency: jax.Array  # [..., 1] float32
  presence: jax.Array  # [..., 1] float32


def penalties(*, repetition: Any = 1.0, frequency: Any = 0.0, presence: Any = 0.0,
              count_prompt: bool = True) -> LogitsProcessor:
  """Repetition, frequency and presence penalties with incrementally kept counts.

  ``init`` counts the prompt (or nothing, with ``count_prompt=False``: OpenAI's output-only
  convention); ``observe`` adds each drawn token, so a step costs ``O(V)``, not ``O(T)``.

  Args:
    repetition: :func:`jaxlogits.repetition_penalty` ``r > 0``.
    frequency: :func:`jaxlogits.frequency_penalty` ``f``.
    presence: :func:`jaxlogits.presence_penalty` ``q``.
    count_prompt: whether the prompt's tokens count (static).

  Returns:
    A stateful :class:`LogitsProcessor`.
  """

  def init(logits, history):
    batch, v = _batch_shape(logits), logits.shape[-1]
    if count_prompt and history.tokens.shape[-1] > 0:
      counts = _pen._token_counts(history.tokens, history.length, history.length, 0,
                                  vocab_size=v, has_length=True, has_start=False,
                                  has_pad=False)
    else:
      counts = jnp.zeros(batch + (v,), jnp.int32)
    row = lambda a: jnp.broadcast_to(jnp.asarray(a, jnp.float32), batch)[..., None]
    return PenaltyState(counts, row(repetition), row(frequency), row(presence))

  def process(logits, state, history):
    del history
    return _pen._count_penalties(logits, state.counts, state.repetition, state.frequency,
                                 state.presence), state

  def observe(state, tokens, logits, history):
    del logits, history
    return state._replace(counts=add_tokens(state.counts, tokens))

  return LogitsProcessor(init, process, observe)


class MirostatState(NamedTuple):
  """Mirostat v2's running maximum surprise ``mu`` and its settings."""

  mu: jax.Array  # [..., 1] float32, current surprise cap in bits
  tau: jax.Array  # [..., 1] float32, target surprise in bits
  eta: jax.Array  # [..., 1] float32, learning rate


def mirostat(tau: Any = 5.0, eta: Any = 0.1) -> LogitsProcessor:
  r"""Mirostat 2.0: truncates to tokens with surprise below ``mu`` and steers ``mu`` to ``tau``.

  .. math::
    \text{keep } i \iff -\log_2 p_i \le \mu, \qquad
    \mu \leftarrow \mu - \eta\,(-\log_2 q_t - \tau)

  where :math:`q_t` is the probability of the drawn token under the truncated distribution.
  ``mu`` starts at ``2 tau``; the most likely token is always kept. Place it last in a chain: it
  reads the distribution it is given.

  Args:
    tau: target surprise in bits, ``> 0``; scalar or per row.
    eta: learning rate, ``> 0``; scalar or per row.

  Returns:
    A stateful :class:`LogitsProcessor`.

  References:
    Basu et al., "Mirostat: A Neural Text Decoding Algorithm that Directly Controls Perplexity",
    2021. https://arxiv.org/abs/2007.14966
  """

  def init(logits, history):
    del history
    row = lambda a: jnp.broadcast_to(jnp.asarray(a, jnp.float32), _batch_shape(logits))[..., None]
    return MirostatState(mu=2.0 * row(tau), tau=row(tau), eta=row(eta))

  def process(logits, state, history):
    del history
    x = nm.sanitize(logits)
    e = nm.effective(x)
    _, logp = nm.probs_and_logprobs(e)
    keep = nm.keep_top(e, -logp / jnp.log(2.0) <= state.mu)
    return nm.finish(nm.apply_mask(x, keep), logits.dtype), state

  def observe(state, tokens, logits, history):
    del history
    _, logp = nm.probs_and_logprobs(nm.effective(nm.sanitize(logits)))
    v = logits.shape[-1]
    chosen = jnp.take_along_axis(logp, jnp.clip(tokens, 0, v - 1)[..., None], axis=-1)
    surprise = -chosen / jnp.log(2.0)
    mu = state.mu - state.eta * (surprise - state.tau)
    return state._replace(mu=jnp.where(tokens[..., None] >= 0, mu, state.mu))

  return LogitsProcessor(init, process, observe)


class StandardState(NamedTuple):
  """State of :func:`standard`: the parameters and incrementally kept counts."""

  params: _pipeline.SamplingParams
  counts: jax.Array  # [B, V] int32 counts of the history's tokens


def standard(params: _pipeline.SamplingParams, *, eos_token_id: Any = None) -> LogitsProcessor:
  """The fixed pipeline of :func:`jaxlogits.process_logits` as a processor.

  Counts for the penalties are kept in the state (prompt and output); the n-gram ban and
  ``min_tokens`` read the history.

  Args:
    params: :class:`jaxlogits.SamplingParams`.
    eos_token_id: end-of-sequence id(s) suppressed before ``min_tokens``.

  Returns:
    A stateful :class:`LogitsProcessor`.
  """
  counter = penalties()

  def init(logits, history):
    return StandardState(params, counter.init(logits, history).counts)

  def process(logits, state, history):
    eos = None
    if eos_token_id is not None:
      eos = jnp.broadcast_to(jnp.atleast_1d(jnp.asarray(eos_token_id, jnp.int32)),
                             (logits.shape[0], jnp.size(jnp.asarray(eos_token_id))))
    out = _pipeline._process(logits, state.params, state.counts, history.tokens,
                             history.length, history.length - history.prompt_length, eos, None)
    return out, state

  def observe(state, tokens, logits, history):
    del logits, history
    return state._replace(counts=add_tokens(state.counts, tokens))

  return LogitsProcessor(init, process, observe)


def chain(*processors: LogitsProcessor) -> LogitsProcessor:
  """Composes processors, applied left to right; the state is the tuple of their states.

  Args:
    *processors: :class:`LogitsProcessor` instances, in any order.

  Returns:
    A :class:`LogitsProcessor` whose ``observe`` updates every member.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> proc = jl.chain(jl.processors.top_k(2), jl.processors.temperature(0.5))
    >>> hist = jl.History.empty()
    >>> out, _ = proc.process(jnp.array([1.0, 2.0, 3.0]), proc.init(jnp.zeros(3), hist), hist)
    >>> out
    Array([-inf,   4.,   6.], dtype=float32)
  """

  def init(logits, history):
    return tuple(p.init(logits, history) for p in processors)

  def process(logits, state, history):
    new_state = []
    for p, s in zip(processors, state):
      logits, s = p.process(logits, s, history)
      new_state.append(s)
    return logits, tuple(new_state)

  def observe(state, tokens, logits, history):
    return tuple(p.observe(s, tokens, logits, history) for p, s in zip(processors, state))

  return LogitsProcessor(init, process, observe)


def sample_with(key: Any, logits: jax.Array, processor: LogitsProcessor, state: Any,
                history: History) -> tuple[jax.Array, Any, jax.Array]:
  """One decode step through a processor: process, draw, observe.

  Args:
    key: a PRNG key, or one per row (see :func:`jaxlogits.sample`).
    logits: ``[..., V]`` float logits.
    processor: a :class:`LogitsProcessor`.
    state: its state.
    history: the context so far.

  Returns:
    ``(tokens, new_state, processed_logits)``.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxlogits as jl
    >>> proc = jl.processors.penalties(presence=1.0)
    >>> hist = jl.History.from_prompt(jnp.array([[2]]))
    >>> state = proc.init(jnp.zeros((1, 3)), hist)
    >>> tokens, state, processed = jl.sample_with(
    ...     jax.random.key(0), jnp.zeros((1, 3)), proc, state, hist)
    >>> processed
    Array([[ 0.,  0., -1.]], dtype=float32)
    >>> int(state.counts.sum())  # the prompt token and the one just drawn
    2
  """
  processed, state = processor.process(logits, state, history)
  tokens = _sampling._sample(_sampling.row_keys(key, processed.shape[:-1]), processed)
  return tokens, processor.observe(state, tokens, processed, history), processed

