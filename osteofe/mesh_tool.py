"""``osteofe mesh``: a femur segmentation or surface -> a tetrahedral mesh file + a summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from fea.landmarks import find_landmarks
from fea.topology import boundary_faces
from meshing.errors import InputError
from meshing.imaging import align_labels, read_ct, read_labels
from meshing.meshio_io import write_mesh
from meshing.quality import check_quality, mesh_quality
from meshing.segmentation import resolve_bone_label, select_femur
from meshing.surface import read_surface
from meshing.volume import mesh_from_mask, mesh_from_surface, tag_cells
from osteofe.outputs import sha256_file, staged_output, write_json

__all__ = ["run_mesh"]

SURFACE_SUFFIXES = (".stl", ".ply", ".obj", ".vtk", ".vtp")


def _label(key: str) -> int | str:
    return int(key) if key.strip().lstrip("-").isdigit() else key


def run_mesh(
    out_path: str | Path,
    *,
    labels_path: Path | None = None,
    surface_path: Path | None = None,
    ct_path: Path | None = None,
    bone_label: str | None = None,
    lesion_labels: tuple[str, ...] = (),
    size_mm: float = 3.0,
    order: int = 1,
    min_dihedral_deg: float = 1.0,
    convention: str = "LPS",
) -> dict[str, Any]:
    """Mesh a labelled femur (or a closed surface) and write the mesh and a JSON summary.

    Args:
        out_path: Mesh file; its extension picks the format (.vtu, .msh, .inp, .xdmf).
            ``<out_path>.json`` receives the quality summary and the landmarks.
        labels_path: Label map (with ``ct_path`` giving the grid when they differ).
        surface_path: A closed surface (STL/PLY/OBJ/VTK) instead of labels.
        ct_path: Optional CT whose grid the labels are aligned to.
        bone_label: Femur label value or name; None infers it
            (:func:`meshing.segmentation.resolve_bone_label`).
        lesion_labels: Lesion label values or names (tagged 2).
        size_mm: Element size.
        order: 1 or 2.
        min_dihedral_deg: Refuse meshes with a smaller dihedral angle.
        convention: World convention of a surface for the landmarks (LPS, RAS, ISB).

    Returns:
        The summary written beside the mesh.

    Raises:
        OsteofeError: on bad input; nothing is written.
    """
    if (labels_path is None) == (surface_path is None):
        raise InputError("give exactly one of --labels and --surface",
                         hint="mesh a segmentation (--labels) or a closed surface (--surface)")
    out = Path(out_path)
    start = time.perf_counter()
    inputs: dict[str, Any] = {}
    if surface_path is not None:
        if Path(surface_path).suffix.lower() not in SURFACE_SUFFIXES:
            raise InputError(f"{surface_path} is not a surface file",
                             hint=f"use one of {', '.join(SURFACE_SUFFIXES)}")
        surface = read_surface(surface_path)
        mesh = mesh_from_surface(surface, size_mm=size_mm, order=order)
        # Landmarks from the (denser) input surface rather than a coarse mesh boundary.
        landmark_points = surface.points
        inputs["surface"] = {"path": str(surface_path), "sha256": sha256_file(surface_path)}
    else:
        assert labels_path is not None
        labels = read_labels(labels_path)
        if ct_path is not None:
            labels = align_labels(labels, read_ct(ct_path).grid)
            inputs["ct"] = {"path": str(ct_path), "sha256": sha256_file(ct_path)}
        bone_key = resolve_bone_label(labels, None if bone_label is None else _label(bone_label))
        bone, lesion = select_femur(labels, bone_key,
                                    [_label(k) for k in lesion_labels])
        mesh = mesh_from_mask(bone | lesion, labels.grid, size_mm=size_mm, order=order)
        if lesion.any():
            mesh = tag_cells(mesh, labels, sorted(int(v) for v in
                                                  np.unique(labels.labels[lesion])))
        inputs["labels"] = {"path": str(labels_path), "sha256": sha256_file(labels_path)}
        landmark_points = mesh.points[np.unique(boundary_faces(mesh))]
    quality = mesh_quality(mesh)
    check_quality(quality, min_dihedral_deg=min_dihedral_deg)
    landmarks = find_landmarks(landmark_points, convention=convention)
    summary = {
        "mesh_file": out.name,
        "num_nodes": mesh.num_nodes,
        "num_cells": mesh.num_cells,
        "order": mesh.order,
        "num_lesion_cells": int(np.count_nonzero(mesh.cell_tags == 2)),
        "size_mm": size_mm,
        "quality": quality.to_dict(),
        "landmarks": landmarks.to_dict(),
        "inputs": inputs,
        "wall_s": round(time.perf_counter() - start, 3),
    }
    # Both files appear together, the summary last, or neither does.
    with staged_output(out.parent, final_last=f"{out.name}.json") as stage:
        write_mesh(stage / out.name, mesh)
        write_json(stage / f"{out.name}.json", summary)
    return summary
