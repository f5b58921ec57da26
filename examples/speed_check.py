"""A quick speed check of the main sampling paths.

Run: python examples/speed_check.py

Batch 32, vocabulary 128256, float32 logits. Each figure is the median of repeated jitted runs
after a warm-up call, with results blocked on, and is printed next to its ratio to the floor
(`jax.nn.logsumexp` over the same logits, measured in the same run). The full benchmark, with
peers, both ways of writing each chain and the decode loop, is `jaxlogits bench`.
"""

import jax

import jaxlogits as jl
from jaxlogits.bench import median_ms

BATCH, VOCAB, REPEATS = 32, 128256, 7


def main() -> None:
  logits = jax.random.normal(jax.random.key(0), (BATCH, VOCAB)) * 2
  key = jax.random.key(1)
  cases = {
      "floor: logsumexp": (jax.jit(lambda l: jax.nn.logsumexp(l, -1)), (logits,)),
      "sample": (jax.jit(jl.sample), (key, logits)),
      "top_k 50": (jax.jit(lambda l: jl.top_k(l, 50)), (logits,)),
      "top_p 0.95": (jax.jit(lambda l: jl.top_p(l, 0.95)), (logits,)),
      "W1: t 0.7, top_k 50, top_p 0.9, draw": (jax.jit(lambda k, l: jl.sample(
          k, jl.top_p(jl.top_k(jl.temperature(l, 0.7), 50), 0.9))), (key, logits)),
      "W2: t 1.0, top_p 0.95, min_p 0.05, draw": (jax.jit(lambda k, l: jl.sample(
          k, jl.min_p(jl.top_p(jl.temperature(l, 1.0), 0.95), 0.05))), (key, logits)),
  }
  floor = None
  for name, (fn, args) in cases.items():
    ms = median_ms(fn, *args, repeats=REPEATS)
    floor = ms if floor is None else floor
    print(f"{name:42s} {ms:9.2f} ms  {ms / floor:7.1f}x floor")


if __name__ == "__main__":
  main()
