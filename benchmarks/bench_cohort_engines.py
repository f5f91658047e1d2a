"""Cohort engines: the embedded Dask cluster vs the process pool on the same cores, same run.

Usage: .venv/bin/python benchmarks/bench_cohort_engines.py [--cases 16] [--workers 2]
       [--mesh-size 6] [--repeats 1] [--work DIR]

A phantom cohort of ``--cases`` femurs (the intact phantom and the phantom with a 10 mm
lytic calcar lesion, alternating, 70 kg; 1.5 mm voxels, ``--mesh-size`` mm elements, P2, stance and
sideways fall) is run by ``osteofe.cohort.run_cohort`` once with ``engine="pool"`` and
once with ``engine="dask"`` (embedded LocalCluster), each with ``--workers`` worker
processes of one thread, each into a fresh output folder (nothing resumed). Wall time is
the whole ``run_cohort`` call: planning, starting and stopping the workers (the Dask
scheduler and nannies too), all cases, the tables. With ``--repeats`` > 1 the order
alternates (pool first, then Dask first, ...) and the medians are compared.

Results are compared case by case between the engines: load case, failure mode and
critical region must be equal, failure loads agree to the relative difference reported
(``max_rel_diff_between_engines``). For scale, the same inputs computed twice within one
engine differ by ``max_rel_diff_within_engine`` (the solver's last digits vary between
runs in one process). Also recorded: CPU cores the rest of the host used during each run
(the machine is shared). Writes benchmarks/results/cohort_engines.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages
from _common import save

from meshing.phantom import LesionParams, PhantomParams, make_phantom, write_phantom
from osteofe.cohort import run_cohort
from osteofe.config import Config

KEYS = ("load_case", "failure_mode", "critical_region")


def _host_busy_s() -> float:
    """CPU seconds the whole host spent busy so far (/proc/stat, all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _run(engine: str, manifest: Path, out: Path, config: Config, workers: int
         ) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    host0, cpu0, t0 = _host_busy_s(), _children_cpu_s(), time.perf_counter()
    summary = run_cohort(manifest, out, config, workers=workers, progress=False,
                         engine=engine)
    wall = time.perf_counter() - t0
    host, cpu = _host_busy_s() - host0, _children_cpu_s() - cpu0
    if summary.n_failed or summary.n_computed != summary.n_cases:
        raise SystemExit(f"{engine}: {summary.n_failed} cases failed: {summary.failures}")
    statuses = {}
    for case_dir in sorted((out / "cases").iterdir()):
        statuses[case_dir.name] = json.loads((case_dir / "status.json").read_text())
    return {"engine": engine, "wall_s": round(wall, 2), "workers": summary.workers,
            "cpu_s_this_run": round(cpu, 1),
            "others_load_cores": round(max(0.0, host - cpu) / wall, 2),
            "statuses": statuses}


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; print it and write benchmarks/results/cohort_engines.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mesh-size", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--name", default="cohort_engines")
    args = parser.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="osteofe-bench-engines-"))
    work.mkdir(parents=True, exist_ok=True)
    phantom = replace(PhantomParams(), voxel_size_mm=1.5, soft_tissue_mm=3.0,
                      distal_cut_mm=150.0)
    kinds = {"intact": None, "lesion": LesionParams(site="calcar", radius_mm=10.0)}
    for kind, lesion in kinds.items():
        if not (work / kind / "ct.nii.gz").is_file():
            write_phantom(make_phantom(phantom, lesion), work / kind)
    manifest = work / "manifest.csv"
    rows = [f"C{i:02d},{kind}/ct.nii.gz,{kind}/labels.nii.gz,70,right\n"
            for i, kind in zip(range(args.cases), ["intact", "lesion"] * args.cases,
                               strict=False)]
    manifest.write_text("case_id,ct,labels,body_mass_kg,side\n" + "".join(rows))
    config = Config().override("mesh", size_mm=args.mesh_size)

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    runs: list[dict[str, Any]] = []
    for r in range(args.repeats):
        order = ("pool", "dask") if r % 2 == 0 else ("dask", "pool")
        for engine in order:
            run = _run(engine, manifest, work / f"out_{engine}", config, args.workers)
            print(f"repeat {r}: {engine:4s} {run['wall_s']:7.1f} s  (others' load "
                  f"{run['others_load_cores']:.2f} cores)", flush=True)
            runs.append(run)

    walls = {e: statistics.median(x["wall_s"] for x in runs if x["engine"] == e)
             for e in ("pool", "dask")}
    ratio = walls["dask"] / walls["pool"]
    # Case-by-case agreement between the engines (last run of each) and within an engine.
    last = {e: next(x for x in reversed(runs) if x["engine"] == e) for e in ("pool", "dask")}
    between = 0.0
    same_categories = True
    for case_id, a in last["pool"]["statuses"].items():
        b = last["dask"]["statuses"][case_id]
        same_categories &= all(a[k] == b[k] for k in KEYS)
        between = max(between, abs(a["failure_load_N"] - b["failure_load_N"])
                      / abs(a["failure_load_N"]))
    within = 0.0  # cases with the same inputs (even rows intact, odd rows lesion)
    for run in runs:
        by_input: dict[int, list[float]] = {}
        for case_id, s in run["statuses"].items():
            by_input.setdefault(int(case_id[1:]) % 2, []).append(s["failure_load_N"])
        for loads in by_input.values():
            within = max(within, (max(loads) - min(loads)) / abs(min(loads)))
    identical = same_categories and between <= 1e-9
    per_case = {e: {c: {k: s[k] for k in ("failure_load_N", *KEYS, "wall_s", "pid")}
                    for c, s in last[e]["statuses"].items()} for e in ("pool", "dask")}
    payload = {
        "cases": args.cases, "workers": args.workers, "mesh_size_mm": args.mesh_size,
        "repeats": args.repeats,
        "wall_s": walls, "ratio_dask_over_pool": round(ratio, 3), "target_ratio": 1.1,
        "meets_target": ratio <= 1.1,
        "identical_results": identical,
        "same_load_case_mode_region": same_categories,
        "max_rel_diff_between_engines": between,
        "max_rel_diff_within_engine": within,
        "runs": [{k: v for k, v in x.items() if k != "statuses"} for x in runs],
        "per_case": per_case,
        "note": "2-core machine shared with other jobs: see others_load_cores of each run",
    }
    path = save(args.name, payload)
    print(f"pool {walls['pool']:.1f} s, dask {walls['dask']:.1f} s: ratio {ratio:.3f} "
          f"(target <= 1.1); results identical: {identical} (max rel. diff between engines "
          f"{between:.1e}, within an engine {within:.1e}) -> {path}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
