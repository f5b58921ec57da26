"""Language-model classification: score candidate completions, turn them into class probabilities.

A prompt ``x`` and ``K`` candidate completions ``c_1..c_K`` (answer options, label words) make a
``K``-way classifier: each candidate gets its log-likelihood under the model and a softmax over
the candidates gives class probabilities. The model is any ``tokens_to_logits(tokens, cache) ->
(logits, cache)`` callback of :mod:`jaxlogits.decode` together with a cache factory
``make_cache(batch_size, max_len) -> cache``; :func:`for_model` builds both for the built-in
transformer.

:func:`score_candidates` scores every (prompt, candidate) pair of a batch in one jitted
:func:`jaxlogits.decode.score` call (one row per pair, prompt-major), :func:`class_probabilities`
normalises the totals (``"sum"``, ``"mean"`` per token, or ``"calibrated"`` against a content-free
prompt) and :func:`classify` does both, the content-free rows included in the same call.

Numerics. Everything is float32 and in log space: the scores are shifted by their maximum before
they are exponentiated, so totals of ``-1e4`` (long candidates, a poor model) give the same
probabilities as totals near 0. A candidate with a total of ``-inf`` gets probability 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogits import _checks
from jaxlogits import _numerics as nm
from jaxlogits import decode as _decode

__all__ = [
    "NORMALISATIONS",
    "CandidateScores",
    "ClassProbabilities",
    "Classification",
    "ModelFns",
    "class_probabilities",
    "classify",
    "for_model",
    "score_candidates",
]

#: The normalisations of :func:`class_probabilities`.
NORMALISATIONS = ("sum", "mean", "calibrated")


class ModelFns(NamedTuple):
  """A model as :func:`score_candidates` takes it: the callback and its cache factory."""

  tokens_to_logits: Callable[[jax.Array, Any], tuple[jax.Array, Any]]
  make_cache: Callable[[int, int], Any]  # (batch_size, max_len) -> initial cache


class CandidateScores(NamedTuple):
  """What :func:`score_candidates` returns: ``[K]``-led shapes for one prompt, else ``[B, K]``."""

  total: jax.Array  # [..., K] float32 sum of each candidate's token log-probs
  token_logprobs: jax.Array  # [..., K, C] float32 per candidate token (0 past its length)
  length: jax.Array  # [..., K] int32 candidate lengths in tokens


class ClassProbabilities(NamedTuple):
  """What :func:`class_probabilities` returns."""

  probs: jax.Array  # [..., K] float32, summing to one over K
  logprobs: jax.Array  # [..., K] float32 their logarithms (-inf for probability 0)


class Classification(NamedTuple):
  """What :func:`classify` returns: ``[K]`` leading shape for one prompt, else ``[B, K]``."""

  total: jax.Array  # [..., K] float32 log-likelihood of each candidate
  mean: jax.Array  # [..., K] float32 total / length (per-token average)
  length: jax.Array  # [..., K] int32 candidate lengths in tokens
  probs: jax.Array  # [..., K] float32 class probabilities under the chosen normalisation
  logprobs: jax.Array  # [..., K] float32 their logarithms
  prediction: jax.Array  # [...] int32 argmax of probs (lowest index on ties)
  content_free_total: Any  # [..., K] float32 totals under the content-free prompt, or None


# --------------------------------------------------------------------------------------------
# the model


def for_model(model: Any) -> ModelFns:
  """The callback and cache factory of the built-in transformer, for :func:`score_candidates`.

  The weights travel in the cache, so models of one structure share the compiled scoring
  function. Later changes to ``model`` are not seen.

  Args:
    model: a :class:`jaxlogits.model.Transformer`.

  Returns:
    A :class:`ModelFns` ``(tokens_to_logits, make_cache)``; ``make_cache(batch_size, max_len)``
    returns an empty :class:`jaxlogits.decode.ModelCache`.

  Examples:
    >>> from jaxlogits.model import create_model, get_config
    >>> fns = for_model(create_model(get_config("tiny")))
    >>> fns.make_cache(3, 10).position
    Array([0, 0, 0], dtype=int32)
  """
  from jaxlogits import model as _model  # local: keeps `import jaxlogits` free of Flax

  tokens_to_logits, first = _decode.model_callback(model, 1, 1)
  config = model.config

  def make_cache(batch_size: int, max_len: int) -> _decode.ModelCache:
    return _decode.ModelCache(_model.init_cache(config, int(batch_size), int(max_len)),
                              jnp.zeros((int(batch_size),), jnp.int32), first.params)

  return ModelFns(tokens_to_logits, make_cache)


# --------------------------------------------------------------------------------------------
# input handling


def _is_ids(x: Any) -> bool:
  """Whether ``x`` is one token sequence (a 1-D array or a list of ints), not a list of them."""
  if isinstance(x, (np.ndarray, jax.Array)):
    return x.ndim == 1
  if isinstance(x, (list, tuple)):
    return all(_checks.is_int(t) for t in x)
  return False


def _ids(name: str, x: Any) -> list[int]:
  """One token sequence as a list of non-negative ints."""
  if isinstance(x, (str, bytes)):
    raise TypeError(f"{name} must be a sequence of token ids, got {type(x).__name__} "
                    "(encode the text first, e.g. with jaxlogits.tokenizer.encode)")
  arr = np.asarray(x)
  if arr.size == 0:
    return []
  if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
    raise TypeError(f"{name} must be a 1-D sequence of integer token ids, got "
                    f"{'dtype ' + str(arr.dtype) if arr.ndim == 1 else f'shape {arr.shape}'}")
  if np.any(arr < 0):
    raise ValueError(f"{name} must hold token ids >= 0, got {_checks._show(arr[arr < 0])}")
  return [int(t) for t in arr]


def _pairs(prompts: Any, candidates: Any) -> tuple[bool, bool, list[list[int]],
                                                    list[list[list[int]]]]:
  """Parses the inputs into ``(single, shared, prompt_ids, candidate_ids_per_prompt)``."""
  single = _is_ids(prompts)
  prompt_list = [prompts] if single else list(prompts)
  if not prompt_list:
    raise ValueError("prompts must hold at least one prompt")
  p_ids = [_ids(f"prompt {i}", p) for i, p in enumerate(prompt_list)]
  for i, p in enumerate(p_ids):
    if not p:
      raise ValueError(f"prompt {i} is empty; a prompt needs at least one token (e.g. BOS)")
  cand_list = list(candidates)
  if not cand_list:
    raise ValueError("candidates must hold at least one candidate")
  shared = single or _is_ids(cand_list[0])
  if shared:
    per_prompt = [cand_list] * len(p_ids)
  else:
    if len(cand_list) != len(p_ids):
      raise ValueError(f"candidates has {len(cand_list)} lists for {len(p_ids)} prompts; give "
                       "one list per prompt, or one list shared by all prompts")
    per_prompt = [list(c) for c in cand_list]
  k = len(per_prompt[0])
  c_ids = []
  for b, cands in enumerate(per_prompt):
    if len(cands) != k or k == 0:
      raise ValueError(f"every prompt needs the same number (>= 1) of candidates; prompt 0 has "
                       f"{k}, prompt {b} has {len(cands)}")
    row = []
    for j, c in enumerate(cands):
      ids = _ids(f"candidate {j}" + ("" if shared else f" of prompt {b}"), c)
      if not ids:
        raise ValueError(f"candidate {j}" + ("" if shared else f" of prompt {b}")
                         + " is empty (length 0); every candidate needs at least one token")
      row.append(ids)
    c_ids.append(row)
  return single, shared, p_ids, c_ids


def _score_rows(tokens_to_logits, make_cache, rows: Sequence[tuple[list[int], list[int]]]
                ) -> _decode.ScoreOutput:
  """Scores (prompt, continuation) pairs in one :func:`jaxlogits.decode.score` call."""
  r = len(rows)
  p = max(len(pr) for pr, _ in rows)
  c = max(len(co) for _, co in rows)
  prompts = np.zeros((r, p), np.int32)
  conts = np.zeros((r, c), np.int32)
  for i, (pr, co) in enumerate(rows):
    prompts[i, :len(pr)] = pr
    conts[i, :len(co)] = co
  pl = np.array([len(pr) for pr, _ in rows], np.int32)
  cl = np.array([len(co) for _, co in rows], np.int32)
  return _decode.score(tokens_to_logits, make_cache(r, p + c), prompts, pl, conts, cl)


def _shape(out: _decode.ScoreOutput, start: int, b: int, k: int, single: bool
           ) -> CandidateScores:
  """Rows ``start .. start + b*k`` of a score output as ``[B, K]`` (``[K]`` when single)."""
  lead = (k,) if single else (b, k)
  sl = slice(start, start + b * k)
  return CandidateScores(out.total[sl].reshape(lead),
                         out.token_logprobs[sl].reshape(lead + out.token_logprobs.shape[1:]),
                         out.length[sl].reshape(lead))


# --------------------------------------------------------------------------------------------
# scoring


def score_candidates(tokens_to_logits: Callable, make_cache: Callable[[int, int], Any],
                     prompts: Any, candidates: Any) -> CandidateScores:
  r"""Log-likelihood of every candidate completion of every prompt, in one batched call.

  .. math::
    \log p(c_k \mid x_b) = \textstyle\sum_{t=1}^{|c_k|} \log p(c_{k,t} \mid x_b, c_{k,<t})

  The ``B x K`` pairs become the rows (prompt-major) of one :func:`jaxlogits.decode.score` call,
  right-padded to the longest prompt ``P`` and candidate ``C``; each row is scored on its own
  tokens only, so a pair's score does not depend on the rest of the batch.

  Args:
    tokens_to_logits: the model callback of :mod:`jaxlogits.decode` (static: reuse one).
    make_cache: ``make_cache(batch_size, max_len)`` returns the callback's empty cache; it is
      called once with ``B * K`` rows and ``max_len = P + C``.
    prompts: one prompt (a sequence of token ids, BOS included if the model wants one) or a
      batch of ``B`` prompts of any lengths ``>= 1``.
    candidates: ``K`` candidates (sequences of token ids, length ``>= 1``) shared by every
      prompt, or, for a batch, ``B`` lists of ``K`` candidates each. Ids must be in the model's
      vocabulary (negative ids raise; the built-in model scores an id ``>= V`` as ``-inf``).

  Returns:
    A :class:`CandidateScores` of totals ``[K]``, per-token log-probs ``[K, C]`` (0 past each
    candidate's end) and lengths ``[K]`` for one prompt; ``[B, K]``, ``[B, K, C]`` and ``[B, K]``
    for a batch.

  Examples:
    >>> from jaxlogits.model import create_model, get_config
    >>> fns = for_model(create_model(get_config("tiny")))
    >>> out = score_candidates(*fns, [256, 72, 105], [[32, 121, 101, 115], [32, 110, 111]])
    >>> out.total.shape, out.token_logprobs.shape, out.length
    ((2,), (2, 4), Array([4, 3], dtype=int32))
    >>> bool(out.token_logprobs[1, 3] == 0), bool(out.total[1] == out.token_logprobs[1].sum())
    (True, True)
  """
  single, _, p_ids, c_ids = _pairs(prompts, candidates)
  rows = [(p, c) for p, cands in zip(p_ids, c_ids) for c in cands]
  out = _score_rows(tokens_to_logits, make_cache, rows)
  return _shape(out, 0, len(p_ids), len(c_ids[0]), single)


# --------------------------------------------------------------------------------------------
# normalisation


@jax.jit
def _class_probabilities(scores, where):
  x = jnp.where(where, nm.sanitize(scores), -jnp.inf)
  return ClassProbabilities(*nm.probs_and_logprobs(nm.effective(x)))


def _float_array(name: str, value: Any) -> jax.Array:
  if isinstance(value, (list, tuple)):
    value = np.asarray(value, np.float32)
  arr = jnp.asarray(value)
  if not jnp.issubdtype(arr.dtype, jnp.floating):
    if jnp.issubdtype(arr.dtype, jnp.integer):
      arr = arr.astype(jnp.float32)
    else:
      raise TypeError(f"{name} must be a float array, got dtype {arr.dtype}")
  return arr.astype(jnp.float32)


def _broadcast(name: str, value: Any, shape: tuple[int, ...], dtype) -> jax.Array:
  arr = jnp.asarray(value)
  try:
    ok = np.broadcast_shapes(arr.shape, shape) == shape
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(f"{name} has shape {arr.shape}, which does not broadcast to the shape "
                     f"{shape} of total_logprobs")
  return jnp.broadcast_to(arr.astype(dtype), shape)


def _check_normalisation(normalisation: str) -> None:
  if normalisation not in NORMALISATIONS:
    raise ValueError(f"normalisation must be one of {', '.join(map(repr, NORMALISATIONS))}, "
                     f"got {normalisation!r}")


def class_probabilities(total_logprobs: Any, lengths: Any = None, *, normalisation: str = "sum",
                        content_free_logprobs: Any = None, where: Any = None
                        ) -> ClassProbabilities:
  r"""Class probabilities from candidates' log-likelihoods: a log-space softmax over candidates.

  With ``L_k`` the total log-likelihood of candidate ``k``, ``n_k`` its length in tokens and
  ``L^{cf}_k`` its total under a content-free prompt (such as ``"N/A"`` or an empty prompt),

  .. math::
    s_k = L_k \;(\texttt{sum}), \quad s_k = L_k / n_k \;(\texttt{mean}), \quad
    s_k = L_k - L^{cf}_k \;(\texttt{calibrated}), \qquad
    \log p_k = s_k - \log \textstyle\sum_j e^{s_j}

  ``"calibrated"`` is contextual calibration: dividing the class probabilities by those of the
  content-free prompt and renormalising. Per-prompt normalisers of ``L`` and ``L^{cf}`` cancel in
  the softmax, so this equals Zhao et al.'s ``softmax(W p)`` with ``W = diag(p_cf)^{-1}``.

  A candidate with ``where`` false, or a score of ``-inf``, gets probability 0. Eagerly, a NaN
  or ``+inf`` total, a non-finite content-free total, a length below 1 (an empty candidate) or a
  prompt without any candidate of finite score raises ``ValueError``. Under ``jit`` nothing
  raises: NaN counts as ``-inf``, a length below 1 as 1, and a prompt without a candidate gets
  probabilities 0 (log-probabilities ``-inf``).

  Args:
    total_logprobs: ``[..., K]`` totals, e.g. :attr:`CandidateScores.total`.
    lengths: ``[..., K]`` candidate lengths (needed for ``"mean"``; checked whenever given).
    normalisation: ``"sum"``, ``"mean"`` or ``"calibrated"``.
    content_free_logprobs: totals of the same candidates under a content-free prompt,
      broadcastable to ``[..., K]`` (required for, and only for, ``"calibrated"``).
    where: optional bool ``[..., K]``; false marks padding candidates (not counted).

  Returns:
    A :class:`ClassProbabilities` ``(probs, logprobs)``, float32 ``[..., K]``; ``probs`` sums to
    one over ``K``.

  Examples:
    >>> import jax.numpy as jnp
    >>> out = class_probabilities(jnp.array([-1e4, -1e4 - jnp.log(3.0)]))
    >>> [round(float(p), 4) for p in out.probs]
    [0.75, 0.25]
    >>> mean = class_probabilities(jnp.array([-4.0, -3.0]), jnp.array([4, 1]),
    ...                            normalisation="mean")
    >>> [round(float(p), 4) for p in mean.probs]
    [0.8808, 0.1192]
    >>> cal = class_probabilities(jnp.array([-4.0, -3.0]), normalisation="calibrated",
    ...                           content_free_logprobs=jnp.array([-6.0, -3.0]))
    >>> [round(float(p), 4) for p in cal.probs]
    [0.8808, 0.1192]

  References:
    Zhao et al., "Calibrate Before Use: Improving Few-Shot Performance of Language Models",
    ICML 2021 (contextual calibration). https://arxiv.org/abs/2102.09690
  """
  _check_normalisation(normalisation)
  total = _float_array("total_logprobs", total_logprobs)
  if total.ndim < 1 or total.shape[-1] < 1:
    raise ValueError(f"total_logprobs must have shape [..., K] with K >= 1 candidates, got "
                     f"shape {total.shape}")
  shape = tuple(total.shape)
  valid = (jnp.ones(shape, bool) if where is None
           else _broadcast("where", where, shape, bool))
  valid_c = _checks.concrete(valid)
  t = _checks.concrete(total)
  if t is not None and valid_c is not None:
    bad = (np.isnan(t) | (t == np.inf)) & valid_c
    if np.any(bad):
      raise ValueError(f"total_logprobs must not be NaN or +inf, got {_checks._show(t[bad])}")

  if lengths is None:
    if normalisation == "mean":
      raise ValueError("normalisation='mean' needs the candidates' lengths")
    n = None
  else:
    n = _broadcast("lengths", _checks.int_array("lengths", lengths), shape, jnp.int32)
    nc = _checks.concrete(n)
    if nc is not None and valid_c is not None and np.any((nc < 1) & valid_c):
      raise ValueError(f"lengths must be >= 1 (a candidate cannot be empty), got "
                       f"{_checks._show(nc[(nc < 1) & valid_c])}")

  if (content_free_logprobs is not None) != (normalisation == "calibrated"):
    raise ValueError("content_free_logprobs is required for normalisation='calibrated' and "
                     "only used by it")
  if normalisation == "sum":
    scores = total
  elif normalisation == "mean":
    scores = total / jnp.maximum(n, 1).astype(jnp.float32)
  else:
    cf = _broadcast("content_free_logprobs",
                    _float_array("content_free_logprobs", content_free_logprobs), shape,
                    jnp.float32)
    cfc = _checks.concrete(cf)
    if cfc is not None and valid_c is not None and not np.all(np.isfinite(cfc) | ~valid_c):
      raise ValueError("content_free_logprobs must be finite, got "
                       f"{_checks._show(cfc[~np.isfinite(cfc) & valid_c])}")
    scores = total - cf

  s = _checks.concrete(scores)
  if s is not None and valid_c is not None:
    empty = ~np.any((s > -np.inf) & valid_c, axis=-1)
    if np.any(empty):
      idx = np.argwhere(np.atleast_1d(empty))[0]
      where_s = "" if total.ndim == 1 else f" (prompt {tuple(int(i) for i in idx)})"
      raise ValueError("no candidate has a finite score" + where_s + "; the class "
                       "probabilities are undefined")
  return _class_probabilities(scores, valid)


# --------------------------------------------------------------------------------------------
# all together


def classify(tokens_to_logits: Callable, make_cache: Callable[[int, int], Any], prompts: Any,
             candidates: Any, *, normalisation: str = "sum",
             content_free_prompt: Any = None) -> Classification:
  r"""Classifies prompts by their candidates' log-likelihoods, in one batched scoring call.

  Scores every candidate as :func:`score_candidates` does (for ``"calibrated"`` also under
  ``content_free_prompt``, in the same call), then takes :func:`class_probabilities`:

  .. math::
    p(k \mid x) = \operatorname{softmax}_k(s_k), \qquad \hat{k} = \arg\max_k p(k \mid x)

  Args:
    tokens_to_logits: the model callback (static: reuse one), as for :func:`score_candidates`.
    make_cache: ``make_cache(batch_size, max_len)``, as for :func:`score_candidates`.
    prompts: one prompt (token ids) or a batch of prompts.
    candidates: ``K`` candidates shared by every prompt, or one list of ``K`` per prompt.
    normalisation: ``"sum"``, ``"mean"`` (per token) or ``"calibrated"``.
    content_free_prompt: token ids of the content-free prompt (e.g. ``encode("N/A")``, or just
      ``[BOS]``); required for, and only used by, ``"calibrated"``.

  Returns:
    A :class:`Classification` (``[K]`` fields for one prompt, ``[B, K]`` for a batch);
    ``content_free_total`` is None unless calibrated.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxlogits.model import create_model, get_config
    >>> fns = for_model(create_model(get_config("tiny")))
    >>> out = classify(*fns, [[256, 49, 43, 49, 61], [256, 50, 43, 50, 61]], [[50], [52]],
    ...                normalisation="calibrated", content_free_prompt=[256])
    >>> out.probs.shape, out.prediction.shape, out.content_free_total.shape
    ((2, 2), (2,), (2, 2))
    >>> bool(jnp.allclose(out.probs.sum(-1), 1.0))
    True

  References:
    Zhao et al., "Calibrate Before Use: Improving Few-Shot Performance of Language Models",
    ICML 2021 (contextual calibration). https://arxiv.org/abs/2102.09690
  """
  _check_normalisation(normalisation)
  calibrated = normalisation == "calibrated"
  if (content_free_prompt is not None) != calibrated:
    raise ValueError("content_free_prompt is required for normalisation='calibrated' and "
                     "only used by it")
  single, shared, p_ids, c_ids = _pairs(prompts, candidates)
  b, k = len(p_ids), len(c_ids[0])
  rows = [(p, c) for p, cands in zip(p_ids, c_ids) for c in cands]
  if calibrated:
    cf_ids = _ids("content_free_prompt", content_free_prompt)
    if not cf_ids:
      raise ValueError("content_free_prompt is empty; it needs at least one token (e.g. BOS)")
    cf_sets = c_ids[:1] if shared else c_ids
    rows += [(cf_ids, c) for cands in cf_sets for c in cands]
  out = _score_rows(tokens_to_logits, make_cache, rows)
  main = _shape(out, 0, b, k, single)
  cf_total = None
  if calibrated:
    cf = _shape(out, b * k, 1 if shared else b, k, single or shared).total
    cf_total = cf if single or not shared else jnp.broadcast_to(cf, (b, k))
  cp = class_probabilities(main.total, main.length, normalisation=normalisation,
                           content_free_logprobs=cf_total)
  mean = main.total / main.length.astype(jnp.float32)
  prediction = jnp.argmax(cp.logprobs, axis=-1).astype(jnp.int32)
  return Classification(main.total, mean, main.length, cp.probs, cp.logprobs, prediction,
                        cf_total)
