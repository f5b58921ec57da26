"""``jaxlogits calibrate``: a calibration study of the built-in model, end to end.

Registered with :mod:`jaxlogits.cli`. The command

1. builds the "which keyword comes next" multiple-choice task of :mod:`jaxlogits.tasks` from the
   standard library's held-out files (``--num-questions`` questions, 4 options each, drawn with
   ``--seed``; the context is ``--context-bytes`` bytes, by default 150 or what the model's
   ``max_seq_len`` allows);
2. scores every option with :func:`jaxlogits.classify.classify`, ``--batch-size`` questions per
   batched call, and takes the class log-probabilities under ``--normalisation`` (``sum`` by
   default; ``calibrated`` uses ``--content-free-prompt``, BOS alone by default);
3. splits the questions (a permutation drawn with ``--split-seed``) into a calibration half
   (the first ``N // 2``) and an evaluation half (the rest), fits a temperature on the
   calibration half with :func:`jaxlogits.calibration.fit_temperature` and reports, on the
   evaluation half, accuracy, mean confidence, ECE (equal-width and equal-mass bins), MCE, Brier
   score and NLL before and after dividing the class log-probabilities by the temperature;
4. saves two reliability diagrams of the evaluation half with
   :func:`jaxlogits.calibration.reliability_diagram`: ``--plot FILE`` (default
   ``calibration.png``) before temperature scaling and ``FILE`` with ``_scaled`` added to its
   stem (``calibration_scaled.png``) after it; ``--no-plot`` skips them.

``--json`` prints one JSON object (the settings, the figures and every question's file, offset,
options, label, prediction and class probabilities) instead of the table. The output depends
only on the flags, the checkpoint and the standard library: two runs print the same.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxlogits import cli

__all__: list[str] = []

_FIGURES = (("accuracy", "accuracy"), ("confidence", "mean confidence"),
            ("ece_width", "ECE, equal-width bins"), ("ece_mass", "ECE, equal-mass bins"),
            ("mce", "MCE, equal-width bins"), ("brier", "Brier score"), ("nll", "NLL"))


def _add_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--checkpoint", default=None, metavar="DIR",
                 help="checkpoint directory (default: the shipped model)")
  t = p.add_argument_group("task")
  t.add_argument("--num-questions", type=cli.positive_int, default=200, metavar="N",
                 help="questions to build and score, >= 2 (default: %(default)s)")
  t.add_argument("--seed", type=cli.nonneg_int, default=0,
                 help="seed of the questions: sites, distractors, option order "
                      "(default: %(default)s)")
  t.add_argument("--split-seed", type=cli.nonneg_int, default=0,
                 help="seed of the calibration/evaluation split (default: %(default)s)")
  t.add_argument("--context-bytes", type=cli.positive_int, default=None, metavar="N",
                 help="bytes of context before the keyword (default: 150, or less when the "
                      "model's context is shorter)")
  s = p.add_argument_group("scoring")
  s.add_argument("--normalisation", "--normalization", dest="normalisation", default="sum",
                 choices=["sum", "mean", "calibrated"],
                 help="sum of log-probs, mean per byte, or sum calibrated against the "
                      "content-free prompt (default: sum)")
  s.add_argument("--content-free-prompt", default="", metavar="TEXT",
                 help="content-free prompt of --normalisation calibrated, after BOS "
                      "(default: '', BOS alone)")
  s.add_argument("--batch-size", type=cli.positive_int, default=25, metavar="N",
                 help="questions per batched scoring call (default: %(default)s)")
  s.add_argument("--num-bins", type=cli.positive_int, default=15, metavar="B",
                 help="bins of the ECE, MCE and diagrams (default: %(default)s)")
  o = p.add_argument_group("output")
  g = o.add_mutually_exclusive_group()
  g.add_argument("--plot", default="calibration.png", metavar="FILE",
                 help="reliability diagram before temperature scaling; the one after goes to "
                      "FILE with _scaled added to its stem (default: %(default)s)")
  g.add_argument("--no-plot", action="store_true", help="write no diagrams")
  o.add_argument("--json", action="store_true", help="print one JSON object")


def _scaled_path(path: Path) -> Path:
  """``dir/name.png`` -> ``dir/name_scaled.png``."""
  return path.with_name(path.stem + "_scaled" + path.suffix)


def _score(model, questions, normalisation: str, content_free: list[int] | None,
           batch_size: int):
  """Class log-probabilities ``[N, K]`` of the questions, one classify call per batch."""
  import numpy as np

  from jaxlogits import classify as _cls

  fns = _cls.for_model(model)
  batch_size = min(batch_size, len(questions))
  out = []
  for start in range(0, len(questions), batch_size):
    batch = list(questions[start:start + batch_size])
    real = len(batch)
    batch += [batch[-1]] * (batch_size - real)  # one shape for every batch: one compilation
    res = _cls.classify(*fns, [q.prompt_ids for q in batch], [q.option_ids for q in batch],
                        normalisation=normalisation, content_free_prompt=content_free)
    out.append(np.asarray(res.logprobs, np.float32)[:real])
  return np.concatenate(out)


def _report_dict(report) -> dict[str, float]:
  return {name: float(getattr(report, name)) for name, _ in _FIGURES}


def _run(args: argparse.Namespace) -> int:
  import numpy as np

  from jaxlogits import calibration as _cal
  from jaxlogits import tasks, tokenizer
  from jaxlogits.checkpoint import default_checkpoint_dir, load_checkpoint

  n = args.num_questions
  if n < 2:
    raise ValueError(f"--num-questions must be >= 2 (one calibration and one evaluation "
                     f"question at least), got {n}")
  plots: list[Path] = []
  if not args.no_plot:
    if not args.plot:
      raise ValueError("--plot needs a file name (or give --no-plot)")
    before = Path(args.plot)
    if before.is_dir():
      raise ValueError(f"--plot {args.plot} is a directory; give a file name")
    if not before.parent.is_dir():
      raise ValueError(f"--plot {args.plot}: directory {str(before.parent)!r} does not exist")
    plots = [before, _scaled_path(before)]
  calibrated = args.normalisation == "calibrated"
  cf_ids = tokenizer.encode(args.content_free_prompt, bos=True) if calibrated else None

  ckpt = Path(args.checkpoint) if args.checkpoint else default_checkpoint_dir()
  if not (ckpt / "config.json").exists():
    raise ValueError(f"no checkpoint at {ckpt} (train one with `jaxlogits train --out DIR`)")
  model, config = load_checkpoint(ckpt)
  max_len = config.max_seq_len
  fit = tasks.max_context_bytes(max_len)
  if args.context_bytes is not None and args.context_bytes > fit:
    raise ValueError(f"--context-bytes {args.context_bytes} does not fit the model's context "
                     f"of {max_len} tokens with BOS and the longest option (at most {fit})")
  questions = tasks.build_task(n, seed=args.seed, max_len=max_len,
                               context_bytes=args.context_bytes)
  ctx = len(questions[0].context)
  longest = max(len(o) for q in questions for o in q.option_ids)
  if calibrated and len(cf_ids) + longest > max_len:
    raise ValueError(f"--content-free-prompt ({len(cf_ids)} tokens with BOS) plus the longest "
                     f"option ({longest} bytes) exceeds the model's context of {max_len} tokens")

  logp = _score(model, questions, args.normalisation, cf_ids, args.batch_size)
  labels = np.array([q.label for q in questions], np.int32)
  order = np.random.default_rng(args.split_seed).permutation(n)
  cal_idx, eval_idx = np.sort(order[:n // 2]), np.sort(order[n // 2:])
  temperature = _cal.fit_temperature(logp[cal_idx], labels[cal_idx])
  ev_logp, ev_labels = logp[eval_idx], labels[eval_idx]
  scaled = ev_logp / np.float32(temperature)
  before_r = _cal.calibration_report(ev_logp, ev_labels, num_bins=args.num_bins)
  after_r = _cal.calibration_report(scaled, ev_labels, num_bins=args.num_bins)

  if plots:
    try:
      _cal.reliability_diagram(ev_logp, ev_labels, plots[0], num_bins=args.num_bins,
                               title="Next keyword, before temperature scaling")
      _cal.reliability_diagram(scaled, ev_labels, plots[1], num_bins=args.num_bins,
                               title=f"Next keyword, after scaling (T = {temperature:.3g})")
    except ImportError:
      raise ValueError("the reliability diagrams need matplotlib (pip install "
                       "'jaxlogits[plot]'); or give --no-plot") from None

  probs = np.exp(logp.astype(np.float64))
  probs /= probs.sum(axis=1, keepdims=True)
  split = np.empty(n, object)
  split[cal_idx], split[eval_idx] = "calibration", "evaluation"
  num_files = len({q.file for q in questions})

  if args.json:
    obj = {"task": "next-keyword", "checkpoint": str(ckpt), "seed": args.seed,
           "split_seed": args.split_seed, "num_questions": n,
           "num_options": len(questions[0].options), "context_bytes": ctx,
           "num_files": num_files, "normalisation": args.normalisation}
    if calibrated:
      obj["content_free_prompt"] = args.content_free_prompt
    obj.update({"num_bins": args.num_bins, "num_calibration": len(cal_idx),
                "num_evaluation": len(eval_idx), "temperature": temperature,
                "before": _report_dict(before_r), "after": _report_dict(after_r),
                "plots": [str(p) for p in plots]})
    obj["questions"] = [
        {"file": q.file, "offset": q.offset, "options": list(q.options), "label": q.label,
         "prediction": int(np.argmax(logp[i])), "probs": [float(v) for v in probs[i]],
         "split": split[i]} for i, q in enumerate(questions)]
    print(json.dumps(obj))
    return 0

  k = len(questions[0].options)
  print(f"task: which keyword comes next: {n} questions from {num_files} held-out files "
        f"(seed {args.seed}), {k} options, {ctx}-byte contexts")
  print(f"checkpoint: {ckpt}")
  print(f"normalisation: {args.normalisation}"
        + (f" (content-free prompt {json.dumps(args.content_free_prompt)})"
           if calibrated else ""))
  print(f"split (seed {args.split_seed}): {len(cal_idx)} calibration, {len(eval_idx)} "
        f"evaluation questions; chance accuracy {1 / k:.4f}")
  print(f"temperature fitted on the calibration half: {temperature:.4f}")
  print("")
  width = max(len(label) for _, label in _FIGURES) + 2
  print(f"{'evaluation half (' + str(len(eval_idx)) + ')':<{width}}  {'before':>8}  "
        f"{'after':>8}")
  for name, label in _FIGURES:
    print(f"{label:<{width}}  {getattr(before_r, name):>8.4f}  {getattr(after_r, name):>8.4f}")
  print(f"({args.num_bins} bins; after = class log-probabilities divided by the temperature)")
  if plots:
    print(f"reliability diagrams: {plots[0]} (before), {plots[1]} (after)")
  return 0


cli.register_command("calibrate", "calibration of the model on a held-out multiple-choice task, "
                     "before and after temperature scaling", _add_args, _run)
