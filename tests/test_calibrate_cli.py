"""The `jaxlogits calibrate` command (jaxlogits/calibrate_cli.py)."""

import json
import math

import pytest

from jaxlogits import cli, data
from jaxlogits.checkpoint import save_checkpoint
from jaxlogits.model import create_model, get_config
from tests.cli_checks import assert_one_line_error

FIGURES = ["accuracy", "confidence", "ece_width", "ece_mass", "mce", "brier", "nll"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  path = tmp_path_factory.mktemp("ckpt")
  save_checkpoint(path, create_model(get_config("tiny")))
  return str(path)


def base(ckpt, *flags):
  return ["calibrate", "--checkpoint", ckpt, "--num-questions", "16", "--batch-size", "8",
          *flags]


def run_json(capsys, argv):
  assert cli.main(argv + ["--json"]) == 0
  out = capsys.readouterr().out
  assert out.count("\n") == 1
  return json.loads(out)


def test_json_is_reproducible_and_in_range(ckpt, capsys):
  argv = base(ckpt, "--no-plot", "--seed", "5")
  first = run_json(capsys, argv)
  assert run_json(capsys, argv) == first
  assert first["task"] == "next-keyword" and first["seed"] == 5 and first["plots"] == []
  assert first["num_questions"] == 16 and first["num_options"] == 4
  assert first["context_bytes"] == 120  # the tiny model's max_seq_len is 128
  assert first["num_calibration"] == 8 and first["num_evaluation"] == 8
  assert first["normalisation"] == "sum"
  assert 0 < first["temperature"] < math.inf
  for half in ("before", "after"):
    r = first[half]
    assert set(r) == set(FIGURES)
    for name in ("accuracy", "confidence", "ece_width", "ece_mass", "mce"):
      assert 0 <= r[name] <= 1
    assert 0.25 - 1e-6 <= r["confidence"]
    assert 0 <= r["brier"] <= 2 and 0 <= r["nll"] < math.inf
  assert first["after"]["accuracy"] == first["before"]["accuracy"]
  heldout = set(data.heldout_files())
  qs = first["questions"]
  assert len(qs) == 16
  assert sorted(q["split"] for q in qs) == ["calibration"] * 8 + ["evaluation"] * 8
  for q in qs:
    assert q["file"] in heldout
    assert len(set(q["options"])) == 4 and 0 <= q["label"] < 4
    assert math.isclose(sum(q["probs"]), 1.0, abs_tol=1e-6)
    assert all(0 <= p <= 1 for p in q["probs"])
    assert q["probs"][q["prediction"]] == max(q["probs"])
  ev = [q for q in qs if q["split"] == "evaluation"]
  acc = sum(q["prediction"] == q["label"] for q in ev) / len(ev)
  assert math.isclose(first["before"]["accuracy"], acc, abs_tol=1e-6)
  other = run_json(capsys, base(ckpt, "--no-plot", "--seed", "6"))
  assert [q["offset"] for q in other["questions"]] != [q["offset"] for q in qs]


def test_table_prints_every_figure_and_writes_the_diagrams(ckpt, capsys, tmp_path):
  plot = tmp_path / "rel.png"
  assert cli.main(base(ckpt, "--plot", str(plot), "--normalisation", "mean")) == 0
  out = capsys.readouterr().out
  for text in ["task: which keyword comes next: 16 questions", "normalisation: mean",
               "8 calibration, 8 evaluation", "temperature fitted on the calibration half",
               "accuracy", "mean confidence", "ECE, equal-width bins", "ECE, equal-mass bins",
               "MCE, equal-width bins", "Brier score", "NLL", "reliability diagrams"]:
    assert text in out, text
  rows = {line[:27].strip(): line[27:].split() for line in out.splitlines()
          if line.startswith(("accuracy", "mean conf", "ECE", "MCE", "Brier", "NLL"))}
  assert len(rows) == 7 and all(len(v) == 2 for v in rows.values())
  for path in (plot, tmp_path / "rel_scaled.png"):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibrated_normalisation(ckpt, capsys):
  obj = run_json(capsys, base(ckpt, "--no-plot", "--normalisation", "calibrated",
                              "--num-questions", "8", "--split-seed", "3"))
  assert obj["normalisation"] == "calibrated" and obj["content_free_prompt"] == ""
  assert obj["num_calibration"] == 4 and obj["num_evaluation"] == 4
  assert all(math.isclose(sum(q["probs"]), 1.0, abs_tol=1e-6) for q in obj["questions"])


@pytest.mark.parametrize("flags,message", [
    (["--num-questions", "0"], "must be >= 1"),
    (["--num-questions", "1"], "--num-questions must be >= 2"),
    (["--num-questions", "x"], "invalid int value"),
    (["--normalisation", "max"], "invalid choice"),
    (["--context-bytes", "121"], "--context-bytes 121 does not fit"),
    (["--plot", "a.png", "--no-plot"], "not allowed with argument"),
    (["--plot", "/nonexistent/dir/a.png"], "does not exist"),
    (["--seed", "-1"], "must be >= 0"),
    (["--bogus"], "unrecognized arguments"),
    (["--num-questions", "100000"], "hold only"),
])
def test_bad_flags_give_one_line_and_status_2(ckpt, capsys, flags, message):
  assert_one_line_error(capsys, ["calibrate", "--checkpoint", ckpt] + flags, message)


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
  status = cli.main(["calibrate", "--checkpoint", str(tmp_path / "none"), "--no-plot"])
  assert status == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "no checkpoint at" in err
