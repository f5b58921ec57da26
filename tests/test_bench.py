"""``jaxlogits bench`` (jaxlogits/bench.py, bench_decode.py) at tiny sizes: structure, not speed."""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlogits import bench, cli
from tests.cli_checks import assert_one_line_error


def test_workloads_composed_and_pipelined_draw_the_same_tokens():
  # (The shapes of test_run_reports_ratios_measured_in_the_same_run's workloads, whose programs
  # the suite's compilation cache then holds: see tests/conftest.py.)
  logits, counts, key = bench.make_inputs(2, 512)
  for name in ("W1", "W2", "W3"):
    ours = np.asarray(bench.composed(name)(key, logits, counts))
    step, params = bench.pipelined(name, 2)
    # The composition and the pipeline apply the same rules in the same order: same tokens.
    np.testing.assert_array_equal(ours, np.asarray(step(key, logits, counts, params)))
    common = np.asarray(bench.common_jax(name)(key, logits, counts))
    assert ((0 <= common) & (common < 512)).all()


def test_common_jax_top_p_keeps_the_same_nucleus():
  # The peer is a fair one: its sort-based top-p keeps the same tokens as ours on untied rows.
  import jaxlogits as jl
  x = jax.random.normal(jax.random.key(3), (4, 500)) * 3
  np.testing.assert_array_equal(np.asarray(bench._common_top_p(x, 0.9)) > -jnp.inf,
                                np.asarray(jl.top_p(x, 0.9)) > -jnp.inf)


def test_run_reports_ratios_measured_in_the_same_run():
  lines = []
  out = bench.run(batch=2, vocab=512, repeats=2, peers=True, scaling=True, sharded=False,
                  vocabs=(256, 512), batches=(1,), progress=lines.append)
  # Each figure is reported as soon as it is measured: the four workloads, then their peers,
  # then the scaling rows, each line naming what it measured.
  heads = [line.split(":")[0] for line in lines]
  assert heads[:4] == ["W1 2x512", "W2 2x512", "W3 2x512", "W4 1x512"]
  assert heads[-2:] == ["scaling 1x256", "scaling 1x512"]
  assert all(h.split()[0] in ("W1", "W2", "W3", "W4") for h in heads[4:-2]) and len(heads) > 6
  r = out["workloads"][0]
  assert f"({r['composed_x_floor']:.2f}x)" in lines[0] and f"{r['floor_ms']:.2f} ms" in lines[0]
  assert [r["workload"] for r in out["workloads"]] == ["W1", "W2", "W3", "W4"]
  for r in out["workloads"]:
    assert r["floor_ms"] > 0 and r["composed_ms"] > 0 and r["pipeline_ms"] > 0
    # Ratios are medians of per-round ratios: the floor and both ways ran in the same rounds.
    t = {k: np.asarray(v) for k, v in r["rounds_ms"].items()}
    assert all(len(v) == 2 for v in t.values())
    assert r["composed_x_floor"] == pytest.approx(np.median(t["composed"] / t["floor"]))
    assert r["pipeline_x_floor"] == pytest.approx(np.median(t["pipeline"] / t["floor"]))
    assert r["floor_ms"] == pytest.approx(np.median(t["floor"]))
    assert r["common_jax_ms"] > 0 and r["common_jax_x_ours"] > 0
  assert out["workloads"][3]["batch"] == 1
  assert [(r["batch"], r["vocab"]) for r in out["scaling"]] == [(1, 256), (1, 512)]
  text = bench.format_table(out)
  assert "W2" in text and "ns/logit" in text
  json.dumps(out)  # JSON-ready


def test_paired_ratio_is_the_median_of_per_round_ratios():
  # A slow round (the third: the machine twice as slow) scales both sides and cancels.
  assert bench.paired_ratio([2.0, 4.0, 8.0], [1.0, 2.0, 4.0]) == 2.0
  assert bench.paired_ratio([3.0, 2.0, 100.0], [1.0, 1.0, 1.0]) == 3.0
  calls = []
  t = bench.rounds_ms(dict(a=(lambda: calls.append("a"), ()),
                           b=(lambda: calls.append("b"), (), None, 1e-9)), repeats=3, warmup=1)
  # Warm-up, then each round: one timed call of each, b after untimed calls that settle it
  # (at least one; here one, as the first already outlasts 1e-9 s).
  assert calls == ["a", "b"] + ["a", "b", "b"] * 3
  assert sorted(t) == ["a", "b"] and all(len(v) == 3 and min(v) >= 0 for v in t.values())
  calls.clear()
  bench.rounds_ms(dict(c=(lambda: calls.append(time.sleep(0.01)), (), None, 0.035)),
                  repeats=2, warmup=0)
  # Settle: calls until 0.035 s have passed, each at least 0.01 s: at most 4 before each timed
  # call, and at least 2 unless one sleep overran by 25 ms.
  assert 2 * 2 + 2 <= len(calls) <= 2 * 4 + 2


def test_cli_writes_json_and_plot(tmp_path, capsys):
  out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
  # (The shapes of test_run_reports_ratios_measured_in_the_same_run: the same programs.)
  status = cli.main(["bench", "--batch", "2", "--vocab", "512", "--repeats", "1", "--no-peers",
                     "--no-sharded", "--vocabs", "256,512", "--batches", "1",
                     "--json", str(out_json), "--plot", str(out_png)])
  assert status == 0
  data = json.loads(out_json.read_text())
  assert len(data["workloads"]) == 4 and len(data["scaling"]) == 2
  assert out_png.stat().st_size > 1000
  assert "results written" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--vocabs", "a,b"], "--vocabs must be positive integers"),
    (["--batches", "0"], "--batches must be positive integers"),
])
def test_cli_rejects_bad_flags(argv, message, capsys):
  assert_one_line_error(capsys, ["bench", "--no-sharded", *argv], message)


def test_decode_bench_rows(monkeypatch):
  from jaxlogits import bench_decode
  # A small stand-in for the Llama-shaped model keeps the test quick; the code path is the same.
  monkeypatch.setattr(bench_decode, "SHAPE", dict(d_model=32, num_layers=1, num_heads=2,
                                                  num_kv_heads=2, head_dim=16, mlp_dim=64))
  monkeypatch.setattr(bench_decode, "VOCAB", 300)
  monkeypatch.setattr(bench_decode, "NEW", 4)
  rows = bench_decode.run(repeats=1, peers=False, batches=(2,))
  assert rows[0]["batch"] == 2 and rows[0]["generate_ms_per_token"] > 0
  assert rows[0]["bare_ms_per_token"] > 0 and rows[0]["transformers_ms_per_token"] is None
  assert "generate" in bench_decode.format_table(rows)
