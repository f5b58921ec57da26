"""Calibration: does a classifier's confidence match how often it is right?

The classifier is given as logits or log-probabilities ``[N, C]`` (N examples, C classes; for
instance a language model's log-probabilities of C answer options) with integer labels ``[N]``.
Both give the same results, because ``log_softmax`` of log-probabilities returns them unchanged.

Numerics. Logits are upcast to float32 (bfloat16 and float16 included), NaN counts as ``-inf`` and
a row with ``+inf`` entries is uniform over them (semantics.md). With ``m`` the row maximum and
``z = sum_j exp(l_j - m)`` (so ``1 <= z <= C``), the class probabilities are
``exp(l_c - m) / z``, the log-probabilities ``(l_c - m) - log z`` and the confidence
``max_c p_c = 1 / z``: nothing is exponentiated and then logged back, logits of ``+-1e4`` are
exact, and a confidence is exactly 1.0 when the other classes vanish.  Every row needs a finite
(or ``+inf``) logit; an eager call raises ``ValueError`` otherwise.

Conventions shared by every binned metric:

* The prediction is the argmax of the row, the lowest index on ties; an example is correct when
  its prediction equals its label.
* ``binning="width"``: bin ``b`` of ``B`` holds the confidences in ``(b/B, (b+1)/B]``, the edges
  ``b/B`` rounded to float32. A confidence equal to an edge goes to the lower bin, so 1.0 is in
  the last bin (and 0, which cannot occur since the confidence is at least ``1/C``, in the first).
* ``binning="mass"``: the examples are sorted by confidence (equal confidences by example index)
  and split into ``B`` consecutive groups of as-equal-as-possible size, as
  ``numpy.array_split`` does: the first ``N mod B`` groups hold one example more. With
  ``B > N`` the last ``B - N`` groups are empty.
* An empty bin adds nothing to the ECE and is skipped by the MCE.

The metrics are jit-compatible with ``num_bins`` and ``binning`` static (the value checks on
labels then do not run: an out-of-range label counts as wrong, has no one-hot entry in the Brier
score and an infinite NLL). ``fit_temperature`` and ``calibration_report`` return Python floats
and ``reliability_diagram`` writes a file, so those three run eagerly.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxlogits import _checks
from jaxlogits import _numerics as nm

__all__ = [
    "CalibrationReport",
    "brier_score",
    "calibration_report",
    "expected_calibration_error",
    "fit_temperature",
    "maximum_calibration_error",
    "negative_log_likelihood",
    "reliability_diagram",
]

BINNINGS = ("width", "mass")


# --------------------------------------------------------------------------------------------
# validation


def _check_inputs(logits: Any, labels: Any) -> tuple[jax.Array, jax.Array]:
  """Checks ``[N, C]`` float logits and ``[N]`` integer labels in ``[0, C)``."""
  logits = _checks.check_logits(logits)
  if logits.ndim != 2 or logits.shape[0] < 1:
    raise ValueError(
        f"logits must have shape [N, C] (N >= 1 examples, C classes), got shape {logits.shape}")
  n, c = logits.shape
  if isinstance(labels, (list, tuple)):
    labels = np.asarray(labels)
  if not hasattr(labels, "dtype"):
    labels = np.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"labels must be an integer array of class indices, got dtype {labels.dtype}")
  if tuple(labels.shape) != (n,):
    raise ValueError(
        f"labels must have shape [N] = ({n},), one class index per row of logits, got shape "
        f"{tuple(labels.shape)}")
  conc = _checks.concrete(labels)
  if conc is not None:
    bad = (conc < 0) | (conc >= c)
    if np.any(bad):
      raise ValueError(
          f"labels must be class indices in [0, {c}) (C = logits.shape[1]), got "
          f"{_checks._show(conc[bad])}")
  if not isinstance(logits, jax.core.Tracer):
    empty = np.asarray(_rows_without_mass(logits))
    if np.any(empty):
      raise ValueError(
          f"logits row {int(np.argmax(empty))} has no finite entry (all -inf or NaN), so its "
          f"class probabilities are undefined")
  return logits, jnp.asarray(labels).astype(jnp.int32)


@jax.jit
def _rows_without_mass(logits):
  x = nm.sanitize(logits)
  return jnp.all(x == -jnp.inf, axis=-1)


def _check_bins(num_bins: Any, binning: Any) -> None:
  if not _checks.is_int(num_bins) or num_bins < 1:
    raise ValueError(f"num_bins must be an int >= 1, got {num_bins!r}")
  if binning not in BINNINGS:
    raise ValueError(f"binning must be 'width' or 'mass', got {binning!r}")


# --------------------------------------------------------------------------------------------
# shared computations (traced)


def _softmax_parts(logits):
  """``(probs, logp, confidence, prediction)`` of ``[N, C]`` logits, all in float32."""
  e = nm.effective(nm.sanitize(logits))
  m = nm.row_max(e)
  shift = jnp.where(jnp.isfinite(m), m, 0.0)
  u = jnp.exp(e - shift)  # in [0, 1], exactly 1 at the maximum
  z = jnp.sum(u, axis=-1, keepdims=True)  # in [1, C] for a row with a finite logit
  ok = z > 0
  zs = jnp.where(ok, z, 1.0)
  probs = u / zs
  logp = jnp.where(ok, (e - shift) - jnp.log(zs), -jnp.inf)
  # A finite logit far below the maximum keeps a finite log-probability (as in log_softmax).
  logp = jnp.where(jnp.isfinite(e), jnp.maximum(logp, -jnp.finfo(jnp.float32).max), logp)
  conf = jnp.where(ok, 1.0 / zs, 0.0)[:, 0]
  return probs, logp, conf, nm.first_argmax(e)


def _bin_ids(conf, num_bins: int, binning: str):
  """Bin index in ``[0, num_bins)`` of each confidence (see the module docstring)."""
  n = conf.shape[0]
  if binning == "width":
    edges = jnp.asarray(np.arange(1, num_bins) / num_bins, jnp.float32)
    return jnp.sum(conf[:, None] > edges[None, :], axis=1).astype(jnp.int32)
  q, r = divmod(n, num_bins)
  pos = np.arange(n)
  big = r * (q + 1)  # the first r groups hold q + 1 examples, the others q
  group = np.where(pos < big, pos // (q + 1), r + (pos - big) // max(q, 1))
  order = jnp.argsort(conf, stable=True)
  return jnp.zeros(n, jnp.int32).at[order].set(jnp.asarray(group, jnp.int32))


def _bin_sums(logits, labels, num_bins: int, binning: str):
  """Per bin: number of examples, sum of confidences, number correct (float32 ``[B]`` each)."""
  _, _, conf, pred = _softmax_parts(logits)
  correct = (pred == labels).astype(jnp.float32)
  ids = _bin_ids(conf, num_bins, binning)
  seg = functools.partial(jax.ops.segment_sum, segment_ids=ids, num_segments=num_bins)
  return seg(jnp.ones_like(conf)), seg(conf), seg(correct)


def _ece_from_sums(count, conf_sum, correct_sum):
  # (n_b / N) |acc_b - conf_b| = |correct_b - conf_sum_b| / N; an empty bin gives 0.
  return jnp.sum(jnp.abs(correct_sum - conf_sum)) / jnp.sum(count)


def _mce_from_sums(count, conf_sum, correct_sum):
  gap = jnp.abs(correct_sum - conf_sum) / jnp.maximum(count, 1.0)
  return jnp.max(jnp.where(count > 0, gap, 0.0))


@functools.partial(jax.jit, static_argnames=("num_bins", "binning"))
def _ece(logits, labels, num_bins, binning):
  return _ece_from_sums(*_bin_sums(logits, labels, num_bins, binning))


@functools.partial(jax.jit, static_argnames=("num_bins", "binning"))
def _mce(logits, labels, num_bins, binning):
  return _mce_from_sums(*_bin_sums(logits, labels, num_bins, binning))


def _brier_terms(probs, labels):
  onehot = jax.nn.one_hot(labels, probs.shape[-1], dtype=jnp.float32)  # zeros when out of range
  return jnp.mean(jnp.sum(jnp.square(probs - onehot), axis=-1))


def _nll_terms(logp, labels):
  c = logp.shape[-1]
  inside = (labels >= 0) & (labels < c)
  picked = jnp.take_along_axis(logp, jnp.clip(labels, 0, c - 1)[:, None], axis=-1)[:, 0]
  return -jnp.mean(jnp.where(inside, picked, -jnp.inf))


@jax.jit
def _brier(logits, labels):
  return _brier_terms(_softmax_parts(logits)[0], labels)


@jax.jit
def _nll(logits, labels):
  return _nll_terms(_softmax_parts(logits)[1], labels)


# --------------------------------------------------------------------------------------------
# metrics


def expected_calibration_error(logits: Any, labels: Any, *, num_bins: int = 15,
                               binning: str = "width") -> jax.Array:
  r"""Expected calibration error: the mean gap between confidence and accuracy over bins.

  .. math::
    \mathrm{ECE} = \sum_{b=1}^{B} \frac{n_b}{N}\,\bigl|\mathrm{acc}_b - \mathrm{conf}_b\bigr|

  where bin :math:`b` holds :math:`n_b` examples, :math:`\mathrm{conf}_b` is their mean
  confidence :math:`\max_c p_c` and :math:`\mathrm{acc}_b` the fraction whose argmax (lowest index
  on ties) equals the label. Empty bins contribute 0. The bins are described in the module
  docstring: ``"width"`` splits ``[0, 1]`` into ``(b/B, (b+1)/B]``, ``"mass"`` splits the
  examples sorted by confidence into groups of equal size.

  Args:
    logits: ``[N, C]`` float logits or log-probabilities.
    labels: ``[N]`` integer class indices in ``[0, C)``.
    num_bins: number of bins ``B >= 1`` (static).
    binning: ``"width"`` (equal-width bins) or ``"mass"`` (equal-mass, adaptive bins); static.

  Returns:
    ``float32`` scalar in ``[0, 1]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxlogits import calibration as cal
    >>> logits = jnp.log(jnp.array([[0.9, 0.1], [0.5, 0.5], [0.8, 0.2], [0.3, 0.7]]))
    >>> labels = jnp.array([0, 1, 0, 0])
    >>> cal.expected_calibration_error(logits, labels, num_bins=2).round(4)
    Array(0.225, dtype=float32)
    >>> cal.expected_calibration_error(logits, labels, num_bins=2, binning="mass").round(4)
    Array(0.375, dtype=float32)

  References:
    Naeini, Cooper and Hauskrecht, "Obtaining Well Calibrated Probabilities Using Bayesian
    Binning", AAAI 2015. https://ojs.aaai.org/index.php/AAAI/article/view/9602

    Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.
    https://arxiv.org/abs/1706.04599

    Nixon et al., "Measuring Calibration in Deep Learning", CVPR Workshops 2019 (equal-mass
    bins). https://arxiv.org/abs/1904.01685
  """
  logits, labels = _check_inputs(logits, labels)
  _check_bins(num_bins, binning)
  return _ece(logits, labels, num_bins, binning)


def maximum_calibration_error(logits: Any, labels: Any, *, num_bins: int = 15,
                              binning: str = "width") -> jax.Array:
  r"""Maximum calibration error: the largest gap between confidence and accuracy in any bin.

  .. math::
    \mathrm{MCE} = \max_{b:\, n_b > 0} \bigl|\mathrm{acc}_b - \mathrm{conf}_b\bigr|

  with the bins, confidences and accuracies of :func:`expected_calibration_error`.

  Args:
    logits: ``[N, C]`` float logits or log-probabilities.
    labels: ``[N]`` integer class indices in ``[0, C)``.
    num_bins: number of bins ``B >= 1`` (static).
    binning: ``"width"`` or ``"mass"`` (static).

  Returns:
    ``float32`` scalar in ``[0, 1]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxlogits import calibration as cal
    >>> logits = jnp.log(jnp.array([[0.9, 0.1], [0.5, 0.5], [0.8, 0.2], [0.3, 0.7]]))
    >>> labels = jnp.array([0, 1, 0, 0])
    >>> cal.maximum_calibration_error(logits, labels, num_bins=2).round(4)
    Array(0.5, dtype=float32)

  References:
    Naeini, Cooper and Hauskrecht, "Obtaining Well Calibrated Probabilities Using Bayesian
    Binning", AAAI 2015. https://ojs.aaai.org/index.php/AAAI/article/view/9602

    Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.
    https://arxiv.org/abs/1706.04599
  """
  logits, labels = _check_inputs(logits, labels)
  _check_bins(num_bins, binning)
  return _mce(logits, labels, num_bins, binning)


def brier_score(logits: Any, labels: Any) -> jax.Array:
  r"""Brier score: the mean squared distance between the probabilities and the one-hot label.

  .. math::
    \mathrm{BS} = \frac{1}{N} \sum_{n=1}^{N} \sum_{c=1}^{C} \bigl(p_{nc} - [y_n = c]\bigr)^2

  It lies in ``[0, 2]``; 0 is a confident, correct prediction for every example.

  Args:
    logits: ``[N, C]`` float logits or log-probabilities.
    labels: ``[N]`` integer class indices in ``[0, C)``.

  Returns:
    ``float32`` scalar.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxlogits import calibration as cal
    >>> logits = jnp.log(jnp.array([[0.9, 0.1], [0.5, 0.5], [0.8, 0.2], [0.3, 0.7]]))
    >>> round(float(cal.brier_score(logits, jnp.array([0, 1, 0, 0]))), 4)
    0.395

  References:
    Brier, "Verification of Forecasts Expressed in Terms of Probability", Monthly Weather
    Review 78(1), 1950.
  """
  logits, labels = _check_inputs(logits, labels)
  return _brier(logits, labels)


def negative_log_likelihood(logits: Any, labels: Any) -> jax.Array:
  r"""Mean negative log-likelihood (cross-entropy) of the labels.

  .. math::
    \mathrm{NLL} = -\frac{1}{N} \sum_{n=1}^{N} \log p_{n, y_n},
    \qquad \log p_{nc} = (\ell_{nc} - m_n) - \log \textstyle\sum_j e^{\ell_{nj} - m_n}

  with :math:`m_n` the row maximum, so large logits lose no digits. A label whose logit is
  ``-inf`` makes the result ``inf``.

  Args:
    logits: ``[N, C]`` float logits or log-probabilities.
    labels: ``[N]`` integer class indices in ``[0, C)``.

  Returns:
    ``float32`` scalar ``>= 0``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxlogits import calibration as cal
    >>> logits = jnp.log(jnp.array([[0.9, 0.1], [0.5, 0.5], [0.8, 0.2], [0.3, 0.7]]))
    >>> cal.negative_log_likelihood(logits, jnp.array([0, 1, 0, 0])).round(4)
    Array(0.5564, dtype=float32)
  """
  logits, labels = _check_inputs(logits, labels)
  return _nll(logits, labels)


# --------------------------------------------------------------------------------------------
# report


class CalibrationReport(NamedTuple):
  """Summary of a classifier's calibration (every field a Python float).

  Attributes:
    accuracy: fraction of examples whose argmax equals the label.
    confidence: mean confidence ``max_c p_c`` (above ``accuracy`` means overconfident).
    ece_width: expected calibration error with equal-width bins.
    ece_mass: expected calibration error with equal-mass bins.
    mce: maximum calibration error with equal-width bins.
    brier: Brier score.
    nll: mean negative log-likelihood.
  """
  accuracy: float
  confidence: float
  ece_width: float
  ece_mass: float
  mce: float
  brier: float
  nll: float


@functools.partial(jax.jit, static_argnames="num_bins")
def _report(logits, labels, num_bins):
  probs, logp, conf, pred = _softmax_parts(logits)
  width = _bin_sums(logits, labels, num_bins, "width")
  return (jnp.mean((pred == labels).astype(jnp.float32)), jnp.mean(conf),
          _ece_from_sums(*width), _ece_from_sums(*_bin_sums(logits, labels, num_bins, "mass")),
          _mce_from_sums(*width), _brier_terms(probs, labels), _nll_terms(logp, labels))


def calibration_report(logits: Any, labels: Any, num_bins: int = 15) -> CalibrationReport:
  r"""Accuracy, mean confidence, ECE (both binnings), MCE, Brier score and NLL in one call.

  .. math::
    \mathrm{acc} = \tfrac{1}{N} \textstyle\sum_n [\arg\max_c p_{nc} = y_n], \qquad
    \overline{\mathrm{conf}} = \tfrac{1}{N} \textstyle\sum_n \max_c p_{nc}

  and the metrics of :func:`expected_calibration_error`, :func:`maximum_calibration_error`
  (equal-width bins), :func:`brier_score` and :func:`negative_log_likelihood`. Runs eagerly.

  Args:
    logits: ``[N, C]`` float logits or log-probabilities.
    labels: ``[N]`` integer class indices in ``[0, C)``.
    num_bins: number of bins ``B >= 1`` for the binned metrics.

  Returns:
    A :class:`CalibrationReport` of Python floats.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxlogits import calibration as cal
    >>> logits = jnp.log(jnp.array([[0.9, 0.1], [0.5, 0.5], [0.8, 0.2], [0.3, 0.7]]))
    >>> r = cal.calibration_report(logits, jnp.array([0, 1, 0, 0]), num_bins=2)
    >>> r.accuracy, round(r.confidence, 4), round(r.ece_width, 4), round(r.ece_mass, 4)
    (0.5, 0.725, 0.225, 0.375)

  References:
    Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.
    https://arxiv.org/abs/1706.04599
  """
  logits, labels = _check_inputs(logits, labels)
  _check_bins(num_bins, "width")
  values = jax.device_get(_report(logits, labels, num_bins))
  return CalibrationReport(*(float(v) for v in values))


# --------------------------------------------------------------------------------------------
# temperature scaling


@jax.jit
def _label_logit_finite(logits, labels):
  e = nm.effective(nm.sanitize(logits))
  return jnp.isfinite(jnp.take_along_axis(e, labels[:, None], axis=-1)[:, 0])


@jax.jit
def _fit_log_temperature(logits, labels, log_t0, learning_rate, steps):
  e = nm.effective(nm.sanitize(logits))
  finite = jnp.isfinite(e)
  # Offsets from the row maximum, clamped finite so that no -inf meets the traced scale below
  # (its gradient would be inf * 0 = NaN); masked entries stay a constant -inf.
  d = jnp.where(finite, jnp.maximum(e - nm.row_max(e), -jnp.finfo(jnp.float32).max), 0.0)
  d_label = jnp.take_along_axis(d, labels[:, None], axis=-1)[:, 0]

  def loss(log_t):
    beta = jnp.exp(-log_t)
    scaled = jnp.where(finite, d * beta, -jnp.inf)  # max is 0: log-sum-exp needs no shift
    log_z = jnp.log(jnp.sum(jnp.exp(scaled), axis=-1))
    return jnp.mean(log_z - d_label * beta)

  opt = optax.adam(learning_rate)

  def step(_, carry):
    log_t, state = carry
    updates, state = opt.update(jax.grad(loss)(log_t), state, log_t)
    return optax.apply_updates(log_t, updates), state

  log_t, _ = lax.fori_loop(0, steps, step, (log_t0, opt.init(log_t0)))
  return log_t


def fit_temperature(logits: Any, labels: Any, *, init: float = 1.0, steps: int = 200,
                    learning_rate: float = 0.05) -> float:
  r"""Fits the temperature that minimises the NLL of ``logits / T`` on held-out labels.

  .. math::
    T^\star = \arg\min_{T > 0} \; -\frac{1}{N} \sum_{n=1}^{N}
      \log \operatorname{softmax}(\ell_n / T)_{y_n}

  Optimises :math:`s = \log T` (so ``T`` stays positive) with ``optax.adam``, ``steps``
  full-batch steps from ``s = log(init)``; the result is deterministic. Dividing the logits by
  ``T`` (for instance with :func:`jaxlogits.temperature`) keeps every prediction and recalibrates
  the confidences: ``T > 1`` means the model was overconfident. Adam moves ``s`` by at most about
  ``learning_rate`` per step, so the defaults reach temperatures up to a factor of about
  ``e^10`` from ``init``. If the NLL has no minimum (every example correct with a margin, say)
  the last iterate is returned. Runs eagerly and returns a Python float.

  Args:
    logits: ``[N, C]`` float logits or log-probabilities of a held-out set.
    labels: ``[N]`` integer class indices in ``[0, C)``; each label's logit must be finite.
    init: starting temperature, finite and ``> 0``.
    steps: number of Adam steps, an int ``>= 0``.
    learning_rate: Adam step size on ``log T``, finite and ``> 0``.

  Returns:
    The fitted temperature, a Python ``float > 0``.

  Examples:
    >>> import numpy as np
    >>> from jaxlogits import calibration as cal
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(2000, 5)).astype(np.float32)
    >>> y = np.array([rng.choice(5, p=np.exp(r) / np.exp(r).sum()) for r in z])
    >>> t = cal.fit_temperature(3.0 * z, y)  # three times too confident
    >>> 2.7 < t < 3.3
    True

  References:
    Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.
    https://arxiv.org/abs/1706.04599
  """
  logits, labels = _check_inputs(logits, labels)
  _checks.check_range("init", init, lo=0.0, lo_open=True, finite=True)
  if np.ndim(init) != 0:
    raise ValueError(f"init must be a scalar, got shape {np.shape(init)}")
  if not _checks.is_int(steps) or steps < 0:
    raise ValueError(f"steps must be an int >= 0, got {steps!r}")
  _checks.check_range("learning_rate", learning_rate, lo=0.0, lo_open=True, finite=True)
  if np.ndim(learning_rate) != 0:
    raise ValueError(f"learning_rate must be a scalar, got shape {np.shape(learning_rate)}")
  finite = np.asarray(_label_logit_finite(logits, labels))
  if not np.all(finite):
    i = int(np.argmin(finite))
    raise ValueError(
        f"labels[{i}] = {int(labels[i])} has logit -inf (or NaN) in logits row {i}: its NLL is "
        f"infinite at every temperature")
  log_t = _fit_log_temperature(logits, labels, jnp.float32(math.log(float(init))),
                               jnp.float32(learning_rate), jnp.int32(steps))
  return float(jnp.exp(log_t))


# --------------------------------------------------------------------------------------------
# reliability diagram


@jax.jit
def _confidences(logits):
  return _softmax_parts(logits)[2]


def reliability_diagram(logits: Any, labels: Any, path: str | os.PathLike, *,
                        num_bins: int = 15, binning: str = "width",
                        title: str | None = None) -> str | os.PathLike:
  r"""Saves a reliability diagram (accuracy per confidence bin) and a confidence histogram.

  The top panel draws one bar per non-empty bin at height :math:`\mathrm{acc}_b`, spanning the
  bin's confidence range, with the gap to the mean confidence :math:`\mathrm{conf}_b` shaded and
  the diagonal :math:`\mathrm{acc} = \mathrm{conf}` of perfect calibration; the ECE is printed
  in a corner. The bottom panel is the histogram of confidences over ``num_bins`` equal-width
  bins (fraction of examples) with the overall accuracy and mean confidence marked. Uses
  matplotlib's Agg renderer without touching pyplot's global state; the file is a PNG whatever
  its extension.

  Args:
    logits: ``[N, C]`` float logits or log-probabilities.
    labels: ``[N]`` integer class indices in ``[0, C)``.
    path: file to write.
    num_bins: number of bins ``B >= 1``.
    binning: ``"width"`` or ``"mass"`` bins for the top panel.
    title: figure title; ``None`` gives ``"Reliability diagram"``.

  Returns:
    ``path``, unchanged.

  Raises:
    ImportError: matplotlib is not installed (``pip install 'jaxlogits[plot]'``).

  Examples:
    >>> import os, tempfile
    >>> import jax.numpy as jnp
    >>> from jaxlogits import calibration as cal
    >>> logits = jnp.log(jnp.array([[0.9, 0.1], [0.5, 0.5], [0.8, 0.2], [0.3, 0.7]]))
    >>> path = os.path.join(tempfile.mkdtemp(), "reliability.png")
    >>> try:
    ...   out = cal.reliability_diagram(logits, jnp.array([0, 1, 0, 0]), path, num_bins=5)
    ... except ImportError:  # matplotlib is optional
    ...   out = path
    >>> out == path
    True

  References:
    DeGroot and Fienberg, "The Comparison and Evaluation of Forecasters", The Statistician
    32(1/2), 1983.

    Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.
    https://arxiv.org/abs/1706.04599
  """
  logits, labels = _check_inputs(logits, labels)
  _check_bins(num_bins, binning)
  try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
  except ImportError as err:
    raise ImportError(
        "reliability_diagram needs matplotlib; install it with: pip install 'jaxlogits[plot]'"
    ) from err

  count, conf_sum, correct_sum = (
      np.asarray(a, np.float64) for a in _bin_sums_jit(logits, labels, num_bins, binning))
  hist = np.asarray(_bin_sums_jit(logits, labels, num_bins, "width")[0], np.float64)
  conf = np.asarray(_confidences(logits), np.float64)
  n = conf.shape[0]
  accuracy = float(correct_sum.sum() / n)
  ece = float(np.abs(correct_sum - conf_sum).sum() / n)
  filled = count > 0
  acc_b = np.where(filled, correct_sum / np.maximum(count, 1.0), 0.0)
  conf_b = np.where(filled, conf_sum / np.maximum(count, 1.0), 0.0)
  width_edges = np.arange(num_bins + 1) / num_bins
  if binning == "width":
    left, right = width_edges[:-1], width_edges[1:]
  else:
    ids = np.asarray(_bin_ids_jit(jnp.asarray(conf, jnp.float32), num_bins, binning))
    hi = np.array([conf[ids == b].max() if f else 0.0 for b, f in enumerate(filled)])
    lo = np.array([conf[ids == b].min() if f else 0.0 for b, f in enumerate(filled)])
    left = np.concatenate([[lo[0]], hi[:-1]])  # from the previous group's largest confidence
    right = np.maximum(hi, left + 0.01)

  fig = Figure(figsize=(5.0, 6.5))
  FigureCanvasAgg(fig)
  top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
  w = (right - left)[filled]
  top.bar(left[filled], acc_b[filled], width=w, align="edge", color="tab:blue",
          edgecolor="black", linewidth=0.6, label="accuracy")
  top.bar(left[filled], (conf_b - acc_b)[filled], bottom=acc_b[filled], width=w, align="edge",
          color="tab:red", alpha=0.3, edgecolor="tab:red", hatch="//", linewidth=0.6,
          label="gap to confidence")
  top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
  top.set_xlim(0, 1)
  top.set_ylim(0, 1)
  top.set_ylabel("accuracy")
  top.set_title(title if title is not None else "Reliability diagram")
  top.legend(loc="upper left", fontsize=8)
  top.text(0.97, 0.03, f"ECE ({binning}, {num_bins} bins) = {100 * ece:.2f}%",
           transform=top.transAxes, ha="right", va="bottom", fontsize=9,
           bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
  bottom.bar(width_edges[:-1], hist / n, width=1.0 / num_bins, align="edge", color="tab:gray",
             edgecolor="black", linewidth=0.6)
  bottom.axvline(accuracy, color="tab:blue", linestyle="-", label=f"accuracy {accuracy:.3f}")
  bottom.axvline(float(conf.mean()), color="tab:red", linestyle="--",
                 label=f"mean confidence {conf.mean():.3f}")
  bottom.set_xlabel("confidence")
  bottom.set_ylabel("fraction")
  bottom.legend(loc="upper left", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, format="png", dpi=100)
  return path


_bin_sums_jit = jax.jit(_bin_sums, static_argnames=("num_bins", "binning"))
_bin_ids_jit = jax.jit(_bin_ids, static_argnames=("num_bins", "binning"))
