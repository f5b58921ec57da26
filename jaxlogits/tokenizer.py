"""Byte-level tokenizer for the built-in language model.

Token ids ``0..255`` are the raw UTF-8 bytes of the text. Three special ids
follow:

* ``BOS_ID = 256``: beginning of a document (prepended by :func:`encode`
  unless ``bos=False``),
* ``EOS_ID = 257``: end of a document (appended only when ``eos=True``),
* ``PAD_ID = 258``: padding, never produced from text.

``VOCAB_SIZE = 259``. Any text round-trips exactly:
``decode(encode(text)) == text`` for every ``str`` that can be encoded as
UTF-8 (i.e. contains no lone surrogates). :func:`decode` skips special ids and
replaces invalid byte sequences with U+FFFD instead of raising.

For streaming, :class:`IncrementalDecoder` turns ids into text one piece at a
time, holding back the bytes of an incomplete UTF-8 sequence until the rest
arrives, so that a multi-byte character is never split or replaced early.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable

import numpy as np

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "VOCAB_SIZE",
    "NUM_BYTE_IDS",
    "encode",
    "decode",
    "is_special",
    "IncrementalDecoder",
    "ByteTokenizer",
]

NUM_BYTE_IDS = 256
BOS_ID = 256
EOS_ID = 257
PAD_ID = 258
VOCAB_SIZE = 259


def encode(text: str, *, bos: bool = True, eos: bool = False) -> list[int]:
    """Encode text as a list of token ids.

    Args:
      text: the text to encode (encoded as UTF-8).
      bos: prepend ``BOS_ID`` when true (the default).
      eos: append ``EOS_ID`` when true.

    Returns:
      A list of ints: optional ``BOS_ID``, then one id per UTF-8 byte, then
      optional ``EOS_ID``.

    Raises:
      TypeError: if ``text`` is not a ``str``.
      UnicodeEncodeError: if ``text`` contains lone surrogates.
    """
    if not isinstance(text, str):
        raise TypeError(f"encode expects str, got {type(text).__name__}")
    ids = list(text.encode("utf-8"))
    if bos:
        ids.insert(0, BOS_ID)
    if eos:
        ids.append(EOS_ID)
    return ids


def encode_bytes(data: bytes, *, bos: bool = True, eos: bool = False) -> list[int]:
    """Encode raw bytes (already UTF-8 or arbitrary) as token ids.

    Args:
      data: the bytes.
      bos: prepend ``BOS_ID`` when true.
      eos: append ``EOS_ID`` when true.

    Returns:
      The list of ids.
    """
    ids = list(bytes(data))
    if bos:
        ids.insert(0, BOS_ID)
    if eos:
        ids.append(EOS_ID)
    return ids


def is_special(token_id: int) -> bool:
    """Tell whether an id is a special (non-byte) token.

    Args:
      token_id: a token id.

    Returns:
      True for ids outside ``0..255``.
    """
    return not 0 <= int(token_id) < NUM_BYTE_IDS


def _to_bytes(ids: Iterable[int]) -> bytes:
    """Keep only the byte ids of ``ids`` and pack them into ``bytes``."""
    return bytes(i for i in (int(t) for t in ids) if 0 <= i < NUM_BYTE_IDS)


def decode(ids: Iterable[int]) -> str:
    """Decode token ids to text.

    Special ids (BOS, EOS, PAD and anything outside ``0..255``) are skipped.
    Invalid or truncated UTF-8 sequences become U+FFFD; this never raises.

    Args:
      ids: an iterable of ints (a list, a numpy array, ...).

    Returns:
      The decoded string.
    """
    return _to_bytes(ids).decode("utf-8", errors="replace")


class IncrementalDecoder:
    """Streaming decoder: feed ids as they are produced, get text out.

    Bytes that start a multi-byte UTF-8 character are held back until the
    character is complete. Invalid bytes become U+FFFD as soon as they are
    known to be invalid. Special ids are skipped and do not break a pending
    sequence.

    Example::

        dec = IncrementalDecoder()
        out = "".join(dec.feed([t]) for t in ids) + dec.flush()
        assert out == decode(ids)
    """

    def __init__(self) -> None:
        """Create an empty decoder."""
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, ids: Iterable[int] | int) -> str:
        """Add ids and return the text that became complete.

        Args:
          ids: one id or an iterable of ids.

        Returns:
          The newly completed text (possibly empty).
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1).tolist()
        return self._dec.decode(_to_bytes(ids), final=False)

    def flush(self) -> str:
        """Finish the stream.

        Returns:
          U+FFFD for a still incomplete trailing sequence, else "". The
          decoder is reset and can be reused.
        """
        out = self._dec.decode(b"", final=True)
        self._dec.reset()
        return out

    def reset(self) -> None:
        """Drop any pending bytes."""
        self._dec.reset()

    @property
    def pending(self) -> bool:
        """Whether bytes of an incomplete character are being held."""
        buf, _ = self._dec.getstate()
        return len(buf) > 0


class ByteTokenizer:
    """Object wrapper around the module-level byte tokenizer functions.

    Attributes:
      bos_id, eos_id, pad_id, vocab_size: the module constants.
    """

    bos_id = BOS_ID
    eos_id = EOS_ID
    pad_id = PAD_ID
    vocab_size = VOCAB_SIZE

    def encode(self, text: str, *, bos: bool = True, eos: bool = False) -> list[int]:
        """Encode text; see :func:`encode`.

        Args:
          text: the text.
          bos: prepend BOS.
          eos: append EOS.

        Returns:
          The list of ids.
        """
        return encode(text, bos=bos, eos=eos)

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids; see :func:`decode`.

        Args:
          ids: the ids.

        Returns:
          The text.
        """
        return decode(ids)

    def incremental_decoder(self) -> IncrementalDecoder:
        """Make a new streaming decoder.

        Returns:
          A fresh :class:`IncrementalDecoder`.
        """
        return IncrementalDecoder()
