"""``jaxlogits score``: classify a prompt by the log-likelihoods of candidate completions.

Registered with :mod:`jaxlogits.cli`. ``jaxlogits score --prompt P --candidate A --candidate B
...`` scores every candidate after the prompt with a checkpoint (the shipped one by default) in
one batched call (:func:`jaxlogits.classify.classify`) and prints each candidate's total
log-probability, its per-byte average and its class probability under ``--normalisation``
(``sum``, ``mean`` per byte, or ``calibrated`` against ``--content-free-prompt``, Zhao et al.
2021). ``--json`` prints one JSON object instead of the table.

The prompt is encoded with a BOS token, the candidates without (so a candidate usually starts
with the space or newline that separates it from the prompt).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxlogits import cli

__all__: list[str] = []


def _add_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--prompt", required=True, help="prompt text (a BOS token is prepended)")
  p.add_argument("--candidate", action="append", required=True, metavar="TEXT",
                 help="a candidate completion (give at least two)")
  p.add_argument("--normalisation", "--normalization", dest="normalisation", default="sum",
                 choices=["sum", "mean", "calibrated"],
                 help="sum of log-probs, mean per byte, or sum calibrated against the "
                      "content-free prompt (default: sum)")
  p.add_argument("--content-free-prompt", default="N/A", metavar="TEXT",
                 help="content-free prompt of --normalisation calibrated (default: 'N/A')")
  p.add_argument("--json", action="store_true", help="print one JSON object")
  p.add_argument("--checkpoint", default=None, metavar="DIR",
                 help="checkpoint directory (default: the shipped model)")


def _run(args: argparse.Namespace) -> int:
  import numpy as np

  from jaxlogits import classify as _cls
  from jaxlogits import tokenizer
  from jaxlogits.checkpoint import default_checkpoint_dir, load_checkpoint

  cands = list(args.candidate)
  if len(cands) < 2:
    raise ValueError(f"give at least 2 candidates (--candidate TEXT, repeated), got {len(cands)}")
  for j, c in enumerate(cands):
    if not c:
      raise ValueError(f"candidate {j} is empty; every candidate needs at least one byte")
  calibrated = args.normalisation == "calibrated"
  ids = tokenizer.encode(args.prompt, bos=True)
  cand_ids = [tokenizer.encode(c, bos=False) for c in cands]
  cf_ids = tokenizer.encode(args.content_free_prompt, bos=True) if calibrated else None

  ckpt = Path(args.checkpoint) if args.checkpoint else default_checkpoint_dir()
  if not (ckpt / "config.json").exists():
    raise ValueError(f"no checkpoint at {ckpt} (train one with `jaxlogits train --out DIR`)")
  model, config = load_checkpoint(ckpt)
  longest = max(len(c) for c in cand_ids)
  for name, prompt in [("the prompt", ids)] + ([("--content-free-prompt", cf_ids)]
                                               if calibrated else []):
    if len(prompt) + longest > config.max_seq_len:
      raise ValueError(f"{name} ({len(prompt)} tokens with BOS) plus the longest candidate "
                       f"({longest} bytes) exceeds the model's context of "
                       f"{config.max_seq_len} tokens")

  out = _cls.classify(*_cls.for_model(model), ids, cand_ids, normalisation=args.normalisation,
                      content_free_prompt=cf_ids)
  total = np.asarray(out.total, np.float64)
  mean = np.asarray(out.mean, np.float64)
  probs = np.asarray(out.probs, np.float64)
  logp = np.asarray(out.logprobs, np.float64)
  cf = None if out.content_free_total is None else np.asarray(out.content_free_total, np.float64)
  best = int(out.prediction)

  if args.json:
    rows = []
    for j, c in enumerate(cands):
      row = {"index": j, "candidate": c, "num_bytes": len(cand_ids[j]),
             "logprob": float(total[j]), "mean_logprob": float(mean[j]),
             "prob": float(probs[j]), "class_logprob": float(logp[j])}
      if cf is not None:
        row["content_free_logprob"] = float(cf[j])
      rows.append(row)
    obj = {"prompt": args.prompt, "normalisation": args.normalisation, "prediction": best,
           "candidates": rows}
    if calibrated:
      obj["content_free_prompt"] = args.content_free_prompt
    print(json.dumps(obj))
    return 0

  shown = [json.dumps(c, ensure_ascii=False) for c in cands]
  width = max(9, max(len(s) for s in shown))
  header = f"  #  {'candidate':<{width}}  bytes    logprob  per-byte"
  if cf is not None:
    header += "  content-free"
  print(f"normalisation: {args.normalisation}"
        + (f" (content-free prompt {json.dumps(args.content_free_prompt)})"
           if calibrated else ""))
  print(header + "      prob")
  for j, s in enumerate(shown):
    line = (f"{j:>3}  {s:<{width}}  {len(cand_ids[j]):>5}  {total[j]:>9.4f}  {mean[j]:>8.4f}")
    if cf is not None:
      line += f"  {cf[j]:>12.4f}"
    line += f"  {probs[j]:>8.4f}" + (" *" if j == best else "")
    print(line)
  return 0


cli.register_command("score", "class probabilities of candidate completions of a prompt",
                     _add_args, _run)
