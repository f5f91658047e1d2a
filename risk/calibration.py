"""Calibrated fracture-probability models with the scikit-learn estimator API, saved as JSON.

- :class:`StrengthRiskModel`: logistic (sigmoid, Platt 1999) model of fracture on features
  such as the FE failure load in body weights, plus optional covariates; optional L2 penalty.
- :class:`MirelsBaseline`: the Mirels total as an estimator with the same API (logistic on the
  score, or a fixed score -> probability table).
- :func:`grouped_cross_val_predict`: out-of-fold probabilities with folds that never split a
  patient (both femurs of a patient stay together) and spread the fractures evenly.
- :func:`bootstrap_predict_interval`: percentile interval of each predicted probability from
  refits on bootstrap resamples.

Estimator contract (as scikit-learn's): ``__init__`` only stores its parameters;
:meth:`fit` validates them and the data and sets attributes ending in ``_``;
:meth:`predict_proba` returns an (n, 2) array ``[P(no fracture), P(fracture)]``;
``get_params``/``set_params`` make the estimators clonable. Isotonic calibration is not
offered: it overfits cohorts of <= 15 fractures (sigmoid is the default and only method).

Models are stored as plain JSON (:meth:`to_json`, :func:`save_model`, :func:`load_model`) with
coefficients, feature names, training summary, osteofe version and model kind - never pickle,
so a model file can be read, diffed and audited. A model fitted on named features (a dict of
columns or a DataFrame) refuses to predict on a different feature set.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from numbers import Integral, Real
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt
from scipy import special

from risk.cohort import atomic_write_text
from risk.errors import (
    ConvergenceError,
    FeatureMismatchError,
    MetricsError,
    ModelError,
    NotFittedError,
)
from risk.metrics import _as_binary, fit_logistic, roc_auc
from risk.mirels import MIRELS_FIX_MIN, MirelsScore

__all__ = [
    "CASE_FEATURE_RANGES",
    "FEATURE_RANGES",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_ABS_LOG_ODDS",
    "MIRELS_FEATURE",
    "TRAINING_RANGE_SD",
    "MirelsBaseline",
    "PredictionInterval",
    "StrengthRiskModel",
    "TrainingSummary",
    "assign_group_folds",
    "bootstrap_predict_interval",
    "clone",
    "grouped_cross_val_predict",
    "load_model",
    "model_from_json",
    "plausible_range",
    "save_model",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: ``format`` field of every model file.
FORMAT = "osteofe-risk-model"
#: Version of the JSON layout written by :meth:`to_json`.
FORMAT_VERSION = 1
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
        auc: Apparent (training-set) AUC of the fitted model; optimistic - use
            :func:`grouped_cross_val_predict` for an honest one.
    """

    n: int
    events: int
    auc: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"n": self.n, "events": self.events, "auc": self.auc}


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


# --------------------------------------------------------------------------------------------
# Shared estimator machinery.
# --------------------------------------------------------------------------------------------


class _RiskEstimator:
    """Parameters, fitted state, prediction and JSON of the risk estimators."""

    _kind: ClassVar[str]
    _estimator_type: ClassVar[str] = "classifier"

    # --- scikit-learn parameter protocol ---------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters (scikit-learn protocol).

        Args:
            deep: Ignored (no nested estimators).

        Returns:
            Parameter name -> value.
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        """Set constructor parameters (scikit-learn protocol).

        Args:
            **params: Parameter name -> new value.

        Returns:
            ``self``.

        Raises:
            ModelError: If a name is not a parameter of this estimator.
        """
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ModelError(
                    f"{type(self).__name__} has no parameter {name!r}",
                    f"valid parameters: {', '.join(valid)}",
                )
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self) -> Any:
        """Estimator tags for scikit-learn >= 1.6 (called only by scikit-learn itself).

        Returns:
            ``sklearn.utils.Tags`` of a binary classifier; scikit-learn is imported here
            only, so osteofe does not depend on it.
        """
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(multi_class=False),
        )

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__)
        changed = [
            f"{name}={getattr(self, name)!r}"
            for name, p in sig.parameters.items()
            if name != "self" and getattr(self, name) != p.default
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

    # --- fitted state ----------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet",
                "call fit(X, y) or load a saved model first",
            )

    def _prepare(self, X: object) -> FloatArray:
        """Validated (n, k) feature matrix in the fitted feature order."""
        data, names = _read_features(X)
        return _match_features(data, names, self.feature_names_in_)

    def _linear(self, data: FloatArray) -> FloatArray:
        return np.asarray(data @ self.coef_ + self.intercept_, dtype=np.float64)

    def _proba1(self, data: FloatArray) -> FloatArray:
        return np.asarray(special.expit(self._linear(data)), dtype=np.float64)

    def predict_proba(self, X: object) -> FloatArray:
        """Probabilities of no fracture and fracture.

        Args:
            X: Features: a dict of columns or DataFrame-like with exactly the fitted feature
                names (any order), or an array of shape (n, k) / (n,) in the fitted order.

        Returns:
            Shape (n, 2), float64, rows summing to 1: ``[P(no fracture), P(fracture)]``.

        Raises:
            NotFittedError: Before :meth:`fit`.
            FeatureMismatchError: If the feature names or count differ from the fitted ones.
            ModelError: If a feature is missing (NaN) or non-numeric.
        """
        self._check_fitted()
        p1 = self._proba1(self._prepare(X))
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X: object) -> IntArray:
        """Predicted class, 1 (fracture) where ``P(fracture) >= 0.5``.

        Args:
            X: Features, as for :meth:`predict_proba`.

        Returns:
            Shape (n,), int64, 0/1.
        """
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

    def _set_fitted(
        self,
        coef: FloatArray,
        intercept: float,
        names: tuple[str, ...],
        summary: TrainingSummary,
        n_iter: int,
    ) -> None:
        self.coef_ = np.asarray(coef, dtype=np.float64)
        self.intercept_ = float(intercept)
        self.feature_names_in_ = names
        self.n_features_in_ = len(names)
        self.classes_ = np.array([0, 1], dtype=np.int64)
        self.training_summary_ = summary
        self.n_iter_ = int(n_iter)
        self.osteofe_version_ = _osteofe_version()

    # --- JSON --------------------------------------------------------------------------------

    def _params_to_json(self) -> dict[str, Any]:
        params = self.get_params()
        return {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}

    @classmethod
    def _params_from_json(cls, params: dict[str, Any]) -> dict[str, Any]:
        return params

    def _extra_to_json(self) -> dict[str, Any]:
        return {}

    def _extra_from_json(self, doc: dict[str, Any]) -> None:
        return None

    def to_json(self, *, indent: int | None = 2) -> str:
        """The fitted model as a JSON document (never pickle).

        Fields: ``format``, ``format_version``, ``model_kind``, ``osteofe_version`` (that
        fitted the model),
        ``params``, ``feature_names``, ``coef``, ``intercept``, ``n_iter``, ``training``
        (``n``, ``events``, ``auc``) and kind-specific entries.

        Args:
            indent: JSON indentation (``None``: one line).

        Returns:
            The JSON text.

        Raises:
            NotFittedError: Before :meth:`fit`.
        """
        self._check_fitted()
        doc: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_kind": self._kind,
            "osteofe_version": self.osteofe_version_,
            "params": self._params_to_json(),
            "feature_names": list(self.feature_names_in_),
            "coef": [float(c) for c in self.coef_],
            "intercept": self.intercept_,
            "n_iter": self.n_iter_,
            "training": self.training_summary_.to_dict(),
        }
        doc.update(self._extra_to_json())
        return json.dumps(doc, indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Rebuild a fitted model from :meth:`to_json` output.

        Args:
            text: The JSON text.

        Returns:
            The fitted model; its predictions equal the saved model's exactly.

        Raises:
            ModelError: If the text is not a model of this kind or is malformed.
        """
        doc = _parse_model_json(text)
        if doc["model_kind"] != cls._kind:
            raise ModelError(
                f"the JSON holds a {doc['model_kind']!r} model, not a {cls._kind!r}",
                "load it with risk.calibration.model_from_json (or load_model)",
            )
        try:
            params = doc["params"]
            if not isinstance(params, dict):
                raise ModelError(f"model JSON params is {params!r}, not an object", _CORRUPT)
            model = cls(**cls._params_from_json(dict(params)))
            model._check_params()
            raw_names = doc["feature_names"]
            if not (isinstance(raw_names, list) and raw_names
                    and all(isinstance(n, str) for n in raw_names)
                    and len(set(raw_names)) == len(raw_names)):
                raise ModelError(
                    f"model JSON feature_names is {raw_names!r}, not a list of distinct names",
                    _CORRUPT,
                )
            names = tuple(raw_names)
            coef = _json_vector(doc["coef"], "coef", len(names))
            training = doc["training"]
            if not isinstance(training, dict):
                raise ModelError(f"model JSON training is {training!r}, not an object",
                                 _CORRUPT)
            n = _json_count(training["n"], "training.n")
            events = _json_count(training["events"], "training.events")
            auc = _json_number(training["auc"], "training.auc")
            if events > n or not 0.0 <= auc <= 1.0:
                raise ModelError(f"model JSON training record is inconsistent: {events} events "
                                 f"in {n} femurs, AUC {auc:g}", _CORRUPT)
            model._set_fitted(coef, _json_number(doc["intercept"], "intercept"), names,
                              TrainingSummary(n, events, auc),
                              _json_count(doc["n_iter"], "n_iter"))
            model.osteofe_version_ = str(doc.get("osteofe_version", "unknown"))
            model._extra_from_json(doc)
            model._check_log_odds()
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(
                f"malformed {cls._kind} JSON: {type(exc).__name__}: {exc}", _CORRUPT
            ) from exc
        return model

    def _check_params(self) -> None:
        """Refuse constructor parameters that :meth:`fit` would refuse (loaded models)."""
        return None

    def _feature_ranges(self) -> dict[str, tuple[float, float, str]]:
        """Where the model is meant to be applied: feature -> (low, high, where from).

        :data:`FEATURE_RANGES` for the features the strength pipeline offers; other
        features are left out (the pipeline cannot feed them).
        """
        ranges = {}
        for name in self.feature_names_in_:
            limits = plausible_range(name)
            if limits is not None:
                ranges[name] = (*limits, "its plausible range")
        return ranges

    def _check_log_odds(self) -> None:
        """Refuse a loaded model whose log-odds overflow where it is meant to be applied.

        Over the box of :meth:`_feature_ranges`, ``|intercept + x @ coef|`` must stay within
        :data:`MAX_ABS_LOG_ODDS`: beyond it ``exp`` overflows float64 and the probability is
        exactly 0 or 1 (a hand-edited coefficient of 1e308 gave p = 1.0 with a numpy
        overflow warning).

        Raises:
            ModelError: The log-odds leave that range (or are not finite).
        """
        ranges = self._feature_ranges()
        if self._table_only():
            return
        index = {name: i for i, name in enumerate(self.feature_names_in_)}
        low = high = float(self.intercept_)
        worst: tuple[float, str] = (0.0, "")
        with np.errstate(over="ignore", invalid="ignore"):
            for name, (lo, hi, source) in ranges.items():
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

    def _table_only(self) -> bool:
        """True for a model that predicts from a fixed table, not from log-odds."""
        return getattr(self, "probabilities_", None) is not None


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


def _parse_model_json(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:  # ValueError: JSONDecodeError too
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ModelError(
            f"not a JSON document: {reason}", "pass the text written by to_json/save_model"
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelError(
            f"not an osteofe risk model (format field is not {FORMAT!r})",
            "pass a file written by risk.calibration.save_model",
        )
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or not (
            1 <= version <= FORMAT_VERSION):
        raise ModelError(
            f"unsupported model format_version {version!r} (this osteofe reads <= "
            f"{FORMAT_VERSION})",
            "upgrade osteofe to read this model",
        )
    missing = [
        k
        for k in ("model_kind", "params", "feature_names", "coef", "intercept", "n_iter",
                  "training")
        if k not in doc
    ]
    if missing:
        raise ModelError(
            f"model JSON lacks the field(s) {missing}",
            "the file is corrupt; refit and save the model again",
        )
    return doc


def _check_penalty(penalty: object, C: object) -> float:
    """The L2 strength ``1 / C`` (0 without penalty)."""
    if penalty not in ("none", "l2"):
        raise ModelError(f"unknown penalty {penalty!r}", "use penalty='none' or 'l2'")
    if (
        isinstance(C, bool)
        or not isinstance(C, Real)
        or not (math.isfinite(float(C)) and float(C) > 0)
    ):
        raise ModelError(
            f"C must be a positive finite number, got {C!r}",
            "C is the inverse L2 strength: smaller C = stronger shrinkage",
        )
    return 1.0 / float(C) if penalty == "l2" else 0.0


def _check_iterations(max_iter: object, tol: object) -> None:
    if isinstance(max_iter, bool) or not isinstance(max_iter, Integral) or max_iter < 1:
        raise ModelError(f"max_iter must be an integer >= 1, got {max_iter!r}", "use 100")
    if isinstance(tol, bool) or not isinstance(tol, Real) or not float(tol) > 0:
        raise ModelError(f"tol must be > 0, got {tol!r}", "use 1e-10")


def _fit_targets(y: npt.ArrayLike, n: int) -> IntArray:
    try:
        yv = _as_binary(y)
    except MetricsError as exc:
        raise ModelError(exc.message, exc.hint) from None
    if yv.size != n:
        raise ModelError(f"X has {n} rows but y has {yv.size}", "pass one outcome per femur")
    return yv


# --------------------------------------------------------------------------------------------
# The estimators.
# --------------------------------------------------------------------------------------------


class StrengthRiskModel(_RiskEstimator):
    """Logistic (sigmoid) model of fracture on FE strength and optional covariates.

    ``P(fracture) = 1 / (1 + exp(-(intercept_ + X @ coef_)))``. Typical feature: the failure
    load in body weights (``failure_load_BW``), whose coefficient comes out negative (weaker
    femur, higher risk); covariates (e.g. ACI in mm) are further columns.

    Args:
        method: Calibration map; only ``"sigmoid"`` (logistic/Platt): isotonic regression
            overfits the small cohorts of this field.
        penalty: ``"none"`` (maximum likelihood) or ``"l2"`` (ridge, strength ``1 / C``).
        C: Inverse L2 strength (``penalty="l2"`` only); smaller is stronger shrinkage.
        standardize: Fit on z-scored features (``(x - mean) / sd``) for conditioning; the
            L2 penalty then acts on standardised coefficients. Reported ``coef_`` and
            ``intercept_`` are always per original unit.
        max_iter: Maximum Newton iterations.
        tol: Relative Newton step tolerance.

    Attributes:
        coef_: Coefficients per original feature unit, shape (k,), float64.
        intercept_: Intercept (log-odds).
        feature_names_in_: Feature names (``x0``, ``x1``, ... when fitted on a plain array).
        n_features_in_: k.
        classes_: ``array([0, 1])``.
        training_summary_: n, events and apparent AUC of the training data.
        n_iter_: Newton iterations used.
        mean_: Feature means used for standardisation, shape (k,).
        scale_: Feature standard deviations used for standardisation, shape (k,).
        osteofe_version_: osteofe version that fitted the model (kept through JSON).
    """

    _kind: ClassVar[str] = "StrengthRiskModel"

    def __init__(
        self,
        method: Literal["sigmoid"] = "sigmoid",
        penalty: Literal["none", "l2"] = "none",
        C: float = 1.0,
        standardize: bool = True,
        max_iter: int = 100,
        tol: float = 1e-10,
    ) -> None:
        self.method = method
        self.penalty = penalty
        self.C = C
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: object, y: npt.ArrayLike) -> Self:
        """Fit the logistic model.

        Args:
            X: Features, shape (n, k): a dict of columns / DataFrame-like (names kept) or an
                array ((n,) for one feature). Finite numbers.
            y: Outcomes, shape (n,), 0/1, both classes present.

        Returns:
            ``self``, fitted.

        Raises:
            ModelError: On invalid parameters or data (constant feature, NaN, lengths).
            ConvergenceError: If the unpenalised fit diverges (separated data): use
                ``penalty="l2"``.
        """
        if self.method != "sigmoid":
            raise ModelError(
                f"unsupported calibration method {self.method!r}",
                "use method='sigmoid': isotonic calibration overfits cohorts with few "
                "fractures",
            )
        l2 = _check_penalty(self.penalty, self.C)
        _check_iterations(self.max_iter, self.tol)
        data, names = _read_features(X)
        yv = _fit_targets(y, data.shape[0])
        k = data.shape[1]
        feature_names = names if names is not None else tuple(f"x{i}" for i in range(k))
        if self.standardize:
            mean = data.mean(axis=0)
            scale = data.std(axis=0)
        else:
            mean = np.zeros(k)
            scale = np.ones(k)
        constant = np.flatnonzero(np.ptp(data, axis=0) == 0.0)
        if constant.size:
            raise ModelError(
                f"feature {feature_names[int(constant[0])]!r} is constant in the training data",
                "drop features that do not vary between femurs",
            )
        fit = fit_logistic(
            (data - mean) / scale, yv, l2=l2, max_iter=self.max_iter, tol=self.tol
        )
        coef = fit.coef / scale
        intercept = fit.intercept - float(np.sum(fit.coef * mean / scale))
        self.mean_ = mean
        self.scale_ = scale
        summary = TrainingSummary(
            int(yv.size), int(yv.sum()), roc_auc(yv, data @ coef + intercept)
        )
        self._set_fitted(coef, intercept, feature_names, summary, fit.n_iter)
        return self

    def decision_function(self, X: object) -> FloatArray:
        """Linear predictor (log-odds of fracture).

        Args:
            X: Features, as for :meth:`predict_proba`.

        Returns:
            Shape (n,), float64.
        """
        self._check_fitted()
        return self._linear(self._prepare(X))

    def _extra_to_json(self) -> dict[str, Any]:
        return {"mean": [float(v) for v in self.mean_], "scale": [float(v) for v in self.scale_]}

    def _extra_from_json(self, doc: dict[str, Any]) -> None:
        k = self.n_features_in_
        self.mean_ = (_json_vector(doc["mean"], "mean", k) if "mean" in doc else np.zeros(k))
        self.scale_ = (_json_vector(doc["scale"], "scale", k, positive=True) if "scale" in doc
                       else np.ones(k))

    def _feature_ranges(self) -> dict[str, tuple[float, float, str]]:
        """Where the model applies: its training mean +- 4 SD, within :data:`FEATURE_RANGES`.

        The training mean and SD are known when the model was standardised
        (``standardize``; the JSON's ``mean`` and ``scale``); otherwise the plausible ranges
        of the pipeline's features are used and other features are left out.
        """
        ranges = super()._feature_ranges()
        if not self.standardize:
            return ranges
        for i, name in enumerate(self.feature_names_in_):
            mean, sd = float(self.mean_[i]), float(self.scale_[i])
            lo, hi = mean - TRAINING_RANGE_SD * sd, mean + TRAINING_RANGE_SD * sd
            source = f"its training mean +-{TRAINING_RANGE_SD:g} SD"
            limits = plausible_range(name)
            if limits is not None:
                plo, phi = limits
                if max(lo, plo) <= min(hi, phi):
                    lo, hi = max(lo, plo), min(hi, phi)
                    source += " within the plausible range"
            ranges[name] = (lo, hi, source)
        return ranges

    def _check_params(self) -> None:
        if self.method != "sigmoid":
            raise ModelError(f"unsupported calibration method {self.method!r}",
                             "use method='sigmoid'")
        _check_penalty(self.penalty, self.C)
        _check_iterations(self.max_iter, self.tol)
        if not isinstance(self.standardize, bool):
            raise ModelError(f"standardize must be true or false, got {self.standardize!r}",
                             _CORRUPT)


class MirelsBaseline(_RiskEstimator):
    """The Mirels total score as a fracture-probability estimator.

    Input is the Mirels total (4-12): an array of shape (n,) or (n, 1), a dict/DataFrame with
    the single column ``"mirels_total"``, or a sequence of :class:`~risk.mirels.MirelsScore`.

    Args:
        mapping: ``"logistic"``: ``P = expit(intercept_ + coef_ * total)`` fitted by maximum
            likelihood (or L2); ``"fixed"``: a score -> probability table, not fitted.
        threshold: For ``mapping="fixed"`` without ``probabilities``: totals >= threshold map
            to 1, others to 0 (Mirels' "fix" rule at the default 9).
        probabilities: For ``mapping="fixed"``: a table total (4-12) -> probability covering
            every total; ``None`` uses the step at ``threshold``.
        penalty: ``"none"`` or ``"l2"`` (logistic only).
        C: Inverse L2 strength (logistic with ``penalty="l2"`` only).

    Attributes:
        coef_: Shape (1,): log-odds per Mirels point (0 for the fixed mapping).
        intercept_: Intercept (0 for the fixed mapping).
        probabilities_: The fixed table total -> probability (fixed mapping), else ``None``.
        feature_names_in_: ``("mirels_total",)``.
        n_features_in_: 1.
        classes_: ``array([0, 1])``.
        training_summary_: n, events and apparent AUC.
        n_iter_: Newton iterations (0 for the fixed mapping).
        osteofe_version_: osteofe version that fitted the model (kept through JSON).
    """

    _kind: ClassVar[str] = "MirelsBaseline"

    def __init__(
        self,
        mapping: Literal["logistic", "fixed"] = "logistic",
        threshold: int = MIRELS_FIX_MIN,
        probabilities: Mapping[int, float] | None = None,
        penalty: Literal["none", "l2"] = "none",
        C: float = 1.0,
    ) -> None:
        self.mapping = mapping
        self.threshold = threshold
        self.probabilities = probabilities
        self.penalty = penalty
        self.C = C

    def _prepare(self, X: object) -> FloatArray:
        totals = _mirels_totals(X)
        return totals[:, None]

    def _fixed_table(self) -> dict[int, float]:
        if self.probabilities is None:
            t = self.threshold
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 4 <= t <= 12:
                raise ModelError(
                    f"Mirels threshold must be an integer 4-12, got {t!r}",
                    "use threshold=9 (Mirels' fixation rule)",
                )
            return {s: (1.0 if s >= t else 0.0) for s in range(4, 13)}
        if not isinstance(self.probabilities, Mapping):
            raise ModelError(
                f"probabilities must be a mapping total -> probability, got "
                f"{type(self.probabilities).__name__}",
                "pass e.g. {4: 0.0, 5: 0.0, ..., 12: 1.0}",
            )
        table: dict[int, float] = {}
        for key, value in self.probabilities.items():
            total = int(key)
            p = float(value)
            if not (4 <= total <= 12 and 0.0 <= p <= 1.0):
                raise ModelError(
                    f"bad entry {key!r}: {value!r} in the Mirels probability table",
                    "keys are totals 4-12, values probabilities in [0, 1]",
                )
            table[total] = p
        missing = [s for s in range(4, 13) if s not in table]
        if missing:
            raise ModelError(
                f"the Mirels probability table lacks the total(s) {missing}",
                "give a probability for every total 4-12",
            )
        return table

    def fit(self, X: object, y: npt.ArrayLike) -> Self:
        """Fit the logistic mapping (or validate the fixed table) on Mirels totals.

        Args:
            X: Mirels totals (see class docstring), integers 4-12.
            y: Outcomes, shape (n,), 0/1, both classes present.

        Returns:
            ``self``, fitted.

        Raises:
            ModelError: On invalid parameters or totals.
            ConvergenceError: If the unpenalised logistic fit diverges (the totals separate
                the outcomes): use ``penalty="l2"``.
        """
        if self.mapping not in ("logistic", "fixed"):
            raise ModelError(
                f"unknown Mirels mapping {self.mapping!r}", "use mapping='logistic' or 'fixed'"
            )
        totals = self._prepare(X)
        yv = _fit_targets(y, totals.shape[0])
        if self.mapping == "fixed":
            self.probabilities_: dict[int, float] | None = self._fixed_table()
            coef, intercept, n_iter = np.zeros(1), 0.0, 0
        else:
            l2 = _check_penalty(self.penalty, self.C)
            if np.ptp(totals) == 0.0:
                raise ModelError(
                    "all Mirels totals are equal; a logistic mapping cannot be fitted",
                    "use mapping='fixed' or a cohort with varying scores",
                )
            fit = fit_logistic(totals, yv, l2=l2)
            self.probabilities_ = None
            coef, intercept, n_iter = fit.coef, fit.intercept, fit.n_iter
        summary = TrainingSummary(int(yv.size), int(yv.sum()), roc_auc(yv, totals[:, 0]))
        self._set_fitted(coef, intercept, (MIRELS_FEATURE,), summary, n_iter)
        return self

    def _proba1(self, data: FloatArray) -> FloatArray:
        if self.probabilities_ is not None:
            table = self.probabilities_
            return np.array([table[int(s)] for s in data[:, 0]], dtype=np.float64)
        return super()._proba1(data)

    def _extra_to_json(self) -> dict[str, Any]:
        table = self.probabilities_
        return {
            "probabilities_table": None
            if table is None
            else {str(k): v for k, v in sorted(table.items())}
        }

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
            raise ModelError(f"the Mirels probability table of the model JSON lacks the "
                             f"total(s) {missing}", _CORRUPT)
        self.probabilities_ = parsed

    def _check_params(self) -> None:
        if self.mapping == "fixed":
            self._fixed_table()
        elif self.mapping == "logistic":
            _check_penalty(self.penalty, self.C)
        else:
            raise ModelError(f"unknown Mirels mapping {self.mapping!r}",
                             "use mapping='logistic' or 'fixed'")

    def _params_to_json(self) -> dict[str, Any]:
        params = super()._params_to_json()
        if params["probabilities"] is not None:
            params["probabilities"] = {str(k): float(v) for k, v in params["probabilities"].items()}
        return params

    @classmethod
    def _params_from_json(cls, params: dict[str, Any]) -> dict[str, Any]:
        table = params.get("probabilities")
        if table is not None:
            if not isinstance(table, dict):
                raise ModelError(f"model JSON params.probabilities is {table!r}, not an object",
                                 _CORRUPT)
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


# --------------------------------------------------------------------------------------------
# Model files.
# --------------------------------------------------------------------------------------------

_KINDS: dict[str, type[_RiskEstimator]] = {
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
    raise ModelError(
        f"unknown model_kind {kind!r}", f"known kinds: {', '.join(sorted(_KINDS))}"
    )


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
        raise ModelError(
            f"cannot write model file {path}: {exc.strerror}",
            "check that the folder exists and is writable",
        ) from exc


def load_model(path: str | Path) -> StrengthRiskModel | MirelsBaseline:
    """Read a model written by :func:`save_model`.

    Args:
        path: The JSON file.

    Returns:
        The fitted model.

    Raises:
        ModelError: If the file is missing or not a risk model, or its log-odds overflow
            where it applies (the message names the file).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(
            f"cannot read model file {p}: {exc.strerror}", "check the path"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ModelError(
            f"model file {p} is not UTF-8 text ({exc.reason} at byte {exc.start})",
            "pass the JSON file written by risk.calibration.save_model; a file damaged in "
            "transfer must be copied again",
        ) from exc
    try:
        return model_from_json(text)
    except ModelError as exc:
        raise type(exc)(f"risk model {p.name}: {exc.message}", exc.hint) from None


# --------------------------------------------------------------------------------------------
# Cross-validation and bootstrap.
# --------------------------------------------------------------------------------------------


def clone(estimator: Any) -> Any:
    """A new, unfitted estimator with the same parameters (``type(e)(**e.get_params())``).

    Args:
        estimator: Any object with ``get_params`` (osteofe or scikit-learn estimators).

    Returns:
        The unfitted copy.

    Raises:
        ModelError: If the object has no ``get_params``.
    """
    if not hasattr(estimator, "get_params"):
        raise ModelError(
            f"{type(estimator).__name__} is not an estimator (no get_params)",
            "pass an estimator such as StrengthRiskModel()",
        )
    return type(estimator)(**estimator.get_params(deep=False))


def _group_codes(groups: Iterable[Hashable], n: int) -> IntArray:
    index: dict[Hashable, int] = {}
    try:
        codes = np.array([index.setdefault(g, len(index)) for g in groups], dtype=np.int64)
    except TypeError as exc:
        raise ModelError(f"groups must be hashable ids: {exc}", "pass patient ids") from exc
    if codes.size != n:
        raise ModelError(
            f"groups has {codes.size} entries but y has {n}", "pass one group id per femur"
        )
    return codes


def assign_group_folds(
    y: npt.ArrayLike, groups: Iterable[Hashable], n_splits: int = 5, seed: int | None = 0
) -> IntArray:
    """Assign whole groups (patients) to folds, spreading fractures and non-fractures evenly.

    Groups are shuffled (``seed``), then those with fractures are placed, most fractures
    first, into the fold with the fewest fractures (ties: fewest non-fractures, then lowest
    index); the remaining groups, largest first, into the fold with the fewest non-fractures.
    Every fold gets at least one group.

    Args:
        y: Outcomes, shape (n,), 0/1.
        groups: Group id per femur (e.g. patient id), shape (n,), hashable.
        n_splits: Number of folds, 2 <= n_splits <= number of groups.
        seed: Seed of the shuffle.

    Returns:
        Fold index per femur, shape (n,), int64 in ``[0, n_splits)``.

    Raises:
        ModelError: On invalid ``n_splits`` or lengths.
    """
    yv = _as_binary(y, both_classes=False)
    codes = _group_codes(groups, yv.size)
    n_groups = int(codes.max()) + 1
    if isinstance(n_splits, bool) or not isinstance(n_splits, Integral) or n_splits < 2:
        raise ModelError(f"n_splits must be an integer >= 2, got {n_splits!r}", "use 5")
    if n_splits > n_groups:
        raise ModelError(
            f"n_splits={n_splits} is larger than the number of groups ({n_groups})",
            "use fewer folds",
        )
    events = np.bincount(codes, weights=yv, minlength=n_groups).astype(np.int64)
    sizes = np.bincount(codes, minlength=n_groups)
    non_events = sizes - events
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n_groups)
    with_events = [int(g) for g in shuffled if events[g] > 0]
    without = [int(g) for g in shuffled if events[g] == 0]
    with_events.sort(key=lambda g: -events[g])  # stable: shuffled order breaks ties
    without.sort(key=lambda g: -sizes[g])
    fold_events = np.zeros(n_splits, dtype=np.int64)
    fold_non = np.zeros(n_splits, dtype=np.int64)
    group_fold = np.empty(n_groups, dtype=np.int64)
    for g in with_events:
        f = int(np.lexsort((fold_non, fold_events))[0])
        group_fold[g] = f
        fold_events[f] += events[g]
        fold_non[f] += non_events[g]
    for g in without:
        f = int(np.lexsort((fold_events, fold_non))[0])
        group_fold[g] = f
        fold_non[f] += non_events[g]
    return group_fold[codes]


def grouped_cross_val_predict(
    estimator: Any,
    X: object,
    y: npt.ArrayLike,
    groups: Iterable[Hashable],
    n_splits: int = 5,
    seed: int | None = 0,
) -> FloatArray:
    """Out-of-fold probabilities of fracture with grouped, stratified folds.

    Each fold is predicted by a clone of ``estimator`` fitted on the other folds; folds come
    from :func:`assign_group_folds`, so no patient is ever in both the training and the test
    part (GroupKFold) and the fractures are spread over the folds (stratified where possible).

    Args:
        estimator: An unfitted estimator with ``get_params``, ``fit`` and ``predict_proba``.
        X: Features (array, dict of columns or DataFrame-like), n rows.
        y: Outcomes, shape (n,), 0/1, both classes present.
        groups: Group id per femur, shape (n,) (patient id).
        n_splits: Number of folds.
        seed: Seed of the fold assignment.

    Returns:
        P(fracture) per femur, shape (n,), float64, each predicted by a model that never saw
        that femur's patient.

    Raises:
        ModelError: If a training part lacks fractures or non-fractures (use fewer folds), or
            on invalid inputs.
    """
    yv = _as_binary(y)
    if _n_rows(X) != yv.size:
        raise ModelError(
            f"X has {_n_rows(X)} rows but y has {yv.size}", "pass one outcome per femur"
        )
    folds = assign_group_folds(yv, groups, n_splits, seed)
    out = np.empty(yv.size, dtype=np.float64)
    for f in range(n_splits):
        test = np.flatnonzero(folds == f)
        train = np.flatnonzero(folds != f)
        if np.unique(yv[train]).size < 2:
            raise ModelError(
                f"fold {f}: the training part has only one outcome class",
                "use fewer folds (n_splits) so that every training part has fractures",
            )
        model = clone(estimator).fit(_take_rows(X, train), yv[train])
        out[test] = np.asarray(model.predict_proba(_take_rows(X, test)))[:, 1]
    return out


@dataclass(frozen=True)
class PredictionInterval:
    """Bootstrap percentile interval of predicted probabilities.

    Attributes:
        probability: P(fracture) from the model fitted on all data, shape (m,), float64.
        lower: Lower percentile bound, shape (m,).
        upper: Upper percentile bound, shape (m,).
        level: Confidence level.
        n_bootstrap: Resamples drawn.
        n_failed: Resamples whose refit failed (e.g. separated data) and were left out.
    """

    probability: FloatArray
    lower: FloatArray
    upper: FloatArray
    level: float
    n_bootstrap: int
    n_failed: int


def bootstrap_predict_interval(
    estimator: Any,
    X: object,
    y: npt.ArrayLike,
    X_new: object | None = None,
    *,
    groups: Iterable[Hashable] | None = None,
    n_bootstrap: int = 500,
    level: float = 0.95,
    seed: int | None = 0,
) -> PredictionInterval:
    """Confidence interval of each predicted probability by refitting on bootstrap resamples.

    Without ``groups``, fractures and non-fractures are resampled separately (every resample
    keeps the cohort's number of each). With ``groups``, whole groups are resampled (cluster
    bootstrap); a resample with one class only counts as failed. Refits that raise a
    :class:`~risk.errors.ConvergenceError` (or another model error) are left out and counted
    in ``n_failed``; more than half failing is an error.

    Args:
        estimator: Unfitted estimator (cloned for every refit).
        X: Training features, n rows.
        y: Training outcomes, shape (n,), 0/1.
        X_new: Features to predict (default: ``X``).
        groups: Optional group id per training femur (patient id).
        n_bootstrap: Resamples, >= 50.
        level: Confidence level in (0, 1).
        seed: Seed of the resampling.

    Returns:
        Point predictions and percentile bounds.

    Raises:
        ModelError: On invalid inputs or if more than half of the refits fail.
    """
    yv = _as_binary(y)
    n = yv.size
    if _n_rows(X) != n:
        raise ModelError(f"X has {_n_rows(X)} rows but y has {n}", "pass one outcome per femur")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, Integral) or n_bootstrap < 50:
        raise ModelError(f"n_bootstrap must be an integer >= 50, got {n_bootstrap!r}", "use 500")
    n_bootstrap = int(n_bootstrap)
    if isinstance(level, bool) or not (isinstance(level, Real) and 0.0 < float(level) < 1.0):
        raise ModelError(f"level must be in (0, 1), got {level!r}", "use level=0.95")
    target = X if X_new is None else X_new
    point = np.asarray(clone(estimator).fit(X, yv).predict_proba(target))[:, 1]
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(yv == 1)
    neg = np.flatnonzero(yv == 0)
    codes = None if groups is None else _group_codes(groups, n)
    members = None
    if codes is not None:
        members = [np.flatnonzero(codes == g) for g in range(int(codes.max()) + 1)]
    samples = []
    failed = 0
    last_error: Exception | None = None
    for _ in range(n_bootstrap):
        if members is None:
            idx = np.concatenate(
                [rng.choice(pos, pos.size, replace=True), rng.choice(neg, neg.size, replace=True)]
            )
        else:
            picked = rng.integers(0, len(members), len(members))
            idx = np.concatenate([members[g] for g in picked])
            if np.unique(yv[idx]).size < 2:
                failed += 1
                continue
        try:
            model = clone(estimator).fit(_take_rows(X, idx), yv[idx])
        except (ConvergenceError, ModelError) as exc:
            if isinstance(exc, FeatureMismatchError):
                raise
            failed += 1
            last_error = exc
            continue
        samples.append(np.asarray(model.predict_proba(target))[:, 1])
    if failed > n_bootstrap // 2:
        reason = f" (last error: {last_error})" if last_error is not None else ""
        raise ModelError(
            f"{failed} of {n_bootstrap} bootstrap refits failed{reason}",
            "use penalty='l2' (separated resamples) or a larger cohort",
        )
    draws = np.vstack(samples)
    alpha = 1.0 - level
    lower, upper = np.quantile(draws, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0)
    return PredictionInterval(point, lower, upper, float(level), n_bootstrap, failed)
