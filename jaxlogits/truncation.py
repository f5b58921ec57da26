"""Truncation: transforms that mask the unlikely tail of a distribution to ``-inf``.

Every rule here follows ``semantics.md``: ties at a threshold are kept, a row that has a finite
logit always keeps at least one token (the most likely one; for ``typical_p`` the most typical
one, with every token tied with it), NaN counts as ``-inf`` and a row with ``+inf`` entries is
treated as the uniform distribution over them.  No rule sorts the vocabulary: thresholds come
from ``lax.top_k`` over a short candidate list when the answer lies inside it, otherwise from an
exact search over float32 bit patterns (32 masked reductions; see ``_numerics.bisect_threshold``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxlogits import _checks
from jaxlogits import _numerics as nm

__all__ = [
    "epsilon_cutoff",
    "eta_cutoff",
    "min_p",
    "top_k",
    "top_n_sigma",
    "top_p",
    "typical_p",
]

# Candidate-list sizes for the fast paths (static; results never depend on them, only speed).
TOP_K_CANDIDATES = 64
# top_k beyond its candidates takes a list of one of these multiples of them before turning to
# the exact search: at 32 x 128K on CPU, k = 65 to 256 took 38 ms with the search alone (3 ms
# for k <= 64).
TOP_K_TIERS = (1, 4, 16)
# (64, not 128: lax.top_k on CPU costs about twice as much at k = 128; a nucleus of 64 to 127
# tokens now takes the search's passes instead, and top_p on peaked and middling rows took 0.55
# to 0.95 of its time, one case of six 1.05; see the README.)
TOP_P_CANDIDATES = 64
# top_p's first mass pass, on rows of finite logits, is at the point where a token's probability
# is p / NUCLEUS_Q (where the flat row's search then starts; p / (2 * TOP_P_CANDIDATES) at 64
# candidates made the bench's W2 and W3 top_p 4 to 9% slower).
NUCLEUS_Q = 256
# The nucleus search: at most this many mass passes, then this many tokens read exactly.
NUCLEUS_PASSES = 16
NUCLEUS_EXTRACT = 64
# The search's estimate reads every SUBSAMPLE-th token (a divisor of the 256-token block), with at
# most SUB_PASSES passes over that subsample per estimate.
SUBSAMPLE = 16
SUB_PASSES = 12
# After this many points without closing its bracket, a row's search takes secants on the
# masses instead of their probits (see _regula_falsi).
LINEAR_AFTER = 8

# Every rule below computes a per-row threshold on bit-pattern keys (``keep iff
# ordered_key(e) >= thr``; 0 keeps everything) and then writes its output in one pass. Branches
# (``lax.cond``) only ever return these [..., 1] thresholds, never a [..., V] array, so XLA can
# fuse the final comparison with the caller's next step.


def _write(x: jax.Array, any_inf: jax.Array | None, thr: jax.Array, dtype) -> jax.Array:
  """The one output pass of a truncation: ``x`` where the key of its effective logit is at
  least ``thr``, else -inf (NaN counts as -inf; ``any_inf`` from ``nm.dispatch``, None for a
  rule without the +inf rule)."""
  clean = nm.sanitize(x)
  e = clean if any_inf is None else nm.with_inf_rule(clean, any_inf)
  return jnp.where(nm.ordered_key(e) >= thr, clean, nm.NEG_INF).astype(dtype)


def _after(y: jax.Array) -> jax.Array:
  """The threshold of ``keep = key > y`` (saturating)."""
  return jnp.where(y == jnp.uint32(0xFFFFFFFF), y, y + jnp.uint32(1))


def _keep_all(like: jax.Array) -> jax.Array:
  """The keep-everything threshold, shaped (and, under ``shard_map``, varying) like ``like``."""
  return jnp.zeros_like(like, jnp.uint32)


def _unless_identity(active, rule, logits, param):
  """``rule(logits, param)``, skipped (one cheap test) when no row is ``active``: the rule costs
  full passes, the identity only the NaN clean-up."""
  return lax.cond(jnp.any(active), lambda: rule(logits, param),
                  lambda: nm.finish(nm.sanitize(logits), logits.dtype))


def _when_any(active, thresholds, x, with_inf=False):
  """``thresholds()`` (a rule's ``nm.dispatch``) when some row is ``active``; else keep-all
  thresholds (and no ``+inf`` rows), without the dispatch's two passes over the rows."""
  none = lambda: (_keep_all(x[..., :1]), jnp.zeros_like(x[..., :1], bool))
  return lax.cond(jnp.any(active), thresholds, none if with_inf else lambda: none()[0])


def _masked(x, keep, active):
  return jnp.where(active, nm.apply_mask(x, keep), x)


def _cond(pred, true_fn, false_fn, operand=None):
  """``lax.cond`` on a scalar predicate (under ``vmap`` it becomes a select, still exact)."""
  return lax.cond(pred, true_fn, false_fn, operand)


# --------------------------------------------------------------------------------------------
# top_k


def _kth_candidate(x: jax.Array, k: jax.Array, c: int):
  """``(kk, vals, kth)``: ``k`` clipped to ``[1, V]``, the ``c`` largest values of each row
  (descending) and the ``min(kk, c)``-th of them (the k-th largest where ``kk <= c``)."""
  kk = jnp.clip(k, 1, x.shape[-1])
  vals, _ = nm.top_values(x, c)
  return kk, vals, jnp.take_along_axis(vals, jnp.minimum(kk, c) - 1, axis=-1)


def _kth_key(x: jax.Array, k: jax.Array, candidates: int) -> jax.Array:
  """Threshold of ``x >= kth_largest(x)`` per row for ``1 <= k <= V`` (ties kept).

  The k-th value is read from the ``candidates`` largest values. Rows whose ``k`` lies beyond
  them take it from the smallest longer list (``TOP_K_TIERS`` times the candidates) that holds
  every such row's k, or, where none does, from the exact 32-pass bisection: a large k pays for
  one more list at most, and every way finds the same value.
  """
  v = x.shape[-1]
  sizes = sorted({min(v, candidates * m) for m in TOP_K_TIERS})
  kk = jnp.clip(k, 1, v)

  def exact():
    return _after(nm.bisect_threshold(nm.ordered_key(x), jnp.ones(x.shape, jnp.int32), kk))

  def from_list(c, then):
    _, _, kth = _kth_candidate(x, k, c)
    fast = nm.ordered_key(kth)
    # Beyond the list, or a k-th value among denormals, which the CPU's float comparisons
    # (inside lax.top_k) may treat as zero: ``then`` decides those rows.
    rest = (kk > c) | nm.in_denormal_band(kth)
    return lax.cond(jnp.any(rest), lambda: jnp.where(rest, then(), fast), lambda: fast)

  def longer():
    need = jnp.max(jnp.where(kk > sizes[0], kk, 0))
    branch = jnp.sum(need > jnp.array(sizes[1:], jnp.int32))
    return lax.switch(branch, [functools.partial(from_list, c, exact) for c in sizes[1:]]
                      + [exact])

  return from_list(sizes[0], longer)


def _top_k_key(x, k, candidates=TOP_K_CANDIDATES):
  """top_k's threshold on float32 logits ``x`` (for ``_write(x, None, thr)``)."""
  active = lambda k: (k > 0) & (k < x.shape[-1])
  # (top_k never reads the row max: its dispatch skips that pass.)
  thr = _when_any(active(k), lambda: nm.dispatch(x, lambda e, _, k: lax.cond(
      jnp.any(active(k)), lambda: _kth_key(e, k, candidates), lambda: _keep_all(e[..., :1])),
                                                 (k,), inf_rule=False, blocked=True,
                                                 with_max=False)[0], x)
  return jnp.where(active(k), thr, 0)


@functools.partial(jax.jit, static_argnames="candidates")
def _top_k(logits, k, candidates=TOP_K_CANDIDATES):
  x = logits.astype(jnp.float32)
  return _write(x, None, _top_k_key(x, k, candidates), logits.dtype)


def top_k(logits: Any, k: Any) -> jax.Array:
  r"""Keeps the ``k`` largest logits of each row (and every logit tied with the k-th).

  .. math::
    \ell'_i = \ell_i \text{ if } \ell_i \ge \ell_{(k)} \text{ else } -\infty

  where :math:`\ell_{(k)}` is the k-th largest logit. ``k <= 0`` or ``k >= V`` leaves the row
  unchanged. Because ties are kept the result does not depend on token order (a row may keep more
  than ``k`` tokens). ``k`` is a traced value: changing it never recompiles.

  Args:
    logits: ``[..., V]`` float logits.
    k: integer ``>= 0``; a scalar or one value per row.

  Returns:
    Masked logits, same shape and dtype as ``logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> jl.top_k(jnp.array([1.0, 3.0, 2.0, 3.0]), 1)
    Array([-inf,   3., -inf,   3.], dtype=float32)
    >>> jl.top_k(jnp.array([[1.0, 3.0, 2.0], [0.0, 1.0, 2.0]]), jnp.array([2, 0]))
    Array([[-inf,   3.,   2.],
           [  0.,   1.,   2.]], dtype=float32)

  References:
    Fan, Lewis and Dauphin, "Hierarchical Neural Story Generation", 2018.
    https://arxiv.org/abs/1805.04833
  """
  logits = _checks.check_logits(logits)
  _checks.check_range("top_k", k, lo=0, integer=True)
  return _top_k(logits, _checks.row_param("top_k", k, logits.shape[:-1], jnp.int32))


# --------------------------------------------------------------------------------------------
# top_p


class RowOps(NamedTuple):
  """How the top-p search reads a row: on one device, or split over devices
  (:mod:`jaxlogits.sharding` passes collective versions). Both sum masses in fixed point
  (``_numerics.exact_sum``), so a split row takes the very same steps and finds the same
  threshold.

  Attributes:
    vocab_size: the row's true length ``V``.
    row_sum: ``w [N, Vl] -> [N, 1]``, the exact sum of the whole row's weights (each <= 1).
    top: ``(x [N, Vl], c) -> [N, c]``, the ``c`` largest values of the whole row, descending.
    sub_sum: ``w [N, Vl / SUBSAMPLE] -> [N, 1]``, the exact sum of weights given on the row's
      subsample ``x[..., ::SUBSAMPLE]`` (one sum per 256-token block of the row, like
      ``row_sum``, so a split row gives the same value); None to search without the estimate.
    all_finite: ``x [N, Vl] -> [N, 1]``, whether every one of the row's ``V`` logits is finite.
  """
  vocab_size: int
  row_sum: Callable
  top: Callable
  sub_sum: Callable
  all_finite: Callable


def estimate_by_default(vocab_size: int) -> bool:
  """Whether the nucleus search starts from its subsample estimate: on CPU for rows longer than
  a row block (``nm.ROW_BLOCK_BYTES``), whose full passes read memory. A shorter row is searched
  inside its cache-sized block, where a full pass costs less than the estimate's loop steps
  (measured on the bench's W2 and W3: about 15% faster without it); on accelerators a pass costs
  little and each of the estimate's loop iterations a round trip to the host (its
  ``while_loop`` predicate). A function of the row's length only, so a row split over devices
  takes the same steps as on one device."""
  return jax.default_backend() == "cpu" and 4 * vocab_size > nm.ROW_BLOCK_BYTES


def _one_device(v: int, estimate: bool | None = None) -> RowOps:
  estimate = estimate_by_default(v) if estimate is None else estimate
  sub_sum = lambda w: nm.exact_sum(w, v, block=nm.BLOCK // SUBSAMPLE)
  # (A float min reduction is a fast pass on CPU; the logits here hold no NaN.)
  all_finite = lambda x: jnp.min(x, axis=-1, keepdims=True) > nm.NEG_INF
  return RowOps(v, lambda w: nm.exact_sum(w, v), lambda x, c: nm.top_values(x, c)[0],
                sub_sum if estimate else None, all_finite)


def _mass_above(vals: jax.Array, w: jax.Array, base: jax.Array) -> jax.Array:
  """Mass strictly above each of ``vals`` (descending, ties adjacent) given their weights ``w``.

  ``base`` is the mass above the first value; a tie group's members share the mass above its
  first member.
  """
  exclusive = base + jnp.cumsum(w, axis=-1) - w
  idx = jnp.arange(vals.shape[-1])
  new_group = jnp.concatenate(
      [jnp.ones(vals.shape[:-1] + (1,), bool), vals[..., 1:] != vals[..., :-1]], axis=-1)
  start = lax.cummax(jnp.where(new_group, idx, 0), axis=vals.ndim - 1)
  return jnp.take_along_axis(exclusive, start, axis=-1)


def _crossing(vals: jax.Array, ok: jax.Array) -> tuple[jax.Array, jax.Array]:
  """How many of the descending ``vals`` qualify (``ok``: mass above them ``< p``; a prefix,
  -inf entries excluded) and the last one that does (the first value when none does)."""
  n_ok = jnp.sum(ok & (vals > nm.NEG_INF), axis=-1, keepdims=True)
  return n_ok, jnp.take_along_axis(vals, jnp.maximum(n_ok - 1, 0), axis=-1)


def _normal(t: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
  """A probe point ``t`` in ``[lo, hi]`` moved out of the denormal band where the bracket allows.

  Outside the band the float comparison ``x > t`` is exact even where the CPU flushes denormal
  ``x`` to zero (``|x| < tiny <= |t|`` puts ``x`` on the side of 0). A point left in the band
  (only when the whole bracket is there) ends as ``lo`` or ``hi``, which the caller rejects.
  """
  tiny = jnp.finfo(jnp.float32).tiny
  t = jnp.clip(jnp.where(jnp.isnan(t), (lo + hi) / 2, t), lo, hi)
  return jnp.where(nm.in_denormal_band(t), jnp.where(tiny <= hi, tiny, jnp.where(-tiny >= lo,
                                                                                   -tiny, t)), t)


def _secant(lo, f_lo, hi, f_hi):
  """Where the line through ``(lo, f_lo)`` and ``(hi, f_hi)`` crosses zero (NaN-free when the
  values are equal; callers clip the point into their bracket)."""
  return (lo * f_hi - hi * f_lo) / jnp.where(f_hi == f_lo, -1.0, f_hi - f_lo)


def _probit(w: jax.Array) -> jax.Array:
  """The standard normal quantile of a mass, clipped away from 0 and 1: the search's scale,
  on which the mass above a point of a smooth (near-Gaussian) logit distribution is close to a
  straight line in the point, so a secant lands near the crossing."""
  eps = jnp.float32(2.0 ** -24)
  return jax.scipy.special.ndtri(jnp.clip(w, eps, 1.0 - eps))


def _regula_falsi(mass_above, unit, p, lo, w_lo, hi, w_hi, valid, passes, width, scale=None,
                  lo_known=None, first=None):
  """Narrows brackets ``lo < t* <= hi`` of the point where ``mass_above`` crosses ``p``
  (``W(lo) >= p > W(hi)``; ``W`` non-increasing) until fewer than ``width`` tokens, each
  carrying more than ``unit(lo)``, can lie inside, or ``passes`` evaluations were made.

  Each point is the secant through the two points measured last (at first the two ends; or
  ``first`` where given and inside the bracket), on the scale ``scale`` (a monotone map of
  masses, like :func:`_probit`, on which ``W`` is close to a straight line; the identity when
  None). Where that secant leaves the bracket, the bracket's own secant is taken, with the
  Illinois rule (an end kept twice has its value halved). The point is then pushed past the
  estimate by an eighth of ``width`` in expected token spacing, away from the end that moved
  last, so that both ends close in. From the ``LINEAR_AFTER``-th point on, the secants run on
  the masses themselves (on a nearly uniform row the probit is far from straight, while the
  masses are). ``lo_known`` (default: every row) says where ``W(lo)`` was
  measured; elsewhere ``lo`` is only known to satisfy ``W(lo) >= p`` (``w_lo`` stands in for
  the secant) and the row is not closed until ``lo`` moves. Rows not ``valid``, and rows once
  closed, are left as they are: a row's result never depends on the other rows of its batch
  (how long they take), so rows worked in blocks, or split over devices, end with the same
  brackets.
  Returns ``(lo, w_lo, hi, w_hi, lo_known)``.
  """
  f = (lambda w: w - p) if scale is None else (lambda w: scale(w) - scale(p))
  known = jnp.ones_like(valid) if lo_known is None else lo_known & jnp.ones_like(valid)
  first = jnp.full_like(lo, jnp.nan) if first is None else first

  def done(lo, w_lo, w_hi, known):
    return known & ((w_lo - w_hi) < (width - 1) * unit(lo))

  def cond(state):
    i, lo, w_lo, hi, w_hi, known = state[:6]
    return (i < passes) & jnp.any(valid & ~done(lo, w_lo, w_hi, known))

  def body(state):
    i, lo, w_lo, hi, w_hi, known, f_lo, f_hi, a, w_a, b, w_b, last = state
    move = valid & ~done(lo, w_lo, w_hi, known)
    width_t = hi - lo
    inside = lambda t: (t > lo) & (t < hi)
    t = jnp.where(i == 0, first, _secant(a, f(w_a), b, f(w_b)))
    t = jnp.where(inside(t), t, _secant(lo, f_lo, hi, f_hi))
    # A row still open after LINEAR_AFTER points (its masses far from the scale's straight
    # line, as on a nearly uniform row) goes on with secants on the masses themselves.
    t_linear = _secant(a, w_a - p, b, w_b - p)
    t_linear = jnp.where(inside(t_linear), t_linear, _secant(lo, w_lo - p, hi, w_hi - p))
    t = jnp.where(i >= LINEAR_AFTER, t_linear, t)
    density = (w_lo - w_hi) / jnp.maximum(width_t, 1e-30)
    delta = (width / 8) * unit(t) / jnp.maximum(density, 1e-30)
    # Past the estimate, away from the end that moved last (so that the other end moves next).
    t = t + jnp.where(last > 0, delta, -delta)
    t = _normal(jnp.clip(t, lo + 1e-4 * width_t, hi - 1e-4 * width_t), lo, hi)
    w = mass_above(t)
    below = w >= p
    f_lo = jnp.where(below, f(w), jnp.where(last < 0, f_lo / 2, f_lo))
    f_hi = jnp.where(below, jnp.where(last > 0, f_hi / 2, f_hi), f(w))
    lo, w_lo = jnp.where(below, t, lo), jnp.where(below, w, w_lo)
    hi, w_hi = jnp.where(below, hi, t), jnp.where(below, w_hi, w)
    new = (lo, w_lo, hi, w_hi, known | below, f_lo, f_hi, t, w, a, w_a,
           jnp.where(below, 1, -1))
    return nm.same_varying((i + 1,) + tuple(jnp.where(move, x, y) for x, y in zip(new, state[1:])))

  state = nm.same_varying((jnp.int32(0), lo, w_lo, hi, w_hi, known, f(w_lo), f(w_hi), hi, w_hi,
                           lo, w_lo, jnp.zeros_like(lo, jnp.int32)))
  _, lo, w_lo, hi, w_hi, known = lax.while_loop(cond, body, state)[:6]
  return lo, w_lo, hi, w_hi, known


def _gaussian_guess(shift, log_z, v, p, t, w_t):
  """Where ``W`` crosses ``p`` if the row's ``v`` logits were normal, ``N(mu, s^2)``, fitted to
  the normaliser and to one measured point ``W(t) = w_t``.

  For normal logits ``log z = log v + mu + s^2 / 2`` and the softmax mass above ``t`` is
  ``1 - Phi((t - mu - s^2) / s)`` (the softmax tilts the normal by ``s^2``): two equations,
  a quadratic in ``s``. Only a first point for the search (NaN where the fit fails; the search
  then takes its bracket's secant).
  """
  level = shift + log_z - jnp.log(jnp.float32(v))  # mu + s^2 / 2
  a = jax.scipy.special.ndtri(1.0 - w_t)  # (t - mu - s^2) / s
  s = jnp.sqrt(a * a + 2.0 * (t - level)) - a
  mu = level - s * s / 2
  return mu + s * s + s * jax.scipy.special.ndtri(1.0 - p)


def _nucleus_search(e, shift, log_z, p, hi, w_hi, rows, passes, extract, ops, weights=None):
  """Top-p threshold for rows whose nucleus is larger than the candidate list.

  Every full pass over the row is one masked mass sum ``W(t)`` (the probability of the tokens
  above ``t``), so the search spends as few as it can:

  1. An estimate from the subsample ``e[..., ::SUBSAMPLE]`` (skipped when ``ops.sub_sum`` is
     None: step 3 then starts from ``lo`` at the bound below, unmeasured, and from the first
     point :func:`_gaussian_guess`; on the bench's flat rows that takes about 6 mass sums per
     block of rows, the normaliser's included, against 8 from a measured bound and the
     bracket's secant): the tokens below the candidates (whose mass above ``hi`` is exact) are
     sampled, scaled to the known remaining mass, and a regula falsi on the subsample finds
     where the estimate crosses ``p`` (cheap passes).
  2. One full pass at that point ``t0`` measures the estimate's error; a second search on the
     subsample moves by that error, a little beyond it, to ``t1``, and a second full pass
     measures ``W(t1)``. Both points narrow the bracket ``lo < threshold <= hi`` with known
     ``W(lo) >= p > W(hi)`` (``lo`` defaults to the bound that the tokens below ``t`` carry at
     most ``V exp(t - shift - log_z)``, measured only when needed).
  3. Secants on full passes (:func:`_regula_falsi`) close the bracket until it holds fewer than
     ``extract`` tokens, which are then read exactly (the ``extract`` largest values inside it)
     and the threshold is found among them as in the candidate path.

  The estimate only chooses where to look: every point is measured exactly before it narrows the
  bracket. Returns ``(ok, thr)``; a row is not ``ok`` when the bracket could not be closed or
  held too many tokens, and the caller falls back to the exact bisection for it. Only the
  ``rows`` asked for are searched. ``ops`` reads the row (see :class:`RowOps`). ``weights``:
  ``exp(e - shift)`` when the caller has it already (computed here otherwise).
  """
  v = ops.vocab_size
  # Masses are sums of the weights exp(e - shift) (at most 1) over the normaliser z: one
  # array of weights serves every pass, with no exponential in the passes themselves.
  z = jnp.exp(log_z)
  probs = lambda t: jnp.exp(t - shift) / z
  inf = jnp.full_like(hi, jnp.inf)
  weights = jnp.exp(e - shift) if weights is None else weights

  def mass_above(t):  # t outside the denormal band (_normal), so the float comparison is exact
    return ops.row_sum(jnp.where(e > t, weights, 0.0)) / z

  bound = shift + log_z + jnp.log(jnp.maximum(1.0 - p, 0.0) / (2.0 * v))
  bound = _normal(jnp.where(jnp.isfinite(bound), jnp.minimum(bound, hi), hi), -inf, hi)
  if ops.sub_sum is None:
    # No estimate: the search starts from the bound, where W >= p holds by construction, so
    # its mass is never measured (1 stands in for it until a point lands below the threshold).
    lo, w_lo, lo_known = bound, jnp.ones_like(hi), jnp.zeros(hi.shape, bool)
    first = _gaussian_guess(shift, log_z, v, p, hi, w_hi)
  else:
    lo, w_lo, hi, w_hi = _estimated_bracket(e, probs, mass_above, bound, p, hi, w_hi, rows, ops)
    lo_known, first = jnp.ones(hi.shape, bool), None
  valid = rows & (w_lo >= p) & (lo < hi)

  # 3. Close the bracket on the full row, then read the tokens inside.
  lo, w_lo, hi, w_hi, lo_known = _regula_falsi(mass_above, probs, p, lo, w_lo, hi, w_hi, valid,
                                               passes, extract, _probit, lo_known, first)
  # A row whose lower end was never measured is not closed (the search ran out of passes, or
  # the bound failed by rounding and no point could pass it): it falls back.
  valid = valid & lo_known
  inside = (e > lo) & (e <= hi)
  vals = ops.top(jnp.where(inside, e, nm.NEG_INF), extract)
  n_ok, thr_val = _crossing(vals, _mass_above(vals, probs(vals), w_hi) < p)
  thr = jnp.where(n_ok > 0, nm.ordered_key(thr_val), _after(nm.ordered_key(hi)))
  complete = (vals[..., -1:] == nm.NEG_INF) | (extract == v)
  ok = (valid & complete & ~nm.in_denormal_band(thr_val)
        & ~nm.in_denormal_band(hi) & ~nm.in_denormal_band(lo))
  return ok, thr


def _estimated_bracket(e, probs, mass_above, bound, p, hi, w_hi, rows, ops):
  """Steps 1 and 2 of ``_nucleus_search``: ``(lo, w_lo, hi, w_hi)`` from the two measured
  points, with ``lo`` at the bound (measured only then) where neither lies below the
  threshold."""
  inf = jnp.full_like(hi, jnp.inf)
  # 1. The estimate: W(t) ~ w_hi + (1 - w_hi) * (sampled mass in (t, hi]) / (sampled mass <= hi).
  s = e[..., ::SUBSAMPLE]
  ws = jnp.where(s <= hi, probs(s), 0.0)
  ws_total = ops.sub_sum(ws)
  scale = jnp.where(ws_total > 0, (1.0 - w_hi) / ws_total, 0.0)
  estimate = lambda t: w_hi + scale * ops.sub_sum(jnp.where(s > t, ws, 0.0))
  unit = lambda t: scale * probs(t)
  est_bound = estimate(bound)
  lo_s, wl_s, hi_s, wh_s, _ = _regula_falsi(estimate, unit, p, bound, est_bound, hi, w_hi,
                                            rows & (est_bound >= p) & (bound < hi), SUB_PASSES,
                                            2)
  t0 = _normal(_secant(lo_s, wl_s - p, hi_s, wh_s - p), bound, hi)
  w0 = mass_above(t0)

  # 2. Move by the measured error (in the estimate's terms) and a margin for the sampling noise
  # of the mass in between, so that t1 lies on the other side of the threshold.
  est0 = estimate(t0)
  err = jnp.abs(w0 - p)
  between = err / jnp.maximum(probs(t0), 1e-30) / SUBSAMPLE  # sampled tokens in between
  margin = err * jnp.minimum(1.0, 3.0 / jnp.sqrt(jnp.maximum(between, 1.0))) + 2.0 * unit(t0)
  up = w0 >= p  # t0 is below the threshold: look above it
  target = jnp.where(up, est0 - err - margin, est0 + err + margin)
  a, wa = jnp.where(up, t0, bound), jnp.where(up, est0, est_bound)
  b, wb = jnp.where(up, hi, t0), jnp.where(up, w_hi, est0)
  lo_2, _, hi_2, _, _ = _regula_falsi(estimate, unit, target, a, wa, b, wb,
                                   rows & (wa >= target) & (target > wb) & (a < b), SUB_PASSES,
                                   2)
  t1 = _normal(jnp.where(up, hi_2, lo_2), bound, hi)
  w1 = mass_above(t1)

  # The bracket from the measured points.
  lo0, lo1 = jnp.where(up, t0, -inf), jnp.where(w1 >= p, t1, -inf)
  lo, w_lo = jnp.maximum(lo0, lo1), jnp.where(lo1 > lo0, w1, w0)
  hi0, hi1 = jnp.where(up, inf, t0), jnp.where(w1 >= p, inf, t1)
  hi_t, hi_w = jnp.minimum(hi0, hi1), jnp.where(hi1 < hi0, w1, w0)
  hi, w_hi = jnp.where(hi_t < hi, hi_t, hi), jnp.where(hi_t < hi, hi_w, w_hi)
  need = rows & (lo == -inf)
  # (Both branches return a mass: under shard_map they must vary over the same mesh axes.)
  w_bound = lax.cond(jnp.any(need), lambda: mass_above(bound), lambda: jnp.zeros_like(w0))
  return jnp.where(need, bound, lo), jnp.where(need, w_bound, w_lo), hi, w_hi


def _candidates_log_z(vals: jax.Array, shift: jax.Array) -> jax.Array:
  """The log-normaliser (less ``shift``) of a row whose every token is among ``vals``."""
  return jnp.log(jnp.sum(jnp.exp(vals - shift), axis=-1, keepdims=True))


def _nucleus_in(vals, shift, log_z, p):
  """The nucleus among descending candidates ``vals``: ``(above, n_ok, thr)``, the mass above
  each, how many qualify and the last that does (see ``_crossing``)."""
  above = _mass_above(vals, jnp.exp((vals - shift) - log_z), jnp.zeros_like(shift))
  return (above,) + _crossing(vals, above < p)


def _nucleus_key(e: jax.Array, m: jax.Array, p: jax.Array, candidates: int, passes: int,
                 ops: RowOps | None = None, estimate: bool | None = None,
                 all_finite: jax.Array | None = None) -> jax.Array:
  """Threshold of top-p on effective logits ``e`` (row max ``m``): mass strictly above ``< p``.

  ``ops`` reads the row (:class:`RowOps`; one device when None, with the search's estimate as
  ``estimate`` says, by default ``estimate_by_default``). Every mass is an exact fixed-point sum,
  so a row split over devices gives the same threshold. ``all_finite`` (``[..., 1]``, from
  ``nm.dispatch``) spares ``ops.all_finite``'s pass when given.

  The candidates (the ``c`` largest values) serve a nucleus of fewer than ``c`` tokens. A row
  whose logits are all finite first gets its normaliser and one mass pass at the probability
  ``q = p / NUCLEUS_Q``: the ``c`` largest tokens carry at most ``W(t_q) + c q`` (those above
  ``t_q``, then at most ``c`` tokens of probability at most ``q``), so when that is below ``p`` the
  nucleus cannot fit, the candidates are skipped and the search starts from the bracket end
  ``t_q`` (``W(t_q) < p``). This is the flat row, whose nucleus holds thousands of tokens.
  When every row is like that (or keeps everything), the search runs right there, on the
  weights ``exp(e - shift)`` the normaliser used: the same search on the same numbers, without
  a second pass of exponentials.
  """
  ops = _one_device(e.shape[-1], estimate) if ops is None else ops
  v = ops.vocab_size
  c = min(v, candidates)
  shift = jnp.where(jnp.isfinite(m), m, 0.0)
  keep_all = jnp.broadcast_to(p >= 1, m.shape)
  log_z_of = lambda: jnp.log(ops.row_sum(jnp.exp(e - shift)))
  # (Under shard_map both branches of a cond must vary over the same mesh axes: those of e.)
  like_e = lambda outs: nm.same_varying((e[..., :1],) + tuple(outs))[1:]
  no_search = lambda: (jnp.zeros(m.shape, bool), jnp.zeros(m.shape, jnp.uint32))
  extract = min(v, NUCLEUS_EXTRACT)
  if c < v:
    finite_rows = ops.all_finite(e) if all_finite is None else all_finite
    full = finite_rows & (p < 1)

    def measure_q():
      weights = jnp.exp(e - shift)  # one exponential for the normaliser and the mass
      z = ops.row_sum(weights)
      log_z = jnp.log(z)
      t = shift + log_z + jnp.log(p / NUCLEUS_Q)
      finite_t = jnp.isfinite(t)  # p <= 0 has no such point
      t = jnp.where(finite_t, jnp.minimum(t, m), m)  # above the max: the max (W = 0 there)
      w = ops.row_sum(jnp.where(e > t, weights, 0.0)) / z
      bound = w + c * jnp.exp((t - shift) - log_z)
      wide = full & (bound < p * (1 - 1e-3)) & ~nm.in_denormal_band(t) & finite_t
      every = jnp.all(wide | keep_all)
      if passes > 0:  # (the search's arguments are those slow() below would give it)
        ok, found = lax.cond(every, lambda: like_e(_nucleus_search(
            e, shift, log_z, p, t, w, wide, passes, extract, ops, weights)),
                             lambda: like_e(no_search()))
      else:
        ok, found = no_search()
      return log_z, t, w, wide, every, ok, found

    log_z_full, t_q, w_q, wide, searched, ok_q, found_q = lax.cond(
        jnp.any(full), lambda: like_e(measure_q()),
        lambda: like_e((jnp.zeros_like(m), m, jnp.zeros_like(m), jnp.zeros_like(full),
                        jnp.zeros((), bool)) + no_search()))
  else:
    finite_rows = full = wide = jnp.zeros(m.shape, bool)
    log_z_full, t_q, w_q = jnp.zeros_like(m), m, jnp.zeros_like(m)
    searched, (ok_q, found_q) = jnp.zeros((), bool), no_search()

  def with_candidates():
    vals = ops.top(e, c)
    # A row with at most c finite logits (after a top-k, say) has its whole distribution in the
    # candidates: its normaliser is summed over them, and when every row is like that there is
    # no pass over the rows.
    sparse = (vals[..., -1:] == nm.NEG_INF) | (c == v)
    from_candidates = _candidates_log_z(vals, shift)
    log_z = jnp.where(full, log_z_full, lax.cond(
        jnp.all(sparse | full), lambda: from_candidates,
        lambda: jnp.where(sparse, from_candidates, log_z_of())))
    above, n_ok, thr = _nucleus_in(vals, shift, log_z, p)
    # (p >= 1 keeps every token: the callers drop those rows, so they only must not search.)
    fits = ((n_ok < c) | (c == v)) & ~nm.in_denormal_band(thr) & ~wide | keep_all
    # n_ok == 0 (p <= 0) gives thr = max: the keep-at-least-one rule.
    search = ~fits & (n_ok == c) & ~nm.in_denormal_band(vals[..., -1:])
    return (log_z, fits, jnp.where(keep_all, jnp.uint32(0), nm.ordered_key(thr)), search,
            vals[..., -1:], above[..., -1:])

  def without_candidates():  # every row wide or keeping all
    return (log_z_full, keep_all, jnp.zeros(m.shape, jnp.uint32), wide, t_q, w_q)

  log_z, fits, fast, search, hi, w_hi = lax.cond(jnp.all(wide | keep_all),
                                                 lambda: like_e(without_candidates()),
                                                 lambda: like_e(with_candidates()))
  # A wide row starts its search from t_q whichever way went: its result never depends on the
  # other rows of its block.
  search, hi, w_hi = search | wide, jnp.where(wide, t_q, hi), jnp.where(wide, w_q, w_hi)

  def slow():
    top = nm.ordered_key(m)
    if passes > 0:
      ok, found = lax.cond(searched, lambda: like_e((ok_q, found_q)), lambda: like_e(
          _nucleus_search(e, shift, log_z, p, hi, w_hi, search, passes, extract, ops)))
    else:
      ok, found = jnp.zeros_like(fits), fast
    partial = jnp.where(fits, fast, jnp.where(ok, jnp.minimum(found, top), top))

    def bisect():
      probs = jnp.exp((e - shift) - log_z)
      y = nm.bisect_threshold(nm.ordered_key(e), probs, p, ops.row_sum)
      return jnp.where(fits | ok, partial, jnp.minimum(_after(y), top))

    return lax.cond(jnp.any(~fits & ~ok), bisect, lambda: partial)

  return lax.cond(jnp.any(~fits), slow, lambda: fast)


def _top_p_key(x, p, candidates=TOP_P_CANDIDATES, passes=NUCLEUS_PASSES, estimate=None):
  """top_p's threshold and +inf rows on float32 logits ``x`` (for ``_write(x, any_inf, thr)``)."""
  active = lambda p: ~(p >= 1)
  thr, any_inf = _when_any(active(p), lambda: nm.dispatch(x, lambda e, m, p, all_finite: lax.cond(
      jnp.any(active(p)), lambda: _nucleus_key(e, m, p, candidates, passes, estimate=estimate,
                                               all_finite=all_finite),
      lambda: _keep_all(m)), (p,), blocked=True, finite=True), x, with_inf=True)
  return jnp.where(active(p), thr, 0), any_inf


@functools.partial(jax.jit, static_argnames=("candidates", "passes", "estimate"))
def _top_p(logits, p, candidates=TOP_P_CANDIDATES, passes=NUCLEUS_PASSES, estimate=None):
  x = logits.astype(jnp.float32)
  thr, any_inf = _top_p_key(x, p, candidates, passes, estimate)
  return _write(x, any_inf, thr, logits.dtype)


@jax.jit
def _top_k_top_p_keys(logits, k, p):
  """The threshold of ``top_p(top_k(logits, k), p)`` from top_k's candidates alone.

  Where top_k keeps at most ``TOP_K_CANDIDATES - 1`` tokens, they are all among its candidates,
  so top_p's candidate path (its whole row in the list; no pass over the logits) runs on them
  as they are, padded to ``TOP_P_CANDIDATES`` with -inf exactly as top_p's own candidates
  would be: the same values give the same threshold. Returns ``(thr, ok)``, both ``[..., 1]``:
  ``keep iff ordered_key(x) >= thr`` in the rows that are ``ok``; the others (top_k off or
  keeping too many, ``+inf``, denormal maxima or thresholds) need the two rules in turn.
  """
  x = logits.astype(jnp.float32)
  v = x.shape[-1]
  c = min(v, TOP_K_CANDIDATES)

  def fn(e, _, k, p):
    kk, vals, kth = _kth_candidate(e, k, c)
    # The row max is the first candidate (NaN is gone; lax.top_k orders values outside the
    # denormal band exactly, and a maximum inside it sends the row to the two rules in turn).
    m = vals[..., :1]
    kept = jnp.where(vals >= kth, vals, nm.NEG_INF)  # top_k's survivors, descending
    pad = max(0, min(v, TOP_P_CANDIDATES) - c)
    cand = jnp.pad(kept, [(0, 0)] * (kept.ndim - 1) + [(0, pad)], constant_values=nm.NEG_INF)
    shift = jnp.where(jnp.isfinite(m), m, 0.0)
    _, n_ok, thr = _nucleus_in(cand, shift, _candidates_log_z(cand, shift), p)
    ok = ((k > 0) & (k < v) & (kk <= c) & ((vals[..., -1:] < kth) | (c == v))
          & (m < jnp.inf) & ~nm.in_denormal_band(m) & ~nm.in_denormal_band(kth)
          & ~nm.in_denormal_band(thr))
    key_p = jnp.where(p >= 1, jnp.uint32(0), nm.ordered_key(thr))
    return jnp.maximum(nm.ordered_key(kth), key_p), ok

  (thr, ok), _ = nm.dispatch(x, fn, (k, p), inf_rule=False, blocked=True, with_max=False)
  return thr, ok


def top_p(logits: Any, p: Any) -> jax.Array:
  r"""Nucleus sampling: keeps the smallest set of most likely tokens whose mass reaches ``p``.

  .. math::
    \text{keep } i \iff \sum_{j:\, p_j > p_i} p_j < p

  so the token that crosses ``p`` is kept, and so is every token tied with it. ``p >= 1`` leaves
  the row unchanged; the most likely token is always kept.

  Args:
    logits: ``[..., V]`` float logits.
    p: cumulative probability in ``(0, 1]``; a scalar or one value per row. Under ``jit`` a value
      ``<= 0`` keeps only the most likely token(s).

  Returns:
    Masked logits, same shape and dtype as ``logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> l = jnp.log(jnp.array([0.5, 0.3, 0.2]))
    >>> jl.top_p(l, 0.7) > -jnp.inf
    Array([ True,  True, False], dtype=bool)

  References:
    Holtzman et al., "The Curious Case of Neural Text Degeneration", 2020.
    https://arxiv.org/abs/1904.09751
  """
  logits = _checks.check_logits(logits)
  _checks.check_range("top_p", p, lo=0.0, hi=1.0, lo_open=True)
  return _top_p(logits, _checks.row_param("top_p", p, logits.shape[:-1], jnp.float32))


# --------------------------------------------------------------------------------------------
# min_p


def _min_p_cut(m: jax.Array, p: jax.Array) -> jax.Array:
  """The smallest logit min_p keeps, ``m + log p``, for row maximum ``m`` (``m`` where
  ``p <= 0``, a row min_p leaves unchanged)."""
  return m + jnp.log(jnp.where(p > 0, jnp.minimum(p, 1.0), 1.0))


def _min_p_key(m: jax.Array, p: jax.Array) -> jax.Array:
  """min_p's threshold for row maximum ``m`` (the top is always kept)."""
  return jnp.minimum(nm.ordered_key(_min_p_cut(m, p)), nm.ordered_key(m))


@jax.jit
def _min_p(logits, p):
  x = logits.astype(jnp.float32)
  thr, any_inf = nm.dispatch(x, lambda e, m, p: _min_p_key(m, p), (p,), blocked=True)
  return _write(x, any_inf, jnp.where(p > 0, thr, 0), logits.dtype)


def min_p(logits: Any, p: Any) -> jax.Array:
  r"""Keeps tokens at least ``p`` times as likely as the most likely one.

  .. math::
    \text{keep } i \iff p_i \ge p \cdot \max_j p_j \iff \ell_i \ge \max_j \ell_j + \log p

  ``p = 0`` leaves the row unchanged; ``p = 1`` keeps only the tokens tied at the maximum.

  Args:
    logits: ``[..., V]`` float logits.
    p: scale in ``[0, 1]``; a scalar or one value per row.

  Returns:
    Masked logits, same shape and dtype as ``logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> l = jnp.log(jnp.array([0.5, 0.3, 0.2]))
    >>> jl.min_p(l, 0.5) > -jnp.inf
    Array([ True,  True, False], dtype=bool)

  References:
    Nguyen et al., "Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM Outputs",
    2024. https://arxiv.org/abs/2407.01082
  """
  logits = _checks.check_logits(logits)
  _checks.check_range("min_p", p, lo=0.0, hi=1.0)
  return _min_p(logits, _checks.row_param("min_p", p, logits.shape[:-1], jnp.float32))


# Mass by which a row's min_p cut must stay inside its nucleus for top_p to be skipped: far above
# the float32 error of either mass (a fixed-point sum of 256-token float32 block sums, each
# within 2**-16 of its value relative, and the candidates' float32 prefix sums).
MIN_P_INSIDE_MARGIN = 1e-4


@functools.partial(jax.jit, static_argnames=("clean", "with_max"))
def _min_p_inside_top_p(logits, p, mp, clean=False, with_max=False):
  """``[..., 1]`` bool: rows whose min_p cut (``mp > 0``) keeps only tokens that top_p ``p``
  keeps too, so that ``min_p(top_p(x))`` equals ``min_p(x)`` there.

  min_p keeps ``x >= t`` with ``t = max + log mp``; top_p keeps every one of those tokens when
  their whole mass is below ``p`` (the mass strictly above the smallest of them is at most
  that). The test asks for a margin of ``MIN_P_INSIDE_MARGIN`` below ``p``, so both rules'
  float32 rounding cannot turn it: where it holds, the full top_p would keep the same tokens.
  Two passes (the normaliser and the mass above ``t``) instead of the nucleus search. Rows with
  ``+inf``, no finite logit, or ``t`` or the maximum in the denormal band answer False.
  ``clean``: the caller guarantees logits without NaN (a truncation's output), so the
  sanitizing select is skipped (XLA would write it out for the three passes that read it).
  ``with_max``: also return the row maximum, ``(inside, m)``.
  """
  x = logits.astype(jnp.float32) if clean else nm.sanitize(logits)
  m = jnp.max(x, axis=-1, keepdims=True)
  t = _min_p_cut(m, mp)
  plain = ((mp > 0) & ~(p >= 1) & jnp.isfinite(m) & ~nm.in_denormal_band(m)
           & ~nm.in_denormal_band(t))
  w = jnp.exp(x - jnp.where(plain, m, 0.0))
  v = x.shape[-1]
  z = nm.exact_sum(w, v)
  kept = nm.exact_sum(jnp.where(x >= t, w, 0.0), v)  # t is normal: the float comparison is exact
  inside = plain & (kept < (p - MIN_P_INSIDE_MARGIN) * z)
  return (inside, m) if with_max else inside


# --------------------------------------------------------------------------------------------
# typical_p


@jax.jit
def _typical_p(logits, mass):
  x = nm.sanitize(logits)
  active = ~(mass >= 1)

  def compute(_):
    e = nm.effective(x)
    probs, logp = nm.probs_and_logprobs(e)
    h = nm.entropy_terms(probs, logp)
    # Larger key = more typical (smaller |surprise - H|); masked tokens get score inf, key minimal.
    keys = nm.ordered_key(-jnp.abs(-logp - h))
    y = nm.bisect_threshold(keys, probs, mass)
    keep = (keys > y) | (keys == jnp.max(keys, axis=-1, keepdims=True))
    return _masked(x, keep, active)

  out = _cond(nm.any_active(active), compute, lambda _: x, None)
  return nm.finish(out, logits.dtype)


def typical_p(logits: Any, mass: Any) -> jax.Array:
  r"""Locally typical sampling: keeps the tokens whose surprise is closest to the entropy.

  .. math::
    H = -\sum_j p_j \log p_j, \quad s_i = \lvert -\log p_i - H \rvert, \quad
    \text{keep } i \iff \sum_{j:\, s_j < s_i} p_j < m

  ``m >= 1`` leaves the row unchanged; the most typical token (smallest score, with its ties) is
  always kept, as in Hugging Face.

  Args:
    logits: ``[..., V]`` float logits.
    mass: typical mass ``m`` in ``(0, 1]``; a scalar or one value per row.

  Returns:
    Masked logits, same shape and dtype as ``logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> l = jnp.log(jnp.array([0.4, 0.3, 0.2, 0.1]))
    >>> jl.typical_p(l, 0.45) > -jnp.inf
    Array([False,  True,  True, False], dtype=bool)

  References:
    Meister et al., "Locally Typical Sampling", 2023. https://arxiv.org/abs/2202.00666
  """
  logits = _checks.check_logits(logits)
  _checks.check_range("typical_p", mass, lo=0.0, hi=1.0, lo_open=True)
  return _typical_p(logits, _checks.row_param("typical_p", mass, logits.shape[:-1], jnp.float32))


# --------------------------------------------------------------------------------------------
# epsilon and eta


@jax.jit
def _epsilon_cutoff(logits, eps):
  return _unless_identity(eps > 0, _epsilon_cutoff_rule, logits, eps)


def _epsilon_cutoff_rule(logits, eps):
  x = nm.sanitize(logits)
  e = nm.effective(x)
  probs, _ = nm.probs_and_logprobs(e)
  keep = nm.keep_top(e, probs >= eps)
  return nm.finish(_masked(x, keep, eps > 0), logits.dtype)


def epsilon_cutoff(logits: Any, epsilon: Any) -> jax.Array:
  r"""Truncation sampling: keeps tokens whose probability is at least ``epsilon``.

  .. math::
    \text{keep } i \iff p_i \ge \epsilon

  ``epsilon = 0`` leaves the row unchanged; if no token reaches ``epsilon`` the most likely
  one(s) are kept.

  Args:
    logits: ``[..., V]`` float logits.
    epsilon: probability floor in ``[0, 1]``; a scalar or one value per row.

  Returns:
    Masked logits, same shape and dtype as ``logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> l = jnp.log(jnp.array([0.6, 0.3, 0.1]))
    >>> jl.epsilon_cutoff(l, 0.2) > -jnp.inf
    Array([ True,  True, False], dtype=bool)

  References:
    Hewitt, Manning and Liang, "Truncation Sampling as Language Model Desmoothing", 2022.
    https://arxiv.org/abs/2210.15191
  """
  logits = _checks.check_logits(logits)
  _checks.check_range("epsilon_cutoff", epsilon, lo=0.0, hi=1.0)
  return _epsilon_cutoff(
      logits, _checks.row_param("epsilon_cutoff", epsilon, logits.shape[:-1], jnp.float32))


@jax.jit
def _eta_cutoff(logits, eps):
  return _unless_identity(eps > 0, _eta_cutoff_rule, logits, eps)


def _eta_cutoff_rule(logits, eps):
  x = nm.sanitize(logits)
  e = nm.effective(x)
  probs, logp = nm.probs_and_logprobs(e)
  h = nm.entropy_terms(probs, logp)
  safe_eps = jnp.clip(eps, 0.0, 1.0)
  eta = jnp.minimum(safe_eps, jnp.sqrt(safe_eps) * jnp.exp(-h))
  keep = nm.keep_top(e, probs >= eta)
  return nm.finish(_masked(x, keep, eps > 0), logits.dtype)


def eta_cutoff(logits: Any, epsilon: Any) -> jax.Array:
  r"""Eta sampling: an entropy-adaptive probability floor.

  .. math::
    \eta = \min\big(\epsilon, \sqrt{\epsilon}\, e^{-H}\big), \quad H = -\sum_j p_j \log p_j,
    \quad \text{keep } i \iff p_i \ge \eta

  ``epsilon = 0`` leaves the row unchanged; if no token reaches ``eta`` the most likely one(s)
  are kept.

  Args:
    logits: ``[..., V]`` float logits.
    epsilon: ``epsilon`` in ``[0, 1]``; a scalar or one value per row.

  Returns:
    Masked logits, same shape and dtype as ``logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> l = jnp.log(jnp.array([0.6, 0.3, 0.1]))
    >>> jl.eta_cutoff(l, 0.2) > -jnp.inf
    Array([ True,  True, False], dtype=bool)

  References:
    Hewitt, Manning and Liang, "Truncation Sampling as Language Model Desmoothing", 2022.
    https://arxiv.org/abs/2210.15191
  """
  logits = _checks.check_logits(logits)
  _checks.check_range("eta_cutoff", epsilon, lo=0.0, hi=1.0)
  return _eta_cutoff(
      logits, _checks.row_param("eta_cutoff", epsilon, logits.shape[:-1], jnp.float32))


# --------------------------------------------------------------------------------------------
# top_n_sigma


@jax.jit
def _top_n_sigma(logits, n):
  return _unless_identity(n > 0, _top_n_sigma_rule, logits, n)


def _top_n_sigma_rule(logits, n):
  x = nm.sanitize(logits)
  e = nm.effective(x)
  finite = jnp.isfinite(e)
  count = jnp.maximum(jnp.sum(finite, axis=-1, keepdims=True), 1)
  # Population std of the finite logits. Rows holding huge logits are scaled by 2**-100 first so
  # the squares cannot overflow; a power of two keeps the scaling exact, and a normal reciprocal
  # survives XLA's flush-to-zero (dividing by 3e38 would turn into multiplying by 0).
  big = jnp.max(jnp.where(finite, jnp.abs(e), 0.0), axis=-1, keepdims=True) > 2.0**50
  factor = jnp.where(big, jnp.float32(2.0**-100), jnp.float32(1.0))
  z = jnp.where(finite, e * factor, 0.0)
  mean = jnp.sum(z, axis=-1, keepdims=True) / count
  var = jnp.sum(jnp.where(finite, jnp.square(z - mean), 0.0), axis=-1, keepdims=True) / count
  std = jnp.sqrt(var) / factor
  active = n > 0
  thr = nm.row_max(e) - jnp.where(active, n, 0.0) * std
  keep = nm.keep_top(e, e >= thr)
  return nm.finish(_masked(x, keep, active), logits.dtype)


def top_n_sigma(logits: Any, n: Any) -> jax.Array:
  r"""Top-nσ: keeps logits within ``n`` standard deviations of the maximum logit.

  .. math::
    \text{keep } i \iff \ell_i \ge \max_j \ell_j - n \,\sigma, \quad
    \sigma = \operatorname{std}(\{\ell_j : \ell_j \text{ finite}\})

  with the population standard deviation (ddof 0) over the row's finite logits. ``n <= 0``
  leaves the row unchanged. The rule reads logits, not probabilities, so it is invariant to
  temperature applied before it.

  Args:
    logits: ``[..., V]`` float logits.
    n: number of standard deviations; a scalar or one value per row.

  Returns:
    Masked logits, same shape and dtype as ``logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> jl.top_n_sigma(jnp.array([0.0, 1.0, 2.0, 3.0]), 1.0)
    Array([-inf, -inf,   2.,   3.], dtype=float32)

  References:
    Tang et al., "Top-nσ: Not All Logits Are You Need", 2024. https://arxiv.org/abs/2411.07641
  """
  logits = _checks.check_logits(logits)
  _checks.check_range("top_n_sigma", n, finite=True)
  return _top_n_sigma(logits, _checks.row_param("top_n_sigma", n, logits.shape[:-1], jnp.float32))
