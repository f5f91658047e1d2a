"""Pre-flight guards: refuse, before the expensive stages, a run that cannot succeed.

Two checks, both raising :class:`~meshing.errors.InputError` with a message a clinician or a
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

The estimate is a sum of measured per-stage models (:data:`RUN_MEMORY_MODEL`, sources in its
docstring): reading (per image voxel), meshing (:func:`meshing.segmentation.
estimate_mesh_memory`), and solving (a line in the number of degrees of freedom fitted to the
solver benchmark, times the ranks). The peak of the run is the largest stage. It is meant to
tell a job that fits from one that cannot, not to account for every byte.

The memory available is what the machine (or the container's cgroup) has free; the
environment variable :data:`MEMORY_LIMIT_ENV` (``OSTEOFE_MEMORY_LIMIT_GB``, decimal GB) caps
it, e.g. on a shared machine where other jobs will claim memory the run sees free now.

Typical use, in the pipeline after reading the images and before meshing::

    check_image_sanity(ct)
    check_resources(image_voxels=ct.hu.size, mask=bone | lesion, grid=ct.grid,
                    size_mm=config.mesh.size_mm, order=config.mesh.order,
                    degree=config.solver.degree, ranks=MPI.COMM_WORLD.size)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from meshing.errors import InputError
from meshing.segmentation import MESH_MEMORY_MODEL, MeshMemoryModel, estimate_mesh_memory
from meshing.types import CTVolume, ImageGrid

__all__ = [
    "HU_PLAUSIBLE_RANGE",
    "MAX_IMAGE_VOXELS",
    "MAX_SPACING_MM",
    "MEMORY_BUDGET_FRACTION",
    "MEMORY_LIMIT_ENV",
    "MIN_SPACING_MM",
    "RUN_MEMORY_MODEL",
    "ResourceEstimate",
    "RunMemoryModel",
    "available_memory_bytes",
    "check_image_sanity",
    "check_resources",
    "estimate_resources",
    "memory_limit_bytes",
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
    DOFs (2823 vs 2285 MiB at 937k DOFs: P2 has fewer cells per DOF). With 2 ranks the
    benchmark's ranks together peaked at 10,687 MiB, 1.88x the serial run (every rank holds
    the broadcast model), so the estimate multiplies by the ranks. Tetrahedra per node:
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
    ``solving = ranks * (solver_fixed + solver_per_dof * dofs)`` with
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
        ranks: MPI ranks of the solve (each holds the broadcast model).
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
        solve_bytes = ranks * (model.solver_fixed_bytes + model.solver_per_dof_bytes * dofs)
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
