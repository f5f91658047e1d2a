"""Mesh convergence of the linear failure load *and* its site on the built-in phantom.

For each element order and size, the phantom (stance and sideways fall) is meshed and solved;
the grid convergence index (Roache 1994, Celik et al. 2008; fea.convergence) of the failure
load is computed from the three finest sizes, and the site's convergence is the distance
between the critical points of the two finest meshes and whether their anatomical regions
agree.

Usage: .venv/bin/python benchmarks/bench_convergence.py [--degree 2] [--sizes 4 3 2.5 2]
       [--loads stance fall] [--name convergence_p2]
Target (issue 1/7): GCI of the failure load < 5 % and the same region at the two finest sizes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import itertools

import numpy as np
from _common import save

from fea.convergence import grid_convergence_index
from material.calibration import LinearCalibration
from meshing.phantom import PhantomParams, make_phantom, write_phantom
from osteofe.config import Config
from osteofe.pipeline import StrengthRequest, run_strength


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=float, nargs="+", default=[4.0, 3.0, 2.5, 2.0])
    parser.add_argument("--degree", type=int, default=2, choices=(1, 2))
    parser.add_argument("--loads", nargs="+", default=["stance", "fall"])
    parser.add_argument("--name", default=None, help="results/<name>.json")
    args = parser.parse_args()
    phantom = make_phantom(PhantomParams())
    truth = phantom.truth
    calibration = LinearCalibration(truth.calibration_slope, truth.calibration_intercept)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_phantom(phantom, Path(tmp) / "phantom")
        for size in args.sizes:
            config = (Config().override("mesh", size_mm=size)
                      .override("solver", degree=args.degree)
                      .override("load", cases=tuple(args.loads)))
            start = time.perf_counter()
            result = run_strength(StrengthRequest(paths["ct"], paths["labels"], 75.0), config,
                                  Path(tmp) / f"run_{size}", calibration=calibration,
                                  picture=False).to_dict()
            wall = time.perf_counter() - start
            row = {"size_mm": size, "cells": result["mesh"]["num_cells"],
                   "dofs": result["solver"]["num_dofs"], "wall_s": round(wall, 2), "cases": {}}
            for case in result["cases"]:
                row["cases"][case["load_case"]] = {
                    "failure_load_N": case["failure_load_N"],
                    "failure_mode": case["failure_mode"],
                    "critical_region": case["critical_region"],
                    "critical_point_mm": case["critical_point_mm"],
                    "iterations": case["solver"]["iterations"]}
            rows.append(row)
            print({k: v for k, v in row.items() if k != "cases"},
                  {n: (round(c["failure_load_N"]), c["critical_region"])
                   for n, c in row["cases"].items()}, flush=True)
    summary = {}
    for load in args.loads:
        loads = [r["cases"][load]["failure_load_N"] for r in rows]
        finest = sorted(range(len(rows)), key=lambda i: rows[i]["size_mm"])[:3]
        gci = grid_convergence_index([rows[i]["size_mm"] for i in finest],
                                     [loads[i] for i in finest])
        a, b = (rows[i]["cases"][load] for i in finest[:2])
        site_mm = float(np.linalg.norm(np.subtract(a["critical_point_mm"],
                                                   b["critical_point_mm"])))
        summary[load] = {"load_gci": gci.to_dict(),
                         "site_distance_two_finest_mm": round(site_mm, 2),
                         "same_region_two_finest": a["critical_region"] == b["critical_region"],
                         "regions": [r["cases"][load]["critical_region"] for r in rows]}
        print(f"\n{load} (P{args.degree}):")
        print("| size (mm) | cells | DOFs | failure load (N) | change | mode | region | wall (s) |")
        print("|---|---|---|---|---|---|---|---|")
        prev = None
        for row in rows:
            case = row["cases"][load]
            change = "" if prev is None else f"{case['failure_load_N'] / prev - 1:+.1%}"
            prev = case["failure_load_N"]
            print(f"| {row['size_mm']:g} | {row['cells']:,} | {row['dofs']:,} | "
                  f"{case['failure_load_N']:.0f} | {change} | {case['failure_mode']} | "
                  f"{case['critical_region']} | {row['wall_s']:.1f} |")
        print(f"GCI (finest three) {100 * gci.gci_fine:.1f} %, observed order "
              f"{gci.observed_order:.2f}{' (oscillatory)' if gci.oscillatory else ''}; site "
              f"moves {site_mm:.1f} mm between the two finest, same region: "
              f"{summary[load]['same_region_two_finest']}")
    for prev_row, row in itertools.pairwise(rows):
        row["change_from_previous"] = {
            n: row["cases"][n]["failure_load_N"] / prev_row["cases"][n]["failure_load_N"] - 1.0
            for n in args.loads}
    save(args.name or f"convergence_p{args.degree}",
         {"degree": args.degree, "loads": args.loads, "rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
