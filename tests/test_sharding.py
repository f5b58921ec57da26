"""Scale-out: vmap, pmap, batch sharding, vocab-sharded sampling, sharded decode, two processes.

The device count is fixed when JAX starts, so the multi-device checks run in subprocesses with
8 simulated CPU devices (``tests/_sharded_checks.py``) and this process keeps its one device.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlogits as jl
from jaxlogits import sharding as sh

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "_sharded_checks.py")
CHECKS = ["vocab_transforms", "top_p_knife_edges", "vocab_draw", "vocab_sample_step", "vocab_w2_shape",
          "batch_sharded_jit", "batch_shard_map", "pmap_and_vmap", "decode_data_parallel",
          "decode_vocab_sharded"]


def _env(**extra):
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env["JAX_PLATFORMS"] = "cpu"
  env.pop("XLA_FLAGS", None)
  env.update(extra)
  return env


@pytest.fixture(scope="module")
def results():
  # (The ten checks took about 480 s on a slow 2-core machine, compiling most of the time: the
  # limit only stops a hung run.)
  proc = subprocess.run([sys.executable, SCRIPT, *CHECKS], capture_output=True, text=True,
                        env=_env(), cwd=ROOT, timeout=1200)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("check", CHECKS)
def test_multi_device(results, check):
  res = results[check]
  assert res["ok"], json.dumps(res, indent=1)[:4000]


def test_this_process_keeps_one_device():
  assert jax.device_count() == 1


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_agree_with_one():
  """Two processes joined by jax.distributed (4 CPU devices each, gloo collectives) run one
  vocab-sharded sampling step over the global 8-device mesh; both get the single-device tokens."""
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, SCRIPT, "--process", str(i), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=ROOT) for i in range(2)]
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, err[-4000:]
    outs.append(json.loads(out.strip().splitlines()[-1]))
  for res in outs:
    assert res["devices"] == 8 and res["local_devices"] == 4, res
    assert res["tokens"] == res["single_device"], res
  assert outs[0]["tokens"] == outs[1]["tokens"]


def test_sharded_bench_counts_the_collectives_it_runs():
  """The bench's sharded W2 (8 simulated devices, a smaller shape): the same tokens as one
  device, and a byte count that follows the top-p calls made at run time."""
  proc = subprocess.run([sys.executable, "-m", "jaxlogits._bench_sharded", "--json",
                         "--repeats", "1", "--batch", "4", "--vocab", "20000"],
                        capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  res = json.loads(proc.stdout.strip().splitlines()[-1])
  assert res["devices"] == 8 and res["tokens_equal"], res
  # a flat row at top_p 0.95: too wide a nucleus for the candidates (told by the normaliser and
  # one mass pass), so straight to the search (its full passes; no estimate over the subsample
  # for a row this short) and the tokens of its final bracket
  assert res["top_p_gathers"] == [64] and 4 <= res["top_p_mass_sums"] <= 20, res
  assert res["top_p_sample_sums"] == 0, res
  sums = res["top_p_mass_sums"] + res["top_p_sample_sums"]
  row, ar = 4 * 4, lambda n: 2 * 7 * n // 8
  want = (3 * ar(row) + 2 * ar(row) + sums * ar(2 * row) + 7 * 64 * row
          + 2 * ar(row) + ar(row) + 7 * 2 * row + ar(row))
  assert res["bytes_crossed_per_step"] == want
  assert res["bytes_crossed_per_step"] < res["bytes_full_gather"] / 10


# --------------------------------------------------------------------------------------------
# single-device behaviour of the public helpers (a one-device mesh)


def test_padded_vocab_size_and_pad_vocab():
  assert sh.padded_vocab_size(128256, 8) == 129024
  assert sh.padded_vocab_size(256, 1) == 256
  out = sh.pad_vocab(jnp.ones((2, 3)), 2, value=0.0)
  assert out.shape == (2, 512) and float(out[0, 3]) == 0.0
  with pytest.raises(ValueError, match="num_shards"):
    sh.padded_vocab_size(10, 0)


def test_one_device_mesh_equals_sample_step():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 300)).astype(np.float32)
  params = jl.SamplingParams.create(4, temperature=[0.0, 0.5, 1.0, 1.0], top_p=0.9,
                                    top_k=[0, 5, 0, 50], min_p=0.05)
  mesh = jax.make_mesh((1,), ("vocab",), (jax.sharding.AxisType.Auto,))
  step = sh.vocab_sharded_sampler(mesh, "vocab", vocab_size=300)
  tok, proc = step(jax.random.key(1), sh.pad_vocab(x, 1), params)
  want_tok, want_proc = jl.sample_step(jax.random.key(1), x, params)
  np.testing.assert_array_equal(tok, want_tok)
  np.testing.assert_array_equal(np.asarray(proc)[:, :300], want_proc)
  assert np.all(np.asarray(proc)[:, 300:] == -np.inf)


def test_sampler_validates_its_inputs():
  mesh = jax.make_mesh((1,), ("vocab",), (jax.sharding.AxisType.Auto,))
  step = sh.vocab_sharded_sampler(mesh, "vocab", vocab_size=300)
  x = jnp.zeros((2, 300))
  with pytest.raises(ValueError, match="pad_vocab"):
    step(jax.random.key(0), x, jl.SamplingParams.create(2))
  with pytest.raises(ValueError, match="typical_p"):
    step(jax.random.key(0), sh.pad_vocab(x, 1), jl.SamplingParams.create(2, typical_p=0.5))
  with pytest.raises(ValueError, match="multiple of 256"):
    f = jax.shard_map(lambda k, l: sh.vocab_sharded_sample(k, l, axis_name="vocab",
                                                           vocab_size=100),
                      mesh=mesh, in_specs=(jax.P(), jax.P(None, "vocab")), out_specs=jax.P())
    f(jax.random.key(0), jnp.zeros((2, 100)))
