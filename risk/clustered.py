"""Patient-clustered inference: the cluster (patient) bootstrap of AUCs and their differences.

The two femurs of a patient are not independent observations (same bone quality, same
primary tumour, same follow-up): a bootstrap that resamples femurs, like DeLong's variance,
treats them as independent and gives intervals that are too narrow. The cluster bootstrap
resamples *patients* with replacement and keeps each patient's femurs together (Field &
Welsh 2007, J R Stat Soc B 69:369; for AUCs of clustered data, Obuchowski 1997,
Biometrics 53:567, whose nonparametric estimator it approximates for many replicates).

Implementation: a bootstrap replicate is a vector of multiplicities (how often each patient
was drawn), i.e. a weight per femur; the AUC of the resampled data set equals the weighted
AUC ``sum_ij w_i w_j H(s_i - s_j) / (sum_i w_i sum_j w_j)`` over fractured ``i`` and
non-fractured ``j`` (``H`` the step function, ties 1/2), computed for all replicates at once
from the (n1, n0) comparison matrix. Replicates without a fracture or a non-fracture are
dropped and counted.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from core.types import FloatArray, IntArray
from risk.errors import MetricsError

__all__ = [
    "AucDifference",
    "ClusteredAuc",
    "ClusteredRates",
    "auc_replicates",
    "clustered_auc",
    "clustered_auc_difference",
    "clustered_rates",
    "group_codes",
    "resample_weights",
]


def group_codes(groups: Iterable[Hashable] | None, n: int) -> IntArray:
    """0-based cluster index per femur, in order of first appearance.

    Args:
        groups: Cluster id (patient id) per femur, or None: every femur its own cluster
            (the naive bootstrap).
        n: Number of femurs.

    Returns:
        Shape (n,), int64.

    Raises:
        MetricsError: If the number of ids differs from ``n`` or an id is unhashable.
    """
    if groups is None:
        return np.arange(n, dtype=np.int64)
    index: dict[Hashable, int] = {}
    try:
        codes = np.array([index.setdefault(g, len(index)) for g in groups], dtype=np.int64)
    except TypeError as exc:
        raise MetricsError(f"groups must be hashable ids: {exc}", "pass patient ids") from exc
    if codes.size != n:
        raise MetricsError(f"groups has {codes.size} entries for {n} femurs",
                           "pass one patient id per femur")
    return codes


def resample_weights(codes: IntArray, n_bootstrap: int, seed: int | None) -> FloatArray:
    """Femur weights of ``n_bootstrap`` cluster-bootstrap replicates.

    Args:
        codes: Cluster index per femur (:func:`group_codes`), shape (n,).
        n_bootstrap: Replicates.
        seed: Seed of the generator.

    Returns:
        Shape (n_bootstrap, n), float64: how often each femur's patient was drawn.
    """
    n_clusters = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters),
                             size=n_bootstrap).astype(np.float64)
    return counts[:, codes]


def _comparison(y: IntArray, s: FloatArray) -> FloatArray:
    """H(s_i - s_j) for fractured i (rows) and non-fractured j (columns), ties 1/2."""
    pos = s[y == 1][:, None]
    neg = s[y == 0][None, :]
    return (pos > neg).astype(np.float64) + 0.5 * (pos == neg)


def auc_replicates(y: IntArray, scores: FloatArray, weights: FloatArray) -> FloatArray:
    """Weighted AUC of each replicate (NaN where it lacks a class).

    Args:
        y: Outcomes, shape (n,), 0/1.
        scores: Scores, shape (n,).
        weights: Femur weights, shape (B, n) (:func:`resample_weights`).

    Returns:
        Shape (B,), float64.
    """
    c = _comparison(y, scores)
    w1 = weights[:, y == 1]
    w0 = weights[:, y == 0]
    den = w1.sum(axis=1) * w0.sum(axis=1)
    num = np.einsum("bi,ij,bj->b", w1, c, w0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


@dataclass(frozen=True)
class ClusteredAuc:
    """AUC with a percentile cluster-bootstrap interval.

    Attributes:
        auc: Empirical AUC of the data.
        lower: Lower percentile bound.
        upper: Upper percentile bound.
        se: Standard deviation of the replicate AUCs.
        level: Confidence level.
        n_bootstrap: Replicates drawn.
        n_dropped: Replicates without both classes (left out).
        n_clusters: Patients (clusters); equal to the femurs for the naive bootstrap.
    """

    auc: float
    lower: float
    upper: float
    se: float
    level: float
    n_bootstrap: int
    n_dropped: int
    n_clusters: int


@dataclass(frozen=True)
class AucDifference:
    """Difference of two AUCs on the same femurs with a cluster-bootstrap interval.

    Attributes:
        auc_a: AUC of score A.
        auc_b: AUC of score B.
        difference: ``auc_a - auc_b``.
        lower: Lower percentile bound of the difference.
        upper: Upper percentile bound.
        se: Standard deviation of the replicate differences.
        p_value: Two-sided Wald p-value ``2 (1 - Phi(|d| / se))`` (1 when se is 0 and d 0).
        level: Confidence level.
        n_bootstrap: Replicates drawn.
        n_dropped: Replicates without both classes.
        n_clusters: Patients.
    """

    auc_a: float
    auc_b: float
    difference: float
    lower: float
    upper: float
    se: float
    p_value: float
    level: float
    n_bootstrap: int
    n_dropped: int
    n_clusters: int


def _check(y_true: npt.ArrayLike, arrays: list[npt.ArrayLike], level: float,
           n_bootstrap: int) -> tuple[IntArray, list[FloatArray]]:
    y = np.asarray(y_true)
    if y.ndim != 1 or not np.all(np.isin(y, (0, 1))):
        raise MetricsError("y_true must be a 1-D array of 0/1", "encode fractures as 1")
    y = y.astype(np.int64)
    if y.sum() == 0 or y.sum() == y.size:
        raise MetricsError("an AUC needs fractured and non-fractured femurs",
                           "use a cohort with both outcomes")
    out = []
    for a in arrays:
        s = np.asarray(a, dtype=np.float64)
        if s.shape != y.shape or not np.all(np.isfinite(s)):
            raise MetricsError(f"scores must be finite with shape {y.shape}",
                               "pass one finite score per femur")
        out.append(s)
    if not 0.0 < level < 1.0:
        raise MetricsError(f"level must be in (0, 1), got {level!r}", "use level=0.95")
    if n_bootstrap < 100:
        raise MetricsError(f"n_bootstrap must be >= 100, got {n_bootstrap!r}", "use 2000")
    return y, out


def _bounds(values: FloatArray, level: float) -> tuple[float, float]:
    alpha = 1.0 - level
    lo, hi = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def clustered_auc(y_true: npt.ArrayLike, scores: npt.ArrayLike,
                  groups: Iterable[Hashable] | None, *, level: float = 0.95,
                  n_bootstrap: int = 2000, seed: int | None = 0) -> ClusteredAuc:
    """AUC with a patient-clustered percentile bootstrap interval.

    Args:
        y_true: Outcomes, shape (n,), 0/1, both classes present.
        scores: Risk scores, shape (n,), larger = higher risk.
        groups: Patient id per femur; None resamples femurs (the naive bootstrap, for
            comparison only).
        level: Confidence level.
        n_bootstrap: Replicates, >= 100.
        seed: Seed.

    Returns:
        The estimate.

    Raises:
        MetricsError: On inconsistent inputs, or if more than half of the replicates lack a
            class (too few fractures to bootstrap).
    """
    y, (s,) = _check(y_true, [scores], level, n_bootstrap)
    codes = group_codes(groups, y.size)
    reps = auc_replicates(y, s, resample_weights(codes, n_bootstrap, seed))
    ok = reps[np.isfinite(reps)]
    if ok.size < n_bootstrap / 2:
        raise MetricsError(f"{n_bootstrap - ok.size} of {n_bootstrap} bootstrap replicates "
                           "had no fracture or no non-fracture", "use a larger cohort")
    lo, hi = _bounds(ok, level)
    auc = float(auc_replicates(y, s, np.ones((1, y.size)))[0])
    return ClusteredAuc(auc, lo, hi, float(ok.std(ddof=1)), float(level), int(n_bootstrap),
                        int(n_bootstrap - ok.size), int(codes.max()) + 1)


def clustered_auc_difference(y_true: npt.ArrayLike, scores_a: npt.ArrayLike,
                             scores_b: npt.ArrayLike, groups: Iterable[Hashable] | None, *,
                             level: float = 0.95, n_bootstrap: int = 2000,
                             seed: int | None = 0) -> AucDifference:
    """Difference of two correlated AUCs with a patient-clustered bootstrap interval.

    Both scores are evaluated on the same replicates (paired), so their correlation is kept.

    Args:
        y_true: Outcomes, shape (n,), 0/1.
        scores_a: First score (e.g. the FE probability), shape (n,).
        scores_b: Second score on the same femurs (e.g. the Mirels total), shape (n,).
        groups: Patient id per femur (None: naive femur bootstrap).
        level: Confidence level.
        n_bootstrap: Replicates, >= 100.
        seed: Seed.

    Returns:
        The difference and its interval.

    Raises:
        MetricsError: On inconsistent inputs or too few fractures to bootstrap.
    """
    y, (a, b) = _check(y_true, [scores_a, scores_b], level, n_bootstrap)
    codes = group_codes(groups, y.size)
    weights = resample_weights(codes, n_bootstrap, seed)
    ra, rb = auc_replicates(y, a, weights), auc_replicates(y, b, weights)
    ok = np.isfinite(ra) & np.isfinite(rb)
    if ok.sum() < n_bootstrap / 2:
        raise MetricsError(f"{int((~ok).sum())} of {n_bootstrap} bootstrap replicates had no "
                           "fracture or no non-fracture", "use a larger cohort")
    diff = ra[ok] - rb[ok]
    one = np.ones((1, y.size))
    auc_a = float(auc_replicates(y, a, one)[0])
    auc_b = float(auc_replicates(y, b, one)[0])
    d = auc_a - auc_b
    se = float(diff.std(ddof=1))
    if se <= 1e-15:
        p = 1.0 if abs(d) <= 1e-15 else 0.0
    else:
        p = float(2.0 * stats.norm.sf(abs(d) / se))
    lo, hi = _bounds(diff, level)
    return AucDifference(auc_a, auc_b, d, lo, hi, se, p if math.isfinite(p) else 1.0,
                         float(level), int(n_bootstrap), int((~ok).sum()),
                         int(codes.max()) + 1)


@dataclass(frozen=True)
class ClusteredRates:
    """Sensitivity and specificity of a rule with patient-clustered bootstrap intervals.

    Attributes:
        sensitivity: TP / (TP + FN).
        sensitivity_ci: Percentile interval (lower, upper).
        specificity: TN / (TN + FP).
        specificity_ci: Percentile interval (lower, upper).
        n_clusters: Patients.
    """

    sensitivity: float
    sensitivity_ci: tuple[float, float]
    specificity: float
    specificity_ci: tuple[float, float]
    n_clusters: int


def clustered_rates(y_true: npt.ArrayLike, positive: npt.ArrayLike,
                    groups: Iterable[Hashable] | None, *, level: float = 0.95,
                    n_bootstrap: int = 2000, seed: int | None = 0) -> ClusteredRates:
    """Sensitivity and specificity with patient-clustered percentile bootstrap intervals.

    A replicate's rates are the weighted ones of the resampled patients (weights as in
    :func:`resample_weights`); replicates without a fracture (or a non-fracture) are left
    out of that rate's interval.

    Args:
        y_true: Outcomes, shape (n,), 0/1, both classes present.
        positive: Rule result per femur (0/1 or bool), shape (n,).
        groups: Patient id per femur (None: femurs resampled).
        level: Confidence level.
        n_bootstrap: Replicates, >= 100.
        seed: Seed.

    Returns:
        The rates and intervals.

    Raises:
        MetricsError: On inconsistent inputs.
    """
    y, (pos,) = _check(y_true, [np.asarray(positive, dtype=np.float64)], level, n_bootstrap)
    if not np.all(np.isin(pos, (0.0, 1.0))):
        raise MetricsError("positive must be 0/1 per femur", "pass the rule's result")
    codes = group_codes(groups, y.size)
    w = resample_weights(codes, n_bootstrap, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = (w * (pos * y)).sum(axis=1) / (w * y).sum(axis=1)
        spec = (w * ((1 - pos) * (1 - y))).sum(axis=1) / (w * (1 - y)).sum(axis=1)
    return ClusteredRates(
        float(pos[y == 1].mean()), _bounds(sens[np.isfinite(sens)], level),
        float(1.0 - pos[y == 0].mean()), _bounds(spec[np.isfinite(spec)], level),
        int(codes.max()) + 1)
