"""``jaxlogits bench``: how close sampling runs to the cost of reading the logits once.

Run it on your own CPU, GPU or TPU::

  jaxlogits bench                      # table on stdout, JSON in bench.json
  jaxlogits bench --plot bench.png     # also time against vocabulary size
  jaxlogits bench --decode             # also the decode loop against its bare forward step

Every figure is the median of ``--repeats`` timed calls after warm-up calls, each blocked on
(``jax.block_until_ready``). The figures compared are timed in the same rounds, one call of each
per round, each call after :data:`SETTLE_S` seconds of untimed calls of the same function (so
that it runs in its own steady state, not in the state the previous program left), and every
ratio is the median of the per-round ratios, so that a slow stretch of a shared machine scales
both sides of a ratio; the peers are timed after all of jaxlogits' figures. The floor is
``jax.nn.logsumexp`` over the same logits, jitted: one read of the logits with the exponentials
a softmax needs.

Workloads (float32 logits, batch 32 and vocabulary 128256 unless ``--batch``/``--vocab`` say
otherwise):

* W1: temperature 0.7, top_k 50, top_p 0.9, draw.
* W2: temperature 1.0, top_p 0.95, min_p 0.05, draw (the nucleus is found among all tokens).
* W3: repetition 1.1, frequency 0.5 and presence 0.5 penalties from the counts of 512 context
  tokens per row (counted beforehand, as a decode loop carries them), temperature 0.8, top_p 0.9,
  draw.
* W4: W2 at batch 1.

Each runs two ways: composing the public transforms (``sample(key, top_p(top_k(...)))``) and
through :class:`jaxlogits.SamplingParams` with :func:`jaxlogits.sample_step`. Peers in the same
run: the same chains written the common way in JAX (a full sort, a cumulative sum and
``jax.random.categorical``), and, when ``torch`` and ``transformers`` are installed,
transformers' logits processors followed by ``torch.multinomial``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxlogits as jl
from jaxlogits import cli

__all__ = ["run", "main"]

CONTEXT_TOKENS = 512
SCALING_VOCABS = (32000, 128256, 256000)
SCALING_BATCHES = (8, 32)


# --------------------------------------------------------------------------------------------
# timing


def median_ms(fn: Callable, *args, repeats: int, warmup: int = 2,
              block: Callable = jax.block_until_ready) -> float:
  """Median wall time in ms of ``fn(*args)`` over ``repeats`` calls after ``warmup`` calls.

  Each result is passed to ``block`` (JAX's asynchronous results are waited for; pass the
  identity for synchronous code such as torch on CPU).
  """
  for _ in range(warmup):
    block(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    block(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times)) * 1e3


def rounds_ms(fns: dict[str, tuple], repeats: int, warmup: int = 2) -> dict[str, list[float]]:
  """Wall times in ms of several functions timed in turn: ``repeats`` rounds, each calling every
  function once (after ``warmup`` calls of each), so that every function meets the same
  stretches of a busy machine.

  Args:
    fns: ``{name: (fn, args[, block[, settle]])}``: ``block`` waits for a result
      (``jax.block_until_ready`` when None or not given; see :func:`median_ms`); ``settle``
      seconds of untimed calls, at least one, come before the timed one in each round (none
      when 0 or not given).
    repeats: rounds.
    warmup: untimed calls of each function first.

  Returns:
    ``{name: [ms in round 0, ms in round 1, ...]}``; compare two functions with
    :func:`paired_ratio`.
  """
  calls = {n: (f[0], f[1], (f[2] if len(f) > 2 else None) or jax.block_until_ready,
                f[3] if len(f) > 3 else 0) for n, f in fns.items()}
  for fn, args, block, _ in calls.values():
    for _ in range(warmup):
      block(fn(*args))
  times: dict[str, list[float]] = {n: [] for n in calls}
  for _ in range(repeats):
    for name, (fn, args, block, settle) in calls.items():
      start = time.perf_counter()
      while settle:
        block(fn(*args))
        if time.perf_counter() - start >= settle:
          break
      start = time.perf_counter()
      block(fn(*args))
      times[name].append((time.perf_counter() - start) * 1e3)
  return times


def paired_ratio(a: list[float], b: list[float]) -> float:
  """The median over rounds of ``a[i] / b[i]`` (times from the same rounds of
  :func:`rounds_ms`): a slow stretch of the machine scales both times of a round and cancels."""
  return float(np.median(np.asarray(a) / np.asarray(b)))


def torch_device() -> str:
  """Where the torch peers run: ``"cuda"`` when JAX runs on a GPU and torch sees one, else
  ``"cpu"`` (peers are timed on the same kind of device as jaxlogits)."""
  import torch
  return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_block(out: Any) -> Any:
  """Waits for a torch result (CUDA kernels run asynchronously, like JAX's)."""
  import torch
  if getattr(out, "is_cuda", False):
    torch.cuda.synchronize()
  return out


# On Linux, XLA's CPU runtime takes each call's temporary buffers from malloc; glibc serves a
# request above its mmap threshold (at most 32 MiB by default), or too large for the arena of the
# thread that asks, from a fresh mapping, so every call pays a page fault on each 4 KiB it writes:
# about 1 ms per 4 MiB on the 2-core machine of the README. A program with several [B, V]
# temporaries (W2 through the pipeline before the row blocks of _numerics.by_row_blocks: about
# 63 MiB) pays that on every call. Running with
HOST_MEMORY_NOTE = ("MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=1073741824 "
                    "MALLOC_TRIM_THRESHOLD_=1073741824")
# keeps freed memory in the one heap and reuses it, without faults. This is process-wide, so the
# library leaves it to the user; the bench records which MALLOC_ variables were set.


# --------------------------------------------------------------------------------------------
# the workloads, three ways


SETTINGS = {
    "W1": dict(temperature=0.7, top_k=50, top_p=0.9),
    "W2": dict(temperature=1.0, top_p=0.95, min_p=0.05),
    "W3": dict(repetition_penalty=1.1, frequency_penalty=0.5, presence_penalty=0.5,
               temperature=0.8, top_p=0.9),
}
SETTINGS["W4"] = SETTINGS["W2"]


def composed(name: str) -> Callable:
  """The workload written by composing the public transforms (jitted as a whole)."""
  s = SETTINGS[name]

  def w12(key, logits, counts):
    del counts
    x = jl.temperature(logits, s["temperature"])
    if "top_k" in s:
      x = jl.top_k(x, s["top_k"])
    x = jl.top_p(x, s["top_p"])
    if "min_p" in s:
      x = jl.min_p(x, s["min_p"])
    return jl.sample(key, x)

  def w3(key, logits, counts):
    x = jl.repetition_penalty(logits, counts, s["repetition_penalty"])
    x = jl.frequency_penalty(x, counts, s["frequency_penalty"])
    x = jl.presence_penalty(x, counts, s["presence_penalty"])
    return jl.sample(key, jl.top_p(jl.temperature(x, s["temperature"]), s["top_p"]))

  return jax.jit(w3 if name == "W3" else w12)


def pipelined(name: str, batch: int) -> tuple[Callable, jl.SamplingParams]:
  """The workload through the batched parameter record and its one pipeline function.

  Only W3 hands its counts to ``sample_step``: the others have no penalties, and their composed
  way does not read the counts either. (Given counts, ``sample_step`` applies the penalties
  without testing whether a row has one, so they cost one more read of a logits-sized array
  even at their identity values: about 1.2 ms of W1's 5 to 6 ms on the README's machine.)
  """
  params = jl.SamplingParams.create(batch, **SETTINGS[name])
  use_counts = "repetition_penalty" in SETTINGS[name]
  step = jax.jit(lambda key, logits, counts, params: jl.sample_step(
      key, logits, params, counts=counts if use_counts else None)[0])
  return step, params


def _common_top_p(x: jax.Array, p: float) -> jax.Array:
  # The usual recipe: sort descending, cumulative softmax, drop what lies past p, unsort.
  order = jnp.argsort(-x, axis=-1)
  sorted_x = jnp.take_along_axis(x, order, axis=-1)
  probs = jax.nn.softmax(sorted_x, axis=-1)
  drop_sorted = (jnp.cumsum(probs, axis=-1) - probs) > p
  drop = jnp.zeros_like(drop_sorted).at[jnp.arange(x.shape[0])[:, None], order].set(drop_sorted)
  return jnp.where(drop, -jnp.inf, x)


def common_jax(name: str) -> Callable:
  """The workload written the common way in JAX: sort, cumsum, ``jax.random.categorical``."""
  s = SETTINGS[name]

  def fn(key, logits, counts):
    x = logits
    if name == "W3":
      seen = counts > 0
      x = jnp.where(seen, jnp.where(x > 0, x / s["repetition_penalty"],
                                    x * s["repetition_penalty"]), x)
      x = x - s["frequency_penalty"] * counts - s["presence_penalty"] * seen
    x = x / s["temperature"]
    if "top_k" in s:
      kth = lax.top_k(x, s["top_k"])[0][:, -1:]
      x = jnp.where(x < kth, -jnp.inf, x)
    x = _common_top_p(x, s["top_p"])
    if "min_p" in s:
      probs = jax.nn.softmax(x, axis=-1)
      x = jnp.where(probs < s["min_p"] * probs.max(-1, keepdims=True), -jnp.inf, x)
    return jax.random.categorical(key, x, axis=-1)

  return jax.jit(fn)


def transformers_peer(name: str) -> Callable | None:
  """transformers' logits processors and ``torch.multinomial``, or None when not installed."""
  if name == "W3" or importlib.util.find_spec("transformers") is None:
    return None  # transformers has no frequency or presence penalty
  try:
    import torch
    from transformers import (LogitsProcessorList, MinPLogitsWarper, TemperatureLogitsWarper,
                              TopKLogitsWarper, TopPLogitsWarper)
  except Exception:  # a broken install counts as absent
    return None
  s = SETTINGS[name]
  procs = [TemperatureLogitsWarper(s["temperature"])]
  if "top_k" in s:
    procs.append(TopKLogitsWarper(s["top_k"]))
  procs.append(TopPLogitsWarper(s["top_p"]))
  if "min_p" in s:
    procs.append(MinPLogitsWarper(s["min_p"]))
  chain = LogitsProcessorList(procs)

  def fn(input_ids, scores):
    with torch.no_grad():
      x = chain(input_ids, scores.clone())
      return torch.multinomial(torch.softmax(x, dim=-1), 1)

  return fn


# --------------------------------------------------------------------------------------------
# data


def make_inputs(batch: int, vocab: int, seed: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``N(0, 1) * 2`` logits (a flat distribution: top-p 0.95 keeps about a third of the
  vocabulary, the hard case for a nucleus search), the counts of 512 random context tokens per
  row, and a key."""
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  logits = jax.random.normal(k1, (batch, vocab)) * 2.0
  context = jax.random.randint(k2, (batch, CONTEXT_TOKENS), 0, vocab)
  counts = jl.token_counts(context, vocab)
  return logits, counts, k3


# --------------------------------------------------------------------------------------------
# the run


# Seconds of untimed calls of a function before its timed call in each round (see
# workload_rows).
SETTLE_S = 0.2

# The floor: one read of the logits with a softmax's exponentials (compiled once per shape).
_floor = jax.jit(lambda l: jax.nn.logsumexp(l, axis=-1))


def workload_rows(batch: int, vocab: int, repeats: int, peers: bool,
                  progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
  """Times W1-W4 every way at one shape; ratios against the floor of the same shape.

  ``progress`` (when given) gets one line per figure as soon as it is measured.

  Each workload's floor, composed and pipeline figures are timed in the same rounds
  (:func:`rounds_ms`), and each ratio is the median of the per-round ratios. The peers are
  timed after all of jaxlogits' figures, so that their large allocations and torch's threads
  do not run in between; each in rounds with our faster way, compared round by round.

  In every round each function first runs untimed for :data:`SETTLE_S` seconds. A call right
  after another program's ran slower for a while on the README's 2-core machine: W2 through
  the pipeline took 7 ms alone, 9 to 27 ms right after a call of transformers' processors, 11
  to 13 ms after 8 more calls and 7 to 8 ms after 16; W1 through the pipeline took 6.9 ms right
  after the composed way's call and 4.2 to 4.8 ms settled. No page faults, no thread spinning
  (no CPU time used during a sleep), and a 1 s sleep did not end it: it wears off with the
  function's own work. Settled, each figure is the function's own steady state, while the
  rounds still share the machine's slow stretches.
  """
  rows, ways = [], {}
  for name in ("W1", "W2", "W3", "W4"):
    b = 1 if name == "W4" else batch
    logits, counts, key = make_inputs(b, vocab)
    step, params = pipelined(name, b)
    ways[name] = dict(composed=(composed(name), (key, logits, counts)),
                      pipeline=(step, (key, logits, counts, params)))
    t = rounds_ms({n: (*f, None, SETTLE_S) for n, f in
                   dict(floor=(_floor, (logits,)), **ways[name]).items()}, repeats, warmup=5)
    med = {k: float(np.median(v)) for k, v in t.items()}
    rows.append(dict(workload=name, batch=b, vocab=vocab, floor_ms=med["floor"],
                     composed_ms=med["composed"], pipeline_ms=med["pipeline"],
                     composed_x_floor=paired_ratio(t["composed"], t["floor"]),
                     pipeline_x_floor=paired_ratio(t["pipeline"], t["floor"]),
                     common_jax_ms=None, transformers_ms=None, common_jax_x_ours=None,
                     transformers_x_ours=None, rounds_ms=t, peer_rounds_ms=None))
    _tell(progress, f"{name} {b}x{vocab}: floor {med['floor']:.2f} ms, composed "
          f"{med['composed']:.2f} ms ({rows[-1]['composed_x_floor']:.2f}x), pipeline "
          f"{med['pipeline']:.2f} ms ({rows[-1]['pipeline_x_floor']:.2f}x)")
  if not peers:
    return rows
  for row in rows:
    name, b = row["workload"], row["batch"]
    key, logits, counts = ways[name]["composed"][1]
    ours = ways[name]["composed" if row["composed_ms"] <= row["pipeline_ms"] else "pipeline"]
    ours = (*ours, None, SETTLE_S)
    n = max(3, repeats // 3)
    t = rounds_ms(dict(ours=ours, peer=(common_jax(name), (key, logits, counts))), n)
    row["common_jax_ms"] = float(np.median(t["peer"]))
    row["common_jax_x_ours"] = paired_ratio(t["peer"], t["ours"])
    row["peer_rounds_ms"] = dict(common_jax=t)
    _tell(progress, f"{name}: common JAX {row['common_jax_ms']:.1f} ms "
          f"({row['common_jax_x_ours']:.1f}x ours)")
    hf = transformers_peer(name)
    if hf is not None:
      import torch
      dev = torch_device()
      scores = torch.from_numpy(np.array(logits)).to(dev)
      ids = torch.zeros((b, 1), dtype=torch.long, device=dev)
      t = rounds_ms(dict(ours=ours, peer=(hf, (ids, scores), torch_block)), n)
      row["transformers_ms"] = float(np.median(t["peer"]))
      row["transformers_x_ours"] = paired_ratio(t["peer"], t["ours"])
      row["peer_rounds_ms"]["transformers"] = t
      _tell(progress, f"{name}: transformers {row['transformers_ms']:.1f} ms "
            f"({row['transformers_x_ours']:.1f}x ours)")
  return rows


def scaling_rows(repeats: int, vocabs=SCALING_VOCABS, batches=SCALING_BATCHES,
                 progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
  """W1 and W2 (composed) and the floor over batch x vocabulary, with time per logit
  (``progress``: as in :func:`workload_rows`)."""
  rows = []
  for b in batches:
    for v in vocabs:
      logits, counts, key = make_inputs(b, v)
      fns = dict(floor=(_floor, (logits,)),
                 **{n: (composed(n), (key, logits, counts)) for n in ("W1", "W2")})
      t = rounds_ms({n: (*f, None, SETTLE_S) for n, f in fns.items()}, repeats)
      row = dict(batch=b, vocab=v, floor_ms=float(np.median(t["floor"])))
      for name in ("W1", "W2"):
        ms = float(np.median(t[name]))
        row[f"{name}_ms"] = ms
        row[f"{name}_ns_per_logit"] = ms * 1e6 / (b * v)
      rows.append(row)
      _tell(progress, f"scaling {b}x{v}: floor {row['floor_ms']:.2f} ms, W1 "
            f"{row['W1_ms']:.2f} ms, W2 {row['W2_ms']:.2f} ms")
  return rows


def _tell(progress: Callable[[str], None] | None, line: str) -> None:
  if progress is not None:
    progress(line)


def sharded_row(timeout: float = 900.0) -> dict[str, Any] | None:
  """W2 with the vocabulary over 8 simulated devices, run in a subprocess (its own devices)."""
  if importlib.util.find_spec("jaxlogits._bench_sharded") is None:
    return None
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "jaxlogits._bench_sharded", "--json"],
                        capture_output=True, text=True, env=env, timeout=timeout)
  if proc.returncode != 0:
    return dict(error=proc.stderr.strip().splitlines()[-1:] or ["failed"])
  return json.loads(proc.stdout.strip().splitlines()[-1])


def run(batch: int = 32, vocab: int = 128256, repeats: int = 15, peers: bool = True,
        scaling: bool = True, sharded: bool = True, decode: bool = False,
        vocabs=SCALING_VOCABS, batches=SCALING_BATCHES,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
  """Runs the benchmark and returns its results as a JSON-ready dict.

  Args:
    batch: rows of W1-W3.
    vocab: vocabulary size of W1-W4.
    repeats: timed calls per figure (after warm-up).
    peers: also time the common JAX way and transformers (when installed).
    scaling: also time W1 and W2 over ``batches`` x ``vocabs``.
    sharded: also run the vocab-sharded W2 over 8 simulated devices (a subprocess).
    decode: also time the decode loop (see :func:`jaxlogits.bench_decode.run`).
    vocabs: vocabulary sizes of the scaling table.
    batches: batch sizes of the scaling table.
    progress: called with one line per figure as soon as it is measured (``jaxlogits bench``
      prints them to stderr, so that a run cut short still reports what it measured).

  Returns:
    ``{"device", "jax", "workloads", "scaling", "sharded", "decode"}``.

  Examples:
    >>> out = run(batch=2, vocab=512, repeats=1, peers=False, scaling=False, sharded=False)
    >>> [row["workload"] for row in out["workloads"]]
    ['W1', 'W2', 'W3', 'W4']
  """
  out: dict[str, Any] = dict(
      device=str(jax.devices()[0].device_kind), platform=jax.default_backend(),
      cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
      jax=jax.__version__, repeats=repeats,
      malloc={k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")})
  out["workloads"] = workload_rows(batch, vocab, repeats, peers, progress)
  out["scaling"] = scaling_rows(repeats, vocabs, batches, progress) if scaling else []
  out["sharded"] = sharded_row() if sharded else None
  if out["sharded"] is not None:
    _tell(progress, "sharded: " + json.dumps({k: v for k, v in out["sharded"].items()
                                              if not isinstance(v, (dict, list))}))
  if decode:
    from jaxlogits import bench_decode
    out["decode"] = bench_decode.run(repeats=max(5, repeats // 3), peers=peers)
    _tell(progress, bench_decode.format_table(out["decode"]))
  else:
    out["decode"] = None
  return out


# --------------------------------------------------------------------------------------------
# output


def _fmt(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
  return "-" if x is None else f"{x:{spec}}{suffix}"


def format_table(out: dict[str, Any]) -> str:
  """The results as a plain-text table."""
  lines = [f"jaxlogits bench on {out['platform']} ({out['device']}, {out['cores']} cores), "
           f"jax {out['jax']}; medians of {out['repeats']} runs; ratios within this run"]
  if out.get("malloc"):
    lines.append("host allocator: " + " ".join(f"{k}={v}" for k, v in out["malloc"].items()))
  elif out["platform"] == "cpu":
    lines.append("host allocator: glibc defaults (see HOST_MEMORY_NOTE in jaxlogits/bench.py)")
  lines.append("")
  head = (f"{'workload':8s} {'B':>3s} {'V':>7s} {'floor ms':>9s} {'composed':>16s} "
          f"{'pipeline':>16s} {'common JAX':>18s} {'transformers':>18s}")
  lines += [head, "-" * len(head)]
  for r in out["workloads"]:
    lines.append(
        f"{r['workload']:8s} {r['batch']:3d} {r['vocab']:7d} {r['floor_ms']:9.2f} "
        f"{r['composed_ms']:7.2f} ({r['composed_x_floor']:4.1f}x) "
        f"{r['pipeline_ms']:7.2f} ({r['pipeline_x_floor']:4.1f}x) "
        f"{_fmt(r['common_jax_ms'], '7.1f')} ({_fmt(r['common_jax_x_ours'], '5.1f', 'x')}) "
        f"{_fmt(r['transformers_ms'], '7.1f')} ({_fmt(r['transformers_x_ours'], '5.1f', 'x')})")
  lines.append("(composed, pipeline: times the floor; peers: times our faster way)")
  if out["scaling"]:
    lines += ["", f"{'B':>4s} {'V':>7s} {'floor ms':>9s} {'W1 ms':>8s} {'W1 ns/logit':>12s} "
              f"{'W2 ms':>8s} {'W2 ns/logit':>12s}"]
    for r in out["scaling"]:
      lines.append(f"{r['batch']:4d} {r['vocab']:7d} {r['floor_ms']:9.2f} {r['W1_ms']:8.2f} "
                   f"{r['W1_ns_per_logit']:12.3f} {r['W2_ms']:8.2f} {r['W2_ns_per_logit']:12.3f}")
  sh = out.get("sharded")
  if sh:
    lines.append("")
    if "error" in sh:
      lines.append(f"sharded W2: failed: {sh['error']}")
    else:
      lines.append(
          f"sharded W2 over {sh['devices']} devices: {sh['sharded_ms']:.2f} ms "
          f"(one device {sh['single_device_ms']:.2f} ms); bytes across devices per step "
          f"{sh['bytes_crossed_per_step']:,} vs {sh['bytes_full_gather']:,} for a full gather")
  dec = out.get("decode")
  if dec:
    from jaxlogits import bench_decode
    lines += ["", bench_decode.format_table(dec)]
  return "\n".join(lines)


def plot(out: dict[str, Any], path: str) -> None:
  """Draws time against vocabulary size (one line per workload and batch) into ``path``."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for b in sorted({r["batch"] for r in out["scaling"]}):
    rows = [r for r in out["scaling"] if r["batch"] == b]
    vs = [r["vocab"] for r in rows]
    for key, style in (("floor_ms", ":"), ("W1_ms", "-"), ("W2_ms", "--")):
      ax.plot(vs, [r[key] for r in rows], style, marker="o",
              label=f"{key[:-3]} B={b}")
  ax.set_xlabel("vocabulary size")
  ax.set_ylabel("ms per step (median)")
  ax.set_title(f"jaxlogits on {out['platform']} ({out['device']})")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# --------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Flags of ``jaxlogits bench``.

  Args:
    parser: the subcommand's parser.
  """
  parser.add_argument("--batch", type=int, default=32, help="rows of W1-W3 (default 32)")
  parser.add_argument("--vocab", type=int, default=128256, help="vocabulary (default 128256)")
  parser.add_argument("--repeats", type=int, default=15, help="timed runs per figure (15)")
  parser.add_argument("--json", default="bench.json", help="where to write the results")
  parser.add_argument("--plot", default=None, metavar="FILE.png",
                      help="draw time against vocabulary size")
  parser.add_argument("--no-peers", action="store_true", help="skip common JAX and transformers")
  parser.add_argument("--no-scaling", action="store_true", help="skip the batch x vocab table")
  parser.add_argument("--no-sharded", action="store_true", help="skip the vocab-sharded case")
  parser.add_argument("--decode", action="store_true", help="also time the decode loop")
  parser.add_argument("--vocabs", default=",".join(map(str, SCALING_VOCABS)),
                      help="vocabulary sizes of the scaling table, comma-separated")
  parser.add_argument("--batches", default=",".join(map(str, SCALING_BATCHES)),
                      help="batch sizes of the scaling table, comma-separated")


def _sizes(flag: str, text: str) -> tuple[int, ...]:
  try:
    sizes = tuple(int(t) for t in text.split(",") if t.strip())
  except ValueError:
    sizes = ()
  if not sizes or min(sizes) < 1:
    raise ValueError(f"--{flag} must be positive integers separated by commas, got {text!r}")
  return sizes


def main(args: argparse.Namespace) -> int:
  """Runs ``jaxlogits bench`` with parsed flags; returns the exit status.

  Args:
    args: the parsed flags (see :func:`add_arguments`).

  Returns:
    0.
  """
  for flag in ("batch", "vocab", "repeats"):
    if getattr(args, flag) < 1:
      raise ValueError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
  vocabs, batches = _sizes("vocabs", args.vocabs), _sizes("batches", args.batches)
  if args.plot and args.no_scaling:
    raise ValueError("--plot draws the scaling table; drop --no-scaling")
  out = run(args.batch, args.vocab, args.repeats, peers=not args.no_peers,
            scaling=not args.no_scaling, sharded=not args.no_sharded, decode=args.decode,
            vocabs=vocabs, batches=batches,
            progress=lambda line: print(line, file=sys.stderr, flush=True))
  print(format_table(out))
  with open(args.json, "w") as f:
    json.dump(out, f, indent=1)
  print(f"\nresults written to {args.json}")
  if args.plot:
    plot(out, args.plot)
    print(f"plot written to {args.plot}")
  return 0


cli.register_command("bench", "time sampling against the cost of reading the logits once",
                     add_arguments, main)
