"""The `jaxlogits generate` command (jaxlogits/generate_cli.py)."""

import json

import pytest

from jaxlogits import cli
from jaxlogits.checkpoint import save_checkpoint
from jaxlogits.model import create_model, get_config
from tests.cli_checks import run_cli


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  path = tmp_path_factory.mktemp("ckpt")
  save_checkpoint(path, create_model(get_config("tiny")))
  return str(path)


def test_json_samples_are_reproducible_for_a_seed(ckpt, capsys):
  argv = ["generate", "def f(", "--checkpoint", ckpt, "--max-new-tokens", "6", "--json",
          "--num-samples", "2", "--logprobs", "3", "--seed", "4"]
  assert cli.main(argv) == 0
  first = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert cli.main(argv) == 0
  second = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert first == second and len(first) == 2
  for obj in first:
    assert set(obj) >= {"text", "tokens", "logprobs", "processed_logprobs", "finish_reason",
                        "surviving_mass", "prompt_logprobs",
                        "top_logprobs"}
    assert len(obj["tokens"]) == len(obj["logprobs"]) == len(obj["top_logprobs"])
    assert all(len(alts) == 3 for alts in obj["top_logprobs"])
  assert first[0]["tokens"] != first[1]["tokens"]


def test_streamed_text_equals_json_text(ckpt, capsys):
  base = ["generate", "import", "--checkpoint", ckpt, "--max-new-tokens", "8", "--seed", "1"]
  assert cli.main(base + ["--json"]) == 0
  obj = json.loads(capsys.readouterr().out)
  assert cli.main(base) == 0
  streamed = capsys.readouterr().out
  assert streamed == "import" + obj["text"] + "\n"


@pytest.mark.parametrize("flags,message", [
    (["--top-p", "0"], "top_p must be in"),
    (["--temperature", "-1"], "temperature must be in"),
    (["--max-new-tokens", "0"], "must be >= 1"),
    (["--max-new-tokens", "100000"], "exceeds the model's context"),
    (["--top-k", "x"], "invalid int value"),
    (["--bogus"], "unrecognized arguments"),
    (["--seed", "99999999999999999999999"], "must fit in 64 bits"),
])
def test_bad_flags_give_one_line_and_status_2(ckpt, capsys, flags, message):
  status, _, err = run_cli(capsys, ["generate", "x", "--checkpoint", ckpt] + flags)
  assert status == 2
  assert err.count("\n") == 1 and message in err and "Traceback" not in err
