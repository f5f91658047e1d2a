"""Pre-flight guards: refuse, before the expensive stages, a run that cannot succeed.

Checks that raise :class:`~meshing.errors.InputError` with a message a clinician or a
hospital IT department can act on:

* :func:`check_image_sanity` - the CT's header describes a plausible CT: voxels between
  :data:`MIN_SPACING_MM` and :data:`MAX_SPACING_MM`, at most :data:`MAX_IMAGE_VOXELS` voxels,
  values on the Hounsfield scale. A voxel size in metres or micrometres (a unit mistake of an
  exporter) or a corrupted header is caught here instead of producing a mesh a thousand times
  too small or an out-of-memory kill.
* :func:`check_resources` - the peak memory of the run, estimated from the image size, the
  femur mask, the element size and order, the displacement degree and the MPI ranks, fits
  in :data:`MEMORY_BUDGET_FRACTION` of the memory available. Running out of memory otherwise
  ends in the kernel's OOM killer after minutes of work, with no message at all.
* :func:`check_femur_on_bone` / :func:`check_mesh_on_bone` - the femur mask (or a user's
  mesh) sits on bone: the CT values inside it show dense bone, bone-and-marrow median, no
  air, and the mask's outline follows the bone's edge (:data:`FEMUR_HU_BOUNDS`). The
  segmentation passed as the CT, labels shifted off the bone, an empty or clipped 8-bit CT
  otherwise give a believable failure load from nonsense moduli.
* :func:`check_side` - a side given by the user agrees with the femur's anatomy.
* :func:`check_risk_model` - a fracture-risk model file is valid and needs only features
  the analysis provides (read before any meshing, not after the solve).
* :func:`check_model_extent` - the model reaches far enough below the lesser trochanter
  (:data:`MIN_SHAFT_BELOW_LESSER_TROCHANTER_MM`) and holds the greater trochanter a
  sideways fall rests on; with ``allow_partial`` it returns the ``validity`` record of
  result.json (not valid, with a banner and the reasons) instead of refusing.

The memory estimate is a sum of measured per-stage models (:data:`RUN_MEMORY_MODEL`, sources in its
docstring): reading (per image voxel), meshing (:func:`meshing.segmentation.
estimate_mesh_memory`), and solving (a line in the number of degrees of freedom fitted to the
solver benchmark, times the ranks). The peak of the run is the largest stage. It is meant to
tell a job that fits from one that cannot, not to account for every byte.

The memory available is what the machine (or the container's cgroup) has free; the
environment variable :data:`MEMORY_LIMIT_ENV` (``OSTEOFE_MEMORY_LIMIT_GB``, decimal GB) caps
it, e.g. on a shared machine where other jobs will claim memory the run sees free now.

Typical use, in the pipeline after reading the images and before meshing::

    check_image_sanity(ct)
    check_femur_on_bone(ct, bone | lesion)
    check_resources(image_voxels=ct.hu.size, mask=bone | lesion, grid=ct.grid,
                    size_mm=config.mesh.size_mm, order=config.mesh.order,
                    degree=config.solver.degree, ranks=MPI.COMM_WORLD.size)
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from meshing.errors import InputError
from meshing.segmentation import MESH_MEMORY_MODEL, MeshMemoryModel, estimate_mesh_memory
from meshing.types import CTVolume, ImageGrid, TetMesh

if TYPE_CHECKING:
    from fea.landmarks import FemurLandmarks

__all__ = [
    "CASE_RISK_FEATURES",
    "FEMUR_HU_BOUNDS",
    "HU_PLAUSIBLE_RANGE",
    "MAX_IMAGE_VOXELS",
    "MAX_SPACING_MM",
    "MEMORY_BUDGET_FRACTION",
    "MEMORY_LIMIT_ENV",
    "MIN_BELOW_HEAD_CENTRE_MM",
    "MIN_SHAFT_BELOW_LESSER_TROCHANTER_MM",
    "MIN_SPACING_MM",
    "PARTIAL_BANNER",
    "RISK_MODEL_FEATURES",
    "RUN_MEMORY_MODEL",
    "BoneHUBounds",
    "MaskHUProfile",
    "ResourceEstimate",
    "RunMemoryModel",
    "available_memory_bytes",
    "check_femur_on_bone",
    "check_image_sanity",
    "check_mesh_on_bone",
    "check_model_extent",
    "check_resources",
    "check_risk_model",
    "check_side",
    "estimate_resources",
    "femur_hu_profile",
    "memory_limit_bytes",
    "model_extent_problems",
]

#: Smallest accepted voxel edge, mm. Clinical CT reaches ~0.25 mm, micro-CT of a whole
#: femur ~0.03-0.08 mm; below 0.05 mm a clinical femur image is almost surely a header in
#: metres (0.0007 for 0.7 mm) or otherwise corrupt.
MIN_SPACING_MM = 0.05
#: Largest accepted voxel edge, mm. Clinical slices are at most 5-7 mm thick; above 10 mm
#: the femur cannot be resolved, and a header in micrometres (700 for 0.7 mm) ends here.
MAX_SPACING_MM = 10.0
#: Largest accepted image, voxels (2e9: a 1024 x 1024 x 1900 stack, ~4 GB as int16, ~24 GB
#: once read; a whole-body clinical CT holds ~0.3e9).
MAX_IMAGE_VOXELS = 2_000_000_000
#: CT values outside this range (HU) cannot be Hounsfield units: the scale runs from -1024
#: (air) to ~3000 (cortical bone, dense metal saturates near 30,000 on extended-scale
#: scanners); a corrupted rescale slope or an unscaled float export lands far outside.
HU_PLAUSIBLE_RANGE = (-10_000.0, 100_000.0)
#: Share of the available memory a run may plan to use; the rest absorbs the estimate's error
#: (the tetrahedron count is predicted within -58%..+28%, see MESH_MEMORY_MODEL) and the
#: other processes of the machine.
MEMORY_BUDGET_FRACTION = 0.8

#: Environment variable capping the memory a run may count on, decimal GB (e.g. ``16`` or
#: ``0.5``); unset: the memory the machine has available.
MEMORY_LIMIT_ENV = "OSTEOFE_MEMORY_LIMIT_GB"

_MIB = 1024.0**2
#: Peak RSS of P1 analyses in benchmarks/results/solver.json (1 rank, "records"): (DOFs, MiB).
_SOLVER_RUNS_P1 = ((1_004_784, 3009.7), (1_969_275, 5677.6))


def _line_through(points: tuple[tuple[int, float], tuple[int, float]]) -> tuple[float, float]:
    """(intercept bytes, bytes per DOF) of the line through two (DOFs, MiB) measurements."""
    (n0, m0), (n1, m1) = points
    slope = (m1 - m0) * _MIB / (n1 - n0)
    return m0 * _MIB - slope * n0, slope


_SOLVER_FIXED, _SOLVER_PER_DOF = _line_through(_SOLVER_RUNS_P1)


@dataclass(frozen=True)
class RunMemoryModel:
    """Constants of the run's memory estimate (:func:`estimate_resources`).

    Sources. Reading: peak and resident RSS measured with ``resource.getrusage`` and
    ``/proc/self/status`` while reading a 256 x 256 x 200 int16 NIfTI CT and a uint8 label
    map with :func:`meshing.imaging.read_ct` / :func:`~meshing.imaging.read_labels` and
    building the bone, lesion and union masks (numpy 2.5, SimpleITK 2.5.7): 14.4 bytes per
    voxel at the peak, 11.4 resident afterwards. Solving: the P1 ladder of
    ``benchmarks/results/solver.json`` (dolfinx 0.11, CG + GAMG, 3 load cases, one rank,
    x86-64 Linux), peak RSS 3009.7 MiB at 1,004,784 DOFs and 5677.6 MiB at 1,969,275 DOFs;
    the line through them gives ~2.9 kB per DOF plus ~241 MB and lies above every smaller
    P1 run of the ladder (e.g. 527 vs 467 MiB at 107k DOFs) and above the P2 runs at equal
    DOFs (2823 vs 2285 MiB at 937k DOFs: P2 has fewer cells per DOF). Under MPI each rank
    holds its block of the model (osteofe.distributed): the ranks pay the fixed part each
    and share the per-DOF part; ``benchmarks/bench_memory_ranks.py`` (946k P2 DOFs)
    measured the two ranks together at 1.02x the serial peak, below this line's 2 x fixed
    + per-DOF (not measured beyond 2 ranks on this machine; the ghost layers grow with the
    ranks). Tetrahedra per node:
    3.8-5.0 in the gmsh meshes of ``benchmarks/results/meshing.json`` (phantom and real
    femur, 1.55-3 mm), 4.4 taken (the middle: the tetrahedron count of
    :data:`~meshing.segmentation.MESH_MEMORY_MODEL` already runs high, 67k predicted for the
    32k tetrahedra of the default phantom at 3 mm); a P2 space has ~8x the P1 DOFs (vertices
    plus edges: 7.2-7.6x measured on the benchmark boxes). Baseline: ``rss_start_mb`` of the
    solver benchmark, 172-173 MiB (Python with numpy, dolfinx, gmsh loaded).

    Attributes:
        baseline_bytes: RSS of the process before it reads anything.
        read_peak_per_voxel: Bytes per CT voxel while reading the CT and its label map.
        resident_per_voxel: Bytes per CT voxel held afterwards (HU, labels, masks).
        solver_fixed_bytes: Intercept of the solver's peak RSS line (per rank).
        solver_per_dof_bytes: Slope of that line, bytes per degree of freedom.
        tets_per_node: Tetrahedra per mesh vertex.
        p2_dof_factor: DOFs of a quadratic (P2) space over those of a P1 space on one mesh.
        mesh: The meshing model (:data:`meshing.segmentation.MESH_MEMORY_MODEL`).
    """

    baseline_bytes: float
    read_peak_per_voxel: float
    resident_per_voxel: float
    solver_fixed_bytes: float
    solver_per_dof_bytes: float
    tets_per_node: float
    p2_dof_factor: float
    mesh: MeshMemoryModel


#: The constants in use; see :class:`RunMemoryModel` for how they were measured.
RUN_MEMORY_MODEL = RunMemoryModel(
    baseline_bytes=173.0 * _MIB,
    read_peak_per_voxel=16.0,
    resident_per_voxel=12.0,
    solver_fixed_bytes=_SOLVER_FIXED,
    solver_per_dof_bytes=_SOLVER_PER_DOF,
    tets_per_node=4.4,
    p2_dof_factor=8.0,
    mesh=MESH_MEMORY_MODEL,
)


@dataclass(frozen=True)
class ResourceEstimate:
    """Predicted peak memory of a run, stage by stage, and the memory available to it.

    Attributes:
        image_voxels: Voxels of the CT grid.
        read_bytes: Peak while reading the CT and its label map.
        mesh_bytes: Peak while meshing (the images stay resident); None when no mask was
            given.
        tets: Estimated tetrahedra; None when neither a mask nor a mesh size was given.
        dofs: Estimated degrees of freedom of the solve; None without ``tets``.
        solve_bytes: Peak of the solve over all ranks; None without ``tets``.
        ranks: MPI ranks of the solve.
        peak_bytes: The largest of the stages.
        peak_stage: Which stage it is: ``"reading"``, ``"meshing"`` or ``"solving"``.
        available_bytes: Memory available to the run.
        budget_bytes: The part of it a run may plan on (:data:`MEMORY_BUDGET_FRACTION`).
    """

    image_voxels: int
    read_bytes: int
    mesh_bytes: int | None
    tets: int | None
    dofs: int | None
    solve_bytes: int | None
    ranks: int
    peak_bytes: int
    peak_stage: str
    available_bytes: int
    budget_bytes: int

    @property
    def fits(self) -> bool:
        """Whether the predicted peak stays within the budget."""
        return self.peak_bytes <= self.budget_bytes

    def describe(self) -> str:
        """One line for logs and run records, e.g. ``'peak ~3.1 GB (solving: ...)'``."""
        parts = [f"reading {_gb(self.read_bytes)}"]
        if self.mesh_bytes is not None:
            parts.append(f"meshing {_gb(self.mesh_bytes)}")
        if self.solve_bytes is not None and self.dofs is not None and self.tets is not None:
            per_rank = f" on {self.ranks} ranks" if self.ranks > 1 else ""
            parts.append(f"solving {_gb(self.solve_bytes)} for ~{self.tets:,} tetrahedra, "
                         f"~{self.dofs:,} DOFs{per_rank}")
        return (f"peak ~{_gb(self.peak_bytes)} ({self.peak_stage}); " + ", ".join(parts)
                + f"; {_gb(self.available_bytes)} available")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (bytes as integers)."""
        return {"image_voxels": self.image_voxels, "read_bytes": self.read_bytes,
                "mesh_bytes": self.mesh_bytes, "tets": self.tets, "dofs": self.dofs,
                "solve_bytes": self.solve_bytes, "ranks": self.ranks,
                "peak_bytes": self.peak_bytes, "peak_stage": self.peak_stage,
                "available_bytes": self.available_bytes, "budget_bytes": self.budget_bytes}


def _gb(num_bytes: float) -> str:
    """'3.1 GB' (decimal gigabytes, one decimal; two below 1 GB)."""
    value = num_bytes / 1e9
    return f"{value:.1f} GB" if value >= 1.0 else f"{value:.2f} GB"


# --------------------------------------------------------------------------------------------
# available memory
# --------------------------------------------------------------------------------------------


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (None where there is no such file)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            fields = line.split()
            try:
                return int(fields[1]) * (1024 if fields[-1].lower() == "kb" else 1)
            except (IndexError, ValueError):
                return None
    return None


def _sysconf_available() -> int | None:
    """Free physical memory from ``os.sysconf`` (None where the names are missing)."""
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        page = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None
    return int(pages) * int(page) if pages > 0 and page > 0 else None


def _read_int(path: Path) -> int | None:
    """An integer file of ``/sys`` (None when missing, unreadable or ``max``)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_room(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Memory left under this process's cgroup limit (containers), or None without a limit.

    cgroup v2 (``memory.max`` - ``memory.current``) first, then v1
    (``memory/memory.limit_in_bytes`` - ``memory/memory.usage_in_bytes``); limits of
    2^60 bytes or more mean "no limit" on v1.
    """
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes",
                                    "memory/memory.usage_in_bytes")):
        limit = _read_int(root / limit_file)
        if limit is None or limit >= 1 << 60:
            continue
        usage = _read_int(root / usage_file) or 0
        return max(limit - usage, 0)
    return None


def _own_rss() -> int:
    """Resident memory of this process in bytes (0 where ``/proc`` is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def memory_limit_bytes() -> int | None:
    """The cap set by :data:`MEMORY_LIMIT_ENV` in bytes, or None when it is unset or empty.

    Raises:
        InputError: The variable is set to something other than a positive number of GB.
    """
    text = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0.0):
        raise InputError(f"{MEMORY_LIMIT_ENV}={text!r} is not a positive number of GB",
                         hint=f"set it to the memory the run may use in GB, e.g. "
                         f"{MEMORY_LIMIT_ENV}=16, or unset it")
    return math.floor(value * 1e9)


def available_memory_bytes() -> int:
    """Memory this run can use: what the machine has free plus what the process holds.

    ``MemAvailable`` of ``/proc/meminfo`` (free memory plus reclaimable caches; psutil
    reports the same), else free pages from ``os.sysconf``; capped by the room left under a
    container's cgroup memory limit. The process's own resident memory is added because the
    estimate covers the whole run, including the images it may already hold. The result is
    capped by :data:`MEMORY_LIMIT_ENV` when it is set.

    Returns:
        Bytes; 0 when nothing could be read and no limit is set (the caller should then skip
        the check).

    Raises:
        InputError: :data:`MEMORY_LIMIT_ENV` holds an invalid value.
    """
    limit = memory_limit_bytes()
    free = _meminfo_available()
    if free is None:
        free = _sysconf_available()
    room = _cgroup_room()
    if free is None and room is None:
        return 0 if limit is None else limit
    usable = min(v for v in (free, room) if v is not None) + _own_rss()
    return usable if limit is None else min(usable, limit)


# --------------------------------------------------------------------------------------------
# the estimate
# --------------------------------------------------------------------------------------------


def _bounding_crop(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """The mask cut to its bounding box (the whole array when it is empty)."""
    slices = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        if hits.size == 0:
            return mask
        slices.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return mask[tuple(slices)]


def _tet_count(mask: npt.NDArray[np.bool_], grid: ImageGrid, size_mm: float,
               model: MeshMemoryModel) -> int:
    """Tetrahedra gmsh is expected to make (the count :func:`estimate_mesh_memory` uses).

    :func:`estimate_mesh_memory` with every byte term zeroed and one "byte" per tetrahedron
    returns its tetrahedron count; run on the mask's bounding box, which holds the same
    volume and surface.
    """
    crop = _bounding_crop(mask)
    crop_grid = ImageGrid(shape=crop.shape, spacing=grid.spacing, origin=grid.origin,
                          direction=grid.direction)
    counting = replace(model, fixed=0.0, per_grid_voxel=0.0, per_box_voxel=0.0,
                       per_tet=1.0, quadratic_factor=1.0)
    return int(estimate_mesh_memory(crop, crop_grid, size_mm, order=1, model=counting))


def _positive_int(value: object, name: str, hint: str, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (1 by default), or InputError."""
    if (isinstance(value, bool) or not isinstance(value, int | np.integer)
            or int(value) < minimum):
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise InputError(f"{name} must be {what}, got {value!r}", hint=hint)
    return int(value)


def estimate_resources(
    *,
    image_voxels: int,
    mask: npt.ArrayLike | None = None,
    grid: ImageGrid | None = None,
    size_mm: float | None = None,
    order: int = 1,
    degree: int = 1,
    ranks: int = 1,
    num_tets: int | None = None,
    available_bytes: int | None = None,
    model: RunMemoryModel = RUN_MEMORY_MODEL,
) -> ResourceEstimate:
    """Predict the peak memory of a run, stage by stage (never raises for lack of memory).

    ``reading = baseline + read_peak_per_voxel * image_voxels``;
    ``meshing = baseline + resident_per_voxel * image_voxels + estimate_mesh_memory(...)``;
    ``solving = ranks * solver_fixed + solver_per_dof * dofs`` (all ranks together) with
    ``dofs = 3 * tets / tets_per_node`` for P1 and ``p2_dof_factor`` times that for P2.
    The peak is the largest stage (see :class:`RunMemoryModel` for the measurements).

    Args:
        image_voxels: Voxels of the CT grid (``ct.hu.size``); 0 for a model without an
            image (an Abaqus deck).
        mask: The region to mesh (bool or 0/1 array on ``grid``), e.g. ``bone | lesion``.
            Without it (and without ``num_tets``) only reading is estimated.
        grid: The mask's grid; required with ``mask``.
        size_mm: Target element edge length in mm; required with ``mask``.
        order: Geometry order of the tetrahedra, 1 (4-node) or 2 (10-node).
        degree: Displacement degree of the solve, 1 or 2.
        ranks: MPI ranks of the solve (each holds its block of the model).
        num_tets: Tetrahedra of a mesh read from a file; replaces the mask-based count (and
            the meshing stage).
        available_bytes: Memory available to the run; default :func:`available_memory_bytes`.
        model: The constants.

    Returns:
        The estimate.

    Raises:
        InputError: ``mask`` without ``grid``/``size_mm``, or an invalid order, degree,
            ranks, voxel or tetrahedron count, element size or mask shape.
    """
    voxels = _positive_int(image_voxels, "image_voxels", "pass ct.hu.size (0 without an "
                           "image, e.g. for an Abaqus deck)", minimum=0)
    ranks = _positive_int(ranks, "ranks", "pass the MPI size (1 for a serial run)")
    if order not in (1, 2):
        raise InputError(f"element order must be 1 or 2, got {order!r}",
                         hint="use 1 (4-node) or 2 (10-node) tetrahedra")
    if degree not in (1, 2):
        raise InputError(f"displacement degree must be 1 or 2, got {degree!r}",
                         hint="use solver.degree = 1 or 2")
    base = model.baseline_bytes
    read_bytes = base + model.read_peak_per_voxel * voxels
    stages = {"reading": read_bytes}
    mesh_bytes: float | None = None
    tets: int | None = None
    if num_tets is not None:
        tets = _positive_int(num_tets, "num_tets", "pass mesh.num_cells")
    elif mask is not None:
        if grid is None or size_mm is None:
            raise InputError("the meshing estimate needs the mask's grid and the element size",
                             hint="pass grid=ct.grid and size_mm=config.mesh.size_mm")
        if not (isinstance(size_mm, int | float) and math.isfinite(size_mm) and size_mm > 0):
            raise InputError(f"element size must be a positive number of mm, got {size_mm!r}",
                             hint="pass the target edge length in mm, e.g. 3.0")
        region = np.asarray(mask)
        if region.shape != grid.shape:
            raise InputError(f"mask shape {region.shape} differs from the grid {grid.shape}",
                             hint="build the mask on the CT grid")
        region = region if region.dtype == np.bool_ else region != 0
        added = estimate_mesh_memory(region, grid, float(size_mm), order=order,
                                     model=model.mesh)
        mesh_bytes = base + model.resident_per_voxel * voxels + added
        stages["meshing"] = mesh_bytes
        tets = _tet_count(region, grid, float(size_mm), model.mesh)
    dofs: int | None = None
    solve_bytes: float | None = None
    if tets is not None:
        p1_dofs = 3.0 * tets / model.tets_per_node
        dofs = math.ceil(p1_dofs * (model.p2_dof_factor if degree == 2 else 1.0))
        solve_bytes = ranks * model.solver_fixed_bytes + model.solver_per_dof_bytes * dofs
        stages["solving"] = solve_bytes
    stage, peak = max(stages.items(), key=lambda item: item[1])
    available = available_memory_bytes() if available_bytes is None else int(available_bytes)
    return ResourceEstimate(
        image_voxels=voxels,
        read_bytes=math.ceil(read_bytes),
        mesh_bytes=None if mesh_bytes is None else math.ceil(mesh_bytes),
        tets=tets,
        dofs=dofs,
        solve_bytes=None if solve_bytes is None else math.ceil(solve_bytes),
        ranks=ranks,
        peak_bytes=math.ceil(peak),
        peak_stage=stage,
        available_bytes=available,
        budget_bytes=math.floor(MEMORY_BUDGET_FRACTION * available),
    )


def check_resources(
    *,
    image_voxels: int,
    mask: npt.ArrayLike | None = None,
    grid: ImageGrid | None = None,
    size_mm: float | None = None,
    order: int = 1,
    degree: int = 1,
    ranks: int = 1,
    available_bytes: int | None = None,
    num_tets: int | None = None,
) -> ResourceEstimate:
    """Refuse a run whose predicted peak memory exceeds 80% of the memory available.

    Call it after reading the images and before meshing (the mask is known, nothing
    expensive has run). Arguments as for :func:`estimate_resources`. When the available
    memory cannot be read (no ``/proc``, no ``sysconf``), the estimate is returned unchecked.

    Returns:
        The estimate (log :meth:`ResourceEstimate.describe`, keep :meth:`~ResourceEstimate.
        to_dict` in the run record).

    Raises:
        InputError: The run would need more than :data:`MEMORY_BUDGET_FRACTION` of the
            available memory (the message names the stage, the element and DOF counts and
            both sizes; the hint how to shrink the run), or invalid arguments.
    """
    estimate = estimate_resources(image_voxels=image_voxels, mask=mask, grid=grid,
                                  size_mm=size_mm, order=order, degree=degree, ranks=ranks,
                                  num_tets=num_tets, available_bytes=available_bytes)
    if estimate.available_bytes <= 0 or estimate.fits:
        return estimate
    ranks_text = f", {estimate.ranks} ranks" if estimate.ranks > 1 else ""
    detail = {"reading": f"to read {image_voxels:,} voxels",
              "meshing": f"to mesh at {size_mm} mm",
              "solving": f"to solve ~{estimate.dofs or 0:,} degrees of freedom "
                         f"[~{estimate.tets or 0:,} tetrahedra, P{degree}{ranks_text}]"}
    limit = memory_limit_bytes() if available_bytes is None else None
    where = (f"{MEMORY_LIMIT_ENV}={os.environ[MEMORY_LIMIT_ENV].strip()} allows "
             f"{_gb(estimate.available_bytes)}"
             if limit is not None and estimate.available_bytes == limit
             else f"this machine has {_gb(estimate.available_bytes)} available")
    raise InputError(
        f"this analysis would need ~{_gb(estimate.peak_bytes)} of memory "
        f"{detail[estimate.peak_stage]}, {where} (a run may plan on "
        f"{MEMORY_BUDGET_FRACTION:.0%} of it)",
        hint="use a coarser --mesh-size, crop the image (e.g. to the proximal femur), or run "
        f"on a bigger machine (or raise {MEMORY_LIMIT_ENV} if it was set too low)"
        if limit is not None else "use a coarser --mesh-size, crop the image (e.g. to the "
        "proximal femur), or run on a bigger machine",
    )


# --------------------------------------------------------------------------------------------
# image sanity
# --------------------------------------------------------------------------------------------


def check_image_sanity(ct: CTVolume | ImageGrid) -> None:
    """Refuse a CT whose header or values cannot describe a clinical CT.

    Args:
        ct: The CT (grid and HU checked) or only its grid (e.g. from a header).

    Raises:
        InputError: A voxel edge below :data:`MIN_SPACING_MM` or above
            :data:`MAX_SPACING_MM` (the axis and value are named; the hint suspects a unit
            mistake), more than :data:`MAX_IMAGE_VOXELS` voxels, or HU outside
            :data:`HU_PLAUSIBLE_RANGE`.
    """
    grid = ct if isinstance(ct, ImageGrid) else ct.grid
    voxels = math.prod(grid.shape)
    shape = " x ".join(str(n) for n in grid.shape)
    if voxels > MAX_IMAGE_VOXELS:
        raise InputError(
            f"the CT has {voxels:,} voxels ({shape}), more than the {MAX_IMAGE_VOXELS:,} "
            "osteofe accepts",
            hint="crop the image to the femur (or the proximal femur) or resample it to a "
            "coarser voxel size before running osteofe",
        )
    for axis, spacing in zip("ijk", grid.spacing.tolist(), strict=True):
        if spacing < MIN_SPACING_MM or spacing > MAX_SPACING_MM:
            small = spacing < MIN_SPACING_MM
            guess = (f"in metres ({spacing * 1000:g} mm?)" if small
                     else f"in micrometres ({spacing / 1000:g} mm?)")
            raise InputError(
                f"the CT's voxel size along axis {axis} is {spacing:g} mm, outside the "
                f"{MIN_SPACING_MM:g}-{MAX_SPACING_MM:g} mm of a clinical CT; the header may "
                f"give it {guess} or be corrupt",
                hint="check the scan's pixel spacing and slice thickness; re-export the CT "
                "from the scanner/PACS or fix the header's spacing (e.g. in 3D Slicer)",
            )
    if isinstance(ct, ImageGrid) or ct.hu.size == 0:
        return
    low, high = float(np.min(ct.hu)), float(np.max(ct.hu))
    if low < HU_PLAUSIBLE_RANGE[0] or high > HU_PLAUSIBLE_RANGE[1]:
        raise InputError(
            f"the CT values span {low:g}..{high:g}, far outside the Hounsfield scale "
            f"({HU_PLAUSIBLE_RANGE[0]:g}..{HU_PLAUSIBLE_RANGE[1]:g} HU accepted)",
            hint="the rescale slope/intercept of the file is probably wrong; re-export the CT "
            "in Hounsfield units",
        )


# --------------------------------------------------------------------------------------------
# the femur sits on bone
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoneHUBounds:
    """Physiological bounds of the CT values inside a femur (:func:`check_femur_on_bone`).

    Sources. Clinical CT of the femur: cortical bone ~1000-2000 HU, trabecular bone
    ~100-400 HU, fatty marrow ~-100 HU, muscle ~40 HU, air -1000 HU (the Hounsfield scale).
    Measured with :func:`femur_hu_profile`: the TotalSegmentator example's right femur
    (``../shared/data/ct``, 3 mm voxels, heavy partial volume) has median 168 HU, 99th
    percentile 629 HU, 0.6% of its voxels above 700 HU, none below -400 HU and a boundary
    step of 127 HU; the built-in phantom (0.8-1.5 mm voxels, with and without lesion and
    40 HU noise) median 209-273 HU, 99th percentile 1575-1636 HU, 30-35% above 700 HU, no
    air, boundary step 750-850 HU. The same masks moved by 9-50 mm along any image axis
    keep a boundary step of -11..23 HU (phantom and real CT), and 50 mm moves of the phantom
    mask put 11-86% of it on air; a segmentation read as the CT (values = label numbers),
    an all-air image and an int8 export clipped to -128..127 HU never reach 300 HU.

    Attributes:
        min_p99_hu: The 99th percentile of the HU inside the mask must reach this (dense,
            cortical bone is present); 629 HU on the 3 mm example, so 300 leaves room for
            coarser, noisier scans and osteoporotic bone.
        median_range_hu: The median HU must lie in this range (a femur is mostly bone and
            marrow: neither air nor metal).
        air_hu: Voxels below this count as air or gas (fat, the lowest tissue in a femur,
            sits near -100 HU).
        max_air_fraction: Share of the mask that may be air (partial volume at the skin of
            a thin patient, gas artefacts); a femur holds none.
        cortical_hu: Voxels above this count as cortical bone (reported, not required: at
            3 mm voxels partial volume leaves almost none).
        min_boundary_step_hu: Median HU step from inside to outside across the mask's
            boundary faces, at the best offset within ``boundary_tolerance_mm``, that a mask
            lying on the bone shows (the cortex is the bright rim of the femur).
        boundary_tolerance_mm: How far the mask's boundary may sit from the bone's edge
            (over- or under-segmentation by a voxel or two) and still count as lying on it.
        min_boundary_faces: Fewer boundary faces than this: the step is not judged.
    """

    min_p99_hu: float = 300.0
    median_range_hu: tuple[float, float] = (-100.0, 1000.0)
    air_hu: float = -400.0
    max_air_fraction: float = 0.05
    cortical_hu: float = 700.0
    min_boundary_step_hu: float = 50.0
    boundary_tolerance_mm: float = 3.0
    min_boundary_faces: int = 50


#: The bounds in use; see :class:`BoneHUBounds` for the measurements behind them.
FEMUR_HU_BOUNDS = BoneHUBounds()
#: Largest boundary offset tried, in voxels (cost: two morphological steps per voxel).
_MAX_BOUNDARY_OFFSET_VOXELS = 4


@dataclass(frozen=True)
class MaskHUProfile:
    """CT values inside a mask (or at a mesh's cells), as :func:`check_femur_on_bone` judges.

    Attributes:
        voxels: Voxels (or cells) sampled.
        median_hu: Median HU.
        p1_hu: 1st percentile, HU.
        p99_hu: 99th percentile, HU.
        min_hu: Smallest value, HU.
        max_hu: Largest value, HU.
        cortical_fraction: Share above :attr:`BoneHUBounds.cortical_hu`.
        air_fraction: Share below :attr:`BoneHUBounds.air_hu`.
        boundary_step_hu: Median HU step (inside minus outside) across the mask's boundary
            faces at the best offset; None when not measured (a mesh, or too few faces).
        boundary_offset_mm: The offset of that best step (negative: the mask shrunk,
            positive: grown); None with ``boundary_step_hu``.
    """

    voxels: int
    median_hu: float
    p1_hu: float
    p99_hu: float
    min_hu: float
    max_hu: float
    cortical_fraction: float
    air_fraction: float
    boundary_step_hu: float | None = None
    boundary_offset_mm: float | None = None

    def describe(self, bounds: BoneHUBounds = FEMUR_HU_BOUNDS) -> str:
        """What was found, e.g. ``'median 76 HU, 99th percentile 76 HU, ...'``."""
        text = (f"median {self.median_hu:.0f} HU, 99th percentile {self.p99_hu:.0f} HU, "
                f"range {self.min_hu:.0f}..{self.max_hu:.0f} HU, "
                f"{100.0 * self.cortical_fraction:.1f}% above {bounds.cortical_hu:.0f} HU, "
                f"{100.0 * self.air_fraction:.1f}% below {bounds.air_hu:.0f} HU")
        if self.boundary_step_hu is not None:
            text += f", boundary step {self.boundary_step_hu:.0f} HU"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (HU rounded to 0.1, fractions to 1e-4)."""
        step = self.boundary_step_hu
        return {"voxels": self.voxels, "median_hu": round(self.median_hu, 1),
                "p1_hu": round(self.p1_hu, 1), "p99_hu": round(self.p99_hu, 1),
                "min_hu": round(self.min_hu, 1), "max_hu": round(self.max_hu, 1),
                "cortical_fraction": round(self.cortical_fraction, 4),
                "air_fraction": round(self.air_fraction, 4),
                "boundary_step_hu": None if step is None else round(step, 1),
                "boundary_offset_mm": self.boundary_offset_mm}


def _value_profile(values: npt.NDArray[np.float32], bounds: BoneHUBounds) -> MaskHUProfile:
    """Distribution of sampled HU (no boundary step)."""
    p1, median, p99 = (float(v) for v in np.percentile(values, [1.0, 50.0, 99.0]))
    return MaskHUProfile(
        voxels=int(values.size), median_hu=median, p1_hu=p1, p99_hu=p99,
        min_hu=float(values.min()), max_hu=float(values.max()),
        cortical_fraction=float(np.count_nonzero(values > bounds.cortical_hu)) / values.size,
        air_fraction=float(np.count_nonzero(values < bounds.air_hu)) / values.size)


def _face_steps(hu: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_]
                ) -> npt.NDArray[np.float32]:
    """HU inside minus HU outside across every face between a mask voxel and a non-mask one.

    Faces on the image border have no outside voxel and are not counted.
    """
    steps = []
    for axis in range(3):
        low = [slice(None)] * 3
        high = [slice(None)] * 3
        low[axis], high[axis] = slice(0, -1), slice(1, None)
        m_low, m_high = mask[tuple(low)], mask[tuple(high)]
        h_low, h_high = hu[tuple(low)], hu[tuple(high)]
        leaving = m_low & ~m_high
        entering = m_high & ~m_low
        steps.append(h_low[leaving] - h_high[leaving])
        steps.append(h_high[entering] - h_low[entering])
    return np.concatenate(steps)


def _boundary_step(hu: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_],
                   spacing: npt.NDArray[np.float64], bounds: BoneHUBounds
                   ) -> tuple[float | None, float | None]:
    """Best median boundary step over the mask grown/shrunk by up to the tolerance.

    Returns:
        ``(step HU, offset mm)``, or ``(None, None)`` when too few faces were found.
    """
    from scipy import ndimage

    finest = float(np.min(spacing))
    reach = max(1, min(_MAX_BOUNDARY_OFFSET_VOXELS,
                       round(bounds.boundary_tolerance_mm / finest)))
    # Work on the bounding box plus a margin: the rest of the image holds no boundary.
    lower = []
    upper = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        lower.append(max(int(hits[0]) - reach - 1, 0))
        upper.append(min(int(hits[-1]) + reach + 2, mask.shape[axis]))
    box = tuple(slice(lo, hi) for lo, hi in zip(lower, upper, strict=True))
    region, values = mask[box], hu[box]
    structure = ndimage.generate_binary_structure(3, 1)
    best: tuple[float | None, float | None] = (None, None)
    grown = shrunk = region
    for offset in range(0, reach + 1):
        if offset:
            grown = ndimage.binary_dilation(grown, structure)
            shrunk = ndimage.binary_erosion(shrunk, structure, border_value=1)
        for sign, candidate in ((1, grown), (-1, shrunk)) if offset else ((1, region),):
            steps = _face_steps(values, candidate)
            if steps.size < bounds.min_boundary_faces:
                continue
            step = float(np.median(steps))
            if best[0] is None or step > best[0]:
                best = (step, round(sign * offset * finest, 3))
    return best


def femur_hu_profile(ct: CTVolume, mask: npt.ArrayLike,
                     bounds: BoneHUBounds = FEMUR_HU_BOUNDS) -> MaskHUProfile:
    """The CT values inside a femur mask and the HU step across its boundary.

    Args:
        ct: The CT (HU).
        mask: The femur (bone and lesion), bool or 0/1 array on ``ct.grid``.
        bounds: The cortical and air thresholds and the boundary tolerance.

    Returns:
        The profile (:class:`MaskHUProfile`).

    Raises:
        InputError: The mask is empty or not on the CT's grid.
    """
    region = np.asarray(mask)
    if region.shape != ct.grid.shape:
        raise InputError(f"mask shape {region.shape} differs from the CT grid {ct.grid.shape}",
                         hint="resample the labels onto the CT grid")
    region = region if region.dtype == np.bool_ else region != 0
    if not region.any():
        raise InputError("the femur mask is empty", hint="check the bone label")
    profile = _value_profile(ct.hu[region], bounds)
    step, offset = _boundary_step(ct.hu, region, ct.grid.spacing, bounds)
    return replace(profile, boundary_step_hu=step, boundary_offset_mm=offset)


def _bone_problems(profile: MaskHUProfile, bounds: BoneHUBounds) -> list[str]:
    """The bounds a profile breaks, in words (empty: it looks like bone)."""
    problems = []
    if profile.p99_hu < bounds.min_p99_hu:
        problems.append(f"no dense bone: 99th percentile {profile.p99_hu:.0f} HU, a femur "
                        f"reaches at least {bounds.min_p99_hu:.0f} HU (its cortex ~1000-2000 "
                        "HU)")
    low, high = bounds.median_range_hu
    if not low <= profile.median_hu <= high:
        problems.append(f"median {profile.median_hu:.0f} HU, a femur's lies within "
                        f"{low:.0f}..{high:.0f} HU")
    if profile.air_fraction > bounds.max_air_fraction:
        problems.append(f"{100.0 * profile.air_fraction:.0f}% of it is air (below "
                        f"{bounds.air_hu:.0f} HU), a femur holds none (at most "
                        f"{100.0 * bounds.max_air_fraction:.0f}% accepted)")
    step = profile.boundary_step_hu
    if step is not None and step < bounds.min_boundary_step_hu:
        problems.append(f"its boundary does not follow the bone's edge: the median HU step "
                        f"across it is {step:.0f} HU (best within "
                        f"{bounds.boundary_tolerance_mm:g} mm), a femur's outline shows at "
                        f"least {bounds.min_boundary_step_hu:.0f} HU (its bright cortex "
                        "against soft tissue)")
    return problems


def _bone_hint(profile: MaskHUProfile) -> str:
    """The likely cause of a refused profile, in words."""
    guesses = []
    if profile.max_hu - profile.min_hu < 1.0:
        guesses.append("the CT is constant inside the femur: is --ct the segmentation?")
    elif -129.0 <= profile.min_hu and profile.max_hu <= 128.0:
        guesses.append("the values fit in -128..127: was the CT exported as 8-bit (int8) "
                       "and clipped?")
    if profile.median_hu <= -900.0:
        guesses.append("the image is air inside the femur: is it empty or the wrong series?")
    guess = " ".join(guesses) + " " if guesses else ""
    return (f"{guess}pass the CT in Hounsfield units (not the label map, not clipped or "
            "rescaled), and labels made on this very scan (same patient position and origin)")


def check_femur_on_bone(ct: CTVolume, mask: npt.ArrayLike,
                        bounds: BoneHUBounds = FEMUR_HU_BOUNDS,
                        what: str = "femur mask") -> MaskHUProfile:
    """Refuse a femur mask that does not sit on bone in the CT.

    A mask on the wrong scan, shifted off the bone, or a CT that is not in Hounsfield units
    (the segmentation given as the CT, an all-air or clipped 8-bit export) all give a
    plausible-looking failure load from nonsense moduli. The CT values inside the mask must
    show dense bone, a median of bone and marrow, no air, and the mask's boundary must sit
    on the bone's edge (see :class:`BoneHUBounds` for the bounds and their measurements).

    Args:
        ct: The CT (HU).
        mask: The femur (bone and lesion) on ``ct.grid``.
        bounds: The bounds.
        what: Name of the mask in the message.

    Returns:
        The profile, for the run record.

    Raises:
        InputError: A bound is broken; the message gives what was found and what a femur
            shows, the hint the likely cause.
    """
    profile = femur_hu_profile(ct, mask, bounds)
    problems = _bone_problems(profile, bounds)
    if problems:
        raise InputError(
            f"the {what} does not sit on bone in the CT: {'; '.join(problems)} (found: "
            f"{profile.describe(bounds)})",
            hint=_bone_hint(profile))
    return profile


def check_mesh_on_bone(ct: CTVolume, mesh: TetMesh, bounds: BoneHUBounds = FEMUR_HU_BOUNDS,
                       name: str = "mesh") -> MaskHUProfile:
    """Refuse a user's mesh whose cells do not lie on bone in the CT.

    The CT value at each cell centroid (nearest voxel) is sampled; a mesh in other world
    coordinates than the CT (RAS instead of LPS, metres, another scan) lands on air, soft
    tissue or outside the image. The distribution bounds of :func:`check_femur_on_bone`
    apply (the boundary step needs a voxel mask and is not judged).

    Args:
        ct: The CT (HU).
        mesh: The mesh, in the CT's world coordinates (mm).
        bounds: The bounds.
        name: Name of the mesh in the message (its file name).

    Returns:
        The profile of the sampled values.

    Raises:
        InputError: More than :attr:`BoneHUBounds.max_air_fraction` of the cells lie outside
            the image, or a distribution bound is broken.
    """
    index = np.rint(ct.grid.world_to_index(mesh.centroids())).astype(np.int64)
    inside = np.all((index >= 0) & (index < np.asarray(ct.grid.shape)), axis=1)
    outside = 1.0 - float(np.count_nonzero(inside)) / max(mesh.num_cells, 1)
    low, high = ct.grid.world_bounds()
    if outside > bounds.max_air_fraction:
        raise InputError(
            f"{name}: {100.0 * outside:.0f}% of its cells lie outside the CT (image spans "
            f"{np.round(low, 1).tolist()}..{np.round(high, 1).tolist()} mm, the mesh "
            f"{np.round(mesh.points.min(axis=0), 1).tolist()}.."
            f"{np.round(mesh.points.max(axis=0), 1).tolist()} mm)",
            hint="the mesh must be in the CT's world coordinates (LPS, mm): check its units "
            "and axes (RAS meshes have x and y negated) and that it was made on this scan")
    values = ct.hu[tuple(index[inside].T)]
    profile = _value_profile(values, bounds)
    problems = _bone_problems(profile, bounds)
    if problems:
        raise InputError(
            f"{name}: its cells do not lie on bone in the CT: {'; '.join(problems)} (found "
            f"at the cell centres: {profile.describe(bounds)})",
            hint="the mesh must be in the CT's world coordinates (LPS, mm) and made on this "
            "scan; " + _bone_hint(profile))
    return profile


# --------------------------------------------------------------------------------------------
# the side and the extent of the model
# --------------------------------------------------------------------------------------------


def check_side(expected: str | None, landmarks: FemurLandmarks) -> None:
    """Refuse a run whose given side contradicts the side found from the anatomy.

    Args:
        expected: ``"left"``, ``"right"`` or None (not given: nothing to check).
        landmarks: The femur's landmarks (``landmarks.side``: the frame's side).

    Raises:
        InputError: ``expected`` is another side than ``landmarks.side``, or not a side.
    """
    if expected is None:
        return
    side = {"l": "left", "r": "right"}.get(expected.strip().lower(), expected.strip().lower())
    if side not in ("left", "right"):
        raise InputError(f"side {expected!r} is not left or right",
                         hint="pass --side left or --side right (or leave it out)")
    if side != landmarks.side:
        anatomy = ("" if landmarks.anatomical_side is None else
                   f"; the lesser trochanter alone says {landmarks.anatomical_side}")
        raise InputError(
            f"the side given is {side}, but the femur in the image is a {landmarks.side} femur "
            f"(from its landmarks in the {landmarks.convention} world axes{anatomy})",
            hint="check --side (or the manifest's side column) and the --bone-label: the "
            "wrong femur, a mislabelled case or a mirrored image would otherwise be analysed")


#: Shortest shaft below the apex of the lesser trochanter, down to the fixed distal cut, mm.
#: By Saint-Venant's principle the disturbance of a clamped end decays over one to two
#: section diameters; the femoral shaft is 25-30 mm across (the phantom's 28 mm), so a cut
#: nearer than ~40 mm stiffens the trochanteric region and raises the failure load. The
#: failure criterion also leaves out the surface within ``failure.exclude_distal_mm``
#: (default 40 mm) of the cut.
MIN_SHAFT_BELOW_LESSER_TROCHANTER_MM = 40.0
#: Without a lesser trochanter found: shortest model below the head centre, mm (the apex
#: lies ~60 mm below the head centre: 61 mm in the phantom), plus the shaft above.
MIN_BELOW_HEAD_CENTRE_MM = 100.0
#: The banner of a model too short for its load cases, run with ``--allow-partial``.
PARTIAL_BANNER = ("PARTIAL MODEL - the femur is too short for this load case: the failure "
                  "load is not valid for clinical use")

#: A load of the surface left out as non-bone (fea.failure.StrainCriterion ``floor_cells``)
#: more than this fraction below the failure load is a caution: the label holds non-bone
#: material that would have failed first (an unlabelled lytic lesion would look so).
NON_BONE_CAUTION_MARGIN = 0.05


def non_bone_caution(case: str, failure_load_n: float, non_bone_load_n: float | None,
                     region: str) -> str | None:
    """The caution for a case whose left-out non-bone surface would fail first, or None.

    Args:
        case: Load case name.
        failure_load_n: The case's failure load (bone surface), N.
        non_bone_load_n: The lowest load of the surface left out as non-bone, N, or None.
        region: Anatomical region of that surface.
    """
    if non_bone_load_n is None or non_bone_load_n >= (1 - NON_BONE_CAUTION_MARGIN) * (
            failure_load_n):
        return None
    return (f"{case}: the label holds material without bone density (modulus floor) in the "
            f"{region} whose surface strain would give {non_bone_load_n:.0f} N, "
            f"{100 * (1 - non_bone_load_n / failure_load_n):.0f} % below the failure load; "
            "the criterion is for bone, so that surface was left out. If it is a lytic "
            "lesion, label it as one (--lesion-label) so that its walls are evaluated; "
            "otherwise check the label there")


def model_extent_problems(landmarks: FemurLandmarks, load_cases: Sequence[Any]) -> list[str]:
    """Why a femur model is too short for its load cases (empty: long enough).

    Args:
        landmarks: The femur's landmarks.
        load_cases: The :class:`fea.loads.LoadCase` objects to be applied (their
            ``support``: ``"distal"`` or ``"fall"``).

    Returns:
        One sentence per problem.
    """
    problems = []
    axis = np.asarray(landmarks.shaft_axis, dtype=np.float64)
    distal = float(landmarks.distal_level_mm)
    if not landmarks.shaft_axis_from_geometry:
        problems.append(f"the femur is {landmarks.length_mm:.0f} mm long along the shaft, too "
                        "short to fit a shaft axis (the image's superior axis was used, so "
                        "the load direction depends on how the leg lay in the scanner)")
    if landmarks.lesser_trochanter_mm is not None:
        below = float(np.asarray(landmarks.lesser_trochanter_mm) @ axis) - distal
        if below < MIN_SHAFT_BELOW_LESSER_TROCHANTER_MM:
            problems.append(f"the fixed distal cut is {below:.0f} mm below the lesser "
                            f"trochanter, less than the "
                            f"{MIN_SHAFT_BELOW_LESSER_TROCHANTER_MM:.0f} mm that keep the "
                            "fixation from stiffening the trochanteric region")
    else:
        below = float(np.asarray(landmarks.head_centre_mm) @ axis) - distal
        if below < MIN_BELOW_HEAD_CENTRE_MM:
            problems.append(f"the lesser trochanter was not found and the model ends "
                            f"{below:.0f} mm below the head centre (at least "
                            f"{MIN_BELOW_HEAD_CENTRE_MM:.0f} mm, i.e. "
                            f"{MIN_SHAFT_BELOW_LESSER_TROCHANTER_MM:.0f} mm of shaft below the "
                            "lesser trochanter, are needed): the fixation sits in the "
                            "trochanteric region")
    falls = sorted({c.name for c in load_cases if getattr(c, "support", "distal") == "fall"})
    if falls and landmarks.greater_trochanter_lateral_mm is None:
        problems.append(f"load case(s) {', '.join(falls)} rest the greater trochanter on the "
                        "ground, but no greater trochanter was found")
    return problems


def check_model_extent(landmarks: FemurLandmarks, load_cases: Sequence[Any], *,
                       allow_partial: bool = False) -> dict[str, Any]:
    """Refuse a femur too short for its load cases, or (allowed) flag the result invalid.

    Args:
        landmarks: The femur's landmarks.
        load_cases: The load cases to be applied (:func:`model_extent_problems`).
        allow_partial: Run a model that is too short anyway (``--allow-partial``,
            ``mesh.allow_partial``); the record says it is not valid.

    Returns:
        The ``validity`` record of result.json: ``{"valid": bool, "banner": str | None,
        "reasons": [str, ...]}`` (valid with no reasons when the model is long enough).

    Raises:
        InputError: The model is too short and ``allow_partial`` is False.
    """
    problems = model_extent_problems(landmarks, load_cases)
    if not problems:
        return {"valid": True, "banner": None, "reasons": []}
    if not allow_partial:
        raise InputError(
            "the femur model is too short for the load case: " + "; ".join(problems),
            hint="use a CT that holds the proximal femur down to at least "
            f"{MIN_SHAFT_BELOW_LESSER_TROCHANTER_MM:.0f} mm below the lesser trochanter (and "
            f"a --crop-below-lt of at least {MIN_SHAFT_BELOW_LESSER_TROCHANTER_MM:.0f}), or "
            "pass --allow-partial to compute it anyway, flagged as not valid")
    return {"valid": False, "banner": PARTIAL_BANNER, "reasons": problems}


# --------------------------------------------------------------------------------------------
# the risk model
# --------------------------------------------------------------------------------------------

#: Features the strength pipeline offers a fracture-risk model, and what each needs:
#: ``None`` nothing, ``"lesion"`` a labelled lesion, ``"lesion+pain"`` also the Mirels pain
#: item (--pain) for the Mirels total.
RISK_MODEL_FEATURES: dict[str, str | None] = {
    "failure_load_BW": None,
    "failure_load_N": None,
    "body_mass_kg": None,
    "aci_mm": "lesion",
    "ctra_reduction": "lesion",
    "mirels_total": "lesion+pain",
}


#: Per-load-case features offered besides :data:`RISK_MODEL_FEATURES`:
#: ``<case>_load_to_strength`` and ``<case>_failure_load_BW`` for every computed case.
CASE_RISK_FEATURES = ("_load_to_strength", "_failure_load_BW")


def _known_cases() -> set[str]:
    from fea.loads import LOAD_CASES

    return set(LOAD_CASES)


def _case_of(feature: str) -> str | None:
    """The load case a per-case feature belongs to (None for other names)."""
    for ending in CASE_RISK_FEATURES:
        if feature.endswith(ending) and len(feature) > len(ending):
            return feature[:-len(ending)]
    return None


def check_risk_model(path: str | os.PathLike[str] | None, *, pain: str | None = None,
                     lesion: bool | None = None,
                     cases: Sequence[str] | None = None,
                     force: bool = False) -> tuple[str, ...]:
    """Load and validate a fracture-risk model before any work, and check its features.

    The model file is read and checked (:func:`risk.calibration.load_model`: format,
    finite coefficients, log-odds that do not overflow where it applies), and each feature
    it needs must be one the analysis will provide (:data:`RISK_MODEL_FEATURES`, and the
    per-case features :data:`CASE_RISK_FEATURES` of the computed load cases).

    Args:
        path: The model (JSON); None: nothing to check.
        pain: The Mirels pain item, if given (the Mirels total needs it).
        lesion: Whether a lesion is labelled; None when not known yet (before reading the
            labels): the lesion features are then not judged.
        cases: Names of the load cases the run computes; None when not known: a per-case
            feature then only needs a known case name (``fea.loads.LOAD_CASES`` or
            ``custom_<n>``).
        force: Accept a model refused for clinical use (synthetic cohort, < 10 events per
            feature, no covariance: :func:`risk.calibration.clinical_check`); its result
            is then banner-marked.

    Returns:
        The model's feature names (empty without a model).

    Raises:
        OsteofeError: The file is not a valid model (:class:`risk.errors.ModelError`), or
            needs a feature this analysis cannot provide (InputError).
    """
    if path is None:
        return ()
    from risk.calibration import clinical_check, load_model

    model = load_model(Path(path))
    clinical_check(model, force=force)
    names = tuple(str(n) for n in getattr(model, "feature_names_in_", ()))
    per_case = {n: _case_of(n) for n in names if n not in RISK_MODEL_FEATURES}
    computed = set(cases) if cases is not None else None
    unknown = [n for n, case in per_case.items()
               if case is None or (computed is None and case not in _known_cases()
                                   and not re.fullmatch(r"custom_[0-9]+", case))]
    if unknown:
        raise InputError(f"the risk model {Path(path).name} needs feature(s) {unknown} that "
                         "osteofe strength does not compute",
                         hint=f"fit it on the features osteofe provides: "
                         f"{', '.join(RISK_MODEL_FEATURES)}, or <case>"
                         f"{' / <case>'.join(CASE_RISK_FEATURES)} of a computed load case")
    if computed is not None:
        absent = sorted({case for case in per_case.values()
                         if case is not None and case not in computed})
        if absent:
            raise InputError(f"the risk model {Path(path).name} needs load case(s) {absent}, "
                             f"which this run does not compute ({', '.join(sorted(computed))})",
                             hint=f"add them with --load {' '.join(absent)}")
    if pain is None and any(RISK_MODEL_FEATURES.get(n) == "lesion+pain" for n in names):
        raise InputError(f"the risk model {Path(path).name} needs the Mirels total, which "
                         "needs the pain item",
                         hint="pass --pain mild|moderate|functional")
    if lesion is False:
        needs = [n for n in names if RISK_MODEL_FEATURES.get(n) is not None]
        if needs:
            raise InputError(f"the risk model {Path(path).name} needs lesion feature(s) "
                             f"{needs}, but no lesion is labelled",
                             hint="pass --lesion-label with the lesion's label, or use a "
                             "model fitted on the failure load only")
    return names
