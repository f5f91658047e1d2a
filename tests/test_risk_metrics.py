"""Discrimination, calibration and decision-curve metrics: hand-computed cases and properties."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pytest

from risk import (
    MetricsError,
    auc_ci,
    brier_score,
    calibration_intercept_slope,
    delong_test,
    delong_variance,
    net_benefit,
    roc_auc,
    roc_curve,
    sensitivity_specificity,
    wilson_interval,
)

# Fractures at 0.35 and 0.8, non-fractures at 0.1 and 0.4. Pairs (fx, no fx):
# (0.35, 0.1) 1, (0.35, 0.4) 0, (0.8, 0.1) 1, (0.8, 0.4) 1 -> AUC = 3/4.
Y4 = np.array([0, 0, 1, 1])
S4 = np.array([0.1, 0.4, 0.35, 0.8])


def _pairwise_delong(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Reference: DeLong's structural components from the O(m n) pair kernel (not midranks)."""

    def components(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, z = s[y == 1], s[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        return psi.mean(axis=1), psi.mean(axis=0)

    (va10, va01), (vb10, vb01) = components(a), components(b)
    m, n = va10.size, va01.size
    s10 = np.cov(np.vstack([va10, vb10]))
    s01 = np.cov(np.vstack([va01, vb01]))
    cov = s10 / m + s01 / n
    return float(va10.mean() - vb10.mean()), float(cov[0, 0]), float(
        cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    )


# ---------------------------------------------------------------------------------------------
# AUC and ROC.
# ---------------------------------------------------------------------------------------------


def test_auc_hand_cases_with_ties() -> None:
    assert roc_auc(Y4, S4) == 0.75
    # one tied pair counts 1/2: pairs (2,1) 1, (2,2) 1/2, (3,1) 1, (3,2) 1 -> 3.5/4
    assert roc_auc([0, 0, 1, 1], [1, 2, 2, 3]) == 0.875
    assert roc_auc([0, 1], [5.0, 5.0]) == 0.5
    assert roc_auc([True, False], [1, 0]) == 1.0


def test_roc_curve_hand_case() -> None:
    curve = roc_curve([0, 0, 1, 1], [1, 2, 2, 3])
    # thresholds inf, 3, 2, 1: positives {} {3} {2,2,3} {all}
    np.testing.assert_array_equal(curve.thresholds, [np.inf, 3, 2, 1])
    np.testing.assert_array_equal(curve.tpr, [0, 0.5, 1, 1])
    np.testing.assert_array_equal(curve.fpr, [0, 0, 0.5, 1])
    assert curve.auc == 0.875


def test_auc_properties_on_random_scores() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.normal(size=60) + y, 1)  # rounding makes ties
    auc = roc_auc(y, s)
    curve = roc_curve(y, s)
    assert np.trapezoid(curve.tpr, curve.fpr) == pytest.approx(auc, abs=1e-12)
    assert np.all(np.diff(curve.fpr) >= 0) and np.all(np.diff(curve.tpr) >= 0)
    assert (curve.fpr[-1], curve.tpr[-1]) == (1.0, 1.0)
    assert roc_auc(y, -s) == pytest.approx(1.0 - auc)  # reversing the score
    assert roc_auc(y, np.exp(s)) == pytest.approx(auc)  # monotone transform


# ---------------------------------------------------------------------------------------------
# DeLong and bootstrap intervals.
# ---------------------------------------------------------------------------------------------


def test_delong_variance_hand_case() -> None:
    # V10 (per fracture, share of non-fractures below): 0.35 -> 1/2, 0.8 -> 1; var (ddof 1) 1/8
    # V01 (per non-fracture, share of fractures above): 0.1 -> 1, 0.4 -> 1/2; var 1/8
    # Var = 1/8 / 2 + 1/8 / 2 = 0.125
    assert delong_variance(Y4, S4) == pytest.approx(0.125)
    est = auc_ci(Y4, S4)
    # 0.75 -/+ 1.959964 * sqrt(0.125) = 0.75 -/+ 0.692952 -> [0.057048, 1 (clipped)]
    assert est.se == pytest.approx(math.sqrt(0.125))
    assert est.lower == pytest.approx(0.057048, abs=1e-6)
    assert est.upper == 1.0
    assert (est.method, est.n_positive, est.n_negative) == ("delong", 2, 2)


def test_delong_test_hand_case() -> None:
    # B separates perfectly: AUC 1, all components 1, so Var_B = Cov = 0;
    # z = (0.75 - 1) / sqrt(0.125) = -0.707107, p = 2 Phi(-0.707107) = 0.4795
    result = delong_test(Y4, S4, [0.1, 0.2, 0.3, 0.4])
    assert (result.auc_a, result.auc_b, result.difference) == (0.75, 1.0, -0.25)
    assert result.z == pytest.approx(-0.7071068)
    assert result.p_value == pytest.approx(0.4795001, abs=1e-6)


def test_delong_fast_algorithm_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(7)
    y = np.r_[np.ones(14, int), np.zeros(86, int)]  # a Van der Wal-sized cohort
    a = np.round(rng.normal(size=100) + 1.2 * y, 1)
    b = np.round(0.6 * a + rng.normal(size=100), 1)
    diff, var_a, var_diff = _pairwise_delong(y, a, b)
    result = delong_test(y, a, b)
    assert result.difference == pytest.approx(diff, abs=1e-12)
    assert delong_variance(y, a) == pytest.approx(var_a, rel=1e-10)
    assert result.se**2 == pytest.approx(var_diff, rel=1e-10)
    swapped = delong_test(y, b, a)
    assert swapped.z == pytest.approx(-result.z) and swapped.p_value == pytest.approx(
        result.p_value
    )


def test_delong_identical_scores_give_z0_p1() -> None:
    result = delong_test(Y4, S4, 10 * S4)  # same ranking
    assert (result.z, result.p_value, result.se) == (0.0, 1.0, 0.0)


def test_bootstrap_interval_is_seeded_and_brackets_the_auc() -> None:
    rng = np.random.default_rng(11)
    y = np.r_[np.ones(12, int), np.zeros(40, int)]
    s = rng.normal(size=52) + y
    first = auc_ci(y, s, method="bootstrap", n_bootstrap=500, seed=5)
    again = auc_ci(y, s, method="bootstrap", n_bootstrap=500, seed=5)
    other = auc_ci(y, s, method="bootstrap", n_bootstrap=500, seed=6)
    assert (first.lower, first.upper) == (again.lower, again.upper)
    assert (first.lower, first.upper) != (other.lower, other.upper)
    assert 0.0 <= first.lower < first.auc < first.upper <= 1.0
    delong = auc_ci(y, s)
    # both estimate the same sampling SD; they agree to within ~25% at this size
    assert first.se == pytest.approx(delong.se, rel=0.25)


# ---------------------------------------------------------------------------------------------
# Sensitivity, specificity, Wilson.
# ---------------------------------------------------------------------------------------------


def test_wilson_interval_hand_values() -> None:
    # 8/10, z = 1.959964: centre (0.8 + 0.192073) / 1.384146 = 0.716738,
    # half 1.416009 * sqrt(0.016 + 0.0096036) = 0.226577 -> (0.490162, 0.943318)
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((0.490162, 0.943318), abs=1e-6)
    # 0/10: upper = z^2 / (n + z^2) = 3.841459 / 13.841459 = 0.277533
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-6)
    assert wilson_interval(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-6)
    assert wilson_interval(10, 10)[1] == 1.0


def test_sensitivity_specificity_at_mirels_9() -> None:
    # totals of 4 fractures and 6 non-fractures; rule total >= 9
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    totals = [12, 10, 9, 7, 9, 10, 8, 6, 5, 11]
    r = sensitivity_specificity(y, totals, threshold=9)
    # TP 3 (12, 10, 9), FN 1 (7); FP 3 (9, 10, 11), TN 3 (8, 6, 5)
    assert (r.tp, r.fn, r.fp, r.tn) == (3, 1, 3, 3)
    assert r.sensitivity.value == 0.75 and r.specificity.value == 0.5
    assert (r.sensitivity.lower, r.sensitivity.upper) == pytest.approx(wilson_interval(3, 4))
    assert (r.specificity.lower, r.specificity.upper) == pytest.approx(wilson_interval(3, 6))
    binary = sensitivity_specificity(y, np.asarray(totals) >= 9)
    assert (binary.tp, binary.fn, binary.fp, binary.tn) == (3, 1, 3, 3)
    assert binary.threshold is None


# ---------------------------------------------------------------------------------------------
# Brier, calibration, decision curves.
# ---------------------------------------------------------------------------------------------


def test_brier_hand_case() -> None:
    # ((0.8 - 1)^2 + (0.3 - 0)^2) / 2 = (0.04 + 0.09) / 2
    assert brier_score([1, 0], [0.8, 0.3]) == pytest.approx(0.065)
    assert brier_score([0, 0], [0.0, 0.0]) == 0.0  # one class is allowed here


def test_calibration_of_exactly_calibrated_groups_is_0_and_1() -> None:
    # p = 0.2 for 5 femurs with 1 fracture, 0.5 for 2 with 1, 0.8 for 5 with 4: observed
    # frequencies equal p, so a = 0, b = 1 solves the recalibration score equations exactly.
    y = [1, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 0]
    p = [0.2] * 5 + [0.5] * 2 + [0.8] * 5
    fit = calibration_intercept_slope(y, p)
    assert fit.slope == pytest.approx(1.0, abs=1e-9)
    assert fit.intercept == pytest.approx(0.0, abs=1e-9)
    assert fit.joint_intercept == pytest.approx(0.0, abs=1e-9)


def test_calibration_slope_detects_overconfident_predictions() -> None:
    rng = np.random.default_rng(2)
    true_logit = rng.normal(-1.0, 1.2, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    overconfident = 1 / (1 + np.exp(-2.0 * true_logit))  # logits doubled -> slope 1/2
    fit = calibration_intercept_slope(y, overconfident)
    assert fit.slope == pytest.approx(0.5, abs=0.03)
    shifted = 1 / (1 + np.exp(-(true_logit - 1.0)))  # risks underestimated by 1 logit
    assert calibration_intercept_slope(y, shifted).intercept == pytest.approx(1.0, abs=0.06)


def test_net_benefit_hand_case() -> None:
    # y = 1 1 0 0 0, p = .9 .4 .6 .2 .1, prevalence 0.4
    # pt 0.25: treated .9 .4 .6 -> TP 2, FP 1: 2/5 - 1/5 * 1/3 = 0.333333; all: .4 - .6/3 = .2
    # pt 0.5: treated .9 .6 -> TP 1, FP 1: 1/5 - 1/5 * 1 = 0; all: .4 - .6 = -.2
    curve = net_benefit([1, 1, 0, 0, 0], [0.9, 0.4, 0.6, 0.2, 0.1], [0.25, 0.5])
    np.testing.assert_allclose(curve.model, [1 / 3, 0.0], atol=1e-12)
    np.testing.assert_allclose(curve.treat_all, [0.2, -0.2], atol=1e-12)
    np.testing.assert_array_equal(curve.treat_none, [0.0, 0.0])
    assert curve.prevalence == 0.4


def test_net_benefit_properties() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 200)
    curve = net_benefit(y, rng.random(200))
    assert curve.thresholds.size == 99 and curve.thresholds[0] == 0.01
    # a perfect model's net benefit is the prevalence at every threshold
    perfect = net_benefit(y, y.astype(float))
    np.testing.assert_allclose(perfect.model, y.mean())
    assert np.all(perfect.model >= perfect.treat_all - 1e-12)


# ---------------------------------------------------------------------------------------------
# Errors: every message matched.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: roc_auc([0, 1, 1], [0.1, 0.2]), "scores has 2 values but y_true has 3"),
        (lambda: roc_auc([0, 2], [0.1, 0.2]), "y_true must be binary (0/1), got 2 at index 1"),
        (lambda: roc_auc([1, 1], [0.1, 0.2]),
         "y_true has only fractured femurs (2 of them); both classes are needed"),
        (lambda: roc_auc([0, 1], [0.1, np.nan]), "scores has a non-finite value nan at index 1"),
        (lambda: roc_auc(["a", "b"], [0.1, 0.2]), "y_true must be numeric 0/1, got dtype <U1"),
        (lambda: roc_auc([], []), "y_true must be a non-empty 1-D array, got shape (0,)"),
        (lambda: roc_auc([0, 1], [[0.1, 0.2]]), "scores must be a 1-D array, got shape (1, 2)"),
        (lambda: delong_variance([0, 1, 1], [0.1, 0.2, 0.3]),
         "DeLong variance needs at least 2 fractured and 2 non-fractured femurs, got 2 and 1"),
        (lambda: auc_ci(Y4, S4, method="jackknife"),  # type: ignore[arg-type]
         "unknown AUC interval method 'jackknife'"),
        (lambda: auc_ci(Y4, S4, method="bootstrap", n_bootstrap=10),
         "n_bootstrap must be an integer >= 100, got 10"),
        (lambda: auc_ci(Y4, S4, level=95), "confidence level must be in (0, 1), got 95"),
        (lambda: brier_score([0, 1], [0.5, 1.5]),
         "y_prob must be probabilities in [0, 1], got 1.5 at index 1"),
        (lambda: calibration_intercept_slope([0, 1], [0.3, 0.3]),
         "all predicted probabilities are equal; the calibration slope is undefined"),
        (lambda: net_benefit([0, 1], [0.2, 0.8], [0.0, 0.5]),
         "decision-curve thresholds must be a non-empty 1-D array of values in (0, 1)"),
        (lambda: sensitivity_specificity([0, 1], [0.2, 0.8]),
         "threshold=None needs binary predictions (0/1), got other values"),
        (lambda: sensitivity_specificity([0, 1], [0.2, 0.8], threshold=np.nan),
         "threshold must be a finite number, got nan"),
        (lambda: wilson_interval(3, 0), "Wilson interval needs 0 <= successes <= n and n >= 1"),
        (lambda: wilson_interval(2.5, 4),  # type: ignore[arg-type]
         "successes must be an integer count, got 2.5"),
    ],
)
def test_invalid_inputs_are_refused(call: Callable[[], object], message: str) -> None:
    with pytest.raises(MetricsError, match=re.escape(message)) as info:
        call()
    assert info.value.hint
