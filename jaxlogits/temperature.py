"""Temperature scaling."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxlogits import _checks
from jaxlogits import _numerics as nm

__all__ = ["temperature"]


def _scale(x: jax.Array, t: jax.Array, dtype) -> jax.Array:
  """``x / t`` for rows with ``t > 0`` (``x`` sanitized float32; other rows divided by 1),
  saturating at ``dtype``'s finite range; shared with the vocab-sharded temperature."""
  # +inf and -inf entries stay as they are (inf / inf would be NaN for t = inf under jit).
  y = jnp.where(jnp.isinf(x), x, x / jnp.where(t > 0, t, 1.0))
  y = nm.clamp_finite(y, jnp.isfinite(x), dtype)
  # t = 1 leaves the row exactly as it is (on CPU the division would flush denormals to zero).
  return jnp.where(t == 1, x, y)


@functools.partial(jax.jit, static_argnames="greedy")
def _temperature(logits: jax.Array, t: jax.Array, greedy: bool = True) -> jax.Array:
  """``greedy=False`` is for a caller that has checked that every ``t > 0`` (the pipeline's
  program for batches without a greedy row): the greedy branch and its test are left out."""
  x = nm.sanitize(logits)
  positive = t > 0
  scaled_x = _scale(x, t, logits.dtype)
  if not greedy:
    # No lax.cond: inside a block of rows its operand would be the block's logits, copied out
    # in full (0.15 ms per 4 x 128K block in a CPU profile), where without it they fuse into
    # the next pass.
    return nm.finish(scaled_x, logits.dtype)
  # t == 0 (and, under jit, t < 0 or NaN): only the argmax survives, lowest index on ties. The
  # argmax pass runs only when some row needs it. Its branch cleans the logits it is given
  # itself: an operand of a lax.cond is written out in full, and the given logits usually are
  # already (the sanitized copy would be one more pass over the row).
  first = lax.cond(jnp.any(~positive), lambda: nm.first_argmax(nm.sanitize(logits))[..., None],
                   lambda: jnp.zeros_like(t, jnp.int32))
  greedy_x = nm.apply_mask(x, jnp.arange(x.shape[-1]) == first)
  return nm.finish(jnp.where(positive, scaled_x, greedy_x), logits.dtype)


def temperature(logits: Any, t: Any) -> jax.Array:
  r"""Divides logits by a temperature; ``t = 0`` keeps only the argmax (greedy).

  .. math::
    \ell'_i = \ell_i / t \quad (t > 0), \qquad
    \ell'_i = \ell_i \,[i = \min \arg\max_j \ell_j] \text{ else } -\infty \quad (t = 0)

  ``t < 1`` sharpens the distribution, ``t > 1`` flattens it, ``t = 1`` is the identity. A finite
  logit whose quotient overflows saturates at the dtype's largest finite value (so a tiny ``t``
  never turns a row into ``inf``); ``+inf`` stays ``+inf``.

  Args:
    logits: ``[..., V]`` float logits.
    t: temperature ``>= 0``; a scalar or one value per row (broadcastable to ``logits.shape[:-1]``).
      Under ``jit`` a negative or NaN ``t`` acts as 0.

  Returns:
    The scaled logits, same shape and dtype as ``logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> jl.temperature(jnp.array([2.0, 1.0, 2.0]), 0.5)
    Array([4., 2., 4.], dtype=float32)
    >>> jl.temperature(jnp.array([2.0, 1.0, 2.0]), 0.0)
    Array([  2., -inf, -inf], dtype=float32)

  References:
    Ackley, Hinton and Sejnowski, "A Learning Algorithm for Boltzmann Machines", 1985.
  """
  logits = _checks.check_logits(logits)
  _checks.check_range("temperature", t, lo=0.0, finite=True)
  return _temperature(logits, _checks.row_param("temperature", t, logits.shape[:-1], jnp.float32))
