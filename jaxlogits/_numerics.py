"""Numerical building blocks shared by the transforms and the draw (private).

Everything here works on float32 ``[..., V]`` arrays, one row per leading index, and never sorts a
row.  The pieces:

* ``sanitize``: NaN -> -inf, the input upcast to float32.
* ``effective``: the +inf rule of semantics.md.  A row with any ``+inf`` entry has the uniform
  distribution over those entries, so it is replaced by 0 at the ``+inf`` entries and ``-inf``
  elsewhere; rows without ``+inf`` are unchanged.  Mass-based rules read this row.
* ``ordered_key``: a monotone map from float32 to uint32 (``a < b`` iff ``key(a) < key(b)``, with
  ``-0.0`` and ``+0.0`` equal), so thresholds can be searched over bit patterns.
* ``bisect_threshold``: the one exact threshold search.  Given keys, non-negative weights and a
  target per row it returns ``y`` such that ``keep = key > y`` is exactly the set of tokens whose
  strictly-larger-key weight is below the target.  32 masked reductions, one per bit.
* ``finish``: NaN -> -inf and the cast back to the caller's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

__all__: list[str] = []

NEG_INF = float("-inf")


def sanitize(logits: jax.Array) -> jax.Array:
  """Upcasts to float32 and replaces NaN by -inf."""
  x = logits.astype(jnp.float32)
  return jnp.where(jnp.isnan(x), NEG_INF, x)


def effective(x: jax.Array) -> jax.Array:
  """Applies the +inf rule to sanitized logits ``x`` (see the module docstring)."""
  # A float max is the cheapest full pass on CPU (``jnp.any`` of a comparison costs more).
  return with_inf_rule(x, jnp.max(x, axis=-1, keepdims=True) == jnp.inf)


def effective_and_max(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(effective(x), its exact row max, any_inf)`` from one max pass over sanitized ``x``.

  The row max of the effective logits is the max of ``x``, or 0 for a row with ``+inf``
  (``any_inf``, ``[..., 1]``).
  """
  mx = row_max(x)
  any_inf = mx == jnp.inf
  return with_inf_rule(x, any_inf), jnp.where(any_inf, 0.0, mx), any_inf


def with_inf_rule(x: jax.Array, any_inf: jax.Array) -> jax.Array:
  """``effective(x)`` given each row's ``any_inf`` flag (elementwise, so it fuses)."""
  return jnp.where(any_inf, jnp.where(x == jnp.inf, 0.0, NEG_INF), x)


def dispatch(x: jax.Array, fn: Callable, params: tuple = (), *, inf_rule: bool = True,
             blocked: bool = False, finite: bool = False, with_max: bool = True
             ) -> tuple[Any, jax.Array]:
  """Runs ``fn(e, m, *params)`` on the effective logits ``e`` of float32 ``x`` and their exact
  row max.

  ``fn`` must return small (per-row, ``[..., 1]``) results; ``params`` are per-row values
  (``[..., 1]``, broadcastable to the rows of ``x``). In the common case (no row holds NaN or
  ``+inf`` and no row maximum lies in the denormal band) ``e`` is ``x`` itself and ``m`` a float
  max: XLA then reads ``x`` directly in every pass of ``fn``. Otherwise (a rare branch) ``e`` is
  computed and materialised first. The test costs two plain reductions (a max, and a sum, which
  is NaN exactly when the row holds NaN or both infinities); float max reductions on CPU skip
  NaN, which is why the sum is needed. With ``inf_rule=False``, ``e`` is ``sanitize(x)`` (for
  rules that treat ``+inf`` as a value, like top-k). With ``blocked=True`` (for an ``fn`` that
  passes over its rows several times, or whose rare branch would keep whole-batch temporaries)
  the rows go through in cache-sized blocks on CPU (:func:`by_row_blocks`): each block takes
  its own branch, with the same per-row results. With ``finite=True``, ``fn`` also gets
  ``all_finite=`` ``[..., 1]``: whether every entry of the row of ``e`` is finite (in the common
  case read off the sum above, so it costs no pass; a sum that overflows says False). With
  ``with_max=False`` (only with ``inf_rule=False``, for a rule that never reads the maximum)
  ``fn`` gets ``m=None`` and the max pass is skipped: the sum alone tells NaN apart.

  Returns:
    ``(fn(e, m, *params), any_inf)`` with ``any_inf`` ``[..., 1]``: the rows the ``+inf`` rule
    applied to (pass it to ``with_inf_rule`` to write the output).
  """
  lead, v = x.shape[:-1], x.shape[-1]
  n = int(np.prod(lead, dtype=np.int64))
  rows = block_rows(n, v) if blocked and x.ndim > 1 else n
  if rows < n:
    flat = [jnp.broadcast_to(q, lead + q.shape[-1:]).reshape(n, q.shape[-1]) for q in params]
    out = by_row_blocks(lambda r, _: dispatch(r[0], fn, tuple(r[1]), inf_rule=inf_rule,
                                              finite=finite, with_max=with_max), rows,
                        (x.reshape(n, v), flat))
    return jax.tree.map(lambda a: a.reshape(lead + a.shape[1:]), out)
  if inf_rule and not with_max:
    raise ValueError("dispatch: the +inf rule needs the row max")
  total = jnp.sum(x, axis=-1, keepdims=True)
  if with_max:
    mx = jnp.max(x, axis=-1, keepdims=True)
    plain = ~jnp.any(jnp.isnan(total) | (mx == jnp.inf) | in_denormal_band(mx))
  else:
    mx = None
    plain = ~jnp.any(jnp.isnan(total))
  no_inf = jnp.zeros_like(total, bool)

  extra = lambda total: {"all_finite": jnp.isfinite(total)} if finite else {}

  def fast():
    return fn(x, mx, *params, **extra(total)), no_inf

  def general():
    c = sanitize(x)
    if inf_rule:
      e, m, any_inf = effective_and_max(c)
    else:
      e, m, any_inf = c, row_max(c) if with_max else None, no_inf
    return fn(e, m, *params, **extra(jnp.sum(e, axis=-1, keepdims=True))), any_inf

  return lax.cond(plain, fast, general)


def row_max(e: jax.Array) -> jax.Array:
  """Exact row maximum with a trailing axis; a row of all -inf gives -inf.

  A float ``max`` reduction is the fastest full pass XLA's CPU backend has (integer and
  compare-and-select reductions cost several times more), but it flushes denormals, so its
  result is only trusted outside the denormal band; a row whose float maximum lands in the band
  is redone exactly on bit patterns (a rare branch).
  """
  m = jnp.max(e, axis=-1, keepdims=True)
  band = in_denormal_band(m)
  return lax.cond(jnp.any(band), lambda: jnp.where(band, _key_max(e), m), lambda: m)


def _key_max(x: jax.Array) -> jax.Array:
  """Exact row maximum through integer keys (slow on CPU; for the denormal band only)."""
  return from_key(jnp.max(ordered_key(x), axis=-1, keepdims=True))


def log_normalizer(e: jax.Array, m: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Returns ``(shift, log_z)`` of effective logits ``e``, trailing axis kept.

  ``shift`` is the row maximum (0 for a row with no finite entry) and
  ``log_z = log sum exp(e - shift)`` (``-inf`` for such a row), so that
  ``log p = (e - shift) - log_z``: subtracting the shift first keeps the result accurate for
  large logits (``1e4 - lse`` would lose the digits that ``(1e4 - max) - log_z`` keeps).
  """
  m = row_max(e) if m is None else m
  shift = jnp.where(jnp.isfinite(m), m, 0.0)
  log_z = jnp.log(jnp.sum(jnp.exp(e - shift), axis=-1, keepdims=True))
  return shift, log_z


def probs_and_logprobs(e: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Probabilities and log-probabilities of effective logits; all-masked rows give 0 and -inf."""
  shift, log_z = log_normalizer(e)
  logp = jnp.where(jnp.isfinite(log_z), (e - shift) - log_z, NEG_INF)
  # A finite logit far below the maximum (e.g. -3e38 next to 3e38) keeps a finite log-prob:
  # the difference saturates at the most negative float32 instead of overflowing to -inf.
  logp = jnp.where(jnp.isfinite(e), jnp.maximum(logp, -jnp.finfo(jnp.float32).max), logp)
  return jnp.exp(logp), logp


def entropy_terms(p: jax.Array, logp: jax.Array) -> jax.Array:
  """``-sum p log p`` per row with trailing axis, ``0 log 0 = 0``."""
  return -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1, keepdims=True)


def ordered_key(x: jax.Array) -> jax.Array:
  """Maps float32 to uint32 preserving order; -0.0 and +0.0 map to the same key.

  Works on the bit pattern, so it is exact even where the CPU flushes denormals to zero in float
  comparisons. NaN must already be removed. ``-inf`` maps to a positive key, so key 0 is unused.
  """
  bits = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
  bits = jnp.where(bits == jnp.uint32(0x80000000), jnp.uint32(0), bits)  # -0.0 -> +0.0
  negative = (bits >> 31) == 1
  return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def signed_key(x: jax.Array) -> jax.Array:
  """``ordered_key`` as int32 (same order), for ``lax.top_k``, ``argmax`` and comparisons."""
  return lax.bitcast_convert_type(ordered_key(x) ^ jnp.uint32(0x80000000), jnp.int32)


def from_key(k: jax.Array) -> jax.Array:
  """Inverse of ``ordered_key`` on the keys it produces (-0.0 comes back as +0.0)."""
  k = k.astype(jnp.uint32)
  bits = jnp.where((k >> 31) == 1, k & jnp.uint32(0x7FFFFFFF), ~k)
  return lax.bitcast_convert_type(bits, jnp.float32)


def in_denormal_band(x: jax.Array) -> jax.Array:
  """True where ``|x|`` is below the smallest normal float32 (zero included)."""
  return jnp.abs(x) < jnp.finfo(jnp.float32).tiny


def first_argmax(x: jax.Array) -> jax.Array:
  """Index of the largest value per row, lowest index on ties, exact for denormals.

  ``jnp.argmax`` is a two-operand reduction that XLA's CPU backend runs about 40 times slower
  than a float ``max``; this is the exact maximum, then a float ``min`` over the ids of the
  entries equal to it (ids are exact in float32 below 2**24). A row of all -inf gives 0.
  """
  v = x.shape[-1]
  if v >= 2**24:
    return jnp.argmax(signed_key(x), axis=-1)
  top = is_max(x, row_max(x))
  ids = lax.broadcasted_iota(jnp.float32, x.shape, x.ndim - 1)
  return jnp.min(jnp.where(top, ids, jnp.float32(v)), axis=-1).astype(jnp.int32) % v


def is_max(x: jax.Array, m: jax.Array) -> jax.Array:
  """``x == m`` on bit patterns (exact for denormals; -0.0 equals +0.0)."""
  return ordered_key(x) == ordered_key(m)


def bisect_threshold(keys: jax.Array, weights: jax.Array, target: jax.Array,
                     row_sum: Callable | None = None) -> jax.Array:
  """Exact threshold search over uint32 keys (no sort).

  Finds, per row, the largest ``y`` with ``W(y) >= target`` where ``W(y)`` is the total weight of
  the tokens with ``key > y``; ``W`` is non-increasing, so ``keep = keys > y`` holds exactly for
  the tokens whose strictly-larger weight is ``< target``:  for a kept token ``i``,
  ``key_i > y`` so ``W(key_i) <= W(y + 1) < target``; for a dropped one ``key_i <= y`` so
  ``W(key_i) >= W(y) >= target``.  Ties (equal keys) always fall on the same side.

  If no ``y`` qualifies (``W(0) < target``) the result is 0 and every token is kept; if every
  ``y`` qualifies (``target <= 0``) the result is the largest key and none is kept (callers then
  apply the keep-at-least-one rule).

  Args:
    keys: uint32 ``[..., V]`` from ``ordered_key``.
    weights: non-negative ``[..., V]`` weights (probabilities, or ones to count tokens).
    target: ``[..., 1]`` per-row target, same dtype as ``weights``.
    row_sum: how a row of masked weights is summed (trailing axis kept); a plain sum if None.

  Returns:
    uint32 ``[..., 1]`` threshold ``y``.
  """
  zero = jnp.zeros((), weights.dtype)
  # Materialise the inputs once: without the barrier XLA may fuse their producers (an exp per
  # token) into the loop body and recompute them in each of the 32 passes.
  keys, weights = lax.optimization_barrier((keys, weights))

  def body(i, y):
    candidate = y | (jnp.uint32(1) << (jnp.uint32(31) - i.astype(jnp.uint32)))
    masked = jnp.where(keys > candidate, weights, zero)
    above = jnp.sum(masked, axis=-1, keepdims=True) if row_sum is None else row_sum(masked)
    return jnp.where(above >= target, candidate, y)

  # The first pass runs outside the loop so that the carry has the sharding type of the loop's
  # result (inside shard_map it varies over the mesh axes that split the rows).
  y = body(jnp.int32(0), jnp.zeros(keys.shape[:-1] + (1,), jnp.uint32))
  return lax.fori_loop(1, 32, body, y)


def same_varying(tree: Any) -> Any:
  """Casts every leaf of a loop carry to vary over each mesh axis that some leaf varies over.

  Inside ``shard_map`` a loop must keep its carry's type, and values computed from gathered data
  are typed as varying over the mesh axis even when every device holds the same numbers. Outside
  ``shard_map`` this is the identity.
  """
  def varying(leaf):
    t = getattr(jax.typeof(leaf), "manual_axis_type", None)
    return frozenset() if t is None else frozenset(t.varying)

  axes = frozenset().union(*(varying(leaf) for leaf in jax.tree.leaves(tree)))
  if not axes:
    return tree

  def cast(leaf):
    missing = tuple(sorted(axes - varying(leaf)))
    return lax.pcast(leaf, missing, to="varying") if missing else leaf

  return jax.tree.map(cast, tree)


# --------------------------------------------------------------------------------------------
# fixed-point block masses: sums that do not depend on the order of addition


BLOCK = 256  # tokens per block of the draw and of the exact normaliser


def limb_layout(num_blocks: int) -> tuple[int, int]:
  """``(width, frac)`` of the fixed-point block masses of a row of ``num_blocks`` blocks.

  A block mass ``s`` (a float32 sum of at most ``BLOCK`` weights, each at most 1) becomes the
  integer ``q = floor(s * 2**frac)``, stored as ``hi * 2**width + lo`` with ``lo < 2**width``.
  ``width`` leaves room to add up ``num_blocks`` low limbs in ``uint32`` without overflow, and
  ``frac`` does the same for the high limbs, so every prefix sum is exact.
  """
  cbits = max(1, int(num_blocks).bit_length())  # num_blocks < 2**cbits
  width, frac = 32 - cbits, 55 - 2 * cbits
  if frac < 16:
    raise ValueError(f"a row of {num_blocks} blocks of {BLOCK} is too long for the draw")
  return width, frac


def to_limbs(s: jax.Array, width: int, frac: int) -> tuple[jax.Array, jax.Array]:
  """``floor(s * 2**frac)`` of float32 ``s >= 0`` as ``uint32`` limbs ``(hi, lo)``; exact (scaling
  by a power of two, ``floor`` and taking a fraction are exact in floating point)."""
  a = s * jnp.float32(2.0 ** (frac - width))
  hi = jnp.floor(a)
  lo = jnp.floor((a - hi) * jnp.float32(2.0**width))
  return hi.astype(jnp.uint32), lo.astype(jnp.uint32)


def normalize(hi: jax.Array, lo: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
  """The same integer with ``lo < 2**width`` (carries moved into ``hi``)."""
  return hi + (lo >> width), lo & jnp.uint32((1 << width) - 1)


def limb_totals(hi: jax.Array, lo: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-row sums of limbs ``[..., n]`` (trailing axis kept; not normalised)."""
  return jnp.sum(hi, axis=-1, keepdims=True), jnp.sum(lo, axis=-1, keepdims=True)


def exclusive_prefix(a: jax.Array) -> jax.Array:
  """Exclusive prefix sums along the last axis (starting at 0)."""
  inclusive = jnp.cumsum(a, axis=-1)
  return jnp.concatenate([jnp.zeros_like(a[..., :1]), inclusive[..., :-1]], axis=-1)


def fractions(hi: jax.Array, lo: jax.Array, total_hi: jax.Array, total_lo: jax.Array,
              width: int) -> jax.Array:
  """``x / total`` in float32 for normalised integers ``x <= total`` (``total > 0``).

  Both are shifted right until ``total`` fits in 24 bits, so they convert to float32 exactly and
  the quotient is rounded once: the result is monotone in ``x``, equal integers give equal
  fractions, and ``total`` gives exactly 1.
  """
  bits = jnp.where(total_hi > 0, width + 32 - lax.clz(total_hi).astype(jnp.int32),
                   32 - lax.clz(total_lo).astype(jnp.int32))
  shift = jnp.maximum(bits - 24, 0)

  def shifted(h, l):
    big = shift >= width  # the low limb is shifted out entirely
    from_hi = jnp.where(big, h >> jnp.clip(shift - width, 0, 31).astype(jnp.uint32),
                        h << jnp.clip(width - shift, 0, 31).astype(jnp.uint32))
    from_lo = jnp.where(big, jnp.uint32(0), l >> jnp.clip(shift, 0, 31).astype(jnp.uint32))
    return (from_hi + from_lo).astype(jnp.float32)

  return shifted(hi, lo) / shifted(total_hi, total_lo)


def blocks(w: jax.Array, block: int = BLOCK) -> jax.Array:
  """``w`` ``[..., V]`` cut into ``[..., ceil(V / block), block]`` (zero-padded to whole blocks)."""
  v = w.shape[-1]
  nb = -(-v // block)
  padded = jnp.pad(w, [(0, 0)] * (w.ndim - 1) + [(0, nb * block - v)])
  return padded.reshape(w.shape[:-1] + (nb, block))


def exact_sum(w: jax.Array, vocab_size: int, combine: Callable | None = None,
              block: int = BLOCK) -> jax.Array:
  """Sum of each row of weights ``w`` ``[..., V]`` (each at most 1) in fixed point, axis kept.

  The weights are summed in float32 per block of ``block`` tokens and the block sums are added
  as exact fixed-point integers, so the result does not depend on the order of addition: a row
  split over devices at block boundaries gets the very same value when ``combine`` adds the
  per-device integer totals (``lax.psum``). ``vocab_size``, the true length of the row whose
  ``BLOCK``-wide blocks ``w`` stands for, fixes the layout: ``w`` is that row itself, or a
  strided subsample of it with ``block = BLOCK / stride`` (one block per row block). The error
  is below ``V * 2**-37`` of the largest weight at ``V = 128K`` (far below float32 rounding of
  the total).
  """
  width, frac = limb_layout(-(-vocab_size // BLOCK))
  hi, lo = limb_totals(*to_limbs(jnp.sum(blocks(w, block), axis=-1), width, frac))
  if combine is not None:
    hi, lo = combine(hi), combine(lo)
  h, l = normalize(hi, lo, width)
  return (h.astype(jnp.float32) * jnp.float32(2.0 ** (width - frac))
          + l.astype(jnp.float32) * jnp.float32(2.0 ** -frac))


TOP_BLOCK = 32


def top_values(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """The ``k`` largest values of each row and their ids, like ``lax.top_k`` but faster on long rows.

  ``x`` is float or integer (bit-pattern keys).

  Exact, with ``lax.top_k``'s order (largest first, equal values by lower id): the row is cut
  into blocks of ``TOP_BLOCK``; the ``k`` blocks with the largest maxima (ties by lower block)
  hold the ``k`` largest values, because an element outside them is at most the k-th largest
  block maximum, which is at most the k-th largest value, and equal values in an unchosen block
  have larger ids than those in every chosen block with that maximum. So one pass computes the
  block maxima and ``lax.top_k`` runs on ``k * TOP_BLOCK`` candidates instead of ``V``.

  When only the values of ``lax.top_k`` are consumed, XLA's CPU pipeline may rewrite it into a
  full sort of the row followed by a slice (about 100 times slower at V = 128K); the
  optimisation barrier pins the selection. Tests check the compiled graphs hold no full sort.
  """
  v = x.shape[-1]
  if v < 4 * k * TOP_BLOCK:
    vals, ids = lax.top_k(x, k)
    return pin_top_k(vals, ids)
  nb = -(-v // TOP_BLOCK)
  pad = [(0, 0)] * (x.ndim - 1) + [(0, nb * TOP_BLOCK - v)]
  lowest = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
  cut = jnp.pad(x, pad, constant_values=lowest).reshape(x.shape[:-1] + (nb, TOP_BLOCK))
  _, chosen = lax.top_k(jnp.max(cut, axis=-1), k)
  chosen = jnp.sort(chosen, axis=-1)  # k block ids in id order, so ties keep lower ids first
  cand = jnp.take_along_axis(cut, chosen[..., None], axis=-2).reshape(x.shape[:-1] + (-1,))
  vals, pos = lax.top_k(cand, k)
  ids = jnp.take_along_axis(chosen, pos // TOP_BLOCK, axis=-1) * TOP_BLOCK + pos % TOP_BLOCK
  return pin_top_k(vals, ids)


def pin_top_k(vals: jax.Array, ids: jax.Array) -> tuple[jax.Array, jax.Array]:
  """An optimisation barrier on ``lax.top_k``'s results (see ``top_values``).

  The extra scalar keeps the barrier's operand from being folded into the top-k's own result
  tuple: XLA's CPU top-k decomposer aborts on that form inside ``shard_map`` and ``pmap``.
  """
  vals, ids, _ = lax.optimization_barrier((vals, ids.astype(jnp.int32), jnp.zeros((), jnp.int32)))
  return vals, ids


def keep_top(e: jax.Array, keep: jax.Array) -> jax.Array:
  """The keep-at-least-one rule: also keeps every token tied at the row maximum of ``e``."""
  return keep | is_max(e, row_max(e))


def apply_mask(x: jax.Array, keep: jax.Array) -> jax.Array:
  """Masks the dropped tokens of sanitized logits ``x`` to -inf."""
  return jnp.where(keep, x, NEG_INF)


def clamp_finite(y: jax.Array, finite: jax.Array, dtype) -> jax.Array:
  """Clamps entries of ``y`` computed from finite inputs to the finite range of ``dtype``.

  Keeps a finite row finite when arithmetic (``l / t``, ``l - f * count``, ...) overflows: the
  value saturates at the largest finite number of the output dtype instead of becoming inf.
  """
  big = jnp.float32(jnp.finfo(dtype).max)
  return jnp.where(finite, jnp.clip(y, -big, big), y)


def finish(y: jax.Array, dtype) -> jax.Array:
  """Replaces NaN by -inf and casts back to the caller's dtype."""
  y = jnp.where(jnp.isnan(y), NEG_INF, y)
  return y.astype(dtype)


def any_active(active: jax.Array) -> jax.Array:
  """Scalar bool: is the transform active for any row (lets a batch skip identity work)."""
  return jnp.any(active)


def scatter_rows(tokens: jax.Array, values: jax.Array, vocab_size: int, op: str) -> jax.Array:
  """Scatters ``values[b, t]`` at ``tokens[b, t]`` into a zero ``[B, V]`` array.

  ``op`` is ``"add"`` or ``"max"``; ids outside ``[0, V)`` are dropped.
  """
  b = tokens.shape[0]
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], tokens.shape)
  ids = jnp.where((tokens >= 0) & (tokens < vocab_size), tokens, vocab_size)
  out = jnp.zeros((b, vocab_size), values.dtype)
  return getattr(out.at[rows, ids], op)(values, mode="drop")


# --------------------------------------------------------------------------------------------
# row blocks: a batch worked through in cache-sized groups of rows

# On CPU a program over a whole [B, V] batch keeps several [B, V] temporaries (a 32 x 128K
# float32 batch is 16 MiB). XLA's CPU runtime takes each call's temporaries from malloc in one
# piece, and above 32 MiB glibc serves that piece from a fresh mapping, so every call page-faults
# on each 4 KiB it touches; and a rule that passes over its row several times reads the batch
# from memory each time. Worked through in blocks of at most this many bytes of float32 logits,
# the temporaries stay small and each block's passes hit the cache (measured: sample_step on W2
# of the bench, see the README).
ROW_BLOCK_BYTES = 2 << 20


def block_rows(batch: int, vocab_size: int) -> int:
  """Rows per block for a ``[batch, vocab_size]`` program: ``batch`` (one block) off CPU, where
  a whole batch runs in parallel, or when the batch already fits in one block."""
  if jax.default_backend() != "cpu":
    return batch
  return max(1, min(batch, ROW_BLOCK_BYTES // (4 * max(vocab_size, 1))))


def by_row_blocks(fn: Callable, rows: int, per_row: Any, shared: Any = None) -> Any:
  """``fn(per_row, shared)`` computed ``rows`` rows at a time; the same result as one call.

  ``fn`` must treat rows independently: every leaf of ``per_row`` and of its result has the batch
  as its leading axis. The blocks start at ``0, rows, 2 rows, ...``; the last one starts at
  ``B - rows`` so that all blocks have one shape (one compiled body): rows it shares with the
  previous block are computed twice, to the same values.

  Args:
    fn: ``(per_row, shared) -> pytree`` of ``[B, ...]`` arrays.
    rows: rows per block (static); ``rows >= B`` calls ``fn`` once.
    per_row: pytree of ``[B, ...]`` arrays (None leaves allowed).
    shared: pytree passed to every call whole.

  Returns:
    ``fn(per_row, shared)``.
  """
  leaves = jax.tree.leaves(per_row)
  b = leaves[0].shape[0]
  if rows >= b:
    return fn(per_row, shared)
  n = -(-b // rows)

  def block(i):
    start = jnp.minimum(i * rows, b - rows)
    return start, fn(jax.tree.map(lambda a: lax.dynamic_slice_in_dim(a, start, rows), per_row),
                     shared)

  def body(i, out):
    start, y = block(i)
    return jax.tree.map(lambda o, v: lax.dynamic_update_slice_in_dim(o, v, start, 0), out, y)

  if not _varies((per_row, shared)):
    # One traced body for all blocks (compiled once): the loop fills zeros of the result's type.
    like = jax.tree.map(lambda a: jax.ShapeDtypeStruct((rows,) + a.shape[1:], a.dtype), per_row)
    out = jax.tree.map(lambda v: jnp.zeros((b,) + v.shape[1:], v.dtype),
                       jax.eval_shape(fn, like, shared))
    return lax.fori_loop(0, n, body, out)
  # Inside shard_map the carry must have the mesh-varying types the body returns: the first block
  # runs outside the loop and gives them.
  start, first = block(jnp.int32(0))
  out = jax.tree.map(lambda v: lax.dynamic_update_slice_in_dim(
      jnp.zeros((b,) + v.shape[1:], v.dtype), v, start, 0), first)
  return lax.fori_loop(1, n, body, out)


def _varies(tree: Any) -> bool:
  """Whether some leaf varies over a mesh axis (inside ``shard_map``)."""
  for leaf in jax.tree.leaves(tree):
    t = getattr(jax.typeof(leaf), "manual_axis_type", None)
    if t is not None and t.varying:
      return True
  return False
