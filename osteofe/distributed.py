"""One strength analysis split across MPI ranks: what stays distributed and how it is written.

Under ``mpiexec -n N`` (N > 1) :func:`osteofe.pipeline.run_strength` keeps every solved field
distributed (:meth:`fea.solver.ElasticModel.solve` with ``gather=False``): each rank holds
the displacement of the nodes and the strain of the cells it owns, never the whole field.
The failure criterion adds each rank's share of the surface averages over all ranks
(:meth:`fea.failure.StrainCriterion.surface_strain`), so that every rank gets the same small
result (failure load, mode, critical node, the risk factor per surface node). The fields are
written collectively by all ranks as XDMF + HDF5 (:meth:`fea.solver.ElasticModel.write_xdmf`,
``fields.xdmf`` / ``fields.h5``), first into a staging-named folder beside the output folder
that the atomic write (:func:`osteofe.outputs.staged_output`) then moves in with the other
files; a serial run keeps writing ``fields.vtu``.

Memory: preparation (reading, meshing, material mapping) runs on rank 0 only;
:func:`release_freed_memory` hands what it freed back to the operating system before the
FE model is built (glibc keeps freed heap pages otherwise).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fea.failure import FailureAnalysis, principal_strains

if TYPE_CHECKING:
    from mpi4py import MPI

    from fea.types import CaseSolution

__all__ = ["FIELD_FILES", "field_data", "fields_prestage", "mean_displacement",
           "release_freed_memory"]

#: The files of the parallel field output (an XDMF file and its HDF5 heavy data).
FIELD_FILES: tuple[str, str] = ("fields.xdmf", "fields.h5")


def release_freed_memory() -> int:
    """Collect garbage and return freed heap pages to the OS (glibc ``malloc_trim``).

    Returns:
        1 when ``malloc_trim`` released memory, 0 when it did not or is unavailable
        (non-glibc platforms).
    """
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return 0
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return 0
    trim.argtypes = [ctypes.c_size_t]
    return int(trim(0))


def mean_displacement(solution: CaseSolution, nodes: npt.NDArray[np.int64],
                      comm: MPI.Comm) -> npt.NDArray[np.float64]:
    """(3,) mean displacement (mm) over ``nodes`` (each counted once per occurrence).

    Gathered solution: the rows themselves; distributed: each rank sums the nodes it owns
    and the sums are added over ``comm`` (collective then).
    """
    nodes = np.asarray(nodes, dtype=np.int64)
    if not solution.distributed:
        return np.asarray(solution.displacement_mm[nodes].mean(axis=0))
    from mpi4py import MPI

    assert solution.node_ids is not None
    order = np.argsort(solution.node_ids)
    found = np.searchsorted(solution.node_ids, nodes, sorter=order)
    found = np.minimum(found, max(solution.node_ids.size - 1, 0))
    mine = solution.node_ids.size > 0
    hit = (solution.node_ids[order[found]] == nodes) if mine else np.zeros(nodes.size, bool)
    local = np.zeros(4)
    if mine and hit.any():
        local[:3] = solution.displacement_mm[order[found[hit]]].sum(axis=0)
    local[3] = float(hit.sum())
    total = np.empty(4)
    comm.Allreduce(local, total, op=MPI.SUM)
    return np.asarray(total[:3] / max(total[3], 1.0))


def field_data(material: Any, cell_tags: npt.NDArray[Any], solutions: Mapping[str, Any],
               analyses: Mapping[str, FailureAnalysis]
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Point and cell fields of ``fields.xdmf``: the same names and values as ``fields.vtu``.

    Per-cell material and tags are full arrays (every rank has them); displacement and
    strain are each rank's rows (``(ids, values)``), the risk factor the full (n,) array
    every rank got from the criterion's reduction.

    Returns:
        (point_data, cell_data) for :meth:`fea.solver.ElasticModel.write_xdmf`.
    """
    point: dict[str, Any] = {}
    cell: dict[str, Any] = {
        "E_MPa": material.E_MPa,
        "rho_ash_g_cm3": material.rho_ash_g_cm3,
        "HU": material.hu,
        "region_tag": np.asarray(cell_tags, dtype=np.float64),
    }
    for name, sol in solutions.items():
        point[f"displacement_mm_{name}"] = (sol.node_ids, sol.displacement_mm)
        point[f"risk_factor_{name}"] = analyses[name].node_risk_factor
        eig = principal_strains(sol.strain)
        cell[f"max_principal_strain_{name}"] = (sol.cell_ids, eig[:, 2])
        cell[f"min_principal_strain_{name}"] = (sol.cell_ids, eig[:, 0])
        cell[f"strain_{name}"] = (sol.cell_ids, sol.strain)
    return point, cell


def fields_prestage(out_dir: str | Path) -> Path:
    """A new empty folder beside ``out_dir`` for the collective field write (rank 0).

    Named like :func:`osteofe.outputs.staged_output`'s staging folders (``.<name>.staging-
    <host>-<pid>-...``), so that one left by a killed run is deleted by the next run into
    ``out_dir``; the caller deletes it after the results were published.
    """
    from osteofe.outputs import new_staging_folder

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    return new_staging_folder(out)


def move_fields(prestage: Path, stage: Path) -> None:
    """Move the written field files into the run's staging folder (same file system)."""
    for name in FIELD_FILES:
        os.replace(prestage / name, stage / name)
