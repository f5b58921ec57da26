"""Multi-device checks, run in a subprocess by tests/test_sharding.py.

Usage::

  python tests/_sharded_checks.py [CHECK ...]           # 8 simulated CPU devices, JSON on stdout
  python tests/_sharded_checks.py --process I --port P  # one of two jax.distributed processes

The device count is fixed when JAX starts, so these checks live in their own process and the
rest of the suite keeps its single device. Each check returns a dict with ``ok`` and details; the
script prints one JSON object ``{check: result}`` as its last line.
"""

import json
import os
import sys
import time
import traceback

_PROCESS = "--process" in sys.argv
if not _PROCESS:
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

if _PROCESS:
  jax.config.update("jax_num_cpu_devices", 4)

import jaxlogits as jl  # noqa: E402
from jaxlogits import _numerics as nm  # noqa: E402
from jaxlogits import decode  # noqa: E402
from jaxlogits import sharding as sh  # noqa: E402

P = jax.sharding.PartitionSpec
AUTO = jax.sharding.AxisType.Auto
F32_MAX = float(np.finfo(np.float32).max)
MARGIN = 1e-4


def adversarial_rows(rng, b, v):
  """``[b, v]`` float32 rows with ties, -inf, NaN, +inf, huge and tiny values and corner rows."""
  rows = np.empty((b, v), np.float32)
  for i in range(b):
    kind = i % 10
    row = (rng.standard_normal(v) * rng.choice([0.5, 3.0, 30.0])).astype(np.float32)
    pool = rng.choice([-2.0, 0.0, 1.0, 2.5, 7.0], size=3)
    ties = rng.random(v) < (0.6 if kind in (1, 2) else 0.2)
    row[ties] = rng.choice(pool, size=ties.sum())
    row[rng.random(v) < 0.25] = -np.inf
    if kind in (2, 3, 4):
      row[rng.random(v) < 0.02] = np.nan
    if kind == 3:
      row[rng.integers(0, v, 4)] = rng.choice([1e30, -1e30, 3e38, -3e38, F32_MAX, -F32_MAX], 4)
    if kind == 4:
      row[rng.integers(0, v, 8)] = rng.choice([0.0, -0.0, 1e-38, -1e-40, 1.4e-45, 1e-30], 8)
    if kind == 5:
      row[rng.integers(0, v, 2)] = np.inf
    if kind == 6:
      row[:] = -np.inf
      row[rng.integers(0, v)] = 1.5
    if kind == 7:
      row[:] = 3.0
    if kind == 8:
      row[:] = -np.inf
    if kind == 9:  # the maximum only in the last shard
      row[:] = -5.0
      row[v - 1] = 4.0
    rows[i] = row
  return rows


def mesh1(n=8, name="vocab"):
  return jax.make_mesh((n,), (name,), (AUTO,))


def mesh2(b=2, v=4):
  return jax.make_mesh((b, v), ("batch", "vocab"), (AUTO, AUTO))


def equal(a, b):
  return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def close(a, b):
  """Same -inf pattern, finite values within float32 rounding of the normaliser (for log_softmax: XLA sums a row in
  an order that depends on the batch shape, even on one device)."""
  a, b = np.asarray(a), np.asarray(b)
  fin = np.isfinite(b)
  return bool(np.array_equal(np.isfinite(a), fin) and np.array_equal(a[~fin], b[~fin]) and
              np.allclose(a[fin], b[fin], rtol=1e-6, atol=1e-6))


# Compared to float32 rounding: log_softmax's row sum, and the pipeline's chained arithmetic
# (penalty, then temperature), may round differently in a different compiled program, sharded
# or not (XLA fuses and reassociates); every mask and token is compared exactly.
_ROUNDED = ("log_softmax", "sample_step_processed", "process_logits")


def same(name, a, b):
  return (close if name in _ROUNDED else equal)(a, b)


def reference_checks(name, x, param, got):
  """Masks of ``got`` against the float64 reference, rows near a knife edge skipped."""
  import reference as R
  from compare import assert_same_masks_and_values
  ref_fn = {"top_k": R.top_k_ref, "top_p": R.top_p_ref, "min_p": R.min_p_ref}[name]
  margin_fn = {"top_k": R.top_k_margin, "top_p": R.top_p_margin, "min_p": R.min_p_margin}[name]
  checked = 0
  for i in range(x.shape[0]):
    if margin_fn(x[i], param[i]) < MARGIN:
      continue
    assert_same_masks_and_values(got[i], ref_fn(x[i], param[i]), exact_values=True)
    checked += 1
  return checked


# ----------------------------------------------------------------------------------------------
# vocabulary-sharded transforms and draw


def check_vocab_transforms():
  """Every vocab-sharded transform equals the single-device one on adversarial rows, V = 1001."""
  rng = np.random.default_rng(0)
  v, b = 1001, 40
  x = adversarial_rows(rng, b, v)
  xp = np.asarray(sh.pad_vocab(x, 8, value=np.inf))  # hostile padding: it must be ignored
  mesh = mesh1()
  params = {
      "top_k": rng.choice([0, 1, 2, 5, 17, 64, 65, 300, 1000, 1001, 5000], b).astype(np.int32),
      "top_p": rng.choice([0.1, 0.5, 0.8, 0.9, 0.95, 0.999, 1.0], b).astype(np.float32),
      "min_p": rng.choice([0.0, 0.01, 0.1, 0.5, 1.0], b).astype(np.float32),
      "temperature": rng.choice([0.0, 0.3, 1.0, 2.0], b).astype(np.float32),
  }
  fns = {"top_k": (sh.vocab_sharded_top_k, jl.top_k), "top_p": (sh.vocab_sharded_top_p, jl.top_p),
         "min_p": (sh.vocab_sharded_min_p, jl.min_p),
         "temperature": (sh.vocab_sharded_temperature, jl.temperature)}
  out = {"ok": True}
  for name, (fn, single) in fns.items():
    f = jax.jit(jax.shard_map(
        lambda l, p, fn=fn: fn(l, p, axis_name="vocab", vocab_size=v), mesh=mesh,
        in_specs=(P(None, "vocab"), P()), out_specs=P(None, "vocab")))
    got = np.asarray(f(xp, params[name]))
    want = np.asarray(single(x, params[name]))
    same = np.all((got[:, :v] == want) | (np.isnan(got[:, :v]) & np.isnan(want)), axis=-1)
    padding_masked = bool(np.all(got[:, v:] == -np.inf))
    detail = {"rows_equal": int(same.sum()), "rows": b, "padding_masked": padding_masked}
    ok = padding_masked and bool(same.all())
    if name in ("top_k", "top_p", "min_p"):
      detail["rows_checked_against_float64"] = reference_checks(name, x, params[name], got[:, :v])
    out[name] = detail
    out["ok"] &= ok
  # penalties: elementwise, no communication
  counts = rng.integers(0, 3, (b, v)).astype(np.int32)
  f = jax.jit(jax.shard_map(
      lambda l, c, r, fr, pr: sh.vocab_sharded_penalties(l, c, repetition=r, frequency=fr,
                                                         presence=pr),
      mesh=mesh, in_specs=(P(None, "vocab"), P(None, "vocab"), P(), P(), P()),
      out_specs=P(None, "vocab")))
  r, fr, pr = (rng.uniform(0.5, 2.0, b).astype(np.float32),
               rng.uniform(-1, 1, b).astype(np.float32), rng.uniform(-1, 1, b).astype(np.float32))
  got = np.asarray(f(np.asarray(sh.pad_vocab(x, 8)), np.asarray(sh.pad_vocab(counts, 8, value=0)),
                     r, fr, pr))
  want = jl.presence_penalty(jl.frequency_penalty(
      jl.repetition_penalty(x, counts, r), counts, fr), counts, pr)
  out["penalties"] = equal(got[:, :v], want) and bool(np.all(got[:, v:] == -np.inf))
  out["ok"] &= out["penalties"]
  return out


def check_top_p_knife_edges():
  """Sharded top_p equals the single-device mask bit for bit, with the nucleus inside the 64
  candidates or far beyond them, even with ``p`` within a few float32 steps of the row's
  cumulative mass at the boundary, where masses summed in another order flip the boundary
  token."""
  rng = np.random.default_rng(5)
  v, base, steps = 3001, 48, 8
  # One top token at 0, a head of tens of tokens and a long flat tail, so that the normaliser
  # is below 2: there its last bits, which depend on the order of summation, reach log(Z).
  x = (rng.standard_normal((base, v)) * 0.3 - 9.0).astype(np.float32)
  head = rng.integers(2, 60, base)
  for i in range(base):
    x[i, rng.choice(v, head[i], replace=False)] = np.minimum(rng.normal(-5.0, 0.7, head[i]), 0)
    x[i, rng.integers(v)] = 0.0
    if i % 4 == 0:
      x[i, rng.random(v) < 0.3] = -np.inf
  x[base // 2:] = np.sort(x[base // 2:], axis=-1)[:, ::-1].copy()  # the head in the first shard
  k = np.minimum(rng.integers(1, 40, base), head)
  # and flat rows whose nucleus reaches far beyond the candidates (the search and the bisection)
  flat = (rng.standard_normal((base, v)) * rng.choice([0.5, 2.0], (base, 1))).astype(np.float32)
  flat[::3, ::5] = -np.inf
  x = np.concatenate([x, flat])
  probs = np.exp(x.astype(np.float64) - np.max(x, axis=-1, keepdims=True))
  probs /= probs.sum(axis=-1, keepdims=True)
  cum = np.cumsum(-np.sort(-probs, axis=-1), axis=-1)
  k = np.concatenate([k, rng.integers(200, 1800, base)])
  base *= 2
  edge = cum[np.arange(base), k - 1].astype(np.float32)
  # every row at p = its boundary mass and up to `steps` float32 steps either side
  x = np.repeat(x, 2 * steps + 1, axis=0)
  p = np.repeat(edge, 2 * steps + 1)
  for j, off in enumerate(np.tile(np.arange(-steps, steps + 1), base)):
    for _ in range(abs(off)):
      p[j] = np.nextafter(p[j], np.float32(2 if off > 0 else 0))
  f = jax.jit(jax.shard_map(
      lambda l, q: sh.vocab_sharded_top_p(l, q, axis_name="vocab", vocab_size=v), mesh=mesh1(),
      in_specs=(P(None, "vocab"), P()), out_specs=P(None, "vocab")))
  got = np.asarray(f(np.asarray(sh.pad_vocab(x, 8)), p))[:, :v]
  want = np.asarray(jl.top_p(x, p))
  same = np.all(got == want, axis=-1)
  kept = np.sum(want > -np.inf, axis=-1)
  out = {"ok": bool(same.all()) and bool(kept.max() > 128), "rows": len(p),
         "rows_equal": int(same.sum()), "largest_nucleus": int(kept.max())}
  # The mechanism: a sharded fixed-point sum is bitwise the one-device sum, where a float psum
  # of per-device sums is not.
  for vv in (3001, 128256):
    w = np.exp((rng.standard_normal((16, vv)) * 0.3 - 9.0)).astype(np.float32)
    w[:, 5] = 1.0
    one = np.asarray(jax.jit(lambda a: nm.exact_sum(a, vv))(w))

    def both(a, vv=vv):
      return (sh._row_ops("vocab", vv).row_sum(a),
              lax.psum(jnp.sum(a, axis=-1, keepdims=True), "vocab"))

    g = jax.jit(jax.shard_map(both, mesh=mesh1(), in_specs=(P(None, "vocab"),),
                              out_specs=(P(), P())))
    exact, psum = (np.asarray(a) for a in g(np.asarray(sh.pad_vocab(w, 8, value=0.0))))
    plain = np.asarray(jax.jit(lambda a: jnp.sum(a, -1, keepdims=True))(w))
    out[f"row_sum_V{vv}"] = {"fixed_point_rows_equal": int(np.sum(exact == one)),
                             "float_psum_rows_equal": int(np.sum(psum == plain)), "rows": 16}
    out["ok"] &= bool(np.all(exact == one))
  return out


def check_vocab_draw():
  """The draw equals jl.sample for the same keys; padding ids (even +inf) are never drawn."""
  rng = np.random.default_rng(1)
  v = 1001
  base = adversarial_rows(rng, 20, v)
  base[10:, -1] = 6.0  # mass next to the padding boundary
  n = 4000
  x = base[np.arange(n) % base.shape[0]]
  keys = jax.random.split(jax.random.key(7), n)
  want = np.asarray(jl.sample(keys, x))
  mesh = mesh1()
  out = {"ok": True}
  f = jax.jit(jax.shard_map(
      lambda k, l: sh.vocab_sharded_sample(k, l, axis_name="vocab", vocab_size=v),
      mesh=mesh, in_specs=(P(), P(None, "vocab")), out_specs=P()))
  got = np.asarray(f(keys, np.asarray(sh.pad_vocab(x, 8, value=np.inf))))
  finite_rows = np.any(np.isfinite(np.where(np.isnan(x), -np.inf, x)), axis=-1)
  in_range = bool(np.all((got[finite_rows] >= 0) & (got[finite_rows] < v)))
  empty_ok = bool(np.all(got[~finite_rows] == -1))
  mismatches = int(np.sum(got != want))
  out["draw"] = {"draws": n, "mismatches": mismatches, "padding_never_drawn": in_range,
                 "empty_rows_give_-1": empty_ok}
  # the same keys give exactly the single-device tokens
  out["ok"] &= in_range and empty_ok and mismatches == 0
  # the drawn tokens still follow the distribution: one row, many draws, chi-squared style check
  row = np.full((1, v), -np.inf, np.float32)
  row[0, [0, 500, 999, 1000]] = np.log([0.1, 0.2, 0.3, 0.4])
  many = np.repeat(row, 8000, 0)
  k2 = jax.random.split(jax.random.key(3), 8000)
  f = jax.jit(jax.shard_map(
      lambda k, l: sh.vocab_sharded_sample(k, l, axis_name="vocab", vocab_size=v),
      mesh=mesh, in_specs=(P(), P(None, "vocab")), out_specs=P()))
  toks = np.asarray(f(k2, np.asarray(sh.pad_vocab(many, 8, value=1e30))))
  freq = np.array([np.mean(toks == t) for t in (0, 500, 999, 1000)])
  out["frequencies"] = freq.round(4).tolist()
  out["ok"] &= bool(np.all(np.isin(toks, [0, 500, 999, 1000]))) and bool(
      np.all(np.abs(freq - [0.1, 0.2, 0.3, 0.4]) < 0.02))
  return out


def _step_inputs(rng, b, v):
  x = (rng.standard_normal((b, v)) * 2).astype(np.float32)
  x[::5, ::7] = -np.inf
  counts = rng.integers(0, 3, (b, v)).astype(np.int32) * (rng.random((b, v)) < 0.05)
  params = jl.SamplingParams.create(
      b, temperature=rng.choice([0.0, 0.7, 1.0, 1.3], b), top_k=rng.choice([0, 1, 20, 100], b),
      top_p=rng.choice([0.5, 0.9, 0.95, 1.0], b), min_p=rng.choice([0.0, 0.05, 0.2], b),
      repetition_penalty=rng.choice([1.0, 1.2], b), frequency_penalty=rng.choice([0.0, 0.3], b),
      presence_penalty=rng.choice([0.0, -0.2], b), temperature_last=rng.random(b) < 0.3)
  return x, counts.astype(np.int32), params


def check_vocab_sample_step():
  """vocab_sharded_sampler on a (batch 2, vocab 4) mesh with per-row parameters that differ
  across batch shards equals jl.sample_step (tokens and processed logits)."""
  rng = np.random.default_rng(2)
  v, b = 1001, 16
  x, counts, params = _step_inputs(rng, b, v)
  key = jax.random.key(11)
  want_tok, want_proc = jl.sample_step(key, x, params, counts=counts)
  out = {"ok": True}
  for mesh, batch_axis in ((mesh2(), "batch"), (mesh1(), None)):
    step = sh.vocab_sharded_sampler(mesh, "vocab", vocab_size=v, batch_axis=batch_axis)
    tok, proc = step(key, sh.pad_vocab(x, mesh.shape["vocab"]),
                     params, counts=sh.pad_vocab(counts, mesh.shape["vocab"], value=0))
    name = "batch_and_vocab" if batch_axis else "vocab"
    out[name] = {"tokens_equal": equal(tok, want_tok),
                 "processed_equal": equal(np.asarray(proc)[:, :v], want_proc),
                 "token_spec": str(tok.sharding.spec), "logits_spec": str(proc.sharding.spec)}
    out["ok"] &= out[name]["tokens_equal"] and out[name]["processed_equal"]
  try:
    step(key, sh.pad_vocab(x, 8), jl.SamplingParams.create(b, typical_p=0.5))
    out["rejects_unsupported"] = False
  except ValueError:
    out["rejects_unsupported"] = True
  out["ok"] &= out["rejects_unsupported"]
  return out


def check_vocab_sharded_w2_shape():
  """W2-like shape (V = 128256 over 8 devices, shard size not a multiple of 256 before
  padding): tokens and masks equal the single-device pipeline."""
  rng = np.random.default_rng(3)
  v, b = 128256, 4
  x = (rng.standard_normal((b, v)) * 2).astype(np.float32)
  params = jl.SamplingParams.create(b, temperature=1.0, top_p=[0.95, 0.5, 0.999, 1.0],
                                    min_p=0.05, top_k=[0, 0, 200, 40])
  key = jax.random.key(5)
  want_tok, want_proc = jl.sample_step(key, x, params)
  step = sh.vocab_sharded_sampler(mesh1(), "vocab", vocab_size=v)
  tok, proc = step(key, sh.pad_vocab(x, 8), params)
  ok = equal(tok, want_tok) and equal(np.asarray(proc)[:, :v], want_proc)
  return {"ok": ok, "tokens": np.asarray(tok).tolist()}


# ----------------------------------------------------------------------------------------------
# batch sharding: jit with NamedSharding, pmap, vmap


def _batch_cases(rng, b, v):
  x = adversarial_rows(rng, b, v)
  counts = rng.integers(0, 3, (b, v)).astype(np.int32)
  tokens = rng.integers(0, v, (b, 6)).astype(np.int32)
  row = lambda vals, dt: np.asarray(rng.choice(vals, b), dt)
  cases = {
      "temperature": (jl.temperature, (row([0.0, 0.5, 1.0, 2.0], np.float32),)),
      "top_k": (jl.top_k, (row([0, 1, 3, 70], np.int32),)),
      "top_p": (jl.top_p, (row([0.3, 0.9, 1.0], np.float32),)),
      "min_p": (jl.min_p, (row([0.0, 0.1, 0.5], np.float32),)),
      "typical_p": (jl.typical_p, (row([0.5, 0.9, 1.0], np.float32),)),
      "epsilon_cutoff": (jl.epsilon_cutoff, (row([0.0, 0.01, 0.1], np.float32),)),
      "eta_cutoff": (jl.eta_cutoff, (row([0.0, 0.01, 0.1], np.float32),)),
      "top_n_sigma": (jl.top_n_sigma, (row([0.0, 1.0, 2.0], np.float32),)),
      "repetition_penalty": (jl.repetition_penalty, (counts, row([1.0, 1.3], np.float32))),
      "frequency_penalty": (jl.frequency_penalty, (counts, row([0.0, 0.5], np.float32))),
      "presence_penalty": (jl.presence_penalty, (counts, row([0.0, 0.5], np.float32))),
      "no_repeat_ngram": (lambda l, t, n: jl.no_repeat_ngram(l, t, n), (tokens, row([0, 1, 2], np.int32))),
      "logit_bias": (jl.logit_bias, (rng.standard_normal((b, v)).astype(np.float32),)),
      "log_softmax": (jl.log_softmax, ()),
      "greedy": (jl.greedy, ()),
  }
  params = jl.SamplingParams.create(
      b, temperature=row([0.0, 0.7, 1.0], np.float32), top_k=row([0, 5], np.int32),
      top_p=row([0.9, 1.0], np.float32), min_p=row([0.0, 0.1], np.float32),
      typical_p=row([1.0, 0.9], np.float32), repetition_penalty=row([1.0, 1.2], np.float32))
  return x, counts, tokens, cases, params


def _all_transforms(cases):
  """One function applying every case (one compilation instead of one per transform)."""
  names = list(cases)

  def fn(x, *flat_args):
    out, i = {}, 0
    for name in names:
      f, args = cases[name]
      out[name] = f(x, *flat_args[i:i + len(args)])
      i += len(args)
    return out

  flat = [a for name in names for a in cases[name][1]]
  return fn, flat


def _compare(out, got, want, prefix=""):
  for name in want:
    if not same(name, got[name], want[name]):
      out["failed"].append(prefix + name)


def check_batch_sharded_jit():
  """Under jit with the batch sharded by NamedSharding(P('batch')) every transform, the draw and
  the pipeline keep the output batch-sharded and equal the single-device result."""
  rng = np.random.default_rng(4)
  b, v = 16, 257
  x, counts, tokens, cases, params = _batch_cases(rng, b, v)
  mesh = mesh1(8, "batch")
  rows = jax.sharding.NamedSharding(mesh, P("batch"))
  put = lambda a: jax.device_put(a, rows)
  out = {"ok": True, "failed": [], "not_batch_sharded": []}
  fn, flat = _all_transforms(cases)
  keys = jax.random.split(jax.random.key(0), b)

  def transforms(x, keys, *flat):
    res = fn(x, *flat)
    res["sample_per_row_keys"] = jl.sample(keys, x)
    res["sample_one_key"] = jl.sample(jax.random.key(1), x)
    return res

  # The pipeline compiles on its own, as it does on one device: fused into one program with
  # the rest, XLA may sum a row in another order and move a float32 knife edge of these
  # adversarial rows (a property of the program, not of the sharding).
  def pipeline(x, params, counts, tokens):
    res = {}
    res["sample_step_tokens"], res["sample_step_processed"] = jl.sample_step(
        jax.random.key(2), x, params, counts=counts)
    res["process_logits"] = jl.process_logits(x, params, tokens=tokens)
    return res

  want = transforms(x, keys, *flat)
  want.update(pipeline(x, params, counts, tokens))
  got = jax.jit(transforms)(put(x), put(keys), *[put(a) for a in flat])
  got.update(jax.jit(pipeline)(put(x), jax.tree.map(put, params), put(counts), put(tokens)))
  _compare(out, got, want)
  for name, arr in got.items():
    spec = getattr(arr.sharding, "spec", None)
    if not (spec is not None and len(spec) > 0 and spec[0] == "batch"):
      out["not_batch_sharded"].append(f"{name}: {arr.sharding}")
  out["ok"] = not out["failed"] and not out["not_batch_sharded"]
  out["cases"] = len(want)
  return out


def check_batch_shard_map():
  """Every transform, the draw and the pipeline called inside shard_map on a batch shard (the
  default check_vma=True) equal the single-device result."""
  rng = np.random.default_rng(6)
  b, v = 16, 257
  x, counts, tokens, cases, params = _batch_cases(rng, b, v)
  mesh = mesh1(8, "batch")
  rows = P("batch")
  out = {"failed": []}
  fn, flat = _all_transforms(cases)
  keys = jax.random.split(jax.random.key(0), b)

  def everything(x, keys, params, counts, *flat):
    res = fn(x, *flat)
    res["sample"] = jl.sample(keys, x)
    res["sample_step_tokens"], res["sample_step_processed"] = jl.sample_step(
        keys, x, params, counts=counts)
    return res

  args = (x, keys, params, counts, *flat)
  specs = (rows, rows, jl.SamplingParams(*([rows] * 16)), rows) + (rows,) * len(flat)
  got = jax.jit(jax.shard_map(everything, mesh=mesh, in_specs=specs, out_specs=rows))(*args)
  _compare(out, got, everything(*args))
  out["ok"] = not out["failed"]
  return out


def check_pmap_and_vmap():
  """pmap over a leading device axis and vmap over rows (per-row keys and parameters) equal the
  batched single-device call."""
  rng = np.random.default_rng(5)
  b, v = 16, 257
  x, counts, tokens, cases, params = _batch_cases(rng, b, v)
  out = {"failed": []}
  dev = lambda a: np.asarray(a).reshape((8, b // 8) + np.asarray(a).shape[1:])
  undev = lambda a: a.reshape((b,) + a.shape[2:])
  fn, flat = _all_transforms(cases)
  keys = jax.random.split(jax.random.key(0), b)

  def everything(x, keys, params, counts, *flat):
    res = fn(x, *flat)
    res["sample"] = jl.sample(keys, x)
    res["sample_step_tokens"], res["sample_step_processed"] = jl.sample_step(
        keys, x, params, counts=counts)
    return res

  args = (x, keys, params, counts, *flat)
  want = everything(*args)
  got = jax.pmap(everything)(*jax.tree.map(lambda a: a.reshape((8, b // 8) + a.shape[1:]),
                                           args))
  _compare(out, jax.tree.map(undev, got), want, "pmap ")
  # vmap over rows: each call sees one row ([V] for the transforms, [1, V] for sample_step)
  # with its own key and parameters
  def row_fn(x, key, params, counts, *flat):
    res = fn(x, *flat)
    res["sample"] = jl.sample(key, x)
    tok, proc = jl.sample_step(key[None], x[None], jax.tree.map(lambda a: a[None], params),
                               counts=counts[None])
    res["sample_step_tokens"], res["sample_step_processed"] = tok[0], proc[0]
    return res

  _compare(out, jax.vmap(row_fn)(*args), want, "vmap ")
  out["ok"] = not out["failed"]
  return out


# ----------------------------------------------------------------------------------------------
# decode loops


class ToyModel:
  """A tiny recurrent language model: state h, logits = tanh(h) @ W (vocabulary in W's columns)."""

  def __init__(self, v, d=16, seed=0):
    rng = np.random.default_rng(seed)
    self.v, self.d = v, d
    self.emb = jnp.asarray(rng.standard_normal((v, d)).astype(np.float32))
    self.out = jnp.asarray((rng.standard_normal((d, v)) * 1.5).astype(np.float32))

  def update(self, h, tok):
    new = jnp.tanh(0.5 * h + self.emb[jnp.maximum(tok, 0)])
    return jnp.where((tok >= 0)[:, None], new, h)

  def callback(self, out_constraint=None):
    """``tokens_to_logits(tokens, h)`` for jl.generate; ``out_constraint`` shards the logits."""

    def tokens_to_logits(tokens, h):
      def body(h, tok):
        h = self.update(h, tok)
        return h, jnp.tanh(h)
      h, states = lax.scan(body, h, tokens.T)
      w = self.out
      if out_constraint is not None:
        w = lax.with_sharding_constraint(w, out_constraint)
      logits = jnp.einsum("tbd,dv->btv", states, w)
      return logits, h

    return tokens_to_logits


def check_decode_data_parallel():
  """jl.generate under jit with the prompt batch sharded over a 'batch' axis, and with the
  output projection vocab-sharded over a second axis (GSPMD): tokens equal the single-device
  loop."""
  v, b, n = 300, 8, 12
  model = ToyModel(v)
  rng = np.random.default_rng(6)
  prompts = rng.integers(0, v, (b, 5)).astype(np.int32)
  lengths = rng.integers(1, 6, b).astype(np.int32)
  params = jl.SamplingParams.create(b, temperature=rng.choice([0.0, 0.8, 1.0], b),
                                    top_p=rng.choice([0.9, 1.0], b), top_k=rng.choice([0, 20], b),
                                    repetition_penalty=rng.choice([1.0, 1.3], b))
  key = jax.random.key(9)
  fn = model.callback()
  want = jl.generate(key, fn, jnp.zeros((b, model.d)), prompts, lengths, params,
                     max_new_tokens=n)
  out = {"ok": True}
  mesh = mesh1(8, "batch")
  rows = jax.sharding.NamedSharding(mesh, P("batch"))
  put = lambda a: jax.device_put(a, rows)
  got = jl.generate(key, fn, put(jnp.zeros((b, model.d))), put(prompts), put(lengths),
                    jax.tree.map(put, params), max_new_tokens=n)
  out["data_parallel"] = {"tokens_equal": equal(got.tokens, want.tokens),
                          "tokens_sharding": str(got.tokens.sharding.spec)}
  m2 = mesh2(2, 4)
  rows2 = jax.sharding.NamedSharding(m2, P("batch"))
  put2 = lambda a: jax.device_put(a, rows2)
  tp = model.callback(jax.sharding.NamedSharding(m2, P(None, "vocab")))
  got2 = jl.generate(key, tp, put2(jnp.zeros((b, model.d))), put2(prompts), put2(lengths),
                     jax.tree.map(put2, params), max_new_tokens=n)
  out["tensor_parallel_gspmd"] = {"tokens_equal": equal(got2.tokens, want.tokens)}
  out["ok"] = out["data_parallel"]["tokens_equal"] and out["tensor_parallel_gspmd"]["tokens_equal"]
  return out


def sharded_decode(model, mesh, key, prompts, lengths, params, *, max_new_tokens):
  """A decode loop whose output layer is vocab-sharded (never gathered): shard_map over
  ('batch', 'vocab'), vocab_sharded_sample_step inside, the same keys and counts as
  jl.generate (fixed length, no end-of-sequence)."""
  v = model.v
  nv = mesh.shape["vocab"]
  vp = sh.padded_vocab_size(v, nv)
  w = sh.pad_vocab(model.out, nv, value=0.0)
  b = prompts.shape[0]
  row_keys = decode._row_keys(key, b, 1)
  prompt_tokens = jnp.where(jnp.arange(prompts.shape[1]) < lengths[:, None], prompts, -1)
  counts = jl.token_counts(jnp.maximum(prompt_tokens, 0), vp, length=lengths)

  def run(row_keys, prompt_tokens, counts, params, w):
    vl = w.shape[-1]
    ids = lax.axis_index("vocab") * vl + jnp.arange(vl)
    varying = lambda a: lax.pcast(a, ("batch",), to="varying")  # loop carries vary per batch shard
    h = varying(jnp.zeros((prompt_tokens.shape[0], model.d)))
    h = lax.fori_loop(0, prompt_tokens.shape[1],
                      lambda t, h: model.update(h, prompt_tokens[:, t]), h)

    def body(step, carry):
      h, counts, out = carry
      logits = jnp.tanh(h) @ w  # [B/nb, V_pad/nv]: this device's slice of the vocabulary
      keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, step)
      tok, _ = sh.vocab_sharded_sample_step(keys, logits, params, axis_name="vocab",
                                            vocab_size=v, counts=counts)
      counts = counts + (ids == tok[:, None]).astype(counts.dtype)
      return model.update(h, tok), counts, out.at[:, step].set(tok)

    out = varying(jnp.full((prompt_tokens.shape[0], max_new_tokens), -1, jnp.int32))
    return lax.fori_loop(0, max_new_tokens, body, (h, counts, out))[2]

  rows, both = P("batch"), P("batch", "vocab")
  pspecs = jl.SamplingParams(*([rows] * 14 + [P("batch", None)] * 2))
  f = jax.jit(jax.shard_map(run, mesh=mesh, in_specs=(rows, rows, both, pspecs, P(None, "vocab")),
                            out_specs=rows))
  return f(row_keys, prompt_tokens, counts, params, w)


def check_decode_vocab_sharded():
  """The tensor-parallel decode loop with the vocab-sharded sampler inside equals jl.generate."""
  v, b, n = 1001, 8, 10
  model = ToyModel(v, seed=1)
  rng = np.random.default_rng(7)
  prompts = jnp.asarray(rng.integers(0, v, (b, 4)).astype(np.int32))
  lengths = jnp.asarray(rng.integers(1, 5, b).astype(np.int32))
  params = jl.SamplingParams.create(b, temperature=rng.choice([0.0, 0.8, 1.0], b),
                                    top_p=rng.choice([0.9, 1.0], b), top_k=rng.choice([0, 20], b),
                                    min_p=rng.choice([0.0, 0.05], b),
                                    repetition_penalty=rng.choice([1.0, 1.3], b),
                                    presence_penalty=rng.choice([0.0, 0.4], b))
  key = jax.random.key(4)
  want = jl.generate(key, model.callback(), jnp.zeros((b, model.d)), prompts, lengths, params,
                     max_new_tokens=n)
  got = sharded_decode(model, mesh2(2, 4), key, prompts, lengths, params, max_new_tokens=n)
  return {"ok": equal(got, want.tokens), "tokens_sharding": str(got.sharding.spec)}


CHECKS = {
    "top_p_knife_edges": check_top_p_knife_edges,
    "vocab_transforms": check_vocab_transforms,
    "vocab_draw": check_vocab_draw,
    "vocab_sample_step": check_vocab_sample_step,
    "vocab_w2_shape": check_vocab_sharded_w2_shape,
    "batch_sharded_jit": check_batch_sharded_jit,
    "batch_shard_map": check_batch_shard_map,
    "pmap_and_vmap": check_pmap_and_vmap,
    "decode_data_parallel": check_decode_data_parallel,
    "decode_vocab_sharded": check_decode_vocab_sharded,
}


# ----------------------------------------------------------------------------------------------
# two processes


def two_process_inputs():
  rng = np.random.default_rng(8)
  v, b = 1001, 8
  x, counts, params = _step_inputs(rng, b, v)
  return x, counts, params, jax.random.key(12), v


def run_process(index, port):
  """One of two processes with 4 CPU devices each: a sampling step over the global 8-device mesh
  (vocabulary split over all 8), compared with the single-device result."""
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                             process_id=index, initialization_timeout=60)
  x, counts, params, key, v = two_process_inputs()
  want_tok, _ = jl.sample_step(key, x, params, counts=counts)
  mesh = jax.make_mesh((jax.device_count(),), ("vocab",), (AUTO,))
  spec = jax.sharding.NamedSharding(mesh, P(None, "vocab"))
  xp, cp = np.asarray(sh.pad_vocab(x, 8)), np.asarray(sh.pad_vocab(counts, 8, value=0))
  glob = lambda a: jax.make_array_from_callback(a.shape, spec, lambda idx: a[idx])
  replicated = jax.sharding.NamedSharding(mesh, P())
  rep = lambda a: jax.make_array_from_callback(a.shape, replicated, lambda idx: a[idx])
  params_g = jax.tree.map(lambda a: rep(np.asarray(a)), params)
  step = sh.vocab_sharded_sampler(mesh, "vocab", vocab_size=v)
  tok, _ = step(key, glob(xp), params_g, counts=glob(cp))
  local = np.asarray(tok.addressable_shards[0].data)
  result = {"process": index, "devices": jax.device_count(),
            "local_devices": jax.local_device_count(), "tokens": local.tolist(),
            "single_device": np.asarray(want_tok).tolist()}
  print(json.dumps(result), flush=True)
  jax.distributed.shutdown()


def main(argv):
  if _PROCESS:
    run_process(int(argv[argv.index("--process") + 1]), int(argv[argv.index("--port") + 1]))
    return
  names = [a for a in argv if not a.startswith("-")] or list(CHECKS)
  results = {}
  for name in names:
    t0 = time.perf_counter()
    try:
      res = CHECKS[name]()
    except Exception:  # report, do not crash the other checks
      res = {"ok": False, "error": traceback.format_exc()[-3000:]}
    res["seconds"] = round(time.perf_counter() - t0, 2)
    results[name] = res
    print(name, res, file=sys.stderr, flush=True)
  print(json.dumps(results, default=str))


if __name__ == "__main__":
  main(sys.argv[1:])
