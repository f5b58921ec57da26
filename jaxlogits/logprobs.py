"""Log-probabilities: log-softmax, chosen-token log-probs, top alternatives and entropy.

All results are float32 whatever the logits' dtype (bfloat16 log-probabilities lose too much),
computed in log space, with NaN counted as ``-inf`` and the ``+inf`` rule of semantics.md (a row
with ``+inf`` entries is uniform over them). A row with no finite logit has log-probabilities
``-inf`` and entropy 0, never NaN.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxlogits import _checks
from jaxlogits import _numerics as nm

__all__ = ["entropy", "log_softmax", "token_logprobs", "top_logprobs"]


@jax.jit
def _log_softmax(logits):
  return nm.probs_and_logprobs(nm.effective(nm.sanitize(logits)))[1]


def log_softmax(logits: Any) -> jax.Array:
  r"""Log-probabilities of each row, in float32.

  .. math::
    \log p_i = \ell_i - \log \textstyle\sum_j e^{\ell_j}

  Args:
    logits: ``[..., V]`` float logits.

  Returns:
    ``float32[..., V]`` log-probabilities (``-inf`` for masked tokens).

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> jnp.exp(jl.log_softmax(jnp.array([0.0, jnp.log(3.0), -jnp.inf]))).round(4)
    Array([0.25, 0.75, 0.  ], dtype=float32)
  """
  return _log_softmax(_checks.check_logits(logits))


@jax.jit
def _token_logprobs(logits, tokens):
  logp = _log_softmax(logits)
  v = logits.shape[-1]
  inside = (tokens >= 0) & (tokens < v)
  picked = jnp.take_along_axis(logp, jnp.clip(tokens, 0, v - 1)[..., None], axis=-1)[..., 0]
  return jnp.where(inside, picked, -jnp.inf)


def token_logprobs(logits: Any, tokens: Any) -> jax.Array:
  r"""Log-probability of given tokens under each row's distribution.

  .. math::
    \log p_{t} = \ell_{t} - \log \textstyle\sum_j e^{\ell_j}

  Args:
    logits: ``[..., V]`` float logits (for a sequence, ``[..., T, V]``).
    tokens: integer ids of shape ``logits.shape[:-1]``. Eagerly, ids outside ``[0, V)`` raise;
      under ``jit`` they give ``-inf``.

  Returns:
    ``float32[...]`` log-probabilities.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> jl.token_logprobs(jnp.array([[0.0, 0.0], [0.0, 2.0]]), jnp.array([0, 1])).round(4)
    Array([-0.6931, -0.1269], dtype=float32)
  """
  logits = _checks.check_logits(logits)
  tokens = _checks.int_array("tokens", tokens)
  if tokens.shape != logits.shape[:-1]:
    raise ValueError(f"tokens has shape {tokens.shape}, expected logits.shape[:-1] = "
                     f"{logits.shape[:-1]}")
  _checks.check_token_ids("tokens", tokens, logits.shape[-1])
  return _token_logprobs(logits, tokens)


@functools.partial(jax.jit, static_argnames="n")
def _top_logprobs(logits, n):
  logp = _log_softmax(logits)
  values, ids = nm.top_values(logp, n)  # stable: equal values keep index order (lower id first)
  return values, ids.astype(jnp.int32)


def top_logprobs(logits: Any, n: int) -> tuple[jax.Array, jax.Array]:
  r"""The ``n`` most likely tokens of each row and their log-probabilities.

  Sorted by log-probability, highest first; ties by lower id. ``n`` may be anything up to ``V``
  (no fixed cap); it is static because it sets the output shape.

  Args:
    logits: ``[..., V]`` float logits.
    n: number of alternatives, ``1 <= n <= V``.

  Returns:
    ``(logprobs, ids)``: ``float32[..., n]`` and ``int32[..., n]``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> lp, ids = jl.top_logprobs(jnp.log(jnp.array([0.2, 0.5, 0.3])), 2)
    >>> ids, jnp.exp(lp)
    (Array([1, 2], dtype=int32), Array([0.5, 0.3], dtype=float32))
  """
  logits = _checks.check_logits(logits)
  if not _checks.is_int(n) or not 1 <= n <= logits.shape[-1]:
    raise ValueError(f"n must be an int in [1, {logits.shape[-1]}] (the vocabulary size), "
                     f"got {n!r}")
  return _top_logprobs(logits, int(n))


@jax.jit
def _entropy(logits):
  probs, logp = nm.probs_and_logprobs(nm.effective(nm.sanitize(logits)))
  return nm.entropy_terms(probs, logp)[..., 0]


def entropy(logits: Any) -> jax.Array:
  r"""Shannon entropy of each row's distribution, in nats.

  .. math::
    H = -\textstyle\sum_i p_i \log p_i \quad (0 \log 0 = 0)

  Args:
    logits: ``[..., V]`` float logits.

  Returns:
    ``float32[...]`` entropies (0 for a row with no finite logit).

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> jl.entropy(jnp.zeros((2, 4)))
    Array([1.3862944, 1.3862944], dtype=float32)
  """
  return _entropy(_checks.check_logits(logits))
