"""Where on the femur: anatomical regions of points, and where the criterion is not evaluated.

Domain rules of the failure stage, on plain arrays (moved here from the pipeline).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from core.types import BoolArray, IntArray
from fea.landmarks import FemurLandmarks
from meshing.types import TetMesh

__all__ = ["critical_region", "distal_exclusion_mm", "excluded_nodes"]


def critical_region(landmarks: FemurLandmarks, point: npt.NDArray[np.float64]) -> str:
    """Coarse anatomical region of a point (for reports).

    Head: within 1.1 head radii of its centre. Neck: between the head and the point where the
    neck axis meets the shaft axis, above the lesser trochanter. Trochanteric region: down to
    the lesser trochanter (or ~2.6 head radii below the head centre when it was not found).
    Shaft below.
    """
    local = landmarks.frame.to_local(point[None])[0]
    radius = landmarks.head_radius_mm
    if float(np.linalg.norm(local)) < 1.1 * radius:
        return "femoral head"
    lesser_level = -2.6 * radius
    if landmarks.lesser_trochanter_mm is not None:
        lesser_level = float(landmarks.frame.to_local(landmarks.lesser_trochanter_mm[None])[0][2])
    neck_axis, neck_base = landmarks.neck_axis, landmarks.neck_shaft_point_mm
    if neck_axis is not None and neck_base is not None and local[2] > lesser_level:
        along = float((landmarks.head_centre_mm - point) @ neck_axis)
        if 0.0 < along < float(np.linalg.norm(landmarks.head_centre_mm - neck_base)):
            return "femoral neck"
    elif neck_axis is None and float(np.linalg.norm(local)) < 2.2 * radius:
        return "femoral neck"
    if local[2] > lesser_level:
        return "trochanteric region"
    return "subtrochanteric / shaft"


def distal_exclusion_mm(landmarks: FemurLandmarks, exclude_distal_mm: float) -> float:
    """Length above the distal cut left out of the criterion.

    The configured length, but at most a quarter of the bone: a CT may hold only the proximal
    few centimetres of the femur.
    """
    return float(min(exclude_distal_mm, 0.25 * landmarks.length_mm))


def excluded_nodes(mesh: TetMesh, landmarks: FemurLandmarks, near_nodes: IntArray, *,
                   exclude_distal_mm: float, exclude_load_margin_mm: float,
                   soft_tag: int = 2) -> BoolArray:
    """Nodes where the criterion is not evaluated.

    Near the load patch, the ground contact and the distal fixation (artificial strain
    concentrations), and nodes surrounded only by soft (lesion) cells: the bone yield strains
    of the criterion do not apply to tumour tissue, so failure is sought in the bone around it.

    Args:
        mesh: The mesh.
        landmarks: Its landmarks (shaft axis, distal level, length).
        near_nodes: Nodes of the load patch and of any ground contact.
        exclude_distal_mm: Length above the distal cut to leave out (at most a quarter of
            the bone, :func:`distal_exclusion_mm`).
        exclude_load_margin_mm: Distance from ``near_nodes`` to leave out, mm.
        soft_tag: Cell tag of lesion tissue.

    Returns:
        (n,) bool, True where the criterion is not evaluated.
    """
    points = mesh.points
    level = points @ landmarks.shaft_axis
    excluded = level < landmarks.distal_level_mm + distal_exclusion_mm(landmarks,
                                                                        exclude_distal_mm)
    dist, _ = cKDTree(points[near_nodes]).query(points)
    excluded |= dist <= exclude_load_margin_mm
    touches_bone = np.zeros(mesh.num_nodes, dtype=bool)
    touches_bone[mesh.vertex_cells()[mesh.cell_tags != soft_tag].ravel()] = True
    return np.asarray(excluded | ~touches_bone)
