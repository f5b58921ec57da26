"""Save and load model checkpoints (safetensors + JSON, no pickle).

A checkpoint is a directory holding

* ``model.safetensors``: every parameter as a float32 tensor named by its
  dotted path in the module tree, e.g. ``embed.embedding``,
  ``layers.0.attn.wq.kernel``, ``layers.0.mlp_norm.scale``,
  ``final_norm.scale``;
* ``config.json``: ``{"model": ModelConfig.to_dict(), "format": 1}``.

:func:`load_checkpoint` builds the model from the config and insists that
the tensor names and shapes match it exactly; any difference is a
``ValueError`` naming the tensor and the expected/actual shape.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from jaxlogits.model import ModelConfig, Transformer

__all__ = [
    "WEIGHTS_FILE",
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "default_checkpoint_dir",
    "param_dict",
    "save_checkpoint",
    "load_config",
    "load_checkpoint",
]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1


def default_checkpoint_dir() -> Path:
    """Return the directory of the checkpoint shipped with the package.

    Returns:
      ``<package>/checkpoints/default``.

    Examples:
      >>> default_checkpoint_dir().name
      'default'
    """
    return Path(__file__).resolve().parent / "checkpoints" / "default"


def _path_name(path) -> str:
    """Join an NNX state path into a dotted tensor name."""
    return ".".join(str(getattr(k, "key", k)) for k in path)


def param_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """Flatten a model's parameters into named numpy arrays.

    Args:
      model: an NNX module.

    Returns:
      ``{dotted_name: float32 numpy array}``.
    """
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {_path_name(path): np.asarray(jax.device_get(var.get_value()), np.float32)
            for path, var in flat}


def save_checkpoint(directory: str | os.PathLike, model: Transformer,
                    config: ModelConfig | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into a directory.

    Args:
      directory: target directory (created if needed; files overwritten).
      model: the model to save.
      config: its config (default ``model.config``); must equal it.

    Returns:
      The directory as a ``Path``.

    Raises:
      ValueError: ``config`` differs from ``model.config``.

    Examples:
      >>> import tempfile
      >>> from jaxlogits.model import create_model, get_config
      >>> with tempfile.TemporaryDirectory() as d:
      ...     _ = save_checkpoint(d, create_model(get_config("tiny")))
      ...     model, config = load_checkpoint(d)
      >>> config.d_model
      32
    """
    config = model.config if config is None else config
    if config != model.config:
        raise ValueError("config does not match model.config")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in param_dict(model).items()}
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": str(FORMAT_VERSION)})
    os.replace(tmp, directory / WEIGHTS_FILE)
    with open(directory / CONFIG_FILE, "w", encoding="utf-8") as f:
        json.dump({"format": FORMAT_VERSION, "model": config.to_dict()}, f, indent=2,
                  sort_keys=True)
        f.write("\n")
    return directory


def load_config(directory: str | os.PathLike) -> ModelConfig:
    """Read a checkpoint's ``config.json``.

    Args:
      directory: checkpoint directory.

    Returns:
      The :class:`ModelConfig`.

    Raises:
      ValueError: missing or malformed file.
    """
    path = Path(directory) / CONFIG_FILE
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"checkpoint config not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"malformed checkpoint config {path}: {e}") from None
    if not isinstance(raw, dict) or "model" not in raw:
        raise ValueError(f"malformed checkpoint config {path}: no 'model' entry")
    try:
        return ModelConfig.from_dict(raw["model"])
    except TypeError as e:
        raise ValueError(f"malformed checkpoint config {path}: {e}") from None


def load_checkpoint(directory: str | os.PathLike | None = None) -> tuple[Transformer, ModelConfig]:
    """Load a model saved by :func:`save_checkpoint`.

    Args:
      directory: checkpoint directory (default :func:`default_checkpoint_dir`).

    Returns:
      ``(model, config)``.

    Raises:
      ValueError: missing files, or tensors whose names, shapes or dtypes do
        not match the config; the message names the tensor and the
        expected/actual shape.

    Examples:
      >>> import tempfile
      >>> from jaxlogits.model import create_model, get_config
      >>> with tempfile.TemporaryDirectory() as d:
      ...     _ = save_checkpoint(d, create_model(get_config("tiny")))
      ...     sorted(p.name for p in __import__("pathlib").Path(d).iterdir())
      ['config.json', 'model.safetensors']
    """
    directory = Path(directory) if directory is not None else default_checkpoint_dir()
    config = load_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ValueError(f"checkpoint weights not found: {weights}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"cannot read {weights}: {e}") from None

    model = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    expected = {_path_name(path): tuple(var.get_value().shape) for path, var in flat}

    missing = sorted(set(expected) - set(tensors))
    if missing:
        name = missing[0]
        raise ValueError(
            f"checkpoint {weights} is missing tensor {name!r} (expected shape "
            f"{expected[name]})" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        name = unexpected[0]
        raise ValueError(
            f"checkpoint {weights} has unexpected tensor {name!r} (shape "
            f"{tuple(tensors[name].shape)}) not in the model config"
            + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""))
    for name, shape in expected.items():
        actual = tuple(tensors[name].shape)
        if actual != shape:
            raise ValueError(f"tensor {name!r} in {weights} has shape {actual}, "
                             f"expected {shape} from the config")
        if not np.issubdtype(tensors[name].dtype, np.floating):
            raise ValueError(f"tensor {name!r} in {weights} has dtype "
                             f"{tensors[name].dtype}, expected a float dtype")

    new_flat = [(path, var.replace(jnp.asarray(tensors[_path_name(path)], jnp.float32)))
                for path, var in flat]
    params = nnx.from_flat_state(new_flat)
    model = nnx.merge(graphdef, state)
    nnx.update(model, params)
    return model, config
