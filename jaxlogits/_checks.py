"""Argument handling shared by every public function (private).

Public functions follow the jax.nn / jax.random convention: they validate what they can and hand
off to a jitted private implementation.  Two kinds of checks happen here:

* Static checks (dtypes, shapes) always run, under ``jit`` too, because shapes and dtypes are known
  at trace time.  Integer logits are a ``TypeError``; mismatched shapes a ``ValueError``.
* Value checks (a parameter's range, token ids in ``[0, V)``) run only when the value is concrete,
  that is in an eager call.  Under ``jit`` the value is a tracer and nothing raises; the
  implementations then clamp invalid values so that the documented invariants still hold.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__: list[str] = []

_FLOAT_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16, jnp.float64)


def concrete(value: Any) -> np.ndarray | None:
  """Returns ``value`` as a NumPy array when it is concrete, ``None`` when it is traced."""
  if isinstance(value, jax.core.Tracer):
    return None
  try:
    return np.asarray(value)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def check_logits(logits: Any, name: str = "logits") -> jax.Array:
  """Converts ``logits`` to an array and checks that it is a floating ``[..., V]`` array."""
  if isinstance(logits, (list, tuple)):
    logits = np.asarray(logits, dtype=np.float32)
  arr = jnp.asarray(logits)
  if not jnp.issubdtype(arr.dtype, jnp.floating):
    raise TypeError(
        f"{name} must be a floating array (float32, bfloat16 or float16), got dtype {arr.dtype}")
  if arr.ndim < 1:
    raise ValueError(f"{name} must have shape [..., V] with at least one axis, got a scalar")
  if arr.shape[-1] < 1:
    raise ValueError(f"{name} must have a vocabulary axis of size >= 1, got shape {arr.shape}")
  return arr


def _fmt_range(lo, hi, lo_open, hi_open) -> str:
  left = "(" if lo_open or lo is None else "["
  right = ")" if hi_open or hi is None else "]"
  lo_s = "-inf" if lo is None else f"{lo:g}"
  hi_s = "inf" if hi is None else f"{hi:g}"
  return f"{left}{lo_s}, {hi_s}{right}"


def check_range(name: str, value: Any, *, lo=None, hi=None, lo_open=False, hi_open=False,
                integer=False, finite=False) -> None:
  """Raises ``ValueError`` if a concrete ``value`` has an element outside the given range.

  NaN is always out of range; ``finite=True`` also rejects infinities.

  Traced values are not checked (under ``jit`` nothing raises).
  """
  arr = concrete(value)
  if arr is None:
    return
  if arr.dtype == object:
    raise ValueError(f"{name} must be numeric, got {value!r}")
  if integer:
    if jnp.issubdtype(arr.dtype, jnp.floating):
      if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise ValueError(f"{name} must be an integer, got {_show(arr)}")
    elif not (jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == np.bool_):
      raise ValueError(f"{name} must be an integer, got dtype {arr.dtype}")
  ok = ~np.isnan(arr.astype(np.float64)) if arr.dtype != np.bool_ else np.ones(arr.shape, bool)
  a = arr.astype(np.float64)
  if lo is not None:
    ok &= (a > lo) if lo_open else (a >= lo)
  if hi is not None:
    ok &= (a < hi) if hi_open else (a <= hi)
  if finite and not np.all(np.isfinite(a)):
    raise ValueError(f"{name} must be a finite number, got {_show(a[~np.isfinite(a)])}")
  if not np.all(ok):
    bad = a[~ok] if a.ndim else a
    raise ValueError(
        f"{name} must be in {_fmt_range(lo, hi, lo_open, hi_open)}, got {_show(bad)}")


def _show(arr: np.ndarray) -> str:
  flat = np.ravel(arr)
  if flat.size == 1:
    v = flat[0]
    return f"{v:g}" if isinstance(v, (float, np.floating)) and math.isfinite(v) else str(v)
  return np.array2string(flat[:8], threshold=8) + (" ..." if flat.size > 8 else "")


def is_int(value: Any) -> bool:
  """True for a Python or NumPy integer (not a bool)."""
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_broadcast(name: str, shape: tuple[int, ...], target: tuple[int, ...],
                    target_name: str) -> None:
  """Raises ``ValueError`` unless ``shape`` broadcasts to exactly ``target``."""
  try:
    ok = np.broadcast_shapes(tuple(shape), tuple(target)) == tuple(target)
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(f"{name} has shape {tuple(shape)}, which does not broadcast to "
                     f"{target_name} {tuple(target)}")


def row_param(name: str, value: Any, batch_shape: tuple[int, ...], dtype) -> jax.Array:
  """Returns a parameter as an array of ``batch_shape + (1,)`` for elementwise use on a row.

  ``value`` is a Python scalar or an array broadcastable to ``batch_shape`` (one value per row).
  Concrete integers beyond the int32 range saturate (a huge ``top_k`` stays "all tokens").
  """
  if value is None:
    raise ValueError(f"{name} must be a number or an array, got None")
  conc = None if isinstance(value, jax.Array) else concrete(value)
  if conc is not None and jnp.issubdtype(dtype, jnp.integer) and conc.dtype.kind in "iuf":
    info = np.iinfo(np.int32)
    value = np.clip(conc.astype(np.float64), info.min, info.max).astype(np.int64)
  arr = jnp.asarray(value)
  if jnp.issubdtype(arr.dtype, jnp.complexfloating):
    raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
  check_broadcast(name, arr.shape, batch_shape, "the batch shape (one value per row of logits)")
  return jnp.broadcast_to(arr.astype(dtype), batch_shape)[..., None]


def check_token_ids(name: str, tokens: Any, vocab_size: int, *, allow=None) -> None:
  """Raises ``ValueError`` if concrete ``tokens`` has an id outside ``[0, vocab_size)``.

  Ids equal to ``allow`` (a padding id) are accepted.
  """
  arr = concrete(tokens)
  if arr is None:
    return
  if not (jnp.issubdtype(arr.dtype, jnp.integer)):
    raise TypeError(f"{name} must be an integer array of token ids, got dtype {arr.dtype}")
  bad = (arr < 0) | (arr >= vocab_size)
  if allow is not None:
    allow_arr = concrete(allow)
    if allow_arr is not None:
      bad &= arr != allow_arr
  if np.any(bad):
    raise ValueError(
        f"{name} must hold token ids in [0, {vocab_size}), got {_show(arr[bad])}")


def int_array(name: str, value: Any) -> jax.Array:
  """Converts token ids to an int32 array, rejecting floating input."""
  arr = jnp.asarray(value)
  if not jnp.issubdtype(arr.dtype, jnp.integer):
    raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
  return arr.astype(jnp.int32)
