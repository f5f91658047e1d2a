"""Risk stage: Mirels score, load-to-strength ratio, calibrated fracture probability.

Works on numbers only: it imports nothing from meshing (except :mod:`meshing.errors`),
material, fea or osteofe, and never dolfinx.

- :mod:`risk.mirels`: the Mirels score with each item's derivation, published thresholds
  (ACI >= 30 mm, Mirels >= 9, phi >= 1) and clinical operating points, with sources.
- :mod:`risk.metrics`: ROC/AUC (scikit-learn) with DeLong or bootstrap intervals, DeLong's test,
  sensitivity/specificity with Wilson intervals, Brier score, calibration intercept/slope,
  decision-curve net benefit.
- :mod:`risk.calibration`: scikit-learn logistic pipelines (:class:`StrengthRiskModel`,
  :class:`MirelsBaseline`) with bootstrap coefficient covariance, grouped cross-validation,
  probability intervals, contributions, clinical refusal rules, JSON model files.
- :mod:`risk.clustered`: patient-clustered bootstrap of AUCs and AUC differences.
- :mod:`risk.federated`: exact federated Newton fit of a logistic model across centres.
- :mod:`risk.competing`: fracture vs death (Aalen-Johansen, cause-specific Cox; lifelines).
- :mod:`risk.economics`: expected cost and QALYs of fixation strategies.
- :mod:`risk.cohort`: the cohort CSV table (read, validate, write).
"""

import importlib
from typing import TYPE_CHECKING, Any

from risk.cohort import COLUMNS, Cohort, ColumnSpec, read_cohort, write_cohort
from risk.errors import (
    CohortError,
    ConvergenceError,
    FeatureMismatchError,
    MetricsError,
    MirelsError,
    ModelError,
    NotFittedError,
    RiskError,
)
from risk.mirels import (
    CITATIONS,
    MIRELS_FIX_MIN,
    MIRELS_JUDGEMENT,
    MIRELS_LESION_POINTS,
    MIRELS_PAIN_POINTS,
    MIRELS_SITE_POINTS,
    MIRELS_SIZE_BOUNDS,
    OPERATING_POINTS,
    THRESHOLDS,
    USER_GIVEN,
    Citation,
    MirelsItem,
    MirelsScore,
    OperatingPoint,
    Threshold,
    aci_positive,
    lesion_item,
    load_to_strength_ratio,
    mirels_recommendation,
    pain_item,
    score_mirels,
    site_item,
    size_item,
)

if TYPE_CHECKING:  # the scikit-learn modules load on first use (below)
    from risk.calibration import (
        MirelsBaseline,
        PredictionInterval,
        StrengthRiskModel,
        TrainingSummary,
        assign_group_folds,
        clinical_check,
        clinical_prediction,
        clone,
        grouped_cross_val_predict,
        load_model,
        model_from_json,
        save_model,
    )
    from risk.metrics import (
        AucEstimate,
        CalibrationFit,
        DecisionCurve,
        DelongTest,
        Proportion,
        RocCurve,
        SensSpec,
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

#: Names of the modules that import scikit-learn (~75 MB, 0.5 s): loaded on first use, so
#: that an analysis that computes no probability (and every MPI rank) never loads it.
_LAZY = {
    "MirelsBaseline": "risk.calibration",
    "PredictionInterval": "risk.calibration",
    "StrengthRiskModel": "risk.calibration",
    "TrainingSummary": "risk.calibration",
    "assign_group_folds": "risk.calibration",
    "clinical_check": "risk.calibration",
    "clinical_prediction": "risk.calibration",
    "clone": "risk.calibration",
    "grouped_cross_val_predict": "risk.calibration",
    "load_model": "risk.calibration",
    "model_from_json": "risk.calibration",
    "save_model": "risk.calibration",
    "AucEstimate": "risk.metrics",
    "CalibrationFit": "risk.metrics",
    "DecisionCurve": "risk.metrics",
    "DelongTest": "risk.metrics",
    "Proportion": "risk.metrics",
    "RocCurve": "risk.metrics",
    "SensSpec": "risk.metrics",
    "auc_ci": "risk.metrics",
    "brier_score": "risk.metrics",
    "calibration_intercept_slope": "risk.metrics",
    "delong_test": "risk.metrics",
    "delong_variance": "risk.metrics",
    "net_benefit": "risk.metrics",
    "roc_auc": "risk.metrics",
    "roc_curve": "risk.metrics",
    "sensitivity_specificity": "risk.metrics",
    "wilson_interval": "risk.metrics",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'risk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CITATIONS",
    "COLUMNS",
    "MIRELS_FIX_MIN",
    "MIRELS_JUDGEMENT",
    "MIRELS_LESION_POINTS",
    "MIRELS_PAIN_POINTS",
    "MIRELS_SITE_POINTS",
    "MIRELS_SIZE_BOUNDS",
    "OPERATING_POINTS",
    "THRESHOLDS",
    "USER_GIVEN",
    "AucEstimate",
    "CalibrationFit",
    "Citation",
    "Cohort",
    "CohortError",
    "ColumnSpec",
    "ConvergenceError",
    "DecisionCurve",
    "DelongTest",
    "FeatureMismatchError",
    "MetricsError",
    "MirelsBaseline",
    "MirelsError",
    "MirelsItem",
    "MirelsScore",
    "ModelError",
    "NotFittedError",
    "OperatingPoint",
    "PredictionInterval",
    "Proportion",
    "RiskError",
    "RocCurve",
    "SensSpec",
    "StrengthRiskModel",
    "Threshold",
    "TrainingSummary",
    "aci_positive",
    "assign_group_folds",
    "auc_ci",
    "brier_score",
    "calibration_intercept_slope",
    "clinical_check",
    "clinical_prediction",
    "clone",
    "delong_test",
    "delong_variance",
    "grouped_cross_val_predict",
    "lesion_item",
    "load_model",
    "load_to_strength_ratio",
    "mirels_recommendation",
    "model_from_json",
    "net_benefit",
    "pain_item",
    "read_cohort",
    "roc_auc",
    "roc_curve",
    "save_model",
    "score_mirels",
    "sensitivity_specificity",
    "site_item",
    "size_item",
    "wilson_interval",
    "write_cohort",
]
