"""Physiological load cases and where they act: head load patch and distal fixation.

Load directions are given in the anatomical frame of a RIGHT femur (x lateral, y anterior,
z proximal along the shaft) as the force acting ON the femoral head; they are mirrored for a
left femur by :class:`fea.landmarks.AnatomicalFrame`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

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
    "custom_load_case",
    "direction_from_angles",
    "distal_fixed_nodes",
    "fall_direction",
    "ground_contact_nodes",
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


SupportKind = Literal["distal", "fall"]


@dataclass(frozen=True)
class LoadCase:
    """A load on the femoral head: magnitude, direction and how the femur is supported.

    Attributes:
        name: Identifier used on the command line (e.g. "stance").
        direction: (3,) unit direction of the force on the head in the right-femur
            anatomical frame (x lateral, y anterior, z proximal).
        source: Citation of magnitude and direction.
        magnitude_bw: Force in multiples of body weight (None when given in N).
        magnitude_n: Force in N (for loads that do not scale with body weight).
        support: "distal": the distal cut is fixed; "fall": the distal cut is fixed and the
            greater trochanter rests on the ground (its contact patch is fixed).
    """

    name: str
    direction: tuple[float, float, float]
    source: str
    magnitude_bw: float | None = None
    magnitude_n: float | None = None
    support: SupportKind = "distal"

    def __post_init__(self) -> None:
        vec = np.asarray(self.direction, dtype=float)
        norm = float(np.linalg.norm(vec))
        if vec.shape != (3,) or not np.isfinite(norm) or norm == 0.0:
            raise ValueError(f"load case {self.name!r}: direction must be a non-zero 3-vector")
        object.__setattr__(self, "direction", tuple(float(v) for v in vec / norm))
        if (self.magnitude_bw is None) == (self.magnitude_n is None):
            raise ValueError(f"load case {self.name!r}: give magnitude_bw or magnitude_n")
        magnitude = self.magnitude_bw if self.magnitude_bw is not None else self.magnitude_n
        if magnitude is None or not magnitude > 0.0:
            raise ValueError(f"load case {self.name!r}: magnitude must be positive")

    @classmethod
    def from_angles(cls, name: str, magnitude_bw: float, frontal_deg: float,
                    sagittal_deg: float, source: str) -> LoadCase:
        """A body-weight load inclined to the shaft axis (see :func:`direction_from_angles`)."""
        direction = direction_from_angles(frontal_deg, sagittal_deg)
        return cls(name, (direction[0], direction[1], direction[2]), source,
                   magnitude_bw=magnitude_bw)

    @property
    def unit_direction(self) -> npt.NDArray[np.float64]:
        """Unit direction of the force on the head (right-femur anatomical frame)."""
        return np.asarray(self.direction, dtype=np.float64)

    def force_newton(self, body_mass_kg: float) -> float:
        """Force magnitude in N for a patient of the given mass."""
        if self.magnitude_n is not None:
            return float(self.magnitude_n)
        assert self.magnitude_bw is not None
        return self.magnitude_bw * body_weight_newton(body_mass_kg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "name": self.name,
            "magnitude_bw": self.magnitude_bw,
            "magnitude_N": self.magnitude_n,
            "direction_right_femur": [round(v, 6) for v in self.direction],
            "support": self.support,
            "source": self.source,
        }


def fall_direction(shaft_to_horizontal_deg: float = 10.0,
                   internal_rotation_deg: float = 15.0) -> npt.NDArray[np.float64]:
    """Direction of the head load in a sideways fall on the greater trochanter.

    The femur lies on its lateral side; the ground's downward direction, expressed in the
    femur frame, is the load direction on the head: lateral (+x), tilted distally by the shaft
    inclination (proximal end raised) and turned posteriorly by the femur's internal rotation.
    Configuration of Courtney et al. 1994 (J Bone Miner Res 9:1353) as used by Keyak et al.
    2001 and Dragomir-Daescu et al. 2011 [sign conventions to verify against those papers].

    Args:
        shaft_to_horizontal_deg: Angle between the shaft and the ground.
        internal_rotation_deg: Internal rotation of the femur about its shaft axis.

    Returns:
        (3,) unit vector in the right-femur anatomical frame.
    """
    tilt, rot = np.radians(shaft_to_horizontal_deg), np.radians(internal_rotation_deg)
    return np.array([np.cos(tilt) * np.cos(rot), -np.cos(tilt) * np.sin(rot), -np.sin(tilt)])


_BERGMANN_2001 = (
    "Bergmann G et al. (2001) Hip contact forces and gait patterns from routine activities. "
    "J Biomech 34:859-871, doi:10.1016/S0021-9290(01)00040-9 (average patient, peak force). "
    "Directions: force on the head from medial to lateral and anterior to posterior, "
    "inclined ~13 deg (frontal) and ~8 deg (sagittal) to the femoral axis at the walking "
    "peak; the posterior component grows for stairs [directions approximate, to verify]."
)
_BERGMANN_1993 = (
    "Bergmann G, Graichen F, Rohlmann A (1993) Hip joint loading during walking and running, "
    "measured in two patients. J Biomech 26:969-990: stumbling 720 and 870 %BW; the "
    "frontal-plane direction of large forces changes little (walking direction used here)."
)
_FALL = (
    "Sideways fall on the greater trochanter: shaft 10 deg to the ground, 15 deg internal "
    "rotation (Courtney et al. 1994, J Bone Miner Res 9:1353; Dragomir-Daescu et al. 2011, "
    "Ann Biomed Eng 39:742); nominal impact force 4.0 kN (in-vivo estimates 4.0 +- 1.7 kN, "
    "DESIGN.md 4). The failure load does not depend on this nominal value (linearity)."
)

#: Catalogue of load cases. Magnitudes: Bergmann et al. 2001 (walking 238 %BW, stairs up
#: 251 %BW, stairs down 260 %BW); Bergmann et al. 1993 (stumbling up to 870 %BW).
LOAD_CASES: dict[str, LoadCase] = {
    case.name: case
    for case in (
        LoadCase.from_angles("stance", 2.38, 13.0, 8.0, _BERGMANN_2001),
        LoadCase.from_angles("stairs_up", 2.51, 13.0, 15.0, _BERGMANN_2001),
        LoadCase.from_angles("stairs_down", 2.60, 13.0, 11.0, _BERGMANN_2001),
        LoadCase.from_angles("stumbling", 8.70, 13.0, 8.0, _BERGMANN_1993),
        LoadCase("fall", tuple(fall_direction()), _FALL, magnitude_n=4000.0,
                 support="fall"),
    )
}


def custom_load_case(name: str, force_n: npt.ArrayLike) -> LoadCase:
    """A user-given force vector (N, right-femur anatomical frame) with the distal cut fixed."""
    vec = np.asarray(force_n, dtype=float)
    magnitude = float(np.linalg.norm(vec))
    if vec.shape != (3,) or not magnitude > 0.0:
        raise ValueError(f"custom load {name!r} must be a non-zero (fx, fy, fz) in N")
    return LoadCase(name, (vec[0] / magnitude, vec[1] / magnitude, vec[2] / magnitude),
                    "user-given force vector", magnitude_n=magnitude)


def ground_contact_nodes(
    points: npt.NDArray[np.float64],
    boundary: npt.NDArray[np.int64],
    landmarks: FemurLandmarks,
    down_world: npt.NDArray[np.float64],
    *,
    depth_mm: float = 4.0,
) -> npt.NDArray[np.int64]:
    """Surface nodes of the proximal femur that touch the ground in a sideways fall.

    The greater trochanter is the part of the proximal femur that reaches furthest along
    the downward direction; nodes within ``depth_mm`` of that extreme form the support.

    Args:
        points: (n, 3) node coordinates, mm.
        boundary: (f, 3) boundary triangles.
        landmarks: Landmarks (shaft axis and head centre locate the proximal femur).
        down_world: (3,) unit direction towards the ground (the head load direction).
        depth_mm: Thickness of the contact layer.

    Returns:
        (k,) int64 node indices.
    """
    nodes = np.unique(boundary)
    level = (points[nodes] - landmarks.head_centre_mm) @ landmarks.shaft_axis
    # Proximal femur: from the top of the head to ~4 head radii below its centre.
    proximal = nodes[level > -4.0 * landmarks.head_radius_mm]
    reach = points[proximal] @ np.asarray(down_world, dtype=float)
    contact = proximal[reach > reach.max() - depth_mm]
    if contact.size < 3:
        raise BoundaryConditionError("no greater-trochanter contact found for the fall case",
                                     hint="check that the proximal femur is complete")
    return contact


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
