"""Calibrated fracture-probability models on scikit-learn, saved as JSON (never pickle).

- :class:`StrengthRiskModel`: ``Pipeline(StandardScaler, LogisticRegression)`` (sigmoid /
  Platt 1999) of fracture on features such as the FE failure load in body weights, with a
  patient-clustered bootstrap covariance of its coefficients, so that every probability has
  an interval (:meth:`~StrengthRiskModel.predict_interval`), and exact additive log-odds
  contributions per feature (:meth:`~StrengthRiskModel.contributions`).
- :class:`MirelsBaseline`: the Mirels total as an estimator with the same API (logistic on
  the score, or a fixed score -> probability table).
- :func:`grouped_cross_val_predict`: out-of-fold probabilities with
  :class:`~sklearn.model_selection.StratifiedGroupKFold` (both femurs of a patient stay
  together) and :func:`sklearn.base.clone`.
- :func:`clinical_check` / :func:`clinical_prediction`: a model fitted on a synthetic cohort,
  with fewer than 10 events per feature or without covariance is refused for a patient's
  report unless forced, and then banner-marked.

The estimators are scikit-learn estimators (``BaseEstimator``/``ClassifierMixin``: clone,
get/set_params). Isotonic calibration (and ``CalibratedClassifierCV(method="isotonic")``) is
not offered: it overfits cohorts of <= 15 fractures; the logistic model is itself the
sigmoid calibration of the FE strength.

Model files are JSON (:meth:`to_json`, :func:`save_model`, :func:`load_model`): feature
names, coefficients per original unit and standardised, the scaler, training n / events /
patients / cohort origin, the bootstrap covariance, osteofe and scikit-learn versions; the
pipeline is rebuilt from these arrays on loading. Old files (``format_version`` 1) are
refused with a message saying how to refit.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from numbers import Integral, Real
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt
import sklearn
from scipy import special, stats
from scipy.linalg import LinAlgWarning
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from core.types import FloatArray, IntArray
from risk.clustered import group_codes
from risk.cohort import atomic_write_text
from risk.competing import HORIZONS_MONTHS, horizon_risk
from risk.errors import (
    ConvergenceError,
    FeatureMismatchError,
    MetricsError,
    ModelError,
    NotFittedError,
)
from risk.metrics import _as_binary
from risk.mirels import MIRELS_FIX_MIN, MirelsScore

__all__ = [
    "CASE_FEATURE_RANGES",
    "FEATURE_RANGES",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_ABS_LOG_ODDS",
    "MIN_EVENTS_PER_FEATURE",
    "MIRELS_FEATURE",
    "ORIGINS",
    "TRAINING_RANGE_SD",
    "Contributions",
    "MirelsBaseline",
    "PredictionInterval",
    "StrengthRiskModel",
    "TrainingSummary",
    "assign_group_folds",
    "clinical_check",
    "clinical_prediction",
    "clone",
    "grouped_cross_val_predict",
    "load_model",
    "model_from_json",
    "plausible_range",
    "save_model",
]


#: ``format`` field of every model file.
FORMAT = "osteofe-risk-model"
#: Version of the JSON layout written by :meth:`to_json`.
FORMAT_VERSION = 2
#: Cohort origins a model records (``training.origin``).
ORIGINS = ("measured", "synthetic", "unspecified")
#: Fewest events (fractures) per feature for clinical use (Peduzzi et al. 1996).
MIN_EVENTS_PER_FEATURE = 10
#: ``bootstrap.method`` of a model whose covariance comes from :meth:`fit`.
BOOTSTRAP_METHOD = "patient-clustered bootstrap"
#: Covariate of the cause-specific Cox models stored with a model (``competing_risks``): the
#: model's own log-odds of fracture.
HORIZON_COVARIATE = "fe_log_odds"
#: Feature name of :class:`MirelsBaseline`.
MIRELS_FEATURE = "mirels_total"
#: Range of each feature the strength pipeline offers a risk model
#: (:func:`osteofe.pipeline._fracture_probability`), in its units: failure load 0-50 body
#: weights / 0-50 kN (published femoral strengths 1-20 kN), body mass 20-300 kg (the
#: pipeline's accepted range), axial cortical involvement 0-500 mm (a whole femur),
#: CT-rigidity reduction a fraction 0-1, Mirels total 4-12. A loaded model must give finite,
#: meaningful log-odds over these ranges (:data:`MAX_ABS_LOG_ODDS`).
FEATURE_RANGES: dict[str, tuple[float, float]] = {
    "failure_load_BW": (0.0, 50.0),
    "failure_load_N": (0.0, 50_000.0),
    "body_mass_kg": (20.0, 300.0),
    "aci_mm": (0.0, 500.0),
    "ctra_reduction": (0.0, 1.0),
    MIRELS_FEATURE: (4.0, 12.0),
}
#: Ranges of the per-load-case features (``<case>_failure_load_BW``,
#: ``<case>_load_to_strength``: applied load / failure load, 0-20), by name ending.
CASE_FEATURE_RANGES: dict[str, tuple[float, float]] = {
    "_failure_load_BW": (0.0, 50.0),
    "_load_to_strength": (0.0, 20.0),
}


def plausible_range(name: str) -> tuple[float, float] | None:
    """The plausible range of a feature the strength pipeline offers.

    Args:
        name: Feature name.

    Returns:
        ``(low, high)`` from :data:`FEATURE_RANGES` or, by name ending,
        :data:`CASE_FEATURE_RANGES`; None for a feature the pipeline does not offer.
    """
    if name in FEATURE_RANGES:
        return FEATURE_RANGES[name]
    for ending, limits in CASE_FEATURE_RANGES.items():
        if name.endswith(ending) and len(name) > len(ending):
            return limits
    return None
#: Largest |log-odds| a loaded model may reach over :data:`FEATURE_RANGES`: exp() of more
#: than ~709 overflows float64, and a probability of 1 - 1e-300 is no calibrated estimate.
#: Unpenalised fits on nearly separated cohorts reach ~90 per training SD (measured on 300
#: simulated cohorts): 4 SD either side stays well inside.
MAX_ABS_LOG_ODDS = 700.0
#: Largest |standardised coefficient| (log-odds per training SD) accepted from a fit:
#: scikit-learn's Newton solver stops on separated data at ~20-50 per SD with a tiny gradient
#: instead of diverging; an odds ratio of e^25 per SD is separation, not an estimate.
MAX_STANDARDIZED_COEF = 25.0
#: Half width, in training standard deviations, of the range a feature outside
#: :data:`FEATURE_RANGES` is checked over.
TRAINING_RANGE_SD = 4.0
_DIGITS = re.compile(r"[0-9]+")


def _osteofe_version() -> str:
    try:
        return metadata.version("osteofe")
    except metadata.PackageNotFoundError:  # pragma: no cover - bare checkout
        return "0+unknown"


@dataclass(frozen=True)
class TrainingSummary:
    """What a model was fitted on.

    Attributes:
        n: Femurs (rows).
        events: Fractured femurs.
        auc: Apparent (training-set) AUC; optimistic - use
            :func:`grouped_cross_val_predict` for an honest one. None for a federated fit
            (the coordinator never sees the rows).
        n_groups: Patients (bootstrap clusters).
        origin: Cohort origin, one of :data:`ORIGINS`.
    """

    n: int
    events: int
    auc: float | None
    n_groups: int
    origin: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"n": self.n, "events": self.events, "auc": self.auc,
                "n_groups": self.n_groups, "origin": self.origin}


# --------------------------------------------------------------------------------------------
# Feature tables: arrays, dicts of columns, DataFrame-likes.
# --------------------------------------------------------------------------------------------


def _is_frame(X: object) -> bool:
    return hasattr(X, "columns") and hasattr(X, "__getitem__") and not isinstance(X, np.ndarray)


def _columns(X: object) -> dict[str, Any] | None:
    """A dict of raw columns for a Mapping or DataFrame-like, else ``None``."""
    if isinstance(X, Mapping):
        return {str(k): v for k, v in X.items()}
    if _is_frame(X):
        return {str(c): X[c] for c in X.columns}  # type: ignore[attr-defined,index]
    return None


def _read_features(X: object) -> tuple[FloatArray, tuple[str, ...] | None]:
    """Features as an (n, k) float64 array plus their names (``None`` for a plain array)."""
    cols = _columns(X)
    if cols is not None:
        if not cols:
            raise ModelError("the feature table has no columns", "pass at least one feature")
        names = tuple(cols)
        arrays = []
        for name in names:
            col = np.asarray(cols[name])
            if col.ndim != 1 or not (np.issubdtype(col.dtype, np.number) or col.dtype == bool):
                raise ModelError(
                    f"feature {name!r} must be a 1-D numeric column, got dtype {col.dtype} and "
                    f"shape {col.shape}",
                    "encode every feature as numbers (one value per femur)",
                )
            arrays.append(col.astype(np.float64))
        lengths = {a.size for a in arrays}
        if len(lengths) != 1:
            raise ModelError(
                f"feature columns have different lengths {sorted(lengths)}",
                "give every feature one value per femur",
            )
        data = np.column_stack(arrays)
    else:
        arr = np.asarray(X)
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ModelError(f"X must be numeric, got dtype {arr.dtype}", "pass numbers")
        data = arr.astype(np.float64)
        if data.ndim == 1:
            data = data[:, None]
        if data.ndim != 2:
            raise ModelError(f"X must be 1-D or 2-D, got shape {data.shape}", "reshape X")
        names = None
    if data.shape[0] == 0:
        raise ModelError("X has no rows", "pass at least one femur")
    if not np.all(np.isfinite(data)):
        bad_rows, bad_cols = np.nonzero(~np.isfinite(data))
        j = int(bad_cols[0])
        label = repr(names[j]) if names else f"column {j}"
        raise ModelError(
            f"feature {label} has a missing or infinite value at row {int(bad_rows[0])}",
            "drop or impute femurs with missing features",
        )
    return data, names


def _match_features(
    data: FloatArray, names: tuple[str, ...] | None, expected: tuple[str, ...]
) -> FloatArray:
    """Reorder named columns to ``expected``; refuse any other feature set."""
    if names is None:
        if data.shape[1] != len(expected):
            raise FeatureMismatchError(
                f"X has {data.shape[1]} features, but the model is expecting {len(expected)} "
                f"features as input: {list(expected)}",
                "pass the features the model was fitted on, in that order (or as a dict)",
            )
        return data
    if len(set(names)) != len(names) or set(names) != set(expected):
        missing = [n for n in expected if n not in names]
        extra = [n for n in names if n not in expected]
        raise FeatureMismatchError(
            f"features do not match the model: expected {list(expected)}, given {list(names)} "
            f"(missing {missing}, unexpected {extra})",
            "pass exactly the features the model was fitted on",
        )
    return data[:, [names.index(n) for n in expected]]


def _take_rows(X: object, idx: IntArray) -> object:
    """Rows ``idx`` of a feature table, keeping its kind (dict of columns or array)."""
    cols = _columns(X)
    if cols is not None:
        return {k: np.asarray(v)[idx] for k, v in cols.items()}
    arr = np.asarray(X)
    if arr.dtype == object:
        items = list(X)  # type: ignore[call-overload]
        return [items[i] for i in idx]
    return arr[idx]


def _n_rows(X: object) -> int:
    cols = _columns(X)
    if cols is not None:
        return int(np.asarray(next(iter(cols.values()))).shape[0]) if cols else 0
    shape: tuple[int, ...] = tuple(getattr(X, "shape", None) or np.shape(X))  # type: ignore[call-overload]
    if not shape:
        raise ModelError(f"X must be a table of rows, got {type(X).__name__}", "pass an array")
    return int(shape[0])


#: Hint of the errors about a model file's content.
_CORRUPT = "the file is corrupt or was edited by hand; refit and save the model again"


def _json_number(value: object, name: str) -> float:
    """A finite JSON number (not a boolean) as float, or ModelError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            float(value)):
        raise ModelError(f"model JSON {name} is {value!r}, not a finite number", _CORRUPT)
    return float(value)


def _json_count(value: object, name: str) -> int:
    """A whole JSON number >= 0 as int, or ModelError."""
    number = _json_number(value, name)
    if number < 0 or number != math.floor(number):
        raise ModelError(f"model JSON {name} is {value!r}, not a count", _CORRUPT)
    return int(number)


def _json_vector(value: object, name: str, length: int, *, positive: bool = False
                 ) -> FloatArray:
    """A JSON list of ``length`` finite (positive) numbers as float64, or ModelError."""
    if not isinstance(value, list):
        raise ModelError(f"model JSON {name} is {value!r}, not a list of numbers", _CORRUPT)
    if len(value) != length:
        what = "coefficients" if name == "coef" else f"{name} values"
        raise ModelError(f"model JSON has {len(value)} {what} for {length} features", _CORRUPT)
    out = np.array([_json_number(v, name) for v in value], dtype=np.float64)
    if positive and np.any(out <= 0.0):
        raise ModelError(f"model JSON {name} holds a value <= 0: {value!r}", _CORRUPT)
    return out


# --------------------------------------------------------------------------------------------
# The scikit-learn estimators.
# --------------------------------------------------------------------------------------------


def _check_penalty(penalty: object, C: object) -> float:
    """scikit-learn's ``C`` for ``penalty`` (``inf``: no penalty)."""
    if penalty not in ("none", "l2"):
        raise ModelError(f"unknown penalty {penalty!r}", "use penalty='none' or 'l2'")
    if (isinstance(C, bool) or not isinstance(C, Real)
            or not (math.isfinite(float(C)) and float(C) > 0)):
        raise ModelError(f"C must be a positive finite number, got {C!r}",
                         "C is the inverse L2 strength: smaller C = stronger shrinkage")
    return float(C) if penalty == "l2" else math.inf


def _check_count(value: object, name: str, low: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ModelError(f"{name} must be an integer >= {low}, got {value!r}", hint)
    return int(value)


def _fit_targets(y: npt.ArrayLike, n: int) -> IntArray:
    try:
        yv = _as_binary(y)
    except MetricsError as exc:
        raise ModelError(exc.message, exc.hint) from None
    if yv.size != n:
        raise ModelError(f"X has {n} rows but y has {yv.size}", "pass one outcome per femur")
    return yv


def _sk_fit(pipeline: Pipeline, data: FloatArray, y: IntArray) -> Pipeline:
    """Fit a scaler + logistic pipeline; non-convergence (separated data) is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        warnings.simplefilter("error", LinAlgWarning)
        warnings.simplefilter("error", RuntimeWarning)
        try:
            pipeline.fit(data, y)
        except (ConvergenceWarning, LinAlgWarning, RuntimeWarning, np.linalg.LinAlgError,
                FloatingPointError) as exc:
            raise ConvergenceError(
                f"logistic fit did not converge ({type(exc).__name__}: the outcome is "
                "probably perfectly or quasi-perfectly separated by the features)",
                "use an L2 penalty (penalty='l2') or more data") from exc
    coef = pipeline[-1].coef_
    if not np.all(np.isfinite(coef)) or np.max(np.abs(coef)) > MAX_STANDARDIZED_COEF:
        raise ConvergenceError(
            f"logistic fit diverged: a standardised coefficient reached "
            f"{float(np.max(np.abs(coef))):.3g} log-odds per SD (> {MAX_STANDARDIZED_COEF:g}: "
            "the outcome is perfectly or quasi-perfectly separated by the features)",
            "use an L2 penalty (penalty='l2') or more data")
    return pipeline


def _pipeline(C: float, max_iter: int, tol: float) -> Pipeline:
    """StandardScaler + LogisticRegression (Newton-Cholesky: exact maximum likelihood)."""
    return Pipeline([("scale", StandardScaler()),
                     ("logit", LogisticRegression(C=C, solver="newton-cholesky", tol=tol,
                                                  max_iter=max_iter))])


@dataclass(frozen=True)
class Contributions:
    """Exact additive decomposition of a linear model's log-odds.

    ``log_odds = base_log_odds + contributions.sum(axis=1)``: ``base_log_odds`` is the
    log-odds of a femur at the training mean of every feature (the standardised model's
    intercept); feature j contributes ``coef_j * (x_j - mean_j)`` log-odds. For a linear
    logistic model these are also its exact SHAP values on the log-odds scale (with the
    training mean as background; Lundberg & Lee 2017, NeurIPS, "linear models").

    Attributes:
        feature_names: Features, length k.
        base_log_odds: Log-odds at the training mean.
        contributions: Per femur and feature, shape (n, k), float64, log-odds.
        log_odds: Per femur, shape (n,).
    """

    feature_names: tuple[str, ...]
    base_log_odds: float
    contributions: FloatArray
    log_odds: FloatArray

    @property
    def base_probability(self) -> float:
        """Probability at the training mean."""
        return float(special.expit(self.base_log_odds))


@dataclass(frozen=True)
class PredictionInterval:
    """Predicted probabilities with confidence intervals.

    The interval is ``expit(eta +- z se(eta))`` with ``se(eta)^2 = g Sigma g^T``,
    ``g = [1, x]`` and ``Sigma`` the bootstrap covariance of ``(intercept, coef)`` stored
    with the model (delta method on the log-odds scale).

    Attributes:
        probability: P(fracture), shape (m,), float64.
        lower: Lower bound, shape (m,).
        upper: Upper bound, shape (m,).
        level: Confidence level.
        n_bootstrap: Bootstrap refits behind the covariance.
        n_failed: Refits that failed (one class drawn, or separated) and were left out.
    """

    probability: FloatArray
    lower: FloatArray
    upper: FloatArray
    level: float
    n_bootstrap: int
    n_failed: int


class _LogisticRiskModel(ClassifierMixin, BaseEstimator):
    """Fitting, bootstrap covariance, prediction, intervals, contributions and JSON.

    Its ``__init__`` stores the fitting parameters every model has (scikit-learn's contract:
    parameters only, no validation); see :class:`StrengthRiskModel` for their meaning.
    """

    _kind: ClassVar[str]

    def __init__(self, penalty: Literal["none", "l2"] = "none", C: float = 1.0,
                 n_bootstrap: int = 100, seed: int | None = 0, max_iter: int = 100,
                 tol: float = 1e-10) -> None:
        self.penalty = penalty
        self.C = C
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.max_iter = max_iter
        self.tol = tol

    # fitted attributes (set by fit / from_json; annotations only, no class values)
    pipeline_: Pipeline
    coef_: FloatArray
    intercept_: float
    mean_: FloatArray
    scale_: FloatArray
    coef_cov_: FloatArray | None
    n_bootstrap_: int
    n_failed_: int
    covariance_method_: str
    competing_risks_: dict[str, Any] | None
    training_summary_: TrainingSummary
    feature_names_in_: tuple[str, ...]
    n_features_in_: int
    classes_: npt.NDArray[np.int64]
    n_iter_: int
    osteofe_version_: str

    # parameters common to both models (set by the subclasses' __init__)
    penalty: str
    C: float
    n_bootstrap: int
    seed: int | None
    max_iter: int
    tol: float

    # --- fitting ------------------------------------------------------------------------

    def _fit_logistic(self, data: FloatArray, yv: IntArray, names: tuple[str, ...],
                      groups: Iterable[Hashable] | None, origin: str) -> None:
        C = _check_penalty(self.penalty, self.C)
        max_iter = _check_count(self.max_iter, "max_iter", 1, "use 100")
        n_boot = _check_count(self.n_bootstrap, "n_bootstrap", 0, "use 100 (0: no interval)")
        if isinstance(self.tol, bool) or not isinstance(self.tol, Real) or not self.tol > 0:
            raise ModelError(f"tol must be > 0, got {self.tol!r}", "use 1e-10")
        if origin not in ORIGINS:
            raise ModelError(f"unknown cohort origin {origin!r}",
                             f"use one of {', '.join(ORIGINS)}")
        constant = np.flatnonzero(np.ptp(data, axis=0) == 0.0)
        if constant.size:
            raise ModelError(
                f"feature {names[int(constant[0])]!r} is constant in the training data",
                "drop features that do not vary between femurs")
        try:
            codes = group_codes(groups, yv.size)
        except MetricsError as exc:
            raise ModelError(exc.message, exc.hint) from None
        pipe = _sk_fit(_pipeline(C, max_iter, float(self.tol)), data, yv)
        self._set_pipeline(pipe, names)
        eta = self._linear(data)
        self.training_summary_ = TrainingSummary(
            int(yv.size), int(yv.sum()), float(roc_auc_score(yv, eta)),
            int(codes.max()) + 1, origin)
        self.coef_cov_ = None
        self.n_bootstrap_ = self.n_failed_ = 0
        self.covariance_method_ = BOOTSTRAP_METHOD
        self.competing_risks_ = None
        if n_boot:
            self._bootstrap(data, yv, codes, C, max_iter, n_boot)

    def _bootstrap(self, data: FloatArray, yv: IntArray, codes: IntArray, C: float,
                   max_iter: int, n_boot: int) -> None:
        """Covariance of (intercept, coef) from refits on patient-clustered resamples."""
        members = [np.flatnonzero(codes == g) for g in range(int(codes.max()) + 1)]
        rng = np.random.default_rng(self.seed)
        draws, failed = [], 0
        for _ in range(n_boot):
            idx = np.concatenate([members[g] for g in rng.integers(0, len(members),
                                                                   len(members))])
            yb = yv[idx]
            if yb.min() == yb.max() or np.any(np.ptp(data[idx], axis=0) == 0.0):
                failed += 1
                continue
            try:
                pipe = _sk_fit(_pipeline(C, max_iter, float(self.tol)), data[idx], yb)
            except ConvergenceError:
                failed += 1
                continue
            coef, intercept = _original_units(pipe)
            draws.append(np.r_[intercept, coef])
        self.n_bootstrap_, self.n_failed_ = n_boot, failed
        if len(draws) < max(n_boot // 2, 2):
            # More than half of the resamples had one class or separated data: the
            # covariance would describe the survivors only. No interval, no clinical use.
            self.coef_cov_ = None
            return
        self.coef_cov_ = np.atleast_2d(np.cov(np.vstack(draws), rowvar=False))

    def _set_pipeline(self, pipe: Pipeline, names: tuple[str, ...]) -> None:
        self.pipeline_ = pipe
        coef, intercept = _original_units(pipe)
        self.coef_ = coef
        self.intercept_ = intercept
        self.mean_ = np.asarray(pipe[0].mean_, dtype=np.float64)
        self.scale_ = np.asarray(pipe[0].scale_, dtype=np.float64)
        self.feature_names_in_ = names
        self.n_features_in_ = len(names)
        self.classes_ = np.array([0, 1], dtype=np.int64)
        self.competing_risks_ = getattr(self, "competing_risks_", None)
        self.n_iter_ = int(np.max(pipe[-1].n_iter_))
        self.osteofe_version_ = _osteofe_version()

    # --- prediction -----------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet",
                                 "call fit(X, y) or load a saved model first")

    def _prepare(self, X: object) -> FloatArray:
        data, names = _read_features(X)
        return _match_features(data, names, self.feature_names_in_)

    def _linear(self, data: FloatArray) -> FloatArray:
        return np.asarray(self.pipeline_.decision_function(data), dtype=np.float64)

    def _proba1(self, data: FloatArray) -> FloatArray:
        return np.asarray(self.pipeline_.predict_proba(data)[:, 1], dtype=np.float64)

    def predict_proba(self, X: object) -> FloatArray:
        """Probabilities of no fracture and fracture.

        Args:
            X: Features: a dict of columns / DataFrame-like with exactly the fitted feature
                names (any order), or an array of shape (n, k) / (n,) in the fitted order.

        Returns:
            Shape (n, 2), float64: ``[P(no fracture), P(fracture)]``.

        Raises:
            NotFittedError: Before :meth:`fit`.
            FeatureMismatchError: If the feature names or count differ from the fitted ones.
            ModelError: If a feature is missing (NaN) or non-numeric.
        """
        self._check_fitted()
        p1 = self._proba1(self._prepare(X))
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X: object) -> IntArray:
        """Predicted class, 1 where ``P(fracture) >= 0.5``.

        Args:
            X: Features, as for :meth:`predict_proba`.

        Returns:
            Shape (n,), int64.
        """
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

    def decision_function(self, X: object) -> FloatArray:
        """Linear predictor (log-odds of fracture).

        Args:
            X: Features, as for :meth:`predict_proba`.

        Returns:
            Shape (n,), float64.
        """
        self._check_fitted()
        return self._linear(self._prepare(X))

    def predict_interval(self, X: object, level: float = 0.95) -> PredictionInterval:
        """P(fracture) with its confidence interval (class docstring of the result).

        Args:
            X: Features, as for :meth:`predict_proba`.
            level: Confidence level in (0, 1).

        Returns:
            Probabilities and bounds.

        Raises:
            ModelError: If the model carries no bootstrap covariance (``n_bootstrap=0``).
        """
        self._check_fitted()
        if self.coef_cov_ is None:
            why = (f"{self.n_failed_} of {self.n_bootstrap_} bootstrap refits failed"
                   if self.n_bootstrap_ else "it was fitted with n_bootstrap=0")
            raise ModelError(f"this {type(self).__name__} has no coefficient covariance ({why}), "
                             "so no interval", "fit it with n_bootstrap > 0 (default 100) on a "
                             "cohort with enough fractures, or penalty='l2'")
        if not 0.0 < level < 1.0:
            raise ModelError(f"level must be in (0, 1), got {level!r}", "use 0.95")
        data = self._prepare(X)
        eta = self._linear(data)
        g = np.column_stack([np.ones(data.shape[0]), data])
        se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", g, self.coef_cov_, g), 0.0))
        z = float(stats.norm.ppf(0.5 + level / 2.0))
        return PredictionInterval(self._proba1(data), special.expit(eta - z * se),
                                  special.expit(eta + z * se), float(level),
                                  self.n_bootstrap_, self.n_failed_)

    def contributions(self, X: object) -> Contributions:
        """Exact additive log-odds contributions of each feature (:class:`Contributions`).

        Args:
            X: Features, as for :meth:`predict_proba`.

        Returns:
            The decomposition; its sum equals :meth:`decision_function`.
        """
        self._check_fitted()
        data = self._prepare(X)
        parts = (data - self.mean_) * self.coef_
        return Contributions(self.feature_names_in_, float(self.pipeline_[-1].intercept_[0]),
                             parts, self._linear(data))

    # --- JSON -------------------------------------------------------------------------------

    def _extra_to_json(self) -> dict[str, Any]:
        return {}

    def _extra_from_json(self, doc: dict[str, Any]) -> None:
        return None

    def to_json(self, *, indent: int | None = 2) -> str:
        """The fitted model as a JSON document (never pickle).

        Fields: ``format``, ``format_version`` (2), ``model_kind``, ``osteofe_version``,
        ``sklearn_version``, ``params``, ``feature_names``, ``coef`` and ``intercept`` (per
        original unit), ``scaler`` (``mean``, ``scale``), ``standardized`` (the
        LogisticRegression's ``coef`` and ``intercept``), ``n_iter``, ``training`` (``n``,
        ``events``, ``auc``, ``n_groups``, ``origin``), ``bootstrap`` (``n``, ``n_failed``,
        ``covariance`` of ``[intercept, coef...]``, or null) and kind-specific entries.

        Args:
            indent: JSON indentation (``None``: one line).

        Returns:
            The JSON text.

        Raises:
            NotFittedError: Before :meth:`fit`.
        """
        self._check_fitted()
        params = {k: v.item() if isinstance(v, np.generic) else v
                  for k, v in self.get_params().items()}
        if isinstance(params.get("probabilities"), Mapping):
            params["probabilities"] = {str(k): float(v)
                                       for k, v in params["probabilities"].items()}
        logit = self.pipeline_[-1]
        doc: dict[str, Any] = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "model_kind": self._kind,
            "osteofe_version": self.osteofe_version_, "sklearn_version": sklearn.__version__,
            "params": params, "feature_names": list(self.feature_names_in_),
            "coef": [float(c) for c in self.coef_], "intercept": float(self.intercept_),
            "scaler": {"mean": [float(v) for v in self.mean_],
                       "scale": [float(v) for v in self.scale_]},
            "standardized": {"coef": [float(c) for c in logit.coef_[0]],
                             "intercept": float(logit.intercept_[0])},
            "n_iter": self.n_iter_,
            "training": self.training_summary_.to_dict(),
            "bootstrap": {
                "n": self.n_bootstrap_, "n_failed": self.n_failed_,
                "method": self.covariance_method_,
                "covariance": None if self.coef_cov_ is None
                else [[float(v) for v in row] for row in self.coef_cov_]},
        }
        if self.competing_risks_ is not None:
            doc["competing_risks"] = self.competing_risks_
        doc.update(self._extra_to_json())
        return json.dumps(doc, indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Rebuild a fitted model (its scikit-learn pipeline included) from :meth:`to_json`.

        Args:
            text: The JSON text.

        Returns:
            The fitted model; its predictions equal the saved model's.

        Raises:
            ModelError: If the text is not a model of this kind, is malformed, or is an
                old (format_version 1) file, which lacks the coefficient covariance and the
                cohort origin.
        """
        doc = _parse_model_json(text)
        if doc["model_kind"] != cls._kind:
            raise ModelError(f"the JSON holds a {doc['model_kind']!r} model, not a "
                             f"{cls._kind!r}",
                             "load it with risk.calibration.model_from_json (or load_model)")
        try:
            params = doc["params"]
            if not isinstance(params, dict):
                raise ModelError(f"model JSON params is {params!r}, not an object", _CORRUPT)
            model = cls(**cls._params_from_json(dict(params)))
            raw = doc["feature_names"]
            if not (isinstance(raw, list) and raw and all(isinstance(n, str) for n in raw)
                    and len(set(raw)) == len(raw)):
                raise ModelError(f"model JSON feature_names is {raw!r}, not a list of "
                                 "distinct names", _CORRUPT)
            names = tuple(raw)
            k = len(names)
            coef_json = _json_vector(doc["coef"], "coef", k)
            intercept_json = _json_number(doc["intercept"], "intercept")
            scaler = doc["scaler"]
            std = doc["standardized"]
            if not isinstance(scaler, dict) or not isinstance(std, dict):
                raise ModelError("model JSON scaler/standardized are not objects", _CORRUPT)
            mean = _json_vector(scaler["mean"], "scaler.mean", k)
            scale = _json_vector(scaler["scale"], "scaler.scale", k, positive=True)
            w = _json_vector(std["coef"], "standardized.coef", k)
            b = _json_number(std["intercept"], "standardized.intercept")
            training = doc["training"]
            if not isinstance(training, dict):
                raise ModelError(f"model JSON training is {training!r}, not an object",
                                 _CORRUPT)
            n = _json_count(training["n"], "training.n")
            events = _json_count(training["events"], "training.events")
            auc = (None if training["auc"] is None
                   else _json_number(training["auc"], "training.auc"))
            n_groups = _json_count(training["n_groups"], "training.n_groups")
            origin = training["origin"]
            if events > n or (auc is not None and not 0.0 <= auc <= 1.0) \
                    or not 0 < n_groups <= n or origin not in ORIGINS:
                raise ModelError(f"model JSON training record is inconsistent: {events} "
                                 f"events in {n} femurs of {n_groups} patients, AUC {auc}, "
                                 f"origin {origin!r}", _CORRUPT)
            model._set_pipeline(_rebuild_pipeline(mean, scale, w, b, n,
                                                  _json_count(doc["n_iter"], "n_iter")), names)
            model.training_summary_ = TrainingSummary(n, events, auc, n_groups, str(origin))
            model.osteofe_version_ = str(doc.get("osteofe_version", "unknown"))
            boot = doc["bootstrap"]
            model.coef_cov_ = None
            model.n_bootstrap_ = model.n_failed_ = 0
            model.covariance_method_ = BOOTSTRAP_METHOD
            if boot is not None and not isinstance(boot, dict):
                raise ModelError("model JSON bootstrap is not an object", _CORRUPT)
            if boot is not None and boot["covariance"] is not None:
                if not isinstance(boot["covariance"], list) or len(boot["covariance"]) != k + 1:
                    raise ModelError("model JSON bootstrap covariance is not a "
                                     f"{k + 1}x{k + 1} matrix", _CORRUPT)
                cov = np.vstack([_json_vector(r, "bootstrap.covariance", k + 1)
                                 for r in boot["covariance"]])
                if not np.allclose(cov, cov.T) or np.min(np.linalg.eigvalsh(cov)) < \
                        -1e-9 * max(1.0, float(np.max(np.abs(cov)))):
                    raise ModelError("model JSON bootstrap covariance is not symmetric "
                                     "positive semi-definite", _CORRUPT)
                model.coef_cov_ = cov
            if boot is not None:
                model.covariance_method_ = str(boot.get("method", BOOTSTRAP_METHOD))
                model.n_bootstrap_ = _json_count(boot["n"], "bootstrap.n")
                model.n_failed_ = _json_count(boot["n_failed"], "bootstrap.n_failed")
            risks = doc.get("competing_risks")
            if risks is not None:
                if not isinstance(risks, dict) or risks.get("covariates") != [HORIZON_COVARIATE]:
                    raise ModelError("model JSON competing_risks is not a cause-specific model "
                                     f"on {HORIZON_COVARIATE!r}", _CORRUPT)
                horizon_risk(risks, [[0.0]])  # refuses malformed arrays
            model.competing_risks_ = risks
            model._extra_from_json(doc)
            # The per-unit coefficients a reader sees must be the ones that predict: check
            # them where the model applies, then against the standardised ones.
            derived = (model.coef_, model.intercept_)
            model.coef_, model.intercept_ = coef_json, intercept_json
            model._check_log_odds()
            model.coef_, model.intercept_ = derived
            if getattr(model, "probabilities_", None) is None and not (
                    np.allclose(coef_json, derived[0], rtol=1e-9, atol=1e-12)
                    and math.isclose(intercept_json, derived[1], rel_tol=1e-9, abs_tol=1e-9)):
                raise ModelError("model JSON coef/intercept disagree with its standardized "
                                 "coefficients and scaler", _CORRUPT)
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"malformed {cls._kind} JSON: {type(exc).__name__}: {exc}",
                             _CORRUPT) from exc
        return model

    @classmethod
    def _params_from_json(cls, params: dict[str, Any]) -> dict[str, Any]:
        return params

    def _feature_ranges(self) -> dict[str, tuple[float, float, str]]:
        """Where the model applies: training mean +- 4 SD, within :data:`FEATURE_RANGES`."""
        ranges = {}
        for i, name in enumerate(self.feature_names_in_):
            mean, sd = float(self.mean_[i]), float(self.scale_[i])
            lo, hi = mean - TRAINING_RANGE_SD * sd, mean + TRAINING_RANGE_SD * sd
            source = f"its training mean +-{TRAINING_RANGE_SD:g} SD"
            limits = plausible_range(name)
            if limits is not None and max(lo, limits[0]) <= min(hi, limits[1]):
                lo, hi = max(lo, limits[0]), min(hi, limits[1])
                source += " within the plausible range"
            ranges[name] = (lo, hi, source)
        return ranges

    def _check_log_odds(self) -> None:
        """Refuse a loaded model whose log-odds overflow where it is meant to be applied.

        Over the box of :meth:`_feature_ranges`, ``|intercept + x @ coef|`` must stay within
        :data:`MAX_ABS_LOG_ODDS` (beyond it ``exp`` overflows float64 and every probability
        is exactly 0 or 1).

        Raises:
            ModelError: The log-odds leave that range (or are not finite).
        """
        if getattr(self, "probabilities_", None) is not None:
            return
        index = {name: i for i, name in enumerate(self.feature_names_in_)}
        low = high = float(self.intercept_)
        worst: tuple[float, str] = (0.0, "")
        with np.errstate(over="ignore", invalid="ignore"):
            for name, (lo, hi, source) in self._feature_ranges().items():
                c = float(self.coef_[index[name]])
                ends = (c * lo, c * hi)
                low += min(ends)
                high += max(ends)
                spread = abs(ends[1] - ends[0])
                if not math.isfinite(spread) or spread > worst[0]:
                    worst = (spread, f"{name} (coefficient {c:.6g}) over {source} "
                             f"{lo:.4g}..{hi:.4g}")
        reach = max(abs(low), abs(high))
        if not math.isfinite(reach) or reach > MAX_ABS_LOG_ODDS:
            raise ModelError(
                f"the model's log-odds reach {reach:.3g} for {worst[1]}, beyond the "
                f"+-{MAX_ABS_LOG_ODDS:g} a probability model can mean (exp overflows and "
                "every probability comes out as exactly 0 or 1)", _CORRUPT)


def _original_units(pipe: Pipeline) -> tuple[FloatArray, float]:
    """(coef, intercept) per original feature unit of a scaler + logistic pipeline."""
    scaler, logit = pipe[0], pipe[-1]
    w = np.asarray(logit.coef_[0], dtype=np.float64)
    coef = w / scaler.scale_
    return coef, float(logit.intercept_[0] - np.sum(coef * scaler.mean_))


def _rebuild_pipeline(mean: FloatArray, scale: FloatArray, w: FloatArray, b: float, n: int,
                      n_iter: int) -> Pipeline:
    """The fitted scikit-learn pipeline from its stored arrays (no pickle)."""
    scaler = StandardScaler()
    scaler.mean_, scaler.scale_, scaler.var_ = mean.copy(), scale.copy(), scale**2
    scaler.n_features_in_, scaler.n_samples_seen_ = mean.size, n
    logit = LogisticRegression(solver="newton-cholesky")
    logit.coef_, logit.intercept_ = w[None, :].copy(), np.array([b])
    logit.classes_, logit.n_features_in_ = np.array([0, 1]), mean.size
    logit.n_iter_ = np.array([n_iter], dtype=np.int32)
    return Pipeline([("scale", scaler), ("logit", logit)])


class StrengthRiskModel(_LogisticRiskModel):
    """Logistic (sigmoid, Platt 1999) model of fracture on FE strength and covariates.

    A scikit-learn ``Pipeline(StandardScaler, LogisticRegression)`` (``pipeline_``), with
    ``P(fracture) = expit(intercept_ + X @ coef_)``. At fit time the coefficient covariance
    is estimated by refitting on ``n_bootstrap`` resamples of whole patients (``groups``),
    so that every prediction has an interval (:meth:`predict_interval`). Isotonic
    calibration is not offered: it overfits cohorts of <= 15 fractures.

    Args:
        penalty: ``"none"`` (maximum likelihood, ``C=inf``) or ``"l2"`` (ridge on the
            standardised coefficients, scikit-learn's ``C``).
        C: Inverse L2 strength (``penalty="l2"`` only).
        n_bootstrap: Cluster-bootstrap refits for the coefficient covariance (0: none, and
            then no interval and no clinical use). 100 by default: 50-200 replicates estimate
            a standard error well (Efron & Tibshirani 1993, An Introduction to the Bootstrap,
            section 6.4); percentile intervals would need more.
        seed: Seed of the bootstrap.
        max_iter: Maximum Newton iterations.
        tol: Newton tolerance.

    Attributes:
        pipeline_: The fitted scikit-learn pipeline.
        coef_: Coefficients per original feature unit, shape (k,), float64.
        intercept_: Intercept per original units (log-odds).
        mean_: Training means (the scaler's), shape (k,).
        scale_: Training standard deviations (the scaler's), shape (k,).
        coef_cov_: Bootstrap covariance of ``[intercept_, *coef_]``, shape (k+1, k+1), or
            None.
        feature_names_in_: Feature names (``x0``, ... for a plain array).
        n_features_in_: k.
        classes_: ``array([0, 1])``.
        training_summary_: n, events, apparent AUC, patients and cohort origin.
        n_iter_: Newton iterations used.
        osteofe_version_: osteofe version that fitted the model.
    """

    _kind: ClassVar[str] = "StrengthRiskModel"

    def fit(self, X: object, y: npt.ArrayLike, groups: Iterable[Hashable] | None = None,
            origin: str = "unspecified") -> Self:
        """Fit the pipeline and the bootstrap coefficient covariance.

        Args:
            X: Features, shape (n, k): a dict of columns / DataFrame-like (names kept) or an
                array ((n,) for one feature). Finite numbers.
            y: Outcomes, shape (n,), 0/1, both classes present.
            groups: Patient id per femur (the bootstrap resamples patients); None: every
                femur its own patient.
            origin: Cohort origin, one of :data:`ORIGINS` (``"synthetic"`` models are
                refused for clinical reports unless forced).

        Returns:
            ``self``, fitted.

        Raises:
            ModelError: On invalid parameters or data (constant feature, NaN, lengths).
                When more than half of the bootstrap refits fail, the model is fitted but
                has no covariance (``coef_cov_`` None: no interval, refused clinically).
            ConvergenceError: If the unpenalised fit diverges (separated data).
        """
        data, names = _read_features(X)
        yv = _fit_targets(y, data.shape[0])
        names = names if names is not None else tuple(f"x{i}" for i in range(data.shape[1]))
        self._fit_logistic(data, yv, names, groups, origin)
        return self


class MirelsBaseline(_LogisticRiskModel):
    """The Mirels total score as a fracture-probability estimator.

    Input is the Mirels total (4-12): an array of shape (n,) or (n, 1), a dict/DataFrame with
    the single column ``"mirels_total"``, or a sequence of :class:`~risk.mirels.MirelsScore`.

    Args:
        mapping: ``"logistic"``: the scikit-learn pipeline on the total; ``"fixed"``: a score
            -> probability table, not fitted.
        threshold: For ``mapping="fixed"`` without ``probabilities``: totals >= threshold map
            to 1, others to 0 (Mirels' "fix" rule at the default 9).
        probabilities: For ``mapping="fixed"``: a table total (4-12) -> probability covering
            every total.
        penalty: ``"none"`` or ``"l2"`` (logistic only).
        C: Inverse L2 strength.
        n_bootstrap: Cluster-bootstrap refits for the covariance (logistic only).
        seed: Seed of the bootstrap.
        max_iter: Maximum Newton iterations.
        tol: Newton tolerance.

    Attributes:
        probabilities_: The fixed table (fixed mapping), else None; other attributes as
            :class:`StrengthRiskModel` (fixed mapping: coefficient 0, no covariance).
    """

    _kind: ClassVar[str] = "MirelsBaseline"

    def __init__(self, mapping: Literal["logistic", "fixed"] = "logistic",
                 threshold: int = MIRELS_FIX_MIN,
                 probabilities: Mapping[int, float] | None = None,
                 penalty: Literal["none", "l2"] = "none", C: float = 1.0,
                 n_bootstrap: int = 100, seed: int | None = 0, max_iter: int = 100,
                 tol: float = 1e-10) -> None:
        super().__init__(penalty=penalty, C=C, n_bootstrap=n_bootstrap, seed=seed,
                         max_iter=max_iter, tol=tol)
        self.mapping = mapping
        self.threshold = threshold
        self.probabilities = probabilities

    def _prepare(self, X: object) -> FloatArray:
        return _mirels_totals(X)[:, None]

    def _fixed_table(self) -> dict[int, float]:
        if self.probabilities is None:
            t = self.threshold
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 4 <= t <= 12:
                raise ModelError(f"Mirels threshold must be an integer 4-12, got {t!r}",
                                 "use threshold=9 (Mirels' fixation rule)")
            return {s: (1.0 if s >= t else 0.0) for s in range(4, 13)}
        if not isinstance(self.probabilities, Mapping):
            raise ModelError("probabilities must be a mapping total -> probability, got "
                             f"{type(self.probabilities).__name__}",
                             "pass e.g. {4: 0.0, 5: 0.0, ..., 12: 1.0}")
        table: dict[int, float] = {}
        for key, value in self.probabilities.items():
            total, p = int(key), float(value)
            if not (4 <= total <= 12 and 0.0 <= p <= 1.0):
                raise ModelError(f"bad entry {key!r}: {value!r} in the Mirels probability "
                                 "table", "keys are totals 4-12, values probabilities in [0, 1]")
            table[total] = p
        missing = [s for s in range(4, 13) if s not in table]
        if missing:
            raise ModelError(f"the Mirels probability table lacks the total(s) {missing}",
                             "give a probability for every total 4-12")
        return table

    def fit(self, X: object, y: npt.ArrayLike, groups: Iterable[Hashable] | None = None,
            origin: str = "unspecified") -> Self:
        """Fit the logistic mapping (or validate the fixed table) on Mirels totals.

        Args:
            X: Mirels totals (see class docstring), integers 4-12.
            y: Outcomes, shape (n,), 0/1, both classes present.
            groups: Patient id per femur (bootstrap clusters).
            origin: Cohort origin (:data:`ORIGINS`).

        Returns:
            ``self``, fitted.

        Raises:
            ModelError: On invalid parameters or totals.
            ConvergenceError: If the unpenalised logistic fit diverges.
        """
        if self.mapping not in ("logistic", "fixed"):
            raise ModelError(f"unknown Mirels mapping {self.mapping!r}",
                             "use mapping='logistic' or 'fixed'")
        totals = self._prepare(X)
        yv = _fit_targets(y, totals.shape[0])
        if self.mapping == "fixed":
            table = self._fixed_table()
            self._set_pipeline(_rebuild_pipeline(np.zeros(1), np.ones(1), np.zeros(1), 0.0,
                                                 yv.size, 0), (MIRELS_FEATURE,))
            self.probabilities_: dict[int, float] | None = table
            self.coef_cov_ = None
            self.n_bootstrap_ = self.n_failed_ = 0
            self.covariance_method_ = BOOTSTRAP_METHOD
            self.training_summary_ = TrainingSummary(
                int(yv.size), int(yv.sum()), float(roc_auc_score(yv, totals[:, 0])),
                int(group_codes(groups, yv.size).max()) + 1, origin)
            return self
        if np.ptp(totals) == 0.0:
            raise ModelError("all Mirels totals are equal; a logistic mapping cannot be "
                             "fitted", "use mapping='fixed' or a cohort with varying scores")
        self.probabilities_ = None
        self._fit_logistic(totals, yv, (MIRELS_FEATURE,), groups, origin)
        return self

    def _proba1(self, data: FloatArray) -> FloatArray:
        if getattr(self, "probabilities_", None) is not None:
            table = self.probabilities_
            assert table is not None
            return np.array([table[int(s)] for s in data[:, 0]], dtype=np.float64)
        return super()._proba1(data)

    def _extra_to_json(self) -> dict[str, Any]:
        table = self.probabilities_
        return {"probabilities_table": None if table is None
                else {str(k): v for k, v in sorted(table.items())}}

    def _extra_from_json(self, doc: dict[str, Any]) -> None:
        if self.feature_names_in_ != (MIRELS_FEATURE,):
            raise ModelError(f"a MirelsBaseline has the one feature {MIRELS_FEATURE!r}, the "
                             f"JSON lists {list(self.feature_names_in_)}", _CORRUPT)
        table = doc.get("probabilities_table")
        if (table is None) != (self.mapping == "logistic"):
            raise ModelError(f"a {self.mapping!r} MirelsBaseline "
                             f"{'has no' if table is not None else 'needs a'} "
                             "probabilities_table", _CORRUPT)
        if table is None:
            self.probabilities_ = None
            return
        if not isinstance(table, dict):
            raise ModelError(f"model JSON probabilities_table is {table!r}, not an object",
                             _CORRUPT)
        parsed: dict[int, float] = {}
        for key, value in table.items():
            total = int(key) if _DIGITS.fullmatch(str(key)) else -1
            p = _json_number(value, f"probabilities_table[{key!r}]")
            if not (4 <= total <= 12 and 0.0 <= p <= 1.0):
                raise ModelError(f"bad entry {key!r}: {value!r} in the Mirels probability "
                                 "table of the model JSON (totals 4-12, probabilities 0-1)",
                                 _CORRUPT)
            parsed[total] = p
        missing = [t for t in range(4, 13) if t not in parsed]
        if missing:
            raise ModelError("the Mirels probability table of the model JSON lacks the "
                             f"total(s) {missing}", _CORRUPT)
        self.probabilities_ = parsed

    @classmethod
    def _params_from_json(cls, params: dict[str, Any]) -> dict[str, Any]:
        table = params.get("probabilities")
        if table is not None:
            if not isinstance(table, dict):
                raise ModelError(f"model JSON params.probabilities is {table!r}, not an "
                                 "object", _CORRUPT)
            params["probabilities"] = {int(k): _json_number(v, "params.probabilities")
                                       for k, v in table.items()}
        return params


def _mirels_totals(X: object) -> FloatArray:
    """Mirels totals (n,) from an array, a one-column table or a sequence of MirelsScore."""
    if isinstance(X, (list, tuple)) and X and all(isinstance(s, MirelsScore) for s in X):
        return np.array([s.total for s in X], dtype=np.float64)
    arr_obj = None if _columns(X) is not None else np.asarray(X)
    if arr_obj is not None and arr_obj.dtype == object:
        items = list(arr_obj.ravel())
        if items and all(isinstance(s, MirelsScore) for s in items):
            return np.array([s.total for s in items], dtype=np.float64)
    data, names = _read_features(X)
    data = _match_features(data, names, (MIRELS_FEATURE,))
    totals = data[:, 0]
    bad = (totals < 4) | (totals > 12) | (totals != np.round(totals))
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ModelError(
            f"Mirels total must be an integer 4-12, got {totals[i].item():g} at row {i}",
            "pass the total Mirels score (sum of the four items)",
        )
    return totals


def _parse_model_json(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:  # ValueError: JSONDecodeError too
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ModelError(f"not a JSON document: {reason}",
                         "pass the text written by to_json/save_model") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelError(f"not an osteofe risk model (format field is not {FORMAT!r})",
                         "pass a file written by risk.calibration.save_model")
    version = doc.get("format_version")
    if version == 1:
        raise ModelError(
            "this risk model file is format_version 1 (osteofe before the scikit-learn risk "
            "layer): it records neither the coefficient covariance (so no probability "
            "interval) nor the cohort origin, and is no longer read",
            "refit it on its cohort with `osteofe benchmark` (writes fe_model.json, "
            "format_version 2)")
    if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT_VERSION:
        raise ModelError(f"unsupported model format_version {version!r} (this osteofe reads "
                         f"{FORMAT_VERSION})", "upgrade osteofe to read this model")
    missing = [k for k in ("model_kind", "params", "feature_names", "coef", "intercept",
                           "scaler", "standardized", "n_iter", "training", "bootstrap")
               if k not in doc]
    if missing:
        raise ModelError(f"model JSON lacks the field(s) {missing}",
                         "the file is corrupt; refit and save the model again")
    return doc


# --------------------------------------------------------------------------------------------
# Model files.
# --------------------------------------------------------------------------------------------

_KINDS: dict[str, type[_LogisticRiskModel]] = {
    StrengthRiskModel._kind: StrengthRiskModel,
    MirelsBaseline._kind: MirelsBaseline,
}


def model_from_json(text: str) -> StrengthRiskModel | MirelsBaseline:
    """Rebuild any risk model from its JSON, dispatching on ``model_kind``.

    Args:
        text: JSON written by ``to_json``.

    Returns:
        The fitted model.

    Raises:
        ModelError: If the JSON is not a known risk model.
    """
    doc = _parse_model_json(text)
    kind = doc["model_kind"]
    if kind == StrengthRiskModel._kind:
        return StrengthRiskModel.from_json(text)
    if kind == MirelsBaseline._kind:
        return MirelsBaseline.from_json(text)
    raise ModelError(f"unknown model_kind {kind!r}", f"known kinds: {', '.join(sorted(_KINDS))}")


def save_model(model: StrengthRiskModel | MirelsBaseline, path: str | Path) -> Path:
    """Write a fitted model as JSON, atomically (a temporary file renamed into place).

    Args:
        model: A fitted model.
        path: Destination, conventionally ``*.json``.

    Returns:
        The path written.

    Raises:
        NotFittedError: If the model is not fitted.
    """
    text = model.to_json() + "\n"
    try:
        return atomic_write_text(Path(path), text)
    except OSError as exc:
        raise ModelError(f"cannot write model file {path}: {exc.strerror}",
                         "check that the folder exists and is writable") from exc


def load_model(path: str | Path) -> StrengthRiskModel | MirelsBaseline:
    """Read a model written by :func:`save_model`.

    Args:
        path: The JSON file.

    Returns:
        The fitted model.

    Raises:
        ModelError: If the file is missing, not a risk model, an old format, or its
            log-odds overflow where it applies (the message names the file).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot read model file {p}: {exc.strerror}", "check the path") from exc
    except UnicodeDecodeError as exc:
        raise ModelError(
            f"model file {p} is not UTF-8 text ({exc.reason} at byte {exc.start})",
            "pass the JSON file written by risk.calibration.save_model; a file damaged in "
            "transfer must be copied again") from exc
    try:
        return model_from_json(text)
    except ModelError as exc:
        raise type(exc)(f"risk model {p.name}: {exc.message}", exc.hint) from None


# --------------------------------------------------------------------------------------------
# Clinical use.
# --------------------------------------------------------------------------------------------


def clinical_check(model: StrengthRiskModel | MirelsBaseline, *, force: bool = False
                   ) -> tuple[str, ...]:
    """Refuse a model that is not fit to give a patient a probability, unless forced.

    Refused: a model fitted on a synthetic cohort; fewer than :data:`MIN_EVENTS_PER_FEATURE`
    events per feature (Peduzzi et al. 1996, J Clin Epidemiol 49:1373: below 10 the
    coefficients are biased and their variance misestimated); no coefficient covariance
    (no interval can be given).

    Args:
        model: A fitted model.
        force: Accept anyway; every problem is then returned as a banner warning.

    Returns:
        Warnings for the result (banner text): the forced problems, and a note when the
        cohort origin was not recorded.

    Raises:
        ModelError: On a problem without ``force`` (one message listing all of them).
    """
    summary = model.training_summary_
    problems = []
    if summary.origin == "synthetic":
        problems.append(f"the model was fitted on a SYNTHETIC cohort ({summary.n} femurs): "
                        "synthetic, not evidence")
    epv = summary.events / model.n_features_in_
    if epv < MIN_EVENTS_PER_FEATURE:
        problems.append(f"the model was fitted on {summary.events} fractures for "
                        f"{model.n_features_in_} feature(s) ({epv:.1f} events per feature, "
                        f"fewer than {MIN_EVENTS_PER_FEATURE})")
    if model.coef_cov_ is None and getattr(model, "probabilities_", None) is None:
        problems.append("the model has no coefficient covariance, so its probability has "
                        "no interval")
    notes = [] if summary.origin != "unspecified" else [
        "the risk model does not record whether its cohort was measured or synthetic"]
    if problems and not force:
        raise ModelError("risk model refused for a clinical report: " + "; ".join(problems),
                         "refit on a measured cohort with >= 10 fractures per feature, or "
                         "pass --force-risk-model to show it marked NOT VALIDATED")
    return tuple(f"RISK MODEL NOT VALIDATED (forced): {p}" for p in problems) + tuple(notes)


def clinical_prediction(model: StrengthRiskModel | MirelsBaseline,
                        features: Mapping[str, float], *, force: bool = False,
                        level: float = 0.95) -> dict[str, Any]:
    """The probability of one femur with its interval, contributions and warnings (JSON).

    Args:
        model: A fitted model (:func:`clinical_check` is applied).
        features: Feature name -> value; must hold every feature of the model.
        force: See :func:`clinical_check`.
        level: Confidence level of the interval.

    Returns:
        ``probability``, ``lower``, ``upper``, ``level``, ``features``, ``contributions``
        (``base_log_odds``, ``base_probability``, ``log_odds``, per-feature ``terms``:
        value, training mean, log-odds contribution and the probability change when that
        feature alone is moved from the training mean to its value), ``training`` and
        ``warnings``, and ``horizon_risk`` (fracture before death within 3 and 6 months)
        when the model carries cause-specific Cox models (``competing_risks_``).

    Raises:
        ModelError: The model is refused (:func:`clinical_check`).
    """
    warnings_ = clinical_check(model, force=force)
    row = {name: [float(features[name])] for name in model.feature_names_in_}
    out: dict[str, Any] = {"features": {k: v[0] for k, v in row.items()},
                           "training": model.training_summary_.to_dict(),
                           "warnings": list(warnings_)}
    if model.coef_cov_ is not None:
        interval = model.predict_interval(row, level)
        out.update(probability=float(interval.probability[0]), lower=float(interval.lower[0]),
                   upper=float(interval.upper[0]), level=level,
                   interval_method="delta method on the log-odds, coefficient covariance: "
                   f"{model.covariance_method_}"
                   + (f" ({interval.n_bootstrap} refits)" if interval.n_bootstrap else ""))
    else:
        out.update(probability=float(model.predict_proba(row)[0, 1]), lower=None,
                   upper=None, level=None)
    if model.competing_risks_ is not None:
        eta = float(model.decision_function(row)[0])
        risk = horizon_risk(model.competing_risks_, [[eta]], HORIZONS_MONTHS)[0]
        out["horizon_risk"] = {
            "horizons_months": list(HORIZONS_MONTHS),
            "fracture_before_death": [float(r) for r in risk],
            "method": "cumulative incidence of fracture with death as a competing risk, "
                      "from cause-specific Cox models on the model's log-odds "
                      f"({model.competing_risks_['n']} femurs, "
                      f"{model.competing_risks_['fracture_events']} fractures, "
                      f"{model.competing_risks_['death_events']} deaths)"}
    if getattr(model, "probabilities_", None) is None:
        parts = model.contributions(row)
        base = parts.base_log_odds
        out["contributions"] = {
            "base_log_odds": base, "base_probability": parts.base_probability,
            "log_odds": float(parts.log_odds[0]),
            "terms": [{"feature": name, "value": row[name][0],
                       "training_mean": float(model.mean_[j]),
                       "log_odds": float(parts.contributions[0, j]),
                       "probability_change": float(special.expit(base + parts.contributions[0, j])
                                                   - special.expit(base))}
                      for j, name in enumerate(parts.feature_names)]}
    return out


# --------------------------------------------------------------------------------------------
# Cross-validation.
# --------------------------------------------------------------------------------------------


def assign_group_folds(y: npt.ArrayLike, groups: Iterable[Hashable], n_splits: int = 5,
                       seed: int | None = 0) -> IntArray:
    """Fold index per femur from :class:`sklearn.model_selection.StratifiedGroupKFold`.

    Whole patients go to one fold; fractures are spread over the folds as evenly as the
    patients allow (shuffled with ``seed``).

    Args:
        y: Outcomes, shape (n,), 0/1.
        groups: Patient id per femur, shape (n,).
        n_splits: Folds, 2 <= n_splits <= patients.
        seed: Seed of the shuffle.

    Returns:
        Shape (n,), int64 in ``[0, n_splits)``.

    Raises:
        ModelError: On invalid ``n_splits`` or lengths.
    """
    yv = _as_binary(y, both_classes=False)
    try:
        codes = group_codes(list(groups), yv.size)
    except MetricsError as exc:
        raise ModelError(exc.message, exc.hint) from None
    n_splits = _check_count(n_splits, "n_splits", 2, "use 5")
    if n_splits > int(codes.max()) + 1:
        raise ModelError(f"n_splits={n_splits} is larger than the number of groups "
                         f"({int(codes.max()) + 1})", "use fewer folds")
    folds = np.empty(yv.size, dtype=np.int64)
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" on tiny cohorts
        for f, (_, test) in enumerate(cv.split(np.zeros(yv.size), yv, codes)):
            folds[test] = f
    return folds


def grouped_cross_val_predict(estimator: Any, X: object, y: npt.ArrayLike,
                              groups: Iterable[Hashable], n_splits: int = 5,
                              seed: int | None = 0) -> FloatArray:
    """Out-of-fold P(fracture) with patient-grouped, stratified folds.

    Each fold is predicted by a :func:`sklearn.base.clone` of ``estimator`` (its bootstrap
    switched off: only the point prediction is needed) fitted on the other folds
    (:func:`assign_group_folds`): no patient is in both parts.

    Args:
        estimator: An unfitted estimator.
        X: Features (array, dict of columns or DataFrame-like), n rows.
        y: Outcomes, shape (n,), 0/1, both classes present.
        groups: Patient id per femur, shape (n,).
        n_splits: Folds.
        seed: Seed of the fold assignment.

    Returns:
        Shape (n,), float64.

    Raises:
        ModelError: If a training part lacks a class (use fewer folds), or on bad inputs.
    """
    yv = _as_binary(y)
    if _n_rows(X) != yv.size:
        raise ModelError(f"X has {_n_rows(X)} rows but y has {yv.size}",
                         "pass one outcome per femur")
    group_list = list(groups)
    folds = assign_group_folds(yv, group_list, n_splits, seed)
    out = np.empty(yv.size, dtype=np.float64)
    for f in range(int(n_splits)):
        test, train = np.flatnonzero(folds == f), np.flatnonzero(folds != f)
        if np.unique(yv[train]).size < 2:
            raise ModelError(f"fold {f}: the training part has only one outcome class",
                             "use fewer folds (n_splits) so that every training part has "
                             "fractures")
        model = clone(estimator)
        if "n_bootstrap" in model.get_params():
            model.set_params(n_bootstrap=0)
        model.fit(_take_rows(X, train), yv[train])
        out[test] = np.asarray(model.predict_proba(_take_rows(X, test)))[:, 1]
    return out
