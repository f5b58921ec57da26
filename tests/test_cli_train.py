"""Tests for the ``train`` and ``eval`` command-line commands."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxlogits import cli
from jaxlogits.checkpoint import save_checkpoint
from jaxlogits.model import CONFIGS, create_model


@pytest.mark.parametrize("argv", [
    ["train"],                                   # --out missing
    ["train", "--out", "x", "--steps", "0"],
    ["train", "--out", "x", "--steps", "abc"],
    ["train", "--out", "x", "--bogus"],
    ["train", "--out", "x", "--config", "huge"],
    ["eval"],
    ["nope"],
    [],
])
def test_bad_flags_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("jaxlogits: error: ")


def test_value_errors_are_one_line(tmp_path, capsys):
    code = cli.main(["train", "--out", str(tmp_path), "--config", "tiny", "--seq-len", "4096"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxlogits: error: ") and len(err.strip().splitlines()) == 1
    code = cli.main(["eval", str(tmp_path / "missing.py"), "--checkpoint", str(tmp_path)])
    assert code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_eval_prints_per_file_and_overall(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, create_model(CONFIGS["tiny"], seed=0))
    f1, f2 = tmp_path / "a.py", tmp_path / "b.py"
    f1.write_text("print('hello')\n")
    f2.write_text("x = [i * i for i in range(10)]\n" * 3)
    code = cli.main(["eval", str(f1), str(f2), "--checkpoint", str(ckpt), "--seq-len", "32"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[-1].endswith("overall")
    assert float(lines[0].split()[0]) > 0


def test_python_m_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "jaxlogits", "--help"], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0 and "train" in out.stdout and "eval" in out.stdout


def test_train_command_tiny(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--out", str(out), "--config", "tiny", "--steps", "3",
                     "--batch-size", "2", "--seq-len", "16", "--eval-every", "0",
                     "--no-final-eval", "--seed", "5"])
    assert code == 0
    info = json.loads((out / "train_info.json").read_text())
    assert info["seed"] == 5 and info["command"].startswith("jaxlogits train --out")
    assert info["model_config"]["d_model"] == CONFIGS["tiny"].d_model
    assert (out / "model.safetensors").is_file()


def test_out_must_be_a_directory(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert cli.main(["train", "--out", str(f), "--config", "tiny"]) == 2
    assert "not a directory" in capsys.readouterr().err
