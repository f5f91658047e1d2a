"""Memory per MPI rank of one whole strength analysis: 2 ranks vs serial, and where it goes.

Usage: .venv/bin/python benchmarks/bench_memory_ranks.py [--mesh-size 1.55] [--ranks 1 2]
       [--voxel 0.8] [--name memory_ranks] [--imports-probe]

The phantom femur (``--voxel`` mm voxels) is analysed by ``osteofe.pipeline.run_strength``
(P2, stance, no picture) at ``--mesh-size`` mm elements (1.55 mm: about 1e6 DOFs), once per
rank count, each in a fresh ``mpiexec -n R`` subprocess (``--single``), so that each peak
belongs to that run alone. In each rank a thread samples the resident set size (psutil,
every 20 ms); the peak RSS per rank is the larger of that and ``getrusage`` maxrss.
To show where the memory goes, the RSS of every rank is also recorded at the end of each
pipeline stage (``read``, ``mesh``, ``material``, ... timed by ``osteofe.pipeline``), after
the prepared model reached the rank (``broadcast``), after the FE model's DOLFINx mesh
(``fe_create_mesh``), matrix (``fe_assemble_matrix``) and GAMG set-up (``fe_gamg_setup``),
after the whole FE model (``fe_model``) and after each solve (``solve``, with the bytes of
the displacement/strain fields this rank holds: all of them serially, its own rows under
MPI), plus the bytes of the full TetMesh each rank holds. Each record's ``peak_so_far_mb``
is ``getrusage`` maxrss at that point (exact high-water mark), ``sampled_peak_mb`` the
sampler's: a transient inside C code that holds the GIL (PETSc's GAMG set-up) is seen by
maxrss only.

Target (issue "scale out"): peak RSS per rank on 2 ranks <= 0.6 x the serial peak.
Writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages
from _common import provenance, save

MB = 1024.0 * 1024.0


def _rss() -> int:
    """Resident set size of this process, bytes (psutil where installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return int(psutil.Process().memory_info().rss)


class _Sampler:
    """Peak RSS of this process, sampled from a daemon thread."""

    def __init__(self, period_s: float = 0.02) -> None:
        self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period_s,), daemon=True)
        self._thread.start()

    def _run(self, period_s: float) -> None:
        while not self._stop.wait(period_s):
            self.peak = max(self.peak, _rss())

    def rss(self) -> int:
        rss = _rss()
        self.peak = max(self.peak, rss)
        return rss

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return max(self.peak, maxrss)


def _single(args: argparse.Namespace) -> int:
    """One analysis on all ranks of this mpiexec; rank 0 writes the per-rank records."""
    import dolfinx_solver  # noqa: F401  (before dolfinx/petsc4py)
    from mpi4py import MPI

    import fea.solver as solver
    import osteofe.pipeline as pipeline
    from meshing.phantom import PhantomParams, make_phantom, write_phantom
    from osteofe.config import Config

    comm = MPI.COMM_WORLD
    sampler = _Sampler()
    stages: list[dict[str, Any]] = []
    fields: dict[str, Any] = {}

    def mark(stage: str, **extra: Any) -> None:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        stages.append({"stage": stage, "rss_mb": round(sampler.rss() / MB, 1),
                       "peak_so_far_mb": round(max(sampler.peak, maxrss) / MB, 1),
                       "sampled_peak_mb": round(sampler.peak / MB, 1), **extra})

    original_timed = pipeline._timed

    @contextmanager
    def timed(timings: dict[str, float], name: str) -> Any:
        with original_timed(timings, name):
            yield
        mark(name)

    original_on_root = pipeline.on_root
    calls = {"n": 0}

    def on_root(c: Any, fn: Any, **kwargs: Any) -> Any:
        result = original_on_root(c, fn, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1 and hasattr(result, "mesh"):
            mesh = result.mesh
            fields["full_tetmesh_bytes"] = int(mesh.points.nbytes + mesh.cells.nbytes)
            fields["num_nodes"] = int(mesh.points.shape[0])
            fields["num_cells"] = int(mesh.cells.shape[0])
            # The preparation's child process (solver.isolate_preparation), if any: it has
            # exited before the FE model is built (its peak is not concurrent with the FE's).
            fields["preparation_child_peak_mb"] = result.process_peak_rss_mb
            mark("broadcast")
        return result

    original_init = solver.ElasticModel.__init__
    original_solve = solver.ElasticModel.solve

    def init(self: Any, *a: Any, **k: Any) -> None:
        original_init(self, *a, **k)
        mark("fe_model", num_dofs=int(self.num_dofs))

    def solve(self: Any, *a: Any, **k: Any) -> Any:
        sol = original_solve(self, *a, **k)
        held = sum(int(getattr(sol, n).nbytes) for n in
                   ("displacement_mm", "strain", "vertex_strain")
                   if getattr(sol, n, None) is not None)
        # Gathered (serial) or this rank's rows only (distributed, under MPI).
        fields["field_bytes_per_solve_this_rank"] = held
        fields["fields_distributed"] = bool(getattr(sol, "distributed", False))
        mark("solve", fields_mb_this_rank=round(held / MB, 1))
        return sol

    def after(name: str, fn: Any) -> Any:
        def wrapped(*a: Any, **k: Any) -> Any:
            out = fn(*a, **k)
            mark(name)
            return out
        return wrapped

    # Sub-stages of the FE model (C code holding the GIL: only maxrss sees their transients).
    solver.dolfinx.mesh.create_mesh = after("fe_create_mesh", solver.dolfinx.mesh.create_mesh)
    solver.dolfinx.fem.petsc.assemble_matrix = after(
        "fe_assemble_matrix", solver.dolfinx.fem.petsc.assemble_matrix)
    solver.ElasticModel._set_up_solver = after(  # type: ignore[method-assign]
        "fe_gamg_setup", solver.ElasticModel._set_up_solver)
    import fea.failure as failure

    original_surface = failure.StrainCriterion.surface_strain

    def surface_strain(self: Any, *a: Any, **k: Any) -> Any:
        out = original_surface(self, *a, **k)
        # The (k, 3, 3) surface tensors every rank gets (Allreduce under MPI).
        fields["criterion_surface_tensor_bytes"] = int(out.nbytes)
        fields["evaluated_surface_nodes"] = int(out.shape[0])
        return out

    failure.StrainCriterion.surface_strain = surface_strain  # type: ignore[method-assign]
    if args.before:  # the set-up as it was: GAMG keeps its product data
        args.petsc_option = [*args.petsc_option, "mat_product_clear=0"]
    pipeline._timed = timed
    pipeline.on_root = on_root
    solver.ElasticModel.__init__ = init  # type: ignore[method-assign]
    solver.ElasticModel.solve = solve  # type: ignore[method-assign]

    work = Path(args.work)
    if comm.rank == 0 and not (work / "phantom" / "ct.nii.gz").is_file():
        write_phantom(make_phantom(replace(PhantomParams(), voxel_size_mm=args.voxel)),
                      work / "phantom")
    comm.Barrier()
    mark("start")
    config = (Config().override("mesh", size_mm=args.mesh_size)
              .override("load", cases=("stance",)))
    if args.petsc_option:
        config = config.override("solver", petsc_options=dict(
            o.split("=", 1) for o in args.petsc_option))
    config = config.override("solver", isolate_preparation=args.isolate_preparation,
                             p_multigrid=not args.gamg_on_p2)
    request = pipeline.StrengthRequest(work / "phantom" / "ct.nii.gz",
                                       work / "phantom" / "labels.nii.gz", body_mass_kg=70.0)
    t0 = time.perf_counter()
    result = pipeline.run_strength(request, config, work / f"out_{comm.size}", comm=comm,
                                   picture=False).to_dict()
    wall = time.perf_counter() - t0
    peak = sampler.stop()
    record = {"rank": comm.rank, "peak_rss_mb": round(peak / MB, 1), "stages": stages,
              **fields}
    records = comm.gather(record, root=0)
    if comm.rank == 0:
        Path(args.single).write_text(json.dumps({
            "ranks": comm.size, "wall_s": round(wall, 1),
            "num_dofs": result["solver"]["num_dofs"],
            "iterations": result["solver"]["iterations"],
            "distribution": result["solver"].get("distribution"),
            "solver_timings_s": {k: v for k, v in result.get("timings_s", {}).items()
                                 if k.startswith("solver_") or k in ("solve_total",
                                                                     "distribute")},
            "failure_load_N": result["failure_load_N"], "per_rank": records}))
    return 0


def _imports_probe() -> int:
    """RSS after the analysis' imports, then after the libraries only preparation loads."""
    import dolfinx_solver  # noqa: F401  (before dolfinx/petsc4py)

    import fea.solver  # noqa: F401
    import osteofe.pipeline  # noqa: F401

    base = _rss() / MB
    import gmsh  # noqa: F401
    import numba  # noqa: F401
    import pyvista  # noqa: F401
    import SimpleITK  # noqa: F401
    import vtk  # noqa: F401

    more = _rss() / MB
    print(f"RSS after the analysis' imports {base:.0f} MB; + gmsh, SimpleITK, numba, pyvista, "
          f"vtk (loaded by the preparation on rank 0 only): {more:.0f} MB "
          f"(+{more - base:.0f} MB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run every rank count in its own mpiexec; compare the peaks; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh-size", type=float, default=1.55)
    parser.add_argument("--voxel", type=float, default=0.8)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--petsc-option", action="append", default=[], metavar="KEY=VALUE",
                        help="solver.petsc_options of the analysis (e.g. mat_product_clear=0 "
                             "for the set-up before it freed its product intermediates)")
    parser.add_argument("--before", action="store_true",
                        help="the analysis as before the memory work (GAMG product data kept: "
                             "mat_product_clear=0)")
    from osteofe.config import ISOLATION_CHOICES, SolverConfig

    parser.add_argument("--isolate-preparation", default=SolverConfig.isolate_preparation,
                        choices=ISOLATION_CHOICES,
                        help="solver.isolate_preparation of the runs (default: the config's)")
    parser.add_argument("--gamg-on-p2", action="store_true",
                        help="solver.p_multigrid = false: GAMG on the P2 matrix, as before")
    parser.add_argument("--name", default="memory_ranks")
    parser.add_argument("--work", help="work folder (default: a temporary one)")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    parser.add_argument("--imports-probe", action="store_true",
                        help="only print the RSS the preparation's libraries add (rank 0's "
                             "residue through the solve)")
    args = parser.parse_args(argv)
    if args.imports_probe:
        return _imports_probe()
    if args.single:
        return _single(args)

    work = Path(args.work or tempfile.mkdtemp(prefix="osteofe-bench-memory-"))
    from bench_solver import mpiexec_path  # the venv's mpiexec, else the PATH's

    mpiexec = mpiexec_path()
    runs = []
    for ranks in args.ranks:
        out = work / f"run_{ranks}.json"
        cmd = [mpiexec, "-n", str(ranks), sys.executable, __file__, "--single", str(out),
               "--mesh-size", str(args.mesh_size), "--voxel", str(args.voxel),
               "--work", str(work), *(f"--petsc-option={o}" for o in args.petsc_option),
               "--isolate-preparation", args.isolate_preparation,
               *(["--before"] if args.before else []),
               *(["--gamg-on-p2"] if args.gamg_on_p2 else [])]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{ranks} ranks failed (exit {proc.returncode})")
        run = json.loads(out.read_text())
        peaks = [r["peak_rss_mb"] for r in run["per_rank"]]
        child = run["per_rank"][0].get("preparation_child_peak_mb")
        print(f"{ranks} rank(s): {run['num_dofs']} DOFs, {run['wall_s']} s, iterations "
              f"{run['iterations']}, failure load {run['failure_load_N']!r} N, peak RSS per "
              f"rank {peaks} MB (preparation child: {child} MB)", flush=True)
        runs.append(run)
    serial = next((r for r in runs if r["ranks"] == 1), None)
    ratios = {}
    if serial is not None:
        base = serial["per_rank"][0]["peak_rss_mb"]
        for run in runs:
            ratios[str(run["ranks"])] = round(max(r["peak_rss_mb"] for r in run["per_rank"])
                                              / base, 3)
    payload = {"mesh_size_mm": args.mesh_size, "voxel_mm": args.voxel,
               "petsc_options": args.petsc_option, "before": args.before,
               "isolate_preparation": args.isolate_preparation,
               "p_multigrid": not args.gamg_on_p2,
               "peak_ratio_max_rank_over_serial": ratios, "target_ratio_2_ranks": 0.6,
               "runs": runs, "provenance": provenance(ranks=max(args.ranks)),
               "note": "2-core machine shared with other jobs (RSS is not affected by their "
                       "load; wall times are)"}
    path = save(args.name, payload)
    print(f"peak RSS of the largest rank / serial peak: {ratios} (target <= 0.6 at 2) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
