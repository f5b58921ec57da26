"""The decode-loop part of ``jaxlogits bench --decode``.

A Llama-shaped model with random weights (d_model 512, 8 layers, 8 heads, SwiGLU, RoPE,
vocabulary 32000), batch 1 and 8, a 32-token prompt and 128 new tokens at top_p 0.9 and
temperature 0.8, timed three ways in the same run:

* ``generate``: :func:`jaxlogits.decode.generate` (prefill, then one compiled ``while_loop`` that
  runs the model, the standard pipeline and the draw per step);
* ``bare``: the same model's prefill and 128 forward steps in one compiled loop with no
  sampling (each step feeds back a token without reading the logits beyond a max, which keeps the
  output layer alive);
* ``transformers``: ``LlamaForCausalLM.generate`` on a model of the same shape with random
  weights (when ``torch`` and ``transformers`` are installed).

Figures are ms per generated token (whole call / 128), medians of repeated calls after a
warm-up call. ``generate`` and ``bare`` are called in turn, one call of each per round, and the
overhead is the median of the rounds' ratios (``bench.rounds_ms``, ``bench.paired_ratio``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxlogits as jl
from jaxlogits import decode
from jaxlogits.bench import median_ms, paired_ratio, rounds_ms, torch_block, torch_device

__all__ = ["run", "format_table"]

PROMPT, NEW, VOCAB = 32, 128, 32000
SHAPE = dict(d_model=512, num_layers=8, num_heads=8, num_kv_heads=8, head_dim=64, mlp_dim=1376)


def _config():
  from jaxlogits.model import ModelConfig
  return ModelConfig(vocab_size=VOCAB, max_seq_len=PROMPT + NEW, **SHAPE)


def _bare_loop(fn):
  @jax.jit
  def bare(cache, prompts):
    logits, cache = fn(prompts, cache)
    tok = prompts[:, -1]

    def body(_, carry):
      tok, cache = carry
      logits, cache = fn(tok[:, None], cache)
      # Depend on every logit (so the output layer is not removed) at the cost of one max.
      tok = (tok + (jnp.max(logits) > 1e30).astype(jnp.int32)) % VOCAB
      return tok, cache

    tok, cache = lax.fori_loop(0, NEW, body, (tok, cache))
    return tok

  return bare


def _transformers_s(batch: int, prompts: np.ndarray, repeats: int) -> float | None:
  try:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
  except Exception:
    return None
  torch.manual_seed(0)
  cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=SHAPE["d_model"],
                    intermediate_size=SHAPE["mlp_dim"], num_hidden_layers=SHAPE["num_layers"],
                    num_attention_heads=SHAPE["num_heads"],
                    num_key_value_heads=SHAPE["num_kv_heads"],
                    max_position_embeddings=PROMPT + NEW, tie_word_embeddings=False)
  dev = torch_device()
  model = LlamaForCausalLM(cfg).eval().to(dev)
  ids = torch.from_numpy(prompts.astype(np.int64)).to(dev)
  mask = torch.ones_like(ids)

  def call():
    with torch.no_grad():
      return model.generate(ids, attention_mask=mask, do_sample=True, top_p=0.9, top_k=0,
                            temperature=0.8, max_new_tokens=NEW, min_new_tokens=NEW,
                            pad_token_id=0)

  out = torch_block(call())  # also the warm-up
  assert out.shape == (batch, PROMPT + NEW), out.shape
  return median_ms(call, repeats=repeats, warmup=0, block=torch_block) / 1e3


def run(repeats: int = 3, peers: bool = True, batches=(1, 8)) -> list[dict[str, Any]]:
  """Times generate, the bare forward loop and (if installed) transformers; one row per batch.

  Args:
    repeats: rounds (one timed call of each way per round) after a warm-up call.
    peers: also time transformers' ``generate``.
    batches: batch sizes.

  Returns:
    Rows ``{batch, generate_ms_per_token, bare_ms_per_token, transformers_ms_per_token,
    overhead, transformers_x_ours}``.
  """
  from jaxlogits.model import create_model
  model = create_model(_config(), seed=0)
  rows = []
  for b in batches:
    fn, cache = decode.model_callback(model, b, PROMPT + NEW)
    prompts = jax.random.randint(jax.random.key(b), (b, PROMPT), 0, VOCAB)
    params = jl.SamplingParams.create(b, temperature=0.8, top_p=0.9)
    key = jax.random.key(0)
    generate = lambda: decode.generate(key, fn, cache, prompts, params=params,
                                       max_new_tokens=NEW).tokens
    # In turn, round by round, so that a slow stretch of the machine scales both times of a
    # round; the overhead is the median of the rounds' ratios.
    t = rounds_ms({"generate": (generate, ()), "bare": (_bare_loop(fn), (cache, prompts))},
                  repeats, warmup=1)
    gen = float(np.median(t["generate"])) / 1e3
    bare = float(np.median(t["bare"])) / 1e3
    hf = _transformers_s(b, np.asarray(prompts), max(1, repeats // 2)) if peers else None
    rows.append(dict(batch=b, generate_ms_per_token=gen * 1e3 / NEW,
                     bare_ms_per_token=bare * 1e3 / NEW,
                     transformers_ms_per_token=None if hf is None else hf * 1e3 / NEW,
                     overhead=paired_ratio(t["generate"], t["bare"]) - 1.0,
                     transformers_x_ours=None if hf is None else hf / gen))
  return rows


def format_table(rows: list[dict[str, Any]]) -> str:
  """The decode rows as a plain-text table.

  Args:
    rows: the output of :func:`run`.

  Returns:
    The table.
  """
  lines = [f"decode: Llama-shaped random model (d 512, 8 layers, 8 heads, V {VOCAB}), prompt "
           f"{PROMPT}, {NEW} new tokens, top_p 0.9, T 0.8; ms per token",
           f"{'B':>3s} {'generate':>9s} {'bare fwd':>9s} {'overhead':>9s} {'transformers':>13s} "
           f"{'speed-up':>9s}"]
  for r in rows:
    hf = r["transformers_ms_per_token"]
    hf_ms = "-" if hf is None else f"{hf:.2f}"
    speedup = "-" if hf is None else f"{r['transformers_x_ours']:.1f}x"
    lines.append(
        f"{r['batch']:3d} {r['generate_ms_per_token']:9.2f} {r['bare_ms_per_token']:9.2f} "
        f"{100 * r['overhead']:8.1f}% {hf_ms:>13s} {speedup:>9s}")
  return "\n".join(lines)
