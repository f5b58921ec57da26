"""Calibration metrics (jaxlogits/calibration.py) against float64 NumPy references."""

import functools
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from jaxlogits import calibration as cal

# --------------------------------------------------------------------------------------------
# float64 reference, written from the definitions


def ref_probs(logits):
  """Softmax in float64 with the library's NaN / +inf rules."""
  x = np.asarray(logits, np.float64)
  x = np.where(np.isnan(x), -np.inf, x)
  pos = x == np.inf
  x = np.where(pos.any(axis=1, keepdims=True), np.where(pos, 0.0, -np.inf), x)
  m = x.max(axis=1, keepdims=True)
  u = np.exp(x - m)
  p = u / u.sum(axis=1, keepdims=True)
  logp = (x - m) - np.log(u.sum(axis=1, keepdims=True))
  return x, p, logp


def ref_conf_correct(logits, labels):
  x, p, _ = ref_probs(logits)
  return p.max(axis=1), (np.argmax(x, axis=1) == np.asarray(labels)).astype(np.float64)


def ref_bins(conf, num_bins, binning):
  """List of index arrays, one per bin (possibly empty)."""
  if binning == "width":
    groups = []
    for b in range(num_bins):
      inside = (conf > b / num_bins) & (conf <= (b + 1) / num_bins)
      if b == 0:
        inside |= conf == 0
      groups.append(np.flatnonzero(inside))
    assert sum(len(g) for g in groups) == len(conf)
    return groups
  return np.array_split(np.argsort(conf, kind="stable"), num_bins)


def ref_gaps(logits, labels, num_bins, binning):
  conf, correct = ref_conf_correct(logits, labels)
  return [(len(g), abs(correct[g].mean() - conf[g].mean()))
          for g in ref_bins(conf, num_bins, binning) if len(g)], len(conf)


def ref_ece(logits, labels, num_bins=15, binning="width"):
  gaps, n = ref_gaps(logits, labels, num_bins, binning)
  return sum(k / n * gap for k, gap in gaps)


def ref_mce(logits, labels, num_bins=15, binning="width"):
  gaps, _ = ref_gaps(logits, labels, num_bins, binning)
  return max(gap for _, gap in gaps)


def ref_brier(logits, labels):
  _, p, _ = ref_probs(logits)
  onehot = np.eye(p.shape[1])[np.asarray(labels)]
  return np.mean(np.sum((p - onehot) ** 2, axis=1))


def ref_nll(logits, labels):
  _, _, logp = ref_probs(logits)
  return -np.mean(logp[np.arange(len(labels)), np.asarray(labels)])


def random_case(seed, n, c, scale=2.0):
  """Logits and labels drawn from a softened version of them (so accuracy is not trivial)."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, c)) * scale
  return z.astype(np.float32), sample_labels(rng, 0.6 * z)


def sample_labels(rng, z):
  p = np.exp(z - z.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  u = rng.random((len(z), 1))
  return np.minimum((p.cumsum(axis=1) < u).sum(axis=1), z.shape[1] - 1)


NEG = -np.inf

# Four examples worked by hand: confidences 1, 1/2, 1/4, 1; the second is a tie (argmax 0).
HAND_LOGITS = np.array([[0.0, NEG, NEG, NEG],
                        [0.0, 0.0, NEG, NEG],
                        [0.0, 0.0, 0.0, 0.0],
                        [NEG, 0.0, NEG, NEG]], np.float32)
HAND_LABELS = np.array([0, 1, 0, 0])  # correct, wrong (tie -> 0), correct, wrong


# --------------------------------------------------------------------------------------------
# hand-worked cases


def test_hand_worked_width_bins():
  # B = 4, bins (0, 1/4], (1/4, 1/2], (1/2, 3/4], (3/4, 1]: 1/4 and 1/2 sit on edges and go to
  # the lower bin; both 1.0s go to the last bin.
  #   bin 0: {1/4 correct}        n=1 |1 - 1/4|   = 3/4
  #   bin 1: {1/2 wrong}          n=1 |0 - 1/2|   = 1/2
  #   bin 3: {1 correct, 1 wrong} n=2 |1/2 - 1|   = 1/2
  # ECE = (3/4 + 1/2 + 2 * 1/2) / 4 = 9/16, MCE = 3/4.
  ece = cal.expected_calibration_error(HAND_LOGITS, HAND_LABELS, num_bins=4)
  mce = cal.maximum_calibration_error(HAND_LOGITS, HAND_LABELS, num_bins=4)
  assert float(ece) == 9 / 16
  assert float(mce) == 3 / 4
  assert ref_ece(HAND_LOGITS, HAND_LABELS, 4) == 9 / 16


def test_hand_worked_mass_bins():
  # Sorted by confidence: 1/4 (correct), 1/2 (wrong), 1 (correct, #0), 1 (wrong, #3).
  # Two groups of two: |1/2 - 3/8| = 1/8 and |1/2 - 1| = 1/2, so ECE = (1/8 + 1/2) / 2 = 5/16.
  ece = cal.expected_calibration_error(HAND_LOGITS, HAND_LABELS, num_bins=2, binning="mass")
  mce = cal.maximum_calibration_error(HAND_LOGITS, HAND_LABELS, num_bins=2, binning="mass")
  assert float(ece) == 5 / 16
  assert float(mce) == 1 / 2
  # Three groups (2, 1, 1): {1/4, 1/2} -> 1/8, {1 correct} -> 0, {1 wrong} -> 1.
  ece3 = cal.expected_calibration_error(HAND_LOGITS, HAND_LABELS, num_bins=3, binning="mass")
  assert float(ece3) == (2 * 1 / 8 + 0 + 1) / 4


def test_hand_worked_brier():
  # rows: 0, (1/2)^2 * 2 = 1/2, (3/4)^2 + 3 (1/4)^2 = 3/4, 1 + 1 = 2; mean 13/16.
  assert float(cal.brier_score(HAND_LOGITS, HAND_LABELS)) == 13 / 16


def test_hand_worked_probabilities():
  # The docstring example: confidences .9 (right), .5 (wrong, tie), .8 (right), .7 (wrong).
  # width, B = 2: (0, 1/2] holds .5 -> 1/2 * 1/4; (1/2, 1] holds three: |2/3 - 4/5| * 3/4 = 1/10.
  logits = np.log(np.array([[0.9, 0.1], [0.5, 0.5], [0.8, 0.2], [0.3, 0.7]], np.float32))
  labels = np.array([0, 1, 0, 0])
  np.testing.assert_allclose(cal.expected_calibration_error(logits, labels, num_bins=2),
                             9 / 40, rtol=1e-6)
  np.testing.assert_allclose(cal.maximum_calibration_error(logits, labels, num_bins=2), 1 / 2,
                             rtol=1e-6)
  # mass, B = 2: {.5 wrong, .7 wrong} -> 3/5, {.8, .9 right} -> 3/20; ECE = 3/8.
  np.testing.assert_allclose(
      cal.expected_calibration_error(logits, labels, num_bins=2, binning="mass"), 3 / 8,
      rtol=1e-6)
  np.testing.assert_allclose(cal.brier_score(logits, labels), 79 / 200, rtol=1e-6)
  np.testing.assert_allclose(cal.negative_log_likelihood(logits, labels),
                             -(math.log(0.9) + math.log(0.5) + math.log(0.8) + math.log(0.3)) / 4,
                             rtol=1e-6)


# --------------------------------------------------------------------------------------------
# random cases against the reference


@pytest.mark.parametrize("binning", ["width", "mass"])
@pytest.mark.parametrize("seed,n,c,num_bins", [(0, 37, 5, 1), (1, 37, 5, 10), (2, 37, 5, 64),
                                               (3, 600, 10, 15)])
def test_binned_metrics_match_reference(seed, n, c, num_bins, binning):
  logits, labels = random_case(seed, n, c)
  conf, _ = ref_conf_correct(logits, labels)
  if binning == "width":  # keep float32 vs float64 rounding away from the bin edges
    edges = np.arange(num_bins + 1) / num_bins
    assert np.min(np.abs(conf[:, None] - edges[None, :])) > 1e-5
  else:  # and the float32 confidences sorted in the same order as the float64 ones
    conf32 = np.asarray(cal._confidences(jnp.asarray(logits)))
    np.testing.assert_array_equal(np.argsort(conf32, kind="stable"),
                                  np.argsort(conf, kind="stable"))
  kw = dict(num_bins=num_bins, binning=binning)
  np.testing.assert_allclose(cal.expected_calibration_error(logits, labels, **kw),
                             ref_ece(logits, labels, **kw), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(cal.maximum_calibration_error(logits, labels, **kw),
                             ref_mce(logits, labels, **kw), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed,n,c", [(0, 1, 3), (1, 37, 5), (2, 600, 10)])
def test_brier_and_nll_match_reference(seed, n, c):
  logits, labels = random_case(seed, n, c, scale=4.0)
  np.testing.assert_allclose(cal.brier_score(logits, labels), ref_brier(logits, labels),
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(cal.negative_log_likelihood(logits, labels),
                             ref_nll(logits, labels), rtol=1e-5, atol=1e-7)


def test_report_matches_the_individual_metrics():
  logits, labels = random_case(4, 200, 6)
  r = cal.calibration_report(logits, labels, num_bins=12)
  assert isinstance(r, cal.CalibrationReport) and all(isinstance(v, float) for v in r)
  conf, correct = ref_conf_correct(logits, labels)
  np.testing.assert_allclose(r.accuracy, correct.mean(), rtol=1e-6)
  np.testing.assert_allclose(r.confidence, conf.mean(), rtol=1e-5)
  # The same metrics compiled into one program: equal up to the order XLA sums in (bitwise on
  # CPU; a GPU fuses the report differently and can differ in the last bit).
  np.testing.assert_allclose(
      r.ece_width, cal.expected_calibration_error(logits, labels, num_bins=12), rtol=1e-6)
  np.testing.assert_allclose(
      r.ece_mass, cal.expected_calibration_error(logits, labels, num_bins=12, binning="mass"),
      rtol=1e-6)
  np.testing.assert_allclose(
      r.mce, cal.maximum_calibration_error(logits, labels, num_bins=12), rtol=1e-6)
  np.testing.assert_allclose(r.brier, ref_brier(logits, labels), rtol=1e-5)
  np.testing.assert_allclose(r.nll, ref_nll(logits, labels), rtol=1e-5)


# --------------------------------------------------------------------------------------------
# edge cases


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_single_example(binning):
  logits = np.array([[2.0, 0.5, -1.0]], np.float32)
  conf, _ = ref_conf_correct(logits, [0])
  for label, correct in [(0, 1.0), (2, 0.0)]:
    kw = dict(num_bins=7, binning=binning)
    want = abs(correct - conf[0])
    np.testing.assert_allclose(cal.expected_calibration_error(logits, [label], **kw), want,
                               rtol=1e-6)
    np.testing.assert_allclose(cal.maximum_calibration_error(logits, [label], **kw), want,
                               rtol=1e-6)


@pytest.mark.parametrize("row,num_bins,bin_index", [
    ([0.0, 0.0], 2, 0),  # confidence 1/2 on the edge of (0, 1/2] and (1/2, 1]
    ([0.0, 0.0, 0.0], 3, 0),  # 1/3 on the first edge
    ([0.0, 0.0, 0.0, 0.0], 4, 0),  # 1/4
    ([0.0, 0.0, NEG, NEG], 4, 1),  # 1/2 with four bins
    ([0.0, NEG], 5, 4),  # exactly 1.0: last bin
    ([1e4, -1e4], 15, 14),  # 1.0 from huge logits
])
def test_confidence_on_a_bin_edge_goes_to_the_lower_bin(row, num_bins, bin_index):
  # Bins (b/B, (b+1)/B]: the library's bin index, the reference's, and the ECE of one example.
  logits = np.array([row], np.float32)
  conf = 1.0 / np.sum(np.exp(np.asarray(row, np.float64) - np.max(row)))
  ids = cal._bin_ids(jnp.asarray([conf], jnp.float32), num_bins, "width")
  assert int(ids[0]) == bin_index
  assert ref_bins(np.array([conf]), num_bins, "width")[bin_index].tolist() == [0]
  # Wrong prediction: the ECE is exactly the confidence.
  wrong = (int(np.argmax(row)) + 1) % len(row)
  np.testing.assert_allclose(cal.expected_calibration_error(logits, [wrong], num_bins=num_bins),
                             conf, rtol=1e-6)


def test_confidence_exactly_one_and_huge_logits():
  logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4 - 1.0], [0.0, -1e4, NEG]], np.float32)
  labels = np.array([0, 2, 1])
  # Confidences: 1 (right), 1/(1 + e^-1) (wrong), 1 (wrong).
  c2 = 1.0 / (1.0 + math.exp(-1.0))
  ece = cal.expected_calibration_error(logits, labels, num_bins=10)
  np.testing.assert_allclose(ece, (0.0 + c2 + 1.0) / 3, rtol=1e-6)  # bins: {1, 1}, {c2}
  np.testing.assert_allclose(ece, ref_ece(logits, labels, 10), rtol=1e-6)
  nll = cal.negative_log_likelihood(logits, labels)
  np.testing.assert_allclose(nll, (0.0 + (1.0 + math.log1p(math.exp(-1.0))) + 1e4) / 3,
                             rtol=1e-6)
  brier = cal.brier_score(logits, labels)
  np.testing.assert_allclose(brier, ref_brier(logits, labels), rtol=1e-6)
  for v in (ece, nll, brier):
    assert np.isfinite(float(v))
  # A 2e4 margin: the log-probability of the loser is exactly -2e4, not -inf.
  assert float(cal.negative_log_likelihood(np.array([[1e4, -1e4]], np.float32), [1])) == 2e4


def test_ties_in_argmax_pick_the_lowest_index():
  logits = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], np.float32)
  # Row 0 predicts 1 and row 1 predicts 0; confidences 1/(2 + e^-2) and 1/3.
  conf = ref_conf_correct(logits, [1, 0])[0]
  np.testing.assert_allclose(cal.expected_calibration_error(logits, [1, 0], num_bins=1),
                             1 - conf.mean(), rtol=1e-6)
  np.testing.assert_allclose(cal.expected_calibration_error(logits, [2, 1], num_bins=1),
                             conf.mean(), rtol=1e-6)


def test_nan_and_inf_rules():
  # NaN counts as -inf; a row with +inf entries is uniform over them.
  logits = np.array([[np.nan, 0.0, 1.0], [np.inf, np.inf, 5.0]], np.float32)
  labels = np.array([2, 1])
  np.testing.assert_allclose(cal.negative_log_likelihood(logits, labels),
                             ref_nll(logits, labels), rtol=1e-6)
  np.testing.assert_allclose(cal.brier_score(logits, labels), ref_brier(logits, labels),
                             rtol=1e-6)
  # Row 1 predicts class 0 (tie) with confidence exactly 1/2 and is wrong.
  np.testing.assert_allclose(cal.expected_calibration_error(logits, labels, num_bins=2),
                             ref_ece(logits, labels, 2), rtol=1e-6)


def test_bfloat16_is_upcast():
  logits, labels = random_case(5, 300, 8)
  bf = jnp.asarray(logits, jnp.bfloat16)
  up = np.asarray(bf.astype(jnp.float32))
  for fn in (functools.partial(cal.expected_calibration_error, num_bins=10),
             functools.partial(cal.expected_calibration_error, num_bins=10, binning="mass"),
             cal.brier_score, cal.negative_log_likelihood):
    got = fn(bf, labels)
    assert got.dtype == jnp.float32
    assert float(got) == float(fn(up, labels))
  np.testing.assert_allclose(cal.negative_log_likelihood(bf, labels), ref_nll(up, labels),
                             rtol=1e-5)
  np.testing.assert_allclose(cal.expected_calibration_error(bf, labels, num_bins=10),
                             ref_ece(up, labels, 10), rtol=1e-5, atol=1e-6)


def test_log_probabilities_and_logits_agree():
  logits, labels = random_case(6, 100, 7)
  logp = np.asarray(jax.nn.log_softmax(jnp.asarray(logits)))
  for fn in (cal.brier_score, cal.negative_log_likelihood,
             functools.partial(cal.expected_calibration_error, num_bins=10)):
    np.testing.assert_allclose(fn(logp, labels), fn(logits, labels), rtol=1e-5, atol=1e-7)


def test_metrics_jit_with_static_bins():
  logits, labels = random_case(7, 64, 4)
  ece = jax.jit(functools.partial(cal.expected_calibration_error, num_bins=8, binning="mass"))
  mce = jax.jit(functools.partial(cal.maximum_calibration_error, num_bins=8))
  assert float(ece(logits, labels)) == float(
      cal.expected_calibration_error(logits, labels, num_bins=8, binning="mass"))
  assert float(mce(logits, labels)) == float(
      cal.maximum_calibration_error(logits, labels, num_bins=8))
  assert float(jax.jit(cal.brier_score)(logits, labels)) == float(cal.brier_score(logits, labels))


# --------------------------------------------------------------------------------------------
# temperature scaling


@pytest.fixture(scope="module")
def synthetic():
  """True logits z and labels drawn from softmax(z): perfectly calibrated at T = 1."""
  rng = np.random.default_rng(1234)
  z = rng.normal(size=(5000, 10)) * 1.5
  return z, sample_labels(rng, z)


def ref_best_temperature(logits, labels):
  res = minimize_scalar(lambda s: ref_nll(logits / math.exp(s), labels), bounds=(-4.0, 4.0),
                        method="bounded", options={"xatol": 1e-8})
  return math.exp(res.x)


@pytest.mark.parametrize("t_true", [2.5, 0.5])
def test_fit_temperature_recovers_the_true_temperature(synthetic, t_true):
  z, labels = synthetic
  logits = (z * t_true).astype(np.float32)
  t = cal.fit_temperature(logits, labels)
  assert isinstance(t, float)
  assert abs(t / t_true - 1) < 0.05, t
  # ... and the optimiser reaches the float64 minimiser of the same NLL.
  assert abs(t / ref_best_temperature(logits, labels) - 1) < 2e-3
  before = float(cal.expected_calibration_error(logits, labels))
  after = float(cal.expected_calibration_error(logits / t, labels))
  assert after < before
  assert after < 0.02 < before
  assert float(cal.negative_log_likelihood(logits / t, labels)) < float(
      cal.negative_log_likelihood(logits, labels))
  assert cal.fit_temperature(logits, labels) == t  # deterministic


def test_fit_temperature_options(synthetic):
  z, labels = synthetic
  logits = (z[:500] * 2.0).astype(np.float32)
  assert cal.fit_temperature(logits, labels[:500], init=1.7, steps=0) == pytest.approx(1.7)
  # Starting above the optimum and in bfloat16 also converges.
  t_hi = cal.fit_temperature(logits, labels[:500], init=5.0, steps=300)
  t_bf = cal.fit_temperature(jnp.asarray(logits, jnp.bfloat16), labels[:500])
  t_ref = ref_best_temperature(logits, labels[:500])
  assert abs(t_hi / t_ref - 1) < 5e-3
  assert abs(t_bf / t_ref - 1) < 2e-2
  # Masked (-inf) classes that are not labels do not break the gradient.
  masked = logits.copy()
  masked[np.arange(500), (labels[:500] + 1) % 10] = -np.inf
  assert math.isfinite(cal.fit_temperature(masked, labels[:500]))


# --------------------------------------------------------------------------------------------
# reliability diagram


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_reliability_diagram_writes_a_png(tmp_path, binning):
  pytest.importorskip("matplotlib")
  logits, labels = random_case(8, 300, 5)
  path = tmp_path / f"rel_{binning}.png"
  out = cal.reliability_diagram(logits, labels, path, num_bins=10, binning=binning,
                                title="test")
  assert out == path
  data = pathlib.Path(path).read_bytes()
  assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_reliability_diagram_without_matplotlib(tmp_path, monkeypatch):
  for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
    monkeypatch.setitem(sys.modules, name, None)
  with pytest.raises(ImportError, match=r"pip install 'jaxlogits\[plot\]'"):
    cal.reliability_diagram(HAND_LOGITS, HAND_LABELS, str(tmp_path / "x.png"))


# --------------------------------------------------------------------------------------------
# validation

METRICS = [cal.expected_calibration_error, cal.maximum_calibration_error, cal.brier_score,
           cal.negative_log_likelihood, cal.calibration_report, cal.fit_temperature]


@pytest.mark.parametrize("fn", METRICS, ids=lambda f: f.__name__)
def test_bad_inputs_name_the_parameter(fn):
  good = np.zeros((3, 4), np.float32)
  with pytest.raises(TypeError, match=r"^logits"):
    fn(np.zeros((3, 4), np.int32), [0, 1, 2])
  with pytest.raises(ValueError, match=r"^logits"):
    fn(np.zeros(4, np.float32), [0])
  with pytest.raises(ValueError, match=r"^logits"):
    fn(np.zeros((2, 3, 4), np.float32), [0, 1])
  with pytest.raises(ValueError, match=r"^logits"):
    fn(np.zeros((0, 4), np.float32), np.zeros(0, np.int32))
  with pytest.raises(ValueError, match=r"^logits row 1"):
    fn(np.array([[0.0, 1.0], [NEG, np.nan]], np.float32), [0, 1])
  with pytest.raises(TypeError, match=r"^labels"):
    fn(good, np.array([0.0, 1.0, 2.0]))
  with pytest.raises(ValueError, match=r"^labels"):
    fn(good, [0, 1])
  with pytest.raises(ValueError, match=r"^labels"):
    fn(good, [[0, 1, 2]])
  for bad in ([0, 1, 4], [0, -1, 2]):
    with pytest.raises(ValueError, match=r"^labels must be class indices in \[0, 4\)"):
      fn(good, bad)


@pytest.mark.parametrize("fn", [cal.expected_calibration_error, cal.maximum_calibration_error,
                                cal.reliability_diagram], ids=lambda f: f.__name__)
def test_bad_bins_name_the_parameter(fn, tmp_path):
  args = (HAND_LOGITS, HAND_LABELS) + ((tmp_path / "x.png",) if fn is cal.reliability_diagram
                                       else ())
  for bad in (0, -3, 2.0, True, None):
    with pytest.raises(ValueError, match=r"^num_bins"):
      fn(*args, num_bins=bad)
  for bad in ("quantile", None, "Width"):
    with pytest.raises(ValueError, match=r"^binning"):
      fn(*args, binning=bad)
  with pytest.raises(ValueError, match=r"^num_bins"):
    cal.calibration_report(HAND_LOGITS, HAND_LABELS, num_bins=0)


def test_fit_temperature_bad_options():
  logits, labels = random_case(9, 20, 3)
  for bad in (0.0, -1.0, np.nan, np.inf):
    with pytest.raises(ValueError, match=r"^init"):
      cal.fit_temperature(logits, labels, init=bad)
  for bad in (-1, 1.5, None):
    with pytest.raises(ValueError, match=r"^steps"):
      cal.fit_temperature(logits, labels, steps=bad)
  for bad in (0.0, -0.1, np.nan):
    with pytest.raises(ValueError, match=r"^learning_rate"):
      cal.fit_temperature(logits, labels, learning_rate=bad)
  masked = logits.copy()
  masked[3, labels[3]] = -np.inf
  with pytest.raises(ValueError, match=r"^labels\[3\]"):
    cal.fit_temperature(masked, labels)
