"""Logit bias and token sets (jaxlogits/bias.py)."""

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st

import jaxlogits as jl
from tests import reference as R
from tests import strategies as S
from tests.compare import assert_same_masks_and_values, flush_denormals


@hypothesis.given(data=st.data())
def test_logit_bias_matches_reference(data):
  row = data.draw(S.logit_rows())
  bias = data.draw(S.biases(row.size, allow_inf=True))
  assert_same_masks_and_values(jl.logit_bias(row, bias), R.logit_bias_ref(flush_denormals(row), flush_denormals(bias)))


def test_per_row_bias_from_dicts():
  logits = jnp.zeros((2, 4))
  bias = jl.token_bias([{0: 1.0}, {3: -jnp.inf, 1: 0.5}], 4)
  got = jax.jit(jl.logit_bias)(logits, bias)
  np.testing.assert_array_equal(got, [[1.0, 0, 0, 0], [0, 0.5, 0, -jnp.inf]])


def test_token_mask_allow_and_ban():
  mask = jl.token_mask(jnp.array([[0, 2, -1], [3, -1, -1]]), 4)
  np.testing.assert_array_equal(mask, [[True, False, True, False], [False, False, False, True]])
  logits = jnp.arange(4.0)[None].repeat(2, 0)
  np.testing.assert_array_equal(jl.allow_tokens(logits, mask),
                                [[0.0, -jnp.inf, 2.0, -jnp.inf], [-jnp.inf] * 3 + [3.0]])
  np.testing.assert_array_equal(jl.ban_tokens(logits, mask),
                                [[-jnp.inf, 1.0, -jnp.inf, 3.0], [0.0, 1.0, 2.0, -jnp.inf]])
  with pytest.raises(TypeError, match="boolean mask"):
    jl.ban_tokens(logits, jnp.array([0, 1]))
  with pytest.raises(ValueError, match=r"token ids must be in \[0, 4\)"):
    jl.token_mask([5], 4)


def test_banning_every_token_gives_minus_one_from_sample():
  row = jl.ban_tokens(jnp.zeros(3), jnp.ones(3, bool))
  assert int(jl.sample(jax.random.key(0), row)) == -1
