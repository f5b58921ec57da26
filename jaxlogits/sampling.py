"""Drawing tokens: an exact categorical draw with two uniform numbers per row, and greedy.

The draw is inverse-CDF sampling in two levels, so it needs two random numbers per row instead of
one per vocabulary entry (``jax.random.categorical`` draws ``V`` Gumbel numbers per row):

1. One pass sums each block of ``BLOCK`` weights ``exp(l - max)``. The block sums are turned into
   fixed-point integers (two ``uint32`` limbs each) and their prefix sums are taken in integers,
   which are exact and so independent of the order of addition: a vocabulary split over devices
   (:mod:`jaxlogits.sharding`) gets the very same prefix sums from one total per device. A first
   uniform number picks the block from those prefix sums, read at 24 bits.
2. A second, independent uniform number picks the token inside the chosen block, by a cumulative
   sum over its ``BLOCK`` weights.

A batch whose rows each hold finite logits in at most ``SPARSE_BLOCKS`` blocks (as after a
top-k) sums only those blocks, found from the block maxima: a block of ``-inf`` has mass exactly
zero and is never drawn, so the prefix sums of the others, and the token drawn, are the same,
and the pass of exponentials over the whole row is saved.

Block ``b`` is drawn with probability ``q_b / Q`` (fixed-point mass over the row's total) on a
grid of ``2**-24``, and a token inside it with probability ``w_i / s_b`` to float32 rounding;
a block whose mass is below about ``2**-37`` of the largest weight (``2**-29`` for a million-token
vocabulary) is never drawn. A token of probability zero is never drawn.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxlogits import _checks
from jaxlogits import _numerics as nm

__all__ = ["greedy", "sample"]

BLOCK = nm.BLOCK
NEG_INF = nm.NEG_INF
# A row with at most this many blocks holding a finite logit draws from those blocks alone.
SPARSE_BLOCKS = 64


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


def uniforms(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Two independent float32 uniform numbers in ``[0, 1)`` per key, 24 random bits each: the
  first picks the block, the second the token inside it."""
  flat = keys.reshape(-1)
  bits = jax.vmap(lambda k: jax.random.bits(k, (2,), jnp.uint32))(flat)
  u = (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)
  return u[:, 0].reshape(keys.shape), u[:, 1].reshape(keys.shape)


def pick_in_block(chosen: jax.Array, u2: jax.Array) -> jax.Array:
  """Position in each row of block weights ``chosen`` ``[N, BLOCK]`` drawn by inverse CDF with
  the uniform ``u2`` ``[N]``; never a zero-weight position when the block has mass."""
  bs = chosen.shape[-1]
  cum = jnp.cumsum(chosen, axis=-1)
  j = jnp.sum(cum <= u2[:, None] * cum[:, -1:], axis=-1)
  # u2 * total can round up to the total: take the block's last positive entry then.
  last_positive = bs - 1 - jnp.argmax(chosen[:, ::-1] > 0, axis=-1)
  return jnp.where(j >= bs, last_positive, j)


def weighed_blocks(blocks: jax.Array, weigh: Any, width: int, frac: int
                   ) -> tuple[jax.Array, jax.Array, Any]:
  """Fixed-point masses ``(hi, lo)`` ``[N, nb]`` of logits cut into blocks ``[N, nb, bs]`` whose
  weights are ``weigh(logits)`` (elementwise), and ``weights_of`` for :func:`choose`.

  Each block's float32 sum fuses with its weights, and the chosen block's weights are computed
  again from its logits by the same expression, so no ``[N, V]`` array of weights is kept.
  """
  hi, lo = nm.to_limbs(block_sums(blocks, weigh), width, frac)
  return hi, lo, weights_in(blocks, weigh)


def weights_in(blocks: jax.Array, weigh: Any) -> Any:
  """``weights_of`` for :func:`choose`: block ``b`` ``[N]`` of each row, weighed."""
  return lambda b: weigh(jnp.take_along_axis(blocks, b[:, None, None], axis=1,
                                             mode="promise_in_bounds"))[:, 0, :]


def block_sums(blocks: jax.Array, weigh: Any) -> jax.Array:
  """The float32 sums ``[N, nb]`` of ``weigh(blocks)`` over each block ``[N, nb, bs]``."""
  return jnp.sum(weigh(blocks), axis=-1)


def choose(weights_of: Any, hi: jax.Array, lo: jax.Array, u: jax.Array, u2: jax.Array,
           width: int, before: tuple[jax.Array, jax.Array] | None = None,
           total: tuple[jax.Array, jax.Array] | None = None
           ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The two-level pick among ``nb`` blocks with fixed-point masses ``hi``, ``lo`` ``[N, nb]``:
  ``(b, j, inside)``, the block whose prefix fractions bracket ``u``, the position in it that
  ``u2`` picks, and whether ``u`` falls in these blocks at all.

  ``weights_of(b)`` gives the weights ``[N, bs]`` of block ``b`` ``[N]`` of each row (computed
  again from the logits, so that no ``[N, V]`` array of weights needs to be kept).

  The blocks may be one device's part of a row: ``before`` is the fixed-point mass ahead of them
  and ``total`` the row's (both ``(hi, lo)`` ``[N, 1]``); None for a whole row on one device.
  """
  own = nm.limb_totals(hi, lo)
  before = (jnp.zeros_like(own[0]), jnp.zeros_like(own[1])) if before is None else before
  tot = nm.normalize(*(own if total is None else total), width)
  frac = lambda h, l: nm.fractions(*nm.normalize(before[0] + h, before[1] + l, width), *tot,
                                   width)
  starts = frac(nm.exclusive_prefix(hi), nm.exclusive_prefix(lo))
  end = frac(*own)[:, 0]
  b = jnp.clip(jnp.sum(starts <= u[:, None], axis=-1) - 1, 0, hi.shape[-1] - 1)
  j = pick_in_block(weights_of(b), u2)
  return b, j, (starts[:, 0] <= u) & (u < end)


def present_blocks(block_max: jax.Array, s: int) -> jax.Array:
  """The ids of the first ``s`` blocks of each row whose maximum is above -inf, ascending,
  then ``nb`` (past the last block) in the slots left over; ``block_max`` ``[N, nb]``."""
  n, nb = block_max.shape
  present = block_max > NEG_INF
  slot = jnp.where(present, jnp.cumsum(present, axis=-1, dtype=jnp.int32) - 1, s)
  rows = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None], (n, nb))
  ids = jnp.broadcast_to(jnp.arange(nb, dtype=jnp.int32), (n, nb))
  return jnp.full((n, s + 1), nb, jnp.int32).at[rows, slot].set(ids, mode="drop")[:, :s]


def at(a: jax.Array, i: jax.Array) -> jax.Array:
  """``a[r, i[r]]`` for each row ``r``."""
  return jnp.take_along_axis(a, i[:, None], axis=-1, mode="promise_in_bounds")[:, 0]


def inverse_cdf(x: jax.Array, u: jax.Array, u2: jax.Array, block: int = BLOCK,
                inf_rule: bool = False, report: bool = False) -> Any:
  """Token per row of logits ``x`` ``[N, V]``: the block whose fixed-point prefix fractions
  bracket ``u``, then the position inside it that ``u2`` picks.

  ``x`` holds effective logits, or with ``inf_rule`` NaN-free float32 logits to which the
  +inf rule is applied as they are read, so the row is never copied: one pass takes the block
  maxima (and from them the row maximum), one the block masses. Rows with no finite entry give
  -1. Never returns a zero-probability index.

  With ``report``, ``x`` may be any float32 logits and the result is ``(tokens, suspect)``:
  ``suspect`` ``[N]`` marks the rows whose maximum is NaN or ``+inf`` or whose block masses
  hold a NaN; their tokens mean nothing and must be drawn again from cleaned logits. Every
  other row's token is that of its cleaned row: a NaN either makes its block's maximum, and so
  the row's, NaN (a max reduction that propagates NaN, as XLA's does here) or, where the max
  skips NaN, is read by its block's mass, unless its block holds nothing but NaN and ``-inf``,
  which cleaned is a block of mass zero anyway.
  """
  n, v = x.shape
  nb = -(-v // block)
  width, frac = nm.limb_layout(nb)
  cut = jnp.pad(x, [(0, 0), (0, nb * block - v)],
                constant_values=nm.NEG_INF).reshape(n, nb, block)
  # (The barrier keeps XLA from turning the row max below into a second pass over the row.)
  block_max = lax.optimization_barrier(jnp.max(cut, axis=-1))

  def pick(block_max, effective, sparse):
    m = jnp.max(block_max, axis=-1, keepdims=True)  # the row max, exactly
    shift = jnp.where(jnp.isfinite(m), m, 0.0)[..., None]
    weigh = lambda a: jnp.exp(effective(a) - shift)
    if sparse:
      ids = present_blocks(block_max, SPARSE_BLOCKS)
      sums = block_sums(jnp.take_along_axis(cut, jnp.minimum(ids, nb - 1)[..., None], axis=1,
                                            mode="promise_in_bounds"), weigh)
      sums = jnp.where(ids < nb, sums, 0.0)
      weights_of = lambda s: weights_in(cut, weigh)(at(ids, s))
      s, j, _ = choose(weights_of, *nm.to_limbs(sums, width, frac), u, u2, width)
      b = at(ids, s)
    else:
      sums = block_sums(cut, weigh)
      b, j, _ = choose(weights_in(cut, weigh), *nm.to_limbs(sums, width, frac), u, u2, width)
    idx = jnp.where(jnp.isfinite(m[:, 0]), b * block + j, -1).astype(jnp.int32)
    suspect = jnp.isnan(m[:, 0]) | (m[:, 0] == jnp.inf) | jnp.any(jnp.isnan(sums), axis=-1)
    return (idx, suspect) if report else idx

  def dense_or_sparse(block_max, effective):
    # A row left with few blocks holding a finite logit (after a top-k, say) has its masses
    # summed on those blocks only: the same blocks, each summed the same way, and blocks of
    # mass exactly zero dropped from the prefix sums, so the very same token is drawn.
    if SPARSE_BLOCKS == 0 or nb <= 2 * SPARSE_BLOCKS:
      return pick(block_max, effective, False)
    few = jnp.sum(block_max > NEG_INF, axis=-1) <= SPARSE_BLOCKS
    return lax.cond(jnp.all(few), lambda: pick(block_max, effective, True),
                    lambda: pick(block_max, effective, False))

  if not inf_rule:
    return dense_or_sparse(block_max, lambda a: a)
  # A row with +inf has 0 at those entries and -inf elsewhere, and its block maxima follow.
  # The rule is a select on every entry (which XLA's fast CPU reductions do not fuse), so it is
  # applied only when some row needs it.
  any_inf = jnp.max(block_max, axis=-1, keepdims=True) == jnp.inf
  return lax.cond(jnp.any(any_inf),
                  lambda: pick(nm.with_inf_rule(block_max, any_inf),
                               lambda a: nm.with_inf_rule(a, any_inf[..., None]), False),
                  lambda: dense_or_sparse(block_max, lambda a: a))


@functools.partial(jax.jit, static_argnames="nan_free")
def _sample(keys, logits, nan_free=False):
  """The draw of :func:`sample` (``nan_free``: the caller guarantees no NaN, as the
  truncations' outputs are, and the test for it is skipped)."""
  flat = logits.astype(jnp.float32).reshape((-1, logits.shape[-1]))
  u, u2 = uniforms(keys)
  u, u2 = u.reshape(-1), u2.reshape(-1)
  if nan_free:
    idx = inverse_cdf(flat, u, u2, inf_rule=True)
  else:
    # The draw reads the logits as they are and reports the rows where a NaN or +inf may have
    # mattered: only then are the logits cleaned, in copies of a few rows at a time (a
    # whole-batch copy would be a temporary of every call), and drawn again.
    def cleaned():
      return nm.by_row_blocks(
          lambda r, _: inverse_cdf(nm.effective(nm.sanitize(r[0])), r[1], r[2]),
          nm.block_rows(*flat.shape), (flat, u, u2))
    idx, suspect = inverse_cdf(flat, u, u2, report=True)
    idx = lax.cond(jnp.any(suspect), cleaned, lambda: idx)
  return idx.reshape(logits.shape[:-1])


def sample(key: Any, logits: Any) -> jax.Array:
  r"""Draws one token per row exactly from ``softmax(logits)``.

  .. math::
    b = \min\{\, b : \textstyle\sum_{c \le b} P_c > u \,\}, \quad
    i = \min\{\, i \in b : \textstyle\sum_{j \in b,\, j \le i} p_j > u' P_b \,\}, \quad
    u, u' \sim U[0, 1)

  where ``P_b`` is the mass of the ``b``-th block of 256 tokens: two uniform numbers per row, one
  for the block (from exact fixed-point prefix sums of the block masses, so a vocabulary split
  over devices draws the same token) and one for the token inside it; no per-token random
  numbers, no sort (see the module docstring for the precision). NaN logits count as ``-inf``;
  a row with ``+inf`` entries draws uniformly among them; a row with no finite logit gives
  ``-1``. A row's draw depends only on its logits and its key,
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
