"""Quick start: transform logits, draw tokens and read log-probabilities with jaxlogits.

Run: python examples/quickstart.py
"""

import jax
import jax.numpy as jnp

import jaxlogits as jl


def main() -> None:
  key = jax.random.key(0)
  logits = jax.random.normal(jax.random.key(1), (4, 32000)) * 4  # a batch of 4 rows

  # 1. Compose the public transforms (every parameter may be per row).
  processed = jl.top_p(jl.top_k(jl.temperature(logits, 0.7), 50), jnp.array([0.9, 0.5, 1.0, 0.9]))
  tokens = jl.sample(key, processed)
  print("tokens:", tokens)
  print("raw log-probs:", jl.token_logprobs(logits, tokens))
  print("processed log-probs:", jl.token_logprobs(processed, tokens))

  # 2. Or use the batched parameter record: one compiled step serves every mix of settings.
  params = jl.SamplingParams.create(temperature=[0.0, 0.7, 1.0, 1.2], top_p=[1.0, 0.9, 0.95, 0.9],
                                    min_p=[0.0, 0.0, 0.05, 0.1], repetition_penalty=1.1)
  context = jax.random.randint(jax.random.key(2), (4, 64), 0, 32000)
  step = jax.jit(lambda k, l, p, c: jl.sample_step(k, l, p, counts=c))
  tokens, processed = step(key, logits, params, jl.token_counts(context, 32000))
  print("pipeline tokens:", tokens, "(row 0 is greedy:", int(jl.greedy(logits[0])), ")")

  # 3. Top alternatives and entropy.
  lp, ids = jl.top_logprobs(logits[:1], 5)
  print("top-5 ids:", ids[0], "log-probs:", lp[0].round(3))
  print("entropy (nats):", jl.entropy(logits).round(3))


if __name__ == "__main__":
  main()
