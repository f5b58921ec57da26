"""Training and held-out evaluation of the built-in byte-level model.

Optimiser: ``optax.chain(clip_by_global_norm(clip_norm), adamw(schedule))``
with the schedule a linear warmup from 0 to ``learning_rate`` over
``warmup_steps`` followed by cosine decay to ``learning_rate *
min_lr_ratio`` at ``steps``. Weight decay applies to matrices (parameters
with ``ndim >= 2``: the embedding and the projection kernels), not to norm
scales. The train step is one jitted function; batches come from
:func:`jaxlogits.data.batch_iterator` with the run's seed, and parameters
are initialised from the same seed, so a run is deterministic for a seed
(on a given machine/JAX build). On a GPU, XLA adds the embedding gradient
with atomic scatter-adds, so runs agree only to rounding unless
``XLA_FLAGS=--xla_gpu_deterministic_ops=true`` is set.

Held-out bits per byte
----------------------
:func:`evaluate_bits_per_byte` scores documents (file contents) as follows.
Each document becomes ``x = [BOS] + bytes`` (``n`` bytes, ``n + 1`` tokens)
and every byte ``x[1..n]`` is predicted exactly once, with context, by
sliding windows of ``seq_len`` input tokens:

* window ``k`` has inputs ``x[s : s + seq_len]`` with ``s = k * stride``
  (``stride = seq_len // 2`` by default) and predicts targets
  ``x[s + 1 : s + seq_len + 1]``;
* window 0 scores all its targets; window ``k > 0`` scores only the targets
  not scored by window ``k - 1``, i.e. those at indices ``> (k - 1) * stride
  + seq_len``; so every byte after the first window has at least
  ``seq_len - stride`` tokens of context;
* windows are added until byte ``n`` is scored.

The result is ``sum(-log2 p(byte | context)) / total_bytes`` over all bytes
of all documents (EOS is not scored). During training a fixed subset of those
windows (chosen once with a fixed seed) gives a quick periodic estimate; the
final figure written to ``train_info.json`` is over all held-out files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxlogits import data as data_lib
from jaxlogits.model import ModelConfig, Transformer, count_params, create_model

__all__ = [
    "TrainConfig",
    "DEFAULT_TRAIN_CONFIG",
    "make_schedule",
    "make_optimizer",
    "cross_entropy_loss",
    "make_train_step",
    "make_eval_windows",
    "evaluate_bits_per_byte",
    "ProgressBar",
    "TrainResult",
    "train",
]

LN2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and schedule settings.

    Attributes:
      steps: optimiser steps.
      batch_size: windows per step.
      seq_len: tokens per window.
      learning_rate: peak learning rate.
      warmup_steps: linear warmup length.
      min_lr_ratio: final learning rate as a fraction of the peak.
      weight_decay: AdamW decoupled weight decay (matrices only).
      b1, b2: Adam moments.
      clip_norm: global gradient-norm clip.
      seed: parameter init and data sampling seed.
      eval_every: steps between quick held-out evaluations (0: never).
      eval_windows: windows in the quick held-out subset.
      eval_batch_size: windows per evaluation batch.
      log_every: steps between progress updates.
    """

    steps: int = 1800
    batch_size: int = 32
    seq_len: int = 256
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    clip_norm: float = 1.0
    seed: int = 0
    eval_every: int = 200
    eval_windows: int = 64
    eval_batch_size: int = 32
    log_every: int = 10

    def __post_init__(self) -> None:
        """Validate values; raise ValueError when out of range."""
        for name in ("steps", "batch_size", "seq_len", "eval_batch_size", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "eval_windows"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {self.seq_len}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.weight_decay < 0 or not self.clip_norm > 0:
            raise ValueError("weight_decay must be >= 0 and clip_norm > 0")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-serialisable dict.

        Returns:
          field name -> value.
        """
        return dataclasses.asdict(self)


#: Settings used for the shipped default checkpoint.
DEFAULT_TRAIN_CONFIG = TrainConfig()


def make_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Linear warmup then cosine decay.

    Args:
      cfg: training settings.

    Returns:
      An optax schedule: 0 -> ``learning_rate`` over ``warmup_steps``, then
      cosine to ``learning_rate * min_lr_ratio`` at ``steps``.
    """
    warmup = min(cfg.warmup_steps, max(cfg.steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=warmup,
        decay_steps=max(cfg.steps, warmup + 1),
        end_value=cfg.learning_rate * cfg.min_lr_ratio)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """AdamW with gradient clipping and the warmup-cosine schedule.

    Args:
      cfg: training settings.

    Returns:
      The optax transformation.
    """
    decay_mask = lambda params: jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)
    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(make_schedule(cfg), b1=cfg.b1, b2=cfg.b2,
                    weight_decay=cfg.weight_decay, mask=decay_mask),
    )


def cross_entropy_loss(logits: jax.Array, targets: jax.Array,
                       weights: jax.Array | None = None) -> jax.Array:
    """Mean next-token cross entropy in nats.

    Args:
      logits: ``[B, T, V]`` float.
      targets: ``[B, T]`` int.
      weights: optional ``[B, T]`` float weights (mean is weighted).

    Returns:
      Scalar loss.
    """
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    if weights is None:
        return jnp.mean(nll)
    return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def make_train_step(graphdef: Any, tx: optax.GradientTransformation) -> Callable:
    """Build the jitted training step.

    Args:
      graphdef: from ``graphdef, params = nnx.split(model)``.
      tx: the optimiser.

    Returns:
      ``step(params, opt_state, inputs, targets) -> (params, opt_state,
      loss, grad_norm)``, jitted with params and optimiser state donated.
    """

    def loss_fn(params, inputs, targets):
        model = nnx.merge(graphdef, params)
        return cross_entropy_loss(model.forward(inputs), targets)

    def step(params, opt_state, inputs, targets):
        loss, grads = jax.value_and_grad(loss_fn)(params, inputs, targets)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss, optax.tree.norm(grads)

    return jax.jit(step, donate_argnums=(0, 1))


def make_eval_windows(docs: Sequence[bytes | np.ndarray], seq_len: int,
                      stride: int | None = None):
    """Cut documents into scoring windows (see the module docstring).

    Args:
      docs: document contents as bytes (tokenised as ``[BOS] + bytes``) or
        as already tokenised int arrays starting with BOS.
      seq_len: input tokens per window.
      stride: window step (default ``seq_len // 2``; ``1..seq_len``).

    Returns:
      ``(inputs, targets, weights, doc_index)``: int32 ``[N, seq_len]``,
      int32 ``[N, seq_len]``, float32 ``[N, seq_len]`` (1 where the target
      is scored, else 0) and int32 ``[N]`` (the document of each window).
      Every byte of every document has weight 1 in exactly one window.
    """
    stride = seq_len // 2 if stride is None else int(stride)
    if not 1 <= stride <= seq_len:
        raise ValueError(f"stride must be in [1, seq_len={seq_len}], got {stride}")
    ins, tgs, wts, didx = [], [], [], []
    for d, doc in enumerate(docs):
        x = data_lib.document_tokens(doc) if isinstance(doc, (bytes, bytearray)) else \
            np.asarray(doc, np.int32)
        n = len(x) - 1  # scored targets x[1..n]
        if n <= 0:
            continue
        scored_upto = 0  # targets with index <= scored_upto are done
        s = 0
        while scored_upto < n:
            inp = np.zeros(seq_len, np.int32)
            tgt = np.zeros(seq_len, np.int32)
            w = np.zeros(seq_len, np.float32)
            chunk = x[s:s + seq_len]
            inp[:len(chunk)] = chunk
            tchunk = x[s + 1:s + seq_len + 1]
            tgt[:len(tchunk)] = tchunk
            idx = s + 1 + np.arange(len(tchunk))  # target indices in x
            w[:len(tchunk)] = (idx > scored_upto).astype(np.float32)
            scored_upto = int(idx[-1])
            ins.append(inp)
            tgs.append(tgt)
            wts.append(w)
            didx.append(d)
            s += stride
    if not ins:
        z = np.zeros((0, seq_len), np.int32)
        return z, z.copy(), np.zeros((0, seq_len), np.float32), np.zeros((0,), np.int32)
    return (np.stack(ins), np.stack(tgs), np.stack(wts), np.asarray(didx, np.int32))


_EVAL_FN_CACHE: dict[Any, Callable] = {}


def _eval_fn(graphdef: Any) -> Callable:
    """Jitted ``(params, inputs, targets, weights) -> per-window NLL sums`` (nats)."""
    fn = _EVAL_FN_CACHE.get(graphdef)
    if fn is None:
        def nll_sums(params, inputs, targets, weights):
            model = nnx.merge(graphdef, params)
            logits = model.forward(inputs)
            nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
            return jnp.sum(nll * weights, axis=-1)

        fn = jax.jit(nll_sums)
        _EVAL_FN_CACHE[graphdef] = fn
    return fn


def _score_windows(model_or_split, inputs, targets, weights, batch_size: int) -> np.ndarray:
    """Sum of weighted NLL (nats) per window, in fixed-size batches."""
    if isinstance(model_or_split, tuple):
        graphdef, params = model_or_split
    else:
        graphdef, params = nnx.split(model_or_split)
    fn = _eval_fn(graphdef)
    n = inputs.shape[0]
    out = np.zeros(n, np.float64)
    for i in range(0, n, batch_size):
        j = min(i + batch_size, n)
        pad = batch_size - (j - i)
        xb, yb, wb = inputs[i:j], targets[i:j], weights[i:j]
        if pad:
            xb = np.concatenate([xb, np.zeros((pad,) + xb.shape[1:], xb.dtype)])
            yb = np.concatenate([yb, np.zeros((pad,) + yb.shape[1:], yb.dtype)])
            wb = np.concatenate([wb, np.zeros((pad,) + wb.shape[1:], wb.dtype)])
        sums = fn(params, jnp.asarray(xb), jnp.asarray(yb), jnp.asarray(wb))
        out[i:j] = np.asarray(sums, np.float64)[:j - i]
    return out


def evaluate_bits_per_byte(model: Transformer | tuple, docs: Sequence[bytes],
                           seq_len: int = 256, stride: int | None = None,
                           batch_size: int = 32, per_document: bool = False):
    """Held-out bits per byte of documents (see the module docstring).

    Args:
      model: a :class:`Transformer`, or ``(graphdef, params)`` from
        ``nnx.split``.
      docs: document contents (bytes).
      seq_len: window length in tokens (at most the model's useful length).
      stride: window step (default ``seq_len // 2``).
      batch_size: windows per forward pass.
      per_document: also return the per-document figures.

    Returns:
      The overall bits per byte (total NLL in bits / total bytes), or with
      ``per_document=True`` a tuple ``(overall, [bpb per doc])`` (``nan``
      for empty documents). ``nan`` overall when there are no bytes.
    """
    inputs, targets, weights, didx = make_eval_windows(docs, seq_len, stride)
    sums = _score_windows(model, inputs, targets, weights, batch_size)
    counts = weights.sum(axis=1).astype(np.float64)
    total_bytes = counts.sum()
    overall = float(sums.sum() / LN2 / total_bytes) if total_bytes else float("nan")
    if not per_document:
        return overall
    per_doc_nll = np.zeros(len(docs))
    per_doc_n = np.zeros(len(docs))
    np.add.at(per_doc_nll, didx, sums)
    np.add.at(per_doc_n, didx, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        per = per_doc_nll / LN2 / per_doc_n
    return overall, [float(v) if n else float("nan") for v, n in zip(per, per_doc_n)]


class ProgressBar:
    """A minimal text progress bar written to a stream (stderr by default).

    On a terminal it redraws one line with ``\\r``; otherwise (a log file) it
    writes one full line per update.
    """

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 24):
        """Create the bar.

        Args:
          total: number of steps.
          stream: output stream (default ``sys.stderr``).
          width: characters of the bar itself.
        """
        self.total = max(int(total), 1)
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        self.start = time.perf_counter()
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())

    def update(self, step: int, **fields: Any) -> None:
        """Draw the bar at ``step`` with extra ``name=value`` fields.

        Args:
          step: steps done so far.
          **fields: values shown after the bar (floats formatted compactly).
        """
        frac = min(max(step / self.total, 0.0), 1.0)
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        parts = [f"{step}/{self.total} [{bar}] {frac * 100:5.1f}%"]
        for k, v in fields.items():
            parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
        parts.append(f"elapsed {_fmt_time(elapsed)} eta {_fmt_time(eta)}")
        line = "  ".join(parts)
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """Print a full line without breaking the bar.

        Args:
          text: the message.
        """
        self.stream.write(("\n" if self.tty else "") + text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Finish the bar's line."""
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fmt_time(seconds: float) -> str:
    """Format seconds as ``H:MM:SS`` (``?`` when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


_STEP_CACHE: dict[Any, tuple[optax.GradientTransformation, Callable]] = {}


@dataclasses.dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
      model: the trained model.
      losses: training loss at every step.
      evals: ``(step, quick held-out bpb)`` pairs.
      final_bpb: held-out bits per byte over all held-out docs (None when
        the final evaluation was skipped).
      info: the dict written to ``train_info.json``.
    """

    model: Transformer
    losses: list[float]
    evals: list[tuple[int, float]]
    final_bpb: float | None
    info: dict[str, Any]


def train(model_config: ModelConfig, train_config: TrainConfig, *,
          out_dir: str | Path | None = None,
          train_stream: np.ndarray | None = None,
          heldout_docs: Sequence[bytes] | None = None,
          final_eval: bool = True,
          command: str | None = None,
          stream: TextIO | None = None) -> TrainResult:
    """Train a model from scratch.

    Args:
      model_config: model sizes.
      train_config: optimisation settings (its ``seed`` seeds everything).
      out_dir: where to save the checkpoint and ``train_info.json`` (None:
        do not save).
      train_stream: token stream to train on (default: the stdlib training
        files, see :mod:`jaxlogits.data`).
      heldout_docs: documents for evaluation (default: the held-out stdlib
        files).
      final_eval: evaluate on all of ``heldout_docs`` at the end.
      command: the command line recorded in ``train_info.json``.
      stream: where progress goes (default stderr).

    Returns:
      A :class:`TrainResult`.
    """
    from jaxlogits.checkpoint import save_checkpoint  # avoid an import cycle

    tc = train_config
    bar_stream = sys.stderr if stream is None else stream
    corpus_info: dict[str, Any] = {}
    if train_stream is None:
        files = data_lib.train_files()
        train_stream = data_lib.build_stream(data_lib.load_bytes(files))
        corpus_info["train_files"] = len(files)
    if heldout_docs is None:
        hfiles = data_lib.heldout_files()
        heldout_docs = data_lib.load_bytes(hfiles)
        corpus_info["heldout_files"] = len(hfiles)
    corpus_info["train_tokens"] = int(len(train_stream))
    corpus_info["heldout_bytes"] = int(sum(len(d) for d in heldout_docs))
    corpus_info["stdlib"] = str(data_lib.stdlib_root())

    model = create_model(model_config, seed=tc.seed)
    n_params = count_params(model)
    graphdef, params = nnx.split(model)
    key = (graphdef, tc.steps, tc.learning_rate, tc.warmup_steps, tc.min_lr_ratio,
           tc.weight_decay, tc.b1, tc.b2, tc.clip_norm)
    if key not in _STEP_CACHE:  # reuse the compiled step across calls (tests, sweeps)
        _STEP_CACHE.clear()
        tx = make_optimizer(tc)
        _STEP_CACHE[key] = (tx, make_train_step(graphdef, tx))
    tx, step_fn = _STEP_CACHE[key]
    opt_state = tx.init(params)

    eval_seq = min(tc.seq_len, model_config.max_seq_len)
    quick = None
    if tc.eval_every and tc.eval_windows and heldout_docs:
        w_in, w_tg, w_wt, _ = make_eval_windows(heldout_docs, eval_seq)
        pick = np.sort(np.random.default_rng(1234).permutation(len(w_in))[:tc.eval_windows])
        quick = (w_in[pick], w_tg[pick], w_wt[pick])

    def quick_eval(p) -> float:
        sums = _score_windows((graphdef, p), *quick, tc.eval_batch_size)
        return float(sums.sum() / LN2 / quick[2].sum())

    bar = ProgressBar(tc.steps, bar_stream)
    bar.message(f"training {n_params:,} parameters for {tc.steps} steps "
                f"({tc.steps * tc.batch_size * tc.seq_len:,} tokens); "
                f"{corpus_info['train_tokens']:,} training tokens, "
                f"{corpus_info['heldout_bytes']:,} held-out bytes")
    batches = data_lib.batch_iterator(train_stream, tc.seed, tc.batch_size, tc.seq_len)
    losses: list[float] = []
    evals: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    t_last, tokens_since = t0, 0
    ema = None
    pending: list[Any] = []
    eval_time = 0.0
    for step in range(1, tc.steps + 1):
        inputs, targets = next(batches)
        params, opt_state, loss, gnorm = step_fn(params, opt_state, inputs, targets)
        pending.append(loss)
        tokens_since += inputs.size
        if step % tc.log_every == 0 or step == tc.steps:
            vals = [float(x) for x in pending]
            pending.clear()
            losses.extend(vals)
            for v in vals:
                ema = v if ema is None else 0.9 * ema + 0.1 * v
            now = time.perf_counter()
            rate = tokens_since / max(now - t_last, 1e-9)
            t_last, tokens_since = now, 0
            bar.update(step, loss=ema, bpb=ema / LN2, gnorm=float(gnorm),
                       **{"bytes/s": f"{rate:,.0f}"})
        if quick is not None and (step % tc.eval_every == 0 or step == tc.steps):
            te = time.perf_counter()
            bpb = quick_eval(params)
            eval_time += time.perf_counter() - te
            evals.append((step, bpb))
            bar.message(f"step {step}: held-out subset bits/byte {bpb:.4f}")
            t_last = time.perf_counter()
    bar.close()
    train_seconds = time.perf_counter() - t0
    model = nnx.merge(graphdef, params)

    final_bpb = None
    if final_eval and heldout_docs:
        te = time.perf_counter()
        final_bpb = evaluate_bits_per_byte((graphdef, params), heldout_docs, seq_len=eval_seq,
                                           batch_size=tc.eval_batch_size)
        bar.message(f"final held-out bits/byte (all held-out files, seq_len {eval_seq}, "
                    f"stride {eval_seq // 2}): {final_bpb:.4f} "
                    f"[{time.perf_counter() - te:.0f}s]")

    info = {
        "command": command,
        "seed": tc.seed,
        "heldout_bits_per_byte": final_bpb,
        "heldout_eval": {"seq_len": eval_seq, "stride": eval_seq // 2,
                         "scope": "all held-out files"},
        "quick_evals": evals,
        "final_train_loss": losses[-1] if losses else None,
        "num_params": n_params,
        "model_config": model_config.to_dict(),
        "train_config": tc.to_dict(),
        "train_seconds": round(train_seconds, 1),
        "corpus": corpus_info,
        "versions": {"python": platform.python_version(), "jax": jax.__version__},
    }
    if out_dir is not None:
        out = Path(out_dir)
        save_checkpoint(out, model, model_config)
        with open(out / "train_info.json", "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
        bar.message(f"saved checkpoint to {out}")
    return TrainResult(model=model, losses=losses, evals=evals, final_bpb=final_bpb, info=info)
