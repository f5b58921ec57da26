"""Tests for the byte-level tokenizer."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxlogits.tokenizer import (BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, ByteTokenizer,
                                 IncrementalDecoder, decode, encode)

SAMPLES = ["", "hello", "naïve café", "日本語のテキスト", "emoji 🐍🎉 mix",
           "\x00\n\t\r", "\U0010ffff", "a" * 1000]


def test_constants():
    assert (BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE) == (256, 257, 258, 259)


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_samples(text):
    ids = encode(text)
    assert ids[0] == BOS_ID
    assert ids[1:] == list(text.encode("utf-8"))
    assert decode(ids) == text
    assert decode(encode(text, bos=False, eos=True)) == text
    assert encode(text, bos=False, eos=True)[-1] == EOS_ID


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_hypothesis(text):
    assert decode(encode(text, bos=True, eos=True)) == text


def test_decode_skips_specials_and_never_raises():
    ids = [BOS_ID, 104, PAD_ID, 105, EOS_ID, 9999, -1]
    assert decode(ids) == "hi"
    # truncated and invalid UTF-8 become U+FFFD instead of raising
    assert decode([0xE6, 0x97]) == "\ufffd"
    assert decode([0xFF, 65]) == "\ufffdA"
    assert decode(np.array([72, 105])) == "Hi"


@settings(max_examples=100, deadline=None)
@given(st.text(), st.data())
def test_incremental_decoder_matches_decode(text, data):
    ids = encode(text, bos=True, eos=True)
    dec = IncrementalDecoder()
    out, i = [], 0
    while i < len(ids):
        n = data.draw(st.integers(1, 4))
        out.append(dec.feed(ids[i:i + n]))
        i += n
    out.append(dec.flush())
    assert "".join(out) == text


def test_incremental_decoder_holds_partial_sequences():
    dec = IncrementalDecoder()
    snake = "🐍".encode("utf-8")
    assert dec.feed(snake[0]) == ""
    assert dec.pending
    assert dec.feed([snake[1], BOS_ID]) == ""  # special ids do not break the sequence
    assert dec.feed(np.int64(snake[2])) == ""
    assert dec.feed(snake[3]) == "🐍"
    assert not dec.pending
    assert dec.feed([0xE6]) == ""
    assert dec.flush() == "\ufffd"
    assert dec.feed([0xFF]) == "\ufffd"


def test_byte_tokenizer_wrapper():
    tok = ByteTokenizer()
    assert tok.vocab_size == VOCAB_SIZE
    assert tok.decode(tok.encode("x = 1\n")) == "x = 1\n"
    assert isinstance(tok.incremental_decoder(), IncrementalDecoder)
