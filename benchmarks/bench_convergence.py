"""Mesh convergence of the linear failure load on the built-in phantom (stance).

Usage: .venv/bin/python benchmarks/bench_convergence.py [--sizes 5 4 3 2.5 2] [--degree 1]
Target (issue 4/6): the failure load changes by < 3 % between the two finest meshes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import itertools

from _common import save

from material.calibration import LinearCalibration
from meshing.phantom import PhantomParams, make_phantom, write_phantom
from osteofe.config import Config
from osteofe.pipeline import StrengthRequest, run_strength


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=float, nargs="+", default=[5.0, 4.0, 3.0, 2.5, 2.0])
    parser.add_argument("--degree", type=int, default=1, choices=(1, 2))
    parser.add_argument("--load", default="stance")
    args = parser.parse_args()
    phantom = make_phantom(PhantomParams())
    truth = phantom.truth
    calibration = LinearCalibration(truth.calibration_slope, truth.calibration_intercept)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_phantom(phantom, Path(tmp) / "phantom")
        for size in args.sizes:
            config = Config().override("mesh", size_mm=size)
            config = config.override("solver", degree=args.degree)
            config = config.override("load", cases=(args.load,))
            start = time.perf_counter()
            result = run_strength(StrengthRequest(paths["ct"], paths["labels"], 75.0), config,
                                  Path(tmp) / f"run_{size}", calibration=calibration,
                                  picture=False)
            wall = time.perf_counter() - start
            case = result["cases"][0]
            rows.append({"size_mm": size, "cells": result["mesh"]["num_cells"],
                         "dofs": result["solver"]["num_dofs"],
                         "failure_load_N": case["failure_load_N"],
                         "critical_region": case["critical_region"],
                         "iterations": case["solver"]["iterations"], "wall_s": round(wall, 2)})
            print(rows[-1], flush=True)
    for prev, row in itertools.pairwise(rows):
        row["change_from_previous"] = row["failure_load_N"] / prev["failure_load_N"] - 1.0
    last_change = rows[-1].get("change_from_previous")
    print("\n| size (mm) | cells | DOFs | failure load (N) | change | region | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        change = row.get("change_from_previous")
        print(f"| {row['size_mm']} | {row['cells']} | {row['dofs']} | "
              f"{row['failure_load_N']:.0f} | {'' if change is None else f'{100 * change:+.1f} %'}"
              f" | {row['critical_region']} | {row['wall_s']} |")
    path = save(f"convergence_p{args.degree}_{args.load}",
                {"degree": args.degree, "load_case": args.load, "rows": rows,
                 "finest_change": last_change, "target_abs_change": 0.03})
    print(f"finest change {100 * (last_change or 0):+.2f} % (target < 3 %) -> {path}")


if __name__ == "__main__":
    main()
