"""Benchmark of the CT -> mesh sampler: numba kernel vs numpy reference, one thread.

A synthetic ~1,000,000-tetrahedron structured mesh (55^3 cubes, 6 tets each) filling most of
a 512^3 float32 CT (0.7 x 0.7 x 1.0 mm voxels, oblique direction cosines) is sampled with the
default 4-point rule. The numpy reference runs on a 100,000-cell subset (its memory grows with
the cell count) next to the kernel on the same subset, both in elements/s, and the two are
checked to agree there. A run with the cells shuffled shows the cost of poor memory locality.
The public mapping entry points are timed end to end as well: the three modes of
``map_material`` (HU average, E average, centroid voxel lookup), ``map_material_qp`` (E at the
4 points of every cell) and ``bin_moduli`` (256 log-spaced groups).
Prints a table and writes ``benchmarks/results/material.json``.

Run: ``.venv/bin/python benchmarks/bench_material.py [--cubes 55] [--ct 512]``.
"""

# ruff: noqa: E402 - the thread limits must be set before numpy and numba are imported
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # one thread everywhere, set before numpy/numba load

import argparse
import functools
import itertools
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from material import (
    LinearCalibration,
    MaterialModel,
    bin_moduli,
    map_material,
    map_material_qp,
    sample_cells_hu,
    sample_cells_hu_reference,
)
from material.mapping import (
    _cell_mean_hu_kernel,
    quadrature_rule,
    world_to_index_affine,
)
from meshing.types import CTVolume, ImageGrid, TetMesh

RESULTS = REPO / "benchmarks" / "results" / "material.json"


def box_mesh(grid: ImageGrid, lower: float, upper: float, cubes: int) -> TetMesh:
    """Structured Kuhn mesh (6 tets per cube) of the index-space cube [lower, upper]^3."""
    axis = np.linspace(lower, upper, cubes + 1)
    ijk = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    points = grid.index_to_world(ijk)
    c = np.arange(cubes)
    ci, cj, ck = (a.ravel() for a in np.meshgrid(c, c, c, indexing="ij"))
    n1 = cubes + 1
    tets = []
    for perm in itertools.permutations(range(3)):
        step = np.zeros(3, dtype=np.int64)
        corners = [(ci * n1 + cj) * n1 + ck]
        for ax in perm:
            step[ax] += 1
            corners.append(((ci + step[0]) * n1 + cj + step[1]) * n1 + ck + step[2])
        tets.append(np.stack(corners, axis=1))
    cells = np.concatenate(tets)
    return TetMesh(points, cells, np.ones(len(cells), dtype=np.int32))


def best_of(repeats: int, func: Callable[[], Any]) -> tuple[float, Any]:
    """Smallest wall time (s) of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def machine() -> dict[str, Any]:
    """Machine description for the JSON record."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def commit() -> str | None:
    """Current git commit, or None outside a repository / before the first commit."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cubes", type=int, default=55, help="cubes per side (6 tets each)")
    parser.add_argument("--ct", type=int, default=512, help="CT voxels per side")
    parser.add_argument("--subset", type=int, default=100_000, help="cells for numpy")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    load_start = os.getloadavg()
    rng = np.random.default_rng(0)
    n = args.ct
    c, s = np.cos(0.2), np.sin(0.2)
    grid = ImageGrid((n, n, n), spacing=np.array([0.7, 0.7, 1.0]),
                     origin=np.array([-180.0, -200.0, 900.0]),
                     direction=np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]))
    start = time.perf_counter()
    hu = rng.standard_normal((n, n, n), dtype=np.float32)
    hu *= 300.0
    hu += 400.0
    ct = CTVolume(grid, hu)
    make_ct_s = time.perf_counter() - start
    mesh = box_mesh(grid, 0.04 * n, 0.96 * n, args.cubes)
    m = mesh.num_cells
    model = MaterialModel(LinearCalibration(0.0008, -0.01, "bench", "synthetic"))

    # compile (or load the numba cache) on a tiny mesh, timed separately
    start = time.perf_counter()
    small = TetMesh(mesh.points, mesh.cells[:10], mesh.cell_tags[:10])
    sample_cells_hu(small, ct)
    warmup_s = time.perf_counter() - start

    rows: list[dict[str, Any]] = []

    def record(name: str, cells: int, seconds: float) -> None:
        rows.append({"case": name, "cells": cells, "seconds": seconds,
                     "cells_per_s": cells / seconds})

    # numba kernel alone (plain arrays prepared once), then the public function end to end
    matrix, origin = world_to_index_affine(grid)
    tets = np.ascontiguousarray(mesh.vertex_cells())
    bary, weights = quadrature_rule(2)
    t, fast = best_of(args.repeats, lambda: _cell_mean_hu_kernel(
        mesh.points, tets, ct.hu, matrix, origin, bary, weights))
    record("numba kernel, degree 2 (4 pts)", m, t)
    t, fast_api = best_of(args.repeats, lambda: sample_cells_hu(mesh, ct))
    record("sample_cells_hu, degree 2 (incl. checks)", m, t)
    assert np.array_equal(fast, fast_api)
    for degree in (1, 3):
        t, _ = best_of(args.repeats,
                       functools.partial(sample_cells_hu, mesh, ct, quadrature_degree=degree))
        points = quadrature_rule(degree)[0].shape[0]
        record(f"sample_cells_hu, degree {degree} ({points} pts)", m, t)
    shuffled = TetMesh(mesh.points, mesh.cells[rng.permutation(m)], mesh.cell_tags)
    t, _ = best_of(args.repeats, lambda: sample_cells_hu(shuffled, ct))
    record("sample_cells_hu, degree 2, cells shuffled", m, t)
    t, field = best_of(args.repeats, lambda: map_material(mesh, ct, model))
    record("map_material (hu_average, degree 2)", m, t)
    t, _ = best_of(args.repeats, lambda: map_material(mesh, ct, model, mode="modulus_average"))
    record("map_material (modulus_average, degree 2)", m, t)
    t, _ = best_of(args.repeats, lambda: map_material(mesh, ct, model, mode="centroid"))
    record("map_material (centroid voxel lookup)", m, t)
    t, _ = best_of(args.repeats, lambda: map_material_qp(mesh, ct, model))
    record("map_material_qp, degree 2 (E at 4 pts)", m, t)
    t, groups = best_of(args.repeats, lambda: bin_moduli(field.E_MPa, 256))
    record("bin_moduli, 256 groups", m, t)

    # numpy reference on a subset
    k = min(args.subset, m)
    subset = TetMesh(mesh.points, mesh.cells[:k], mesh.cell_tags[:k])
    t_ref, reference = best_of(max(1, args.repeats - 1),
                               lambda: sample_cells_hu_reference(subset, ct))
    sub_tets = np.ascontiguousarray(subset.vertex_cells())
    t_sub, _ = best_of(args.repeats, lambda: _cell_mean_hu_kernel(
        subset.points, sub_tets, ct.hu, matrix, origin, bary, weights))
    record("numba kernel, degree 2 (same subset)", k, t_sub)
    record("numpy reference, degree 2 (same subset)", k, t_ref)
    max_rel = float(np.max(np.abs(reference - fast[:k]) / np.maximum(np.abs(reference), 1.0)))

    numba_rate = rows[-2]["cells_per_s"]  # same cells for both
    numpy_rate = rows[-1]["cells_per_s"]
    print(f"mesh {m:,} tets, {mesh.num_nodes:,} nodes; CT {n}^3 float32 "
          f"({ct.hu.nbytes / 2**20:.0f} MiB, built in {make_ct_s:.1f} s); "
          f"numba warm-up {warmup_s:.2f} s; one thread")
    print(f"{'case':<44} {'cells':>10} {'time [s]':>10} {'cells/s':>14}")
    for row in rows:
        print(f"{row['case']:<44} {row['cells']:>10,} {row['seconds']:>10.3f} "
              f"{row['cells_per_s']:>14,.0f}")
    print(f"numba kernel / numpy reference on the same cells: {numba_rate / numpy_rate:.1f}x; "
          f"max relative difference on the subset {max_rel:.2e}")
    print(f"bin_moduli: {groups.num_groups} groups, max relative error "
          f"{groups.max_rel_error:.2e}; load average {load_start[0]:.1f} -> "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} logical CPUs")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record_json = {
        "benchmark": "material.sample_cells_hu",
        "commit": commit(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"numpy": np.__version__, "numba": numba.__version__,
                     "python": platform.python_version()},
        "machine": machine(),
        # other processes compete for the cores when the load exceeds the core count: then
        # compare only ratios measured in the same run
        "load_average_1_5_15min": {"start": list(load_start), "end": list(os.getloadavg())},
        "threads": 1,
        "ranks": 1,
        "setup": {"cells": m, "nodes": mesh.num_nodes, "ct_shape": [n, n, n],
                  "ct_spacing_mm": grid.spacing.tolist(), "numpy_subset_cells": k,
                  "numba_warmup_s": warmup_s},
        "results": rows,
        "speedup_numba_kernel_vs_numpy": numba_rate / numpy_rate,
        "max_relative_difference": max_rel,
        "bin_moduli_256_max_rel_error": groups.max_rel_error,
    }
    RESULTS.write_text(json.dumps(record_json, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
