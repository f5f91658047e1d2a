"""The decision layer's statistics on simulated data (no FE): exactness and interval widths.

Usage: .venv/bin/python benchmarks/bench_decision.py [--seed 0]

Measures (writes benchmarks/results/decision_layer.json):

1. federated Newton vs the pooled scikit-learn pipeline: max |coefficient difference| for
   3 centres, unpenalised and L2, and the Newton iterations;
2. patient-clustered vs naive (femur) bootstrap: 95 % interval widths of an AUC and of an
   AUC difference on a cohort of 60 patients with both femurs (scores nearly equal within a
   patient), 2000 replicates;
3. wall time of one StrengthRiskModel fit with its 100-refit cluster bootstrap (n = 200),
   of the cluster bootstrap of an AUC (2000 replicates) and of the competing-risk fits.

Simulated data only; timings are wall-clock on a shared machine (other jobs' load inflates
them).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import expit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save

from risk.calibration import StrengthRiskModel
from risk.clustered import clustered_auc, clustered_auc_difference
from risk.competing import cumulative_incidence, event_codes, fit_cause_specific
from risk.federated import federated_fit


def _centre(n: int, rng: np.random.Generator, shift: float) -> tuple[np.ndarray, np.ndarray]:
    X = np.column_stack([rng.uniform(2.0, 10.0, n) + shift, rng.uniform(0.0, 60.0, n)])
    y = (rng.random(n) < expit(4.0 - X[:, 0] + 0.05 * X[:, 1])).astype(int)
    return X, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    out: dict[str, object] = {"seed": args.seed, "data": "simulated"}

    parts = [_centre(n, rng, s) for n, s in ((60, 0.0), (90, 1.0), (45, -0.5))]
    centres = [(X, y, [f"{c}-{i // 2}" for i in range(len(y))]) for c, (X, y) in
               enumerate(parts)]
    X = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    fed_rows = {}
    for C, penalty in ((math.inf, "none"), (0.5, "l2")):
        fed = federated_fit(centres, ["bw", "aci"], C=C)
        pooled = StrengthRiskModel(penalty=penalty, C=1.0 if math.isinf(C) else C,
                                   n_bootstrap=0).fit({"bw": X[:, 0], "aci": X[:, 1]}, y)
        fed_rows[penalty] = {
            "max_abs_coef_diff": float(np.max(np.abs(fed.coef_ - pooled.coef_))),
            "abs_intercept_diff": abs(fed.intercept_ - pooled.intercept_),
            "newton_iterations": fed.n_iter_, "n": int(y.size), "events": int(y.sum())}
    out["federated_vs_pooled"] = fed_rows

    pat_y = (rng.random(60) < 0.35).astype(int)
    pat_s = rng.normal(size=60) + pat_y
    yy = np.repeat(pat_y, 2)
    s = np.repeat(pat_s, 2) + rng.normal(scale=0.05, size=120)
    other = np.repeat(rng.normal(size=60) + 0.5 * pat_y, 2)
    groups = np.repeat(np.arange(60), 2)
    widths = {}
    for name, g in (("naive_femur_bootstrap", None), ("patient_clustered_bootstrap", groups)):
        a = clustered_auc(yy, s, g, n_bootstrap=2000, seed=1)
        d = clustered_auc_difference(yy, s, other, g, n_bootstrap=2000, seed=1)
        widths[name] = {"auc": a.auc, "auc_ci": [a.lower, a.upper],
                        "auc_ci_width": a.upper - a.lower, "difference": d.difference,
                        "difference_ci": [d.lower, d.upper],
                        "difference_ci_width": d.upper - d.lower}
    widths["width_ratio_auc"] = (widths["patient_clustered_bootstrap"]["auc_ci_width"]
                                 / widths["naive_femur_bootstrap"]["auc_ci_width"])
    out["bilateral_cohort_60_patients"] = widths

    timings = {}
    Xb, yb = _centre(200, rng, 0.0)
    start = time.perf_counter()
    StrengthRiskModel().fit({"bw": Xb[:, 0], "aci": Xb[:, 1]}, yb, groups=np.arange(200) // 2)
    timings["fit_with_100_cluster_bootstrap_refits_s"] = time.perf_counter() - start
    start = time.perf_counter()
    clustered_auc(yy, s, groups, n_bootstrap=2000, seed=2)
    timings["cluster_bootstrap_auc_2000_s"] = time.perf_counter() - start
    x = rng.normal(size=300)
    t_fx = rng.exponential(1 / (0.05 * np.exp(0.8 * x)))
    t_d = rng.exponential(1 / 0.08, 300)
    t_c = rng.uniform(3, 24, 300)
    t = np.minimum.reduce([t_fx, t_d, t_c])
    tt, cause = event_codes((t_fx <= np.minimum(t_d, t_c)).astype(int),
                            ((t_d < t_fx) & (t_d <= t_c)).astype(int), t)
    start = time.perf_counter()
    cumulative_incidence(tt, cause, np.where(x > 0, "high", "low").tolist())
    cs = fit_cause_specific(tt, cause, {"x": x}, groups=(np.arange(300) // 2).tolist())
    timings["aalen_johansen_and_cause_specific_cox_300_s"] = time.perf_counter() - start
    risk = cs.cumulative_incidence({"x": [0.0]})[0]
    out["competing_risks_300"] = {
        "fracture_log_hr": float(cs.fracture_coef[0]), "simulated_log_hr": 0.8,
        "cif_fracture_6m_at_x0": float(risk[1]),
        "closed_form_6m_at_x0": 0.05 / 0.13 * (1 - math.exp(-0.13 * 6.0))}
    out["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    path = save("decision_layer", out)
    for key, value in out.items():
        print(f"{key}: {value}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
