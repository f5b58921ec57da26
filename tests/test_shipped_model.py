"""The checkpoint shipped inside the package: it loads and models held-out Python well."""

import json

import numpy as np

from jaxlogits import data
from jaxlogits.checkpoint import default_checkpoint_dir, load_checkpoint
from jaxlogits.train import evaluate_bits_per_byte


def test_shipped_checkpoint_loads_and_records_how_it_was_trained():
  model, config = load_checkpoint()
  assert config.vocab_size == 259
  info = json.loads((default_checkpoint_dir() / "train_info.json").read_text())
  assert "jaxlogits train" in info["command"]
  assert info["heldout_bits_per_byte"] <= 2.0


def test_heldout_bits_per_byte_stays_under_two():
  model, _ = load_checkpoint()
  files = data.heldout_files()
  assert files, "no held-out files found in this Python's standard library"
  # A deterministic slice of the held-out split keeps this test to seconds; the full figure is
  # recorded in train_info.json by the training run and quoted in the README.
  docs = [doc[:6000] for doc in data.load_bytes(files[::4])]
  bpb = evaluate_bits_per_byte(model, docs, seq_len=256)
  assert np.isfinite(bpb) and bpb <= 2.0, bpb
