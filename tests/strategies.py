"""Hypothesis strategies for adversarial logits and sampling parameters.

Rows are float32 NumPy arrays built to hit the corners the semantics contract cares about:
many exact ties (values drawn from a small per-row pool), masked ``-inf`` entries, NaN, ``+inf``
(rarer), huge magnitudes (``1e30``, ``3e38``, ``F32_MAX``), tiny ones (``1e-38``, denormals,
``+-0.0``) and ordinary values; ``V = 1`` is reachable. Every drawn choice shrinks towards the
plain case (ordinary finite values, identity parameters).

Every float parameter is a Python float that is exactly representable in float32, so the float32
implementation and the float64 reference see the same number.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

__all__ = [
    "biases",
    "counts",
    "epsilons",
    "etas",
    "freq_presence",
    "guidance_scales",
    "logit_batches",
    "logit_rows",
    "min_ps",
    "ngram_sizes",
    "pipeline_params",
    "repetition_penalties",
    "sigmas",
    "temperatures",
    "token_contexts",
    "top_ks",
    "top_ps",
    "typical_ps",
]

_F32_MAX = float(np.finfo(np.float32).max)
_INF = float("inf")


def _f32(v: float) -> float:
    """``v`` rounded to the nearest float32, as a Python float."""
    return float(np.float32(v))


def _specials(values) -> st.SearchStrategy[float]:
    return st.sampled_from([_f32(v) for v in values])


_HUGE = [1e30, -1e30, 3e38, -3e38, _F32_MAX, -_F32_MAX, 1e20, -1e20]
_TINY = [0.0, -0.0, 1e-38, -1e-38, 1.4e-45, -1.4e-45, 1e-40, -3e-42, 1e-30, 1e-7]


def _finite_element(kind: int) -> st.SearchStrategy[float]:
    """Finite values by kind: 0 ordinary, 1 small integers, 2 wide, 3 huge, 4 tiny."""
    if kind == 0:
        return st.floats(-20.0, 20.0, width=32)
    if kind == 1:
        return st.integers(-6, 6).map(float)
    if kind == 2:
        return st.floats(-1e4, 1e4, width=32)
    if kind == 3:
        return _specials(_HUGE)
    return _specials(_TINY)


@st.composite
def _element(draw, style: int, pool, allow_nan: bool, allow_inf: bool, allow_neg_inf: bool):
    """One logit. ``style`` 0 is plain (pool and ordinary values only); higher styles mix in
    masked, NaN, +inf, huge and tiny values. Choices shrink towards the pool."""
    roll = draw(st.integers(0, 99))
    if style == 0:
        # plain: ties from the pool and ordinary values, with some masked tokens
        if roll < 55:
            return draw(st.sampled_from(pool))
        if roll < 90 or not allow_neg_inf:
            return draw(_finite_element(0))
        return -_INF
    if roll < 40:
        return draw(st.sampled_from(pool))
    if roll < 55:
        return draw(_finite_element(0))
    if roll < 68:
        return -_INF if allow_neg_inf else draw(_finite_element(1))
    if roll < 72:
        return float("nan") if allow_nan else draw(_finite_element(0))
    if roll < 74:
        return _INF if allow_inf else draw(_finite_element(3))
    if roll < 81:
        return draw(_finite_element(3))
    if roll < 89:
        return draw(_finite_element(4))
    if roll < 95:
        return draw(_finite_element(2))
    return draw(_finite_element(1))


@st.composite
def _pool(draw, style: int):
    """A small pool of values reused inside a row, to create exact ties."""
    if style == 0:
        kinds = st.sampled_from([0, 1])
    elif style == 1:
        kinds = st.sampled_from([0, 1, 2])
    else:
        kinds = st.integers(0, 4)
    size = draw(st.integers(1, 5))
    return [draw(kinds.flatmap(_finite_element)) for _ in range(size)]


# The row lengths drawn: V = 1, a few tiny rows, around the 32-value blocks of the candidate
# search, above its 128 candidates (the nucleus search's long rows). Few lengths, so that a test
# compiling its jitted functions for each shape reuses them across examples: a fresh shape costs
# a compilation (seconds for the truncations' programs), an example of a known shape
# milliseconds.
ROW_SIZES = (1, 2, 3, 7, 33, 64, 129)


def row_lengths(min_size: int = 1, max_size: int = 64):
    """``V``: one of ``ROW_SIZES`` in ``[min_size, max_size]``, or either bound."""
    return st.sampled_from(sorted(
        {min_size, max_size} | {s for s in ROW_SIZES if min_size <= s <= max_size}))


@st.composite
def logit_rows(
    draw,
    min_size: int = 1,
    max_size: int = 64,
    allow_nan: bool = True,
    allow_inf: bool = True,
    allow_neg_inf: bool = True,
):
    """1-D float32 logit rows, adversarial.

    Args:
      min_size, max_size: bounds on ``V`` (``min_size`` 1 makes ``V = 1`` reachable); ``V`` is
        one of ``ROW_SIZES`` between them, or either bound.
      allow_nan: include NaN entries.
      allow_inf: include ``+inf`` entries (rarely).
      allow_neg_inf: include masked ``-inf`` entries (often; rows may be fully masked).

    Returns:
      A strategy of ``np.ndarray`` with dtype float32 and shape ``(V,)``.
    """
    size = draw(row_lengths(min_size, max_size))
    style = draw(st.integers(0, 3))  # 0 plain, 1 ties, 2 adversarial, 3 adversarial + extremes
    pool = draw(_pool(style))
    if style == 3:
        pool = pool + [draw(_finite_element(3)), draw(_finite_element(4))]
    elem = _element(min(style, 2), pool, allow_nan, allow_inf, allow_neg_inf)
    values = draw(st.lists(elem, min_size=size, max_size=size))
    row = np.array(values, dtype=np.float32)
    # occasionally a whole-row corner: all masked, all tied, a single survivor
    corner = draw(st.integers(0, 19)) if size >= 1 else 0
    if corner == 1 and allow_neg_inf:
        row[:] = -np.inf
    elif corner == 2:
        row[:] = row[0] if np.isfinite(row[0]) else np.float32(0.0)
    elif corner == 3 and allow_neg_inf:
        keep = draw(st.integers(0, size - 1))
        val = row[keep] if np.isfinite(row[keep]) else np.float32(1.0)
        row[:] = -np.inf
        row[keep] = val
    return row


@st.composite
def logit_batches(
    draw,
    max_rows: int = 4,
    min_size: int = 1,
    max_size: int = 64,
    allow_nan: bool = True,
    allow_inf: bool = True,
    allow_neg_inf: bool = True,
):
    """2-D float32 batches ``[B, V]`` of :func:`logit_rows`; sometimes with repeated rows (so a
    test can check that a row's result does not depend on its batch-mates).

    The shape takes few values (see ``ROW_SIZES``): ``B`` is ``max_rows`` (rows are
    independent; a test of one row draws :func:`logit_rows`), ``V`` as in :func:`logit_rows`.
    """
    v = draw(row_lengths(min_size, max_size))
    b = max_rows
    row = logit_rows(v, v, allow_nan, allow_inf, allow_neg_inf)
    rows = [draw(row) for _ in range(b)]
    if b > 1 and draw(st.booleans()):
        rows[draw(st.integers(1, b - 1))] = rows[0].copy()
    return np.stack(rows).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# parameters
# ----------------------------------------------------------------------------------------------
_F32_TINY = float(np.finfo(np.float32).tiny)


def _around(specials, low: float, high: float, *, exclude_min=False, exclude_max=False):
    """Special values (shrinking to the first, normally the identity) or a float32 in range.

    Denormal parameter values are left out: XLA's CPU arithmetic reads them as 0 (flush to
    zero), which jaxlogits documents; logits, by contrast, may be denormal.
    """
    return st.one_of(
        _specials(specials),
        st.floats(_f32(low), _f32(high), width=32, exclude_min=exclude_min,
                  exclude_max=exclude_max).filter(lambda x: x == 0 or abs(x) >= _F32_TINY),
    )


_BELOW_ONE = float(np.nextafter(np.float32(1), np.float32(0)))
_ABOVE_ONE = float(np.nextafter(np.float32(1), np.float32(2)))


def temperatures(allow_zero: bool = True):
    """Temperatures: 1 (identity), 0 (greedy), tiny (1e-30, overflow territory), around 1,
    large. Float32 denormals are avoided (XLA may flush them to zero)."""
    sp = [1.0, 0.0, 1e-30, 1e-6, 0.01, 0.1, 0.5, 0.7, _BELOW_ONE, _ABOVE_ONE, 1.5, 2.0, 10.0,
          1e4, 1e30]
    if not allow_zero:
        sp.remove(0.0)
    return _around(sp, 0.05, 5.0)


def top_ks(v: int, allow_negative: bool = False):
    """top_k values for a vocabulary of size ``v``: 0 (identity), 1, v-1, v, v+3 and random."""
    sp = [0, 1, max(v - 1, 0), v, v + 3]
    low = -3 if allow_negative else 0
    return st.one_of(st.sampled_from(sp), st.integers(low, v + 5))


def top_ps(allow_zero: bool = False):
    """top_p: 1 (identity), just below 1, tiny positive, and values near typical cumulative
    masses (1/2, 1/3, 2/3, 0.9 ... where ties put the boundary exactly on a mass)."""
    sp = [1.0, _BELOW_ONE, 1e-30, 1e-7, 0.1, 0.25, 1 / 3, 0.5, 2 / 3, 0.75, 0.8, 0.9, 0.95, 0.99]
    if allow_zero:
        sp.append(0.0)
    return _around(sp, 0.0, 1.0, exclude_min=not allow_zero)


def min_ps():
    """min_p in ``[0, 1]``: 0 (identity), 1, tiny, common values."""
    return _around([0.0, 1.0, 1e-30, 1e-6, 0.01, 0.05, 0.1, 0.2, 0.5, 0.9, _BELOW_ONE], 0.0, 1.0)


def typical_ps(allow_zero: bool = False):
    """typical_p: 1 (identity), just below 1, tiny, and common values."""
    sp = [1.0, _BELOW_ONE, 1e-30, 1e-7, 0.1, 0.2, 0.5, 0.9, 0.95, 0.99]
    if allow_zero:
        sp.append(0.0)
    return _around(sp, 0.0, 1.0, exclude_min=not allow_zero)


def epsilons():
    """epsilon_cutoff in ``[0, 1]``: 0 (identity), HF-typical 3e-4 ... 9e-4, up to 1 (which
    forces the keep-at-least-one rule)."""
    sp = [0.0, 1e-30, 1e-9, 3e-4, 9e-4, 1e-3, 0.01, 0.1, 0.3, 0.5, 0.9, 1.0]
    return _around(sp, 0.0, 1.0)


def etas():
    """eta_cutoff in ``[0, 1]``: 0 (identity), HF-typical 3e-4 ... 2e-3, larger values."""
    sp = [0.0, 1e-30, 1e-9, 3e-4, 1e-3, 2e-3, 0.01, 0.1, 0.5, 0.9, 1.0]
    return _around(sp, 0.0, 1.0)


def sigmas():
    """top_n_sigma: 0 (identity), negative (identity too), small and large positive."""
    sp = [0.0, -1.0, -1e-3, 1e-6, 0.5, 1.0, 1.5, 2.0, 3.0, 10.0, 1e6]
    return _around(sp, -2.0, 5.0)


def repetition_penalties():
    """Repetition penalties ``r > 0``: 1 (identity), just around 1, below 1 (rewards repeats),
    common 1.1 ... 2, extremes."""
    sp = [1.0, _BELOW_ONE, _ABOVE_ONE, 1.1, 1.2, 1.3, 2.0, 0.5, 0.8, 1e-3, 10.0, 1e3]
    return _around(sp, 1e-3, 10.0)


def freq_presence():
    """Frequency / presence penalties: 0 (identity), negative and positive (OpenAI range
    [-2, 2] and beyond; magnitudes stay <= 1e30 so ``f * count`` never overflows float32 for
    counts up to 1000)."""
    sp = [0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 1e-7, 100.0, -100.0, 1e30, -1e30]
    return _around(sp, -10.0, 10.0)


def guidance_scales():
    """Guidance scales: 1 (identity: cond), 0 (uncond), common 1.5 ... 7.5, negative, large."""
    return _around([1.0, 0.0, 2.0, 1.5, 3.0, 7.5, 0.5, -1.0, 1e4, 1e30], -5.0, 10.0)


@st.composite
def counts(draw, v: int, max_count: int = 5, batch_shape=()):
    """Token counts ``batch_shape + (v,)``, int32: mostly zeros, some small, rarely 1000."""
    shape = tuple(batch_shape) + (v,)
    n = int(np.prod(shape))
    elem = st.integers(0, 9).flatmap(
        lambda r: st.just(0) if r < 5 else (st.just(1000) if r == 9 else st.integers(1, max_count))
    )
    vals = draw(st.lists(elem, min_size=n, max_size=n))
    return np.array(vals, dtype=np.int32).reshape(shape)


@st.composite
def token_contexts(draw, v: int, max_len: int = 32):
    """1-D int32 contexts with ids in ``[0, v)`` and deliberate repeats (a motif repeated, the
    context ending mid-motif), so no-repeat n-gram bans actually trigger. Length 0 allowed."""
    length = draw(st.integers(0, max_len))
    if length == 0:
        return np.zeros(0, dtype=np.int32)
    ids = st.integers(0, v - 1)
    motif = draw(st.lists(ids, min_size=1, max_size=4))
    out = []
    while len(out) < length:
        if draw(st.integers(0, 3)) == 0:
            out.append(draw(ids))
        else:
            out.extend(motif)
    return np.array(out[:length], dtype=np.int32)


def ngram_sizes(max_n: int = 5):
    """no_repeat_ngram sizes: 0 (identity), 1 (ban every seen token), 2, 3, ... ``max_n``."""
    return st.integers(0, max_n)


@st.composite
def biases(draw, v: int, allow_inf: bool = False):
    """Dense logit biases of shape ``(v,)`` (float32): mostly 0, some ordinary, some large; with
    ``allow_inf``, some ``-inf`` (bans)."""
    opts = [0.0, 0.0, 0.0, 1.0, -1.0, 5.0, -5.0, 100.0, -100.0, 1e30, -1e30]
    elem = st.one_of(_specials(opts), st.floats(-10.0, 10.0, width=32))
    if allow_inf:
        elem = st.one_of(elem, st.just(-_INF))
    return np.array(draw(st.lists(elem, min_size=v, max_size=v)), dtype=np.float32)


@st.composite
def pipeline_params(draw, v: int):
    """A parameter mapping for ``reference.pipeline_ref`` (keys of ``PIPELINE_DEFAULTS``); each
    setting is at its identity value about half of the time."""

    def maybe(key, strategy):
        if draw(st.booleans()):
            params[key] = draw(strategy)

    params = {}
    maybe("bias", biases(v))
    maybe("repetition_penalty", repetition_penalties())
    maybe("frequency_penalty", freq_presence())
    maybe("presence_penalty", freq_presence())
    maybe("no_repeat_ngram_size", ngram_sizes())
    maybe("temperature", temperatures())
    maybe("temperature_last", st.booleans())
    maybe("top_k", top_ks(v))
    maybe("top_p", top_ps())
    maybe("min_p", min_ps())
    maybe("typical_p", typical_ps())
    maybe("epsilon_cutoff", epsilons())
    maybe("eta_cutoff", etas())
    maybe("top_n_sigma", sigmas())
    return params
