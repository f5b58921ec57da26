"""Independent float64 NumPy reference for the jaxlogits transforms.

This module is the oracle the tests hold the JAX implementation to. It follows
``semantics.md`` (the semantics contract) literally, one row at a time, in float64, with no
attempt at speed. It imports nothing from ``jaxlogits``.

Conventions shared by every function here
-----------------------------------------
* A *row* is a 1-D array of logits (length ``V >= 1``). It is copied to float64 first.
* NaN logits are treated as ``-inf`` (masked), before anything else happens.
* The distribution of a row, ``p = softmax(l)``, is taken over its finite logits. If the row
  has any ``+inf`` logit, its distribution is uniform over the ``+inf`` entries and every other
  token has probability 0. A row with no logit above ``-inf`` has no distribution: its
  ``softmax_ref`` is all zeros and every truncation leaves it unchanged (all ``-inf``).
* Truncations (top_k, top_p, min_p, typical_p, epsilon, eta, top_n_sigma, greedy) only ever
  replace entries by ``-inf``; surviving entries keep their exact input value. Ties at a
  threshold are kept. A truncation never empties a row that has a logit above ``-inf``: when
  the rule itself would keep nothing, it keeps every token tied at the maximum logit (for
  typical_p: every token tied at the minimal typical score).
* Arithmetic transforms (temperature, logit_bias, penalties, guidance) compute in float64 and
  then apply the float32 overflow rule of the implementation: where every operand of an entry
  is finite, the result is clamped to ``[-F32_MAX, F32_MAX]`` (``F32_MAX = 3.4028235e38``), so a
  finite row stays finite even when float32 arithmetic would overflow. An entry with an
  infinite operand follows IEEE arithmetic (``+inf / t = +inf``, ``-inf * r = -inf``,
  ``finite + (-inf) bias = -inf``) and a NaN result becomes ``-inf``.
* Every output has NaN replaced by ``-inf``.

Mass-based filters (top_p, typical_p, epsilon, eta) read the distribution of the row they are
given; value-based ones (top_k, min_p, top_n_sigma) compare logit values directly, with the same
``+inf`` convention (when ``max(l) = +inf`` only the ``+inf`` entries survive an active min_p or
top_n_sigma; top_k compares values, and ``+inf >= anything``).

Near-boundary detection
-----------------------
The implementation computes in float32, so a keep/drop decision lying within float32 rounding
of its threshold may legitimately differ from this float64 reference. Each truncation has a
``<name>_margin(row, param)`` returning how far the row is from any such knife edge (``+inf``
when nothing is close or the parameter is an identity). Tests skip examples whose margin is
below about ``1e-4``. See the individual docstrings for what each margin measures; the
mass-based ones also detect *near ties* (distinct logits, or typical scores, so close that
float32 may order them differently or tie them) when such a near tie straddles the threshold.

Helpers: :func:`apply_rows` maps a row function over ``[..., V]`` arrays with per-row
parameters; :func:`row_margins` does the same for margins; :func:`pipeline_ref` applies the
standard processing order of ``semantics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = [
    "F32_MAX",
    "F32_TINY",
    "NEAR_TIE_RTOL",
    "PIPELINE_DEFAULTS",
    "apply_rows",
    "clamp_f32",
    "clean_row",
    "entropy_ref",
    "epsilon_cutoff_margin",
    "epsilon_cutoff_ref",
    "eta_cutoff_margin",
    "eta_cutoff_ref",
    "eta_threshold_ref",
    "frequency_penalty_ref",
    "greedy_margin",
    "guidance_ref",
    "log_softmax_ref",
    "logit_bias_ref",
    "min_p_margin",
    "min_p_ref",
    "no_repeat_ngram_ref",
    "pipeline_margin",
    "pipeline_ref",
    "pipeline_steps_ref",
    "presence_penalty_ref",
    "repetition_penalty_ref",
    "row_margins",
    "rowvec",
    "softmax_ref",
    "temperature_ref",
    "token_counts_ref",
    "top_k_margin",
    "top_k_ref",
    "top_n_sigma_margin",
    "top_n_sigma_ref",
    "top_p_margin",
    "top_p_ref",
    "typical_p_margin",
    "typical_p_ref",
    "typical_scores_ref",
]

#: Largest finite float32; finite inputs whose output overflows are clamped to +-F32_MAX.
F32_MAX = float(np.finfo(np.float32).max)
#: Smallest positive normal float32; floor of the scales used by the relative margins.
F32_TINY = float(np.finfo(np.float32).tiny)
#: Two distinct order keys (logits for top_p, typical scores for typical_p) closer than this,
#: relative to their scale, count as a *near tie* that float32 may order either way.
NEAR_TIE_RTOL = 1e-5

_INF = math.inf


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------
def clean_row(row) -> np.ndarray:
    """Return ``row`` as a fresh 1-D float64 array with NaN replaced by ``-inf``.

    Args:
      row: array-like of logits, one dimension, at least one entry (any float dtype, including
        float16 and bfloat16).

    Returns:
      A new float64 array; the input is never modified.
    """
    x = np.array(row, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"a row must be 1-D, got shape {x.shape}")
    if x.size == 0:
        raise ValueError("a row must have at least one entry")
    x[np.isnan(x)] = -_INF
    return x


def _finish(out: np.ndarray) -> np.ndarray:
    """Replace NaN by ``-inf`` in place and return ``out``."""
    out[np.isnan(out)] = -_INF
    return out


def clamp_f32(values, where=None) -> np.ndarray:
    """Clamp to ``[-F32_MAX, F32_MAX]`` (float32 overflow rule), optionally only ``where``.

    NaN entries are left alone (callers turn them into ``-inf``).

    Args:
      values: array-like of float64 values.
      where: optional boolean mask of the entries to clamp, which may include entries that
        overflowed to ``+-inf`` (default: the finite entries, so ``+-inf`` stay).

    Returns:
      A new float64 array.
    """
    out = np.array(values, dtype=np.float64)
    sel = ~np.isnan(out)
    sel &= np.isfinite(out) if where is None else np.asarray(where, dtype=bool)
    out[sel] = np.clip(out[sel], -F32_MAX, F32_MAX)
    return out


def _scalar(value, name: str) -> float:
    """A finite real scalar parameter, as a Python float (ValueError otherwise)."""
    v = np.asarray(value)
    if v.ndim != 0:
        raise ValueError(f"{name} must be a scalar for a single row, got shape {v.shape}")
    if v.dtype == bool or not np.issubdtype(v.dtype, np.number):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return f


def _int_scalar(value, name: str) -> int:
    """An integral scalar parameter, as a Python int (ValueError otherwise)."""
    f = _scalar(value, name)
    if f != int(f):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(f)


def _counts(counts, v: int) -> np.ndarray:
    """Per-token counts of one row as an int64 array of length ``v``."""
    c = np.asarray(counts)
    if c.shape != (v,):
        raise ValueError(f"counts must have shape ({v},), got {c.shape}")
    if not (np.issubdtype(c.dtype, np.integer) or c.dtype == bool):
        if np.any(c != np.round(c)):
            raise ValueError("counts must be integers")
    return c.astype(np.int64)


def _has_support(x: np.ndarray) -> bool:
    """True when the (clean) row has a logit above ``-inf``."""
    return bool(np.any(x > -_INF))


def _keep(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Apply a keep mask with the keep-at-least-one rule: if nothing is kept in a row that has
    support, keep every token tied at the maximum logit."""
    valid = x > -_INF
    keep = keep & valid
    if not keep.any() and valid.any():
        keep = x == x.max()
    return np.where(keep, x, -_INF)


# ----------------------------------------------------------------------------------------------
# distributions
# ----------------------------------------------------------------------------------------------
def softmax_ref(row) -> np.ndarray:
    """Probabilities of a row, float64.

    ``exp(l - max) / sum(exp(l - max))`` over the finite logits; NaN counts as ``-inf``. If the
    row has ``n >= 1`` entries equal to ``+inf`` the result is ``1/n`` on those and 0 elsewhere.
    A row with no logit above ``-inf`` gives all zeros.

    Args:
      row: 1-D logits.

    Returns:
      1-D float64 probabilities (summing to 1, or all zero).
    """
    x = clean_row(row)
    pos = x == _INF
    if pos.any():
        return pos / pos.sum()
    fin = np.isfinite(x)
    if not fin.any():
        return np.zeros_like(x)
    e = np.where(fin, np.exp(x - x[fin].max()), 0.0)
    return e / e.sum()


def log_softmax_ref(row) -> np.ndarray:
    """Log-probabilities of a row, float64 (same conventions as :func:`softmax_ref`).

    ``l - max - log(sum(exp(l - max)))`` on finite logits, ``-inf`` on masked ones; with ``n``
    entries at ``+inf``: ``-log(n)`` on those and ``-inf`` elsewhere; an all ``-inf`` row gives
    all ``-inf``. Values are NOT clamped to float32 range (a float32 computation of, say,
    ``[3e38, -3e38]`` would overflow); use :func:`clamp_f32` when comparing to float32 output.

    Args:
      row: 1-D logits.

    Returns:
      1-D float64 log-probabilities.
    """
    x = clean_row(row)
    out = np.full_like(x, -_INF)
    pos = x == _INF
    if pos.any():
        out[pos] = -math.log(int(pos.sum()))
        return out
    fin = np.isfinite(x)
    if not fin.any():
        return out
    m = x[fin].max()
    z = x[fin] - m
    out[fin] = z - math.log(np.exp(z).sum())
    return out


def entropy_ref(row) -> float:
    """Shannon entropy of the row's distribution in nats, ``-sum p log p`` with ``0 log 0 = 0``.

    A row with ``+inf`` entries has entropy ``log(n)`` (uniform over its ``n`` ``+inf``
    entries). A row with no logit above ``-inf`` has entropy 0 (empty sum; this reference's
    choice, the contract does not say).

    Args:
      row: 1-D logits.

    Returns:
      A Python float.
    """
    logp = log_softmax_ref(row)
    p = np.exp(logp)
    terms = np.where(p > 0, p * np.where(np.isfinite(logp), logp, 0.0), 0.0)
    return float(-terms.sum())


# ----------------------------------------------------------------------------------------------
# arithmetic transforms
# ----------------------------------------------------------------------------------------------
def temperature_ref(row, t) -> np.ndarray:
    """Temperature scaling of one row.

    ``t > 0``: ``l / t`` (finite entries clamped to ``+-F32_MAX`` on overflow; ``+-inf`` stay).
    ``t == 1`` is the identity. ``t == 0`` is greedy: the argmax (lowest index on ties, a
    ``+inf`` entry if any) keeps its value and every other entry becomes ``-inf``; a row with
    no logit above ``-inf`` stays all ``-inf``.

    Args:
      row: 1-D logits.
      t: temperature, ``t >= 0``.

    Returns:
      The transformed row, float64.
    """
    t = _scalar(t, "temperature")
    if t < 0:
        raise ValueError(f"temperature must be >= 0, got {t}")
    x = clean_row(row)
    if t == 0.0:
        out = np.full_like(x, -_INF)
        i = int(np.argmax(x))  # first occurrence of the maximum
        out[i] = x[i]
        return out
    if t == 1.0:
        return x
    with np.errstate(over="ignore"):
        out = x / t
    return _finish(clamp_f32(out, where=np.isfinite(x)))


def logit_bias_ref(row, b) -> np.ndarray:
    """Additive logit bias ``l + b``.

    ``b`` is a scalar or an array broadcastable to the row. Where both ``l`` and ``b`` are
    finite the sum is clamped to ``+-F32_MAX``; an infinite bias acts by IEEE arithmetic (a
    ``-inf`` bias bans the token; ``+inf + -inf`` is NaN, hence ``-inf``).

    Args:
      row: 1-D logits.
      b: bias, scalar or array of shape ``(V,)`` (or broadcastable to it).

    Returns:
      The biased row, float64.
    """
    x = clean_row(row)
    b = np.broadcast_to(np.asarray(b, dtype=np.float64), x.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        out = x + b
    return _finish(clamp_f32(out, where=np.isfinite(x) & np.isfinite(b)))


def repetition_penalty_ref(row, counts, r) -> np.ndarray:
    """CTRL / Hugging Face repetition penalty.

    For tokens with ``count > 0``: ``l / r`` if ``l > 0`` else ``l * r`` (so ``r > 1`` always
    makes a seen token less likely, whatever its sign). Other tokens are unchanged; ``r == 1``
    is the identity. Finite results are clamped to ``+-F32_MAX``.

    Args:
      row: 1-D logits.
      counts: integer array ``(V,)``, occurrences of each token in the context the caller
        chose (prompt and output, or output only).
      r: penalty, ``r > 0``.

    Returns:
      The penalised row, float64.
    """
    r = _scalar(r, "repetition_penalty")
    if r <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {r}")
    x = clean_row(row)
    c = _counts(counts, x.size)
    seen = c > 0
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.where(seen, np.where(x > 0, x / r, x * r), x)
    return _finish(clamp_f32(out, where=np.isfinite(x)))


def frequency_penalty_ref(row, counts, f) -> np.ndarray:
    """OpenAI frequency penalty ``l - f * count`` (identity ``f == 0``; clamped to float32).

    Args:
      row: 1-D logits.
      counts: integer array ``(V,)`` of occurrences.
      f: penalty, any finite real (negative values reward repeats).

    Returns:
      The penalised row, float64.
    """
    f = _scalar(f, "frequency_penalty")
    x = clean_row(row)
    c = _counts(counts, x.size).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        out = x - f * c
    return _finish(clamp_f32(out, where=np.isfinite(x)))


def presence_penalty_ref(row, counts, q) -> np.ndarray:
    """OpenAI presence penalty ``l - q * (count > 0)`` (identity ``q == 0``; clamped).

    Args:
      row: 1-D logits.
      counts: integer array ``(V,)`` of occurrences.
      q: penalty, any finite real.

    Returns:
      The penalised row, float64.
    """
    q = _scalar(q, "presence_penalty")
    x = clean_row(row)
    c = _counts(counts, x.size)
    with np.errstate(over="ignore", invalid="ignore"):
        out = x - q * (c > 0).astype(np.float64)
    return _finish(clamp_f32(out, where=np.isfinite(x)))


def guidance_ref(cond, uncond, s) -> np.ndarray:
    """Classifier-free guidance (Hugging Face unbatched CFG).

    ``lc = log_softmax(cond)``, ``lu = log_softmax(uncond)`` (both with the NaN and ``+inf``
    conventions of :func:`log_softmax_ref`). ``s == 1`` returns ``lc`` and ``s == 0`` returns
    ``lu`` exactly (after clamping to float32 range). Otherwise the output is
    ``lu + s * (lc - lu)`` clamped to ``+-F32_MAX``, and ``-inf`` wherever ``lc`` or ``lu`` is
    ``-inf``. For every ``s`` (0 included), if that leaves no finite entry while ``lc`` has one,
    the output is ``lc``: the conditional row is finite, so the result must be too.

    Args:
      cond: 1-D conditional logits.
      uncond: 1-D unconditional logits, same length.
      s: guidance scale, any finite real.

    Returns:
      The guided row (log-probability-like values), float64.
    """
    s = _scalar(s, "guidance_scale")
    lc = clamp_f32(log_softmax_ref(cond))
    lu = clamp_f32(log_softmax_ref(uncond))
    if lc.shape != lu.shape:
        raise ValueError(f"cond and uncond must have the same shape, got {lc.shape} and {lu.shape}")
    if s == 1.0:
        return lc
    if s == 0.0:
        out = lu
    else:
        both = np.isfinite(lc) & np.isfinite(lu)
        with np.errstate(over="ignore", invalid="ignore"):
            mixed = lu + s * (lc - lu)
        out = np.where(both, clamp_f32(mixed), -_INF)
    if not np.isfinite(out).any() and np.isfinite(lc).any():
        return lc
    return _finish(out)


def no_repeat_ngram_ref(row, tokens, n, length=None) -> np.ndarray:
    """Hugging Face ``NoRepeatNGramLogitsProcessor`` for one row.

    With context ``t[0..L-1]`` (``tokens[:length]``), every ``j`` with ``n-1 <= j <= L-1`` and
    ``t[j-n+1 .. j-1] == t[L-n+1 .. L-1]`` bans ``t[j]`` (sets it to ``-inf``): the tokens that
    would complete an n-gram already present. ``n == 1`` bans every token of the context;
    ``n == 0`` is the identity; when ``L < n`` no n-gram exists and nothing is banned. Ids
    outside ``[0, V)`` (padding) take part in the matching as plain values but are never banned.

    Args:
      row: 1-D logits of length ``V``.
      tokens: 1-D integer context of this row.
      n: n-gram size, ``n >= 0``.
      length: optional number of leading context tokens to use (default: all).

    Returns:
      The row with banned tokens at ``-inf``, float64.
    """
    n = _int_scalar(n, "no_repeat_ngram_size")
    if n < 0:
        raise ValueError(f"no_repeat_ngram_size must be >= 0, got {n}")
    x = clean_row(row)
    t = [int(v) for v in np.asarray(tokens).reshape(-1)]
    if length is not None:
        t = t[: _int_scalar(length, "length")]
    big_l = len(t)
    if n == 0 or big_l < n:
        return x
    prefix = t[big_l - n + 1 :] if n > 1 else []
    out = x.copy()
    for j in range(n - 1, big_l):
        if t[j - n + 1 : j] == prefix and 0 <= t[j] < x.size:
            out[t[j]] = -_INF
    return out


def token_counts_ref(tokens, vocab_size, pad_id=None, length=None) -> np.ndarray:
    """Occurrence counts of each token id, for the penalties.

    Args:
      tokens: integer array ``[..., L]`` of contexts (the caller picks prompt+output or output
        only).
      vocab_size: ``V``.
      pad_id: optional id that is never counted (padding).
      length: optional valid length per context (scalar or broadcastable to
        ``tokens.shape[:-1]``); positions ``>= length`` are not counted.

    Returns:
      int64 array ``[..., V]``. Ids outside ``[0, V)`` are ignored (this reference's choice).
    """
    tok = np.asarray(tokens)
    if tok.ndim == 0:
        raise ValueError("tokens must have at least one dimension")
    v = int(vocab_size)
    batch = tok.shape[:-1]
    big_l = tok.shape[-1]
    lens = np.broadcast_to(np.asarray(big_l if length is None else length), batch)
    out = np.zeros(batch + (v,), dtype=np.int64)
    for idx in np.ndindex(batch):
        ctx = tok[idx][: int(lens[idx])]
        for tid in ctx:
            tid = int(tid)
            if pad_id is not None and tid == int(pad_id):
                continue
            if 0 <= tid < v:
                out[idx + (tid,)] += 1
    return out


# ----------------------------------------------------------------------------------------------
# truncations
# ----------------------------------------------------------------------------------------------
def top_k_ref(row, k) -> np.ndarray:
    """Top-k with ties kept: keep ``l_i >= kth_largest(l)``.

    ``k <= 0`` or ``k >= V`` leaves the row unchanged (NaN still becomes ``-inf``). When fewer
    than ``k`` entries are above ``-inf`` the k-th largest is ``-inf`` and nothing changes.

    Args:
      row: 1-D logits.
      k: integer.

    Returns:
      The truncated row, float64.
    """
    k = _int_scalar(k, "top_k")
    x = clean_row(row)
    if k <= 0 or k >= x.size:
        return x
    kth = np.sort(x)[::-1][k - 1]
    return np.where(x >= kth, x, -_INF)


def _strict_mass_before(keys: np.ndarray, p: np.ndarray):
    """Group tokens by exactly equal key; return (unique keys ascending, inverse, group mass,
    mass of the groups with a strictly smaller key)."""
    uniq, inv = np.unique(keys, return_inverse=True)
    g = np.zeros(uniq.size)
    np.add.at(g, inv, p)
    before = np.concatenate([[0.0], np.cumsum(g)[:-1]])
    return uniq, inv, g, before


def top_p_ref(row, p) -> np.ndarray:
    """Nucleus (top-p) truncation with ties kept.

    Token ``i`` is kept iff the probability mass of the tokens *strictly* more likely than
    ``i`` (strictly larger logit; exact logit comparison) is ``< p``; so the token that crosses
    ``p`` is kept, and tokens tied with it too. ``p >= 1`` is the identity; ``p == 0`` keeps the
    tokens tied at the maximum (keep-at-least-one). Probabilities follow :func:`softmax_ref`.

    Args:
      row: 1-D logits.
      p: nucleus mass, ``p >= 0``.

    Returns:
      The truncated row, float64.
    """
    p = _scalar(p, "top_p")
    if p < 0:
        raise ValueError(f"top_p must be >= 0, got {p}")
    x = clean_row(row)
    if p >= 1.0 or not _has_support(x):
        return x
    probs = softmax_ref(x)
    valid = x > -_INF
    _, inv, _, before = _strict_mass_before(-x[valid], probs[valid])
    keep = np.zeros(x.size, dtype=bool)
    keep[valid] = before[inv] < p
    return _keep(x, keep)


def min_p_ref(row, p) -> np.ndarray:
    """Min-p truncation: keep ``p_i >= p * max(p)``, i.e. ``l_i >= l_max + log(p)``.

    ``p == 0`` is the identity. With ``l_max = +inf`` only the ``+inf`` entries survive. A value
    ``p > 1`` (outside the usual range) keeps just the maximum's ties.

    Args:
      row: 1-D logits.
      p: ``p >= 0`` (normally in ``[0, 1]``).

    Returns:
      The truncated row, float64.
    """
    p = _scalar(p, "min_p")
    if p < 0:
        raise ValueError(f"min_p must be >= 0, got {p}")
    x = clean_row(row)
    if p == 0.0 or not _has_support(x):
        return x
    thr = x.max() + math.log(p)
    return _keep(x, x >= thr)


def typical_scores_ref(row):
    """Typical-sampling quantities of a row: ``(p, H, scores)``.

    ``p`` from :func:`softmax_ref`, ``H = -sum p log p`` (nats), and
    ``s_i = abs(-log p_i - H)`` (``+inf`` where ``p_i = 0`` exactly, i.e. masked tokens and the
    finite tokens of a ``+inf`` row). ``-log p_i`` is taken from :func:`log_softmax_ref`, so a
    finite token whose probability underflows float64 still gets a finite score.
    """
    x = clean_row(row)
    logp = log_softmax_ref(x)
    p = np.exp(logp)
    h = entropy_ref(x)
    scores = np.abs(-logp - h)
    return p, h, scores


def typical_p_ref(row, m) -> np.ndarray:
    """Locally typical sampling (Hugging Face ``TypicalLogitsWarper``), ties kept.

    ``H = -sum p log p``; score ``s_i = |-log p_i - H|``; token ``i`` is kept iff the mass of
    the tokens with a *strictly* smaller score is ``< m``. ``m >= 1`` is the identity; ``m == 0``
    keeps the tokens tied at the minimal score (keep-at-least-one keeps the most typical).

    Args:
      row: 1-D logits.
      m: typical mass, ``m >= 0``.

    Returns:
      The truncated row, float64.

    References:
      Meister et al., "Locally Typical Sampling", https://arxiv.org/abs/2202.00666
    """
    m = _scalar(m, "typical_p")
    if m < 0:
        raise ValueError(f"typical_p must be >= 0, got {m}")
    x = clean_row(row)
    if m >= 1.0 or not _has_support(x):
        return x
    p, _, s = typical_scores_ref(x)
    valid = x > -_INF
    _, inv, _, before = _strict_mass_before(s[valid], p[valid])
    keep = np.zeros(x.size, dtype=bool)
    keep[valid] = before[inv] < m
    if not keep.any():
        keep = valid & (s == s[valid].min())
    return np.where(keep, x, -_INF)


def epsilon_cutoff_ref(row, e) -> np.ndarray:
    """Epsilon sampling: keep ``p_i >= e``; if none, keep the tokens tied at the maximum.

    ``e == 0`` is the identity.

    Args:
      row: 1-D logits.
      e: cutoff, ``e >= 0``.

    Returns:
      The truncated row, float64.

    References:
      Hewitt et al., "Truncation Sampling as Language Model Desmoothing",
      https://arxiv.org/abs/2210.15191
    """
    e = _scalar(e, "epsilon_cutoff")
    if e < 0:
        raise ValueError(f"epsilon_cutoff must be >= 0, got {e}")
    x = clean_row(row)
    if e == 0.0 or not _has_support(x):
        return x
    return _keep(x, softmax_ref(x) >= e)


def eta_threshold_ref(row, e) -> float:
    """The eta-sampling threshold ``min(e, sqrt(e) * exp(-H))`` of a row."""
    e = _scalar(e, "eta_cutoff")
    return min(e, math.sqrt(e) * math.exp(-entropy_ref(row)))


def eta_cutoff_ref(row, e) -> np.ndarray:
    """Eta sampling: ``eta = min(e, sqrt(e) * exp(-H))``; keep ``p_i >= eta`` (else the max's
    ties). ``e == 0`` is the identity.

    Args:
      row: 1-D logits.
      e: ``e >= 0``.

    Returns:
      The truncated row, float64.

    References:
      Hewitt et al., "Truncation Sampling as Language Model Desmoothing",
      https://arxiv.org/abs/2210.15191
    """
    e = _scalar(e, "eta_cutoff")
    if e < 0:
        raise ValueError(f"eta_cutoff must be >= 0, got {e}")
    x = clean_row(row)
    if e == 0.0 or not _has_support(x):
        return x
    return _keep(x, softmax_ref(x) >= eta_threshold_ref(x, e))


def _finite_std(x: np.ndarray) -> float:
    """Population standard deviation (ddof=0) of the finite entries (0 if none)."""
    fin = x[np.isfinite(x)]
    return float(np.std(fin)) if fin.size else 0.0


def top_n_sigma_ref(row, n) -> np.ndarray:
    """Top-n-sigma (llama.cpp): keep ``l_i >= l_max - n * std(finite l)``.

    The standard deviation is the population one (ddof=0) over the finite logits only.
    ``n <= 0`` is the identity. With ``l_max = +inf`` only the ``+inf`` entries survive.

    Args:
      row: 1-D logits.
      n: number of standard deviations.

    Returns:
      The truncated row, float64.

    References:
      Tang et al., "Top-nsigma: Not All Logits Are You Need", https://arxiv.org/abs/2411.07641
    """
    n = _scalar(n, "top_n_sigma")
    x = clean_row(row)
    if n <= 0 or not _has_support(x):
        return x
    thr = x.max() - n * _finite_std(x)
    return _keep(x, x >= thr)


# ----------------------------------------------------------------------------------------------
# margins
# ----------------------------------------------------------------------------------------------
def _order_margin(uniq_keys, group_mass, before, thr, near_next) -> float:
    """Margin of a decision ``mass strictly before < thr`` along an ordering.

    Consecutive distinct keys flagged by ``near_next`` form clusters that float32 may tie or
    reorder; within a cluster the mass strictly before a member can be anything from the mass
    before the cluster (``lo``) to the mass before its last group (``hi``). The margin is 0
    when ``thr`` lies in ``(lo, hi]`` of some cluster, else the smallest distance from ``thr``
    to any cluster endpoint. The first group alone is skipped: it is always kept.
    """
    k = uniq_keys.size
    best = _INF
    a = 0
    while a < k:
        b = a
        while b + 1 < k and near_next[b]:
            b += 1
        if not (a == 0 and b == 0):
            lo, hi = before[a], before[b]
            if lo < thr <= hi:
                return 0.0
            best = min(best, abs(thr - lo), abs(thr - hi))
        a = b + 1
    return best


def top_p_margin(row, p) -> float:
    """Distance of a top-p decision from its knife edge (absolute, in probability mass).

    Over the distinct logit values below the maximum: ``|mass_strictly_above - p|``. Distinct
    logits closer than ``NEAR_TIE_RTOL * max(1, l_max - l)`` are treated as a near tie (float32
    may give them equal probabilities): if such a cluster straddles ``p`` the margin is 0.
    ``+inf`` when ``p >= 1`` or the row has no support.
    """
    p = _scalar(p, "top_p")
    x = clean_row(row)
    if p >= 1.0 or not _has_support(x):
        return _INF
    probs = softmax_ref(x)
    valid = x > -_INF
    xv = x[valid]
    uniq, _, g, before = _strict_mass_before(-xv, probs[valid])
    vals = -uniq  # descending logits
    fin = np.isfinite(xv)
    m_f = xv[fin].max() if fin.any() else 0.0
    near = np.zeros(max(vals.size - 1, 0), dtype=bool)
    for j in range(vals.size - 1):
        hi_v, lo_v = vals[j], vals[j + 1]
        if math.isfinite(hi_v) and math.isfinite(lo_v):
            near[j] = (hi_v - lo_v) <= NEAR_TIE_RTOL * max(1.0, m_f - lo_v)
    return _order_margin(uniq, g, before, p, near)


def typical_p_margin(row, m) -> float:
    """Distance of a typical-p decision from its knife edges.

    Mass comparisons: ``|mass_with_strictly_smaller_score - m|`` over the distinct scores
    (absolute). Score comparisons: distinct scores closer than
    ``NEAR_TIE_RTOL * max(1, H, -log p)`` are a near tie that float32 may order either way;
    such a cluster straddling ``m`` gives 0. ``+inf`` when ``m >= 1`` or no support.
    """
    m = _scalar(m, "typical_p")
    x = clean_row(row)
    if m >= 1.0 or not _has_support(x):
        return _INF
    p, h, s = typical_scores_ref(x)
    valid = x > -_INF
    neglogp = -log_softmax_ref(x)[valid]
    uniq, inv, g, before = _strict_mass_before(s[valid], p[valid])
    amax = np.zeros(uniq.size)
    np.maximum.at(amax, inv, np.where(np.isfinite(neglogp), neglogp, 0.0))
    near = np.zeros(max(uniq.size - 1, 0), dtype=bool)
    for j in range(uniq.size - 1):
        if math.isfinite(uniq[j]) and math.isfinite(uniq[j + 1]):
            scale = max(1.0, h, amax[j], amax[j + 1])
            near[j] = (uniq[j + 1] - uniq[j]) <= NEAR_TIE_RTOL * scale
    return _order_margin(uniq, g, before, m, near)


def _top_cluster_is_ambiguous(x: np.ndarray) -> bool:
    """True when a finite logit other than the maximum lies within ``NEAR_TIE_RTOL`` of it."""
    fin = np.isfinite(x)
    if not fin.any() or np.any(x == _INF):
        return False
    xf = x[fin]
    m = xf.max()
    return bool(np.any((xf < m) & (m - xf <= NEAR_TIE_RTOL)))


def _cutoff_margin(x: np.ndarray, probs: np.ndarray, thr: float) -> float:
    """Relative margin of ``p_i >= thr`` over the tokens below the maximum, plus 0 when the
    keep-at-least-one rule fires and a near tie makes "the maximum" ambiguous in float32."""
    valid = x > -_INF
    top = valid & (x == x[valid].max())
    others = valid & ~top
    best = _INF
    if others.any():
        best = float(np.min(np.abs(probs[others] - thr))) / max(thr, F32_TINY)
    if probs[top][0] < thr and _top_cluster_is_ambiguous(x):
        return 0.0
    return best


def epsilon_cutoff_margin(row, e) -> float:
    """Relative distance ``min |p_i - e| / max(e, F32_TINY)`` over tokens below the maximum
    (the maximum is always kept); 0 when nothing reaches ``e`` and the maximum is near-tied.
    ``+inf`` for ``e == 0`` or no support."""
    e = _scalar(e, "epsilon_cutoff")
    x = clean_row(row)
    if e == 0.0 or not _has_support(x):
        return _INF
    return _cutoff_margin(x, softmax_ref(x), e)


def eta_cutoff_margin(row, e) -> float:
    """As :func:`epsilon_cutoff_margin` with the eta threshold ``min(e, sqrt(e) exp(-H))``."""
    e = _scalar(e, "eta_cutoff")
    x = clean_row(row)
    if e == 0.0 or not _has_support(x):
        return _INF
    return _cutoff_margin(x, softmax_ref(x), eta_threshold_ref(x, e))


def min_p_margin(row, p) -> float:
    """Relative distance ``min |l_i - (l_max + log p)| / max(1, |l_max|, |log p|)`` over the
    finite tokens below the maximum. ``+inf`` for ``p == 0``, no support, or ``l_max = +inf``."""
    p = _scalar(p, "min_p")
    x = clean_row(row)
    if p == 0.0 or not _has_support(x):
        return _INF
    lmax = x.max()
    if lmax == _INF:
        return _INF
    lp = math.log(p)
    thr = lmax + lp
    others = np.isfinite(x) & (x < lmax)
    if not others.any():
        return _INF
    return float(np.min(np.abs(x[others] - thr))) / max(1.0, abs(lmax), abs(lp))


def top_n_sigma_margin(row, n) -> float:
    """Relative distance ``min |l_i - thr| / max(1, |l_max|, |thr|, n*std)`` over the finite
    tokens below the maximum, ``thr = l_max - n * std``. ``+inf`` for ``n <= 0``, no support, or
    ``l_max = +inf``."""
    n = _scalar(n, "top_n_sigma")
    x = clean_row(row)
    if n <= 0 or not _has_support(x):
        return _INF
    lmax = x.max()
    if lmax == _INF:
        return _INF
    spread = n * _finite_std(x)
    thr = lmax - spread
    others = np.isfinite(x) & (x < lmax)
    if not others.any():
        return _INF
    scale = max(1.0, abs(lmax), abs(thr), spread)
    return float(np.min(np.abs(x[others] - thr))) / scale


def top_k_margin(row, k) -> float:
    """Relative gap between the k-th largest value and the nearest *different* finite value.

    Not needed for raw float32 input (top_k compares the given values exactly). It matters when
    the row came out of float32 arithmetic (temperature, penalties, bias), where rounding can
    create or break ties: ``min |l_i - kth| / max(|l_i|, |kth|, F32_TINY)``. ``+inf`` when
    top_k is an identity or the k-th value is not finite.
    """
    k = _int_scalar(k, "top_k")
    x = clean_row(row)
    if k <= 0 or k >= x.size:
        return _INF
    kth = np.sort(x)[::-1][k - 1]
    if not math.isfinite(kth):
        return _INF
    others = np.isfinite(x) & (x != kth)
    if not others.any():
        return _INF
    xo = x[others]
    return float(np.min(np.abs(xo - kth) / np.maximum(np.maximum(np.abs(xo), abs(kth)), F32_TINY)))


def greedy_margin(row) -> float:
    """Relative gap between the maximum and the next distinct finite value (only relevant when
    the row came out of float32 arithmetic, like :func:`top_k_margin`). ``+inf`` if none."""
    x = clean_row(row)
    fin = x[np.isfinite(x)]
    if np.any(x == _INF) or fin.size == 0:
        return _INF
    m = fin.max()
    rest = fin[fin < m]
    if rest.size == 0:
        return _INF
    s = rest.max()
    return float((m - s) / max(abs(m), abs(s), F32_TINY))


# ----------------------------------------------------------------------------------------------
# batching
# ----------------------------------------------------------------------------------------------
class rowvec:  # noqa: N801 - lower case on purpose: reads as a marker at call sites
    """Marks an :func:`apply_rows` argument whose LAST axis is per-row data (e.g. a bias of
    shape ``(V,)`` shared by every row of a ``[B, V]`` batch)."""

    def __init__(self, value):
        self.value = value


def _prepare(param, x: np.ndarray):
    """Broadcast one :func:`apply_rows` parameter; returns a getter ``idx -> value``."""
    batch = x.shape[:-1]
    if param is None:
        return lambda idx: None
    if isinstance(param, rowvec):
        a = np.asarray(param.value)
        if a.ndim == 0:
            raise ValueError("rowvec needs at least one dimension")
        a = np.broadcast_to(a, batch + a.shape[-1:])
        return lambda idx: a[idx]
    a = np.asarray(param)
    if a.ndim == x.ndim:
        a = np.broadcast_to(a, batch + a.shape[-1:])
        return lambda idx: a[idx]
    a = np.broadcast_to(a, batch)
    return lambda idx: np.asarray(a[idx]).item()


def _map_rows(fn, logits, params, kwparams):
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension")
    getters = [_prepare(p, x) for p in params]
    kgetters = {k: _prepare(v, x) for k, v in kwparams.items()}
    for idx in np.ndindex(x.shape[:-1]):
        yield idx, fn(x[idx], *[g(idx) for g in getters], **{k: g(idx) for k, g in kgetters.items()})


def apply_rows(fn, logits, *params, **kwparams) -> np.ndarray:
    """Apply a one-row reference function to every row of a ``[..., V]`` array.

    Parameter broadcasting:
      * an argument with fewer dimensions than ``logits`` is one scalar per row, broadcast to
        ``logits.shape[:-1]`` (a Python scalar is shared by every row);
      * an argument with as many dimensions as ``logits`` (counts ``[..., V]``, token contexts
        ``[..., L]``, an unconditional row ``[..., V]``) is per-row data along its last axis,
        broadcast to ``logits.shape[:-1] + (last,)``;
      * wrap an argument in :class:`rowvec` to force the second reading (a shared ``(V,)`` bias
        on ``[B, V]`` logits);
      * ``None`` is passed through.

    Args:
      fn: row function, e.g. :func:`top_p_ref`.
      logits: array ``[..., V]``.
      *params, **kwparams: the row function's other arguments.

    Returns:
      float64 array with the shape of ``logits``.
    """
    x = np.asarray(logits, dtype=np.float64)
    out = np.empty(x.shape, dtype=np.float64)
    for idx, y in _map_rows(fn, x, params, kwparams):
        out[idx] = y
    return out


def row_margins(margin_fn, logits, *params, **kwparams) -> np.ndarray:
    """Margins of every row (broadcasting as in :func:`apply_rows`); shape ``logits.shape[:-1]``.
    Use ``row_margins(...).min()`` to decide whether to skip a batched example."""
    x = np.asarray(logits, dtype=np.float64)
    out = np.empty(x.shape[:-1], dtype=np.float64)
    for idx, y in _map_rows(margin_fn, x, params, kwparams):
        out[idx] = y
    return out


# ----------------------------------------------------------------------------------------------
# the standard pipeline
# ----------------------------------------------------------------------------------------------
#: Parameters understood by :func:`pipeline_ref`, with their identity (disabled) values.
PIPELINE_DEFAULTS = {
    "allowed": None,  # bool (V,): False entries are masked to -inf
    "banned": None,  # bool (V,): True entries are masked to -inf
    "bias": None,  # scalar or (V,) additive logit bias
    "suppress": None,  # bool (V,): e.g. EOS before min_tokens; True entries -> -inf
    "repetition_penalty": 1.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "no_repeat_ngram_size": 0,
    "temperature": 1.0,
    "temperature_last": False,
    "top_k": 0,
    "top_p": 1.0,
    "min_p": 0.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "top_n_sigma": 0.0,
}

_TRUNCATIONS = (
    ("top_k", top_k_ref, top_k_margin),
    ("top_p", top_p_ref, top_p_margin),
    ("min_p", min_p_ref, min_p_margin),
    ("typical_p", typical_p_ref, typical_p_margin),
    ("epsilon_cutoff", epsilon_cutoff_ref, epsilon_cutoff_margin),
    ("eta_cutoff", eta_cutoff_ref, eta_cutoff_margin),
    ("top_n_sigma", top_n_sigma_ref, top_n_sigma_margin),
)
_MASS_BASED = {"top_p", "typical_p", "epsilon_cutoff", "eta_cutoff"}


def _params(params) -> dict:
    """Merge user parameters (a mapping or an object with attributes) over the defaults."""
    merged = dict(PIPELINE_DEFAULTS)
    if params is None:
        return merged
    if isinstance(params, Mapping):
        unknown = set(params) - set(PIPELINE_DEFAULTS)
        if unknown:
            raise KeyError(f"unknown pipeline parameters: {sorted(unknown)}")
        merged.update(params)
    else:
        for key in PIPELINE_DEFAULTS:
            if hasattr(params, key):
                merged[key] = getattr(params, key)
    return merged


def _mask(x, mask, banned_when):
    m = np.asarray(mask, dtype=bool)
    m = np.broadcast_to(m, x.shape)
    return np.where(m == banned_when, -_INF, x)


def pipeline_steps_ref(row, params=None, counts=None, tokens=None, *, round_f32=False):
    """Run the standard order of ``semantics.md`` on one row, recording every step.

    Order: (1) allowed/banned masks, logit_bias, suppress mask; (2) repetition, frequency and
    presence penalties, no-repeat n-gram; (3) temperature, unless ``temperature_last``;
    (4) top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff, top_n_sigma, each seeing the
    previous step's output; then temperature when ``temperature_last`` is set.

    Args:
      row: 1-D logits.
      params: mapping (or object with attributes) of keys from :data:`PIPELINE_DEFAULTS`.
      counts: integer ``(V,)`` counts for the penalties (default: all zero).
      tokens: 1-D context for the no-repeat n-gram ban (default: empty).
      round_f32: round each step's output to float32 (what the implementation stores between
        steps); values are already clamped so this never overflows.

    Returns:
      A list of ``(name, active, before, after)`` tuples; ``active`` says whether the step's
      parameter differs from its identity value.
    """
    prm = _params(params)
    x = clean_row(row)
    v = x.size
    c = np.zeros(v, dtype=np.int64) if counts is None else _counts(counts, v)
    toks = np.zeros(0, dtype=np.int64) if tokens is None else np.asarray(tokens).reshape(-1)
    steps = []

    def run(name, active, fn):
        nonlocal x
        y = fn(x)
        if round_f32:
            y = y.astype(np.float32).astype(np.float64)
        steps.append((name, bool(active), x, y))
        x = y

    if prm["allowed"] is not None:
        run("allowed", True, lambda r: _mask(r, prm["allowed"], False))
    if prm["banned"] is not None:
        run("banned", True, lambda r: _mask(r, prm["banned"], True))
    if prm["bias"] is not None:
        b = prm["bias"]
        run("logit_bias", bool(np.any(np.asarray(b) != 0)), lambda r: logit_bias_ref(r, b))
    if prm["suppress"] is not None:
        run("suppress", True, lambda r: _mask(r, prm["suppress"], True))
    seen = bool(np.any(c > 0))
    rp, fp, pp = prm["repetition_penalty"], prm["frequency_penalty"], prm["presence_penalty"]
    run("repetition_penalty", seen and rp != 1, lambda r: repetition_penalty_ref(r, c, rp))
    run("frequency_penalty", seen and fp != 0, lambda r: frequency_penalty_ref(r, c, fp))
    run("presence_penalty", seen and pp != 0, lambda r: presence_penalty_ref(r, c, pp))
    ng = prm["no_repeat_ngram_size"]
    run("no_repeat_ngram", ng != 0, lambda r: no_repeat_ngram_ref(r, toks, ng))
    t = prm["temperature"]
    if not prm["temperature_last"]:
        run("temperature", t != 1, lambda r: temperature_ref(r, t))
    for name, fn, _ in _TRUNCATIONS:
        val = prm[name]
        run(name, _truncation_active(name, val, v), lambda r, fn=fn, val=val: fn(r, val))
    if prm["temperature_last"]:
        run("temperature", t != 1, lambda r: temperature_ref(r, t))
    return steps


def _truncation_active(name, val, v):
    if name == "top_k":
        return 0 < int(val) < v
    if name in ("top_p", "typical_p"):
        return val < 1
    if name == "top_n_sigma":
        return val > 0
    return val != 0


def pipeline_ref(row, params=None, counts=None, tokens=None, *, round_f32=False) -> np.ndarray:
    """The processed row after the standard order (see :func:`pipeline_steps_ref`).

    Args:
      row: 1-D logits.
      params: mapping of keys from :data:`PIPELINE_DEFAULTS` (missing keys: identity).
      counts: integer ``(V,)`` counts for the penalties.
      tokens: 1-D context for the no-repeat n-gram ban.
      round_f32: round every intermediate to float32, as a float32 implementation stores it.

    Returns:
      The processed row, float64.
    """
    steps = pipeline_steps_ref(row, params, counts, tokens, round_f32=round_f32)
    if not steps:
        return clean_row(row)
    return steps[-1][3]


_ARITHMETIC = {"logit_bias", "repetition_penalty", "frequency_penalty", "presence_penalty"}


def pipeline_margin(row, params=None, counts=None, tokens=None, *, round_f32=False) -> float:
    """Smallest margin over the active decisions of :func:`pipeline_ref` (``+inf`` if none).

    Each active truncation's margin is taken on the row that step sees. Once an arithmetic step
    (bias, penalties, temperature other than 0 and 1) has run, float32 rounding of the
    intermediate values also matters: top_k and greedy then use :func:`top_k_margin` and
    :func:`greedy_margin`, and the mass-based margins are divided by
    ``max(1, 0.01 * max|l_i|)`` over the tokens with non-negligible probability (a float32 logit
    carries an absolute error of about ``6e-8 * |l|``, which shifts probabilities by that much).
    """
    best = _INF
    arith = False
    for name, active, before, _ in pipeline_steps_ref(row, params, counts, tokens, round_f32=round_f32):
        if not active:
            continue
        if name == "temperature":
            t = _params(params)["temperature"]
            if t == 0 and arith:
                best = min(best, greedy_margin(before))
            elif t != 0:
                arith = True
            continue
        if name in _ARITHMETIC:
            arith = True
            continue
        for tname, _, mfn in _TRUNCATIONS:
            if tname != name:
                continue
            val = _params(params)[name]
            if name == "top_k":
                m = top_k_margin(before, val) if arith else _INF
            else:
                m = mfn(before, val)
                if arith and name in _MASS_BASED and math.isfinite(m):
                    pr = softmax_ref(before)
                    big = before[(pr > 1e-12) & np.isfinite(before)]
                    scale = float(np.max(np.abs(big))) if big.size else 0.0
                    m = m / max(1.0, 0.01 * scale)
            best = min(best, m)
    return best
