"""A whole proximal femur at clinical resolution, CT to load to failure, timed end to end.

Usage: .venv/bin/python benchmarks/bench_clinical.py [--mesh-size 3] [--degree 2]
           [--nonlinear]
Targets (issue 4/6): 3 linear load cases on a converged P2 model in < 2 minutes; the
nonlinear analysis in < 15 minutes (on this 2-core machine). The phantom is the 0.8 mm
built-in CT of a 220 mm proximal femur.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save

from material.calibration import LinearCalibration
from meshing.phantom import PhantomParams, make_phantom, write_phantom
from osteofe.config import Config
from osteofe.pipeline import StrengthRequest, run_strength


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mesh-size", type=float, default=3.0)
    parser.add_argument("--degree", type=int, default=2, choices=(1, 2))
    parser.add_argument("--nonlinear", action="store_true")
    args = parser.parse_args()
    phantom = make_phantom(PhantomParams())
    calibration = LinearCalibration(phantom.truth.calibration_slope,
                                    phantom.truth.calibration_intercept)
    config = (Config().override("mesh", size_mm=args.mesh_size)
              .override("solver", degree=args.degree)
              .override("load", cases=("stance", "stairs_up", "stairs_down"))
              .override("nonlinear", enabled=args.nonlinear or None))
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_phantom(phantom, Path(tmp) / "phantom")
        start = time.perf_counter()
        result = run_strength(StrengthRequest(paths["ct"], paths["labels"], 75.0), config,
                              Path(tmp) / "out", calibration=calibration).to_dict()
        wall = time.perf_counter() - start
    timings = result["timings_s"]
    nonlinear_s = timings.get("nonlinear", 0.0)
    linear_s = wall - nonlinear_s
    cases = {c["load_case"]: round(c["failure_load_N"], 1) for c in result["cases"]}
    print(f"P{args.degree} at {args.mesh_size} mm: {result['mesh']['num_cells']} cells, "
          f"{result['solver']['num_dofs']} DOFs; CT -> 3-case linear failure load "
          f"{linear_s:.1f} s (target < 120 s); failure loads {cases}")
    payload = {"mesh_size_mm": args.mesh_size, "degree": args.degree,
               "cells": result["mesh"]["num_cells"], "dofs": result["solver"]["num_dofs"],
               "linear_wall_s": round(linear_s, 2), "linear_target_s": 120.0,
               "failure_loads_N": cases, "stage_timings_s": timings}
    if args.nonlinear:
        governing = next(c for c in result["cases"] if "nonlinear" in c)
        nonlinear = governing["nonlinear"]
        print(f"nonlinear ({governing['load_case']}): {nonlinear_s:.1f} s (target < 900 s), "
              f"peak {nonlinear['failure_load_N']:.0f} N, ratio to linear "
              f"{nonlinear['nonlinear_to_linear_ratio']:.2f}, "
              f"{nonlinear['increments']} increments")
        payload |= {"nonlinear_wall_s": round(nonlinear_s, 2), "nonlinear_target_s": 900.0,
                    "nonlinear": nonlinear}
    name = f"clinical_p{args.degree}_{args.mesh_size:g}mm" + ("_nonlinear" if args.nonlinear
                                                             else "")
    print(f"-> {save(name, payload)}")


if __name__ == "__main__":
    main()
