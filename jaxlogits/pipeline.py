"""The standard pipeline: per-row sampling parameters and one function that applies them.

:class:`SamplingParams` holds one value per row for every setting, with identity defaults, so a
batch can mix greedy rows, nucleus rows and penalised rows in one compiled graph: changing any
value never recompiles (only the batch size and the logit-bias capacity are shapes).
:func:`process_logits` applies the standard order of semantics.md by calling the same private
implementations as the public transforms (one rule, one place):

1. allowed-token mask, logit bias, end-of-sequence suppression before ``min_tokens``
2. repetition, frequency and presence penalties; no-repeat n-gram
3. temperature (unless ``temperature_last``)
4. top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff, top_n_sigma
5. temperature for the rows with ``temperature_last``

and :func:`sample_step` draws from the result (a row with temperature 0 keeps only its argmax,
so its draw is greedy).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from jaxlogits import _checks
from jaxlogits import _numerics as nm
from jaxlogits import bias as _bias
from jaxlogits import penalties as _pen
from jaxlogits import sampling as _sampling
from jaxlogits import temperature as _temp
from jaxlogits import truncation as _trunc

__all__ = ["SamplingParams", "process_logits", "sample_step"]

# name: (dtype, identity, range check kwargs for _checks.check_range)
_FIELDS: dict[str, tuple[Any, Any, dict]] = {
    "temperature": (jnp.float32, 1.0, dict(lo=0.0, finite=True)),
    "top_k": (jnp.int32, 0, dict(lo=0, integer=True)),
    "top_p": (jnp.float32, 1.0, dict(lo=0.0, hi=1.0, lo_open=True)),
    "min_p": (jnp.float32, 0.0, dict(lo=0.0, hi=1.0)),
    "typical_p": (jnp.float32, 1.0, dict(lo=0.0, hi=1.0, lo_open=True)),
    "epsilon_cutoff": (jnp.float32, 0.0, dict(lo=0.0, hi=1.0)),
    "eta_cutoff": (jnp.float32, 0.0, dict(lo=0.0, hi=1.0)),
    "top_n_sigma": (jnp.float32, 0.0, dict(finite=True)),
    "repetition_penalty": (jnp.float32, 1.0, dict(lo=0.0, lo_open=True, finite=True)),
    "frequency_penalty": (jnp.float32, 0.0, dict(finite=True)),
    "presence_penalty": (jnp.float32, 0.0, dict(finite=True)),
    "no_repeat_ngram_size": (jnp.int32, 0, dict(lo=0, integer=True)),
    "min_tokens": (jnp.int32, 0, dict(lo=0, integer=True)),
    "temperature_last": (jnp.bool_, False, dict(lo=0, hi=1, integer=True)),
}


class SamplingParams(NamedTuple):
  """Per-row sampling settings, a pytree of arrays with one value per row.

  Build it with :meth:`create`; keyword names follow Hugging Face and OpenAI. Every field has
  shape ``[B]`` except the sparse logit bias, ``[B, K]`` (``K`` the bias capacity).
  """

  temperature: jax.Array  # [B] float32, 1 = identity, 0 = greedy
  top_k: jax.Array  # [B] int32, 0 = disabled
  top_p: jax.Array  # [B] float32, 1 = disabled
  min_p: jax.Array  # [B] float32, 0 = disabled
  typical_p: jax.Array  # [B] float32, 1 = disabled
  epsilon_cutoff: jax.Array  # [B] float32, 0 = disabled
  eta_cutoff: jax.Array  # [B] float32, 0 = disabled
  top_n_sigma: jax.Array  # [B] float32, <= 0 = disabled
  repetition_penalty: jax.Array  # [B] float32, 1 = disabled
  frequency_penalty: jax.Array  # [B] float32, 0 = disabled
  presence_penalty: jax.Array  # [B] float32, 0 = disabled
  no_repeat_ngram_size: jax.Array  # [B] int32, 0 = disabled
  min_tokens: jax.Array  # [B] int32, EOS is banned until this many tokens were generated
  temperature_last: jax.Array  # [B] bool, apply temperature after the truncations
  logit_bias_ids: jax.Array  # [B, K] int32 token ids, -1 = unused slot
  logit_bias_values: jax.Array  # [B, K] float32 bias for each id

  @classmethod
  def create(cls, batch_size: int | None = None, *, temperature: Any = 1.0, top_k: Any = 0,
             top_p: Any = 1.0, min_p: Any = 0.0, typical_p: Any = 1.0,
             epsilon_cutoff: Any = 0.0, eta_cutoff: Any = 0.0, top_n_sigma: Any = 0.0,
             repetition_penalty: Any = 1.0, frequency_penalty: Any = 0.0,
             presence_penalty: Any = 0.0, no_repeat_ngram_size: Any = 0, min_tokens: Any = 0,
             temperature_last: Any = False,
             logit_bias: Mapping[int, float] | Sequence[Mapping[int, float] | None] | None = None,
             logit_bias_capacity: int | None = None,
             vocab_size: int | None = None) -> "SamplingParams":
    """Builds per-row parameters from scalars (same for every row) or per-row sequences.

    Args:
      batch_size: number of rows ``B``; inferred from the per-row sequences when omitted
        (1 if every value is a scalar).
      temperature, top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff, top_n_sigma,
        repetition_penalty, frequency_penalty, presence_penalty, no_repeat_ngram_size,
        min_tokens, temperature_last: a scalar or one value per row; ranges as in the
        transforms of the same name. Defaults are the identity values.
      logit_bias: ``{token_id: bias}`` for every row, or a list with one dict (or ``None``) per
        row.
      logit_bias_capacity: ``K``, the number of bias slots per row (a shape: keep it fixed to
        avoid recompiling when the dicts change size). Defaults to the largest dict.
      vocab_size: when given, bias ids are checked against ``[0, vocab_size)``.

    Returns:
      A :class:`SamplingParams` with ``[B]`` arrays.

    Raises:
      ValueError: naming the parameter, for a value out of range or a length that is not ``B``.

    Examples:
      >>> import jaxlogits as jl
      >>> p = jl.SamplingParams.create(temperature=[0.0, 0.7], top_p=0.9)
      >>> p.temperature, p.top_p
      (Array([0. , 0.7], dtype=float32), Array([0.9, 0.9], dtype=float32))
    """
    values = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                  typical_p=typical_p, epsilon_cutoff=epsilon_cutoff, eta_cutoff=eta_cutoff,
                  top_n_sigma=top_n_sigma, repetition_penalty=repetition_penalty,
                  frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                  no_repeat_ngram_size=no_repeat_ngram_size, min_tokens=min_tokens,
                  temperature_last=temperature_last)
    arrays = {name: np.asarray(v) for name, v in values.items()}
    bias_rows = None
    if logit_bias is not None and not isinstance(logit_bias, Mapping):
      bias_rows = list(logit_bias)
    sizes = {a.shape[0] for a in arrays.values() if a.ndim == 1}
    if bias_rows is not None:
      sizes.add(len(bias_rows))
    if batch_size is None:
      if len(sizes) > 1:
        raise ValueError(f"per-row parameters have different lengths {sorted(sizes)}")
      batch_size = sizes.pop() if sizes else 1
    fields = {}
    for name, arr in arrays.items():
      dtype, _, rng = _FIELDS[name]
      if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != batch_size):
        raise ValueError(f"{name} must be a scalar or have one value per row ({batch_size}), "
                         f"got shape {arr.shape}")
      if rng:
        _checks.check_range(name, arr, **rng)
      fields[name] = _checks.row_param(name, arr, (batch_size,), dtype)[:, 0]
    if bias_rows is None:
      bias_rows = [logit_bias] * batch_size
    if len(bias_rows) != batch_size:
      raise ValueError(f"logit_bias must have one dict per row ({batch_size}), "
                       f"got {len(bias_rows)}")
    widest = max((len(r) for r in bias_rows if r), default=0)
    cap = widest if logit_bias_capacity is None else int(logit_bias_capacity)
    if cap < widest:
      raise ValueError(f"logit_bias has {widest} entries in a row, more than "
                       f"logit_bias_capacity={cap}")
    ids = np.full((batch_size, cap), -1, np.int32)
    vals = np.zeros((batch_size, cap), np.float32)
    for r, row in enumerate(bias_rows):
      for j, (tok, val) in enumerate((row or {}).items()):
        tok_i = int(tok)
        if tok_i != tok or tok_i < 0 or (vocab_size is not None and tok_i >= vocab_size):
          hi = "V" if vocab_size is None else str(vocab_size)
          raise ValueError(f"logit_bias token id must be in [0, {hi}), got {tok!r}")
        if np.isnan(float(val)):
          raise ValueError(f"logit_bias value for token {tok_i} must not be NaN")
        ids[r, j], vals[r, j] = tok_i, float(val)
    return cls(**fields, logit_bias_ids=jnp.asarray(ids), logit_bias_values=jnp.asarray(vals))


def _row(a):
  return a[..., None]


def process_logits(logits: Any, params: SamplingParams, *, counts: Any = None,
                   tokens: Any = None, length: Any = None, num_generated: Any = None,
                   eos_token_id: Any = None, allowed: Any = None) -> jax.Array:
  """Applies the standard order of transforms with per-row parameters.

  Context is optional and defaults to empty (so penalties and n-gram bans do nothing without it):

  Args:
    logits: ``[B, V]`` float logits.
    params: :class:`SamplingParams` with ``B`` rows.
    counts: ``[B, V]`` token counts for the repetition, frequency and presence penalties (see
      :func:`jaxlogits.token_counts`). When omitted and ``tokens`` is given, they are counted from
      ``tokens``.
    tokens: ``[B, T]`` context for the no-repeat n-gram ban (and counts when not given).
    length: ``[B]`` valid tokens in ``tokens`` (defaults to ``T``).
    num_generated: ``[B]`` tokens generated so far, for ``min_tokens``.
    eos_token_id: end-of-sequence id(s) banned while ``num_generated < min_tokens``: an int, a
      ``[E]`` array, or ``[B, E]`` per row (``-1`` = unused).
    allowed: optional boolean ``[B, V]`` (or ``[V]``) mask of allowed tokens.

  Returns:
    The processed logits, ``[B, V]`` in the dtype of ``logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> p = jl.SamplingParams.create(top_k=[1, 0])
    >>> jl.process_logits(jnp.array([[1.0, 2.0], [1.0, 2.0]]), p)
    Array([[-inf,   2.],
           [  1.,   2.]], dtype=float32)
  """
  return _process(*_prepared("process_logits", logits, params, counts, tokens, length,
                             num_generated, eos_token_id, allowed))


def _prepared(name, logits, params, counts, tokens, length, num_generated, eos_token_id,
              allowed):
  """The checked and broadcast arguments of ``_process`` (raises on bad input)."""
  logits = _checks.check_logits(logits)
  if logits.ndim != 2:
    raise ValueError(f"{name} takes [B, V] logits, got shape {logits.shape}")
  b, v = logits.shape
  if params.temperature.shape != (b,):
    raise ValueError(f"params has {params.temperature.shape[0]} rows, logits has {b}")
  if tokens is not None:
    tokens = _checks.int_array("tokens", tokens)
    if tokens.ndim != 2 or tokens.shape[0] != b:
      raise ValueError(f"tokens must have shape [{b}, T], got {tokens.shape}")
    length = jnp.broadcast_to(jnp.asarray(tokens.shape[1] if length is None else length,
                                          jnp.int32), (b,))
  if counts is not None:
    counts = _pen._check_counts(counts, logits)
  if allowed is not None:
    allowed = _bias._as_mask("allowed", allowed, logits)
  if eos_token_id is not None:
    eos_token_id = _checks.int_array("eos_token_id", eos_token_id)
    if eos_token_id.ndim == 0:
      eos_token_id = eos_token_id[None]
    if eos_token_id.ndim == 1:
      eos_token_id = jnp.broadcast_to(eos_token_id, (b, eos_token_id.shape[0]))
    if eos_token_id.ndim != 2 or eos_token_id.shape[0] != b:
      raise ValueError(f"eos_token_id must be an int, [E] or [{b}, E], got {eos_token_id.shape}")
  if num_generated is not None:
    num_generated = jnp.broadcast_to(jnp.asarray(num_generated, jnp.int32), (b,))
  return logits, params, counts, tokens, length, num_generated, eos_token_id, allowed


def _rare(params):
  """Per rule, whether each row uses one of the rarer rules (or temperature-last)."""
  return jnp.stack([params.min_p > 0, ~(params.typical_p >= 1), params.epsilon_cutoff > 0,
                    params.eta_cutoff > 0, params.top_n_sigma > 0, params.temperature_last])


def _any_rare_or_greedy(params):
  """Scalar: whether ``_sample_step`` needs its program with the rarer rules and temperature's
  greedy branch: some row uses a rarer rule or has temperature 0 (``~(t > 0)`` also holds for
  a negative or NaN temperature under jit, which acts as 0)."""
  return jnp.any(_rare(params)) | jnp.any(~(params.temperature > 0))


def _row_split(logits, params, counts, tokens, length, num_generated, eos_ids, allowed):
  """The arguments of ``_process_body`` as ``(per_row, shared)`` for ``nm.by_row_blocks``: an
  ``allowed`` mask shared by all rows (``[V]`` or ``[1, V]``) is passed whole."""
  row_mask = allowed is not None and allowed.ndim == 2 and allowed.shape[0] == logits.shape[0]
  per_row = (logits, params, counts, tokens, length, num_generated, eos_ids,
             allowed if row_mask else None)
  return per_row, None if row_mask else allowed


def _rows(rows, logits):
  return nm.block_rows(*logits.shape) if rows is None else rows


@functools.partial(jax.jit, static_argnames="rows")
def _process(logits, params, counts, tokens, length, num_generated, eos_ids, allowed, *,
             rows=None):
  """The standard order, in cache-sized blocks of rows on CPU (``rows``: rows per block, static;
  None picks ``nm.block_rows``)."""
  def block(per_row, shared):
    *args, mask = per_row
    return _process_body(*args, mask if shared is None else shared, rare=None)
  per_row, shared = _row_split(logits, params, counts, tokens, length, num_generated, eos_ids,
                               allowed)
  return nm.by_row_blocks(block, _rows(rows, logits), per_row, shared)


@functools.partial(jax.jit, static_argnames="rows")
def _sample_step(keys, logits, params, counts, tokens, length, num_generated, eos_ids, allowed,
                 *, rows=None):
  """``_process`` then the draw. Over several blocks of rows, one program per case: with the
  rarer rules when some row uses one, without them otherwise. A ``lax.cond`` that passes the
  logits through costs about a copy of them on CPU and keeps the last mask from fusing into the
  draw's passes; this one sits before any of the work, on values that are already in memory.
  The program without them also leaves out temperature's greedy branch, so it runs only when
  no row has temperature 0 either: that branch's lax.cond would copy each block's logits out.
  On CPU a batch of one block runs one program that tests the group inside it: there the
  choice between two whole programs costs more than the test. Blocks of rows as in ``_process``."""
  per_row, shared = _row_split(logits, params, counts, tokens, length, num_generated, eos_ids,
                               allowed)

  def program(rare):
    def block(per_row, shared):
      keys, (logits, params, counts, tokens, length, num_generated, eos_ids, mask) = per_row
      x = _process_body(logits, params, counts, tokens, length, num_generated, eos_ids,
                        mask if shared is None else shared, rare=rare, test_penalties=False)
      return _sampling._sample(keys, x, nan_free=True), x  # every rule leaves NaN as -inf
    # The choice is made once for the batch, outside the blocks: inside, each block's slices of
    # the logits and counts then fuse into their first pass instead of being copied out for a
    # lax.cond.
    return lambda: nm.by_row_blocks(block, _rows(rows, logits), (keys, per_row), shared)

  if jax.default_backend() == "cpu" and _rows(rows, logits) >= logits.shape[0]:
    # One block (a small batch): measured at batch 1, V = 128K (the bench's W4), the two
    # programs under a lax.cond took about 40% longer than this one. (Off CPU, where
    # each lax.cond may cost a round trip to the host, the one test is kept.)
    return program(None)()
  return lax.cond(_any_rare_or_greedy(params), program(True), program(False))


def _process_body(logits, params, counts, tokens, length, num_generated, eos_ids, allowed, *,
                  rare, test_penalties=True):
  """The standard order. ``rare``: apply the group of rarer rules (True), skip it and the greedy
  branch of temperature (False: the caller has checked that no row uses them), or test at run
  time whether some row uses them (None). ``test_penalties``: skip the penalties when
  no row has one (one test), or apply them untested (False; see below)."""
  b, v = logits.shape
  x = logits
  # 1. masks, bias, EOS suppression
  if allowed is not None:
    x = _bias._allow(x, allowed)
  if params.logit_bias_ids.shape[-1] > 0:
    dense = nm.scatter_rows(params.logit_bias_ids, params.logit_bias_values, v, "add")
    x = _bias._logit_bias(x, dense)
  if eos_ids is not None and num_generated is not None:
    too_early = (num_generated < params.min_tokens)[:, None]
    eos_mask = nm.scatter_rows(eos_ids, jnp.ones(eos_ids.shape, bool), v, "max")
    x = _bias._allow(x, ~(eos_mask & too_early))
  # 2. penalties
  if counts is None and tokens is not None:
    counts = _pen._token_counts(tokens, length, length, 0, vocab_size=v, has_length=True,
                                has_start=False, has_pad=False)
  if counts is not None:
    penalised = ((params.repetition_penalty != 1) | (params.frequency_penalty != 0)
                 | (params.presence_penalty != 0))
    penalties = lambda x: _pen._count_penalties(
        x, counts, _row(params.repetition_penalty), _row(params.frequency_penalty),
        _row(params.presence_penalty))
    # With the test, no pass reads the counts unless some row has a penalty; without it, the
    # penalties (exactly the identity at their identity values) fuse into the next pass, which
    # costs less than a lax.cond that passes the logits through. sample_step's programs take
    # the second way.
    x = _when(penalised, penalties, x) if test_penalties else penalties(x)
  if tokens is not None:
    x = _pen._no_repeat_ngram(x, tokens, _row(params.no_repeat_ngram_size), length)
  # 3. temperature first, unless temperature_last
  last = params.temperature_last
  x = _temp._temperature(x, _row(jnp.where(last, 1.0, params.temperature)),
                         greedy=rare is not False)
  # 4. truncations, each seeing the survivors of the previous one (their outputs are
  # sanitized: NaN is gone from here on)
  x, params = _top_k_then_top_p(x, params, rare)
  # The rarer rules and temperature-last run only when some row uses them. Every lax.cond passes
  # the logits through (on CPU that costs about a copy of them), so one test covers the group
  # and each rule has its own test inside it.
  active = _rare(params)
  rules = [(_trunc._min_p, params.min_p), (_trunc._typical_p, params.typical_p),
           (_trunc._epsilon_cutoff_rule, params.epsilon_cutoff),
           (_trunc._eta_cutoff_rule, params.eta_cutoff),
           (_trunc._top_n_sigma_rule, params.top_n_sigma)]
  t_last = _row(jnp.where(last, params.temperature, 1.0))

  def rare_rules(x, tested):
    # min_p (one max pass) and temperature-last (elementwise) cost less than a lax.cond that
    # passes the logits through: in a program made for the group they run untested (a row at
    # its identity value is left exactly as it is).
    for i, (rule, param) in enumerate(rules):
      step = lambda x, rule=rule, param=param: rule(x, _row(param))
      x = _when(active[i], step, x) if tested or i > 0 else step(x)
    # 5. temperature last, where asked
    step = lambda x: _temp._temperature(x, t_last).astype(x.dtype)
    return _when(last, step, x) if tested else step(x)

  if rare is None:
    return _when(active, lambda x: rare_rules(x, True), x)
  return rare_rules(x, False) if rare else x


def _top_k_then_top_p(x, params, rare):
  """``top_p(top_k(x))`` with the pipeline's shortcuts, each exact:

  * where top_k leaves few tokens (all among its candidates), top_p runs on those candidates
    and one pass writes both masks (``_trunc._top_k_top_p_keys``; when every row allows it);
  * otherwise, where a row's min_p cut lies inside its nucleus, top_p changes nothing there and
    its search is skipped (two passes decide it; one cheap test skips them when no row has
    both rules). min_p is then applied right here, from the row maximum the test read (the
    threshold min_p's own pass would find: the row is finite, its maximum normal), and set to
    its identity for the rules that follow.

  Returns ``(x, params)``: the logits and the parameters left for the rest of the pipeline.
  """
  k, p, mp = _row(params.top_k), _row(params.top_p), _row(params.min_p)
  x32 = x.astype(jnp.float32)
  none = lambda dtype: jnp.zeros_like(x[:, :1], dtype)  # typed like the logits (shard_map)

  def then_top_p(y, thr_k):  # y: top_k's output (as x.dtype, upcast), thr_k its threshold
    q, thr_m, folded = p, none(jnp.uint32), none(bool)
    if rare is not False:
      def inside():
        inside, m = _trunc._min_p_inside_top_p(y, p, mp, clean=True, with_max=True)
        return (jnp.where(inside, 1.0, p), jnp.where(inside, _trunc._min_p_key(m, mp), 0),
                inside)
      both = (params.min_p > 0) & ~(params.top_p >= 1)
      q, thr_m, folded = lax.cond(jnp.any(both), inside, lambda: (q, thr_m, folded))
    thr_p, any_inf = _trunc._top_p_key(y, q)
    # (A folded row keeps everything top_p would: q = 1 there, thr_p = 0.)
    return thr_k, jnp.maximum(thr_p, thr_m), any_inf, folded

  def in_turn():
    # (Choosing x itself for y when no row has a top_k would save writing y, but both branches
    # of that lax.cond would hold top_p's whole search: the compile time of the pipeline's
    # two-block program in tests/test_pipeline.py went from 25 s to 50 s.)
    thr_k = _trunc._top_k_key(x32, k)
    return then_top_p(_trunc._write(x32, None, thr_k, jnp.float32), thr_k)

  # (Each way is traced once: the thresholds come out of the first test, the choice is the
  # second.) Both ways end in thresholds, not arrays (an array a branch returns is written out
  # in full); the two writes below fuse into one select.
  fusable = jnp.any((params.top_k > 0) & ~(params.top_p >= 1))
  thr, ok = lax.cond(fusable, lambda: _trunc._top_k_top_p_keys(x, k, p),
                     lambda: (none(jnp.uint32), none(bool)))
  thr_k, thr_p, any_inf, folded = lax.cond(
      jnp.all(ok), lambda: (thr, none(jnp.uint32), none(bool), none(bool)), in_turn)
  # (Where the joint thresholds hold, the second write keeps everything and changes nothing.)
  x = _trunc._write(_trunc._write(x, None, thr_k, x.dtype), any_inf, thr_p, x.dtype)
  return x, params._replace(min_p=jnp.where(folded[:, 0], 0.0, params.min_p))


def _when(active, step, x):
  """``step(x)`` if any row is ``active``, else ``x`` (the other rows are at their identity).

  One cheap test on the parameters spares a step's full passes over the logits when no row of
  the batch uses it.
  """
  return lax.cond(jnp.any(active), lambda x: step(x).astype(x.dtype), lambda x: x, x)


def sample_step(key: Any, logits: Any, params: SamplingParams, **context: Any
                ) -> tuple[jax.Array, jax.Array]:
  """Processes logits in the standard order and draws one token per row.

  Args:
    key: a PRNG key, or one per row (see :func:`jaxlogits.sample`).
    logits: ``[B, V]`` float logits.
    params: :class:`SamplingParams` with ``B`` rows.
    **context: ``counts``, ``tokens``, ``length``, ``num_generated``, ``eos_token_id``,
      ``allowed`` as in :func:`process_logits`.

  Returns:
    ``(tokens, processed)``: ``int32[B]`` ids (``-1`` for a row with no finite logit) and the
    processed ``[B, V]`` logits the tokens were drawn from (their log-softmax is the processed
    log-probability).

  Examples:
    >>> import jax, jax.numpy as jnp, jaxlogits as jl
    >>> p = jl.SamplingParams.create(temperature=[0.0, 0.0])
    >>> tokens, _ = jl.sample_step(jax.random.key(0), jnp.array([[1.0, 2.0], [3.0, 1.0]]), p)
    >>> tokens
    Array([1, 0], dtype=int32)
  """
  args = _prepared("sample_step", logits, params, context.pop("counts", None),
                   context.pop("tokens", None), context.pop("length", None),
                   context.pop("num_generated", None), context.pop("eos_token_id", None),
                   context.pop("allowed", None))
  if context:
    raise TypeError(f"sample_step got unexpected arguments {sorted(context)}")
  return _sample_step(_sampling.row_keys(key, args[0].shape[:-1]), *args)
