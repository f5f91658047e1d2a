"""Performance metrics of fracture-risk scores: discrimination, calibration, clinical utility.

Numbers only (AUC, ROC, Brier and logistic fits from scikit-learn). Conventions: ``y_true``
holds 1 for a fractured femur and 0 for a femur that did not fracture during follow-up; a
*score* is larger for higher risk (pass ``-failure_load`` for a strength, whose low values
mean high risk); a rule is positive where ``score >= threshold``. Methods and their sources
(full references in :data:`risk.mirels.CITATIONS`):

- AUC as the Mann-Whitney probability, ties counted 1/2 (Hanley & McNeil 1982);
- AUC variance, confidence interval and the test of two correlated AUCs (DeLong, DeLong &
  Clarke-Pearson 1988), computed with the midrank algorithm of Sun & Xu 2014; or a
  patient-clustered percentile bootstrap (:mod:`risk.clustered`);
- Wilson score intervals of sensitivity and specificity (Wilson 1927);
- Brier score (Brier 1950);
- calibration intercept and slope by logistic recalibration on logit(p) (Cox 1958);
- decision-curve net benefit (Vickers & Elkin 2006).

Clinical cohorts have at most ~15 fractures: report the intervals, not the point values alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize, special, stats
from sklearn import metrics as sk_metrics
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from core.types import FloatArray, IntArray
from risk.errors import ConvergenceError, MetricsError

__all__ = [
    "AucEstimate",
    "CalibrationFit",
    "DecisionCurve",
    "DelongTest",
    "Proportion",
    "RocCurve",
    "SensSpec",
    "auc_ci",
    "brier_score",
    "calibration_intercept_slope",
    "delong_test",
    "delong_variance",
    "net_benefit",
    "roc_auc",
    "roc_curve",
    "sensitivity_specificity",
    "wilson_interval",
]


#: Probabilities are clipped to [eps, 1 - eps] before taking logits.
LOGIT_EPS = 1e-12


# --------------------------------------------------------------------------------------------
# Input validation.
# --------------------------------------------------------------------------------------------


def _as_binary(y_true: npt.ArrayLike, *, both_classes: bool = True) -> IntArray:
    """Outcomes as a 1-D int64 array of 0/1; refuse anything else."""
    arr = np.asarray(y_true)
    if arr.ndim != 1 or arr.size == 0:
        raise MetricsError(
            f"y_true must be a non-empty 1-D array, got shape {arr.shape}",
            "pass one outcome (0/1) per femur",
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.number):
        raise MetricsError(
            f"y_true must be numeric 0/1, got dtype {arr.dtype}",
            "encode fractured as 1 and not fractured as 0",
        )
    bad = ~np.isin(arr, (0, 1))
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise MetricsError(
            f"y_true must be binary (0/1), got {arr[i].item()!r} at index {i}",
            "encode fractured as 1 and not fractured as 0",
        )
    out = arr.astype(np.int64)
    if both_classes and (out.min() == out.max()):
        only = "fractured" if out[0] == 1 else "non-fractured"
        raise MetricsError(
            f"y_true has only {only} femurs ({out.size} of them); both classes are needed",
            "evaluate on a cohort with at least one fracture and one non-fracture",
        )
    return out


def _as_scores(scores: npt.ArrayLike, n: int, name: str = "scores") -> FloatArray:
    """Scores as a finite 1-D float64 array of length ``n``."""
    arr = np.asarray(scores)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float64)
    if not np.issubdtype(arr.dtype, np.number):
        raise MetricsError(
            f"{name} must be numeric, got dtype {arr.dtype}", f"pass {name} as numbers"
        )
    arr = arr.astype(np.float64)
    if arr.ndim != 1:
        raise MetricsError(
            f"{name} must be a 1-D array, got shape {arr.shape}",
            "pass one score per femur (for predict_proba output take column 1)",
        )
    if arr.size != n:
        raise MetricsError(
            f"{name} has {arr.size} values but y_true has {n}",
            "pass one score per outcome, in the same order",
        )
    if not np.all(np.isfinite(arr)):
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise MetricsError(
            f"{name} has a non-finite value {arr[i].item()!r} at index {i}",
            "drop femurs with missing scores before computing metrics",
        )
    return arr


def _as_probabilities(prob: npt.ArrayLike, n: int, name: str = "y_prob") -> FloatArray:
    arr = _as_scores(prob, n, name)
    if np.any((arr < 0.0) | (arr > 1.0)):
        i = int(np.flatnonzero((arr < 0.0) | (arr > 1.0))[0])
        raise MetricsError(
            f"{name} must be probabilities in [0, 1], got {arr[i].item()!r} at index {i}",
            "pass predicted probabilities (predict_proba(X)[:, 1]), not raw scores",
        )
    return arr


def _check_level(level: float) -> float:
    if isinstance(level, bool) or not (isinstance(level, Real) and 0.0 < float(level) < 1.0):
        raise MetricsError(
            f"confidence level must be in (0, 1), got {level!r}", "use e.g. level=0.95"
        )
    return float(level)


def _z(level: float) -> float:
    return float(stats.norm.ppf(0.5 + level / 2.0))


# --------------------------------------------------------------------------------------------
# ROC and AUC.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RocCurve:
    """Empirical ROC curve of a score.

    Attributes:
        fpr: False-positive rates (1 - specificity), shape (k,), float64, non-decreasing from 0
            to 1.
        tpr: True-positive rates (sensitivity), shape (k,), float64, non-decreasing from 0 to 1.
        thresholds: Score thresholds, shape (k,), float64, decreasing; point ``i`` calls
            positive every femur with ``score >= thresholds[i]`` (``thresholds[0] = +inf``:
            nobody).
        auc: Area under the curve (Mann-Whitney, ties 1/2); equals the trapezoidal area.
    """

    fpr: FloatArray
    tpr: FloatArray
    thresholds: FloatArray
    auc: float


def _mann_whitney_auc(y: IntArray, s: FloatArray) -> float:
    return float(sk_metrics.roc_auc_score(y, s))


def roc_auc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve, P(score of a fracture > score of a non-fracture).

    :func:`sklearn.metrics.roc_auc_score` (trapezoidal area = Mann-Whitney U / (n1 n0), a tied
    pair counts 1/2) after osteofe's input checks.

    Args:
        y_true: Outcomes, shape (n,), 0/1, both classes present.
        scores: Risk scores, shape (n,), finite, larger = higher risk.

    Returns:
        AUC in [0, 1].

    Raises:
        MetricsError: On inconsistent inputs (see module docstring).
    """
    y = _as_binary(y_true)
    s = _as_scores(scores, y.size)
    return _mann_whitney_auc(y, s)


def roc_curve(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> RocCurve:
    """Empirical ROC curve, one point per distinct score plus (0, 0).

    :func:`sklearn.metrics.roc_curve` with ``drop_intermediate=False``.

    Args:
        y_true: Outcomes, shape (n,), 0/1, both classes present.
        scores: Risk scores, shape (n,), finite, larger = higher risk.

    Returns:
        The curve; tied scores give one diagonal segment.

    Raises:
        MetricsError: On inconsistent inputs.
    """
    y = _as_binary(y_true)
    s = _as_scores(scores, y.size)
    fpr, tpr, thresholds = sk_metrics.roc_curve(y, s, drop_intermediate=False)
    return RocCurve(fpr=np.asarray(fpr, dtype=np.float64), tpr=np.asarray(tpr, dtype=np.float64),
                    thresholds=np.asarray(thresholds, dtype=np.float64),
                    auc=_mann_whitney_auc(y, s))


def _delong_components(
    y: IntArray, scores: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """DeLong structural components by midranks (Sun & Xu 2014).

    Args:
        y: Outcomes (n,), both classes, at least 2 of each.
        scores: Scores, shape (k, n).

    Returns:
        ``(aucs, v10, v01)``: AUCs (k,); V10 (k, m), the fraction of non-fractures scored below
        each fracture (ties 1/2); V01 (k, n0), the fraction of fractures scored above each
        non-fracture.
    """
    pos = scores[:, y == 1]
    neg = scores[:, y == 0]
    m = pos.shape[1]
    n0 = neg.shape[1]
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (tz[:, :m] - tx) / n0
    v01 = 1.0 - (tz[:, m:] - ty) / m
    aucs = v10.mean(axis=1)
    return aucs, v10, v01


def _delong_covariance(y: IntArray, scores: FloatArray) -> tuple[FloatArray, FloatArray]:
    """AUCs (k,) and their DeLong covariance matrix (k, k)."""
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 < 2 or n0 < 2:
        raise MetricsError(
            f"DeLong variance needs at least 2 fractured and 2 non-fractured femurs, got "
            f"{n1} and {n0}",
            "use a larger cohort (or method='bootstrap')",
        )
    aucs, v10, v01 = _delong_components(y, scores)
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / n1 + s01 / n0


def delong_variance(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """DeLong's variance of the empirical AUC.

    ``Var = S10 / n1 + S01 / n0`` with ``S10``, ``S01`` the sample variances (ddof 1) of the
    structural components of the fractures and non-fractures.

    Args:
        y_true: Outcomes, shape (n,), 0/1, at least 2 of each class.
        scores: Risk scores, shape (n,), finite.

    Returns:
        Variance of the AUC (>= 0).

    Raises:
        MetricsError: On inconsistent inputs or fewer than 2 of a class.
    """
    y = _as_binary(y_true)
    s = _as_scores(scores, y.size)
    _, cov = _delong_covariance(y, s[None, :])
    return float(cov[0, 0])


@dataclass(frozen=True)
class AucEstimate:
    """AUC with a confidence interval.

    Attributes:
        auc: Empirical AUC.
        lower: Lower confidence bound, clipped to [0, 1].
        upper: Upper confidence bound, clipped to [0, 1].
        level: Confidence level, e.g. 0.95.
        method: ``"delong"`` (Wald interval auc +- z se on the AUC scale) or ``"bootstrap"``
            (patient-clustered or femur percentile bootstrap).
        se: Standard error: DeLong's, or the standard deviation of the bootstrap AUCs.
        n_positive: Fractured femurs.
        n_negative: Non-fractured femurs.
    """

    auc: float
    lower: float
    upper: float
    level: float
    method: Literal["delong", "bootstrap"]
    se: float
    n_positive: int
    n_negative: int


def auc_ci(
    y_true: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    level: float = 0.95,
    method: Literal["delong", "bootstrap"] = "delong",
    n_bootstrap: int = 2000,
    seed: int | None = 0,
    groups: Iterable[Hashable] | None = None,
) -> AucEstimate:
    """AUC with a DeLong or bootstrap confidence interval.

    DeLong: ``auc +- z_(1+level)/2 * sqrt(Var_DeLong)``, clipped to [0, 1] (for a perfectly
    separating score the variance is 0 and so is the width: use the bootstrap or report the
    counts). DeLong treats the femurs as independent: with bilateral cases use the
    bootstrap with ``groups``. Bootstrap: percentile interval of ``n_bootstrap`` replicates
    that resample whole patients (``groups``; :func:`risk.clustered.clustered_auc`) or, with
    ``groups=None``, single femurs; replicates lacking a class are dropped.

    Args:
        y_true: Outcomes, shape (n,), 0/1.
        scores: Risk scores, shape (n,), finite, larger = higher risk.
        level: Confidence level in (0, 1).
        method: ``"delong"`` or ``"bootstrap"``.
        n_bootstrap: Bootstrap replicates (bootstrap only), >= 100.
        seed: Seed of the bootstrap's random generator (``None``: not reproducible).
        groups: Patient id per femur (bootstrap only): the cluster bootstrap.

    Returns:
        The estimate.

    Raises:
        MetricsError: On inconsistent inputs or parameters.
    """
    y = _as_binary(y_true)
    s = _as_scores(scores, y.size)
    level = _check_level(level)
    auc = _mann_whitney_auc(y, s)
    n1 = int(y.sum())
    n0 = y.size - n1
    if method == "delong":
        _, cov = _delong_covariance(y, s[None, :])
        se = math.sqrt(max(float(cov[0, 0]), 0.0))
        half = _z(level) * se
        return AucEstimate(
            auc, max(0.0, auc - half), min(1.0, auc + half), level, "delong", se, n1, n0
        )
    if method != "bootstrap":
        raise MetricsError(
            f"unknown AUC interval method {method!r}", "use 'delong' or 'bootstrap'"
        )
    if (
        isinstance(n_bootstrap, bool)
        or not isinstance(n_bootstrap, Integral)
        or n_bootstrap < 100
    ):
        raise MetricsError(
            f"n_bootstrap must be an integer >= 100, got {n_bootstrap!r}",
            "use e.g. n_bootstrap=2000",
        )
    from risk.clustered import clustered_auc

    est = clustered_auc(y, s, groups, level=level, n_bootstrap=int(n_bootstrap), seed=seed)
    return AucEstimate(auc, est.lower, est.upper, level, "bootstrap", est.se, n1, n0)


@dataclass(frozen=True)
class DelongTest:
    """DeLong's test of two correlated AUCs (the same femurs scored two ways).

    Attributes:
        auc_a: AUC of score A.
        auc_b: AUC of score B.
        difference: ``auc_a - auc_b``.
        se: Standard error of the difference.
        z: ``difference / se`` (0 when both scores rank identically; +-inf when the difference
            is non-zero with zero variance).
        p_value: Two-sided p-value, ``2 * (1 - Phi(|z|))``.
        n_positive: Fractured femurs.
        n_negative: Non-fractured femurs.
    """

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float
    n_positive: int
    n_negative: int


def delong_test(
    y_true: npt.ArrayLike, scores_a: npt.ArrayLike, scores_b: npt.ArrayLike
) -> DelongTest:
    """Compare two correlated AUCs (DeLong et al. 1988; Sun & Xu 2014).

    ``z = (AUC_a - AUC_b) / sqrt(Var_a + Var_b - 2 Cov_ab)``, two-sided normal p-value.

    Args:
        y_true: Outcomes, shape (n,), 0/1, at least 2 of each class.
        scores_a: First score (e.g. ``-failure_load_BW``), shape (n,), finite.
        scores_b: Second score on the same femurs (e.g. the Mirels total), shape (n,), finite.

    Returns:
        The test result.

    Raises:
        MetricsError: On inconsistent inputs.
    """
    y = _as_binary(y_true)
    a = _as_scores(scores_a, y.size, "scores_a")
    b = _as_scores(scores_b, y.size, "scores_b")
    aucs, cov = _delong_covariance(y, np.vstack([a, b]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    n1 = int(y.sum())
    if var <= 1e-15:
        se = 0.0
        z = 0.0 if abs(diff) <= 1e-15 else math.copysign(math.inf, diff)
        p = 1.0 if z == 0.0 else 0.0
    else:
        se = math.sqrt(var)
        z = diff / se
        p = float(2.0 * stats.norm.sf(abs(z)))
    return DelongTest(float(aucs[0]), float(aucs[1]), diff, se, z, p, n1, y.size - n1)


# --------------------------------------------------------------------------------------------
# Sensitivity and specificity.
# --------------------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927).

    ``(p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``p = successes / n``.

    Args:
        successes: Number of successes, 0 <= successes <= n.
        n: Number of trials, >= 1.
        level: Confidence level in (0, 1).

    Returns:
        ``(lower, upper)``, within [0, 1].

    Raises:
        MetricsError: If the counts are not integers with 0 <= successes <= n, n >= 1.
    """
    level = _check_level(level)
    for name, v in (("successes", successes), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, Integral):
            raise MetricsError(f"{name} must be an integer count, got {v!r}", "pass counts")
    if n < 1 or not 0 <= successes <= n:
        raise MetricsError(
            f"Wilson interval needs 0 <= successes <= n and n >= 1, got {successes} of {n}",
            "check the counts (a class with no femurs has no rate)",
        )
    successes, n = int(successes), int(n)
    z = _z(level)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    # At 0 and n successes the bounds are exactly 0 and 1; avoid rounding just inside them.
    lower = 0.0 if successes == 0 else max(0.0, centre - half)
    upper = 1.0 if successes == n else min(1.0, centre + half)
    return lower, upper


@dataclass(frozen=True)
class Proportion:
    """A proportion with its Wilson score interval.

    Attributes:
        value: ``successes / n``.
        lower: Lower Wilson bound.
        upper: Upper Wilson bound.
        successes: Numerator.
        n: Denominator.
    """

    value: float
    lower: float
    upper: float
    successes: int
    n: int


@dataclass(frozen=True)
class SensSpec:
    """Sensitivity and specificity of a rule ``score >= threshold``, with Wilson intervals.

    Attributes:
        threshold: The threshold (``None`` when binary predictions were given).
        sensitivity: TP / (TP + FN).
        specificity: TN / (TN + FP).
        tp: True positives.
        fn: False negatives.
        tn: True negatives.
        fp: False positives.
        level: Confidence level of the intervals.
    """

    threshold: float | None
    sensitivity: Proportion
    specificity: Proportion
    tp: int
    fn: int
    tn: int
    fp: int
    level: float


def _proportion(successes: int, n: int, level: float) -> Proportion:
    lo, hi = wilson_interval(successes, n, level)
    return Proportion(successes / n, lo, hi, successes, n)


def sensitivity_specificity(
    y_true: npt.ArrayLike,
    scores: npt.ArrayLike,
    threshold: float | None = None,
    *,
    level: float = 0.95,
) -> SensSpec:
    """Sensitivity and specificity of ``score >= threshold``, with Wilson score intervals.

    Args:
        y_true: Outcomes, shape (n,), 0/1, both classes present.
        scores: Scores, shape (n,), finite; or, with ``threshold=None``, binary predictions
            (0/1 or bool; 1 = fracture predicted).
        threshold: Decision threshold (e.g. 9 for a Mirels total, 30 for ACI in mm); ``None``
            when ``scores`` are already binary predictions.
        level: Confidence level of the intervals.

    Returns:
        Counts, rates and intervals.

    Raises:
        MetricsError: On inconsistent inputs, a non-finite threshold, or non-binary
            predictions with ``threshold=None``.
    """
    y = _as_binary(y_true)
    s = _as_scores(scores, y.size)
    level = _check_level(level)
    if threshold is None:
        if not np.all(np.isin(s, (0.0, 1.0))):
            raise MetricsError(
                "threshold=None needs binary predictions (0/1), got other values",
                "pass the decision threshold of the score, e.g. threshold=9 for Mirels",
            )
        predicted = s == 1.0
    else:
        if isinstance(threshold, bool) or not (
            isinstance(threshold, Real) and math.isfinite(float(threshold))
        ):
            raise MetricsError(
                f"threshold must be a finite number, got {threshold!r}",
                "pass the decision threshold in the score's unit",
            )
        predicted = s >= threshold
    actual = y == 1
    tp = int(np.sum(predicted & actual))
    fn = int(np.sum(~predicted & actual))
    tn = int(np.sum(~predicted & ~actual))
    fp = int(np.sum(predicted & ~actual))
    return SensSpec(
        None if threshold is None else float(threshold),
        _proportion(tp, tp + fn, level),
        _proportion(tn, tn + fp, level),
        tp,
        fn,
        tn,
        fp,
        level,
    )


# --------------------------------------------------------------------------------------------
# Calibration.
# --------------------------------------------------------------------------------------------


def brier_score(y_true: npt.ArrayLike, y_prob: npt.ArrayLike) -> float:
    """Brier score, ``mean((p - y)^2)`` (Brier 1950); 0 is perfect, lower is better.

    Args:
        y_true: Outcomes, shape (n,), 0/1 (one class alone is allowed).
        y_prob: Predicted probabilities of fracture, shape (n,), in [0, 1].

    Returns:
        The score in [0, 1].

    Raises:
        MetricsError: On inconsistent inputs.
    """
    y = _as_binary(y_true, both_classes=False)
    p = _as_probabilities(y_prob, y.size)
    return float(sk_metrics.brier_score_loss(y, p, labels=[0, 1]))


@dataclass(frozen=True)
class CalibrationFit:
    """Logistic recalibration ``logit P(y=1) = a + b logit(p)`` (Cox 1958).

    Perfect calibration: ``intercept == 0`` and ``slope == 1``. ``slope < 1``: predictions
    too extreme (overfitting); ``intercept > 0``: risks underestimated on average.

    Attributes:
        intercept: Calibration-in-the-large: ``a`` with ``b`` fixed at 1 (``logit(p)`` as
            offset).
        slope: ``b`` of the joint fit.
        joint_intercept: ``a`` of the joint fit (with ``b`` free).
    """

    intercept: float
    slope: float
    joint_intercept: float


def calibration_intercept_slope(y_true: npt.ArrayLike, y_prob: npt.ArrayLike) -> CalibrationFit:
    """Calibration intercept and slope by logistic recalibration on ``logit(p)``.

    Probabilities are clipped to ``[1e-12, 1 - 1e-12]`` before the logit.

    Args:
        y_true: Outcomes, shape (n,), 0/1, both classes present.
        y_prob: Predicted probabilities of fracture, shape (n,), in [0, 1].

    Returns:
        Intercept (slope fixed at 1), slope and joint intercept.

    Raises:
        MetricsError: On inconsistent inputs, or if all predictions are equal (no slope).
        ConvergenceError: If the recalibration fit diverges (outcomes perfectly separated by
            the predictions).
    """
    y = _as_binary(y_true)
    p = _as_probabilities(y_prob, y.size)
    lp = special.logit(np.clip(p, LOGIT_EPS, 1.0 - LOGIT_EPS))
    if np.ptp(lp) == 0.0:
        raise MetricsError(
            "all predicted probabilities are equal; the calibration slope is undefined",
            "calibration slope needs predictions that vary between femurs",
        )
    # Calibration-in-the-large: the intercept a with the slope fixed at 1 solves the score
    # equation sum(y) = sum(expit(a + lp)) (monotone in a; one root).
    events = float(y.sum())

    def score(a: float) -> float:
        return float(np.sum(special.expit(a + lp))) - events

    lo, hi = -50.0, 50.0
    if score(lo) > 0.0 or score(hi) < 0.0:
        raise ConvergenceError("calibration-in-the-large has no finite solution",
                               "the predictions are far off: check the model and the cohort")
    a = float(optimize.brentq(score, lo, hi, xtol=1e-14))
    joint = _unpenalised_logistic(lp[:, None], y)
    return CalibrationFit(a, float(joint.coef_[0, 0]), float(joint.intercept_[0]))


def _unpenalised_logistic(X: FloatArray, y: IntArray) -> LogisticRegression:
    """Maximum-likelihood logistic fit (scikit-learn, Newton-Cholesky, no penalty)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            return LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12,
                                      max_iter=200).fit(X, y)
        except ConvergenceWarning as exc:
            raise ConvergenceError(
                "logistic recalibration did not converge (the outcome is perfectly "
                "separated by the predictions)", "report the counts instead") from exc


# --------------------------------------------------------------------------------------------
# Decision curves.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionCurve:
    """Net benefit over threshold probabilities (Vickers & Elkin 2006).

    Attributes:
        thresholds: Threshold probabilities ``pt``, shape (k,), in (0, 1).
        model: Net benefit of treating femurs with ``p >= pt``, shape (k,).
        treat_all: Net benefit of fixing every femur, ``prevalence - (1 - prevalence) *
            pt / (1 - pt)``, shape (k,).
        treat_none: Net benefit of fixing none (zeros), shape (k,).
        prevalence: Fraction of fractured femurs.
    """

    thresholds: FloatArray
    model: FloatArray
    treat_all: FloatArray
    treat_none: FloatArray
    prevalence: float


def net_benefit(
    y_true: npt.ArrayLike,
    y_prob: npt.ArrayLike,
    thresholds: npt.ArrayLike | None = None,
) -> DecisionCurve:
    """Decision curve: ``NB(pt) = TP/n - FP/n * pt / (1 - pt)`` for model, treat-all, none.

    Args:
        y_true: Outcomes, shape (n,), 0/1.
        y_prob: Predicted probabilities of fracture, shape (n,), in [0, 1].
        thresholds: Threshold probabilities, 1-D, each in (0, 1); default 0.01, 0.02, ...,
            0.99.

    Returns:
        The decision curve.

    Raises:
        MetricsError: On inconsistent inputs or thresholds outside (0, 1).
    """
    y = _as_binary(y_true, both_classes=False)
    p = _as_probabilities(y_prob, y.size)
    pt = (
        np.round(np.arange(1, 100) / 100.0, 2)
        if thresholds is None
        else np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    )
    if pt.ndim != 1 or pt.size == 0 or not np.all((pt > 0.0) & (pt < 1.0)):
        raise MetricsError(
            "decision-curve thresholds must be a non-empty 1-D array of values in (0, 1)",
            "use threshold probabilities such as numpy.linspace(0.05, 0.5, 10)",
        )
    n = y.size
    treated = p[None, :] >= pt[:, None]
    tp = np.sum(treated & (y == 1)[None, :], axis=1)
    fp = np.sum(treated & (y == 0)[None, :], axis=1)
    odds = pt / (1.0 - pt)
    prevalence = float(y.mean())
    return DecisionCurve(
        thresholds=pt,
        model=tp / n - fp / n * odds,
        treat_all=prevalence - (1.0 - prevalence) * odds,
        treat_none=np.zeros_like(pt),
        prevalence=prevalence,
    )
