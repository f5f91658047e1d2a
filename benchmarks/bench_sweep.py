"""Cost of a 24-direction load sweep against one load case (superposition of unit loads).

Usage: .venv/bin/python benchmarks/bench_sweep.py [--directions 24] [--mesh-size 3]
Target (issue 4/6): 24 directions on the same patch cost < 3x one load case. Compared: the
solve + failure-criterion stages of the same phantom analysis without and with the sweep.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save

from material.calibration import LinearCalibration
from meshing.phantom import PhantomParams, make_phantom, write_phantom
from osteofe.config import Config
from osteofe.pipeline import StrengthRequest, run_strength


def _stage_s(result: dict) -> float:
    t = result["timings_s"]
    return float(t["solve_total"] + t["failure"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--directions", type=int, default=24)
    parser.add_argument("--mesh-size", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    phantom = make_phantom(PhantomParams())
    calibration = LinearCalibration(phantom.truth.calibration_slope,
                                    phantom.truth.calibration_intercept)
    base = Config().override("mesh", size_mm=args.mesh_size)
    runs: dict[str, list[float]] = {"one_case": [], "sweep": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_phantom(phantom, Path(tmp) / "phantom")
        request = StrengthRequest(paths["ct"], paths["labels"], 75.0)
        for _ in range(args.repeat):
            for key, count in (("one_case", 0), ("sweep", args.directions)):
                config = base.override("load", sweep_directions=count)
                result = run_strength(request, config, Path(tmp) / key,
                                      calibration=calibration, picture=False).to_dict()
                runs[key].append(_stage_s(result))
                if count:
                    sweep = result["cases"][0]["direction_sweep"]
        dofs = result["solver"]["num_dofs"]
    one, many = min(runs["one_case"]), min(runs["sweep"])
    ratio = many / one
    print(f"{dofs} DOFs: one case {one:.2f} s, {args.directions} directions {many:.2f} s, "
          f"ratio {ratio:.2f} (target < 3); weakest direction "
          f"{sweep['min_failure_load_N']:.0f} N vs nominal {sweep['failure_loads_N'][0]:.0f} N")
    path = save("sweep", {"directions": args.directions, "dofs": dofs,
                          "one_case_s": one, "sweep_s": many, "ratio": ratio,
                          "target_ratio": 3.0, "runs_s": runs,
                          "min_failure_load_N": sweep["min_failure_load_N"],
                          "nominal_failure_load_N": sweep["failure_loads_N"][0]})
    print(f"-> {path}")


if __name__ == "__main__":
    main()
