"""One strength analysis split across MPI ranks: what stays distributed and how it is written.

Under ``mpiexec -n N`` (N > 1) :func:`osteofe.pipeline.run_strength` splits the model itself:
rank 0 prepares it (reading, meshing, material mapping, in a child process by default), then
sends every rank only its block of the nodes, the cells and their per-cell values
(:func:`distribute_model`, :class:`fea.partition.MeshPart`); DOLFINx partitions the mesh from
those blocks, and after that no rank, rank 0 included, holds the whole
:class:`~meshing.types.TetMesh` or the whole material field. What needs the whole mesh and is
small (the failure criterion of each load case, a bone-surface structure; the mesh and
material summaries) is built on rank 0 before its copy is dropped; the criteria wait on disk
in a staging folder beside the output folder until the failure stage sends each to every
rank. The analyses that still need the whole mesh on every rank (the nonlinear ones) and the
``model.inp`` export read it back from that folder for their own stage only.

Each solved field stays distributed (:meth:`fea.solver.ElasticModel.solve` with
``gather=False``): each rank holds the displacement of the nodes and the strain of the cells
it owns, never the whole field. The failure criterion adds each rank's share of the surface
averages over all ranks (:meth:`fea.failure.StrainCriterion.surface_strain`), so that every
rank gets the same small result (failure load, mode, critical node, the risk factor per
surface node). The fields are written collectively by all ranks as XDMF + HDF5
(:meth:`fea.solver.ElasticModel.write_xdmf`, ``fields.xdmf`` / ``fields.h5``), first into a
staging-named folder beside the output folder that the atomic write
(:func:`osteofe.outputs.staged_output`) then moves in with the other files; a serial run
keeps writing ``fields.vtu``.

Memory: :func:`release_freed_memory` hands what preparation and distribution freed back to
the operating system before the FE model is built (glibc keeps freed heap pages otherwise).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import pickle
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from fea.failure import FailureAnalysis, principal_strains
from fea.partition import MeshPart, positions, scatter_part, scatter_rows
from osteofe.parallel import on_root

if TYPE_CHECKING:
    from mpi4py import MPI

    from fea.failure import StrainCriterion
    from fea.types import CaseSolution
    from meshing.types import TetMesh
    from osteofe.pipeline import PreparedModel

__all__ = ["FIELD_FILES", "Partitioned", "RankShare", "distribute_model", "field_data",
           "fields_prestage", "load_from_staging", "mean_displacement", "picture_surface",
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


class Partitioned:
    """Stands in for the whole-mesh data of a prepared model on a distributed run.

    After :func:`distribute_model` the volume mesh and the material field exist only as
    rank blocks (:class:`RankShare`): reading anything of this stand-in is a programming
    error and says so, rather than giving an empty or wrong array.
    """

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"the {self.what} of a distributed run is split across the MPI "
                           f"ranks (osteofe.distributed): {name!r} exists only in the rank "
                           "blocks (RankShare)")

    def __reduce__(self) -> tuple[type[Partitioned], tuple[str]]:
        return (Partitioned, (self.what,))


@dataclass(frozen=True)
class RankShare:
    """This rank's share of a prepared model on a distributed run (:func:`distribute_model`).

    Attributes:
        part: This rank's block of the mesh.
        moduli: (c,) or (c, q) Young's modulus of the block's cells (per quadrature point
            where the model maps them so), MPa.
        cell_fields: Output name -> (c,) float64 per-cell values of the block's cells
            (``E_MPa``, ``rho_ash_g_cm3``, ``HU``, ``region_tag``: those of fields.vtu).
        poisson_ratio: The material's Poisson ratio.
        volume_record: result.json's ``mesh`` and ``material`` records of the whole model.
        staging: The staging folder beside the output folder that holds the criteria (and
            the whole model where kept) and then the field files; removed by the caller.
        criteria: Load case name -> its criterion's file in ``staging``.
        whole_model: The whole model's file in ``staging``, or None (not kept).
        surface: Rank 0: :func:`picture_surface` of the whole model (the risk picture's
            mesh); None on the other ranks, which draw nothing.
    """

    part: MeshPart
    moduli: npt.NDArray[np.float64]
    cell_fields: dict[str, npt.NDArray[np.float64]]
    poisson_ratio: float
    volume_record: dict[str, Any]
    staging: Path
    criteria: dict[str, str]
    whole_model: str | None
    surface: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]] | None


def picture_surface(prepared: PreparedModel
                    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """(s,) int64 the boundary and support nodes and (s, 3) their coordinates, mm.

    The risk picture is drawn on these alone (:func:`osteofe.render.render_risk_picture`).
    """
    nodes = np.unique(np.concatenate([np.asarray(prepared.boundary).ravel(),
                                      np.asarray(prepared.fixed_nodes).ravel()]))
    return nodes, np.asarray(prepared.mesh.points[nodes])


def distribute_model(
    comm: MPI.Comm,
    prepared: PreparedModel | None,
    *,
    criteria: Callable[[PreparedModel], Mapping[str, StrainCriterion]],
    volume_record: Callable[[PreparedModel], dict[str, Any]],
    staging: Callable[[], Path],
    keep_whole: bool,
) -> tuple[PreparedModel, RankShare]:
    """Split rank 0's prepared model into rank blocks (collective).

    On rank 0, first (while it still has the whole mesh): the failure criterion of every
    load case (``criteria``), pickled into a new ``staging()`` folder; the whole model too
    where ``keep_whole`` (for the nonlinear analyses and ``model.inp``); the ``mesh`` and
    ``material`` records. Then every rank receives its block of the nodes, cells, tags,
    moduli and output fields (``Scatterv``), and the model without its volume data.

    Args:
        comm: The communicator.
        prepared: The whole model on rank 0; None on the other ranks.
        criteria: Builds the criteria from the whole model (rank 0).
        volume_record: The records of the whole model that result.json keeps (rank 0).
        staging: Makes the staging folder (rank 0).
        keep_whole: Also keep the whole model in the staging folder.

    Returns:
        On every rank: the model with the mesh and material replaced by
        :class:`Partitioned` stand-ins, and this rank's :class:`RankShare`. The caller drops
        its reference to the whole model, so that no rank keeps it.
    """
    surface: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] = []

    def on_rank_0() -> tuple[Any, ...]:
        assert prepared is not None
        folder = staging()
        try:
            names = {}
            for index, (name, criterion) in enumerate(criteria(prepared).items()):
                names[name] = f"criterion_{index}.pkl"
                _pickle_to(folder / names[name], criterion)
            whole = None
            if keep_whole:
                whole = "model.pkl"
                _pickle_to(folder / whole, prepared)
            surface.append(picture_surface(prepared))  # kept on rank 0, not sent
            light = replace(prepared, mesh=cast(Any, Partitioned("mesh")),
                            material=cast(Any, Partitioned("material field")),
                            modulus_points=None)
            return (light, volume_record(prepared), folder, names, whole,
                    float(prepared.material.poisson_ratio))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    light, record, folder, names, whole, nu = on_root(comm, on_rank_0)
    mesh: TetMesh | None = None
    columns: tuple[npt.NDArray[Any] | None, ...] = (None, None, None, None)
    if comm.rank == 0:
        assert prepared is not None
        mesh, material = prepared.mesh, prepared.material
        columns = (material.E_MPa if prepared.modulus_points is None
                   else prepared.modulus_points, material.E_MPa, material.rho_ash_g_cm3,
                   material.hu)
    part = scatter_part(comm, mesh)
    moduli, modulus, rho_ash, hu = (scatter_rows(comm, column) for column in columns)
    cell_fields = {"E_MPa": modulus, "rho_ash_g_cm3": rho_ash, "HU": hu,
                   "region_tag": part.cell_tags.astype(np.float64)}
    return light, RankShare(part, moduli, cell_fields, nu, record, folder, names, whole,
                            surface[0] if surface else None)


def _pickle_to(path: Path, value: Any) -> None:
    """Pickle ``value`` straight into a new file (no bytes copy of it in memory)."""
    with path.open("xb") as out:
        pickle.dump(value, out, protocol=pickle.HIGHEST_PROTOCOL)


def load_from_staging(comm: MPI.Comm, share: RankShare, name: str) -> Any:
    """Read a pickled criterion or the whole model from the staging folder (collective).

    Rank 0 reads it and sends it to every rank: the other ranks need no access to rank 0's
    file system.
    """
    return on_root(comm, lambda: pickle.loads((share.staging / name).read_bytes()))


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
    rows = positions(solution.node_ids, nodes)
    rows = rows[rows >= 0]
    local = np.zeros(4)
    if rows.size:
        local[:3] = solution.displacement_mm[rows].sum(axis=0)
    local[3] = float(rows.size)
    total = np.empty(4)
    comm.Allreduce(local, total, op=MPI.SUM)
    return np.asarray(total[:3] / max(total[3], 1.0))


def field_data(cell_fields: Mapping[str, Any], solutions: Mapping[str, Any],
               analyses: Mapping[str, FailureAnalysis], rank: int
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Point and cell fields of ``fields.xdmf``: the same names and values as ``fields.vtu``.

    ``cell_fields``: the per-cell material and tags, each full or this rank's rows
    ``(cell_ids, values)`` (:attr:`RankShare.cell_fields` of its block); displacement and
    strain are each rank's rows; the risk factor, the same surface result on every rank
    (the criterion's reduction), is sent by ``rank`` 0 alone.

    Returns:
        (point_data, cell_data) for :meth:`fea.solver.ElasticModel.write_xdmf`.
    """
    point: dict[str, Any] = {}
    cell: dict[str, Any] = dict(cell_fields)
    for name, sol in solutions.items():
        point[f"displacement_mm_{name}"] = (sol.node_ids, sol.displacement_mm)
        # The risk factor lives on the surface nodes (every rank has them all): rank 0
        # sends them, the interior takes 0, and no rank forms the (n,) array.
        analysis = analyses[name]
        mine = slice(None) if rank == 0 else slice(0, 0)
        point[f"risk_factor_{name}"] = (analysis.surface_nodes[mine],
                                        analysis.surface_risk_factor[mine], 0.0)
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
