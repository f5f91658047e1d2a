"""Surface + volume meshing of a proximal femur at three element sizes.

Cases:

- ``phantom``: the synthetic right proximal femur of ``meshing.phantom`` (0.8 mm voxels,
  246 mm long) as a label mask: ``clean_mask`` + ``extract_surface`` + ``remesh_uniform``
  (the "surface" time), then ``tetrahedralize`` with the remeshed boundary as given (the
  "volume" time) - the steps of ``mesh_from_mask``;
- ``tlem2 proximal``: the real TLEM 2.0 femur surface (``../shared/data/femur_surfaces``,
  skipped when absent) voxelised at 0.8 mm and cut 220 mm below the top of its head by an
  image plane, as a segmented CT of the hip gives it (untimed), then the same steps as the
  phantom. (Cutting the STL itself with ``clip_surface`` leaves a sharp rim: uniform
  remeshing refuses it and gmsh's remeshing leaves slivers there, so the mask route is the
  one measured.)
- ``phantom graded``: the phantom with 1.5 mm elements at the surface growing to 3 mm inside
  (``surface_size_mm``), to show the cost of cortical refinement.

Every row reports tetrahedra, nodes, seconds (surface, volume, total), elements per second
of the total, the smallest dihedral angle and the inverted-cell count. gmsh runs HXT with
``--threads`` threads (default: all cores) and the gmsh + Netgen optimisers (the defaults of
``mesh_from_mask``). Target (issue "Real scans in, trustworthy meshes out"): a 200k-element
proximal femur mesh in under 60 s on the development machine.

Usage: .venv/bin/python benchmarks/bench_meshing.py [--sizes 3 2 1.55] [--threads N]
[--order 1|2] [--no-real]
Writes ``benchmarks/results/meshing.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import save  # noqa: E402

from meshing.phantom import PhantomParams, make_phantom  # noqa: E402
from meshing.quality import mesh_quality  # noqa: E402
from meshing.surface import (  # noqa: E402
    clean_mask,
    extract_surface,
    read_surface,
    remesh_uniform,
)
from meshing.types import ImageGrid, SurfaceMesh, TetMesh  # noqa: E402
from meshing.volume import tetrahedralize  # noqa: E402

FEMUR = ROOT.parent / "shared" / "data" / "femur_surfaces" / "tlem2_femur_r.stl"
PROXIMAL_MM = 220.0
TARGET_CELLS, TARGET_S = 200_000, 60.0


def proximal_mask(surface: SurfaceMesh, length_mm: float, voxel_mm: float
                  ) -> tuple[np.ndarray, ImageGrid, str]:
    """A label mask of the proximal ``length_mm`` of a whole-femur surface, as a CT gives.

    The surface is voxelised (VTK's polydata-to-stencil, voxel centres inside) on an
    axis-aligned grid; the shaft axis is the principal axis of the vertices and the
    proximal end is the one whose 12 mm end slab is narrower across the axis (the top of
    the head, against the two condyles). The mask is then cut by the image plane most
    normal to the shaft, ``length_mm`` below the top of the head - as the last axial slice
    of a CT of the hip would cut it.
    """
    import pyvista as pv

    centre = surface.points.mean(axis=0)
    axis = np.linalg.svd(surface.points - centre, full_matrices=False)[2][0]
    t = (surface.points - centre) @ axis
    across = (surface.points - centre) - np.outer(t, axis)
    width = {}
    for sign, end in ((1.0, t.max()), (-1.0, t.min())):
        slab = across[np.abs(t - end) < 12.0]
        width[sign] = float(np.ptp(slab, axis=0).max())
    sign = 1.0 if width[1.0] < width[-1.0] else -1.0
    shaft = sign * axis  # towards the head
    image_axis = int(np.argmax(np.abs(shaft)))
    lower = surface.points.min(axis=0) - 3.0
    upper = surface.points.max(axis=0) + 3.0
    ni, nj, nk = (int(v) for v in np.ceil((upper - lower) / voxel_mm) + 1)
    shape = (ni, nj, nk)
    grid = ImageGrid(shape, np.full(3, voxel_mm), lower)
    poly = pv.PolyData(surface.points, np.column_stack(
        [np.full(surface.triangles.shape[0], 3), surface.triangles]).ravel())
    reference = pv.ImageData(dimensions=shape, spacing=(voxel_mm,) * 3, origin=tuple(lower))
    stencil = poly.voxelize_binary_mask(reference_volume=reference)
    mask = np.asarray(stencil.point_data["mask"]).reshape(shape, order="F") > 0
    coordinate = grid.index_to_world(np.indices(shape).reshape(3, -1).T)[:, image_axis]
    top = surface.points[:, image_axis].max() if shaft[image_axis] > 0 else \
        surface.points[:, image_axis].min()
    keep = (coordinate - top) * np.sign(shaft[image_axis]) > -length_mm
    mask &= keep.reshape(shape)
    note = (f"shaft axis {np.round(shaft, 3).tolist()} (end slab widths {width[sign]:.0f} mm "
            f"proximal vs {width[-sign]:.0f} mm distal); voxelised at {voxel_mm:g} mm "
            f"({np.count_nonzero(mask) * voxel_mm**3 / 1e3:.0f} cm^3 kept), cut by the "
            f"image plane normal to axis {'xyz'[image_axis]}")
    return mask, grid, note


def run_case(name: str, surface_step: Any, size_mm: float, order: int, threads: int,
             **kwargs: Any) -> dict[str, Any]:
    """Time the surface step and the volume meshing of one case at one size."""
    start = time.perf_counter()
    boundary = surface_step()
    surface_s = time.perf_counter() - start
    start = time.perf_counter()
    mesh: TetMesh = tetrahedralize(boundary, size_mm=size_mm, order=order, num_threads=threads,
                                   remesh_boundary=False, **kwargs)
    volume_s = time.perf_counter() - start
    quality = mesh_quality(mesh)
    total = surface_s + volume_s
    row = {
        "case": name, "size_mm": size_mm, "order": order, "tets": mesh.num_cells,
        "nodes": mesh.num_nodes, "surface_triangles": int(boundary.triangles.shape[0]),
        "surface_s": round(surface_s, 2), "volume_s": round(volume_s, 2),
        "total_s": round(total, 2), "elements_per_s": round(mesh.num_cells / total),
        "min_dihedral_deg": round(quality.min_dihedral_deg, 2),
        "mean_radius_ratio": round(quality.mean_radius_ratio, 3),
        "num_inverted": quality.num_inverted,
    }
    row.update({k: v for k, v in kwargs.items() if isinstance(v, int | float)})
    print(f"  {name:15s} {size_mm:5.2f} mm: {mesh.num_cells:7d} tets in {total:6.1f} s "
          f"(surface {surface_s:.1f} s), min dihedral {quality.min_dihedral_deg:.1f} deg",
          flush=True)
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table."""
    lines = ["| case | size mm | tets | nodes | surface s | volume s | total s | elements/s "
             "| min dihedral deg | inverted |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        size = f"{r['size_mm']:g}"
        if "surface_size_mm" in r:
            size = f"{r['surface_size_mm']:g} -> {r['size_mm']:g}"
        lines.append(f"| {r['case']} | {size} | {r['tets']:,} | {r['nodes']:,} | "
                     f"{r['surface_s']:.1f} | {r['volume_s']:.1f} | {r['total_s']:.1f} | "
                     f"{r['elements_per_s']:,} | {r['min_dihedral_deg']:.1f} | "
                     f"{r['num_inverted']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[3.0, 2.0, 1.55])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--order", type=int, default=1, choices=(1, 2))
    parser.add_argument("--no-real", action="store_true", help="skip the real femur")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    phantom = make_phantom(PhantomParams())
    phantom_s = time.perf_counter() - start
    grid = phantom.ct.grid
    mask = phantom.labels.labels > 0
    print(f"phantom: {grid.shape} voxels of {grid.spacing[0]} mm, made in {phantom_s:.1f} s")

    def phantom_surface(edge: float) -> Any:
        return lambda: remesh_uniform(extract_surface(clean_mask(mask, grid=grid), grid), edge)

    for size in args.sizes:
        rows.append(run_case("phantom", phantom_surface(size), size, args.order, args.threads))
    rows.append(run_case("phantom graded", phantom_surface(1.5), 3.0, args.order,
                         args.threads, surface_size_mm=1.5, transition_mm=6.0))

    real_note = "real femur surface not found"
    if FEMUR.is_file() and not args.no_real:
        femur_mask, femur_grid, note = proximal_mask(read_surface(FEMUR), PROXIMAL_MM, 0.8)
        real_note = f"{FEMUR.name}, proximal {PROXIMAL_MM:g} mm: {note}"
        print(real_note)

        def femur_surface(edge: float) -> Any:
            return lambda: remesh_uniform(
                extract_surface(clean_mask(femur_mask, grid=femur_grid), femur_grid), edge)

        for size in args.sizes:
            rows.append(run_case("tlem2 proximal", femur_surface(size), size, args.order,
                                 args.threads))

    big = [r for r in rows if r["tets"] >= TARGET_CELLS]
    met = bool(big) and all(r["total_s"] < TARGET_S for r in big)
    table = markdown(rows)
    print()
    print(table)
    print(f"\ntarget: >= {TARGET_CELLS:,} tets in < {TARGET_S:g} s: "
          f"{'met' if met else 'NOT met'} ({', '.join(f'{r['case']} {r['tets']:,} tets '
                                                   f'{r['total_s']:.1f} s' for r in big)})")
    path = save("meshing", {
        "target": {"tets": TARGET_CELLS, "seconds": TARGET_S, "met": met},
        "threads": args.threads, "order": args.order, "phantom_grid": list(grid.shape),
        "phantom_voxel_mm": float(grid.spacing[0]), "real_femur": real_note,
        "rows": rows, "markdown": table,
    })
    print(f"-> {path}")


if __name__ == "__main__":
    main()
