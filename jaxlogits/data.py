"""Training corpus: the Python standard library's own ``.py`` sources.

Corpus rules
------------
* Root: ``sysconfig.get_paths()["stdlib"]`` (the running interpreter's).
* Files: every regular file ending in ``.py`` below the root, except those
  with a directory component named exactly ``test``, ``idlelib``,
  ``site-packages`` or ``lib2to3`` in their path relative to the root (those
  directories are skipped entirely; e.g. ``unittest/`` or ``tests/`` are
  kept).
* ``relative_path``: the path relative to the root with ``/`` separators.
* Held out: ``zlib.crc32(relative_path.encode()) % 20 == 0``; all other
  files are training files.
* Order: sorted by ``relative_path`` (deterministic).

Documents and batches
---------------------
Each file is one document, tokenised as ``[BOS] + bytes`` (byte-level
tokenizer, no EOS). The training stream is the concatenation of all training
documents in sorted order, so a BOS token marks every document start. A
training batch is ``batch_size`` random windows of ``seq_len + 1``
consecutive tokens from that stream (window starts drawn uniformly with
``numpy.random.Generator(PCG64(seed))``); inputs are ``window[:-1]`` and
targets ``window[1:]``. Windows may span a document boundary (the model then
sees BOS and must predict the next file's first bytes).
"""

from __future__ import annotations

import os
import sysconfig
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from jaxlogits.tokenizer import BOS_ID

__all__ = [
    "SKIP_DIRS",
    "HELDOUT_MODULUS",
    "stdlib_root",
    "is_skipped",
    "is_heldout",
    "list_corpus_files",
    "train_files",
    "heldout_files",
    "load_bytes",
    "document_tokens",
    "build_stream",
    "sample_batch",
    "batch_iterator",
]

SKIP_DIRS = frozenset({"test", "idlelib", "site-packages", "lib2to3"})
HELDOUT_MODULUS = 20


def stdlib_root() -> Path:
    """Return the standard library directory of the running interpreter.

    Returns:
      ``Path(sysconfig.get_paths()["stdlib"])``.
    """
    return Path(sysconfig.get_paths()["stdlib"])


def is_skipped(relative_path: str) -> bool:
    """Tell whether a relative path lies in a skipped directory.

    Args:
      relative_path: path relative to the stdlib root, ``/``-separated.

    Returns:
      True when one of its directory components (not the file name) is in
      :data:`SKIP_DIRS`.
    """
    parts = relative_path.split("/")[:-1]
    return any(p in SKIP_DIRS for p in parts)


def is_heldout(relative_path: str) -> bool:
    """Apply the held-out rule.

    Args:
      relative_path: path relative to the stdlib root, ``/``-separated.

    Returns:
      ``zlib.crc32(relative_path.encode()) % 20 == 0``.
    """
    return zlib.crc32(relative_path.encode()) % HELDOUT_MODULUS == 0


def list_corpus_files(root: str | os.PathLike | None = None) -> list[str]:
    """List all corpus files (training and held out).

    Args:
      root: the directory to scan (default :func:`stdlib_root`).

    Returns:
      Sorted ``/``-separated paths relative to ``root`` of the ``.py`` files
      outside skipped directories.
    """
    root = Path(root) if root is not None else stdlib_root()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for name in filenames:
            if not name.endswith(".py"):
                continue
            full = os.path.join(dirpath, name)
            if not os.path.isfile(full):
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if not is_skipped(rel):
                out.append(rel)
    return sorted(out)


def train_files(root: str | os.PathLike | None = None) -> list[str]:
    """List the training files.

    Args:
      root: corpus directory (default the stdlib).

    Returns:
      Sorted relative paths that are not held out.
    """
    return [p for p in list_corpus_files(root) if not is_heldout(p)]


def heldout_files(root: str | os.PathLike | None = None) -> list[str]:
    """List the held-out files.

    Args:
      root: corpus directory (default the stdlib).

    Returns:
      Sorted relative paths that are held out.
    """
    return [p for p in list_corpus_files(root) if is_heldout(p)]


def load_bytes(paths: Sequence[str], root: str | os.PathLike | None = None) -> list[bytes]:
    """Read files as bytes.

    Args:
      paths: paths relative to ``root`` (or absolute paths).
      root: corpus directory (default the stdlib).

    Returns:
      The contents, in the order of ``paths``.
    """
    root = Path(root) if root is not None else stdlib_root()
    return [(root / p).read_bytes() for p in paths]


def document_tokens(data: bytes) -> np.ndarray:
    """Tokenise one document as ``[BOS] + bytes``.

    Args:
      data: the file contents.

    Returns:
      int32 array of length ``len(data) + 1``.
    """
    out = np.empty(len(data) + 1, np.int32)
    out[0] = BOS_ID
    out[1:] = np.frombuffer(data, np.uint8)
    return out


def build_stream(docs: Sequence[bytes]) -> np.ndarray:
    """Concatenate documents into one token stream.

    Args:
      docs: document contents.

    Returns:
      int32 array ``[BOS] doc0 [BOS] doc1 ...``.
    """
    if not docs:
        return np.zeros((0,), np.int32)
    return np.concatenate([document_tokens(d) for d in docs])


def sample_batch(stream: np.ndarray, rng: np.random.Generator, batch_size: int,
                 seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one batch of random windows.

    Args:
      stream: token stream from :func:`build_stream` (longer than ``seq_len``).
      rng: numpy Generator (advanced by this call).
      batch_size: number of windows.
      seq_len: tokens per window.

    Returns:
      ``(inputs, targets)``, each int32 ``[batch_size, seq_len]``, with
      ``targets[:, t] == inputs[:, t + 1]`` within the stream.

    Raises:
      ValueError: the stream is too short.
    """
    if len(stream) < seq_len + 1:
        raise ValueError(f"token stream of {len(stream)} tokens is shorter than "
                         f"seq_len + 1 = {seq_len + 1}")
    starts = rng.integers(0, len(stream) - seq_len, size=batch_size)
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    windows = stream[idx]
    return windows[:, :-1], windows[:, 1:]


def batch_iterator(stream: np.ndarray, seed: int, batch_size: int,
                   seq_len: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield an endless, seed-determined sequence of batches.

    Args:
      stream: token stream.
      seed: seed of ``numpy.random.default_rng``.
      batch_size: windows per batch.
      seq_len: tokens per window.

    Yields:
      ``(inputs, targets)`` as from :func:`sample_batch`.
    """
    rng = np.random.default_rng(seed)
    while True:
        yield sample_batch(stream, rng, batch_size, seq_len)
