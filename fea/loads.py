"""Physiological load cases and where they act: head load patch and distal fixation.

Load directions are given in the anatomical frame of a RIGHT femur (x lateral, y anterior,
z proximal along the shaft) as the force acting ON the femoral head; they are mirrored for a
left femur by :class:`fea.landmarks.AnatomicalFrame`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fea.errors import BoundaryConditionError
from fea.landmarks import FemurLandmarks
from fea.topology import face_normals_and_areas

__all__ = [
    "GRAVITY_M_S2",
    "LOAD_CASES",
    "LoadCase",
    "LoadPatch",
    "body_weight_newton",
    "direction_from_angles",
    "distal_fixed_nodes",
    "head_load_patch",
]

#: Standard gravity, m/s^2 (1 BW = body mass [kg] x 9.81 N; DESIGN.md 3).
GRAVITY_M_S2 = 9.81


def body_weight_newton(body_mass_kg: float) -> float:
    """Body weight in N of a body mass in kg."""
    return float(body_mass_kg) * GRAVITY_M_S2


def direction_from_angles(frontal_deg: float, sagittal_deg: float) -> npt.NDArray[np.float64]:
    """Unit force direction on the head from its inclination to the shaft axis.

    Args:
        frontal_deg: Angle from the distal shaft direction (-z) towards lateral (+x), measured
            in the frontal plane.
        sagittal_deg: Angle from -z towards posterior (-y), measured in the sagittal plane.

    Returns:
        (3,) unit vector in the right-femur anatomical frame.
    """
    v = np.array([np.tan(np.radians(frontal_deg)), -np.tan(np.radians(sagittal_deg)), -1.0])
    return np.asarray(v / np.linalg.norm(v))


@dataclass(frozen=True)
class LoadCase:
    """A hip contact load: magnitude in body weights and direction on the head.

    Attributes:
        name: Identifier used on the command line (e.g. "stance").
        magnitude_bw: Peak resultant force in multiples of body weight.
        frontal_deg: Inclination from -z towards lateral in the frontal plane, deg.
        sagittal_deg: Inclination from -z towards posterior in the sagittal plane, deg.
        source: Citation of magnitude and direction.
    """

    name: str
    magnitude_bw: float
    frontal_deg: float
    sagittal_deg: float
    source: str

    @property
    def direction(self) -> npt.NDArray[np.float64]:
        """Unit direction of the force on the head (right-femur anatomical frame)."""
        return direction_from_angles(self.frontal_deg, self.sagittal_deg)

    def force_newton(self, body_mass_kg: float) -> float:
        """Resultant force magnitude in N for a patient of the given mass."""
        return self.magnitude_bw * body_weight_newton(body_mass_kg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "name": self.name,
            "magnitude_bw": self.magnitude_bw,
            "frontal_deg": self.frontal_deg,
            "sagittal_deg": self.sagittal_deg,
            "direction_right_femur": self.direction.round(5).tolist(),
            "source": self.source,
        }


_BERGMANN_2001 = (
    "Bergmann G et al. (2001) Hip contact forces and gait patterns from routine activities. "
    "J Biomech 34:859-871, doi:10.1016/S0021-9290(01)00040-9 (average patient, peak force). "
    "Directions: force on the head from medial to lateral and anterior to posterior, "
    "inclined ~13 deg (frontal) and ~8 deg (sagittal) to the femoral axis at the walking "
    "peak; the posterior component grows for stairs [directions approximate, to verify]."
)

#: Catalogue of load cases. Magnitudes: Bergmann et al. 2001 (walking 238 %BW, stairs up
#: 251 %BW, stairs down 260 %BW).
LOAD_CASES: dict[str, LoadCase] = {
    case.name: case
    for case in (
        LoadCase("stance", 2.38, 13.0, 8.0, _BERGMANN_2001),
        LoadCase("stairs_up", 2.51, 13.0, 15.0, _BERGMANN_2001),
        LoadCase("stairs_down", 2.60, 13.0, 11.0, _BERGMANN_2001),
    )
}


@dataclass(frozen=True)
class LoadPatch:
    """Surface patch over which a force is spread as a uniform traction.

    Attributes:
        faces: (f, 3) int64 boundary triangles (node indices) of the patch.
        nodes: (k,) int64 unique node indices of the patch.
        area_mm2: Total patch area.
        force_n: (3,) total force vector in world N.
    """

    faces: npt.NDArray[np.int64]
    nodes: npt.NDArray[np.int64]
    area_mm2: float
    force_n: npt.NDArray[np.float64]

    @property
    def traction_mpa(self) -> npt.NDArray[np.float64]:
        """Uniform traction (force per area) in N/mm^2 = MPa."""
        return np.asarray(self.force_n / self.area_mm2)


def head_load_patch(
    points: npt.NDArray[np.float64],
    boundary: npt.NDArray[np.int64],
    landmarks: FemurLandmarks,
    force_direction_world: npt.NDArray[np.float64],
    force_n: float,
    *,
    half_angle_deg: float = 30.0,
    shell_tol_mm: float = 2.5,
) -> LoadPatch:
    """Select the head surface a hip contact force presses on, as a spherical cap.

    The patch is every boundary triangle whose vertices lie on the head sphere (within
    ``shell_tol_mm``) and within ``half_angle_deg`` of the point where the force line through
    the head centre enters the head (opposite to the force direction).

    Args:
        points: (n, 3) mesh node coordinates, mm.
        boundary: (f, 3) outward-oriented boundary triangles.
        landmarks: Landmarks giving head centre and radius.
        force_direction_world: (3,) unit direction of the force on the head (world).
        force_n: Force magnitude, N.
        half_angle_deg: Half opening angle of the cap.
        shell_tol_mm: Radial tolerance around the fitted head sphere.

    Returns:
        The patch with its total force.

    Raises:
        BoundaryConditionError: when the patch is empty.
    """
    centre, radius = landmarks.head_centre_mm, landmarks.head_radius_mm
    pole = -np.asarray(force_direction_world, dtype=float)
    rel = points[boundary] - centre  # (f, 3, 3)
    dist = np.linalg.norm(rel, axis=2)
    cos_angle = (rel @ pole) / np.maximum(dist, 1e-12)
    on_cap = (np.abs(dist - radius) < shell_tol_mm) & (
        cos_angle > np.cos(np.radians(half_angle_deg))
    )
    faces = boundary[on_cap.all(axis=1)]
    if faces.shape[0] == 0:
        raise BoundaryConditionError(
            "no surface of the femoral head lies under the load direction",
            hint="check the head segmentation, or widen the load patch (half angle)",
        )
    _, areas = face_normals_and_areas(points, faces)
    return LoadPatch(
        faces=faces,
        nodes=np.unique(faces),
        area_mm2=float(areas.sum()),
        force_n=np.asarray(force_direction_world, dtype=float) * float(force_n),
    )


def distal_fixed_nodes(
    points: npt.NDArray[np.float64],
    boundary: npt.NDArray[np.int64],
    landmarks: FemurLandmarks,
    *,
    depth_mm: float = 2.0,
) -> npt.NDArray[np.int64]:
    """Boundary nodes at the distal cut (within ``depth_mm`` of the lowest level).

    Args:
        points: (n, 3) node coordinates, mm.
        boundary: (f, 3) boundary triangles.
        landmarks: Landmarks giving the shaft axis and distal level.
        depth_mm: Thickness of the fixed slab measured from the most distal point.

    Returns:
        (k,) int64 node indices to fix in all directions.
    """
    nodes = np.unique(boundary)
    level = points[nodes] @ landmarks.shaft_axis
    fixed = nodes[level < landmarks.distal_level_mm + depth_mm]
    if fixed.size < 3:
        raise BoundaryConditionError(
            "fewer than 3 nodes at the distal cut to fix",
            hint="the mesh must end in a distal cut (crop the femur below the trochanters)",
        )
    return fixed
