"""Drawing tokens: an exact categorical draw with one uniform number per row, and greedy.

The draw is inverse-CDF sampling, so it needs one random number per row instead of one per
vocabulary entry (``jax.random.categorical`` draws ``V`` Gumbel numbers per row). The cumulative
sum is blocked: one pass computes the sum of each block of ``BLOCK`` probabilities, a short scan
over the block sums finds the block holding the target, and only that block is scanned token by
token. The uniform number has 24 random bits; a token whose probability is below ``2**-24`` of
the row's mass is drawn with probability rounded to that grid.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxlogits import _checks
from jaxlogits import _numerics as nm

__all__ = ["greedy", "sample"]

BLOCK = 256


def row_keys(key: Any, batch_shape: tuple[int, ...]) -> jax.Array:
  """Typed PRNG keys of ``batch_shape``, one per row.

  ``key`` is a typed key (``jax.random.key``) or a legacy ``uint32`` key (``jax.random.PRNGKey``),
  either a single key or one per row. A single key gives row ``i`` (in row-major order of the
  batch) the key ``jax.random.fold_in(key, i)``: rows are independent, and a row's key depends on
  its index only, never on the batch size. A ``[V]`` input has one row whose key is ``key``
  itself, so ``sample(keys[i], logits[i])`` equals row ``i`` of ``sample(keys, logits)``.
  """
  key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    typed = key
  elif key.dtype == jnp.uint32 and key.ndim >= 1:
    typed = jax.random.wrap_key_data(key)
  else:
    raise TypeError("key must be a PRNG key from jax.random.key or jax.random.PRNGKey, got "
                    f"dtype {key.dtype} and shape {key.shape}")
  if typed.shape == tuple(batch_shape):
    return typed
  if typed.shape == ():
    n = math.prod(batch_shape)
    folded = jax.vmap(lambda i: jax.random.fold_in(typed, i))(jnp.arange(n, dtype=jnp.uint32))
    return folded.reshape(batch_shape)
  raise ValueError(f"key must be a single key or one key per row (batch shape "
                   f"{tuple(batch_shape)}), got keys of shape {typed.shape}")


def uniforms(keys: jax.Array) -> jax.Array:
  """One float32 uniform number in ``[0, 1)`` per key, with 24 random bits."""
  flat = keys.reshape(-1)
  bits = jax.vmap(lambda k: jax.random.bits(k, (), jnp.uint32))(flat)
  return ((bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)).reshape(keys.shape)


def inverse_cdf(e: jax.Array, u: jax.Array, block: int = BLOCK) -> jax.Array:
  """Index ``i`` with ``C_{i-1} <= u * C_V < C_i`` per row of effective logits ``e`` ``[N, V]``.

  Rows with no finite entry give -1. Never returns a zero-probability index.
  """
  n, v = e.shape
  m = jnp.max(e, axis=-1, keepdims=True)
  valid = jnp.isfinite(m[:, 0])
  w = jnp.exp(e - jnp.where(jnp.isfinite(m), m, 0.0))
  bs = min(block, v)
  nb = -(-v // bs)
  wp = jnp.pad(w, ((0, 0), (0, nb * bs - v))).reshape(n, nb, bs)
  block_sums = jnp.sum(wp, axis=-1)
  inclusive = jnp.cumsum(block_sums, axis=-1)
  total = inclusive[:, -1:]
  exclusive = jnp.concatenate([jnp.zeros((n, 1), w.dtype), inclusive[:, :-1]], axis=-1)
  target = jnp.minimum(u[:, None] * total, jnp.nextafter(total, jnp.float32(0.0)))
  b = jnp.sum(exclusive <= target, axis=-1) - 1  # last block starting at or below the target
  b = jnp.clip(b, 0, nb - 1)
  chosen = jnp.take_along_axis(wp, b[:, None, None], axis=1)[:, 0, :]
  within = jnp.take_along_axis(exclusive, b[:, None], axis=1) + jnp.cumsum(chosen, axis=-1)
  j = jnp.sum(within <= target, axis=-1)
  # Rounding can leave the target at or past the block's end: take its last positive entry.
  last_positive = bs - 1 - jnp.argmax(chosen[:, ::-1] > 0, axis=-1)
  j = jnp.where(j >= bs, last_positive, j)
  return jnp.where(valid, b * bs + j, -1).astype(jnp.int32)


@jax.jit
def _sample(keys, logits):
  e = nm.effective(nm.sanitize(logits))
  flat = e.reshape((-1, e.shape[-1]))
  idx = inverse_cdf(flat, uniforms(keys).reshape(-1))
  return idx.reshape(logits.shape[:-1])


def sample(key: Any, logits: Any) -> jax.Array:
  r"""Draws one token per row exactly from ``softmax(logits)``.

  .. math::
    i = \min\{\, i : \textstyle\sum_{j \le i} p_j > u \,\}, \quad u \sim U[0, 1)

  one uniform number per row and a blocked cumulative sum (no per-token random numbers, no
  sort). NaN logits count as ``-inf``; a row with ``+inf`` entries draws uniformly among them; a
  row with no finite logit gives ``-1``. A row's draw depends only on its logits and its key,
  never on the other rows, the batch size or padding.

  Args:
    key: a PRNG key (``jax.random.key`` or legacy ``jax.random.PRNGKey``). Either one key, in which
      case row ``i`` (row-major over the batch axes) uses ``jax.random.fold_in(key, i)``, or one
      key per row with shape ``logits.shape[:-1]`` (typed) or ``logits.shape[:-1] + (2,)``
      (legacy).
    logits: ``[..., V]`` float logits.

  Returns:
    ``int32[...]`` token ids in ``[0, V)``, or ``-1`` for rows with no finite logit.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxlogits as jl
    >>> jl.sample(jax.random.key(0), jnp.array([[0.0, -jnp.inf, -jnp.inf], [-jnp.inf] * 3]))
    Array([ 0, -1], dtype=int32)

  References:
    Devroye, "Non-Uniform Random Variate Generation", 1986, chapter 2 (inversion).
  """
  logits = _checks.check_logits(logits)
  return _sample(row_keys(key, logits.shape[:-1]), logits)


@jax.jit
def _greedy(logits):
  x = nm.sanitize(logits)
  idx = nm.first_argmax(x).astype(jnp.int32)
  return jnp.where(jnp.any(x > -jnp.inf, axis=-1), idx, -1)


def greedy(logits: Any) -> jax.Array:
  r"""Picks the most likely token of each row, the lowest index on ties.

  .. math::
    i = \min \arg\max_j \ell_j

  Args:
    logits: ``[..., V]`` float logits (NaN counts as ``-inf``).

  Returns:
    ``int32[...]`` token ids, ``-1`` for rows with no finite logit.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> jl.greedy(jnp.array([[1.0, 3.0, 3.0], [jnp.nan, -jnp.inf, -jnp.inf]]))
    Array([ 1, -1], dtype=int32)
  """
  return _greedy(_checks.check_logits(logits))
