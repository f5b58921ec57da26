"""Command-line interface: ``jaxlogits <command> ...``.

Commands are registered in :data:`COMMANDS` as ``name -> Command(help,
add_arguments, run)``; :func:`register_command` adds one (e.g. generate,
bench, score, calibrate from other modules). ``add_arguments(parser)``
declares the flags; ``run(args) -> int`` does the work and returns the exit
status.

Errors: bad flags or values print one line ``jaxlogits: error: ...`` and
exit with status 2; a ``ValueError`` raised by a command is reported the
same way, never as a traceback. An ``OSError`` (unwritable output, ...) is
reported in one line with exit status 1.

Implemented here:

* ``jaxlogits train --out DIR [--steps N] [--seed S] [--config NAME]
  [sizing / optimisation flags]``: train a model and save a checkpoint.
  With no flags it reproduces the shipped default checkpoint's training.
* ``jaxlogits eval FILE... [--checkpoint DIR]``: bits per byte of each file
  and overall (the held-out scoring of :mod:`jaxlogits.train`).
* ``jaxlogits generate PROMPT [...]`` (:mod:`jaxlogits.generate_cli`): sample text.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = ["Command", "COMMANDS", "register_command", "build_parser", "main"]

PROG = "jaxlogits"


class Command(NamedTuple):
    """A registered subcommand.

    Attributes:
      help: one-line description.
      add_arguments: ``f(parser)`` adding the command's flags.
      run: ``f(args) -> int`` executing it (exit status).
    """

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def register_command(name: str, help: str,
                     add_arguments: Callable[[argparse.ArgumentParser], None],
                     run: Callable[[argparse.Namespace], int]) -> None:
    """Register (or replace) a subcommand.

    Args:
      name: the subcommand word.
      help: one-line description.
      add_arguments: adds the command's flags to its parser.
      run: runs the command, returns the exit status.
    """
    COMMANDS[name] = Command(help, add_arguments, run)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        """Print ``jaxlogits: error: message`` and exit 2.

        Args:
          message: the error.
        """
        self.exit(2, f"{PROG}: error: {message}\n")


def _int_at_least(lowest: int):
    """An argparse type accepting ints ``>= lowest``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be >= {lowest}, got {value}")
        return value

    parse.__doc__ = f"argparse type: an int >= {lowest}."
    return parse


#: argparse type: an int >= 1.
positive_int = _int_at_least(1)
#: argparse type: an int >= 0.
nonneg_int = _int_at_least(0)


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0.

    Args:
      text: the flag value.

    Returns:
      The float.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


# --------------------------------------------------------------------- train

_MODEL_FLAGS = ("d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                "mlp_dim", "max_seq_len")
_TRAIN_FLAGS = {"batch_size": positive_int, "seq_len": positive_int,
                "learning_rate": positive_float, "warmup_steps": nonneg_int,
                "weight_decay": float, "clip_norm": positive_float,
                "eval_every": nonneg_int, "eval_windows": nonneg_int,
                "log_every": positive_int}


def _add_train_args(p: argparse.ArgumentParser) -> None:
    """Flags of ``jaxlogits train``."""
    from jaxlogits.model import CONFIGS
    from jaxlogits.train import DEFAULT_TRAIN_CONFIG as D

    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory for model.safetensors, config.json, train_info.json")
    p.add_argument("--config", default="default", choices=sorted(CONFIGS),
                   help="named model size (default: %(default)s, the shipped model)")
    p.add_argument("--steps", type=positive_int, default=D.steps,
                   help="optimiser steps (default: %(default)s)")
    p.add_argument("--seed", type=nonneg_int, default=D.seed,
                   help="seed for init and data order (default: %(default)s)")
    g = p.add_argument_group("model size (override the named config)")
    for name in _MODEL_FLAGS:
        g.add_argument("--" + name.replace("_", "-"), type=positive_int, default=None)
    g.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="compute dtype")
    o = p.add_argument_group("optimisation")
    for name, typ in _TRAIN_FLAGS.items():
        if name == "seq_len":
            o.add_argument("--seq-len", type=typ, default=None,
                           help=f"tokens per training window (default: {D.seq_len}, "
                                "capped at the model's max_seq_len)")
            continue
        o.add_argument("--" + name.replace("_", "-"), type=typ,
                       default=getattr(D, name),
                       help=f"(default: {getattr(D, name)})")
    p.add_argument("--no-final-eval", action="store_true",
                   help="skip the final evaluation over all held-out files")


def _run_train(args: argparse.Namespace) -> int:
    """Run ``jaxlogits train``."""
    from jaxlogits.model import get_config
    from jaxlogits.train import DEFAULT_TRAIN_CONFIG, train

    mc = get_config(args.config)
    changes = {n: getattr(args, n) for n in _MODEL_FLAGS if getattr(args, n) is not None}
    if args.dtype is not None:
        changes["dtype"] = args.dtype
    mc = mc.replace(**changes) if changes else mc
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} exists and is not a directory")
    if args.seq_len is None:
        args.seq_len = min(DEFAULT_TRAIN_CONFIG.seq_len, mc.max_seq_len)
    tc = dataclasses.replace(DEFAULT_TRAIN_CONFIG, steps=args.steps, seed=args.seed,
                             **{n: getattr(args, n) for n in _TRAIN_FLAGS})
    if tc.seq_len > mc.max_seq_len:
        raise ValueError(f"--seq-len {tc.seq_len} exceeds the model's max_seq_len "
                         f"{mc.max_seq_len}")
    command = " ".join(shlex.quote(a) for a in [PROG] + list(args._argv))
    result = train(mc, tc, out_dir=args.out, final_eval=not args.no_final_eval,
                   command=command)
    if result.final_bpb is not None:
        print(f"held-out bits/byte: {result.final_bpb:.4f}")
    return 0


# ---------------------------------------------------------------------- eval

def _add_eval_args(p: argparse.ArgumentParser) -> None:
    """Flags of ``jaxlogits eval``."""
    p.add_argument("files", nargs="+", metavar="FILE", help="files to score")
    p.add_argument("--checkpoint", metavar="DIR", default=None,
                   help="checkpoint directory (default: the shipped model)")
    p.add_argument("--seq-len", type=positive_int, default=None,
                   help="window length (default: the training seq_len recorded in "
                        "train_info.json, else 256)")
    p.add_argument("--stride", type=positive_int, default=None,
                   help="window step (default: seq_len // 2)")
    p.add_argument("--batch-size", type=positive_int, default=32)


def _run_eval(args: argparse.Namespace) -> int:
    """Run ``jaxlogits eval``."""
    import json

    from jaxlogits.checkpoint import default_checkpoint_dir, load_checkpoint
    from jaxlogits.train import evaluate_bits_per_byte

    docs = []
    for f in args.files:
        try:
            docs.append(Path(f).read_bytes())
        except OSError as e:
            raise ValueError(f"cannot read {f}: {e.strerror or e}") from None
    ckpt = Path(args.checkpoint) if args.checkpoint else default_checkpoint_dir()
    model, config = load_checkpoint(ckpt)
    seq_len = args.seq_len
    if seq_len is None:
        seq_len = 256
        try:
            info = json.loads((ckpt / "train_info.json").read_text())
            seq_len = int(info["heldout_eval"]["seq_len"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if seq_len > config.max_seq_len:
        raise ValueError(f"--seq-len {seq_len} exceeds the model's max_seq_len "
                         f"{config.max_seq_len}")
    if args.stride is not None and args.stride > seq_len:
        raise ValueError(f"--stride {args.stride} exceeds --seq-len {seq_len}")
    overall, per = evaluate_bits_per_byte(model, docs, seq_len=seq_len, stride=args.stride,
                                          batch_size=args.batch_size, per_document=True)
    for f, d, v in zip(args.files, docs, per):
        print(f"{v:.4f} bits/byte  {len(d):>9} bytes  {f}")
    total = sum(len(d) for d in docs)
    print(f"{overall:.4f} bits/byte  {total:>9} bytes  overall")
    return 0


register_command("train", "train a model on the Python standard library sources",
                 _add_train_args, _run_train)
register_command("eval", "bits per byte of files under a checkpoint",
                 _add_eval_args, _run_eval)

# Commands defined in their own modules register themselves on import.
from jaxlogits import generate_cli  # noqa: E402,F401  (after register_command exists)
from jaxlogits import score_cli  # noqa: E402,F401
from jaxlogits import calibrate_cli  # noqa: E402,F401
from jaxlogits import bench  # noqa: E402,F401


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser from :data:`COMMANDS`.

    Returns:
      The top-level parser (one subparser per registered command).
    """
    parser = _Parser(prog=PROG, description="jaxlogits command-line tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, cmd in COMMANDS.items():
        sp = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(sp)
        sp.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxlogits`` command.

    Args:
      argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
      The exit status (also used by ``sys.exit`` when run as a script).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = argv
    try:
        return int(args._run(args) or 0)
    except ValueError as e:
        msg = " ".join(str(e).split())
        sys.stderr.write(f"{PROG}: error: {msg}\n")
        return 2
    except OSError as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
