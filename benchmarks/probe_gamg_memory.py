"""Where the FE model's memory per rank goes: RSS around each step of ElasticModel set-up.

Usage: .venv/bin/python benchmarks/probe_gamg_memory.py [--n 12] [--degree 2] [--ranks 1 2]
       [--option KEY=VALUE ...] [--name probe_gamg_memory]

The bench_solver box (40 x 40 x 160 mm, ``n x n x 4n`` cubes of 6 tetrahedra, E 1000 MPa,
clamped at z = 0; n = 12 and P2: 181,875 DOFs) is turned into a ``fea.solver.ElasticModel``
under ``mpiexec -n R``; every rank records its resident set size (psutil) before and after
DOLFINx mesh creation, matrix assembly and the KSP/GAMG set-up. ``--option`` adds PETSc
options of the model (e.g. ``pc_gamg_agg_nsmooths=0``) to see what the GAMG hierarchy
costs. Writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages
from _common import save

MB = 1024.0 * 1024.0


def _single(args: argparse.Namespace) -> int:
    import numpy as np

    import fea.solver as solver  # loads the backend (dolfinx_solver before dolfinx)
    from meshing.structured import box_mesh

    comm_mod = solver.MPI
    dmesh, fem_petsc = solver.dolfinx.mesh, solver.dolfinx.fem.petsc

    comm = comm_mod.COMM_WORLD
    from bench_memory_ranks import _rss
    steps: dict[str, float] = {}

    def around(name: str, fn: Any) -> Any:
        def wrapped(*a: Any, **k: Any) -> Any:
            before = _rss()
            out = fn(*a, **k)
            steps[name] = steps.get(name, 0.0) + (_rss() - before) / MB
            return out
        return wrapped

    solver.dolfinx.mesh.create_mesh = around("create_mesh", dmesh.create_mesh)
    solver.dolfinx.fem.petsc.assemble_matrix = around("assemble_matrix",
                                                      fem_petsc.assemble_matrix)
    solver.ElasticModel._set_up_solver = around(  # type: ignore[method-assign]
        "gamg_setup", solver.ElasticModel._set_up_solver)
    n = args.n
    mesh = box_mesh(np.zeros(3), np.array([40.0, 40.0, 160.0]), (n, n, 4 * n))
    support = solver.Support("clamp", np.flatnonzero(mesh.points[:, 2] < 1e-9))
    extra = dict(o.split("=", 1) for o in args.option)
    start = _rss()
    model = solver.ElasticModel(mesh, np.full(mesh.num_cells, 1000.0), 0.3, [support],
                                solver.SolverOptions(degree=args.degree, extra=extra), comm)
    record = {"rank": comm.rank, "model_total_mb": round((_rss() - start) / MB),
              **{f"{k}_mb": round(v) for k, v in steps.items()}}
    top = np.flatnonzero(mesh.points[:, 2] > 160.0 - 1e-9)
    forces = np.tile([0.0, 0.0, -1000.0 / top.size], (top.size, 1))
    solution = model.solve([solver.NodalForces(top, forces)])
    record["gamg_setup_s"] = round(model.timings_s["preconditioner_setup"], 2)
    record["iterations"] = solution.stats.iterations
    record["solve_s"] = round(solution.stats.solve_s, 2)
    record["tip_uz_mm"] = float(solution.displacement_mm[top, 2].mean())
    record["peak_rss_mb"] = round(__import__("resource").getrusage(
        __import__("resource").RUSAGE_SELF).ru_maxrss / 1024)
    records = comm.gather(record, root=0)
    dofs = model.num_dofs
    levels = model.ksp.getPC().getMGLevels()
    model.destroy()
    if comm.rank == 0:
        Path(args.single).write_text(json.dumps({"ranks": comm.size, "dofs": dofs,
                                                 "gamg_levels": levels, "per_rank": records}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run each rank count in its own mpiexec and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--degree", type=int, default=2, choices=(1, 2))
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--petsc-options", default="",
                        help="global PETSc options (PETSC_OPTIONS), e.g. '-matptap_via allatonce'")
    parser.add_argument("--name", default="probe_gamg_memory")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.single:
        return _single(args)
    from bench_solver import mpiexec_path

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for ranks in args.ranks:
            out = Path(tmp) / f"{ranks}.json"
            cmd = [mpiexec_path(), "-n", str(ranks), sys.executable, __file__, "--single",
                   str(out), "--n", str(args.n), "--degree", str(args.degree),
                   *(f"--option={o}" for o in args.option)]
            subprocess.run(cmd, check=True, capture_output=True, text=True,
                           env={**__import__("os").environ, "OMP_NUM_THREADS": "1",
                                "PETSC_OPTIONS": args.petsc_options})
            run = json.loads(out.read_text())
            print(f"{ranks} rank(s), {run['dofs']} DOFs: " + "; ".join(
                f"rank {r['rank']}: " + ", ".join(f"{k} {v}" for k, v in r.items() if k != "rank")
                for r in run["per_rank"]), flush=True)
            runs.append(run)
    path = save(args.name, {"n": args.n, "degree": args.degree, "options": args.option,
                            "petsc_options": args.petsc_options,
                            "runs": runs, "unit": "MB of RSS added by each step, per rank"})
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
