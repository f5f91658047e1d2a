"""The decision layer against scikit-learn / lifelines references and closed forms.

Federated == pooled, cluster bootstrap wider than the naive one with bilateral cases,
Aalen-Johansen == 1 - Kaplan-Meier without deaths, exact contributions, clinical refusal,
economics by hand, and the benchmark with competing risks.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from osteofe.cli import main
from risk.calibration import (
    StrengthRiskModel,
    clinical_check,
    clinical_prediction,
    load_model,
    model_from_json,
)
from risk.clustered import (
    auc_replicates,
    clustered_auc,
    clustered_auc_difference,
    clustered_rates,
    group_codes,
    resample_weights,
)
from risk.competing import (
    aalen_johansen_replicates,
    cumulative_incidence,
    event_codes,
    fit_cause_specific,
    horizon_risk,
)
from risk.economics import EconomicInputs, evaluate_strategies
from risk.errors import ModelError
from risk.federated import federated_fit


def _data(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.uniform(2.0, 10.0, n) + shift, rng.uniform(0.0, 60.0, n)])
    y = (rng.random(n) < expit(4.0 - X[:, 0] + 0.05 * X[:, 1])).astype(int)
    return X, y


# ---------------------------------------------------------------------------------------------
# scikit-learn references and the federated fit.
# ---------------------------------------------------------------------------------------------


def test_model_equals_sklearn_reference_and_auc() -> None:
    X, y = _data(300, seed=1)
    model = StrengthRiskModel(n_bootstrap=0).fit(X, y)
    # a plain LogisticRegression on the raw features, lbfgs to a tight tolerance
    ref = LogisticRegression(C=np.inf, solver="lbfgs", tol=1e-12, max_iter=10_000).fit(X, y)
    np.testing.assert_allclose(model.coef_, ref.coef_[0], rtol=0, atol=1e-6)
    assert model.intercept_ == pytest.approx(ref.intercept_[0], abs=1e-6)
    assert model.training_summary_.auc == roc_auc_score(y, ref.decision_function(X))


def test_federated_newton_equals_pooled_fit() -> None:
    parts = [_data(n, seed, shift) for n, seed, shift in ((60, 2, 0.0), (90, 3, 1.0),
                                                           (45, 4, -0.5))]
    centres = [(X, y, [f"{c}-{i // 2}" for i in range(len(y))])
               for c, (X, y) in enumerate(parts)]
    X = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    groups = [g for c in centres for g in c[2]]
    names = ["failure_load_BW", "aci_mm"]
    for C, penalty in ((math.inf, "none"), (0.5, "l2")):
        fed = federated_fit(centres, names, C=C)
        pooled = StrengthRiskModel(penalty=penalty, C=1.0 if math.isinf(C) else C,
                                   n_bootstrap=0).fit(dict(zip(names, X.T, strict=True)), y)
        np.testing.assert_allclose(fed.coef_, pooled.coef_, rtol=0, atol=1e-8)
        assert fed.intercept_ == pytest.approx(pooled.intercept_, abs=1e-8)
    # the sandwich covariance is of the size of the patient-clustered bootstrap's (the
    # bootstrap of a logistic fit on ~200 femurs runs wider: its resamples include nearly
    # separated ones)
    boot = StrengthRiskModel(n_bootstrap=150, seed=1).fit(X, y, groups=groups)
    ratio = np.sqrt(np.diag(fed.coef_cov_) / np.diag(boot.coef_cov_))
    assert np.all((ratio > 0.5) & (ratio < 1.2))
    again = model_from_json(fed.to_json())
    assert again.training_summary_.auc is None and again.covariance_method_.startswith("federated")


def test_federated_cli_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rows = {"a": [], "b": []}
    for centre, n in (("a", 50), ("b", 70)):
        for i in range(n):
            bw = float(np.round(rng.uniform(2, 10), 3))
            rows[centre].append([f"{centre}{i // 2}", "left" if i % 2 else "right", 70, bw,
                                 int(rng.random() < expit(3 - 0.8 * bw)), 12])
    for centre, body in rows.items():
        with (tmp_path / f"{centre}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["patient_id", "side", "body_mass_kg", "failure_load_BW",
                             "fractured", "follow_up_months"])
            writer.writerows(body)
    t = str(tmp_path)
    for c in "ab":
        assert main(["-q", "federated", "export", f"{t}/{c}.csv", "--out", f"{t}/{c}.json"]) == 0
    assert main(["-q", "federated", "combine", f"{t}/a.json", f"{t}/b.json",
                 "--out", f"{t}/state.json"]) == 0
    for _ in range(30):
        for c in "ab":
            assert main(["-q", "federated", "export", f"{t}/{c}.csv", "--state",
                         f"{t}/state.json", "--out", f"{t}/{c}.json"]) == 0
        assert main(["-q", "federated", "combine", f"{t}/a.json", f"{t}/b.json", "--state",
                     f"{t}/state.json", "--out", f"{t}/state.json", "--model",
                     f"{t}/model.json"]) == 0
        if (tmp_path / "model.json").exists():
            break
    fed = load_model(tmp_path / "model.json")
    bw = np.array([r[3] for c in "ab" for r in rows[c]])
    y = np.array([r[4] for c in "ab" for r in rows[c]])
    pooled = StrengthRiskModel(n_bootstrap=0).fit({"failure_load_BW": bw}, y)
    np.testing.assert_allclose(fed.coef_, pooled.coef_, atol=1e-8)
    summary = json.loads((tmp_path / "a.json").read_text())
    assert set(summary) >= {"gradient", "hessian", "meat"} and "patient_id" not in str(summary)


# ---------------------------------------------------------------------------------------------
# Patient-clustered inference.
# ---------------------------------------------------------------------------------------------


def test_weighted_replicates_equal_sklearn_on_resampled_data() -> None:
    rng = np.random.default_rng(6)
    y = np.r_[np.ones(8, int), np.zeros(12, int)]
    s = np.round(rng.normal(size=20) + y, 1)  # rounded: ties
    codes = group_codes(np.arange(20) // 2, 20)
    w = resample_weights(codes, 5, seed=3)
    reps = auc_replicates(y, s, w)
    for b in range(5):
        idx = np.repeat(np.arange(20), w[b].astype(int))
        if np.unique(y[idx]).size == 2:
            assert reps[b] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)


def test_cluster_bootstrap_is_wider_than_naive_with_bilateral_cases() -> None:
    # 40 patients with both femurs: the same outcome and nearly the same score per patient
    rng = np.random.default_rng(7)
    patient_y = (rng.random(40) < 0.35).astype(int)
    patient_s = rng.normal(size=40) + 1.0 * patient_y
    y = np.repeat(patient_y, 2)
    s = np.repeat(patient_s, 2) + rng.normal(scale=0.05, size=80)
    mirels = np.repeat(rng.integers(6, 12, 40), 2).astype(float) + 0.5 * y
    groups = np.repeat(np.arange(40), 2)
    naive = clustered_auc(y, s, None, n_bootstrap=2000, seed=1)
    clustered = clustered_auc(y, s, groups, n_bootstrap=2000, seed=1)
    assert clustered.auc == naive.auc == pytest.approx(roc_auc_score(y, s))
    assert clustered.n_clusters == 40 and naive.n_clusters == 80
    # duplicated patients: the honest interval is about sqrt(2) wider
    assert clustered.upper - clustered.lower > 1.2 * (naive.upper - naive.lower)
    d_naive = clustered_auc_difference(y, s, mirels, None, n_bootstrap=2000, seed=1)
    d_clust = clustered_auc_difference(y, s, mirels, groups, n_bootstrap=2000, seed=1)
    assert d_clust.difference == pytest.approx(roc_auc_score(y, s) - roc_auc_score(y, mirels))
    assert d_clust.se > 1.2 * d_naive.se
    rule = (s > 0.5).astype(int)
    r_naive = clustered_rates(y, rule, None, n_bootstrap=2000, seed=1)
    r_clust = clustered_rates(y, rule, groups, n_bootstrap=2000, seed=1)
    assert r_clust.sensitivity == pytest.approx(rule[y == 1].mean())
    assert r_clust.specificity == pytest.approx(1 - rule[y == 0].mean())
    width = [r.sensitivity_ci[1] - r.sensitivity_ci[0] for r in (r_naive, r_clust)]
    assert width[1] > 1.2 * width[0]


# ---------------------------------------------------------------------------------------------
# Competing risks (lifelines).
# ---------------------------------------------------------------------------------------------


def _competing_cohort(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_fx = rng.exponential(1 / (0.05 * np.exp(0.8 * x)))
    t_d = rng.exponential(1 / 0.08, n)
    t_c = rng.uniform(3, 24, n)
    t = np.round(np.minimum.reduce([t_fx, t_d, t_c]), 3)
    fx = (t_fx <= np.minimum(t_d, t_c)).astype(int)
    died = ((t_d < t_fx) & (t_d <= t_c)).astype(int)
    return x, *event_codes(fx, died, t)


def test_aalen_johansen_without_deaths_is_one_minus_kaplan_meier() -> None:
    from lifelines import KaplanMeierFitter

    _, t, cause = _competing_cohort(200, seed=8)
    cause = np.where(cause == 2, 0, cause)  # deaths censored: no competing event
    t = t + np.arange(t.size) * 1e-6  # distinct times: no jitter in either estimator
    (fx, _death) = cumulative_incidence(t, cause)
    km = KaplanMeierFitter().fit(t, cause == 1)
    for h in (3.0, 6.0):
        assert fx.at_horizons[h][0] == pytest.approx(
            1.0 - float(km.survival_function_at_times(h).iloc[0]), abs=1e-9)


def test_competing_risks_and_horizon_risk() -> None:
    x, t, cause = _competing_cohort(300, seed=0)
    curves = cumulative_incidence(t, cause, np.where(x > 0, "high", "low"))
    by = {(c.group, c.cause): c for c in curves}
    # fracture + death cumulative incidence never exceeds 1; the high group fractures more
    for g in ("high", "low"):
        assert by[(g, "fracture")].at_horizons[6.0][0] + by[(g, "death")].at_horizons[6.0][0] < 1
    assert by[("high", "fracture")].at_horizons[6.0][0] > by[("low", "fracture")].at_horizons[
        6.0][0]
    model = fit_cause_specific(t, cause, {"x": x}, groups=np.arange(300) // 2)
    assert model.fracture_coef[0] == pytest.approx(0.8, abs=0.3)  # the simulated log HR
    assert model.death_coef[0] == pytest.approx(0.0, abs=0.3)
    risk = model.cumulative_incidence({"x": [-1.0, 0.0, 1.0]})
    extreme = model.cumulative_incidence({"x": [8.0]})  # huge hazard jumps: still <= 1 - S
    assert 0.9 < extreme[0, 1] <= 1.0
    np.testing.assert_allclose(horizon_risk(model.to_dict(), [[-1.0], [0.0], [1.0]]), risk,
                               atol=1e-12)
    assert np.all(np.diff(risk, axis=0) > 0) and np.all(risk[:, 1] > risk[:, 0])
    # closed form at x = 0: constant hazards 0.05 (fracture) and 0.08 (death)
    truth = 0.05 / 0.13 * (1 - np.exp(-0.13 * 6.0))
    assert risk[1, 1] == pytest.approx(truth, abs=0.05)


# ---------------------------------------------------------------------------------------------
# Contributions, intervals, clinical refusal.
# ---------------------------------------------------------------------------------------------


def test_contributions_are_exact_and_relative_to_the_training_mean() -> None:
    X, y = _data(200, seed=9)
    model = StrengthRiskModel(n_bootstrap=50).fit(X, y)
    parts = model.contributions(X[:5])
    np.testing.assert_allclose(parts.base_log_odds + parts.contributions.sum(axis=1),
                               model.decision_function(X[:5]), atol=1e-12)
    at_mean = model.contributions(X.mean(axis=0)[None, :])
    np.testing.assert_allclose(at_mean.contributions, 0.0, atol=1e-12)
    assert at_mean.log_odds[0] == pytest.approx(parts.base_log_odds)


def test_clinical_refusal_of_synthetic_and_small_models() -> None:
    X, y = _data(200, seed=10)
    cols = {"failure_load_BW": X[:, 0], "aci_mm": X[:, 1]}
    good = StrengthRiskModel(n_bootstrap=50).fit(cols, y, origin="measured")
    assert clinical_check(good) == ()
    out = clinical_prediction(good, {"failure_load_BW": 3.0, "aci_mm": 20.0})
    assert out["lower"] < out["probability"] < out["upper"] and out["warnings"] == []
    synthetic = StrengthRiskModel(n_bootstrap=50).fit(cols, y, origin="synthetic")
    with pytest.raises(ModelError, match="SYNTHETIC cohort"):
        clinical_check(synthetic)
    # the case: 8 femurs, 2 fractures
    tiny = StrengthRiskModel(penalty="l2", n_bootstrap=50).fit(
        [1.0, 2, 3, 4, 5, 6, 7, 8], [1, 0, 1, 0, 0, 0, 0, 0], origin="synthetic")
    with pytest.raises(ModelError, match=r"2 fractures for 1 feature\(s\) \(2.0 events per "
                                         r"feature, fewer than 10\)") as info:
        clinical_check(tiny)
    assert "--force-risk-model" in info.value.hint
    forced = clinical_prediction(tiny, {"x0": 2.0}, force=True)
    assert all(w.startswith("RISK MODEL NOT VALIDATED") for w in forced["warnings"])
    assert len(forced["warnings"]) == 2


def test_old_format_model_is_refused_with_a_refit_hint() -> None:
    doc = {"format": "osteofe-risk-model", "format_version": 1, "model_kind":
           "StrengthRiskModel", "params": {}, "feature_names": ["x0"], "coef": [1.0],
           "intercept": 0.0, "n_iter": 3, "training": {"n": 8, "events": 2, "auc": 0.9}}
    with pytest.raises(ModelError, match="format_version 1") as info:
        model_from_json(json.dumps(doc))
    assert "osteofe benchmark" in info.value.hint


# ---------------------------------------------------------------------------------------------
# Health economics.
# ---------------------------------------------------------------------------------------------


def test_economics_hand_case() -> None:
    e = EconomicInputs(cost_prophylactic_fixation=10.0, cost_fracture_treatment=30.0,
                       fixation_effectiveness=1.0, qaly_loss_fixation=0.01,
                       qaly_loss_fracture=0.1, baseline_utility=0.5, horizon_months=12.0,
                       willingness_to_pay=100.0)
    y = np.array([1, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.2, 0.1])
    out = evaluate_strategies(y, p, np.array([10, 10, 6, 5]), e, thresholds=[0.5, 0.8])
    names = [s.name for s in out.strategies]
    assert names[:2] == ["fix none", "fix if Mirels >= 9"]
    none, mirels, best, fix_all = out.strategies
    assert none.cost == pytest.approx(100 * 30 / 4) and none.qalys == pytest.approx(
        100 * (0.5 - 0.1 / 4))
    assert mirels.cost == pytest.approx(100 * 20 / 4)  # two fixations, no fracture
    # threshold 0.8 fixes only the fracture: cost 10/4, QALYs 0.5 - 0.01/4 per patient
    assert out.best_threshold == 0.8 and best.cost == pytest.approx(250.0)
    assert best.nmb == pytest.approx(100 * (100 * (0.5 - 0.01 / 4) - 10 / 4))
    assert fix_all.fixed == 100.0
    with pytest.raises(Exception, match="unknown economic input"):
        EconomicInputs.from_mapping({"cost_of_coffee": 3.0})


def _width(curve: object, h: float = 6.0) -> float:
    _, lo, hi = curve.at_horizons[h]  # type: ignore[attr-defined]
    return float(hi - lo)


def test_aalen_johansen_point_and_unit_weights_equal_lifelines() -> None:
    import warnings

    from lifelines import AalenJohansenFitter

    _, t, cause = _competing_cohort(240, seed=3)  # times rounded to 1e-3: tied events
    fx, death = cumulative_incidence(t, cause, n_bootstrap=200)
    for curve, code in ((fx, 1), (death, 2)):
        ajf = AalenJohansenFitter(seed=0, jitter_level=1e-4, calculate_variance=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ajf.fit(t, cause, event_of_interest=code)
        ref = ajf.cumulative_density_.iloc[:, 0]
        for h in (3.0, 6.0):
            expected = float(ref[ref.index <= h].iloc[-1])
            assert curve.at_horizons[h][0] == pytest.approx(expected, abs=1e-12)
            assert curve.at_horizons[h][1] <= expected <= curve.at_horizons[h][2]
    # The replicate estimator with unit weights is lifelines' estimator on distinct times.
    td = t + np.arange(t.size) * 1e-7
    ajf = AalenJohansenFitter(calculate_variance=False).fit(td, cause, event_of_interest=1)
    grid = ajf.cumulative_density_.index.to_numpy(float)
    ones = aalen_johansen_replicates(td, cause, 1, np.ones((1, td.size)), grid)[0]
    assert np.max(np.abs(ones - ajf.cumulative_density_.iloc[:, 0].to_numpy())) < 1e-12


def test_clustered_aalen_johansen_wider_with_bilateral_cases() -> None:
    _, t1, c1 = _competing_cohort(150, seed=9)
    t, cause = np.repeat(t1, 2), np.repeat(c1, 2)  # both femurs: same time, same outcome
    patients = np.repeat([f"P{i:03d}" for i in range(150)], 2)
    clustered = cumulative_incidence(t, cause, clusters=patients.tolist(), n_bootstrap=1000)
    naive = cumulative_incidence(t, cause, n_bootstrap=1000)
    for cl, nv in zip(clustered, naive, strict=True):
        assert cl.at_horizons[6.0][0] == nv.at_horizons[6.0][0]
        assert cl.n_clusters == 150 and nv.n_clusters == 300
        # perfect within-patient correlation: the true SE is sqrt(2) times the naive one
        assert _width(cl) > 1.25 * _width(nv)
        assert _width(cl) == pytest.approx(math.sqrt(2.0) * _width(nv), rel=0.2)


def test_clustered_aalen_johansen_equals_naive_with_one_femur_per_patient() -> None:
    _, t, cause = _competing_cohort(300, seed=6)
    ids = [f"P{i:03d}" for i in np.random.default_rng(0).permutation(300)]
    clustered = cumulative_incidence(t, cause, clusters=ids, n_bootstrap=2000, seed=1)
    naive = cumulative_incidence(t, cause, n_bootstrap=2000, seed=2)
    for cl, nv in zip(clustered, naive, strict=True):
        for h in (3.0, 6.0):  # Monte-Carlo error of a 2000-replicate percentile width ~4 %
            assert _width(cl, h) == pytest.approx(_width(nv, h), rel=0.15)


def test_calibration_bins_cluster_bootstrap_wider_than_wilson_with_bilateral_cases() -> None:
    from osteofe.benchmark import _calibration_bins

    rng = np.random.default_rng(4)
    p1 = rng.uniform(0.05, 0.9, 150)
    y1 = (rng.random(150) < p1).astype(np.int64)
    prob, y = np.repeat(p1, 2), np.repeat(y1, 2)
    patients = np.repeat(np.arange(150), 2)
    clustered = _calibration_bins(y, prob, 0.95, patients, 1000, 0)
    naive = _calibration_bins(y, prob, 0.95, np.arange(300), 1000, 0)
    width = {k: np.subtract(b["upper"], b["lower"]) for k, b in
             (("cl", clustered), ("nv", naive))}
    wilson = np.subtract(clustered["wilson_upper"], clustered["wilson_lower"])
    assert np.allclose(width["nv"], wilson, rtol=0.25)  # femur bootstrap ~ Wilson
    assert np.all(width["cl"] > 1.2 * width["nv"])
    assert np.all(np.array(clustered["lower"]) <= np.array(clustered["observed"]))
    assert np.all(np.array(clustered["observed"]) <= np.array(clustered["upper"]))


# ---------------------------------------------------------------------------------------------
# The benchmark with deaths, and one patient's prediction from its model.
# ---------------------------------------------------------------------------------------------


def test_benchmark_with_competing_risks_and_patient_prediction(tmp_path: Path) -> None:
    from osteofe.benchmark import format_benchmark, run_benchmark

    rng = np.random.default_rng(11)
    n_pat = 60
    path = tmp_path / "cohort.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["patient_id", "side", "body_mass_kg", "failure_load_BW",
                         "mirels_site", "mirels_pain", "mirels_lesion", "mirels_size",
                         "fractured", "died", "follow_up_months", "data_origin"])
        for i in range(n_pat):
            for side in (("right", "left") if i % 3 == 0 else ("right",)):
                bw = float(np.round(rng.uniform(2.0, 10.0), 2))
                t_fx = rng.exponential(1 / (0.4 * np.exp(-0.6 * (bw - 6))))
                t_d = rng.exponential(10.0)
                t_c = rng.uniform(3, 18)
                t = round(float(min(t_fx, t_d, t_c)), 3)
                writer.writerow([f"S{i:03d}", side, 70, bw, 3, 2, 3, int(rng.integers(1, 4)),
                                 int(t_fx <= min(t_d, t_c)),
                                 int(t_d < t_fx and t_d <= t_c), t, "SYNTHETIC"])
    summary = run_benchmark(path, tmp_path / "out", n_boot=200)
    cr = summary["competing_risks"]
    assert cr["n_deaths"] > 0 and "aalen_johansen" in cr and "fracture_log_hr" in cr[
        "cause_specific"]
    fe_vs_mirels = next(t for t in summary["delong_tests"]
                        if (t["a"], t["b"]) == ("fe_probability", "mirels"))
    assert fe_vs_mirels["clustered"]["n_patients"] == n_pat
    text = format_benchmark(summary)
    assert "synthetic, not evidence" in text and "CIF fracture" in text and "fix none" in text
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"cumulative_incidence.png", "economics.png"} <= names
    assert "SYNTHETIC COHORT, NOT EVIDENCE" in (tmp_path / "out" / "summary.md").read_text()
    model = load_model(tmp_path / "out" / "fe_model.json")
    assert model.training_summary_.origin == "synthetic"
    with pytest.raises(ModelError, match="SYNTHETIC"):
        clinical_check(model)
    out = clinical_prediction(model, {"failure_load_BW": 3.0}, force=True)
    assert out["lower"] < out["probability"] < out["upper"]
    risk3, risk6 = out["horizon_risk"]["fracture_before_death"]
    assert 0 < risk3 < risk6 < 1
    (term,) = out["contributions"]["terms"]
    assert term["feature"] == "failure_load_BW" and term["log_odds"] > 0  # weaker than mean


def test_patient_report_shows_interval_horizon_risk_and_contributions() -> None:
    from osteofe.report import collect_report_data, render_html

    x, t, cause = _competing_cohort(300, seed=12)
    bw = 6.0 - 1.5 * x  # weaker femur <-> higher fracture hazard
    fractured = (cause == 1).astype(int)
    model = StrengthRiskModel(n_bootstrap=100).fit({"failure_load_BW": bw}, fractured,
                                                   groups=np.arange(300) // 2,
                                                   origin="measured")
    log_odds = model.decision_function({"failure_load_BW": bw})
    cs = fit_cause_specific(t, cause, {"fe_log_odds": log_odds})
    model.competing_risks_ = json.loads(json.dumps(cs.to_dict()))
    model = model_from_json(model.to_json())  # through the JSON, as the pipeline reads it
    doc = clinical_prediction(model, {"failure_load_BW": 3.0})
    result = {"case_id": "p1", "body_mass_kg": 70.0,
              "cases": [{"load_case": "stance", "failure_load_N": 2100.0,
                         "applied_load_N": 2000.0, "failure_mode": "tension",
                         "critical_region": "neck", "critical_point_mm": [0.0, 0.0, 0.0]}],
              "fracture_probability": doc, "warnings": []}
    html = render_html(collect_report_data(result))
    p, lo, hi = (round(100 * doc[k]) for k in ("probability", "lower", "upper"))
    assert f"{p} % (95 % CI {lo}-{hi} %)" in html
    r3, r6 = (round(100 * r) for r in doc["horizon_risk"]["fracture_before_death"])
    assert f"{r3} % within 3 months, {r6} % within 6 months" in html
    assert "failure_load_BW 3 (training mean" in html and "log-odds" in html


def test_insilico_truth_is_another_model_family_with_deaths() -> None:
    from dataclasses import replace

    from meshing.phantom import LesionParams, PhantomParams, make_phantom
    from osteofe.config import Config
    from osteofe.insilico import (
        InsilicoOptions,
        OutcomeDraws,
        _segmentation_error,
        draw_outcome,
        sample_patients,
    )

    truth, predictors = InsilicoOptions().truth_config(), Config()
    assert truth.material.law != predictors.material.law
    assert (truth.failure.tension_limit, truth.failure.compression_limit) != (
        predictors.failure.tension_limit, predictors.failure.compression_limit)
    # death at month 2 ends follow-up before a stumble at month 7 could fracture the femur
    draws = OutcomeDraws(12.0, 0.0, 0.0, 0.5, (7.0,), (0.0,), (), (), death_month=2.0)
    out = draw_outcome(6.0 * 70 * 9.81, None, 70.0, draws)
    assert (out.fractured, out.died, out.follow_up_months) == (False, True, 2.0)
    assert draw_outcome(6.0 * 70 * 9.81, None, 70.0, replace(draws, death_month=9.0)).fractured
    deaths = [p.outcome.death_month for p in sample_patients(400, 3)]
    assert np.median(deaths) == pytest.approx(math.log(2) / 0.06, rel=0.15)
    params = PhantomParams(voxel_size_mm=1.5, soft_tissue_mm=3.0, distal_cut_mm=150.0)
    phantom = make_phantom(params, LesionParams(site="calcar", radius_mm=8.0))
    shifted = {s for seed in range(12) for s in [_segmentation_error(phantom, seed)[1]]}
    assert shifted == {-1, 0, 1}
    for seed in range(12):
        noisy, shift = _segmentation_error(phantom, seed)
        change = int((noisy.labels.labels > 0).sum()) - int((phantom.labels.labels > 0).sum())
        assert np.sign(change) == shift


def test_benchmark_cli_reads_an_economics_table(tmp_path: Path) -> None:
    from osteofe.benchmark import read_economics

    path = tmp_path / "costs.toml"
    path.write_text("[economics]\ncost_prophylactic_fixation = 15000.0\ncurrency = \"EUR\"\n")
    table = read_economics(path)
    assert table == {"cost_prophylactic_fixation": 15000.0, "currency": "EUR"}
    inputs = EconomicInputs.from_mapping(table)
    assert inputs.cost_prophylactic_fixation == 15000.0 and inputs.currency == "EUR"
    assert inputs.cost_fracture_treatment == EconomicInputs().cost_fracture_treatment
    (tmp_path / "bad.toml").write_text("cost = [")
    with pytest.raises(Exception, match="cannot read the economics table"):
        read_economics(tmp_path / "bad.toml")
