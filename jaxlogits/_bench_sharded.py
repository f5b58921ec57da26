"""Benchmark W2 with the vocabulary split over 8 simulated CPU devices (private).

``python -m jaxlogits._bench_sharded --json`` prints one JSON object::

  {"devices": 8, "batch": 32, "vocab": 128256, "sharded_ms": ..., "single_device_ms": ...,
   "bytes_crossed_per_step": ..., "bytes_full_gather": ...}

W2: float32 logits ``[32, 128256]``, temperature 1.0, top_p 0.95, min_p 0.05, then the draw.
Both cases run in the same process: the single-device step (:func:`jaxlogits.sample_step`) on
device 0 and the vocab-sharded step (:func:`jaxlogits.sharding.vocab_sharded_sampler`) on all 8
devices; each is the median of repeated runs after warm-up, with ``block_until_ready``. On one
host the 8 simulated devices share the CPU cores, so ``sharded_ms`` measures the algorithm's
overhead, not a speed-up.

Bytes crossed: the collectives' payloads, per device, summed over the step, by the convention
that an ``all_gather`` of ``n`` bytes per device moves ``(D - 1) * n`` bytes into each device
and an all-reduce (``psum``/``pmax``/``pmin``) of ``n`` bytes moves ``(D - 1) / D * 2n`` (a
ring's reduce-scatter plus all-gather). A full gather of the logits moves
``(D - 1) / D * B * V * 4`` bytes into each device. W2's rows are flat (``N(0, 1) * 2``), so
top_p 0.95 keeps about a third of the vocabulary and takes the nucleus search (``B`` rows,
``D`` devices; ``row = 4B`` bytes):

* the ``+inf`` flag (top_p, min_p, draw): 3 all-reduces of ``row``;
* top_p: an all-reduce of the maximum (``row``) and one of the minimum (``row``: whether every
  logit of the row is finite); then one all-reduce of ``2 row`` (a fixed-point mass, two
  ``uint32``) for each call of ``RowOps.row_sum`` (the normaliser, the mass at ``t_q`` that
  tells a nucleus too wide for the candidates, each full pass of the search, and the
  bisection's 32 passes if it runs) and for each call of ``RowOps.sub_sum``
  (each pass of the search's estimate over the subsample, when it runs: see
  ``truncation.estimate_by_default``), and one all-gather of ``c row`` for
  each call of ``RowOps.top`` with ``c`` values (the 64 candidates, the 64 largest inside the
  final bracket). The calls are counted at run time on W2's rows (:func:`top_p_calls`, one
  device, which makes the same calls as the sharded search);
* min_p: 2 all-reduces of ``row`` (row maximum, largest key for keep-at-least-one);
* draw: an all-reduce of the maximum (``row``), an all-gather of each device's fixed-point total
  (``2 row``), an all-reduce of the token (``row``);
* the batch-level ``any`` predicates of ``lax.cond`` are computed from replicated values and
  cross nothing.

``bytes_crossed_per_step`` is this count. ``hlo_bytes_per_pass`` cross-checks the payload sizes
against the compiled program: every ``all-reduce`` and ``all-gather`` in the HLO counted once
with the same convention, loop bodies once, including branches W2 does not take (top_k's
candidate gather, the greedy argmax, the bisection fallback).
"""

from __future__ import annotations

import os
import sys

if "jax" not in sys.modules:
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  # ``python -m`` imports the package (and so JAX) first; the CPU backend starts on first use,
  # so the device count can still be set here.
  try:
    jax.config.update("jax_num_cpu_devices", 8)
  except RuntimeError:
    pass

import jaxlogits as jl  # noqa: E402
from jaxlogits import _numerics as nm  # noqa: E402
from jaxlogits import sharding as sh  # noqa: E402
from jaxlogits import truncation  # noqa: E402

BATCH, VOCAB, DEVICES = 32, 128256, 8
_BYTES = {"f32": 4, "s32": 4, "u32": 4, "pred": 1, "f16": 2, "bf16": 2, "s64": 8, "u64": 8,
          "f64": 8}


def _median_ms(fn, repeats):
  fn()  # warm-up (compile)
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append((time.perf_counter() - t0) * 1e3)
  return float(np.median(times))


def _shape_bytes(text):
  total = 0
  for dtype, dims in re.findall(r"(f32|s32|u32|pred|f16|bf16|s64|u64|f64)\[([0-9,]*)\]", text):
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    total += n * _BYTES[dtype]
  return total


def hlo_collective_bytes(hlo: str, devices: int) -> dict:
  """Bytes moved into each device by the all-reduce / all-gather instructions of ``hlo``."""
  reduce_bytes = gather_bytes = 0
  for line in hlo.splitlines():
    m = re.search(r"=\s*(\S+)\s+(all-reduce|all-gather)(?:-start)?\(", line)
    if not m:
      continue
    out_bytes = _shape_bytes(m.group(1))
    if m.group(2) == "all-reduce":
      reduce_bytes += 2 * (devices - 1) * out_bytes // devices
    else:  # the result holds every device's piece
      gather_bytes += (devices - 1) * out_bytes // devices
  return {"all_reduce": reduce_bytes, "all_gather": gather_bytes,
          "total": reduce_bytes + gather_bytes}


def top_p_calls(logits: np.ndarray, p: float) -> dict:
  """How often W2's top-p reads the whole row: ``row_sum`` and ``top`` calls, counted at run time
  (``jax.debug.callback``) on one device. The sharded top-p runs the same search on the same
  numbers, so it makes the same calls, each one collective."""
  calls = {"row_sum": 0, "sub_sum": 0, "top": []}
  v = logits.shape[-1]
  count = lambda name: jax.debug.callback(lambda: calls.__setitem__(name, calls[name] + 1))

  def row_sum(w):
    count("row_sum")
    return nm.exact_sum(w, v)

  def sub_sum(w):
    count("sub_sum")
    return nm.exact_sum(w, v, block=nm.BLOCK // truncation.SUBSAMPLE)

  def top(x, c):
    jax.debug.callback(lambda: calls["top"].append(c))
    return nm.top_values(x, c)[0]

  ops = truncation.RowOps(v, row_sum, top, sub_sum if truncation.estimate_by_default(v) else None,
                          truncation._one_device(v).all_finite)
  e = jnp.asarray(logits)  # W2's temperature 1.0 leaves finite logits as they are
  pp = jnp.full((e.shape[0], 1), p, jnp.float32)
  jax.block_until_ready(jax.jit(lambda e, pp: truncation._nucleus_key(
      e, nm.row_max(e), pp, truncation.TOP_P_CANDIDATES, truncation.NUCLEUS_PASSES, ops))(e, pp))
  jax.effects_barrier()
  return calls


def formula_bytes(batch: int, devices: int, calls: dict) -> int:
  """The count of the module docstring for W2, given :func:`top_p_calls`."""
  ar = lambda n: 2 * (devices - 1) * n // devices
  ag = lambda n: (devices - 1) * n
  row = 4 * batch
  inf_flags = 3 * ar(row)
  sums = calls["row_sum"] + calls["sub_sum"]
  top_p = 2 * ar(row) + sums * ar(2 * row) + sum(ag(c * row) for c in calls["top"])
  min_p = 2 * ar(row)
  draw = ar(row) + ag(2 * row) + ar(row)
  return inf_flags + top_p + min_p + draw


def run(repeats: int = 10, batch: int = BATCH, vocab: int = VOCAB) -> dict:
  """Times W2 on one device and vocab-sharded over 8, and counts the bytes (module docstring)."""
  devices = jax.devices()
  if len(devices) < DEVICES:
    raise RuntimeError(f"need {DEVICES} devices, got {len(devices)}: set XLA_FLAGS="
                       "--xla_force_host_platform_device_count=8 before JAX starts")
  rng = np.random.default_rng(0)
  logits = (rng.standard_normal((batch, vocab)) * 2.0).astype(np.float32)
  params = jl.SamplingParams.create(batch, temperature=1.0, top_p=0.95, min_p=0.05)
  key = jax.random.key(0)

  single_logits = jax.device_put(logits, devices[0])
  single_params = jax.device_put(params, devices[0])
  single = jax.jit(lambda k, l, p: jl.sample_step(k, l, p)[0])
  single_ms = _median_ms(lambda: single(key, single_logits, single_params).block_until_ready(),
                         repeats)

  mesh = jax.make_mesh((DEVICES,), ("vocab",), (jax.sharding.AxisType.Auto,),
                       devices=devices[:DEVICES])
  step = sh.vocab_sharded_sampler(mesh, "vocab", vocab_size=vocab)
  padded = jax.device_put(sh.pad_vocab(logits, DEVICES),
                          jax.sharding.NamedSharding(mesh, jax.P(None, "vocab")))
  rep = jax.sharding.NamedSharding(mesh, jax.P())
  params_r = jax.device_put(params, rep)
  sharded_ms = _median_ms(lambda: step(key, padded, params_r)[0].block_until_ready(), repeats)

  tokens_equal = bool(np.array_equal(np.asarray(step(key, padded, params_r)[0]),
                                     np.asarray(single(key, single_logits, single_params))))
  lowered = jax.jit(lambda k, l, p: step(k, l, p)[0]).lower(key, padded, params_r)
  hlo = lowered.compile().as_text()
  measured = hlo_collective_bytes(hlo, DEVICES)
  calls = top_p_calls(logits, 0.95)
  full = (DEVICES - 1) * batch * vocab * 4 // DEVICES
  return {"devices": DEVICES, "batch": batch, "vocab": vocab,
          "sharded_ms": round(sharded_ms, 3), "single_device_ms": round(single_ms, 3),
          "bytes_crossed_per_step": formula_bytes(batch, DEVICES, calls),
          "top_p_mass_sums": calls["row_sum"], "top_p_sample_sums": calls["sub_sum"],
          "top_p_gathers": calls["top"],
          "bytes_full_gather": full, "hlo_bytes_per_pass": measured["total"],
          "tokens_equal": tokens_equal}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--batch", type=int, default=BATCH)
  parser.add_argument("--vocab", type=int, default=VOCAB)
  args = parser.parse_args(argv)
  result = run(args.repeats, args.batch, args.vocab)
  if args.json:
    print(json.dumps(result))
  else:
    for k, v in result.items():
      print(f"{k:>24}: {v}")


if __name__ == "__main__":
  main()
