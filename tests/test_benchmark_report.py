"""The benchmark harness on hand-made cohort tables with known AUCs and rates."""

from __future__ import annotations

import base64
import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from osteofe.benchmark import BenchmarkError, format_benchmark, run_benchmark
from risk.calibration import load_model
from risk.metrics import (
    auc_ci,
    brier_score,
    delong_test,
    roc_auc,
    sensitivity_specificity,
)

# 24 femurs of 20 patients (P01-P04 with both femurs), 8 fractured. The FE failure load
# separates the outcomes perfectly (every fractured femur is weaker than every intact one);
# Mirels, ACI and CTRA overlap.
FRACTURED = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
LOAD_BW = [2.1, 2.6, 3.0, 3.3, 3.9, 4.2, 1.8, 4.6,
           5.0, 5.5, 6.1, 6.6, 7.0, 7.7, 8.2, 8.8, 9.5, 10.0, 11.0, 12.0, 5.2, 6.3, 9.1, 13.0]
MIRELS = [(3, 3, 3, 3), (3, 2, 3, 3), (3, 3, 2, 2), (2, 3, 3, 2), (3, 1, 3, 2), (2, 2, 2, 2),
          (3, 2, 3, 3), (2, 1, 2, 2),
          (3, 3, 3, 2), (3, 2, 2, 2), (2, 2, 1, 1), (2, 1, 1, 1), (3, 1, 2, 1), (2, 2, 3, 1),
          (3, 1, 1, 1), (2, 1, 2, 1), (3, 3, 3, 3), (2, 1, 1, 2), (2, 2, 2, 1), (3, 2, 1, 1),
          (2, 1, 3, 1), (3, 1, 3, 2), (2, 1, 1, 1), (2, 2, 1, 2)]
ACI: list[float | str] = [45, 38, "", 52, 31, 20, 60, 28,
       33, 12, 0, 5, "", 25, 0, 18, 41, 0, 8, 0, 30, 15, "", 0]
CTRA = [0.55, 0.42, 0.38, 0.61, 0.30, 0.45, 0.70, 0.36,
        0.20, 0.36, 0.05, 0.10, 0.15, 0.33, 0.0, 0.12, 0.50, 0.02, 0.10, 0.0, 0.25, 0.18,
        0.08, 0.01]
Bench = tuple[Path, dict[str, Any]]

PATIENTS = [f"P{i + 1:02d}" for i in range(20)] + ["P01", "P02", "P03", "P04"]
SIDES = ["right"] * 20 + ["left"] * 4


def _write_cohort(path: Path, *, synthetic: bool = False,
                  fractured: list[int] = FRACTURED) -> Path:
    header = ["patient_id", "side", "body_mass_kg", "failure_load_BW", "mirels_site",
              "mirels_pain", "mirels_lesion", "mirels_size", "aci_mm", "ctra_reduction",
              "fractured", "follow_up_months", "case_id"]
    if synthetic:
        header.append("data_origin")
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for i in range(len(PATIENTS)):
            row = [PATIENTS[i], SIDES[i], 70, LOAD_BW[i], *MIRELS[i], ACI[i], CTRA[i],
                   fractured[i], 6 + i % 7, f"c{i:02d}"]
            if synthetic:
                row.append("SYNTHETIC")
            writer.writerow(row)
    return path


def _pairs_auc(y: Any, s: Any) -> float:
    """AUC by counting pairs (independent of risk.metrics): ties count 1/2."""
    pos = [v for v, t in zip(s, y, strict=True) if t == 1]
    neg = [v for v, t in zip(s, y, strict=True) if t == 0]
    wins: float = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    root = tmp_path_factory.mktemp("bench")
    cohort = _write_cohort(root / "cohort.csv")
    out = root / "out"
    summary = run_benchmark(cohort, out, seed=3, n_boot=400, n_splits=4)
    return out, summary


def test_perfectly_separating_fe_strength_has_auc_one(bench: Bench) -> None:
    _, summary = bench
    entry = summary["auc"]["fe_strength"]
    assert entry["auc"] == 1.0
    assert (entry["delong"]["lower"], entry["delong"]["upper"]) == (1.0, 1.0)
    assert entry["bootstrap"]["lower"] == 1.0


def test_aucs_equal_risk_metrics_and_hand_counts(bench: Bench) -> None:
    out, summary = bench
    y = np.array(FRACTURED)
    totals = np.array([sum(m) for m in MIRELS], dtype=float)
    mirels = summary["auc"]["mirels"]
    assert mirels["auc"] == pytest.approx(_pairs_auc(y, totals), abs=1e-12)
    delong = auc_ci(y, totals)
    assert (mirels["delong"]["lower"], mirels["delong"]["upper"]) == pytest.approx(
        (delong.lower, delong.upper), abs=1e-12)
    boot = auc_ci(y, totals, method="bootstrap", n_bootstrap=400, seed=3, groups=PATIENTS)
    assert mirels["bootstrap"]["lower"] == pytest.approx(boot.lower, abs=1e-12)
    # ACI on the 21 femurs where it is known.
    known = np.array([a != "" for a in ACI])
    aci = np.array([math.nan if a == "" else float(a) for a in ACI])
    assert summary["auc"]["aci"]["n"] == 21
    assert summary["auc"]["aci"]["auc"] == pytest.approx(_pairs_auc(y[known], aci[known]))
    # The out-of-fold FE probability written to predictions.csv is what was scored.
    with (out / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    prob = np.array([float(r["fe_probability"]) for r in rows])
    assert [int(r["fractured"]) for r in rows] == FRACTURED
    assert np.all((prob > 0) & (prob < 1))
    assert summary["auc"]["fe_probability"]["auc"] == pytest.approx(roc_auc(y, prob))
    test = next(t for t in summary["delong_tests"]
                if (t["a"], t["b"]) == ("fe_probability", "mirels"))
    direct = delong_test(y, prob, totals)
    assert test["p_value"] == pytest.approx(direct.p_value, rel=1e-9)
    assert test["difference"] == pytest.approx(direct.difference, abs=1e-12)
    assert summary["calibration"]["fe"]["brier"] == pytest.approx(brier_score(y, prob))


def test_rules_match_risk_metrics_and_name_published_points(bench: Bench) -> None:
    _, summary = bench
    y = np.array(FRACTURED)
    totals = np.array([sum(m) for m in MIRELS], dtype=float)
    for key, threshold in (("mirels_ge9", 9), ("mirels_ge8", 8)):
        rule = summary["rules"][key]
        direct = sensitivity_specificity(y, totals, threshold)
        assert (rule["tp"], rule["fn"], rule["tn"], rule["fp"]) == (
            direct.tp, direct.fn, direct.tn, direct.fp)
        assert rule["sensitivity"]["lower"] == pytest.approx(direct.sensitivity.lower)
        assert rule["specificity"]["upper"] == pytest.approx(direct.specificity.upper)
    assert [p["key"] for p in summary["rules"]["mirels_ge9"]["published"]] == [
        "damron2003_mirels", "sternheim2020_mirels"]
    # CTRA > 35 % is strict: the femur at exactly 0.36 counts, none sits at 0.35 itself.
    ctra = summary["rules"]["ctra_gt35"]
    expected_tp = sum(1 for c, f in zip(CTRA, FRACTURED, strict=True) if c > 0.35 and f)
    expected_fp = sum(1 for c, f in zip(CTRA, FRACTURED, strict=True) if c > 0.35 and not f)
    assert (ctra["tp"], ctra["fp"]) == (expected_tp, expected_fp)
    aci = summary["rules"]["aci_ge30"]
    assert aci["n"] == 21 and aci["published"][0]["key"] == "vanderwal2020_aci"
    # Matched sensitivity: the FE threshold reaches at least Mirels >= 9's sensitivity.
    matched = summary["rules"]["fe_matched"]
    assert matched["sensitivity"]["value"] >= summary["rules"]["mirels_ge9"]["sensitivity"][
        "value"]
    assert summary["rules"]["fe_youden"]["note"].endswith("optimistic")


def test_every_output_is_written(bench: Bench) -> None:
    out, summary = bench
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["summary.json", "summary.md", "summary.html", "roc.png",
                            "calibration.png", "decision_curve.png", "economics.png",
                            "predictions.csv", "fe_model.json"])  # no died column: no CIF
    assert not [p for p in out.parent.iterdir() if "staging" in p.name]
    for name in ("roc.png", "calibration.png", "decision_curve.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    saved = json.loads((out / "summary.json").read_text())
    assert saved["auc"]["mirels"]["auc"] == summary["auc"]["mirels"]["auc"]
    assert saved["synthetic"] is False
    page = (out / "summary.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "src=\"http" not in page and "roc.png" not in page.split("<figure>")[0]
    embedded = page.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(embedded) == (out / "roc.png").read_bytes()
    md = (out / "summary.md").read_text()
    assert "![" in md and "(roc.png)" in md and "Mirels >= 9" in md
    model = load_model(out / "fe_model.json")
    assert model.coef_[0] < 0  # weaker femur, higher risk
    text = format_benchmark(summary)
    assert "AUC FE failure load (-BW)" in text and "Mirels >= 9" in text


def test_decision_curve_treat_all_and_rules(bench: Bench) -> None:
    _, summary = bench
    dc = summary["decision_curve"]
    prevalence = 8 / 24
    at10 = dc["at"]["0.10"]
    assert at10["treat_all"] == pytest.approx(prevalence - (1 - prevalence) * 0.1 / 0.9)
    assert at10["treat_none"] == 0.0
    rule = summary["rules"]["mirels_ge9"]
    assert at10["mirels_ge9"] == pytest.approx(rule["tp"] / 24 - rule["fp"] / 24 * 0.1 / 0.9)
    assert "aci_ge30" not in dc["net_benefit"]  # ACI is unknown for three femurs


def test_synthetic_cohorts_are_labelled_in_every_output(tmp_path: Path) -> None:
    cohort = _write_cohort(tmp_path / "syn.csv", synthetic=True)
    summary = run_benchmark(cohort, tmp_path / "out", n_boot=100)
    assert summary["synthetic"] is True
    for name in ("summary.md", "summary.html", "summary.json", "predictions.csv"):
        assert "SYNTHETIC" in (tmp_path / "out" / name).read_text(), name
    assert "SYNTHETIC" in format_benchmark(summary)


def test_too_few_fractured_patients_is_refused(tmp_path: Path) -> None:
    only_one = [1] + [0] * 23
    cohort = _write_cohort(tmp_path / "c.csv", fractured=only_one)
    with pytest.raises(BenchmarkError, match="1 patient\\(s\\) with a fracture"):
        run_benchmark(cohort, tmp_path / "out", n_boot=100)
    assert not (tmp_path / "out").exists()
