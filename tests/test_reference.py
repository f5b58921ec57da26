"""Self-test of the float64 reference (tests/reference.py) on hand-worked cases, plus a few
property checks that the reference and the strategies (tests/strategies.py) fit together.

Nothing here imports jaxlogits: these tests pin down the oracle itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import reference as R
from tests import strategies as S

NINF = -np.inf
INF = np.inf
F32_MAX = R.F32_MAX


def logits_of(probs):
    """Logits whose softmax is ``probs`` (log of the probabilities)."""
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(probs, dtype=np.float64))


def kept(out):
    """Indices of the entries that are not -inf."""
    return [i for i, v in enumerate(out) if v > NINF]


def assert_row(out, expected):
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected, dtype=np.float64))


# ----------------------------------------------------------------------------------------------
# distributions
# ----------------------------------------------------------------------------------------------
class TestDistributions:
    def test_softmax_basic(self):
        np.testing.assert_allclose(R.softmax_ref([0.0, 0.0]), [0.5, 0.5])
        np.testing.assert_allclose(R.softmax_ref(logits_of([0.5, 0.3, 0.2])), [0.5, 0.3, 0.2])

    def test_softmax_nan_and_masked(self):
        np.testing.assert_allclose(R.softmax_ref([0.0, np.nan, NINF, 0.0]), [0.5, 0, 0, 0.5])

    def test_softmax_plus_inf_rule(self):
        assert_row(R.softmax_ref([INF, 1.0, INF, np.nan, 1e30]), [0.5, 0, 0.5, 0, 0])

    def test_softmax_all_masked(self):
        assert_row(R.softmax_ref([NINF, np.nan]), [0.0, 0.0])

    def test_softmax_huge_spread(self):
        # float64 handles 3e38 - (-3e38); the small one has probability 0
        assert_row(R.softmax_ref([3e38, -3e38]), [1.0, 0.0])

    def test_log_softmax(self):
        np.testing.assert_allclose(R.log_softmax_ref(logits_of([0.25, 0.75])), np.log([0.25, 0.75]))
        assert_row(R.log_softmax_ref([INF, 0.0, INF]), [-math.log(2), NINF, -math.log(2)])
        assert_row(R.log_softmax_ref([NINF, np.nan]), [NINF, NINF])

    def test_entropy(self):
        assert R.entropy_ref([0.0, 0.0, 0.0, 0.0]) == pytest.approx(math.log(4))
        assert R.entropy_ref([0.0, 0.0, NINF, np.nan]) == pytest.approx(math.log(2))
        assert R.entropy_ref([5.0]) == 0.0
        assert R.entropy_ref([INF, INF, INF, 1.0]) == pytest.approx(math.log(3))
        assert R.entropy_ref([NINF, NINF]) == 0.0
        p = np.array([0.5, 0.3, 0.2])
        assert R.entropy_ref(np.log(p)) == pytest.approx(-(p * np.log(p)).sum())
        # 0 log 0 = 0 even for a finite logit whose probability underflows
        assert R.entropy_ref([0.0, -1e5]) == 0.0


# ----------------------------------------------------------------------------------------------
# arithmetic transforms
# ----------------------------------------------------------------------------------------------
class TestTemperature:
    def test_scale(self):
        assert_row(R.temperature_ref([2.0, -4.0, NINF, INF], 2.0), [1.0, -2.0, NINF, INF])

    def test_identity_and_nan(self):
        assert_row(R.temperature_ref([1.0, np.nan], 1.0), [1.0, NINF])

    def test_greedy_lowest_index(self):
        assert_row(R.temperature_ref([1.0, 3.0, 3.0, np.nan], 0.0), [NINF, 3.0, NINF, NINF])
        assert_row(R.temperature_ref([1.0, INF, INF], 0.0), [NINF, INF, NINF])
        assert_row(R.temperature_ref([NINF, np.nan], 0.0), [NINF, NINF])

    def test_overflow_clamped(self):
        out = R.temperature_ref([1e30, -1e30, 0.0, INF], 1e-30)
        assert_row(out, [F32_MAX, -F32_MAX, 0.0, INF])

    def test_negative_rejected(self):
        with pytest.raises(ValueError, match="temperature"):
            R.temperature_ref([0.0], -1.0)


class TestPenalties:
    def test_logit_bias(self):
        assert_row(R.logit_bias_ref([1.0, 2.0, NINF], [1.0, -1.0, 5.0]), [2.0, 1.0, NINF])
        assert_row(R.logit_bias_ref([1.0, 2.0], 0.5), [1.5, 2.5])

    def test_logit_bias_clamp_and_infinite_bias(self):
        assert_row(R.logit_bias_ref([3e38, -3e38], [1e38, -1e38]), [F32_MAX, -F32_MAX])
        # an infinite bias is not an overflow: -inf bans, +inf + -inf is NaN -> -inf
        assert_row(R.logit_bias_ref([1.0, INF, np.nan], [NINF, NINF, 1.0]), [NINF, NINF, NINF])

    def test_repetition(self):
        out = R.repetition_penalty_ref([2.0, -2.0, 2.0, 0.0, NINF], [1, 1, 0, 3, 2], 2.0)
        assert_row(out, [1.0, -4.0, 2.0, 0.0, NINF])
        # r < 1 rewards repeats, both signs
        assert_row(R.repetition_penalty_ref([2.0, -2.0], [1, 1], 0.5), [4.0, -1.0])
        # overflow of a finite logit is clamped
        assert_row(R.repetition_penalty_ref([-3e38, 3e38], [1, 1], 1e3), [-F32_MAX, 3e38 / 1e3])

    def test_repetition_identity(self):
        assert_row(R.repetition_penalty_ref([2.0, -2.0], [5, 5], 1.0), [2.0, -2.0])

    def test_frequency_presence(self):
        assert_row(R.frequency_penalty_ref([1.0, 1.0, 1.0], [0, 1, 3], 0.5), [1.0, 0.5, -0.5])
        assert_row(R.presence_penalty_ref([1.0, 1.0, 1.0], [0, 1, 3], 0.5), [1.0, 0.5, 0.5])
        assert_row(R.frequency_penalty_ref([1.0, 1.0], [0, 2], -1.0), [1.0, 3.0])
        assert_row(R.frequency_penalty_ref([-3e38, INF], [4, 4], 1e38), [-F32_MAX, INF])


class TestNoRepeatNgram:
    row = np.zeros(6)

    def test_hf_trigram(self):
        # 3-grams of [1 2 3 1 2]: (1 2 3) (2 3 1) (3 1 2); the context ends with (1 2) -> ban 3
        assert kept(R.no_repeat_ngram_ref(self.row, [1, 2, 3, 1, 2], 3)) == [0, 1, 2, 4, 5]

    def test_bigram(self):
        # bigrams (1 2) (2 3) (3 1) (1 2); last token 2 -> ban 3
        assert kept(R.no_repeat_ngram_ref(self.row, [1, 2, 3, 1, 2], 2)) == [0, 1, 2, 4, 5]
        # last token 1 occurs before followed by 2 and by 4 -> ban both
        assert kept(R.no_repeat_ngram_ref(self.row, [1, 2, 1, 4, 1], 2)) == [0, 1, 3, 5]

    def test_unigram_bans_every_seen_token(self):
        assert kept(R.no_repeat_ngram_ref(self.row, [1, 2, 3, 1, 2], 1)) == [0, 4, 5]

    def test_no_complete_ngram(self):
        assert kept(R.no_repeat_ngram_ref(self.row, [1, 2, 3, 1, 2], 4)) == [0, 1, 2, 3, 4, 5]
        # L == n - 1: no n-gram exists yet
        assert kept(R.no_repeat_ngram_ref(self.row, [1, 1], 3)) == [0, 1, 2, 3, 4, 5]
        assert kept(R.no_repeat_ngram_ref(self.row, [], 1)) == [0, 1, 2, 3, 4, 5]

    def test_identity_and_length(self):
        assert kept(R.no_repeat_ngram_ref(self.row, [1, 2, 3, 1, 2], 0)) == [0, 1, 2, 3, 4, 5]
        assert kept(R.no_repeat_ngram_ref(self.row, [1, 2, 3, 1, 2, 9, 9], 3, length=5)) == [
            0, 1, 2, 4, 5,
        ]

    def test_repeated_token(self):
        # [5 5 5], n = 2: bigrams (5 5) (5 5); last 5 -> ban 5
        assert kept(R.no_repeat_ngram_ref(self.row, [5, 5, 5], 2)) == [0, 1, 2, 3, 4]


def _hf_banned(tokens, n):
    """Direct transcription of Hugging Face's dictionary-based algorithm, for cross-checking."""
    if len(tokens) + 1 < n:
        return set()
    ngrams = {}
    for ng in zip(*[tokens[i:] for i in range(n)]):
        ngrams.setdefault(tuple(ng[:-1]), []).append(ng[-1])
    start = len(tokens) + 1 - n
    return set(ngrams.get(tuple(tokens[start : len(tokens)]), []))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_no_repeat_ngram_matches_hf_algorithm(data):
    v = data.draw(st.integers(1, 8))
    tokens = [int(t) for t in data.draw(S.token_contexts(v, 20))]
    n = data.draw(S.ngram_sizes())
    out = R.no_repeat_ngram_ref(np.zeros(v), tokens, n)
    banned = {i for i in range(v) if out[i] == NINF}
    assert banned == (_hf_banned(tokens, n) if n > 0 else set())


class TestGuidance:
    cond = logits_of([0.25, 0.75])
    uncond = np.array([0.0, 0.0])

    def test_s_one_and_zero(self):
        np.testing.assert_allclose(R.guidance_ref(self.cond, self.uncond, 1.0), np.log([0.25, 0.75]))
        np.testing.assert_allclose(R.guidance_ref(self.cond, self.uncond, 0.0), np.log([0.5, 0.5]))

    def test_s_two(self):
        # 2 lc - lu = [2 log .25 - log .5, 2 log .75 - log .5] = [log .125, log 1.125]
        np.testing.assert_allclose(
            R.guidance_ref(self.cond, self.uncond, 2.0), np.log([0.125, 1.125]), rtol=1e-14
        )

    def test_masked_tokens(self):
        out = R.guidance_ref([0.0, NINF, 0.0], [0.0, 0.0, np.nan], 2.0)
        # lc = [log .5, -inf, log .5], lu = [log .5, log .5, -inf]
        np.testing.assert_allclose(out[0], math.log(0.5))
        assert out[1] == NINF and out[2] == NINF

    def test_fallback_to_cond(self):
        out = R.guidance_ref([0.0, NINF], [NINF, 0.0], 2.0)
        assert_row(out, [0.0, NINF])

    def test_s_zero_keeps_uncond_even_if_masked(self):
        assert_row(R.guidance_ref([0.0, NINF], [NINF, 0.0], 0.0), [NINF, 0.0])

    def test_clamped(self):
        out = R.guidance_ref([0.0, -3e38], [0.0, 3e38], 2.0)
        assert out[1] == -F32_MAX and np.isfinite(out).all()


def test_token_counts():
    toks = np.array([[1, 2, 2, 0, 7], [3, 3, 3, -1, -1]])
    assert_row(R.token_counts_ref(toks, 4), [[1, 1, 2, 0], [0, 0, 0, 3]])
    assert_row(R.token_counts_ref(toks, 4, pad_id=2), [[1, 1, 0, 0], [0, 0, 0, 3]])
    assert_row(R.token_counts_ref(toks, 4, length=[2, 1]), [[0, 1, 1, 0], [0, 0, 0, 1]])
    assert_row(R.token_counts_ref([1, 1], 3), [0, 2, 0])


# ----------------------------------------------------------------------------------------------
# truncations
# ----------------------------------------------------------------------------------------------
class TestTopK:
    def test_ties_kept(self):
        row = [1.0, 3.0, 3.0, 2.0]
        assert kept(R.top_k_ref(row, 1)) == [1, 2]
        assert kept(R.top_k_ref(row, 2)) == [1, 2]
        assert kept(R.top_k_ref(row, 3)) == [1, 2, 3]

    def test_identities(self):
        row = [1.0, np.nan, 2.0]
        for k in (0, -1, 3, 10):
            assert_row(R.top_k_ref(row, k), [1.0, NINF, 2.0])

    def test_fewer_finite_than_k(self):
        assert_row(R.top_k_ref([NINF, 1.0, NINF, 0.0], 3), [NINF, 1.0, NINF, 0.0])

    def test_plus_inf(self):
        assert kept(R.top_k_ref([INF, 1e30, INF, 0.0], 1)) == [0, 2]


class TestTopP:
    row = logits_of([0.5, 0.3, 0.2])

    def test_boundary_is_exclusive(self):
        # the mass above the second token is 0.5, not < 0.5
        assert kept(R.top_p_ref(self.row, 0.5)) == [0]
        assert kept(R.top_p_ref(self.row, 0.51)) == [0, 1]
        assert kept(R.top_p_ref(self.row, 0.81)) == [0, 1, 2]
        assert kept(R.top_p_ref(self.row, 0.3)) == [0]

    def test_ties_at_boundary_kept(self):
        row = logits_of([0.4, 0.3, 0.3])
        assert kept(R.top_p_ref(row, 0.5)) == [0, 1, 2]
        assert kept(R.top_p_ref(row, 0.4)) == [0]

    def test_keep_at_least_one_ties(self):
        assert kept(R.top_p_ref([1.0, 1.0, 0.0], 0.0)) == [0, 1]
        assert kept(R.top_p_ref([1.0, 1.0, 0.0], 1e-30)) == [0, 1]

    def test_identity(self):
        assert_row(R.top_p_ref([1.0, np.nan], 1.0), [1.0, NINF])

    def test_plus_inf(self):
        assert kept(R.top_p_ref([INF, 5.0, INF], 0.5)) == [0, 2]
        assert kept(R.top_p_ref([INF, 5.0, INF], 0.99)) == [0, 2]

    def test_all_masked_unchanged(self):
        assert_row(R.top_p_ref([NINF, np.nan], 0.5), [NINF, NINF])

    def test_margin(self):
        assert R.top_p_margin(self.row, 0.5) < 1e-12
        assert R.top_p_margin(self.row, 0.65) == pytest.approx(0.15)
        assert R.top_p_margin(self.row, 1.0) == INF
        # a near tie below the maximum straddling p: float32 may tie the two
        assert R.top_p_margin([0.0, -1e-38], 0.3) == 0.0
        assert R.top_p_margin([0.0, -1e-38], 0.6) == pytest.approx(0.1)


class TestMinP:
    def test_threshold(self):
        row = [0.0, -1.0, -2.0, -3.0]
        assert kept(R.min_p_ref(row, math.exp(-1.5))) == [0, 1]
        assert kept(R.min_p_ref(row, 1.0)) == [0]
        assert kept(R.min_p_ref([2.0, 2.0, 1.0], 1.0)) == [0, 1]

    def test_identity_and_plus_inf(self):
        assert_row(R.min_p_ref([0.0, np.nan], 0.0), [0.0, NINF])
        assert kept(R.min_p_ref([INF, 1e30, 0.0], 1e-30)) == [0]

    def test_margin(self):
        row = [0.0, -1.0, -2.0, -3.0]
        assert R.min_p_margin(row, math.exp(-1.5)) == pytest.approx(0.5 / 1.5)
        assert R.min_p_margin(row, 1.0) == pytest.approx(1.0)  # |-1 - 0| / 1; max group excluded
        assert R.min_p_margin(row, 0.0) == INF


class TestTypical:
    def test_worked_example(self):
        # p = [.7 .2 .1]: H = 0.80182; -log p = [.35667 1.60944 2.30259];
        # scores = [.44515 .80762 1.50077]; mass with smaller score = [0 .7 .9]
        row = logits_of([0.7, 0.2, 0.1])
        p, h, s = R.typical_scores_ref(row)
        assert h == pytest.approx(0.8018185525, rel=1e-9)
        np.testing.assert_allclose(s, [0.4451435, 0.8076194, 1.5007666], rtol=1e-6)
        assert kept(R.typical_p_ref(row, 0.5)) == [0]
        assert kept(R.typical_p_ref(row, 0.75)) == [0, 1]
        assert kept(R.typical_p_ref(row, 0.95)) == [0, 1, 2]

    def test_most_likely_not_most_typical(self):
        # p = [.4 .3 .3]: H = 1.0889; scores [.1726 .1151 .1151]: the tied 0.3s are more
        # typical than the 0.4; with m = .5 the mass before the 0.4 is .6 -> it is dropped
        row = logits_of([0.4, 0.3, 0.3])
        assert kept(R.typical_p_ref(row, 0.5)) == [1, 2]
        assert kept(R.typical_p_ref(row, 0.7)) == [0, 1, 2]
        assert kept(R.typical_p_ref(row, 0.0)) == [1, 2]  # keep the tied most typical

    def test_identity_plus_inf_masked(self):
        assert_row(R.typical_p_ref([0.0, np.nan], 1.0), [0.0, NINF])
        assert kept(R.typical_p_ref([INF, 3.0, INF, NINF], 0.5)) == [0, 2]
        assert kept(R.typical_p_ref([NINF, 1.0, NINF], 0.2)) == [1]

    def test_margin(self):
        row = logits_of([0.7, 0.2, 0.1])
        assert R.typical_p_margin(row, 0.5) == pytest.approx(0.2)
        assert R.typical_p_margin(row, 0.7) < 1e-12
        assert R.typical_p_margin(row, 1.0) == INF


class TestEpsilonEta:
    row = logits_of([0.5, 0.3, 0.2])

    def test_epsilon(self):
        assert kept(R.epsilon_cutoff_ref(self.row, 0.25)) == [0, 1]
        assert kept(R.epsilon_cutoff_ref(self.row, 0.2)) == [0, 1, 2]  # 0.2 >= 0.2 (float64)
        assert_row(R.epsilon_cutoff_ref([0.0, np.nan], 0.0), [0.0, NINF])

    def test_epsilon_above_max_keeps_max_ties(self):
        assert kept(R.epsilon_cutoff_ref(self.row, 0.6)) == [0]
        assert kept(R.epsilon_cutoff_ref(logits_of([0.4, 0.4, 0.2]), 0.5)) == [0, 1]
        assert kept(R.epsilon_cutoff_ref([INF, INF, 1.0], 0.9)) == [0, 1]

    def test_eta(self):
        # H = -(.5 log .5 + .3 log .3 + .2 log .2) = 1.029653; exp(-H) = 0.357120
        h = R.entropy_ref(self.row)
        assert h == pytest.approx(1.0296530140645737, rel=1e-12)
        # e = 0.5: eta = min(.5, .707107 * .357120) = .252523 -> keep .5, .3
        assert R.eta_threshold_ref(self.row, 0.5) == pytest.approx(math.sqrt(0.5) * math.exp(-h))
        assert R.eta_threshold_ref(self.row, 0.5) == pytest.approx(0.25253, rel=1e-4)
        assert kept(R.eta_cutoff_ref(self.row, 0.5)) == [0, 1]
        # e = 0.3: eta = min(.3, .547723 * .357120) = .195602 -> all three
        assert kept(R.eta_cutoff_ref(self.row, 0.3)) == [0, 1, 2]
        # e = 0.1: eta = min(.1, .11293) = .1
        assert R.eta_threshold_ref(self.row, 0.1) == pytest.approx(0.1)
        # e = 1: eta = min(1, exp(-H)) = .35711 -> only .5
        assert kept(R.eta_cutoff_ref(self.row, 1.0)) == [0]
        assert_row(R.eta_cutoff_ref([0.0, np.nan], 0.0), [0.0, NINF])

    def test_margins(self):
        assert R.epsilon_cutoff_margin(self.row, 0.25) == pytest.approx(0.2)  # |.3-.25|/.25
        assert R.epsilon_cutoff_margin(self.row, 0.0) == INF
        # rule fires and the maximum is near-tied: ambiguous in float32
        assert R.epsilon_cutoff_margin([0.0, -1e-30, -5.0], 0.9) == 0.0
        assert R.epsilon_cutoff_margin([0.0, -1.0, -5.0], 0.9) > 0.5
        eta = math.sqrt(0.5) * math.exp(-R.entropy_ref(self.row))
        assert R.eta_cutoff_margin(self.row, 0.5) == pytest.approx((0.3 - eta) / eta)


class TestTopNSigma:
    def test_threshold(self):
        row = [0.0, 1.0, 2.0, 3.0]  # std = sqrt(1.25) = 1.118
        assert kept(R.top_n_sigma_ref(row, 1.0)) == [2, 3]
        assert kept(R.top_n_sigma_ref(row, 2.0)) == [1, 2, 3]
        assert kept(R.top_n_sigma_ref(row, 1e-9)) == [3]

    def test_std_over_finite_only(self):
        # finite logits [0 3]: std 1.5; thr = 3 - 1.5 * 1.5 = 0.75 -> drop 0
        assert kept(R.top_n_sigma_ref([0.0, NINF, 3.0, np.nan], 1.5)) == [2]
        assert kept(R.top_n_sigma_ref([0.0, NINF, 3.0, np.nan], 2.5)) == [0, 2]

    def test_identities_and_plus_inf(self):
        for n in (0.0, -1.0):
            assert_row(R.top_n_sigma_ref([0.0, np.nan, 1.0], n), [0.0, NINF, 1.0])
        assert kept(R.top_n_sigma_ref([INF, 0.0, 1.0], 100.0)) == [0]

    def test_margin(self):
        row = [0.0, 1.0, 2.0, 3.0]
        thr = 3.0 - math.sqrt(1.25)
        assert R.top_n_sigma_margin(row, 1.0) == pytest.approx((2.0 - thr) / 3.0)
        assert R.top_n_sigma_margin(row, -1.0) == INF


# ----------------------------------------------------------------------------------------------
# batching and the pipeline
# ----------------------------------------------------------------------------------------------
def test_apply_rows_per_row_params():
    logits = np.log(np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]]))
    out = R.apply_rows(R.top_p_ref, logits, np.array([0.5, 0.51]))
    assert kept(out[0]) == [0] and kept(out[1]) == [1, 2]
    out = R.apply_rows(R.top_p_ref, logits, 0.5)
    assert kept(out[0]) == [0] and kept(out[1]) == [2]
    counts = np.array([[1, 0, 0], [0, 0, 1]])
    out = R.apply_rows(R.presence_penalty_ref, np.zeros((2, 3)), counts, np.array([1.0, 2.0]))
    assert_row(out, [[-1, 0, 0], [0, 0, -2]])
    out = R.apply_rows(R.logit_bias_ref, np.zeros((2, 3)), R.rowvec([1.0, 2.0, 3.0]))
    assert_row(out, [[1, 2, 3], [1, 2, 3]])
    out = R.apply_rows(R.no_repeat_ngram_ref, np.zeros((2, 4)), np.array([[1, 2, 1], [3, 3, 3]]), 2)
    assert kept(out[0]) == [0, 1, 3] and kept(out[1]) == [0, 1, 2]
    m = R.row_margins(R.top_p_margin, logits, np.array([0.5, 0.65]))
    assert m[0] < 1e-12 and m[1] == pytest.approx(0.15)
    assert R.apply_rows(R.top_k_ref, np.zeros((2, 3, 4)), 2).shape == (2, 3, 4)


class TestPipeline:
    def test_identity(self):
        assert_row(R.pipeline_ref([1.0, np.nan, INF]), [1.0, NINF, INF])
        assert R.pipeline_margin([1.0, 2.0]) == INF

    def test_order_temperature_first_or_last(self):
        row = [0.0, -1.0, -2.0]
        prm = {"temperature": 0.5, "min_p": math.exp(-1.5)}
        # temperature first: [0 -2 -4]; min_p threshold -1.5 keeps only 0
        assert_row(R.pipeline_ref(row, prm), [0.0, NINF, NINF])
        # temperature last: min_p on [0 -1 -2] keeps [0 -1], then / 0.5
        assert_row(R.pipeline_ref(row, dict(prm, temperature_last=True)), [0.0, -2.0, NINF])

    def test_chain_renormalises(self):
        # top_k 2 then top_p 0.6 on p = [.5 .3 .2]: survivors renormalise to [.625 .375],
        # so the mass above the second is .625 >= .6 and only the first survives
        row = logits_of([0.5, 0.3, 0.2])
        assert kept(R.pipeline_ref(row, {"top_k": 2, "top_p": 0.6})) == [0]
        assert kept(R.top_p_ref(row, 0.6)) == [0, 1]

    def test_penalties_then_ngram_then_greedy(self):
        row = [3.0, 2.9, 1.0, 0.0]
        prm = {"presence_penalty": 1.0, "no_repeat_ngram_size": 1, "temperature": 0.0}
        # presence: token 0 -> 2.0; n-gram 1 bans token 1 (in context); greedy picks token 0
        out = R.pipeline_ref(row, prm, counts=[1, 0, 0, 0], tokens=[1])
        assert_row(out, [2.0, NINF, NINF, NINF])

    def test_masks_and_bias(self):
        prm = {"allowed": [True, True, False], "banned": [False, True, False], "bias": [1.0, 0, 0]}
        assert_row(R.pipeline_ref([0.0, 0.0, 0.0], prm), [1.0, NINF, NINF])

    def test_unknown_key(self):
        with pytest.raises(KeyError):
            R.pipeline_ref([0.0], {"top_q": 0.5})

    def test_margin_sees_each_step_input(self):
        row = logits_of([0.5, 0.3, 0.2])
        assert R.pipeline_margin(row, {"top_p": 0.5}) < 1e-12
        assert R.pipeline_margin(row, {"top_k": 2, "top_p": 0.625}) < 1e-12
        # after arithmetic, top_k is sensitive to rounding ties
        assert R.pipeline_margin([1.0, 1.0 + 1e-9, 0.0], {"temperature": 0.7, "top_k": 1}) < 1e-8


# ----------------------------------------------------------------------------------------------
# properties tying the reference and the strategies together
# ----------------------------------------------------------------------------------------------
_TRUNC = [
    (R.top_p_ref, S.top_ps()),
    (R.min_p_ref, S.min_ps()),
    (R.typical_p_ref, S.typical_ps()),
    (R.epsilon_cutoff_ref, S.epsilons()),
    (R.eta_cutoff_ref, S.etas()),
    (R.top_n_sigma_ref, S.sigmas()),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_truncation_invariants(data):
    row = data.draw(S.logit_rows())
    clean = R.clean_row(row)
    fns = _TRUNC + [(R.top_k_ref, S.top_ks(row.size)), (R.temperature_ref, S.temperatures())]
    fn, params = data.draw(st.sampled_from(fns))
    out = fn(row, data.draw(params))
    assert out.dtype == np.float64 and out.shape == row.shape
    assert not np.isnan(out).any()
    if fn is not R.temperature_ref or out is clean:
        # survivors keep their value; masked stays masked
        surv = out > NINF
        assert np.array_equal(out[surv], clean[surv])
    if (clean > NINF).any():
        assert (out > NINF).any(), "a row with support never becomes all -inf"
        if fn not in (R.temperature_ref, R.typical_p_ref):  # typical may drop the most likely
            assert out.max() == clean.max()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_identity_parameters(data):
    row = data.draw(S.logit_rows())
    clean = R.clean_row(row)
    v = row.size
    counts = data.draw(S.counts(v))
    for out in (
        R.temperature_ref(row, 1.0),
        R.top_k_ref(row, 0),
        R.top_k_ref(row, v),
        R.top_p_ref(row, 1.0),
        R.min_p_ref(row, 0.0),
        R.typical_p_ref(row, 1.0),
        R.epsilon_cutoff_ref(row, 0.0),
        R.eta_cutoff_ref(row, 0.0),
        R.top_n_sigma_ref(row, 0.0),
        R.logit_bias_ref(row, 0.0),
        R.repetition_penalty_ref(row, counts, 1.0),
        R.frequency_penalty_ref(row, counts, 0.0),
        R.presence_penalty_ref(row, counts, 0.0),
        R.no_repeat_ngram_ref(row, data.draw(S.token_contexts(v)), 0),
        R.pipeline_ref(row),
    ):
        assert_row(out, clean)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_arithmetic_keeps_finite_rows_finite(data):
    row = data.draw(S.logit_rows(allow_nan=False, allow_inf=False, allow_neg_inf=False))
    v = row.size
    c = data.draw(S.counts(v))
    outs = [
        R.temperature_ref(row, data.draw(S.temperatures(allow_zero=False))),
        R.logit_bias_ref(row, data.draw(S.biases(v))),
        R.repetition_penalty_ref(row, c, data.draw(S.repetition_penalties())),
        R.frequency_penalty_ref(row, c, data.draw(S.freq_presence())),
        R.presence_penalty_ref(row, c, data.draw(S.freq_presence())),
        R.guidance_ref(row, data.draw(S.logit_rows(v, v, False, False, False)), data.draw(S.guidance_scales())),
    ]
    for out in outs:
        assert np.isfinite(out).all() and (np.abs(out) <= F32_MAX).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_pipeline_and_batches_run(data):
    batch = data.draw(S.logit_batches(max_size=16))
    v = batch.shape[1]
    prm = data.draw(S.pipeline_params(v))
    c = data.draw(S.counts(v))
    toks = data.draw(S.token_contexts(v, 12))
    for row in batch:
        out = R.pipeline_ref(row, prm, counts=c, tokens=toks)
        assert not np.isnan(out).any()
        m = R.pipeline_margin(row, prm, counts=c, tokens=toks)
        assert m >= 0
        assert R.pipeline_ref(row, prm, counts=c, tokens=toks, round_f32=True).shape == (v,)


def test_strategies_reach_the_corners():
    """The row strategy produces V = 1, ties, NaN, +inf, -inf, huge and tiny values."""
    seen = set()

    @settings(max_examples=300, deadline=None, database=None)
    @given(S.logit_rows())
    def probe(row):
        assert row.dtype == np.float32 and row.ndim == 1
        if row.size == 1:
            seen.add("V=1")
        if np.isnan(row).any():
            seen.add("nan")
        if np.isposinf(row).any():
            seen.add("+inf")
        if np.isneginf(row).any():
            seen.add("-inf")
        fin = row[np.isfinite(row)]
        if fin.size and np.abs(fin).max() >= 1e30:
            seen.add("huge")
        if np.any((fin != 0) & (np.abs(fin) < 1e-30)):
            seen.add("tiny")
        if fin.size != np.unique(fin).size:
            seen.add("ties")

    probe()
    assert seen >= {"V=1", "nan", "+inf", "-inf", "huge", "tiny", "ties"}
