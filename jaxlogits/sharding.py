"""Vocabulary-sharded sampling for tensor-parallel output layers.

A tensor-parallel output layer leaves each device with a slice of the vocabulary: logits
``[B, V / D]`` per device. The functions here run *inside* ``jax.shard_map`` on that local slice,
with the name of the vocabulary mesh axis (as ``lax.psum`` takes one), and give the result of the
single-device function without gathering the vocabulary: only per-row scalars (a few per device)
and ``O(k)`` candidates cross devices.

The vocabulary is padded to :func:`padded_vocab_size` (a multiple of ``256 * D``) so every device
holds the same number of whole 256-token blocks; every function takes ``vocab_size``, the true
``V``, and treats ids ``>= V`` as ``-inf``: a padding id is never kept or sampled, whatever value
the padded logits hold. Shard ``d`` holds global ids ``[d * Vl, (d + 1) * Vl)``.

Collectives per step (``B`` rows, ``D`` devices on the vocabulary axis):

* penalties (:func:`vocab_sharded_penalties`): none, they are elementwise given counts sharded
  like the logits.
* temperature (:func:`vocab_sharded_temperature`): none for ``t > 0``; for ``t = 0`` (greedy) a
  ``pmax`` of the row's largest key and a ``pmin`` of the first id holding it.
* the ``+inf`` rule: a ``pmax`` of one flag per row.
* top_k (:func:`vocab_sharded_top_k`): an ``all_gather`` of each device's 64 largest keys per row;
  for ``k > 64`` the exact bit-pattern search instead, 32 ``psum`` of one count per row.
* top_p (:func:`vocab_sharded_top_p`): a ``pmax`` (row maximum), an integer ``psum`` of the
  fixed-point normaliser (two ``uint32`` per row) and an ``all_gather`` of each device's 64
  largest logits per row. When the nucleus reaches beyond those candidates: one integer ``psum``
  of a fixed-point mass per full pass of the search (at most 19), on CPU for rows longer than a
  row block also per pass of its estimate over every 16th token (at most 27), and an
  ``all_gather`` of each device's 64 largest logits inside the final bracket; in the rare
  fallback, 32 more ``psum`` of a mass.
* min_p (:func:`vocab_sharded_min_p`): a ``pmax`` of the row maximum.
* the draw (:func:`vocab_sharded_sample`): a ``pmax`` (row maximum), an ``all_gather`` of one
  fixed-point total (two ``uint32``) per device and row, and a ``pmax`` of the chosen id (``-1``
  on every device but the one that holds it).

Exactness. top_k, min_p, temperature and the penalties are bit-for-bit the single-device
results (their rules are order comparisons and elementwise arithmetic). So is the draw: the
per-block sums are identical because each device holds whole blocks, and the draw adds them up
as exact fixed-point integers, whose sums do not depend on the order or the split; so the same
keys give the same tokens. So is top_p: it runs the single-device search itself
(``truncation._nucleus_key`` with the collective :class:`jaxlogits.truncation.RowOps` of
:func:`_row_ops`), and every mass in it, on one device as here, is a fixed-point sum of block
masses (:func:`jaxlogits._numerics.exact_sum`) whose per-device integer totals add up exactly;
so every step sees the same numbers, even where ``p`` is a float32 step from the boundary.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxlogits import _checks
from jaxlogits import _numerics as nm
from jaxlogits import penalties as _pen
from jaxlogits import pipeline as _pipeline
from jaxlogits import sampling as _sampling
from jaxlogits import temperature as _temp
from jaxlogits import truncation as _trunc

__all__ = [
    "pad_vocab",
    "padded_vocab_size",
    "vocab_sharded_min_p",
    "vocab_sharded_penalties",
    "vocab_sharded_sample",
    "vocab_sharded_sample_step",
    "vocab_sharded_sampler",
    "vocab_sharded_temperature",
    "vocab_sharded_top_k",
    "vocab_sharded_top_p",
]

BLOCK = _sampling.BLOCK
_INT_MIN = jnp.iinfo(jnp.int32).min
_NEG_INF = float("-inf")


# --------------------------------------------------------------------------------------------
# layout


def padded_vocab_size(vocab_size: int, num_shards: int) -> int:
  r"""The vocabulary size padded so that each of ``num_shards`` devices holds whole blocks.

  .. math::
    V_{pad} = \lceil V / (256 D) \rceil \cdot 256 D

  Args:
    vocab_size: the true vocabulary size ``V``.
    num_shards: ``D``, the size of the vocabulary mesh axis.

  Returns:
    ``V_pad``, a multiple of ``256 * num_shards``.

  Examples:
    >>> padded_vocab_size(128256, 8), padded_vocab_size(1001, 8)
    (129024, 2048)
  """
  if not _checks.is_int(vocab_size) or vocab_size < 1:
    raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
  if not _checks.is_int(num_shards) or num_shards < 1:
    raise ValueError(f"num_shards must be a positive int, got {num_shards!r}")
  unit = BLOCK * num_shards
  return -(-vocab_size // unit) * unit


def pad_vocab(x: Any, num_shards: int, *, value: Any = _NEG_INF) -> jax.Array:
  r"""Pads the last (vocabulary) axis to :func:`padded_vocab_size` for ``num_shards`` devices.

  .. math::
    x' = [x_0, \dots, x_{V-1}, c, \dots, c] \in \mathbb{R}^{V_{pad}}

  Args:
    x: ``[..., V]`` logits (or counts, with ``value=0``, or an output matrix ``[d, V]``).
    num_shards: the size of the vocabulary mesh axis.
    value: the fill value ``c`` (``-inf`` by default). The vocab-sharded functions ignore it:
      they treat every id ``>= V`` as masked.

  Returns:
    ``[..., V_pad]``, same dtype.

  Examples:
    >>> import jax.numpy as jnp
    >>> pad_vocab(jnp.zeros((2, 1001)), 8).shape
    (2, 2048)
  """
  x = jnp.asarray(x)
  v = x.shape[-1]
  extra = padded_vocab_size(v, num_shards) - v
  return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, extra)], constant_values=value)


def _ids(x, axis_name):
  """Global token ids of the local shard ``[..., Vl]``."""
  vl = x.shape[-1]
  return lax.axis_index(axis_name) * vl + jnp.arange(vl, dtype=jnp.int32)


def _local(logits, axis_name, vocab_size):
  """Sanitized float32 local logits with the padding ids at -inf."""
  x = nm.sanitize(logits)
  return jnp.where(_ids(x, axis_name) < vocab_size, x, _NEG_INF)


def _check_static(name, logits, vocab_size):
  logits = _checks.check_logits(logits)
  if not _checks.is_int(vocab_size) or vocab_size < 1:
    raise ValueError(f"{name}: vocab_size must be a positive int, got {vocab_size!r}")
  return logits


def _effective(x, axis_name):
  """The +inf rule over the whole row: one flag per row crosses devices (``pmax``)."""
  pos_inf = x == jnp.inf
  flag = jnp.any(pos_inf, axis=-1, keepdims=True).astype(jnp.int32)
  any_inf = lax.pmax(flag, axis_name) > 0
  return jnp.where(any_inf, jnp.where(pos_inf, 0.0, _NEG_INF), x)


def _global_max(x, axis_name):
  return lax.pmax(nm.row_max(x), axis_name)


def _global_max_key(keys, axis_name):
  return lax.pmax(jnp.max(keys, axis=-1, keepdims=True), axis_name)


def _keep_top(e, keep, axis_name):
  """Keep-at-least-one over the whole row: also keeps every token tied at the global maximum."""
  k = nm.signed_key(e)
  return keep | (k == _global_max_key(k, axis_name))


def _gather_top(keys, c, axis_name):
  """The global ``c`` largest keys per row: each device contributes its own ``c`` largest."""
  local = nm.top_values(keys, min(c, keys.shape[-1]))[0]
  every = lax.all_gather(local, axis_name, axis=keys.ndim - 1, tiled=True)
  return lax.top_k(every, c)[0]


# --------------------------------------------------------------------------------------------
# transforms


def _masked(x, keep, active):
  return jnp.where(active, nm.apply_mask(x, keep), x)


def _top_k_impl(x, k, axis_name, vocab_size, candidates=_trunc.TOP_K_CANDIDATES):
  active = (k > 0) & (k < vocab_size)

  def compute(_):
    keys = jnp.where(_ids(x, axis_name) < vocab_size, nm.signed_key(x), _INT_MIN)
    kk = jnp.clip(k, 1, vocab_size)
    c = min(vocab_size, candidates)
    top = _gather_top(keys, c, axis_name)
    kth = jnp.take_along_axis(top, jnp.minimum(kk, c) - 1, axis=-1)
    keep_fast = keys >= kth
    slow_rows = kk > c

    def slow(_):
      ukeys = nm.ordered_key(x)  # padding is -inf: ordered_key(-inf) is the smallest in use
      ukeys = jnp.where(_ids(x, axis_name) < vocab_size, ukeys, jnp.uint32(0))
      y = nm.bisect_threshold(ukeys, jnp.ones(x.shape, jnp.int32), kk,
                              lambda w: lax.psum(jnp.sum(w, axis=-1, keepdims=True), axis_name))
      return jnp.where(slow_rows, ukeys > y, keep_fast)

    keep = _trunc._cond(jnp.any(slow_rows), slow, lambda _: keep_fast, None)
    return _masked(x, keep, active)

  return _trunc._cond(nm.any_active(active), compute, lambda _: x, None)


def vocab_sharded_top_k(logits: Any, k: Any, *, axis_name: Any, vocab_size: int) -> jax.Array:
  r""":func:`jaxlogits.top_k` on a vocabulary shard, inside ``shard_map``.

  .. math::
    \ell'_i = \ell_i \text{ if } \ell_i \ge \ell_{(k)} \text{ else } -\infty

  with :math:`\ell_{(k)}` the k-th largest logit of the whole row. Each device finds its own 64
  largest keys; an ``all_gather`` of those (``64 D`` per row) gives the global k-th value. For
  ``k > 64`` the exact 32-pass bit-pattern search runs instead, with a ``psum`` of one count per
  row per pass. Bit-for-bit the single-device mask (ties kept).

  Args:
    logits: the local shard ``[..., Vl]`` of logits padded to ``D * Vl`` (see :func:`pad_vocab`).
    k: integer ``>= 0``; a scalar or one value per row (replicated over the vocabulary axis).
    axis_name: the vocabulary mesh axis.
    vocab_size: the true vocabulary size ``V``; ids ``>= V`` are padding, always ``-inf``.

  Returns:
    The local shard of the masked logits, same shape and dtype.

  Examples:
    >>> import functools, jax, jax.numpy as jnp
    >>> mesh = jax.make_mesh((1,), ("vocab",), (jax.sharding.AxisType.Auto,))
    >>> f = jax.shard_map(functools.partial(vocab_sharded_top_k, axis_name="vocab",
    ...                                     vocab_size=3),
    ...                   mesh=mesh, in_specs=(jax.P(None, "vocab"), jax.P()),
    ...                   out_specs=jax.P(None, "vocab"))
    >>> f(pad_vocab(jnp.array([[1.0, 3.0, 2.0]]), 1), 2)[:, :3]
    Array([[-inf,   3.,   2.]], dtype=float32)

  References:
    Fan, Lewis and Dauphin, "Hierarchical Neural Story Generation", 2018.
    https://arxiv.org/abs/1805.04833
  """
  logits = _check_static("vocab_sharded_top_k", logits, vocab_size)
  _checks.check_range("top_k", k, lo=0, integer=True)
  k = _checks.row_param("top_k", k, logits.shape[:-1], jnp.int32)
  x = _local(logits, axis_name, vocab_size)
  return nm.finish(_top_k_impl(x, k, axis_name, vocab_size), logits.dtype)


def _row_ops(axis_name, vocab_size):
  """The top-p search's view of a sharded row (``truncation.RowOps``): fixed-point sums whose
  per-device integer totals are ``psum``med (exact, so equal to the one-device sums), and the
  global largest values from each device's own."""
  def top(x, c):
    return lax.bitcast_convert_type(_key_to_float(_gather_top(nm.signed_key(x), c, axis_name)),
                                    jnp.float32)

  def all_finite(x):  # the padding ids (-inf) do not count
    low = jnp.min(jnp.where(_ids(x, axis_name) < vocab_size, x, jnp.inf), axis=-1, keepdims=True)
    return lax.pmin(low, axis_name) > _NEG_INF

  psum = lambda a: lax.psum(a, axis_name)
  return _trunc.RowOps(
      vocab_size, lambda w: nm.exact_sum(w, vocab_size, psum), top,
      (lambda w: nm.exact_sum(w, vocab_size, psum, block=BLOCK // _trunc.SUBSAMPLE))
      if _trunc.estimate_by_default(vocab_size) else None, all_finite)


def _nucleus_mask(e, p, axis_name, vocab_size):
  """``truncation._nucleus_key`` over a sharded row: the same steps on the same numbers."""
  thr = _trunc._nucleus_key(e, _global_max(e, axis_name), p, _trunc.TOP_P_CANDIDATES,
                            _trunc.NUCLEUS_PASSES, _row_ops(axis_name, vocab_size))
  return nm.ordered_key(e) >= thr


def _key_to_float(signed):
  """Inverse of ``_numerics.signed_key``: the float32 bit pattern of a key (``-0`` reads ``+0``)."""
  u = lax.bitcast_convert_type(signed, jnp.uint32) ^ jnp.uint32(0x80000000)
  return jnp.where((u >> 31) == 1, u & jnp.uint32(0x7FFFFFFF), ~u)


def _top_p_impl(x, p, axis_name, vocab_size):
  active = ~(p >= 1)
  return _trunc._cond(
      nm.any_active(active),
      lambda _: _masked(x, _nucleus_mask(_effective(x, axis_name), p, axis_name, vocab_size),
                        active),
      lambda _: x, None)


def vocab_sharded_top_p(logits: Any, p: Any, *, axis_name: Any, vocab_size: int) -> jax.Array:
  r""":func:`jaxlogits.top_p` on a vocabulary shard, inside ``shard_map``.

  .. math::
    \text{keep } i \iff \sum_{j:\, p_j > p_i} p_j < p

  The single-device search on a split row, with the same mask. The row maximum crosses devices
  by ``pmax``; an ``all_gather`` of each device's 64 largest logits (``64 D`` per row) gives
  the global candidates. Every mass (the normaliser, each pass of the nucleus search beyond the
  candidates, the bisection fallback) is a fixed-point sum whose per-device integer totals are
  ``psum``med: exact, so bitwise the single-device value. The search reads the tokens left in
  its final bracket with an ``all_gather`` of each device's 64 largest.

  Args:
    logits: the local shard ``[..., Vl]`` of padded logits.
    p: cumulative probability in ``(0, 1]``; a scalar or one value per row.
    axis_name: the vocabulary mesh axis.
    vocab_size: the true vocabulary size ``V``.

  Returns:
    The local shard of the masked logits, same shape and dtype.

  Examples:
    >>> import functools, jax, jax.numpy as jnp
    >>> mesh = jax.make_mesh((1,), ("vocab",), (jax.sharding.AxisType.Auto,))
    >>> f = jax.shard_map(functools.partial(vocab_sharded_top_p, axis_name="vocab",
    ...                                     vocab_size=3),
    ...                   mesh=mesh, in_specs=(jax.P(None, "vocab"), jax.P()),
    ...                   out_specs=jax.P(None, "vocab"))
    >>> l = jnp.log(jnp.array([[0.5, 0.3, 0.2]]))
    >>> f(pad_vocab(l, 1), 0.7)[:, :3] > -jnp.inf
    Array([[ True,  True, False]], dtype=bool)

  References:
    Holtzman et al., "The Curious Case of Neural Text Degeneration", 2020.
    https://arxiv.org/abs/1904.09751
  """
  logits = _check_static("vocab_sharded_top_p", logits, vocab_size)
  _checks.check_range("top_p", p, lo=0.0, hi=1.0, lo_open=True)
  p = _checks.row_param("top_p", p, logits.shape[:-1], jnp.float32)
  x = _local(logits, axis_name, vocab_size)
  return nm.finish(_top_p_impl(x, p, axis_name, vocab_size), logits.dtype)


def _min_p_impl(x, p, axis_name):
  e = _effective(x, axis_name)
  keep = _keep_top(e, e >= _trunc._min_p_cut(_global_max(e, axis_name), p), axis_name)
  return _masked(x, keep, p > 0)


def vocab_sharded_min_p(logits: Any, p: Any, *, axis_name: Any, vocab_size: int) -> jax.Array:
  r""":func:`jaxlogits.min_p` on a vocabulary shard, inside ``shard_map``.

  .. math::
    \text{keep } i \iff \ell_i \ge \max_j \ell_j + \log p

  Only the row maximum crosses devices (a ``pmax``, one scalar per row); the mask is local.
  Bit-for-bit the single-device result.

  Args:
    logits: the local shard ``[..., Vl]`` of padded logits.
    p: scale in ``[0, 1]``; a scalar or one value per row.
    axis_name: the vocabulary mesh axis.
    vocab_size: the true vocabulary size ``V``.

  Returns:
    The local shard of the masked logits, same shape and dtype.

  Examples:
    >>> import functools, jax, jax.numpy as jnp
    >>> mesh = jax.make_mesh((1,), ("vocab",), (jax.sharding.AxisType.Auto,))
    >>> f = jax.shard_map(functools.partial(vocab_sharded_min_p, axis_name="vocab",
    ...                                     vocab_size=3),
    ...                   mesh=mesh, in_specs=(jax.P(None, "vocab"), jax.P()),
    ...                   out_specs=jax.P(None, "vocab"))
    >>> l = jnp.log(jnp.array([[0.5, 0.3, 0.2]]))
    >>> f(pad_vocab(l, 1), 0.5)[:, :3] > -jnp.inf
    Array([[ True,  True, False]], dtype=bool)

  References:
    Nguyen et al., "Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM Outputs",
    2024. https://arxiv.org/abs/2407.01082
  """
  logits = _check_static("vocab_sharded_min_p", logits, vocab_size)
  _checks.check_range("min_p", p, lo=0.0, hi=1.0)
  p = _checks.row_param("min_p", p, logits.shape[:-1], jnp.float32)
  x = _local(logits, axis_name, vocab_size)
  return nm.finish(_min_p_impl(x, p, axis_name), logits.dtype)


def _first_argmax(x, axis_name):
  """Global id of the row's largest value, lowest id on ties: a ``pmax`` and a ``pmin``."""
  keys = nm.signed_key(x)
  top = _global_max_key(keys, axis_name)
  ids = jnp.where(keys == top, _ids(x, axis_name), jnp.iinfo(jnp.int32).max)
  return lax.pmin(jnp.min(ids, axis=-1, keepdims=True), axis_name)


def _temperature_impl(x, t, axis_name, dtype):
  positive = t > 0
  scaled = _temp._scale(x, t, dtype)

  def with_greedy(_):
    first = _ids(x, axis_name) == _first_argmax(x, axis_name)
    return jnp.where(positive, scaled, nm.apply_mask(x, first))

  # The collectives run only when some row has t <= 0 (the predicate is the same on every
  # device: t is replicated over the vocabulary axis).
  return _trunc._cond(jnp.any(~positive), with_greedy, lambda _: scaled, None)


def vocab_sharded_temperature(logits: Any, t: Any, *, axis_name: Any,
                              vocab_size: int) -> jax.Array:
  r""":func:`jaxlogits.temperature` on a vocabulary shard, inside ``shard_map``.

  .. math::
    \ell'_i = \ell_i / t \quad (t > 0), \qquad
    \ell'_i = \ell_i \,[i = \min \arg\max_j \ell_j] \text{ else } -\infty \quad (t = 0)

  Elementwise for ``t > 0``; greedy rows (``t = 0``) find the first maximum of the whole row with
  a ``pmax`` of the largest key and a ``pmin`` of the lowest id holding it. Bit-for-bit the
  single-device result.

  Args:
    logits: the local shard ``[..., Vl]`` of padded logits.
    t: temperature ``>= 0``; a scalar or one value per row.
    axis_name: the vocabulary mesh axis.
    vocab_size: the true vocabulary size ``V``.

  Returns:
    The local shard of the scaled logits, same shape and dtype.

  Examples:
    >>> import functools, jax, jax.numpy as jnp
    >>> mesh = jax.make_mesh((1,), ("vocab",), (jax.sharding.AxisType.Auto,))
    >>> f = jax.shard_map(functools.partial(vocab_sharded_temperature, axis_name="vocab",
    ...                                     vocab_size=3),
    ...                   mesh=mesh, in_specs=(jax.P(None, "vocab"), jax.P()),
    ...                   out_specs=jax.P(None, "vocab"))
    >>> f(pad_vocab(jnp.array([[2.0, 1.0, 2.0]]), 1), 0.0)[:, :3]
    Array([[  2., -inf, -inf]], dtype=float32)

  References:
    Ackley, Hinton and Sejnowski, "A Learning Algorithm for Boltzmann Machines", 1985.
  """
  logits = _check_static("vocab_sharded_temperature", logits, vocab_size)
  _checks.check_range("temperature", t, lo=0.0, finite=True)
  t = _checks.row_param("temperature", t, logits.shape[:-1], jnp.float32)
  x = _local(logits, axis_name, vocab_size)
  return nm.finish(_temperature_impl(x, t, axis_name, logits.dtype), logits.dtype)


def vocab_sharded_penalties(logits: Any, counts: Any, *, repetition: Any = 1.0,
                            frequency: Any = 0.0, presence: Any = 0.0) -> jax.Array:
  r"""Repetition, frequency and presence penalties on a vocabulary shard: no communication.

  .. math::
    \ell'_i = \rho_r(\ell_i, c_i) - f \, c_i - q \, [c_i > 0]

  with :math:`\rho_r` the CTRL repetition penalty (see :func:`jaxlogits.repetition_penalty`).
  Each token's result depends on its own logit and count only, so with ``counts`` sharded like
  the logits (same ``PartitionSpec``) nothing crosses devices. Padding ids stay ``-inf``.

  Args:
    logits: the local shard ``[..., Vl]`` of padded logits.
    counts: the local shard ``[..., Vl]`` of token counts (padded with 0).
    repetition: ``r > 0``; a scalar or one value per row.
    frequency: ``f``; a scalar or one value per row.
    presence: ``q``; a scalar or one value per row.

  Returns:
    The local shard of the penalised logits, same shape and dtype.

  Examples:
    >>> import jax.numpy as jnp
    >>> vocab_sharded_penalties(jnp.array([2.0, -2.0, 1.0]), jnp.array([1, 1, 0]),
    ...                         repetition=2.0)
    Array([ 1., -4.,  1.], dtype=float32)

  References:
    Keskar et al., "CTRL: A Conditional Transformer Language Model for Controllable
    Generation", 2019. https://arxiv.org/abs/1909.05858
  """
  logits = _checks.check_logits(logits)
  counts = _pen._check_counts(counts, logits)
  batch = logits.shape[:-1]
  _checks.check_range("repetition_penalty", repetition, lo=0.0, lo_open=True, finite=True)
  _checks.check_range("frequency_penalty", frequency, finite=True)
  _checks.check_range("presence_penalty", presence, finite=True)
  row = lambda name, v: _checks.row_param(name, v, batch, jnp.float32)
  return _pen._count_penalties(logits, counts, row("repetition_penalty", repetition),
                               row("frequency_penalty", frequency),
                               row("presence_penalty", presence))


# --------------------------------------------------------------------------------------------
# the draw


def _draw(e, u, u2, axis_name, vocab_size):
  """Global id per row of flat sharded effective logits ``e`` ``[N, Vl]``; -1 for empty rows.

  The two-level draw of :func:`jaxlogits.sampling.inverse_cdf`. Its block prefix sums are exact
  integers, so each device's prefix sums follow from one total per device: the block fractions,
  and so the tokens, are bitwise those of the single-device draw.
  """
  vl = e.shape[-1]
  if vl % BLOCK:
    raise ValueError(f"the sharded draw needs a shard size that is a multiple of {BLOCK} "
                     f"(got {vl}); pad the logits with pad_vocab")
  width, frac = nm.limb_layout(-(-vocab_size // BLOCK))  # as for the unpadded row
  me = lax.axis_index(axis_name)
  m = _global_max(e, axis_name)
  shift = jnp.where(jnp.isfinite(m), m, 0.0)[..., None]
  hi, lo, weights_of = _sampling.weighed_blocks(e.reshape(e.shape[0], vl // BLOCK, BLOCK),
                                                lambda a: jnp.exp(a - shift), width, frac)
  # one (hi, lo) total per device and row: the only numbers that cross devices besides the max
  totals = lax.all_gather(jnp.concatenate(nm.limb_totals(hi, lo), -1), axis_name, axis=1,
                          tiled=False)  # [N, D, 2]
  before = jnp.sum(jnp.where((jnp.arange(totals.shape[1]) < me)[None, :, None], totals, 0),
                   axis=1)
  total = jnp.sum(totals, axis=1)
  local_b, j, mine = _sampling.choose(weights_of, hi, lo, u, u2, width,
                                      (before[:, :1], before[:, 1:]), (total[:, :1], total[:, 1:]))
  token = jnp.where(mine, me * vl + local_b * BLOCK + j, -1)
  token = lax.pmax(token.astype(jnp.int32), axis_name)
  return jnp.where(jnp.isfinite(m[:, 0]), token, -1)


def _sample_impl(keys, x, axis_name, vocab_size):
  e = _effective(x, axis_name)
  flat = e.reshape((-1, e.shape[-1]))
  u, u2 = _sampling.uniforms(keys)
  return _draw(flat, u.reshape(-1), u2.reshape(-1), axis_name, vocab_size).reshape(
      x.shape[:-1])


def vocab_sharded_sample(key: Any, logits: Any, *, axis_name: Any, vocab_size: int
                         ) -> jax.Array:
  r""":func:`jaxlogits.sample` on a vocabulary shard, inside ``shard_map``.

  .. math::
    b = \min\{\, b : \textstyle\sum_{c \le b} P_c > u \,\}, \quad
    i = \min\{\, i \in b : \textstyle\sum_{j \in b,\, j \le i} p_j > u' P_b \,\}

  The two-level inverse-CDF draw of :func:`jaxlogits.sample` across devices. The row maximum
  crosses by ``pmax``; each device turns the masses of its 256-token blocks into exact
  fixed-point integers, and an ``all_gather`` of one integer total per device gives every device
  its exact prefix, so the block fractions are bitwise those of the single-device draw. Only the
  device whose range holds the first uniform number scans its chosen block with the second; a
  ``pmax`` of its id (``-1`` elsewhere) hands the token to all. The same key gives the same token
  as :func:`jaxlogits.sample`.

  Args:
    key: a PRNG key, or one per row (see :func:`jaxlogits.sample`). A single key folds in the
      *local* row index: with the batch sharded too, pass per-row keys
      (``jaxlogits.sampling.row_keys(key, (B,))``, sharded like the batch).
    logits: the local shard ``[..., Vl]`` of padded logits, ``Vl`` a multiple of 256 (see
      :func:`pad_vocab`).
    axis_name: the vocabulary mesh axis.
    vocab_size: the true vocabulary size ``V``; padding ids are never drawn.

  Returns:
    ``int32[...]`` global token ids, replicated over the vocabulary axis; ``-1`` for a row with
    no finite logit.

  Examples:
    >>> import functools, jax, jax.numpy as jnp
    >>> mesh = jax.make_mesh((1,), ("vocab",), (jax.sharding.AxisType.Auto,))
    >>> f = jax.shard_map(functools.partial(vocab_sharded_sample, axis_name="vocab",
    ...                                     vocab_size=300),
    ...                   mesh=mesh, in_specs=(jax.P(), jax.P(None, "vocab")), out_specs=jax.P())
    >>> logits = jnp.full((2, 300), -jnp.inf).at[0, 7].set(0.0)
    >>> f(jax.random.key(0), pad_vocab(logits, 1))
    Array([ 7, -1], dtype=int32)

  References:
    Devroye, "Non-Uniform Random Variate Generation", 1986, chapter 2 (inversion).
  """
  logits = _check_static("vocab_sharded_sample", logits, vocab_size)
  keys = _sampling.row_keys(key, logits.shape[:-1])
  x = _local(logits, axis_name, vocab_size)
  return _sample_impl(keys, x, axis_name, vocab_size)


# --------------------------------------------------------------------------------------------
# the pipeline


_UNSUPPORTED = ("typical_p", "epsilon_cutoff", "eta_cutoff", "top_n_sigma",
                "no_repeat_ngram_size")


def _row(a):
  return a[..., None]


def vocab_sharded_sample_step(key: Any, logits: Any, params: _pipeline.SamplingParams, *,
                              axis_name: Any, vocab_size: int, counts: Any = None
                              ) -> tuple[jax.Array, jax.Array]:
  r""":func:`jaxlogits.sample_step` on a vocabulary shard, inside ``shard_map``.

  .. math::
    i \sim \operatorname{softmax}(\operatorname{minp} \circ \operatorname{topp} \circ
    \operatorname{topk} \circ \tau \circ \operatorname{pen}(\ell))

  The standard order for the settings a tensor-parallel server needs: repetition, frequency and
  presence penalties (local), temperature (with ``temperature_last``), top_k, top_p, min_p,
  then the draw; each step as in the ``vocab_sharded_*`` function of the same name. For these
  settings the tokens equal :func:`jaxlogits.sample_step`'s for the same keys (top_p as
  documented in the module). ``typical_p``, ``epsilon_cutoff``, ``eta_cutoff``,
  ``top_n_sigma``, ``no_repeat_ngram_size``, ``min_tokens`` and the logit bias are not applied:
  keep them at their identity values (:func:`vocab_sharded_sampler` checks this).

  Args:
    key: a PRNG key or one per row (see :func:`vocab_sharded_sample`).
    logits: the local shard ``[B, Vl]`` of padded logits.
    params: :class:`jaxlogits.SamplingParams` with ``B`` rows (replicated over the vocabulary
      axis).
    axis_name: the vocabulary mesh axis.
    vocab_size: the true vocabulary size ``V``.
    counts: optional local shard ``[B, Vl]`` of token counts, for the penalties.

  Returns:
    ``(tokens, processed)``: ``int32[B]`` global ids (replicated over the vocabulary axis) and
    the local shard of the processed logits.

  Examples:
    >>> import functools, jax, jax.numpy as jnp, jaxlogits as jl
    >>> mesh = jax.make_mesh((1,), ("vocab",), (jax.sharding.AxisType.Auto,))
    >>> step = functools.partial(vocab_sharded_sample_step, axis_name="vocab", vocab_size=300)
    >>> f = jax.shard_map(step, mesh=mesh, in_specs=(jax.P(), jax.P(None, "vocab"), jax.P()),
    ...                   out_specs=(jax.P(), jax.P(None, "vocab")))
    >>> logits = jnp.arange(600.0).reshape(2, 300) / 100
    >>> f(jax.random.key(0), pad_vocab(logits, 1), jl.SamplingParams.create(2, temperature=0.0))[0]
    Array([299, 299], dtype=int32)
  """
  logits = _check_static("vocab_sharded_sample_step", logits, vocab_size)
  if logits.ndim != 2:
    raise ValueError(f"vocab_sharded_sample_step takes [B, Vl] logits, got {logits.shape}")
  b = logits.shape[0]
  if params.temperature.shape != (b,):
    raise ValueError(f"params has {params.temperature.shape[0]} rows, logits has {b}")
  if counts is not None:
    counts = _pen._check_counts(counts, logits)
  keys = _sampling.row_keys(key, (b,))
  return _step(keys, logits, params, counts, axis_name=axis_name, vocab_size=vocab_size)


def _step(keys, logits, params, counts, *, axis_name, vocab_size):
  dtype = logits.dtype
  x = _local(logits, axis_name, vocab_size)
  if counts is not None:
    x = _pen._count_penalties(x, counts, _row(params.repetition_penalty),
                              _row(params.frequency_penalty), _row(params.presence_penalty))
  last = params.temperature_last
  x = nm.finish(_temperature_impl(nm.sanitize(x), _row(jnp.where(last, 1.0, params.temperature)),
                                  axis_name, dtype), dtype)
  x = nm.finish(_top_k_impl(nm.sanitize(x), _row(params.top_k), axis_name, vocab_size), dtype)
  x = nm.finish(_top_p_impl(nm.sanitize(x), _row(params.top_p), axis_name, vocab_size), dtype)
  x = nm.finish(_min_p_impl(nm.sanitize(x), _row(params.min_p), axis_name), dtype)
  x = nm.finish(_temperature_impl(nm.sanitize(x), _row(jnp.where(last, params.temperature, 1.0)),
                                  axis_name, dtype), dtype)
  return _sample_impl(keys, nm.sanitize(x), axis_name, vocab_size), x


def _check_supported(params):
  for name in _UNSUPPORTED:
    value = _checks.concrete(getattr(params, name))
    identity = _pipeline._FIELDS[name][1]
    if value is not None and not (value == identity).all() and not (
        name == "top_n_sigma" and (value <= 0).all()):
      raise ValueError(f"the vocab-sharded pipeline does not apply {name}; keep it at {identity}")
  for name in ("min_tokens",):
    value = _checks.concrete(getattr(params, name))
    if value is not None and (value != 0).any():
      raise ValueError(f"the vocab-sharded pipeline does not apply {name}; keep it at 0")
  if params.logit_bias_ids.shape[-1] > 0:
    ids = _checks.concrete(params.logit_bias_ids)
    if ids is None or (ids >= 0).any():
      raise ValueError("the vocab-sharded pipeline does not apply logit_bias")


def vocab_sharded_sampler(mesh: jax.sharding.Mesh, vocab_axis: str, *, vocab_size: int,
                          batch_axis: str | None = None):
  r"""Builds a jitted sampling step whose logits are sharded over ``vocab_axis`` of ``mesh``.

  .. math::
    (\text{tokens}, \ell') = \operatorname{shard\_map}(\text{vocab\_sharded\_sample\_step})
    (\text{key}, \ell, \text{params})

  The returned ``step(key, logits, params, counts=None)`` takes global ``[B, V_pad]`` logits
  (:func:`pad_vocab`; ``V_pad = padded_vocab_size(V, D)``), sharded
  ``P(batch_axis, vocab_axis)`` (jit moves them there if needed), derives the per-row keys of
  :func:`jaxlogits.sample_step` from ``key`` (row ``i`` gets ``fold_in(key, i)``), and runs
  :func:`vocab_sharded_sample_step` under ``shard_map``. Eagerly it rejects parameters that the
  vocab-sharded pipeline does not apply.

  Args:
    mesh: a ``jax.sharding.Mesh`` (for instance ``jax.make_mesh``), any number of processes.
    vocab_axis: the mesh axis the vocabulary is split over.
    vocab_size: the true vocabulary size ``V``.
    batch_axis: optional mesh axis the batch is split over (data parallelism).

  Returns:
    ``step(key, logits, params, counts=None) -> (tokens, processed)``: ``int32[B]`` tokens
    sharded ``P(batch_axis)`` and the processed logits sharded like the input.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxlogits as jl
    >>> mesh = jax.make_mesh((1,), ("vocab",), (jax.sharding.AxisType.Auto,))
    >>> step = vocab_sharded_sampler(mesh, "vocab", vocab_size=300)
    >>> logits = jnp.arange(600.0).reshape(2, 300) / 100
    >>> params = jl.SamplingParams.create(2, temperature=0.0)
    >>> step(jax.random.key(0), pad_vocab(logits, 1), params)[0]
    Array([299, 299], dtype=int32)
  """
  P = jax.sharding.PartitionSpec
  row_spec = P(batch_axis)
  logit_spec = P(batch_axis, vocab_axis)
  num_shards = mesh.shape[vocab_axis]
  padded = padded_vocab_size(vocab_size, num_shards)
  param_specs = _pipeline.SamplingParams(*([row_spec] * 14 + [P(batch_axis, None)] * 2))

  def body(keys, logits, params, counts):
    return _step(keys, logits, params, counts, axis_name=vocab_axis, vocab_size=vocab_size)

  def make(with_counts):
    in_specs = (row_spec, logit_spec, param_specs, logit_spec if with_counts else None)
    fn = jax.shard_map(body if with_counts else (lambda k, l, p, c: body(k, l, p, None)),
                       mesh=mesh, in_specs=in_specs, out_specs=(row_spec, logit_spec))

    @jax.jit
    def run(key, logits, params, counts):
      keys = _sampling.row_keys(key, logits.shape[:1])
      return fn(keys, logits, params, counts)

    return run

  compiled = {True: make(True), False: make(False)}

  def step(key, logits, params, counts=None):
    logits = _checks.check_logits(logits)
    if logits.ndim != 2 or logits.shape[-1] != padded:
      raise ValueError(f"logits must be [B, {padded}] (the vocabulary {vocab_size} padded for "
                       f"{num_shards} shards, see pad_vocab), got {logits.shape}")
    if params.temperature.shape != logits.shape[:1]:
      raise ValueError(f"params has {params.temperature.shape[0]} rows, logits has "
                       f"{logits.shape[0]}")
    _check_supported(params)
    if counts is not None:
      counts = jnp.asarray(counts)
      if counts.shape != logits.shape:
        raise ValueError(f"counts must have the shape of the padded logits {logits.shape}, "
                         f"got {counts.shape}")
    return compiled[counts is not None](key, logits, params, counts)

  return step
