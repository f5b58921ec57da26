"""Penalties that read the context: repetition, frequency, presence and no-repeat n-grams.

The count-based penalties take ``counts``, an ``[..., V]`` array of how often each token occurs in
the context the caller chooses, built by :func:`token_counts`:

* prompt and output (Hugging Face's ``repetition_penalty`` convention): count every token of the
  row so far;
* output only (OpenAI's and vLLM's ``frequency_penalty``/``presence_penalty`` convention): count
  only the generated tokens (pass ``start=prompt_length`` to :func:`token_counts`).

A decode loop keeps ``counts`` up to date by adding one per drawn token instead of recounting.
"""

from __future__ import annotations

from typing import Any

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxlogits import _checks
from jaxlogits import _numerics as nm

__all__ = [
    "frequency_penalty",
    "no_repeat_ngram",
    "presence_penalty",
    "repetition_penalty",
    "token_counts",
]


def _valid_positions(tokens, start, length, pad_id):
  t = tokens.shape[-1]
  pos = jnp.arange(t)
  valid = jnp.ones(tokens.shape, bool)
  if length is not None:
    valid &= pos < length[..., None]
  if start is not None:
    valid &= pos >= start[..., None]
  if pad_id is not None:
    valid &= tokens != pad_id
  return valid


@functools.partial(jax.jit, static_argnames=("vocab_size", "has_length", "has_start", "has_pad"))
def _token_counts(tokens, start, length, pad_id, *, vocab_size, has_length, has_start, has_pad):
  valid = _valid_positions(tokens, start if has_start else None, length if has_length else None,
                           pad_id if has_pad else None)
  batch = tokens.shape[:-1]
  flat = tokens.reshape((math.prod(batch), tokens.shape[-1]))
  counts = nm.scatter_rows(flat, valid.reshape(flat.shape).astype(jnp.int32), vocab_size, "add")
  return counts.reshape(batch + (vocab_size,))


def token_counts(tokens: Any, vocab_size: int, *, length: Any = None, start: Any = None,
                 pad_id: Any = None) -> jax.Array:
  r"""Counts how often each token id occurs in each row of a token context.

  .. math::
    c_v = \#\{\, t : \text{start} \le t < \text{length},\ x_t = v,\ x_t \ne \text{pad} \,\}

  Args:
    tokens: ``[..., T]`` integer token ids.
    vocab_size: ``V``, the size of the counts' last axis (static).
    length: optional number of valid tokens per row (right padding is ignored); scalar or
      ``[...]``.
    start: optional first position counted per row, e.g. the prompt length to count only the
      generated tokens (OpenAI's convention for frequency and presence penalties).
    pad_id: optional padding id that is never counted.

  Returns:
    ``[..., V]`` int32 counts. Under ``jit``, ids outside ``[0, V)`` are ignored; eagerly they
    raise ``ValueError`` (except ``pad_id``).

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> jl.token_counts(jnp.array([2, 0, 2, 9]), 4, pad_id=9)
    Array([1, 0, 2, 0], dtype=int32)
  """
  tokens = _checks.int_array("tokens", tokens)
  if tokens.ndim < 1:
    raise ValueError("tokens must have shape [..., T]")
  if not _checks.is_int(vocab_size) or vocab_size < 1:
    raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
  vocab_size = int(vocab_size)
  _checks.check_token_ids("tokens", tokens, vocab_size, allow=pad_id)
  batch = tokens.shape[:-1]
  t = tokens.shape[-1]
  if length is not None:
    _checks.check_range("length", length, lo=0, hi=t, integer=True)
  if start is not None:
    _checks.check_range("start", start, lo=0, integer=True)
  as_row = lambda name, v: (None if v is None else
                            _checks.row_param(name, v, batch, jnp.int32)[..., 0])
  dummy = jnp.zeros(batch, jnp.int32)
  length_a, start_a = as_row("length", length), as_row("start", start)
  return _token_counts(
      tokens, dummy if start_a is None else start_a, dummy if length_a is None else length_a,
      jnp.int32(0 if pad_id is None else pad_id), vocab_size=vocab_size,
      has_length=length is not None, has_start=start is not None, has_pad=pad_id is not None)


def _check_counts(counts, logits):
  counts = jnp.asarray(counts)
  _checks.check_broadcast("counts", counts.shape, logits.shape, "logits")
  if not (jnp.issubdtype(counts.dtype, jnp.number) or counts.dtype == jnp.bool_):
    raise TypeError(f"counts must be numeric, got dtype {counts.dtype}")
  return counts


@jax.jit
def _repetition_penalty(logits, counts, r):
  x = nm.sanitize(logits)
  r = jnp.where((r > 0) & jnp.isfinite(r), r, 1.0)  # under jit an invalid r is the identity
  y = jnp.where(x > 0, x / r, x * r)
  y = nm.clamp_finite(y, jnp.isfinite(x), logits.dtype)
  return nm.finish(jnp.where(counts > 0, y, x), logits.dtype)


def repetition_penalty(logits: Any, counts: Any, penalty: Any) -> jax.Array:
  r"""CTRL's repetition penalty: makes tokens already in the context less likely.

  .. math::
    \ell'_i = \begin{cases} \ell_i / r & c_i > 0,\ \ell_i > 0 \\
                            \ell_i \cdot r & c_i > 0,\ \ell_i \le 0 \\
                            \ell_i & c_i = 0 \end{cases}

  Dividing positive and multiplying negative logits means ``r > 1`` always lowers a seen token
  (a plain division would raise a negative one). ``r = 1`` is the identity.

  Args:
    logits: ``[..., V]`` float logits.
    counts: ``[..., V]`` occurrence counts from :func:`token_counts` (context chosen by the
      caller; Hugging Face counts the prompt and the output).
    penalty: ``r > 0``; a scalar or one value per row.

  Returns:
    Penalised logits, same shape and dtype as ``logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> jl.repetition_penalty(jnp.array([2.0, -2.0, 1.0]), jnp.array([1, 1, 0]), 2.0)
    Array([ 1., -4.,  1.], dtype=float32)

  References:
    Keskar et al., "CTRL: A Conditional Transformer Language Model for Controllable
    Generation", 2019. https://arxiv.org/abs/1909.05858
  """
  logits = _checks.check_logits(logits)
  counts = _check_counts(counts, logits)
  _checks.check_range("repetition_penalty", penalty, lo=0.0, lo_open=True, finite=True)
  return _repetition_penalty(
      logits, counts,
      _checks.row_param("repetition_penalty", penalty, logits.shape[:-1], jnp.float32))


@jax.jit
def _additive_penalty(logits, amount):
  x = nm.sanitize(logits)
  amount = jnp.where(jnp.isnan(amount), 0.0, amount)  # under jit a NaN penalty is the identity
  y = nm.clamp_finite(x - amount, jnp.isfinite(x), logits.dtype)
  return nm.finish(jnp.where(amount != 0, y, x), logits.dtype)


def _count_penalties(logits, counts, repetition, frequency, presence):
  """Repetition, frequency and presence penalties in the standard order (row params [..., 1])."""
  x = _repetition_penalty(logits, counts, repetition)
  c = counts.astype(jnp.float32)
  x = _additive_penalty(x, jnp.where(c != 0, frequency * c, 0.0))
  return _additive_penalty(x, jnp.where(counts > 0, presence, 0.0))


def frequency_penalty(logits: Any, counts: Any, penalty: Any) -> jax.Array:
  r"""OpenAI's frequency penalty: subtracts ``f`` per occurrence of a token.

  .. math::
    \ell'_i = \ell_i - f \cdot c_i

  ``f = 0`` is the identity; a negative ``f`` encourages repetition.

  Args:
    logits: ``[..., V]`` float logits.
    counts: ``[..., V]`` occurrence counts from :func:`token_counts` (OpenAI and vLLM count the
      generated tokens only).
    penalty: ``f``, any finite real; a scalar or one value per row.

  Returns:
    Penalised logits, same shape and dtype as ``logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> jl.frequency_penalty(jnp.array([2.0, -2.0, 1.0]), jnp.array([3, 1, 0]), 0.5)
    Array([ 0.5, -2.5,  1. ], dtype=float32)

  References:
    OpenAI API reference, "frequency_penalty".
  """
  logits = _checks.check_logits(logits)
  counts = _check_counts(counts, logits)
  _checks.check_range("frequency_penalty", penalty, finite=True)
  f = _checks.row_param("frequency_penalty", penalty, logits.shape[:-1], jnp.float32)
  c = counts.astype(jnp.float32)
  return _additive_penalty(logits, jnp.where(c != 0, f * c, 0.0))


def presence_penalty(logits: Any, counts: Any, penalty: Any) -> jax.Array:
  r"""OpenAI's presence penalty: subtracts ``q`` once from every token already present.

  .. math::
    \ell'_i = \ell_i - q \cdot [c_i > 0]

  Args:
    logits: ``[..., V]`` float logits.
    counts: ``[..., V]`` occurrence counts from :func:`token_counts`.
    penalty: ``q``, any finite real; a scalar or one value per row.

  Returns:
    Penalised logits, same shape and dtype as ``logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> jl.presence_penalty(jnp.array([2.0, -2.0, 1.0]), jnp.array([3, 1, 0]), 0.5)
    Array([ 1.5, -2.5,  1. ], dtype=float32)

  References:
    OpenAI API reference, "presence_penalty".
  """
  logits = _checks.check_logits(logits)
  counts = _check_counts(counts, logits)
  _checks.check_range("presence_penalty", penalty, finite=True)
  q = _checks.row_param("presence_penalty", penalty, logits.shape[:-1], jnp.float32)
  return _additive_penalty(logits, jnp.where(counts > 0, q, 0.0))


@jax.jit
def _ngram_banned(tokens, n, length, vocab_size_like):
  """Bool ``[..., V]`` of the tokens that would complete an n-gram seen in the row."""
  vocab_size = vocab_size_like.shape[-1]
  t = tokens.shape[-1]
  if t == 0:  # an empty context bans nothing
    return jnp.zeros(tokens.shape[:-1] + (vocab_size,), bool)
  j = jnp.arange(t)
  n = jnp.maximum(n, 0)
  length = jnp.clip(length, 0, t)

  def body(k, alive):
    # Does the token k places before j equal the token k places before the end of the row?
    before_j = jnp.take_along_axis(
        tokens, jnp.broadcast_to(jnp.clip(j - k, 0, t - 1), tokens.shape), axis=-1)
    before_end = jnp.take_along_axis(tokens, jnp.clip(length - k, 0, t - 1), axis=-1)
    ok = (j - k >= 0) & (before_j == before_end)
    return alive & (ok | (k >= n))

  # All true, but computed from the inputs so that inside shard_map the loop's carry varies over
  # the same mesh axes as its result.
  start = (tokens == tokens) & (n == n) & (length == length)
  alive = lax.fori_loop(1, jnp.max(n, initial=1), body, start)
  banned = alive & (n >= 1) & (j >= n - 1) & (j < length)
  flat = tokens.reshape((math.prod(tokens.shape[:-1]), t))
  out = nm.scatter_rows(flat, banned.reshape(flat.shape), vocab_size, "max")
  return out.reshape(tokens.shape[:-1] + (vocab_size,))


@jax.jit
def _no_repeat_ngram(logits, tokens, n, length):
  x = nm.sanitize(logits)
  banned = _ngram_banned(tokens, n[..., 0:1], length[..., None], x)
  return nm.finish(jnp.where(banned, -jnp.inf, x), logits.dtype)


def no_repeat_ngram(logits: Any, tokens: Any, n: Any, *, length: Any = None) -> jax.Array:
  r"""Bans every token that would complete an n-gram already present in the row's context.

  With context :math:`x_0 \dots x_{L-1}`, token :math:`x_j` is banned when
  :math:`x_{j-n+1} \dots x_{j-1} = x_{L-n+1} \dots x_{L-1}` for some ``n - 1 <= j < L``:
  generating it would repeat the n-gram that ends at ``j``. ``n = 1`` bans every token present;
  ``n = 0`` (or a context shorter than ``n``) bans nothing. Cost is ``O(T n)`` per row.

  Args:
    logits: ``[..., V]`` float logits.
    tokens: ``[..., T]`` integer context (usually prompt and output), right-padded.
    n: n-gram size ``>= 0``; a scalar or one value per row.
    length: optional number of valid tokens per row (defaults to ``T``).

  Returns:
    Logits with the banned tokens at ``-inf``, same shape and dtype as ``logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> # context 1 2 3 1 2: the bigram "2 3" was seen, so after "2" token 3 is banned
    >>> jl.no_repeat_ngram(jnp.zeros(5), jnp.array([1, 2, 3, 1, 2]), 2)
    Array([  0.,   0.,   0., -inf,   0.], dtype=float32)

  References:
    Paulus, Xiong and Socher, "A Deep Reinforced Model for Abstractive Summarization", 2017.
    https://arxiv.org/abs/1705.04304
  """
  logits = _checks.check_logits(logits)
  tokens = _checks.int_array("tokens", tokens)
  batch = logits.shape[:-1]
  if tokens.ndim < 1 or tokens.shape[:-1] != batch:
    raise ValueError(
        f"tokens must have shape {batch + ('T',)} to match logits {logits.shape}, "
        f"got {tokens.shape}")
  _checks.check_token_ids("tokens", tokens, logits.shape[-1])
  _checks.check_range("no_repeat_ngram n", n, lo=0, integer=True)
  t = tokens.shape[-1]
  if length is None:
    length = t
  _checks.check_range("length", length, lo=0, hi=t, integer=True)
  return _no_repeat_ngram(
      logits, tokens, _checks.row_param("n", n, batch, jnp.int32),
      _checks.row_param("length", length, batch, jnp.int32)[..., 0])

