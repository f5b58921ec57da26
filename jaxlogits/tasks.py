"""Labelled multiple-choice tasks built from held-out Python source: "which keyword comes next?".

A question is a place in a held-out standard-library file (:func:`jaxlogits.data.heldout_files`,
never seen in training) where the code goes on with one of a fixed set of Python keywords
(:data:`KEYWORDS`) followed by a space. The prompt is the ``context_bytes`` bytes just before the
keyword (BOS prepended); the options are the true keyword and ``num_options - 1`` distractors
from the same set, each with its trailing space, in a random order; the label is the index of the
true one. A classifier such as :func:`jaxlogits.classify.classify` answers by comparing the
options' log-likelihoods after the prompt.

Construction (:func:`build_task`), all of it fixed by the seed and the source files:

1. Sites. :func:`find_sites` runs Python's own :mod:`tokenize` over each file and keeps every
   name token in the keyword set that is directly followed by a space byte: code only, never a
   word inside a string or a comment, and always a whole word (``in`` never matches ``int``).
   Sites closer than ``context_bytes`` bytes to the start of their file are dropped, so every
   prompt has exactly ``1 + context_bytes`` tokens.
2. Questions. ``numpy.random.default_rng(seed)`` draws ``num_questions`` distinct sites from all
   the sites of all the files (sorted by file, then offset), and per question, in that order,
   the distractors (uniformly, without replacement, from the keywords other than the answer)
   and a random permutation of the options.

Nothing in a prompt gives the answer away beyond what the code before it says: the prompt
stops at the byte before the keyword, every option ends with the same space, and the position
of the true option is uniform. The same keyword may of course occur earlier in the context.
The task depends on the running interpreter's standard library (another Python version has other
held-out files), and is the same on every run with that library.
"""

from __future__ import annotations

import functools
import io
import tokenize
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from jaxlogits import data as _data
from jaxlogits.tokenizer import BOS_ID

__all__ = [
    "DEFAULT_CONTEXT_BYTES",
    "KEYWORDS",
    "Question",
    "build_task",
    "find_sites",
    "max_context_bytes",
]

#: Keywords that are usually followed by a space, so that "keyword + space" is a natural unit.
KEYWORDS = ("and", "as", "assert", "class", "def", "del", "elif", "except", "for", "from", "if",
            "import", "in", "is", "lambda", "not", "or", "raise", "return", "while", "with",
            "yield")

#: Bytes of context before the keyword when the model's context allows it.
DEFAULT_CONTEXT_BYTES = 150


class Question(NamedTuple):
  """One multiple-choice question of :func:`build_task`."""

  file: str  # path of the source file, relative to the corpus root
  offset: int  # byte offset of the true keyword in the file
  context: bytes  # the bytes file[offset - context_bytes : offset]
  options: tuple[str, ...]  # the candidate completions, each a keyword plus one space
  label: int  # index of the true option

  @property
  def answer(self) -> str:
    """The true option (a keyword plus one space)."""
    return self.options[self.label]

  @property
  def prompt_ids(self) -> list[int]:
    """The prompt as token ids: BOS, then the context bytes."""
    return [BOS_ID] + list(self.context)

  @property
  def option_ids(self) -> list[list[int]]:
    """The options as token ids (their UTF-8 bytes, no BOS)."""
    return [list(o.encode("utf-8")) for o in self.options]


# --------------------------------------------------------------------------------------------
# sites


def _check_keywords(keywords: Sequence[str]) -> tuple[str, ...]:
  if isinstance(keywords, str):
    raise TypeError("keywords must be a sequence of words, not one string")
  words = tuple(keywords)
  for w in words:
    if not isinstance(w, str) or not w.isidentifier():
      raise ValueError(f"every keyword must be a Python identifier, got {w!r}")
  if len(set(words)) != len(words):
    dup = sorted({w for w in words if words.count(w) > 1})
    raise ValueError(f"keywords must be distinct, got {', '.join(map(repr, dup))} twice")
  return words


def find_sites(source: bytes, keywords: Sequence[str] = KEYWORDS) -> list[tuple[int, str]]:
  """Byte offsets of the keywords in Python source that are code and followed by a space.

  The source is split into tokens with :func:`tokenize.tokenize`; a site is a name token whose
  text is in ``keywords`` and whose next byte is a space. Words in strings and comments are not
  name tokens, and a name token is a whole word. A file that :mod:`tokenize` cannot read to the
  end gives the sites found before the error.

  Args:
    source: the file's bytes (any encoding :mod:`tokenize` detects; offsets count bytes).
    keywords: the words to look for, distinct Python identifiers.

  Returns:
    A list of ``(offset, keyword)``, in the order of the source.

  Examples:
    >>> src = b"import os  # if only\\nif x is None: return 'for me'\\nfor y in z:\\n  pass\\n"
    >>> find_sites(src)
    [(0, 'import'), (21, 'if'), (26, 'is'), (35, 'return'), (51, 'for'), (57, 'in')]
  """
  words = frozenset(_check_keywords(keywords))
  if not isinstance(source, (bytes, bytearray)):
    raise TypeError(f"source must be bytes, got {type(source).__name__}")
  source = bytes(source)
  try:
    encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
  except SyntaxError:
    return []
  if encoding == "utf-8-sig":
    encoding = "utf-8"
  lines = source.split(b"\n")
  starts = np.concatenate([[0], np.cumsum([len(line) + 1 for line in lines])]).tolist()
  sites = []
  try:
    for tok in tokenize.tokenize(io.BytesIO(source).readline):
      if tok.type != tokenize.NAME or tok.string not in words:
        continue
      row, col = tok.start
      if row > len(lines):
        continue
      line = lines[row - 1].decode(encoding, errors="surrogateescape")
      offset = starts[row - 1] + len(line[:col].encode(encoding, errors="surrogateescape"))
      word = tok.string.encode(encoding)
      if source.startswith(word + b" ", offset):  # also drops a mis-located token
        sites.append((offset, tok.string))
  except (SyntaxError, tokenize.TokenError, UnicodeError, LookupError):
    pass
  return sites


@functools.lru_cache(maxsize=4)
def _heldout_sites(root: str | None, keywords: tuple[str, ...]
                   ) -> tuple[tuple[str, ...], tuple[bytes, ...], tuple[tuple[tuple[int, str],
                                                                              ...], ...]]:
  files = tuple(_data.heldout_files(root))
  sources = tuple(_data.load_bytes(files, root))
  return files, sources, tuple(tuple(find_sites(s, keywords)) for s in sources)


# --------------------------------------------------------------------------------------------
# questions


def max_context_bytes(max_len: int, keywords: Sequence[str] = KEYWORDS) -> int:
  r"""The longest context that fits a model's context with BOS and the longest option.

  .. math::
    n_{\max} = \texttt{max\_len} - 1 - \max_k (|k| + 1)

  Args:
    max_len: the model's context in tokens (``max_seq_len``).
    keywords: the keyword set (options are a keyword plus a space).

  Returns:
    The number of context bytes (it may be below 1 when nothing fits).

  Examples:
    >>> max_context_bytes(256), max_context_bytes(128)
    (248, 120)
  """
  words = _check_keywords(keywords)
  if not words:
    raise ValueError("keywords is empty")
  return int(max_len) - 1 - max(len(w.encode("utf-8")) + 1 for w in words)


def _check_int(name: str, value, lo: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
    raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
  return int(value)


def build_task(num_questions: int = 200, *, seed: int = 0, max_len: int = 256,
               context_bytes: int | None = None, num_options: int = 4,
               keywords: Sequence[str] = KEYWORDS, sources: Mapping[str, bytes] | None = None,
               root: str | None = None) -> list[Question]:
  """Builds the "which keyword comes next" questions for a seed (see the module docstring).

  Every question's prompt (BOS plus ``context_bytes`` bytes) and longest option together take
  at most ``max_len`` tokens.

  Args:
    num_questions: number of questions, ``>= 1`` (at most the number of sites).
    seed: seed (``>= 0``) of the sites, the distractors and the option order.
    max_len: the model's context in tokens (``max_seq_len``).
    context_bytes: bytes of context before the keyword; ``None`` gives
      ``min(DEFAULT_CONTEXT_BYTES, max_context_bytes(max_len, keywords))``. A value that does
      not fit ``max_len`` raises ``ValueError``.
    num_options: options per question, ``2 <= num_options <= len(keywords)``.
    keywords: the keyword set, distinct Python identifiers.
    sources: ``{path: bytes}`` of the files to draw from; ``None`` (the default) takes the
      held-out files of the standard library under ``root``.
    root: corpus root for the default sources (default the running interpreter's stdlib).

  Returns:
    A list of ``num_questions`` :class:`Question`, in the order they were drawn.

  Examples:
    >>> src = (b"import os\\n\\ndef f(x):\\n  if x is None:\\n    return 1\\n"
    ...        b"  for y in x:\\n  yield y\\n")
    >>> qs = build_task(2, seed=0, context_bytes=12, sources={"m.py": src})
    >>> for q in qs:
    ...   print(q.offset, q.options, q.label, repr(q.answer))
    58 ('elif ', 'and ', 'in ', 'del ') 2 'in '
    52 ('for ', 'import ', 'return ', 'is ') 0 'for '
    >>> qs[0].context, len(qs[0].prompt_ids)
    (b'n 1\\n  for y ', 13)
  """
  n = _check_int("num_questions", num_questions, 1)
  seed = _check_int("seed", seed, 0)
  max_len = _check_int("max_len", max_len, 2)
  words = _check_keywords(keywords)
  k = _check_int("num_options", num_options, 2)
  if k > len(words):
    raise ValueError(f"num_options ({k}) exceeds the number of keywords ({len(words)})")
  fit = max_context_bytes(max_len, words)
  if context_bytes is None:
    ctx = min(DEFAULT_CONTEXT_BYTES, fit)
    if ctx < 1:
      raise ValueError(f"max_len {max_len} leaves no room for context: BOS and the longest "
                       f"option already take {max_len - fit} tokens")
  else:
    ctx = _check_int("context_bytes", context_bytes, 1)
    if ctx > fit:
      raise ValueError(f"context_bytes {ctx} does not fit the model's context of {max_len} "
                       f"tokens: BOS, {ctx} bytes and the longest option take "
                       f"{ctx + max_len - fit} (at most {fit} context bytes fit)")

  if sources is None:
    files, texts, file_sites = _heldout_sites(None if root is None else str(root), words)
  else:
    files = tuple(sorted(sources))
    texts = tuple(bytes(sources[f]) for f in files)
    file_sites = tuple(tuple(find_sites(t, words)) for t in texts)
  pool = [(i, off, w) for i, sites in enumerate(file_sites) for off, w in sites if off >= ctx]
  if len(pool) < n:
    raise ValueError(f"asked for {n} questions but the sources hold only {len(pool)} sites "
                     f"with {ctx} bytes of context before them")

  rng = np.random.default_rng(seed)
  chosen = rng.choice(len(pool), size=n, replace=False)
  questions = []
  for c in chosen:
    i, off, word = pool[int(c)]
    others = [w for w in words if w != word]
    picks = rng.choice(len(others), size=k - 1, replace=False)
    opts = [word] + [others[int(j)] for j in picks]
    perm = rng.permutation(k)
    options = tuple(opts[int(p)] + " " for p in perm)
    label = int(np.flatnonzero(perm == 0)[0])
    questions.append(Question(files[i], int(off), texts[i][off - ctx:off], options, label))
  return questions
