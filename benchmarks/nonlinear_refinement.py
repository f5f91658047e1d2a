"""Refinement of the phantom's nonlinear (plasticity) peak: P2 at 3 mm vs 2.5 mm.

Usage (the two runs first, each on 2 ranks; then this script, serial, reads their results):
    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_nonlinear.py --mesh-size 2.5 \
        --degree 2                                      # results/nonlinear.json
    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_nonlinear.py --mesh-size 3 \
        --degree 2 --no-secant --name nonlinear_p2_3mm  # results/nonlinear_p2_3mm.json
    .venv/bin/python benchmarks/nonlinear_refinement.py

Writes benchmarks/results/nonlinear_refinement.json. Must show (issue 14): the two peaks
within 5 %, each bracketed with every kept increment converged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, save

RUNS = {"3.0": "nonlinear_p2_3mm", "2.5": "nonlinear"}


def main() -> None:
    peaks = {}
    for size, name in RUNS.items():
        data = json.loads((RESULTS / f"{name}.json").read_text())
        run = next(r for r in data["runs"] if r["method"] == "plasticity")
        peaks[size] = {
            "result_file": f"benchmarks/results/{name}.json",
            "mesh_size_mm": data["mesh_size_mm"], "degree": data["degree"],
            "mpi_ranks": data["mpi_ranks"], "cells": run["cells"], "dofs": run["dofs"],
            "peak_load_N": run["peak_load_N"],
            "peak_interpolated_N": run.get("peak_interpolated_N"),
            "peak_bracketed": run.get("peak_bracketed"),
            "all_increments_converged": run["all_increments_converged"],
            "control": run.get("control"), "nonlinear_wall_s": run["nonlinear_wall_s"],
            "linear_failure_load_N": run["linear_failure_load_N"],
            "warnings": run["warnings"],
            "commit": data.get("provenance", {}).get("commit"),
        }
    coarse, fine = peaks["3.0"]["peak_load_N"], peaks["2.5"]["peak_load_N"]
    difference = abs(fine - coarse) / fine
    ok = all(p["peak_bracketed"] and p["all_increments_converged"] for p in peaks.values())
    save("nonlinear_refinement", {
        "what": "phantom stance, P2, nonlinear (incremental plasticity, indirect displacement "
                "control) peak at 3 mm and 2.5 mm",
        "commands": [
            ".venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_nonlinear.py "
            "--mesh-size 2.5 --degree 2",
            ".venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_nonlinear.py "
            "--mesh-size 3 --degree 2 --no-secant --name nonlinear_p2_3mm",
            ".venv/bin/python benchmarks/nonlinear_refinement.py"],
        "runs": peaks, "relative_difference": round(difference, 5),
        "within_5_percent": difference <= 0.05, "both_bracketed_and_converged": ok,
        "note": "timed on a shared 2-core machine under load from other jobs"})
    print(f"3 mm {coarse} N, 2.5 mm {fine} N: {difference:.2%} apart; bracketed and "
          f"converged: {ok}")


if __name__ == "__main__":
    main()
