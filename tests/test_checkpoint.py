"""Tests for safetensors checkpoints."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from jaxlogits.checkpoint import (default_checkpoint_dir, load_checkpoint, param_dict,
                                  save_checkpoint)
from jaxlogits.model import CONFIGS, create_model

CFG = CONFIGS["tiny"]


@pytest.fixture()
def saved(tmp_path):
    model = create_model(CFG, seed=3)
    save_checkpoint(tmp_path, model, CFG)
    return tmp_path, model


def test_round_trip_identical_logits(saved):
    path, model = saved
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    loaded, cfg = load_checkpoint(path)
    assert cfg == CFG
    toks = jnp.asarray(np.random.default_rng(0).integers(0, 259, (2, 9)), jnp.int32)
    fwd = nnx.jit(lambda m, t: m.forward(t))
    np.testing.assert_array_equal(np.asarray(fwd(model, toks)), np.asarray(fwd(loaded, toks)))
    names = set(load_file(str(path / "model.safetensors")))
    assert names == set(param_dict(model))
    assert "embed.embedding" in names and "layers.1.attn.wq.kernel" in names


def test_no_pickle(saved):
    path, _ = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    json.loads((path / "config.json").read_text())


def test_shape_mismatch_is_rejected(saved):
    path, _ = saved
    f = str(path / "model.safetensors")
    tensors = load_file(f)
    tensors["layers.0.mlp.up.kernel"] = np.zeros((CFG.d_model, CFG.mlp_dim + 1), np.float32)
    save_file(tensors, f)
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "layers.0.mlp.up.kernel" in msg
    assert str((CFG.d_model, CFG.mlp_dim + 1)) in msg and str((CFG.d_model, CFG.mlp_dim)) in msg


def test_missing_and_unexpected_tensors_are_rejected(saved):
    path, _ = saved
    f = str(path / "model.safetensors")
    tensors = load_file(f)
    del tensors["final_norm.scale"]
    save_file(tensors, f)
    with pytest.raises(ValueError, match="missing tensor 'final_norm.scale'"):
        load_checkpoint(path)
    tensors["final_norm.scale"] = np.ones(CFG.d_model, np.float32)
    tensors["extra.weight"] = np.ones(3, np.float32)
    save_file(tensors, f)
    with pytest.raises(ValueError, match="unexpected tensor 'extra.weight'"):
        load_checkpoint(path)


def test_config_mismatch_is_rejected(saved):
    path, _ = saved
    raw = json.loads((path / "config.json").read_text())
    raw["model"]["num_layers"] = 3
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="missing tensor 'layers.2"):
        load_checkpoint(path)


def test_missing_files(tmp_path):
    with pytest.raises(ValueError, match="config"):
        load_checkpoint(tmp_path)


def test_default_dir_location():
    d = default_checkpoint_dir()
    assert d.parts[-3:] == ("jaxlogits", "checkpoints", "default")
