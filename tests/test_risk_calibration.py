"""Calibrated risk models (scikit-learn pipelines): known truth, JSON round trips, grouped CV."""

from __future__ import annotations

import itertools
import json
import math
import re
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from risk import (
    ConvergenceError,
    FeatureMismatchError,
    MirelsBaseline,
    ModelError,
    NotFittedError,
    StrengthRiskModel,
    assign_group_folds,
    brier_score,
    calibration_intercept_slope,
    clone,
    grouped_cross_val_predict,
    load_model,
    model_from_json,
    save_model,
    score_mirels,
)


def _synthetic(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Known truth: logit P(fx) = 4 - 1.0 * failure_load_BW + 0.05 * aci_mm."""
    rng = np.random.default_rng(seed)
    bw = rng.uniform(2.0, 10.0, n)
    aci = rng.uniform(0.0, 60.0, n)
    y = (rng.random(n) < expit(4.0 - 1.0 * bw + 0.05 * aci)).astype(int)
    return {"failure_load_BW": bw, "aci_mm": aci}, y


# ---------------------------------------------------------------------------------------------
# StrengthRiskModel.
# ---------------------------------------------------------------------------------------------


def test_binary_feature_hand_case() -> None:
    # x = 0: 1 fracture of 4 -> P = 1/4; x = 1: 3 of 4 -> P = 3/4. The MLE reproduces both:
    # intercept = logit(1/4) = -ln 3, coef = logit(3/4) - logit(1/4) = 2 ln 3.
    x = np.array([0, 0, 0, 0, 1, 1, 1, 1.0])
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    model = StrengthRiskModel(n_bootstrap=0).fit(x, y)
    assert model.intercept_ == pytest.approx(-math.log(3), abs=1e-9)
    assert model.coef_[0] == pytest.approx(2 * math.log(3), abs=1e-9)
    np.testing.assert_allclose(model.predict_proba([[0.0], [1.0]])[:, 1], [0.25, 0.75])
    assert model.feature_names_in_ == ("x0",)


def test_known_logistic_truth_is_recovered() -> None:
    X, y = _synthetic(6000, seed=1)
    model = StrengthRiskModel(n_bootstrap=0).fit(X, y)
    # standard errors at n = 6000 are ~0.03 (BW), ~0.002 (ACI), ~0.2 (intercept): allow ~4 SE
    assert model.coef_[0] == pytest.approx(-1.0, abs=0.12)
    assert model.coef_[1] == pytest.approx(0.05, abs=0.01)
    assert model.intercept_ == pytest.approx(4.0, abs=0.8)
    assert model.feature_names_in_ == ("failure_load_BW", "aci_mm")
    summary = model.training_summary_
    assert (summary.n, summary.events) == (6000, int(y.sum()))
    assert 0.8 < summary.auc < 1.0
    # the pipeline's standardisation changes the conditioning, not the ML solution
    raw = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12).fit(
        np.column_stack([X["failure_load_BW"], X["aci_mm"]]), y)
    np.testing.assert_allclose(raw.coef_[0], model.coef_, rtol=1e-6)


def test_probabilities_are_valid() -> None:
    X, y = _synthetic(300, seed=2)
    model = StrengthRiskModel(penalty="l2", C=0.5, n_bootstrap=0).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (300, 2) and proba.dtype == np.float64
    assert np.all((proba >= 0.0) & (proba <= 1.0))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.predict(X), (proba[:, 1] >= 0.5).astype(int))
    np.testing.assert_allclose(expit(model.decision_function(X)), proba[:, 1])
    np.testing.assert_array_equal(model.classes_, [0, 1])


def test_dict_column_order_does_not_matter() -> None:
    X, y = _synthetic(200, seed=3)
    model = StrengthRiskModel(n_bootstrap=0).fit(X, y)
    reordered = {"aci_mm": X["aci_mm"], "failure_load_BW": X["failure_load_BW"]}
    np.testing.assert_array_equal(model.predict_proba(reordered), model.predict_proba(X))
    as_array = np.column_stack([X["failure_load_BW"], X["aci_mm"]])
    # A C-ordered array and a dict of columns reach BLAS with different memory layouts, so
    # the dot product may sum in another order: equal to rounding, not bitwise. A swapped
    # column would differ by far more than 1e-12.
    np.testing.assert_allclose(model.predict_proba(as_array), model.predict_proba(X),
                               rtol=1e-12, atol=1e-15)


def test_l2_shrinks_towards_zero() -> None:
    X, y = _synthetic(200, seed=4)
    free = StrengthRiskModel(n_bootstrap=0).fit(X, y)
    norms = [
        np.abs(StrengthRiskModel(penalty="l2", C=c, n_bootstrap=0).fit(X, y).coef_
               * free.scale_).sum()
        for c in (1e6, 1.0, 0.1, 0.01)
    ]
    assert norms[0] == pytest.approx(np.abs(free.coef_ * free.scale_).sum(), rel=1e-3)
    assert all(a > b for a, b in itertools.pairwise(norms))


def test_platt_recalibration_improves_brier_of_a_miscalibrated_score() -> None:
    # a score that ranks well but is too extreme and shifted: p_bad = expit(3 * eta + 1.5)
    rng = np.random.default_rng(5)
    eta = rng.normal(-1.5, 1.0, 600)
    y = (rng.random(600) < expit(eta)).astype(int)
    bad = expit(3.0 * eta + 1.5)
    groups = np.arange(600) // 2  # pairs of femurs of one patient
    calibrated = grouped_cross_val_predict(
        StrengthRiskModel(), {"score_logit": logit(bad)}, y, groups, n_splits=5, seed=0
    )
    assert brier_score(y, calibrated) < brier_score(y, bad) - 0.02
    # out-of-fold recalibration gets as close as the truth itself (Brier of expit(eta))
    assert brier_score(y, calibrated) == pytest.approx(brier_score(y, expit(eta)), abs=0.003)
    assert calibration_intercept_slope(y, bad).slope < 0.4  # too extreme
    assert calibration_intercept_slope(y, calibrated).slope == pytest.approx(1.0, abs=0.15)
    assert np.all((calibrated > 0) & (calibrated < 1))


def test_separated_data_needs_a_penalty() -> None:
    x = np.array([1.0, 2, 3, 4, 5, 6])
    y = np.array([0, 0, 0, 1, 1, 1])
    with pytest.raises(ConvergenceError, match="perfectly separated") as info:
        StrengthRiskModel(n_bootstrap=0).fit(x, y)
    assert "penalty='l2'" in info.value.hint
    model = StrengthRiskModel(penalty="l2", n_bootstrap=0).fit(x, y)
    assert model.coef_[0] > 0 and np.isfinite(model.intercept_)


# ---------------------------------------------------------------------------------------------
# JSON model files.
# ---------------------------------------------------------------------------------------------


def test_json_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    X, y = _synthetic(250, seed=6)
    model = StrengthRiskModel(penalty="l2", C=2.0).fit(X, y)
    text = model.to_json()
    doc = json.loads(text)
    assert doc["model_kind"] == "StrengthRiskModel"
    assert doc["osteofe_version"] == metadata.version("osteofe")
    assert doc["feature_names"] == ["failure_load_BW", "aci_mm"]
    assert doc["params"]["penalty"] == "l2" and doc["params"]["C"] == 2.0
    assert doc["training"] == {
        "n": 250,
        "events": int(y.sum()),
        "auc": model.training_summary_.auc,
        "n_groups": 250,
        "origin": "unspecified",
    }
    assert np.array(doc["bootstrap"]["covariance"]).shape == (3, 3)
    again = StrengthRiskModel.from_json(text)
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))
    assert again.osteofe_version_ == doc["osteofe_version"]
    assert again.to_json() == text  # stable: saving a loaded model changes nothing
    numpy_params = StrengthRiskModel(C=np.float64(2.0), max_iter=np.int64(50))  # type: ignore[arg-type]
    numpy_params.fit(X, y)
    assert json.loads(numpy_params.to_json())["params"]["max_iter"] == 50
    assert again.get_params() == model.get_params()
    path = save_model(model, tmp_path / "model.json")
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]  # no temporary left over
    loaded = load_model(path)
    assert isinstance(loaded, StrengthRiskModel)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert b"pickle" not in path.read_bytes() and path.read_text().startswith("{")


def test_mirels_baseline_round_trips(tmp_path: Path) -> None:
    totals = np.array([6, 7, 8, 8, 9, 9, 10, 10, 11, 12, 7, 9])
    y = np.array([0, 0, 0, 1, 0, 1, 1, 0, 1, 1, 0, 0])
    for model in (
        MirelsBaseline().fit(totals, y),
        MirelsBaseline(mapping="fixed").fit(totals, y),
        MirelsBaseline(mapping="fixed", probabilities={s: s / 12 for s in range(4, 13)}).fit(
            totals, y
        ),
    ):
        loaded = load_model(save_model(model, tmp_path / "mirels.json"))
        assert isinstance(loaded, MirelsBaseline)
        np.testing.assert_array_equal(loaded.predict_proba(totals), model.predict_proba(totals))
        assert loaded.get_params() == model.get_params()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not a JSON document"),
        ('{"format": "sklearn"}', "not an osteofe risk model (format field is not"),
        ('{"format": "osteofe-risk-model", "format_version": 99}',
         "unsupported model format_version 99"),
        ('{"format": "osteofe-risk-model", "format_version": 2, "model_kind": "X"}',
         "model JSON lacks the field(s)"),
        ('{"format": "osteofe-risk-model", "format_version": 1, "model_kind": "X"}',
         "format_version 1 (osteofe before the scikit-learn risk layer)"),
    ],
)
def test_bad_model_json_is_refused(text: str, message: str) -> None:
    with pytest.raises(ModelError, match=re.escape(message)):
        model_from_json(text)


def test_model_json_kind_and_content_are_checked() -> None:
    totals = np.array([6, 8, 10, 12, 7, 9])
    mirels_text = MirelsBaseline().fit(totals, [0, 0, 1, 1, 1, 0]).to_json()
    with pytest.raises(ModelError, match="the JSON holds a 'MirelsBaseline' model, not a "
                                         "'StrengthRiskModel'"):
        StrengthRiskModel.from_json(mirels_text)
    doc = json.loads(mirels_text)
    doc["coef"] = [1.0, 2.0]
    with pytest.raises(ModelError, match="model JSON has 2 coefficients for 1 features"):
        model_from_json(json.dumps(doc))
    doc["model_kind"] = "RandomForest"
    with pytest.raises(ModelError, match="unknown model_kind 'RandomForest'"):
        model_from_json(json.dumps(doc))


# ---------------------------------------------------------------------------------------------
# Feature checks and the estimator contract.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"failure_load_BW": [5.0]},
         "features do not match the model: expected ['failure_load_BW', 'aci_mm'], given "
         "['failure_load_BW'] (missing ['aci_mm'], unexpected [])"),
        ({"failure_load_BW": [5.0], "aci_mm": [10.0], "age": [60.0]},
         "unexpected ['age']"),
        ({"failure_load_N": [3000.0], "aci_mm": [10.0]},
         "(missing ['failure_load_BW'], unexpected ['failure_load_N'])"),
        (np.array([[5.0, 10.0, 1.0]]),
         "X has 3 features, but the model is expecting 2 features as input: "
         "['failure_load_BW', 'aci_mm']"),
    ],
)
def test_mismatched_features_are_refused(given: object, message: str) -> None:
    X, y = _synthetic(100, seed=7)
    model = StrengthRiskModel(n_bootstrap=0).fit(X, y)
    with pytest.raises(FeatureMismatchError, match=re.escape(message)):
        model.predict_proba(given)


def test_unfitted_model_is_refused() -> None:
    with pytest.raises(NotFittedError, match="this StrengthRiskModel is not fitted yet") as info:
        StrengthRiskModel().predict_proba([[1.0]])
    assert isinstance(info.value, AttributeError)  # as scikit-learn's NotFittedError
    with pytest.raises(NotFittedError, match="this MirelsBaseline is not fitted yet"):
        MirelsBaseline().to_json()


def test_estimator_contract_params_and_clone() -> None:
    model = StrengthRiskModel(penalty="l2", C=0.3)
    assert model.get_params() == {
        "penalty": "l2", "C": 0.3, "n_bootstrap": 100, "seed": 0, "max_iter": 100,
        "tol": 1e-10,
    }
    assert repr(model) == "StrengthRiskModel(C=0.3, penalty='l2')"  # scikit-learn's repr
    assert model.set_params(C=2.0) is model and model.C == 2.0
    X, y = _synthetic(100, seed=8)
    model.fit(X, y)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and not hasattr(copy, "coef_")
    # __init__ stores parameters only: invalid values are refused at fit, not construction
    bad = StrengthRiskModel(C=-1.0)
    with pytest.raises(ModelError, match=re.escape("C must be a positive finite number, got -1.0")):
        bad.fit(X, y)
    with pytest.raises(ValueError, match="Invalid parameter 'alpha' for estimator"):
        model.set_params(alpha=1.0)  # scikit-learn's own message
    with pytest.raises(TypeError, match="does not seem to be a scikit-learn estimator"):
        clone(object())


@pytest.mark.parametrize(
    ("model", "X", "y", "message"),
    [
        (StrengthRiskModel(penalty="l1"), [1.0, 2.0], [0, 1],  # type: ignore[arg-type]
         "unknown penalty 'l1'"),
        (StrengthRiskModel(max_iter=0), [1.0, 2.0], [0, 1], "max_iter must be an integer >= 1"),
        (StrengthRiskModel(n_bootstrap=-1), [1.0, 2.0], [0, 1],
         "n_bootstrap must be an integer >= 0"),
        (StrengthRiskModel(n_bootstrap=0), {"bw": [3.0, 3.0, 3.0]}, [0, 1, 0],
         "feature 'bw' is constant in the training data"),
        (StrengthRiskModel(n_bootstrap=0), {"bw": [3.0, np.nan, 4.0]}, [0, 1, 0],
         "feature 'bw' has a missing or infinite value at row 1"),
        (StrengthRiskModel(n_bootstrap=0), {"bw": ["a", "b"]}, [0, 1],
         "feature 'bw' must be a 1-D numeric column"),
        (StrengthRiskModel(n_bootstrap=0), {"bw": [1.0, 2.0], "aci": [1.0]}, [0, 1],
         "feature columns have different lengths [1, 2]"),
        (StrengthRiskModel(n_bootstrap=0), [1.0, 2.0, 3.0], [0, 1], "X has 3 rows but y has 2"),
        (StrengthRiskModel(n_bootstrap=0), [1.0, 2.0, 3.0], [0, 0, 0],
         "y_true has only non-fractured"),
        (MirelsBaseline(), [3, 9, 10], [0, 1, 1], "Mirels total must be an integer 4-12, got 3"),
        (MirelsBaseline(), [8.5, 9, 10], [0, 1, 1],
         "Mirels total must be an integer 4-12, got 8.5"),
        (MirelsBaseline(), [9, 9, 9], [0, 1, 1], "all Mirels totals are equal"),
        (MirelsBaseline(mapping="table"), [8, 9], [0, 1],  # type: ignore[arg-type]
         "unknown Mirels mapping 'table'"),
        (MirelsBaseline(mapping="fixed", probabilities={9: 1.0}), [8, 9], [0, 1],
         "the Mirels probability table lacks the total(s) [4, 5, 6, 7, 8, 10, 11, 12]"),
        (MirelsBaseline(mapping="fixed", threshold=13), [8, 9], [0, 1],
         "Mirels threshold must be an integer 4-12, got 13"),
        (MirelsBaseline(), {"mirels": [8, 9]}, [0, 1],
         "expected ['mirels_total'], given ['mirels']"),
    ],
)
def test_invalid_fits_are_refused(model: object, X: object, y: object, message: str) -> None:
    with pytest.raises(ModelError, match=re.escape(message)) as info:
        model.fit(X, y)  # type: ignore[attr-defined]
    assert info.value.hint


# ---------------------------------------------------------------------------------------------
# MirelsBaseline.
# ---------------------------------------------------------------------------------------------


def test_mirels_logistic_hand_case() -> None:
    # total 8: 1 fracture of 4 (P 1/4); total 10: 3 of 4 (P 3/4). Per point:
    # (logit 3/4 - logit 1/4) / 2 = ln 3; intercept = logit(1/4) - 8 ln 3 = -9 ln 3.
    totals = [8, 8, 8, 8, 10, 10, 10, 10]
    y = [1, 0, 0, 0, 1, 1, 1, 0]
    model = MirelsBaseline(n_bootstrap=0).fit(totals, y)
    assert model.coef_[0] == pytest.approx(math.log(3), abs=1e-9)
    assert model.intercept_ == pytest.approx(-9 * math.log(3), abs=1e-8)
    # total 9 sits half-way on the logit scale: P = 1/2
    assert model.predict_proba([9])[0, 1] == pytest.approx(0.5)


def test_mirels_fixed_mapping_is_the_fix_rule() -> None:
    model = MirelsBaseline(mapping="fixed").fit([7, 8, 9, 12], [0, 0, 1, 1])
    np.testing.assert_array_equal(model.predict_proba([7, 8, 9, 12])[:, 1], [0, 0, 1, 1])
    np.testing.assert_array_equal(model.predict([8, 9]), [0, 1])
    judgement = MirelsBaseline(mapping="fixed", threshold=8).fit([7, 8], [0, 1])
    np.testing.assert_array_equal(judgement.predict([7, 8]), [0, 1])
    scores = [
        score_mirels(site="peritrochanteric", pain="functional", lesion="lytic", size_points=1),
        score_mirels(site="lower_limb", pain="mild", lesion="blastic", size_fraction=0.1),
    ]
    np.testing.assert_array_equal(model.predict_proba(scores)[:, 1], [1.0, 0.0])  # 10, 5
    np.testing.assert_array_equal(
        model.predict_proba({"mirels_total": [10, 5]}), model.predict_proba(scores)
    )


# ---------------------------------------------------------------------------------------------
# Grouped cross-validation and bootstrap.
# ---------------------------------------------------------------------------------------------


class _LeakProbe:
    """Predicts 1 for rows whose group (column 0) was in its training data, else 0."""

    def __init__(self) -> None:
        pass

    def get_params(self, deep: bool = True) -> dict[str, object]:
        return {}

    def fit(self, X: np.ndarray, y: np.ndarray) -> _LeakProbe:
        self.seen_ = set(np.asarray(X)[:, 0].tolist())
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        leaked = np.array([g in self.seen_ for g in np.asarray(X)[:, 0]], dtype=float)
        return np.column_stack([1 - leaked, leaked])


def test_grouped_cv_never_trains_on_the_predicted_patient() -> None:
    rng = np.random.default_rng(9)
    groups = np.repeat(np.arange(30), 2)  # 30 patients, both femurs
    y = (rng.random(60) < 0.3).astype(int)
    y[:2] = 1
    X = np.column_stack([groups, rng.normal(size=60)]).astype(float)
    out = grouped_cross_val_predict(_LeakProbe(), X, y, groups, n_splits=5, seed=1)
    np.testing.assert_array_equal(out, 0.0)


def test_group_folds_keep_patients_whole_and_spread_fractures() -> None:
    # 10 fractured single-femur patients, 20 non-fractured patients with two femurs each
    y = np.r_[np.ones(10, int), np.zeros(40, int)]
    groups = np.r_[np.arange(10), np.repeat(np.arange(10, 30), 2)]
    folds = assign_group_folds(y, groups, n_splits=5, seed=3)
    for g in np.unique(groups):
        assert np.unique(folds[groups == g]).size == 1
    np.testing.assert_array_equal(np.bincount(folds, weights=y), [2, 2, 2, 2, 2])
    np.testing.assert_array_equal(np.bincount(folds), [10, 10, 10, 10, 10])
    assert not np.array_equal(folds, assign_group_folds(y, groups, n_splits=5, seed=4))
    np.testing.assert_array_equal(folds, assign_group_folds(y, groups, n_splits=5, seed=3))


def test_grouped_cv_errors() -> None:
    y = np.array([1, 0, 0, 0])
    with pytest.raises(ModelError, match=re.escape("n_splits=5 is larger than the number of "
                                                   "groups (4)")):
        assign_group_folds(y, [1, 2, 3, 4], n_splits=5)
    with pytest.raises(ModelError, match="n_splits must be an integer >= 2, got 1"):
        assign_group_folds(y, [1, 2, 3, 4], n_splits=1)
    with pytest.raises(ModelError, match="groups has 3 entries for 4 femurs"):
        assign_group_folds(y, [1, 2, 3], n_splits=2)
    # the only fracture's fold leaves a training part without fractures
    with pytest.raises(ModelError, match="the training part has only one outcome class"):
        grouped_cross_val_predict(StrengthRiskModel(), [1.0, 2, 3, 4], y, [1, 2, 3, 4], 2)
    with pytest.raises(ModelError, match="X has 3 rows but y has 4"):
        grouped_cross_val_predict(StrengthRiskModel(), [1.0, 2, 3], y, [1, 2, 3, 4], 2)


def test_probability_interval_brackets_and_narrows_with_data() -> None:
    X_small, y_small = _synthetic(80, seed=10)
    X_big, y_big = _synthetic(800, seed=10)
    new = {"failure_load_BW": np.array([3.0, 6.0, 9.0]), "aci_mm": np.array([40.0, 20.0, 0.0])}
    est = StrengthRiskModel(penalty="l2", C=10.0, n_bootstrap=100, seed=1)
    small = clone(est).fit(X_small, y_small).predict_interval(new)
    again = clone(est).fit(X_small, y_small).predict_interval(new)
    big = clone(est).fit(X_big, y_big).predict_interval(new)
    np.testing.assert_array_equal(small.lower, again.lower)
    for r in (small, big):
        assert np.all((0 <= r.lower) & (r.lower <= r.probability))
        assert np.all((r.probability <= r.upper) & (r.upper <= 1))
        assert r.n_bootstrap == 100 and r.n_failed == 0
    assert np.all(big.upper - big.lower < small.upper - small.lower)


def test_failing_bootstrap_leaves_no_interval() -> None:
    x = np.arange(8.0)  # one overlap: most resamples are separated and their refits diverge
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    model = StrengthRiskModel(n_bootstrap=50).fit(x, y)
    assert model.coef_cov_ is None and model.n_failed_ > 25
    with pytest.raises(ModelError, match="refits failed"):
        model.predict_interval([[3.0]])
