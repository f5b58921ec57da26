"""Logit bias and token sets: add a bias, allow only some tokens, ban others.

Masks built here are hard constraints chosen by the caller: if they exclude every finite token of
a row, the row becomes all ``-inf`` and :func:`jaxlogits.sample` returns ``-1`` for it (a decode
loop reports that as the ``invalid_logits`` finish reason). The truncation rules never do this.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogits import _checks
from jaxlogits import _numerics as nm

__all__ = ["allow_tokens", "ban_tokens", "logit_bias", "token_bias", "token_mask"]


@jax.jit
def _logit_bias(logits, bias):
  x = nm.sanitize(logits)
  b = bias.astype(jnp.float32)
  y = nm.clamp_finite(x + b, jnp.isfinite(x) & jnp.isfinite(b), logits.dtype)
  return nm.finish(y, logits.dtype)


def _check_broadcast(name, arr, logits):
  _checks.check_broadcast(name, arr.shape, logits.shape, "logits")


def logit_bias(logits: Any, bias: Any) -> jax.Array:
  r"""Adds a dense bias to the logits.

  .. math::
    \ell'_i = \ell_i + b_i

  A bias of ``-inf`` bans a token, a large positive bias all but forces it. A finite sum that
  overflows saturates at the dtype's largest finite value.

  Args:
    logits: ``[..., V]`` float logits.
    bias: dense bias broadcastable to ``logits.shape`` (``[V]`` for every row, ``[..., V]`` per
      row); build it from ``{token_id: bias}`` with :func:`token_bias`.

  Returns:
    Biased logits, same shape and dtype as ``logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> jl.logit_bias(jnp.zeros(4), jl.token_bias({1: 2.0, 3: -jnp.inf}, 4))
    Array([  0.,   2.,   0., -inf], dtype=float32)

  References:
    OpenAI API reference, "logit_bias".
  """
  logits = _checks.check_logits(logits)
  bias = jnp.asarray(bias)
  if not jnp.issubdtype(bias.dtype, jnp.floating) and not jnp.issubdtype(bias.dtype, jnp.integer):
    raise TypeError(f"bias must be numeric, got dtype {bias.dtype}")
  _check_broadcast("bias", bias, logits)
  arr = _checks.concrete(bias)
  if arr is not None and np.any(np.isnan(arr.astype(np.float64))):
    raise ValueError("bias must not contain NaN")
  return _logit_bias(logits, bias)


def token_bias(mapping: Mapping[int, float] | Sequence[Mapping[int, float]], vocab_size: int,
               *, dtype=jnp.float32) -> jax.Array:
  """Builds a dense bias from ``{token_id: bias}`` (or one such dict per row).

  Args:
    mapping: a dict of token id to bias (any number, ``-inf`` bans), or a list of such dicts, one
      per row.
    vocab_size: ``V``.
    dtype: dtype of the result.

  Returns:
    ``[V]`` (one dict) or ``[B, V]`` (a list of ``B`` dicts) dense bias, 0 where unset.

  Raises:
    ValueError: for an id outside ``[0, V)`` or a NaN bias.

  Examples:
    >>> import jaxlogits as jl
    >>> jl.token_bias({0: 1.5, 2: -1.0}, 3)
    Array([ 1.5,  0. , -1. ], dtype=float32)
  """
  if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
    raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
  rows = [mapping] if isinstance(mapping, Mapping) else list(mapping)
  dense = np.zeros((len(rows), int(vocab_size)), np.float32)
  for r, row in enumerate(rows):
    if not isinstance(row, Mapping):
      raise TypeError(f"token_bias expects a dict or a list of dicts, got {type(row).__name__}")
    for tok, val in row.items():
      tok_i = int(tok)
      if tok_i != tok or not 0 <= tok_i < vocab_size:
        raise ValueError(f"logit_bias token id must be in [0, {vocab_size}), got {tok!r}")
      val_f = float(val)
      if np.isnan(val_f):
        raise ValueError(f"logit_bias value for token {tok_i} must not be NaN")
      dense[r, tok_i] = val_f
  out = jnp.asarray(dense, dtype)
  return out[0] if isinstance(mapping, Mapping) else out


def token_mask(ids: Iterable[int] | Any, vocab_size: int) -> jax.Array:
  """Builds a boolean ``[..., V]`` mask that is True at the given token ids.

  Args:
    ids: a collection of ids, or an integer array ``[..., K]`` of ids per row where negative
      entries are padding and ignored.
    vocab_size: ``V``.

  Returns:
    ``bool[..., V]`` mask (``[V]`` for a flat collection).

  Examples:
    >>> import jaxlogits as jl
    >>> jl.token_mask([0, 2], 4)
    Array([ True, False,  True, False], dtype=bool)
  """
  if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
    raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
  if isinstance(ids, (set, frozenset, range)):
    ids = sorted(ids)
  arr = _checks.int_array("ids", np.asarray(ids, dtype=np.int64) if isinstance(ids, list) and
                          not ids else ids)
  if arr.ndim == 0:
    arr = arr[None]
  conc = _checks.concrete(arr)
  if conc is not None and np.any(conc >= vocab_size):
    raise ValueError(f"token ids must be in [0, {vocab_size}), got {conc[conc >= vocab_size]}")
  flat = arr.reshape((math.prod(arr.shape[:-1]), arr.shape[-1]))
  mask = nm.scatter_rows(flat, flat >= 0, int(vocab_size), "max")
  return mask.reshape(arr.shape[:-1] + (int(vocab_size),))


@jax.jit
def _allow(logits, allowed):
  x = nm.sanitize(logits)
  return nm.finish(jnp.where(allowed, x, -jnp.inf), logits.dtype)


def _as_mask(name, mask, logits):
  mask = jnp.asarray(mask)
  if mask.dtype != jnp.bool_:
    raise TypeError(f"{name} must be a boolean mask (build one with token_mask), got "
                    f"dtype {mask.dtype}")
  _check_broadcast(name, mask, logits)
  return mask


def allow_tokens(logits: Any, allowed: Any) -> jax.Array:
  r"""Keeps only the allowed tokens: the others become ``-inf``.

  .. math::
    \ell'_i = \ell_i \text{ if } a_i \text{ else } -\infty

  Args:
    logits: ``[..., V]`` float logits.
    allowed: boolean mask broadcastable to ``logits.shape`` (see :func:`token_mask`).

  Returns:
    Masked logits, same shape and dtype as ``logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> jl.allow_tokens(jnp.zeros(3), jl.token_mask([1], 3))
    Array([-inf,   0., -inf], dtype=float32)
  """
  logits = _checks.check_logits(logits)
  return _allow(logits, _as_mask("allowed", allowed, logits))


def ban_tokens(logits: Any, banned: Any) -> jax.Array:
  r"""Bans tokens: the banned ones become ``-inf``.

  .. math::
    \ell'_i = -\infty \text{ if } b_i \text{ else } \ell_i

  Args:
    logits: ``[..., V]`` float logits.
    banned: boolean mask broadcastable to ``logits.shape`` (see :func:`token_mask`).

  Returns:
    Masked logits, same shape and dtype as ``logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> jl.ban_tokens(jnp.zeros(3), jl.token_mask([1], 3))
    Array([  0., -inf,   0.], dtype=float32)
  """
  logits = _checks.check_logits(logits)
  return _allow(logits, ~_as_mask("banned", banned, logits))
