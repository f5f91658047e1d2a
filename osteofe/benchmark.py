"""The benchmark harness: FE-based fracture risk against Mirels, ACI and CTRA on a cohort.

:func:`run_benchmark` reads a cohort table (:mod:`risk.cohort` schema, e.g. the
``cohort.csv`` of :func:`osteofe.cohort.run_cohort`) and compares the predictors it holds:

=====================  =====================================================================
predictor              score (larger = higher risk)
=====================  =====================================================================
``fe_probability``     calibrated FE probability: :class:`~risk.calibration.StrengthRiskModel`
                       (logistic on ``failure_load_BW``) predicted **out of fold** by grouped
                       cross-validation (:func:`~risk.calibration.grouped_cross_val_predict`,
                       folds never split a patient)
``fe_strength``        ``-failure_load_BW`` (the raw FE strength, nothing fitted)
``mirels``             Mirels total, 4-12
``aci``                axial cortical involvement in mm (when the column is present)
``ctra``               CTRA rigidity loss fraction (when the column is present)
=====================  =====================================================================

Reported, all with confidence intervals (the clinical cohorts of this field have <= 15
fractures):

- ROC AUC with DeLong and stratified-bootstrap intervals; DeLong's test of FE vs Mirels (and
  vs ACI/CTRA on the femurs where those are known);
- sensitivity/specificity with Wilson intervals at Mirels >= 9 and >= 8, ACI >= 30 mm,
  CTRA > 35 % and three FE thresholds, next to the published operating points of
  :data:`risk.mirels.OPERATING_POINTS`. FE thresholds: probability >= 0.5 (the model's own
  cut-off, honest); the Youden-optimal threshold of the out-of-fold probabilities (chosen
  on the same femurs it is evaluated on, hence **optimistic**); and the highest threshold
  whose sensitivity reaches that of Mirels >= 9 (specificity at equal sensitivity, also
  chosen in-sample);
- Brier score and calibration intercept/slope of the out-of-fold FE probability and of a
  Mirels logistic model (:class:`~risk.calibration.MirelsBaseline`, also out of fold);
- decision curves (net benefit) of both probabilities and of the Mirels >= 9 and ACI >= 30 mm
  rules against treat-all/treat-none;
- plots (PNG, matplotlib Agg): ROC curves with the published operating points on the same
  axes, calibration, decision curves.

Outputs in ``out_dir`` (moved into place together, ``summary.json`` last): ``summary.json``,
``summary.md``, ``summary.html`` (self-contained, images embedded), ``roc.png``,
``calibration.png``, ``decision_curve.png``, ``predictions.csv`` (per femur: outcome and
every score, out-of-fold probabilities included) and ``fe_model.json`` (the FE model fitted
on the whole cohort, for use on new patients). A cohort whose ``data_origin`` column says
``SYNTHETIC`` is labelled SYNTHETIC in every output.

The bootstrap intervals of ``fe_probability`` resample femurs with their out-of-fold
predictions; they do not repeat the cross-validation (so they ignore the variability of the
fitted model itself).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.types import FloatArray
from meshing.errors import InputError
from osteofe.outputs import json_default, staged_output
from risk.calibration import (
    HORIZON_COVARIATE,
    MirelsBaseline,
    StrengthRiskModel,
    grouped_cross_val_predict,
)
from risk.clustered import (
    clustered_auc_difference,
    clustered_rates,
    group_codes,
    resample_weights,
)
from risk.cohort import Cohort, read_cohort
from risk.competing import (
    HORIZONS_MONTHS,
    cumulative_incidence,
    event_codes,
    fit_cause_specific,
)
from risk.economics import ECONOMIC_SOURCES, EconomicInputs, evaluate_strategies
from risk.errors import ConvergenceError, MetricsError, ModelError
from risk.metrics import (
    auc_ci,
    brier_score,
    calibration_intercept_slope,
    delong_test,
    net_benefit,
    roc_curve,
    sensitivity_specificity,
    wilson_interval,
)
from risk.mirels import CITATIONS, OPERATING_POINTS, THRESHOLDS

__all__ = [
    "DECISION_THRESHOLDS",
    "PREDICTORS",
    "BenchmarkError",
    "format_benchmark",
    "read_economics",
    "run_benchmark",
]


#: Predictor key -> label used in tables and plots.
PREDICTORS: Mapping[str, str] = {
    "fe_probability": "FE probability (out of fold)",
    "fe_strength": "FE failure load (-BW)",
    "mirels": "Mirels total",
    "aci": "ACI (mm)",
    "ctra": "CTRA rigidity loss",
}
#: Threshold probabilities of the decision curves.
DECISION_THRESHOLDS: FloatArray = np.round(np.arange(1, 61) / 100.0, 2)
#: Threshold probabilities tabulated in the reports.
_REPORTED_PT = (0.05, 0.1, 0.2, 0.3)
#: CTRA rule: rigidity loss strictly above 35 % (Snyder/Nazarian's criterion as in DESIGN.md 4,
#: an unverified [R] item there; no published operating point is plotted for it).
CTRA_THRESHOLD = 0.35
_SYNTHETIC_BANNER = ("SYNTHETIC COHORT, NOT EVIDENCE - in-silico virtual patients generated by "
                     "osteofe, not patient data; the numbers below say nothing about clinical "
                     "performance.")
_COLOURS = {"fe_probability": "#1f77b4", "fe_strength": "#17becf", "mirels": "#d62728",
            "aci": "#2ca02c", "ctra": "#9467bd"}


class BenchmarkError(InputError):
    """The cohort cannot be benchmarked (too few fractures, a missing column, ...)."""


def read_economics(path: str | Path | None) -> dict[str, Any] | None:
    """The cost/utility table of a TOML file (top level or its ``[economics]`` table).

    Args:
        path: The file, or None.

    Returns:
        Field -> value for :class:`risk.economics.EconomicInputs`, or None.

    Raises:
        BenchmarkError: Unreadable or not TOML.
    """
    if path is None:
        return None
    import tomllib

    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BenchmarkError(f"cannot read the economics table {path}: {exc}",
                             "give a TOML file such as cost_prophylactic_fixation = 21000") \
            from exc
    table = doc.get("economics", doc)
    return dict(table) if isinstance(table, dict) else None


# --------------------------------------------------------------------------------------------
# Numbers.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Score:
    """One predictor on the femurs where it is known."""

    key: str
    values: FloatArray  # (n,), NaN where unknown
    note: str = ""

    @property
    def known(self) -> npt.NDArray[np.bool_]:
        return np.isfinite(self.values)


def _is_synthetic(cohort: Cohort) -> bool:
    origin = cohort.extra.get("data_origin", ())
    return any(str(v).strip().upper().startswith("SYNTHETIC") for v in origin)


def _fe_out_of_fold(cohort: Cohort, y: npt.NDArray[np.int64], n_splits: int, seed: int
                    ) -> tuple[FloatArray, StrengthRiskModel, dict[str, Any]]:
    """Out-of-fold FE probabilities, the model fitted on all femurs, and how it was fitted.

    The full model records its cohort origin (synthetic / measured) and its patient-clustered
    bootstrap covariance, so that its probabilities carry intervals.
    """
    X = cohort.features("failure_load_BW")
    model = StrengthRiskModel()
    origin = "synthetic" if _is_synthetic(cohort) else "measured"
    info: dict[str, Any] = {"feature": "failure_load_BW", "penalty": "none", "origin": origin}
    try:
        oof = grouped_cross_val_predict(model, X, y, cohort.groups, n_splits, seed)
        full = StrengthRiskModel(seed=seed).fit(X, y, groups=cohort.groups, origin=origin)
    except ConvergenceError:
        # Separated data (common in small cohorts): a ridge penalty keeps the fit finite.
        model = StrengthRiskModel(penalty="l2", C=1.0)
        info["penalty"] = "l2 (C=1 on the standardised feature; the unpenalised fit " \
                          "diverged: the failure load separates the outcomes)"
        oof = grouped_cross_val_predict(model, X, y, cohort.groups, n_splits, seed)
        full = StrengthRiskModel(penalty="l2", C=1.0, seed=seed).fit(
            X, y, groups=cohort.groups, origin=origin)
    summary = full.training_summary_
    info.update(n_splits=n_splits, seed=seed, intercept=full.intercept_,
                coef_per_BW=float(full.coef_[0]), n_events=summary.events,
                events_per_feature=summary.events / full.n_features_in_,
                covariance=None if full.coef_cov_ is None else full.coef_cov_.tolist())
    return oof, full, info


def _mirels_out_of_fold(totals: FloatArray, y: npt.NDArray[np.int64], groups: Any,
                        n_splits: int, seed: int) -> tuple[FloatArray | None, str]:
    """Out-of-fold probabilities of a Mirels logistic model (None when it cannot be fitted)."""
    if np.ptp(totals) == 0.0:
        return None, "all Mirels totals are equal"
    X = {"mirels_total": totals}
    try:
        return grouped_cross_val_predict(MirelsBaseline(), X, y, groups, n_splits, seed), \
            "logistic, unpenalised"
    except (ConvergenceError, ModelError):
        try:
            model = MirelsBaseline(penalty="l2", C=1.0)
            return grouped_cross_val_predict(model, X, y, groups, n_splits, seed), \
                "logistic, L2 (C=1; the unpenalised fit failed)"
        except (ConvergenceError, ModelError) as exc:
            return None, f"not fitted: {exc}"


def _auc_entry(y: npt.NDArray[np.int64], score: _Score, level: float, n_boot: int,
               seed: int, groups: npt.NDArray[np.str_]) -> dict[str, Any]:
    mask = score.known
    yy, ss = y[mask], score.values[mask]
    entry: dict[str, Any] = {"label": PREDICTORS[score.key], "n": int(mask.sum()),
                             "n_fractured": int(yy.sum()), "note": score.note}
    try:
        curve = roc_curve(yy, ss)
    except MetricsError as exc:
        entry.update(auc=None, error=exc.message)
        return entry
    entry["auc"] = curve.auc
    for method in ("delong", "bootstrap"):
        try:
            est = auc_ci(yy, ss, level=level, method=method, n_bootstrap=max(n_boot, 100),
                         seed=seed, groups=groups[mask] if method == "bootstrap" else None)
            entry[method] = {"lower": est.lower, "upper": est.upper, "se": est.se}
        except MetricsError as exc:
            entry[method] = {"lower": None, "upper": None, "se": None, "error": exc.message}
    entry["roc"] = {"fpr": curve.fpr, "tpr": curve.tpr,
                    "thresholds": np.where(np.isfinite(curve.thresholds), curve.thresholds,
                                           np.nan)}
    return entry


def _delong_entry(y: npt.NDArray[np.int64], a: _Score, b: _Score,
                  groups: npt.NDArray[np.str_], level: float, n_boot: int, seed: int
                  ) -> dict[str, Any]:
    mask = a.known & b.known
    entry: dict[str, Any] = {"a": a.key, "b": b.key, "n": int(mask.sum())}
    try:
        d = clustered_auc_difference(y[mask], a.values[mask], b.values[mask], groups[mask],
                                     level=level, n_bootstrap=max(n_boot, 100), seed=seed)
        entry["clustered"] = {"difference": d.difference, "lower": d.lower, "upper": d.upper,
                              "se": d.se, "p_value": d.p_value, "n_patients": d.n_clusters}
    except MetricsError as exc:
        entry["clustered"] = {"lower": None, "upper": None, "error": exc.message}
    try:
        t = delong_test(y[mask], a.values[mask], b.values[mask])
    except MetricsError as exc:
        entry["error"] = exc.message
        return entry
    entry.update(auc_a=t.auc_a, auc_b=t.auc_b, difference=t.difference, se=t.se, z=t.z,
                 p_value=t.p_value, n_fractured=t.n_positive)
    return entry


@dataclass(frozen=True)
class _Rule:
    key: str
    label: str
    predictor: str
    threshold: float
    inclusive: bool = True
    published: tuple[str, ...] = ()
    note: str = ""


def _rule_entry(y: npt.NDArray[np.int64], score: _Score, rule: _Rule, level: float,
                groups: npt.NDArray[np.str_] | None = None, n_boot: int = 2000, seed: int = 0
                ) -> dict[str, Any]:
    mask = score.known
    yy, ss = y[mask], score.values[mask]
    positive = ss >= rule.threshold if rule.inclusive else ss > rule.threshold
    entry: dict[str, Any] = {"label": rule.label, "predictor": rule.predictor,
                             "threshold": rule.threshold, "inclusive": rule.inclusive,
                             "n": int(mask.sum()), "note": rule.note}
    try:
        ss_ = sensitivity_specificity(yy, positive.astype(np.float64), None, level=level)
    except MetricsError as exc:
        entry["error"] = exc.message
        return entry
    entry.update(
        sensitivity={"value": ss_.sensitivity.value, "lower": ss_.sensitivity.lower,
                     "upper": ss_.sensitivity.upper},
        specificity={"value": ss_.specificity.value, "lower": ss_.specificity.lower,
                     "upper": ss_.specificity.upper},
        tp=ss_.tp, fn=ss_.fn, tn=ss_.tn, fp=ss_.fp,
        published=[_published(key, ss_.sensitivity.lower, ss_.sensitivity.upper,
                              ss_.specificity.lower, ss_.specificity.upper)
                   for key in rule.published],
    )
    if groups is not None:
        try:
            rates = clustered_rates(yy, positive, groups[mask], level=level,
                                    n_bootstrap=max(n_boot, 100), seed=seed)
            entry["clustered"] = {"sensitivity_ci": list(rates.sensitivity_ci),
                                  "specificity_ci": list(rates.specificity_ci),
                                  "n_patients": rates.n_clusters}
        except MetricsError as exc:
            entry["clustered"] = {"error": exc.message}
    return entry


def _published(key: str, sens_lo: float, sens_hi: float, spec_lo: float, spec_hi: float
               ) -> dict[str, Any]:
    point = OPERATING_POINTS[key]
    return {
        "key": key, "method": point.method, "rule": point.rule,
        "sensitivity": point.sensitivity, "specificity": point.specificity,
        "n_patients": point.n_patients, "n_fractures": point.n_fractures,
        "citation": str(CITATIONS[point.citation]),
        "within_cohort_ci": bool(sens_lo <= point.sensitivity <= sens_hi
                                 and spec_lo <= point.specificity <= spec_hi),
    }


def _youden_threshold(y: npt.NDArray[np.int64], scores: FloatArray) -> float:
    curve = roc_curve(y, scores)
    j = curve.tpr[1:] - curve.fpr[1:]
    return float(curve.thresholds[1:][int(np.argmax(j))])


def _matched_threshold(y: npt.NDArray[np.int64], scores: FloatArray, target: float) -> float:
    """The highest threshold whose sensitivity reaches ``target``."""
    curve = roc_curve(y, scores)
    reach = np.flatnonzero(curve.tpr[1:] >= target - 1e-12)
    return float(curve.thresholds[1:][int(reach[0])])


def _calibration_entry(y: npt.NDArray[np.int64], prob: FloatArray | None, note: str
                       ) -> dict[str, Any]:
    if prob is None:
        return {"error": note}
    entry: dict[str, Any] = {"brier": brier_score(y, prob), "model": note}
    prevalence = float(y.mean())
    entry["brier_null"] = prevalence * (1.0 - prevalence)
    try:
        fit = calibration_intercept_slope(y, prob)
        entry.update(intercept=fit.intercept, slope=fit.slope)
    except (MetricsError, ConvergenceError) as exc:
        entry.update(intercept=None, slope=None, error=exc.message)
    return entry


def _calibration_bins(y: npt.NDArray[np.int64], prob: FloatArray, level: float,
                      groups: npt.ArrayLike, n_boot: int, seed: int
                      ) -> dict[str, list[float]]:
    """Quantile bins of predicted probability: mean prediction, observed rate and its CI.

    The bins and their means are :func:`sklearn.calibration.calibration_curve`
    (``strategy="quantile"``). ``lower``/``upper`` are percentile intervals of the observed
    fraction per bin under the patient cluster bootstrap (bin edges fixed, patients
    resampled with all their femurs, :func:`risk.clustered.resample_weights`; replicates
    without a femur in a bin left out of that bin); ``wilson_lower``/``wilson_upper`` are
    the per-femur Wilson intervals (Wilson 1927), which treat a patient's femurs as
    independent, for comparison.
    """
    from sklearn.calibration import calibration_curve

    k = 10 if y.size >= 200 else 5 if y.size >= 25 else 3
    observed, predicted = calibration_curve(y, prob, n_bins=k, strategy="quantile")
    edges = np.percentile(prob, np.linspace(0.0, 100.0, k + 1))
    ids = np.searchsorted(edges[1:-1], prob)
    counts = np.bincount(ids, minlength=k)
    events = np.bincount(ids, weights=y, minlength=k)
    keep = counts > 0
    out: dict[str, list[float]] = {"predicted": [float(v) for v in predicted],
                                   "observed": [float(v) for v in observed],
                                   "lower": [], "upper": [], "wilson_lower": [],
                                   "wilson_upper": [],
                                   "n": [float(c) for c in counts[keep]]}
    for e, c in zip(events[keep], counts[keep], strict=True):
        lo, hi = wilson_interval(round(float(e)), int(c), level)
        out["wilson_lower"].append(lo)
        out["wilson_upper"].append(hi)
    weights = resample_weights(group_codes(np.asarray(groups).tolist(), y.size), n_boot, seed)
    member = (ids[None, :] == np.flatnonzero(keep)[:, None]).astype(np.float64)  # (bins, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = (weights @ (member * y).T) / (weights @ member.T)  # (B, bins)
    alpha = 1.0 - level
    for j in range(rates.shape[1]):
        ok = rates[np.isfinite(rates[:, j]), j]
        lo, hi = np.quantile(ok, [alpha / 2.0, 1.0 - alpha / 2.0])
        out["lower"].append(float(lo))
        out["upper"].append(float(hi))
    if not np.allclose(np.asarray(out["observed"]), events[keep] / counts[keep]):
        raise BenchmarkError("calibration bins disagree with scikit-learn's",
                             "report this as a bug")
    return out


# --------------------------------------------------------------------------------------------
# Competing risks and health economics.
# --------------------------------------------------------------------------------------------


def _died(cohort: Cohort) -> npt.NDArray[np.int64] | None:
    """The ``died`` column (0/1) when the cohort has one."""
    raw = cohort.extra.get("died")
    if raw is None:
        return None
    values = [str(v).strip() for v in raw]
    if any(v not in ("0", "1") for v in values):
        raise BenchmarkError("the died column must hold 0 or 1 for every femur",
                             "encode death during follow-up as 1")
    return np.array([int(v) for v in values], dtype=np.int64)


def _competing_entry(cohort: Cohort, fe_prob: FloatArray, fe_model: StrengthRiskModel,
                     level: float = 0.95, n_boot: int = 2000, seed: int = 0
                     ) -> dict[str, Any]:
    """Aalen-Johansen curves by risk group and cause-specific Cox models (fracture, death).

    The curves' pointwise intervals are patient cluster-bootstrap percentile intervals
    (:func:`risk.competing.cumulative_incidence` with the patient ids).

    The Cox models (covariate: the full FE model's log-odds) are stored with the FE model so
    that a patient's report can give the fracture risk within expected survival.
    """
    died = _died(cohort)
    entry: dict[str, Any] = {"horizons_months": list(HORIZONS_MONTHS)}
    if died is None:
        entry["error"] = ("the cohort has no died column: death cannot be treated as a "
                          "competing risk")
        return entry
    time, cause = event_codes(cohort.fractured, died, cohort.follow_up_months)
    entry.update(n_fractures=int(np.sum(cause == 1)), n_deaths=int(np.sum(cause == 2)),
                 n_censored=int(np.sum(cause == 0)))
    median = float(np.median(fe_prob))
    group_sets = {"fe": np.where(fe_prob > median, f"FE p > {median:.2f} (upper half)",
                                 f"FE p <= {median:.2f} (lower half)")}
    totals = cohort.mirels_total
    if totals is not None:
        group_sets["mirels"] = np.where(totals >= 9, "Mirels >= 9", "Mirels <= 8")
    curves: dict[str, list[dict[str, Any]]] = {}
    for key, labels in group_sets.items():
        curves[key] = [{"group": c.group, "cause": c.cause, "n": c.n, "time": c.time,
                        "cif": c.cif, "lower": c.lower, "upper": c.upper,
                        "n_patients": c.n_clusters,
                        "at": {f"{h:g}": list(v) for h, v in c.at_horizons.items()}}
                       for c in cumulative_incidence(time, cause, labels.tolist(),
                                                     clusters=cohort.groups.tolist(),
                                                     seed=seed, n_bootstrap=n_boot,
                                                     level=level)]
    entry["interval"] = ("pointwise percentile interval of the patient cluster bootstrap "
                         f"({n_boot} replicates, patients resampled within each group)")
    entry["aalen_johansen"] = curves
    log_odds = fe_model.decision_function(cohort.features("failure_load_BW"))
    try:
        cs = fit_cause_specific(time, cause, {HORIZON_COVARIATE: log_odds},
                                groups=cohort.groups.tolist())
    except MetricsError as exc:
        entry["cause_specific"] = {"error": exc.message}
        return entry
    fe_model.competing_risks_ = _json_ready(cs.to_dict())
    risk = cs.cumulative_incidence({HORIZON_COVARIATE: log_odds})
    entry["cause_specific"] = {
        "covariate": HORIZON_COVARIATE,
        "fracture_log_hr": float(cs.fracture_coef[0]), "fracture_se": float(cs.fracture_se[0]),
        "death_log_hr": float(cs.death_coef[0]), "death_se": float(cs.death_se[0]),
        "mean_fracture_before_death": {f"{h:g}": float(risk[:, j].mean())
                                       for j, h in enumerate(HORIZONS_MONTHS)},
        "note": "log hazard ratio per unit of the FE model's log-odds; standard errors "
                "robust, clustered by patient",
    }
    entry["per_femur_fracture_before_death"] = risk
    return entry


def _economics_entry(y: npt.NDArray[np.int64], fe_prob: FloatArray,
                     totals: npt.NDArray[np.int64] | None, inputs: EconomicInputs
                     ) -> dict[str, Any]:
    analysis = evaluate_strategies(y, fe_prob, totals, inputs)
    return {
        "inputs": inputs.to_dict(),
        "sources": {k: str(c) for k, c in ECONOMIC_SOURCES.items()},
        "strategies": [{"name": s.name, "fixed_per_100": s.fixed,
                        "fractures_per_100": s.fractures, "cost_per_100": s.cost,
                        "qalys_per_100": s.qalys, "nmb_per_100": s.nmb}
                       for s in analysis.strategies],
        "thresholds": analysis.thresholds, "nmb_per_100": analysis.nmb,
        "best_threshold": analysis.best_threshold,
        "note": "observed outcomes of this cohort; the FE probability is out of fold; "
                "defaults partly recalled/illustrative (risk.economics.ECONOMIC_SOURCES)",
    }


def _incidence_plot(entry: Mapping[str, Any], synthetic: bool) -> bytes:
    fig = _figure(9.0, 4.4)
    sets = entry.get("aalen_johansen", {})
    for i, (key, curves) in enumerate(sets.items()):
        ax = fig.add_subplot(1, max(len(sets), 1), i + 1)
        colours: dict[str, str] = {}
        for c in curves:
            colour = colours.setdefault(c["group"], ["#1f77b4", "#d62728", "#2ca02c"][
                len(colours) % 3])
            ax.step(c["time"], c["cif"], where="post", color=colour,
                    ls="-" if c["cause"] == "fracture" else "--", lw=1.6,
                    label=f"{c['cause']}: {c['group']} (n={c['n']})")
            ax.fill_between(c["time"], c["lower"], c["upper"], step="post", color=colour,
                            alpha=0.10 if c["cause"] == "fracture" else 0.05, lw=0)
        for h in entry["horizons_months"]:
            ax.axvline(h, color="0.8", lw=0.8)
        ax.set(xlabel="months", ylabel="cumulative incidence (95% patient-bootstrap CI)",
               ylim=(0, 1),
               title=_title(f"Aalen-Johansen by {'FE' if key == 'fe' else 'Mirels'}",
                            synthetic))
        ax.legend(fontsize=6.5)
    return _png(fig)


def _economics_plot(entry: Mapping[str, Any], synthetic: bool) -> bytes:
    fig = _figure(6.8, 4.6)
    ax = fig.add_subplot()
    ax.plot(entry["thresholds"], np.asarray(entry["nmb_per_100"]) / 1e3, color="#1f77b4",
            lw=1.8, label="fix if FE probability >= t")
    styles = {"fix none": ("0.5", "-"), "fix all": ("0.3", ":")}
    for s in entry["strategies"]:
        if s["name"].startswith("fix if FE"):
            continue
        colour, ls = styles.get(s["name"], ("#d62728", "--"))
        ax.axhline(s["nmb_per_100"] / 1e3, color=colour, ls=ls, label=s["name"])
    best = entry["best_threshold"]
    ax.axvline(best, color="#1f77b4", lw=0.8, ls=":", label=f"best t = {best:.2f}")
    currency = entry["inputs"]["currency"]
    ax.set(xlabel="FE probability threshold t",
           ylabel=f"net monetary benefit per 100 patients (k{currency})",
           title=_title("Health economics (cost, QALYs -> NMB)", synthetic))
    ax.legend(fontsize=7.5)
    return _png(fig)


# --------------------------------------------------------------------------------------------
# Plots (matplotlib's object API with the Agg canvas: no pyplot state, no display).
# --------------------------------------------------------------------------------------------


def _figure(width: float = 6.4, height: float = 5.6) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _title(text: str, synthetic: bool) -> str:
    return f"SYNTHETIC, not evidence - {text}" if synthetic else text


_RULE_MARKERS = {"mirels_ge9": "s", "mirels_ge8": "D", "aci_ge30": "^", "ctra_gt35": "v",
                 "fe_p50": "o", "fe_youden": "P", "fe_matched": "X"}


def _roc_plot(aucs: Mapping[str, Mapping[str, Any]], rules: Mapping[str, Mapping[str, Any]],
              synthetic: bool) -> bytes:
    fig = _figure(10.0, 6.2)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls=":")
    for key, entry in aucs.items():
        if entry.get("auc") is None:
            continue
        roc = entry["roc"]
        ci = entry["delong"]
        ci_text = "" if ci.get("lower") is None else f" [{ci['lower']:.2f}-{ci['upper']:.2f}]"
        # Straight segments between the empirical points: tied scores give diagonals.
        ax.plot(roc["fpr"], roc["tpr"], color=_COLOURS[key], lw=1.8,
                label=f"{entry['label']}: AUC {entry['auc']:.2f}{ci_text}")
    for key, entry in rules.items():
        if "sensitivity" not in entry:
            continue
        ax.plot(1.0 - entry["specificity"]["value"], entry["sensitivity"]["value"],
                _RULE_MARKERS.get(key, "o"), ms=8, color=_COLOURS[entry["predictor"]],
                mec="black", mew=0.7, ls="none", label=f"this cohort: {entry['label']}")
    for point in OPERATING_POINTS.values():
        ax.plot(point.false_positive_rate, point.sensitivity, marker="*", ms=12, mfc="none",
                mec="black", ls="none")
        ax.annotate(f"{point.method}\n({point.citation})",
                    (point.false_positive_rate, point.sensitivity),
                    textcoords="offset points", xytext=(6, -14), fontsize=6.5)
    ax.plot([], [], marker="*", ms=12, mfc="none", mec="black", ls="none",
            label="published operating points (DESIGN.md 4, risk.mirels)")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="1 - specificity",
           ylabel="sensitivity", title=_title("ROC curves (95% DeLong CI)", synthetic))
    ax.set_aspect("equal")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7.5, frameon=False)
    return _png(fig)


def _calibration_plot(bins: Mapping[str, Mapping[str, list[float]]], synthetic: bool) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls=":", label="perfect calibration")
    for key, b in bins.items():
        pred, obs = np.asarray(b["predicted"]), np.asarray(b["observed"])
        err = np.vstack([obs - np.asarray(b["lower"]), np.asarray(b["upper"]) - obs])
        colour = _COLOURS["fe_probability" if key == "fe_probability" else "mirels"]
        label = PREDICTORS["fe_probability"] if key == "fe_probability" else \
            "Mirels logistic (out of fold)"
        ax.errorbar(pred, obs, yerr=err, fmt="o-", color=colour, capsize=3, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability of fracture",
           ylabel="observed fraction fractured (95% patient-bootstrap CI)",
           title=_title("Calibration (quantile bins)", synthetic))
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def _decision_plot(curves: Mapping[str, Any], synthetic: bool) -> bytes:
    fig = _figure(6.8, 5.0)
    ax = fig.add_subplot()
    pt = np.asarray(curves["thresholds"])
    styles = {"fe_probability": ("-", _COLOURS["fe_probability"]),
              "mirels_probability": ("-", _COLOURS["mirels"]),
              "mirels_ge9": ("--", _COLOURS["mirels"]), "aci_ge30": ("--", _COLOURS["aci"]),
              "treat_all": (":", "0.3"), "treat_none": ("-", "0.6")}
    for key, (ls, colour) in styles.items():
        if key in curves["net_benefit"]:
            ax.plot(pt, curves["net_benefit"][key], ls=ls, color=colour, lw=1.6,
                    label=curves["labels"][key])
    prevalence = curves["prevalence"]
    ax.set(xlim=(0, float(pt.max())), ylim=(-0.05, max(0.05, 1.15 * prevalence)),
           xlabel="threshold probability (harm of fixation / benefit)", ylabel="net benefit",
           title=_title("Decision curves", synthetic))
    ax.legend(fontsize=8)
    return _png(fig)


# --------------------------------------------------------------------------------------------
# Reports: one list of blocks rendered to Markdown and to self-contained HTML.
# --------------------------------------------------------------------------------------------


@dataclass
class _Report:
    blocks: list[tuple[Any, ...]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def banner(self, text: str) -> None:
        self.blocks.append(("banner", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.blocks.append(("table", list(header), [list(r) for r in rows]))

    def image(self, name: str, png: bytes, caption: str) -> None:
        self.blocks.append(("img", name, png, caption))

    def markdown(self) -> str:
        out: list[str] = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append(f"{'#' * block[1]} {block[2]}")
            elif kind == "p":
                out.append(block[1])
            elif kind == "banner":
                out.append(f"> **{block[1]}**")
            elif kind == "table":
                header, rows = block[1], block[2]
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + "|".join("---" for _ in header) + "|")
                out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |"
                        for r in rows]
            elif kind == "img":
                out.append(f"![{block[3]}]({block[1]})")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        parts = [
            "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;"
            "color:#222}table{border-collapse:collapse;margin:1em 0;font-size:90%}"
            "td,th{border:1px solid #bbb;padding:.25em .6em;text-align:left}"
            "th{background:#eee}.banner{background:#fde2e1;border:2px solid #c0392b;"
            "padding:.8em;font-weight:bold}img{max-width:100%}</style>",
            "</head><body>",
        ]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                parts.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
            elif kind == "p":
                parts.append(f"<p>{html.escape(block[1])}</p>")
            elif kind == "banner":
                parts.append(f'<p class="banner">{html.escape(block[1])}</p>')
            elif kind == "table":
                parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>"
                                                     for h in block[1]) + "</tr>")
                parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row)
                          + "</tr>" for row in block[2]]
                parts.append("</table>")
            elif kind == "img":
                data = base64.b64encode(block[2]).decode("ascii")
                parts.append(f'<figure><img alt="{html.escape(block[3])}" '
                             f'src="data:image/png;base64,{data}">'
                             f"<figcaption>{html.escape(block[3])}</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{float(value):.{digits}f}"


def _ci(entry: Mapping[str, Any] | None, digits: int = 2) -> str:
    if not entry or entry.get("lower") is None:
        return "-"
    return f"{_f(entry['lower'], digits)}-{_f(entry['upper'], digits)}"


def _competing_blocks(report: _Report, entry: Mapping[str, Any]) -> None:
    report.heading("Competing risks: fracture vs death")
    if "error" in entry:
        report.para(entry["error"])
        return
    report.para(f"{entry['n_fractures']} fractures, {entry['n_deaths']} deaths without "
                f"fracture, {entry['n_censored']} censored alive. Cumulative incidence "
                "(Aalen-Johansen; pointwise 95 % CI of the patient cluster bootstrap) at the "
                "horizons:")
    rows = []
    for curves in entry["aalen_johansen"].values():
        for c in curves:
            rows.append([c["group"], c["cause"], str(c["n"]),
                         *[f"{_f(c['at'][f'{h:g}'][0])} ({_f(c['at'][f'{h:g}'][1])}-"
                           f"{_f(c['at'][f'{h:g}'][2])})" for h in entry["horizons_months"]]])
    report.table(["group", "cause", "n", *[f"{h:g} months" for h in entry["horizons_months"]]],
                 rows)
    cs = entry.get("cause_specific", {})
    if "error" in cs:
        report.para(f"Cause-specific Cox models not fitted: {cs['error']}")
    else:
        risk = ", ".join(f"{k} months {_f(v, 3)}"
                         for k, v in cs["mean_fracture_before_death"].items())
        report.para(f"Cause-specific Cox models on the FE log-odds: log HR of fracture "
                    f"{_f(cs['fracture_log_hr'], 3)} (SE {_f(cs['fracture_se'], 3)}), of death "
                    f"{_f(cs['death_log_hr'], 3)} (SE {_f(cs['death_se'], 3)}); mean fracture "
                    f"risk within expected survival: {risk}. Stored in fe_model.json for the "
                    "patient report.")


def _economics_blocks(report: _Report, entry: Mapping[str, Any]) -> None:
    report.heading("Health economics (per 100 patients)")
    cur = entry["inputs"]["currency"]
    report.table(["strategy", "fixations", "fractures", f"cost ({cur})", "QALYs",
                  f"NMB ({cur})"],
                 [[s["name"], _f(s["fixed_per_100"], 1), _f(s["fractures_per_100"], 1),
                   f"{s['cost_per_100']:,.0f}", _f(s["qalys_per_100"], 2),
                   f"{s['nmb_per_100']:,.0f}"] for s in entry["strategies"]])
    inputs = ", ".join(f"{k} {v}" for k, v in entry["inputs"].items())
    report.para(f"Best FE threshold by net monetary benefit: {entry['best_threshold']:.2f}. "
                f"Inputs: {inputs}. {entry['note']}.")
    report.para("Sources: " + " | ".join(entry["sources"].values()))


def _build_report(summary: Mapping[str, Any], images: Mapping[str, bytes]) -> _Report:
    report = _Report()
    synthetic = summary["synthetic"]
    report.heading(summary["title"], 1)
    if synthetic:
        report.banner(_SYNTHETIC_BANNER)
    c = summary["cohort"]
    report.para(f"Cohort {c['source']}: {c['n_femurs']} femurs of {c['n_patients']} patients, "
                f"{c['n_fractured']} fractured ({100 * c['prevalence']:.1f} %), median "
                f"follow-up {c['median_follow_up_months']:.1f} months. Confidence level "
                f"{100 * summary['level']:.0f} %; {summary['n_boot']} bootstrap replicates; "
                f"seed {summary['seed']}.")
    report.heading("Discrimination (ROC AUC)")
    rows = [[e["label"], str(e["n"]), str(e["n_fractured"]), _f(e.get("auc")),
             _ci(e.get("delong")), _ci(e.get("bootstrap")), e.get("note", "")]
            for e in summary["auc"].values()]
    report.table(["predictor", "n", "fractured", "AUC",
                  "95% CI DeLong (femurs independent)",
                  "95% CI patient-clustered bootstrap", "note"], rows)
    tests = [[f"{PREDICTORS[t['a']]} vs {PREDICTORS[t['b']]}", str(t["n"]),
              _f(t.get("difference"), 3), _f(t.get("p_value"), 4),
              _ci(t.get("clustered"), 3), _f(t.get("clustered", {}).get("p_value"), 4),
              t.get("error", "")] for t in summary["delong_tests"]]
    report.para("Correlated AUCs (same femurs): DeLong's test, and the patient-clustered "
                "bootstrap of the difference (patients resampled, both femurs together):")
    report.table(["comparison", "n", "AUC difference", "p DeLong",
                  "95% CI clustered bootstrap", "p clustered", "note"], tests)
    report.heading("Sensitivity and specificity")
    rows = []
    for e in summary["rules"].values():
        if "sensitivity" not in e:
            rows.append([e["label"], str(e["n"]), "-", "-", "-", e.get("error", ""), ""])
            continue
        published = "; ".join(
            f"{p['method']} {p['sensitivity']:.2f}/{p['specificity']:.2f} ({p['key']}"
            f"{', inside CI' if p['within_cohort_ci'] else ', outside CI'})"
            for p in e["published"])
        cl = e.get("clustered", {})
        sens_cl = "" if "sensitivity_ci" not in cl else \
            f"; clustered {_f(cl['sensitivity_ci'][0])}-{_f(cl['sensitivity_ci'][1])}"
        spec_cl = "" if "specificity_ci" not in cl else \
            f"; clustered {_f(cl['specificity_ci'][0])}-{_f(cl['specificity_ci'][1])}"
        rows.append([
            e["label"], str(e["n"]),
            f"{_f(e['sensitivity']['value'])} (Wilson {_ci(e['sensitivity'])}{sens_cl})",
            f"{_f(e['specificity']['value'])} (Wilson {_ci(e['specificity'])}{spec_cl})",
            f"{e['tp']}/{e['fn']}/{e['tn']}/{e['fp']}", published or "-", e.get("note", "")])
    report.table(["rule", "n", "sensitivity (95% CI)", "specificity (95% CI)",
                  "TP/FN/TN/FP", "published sens/spec", "note"], rows)
    report.heading("Calibration")
    rows = [[label, _f(e.get("brier"), 3), _f(e.get("brier_null"), 3),
             _f(e.get("intercept")), _f(e.get("slope")), e.get("model", e.get("error", ""))]
            for label, e in (("FE probability (out of fold)", summary["calibration"]["fe"]),
                             ("Mirels logistic (out of fold)",
                              summary["calibration"]["mirels"]))]
    report.table(["probability", "Brier", "Brier of prevalence", "calibration intercept",
                  "calibration slope", "model"], rows)
    fe = summary["fe_model"]
    report.para(f"FE model on the whole cohort: logit P(fracture) = {fe['intercept']:.3f} "
                f"{'-' if fe['coef_per_BW'] < 0 else '+'} {abs(fe['coef_per_BW']):.3f} x "
                f"failure_load_BW (penalty: {fe['penalty']}; "
                f"{fe['n_splits']}-fold grouped cross-validation for the out-of-fold "
                "predictions).")
    report.heading("Decision curves (net benefit)")
    dc = summary["decision_curve"]
    keys = list(dc["net_benefit"])
    report.table(["threshold probability", *[dc["labels"][k] for k in keys]],
                 [[f"{pt:.2f}", *[_f(dc["at"][f"{pt:.2f}"][k], 3) for k in keys]]
                  for pt in _REPORTED_PT])
    _competing_blocks(report, summary["competing_risks"])
    _economics_blocks(report, summary["economics"])
    report.heading("Figures")
    captions = {"roc.png": "ROC curves with this cohort's rules (dots) and the published "
                           "operating points (stars)",
                "calibration.png": "Calibration of the out-of-fold probabilities",
                "decision_curve.png": "Decision curves",
                "cumulative_incidence.png": "Cumulative incidence of fracture (solid) and "
                                            "death (dashed) by risk group (Aalen-Johansen)",
                "economics.png": "Net monetary benefit per 100 patients by strategy"}
    for name, png in images.items():
        report.image(name, png, _title(captions[name], synthetic))
    report.heading("Methods")
    for note in summary["methods"]:
        report.para(note)
    if synthetic:
        report.banner(_SYNTHETIC_BANNER)
    return report


# --------------------------------------------------------------------------------------------
# The harness.
# --------------------------------------------------------------------------------------------


_METHODS = (
    "FE probability: logistic model (StrengthRiskModel, sigmoid) of fracture on the FE failure "
    "load in body weights, predicted out of fold by grouped cross-validation (no patient in "
    "both the training and the test part; fractures spread over the folds).",
    "AUC intervals: DeLong (Wald on the AUC scale; it treats the two femurs of a patient as "
    "independent) and the patient-clustered percentile bootstrap (patients resampled with both "
    "femurs; risk.clustered), also for the differences of AUCs. The bootstrap of the FE "
    "probability resamples the out-of-fold predictions and does not refit the model.",
    "Competing risks (when the cohort has a died column): Aalen-Johansen cumulative incidence "
    "of fracture and of death by risk group, and cause-specific Cox models on the FE "
    "log-odds (lifelines), combined into each femur's fracture risk within expected "
    "survival at 3 and 6 months.",
    "Health economics: expected cost, QALYs and net monetary benefit per 100 patients of fix "
    "none / Mirels >= 9 / FE probability >= t / fix all from the observed outcomes "
    "(risk.economics; defaults cited there, partly recalled or illustrative).",
    "FE thresholds: probability >= 0.5 is fixed in advance. The Youden threshold and the "
    "threshold matching the sensitivity of Mirels >= 9 are chosen on the evaluated femurs "
    "themselves and are therefore optimistic.",
    "ACI and CTRA are evaluated on the femurs where they are known; DeLong tests against them "
    "use the femurs where both scores are known. CTRA > 35 % is a strict inequality.",
    "Net benefit = TP/n - FP/n x pt/(1 - pt) (Vickers & Elkin 2006); a rule (Mirels >= 9, "
    "ACI >= 30 mm) has one net benefit per threshold probability.",
    "Published operating points come from cohorts of <= 15 fractures; compare them with the "
    "intervals, not the point values.",
    "Calibration: the FE model is a logistic (sigmoid/Platt) map of the FE strength fitted in "
    "a scikit-learn pipeline; CalibratedClassifierCV is not stacked on it (a second sigmoid "
    "on a logistic model's log-odds only refits the same map; isotonic overfits cohorts of "
    "<= 15 fractures). Calibration bins: sklearn.calibration.calibration_curve, quantile "
    "strategy; the interval of each bin's observed fraction is a patient cluster-bootstrap "
    "percentile interval (per-femur Wilson intervals kept in summary.json for comparison).",
    "Aalen-Johansen cumulative incidence (lifelines) with pointwise patient cluster-bootstrap "
    "percentile intervals (patients resampled within each risk group, the estimator refitted "
    "on every replicate).",
)


def _n_splits(y: npt.NDArray[np.int64], groups: npt.NDArray[np.str_], wanted: int) -> int:
    fractured = {g for g, v in zip(groups, y, strict=True) if v == 1}
    intact = {g for g, v in zip(groups, y, strict=True) if v == 0}
    n = min(wanted, len(fractured), len(intact), len(set(groups.tolist())))
    if n < 2:
        raise BenchmarkError(
            f"the cohort has {len(fractured)} patient(s) with a fracture and {len(intact)} with "
            "a non-fractured femur; cross-validation needs at least 2 of each",
            "benchmark a larger cohort")
    return n


def run_benchmark(
    cohort_csv: str | Path,
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_boot: int = 2000,
    n_splits: int = 5,
    level: float = 0.95,
    title: str | None = None,
    economics: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Compare FE-based risk with Mirels, ACI and CTRA on a cohort table; write the reports.

    Args:
        cohort_csv: Cohort table (:mod:`risk.cohort` schema).
        out_dir: Output folder (created; its benchmark files are replaced together).
        seed: Seed of the fold assignment and of the bootstrap.
        n_boot: Bootstrap replicates of the AUC intervals (>= 100).
        n_splits: Folds of the grouped cross-validation (fewer when the cohort has fewer
            fractured or non-fractured patients).
        level: Confidence level of every interval.
        title: Report title (default: from the cohort file name).
        economics: Cost/utility table overriding :class:`risk.economics.EconomicInputs`.

    Returns:
        The summary (the content of ``summary.json``): cohort counts, ``auc`` per predictor,
        ``delong_tests``, ``rules`` (sensitivity/specificity), ``calibration``,
        ``decision_curve``, ``fe_model``, ``outputs``.

    Raises:
        CohortError: If the table is invalid.
        BenchmarkError: If the cohort has fewer than 2 fractured or 2 non-fractured
            patients, or ``n_boot`` is below 100.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise BenchmarkError(f"n_boot must be an integer >= 100, got {n_boot!r}",
                             "use e.g. n_boot=2000")
    cohort = read_cohort(cohort_csv)
    y = cohort.fractured
    synthetic = _is_synthetic(cohort)
    folds = _n_splits(y, cohort.groups, n_splits)
    fe_prob, fe_model, fe_info = _fe_out_of_fold(cohort, y, folds, seed)

    scores: dict[str, _Score] = {
        "fe_probability": _Score("fe_probability", fe_prob),
        "fe_strength": _Score("fe_strength", -cohort.failure_load_BW,
                              "score = -failure load (BW); nothing fitted"),
    }
    totals = cohort.mirels_total
    if totals is not None:
        scores["mirels"] = _Score("mirels", totals.astype(np.float64))
    if cohort.aci_mm is not None and np.isfinite(cohort.aci_mm).any():
        scores["aci"] = _Score("aci", cohort.aci_mm,
                               f"known for {int(np.isfinite(cohort.aci_mm).sum())} femurs")
    if cohort.ctra_reduction is not None and np.isfinite(cohort.ctra_reduction).any():
        ctra = cohort.ctra_reduction
        scores["ctra"] = _Score("ctra", ctra, f"known for {int(np.isfinite(ctra).sum())} femurs")

    groups = np.asarray(cohort.groups)
    aucs = {k: _auc_entry(y, s, level, n_boot, seed, groups) for k, s in scores.items()}
    pairs = [("fe_probability", "mirels"), ("fe_strength", "mirels"), ("fe_probability", "aci"),
             ("fe_probability", "ctra"), ("aci", "mirels")]
    tests = [_delong_entry(y, scores[a], scores[b], groups, level, n_boot, seed)
             for a, b in pairs if a in scores and b in scores]

    rules = [
        _Rule("mirels_ge9", "Mirels >= 9", "mirels", 9.0,
              published=("damron2003_mirels", "sternheim2020_mirels"),
              note="Mirels' fixation rule"),
        _Rule("mirels_ge8", "Mirels >= 8", "mirels", 8.0, note="fixation or judgement"),
        _Rule("aci_ge30", "ACI >= 30 mm", "aci", THRESHOLDS["aci"].value,
              published=("vanderwal2020_aci",)),
        _Rule("ctra_gt35", "CTRA > 35 %", "ctra", CTRA_THRESHOLD, inclusive=False,
              note="no verified published operating point"),
        _Rule("fe_p50", "FE p >= 0.50", "fe_probability", 0.5,
              published=("eggermont2018_fe", "sternheim2020_sfr"),
              note="fixed cut-off (honest)"),
    ]
    youden = _youden_threshold(y, fe_prob)
    rules.append(_Rule("fe_youden", f"FE p >= {youden:.3f} (Youden)", "fe_probability", youden,
                       published=("eggermont2018_fe", "sternheim2020_sfr"),
                       note="threshold chosen on these femurs: optimistic"))
    rule_entries = {r.key: _rule_entry(y, scores[r.predictor], r, level, groups, n_boot, seed)
                    for r in rules if r.predictor in scores}
    mirels9 = rule_entries.get("mirels_ge9", {})
    if "sensitivity" in mirels9:
        target = float(mirels9["sensitivity"]["value"])
        matched = _matched_threshold(y, fe_prob, target)
        rule = _Rule("fe_matched", f"FE p >= {matched:.3f} (sens. of Mirels >= 9)",
                     "fe_probability", matched,
                     note="specificity at Mirels' sensitivity; threshold chosen in-sample")
        rule_entries[rule.key] = _rule_entry(y, scores["fe_probability"], rule, level, groups,
                                             n_boot, seed)

    mirels_prob, mirels_note = (None, "no Mirels columns")
    if totals is not None:
        mirels_prob, mirels_note = _mirels_out_of_fold(totals.astype(np.float64), y,
                                                       cohort.groups, folds, seed)
    calibration = {"fe": _calibration_entry(y, fe_prob, "StrengthRiskModel, out of fold"),
                   "mirels": _calibration_entry(y, mirels_prob, mirels_note)}
    bins = {"fe_probability": _calibration_bins(y, fe_prob, level, groups, n_boot, seed)}
    if mirels_prob is not None:
        bins["mirels_probability"] = _calibration_bins(y, mirels_prob, level, groups, n_boot,
                                                       seed)

    decision = _decision_curves(y, fe_prob, mirels_prob, scores)
    try:
        inputs = EconomicInputs.from_mapping(economics or {})
    except MetricsError as exc:
        raise BenchmarkError(exc.message, exc.hint) from None
    competing = _competing_entry(cohort, fe_prob, fe_model, level, n_boot, seed)
    per_femur_horizon = competing.pop("per_femur_fracture_before_death", None)
    economic = _economics_entry(y, fe_prob, totals, inputs)
    summary: dict[str, Any] = {
        "title": title or f"osteofe benchmark: {Path(cohort_csv).name}",
        "synthetic": synthetic,
        "data_origin": "SYNTHETIC (osteofe in-silico cohort)" if synthetic else "as given",
        "level": level, "n_boot": n_boot, "seed": seed,
        "cohort": {
            "source": str(cohort_csv), "n_femurs": len(cohort),
            "n_patients": len(set(cohort.patient_id.tolist())),
            "n_fractured": cohort.n_fractured, "prevalence": float(y.mean()),
            "median_follow_up_months": float(np.median(cohort.follow_up_months)),
        },
        "auc": aucs,
        "delong_tests": tests,
        "rules": rule_entries,
        "calibration": calibration,
        "calibration_bins": bins,
        "decision_curve": decision,
        "competing_risks": competing,
        "economics": economic,
        "fe_model": fe_info,
        "methods": list(_METHODS),
    }
    if synthetic:
        summary["warning"] = _SYNTHETIC_BANNER
    if per_femur_horizon is not None:
        for j, h in enumerate(HORIZONS_MONTHS):
            scores_extra = _Score(f"fracture_before_death_{h:g}m", per_femur_horizon[:, j])
            summary.setdefault("_extra_columns", {})[scores_extra.key] = scores_extra.values
    _write_outputs(Path(out_dir), summary, cohort, y, scores, mirels_prob, fe_model)
    summary.pop("_extra_columns", None)
    return summary


def _decision_curves(y: npt.NDArray[np.int64], fe_prob: FloatArray,
                     mirels_prob: FloatArray | None, scores: Mapping[str, _Score]
                     ) -> dict[str, Any]:
    pt = DECISION_THRESHOLDS
    fe = net_benefit(y, fe_prob, pt)
    curves: dict[str, FloatArray] = {"fe_probability": fe.model}
    labels = {"fe_probability": PREDICTORS["fe_probability"]}
    if mirels_prob is not None:
        curves["mirels_probability"] = net_benefit(y, mirels_prob, pt).model
        labels["mirels_probability"] = "Mirels logistic (out of fold)"
    if "mirels" in scores:
        rule = (scores["mirels"].values >= 9).astype(np.float64)
        curves["mirels_ge9"] = net_benefit(y, rule, pt).model
        labels["mirels_ge9"] = "Mirels >= 9 (rule)"
    if "aci" in scores and scores["aci"].known.all():
        rule = (scores["aci"].values >= THRESHOLDS["aci"].value).astype(np.float64)
        curves["aci_ge30"] = net_benefit(y, rule, pt).model
        labels["aci_ge30"] = "ACI >= 30 mm (rule)"
    curves["treat_all"] = fe.treat_all
    curves["treat_none"] = fe.treat_none
    labels.update(treat_all="fix all", treat_none="fix none")
    index = {f"{p:.2f}": int(np.argmin(np.abs(pt - p))) for p in _REPORTED_PT}
    return {
        "thresholds": pt, "prevalence": fe.prevalence, "net_benefit": curves, "labels": labels,
        "at": {k: {name: float(c[i]) for name, c in curves.items()} for k, i in index.items()},
    }


def _predictions_csv(cohort: Cohort, y: npt.NDArray[np.int64], scores: Mapping[str, _Score],
                     mirels_prob: FloatArray | None, synthetic: bool) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    case_ids = cohort.extra.get("case_id", ("",) * len(cohort))
    keys = list(scores)
    header = ["patient_id", "side", "case_id", "fractured", *keys]
    if mirels_prob is not None:
        header.append("mirels_probability")
    if synthetic:
        header.append("data_origin")
    writer.writerow(header)
    for i in range(len(cohort)):
        row = [str(cohort.patient_id[i]), str(cohort.side[i]), case_ids[i], str(int(y[i]))]
        row += ["" if not math.isfinite(scores[k].values[i]) else repr(float(scores[k].values[i]))
                for k in keys]
        if mirels_prob is not None:
            row.append(repr(float(mirels_prob[i])))
        if synthetic:
            row.append("SYNTHETIC")
        writer.writerow(row)
    return buffer.getvalue()


def _json_ready(value: Any) -> Any:
    """Plain JSON types; non-finite floats become null."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_outputs(out: Path, summary: dict[str, Any], cohort: Cohort,
                   y: npt.NDArray[np.int64], scores: Mapping[str, _Score],
                   mirels_prob: FloatArray | None, fe_model: StrengthRiskModel) -> None:
    import json

    from risk.calibration import save_model

    synthetic = bool(summary["synthetic"])
    plotters: dict[str, Callable[[], bytes]] = {
        "roc.png": lambda: _roc_plot(summary["auc"], summary["rules"], synthetic),
        "calibration.png": lambda: _calibration_plot(summary["calibration_bins"], synthetic),
        "decision_curve.png": lambda: _decision_plot(summary["decision_curve"], synthetic),
        "economics.png": lambda: _economics_plot(summary["economics"], synthetic),
    }
    if "aalen_johansen" in summary["competing_risks"]:
        plotters["cumulative_incidence.png"] = lambda: _incidence_plot(
            summary["competing_risks"], synthetic)
    images = {name: plot() for name, plot in plotters.items()}
    names = ["summary.json", "summary.md", "summary.html", *images, "predictions.csv",
             "fe_model.json"]
    summary["outputs"] = {name: str(out / name) for name in names}
    extra = summary.pop("_extra_columns", {})
    report = _build_report(summary, images)
    with staged_output(out, final_last="summary.json") as stage:
        for name, png in images.items():
            (stage / name).write_bytes(png)
        (stage / "summary.md").write_text(report.markdown(), encoding="utf-8")
        (stage / "summary.html").write_text(report.html(summary["title"]), encoding="utf-8")
        (stage / "predictions.csv").write_text(
            _predictions_csv(cohort, y, {**scores, **{k: _Score(k, v) for k, v in
                                                     extra.items()}}, mirels_prob, synthetic),
            encoding="utf-8")
        save_model(fe_model, stage / "fe_model.json")
        (stage / "summary.json").write_text(
            json.dumps(_json_ready(summary), indent=2, default=json_default, allow_nan=False)
            + "\n", encoding="utf-8")


def format_benchmark(summary: Mapping[str, Any]) -> str:
    """A short text summary for the command line.

    Args:
        summary: The result of :func:`run_benchmark`.

    Returns:
        AUCs with intervals, the FE-vs-Mirels test, sensitivity/specificity per rule, and
        where the reports are.
    """
    c = summary["cohort"]
    lines = []
    if summary["synthetic"]:
        lines.append("SYNTHETIC cohort (in-silico, not patient data): synthetic, not evidence")
    lines.append(f"{c['n_femurs']} femurs, {c['n_fractured']} fractured")
    for e in summary["auc"].values():
        lines.append(f"  AUC {e['label']:<30} {_f(e.get('auc'))}  DeLong {_ci(e.get('delong'))}"
                     f"  patient-clustered bootstrap {_ci(e.get('bootstrap'))}")
    for t in summary["delong_tests"]:
        if t["a"] == "fe_probability" and t["b"] == "mirels" and "p_value" in t:
            lines.append(f"  FE probability vs Mirels: difference {t['difference']:+.3f}, "
                         f"p = {t['p_value']:.3g} (DeLong), clustered 95% CI "
                         f"{_ci(t.get('clustered'), 3)}")
    competing = summary.get("competing_risks", {})
    for curves in competing.get("aalen_johansen", {}).values():
        for c in curves:
            at = "  ".join(f"{h} mo {_f(v[0])} ({_f(v[1])}-{_f(v[2])})"
                           for h, v in c["at"].items())
            lines.append(f"  CIF {c['cause']:<8} {c['group']:<28} {at}")
    if "error" in competing:
        lines.append(f"  competing risks: {competing['error']}")
    economics = summary.get("economics")
    if economics:
        cur = economics["inputs"]["currency"]
        for s in economics["strategies"]:
            lines.append(f"  {s['name']:<36} per 100: {s['fixed_per_100']:5.1f} fixed, "
                         f"{s['fractures_per_100']:5.1f} fractures, cost "
                         f"{s['cost_per_100']:>12,.0f} {cur}, QALYs {s['qalys_per_100']:6.2f}, "
                         f"NMB {s['nmb_per_100']:>12,.0f}")
    for e in summary["rules"].values():
        if "sensitivity" in e:
            lines.append(f"  {e['label']:<38} sens {_f(e['sensitivity']['value'])} "
                         f"({_ci(e['sensitivity'])})  spec {_f(e['specificity']['value'])} "
                         f"({_ci(e['specificity'])})")
    outputs = summary.get("outputs", {})
    if "summary.html" in outputs:
        lines.append(f"report: {outputs['summary.html']}")
    return "\n".join(lines)
