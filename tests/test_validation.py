"""Bad input: clear eager errors; under jit nothing raises and the invariants hold."""

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st

import jaxlogits as jl

L = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
C = jnp.array([[1, 0, 2], [0, 1, 0]])

BAD_VALUES = [
    (lambda: jl.temperature(L, -0.5), "temperature must be in [0, inf)"),
    (lambda: jl.temperature(L, jnp.nan), "temperature must be a finite number"),
    (lambda: jl.top_p(L, 0.0), "top_p must be in (0, 1]"),
    (lambda: jl.top_p(L, 1.5), "top_p must be in (0, 1]"),
    (lambda: jl.top_p(L, jnp.array([0.5, -1.0])), "top_p must be in (0, 1], got -1"),
    (lambda: jl.min_p(L, 1.1), "min_p must be in [0, 1]"),
    (lambda: jl.min_p(L, -0.1), "min_p must be in [0, 1]"),
    (lambda: jl.top_k(L, -1), "top_k must be in [0, inf)"),
    (lambda: jl.top_k(L, 1.5), "top_k must be an integer"),
    (lambda: jl.typical_p(L, 0.0), "typical_p must be in (0, 1]"),
    (lambda: jl.epsilon_cutoff(L, 2.0), "epsilon_cutoff must be in [0, 1]"),
    (lambda: jl.eta_cutoff(L, -1.0), "eta_cutoff must be in [0, 1]"),
    (lambda: jl.top_n_sigma(L, jnp.nan), "top_n_sigma must be a finite number"),
    (lambda: jl.repetition_penalty(L, C, 0.0), "repetition_penalty must be in (0, inf)"),
    (lambda: jl.frequency_penalty(L, C, jnp.nan), "frequency_penalty must be a finite number"),
    (lambda: jl.token_counts(jnp.array([0, 5]), 3), "tokens must hold token ids in [0, 3)"),
    (lambda: jl.no_repeat_ngram(L, jnp.array([[0, 3], [1, 1]]), 2), "token ids in [0, 3)"),
    (lambda: jl.no_repeat_ngram(L, jnp.array([[0, 1], [1, 1]]), -2), "n must be in [0, inf)"),
    (lambda: jl.token_logprobs(L, jnp.array([0, -1])), "token ids in [0, 3)"),
    (lambda: jl.token_bias({3: 1.0}, 3), "logit_bias token id must be in [0, 3)"),
    (lambda: jl.token_bias({1: float("nan")}, 3), "must not be NaN"),
    (lambda: jl.logit_bias(L, jnp.array([1.0, jnp.nan, 0.0])), "bias must not contain NaN"),
]


@pytest.mark.parametrize("call,message", BAD_VALUES)
def test_eager_bad_values_raise_value_error_naming_the_parameter(call, message):
  with pytest.raises(ValueError) as err:
    call()
  assert message in str(err.value)


BAD_SHAPES = [
    lambda: jl.top_p(L, jnp.array([0.5, 0.5, 0.5])),
    lambda: jl.repetition_penalty(L, C[:, :2], 1.2),
    lambda: jl.no_repeat_ngram(L, jnp.array([1, 2]), 2),
    lambda: jl.guidance(L, L[:1, :2], 1.5),
    lambda: jl.logit_bias(L, jnp.zeros(4)),
    lambda: jl.allow_tokens(L, jnp.ones(4, bool)),
    lambda: jl.sample(jax.random.split(jax.random.key(0), 3), L),
]


@pytest.mark.parametrize("call", BAD_SHAPES)
def test_mismatched_shapes_raise_value_error(call):
  with pytest.raises(ValueError):
    call()


@pytest.mark.parametrize("fn", [jl.temperature, jl.top_k, jl.top_p, jl.min_p, jl.typical_p,
                                jl.epsilon_cutoff, jl.eta_cutoff, jl.top_n_sigma])
def test_integer_logits_raise_type_error(fn):
  with pytest.raises(TypeError, match="floating"):
    fn(jnp.array([1, 2, 3]), 1)


def test_bad_input_loses_nothing():
  logits = jnp.array([1.0, 2.0])
  before = np.asarray(logits).copy()
  with pytest.raises(ValueError):
    jl.top_p(logits, 2.0)
  np.testing.assert_array_equal(logits, before)


# Under jit: any parameter value, even invalid, leaves a finite row finite-somewhere and NaN-free.
TRANSFORMS = {
    "temperature": jl.temperature, "top_k": jl.top_k, "top_p": jl.top_p, "min_p": jl.min_p,
    "typical_p": jl.typical_p, "epsilon_cutoff": jl.epsilon_cutoff, "eta_cutoff": jl.eta_cutoff,
    "top_n_sigma": jl.top_n_sigma,
    "repetition_penalty": lambda l, v: jl.repetition_penalty(l, jnp.ones(l.shape, jnp.int32), v),
    "frequency_penalty": lambda l, v: jl.frequency_penalty(l, jnp.full(l.shape, 3), v),
    "presence_penalty": lambda l, v: jl.presence_penalty(l, jnp.ones(l.shape, jnp.int32), v),
    "guidance": lambda l, v: jl.guidance(l, l[::-1], v),
}

wild = st.sampled_from([-1e30, -5.0, -1.0, -0.0, 0.0, 1e-30, 0.3, 1.0, 1.5, 7.0, 1e30, np.nan,
                        np.inf, -np.inf])
finite_rows = st.lists(st.sampled_from([0.0, 1.0, -2.5, 3e38, -3e38, 1e-38, 50.0, -np.inf,
                                        np.nan]), min_size=1, max_size=12)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@hypothesis.given(row=finite_rows, value=wild)
def test_jit_invariants_hold_for_any_parameter(name, row, value):
  logits = jnp.asarray(row, jnp.float32)
  fn = TRANSFORMS[name]
  if name == "top_k":
    value = int(np.clip(np.nan_to_num(value), -5, 20))
  out = np.asarray(jax.jit(fn)(logits, value))
  assert not np.any(np.isnan(out))
  if np.any(np.isfinite(row)):
    assert np.any(out > -np.inf), (row, value, out)


def test_review_regressions():
  # infinite penalty / temperature are rejected eagerly and harmless under jit
  with pytest.raises(ValueError, match="repetition_penalty must be a finite number"):
    jl.repetition_penalty(jnp.zeros(2), jnp.ones(2, jnp.int32), float("inf"))
  out = jax.jit(jl.repetition_penalty)(jnp.zeros(2), jnp.ones(2, jnp.int32), jnp.inf)
  assert np.all(np.isfinite(np.asarray(out)))
  out = jax.jit(jl.temperature)(jnp.array([jnp.inf, 1.0]), jnp.inf)
  np.testing.assert_array_equal(out, [jnp.inf, 0.0])
  # empty contexts
  np.testing.assert_array_equal(jl.token_counts(jnp.zeros((2, 0), jnp.int32), 4), np.zeros((2, 4)))
  np.testing.assert_array_equal(jl.no_repeat_ngram(jnp.zeros((2, 4)), jnp.zeros((2, 0), jnp.int32),
                                                   2), np.zeros((2, 4)))
  # integer parameters beyond int32 saturate instead of wrapping
  x = jnp.array([[1.0, 2.0, 3.0, 4.0]])
  np.testing.assert_array_equal(jl.top_k(x, np.int64(2**32 + 1)), x)
  np.testing.assert_array_equal(jl.top_k(x, 2**31), x)
  # temperature_last must be a bool
  with pytest.raises(ValueError, match="temperature_last"):
    jl.SamplingParams.create(2, temperature_last="false")
  # NumPy integers are integers
  assert jl.top_logprobs(x, np.int64(2))[1].shape == (1, 2)
  assert jl.token_counts(jnp.array([1, 2]), np.int64(4)).shape == (4,)
  # the dense-bias processor
  proc = jl.processors.logit_bias(jnp.array([1.0, 0.0, -1.0, 0.0]))
  hist = jl.History.empty((1,))
  out, _ = proc.process(x, proc.init(x, hist), hist)
  np.testing.assert_array_equal(out, [[2.0, 2.0, 2.0, 4.0]])
