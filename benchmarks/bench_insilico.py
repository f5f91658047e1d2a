"""SYNTHETIC in-silico benchmark: FE-based fracture probability vs Mirels on virtual patients.

Usage: .venv/bin/python benchmarks/bench_insilico.py [--n 200] [--seed 0] [--workers 2]
       [--work DIR] [--predictor-mesh 6] [--n-boot 2000]

Steps, each timed (wall-clock, this machine):

1. ``osteofe.insilico.generate_cohort``: n virtual patients (phantom geometry, density, body
   mass and lesion drawn at random), a clinical CT (1.5 mm voxels, 20 HU noise) and a
   noise-free reference CT (1.2 mm) each; the reference FE model (5 mm mesh, stance and
   sideways fall) on the reference CT; outcomes from the reference strengths x lognormal
   model error and simulated loads (habitual, stumbles, falls) - independent of the
   predictors by construction.
2. ``osteofe.cohort.run_cohort``: the predictor FE model (stance only, ``--predictor-mesh``
   mm elements) on the clinical CTs, in ``--workers`` processes.
3. ``osteofe.benchmark.run_benchmark``: out-of-fold FE probability, Mirels, ACI and CTRA:
   AUCs with DeLong and patient-clustered bootstrap CIs, FE vs Mirels (DeLong and clustered
   difference), sensitivity/specificity at the standard thresholds next to the published
   operating points, cumulative incidence of fracture vs death, cost table.

The reference ("truth") model is another family than the predictors (Keyak/Keller law,
Morgan & Keaveny strain limits, noise-free finer CT; the predictors see a one-voxel
segmentation error), and deaths compete with fractures.

Resolution is coarse on purpose (1.5 mm clinical voxels, 6 mm predictor elements) so that
200 femurs run in about 20 minutes on 2 cores. Every number is SYNTHETIC: it checks the
harness and shows how the predictors behave under the documented outcome model, not how
they perform on patients. Writes benchmarks/results/insilico.json (plus the benchmark
reports in the work folder).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save

from osteofe.benchmark import format_benchmark, run_benchmark
from osteofe.cohort import format_run_summary, run_cohort
from osteofe.config import Config
from osteofe.insilico import InsilicoOptions, format_insilico, generate_cohort


def _cpu_s() -> float:
    """CPU seconds used so far by this process and its finished children (the workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _stage[T](name: str, timings: dict[str, Any], fn: Callable[[], T]) -> T:
    """Run one stage; record its wall time, our CPU time and the host's load average.

    On a shared machine ``cpu_s / wall_s`` below the worker count shows how much of the
    cores other jobs took (the load average counts every runnable process of the host).
    """
    start, cpu, load = time.perf_counter(), _cpu_s(), os.getloadavg()[0]
    result = fn()
    wall = time.perf_counter() - start
    timings[name] = {"wall_s": round(wall, 1), "cpu_s": round(_cpu_s() - cpu, 1),
                     "host_load_1min_start": round(load, 2),
                     "host_load_1min_end": round(os.getloadavg()[0], 2)}
    return result


def _auc(entry: dict[str, Any]) -> dict[str, Any]:
    return {"auc": entry.get("auc"), "n": entry["n"], "n_fractured": entry["n_fractured"],
            "delong_ci": [entry["delong"].get("lower"), entry["delong"].get("upper")],
            "patient_clustered_bootstrap_ci": [entry["bootstrap"].get("lower"),
                                               entry["bootstrap"].get("upper")]}


def _rule(entry: dict[str, Any]) -> dict[str, Any]:
    if "sensitivity" not in entry:
        return {"label": entry["label"], "error": entry.get("error")}
    return {
        "label": entry["label"], "n": entry["n"],
        "sensitivity": entry["sensitivity"], "specificity": entry["specificity"],
        "tp_fn_tn_fp": [entry["tp"], entry["fn"], entry["tn"], entry["fp"]],
        "published": [{"key": p["key"], "sensitivity": p["sensitivity"],
                       "specificity": p["specificity"],
                       "within_cohort_ci": p["within_cohort_ci"]} for p in entry["published"]],
        "note": entry.get("note", ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="virtual patients (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None,
                        help="work folder (kept; default: a temporary folder, deleted)")
    parser.add_argument("--predictor-mesh", type=float, default=6.0, metavar="MM")
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--name", default="insilico", help="results/<name>.json")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="osteofe-insilico-"))
    options = InsilicoOptions()
    predictor = Config().override("mesh", size_mm=args.predictor_mesh)
    timings: dict[str, Any] = {}
    try:
        cohort = _stage("generate", timings, lambda: generate_cohort(
            args.n, work / "synthetic", args.seed, options=options, workers=args.workers))
        print(format_insilico(cohort), flush=True)
        run = _stage("predictor_fe", timings, lambda: run_cohort(
            cohort.manifest, work / "predictor", predictor, workers=args.workers))
        print(format_run_summary(run), flush=True)
        cohort_csv = run.cohort_csv
        if cohort_csv is None:
            raise SystemExit("no cohort table: every predictor run failed")
        summary = _stage("benchmark", timings, lambda: run_benchmark(
            cohort_csv, work / "benchmark", seed=args.seed, n_boot=args.n_boot,
            title=f"SYNTHETIC in-silico cohort, n={args.n}, seed {args.seed}"))
        total = sum(t["wall_s"] for t in timings.values())
        timings["total_wall_s"] = round(total, 1)
        print(format_benchmark(summary), flush=True)

        payload = {
            "data_origin": "SYNTHETIC",
            "warning": "in-silico virtual patients generated by osteofe.insilico; these "
                       "numbers describe the documented outcome model, not patients",
            "n_requested": args.n, "seed": args.seed, "workers": args.workers,
            "n_femurs": summary["cohort"]["n_femurs"],
            "n_fractured": summary["cohort"]["n_fractured"],
            "prevalence": summary["cohort"]["prevalence"],
            "excluded_reference_fe": [list(e) for e in cohort.excluded],
            "failed_predictor_fe": [f.to_dict() for f in run.failures],
            "resolution": {"clinical_voxel_mm": options.voxel_mm,
                           "clinical_noise_hu": options.noise_hu,
                           "reference_voxel_mm": options.truth_voxel_mm,
                           "reference_mesh_mm": options.truth_mesh_mm,
                           "reference_load_cases": list(options.truth_load_cases),
                           "predictor_mesh_mm": args.predictor_mesh,
                           "predictor_load_cases": list(predictor.load.cases)},
            "outcome_model": options.to_dict()["outcome"],
            "timings_s": timings,
            "auc": {k: _auc(v) for k, v in summary["auc"].items()},
            "delong_tests": summary["delong_tests"],
            "rules": {k: _rule(v) for k, v in summary["rules"].items()},
            "calibration": summary["calibration"],
            "fe_model": summary["fe_model"],
            "decision_curve_at": summary["decision_curve"]["at"],
            "reference_model": {"law": options.truth_law,
                                "strain_limits": list(options.truth_strain_limits),
                                "segmentation_noise": options.segmentation_noise},
            "competing_risks": {k: v for k, v in summary["competing_risks"].items()
                                if k != "aalen_johansen"} | {
                "aalen_johansen_at": {key: [{"group": c["group"], "cause": c["cause"],
                                             "n": c["n"], "at": c["at"]} for c in curves]
                                      for key, curves in summary["competing_risks"].get(
                                          "aalen_johansen", {}).items()}},
            "economics": {k: v for k, v in summary["economics"].items()
                          if k not in ("thresholds", "nmb_per_100")},
        }
        path = save(args.name, payload)
        print(f"{total:.0f} s in all -> {path}")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
