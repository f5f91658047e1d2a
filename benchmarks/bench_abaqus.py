"""``osteofe solve`` on a deck built elsewhere: parse + solve + write time, serial vs MPI.

The deck: a distorted 30 x 30 x 90 mm bar of ~20k C3D10 elements with ~500 materials
(log-graded moduli binned Bonemat-style), fixed at z = 0, its top face moved by a per-node
prescribed displacement (a small rotation about x plus a compression, one *BOUNDARY line per
node and dof) and a side patch loaded by *CLOAD. Written with ``fea.calculix.write_inp``
(not timed), then solved end to end by :func:`osteofe.solve_tool.run_solve` on 1 rank and,
in a subprocess, by ``mpiexec -n 2``; the reactions of both runs must agree within 1e-6
(CG rtol 1e-10; a run with the default rtol 1e-8 is timed too).

Usage: .venv/bin/python benchmarks/bench_abaqus.py [--cells 20000] [--materials 500]
           [--ranks 2] [--no-mpi]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, save  # noqa: E402

from fea.calculix import to_quadratic, write_inp  # noqa: E402
from fea.loads import LoadPatch  # noqa: E402
from fea.solver import SolverOptions, Support  # noqa: E402
from fea.topology import boundary_faces, face_normals_and_areas  # noqa: E402
from meshing.structured import box_mesh  # noqa: E402
from meshing.types import TetMesh  # noqa: E402

SIZE = np.array([30.0, 30.0, 90.0])
#: ``osteofe solve``'s CG + GAMG with rtol 1e-10: reactions then agree between rank counts to
#: ~1e-8 (the default rtol 1e-8 gives ~1e-6, measured as well, for the time).
OPTIONS = SolverOptions(rtol=1e-10)


def build_deck(path: Path, cells: int, materials: int) -> dict[str, Any]:
    """Write the benchmark deck; returns its description."""
    n = max(2, round((cells / 18.0) ** (1.0 / 3.0)))  # 6 n * n * nz tets, nz ~ 3 n
    nz = max(3, round(cells / (6.0 * n * n)))
    linear = box_mesh(np.zeros(3), SIZE, (n, n, nz))
    pts = linear.points.copy()
    inside = np.all((pts > 1e-9) & (pts < SIZE - 1e-9), axis=1)
    h = SIZE[0] / n
    pts[inside] += np.random.default_rng(1).uniform(-0.2 * h, 0.2 * h, (inside.sum(), 3))
    linear = TetMesh(pts, linear.cells, linear.cell_tags)
    c = linear.centroids() / SIZE
    wave = 0.5 + 0.25 * np.sin(2 * np.pi * c[:, 2]) + 0.25 * np.cos(3 * np.pi * c[:, 0] * c[:, 1])
    moduli = 10.0 ** (2.0 + np.log10(200.0) * np.clip(wave, 0.0, 1.0))  # 100-20,000 MPa
    faces = boundary_faces(linear)
    fp = linear.points[faces]
    side = faces[np.all(fp[:, :, 0] > SIZE[0] - 1e-9, axis=1)
                 & np.all(fp[:, :, 2] > 0.4 * SIZE[2], axis=1)
                 & np.all(fp[:, :, 2] < 0.6 * SIZE[2], axis=1)]
    _, areas = face_normals_and_areas(linear.points, side)
    patch = LoadPatch(side, np.unique(side), float(areas.sum()), np.array([-400.0, 0.0, 0.0]))

    def top_motion(x: np.ndarray) -> np.ndarray:
        """Tilt by 2e-3 rad about the top face's x axis and push 0.05 mm down."""
        y = x[1] - SIZE[1] / 2
        return np.vstack([np.zeros_like(y), np.zeros_like(y), 2e-3 * y - 0.05])

    supports = [Support("base", np.flatnonzero(linear.points[:, 2] < 1e-9)),
                Support("top", np.flatnonzero(linear.points[:, 2] > SIZE[2] - 1e-9),
                        displacement_mm=top_motion)]
    quad = to_quadratic(linear)
    summary = write_inp(path, quad, moduli, 0.3, supports, [patch], material_groups=materials,
                        frd=False)
    return {"elements": quad.num_cells, "nodes": quad.num_nodes, "element_type": "C3D10",
            "materials": summary.num_materials, "divisions": [n, n, nz],
            "deck_mb": round(path.stat().st_size / 1e6, 2),
            "max_binning_rel_error": summary.max_binning_rel_error,
            "boundary": "base fixed (1-3); top prescribed per node (rotation + compression); "
                        "side patch -400 N in x as *CLOAD"}


def _worker(deck: Path, out: Path) -> None:
    """Run under mpiexec: solve and let rank 0 write result.json."""
    from mpi4py import MPI

    from osteofe.solve_tool import run_solve

    run_solve(deck, out, options=OPTIONS, loaded_set=None, ignore_unsupported=False,
              comm=MPI.COMM_WORLD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20000)
    parser.add_argument("--materials", type=int, default=500)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--no-mpi", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("DECK", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(Path(args.worker[0]), Path(args.worker[1]))
        return

    from mpi4py import MPI

    from osteofe.solve_tool import run_solve

    with tempfile.TemporaryDirectory(prefix="bench_abaqus_") as tmp_name:
        tmp = Path(tmp_name)
        deck = tmp / "bar.inp"
        model = build_deck(deck, args.cells, args.materials)
        print(f"deck: {model['elements']} C3D10, {model['nodes']} nodes, "
              f"{model['materials']} materials, {model['deck_mb']} MB", flush=True)
        # Warm-up on a tiny deck compiles the P2 forms (FFCx cache), as any second run finds.
        build_deck(tmp / "warm.inp", 1200, 8)
        run_solve(tmp / "warm.inp", tmp / "warm", options=OPTIONS, comm=MPI.COMM_SELF)
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        serial = run_solve(deck, tmp / "serial", options=OPTIONS, comm=MPI.COMM_SELF)
        wall = time.perf_counter() - start
        print(f"1 rank: {wall:.2f} s end to end ({serial['solver']['num_dofs']} DOFs, "
              f"{serial['solver']['iterations']} CG iterations)", flush=True)
        payload: dict[str, Any] = {
            "benchmark": "abaqus",
            "model": model,
            "serial": {"wall_s": round(wall, 3), "timings_s": serial["timings_s"],
                       "num_dofs": serial["solver"]["num_dofs"],
                       "iterations": serial["solver"]["iterations"],
                       "reactions_n": serial["reactions_n"],
                       "relative_imbalance": serial["equilibrium"]["relative_imbalance"]},
            "target_s": 15.0,
            "within_target": wall < 15.0,
            "load_average_1min": {"before": round(load_before, 2),
                                  "after": round(os.getloadavg()[0], 2),
                                  "cores": os.cpu_count(),
                                  "note": "other processes share the machine when the load "
                                          "exceeds the core count; times are then inflated"},
            "provenance": provenance(1),
        }
        start = time.perf_counter()
        default = run_solve(deck, tmp / "default", options=SolverOptions(), comm=MPI.COMM_SELF)
        payload["serial_default_rtol_1e-8"] = {
            "wall_s": round(time.perf_counter() - start, 3),
            "iterations": default["solver"]["iterations"],
            "reaction_rel_difference": {
                name: float(np.linalg.norm(np.subtract(default["reactions_n"][name], r))
                            / np.linalg.norm(r)) for name, r in serial["reactions_n"].items()}}
        print(f"1 rank, default rtol 1e-8: {payload['serial_default_rtol_1e-8']['wall_s']:.2f} s",
              flush=True)
        if not args.no_mpi:
            mpiexec = ROOT / ".venv" / "bin" / "mpiexec"
            cmd = [str(mpiexec), "-n", str(args.ranks), sys.executable, __file__, "--worker",
                   str(deck), str(tmp / "mpi")]
            env = dict(os.environ, OMP_NUM_THREADS="1")
            start = time.perf_counter()
            subprocess.run(cmd, check=True, env=env)
            mpi_wall = time.perf_counter() - start
            parallel = json.loads((tmp / "mpi" / "result.json").read_text())
            rel = {name: float(np.linalg.norm(np.subtract(parallel["reactions_n"][name], r))
                               / np.linalg.norm(r))
                   for name, r in serial["reactions_n"].items()}
            payload["mpi"] = {"ranks": args.ranks, "wall_s_with_startup": round(mpi_wall, 3),
                              "timings_s": parallel["timings_s"],
                              "iterations": parallel["solver"]["iterations"],
                              "reactions_n": parallel["reactions_n"],
                              "reaction_rel_difference": rel,
                              "agree_1e-6": all(v < 1e-6 for v in rel.values())}
            print(f"{args.ranks} ranks: {parallel['timings_s']['total']:.2f} s in run_solve; "
                  f"reactions differ from serial by at most {max(rel.values()):.1e}", flush=True)
        path = save("abaqus", payload)
        print(f"written {path}")


if __name__ == "__main__":
    main()
