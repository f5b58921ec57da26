"""Tests for the transformer and its explicit KV cache.

All calls go through a few jitted functions with a handful of fixed shapes
(eager dispatch of many tiny ops, and recompiles, are what make such tests
slow): forward ``[B, 12]``, prefill ``[B, 8]`` with a 16-slot cache, step
``[3]``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlogits.model import (CONFIGS, KVCache, ModelConfig, create_model, gather_last_logits,
                             init_cache, make_apply, make_decode_fns, make_tokens_to_logits)

CFG = CONFIGS["tiny"]
ATOL = 2e-5
B, T_FULL, T_PRE, MAX_LEN = 3, 12, 8, 16

_forward = nnx.jit(lambda m, t: m.forward(t))


def forward(model, toks):
    """Jitted full forward pass without a cache."""
    return _forward(model, toks)


@pytest.fixture(scope="module")
def model():
    return create_model(CFG, seed=0)


@pytest.fixture(scope="module")
def fns(model):
    d = make_decode_fns(model)
    return jax.jit(d.prefill), jax.jit(d.step)


def _tokens(b, t, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 259, (b, t)), jnp.int32)


def test_config_roundtrip_and_validation():
    assert ModelConfig.from_dict(CFG.to_dict()) == CFG
    assert ModelConfig.from_dict({"rope_theta": 500}).rope_theta == 500.0
    with pytest.raises(ValueError):
        ModelConfig(num_heads=3, num_kv_heads=2)
    with pytest.raises(ValueError):
        ModelConfig(head_dim=7)
    with pytest.raises(ValueError):
        ModelConfig(dtype="int8")
    with pytest.raises(ValueError):
        ModelConfig.from_dict({"bogus": 1})


def test_shapes(model, fns):
    prefill, _ = fns
    toks = _tokens(B, T_FULL)
    logits = forward(model, toks)
    assert logits.shape == (B, T_FULL, CFG.vocab_size) and logits.dtype == jnp.float32
    cache = init_cache(CFG, B, MAX_LEN)
    assert isinstance(cache, KVCache) and len(cache.k) == CFG.num_layers == len(cache.v)
    assert cache.k[0].shape == (B, CFG.num_kv_heads, MAX_LEN, CFG.head_dim)
    assert cache.valid.shape == (B, MAX_LEN) and cache.max_len == MAX_LEN
    out, new_cache = prefill(toks[:, :T_PRE], jnp.full((B,), 7), cache)
    assert out.shape == (B, T_PRE, CFG.vocab_size)
    assert jax.tree_util.tree_structure(new_cache) == jax.tree_util.tree_structure(cache)
    assert bool(new_cache.valid[:, :7].all()) and not bool(new_cache.valid[:, 7:].any())


def test_prefill_then_step_equals_full_forward(model, fns):
    prefill, step = fns
    p = 5
    toks = _tokens(B, T_FULL, seed=1)
    full = forward(model, toks)
    # tokens p..7 are in the prefill array but beyond the lengths: ignored
    logits, cache = prefill(toks[:, :T_PRE], jnp.full((B,), p), init_cache(CFG, B, MAX_LEN))
    np.testing.assert_allclose(logits[:, :p], full[:, :p], atol=ATOL)
    for pos in range(p, T_FULL):
        step_logits, cache = step(toks[:, pos], jnp.full((B,), pos), cache)
        np.testing.assert_allclose(step_logits, full[:, pos], atol=ATOL)


def test_ragged_rows_match_rows_alone(model, fns):
    prefill, step = fns
    lengths = [3, 8, 5]
    extra = 4
    toks = _tokens(B, T_FULL, seed=2)
    batch = np.array(toks[:, :T_PRE])
    for r, n in enumerate(lengths):
        batch[r, n:] = 258  # right padding
    logits, cache = prefill(jnp.asarray(batch), jnp.asarray(lengths),
                            init_cache(CFG, B, MAX_LEN))
    last = gather_last_logits(logits, jnp.asarray(lengths))
    positions = np.array(lengths)
    step_out = []
    for _ in range(extra):
        tok = jnp.asarray([toks[r, positions[r]] for r in range(B)])
        out, cache = step(tok, jnp.asarray(positions), cache)
        step_out.append(out)
        positions += 1
    full = forward(model, toks)  # rows are independent there: no padding, no cache
    for r, n in enumerate(lengths):
        # the same row alone, unpadded, through the full forward
        alone = full[r]
        np.testing.assert_allclose(logits[r, :n], alone[:n], atol=ATOL)
        np.testing.assert_allclose(last[r], alone[n - 1], atol=ATOL)
        for i in range(extra):
            np.testing.assert_allclose(step_out[i][r], alone[n + i], atol=ATOL)
        # and alone through prefill with its own cache and different padding
        row = np.array(toks[r:r + 1, :T_PRE])
        row[0, n:] = 7
        l1, _ = prefill(jnp.asarray(row), jnp.asarray([n]), init_cache(CFG, 1, MAX_LEN))
        np.testing.assert_allclose(logits[r, :n], l1[0, :n], atol=ATOL)


def test_padding_content_does_not_matter(fns):
    prefill, _ = fns
    toks = np.array(_tokens(B, T_PRE, seed=3))
    lengths = jnp.asarray([4, 8, 1])
    a, _ = prefill(jnp.asarray(toks), lengths, init_cache(CFG, B, MAX_LEN))
    toks2 = toks.copy()
    toks2[0, 4:] = np.random.default_rng(9).integers(0, 259, 4)
    toks2[2, 1:] = 0
    b, _ = prefill(jnp.asarray(toks2), lengths, init_cache(CFG, B, MAX_LEN))
    np.testing.assert_array_equal(a[0, :4], b[0, :4])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2, :1], b[2, :1])


def test_unwritten_cache_slots_are_never_attended(fns):
    prefill, step = fns
    toks = _tokens(B, T_PRE, seed=4)
    lengths = jnp.asarray([3, 8, 6])
    clean = init_cache(CFG, B, MAX_LEN)
    # garbage (huge values, NaN) in every slot; `valid` stays all False
    rng = np.random.default_rng(5)
    dirty = clean._replace(
        k=tuple(jnp.asarray(rng.normal(0, 1e4, k.shape), jnp.float32) for k in clean.k),
        v=tuple(jnp.asarray(rng.normal(0, 1e4, v.shape), jnp.float32).at[:, 10:].set(jnp.nan)
                for v in clean.v))
    la, ca = prefill(toks, lengths, clean)
    lb, cb = prefill(toks, lengths, dirty)
    for r, n in enumerate([3, 8, 6]):
        np.testing.assert_allclose(la[r, :n], lb[r, :n], atol=ATOL)
    pos = lengths
    tok = jnp.asarray([7, 8, 9])
    for _ in range(3):
        sa, ca = step(tok, pos, ca)
        sb, cb = step(tok, pos, cb)
        assert np.isfinite(np.asarray(sb)).all()
        np.testing.assert_allclose(sa, sb, atol=ATOL)
        pos = pos + 1
    # row 0: prefill wrote slots 0..2 only, the steps wrote 3..5
    assert np.asarray(ca.valid[0]).tolist() == [True] * 6 + [False] * (MAX_LEN - 6)


def test_inactive_rows_and_overflow_write_nothing(fns):
    _, step = fns
    cache = init_cache(CFG, B, MAX_LEN)
    _, c1 = step(jnp.asarray([1, 2, 3]), jnp.asarray([0, 0, 0]), cache,
                 jnp.asarray([True, False, True]))
    assert np.asarray(c1.valid[:, 0]).tolist() == [True, False, True]
    assert float(jnp.abs(c1.k[0][1]).max()) == 0.0
    _, c2 = step(jnp.asarray([1, 2, 3]), jnp.asarray([MAX_LEN, 100, MAX_LEN + 1]), cache)
    assert not bool(c2.valid.any())


def test_pure_functions_under_jit_and_while_loop(model):
    toks = _tokens(B, T_FULL, seed=6)
    full = forward(model, toks)
    graphdef, state = nnx.split(model)
    apply = jax.jit(make_apply(graphdef))
    pos = jnp.broadcast_to(jnp.arange(T_FULL), (B, T_FULL))
    out, _ = apply(state, toks, pos, init_cache(CFG, B, MAX_LEN))
    np.testing.assert_allclose(out, full, atol=ATOL)

    t2l = make_tokens_to_logits(model)

    def body(carry):
        i, cache, acc = carry
        logits, cache = t2l(jax.lax.dynamic_slice_in_dim(toks, i, 1, axis=1),
                            jnp.full((B, 1), i, jnp.int32), cache)
        acc = jax.lax.dynamic_update_slice_in_dim(acc, logits, i, axis=1)
        return i + 1, cache, acc

    init = (jnp.int32(0), init_cache(CFG, B, MAX_LEN), jnp.zeros_like(full))
    _, _, acc = jax.jit(lambda c: jax.lax.while_loop(lambda c: c[0] < T_FULL, body, c))(init)
    np.testing.assert_allclose(acc, full, atol=ATOL)


def test_bfloat16_compute_runs():
    m = create_model(CFG.replace(dtype="bfloat16"), seed=0)
    logits = forward(m, _tokens(B, T_FULL))
    assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
