"""The `jaxlogits score` command (jaxlogits/score_cli.py)."""

import json
import math

import numpy as np
import pytest

from jaxlogits import classify as cl
from jaxlogits import cli, tokenizer
from jaxlogits.checkpoint import load_checkpoint, save_checkpoint
from jaxlogits.model import create_model, get_config
from tests.cli_checks import assert_one_line_error


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  path = tmp_path_factory.mktemp("ckpt")
  save_checkpoint(path, create_model(get_config("tiny")))
  return str(path)


BASE = ["score", "--prompt", "x = 1 +", "--candidate", " 1", "--candidate", " 22",
        "--candidate", " 'a'\n"]


def run_json(capsys, argv):
  assert cli.main(argv + ["--json"]) == 0
  out = capsys.readouterr().out
  assert out.count("\n") == 1
  return json.loads(out)


@pytest.mark.parametrize("norm", ["sum", "mean", "calibrated"])
def test_json_fields_and_probabilities_sum_to_one(ckpt, capsys, norm):
  obj = run_json(capsys, BASE + ["--checkpoint", ckpt, "--normalisation", norm])
  assert obj["prompt"] == "x = 1 +" and obj["normalisation"] == norm
  rows = obj["candidates"]
  assert [r["candidate"] for r in rows] == [" 1", " 22", " 'a'\n"]
  assert [r["num_bytes"] for r in rows] == [2, 3, 5]
  for r in rows:
    assert set(r) >= {"index", "candidate", "num_bytes", "logprob", "mean_logprob", "prob",
                      "class_logprob"}
    assert math.isclose(r["mean_logprob"], r["logprob"] / r["num_bytes"], rel_tol=1e-5)
    assert math.isclose(math.exp(r["class_logprob"]), r["prob"], rel_tol=1e-4, abs_tol=1e-9)
    assert ("content_free_logprob" in r) == (norm == "calibrated")
  assert math.isclose(sum(r["prob"] for r in rows), 1.0, abs_tol=1e-5)
  assert obj["prediction"] == int(np.argmax([r["prob"] for r in rows]))
  if norm == "calibrated":
    assert obj["content_free_prompt"] == "N/A"


def test_json_matches_the_library(ckpt, capsys):
  obj = run_json(capsys, BASE + ["--checkpoint", ckpt, "--normalisation", "calibrated",
                                 "--content-free-prompt", ""])
  model, _ = load_checkpoint(ckpt)
  cands = [tokenizer.encode(c, bos=False) for c in [" 1", " 22", " 'a'\n"]]
  ref = cl.classify(*cl.for_model(model), tokenizer.encode("x = 1 +"), cands,
                    normalisation="calibrated", content_free_prompt=[tokenizer.BOS_ID])
  np.testing.assert_allclose([r["logprob"] for r in obj["candidates"]], ref.total, rtol=1e-6)
  np.testing.assert_allclose([r["content_free_logprob"] for r in obj["candidates"]],
                             ref.content_free_total, rtol=1e-6)
  np.testing.assert_allclose([r["prob"] for r in obj["candidates"]], ref.probs, rtol=1e-5)
  assert ref.probs.shape == (3,) and ref.prediction.shape == ()
  assert obj["prediction"] == int(ref.prediction)


def test_table_output_and_reproducible(ckpt, capsys):
  argv = BASE + ["--checkpoint", ckpt]
  assert cli.main(argv) == 0
  first = capsys.readouterr().out
  assert cli.main(argv) == 0
  assert capsys.readouterr().out == first
  lines = first.splitlines()
  assert lines[0] == "normalisation: sum"
  assert lines[1].split() == ["#", "candidate", "bytes", "logprob", "per-byte", "prob"]
  assert len(lines) == 5 and sum(line.endswith(" *") for line in lines) == 1
  assert '" \'a\'\\n"' in lines[4]  # candidates are shown quoted, newlines escaped
  probs = [float(line.rstrip(" *").split()[-1]) for line in lines[2:]]
  assert math.isclose(sum(probs), 1.0, abs_tol=2e-4)
  for line in lines[2:]:
    fields = line.rstrip(" *").split()
    assert math.isclose(float(fields[-2]), float(fields[-3]) / int(fields[-4]), abs_tol=1e-4)
  assert cli.main(argv + ["--normalisation", "calibrated"]) == 0
  cal = capsys.readouterr().out.splitlines()
  assert "content-free" in cal[1] and '"N/A"' in cal[0]


@pytest.mark.parametrize("flags,message", [
    (["--candidate", " a"], "at least 2 candidates"),
    (["--candidate", " a", "--candidate", ""], "candidate 1 is empty"),
    (["--candidate", " a", "--candidate", " b", "--normalisation", "max"], "invalid choice"),
    (["--candidate", " a", "--candidate", " b", "--bogus"], "unrecognized arguments"),
    (["--candidate", " a", "--candidate", "b" * 200], "exceeds the model's context"),
    (["--candidate", " a", "--candidate", " b", "--normalisation", "calibrated",
      "--content-free-prompt", "c" * 126], "--content-free-prompt (127 tokens"),
    ([], "--candidate"),
])
def test_bad_flags_give_one_line_and_status_2(ckpt, capsys, flags, message):
  assert_one_line_error(capsys, ["score", "--prompt", "p", "--checkpoint", ckpt] + flags,
                        message)


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
  status = cli.main(["score", "--prompt", "p", "--candidate", "a", "--candidate", "b",
                     "--checkpoint", str(tmp_path / "none")])
  assert status == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "no checkpoint at" in err
