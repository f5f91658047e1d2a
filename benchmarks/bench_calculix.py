"""osteofe (DOLFINx, CG + GAMG) against CalculiX on the same model: time and agreement.

One mesh, one heterogeneous modulus field, one support and three load cases. osteofe
assembles the operator and sets GAMG up once, then solves three right-hand sides; CalculiX
solves the same deck (written by ``fea.calculix.write_inp``) as three ``*STEP``s, each of
which it factorises or preconditions anew (ccx has no multi-right-hand-side static step).
Reported: DOFs, times, the speed ratio, and the agreement of reaction totals and peak
principal strains per load case.

Usage: .venv/bin/python benchmarks/bench_calculix.py [--dofs N] [--degree 1|2]
           [--solver iterative_cholesky|spooles|both] [--femur [STL]] [--threads T]

The default (a 150k-DOF graded box, P1, ccx iterative Cholesky) runs in about a minute on
the 2-core development machine. ``--femur`` meshes a real femur surface from
../shared/data/femur_surfaces (gmsh) instead, loaded at the head by the three Bergmann cases.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

from fea.calculix import CalculixError, run_calculix, to_quadratic, write_inp  # noqa: E402
from fea.failure import principal_strains  # noqa: E402
from fea.loads import LoadPatch  # noqa: E402
from fea.solver import ElasticModel, SolverOptions, Support  # noqa: E402
from fea.topology import boundary_faces, face_normals_and_areas  # noqa: E402
from meshing.structured import box_mesh  # noqa: E402
from meshing.types import TetMesh  # noqa: E402

FEMUR_DIR = ROOT.parent / "shared" / "data" / "femur_surfaces"
BODY_MASS_KG = 75.0


def _graded_moduli(centroids: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Smooth, strongly heterogeneous moduli (100 to 20,000 MPa, log-graded), MPa."""
    u = (centroids - lower) / (upper - lower)
    wave = 0.5 + 0.25 * np.sin(2 * np.pi * u[:, 2]) + 0.25 * np.cos(3 * np.pi * u[:, 0] * u[:, 1])
    return 10.0 ** (2.0 + np.log10(200.0) * np.clip(wave, 0.0, 1.0))


def box_problem(dofs: int, degree: int) -> tuple[TetMesh, np.ndarray, list[Support],
                                                 list[list[LoadPatch]], dict[str, Any]]:
    """A 40 x 40 x 200 mm bar, clamped at z = 0, three forces on the top face."""
    nodes_per_dof = 1.0 / 3.0
    # P1: 3 (nx+1)^2 (5 nx + 1) DOFs; P2 has about 8x the nodes of P1 on the same cells.
    target_nodes = dofs * nodes_per_dof / (8.0 if degree == 2 else 1.0)
    nx = max(2, round((target_nodes / 5.0) ** (1.0 / 3.0)))
    lower, upper = np.zeros(3), np.array([40.0, 40.0, 200.0])
    mesh = box_mesh(lower, upper, (nx, nx, 5 * nx))
    moduli = _graded_moduli(mesh.centroids(), lower, upper)
    faces = boundary_faces(mesh)
    top = faces[np.all(mesh.points[faces][:, :, 2] > upper[2] - 1e-9, axis=1)]
    _, areas = face_normals_and_areas(mesh.points, top)
    forces = [np.array([0.0, 0.0, -2000.0]), np.array([300.0, 0.0, -1500.0]),
              np.array([0.0, -250.0, 1000.0])]
    cases = [[LoadPatch(top, np.unique(top), float(areas.sum()), f)] for f in forces]
    supports = [Support("clamp", np.flatnonzero(mesh.points[:, 2] < 1e-9))]
    return mesh, moduli, supports, cases, {"geometry": "box 40 x 40 x 200 mm",
                                           "divisions": [nx, nx, 5 * nx]}


def femur_problem(stl: Path, dofs: int, degree: int) -> tuple[
        TetMesh, np.ndarray, list[Support], list[list[LoadPatch]], dict[str, Any]]:
    """A real femur surface meshed with gmsh, fixed distally, loaded at the head."""
    from scipy.spatial import cKDTree

    from fea.landmarks import find_landmarks
    from fea.loads import LOAD_CASES, distal_fixed_nodes, head_load_patch
    from meshing.surface import read_surface, surface_volume
    from meshing.volume import tetrahedralize

    surface = read_surface(stl)
    volume = surface_volume(surface)
    # Empirical: ~0.125 h^3 mm^3 per tet and ~5.5 tets per node for gmsh HXT meshes.
    nodes = dofs / 3.0 / (8.0 if degree == 2 else 1.0)
    size = (volume / (0.125 * 5.5 * nodes)) ** (1.0 / 3.0)
    start = time.perf_counter()
    mesh = tetrahedralize(surface, size_mm=size)
    mesh_s = time.perf_counter() - start
    boundary = boundary_faces(mesh)
    surface_nodes = np.unique(boundary)
    # STAPLE's TLEM2 surface is in the ISB bone frame (x anterior, y superior, z right).
    landmarks = find_landmarks(mesh.points[surface_nodes], convention="ISB")
    fixed = distal_fixed_nodes(mesh.points, boundary, landmarks)
    cases = []
    for case in (LOAD_CASES[name] for name in ("stance", "stairs_up", "stairs_down")):
        direction = landmarks.frame.to_world_direction(case.direction)
        cases.append([head_load_patch(mesh.points, boundary, landmarks, direction,
                                      case.force_newton(BODY_MASS_KG))])
    # Synthetic bone: stiff cortex (within 3 mm of the surface), soft core.
    depth, _ = cKDTree(mesh.points[surface_nodes]).query(mesh.centroids())
    moduli = 500.0 + 16500.0 * np.exp(-np.maximum(depth - 1.0, 0.0) / 2.0)
    return mesh, moduli, [Support("distal", fixed)], cases, {
        "geometry": f"femur {stl.name}", "mesh_size_mm": round(size, 3),
        "meshing_s": round(mesh_s, 2), "load_cases": list(LOAD_CASES),
        "body_mass_kg": BODY_MASS_KG}


def agreement(ref_reaction: np.ndarray, ccx_reaction: np.ndarray, ref_strain: np.ndarray,
              ccx_strain: np.ndarray, force: np.ndarray) -> dict[str, float]:
    """Relative differences of reaction total and peak principal strains (ccx vs osteofe)."""
    p_ref, p_ccx = principal_strains(ref_strain), principal_strains(ccx_strain)
    peak = float(np.abs(p_ref).max())
    return {
        "reaction_rel_diff": float(np.linalg.norm(ccx_reaction - ref_reaction)
                                   / np.linalg.norm(force)),
        "reaction_vs_load_rel": float(np.linalg.norm(ccx_reaction + force)
                                      / np.linalg.norm(force)),
        "peak_max_principal_osteofe": float(p_ref[:, 2].max()),
        "peak_max_principal_ccx": float(p_ccx[:, 2].max()),
        "peak_max_principal_rel_diff": float(abs(p_ccx[:, 2].max() - p_ref[:, 2].max())
                                             / abs(p_ref[:, 2].max())),
        "peak_min_principal_osteofe": float(p_ref[:, 0].min()),
        "peak_min_principal_ccx": float(p_ccx[:, 0].min()),
        "peak_min_principal_rel_diff": float(abs(p_ccx[:, 0].min() - p_ref[:, 0].min())
                                             / abs(p_ref[:, 0].min())),
        "element_strain_max_diff_over_peak": float(np.abs(ccx_strain - ref_strain).max()
                                                   / peak),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dofs", type=int, default=150_000, help="target number of DOFs")
    parser.add_argument("--degree", type=int, default=1, choices=(1, 2))
    parser.add_argument("--solver", default="iterative_cholesky",
                        choices=("iterative_cholesky", "spooles", "both"))
    parser.add_argument("--threads", type=int, default=1, help="ccx threads (osteofe: 1 rank)")
    parser.add_argument("--material-groups", type=int, default=256,
                        help="bin moduli into this many ccx materials (0: exact)")
    parser.add_argument("--femur", nargs="?", const="auto", default=None,
                        help="mesh a femur STL (default: first in ../shared/data/femur_surfaces)")
    parser.add_argument("--ccx-timeout", type=float, default=3600.0,
                        help="stop a ccx run after this many seconds and record it as slower "
                        "than that (the speed ratio is then a lower bound)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the ccx files here")
    parser.add_argument("--name", default="calculix", help="results/<name>.json")
    args = parser.parse_args()
    if shutil.which("ccx") is None:
        sys.exit("ccx not found: apt-get install calculix-ccx")

    start = time.perf_counter()
    if args.femur is not None:
        stl = sorted(FEMUR_DIR.glob("*.stl"))[0] if args.femur == "auto" else Path(args.femur)
        mesh, moduli, supports, cases, problem = femur_problem(stl, args.dofs, args.degree)
    else:
        mesh, moduli, supports, cases, problem = box_problem(args.dofs, args.degree)
    problem["setup_s"] = round(time.perf_counter() - start, 2)
    ccx_mesh = to_quadratic(mesh) if args.degree == 2 else mesh
    groups = args.material_groups or None
    solvers = ["iterative_cholesky", "spooles"] if args.solver == "both" else [args.solver]

    workdir = Path(tempfile.mkdtemp(prefix="osteofe-ccx-")) if args.keep is None else args.keep
    workdir.mkdir(parents=True, exist_ok=True)
    ccx_runs: dict[str, Any] = {}
    summary = None
    for solver in solvers:
        t0 = time.perf_counter()
        summary = write_inp(workdir / f"bench_{solver}.inp", ccx_mesh, moduli, 0.3, supports,
                            cases[0], extra_cases=cases[1:], material_groups=groups,
                            solver=solver, frd=False)
        write_s = time.perf_counter() - t0
        print(f"ccx {solver}: {summary.num_elements} {summary.element_type}, "
              f"{summary.num_materials} materials, deck written in {write_s:.1f} s", flush=True)
        try:
            result = run_calculix(summary.path, num_threads=args.threads,
                                  timeout_s=args.ccx_timeout)
        except CalculixError as exc:
            if "within" not in exc.message:
                raise
            ccx_runs[solver] = {"write_s": write_s, "result": None}
            print(f"  ccx {solver}: stopped after {args.ccx_timeout:.0f} s", flush=True)
            continue
        ccx_runs[solver] = {"write_s": write_s, "result": result}
        print(f"  ccx {solver}: {result.wall_s:.1f} s for {len(cases)} cases "
              f"(+ {result.parse_s:.1f} s reading)", flush=True)
    assert summary is not None
    # osteofe solves exactly the model in the deck (binned moduli included).
    t0 = time.perf_counter()
    model = ElasticModel(mesh, summary.youngs_modulus_mpa, 0.3, supports,
                         SolverOptions(degree=args.degree, rtol=1e-8))
    setup_s = time.perf_counter() - t0
    solutions = [model.solve(case) for case in cases]
    osteofe_s = time.perf_counter() - t0
    print(f"osteofe: {model.num_dofs} DOFs, set-up {setup_s:.1f} s, total {osteofe_s:.1f} s "
          f"({', '.join(str(s.stats.iterations) for s in solutions)} CG iterations)", flush=True)

    support = supports[0].name
    runs_out = {}
    for solver, run in ccx_runs.items():
        result = run["result"]
        if result is None:  # stopped at --ccx-timeout: only a lower bound on its time
            runs_out[solver] = {
                "ccx_wall_s": None, "stopped_after_s": args.ccx_timeout,
                "deck_write_s": round(run["write_s"], 2),
                "speed_ratio_ccx_over_osteofe_at_least": round(args.ccx_timeout / osteofe_s, 2)}
            print(f"{solver}: ccx > {args.ccx_timeout:.0f} s vs osteofe {osteofe_s:.1f} s "
                  f"(ratio > {args.ccx_timeout / osteofe_s:.1f})")
            continue
        per_case = []
        for case, sol, res in zip(cases, solutions, result.cases, strict=True):
            force = np.sum([p.force_n for p in case], axis=0)
            per_case.append(agreement(sol.reactions_n[support], res.reactions_n[support],
                                      sol.strain, res.element_strain, force))
        runs_out[solver] = {
            "ccx_wall_s": round(result.wall_s, 2), "ccx_parse_s": round(result.parse_s, 2),
            "deck_write_s": round(run["write_s"], 2),
            "speed_ratio_ccx_over_osteofe": round(result.wall_s / osteofe_s, 2),
            "agreement": per_case,
        }
        worst_r = max(c["reaction_rel_diff"] for c in per_case)
        worst_max = max(c["peak_max_principal_rel_diff"] for c in per_case)
        worst_min = max(c["peak_min_principal_rel_diff"] for c in per_case)
        print(f"{solver}: ccx {result.wall_s:.1f} s vs osteofe {osteofe_s:.1f} s "
              f"(ratio {result.wall_s / osteofe_s:.1f}); worst rel diff: reaction "
              f"{worst_r:.1e}, peak max principal {worst_max:.1e}, peak min principal "
              f"{worst_min:.1e}")

    payload = {
        "problem": problem,
        "degree": args.degree,
        "dofs": model.num_dofs,
        "cells": mesh.num_cells,
        "load_cases": len(cases),
        "material_groups": summary.num_materials,
        "max_binning_rel_error": summary.max_binning_rel_error,
        "osteofe": {
            "total_s": round(osteofe_s, 2), "setup_s": round(setup_s, 2),
            "timings_s": {k: round(v, 2) for k, v in model.timings_s.items()},
            "solve_s": [round(s.stats.solve_s, 2) for s in solutions],
            "iterations": [s.stats.iterations for s in solutions],
            "options": SolverOptions(degree=args.degree, rtol=1e-8).to_dict(),
            "ranks": 1,
        },
        "calculix": {"version": "2.20", "threads": args.threads, "runs": runs_out},
    }
    model.destroy()
    path = save(args.name, payload)
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
