"""Classifier-free guidance (jaxlogits/guidance.py) against the float64 reference."""

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

import jaxlogits as jl
from tests import reference as R
from tests import strategies as S
from tests.compare import assert_same_masks_and_values, flush_denormals


@hypothesis.given(data=st.data())
def test_matches_reference(data):
  cond = data.draw(S.logit_rows())
  uncond = data.draw(S.logit_rows(cond.size, cond.size))
  s = data.draw(S.guidance_scales())
  got = jl.guidance(cond, uncond, s)
  want = R.guidance_ref(flush_denormals(cond), flush_denormals(uncond), s)
  # float32 log-softmax carries an absolute error of ~1e-7 of the logits' scale, which the
  # guidance scale multiplies: the tolerance grows with |s| accordingly.
  scale = max([1.0] + [float(np.max(np.abs(r[np.isfinite(r)]))) for r in (cond, uncond)
                       if np.isfinite(r).any()])
  assert_same_masks_and_values(got, want, rtol=1e-5, atol=max(1e-5, 2e-7 * abs(s) * scale))


def test_scale_one_and_zero_are_the_two_models():
  c = jnp.array([[1.0, 2.0, 3.0]])
  u = jnp.array([[0.0, 0.0, 5.0]])
  np.testing.assert_allclose(jl.guidance(c, u, 1.0), jl.log_softmax(c))
  np.testing.assert_allclose(jl.guidance(c, u, 0.0), jl.log_softmax(u))


def test_stable_at_large_logits_and_per_row_scales():
  c = jnp.array([[1e4, 1e4 - 1, -1e4], [0.0, 1.0, 2.0]])
  u = jnp.array([[1e4 - 1, 1e4, -1e4], [2.0, 1.0, 0.0]])
  got = jax.jit(jl.guidance)(c, u, jnp.array([2.0, 3.0]))
  want = R.apply_rows(R.guidance_ref, np.asarray(c), np.asarray(u), np.array([2.0, 3.0]))
  assert_same_masks_and_values(got, want, rtol=1e-5, atol=1e-4)
