"""``osteofe map``: map a CT onto any tetrahedral mesh and write the per-element material.

For researchers who mesh the bone themselves (gmsh, ANSYS, Abaqus, 3-matic...) and want
osteofe's calibrated, cited, Bonemat-style material mapping without the rest of the pipeline:

    summary = run_map("ct.nii.gz", "femur.msh", "femur_material.inp",
                      calibration={"slope": 0.0008, "intercept": -0.01}, groups=200)

The CT is read with :func:`meshing.imaging.read_ct` (NIfTI, NRRD, MHA, DICOM folder), the mesh
with :func:`meshing.meshio_io.read_mesh` (``.msh``, ``.vtu``, ``.vtk``, ``.inp``, ``.xdmf``,
``.med``; its tetrahedra are kept, 4- or 10-node, in world LPS mm like the CT, or scaled by
``mesh_unit_scale``). The output is

* ``.vtu`` or ``.xdmf`` (+ ``.h5``), written by :func:`meshing.meshio_io.write_mesh`: the
  tetrahedra with cell data ``E_MPa``, ``rho_ash_g_cm3``, ``rho_app_g_cm3``,
  ``rho_qct_g_cm3``, ``HU``, ``cell_tags`` (and ``material_group``/``E_group_MPa`` when
  grouped);
* ``.inp``: an Abaqus/CalculiX model-data deck (nodes, elements grouped by material, one
  ``*MATERIAL``/``*ELASTIC``/``*SOLID SECTION`` per group; no step: add loads and a step in
  your own deck, e.g. with ``*INCLUDE``). Without ``groups`` every distinct modulus is its own
  material (exact); with ``groups`` the moduli are binned (:func:`material.bin_moduli`).

plus a JSON summary beside it (same name, ``.json``): inputs and their SHA-256, calibration
with its fit statistics, law with its source and the fraction of elements outside its valid
range, density and modulus statistics, total mass, the grouping error, warnings.

All outputs are written atomically: into a staging folder beside the output, then moved into
place (the JSON last). On any error nothing is written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from material.binning import ModulusGroups, bin_moduli
from material.calibration import LinearCalibration, calibration_from_config
from material.errors import MaterialError
from material.laws import DEFAULT_CHAIN, DEFAULT_LAW, Law, MaterialModel
from material.mapping import MappingMode, map_material
from material.types import MaterialField
from meshing import inp
from meshing.errors import InputError
from meshing.imaging import align_labels, read_ct, read_labels
from meshing.meshio_io import read_mesh, write_mesh
from meshing.types import LabelMap, TetMesh
from osteofe.outputs import json_default, sha256_file

__all__ = ["OUTPUT_SUFFIXES", "load_table", "read_tet_mesh", "run_map", "write_material_inp"]

PathLike = str | os.PathLike[str]

#: Output formats by file name ending.
OUTPUT_SUFFIXES: tuple[str, ...] = (".vtu", ".xdmf", ".inp")


# --------------------------------------------------------------------------------------------
# Inputs.
# --------------------------------------------------------------------------------------------


def load_table(path: PathLike) -> dict[str, Any]:
    """Read a TOML or JSON file into a dictionary (a calibration or law table for the CLI).

    Raises:
        InputError: Missing file, or not valid TOML/JSON.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"file not found: {p}", hint="check the path")
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{p} is not valid {'JSON' if p.suffix == '.json' else 'TOML'}: "
                         f"{exc}", hint="fix the syntax (see the examples in the docs)") from exc
    if not isinstance(data, dict):
        raise InputError(f"{p} does not hold a table", hint="write key = value pairs")
    return data


def read_tet_mesh(path: PathLike, *, unit_scale: float = 1.0
                  ) -> tuple[TetMesh, dict[str, Any]]:
    """Read the tetrahedra of a mesh file through :func:`meshing.meshio_io.read_mesh`.

    Other cell types are dropped, unused nodes removed, negatively numbered cells reoriented
    and region tags taken from ``cell_tags``/``gmsh:physical``/named sets (see there).

    Args:
        path: Mesh file (``.msh``, ``.vtu``, ``.vtk``, ``.inp``, ``.xdmf``, ``.med``).
        unit_scale: Factor to millimetres (1000 for a mesh in metres).

    Returns:
        ``(mesh, info)``; ``info`` names the cell type and the per-element arrays found.

    Raises:
        InputError: Missing or unreadable file, no tetrahedra, invalid cells.
    """
    mesh, arrays = read_mesh(path, unit_scale=unit_scale)
    return mesh, {"reader": "meshing.meshio_io.read_mesh",
                  "cell_type": "tetra" if mesh.order == 1 else "tetra10",
                  "unit_scale": float(unit_scale), "cell_arrays": sorted(arrays)}


# --------------------------------------------------------------------------------------------
# Writers.
# --------------------------------------------------------------------------------------------


def write_material_inp(
    path: PathLike,
    mesh: TetMesh,
    field: MaterialField,
    groups: ModulusGroups | None = None,
) -> dict[str, Any]:
    """Write an Abaqus/CalculiX model-data deck with one material per modulus group.

    Node ``i`` is node ``i + 1``, cell ``j`` is element ``j + 1`` (C3D4 or C3D10; the VTK
    10-node order is the Abaqus one). Elements are listed in one ``*ELEMENT`` block per
    material, ``ELSET=MAT<k>``, plus ``*ELSET, ELSET=EALL``. Each material has ``*ELASTIC``
    (E in MPa, Poisson ratio) and a ``*SOLID SECTION``; a comment line before it gives the
    group's element count, modulus range and mean ash density. No ``*STEP``: this is model
    data to include in an analysis deck.

    Args:
        path: Output file (written directly; callers wanting atomicity write to a staging
            folder).
        mesh: The mesh the field was mapped on.
        field: The mapped material.
        groups: Moduli grouped by :func:`material.bin_moduli`, or ``None`` for one material
            per distinct modulus (exact).

    Returns:
        ``{"element_type", "num_materials", "max_rel_error"}``.
    """
    e_mpa = field.E_MPa
    if groups is None:
        values, index = np.unique(e_mpa, return_inverse=True)
        index = index.reshape(-1)
        error = 0.0
    else:
        values, index, error = groups.E_MPa, groups.group, groups.max_rel_error
    etype = inp.element_type(mesh.order)
    m = mesh.num_cells
    parts = [
        "*HEADING\n",
        f"osteofe map: CT-mapped linear-elastic material, {m} {etype} elements, "
        f"{values.size} materials\n",
        "** units: mm, N, MPa. Generated by osteofe map; the JSON summary beside this file "
        "records the calibration, law and sources.\n",
        inp.node_block(mesh.points, inp.EXACT_FMT),
        inp.element_blocks(mesh.cells, mesh.order, index,
                           [f"MAT{k + 1}" for k in range(values.size)]),
    ]
    order = np.argsort(index, kind="stable")
    starts = np.searchsorted(index[order], np.arange(values.size + 1))
    parts.append(f"*ELSET, ELSET=EALL, GENERATE\n1, {m}, 1\n")
    nu = field.poisson_ratio
    for k in range(values.size):
        members = order[starts[k]:starts[k + 1]]
        member_e = e_mpa[members]
        parts.append(
            f"** MAT{k + 1}: {members.size} elements, E {member_e.min():.6g}.."
            f"{member_e.max():.6g} MPa, mean rho_ash "
            f"{field.rho_ash_g_cm3[members].mean():.4f} g/cm^3\n"
            f"*MATERIAL, NAME=MAT{k + 1}\n*ELASTIC\n{values[k]:.17g}, {nu:.17g}\n"
            f"*SOLID SECTION, ELSET=MAT{k + 1}, MATERIAL=MAT{k + 1}\n"
        )
    Path(path).write_text("".join(parts), encoding="ascii")
    return {"element_type": etype, "num_materials": int(values.size),
            "max_rel_error": float(error)}


# --------------------------------------------------------------------------------------------
# The tool.
# --------------------------------------------------------------------------------------------


def _calibration(
    spec: LinearCalibration | Mapping[str, Any] | None,
    ct: Any,
    labels_path: PathLike | None,
    warnings: list[str],
) -> LinearCalibration:
    if isinstance(spec, LinearCalibration):
        return spec
    if spec is None:
        from osteofe.pipeline import default_calibration

        warnings.append("no calibration given: used the built-in generic scanner line (not "
                        "patient-specific); give a phantom or scanner line for real scans")
        return default_calibration()
    labels: LabelMap | None = None
    if labels_path is not None:
        labels = align_labels(read_labels(labels_path), ct.grid)
    return calibration_from_config(spec, ct=ct, labels=labels)


def _mass(field: MaterialField, volumes: npt.NDArray[np.float64]) -> dict[str, float]:
    v = np.abs(volumes)
    return {
        "volume_cm3": float(v.sum()) / 1000.0,
        "mass_qct_g": float(field.rho_qct_g_cm3 @ v) / 1000.0,
        "mass_ash_g": float(field.rho_ash_g_cm3 @ v) / 1000.0,
        "mass_app_g": float(field.rho_app_g_cm3 @ v) / 1000.0,
    }


def run_map(
    ct_path: PathLike,
    mesh_path: PathLike,
    out_path: PathLike,
    *,
    calibration: LinearCalibration | Mapping[str, Any] | None = None,
    law: str | Mapping[str, Any] | Law = DEFAULT_LAW,
    mode: MappingMode = "hu_average",
    quadrature_degree: int = 2,
    groups: int | None = None,
    chain: str = DEFAULT_CHAIN,
    poisson_ratio: float = 0.3,
    E_floor_MPa: float = 5.0,
    floor_tags: Sequence[int] = (),
    labels_path: PathLike | None = None,
    mesh_unit_scale: float = 1.0,
) -> dict[str, Any]:
    """Map a CT onto a tetrahedral mesh file and write the mesh with its material.

    Args:
        ct_path: CT image (NIfTI/NRRD/MHA file or DICOM folder), in HU.
        mesh_path: Tetrahedral mesh in the CT's world frame (LPS, mm): ``.msh``, ``.vtu``,
            ``.vtk``, ``.inp``, ``.xdmf`` or ``.med``.
        out_path: Output file: ``.vtu``, ``.xdmf`` (an ``.h5`` is written beside it) or
            ``.inp``. The JSON summary goes to the same path with ``.json``.
        calibration: A :class:`~material.calibration.LinearCalibration`; a calibration table
            (:func:`~material.calibration.calibration_from_config`: ``slope``/``intercept``,
            ``rods``, ``rod_labels`` with ``labels_path``, or ``phantomless``); or ``None``
            for osteofe's generic line (with a warning in the summary).
        law: Modulus law name (``material.LAWS``), user law table
            (:func:`~material.laws.law_from_config`) or law object.
        mode: ``"hu_average"``, ``"modulus_average"`` or ``"centroid"``.
        quadrature_degree: Quadrature degree of the averaging modes (1-9).
        groups: Bin the moduli into at most this many log-spaced groups (``.inp``: one
            material per group; ``.vtu``/``.xdmf``: extra cell data); ``None`` = exact.
        chain: Density chain name (``material.DENSITY_CHAINS``).
        poisson_ratio: Poisson ratio written with every material.
        E_floor_MPa: Lower bound of E, MPa.
        floor_tags: Element tags forced to the floor (lytic lesions).
        labels_path: Label map on the CT grid, for ``rod_labels`` or labelled phantomless
            calibrations.
        mesh_unit_scale: Factor from the mesh file's length unit to mm (1000 for metres).
            The output mesh is written in mm.

    Returns:
        The JSON summary (also written beside the output).

    Raises:
        OsteofeError: With a hint, for any invalid input: an unsupported output suffix, an
            unreadable CT or mesh, a CT never rescaled to HU or an implausible (e.g.
            negative-slope) calibration (:class:`~material.errors.CalibrationError`), a mesh
            outside the CT (:class:`~material.errors.MappingError`), an unknown law or chain.
            Nothing is written then.
    """
    start = time.perf_counter()
    timings: dict[str, float] = {}
    warnings: list[str] = []
    out = Path(out_path)
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"cannot write the mapped mesh as '{out.name}'",
                         hint=f"name the output with one of {', '.join(OUTPUT_SUFFIXES)}")
    if out.is_dir():
        raise InputError(f"output {out} is a folder", hint="give a file name, e.g. femur.vtu")
    summary_path = out.with_suffix(".json")
    if groups is not None and (isinstance(groups, bool) or int(groups) < 1):
        raise InputError(f"groups = {groups!r} must be a positive integer",
                         hint="e.g. --groups 256, or leave it out for exact moduli")

    ct = read_ct(ct_path)
    mesh, mesh_info = read_tet_mesh(mesh_path, unit_scale=mesh_unit_scale)
    timings["read_s"] = time.perf_counter() - start
    cal = _calibration(calibration, ct, labels_path, warnings)
    model = MaterialModel.from_names(cal, chain=chain, law=law, poisson_ratio=poisson_ratio,
                                     E_floor_MPa=E_floor_MPa)
    t0 = time.perf_counter()
    field = map_material(mesh, ct, model, mode=mode, quadrature_degree=quadrature_degree,
                         floor_tags=floor_tags)
    timings["map_s"] = time.perf_counter() - t0
    binned: ModulusGroups | None = None
    if groups is not None:
        try:
            binned = bin_moduli(field.E_MPa, int(groups))
        except MaterialError as exc:
            raise InputError(f"cannot group the moduli: {exc.message}",
                             hint="use a positive E floor (E_floor_MPa > 0)") from exc
    elif suffix == ".inp" and float(field.E_MPa.min()) <= 0.0:
        raise InputError("an element has E = 0, which a solver deck cannot take",
                         hint="use a positive E floor (E_floor_MPa > 0)")
    extrapolation = field.description["law_extrapolation"]
    if extrapolation["fraction_outside"]:
        warnings.append(
            f"{100.0 * extrapolation['fraction_outside']:.1f}% of the elements have a "
            f"rho_{extrapolation['density_kind']} outside the law's valid range "
            f"{extrapolation['valid_range_g_cm3']} g/cm^3 (extrapolated)")

    volumes = mesh.cell_volumes()
    tags, counts = np.unique(mesh.cell_tags, return_counts=True)
    summary: dict[str, Any] = {
        "tool": "osteofe map",
        "osteofe_version": _version(),
        "inputs": {
            "ct": str(ct_path),
            "ct_sha256": sha256_file(Path(ct_path)),
            "mesh": str(mesh_path),
            "mesh_sha256": sha256_file(Path(mesh_path)),
            "labels": None if labels_path is None else str(labels_path),
        },
        "ct": {"shape": list(ct.grid.shape), "spacing_mm": ct.grid.spacing.tolist(),
               "hu_min": float(ct.hu.min()), "hu_max": float(ct.hu.max())},
        "mesh": {"cells": mesh.num_cells, "nodes": mesh.num_nodes, **mesh_info,
                 "volume_mm3": float(np.abs(volumes).sum()),
                 "inverted_cells": int(np.count_nonzero(volumes < 0.0)),
                 "tags": {str(int(t)): int(c) for t, c in zip(tags, counts, strict=True)}},
        "material": field.to_dict(),
        "mass": _mass(field, volumes),
        "groups": None if binned is None else binned.to_dict(),
        "output": {"path": str(out), "format": suffix[1:], "summary": str(summary_path)},
        "warnings": warnings,
    }

    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.staging-"))
    try:
        t0 = time.perf_counter()
        staged = stage / out.name
        if suffix == ".inp":
            summary["output"]["inp"] = write_material_inp(staged, mesh, field, binned)
            summary["output"]["cell_data"] = []
        else:
            cell_data: dict[str, np.ndarray] = {
                "E_MPa": field.E_MPa,
                "rho_ash_g_cm3": field.rho_ash_g_cm3,
                "rho_app_g_cm3": field.rho_app_g_cm3,
                "rho_qct_g_cm3": field.rho_qct_g_cm3,
                "HU": field.hu,
            }
            if binned is not None:
                cell_data["material_group"] = binned.group.astype(np.int32)
                cell_data["E_group_MPa"] = binned.element_moduli()
            try:
                write_mesh(staged, mesh, cell_data)
            except (ValueError, OSError, RuntimeError) as exc:
                if suffix != ".xdmf":
                    raise
                raise InputError(
                    f"writing XDMF failed: {type(exc).__name__}: {exc}",
                    hint="write .vtu instead; XDMF needs a working h5py, which fails when "
                    "another HDF5 library was loaded first in the same process (e.g. by "
                    "PETSc after importing fea.solver)",
                ) from exc
            summary["output"]["cell_data"] = sorted([*cell_data, "cell_tags"])
        timings["write_s"] = time.perf_counter() - t0
        timings["total_s"] = time.perf_counter() - start
        summary["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
        written = sorted(p.name for p in stage.iterdir())
        summary["output"]["files"] = [str(parent / name) for name in written] + [
            str(summary_path)]
        (stage / summary_path.name).write_text(
            json.dumps(summary, indent=2, default=json_default) + "\n", encoding="utf-8")
        # Data files first (an .h5 before its .xdmf), the summary last.
        for name in sorted(written, key=lambda n: (n == out.name, n)):
            os.replace(stage / name, parent / name)
        os.replace(stage / summary_path.name, summary_path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return json.loads(json.dumps(summary, default=json_default))


def _version() -> str:
    from osteofe import __version__

    return __version__
