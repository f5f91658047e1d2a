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
    "DistalCut",
    "FallSupport",
    "LoadCase",
    "LoadPatch",
    "body_weight_newton",
    "custom_load_case",
    "direction_from_angles",
    "distal_cut",
    "distal_fixed_nodes",
    "distal_slab",
    "fall_case",
    "fall_direction",
    "fall_support",
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
        support: "distal": the distal cut is fixed; "fall": the sideways-fall set-up (the
            distal end pinned, free to turn in the loading plane; the greater trochanter on
            a frictionless pad, supported along the load only; :class:`FallSupport`).
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


def fall_direction(adduction_deg: float = 10.0,
                   internal_rotation_deg: float = 15.0) -> npt.NDArray[np.float64]:
    """Direction of the head load in a sideways fall on the greater trochanter.

    The femur lies on its lateral side with the shaft at ``adduction_deg`` to the ground,
    the knee higher than the trochanter (lying on the side, the knees are nearer the body's
    midline than the trochanters), and turned ``internal_rotation_deg`` internally about
    its shaft. The load on the head acts towards the ground; expressed in the femur frame
    (right femur: x lateral, y anterior, z proximal) that is lateral, turned posteriorly by
    the internal rotation (which brings the anterior face towards the midline, i.e. up) and
    tilted proximally by the adduction (the proximal end is the lower one). Set-up of
    Courtney et al. 1994 (J Bone Miner Res 9:1353), Keyak et al. 2001 (J Orthop Res 19:539)
    and Dragomir-Daescu et al. 2011 (Ann Biomed Eng 39:742).

    Args:
        adduction_deg: Angle between the shaft and the ground (0-45 deg).
        internal_rotation_deg: Internal rotation of the femur about its shaft (-45-45 deg).

    Returns:
        (3,) unit vector in the right-femur anatomical frame.
    """
    tilt, rot = np.radians(adduction_deg), np.radians(internal_rotation_deg)
    return np.array([np.cos(tilt) * np.cos(rot), -np.cos(tilt) * np.sin(rot), np.sin(tilt)])


def fall_case(adduction_deg: float = 10.0, internal_rotation_deg: float = 15.0) -> LoadCase:
    """The sideways-fall load case for the given set-up angles (:func:`fall_direction`)."""
    direction = fall_direction(adduction_deg, internal_rotation_deg)
    source = (f"{_FALL} Angles used: adduction {adduction_deg:g} deg, internal rotation "
              f"{internal_rotation_deg:g} deg.")
    return LoadCase("fall", (direction[0], direction[1], direction[2]), source,
                    magnitude_n=4000.0, support="fall")


_HELLER_2005 = (
    "Bergmann G et al. (2001) Hip contact forces and gait patterns from routine activities. "
    "J Biomech 34:859-871, doi:10.1016/S0021-9290(01)00040-9: average patient (HIP98), peak "
    "hip contact force 238 %BW walking, 251 %BW stair climbing, 260 %BW stair descent. "
    "Components at the peak from Heller MO et al. (2005) Determination of muscle loading at "
    "the hip joint for use in pre-clinical testing. J Biomech 38:1155-1163, "
    "doi:10.1016/j.jbiomech.2004.05.022 (Table of the Bergmann average-patient peaks): "
    "walking 54.0 lateral, 32.8 posterior, 229.2 distal %BW (|F| = 237.8 %BW); stair "
    "climbing 59.3 lateral, 60.6 posterior, 236.3 distal %BW (|F| = 251.1 %BW): the force on "
    "the head points laterally, posteriorly and distally in the femur frame."
)
_STAIRS_DOWN = (
    f"{_HELLER_2005} Stair descent: Bergmann 2001's peak magnitude 260 %BW; its components "
    "are not tabulated by Heller 2005, so the stair-climbing direction is used (deviation)."
)
_BERGMANN_1993 = (
    "Bergmann G, Graichen F, Rohlmann A (1993) Hip joint loading during walking and running, "
    "measured in two patients. J Biomech 26:969-990: stumbling 720 and 870 %BW; the "
    "frontal-plane direction of large forces changes little (walking direction of Heller "
    "2005 used here)."
)
_FALL = (
    "Sideways fall on the greater trochanter (Courtney et al. 1994, J Bone Miner Res 9:1353; "
    "Dragomir-Daescu et al. 2011, Ann Biomed Eng 39:742): shaft adducted 10 deg to the "
    "ground, 15 deg internal rotation, trochanter on a frictionless pad (supported along the "
    "load only), distal end pinned, free to turn in the loading plane. Nominal impact force "
    "4.0 kN (in-vivo estimates 4.0 +- 1.7 kN, DESIGN.md 4); the failure load does not depend "
    "on it (linearity)."
)


def _bergmann_case(name: str, components_pct_bw: tuple[float, float, float],
                   source: str, magnitude_bw: float | None = None) -> LoadCase:
    """A load case from (lateral, anterior, proximal) components in %BW (right femur).

    The magnitude is Bergmann's published peak where given (the components' norm agrees
    with it to 0.1 %), else the norm of the components.
    """
    vec = np.asarray(components_pct_bw, dtype=float) / 100.0
    norm = float(np.linalg.norm(vec))
    return LoadCase(name, (vec[0] / norm, vec[1] / norm, vec[2] / norm), source,
                    magnitude_bw=norm if magnitude_bw is None else magnitude_bw)


#: Hip contact force at the walking peak and stair-climbing peak (Heller et al. 2005's
#: components of Bergmann et al. 2001's average patient), %BW (lateral, anterior, proximal).
WALKING_PEAK_PCT_BW = (54.0, -32.8, -229.2)
STAIR_CLIMBING_PEAK_PCT_BW = (59.3, -60.6, -236.3)

#: Catalogue of load cases (the fall with its default angles; :func:`fall_case` for others).
LOAD_CASES: dict[str, LoadCase] = {
    case.name: case
    for case in (
        _bergmann_case("stance", WALKING_PEAK_PCT_BW, _HELLER_2005, magnitude_bw=2.38),
        _bergmann_case("stairs_up", STAIR_CLIMBING_PEAK_PCT_BW, _HELLER_2005,
                       magnitude_bw=2.51),
        _bergmann_case("stairs_down", STAIR_CLIMBING_PEAK_PCT_BW, _STAIRS_DOWN,
                       magnitude_bw=2.60),
        _bergmann_case("stumbling", WALKING_PEAK_PCT_BW, _BERGMANN_1993, magnitude_bw=8.70),
        fall_case(),
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


@dataclass(frozen=True)
class DistalCut:
    """The planar distal cut face of a femur model.

    Attributes:
        nodes: (k,) int64 node indices of the whole cut face.
        centre_mm: (3,) area centroid of the face, world mm.
        normal: (3,) unit outward normal of the face (pointing distally).
        area_mm2: Face area.
        planar: True when a plane was found; False when the end is no flat cut (e.g. the
            condyles of a whole femur) and the distal slab was taken instead.
    """

    nodes: npt.NDArray[np.int64]
    centre_mm: npt.NDArray[np.float64]
    normal: npt.NDArray[np.float64]
    area_mm2: float
    planar: bool


#: A cut face may be tilted this much from the plane normal to the shaft (deg).
MAX_CUT_TILT_DEG = 35.0
#: Nodes within this distance of the fitted cut plane belong to the cut (mm).
CUT_PLANE_TOL_MM = 1.0
#: The flat part must cover this fraction of the distal end (projected on the cut plane);
#: below it the rim is rounded and the end within the slab depth of the plane is the cut.
MIN_CUT_COVERAGE = 0.9


def distal_cut(
    points: npt.NDArray[np.float64],
    boundary: npt.NDArray[np.int64],
    landmarks: FemurLandmarks,
    *,
    depth_mm: float = 2.0,
) -> DistalCut:
    """The distal cut face: the whole of it, whatever its tilt to the shaft.

    Boundary triangles near the distal end whose outward normals lie within
    :data:`MAX_CUT_TILT_DEG` of the distal shaft direction are fitted with a plane (area
    weighted); the cut is every triangle with all vertices within :data:`CUT_PLANE_TOL_MM`
    of it, refitted once. Where that flat part covers less than :data:`MIN_CUT_COVERAGE` of
    the distal-facing surface within ``depth_mm`` of the plane (a rim rounded by smoothing),
    that whole end is the cut. An end with no such plane covering at least half the shaft's
    section (a knee) falls back to the surface within ``depth_mm`` of the most distal level.

    Args:
        points: (n, 3) node coordinates, mm.
        boundary: (f, 3) outward-oriented boundary triangles.
        landmarks: Landmarks giving the shaft axis and distal level.
        depth_mm: Thickness of the fallback slab from the most distal point.

    Returns:
        The cut.

    Raises:
        BoundaryConditionError: when fewer than 3 nodes are found.
    """
    axis = landmarks.shaft_axis
    normals, areas = face_normals_and_areas(points, boundary)
    centroids = points[boundary].mean(axis=1)
    level = centroids @ axis - landmarks.distal_level_mm
    reach = 2.0 * landmarks.head_radius_mm * np.tan(np.radians(MAX_CUT_TILT_DEG)) + depth_mm
    facing = (normals @ -axis > np.cos(np.radians(MAX_CUT_TILT_DEG))) & (level < reach)

    def plane(mask: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.float64],
                                                     npt.NDArray[np.float64]]:
        """Area-weighted unit normal and centroid of the selected triangles."""
        weight = areas[mask]
        normal = (normals[mask] * weight[:, None]).sum(axis=0)
        return (normal / np.linalg.norm(normal),
                (centroids[mask] * weight[:, None]).sum(axis=0) / weight.sum())

    cut = facing
    for _ in range(2):
        if not cut.any():
            break
        normal, centre = plane(cut)
        off_plane = np.abs((points[boundary] - centre) @ normal).max(axis=1)
        cut = facing & (off_plane < CUT_PLANE_TOL_MM)
    # Half the shaft's section: a cut through the diaphysis is at least ~pi r^2 (r ~ half
    # the head radius); the condyles' distal faces are curved and fail the plane test.
    min_area = 0.5 * np.pi * (0.5 * landmarks.head_radius_mm) ** 2
    if cut.any() and float(areas[cut].sum()) >= min_area:
        normal, centre = plane(cut)
        # A cut whose rim was rounded (surface smoothing of a label map cropped at the
        # image's edge, partial volume at 3 mm voxels) has its flat part inside the plane
        # tolerance and its rim a little off it. Fixing the flat part alone fixes a fraction
        # of the section, and the load then depends on how much of the rim was rounded; the
        # whole end within ``depth_mm`` of the plane is the cut then.
        off_plane = np.abs((points[boundary] - centre) @ normal).max(axis=1)
        end = facing & (off_plane < max(depth_mm, CUT_PLANE_TOL_MM))
        projected = areas * np.abs(normals @ normal)
        if float(projected[cut].sum()) < MIN_CUT_COVERAGE * float(projected[end].sum()):
            cut = end
        return DistalCut(np.unique(boundary[cut]), centre, normal, float(areas[cut].sum()),
                         True)
    return distal_slab(points, boundary, landmarks, depth_mm=depth_mm)


def distal_slab(
    points: npt.NDArray[np.float64],
    boundary: npt.NDArray[np.int64],
    landmarks: FemurLandmarks,
    *,
    depth_mm: float = 2.0,
) -> DistalCut:
    """The surface within ``depth_mm`` of the most distal level (an end that is no flat cut).

    Args:
        points: (n, 3) node coordinates, mm.
        boundary: (f, 3) boundary triangles.
        landmarks: Landmarks giving the shaft axis and distal level.
        depth_mm: Thickness of the slab from the most distal point.

    Returns:
        The slab as a non-planar :class:`DistalCut`.

    Raises:
        BoundaryConditionError: when fewer than 3 nodes are found.
    """
    axis = np.asarray(landmarks.shaft_axis, dtype=float)
    nodes = np.unique(boundary)
    fixed = nodes[points[nodes] @ axis < landmarks.distal_level_mm + depth_mm]
    if fixed.size < 3:
        raise BoundaryConditionError(
            "fewer than 3 nodes at the distal cut to fix",
            hint="the mesh must end in a distal cut (crop the femur below the trochanters)",
        )
    return DistalCut(fixed, points[fixed].mean(axis=0), -axis, 0.0, False)


def distal_fixed_nodes(
    points: npt.NDArray[np.float64],
    boundary: npt.NDArray[np.int64],
    landmarks: FemurLandmarks,
    *,
    depth_mm: float = 2.0,
) -> npt.NDArray[np.int64]:
    """Nodes of the distal cut face (:func:`distal_cut`), to fix in all directions.

    Args:
        points: (n, 3) node coordinates, mm.
        boundary: (f, 3) boundary triangles.
        landmarks: Landmarks giving the shaft axis and distal level.
        depth_mm: Thickness of the fallback slab (ends that are no flat cut).

    Returns:
        (k,) int64 node indices.
    """
    return distal_cut(points, boundary, landmarks, depth_mm=depth_mm).nodes


@dataclass(frozen=True)
class FallSupport:
    """Supports of the sideways-fall test set-up, expressed in a rotated frame.

    Courtney et al. 1994 / Dragomir-Daescu et al. 2011: the femur lies on its side, the
    greater trochanter rests on a pad that pushes back along the load only (frictionless),
    and the distal end is pinned so that it turns freely in the loading plane (the plane of
    the load and the shaft). Each constraint is along a coordinate axis of ``rotation``, so
    the solver sets it exactly as a Dirichlet condition on a rotated copy of the mesh.

    Attributes:
        rotation: (3, 3) rows are the solver axes in world coordinates: 0 along the shaft in
            the loading plane, 1 the load direction (towards the ground), 2 the pin axis
            (normal to the loading plane).
        cut_nodes: (k,) nodes of the distal cut: no displacement along axis 2 (the cut may
            only turn in the loading plane).
        pin_nodes: (p,) cut nodes on the pin axis: no displacement along axes 0 and 1.
        ground_nodes: (g,) greater-trochanter nodes on the pad: no displacement along axis 1.
    """

    rotation: npt.NDArray[np.float64]
    cut_nodes: npt.NDArray[np.int64]
    pin_nodes: npt.NDArray[np.int64]
    ground_nodes: npt.NDArray[np.int64]


def fall_support(
    points: npt.NDArray[np.float64],
    cut: DistalCut,
    ground_nodes: npt.NDArray[np.int64],
    landmarks: FemurLandmarks,
    down_world: npt.NDArray[np.float64],
    *,
    pin_band_mm: float = 1.5,
) -> FallSupport:
    """The pinned distal end and trochanter pad of a sideways fall.

    Args:
        points: (n, 3) node coordinates, mm.
        cut: The distal cut face.
        ground_nodes: Trochanter nodes on the pad (:func:`ground_contact_nodes`).
        landmarks: Landmarks (shaft axis).
        down_world: (3,) unit load direction (towards the ground).
        pin_band_mm: Cut nodes within this distance of the pin axis are on the pin (widened
            to the 8 nearest nodes when the mesh is coarse).

    Returns:
        The supports.

    Raises:
        BoundaryConditionError: when the load runs along the shaft (no loading plane) or the
            cut has too few nodes on its pin axis.
    """
    down = np.asarray(down_world, dtype=float) / np.linalg.norm(down_world)
    pin_axis = np.cross(landmarks.shaft_axis, down)
    if np.linalg.norm(pin_axis) < 0.1:
        raise BoundaryConditionError("the fall load runs along the shaft: no loading plane",
                                     hint="check the fall angles")
    pin_axis /= np.linalg.norm(pin_axis)
    along = np.cross(down, pin_axis)
    rotation = np.vstack([along, down, pin_axis])
    rel = points[cut.nodes] - cut.centre_mm
    off_axis = np.linalg.norm(rel - np.outer(rel @ pin_axis, pin_axis), axis=1)
    on_pin = off_axis <= pin_band_mm
    if on_pin.sum() < 8:
        on_pin = off_axis <= np.sort(off_axis)[min(7, off_axis.size - 1)]
    pin = cut.nodes[on_pin]
    if pin.size < 2 or float(np.ptp(points[pin] @ pin_axis)) < 2.0:
        raise BoundaryConditionError("no pin axis across the distal cut for the fall case",
                                     hint="the model must end in a distal cut across the shaft")
    return FallSupport(rotation, cut.nodes, pin, np.asarray(ground_nodes, dtype=np.int64))
