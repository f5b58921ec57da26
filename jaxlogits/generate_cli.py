"""``jaxlogits generate``: sample text from a checkpoint (the shipped one by default).

Registered with :mod:`jaxlogits.cli`. Streams text to the terminal as it is decoded, or with
``--json`` prints one JSON object per sample with its text, token ids, raw and processed log-probs,
the raw mass that survived truncation at each position, the prompt's log-probs, the top
alternatives and the finish reason. Sampling runs through :func:`jaxlogits.decode.stream`
(one sample) or :func:`jaxlogits.decode.generate` (several), so both give the same tokens for a
seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxlogits import cli

__all__: list[str] = []


def _float(text: str) -> float:
  try:
    return float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None


def _seed(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
  if not -2**63 <= value < 2**63:
    raise argparse.ArgumentTypeError(f"must fit in 64 bits, got {text}")
  return value


def _add_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("prompt", help="prompt text (a BOS token is prepended)")
  p.add_argument("--max-new-tokens", type=cli.positive_int, default=128,
                 help="most bytes to generate per sample (default 128)")
  p.add_argument("--temperature", type=_float, default=1.0, help="0 is greedy (default 1.0)")
  p.add_argument("--top-k", type=cli.nonneg_int, default=0, help="0 disables (default)")
  p.add_argument("--top-p", type=_float, default=0.95, help="nucleus mass in (0, 1]")
  p.add_argument("--min-p", type=_float, default=0.0, help="in [0, 1], 0 disables")
  p.add_argument("--repetition-penalty", type=_float, default=1.0, help="> 0, 1 disables")
  p.add_argument("--frequency-penalty", type=_float, default=0.0, help="0 disables")
  p.add_argument("--presence-penalty", type=_float, default=0.0, help="0 disables")
  p.add_argument("--seed", type=_seed, default=0, help="PRNG seed (default 0)")
  p.add_argument("--num-samples", type=cli.positive_int, default=1)
  p.add_argument("--logprobs", type=cli.nonneg_int, default=0,
                 help="top alternatives recorded per position (with --json)")
  p.add_argument("--json", action="store_true", help="one JSON object per sample")
  p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: shipped)")


def _run(args: argparse.Namespace) -> int:
  import jax
  import jax.numpy as jnp
  import numpy as np

  import jaxlogits as jl
  from jaxlogits import decode, tokenizer
  from jaxlogits.checkpoint import default_checkpoint_dir, load_checkpoint

  params = jl.SamplingParams.create(
      1, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
      repetition_penalty=args.repetition_penalty, frequency_penalty=args.frequency_penalty,
      presence_penalty=args.presence_penalty)
  ckpt = Path(args.checkpoint) if args.checkpoint else default_checkpoint_dir()
  if not (ckpt / "config.json").exists():
    raise ValueError(f"no checkpoint at {ckpt} (train one with `jaxlogits train --out DIR`)")
  model, config = load_checkpoint(ckpt)
  ids = tokenizer.encode(args.prompt, bos=True)
  total = len(ids) + args.max_new_tokens
  if total > config.max_seq_len:
    raise ValueError(f"the prompt ({len(ids)} tokens with BOS) plus --max-new-tokens "
                     f"({args.max_new_tokens}) exceeds the model's context of "
                     f"{config.max_seq_len} tokens")
  if args.logprobs > config.vocab_size:
    raise ValueError(f"--logprobs must be at most the vocabulary size {config.vocab_size}")
  n = args.num_samples
  fn, cache = decode.model_callback(model, n, total)
  prompts = jnp.asarray([ids], jnp.int32)
  kwargs = dict(max_new_tokens=args.max_new_tokens, eos_token_id=tokenizer.EOS_ID,
                num_samples=n, top_logprobs=args.logprobs)
  key = jax.random.key(args.seed)

  if n == 1 and not args.json:
    dec = tokenizer.IncrementalDecoder()
    sys.stdout.write(args.prompt)
    state = None
    for state in decode.stream(key, fn, cache, prompts, None, params, **kwargs):
      tok = int(state.out.tokens[0, int(state.step) - 1])
      if tok >= 0:
        sys.stdout.write(dec.feed([tok]))
        sys.stdout.flush()
    sys.stdout.write(dec.flush() + "\n")
    reason = decode.FINISH_REASONS[int(state.out.finish_reason[0])] if state else "length"
    sys.stderr.write(f"[finish: {reason}]\n")
    return 0

  out = jax.device_get(decode.generate(key, fn, cache, prompts, None, params, **kwargs))
  for r in range(n):
    length = int(out.length[r])
    toks = [int(t) for t in np.asarray(out.tokens[r, :length])]
    text = tokenizer.decode(toks)
    reason = decode.FINISH_REASONS[int(out.finish_reason[r])]
    if args.json:
      obj = {"sample": r, "prompt": args.prompt, "text": text, "tokens": toks,
             "logprobs": [float(x) for x in out.logprobs[r, :length]],
             "processed_logprobs": [float(x) for x in out.processed_logprobs[r, :length]],
             "surviving_mass": [float(x) for x in out.surviving_mass[r, :length]],
             "prompt_logprobs": [float(x) for x in out.prompt_logprobs[r, 1:len(ids)]],
             "finish_reason": reason}
      if args.logprobs:
        obj["top_logprobs"] = [
            [{"token": int(i), "logprob": float(lp)}
             for i, lp in zip(out.top_ids[r, t], out.top_logprobs[r, t])]
            for t in range(length)]
      print(json.dumps(obj))
    else:
      print(f"--- sample {r} ({reason})")
      print(args.prompt + text)
  return 0


cli.register_command("generate", "sample text from a checkpoint (the shipped model by default)",
                     _add_args, _run)
