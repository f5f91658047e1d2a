"""Label semantics on the image records: which voxels are the femur, its lesions, its implants.

Everything here is numpy/scipy on :class:`~meshing.types.CTVolume` and
:class:`~meshing.types.LabelMap` (reading and resampling live in :mod:`meshing.imaging`):

* :func:`select_femur` turns a label map into the bone and lesion masks to mesh;
  :func:`femur_side_from_labels` reads the side from structure names (``femur_right``);
* :func:`detect_metal` finds implant voxels (HU above a threshold) in or near a mask;
* :func:`crop_to_mask` cuts the CT and its labels down to a mask's bounding box plus a margin,
  keeping every voxel at its world position;
* :func:`mask_touches_border` names the image faces a mask is cut by, and
  :func:`estimate_mesh_memory` predicts the peak memory of meshing a mask.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from core.types import BoolArray, FloatArray
from meshing.errors import InputError
from meshing.imaging import label_mask, require_same_grid
from meshing.types import CTVolume, ImageGrid, LabelMap

__all__ = [
    "BORDER_FACES",
    "MESH_MEMORY_MODEL",
    "METAL_HU",
    "MeshMemoryModel",
    "MetalReport",
    "crop_along_axis",
    "crop_to_mask",
    "default_lesion_labels",
    "detect_metal",
    "estimate_mesh_memory",
    "femur_side_from_labels",
    "mask_touches_border",
    "resolve_bone_label",
    "select_femur",
]

_LOG = logging.getLogger(__name__)


#: Default metal threshold (HU). Cortical bone stays below about 2000 HU and iodine contrast
#: below about 1500 HU on clinical scanners, while steel, cobalt-chrome and titanium implants
#: saturate above 3000 HU (the TotalSegmentator example's left hip implant reaches 3382 HU).
METAL_HU = 3000.0

#: The six faces of an image in :func:`mask_touches_border`'s order: ``i_min`` is the face
#: at voxel index i = 0, ``i_max`` the face at i = ni - 1, and so on.
BORDER_FACES: tuple[str, ...] = ("i_min", "i_max", "j_min", "j_max", "k_min", "k_max")

_RIGHT_WORDS = frozenset({"right", "r", "rt", "dx", "dext", "dexter", "dextra"})
_LEFT_WORDS = frozenset({"left", "l", "lt", "sx", "sin", "sinister", "sinistra"})


# --------------------------------------------------------------------------------------------
# which voxels are the femur
# --------------------------------------------------------------------------------------------


def select_femur(
    labels: LabelMap,
    bone: int | str | None = None,
    lesions: Sequence[int | str] = (),
    *,
    lesions_required: bool = True,
) -> tuple[BoolArray, BoolArray]:
    """Bone and lesion masks of one femur.

    The femur to mesh is ``bone_mask | lesion_mask``; the lesion mask marks the cells to tag.
    Lesion voxels are kept only in connected pieces (26-connectivity) that touch or lie next
    to the bone: a lesion piece away from the selected femur (e.g. in the other femur or the
    pelvis) would mesh as a separate body, so it is dropped with a WARNING.

    Args:
        labels: The label map.
        bone: Label value or name of the femur. None picks the one label whose name contains
            "femur" and that is present (refused when both femurs are present).
        lesions: Label values or names of lesions (lytic, blastic, mixed) in that femur.
        lesions_required: True: a lesion label absent from the map is an error; False: it is
            skipped with a WARNING.

    Returns:
        ``(bone_mask, lesion_mask)``: bool arrays of ``labels.grid.shape``, disjoint.

    Raises:
        InputError: The bone label is absent or ambiguous, a required lesion label is absent,
            a lesion label is the bone label, or no lesion voxel touches the femur.
    """
    bone_key = _femur_key(labels) if bone is None else bone
    bone_mask = label_mask(labels, bone_key)
    bone_values = set(np.unique(labels.labels[bone_mask]).tolist())
    lesion_mask = np.zeros(labels.grid.shape, dtype=bool)
    for key in lesions:
        try:
            mask = label_mask(labels, key)
        except InputError:
            if lesions_required:
                raise
            _LOG.warning("lesion label %r is not in the label map; meshing without it", key)
            continue
        if set(np.unique(labels.labels[mask]).tolist()) & bone_values:
            raise InputError(
                f"lesion label {key!r} is the bone label {bone_key!r}",
                hint="give the lesion its own label value in the segmentation",
            )
        lesion_mask |= mask
    if lesion_mask.any():
        lesion_mask = _lesions_on_bone(lesion_mask, bone_mask, bone_key, lesions)
    return bone_mask, lesion_mask


def _femur_key(labels: LabelMap) -> int:
    """The value of the only femur label present (by name)."""
    present = set(np.unique(labels.labels).tolist()) - {0}
    femurs = sorted(v for v, n in labels.names.items() if "femur" in n.lower() and v in present)
    if len(femurs) == 1:
        return femurs[0]
    if not femurs:
        named = ", ".join(f"{v}={n}" for v, n in sorted(labels.names.items())) or "none"
        raise InputError(
            f"no label named like a femur is present (named labels: {named})",
            hint="pass bone= with the femur's label value or name",
        )
    choices = " or ".join(f"'{labels.names[v]}' ({v})" for v in femurs)
    raise InputError(
        f"the label map holds {len(femurs)} femurs ({choices}); which one to model is ambiguous",
        hint=f"pass bone= with one of them, e.g. bone='{labels.names[femurs[-1]]}'",
    )


def _lesions_on_bone(
    lesion: BoolArray, bone: BoolArray, bone_key: int | str, lesions: Sequence[int | str]
) -> BoolArray:
    """Keep the lesion pieces that touch (26-neighbourhood) the bone."""
    structure = np.ones((3, 3, 3), dtype=bool)
    pieces, count = ndimage.label(lesion, structure=structure)
    near_bone = ndimage.binary_dilation(bone, structure=structure)
    touching = np.unique(pieces[near_bone & lesion])
    touching = touching[touching != 0]
    if touching.size == 0:
        raise InputError(
            f"no voxel of lesion label(s) {list(lesions)!r} touches the femur {bone_key!r}",
            hint="check that the lesion belongs to this femur (left/right) and that both "
            "labels come from the same segmentation",
        )
    if touching.size < count:
        kept = np.isin(pieces, touching)
        dropped = int(np.count_nonzero(lesion & ~kept))
        _LOG.warning("dropped %d lesion voxel(s) in %d piece(s) that do not touch the femur "
                     "%r", dropped, count - touching.size, bone_key)
        return np.asarray(kept)
    return lesion


#: Words that make a named structure a lesion (3D Slicer segment names, custom label tables).
_LESION_WORDS = re.compile(r"lesion|metasta|tumou?r|lytic|blastic|osteolys|mixed|\bmets?\b",
                           re.IGNORECASE)
#: osteofe's own unnamed convention: 0 background, 1 bone, 2 lesion.
_OSTEOFE_VALUES = frozenset({0, 1, 2})


def crop_along_axis(masks: Sequence[BoolArray], grid: ImageGrid, axis: npt.ArrayLike,
                    level_mm: float) -> list[BoolArray]:
    """Keep the voxels whose centre lies at or above ``level_mm`` along ``axis`` (a flat cut).

    Used to model the femur only down to a level below the lesser trochanter. The position
    along the axis is affine in (i, j, k), so it is broadcast rather than listed per voxel.

    Args:
        masks: Boolean masks on ``grid`` (e.g. bone and lesion).
        grid: Their voxel grid.
        axis: (3,) unit direction (world), e.g. the shaft axis pointing proximally.
        level_mm: Cut level, mm along ``axis`` from the world origin.

    Returns:
        The masks with the voxels below the cut removed.
    """
    direction = np.asarray(axis, dtype=np.float64)
    steps = grid.index_to_world_matrix.T @ direction
    ni, nj, nk = grid.shape
    along = (float(grid.origin @ direction) + steps[0] * np.arange(ni)[:, None, None]
             + steps[1] * np.arange(nj)[None, :, None] + steps[2] * np.arange(nk)[None, None, :])
    keep = along >= level_mm
    return [np.asarray(mask & keep) for mask in masks]


def resolve_bone_label(labels: LabelMap, bone: int | str | None,
                       side: str | None = None) -> int | str:
    """The femur's label: the one given, else inferred, never a guess.

    Without ``bone``: a map with named femurs (TotalSegmentator, 3D Slicer) gives its only
    femur, or the femur named for ``side`` when both are present; a map in osteofe's own
    convention (values within 0, 1, 2, no femur named) gives 1. Anything else is refused:
    label 1 of a TotalSegmentator map is the spleen.

    Args:
        labels: The label map.
        bone: Label value or name given by the user, or None.
        side: ``"left"``/``"right"`` when known (``--side``), else None.

    Returns:
        ``bone`` when given, else the inferred label value.

    Raises:
        InputError: No femur can be inferred (the message lists the femur labels present).
    """
    if bone is not None:
        return bone
    present = set(np.unique(labels.labels).tolist())
    named = {v: n for v, n in labels.names.items() if v in present}
    femurs = {v: n for v, n in named.items()
              if "femur" in n.lower() or "femoral" in n.lower()}
    if side is not None:
        sided = [v for v, n in femurs.items() if femur_side_from_labels([n]) == side]
        if len(sided) == 1:
            return sided[0]
    if len(femurs) == 1:
        return next(iter(femurs))
    if not femurs and 1 in present and present <= _OSTEOFE_VALUES:
        return 1
    listing = ", ".join(f"{v} {n}" for v, n in sorted(femurs.items())) or "none"
    what = (f"{len(present - {0})} labels" if not named
            else f"{len(named)} named structures")
    raise InputError(
        f"the label map holds {what} and no single femur to pick (femur labels: {listing}); "
        "--bone-label is required",
        hint=("pass --bone-label with the femur's value or name"
              + (f", e.g. --bone-label {sorted(femurs.values())[-1]}" if femurs else "")
              + (", or --side left|right" if len(femurs) > 1 and side is None else "")),
    )


def default_lesion_labels(labels: LabelMap) -> list[int]:
    """Lesion labels when none are given (never a structure that is not named as one).

    2 in osteofe's unnamed 0/1/2 convention; in a named map only the structures named as
    lesions (``lesion``, ``metastasis``, ``tumour``, ``lytic``, ...). A 3D Slicer
    segmentation whose second segment is "muscle" has no lesion; in a TotalSegmentator map
    label 2 is an organ.
    """
    present = set(np.unique(labels.labels).tolist())
    named = {v: n for v, n in labels.names.items() if v in present}
    if not named:
        return [2] if 2 in present and present <= _OSTEOFE_VALUES else []
    return sorted(v for v, n in named.items() if _LESION_WORDS.search(n))


def femur_side_from_labels(
    names: Iterable[str] | Mapping[int, str],
) -> Literal["left", "right"] | None:
    """Side of the femur named in structure names.

    Only names that mention the femur ("femur", "femoral") count. A side is read from a word
    "right"/"left" anywhere in the name (``femur_right``, ``FemurLeft``) or from a separate
    short token (``femur_R``, ``L femur``, ``femur dx``/``sx``).

    Args:
        names: Names of the selected structures (e.g. ``["femur_right", "lesion"]``), or a
            label map's value -> name mapping.

    Returns:
        "left" or "right"; None when no femur name carries a side.

    Raises:
        InputError: The femur names point to both sides (e.g. the names of a whole
            TotalSegmentator map: select the bone first).
    """
    items = names.values() if isinstance(names, Mapping) else names
    sides: dict[str, list[str]] = {"left": [], "right": []}
    for name in items:
        lower = str(name).lower()
        if "femur" not in lower and "femoral" not in lower:
            continue
        tokens = set(re.split(r"[^a-z0-9]+", lower))
        if "right" in lower or tokens & _RIGHT_WORDS:
            sides["right"].append(str(name))
        if "left" in lower or tokens & _LEFT_WORDS:
            sides["left"].append(str(name))
    if sides["left"] and sides["right"]:
        raise InputError(
            f"femur names point to both sides ({', '.join(sides['right'])} vs "
            f"{', '.join(sides['left'])})",
            hint="pass only the names of the selected femur's labels",
        )
    if sides["right"]:
        return "right"
    if sides["left"]:
        return "left"
    return None


# --------------------------------------------------------------------------------------------
# implants
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetalReport:
    """Voxels above a metal threshold in (or near) a mask.

    Attributes:
        threshold_hu: The threshold used (HU); voxels strictly above it count as metal.
        count: Number of metal voxels in the searched region.
        searched: Number of voxels searched (the mask, grown by the margin).
        fraction: ``count / searched`` (0 when nothing was searched).
        max_hu: Highest HU in the searched region (NaN when it is empty).
        bbox_min_mm: (3,) float64 world (LPS, mm) lower corner of the box around the metal
            voxel centres, or None when there is no metal.
        bbox_max_mm: (3,) float64 upper corner, or None.
        flagged: Whether the metal marks an implant: ``fraction > min_fraction`` of
            :func:`detect_metal` (a few isolated bright voxels, e.g. noise, do not).
    """

    threshold_hu: float
    count: int
    searched: int
    fraction: float
    max_hu: float
    bbox_min_mm: FloatArray | None
    bbox_max_mm: FloatArray | None
    flagged: bool

    def describe(self) -> str:
        """One line for logs and reports."""
        if self.count == 0:
            return f"no voxel above {self.threshold_hu:.0f} HU in {self.searched} voxels"
        assert self.bbox_min_mm is not None and self.bbox_max_mm is not None
        size = self.bbox_max_mm - self.bbox_min_mm
        return (f"{self.count} voxels above {self.threshold_hu:.0f} HU "
                f"({100.0 * self.fraction:.2f}% of {self.searched}; max {self.max_hu:.0f} HU) "
                f"in a box of {size[0]:.0f} x {size[1]:.0f} x {size[2]:.0f} mm"
                + (" - an implant" if self.flagged else ""))


def detect_metal(
    ct: CTVolume,
    mask: npt.ArrayLike,
    threshold_hu: float = METAL_HU,
    *,
    margin_mm: float = 0.0,
    min_fraction: float = 1e-3,
) -> MetalReport:
    """Find metal (implant) voxels in a structure of a CT.

    Args:
        ct: The CT in HU.
        mask: Bool/0-1 array of ``ct.grid.shape``: the structure (e.g. one femur).
        threshold_hu: Voxels strictly above this value are metal (default :data:`METAL_HU`).
        margin_mm: Also search this far (Euclidean, mm) around the mask: segmentations
            often leave an implant's stem or head out of the bone label.
        min_fraction: Fraction of metal voxels above which the report is ``flagged``.

    Returns:
        The report.

    Raises:
        InputError: The mask's shape differs from the CT's, or the margin is negative.
    """
    region = _as_mask(mask, ct.grid.shape, "mask")
    if margin_mm < 0.0 or not math.isfinite(margin_mm):
        raise InputError(f"metal search margin must be >= 0 mm, got {margin_mm}",
                         hint="pass margin_mm=0 to search the mask only")
    if margin_mm > 0.0 and region.any():
        region = _grow(region, ct.grid, margin_mm)
    values = ct.hu[region]
    metal = region & (ct.hu > threshold_hu)
    count = int(np.count_nonzero(metal))
    searched = int(values.size)
    fraction = count / searched if searched else 0.0
    low = high = None
    if count:
        world = ct.grid.index_to_world(np.argwhere(metal))
        low, high = world.min(axis=0), world.max(axis=0)
    return MetalReport(
        threshold_hu=float(threshold_hu), count=count, searched=searched, fraction=fraction,
        max_hu=float(values.max()) if searched else float("nan"), bbox_min_mm=low,
        bbox_max_mm=high, flagged=fraction > min_fraction,
    )


def _grow(mask: BoolArray, grid: ImageGrid, margin_mm: float) -> BoolArray:
    """``mask`` grown by ``margin_mm`` (Euclidean, anisotropic voxels), computed in its box."""
    pad = np.ceil(margin_mm / grid.spacing).astype(np.int64)
    low, high = _bbox(mask)
    low = np.maximum(low - pad, 0)
    high = np.minimum(high + pad, np.asarray(grid.shape) - 1)
    box = tuple(slice(int(a), int(b) + 1) for a, b in zip(low, high, strict=True))
    distance = ndimage.distance_transform_edt(~mask[box], sampling=grid.spacing)
    grown = mask.copy()
    grown[box] = np.asarray(distance) <= margin_mm
    return grown


# --------------------------------------------------------------------------------------------
# cropping and borders
# --------------------------------------------------------------------------------------------


def crop_to_mask(
    ct: CTVolume, labels: LabelMap, mask: npt.ArrayLike, margin_mm: float = 5.0
) -> tuple[CTVolume, LabelMap]:
    """Cut a CT and its label map down to a mask's bounding box plus a margin.

    The box is grown by ``ceil(margin_mm / spacing)`` voxels along each image axis and clipped
    to the image. The cropped grid keeps spacing and direction; its origin is the world
    position of the box's first voxel, so every kept voxel stays at its world position
    exactly (``cropped.grid.index_to_world(ijk) == ct.grid.index_to_world(ijk + offset)``).

    Args:
        ct: The CT.
        labels: Its label map, on the same grid.
        mask: Bool/0-1 array of ``ct.grid.shape`` (e.g. bone | lesion).
        margin_mm: Margin around the mask in mm (>= 0).

    Returns:
        The cropped CT and label map (copies; names kept).

    Raises:
        InputError: The grids differ, the mask's shape differs, the mask is empty, or the
            margin is negative.
    """
    require_same_grid(ct.grid, labels.grid)
    region = _as_mask(mask, ct.grid.shape, "mask")
    if not region.any():
        raise InputError("cannot crop to an empty mask",
                         hint="check the label selection: the mask has no voxel")
    if margin_mm < 0.0 or not math.isfinite(margin_mm):
        raise InputError(f"crop margin must be >= 0 mm, got {margin_mm}",
                         hint="pass margin_mm=0 for the tight bounding box")
    grid = ct.grid
    pad = np.ceil(margin_mm / grid.spacing - 1e-9).astype(np.int64)
    low, high = _bbox(region)
    low = np.maximum(low - pad, 0)
    high = np.minimum(high + pad, np.asarray(grid.shape) - 1)
    box = tuple(slice(int(a), int(b) + 1) for a, b in zip(low, high, strict=True))
    size = high - low + 1
    cropped = ImageGrid(shape=(int(size[0]), int(size[1]), int(size[2])), spacing=grid.spacing,
                        origin=grid.index_to_world(low.astype(np.float64)),
                        direction=grid.direction)
    return (CTVolume(grid=cropped, hu=np.ascontiguousarray(ct.hu[box])),
            LabelMap(grid=cropped, labels=np.ascontiguousarray(labels.labels[box]),
                     names=dict(labels.names)))


def mask_touches_border(mask: npt.ArrayLike) -> list[str]:
    """The image faces a mask reaches, i.e. where the structure is cut by the field of view.

    A femur that touches ``k_min`` of an axial scan (LPS, +k superior) is cut distally: the
    model then has an artificial end there and must be constrained at that cut.

    Args:
        mask: 3-D bool/0-1 array.

    Returns:
        The faces (names from :data:`BORDER_FACES`, in that order) holding at least one mask
        voxel; empty when the mask lies inside the image.

    Raises:
        InputError: The mask is not 3-D.
    """
    arr = np.asarray(mask)
    if arr.ndim != 3:
        raise InputError(f"mask must be 3-D, got shape {arr.shape}",
                         hint="pass the (ni, nj, nk) voxel mask of one structure")
    region = arr != 0
    faces = []
    for axis in range(3):
        for side, index in (("min", 0), ("max", -1)):
            if np.take(region, index, axis=axis).any():
                faces.append(f"{'ijk'[axis]}_{side}")
    return faces


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeshMemoryModel:
    """Constants of :func:`estimate_mesh_memory`.

    Attributes:
        fixed: Bytes the meshing libraries (gmsh, VTK) add to the process when loaded.
        per_grid_voxel: Bytes per voxel of the whole image (``clean_mask``: bool copies,
            component labels, hole filling).
        per_box_voxel: Bytes per voxel of the mask's bounding box padded by 3 voxels (float32
            field and its Gaussian blur, iso-surface extraction and its scratch).
        tets_per_volume: Tetrahedra per ``mask volume / size_mm^3`` (6 sqrt(2) ~ 8.5 for a
            lattice of regular tetrahedra; gmsh's are not regular).
        tets_per_area: Extra tetrahedra per ``mask surface / size_mm^2`` (the graded,
            finer layer gmsh places along the surface).
        per_tet: Bytes per tetrahedron: gmsh's generation and optimisation, numpy copies.
        quadratic_factor: Factor on ``per_tet`` for 10-node tetrahedra.
    """

    fixed: float
    per_grid_voxel: float
    per_box_voxel: float
    tets_per_volume: float
    tets_per_area: float
    per_tet: float
    quadratic_factor: float


#: Fitted to peak-RSS measurements of ``meshing.volume.mesh_from_mask`` (gmsh 4.15 HXT, one
#: thread, x86-64 Linux): the TotalSegmentator example's right femur (3 mm voxels) at 3 and
#: 2 mm elements and the synthetic phantom (1.0 and 0.7 mm voxels) at 1.5-3 mm elements,
#: 27k-477k tetrahedra, 141-473 MB. The tetrahedron count was predicted within -58%..+28%,
#: the peak memory within -13%..+11%; 10-node elements measured 1.33x the 4-node peak at
#: 192k tetrahedra (about 490 bytes more per tetrahedron).
MESH_MEMORY_MODEL = MeshMemoryModel(
    fixed=120e6,
    per_grid_voxel=6.0,
    per_box_voxel=40.0,
    tets_per_volume=4.5,
    tets_per_area=6.5,
    per_tet=500.0,
    quadratic_factor=2.0,
)


def estimate_mesh_memory(
    mask: npt.ArrayLike,
    grid: ImageGrid,
    size_mm: float,
    *,
    order: int = 1,
    model: MeshMemoryModel = MESH_MEMORY_MODEL,
) -> int:
    """Predict the peak memory (bytes) that meshing a mask adds to the process.

    Heuristic (constants in :data:`MESH_MEMORY_MODEL`, with how they were measured)::

        tets  = tets_per_volume * V / h^3 + tets_per_area * S / h^2
        bytes = fixed + per_grid_voxel * N_grid + per_box_voxel * N_box
                + per_tet * tets * (quadratic_factor if order == 2 else 1)

    with ``h = size_mm``, ``V`` the mask volume, ``S`` its surface (area of the voxel faces
    between mask and background: the staircase overestimates a smooth surface, which the
    fit absorbs), ``N_grid`` the image's voxels and ``N_box`` the voxels of the mask's
    bounding box padded by 3. The terms are added although the voxel and the tetrahedral
    stages peak at different times, which keeps the estimate on the safe side for large
    images. Use it to decide whether a job fits (or needs :func:`crop_to_mask` or a coarser
    size), not as an exact account.

    Args:
        mask: Bool/0-1 array of ``grid.shape``.
        grid: The mask's grid (voxel size).
        size_mm: Target element edge length in mm (> 0).
        order: 1 (4-node) or 2 (10-node) tetrahedra.
        model: The constants.

    Returns:
        Estimated peak bytes.

    Raises:
        InputError: Shape mismatch, non-positive size, or an order other than 1/2.
    """
    region = _as_mask(mask, grid.shape, "mask")
    if not size_mm > 0.0 or not math.isfinite(size_mm):
        raise InputError(f"element size must be > 0 mm, got {size_mm}",
                         hint="pass the target edge length in mm, e.g. 3.0")
    if order not in (1, 2):
        raise InputError(f"element order must be 1 or 2, got {order}",
                         hint="use 1 (4-node) or 2 (10-node) tetrahedra")
    grid_voxels = float(np.prod(grid.shape))
    box_voxels = volume = area = 0.0
    if region.any():
        low, high = _bbox(region)
        box_voxels = float(np.prod(high - low + 1 + 6))
        crop = region[tuple(slice(int(a), int(b) + 1) for a, b in zip(low, high, strict=True))]
        volume = float(np.count_nonzero(crop)) * float(np.prod(grid.spacing))
        area = _face_area(crop, grid.spacing)
    tets = model.tets_per_volume * volume / size_mm**3 + model.tets_per_area * area / size_mm**2
    per_tet = model.per_tet * (model.quadratic_factor if order == 2 else 1.0)
    total = (model.fixed + model.per_grid_voxel * grid_voxels
             + model.per_box_voxel * box_voxels + per_tet * tets)
    return math.ceil(total)


def _face_area(mask: BoolArray, spacing: FloatArray) -> float:
    """Area (mm^2) of the voxel faces between a mask and its background (image edge open)."""
    area = 0.0
    for axis in range(3):
        faces = np.count_nonzero(np.diff(mask, axis=axis, prepend=False, append=False))
        area += faces * float(np.prod(spacing)) / float(spacing[axis])
    return area


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _as_mask(mask: npt.ArrayLike, shape: tuple[int, int, int], what: str) -> BoolArray:
    """``mask != 0`` as a bool array, checked against ``shape``."""
    arr = np.asarray(mask)
    if arr.shape != tuple(shape):
        raise InputError(f"{what} shape {arr.shape} differs from the image shape {shape}",
                         hint="build the mask on the CT grid (align_labels the labels first)")
    return np.asarray(arr != 0) if arr.dtype != np.bool_ else arr


def _bbox(mask: BoolArray) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Lowest and highest voxel index of a non-empty mask along each axis."""
    low = np.empty(3, dtype=np.int64)
    high = np.empty(3, dtype=np.int64)
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        low[axis], high[axis] = hit[0], hit[-1]
    return low, high
