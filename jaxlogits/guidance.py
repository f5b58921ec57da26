"""Classifier-free guidance for language models."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxlogits import _checks
from jaxlogits import _numerics as nm

__all__ = ["guidance"]


@jax.jit
def _guidance(cond, uncond, scale):
  _, lc = nm.probs_and_logprobs(nm.effective(nm.sanitize(cond)))
  _, lu = nm.probs_and_logprobs(nm.effective(nm.sanitize(uncond)))
  both = jnp.isfinite(lc) & jnp.isfinite(lu)
  mixed = nm.clamp_finite(lu + scale * (lc - lu), both, cond.dtype)
  out = jnp.where(both, mixed, -jnp.inf)
  out = jnp.where(scale == 1, lc, jnp.where(scale == 0, lu, out))
  # A token allowed by the conditional model must not vanish because the unconditional one
  # masks it: if nothing finite is left, fall back to the conditional distribution.
  empty = ~jnp.any(jnp.isfinite(out), axis=-1, keepdims=True)
  out = jnp.where(empty & jnp.any(jnp.isfinite(lc), axis=-1, keepdims=True), lc, out)
  return nm.finish(out, cond.dtype)


def guidance(cond_logits: Any, uncond_logits: Any, scale: Any) -> jax.Array:
  r"""Classifier-free guidance: extrapolates from the unconditional towards the conditional model.

  .. math::
    \ell' = \log\operatorname{softmax}(u) + s\,\big(\log\operatorname{softmax}(c)
            - \log\operatorname{softmax}(u)\big)

  ``s = 1`` gives the conditional log-probabilities, ``s = 0`` the unconditional ones, ``s > 1``
  strengthens the prompt's effect. A token that either model masks (``-inf``) stays masked for
  other ``s``; if that leaves no token, the conditional log-probabilities are returned.

  Args:
    cond_logits: ``[..., V]`` logits given the full prompt.
    uncond_logits: ``[..., V]`` logits given the negative or empty prompt (same shape).
    scale: guidance scale ``s``, any finite real; a scalar or one value per row.

  Returns:
    Guided logits (log-probability scale), same shape and dtype as ``cond_logits``.

  Examples:
    >>> import jax.numpy as jnp, jaxlogits as jl
    >>> c = jnp.log(jnp.array([0.5, 0.5])); u = jnp.log(jnp.array([0.25, 0.75]))
    >>> jnp.exp(jl.guidance(c, u, 2.0)).round(3)
    Array([1.   , 0.333], dtype=float32)

  References:
    Sanchez et al., "Stay on topic with Classifier-Free Guidance", 2023.
    https://arxiv.org/abs/2306.17806
  """
  cond = _checks.check_logits(cond_logits, "cond_logits")
  uncond = _checks.check_logits(uncond_logits, "uncond_logits")
  if cond.shape != uncond.shape:
    raise ValueError(f"cond_logits {cond.shape} and uncond_logits {uncond.shape} must have the "
                     "same shape")
  _checks.check_range("guidance scale", scale, finite=True)
  return _guidance(cond, uncond,
                   _checks.row_param("scale", scale, cond.shape[:-1], jnp.float32))
