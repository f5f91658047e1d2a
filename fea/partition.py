"""One rank's block of a mesh and its per-cell data, and the row exchange between blocks.

Under MPI no rank needs the whole :class:`~meshing.types.TetMesh`: rank 0 (which read or
generated it) sends every rank one contiguous block of the nodes and of the cells
(:func:`scatter_part`), DOLFINx partitions the mesh from those blocks in parallel
(:class:`fea.solver.ElasticModel`), and the per-cell values each rank's partition needs
(moduli, 10-node connectivity) are fetched from the ranks whose blocks hold them
(:func:`fetch_rows`: one ``Alltoallv`` for the requests, one for the rows).

Blocks follow :func:`block_bounds`: rank r holds rows ``bounds[r]:bounds[r + 1]`` of every
node-sized and cell-sized array, so the owner of a row is known on every rank without any
table of the whole mesh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from core.types import FloatArray, IntArray
from meshing.types import TetMesh

__all__ = ["MeshPart", "block_bounds", "fetch_rows", "positions", "push_rows", "scatter_part",
           "scatter_rows"]


def block_bounds(num_rows: int, size: int) -> npt.NDArray[np.int64]:
    """(size + 1,) int64 row bounds of the contiguous blocks of ``num_rows`` rows on ``size`` ranks.

    Rank r's block is ``bounds[r]:bounds[r + 1]``; the blocks differ in length by at most 1.
    """
    return np.linspace(0, num_rows, size + 1).astype(np.int64)


def positions(keys: npt.ArrayLike, queries: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """(q,) int64 index in ``keys`` of each of ``queries``, -1 where it is not there.

    ``keys``: (k,) distinct integers in any order (a rank's rows, a sorted table); found by
    binary search, no table over the whole numbering.
    """
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    queries = np.asarray(queries, dtype=np.int64).reshape(-1)
    if keys.size == 0:
        return np.full(queries.size, -1, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    at = order[np.minimum(np.searchsorted(keys, queries, sorter=order), keys.size - 1)]
    return np.where(keys[at] == queries, at, -1)


def _route(comm: Any, dest: npt.NDArray[np.int64]
           ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Send order and counts of items going to ranks ``dest`` (collective: one alltoall).

    Returns:
        (stable order of the items by destination, (size,) send counts, (size,) receive
        counts).
    """
    order = np.argsort(dest, kind="stable")
    send_counts = np.bincount(dest, minlength=comm.size).astype(np.int64)
    recv_counts = np.asarray(comm.alltoall(send_counts.tolist()), dtype=np.int64)
    return order, send_counts, recv_counts


def _exchange(comm: Any, rows: npt.NDArray[Any], send_counts: npt.NDArray[np.int64],
              recv_counts: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
    """(sum(recv_counts), w) rows received for (n, w) ``rows`` sent in rank order."""
    width = int(rows.shape[1]) if rows.ndim == 2 else 1
    received = np.empty((int(recv_counts.sum()), width), dtype=rows.dtype)
    comm.Alltoallv([np.ascontiguousarray(rows), send_counts * width],
                   [received, recv_counts * width])
    return received if rows.ndim == 2 else received.reshape(-1)


@dataclass(frozen=True)
class MeshPart:
    """This rank's block of a tetrahedral mesh (the input to a distributed model).

    Attributes:
        points: (k, 3) float64 coordinates (mm) of nodes ``node_start .. node_start + k``.
        cells: (c, 4) or (c, 10) int64 cells ``cell_start .. cell_start + c``, in global
            node numbers (VTK/gmsh node order, as :class:`~meshing.types.TetMesh`).
        cell_tags: (c,) int32 region tag of those cells.
        node_start: Global number of this block's first node.
        cell_start: Global number of this block's first cell.
        num_nodes: Number of nodes of the whole mesh.
        num_cells: Number of cells of the whole mesh.
    """

    points: FloatArray
    cells: IntArray
    cell_tags: npt.NDArray[np.int32]
    node_start: int
    cell_start: int
    num_nodes: int
    num_cells: int

    def __post_init__(self) -> None:
        if self.points.ndim != 2 or self.points.shape[1] != 3:
            raise ValueError(f"part points must be (k, 3), got {self.points.shape}")
        if self.cells.ndim != 2 or self.cells.shape[1] not in (4, 10):
            raise ValueError(f"part cells must be (c, 4) or (c, 10), got {self.cells.shape}")
        if self.cell_tags.shape != (self.cells.shape[0],):
            raise ValueError(f"part cell_tags must be ({self.cells.shape[0]},), got "
                             f"{self.cell_tags.shape}")
        if self.cells.size and (self.cells.min() < 0 or self.cells.max() >= self.num_nodes):
            raise ValueError("part cells reference nodes that do not exist")

    @classmethod
    def of(cls, mesh: TetMesh, rank: int, size: int) -> MeshPart:
        """Block ``rank`` of ``size`` of a mesh every rank holds (views, nothing copied)."""
        nodes = block_bounds(mesh.num_nodes, size)
        cells = block_bounds(mesh.num_cells, size)
        return cls(mesh.points[nodes[rank]:nodes[rank + 1]],
                   mesh.cells[cells[rank]:cells[rank + 1]],
                   mesh.cell_tags[cells[rank]:cells[rank + 1]],
                   int(nodes[rank]), int(cells[rank]), mesh.num_nodes, mesh.num_cells)

    @property
    def order(self) -> int:
        """Geometry order of the cells: 1 (4-node) or 2 (10-node)."""
        return 1 if self.cells.shape[1] == 4 else 2

    @property
    def cell_ids(self) -> npt.NDArray[np.int64]:
        """(c,) int64 global numbers of this block's cells."""
        return np.arange(self.cell_start, self.cell_start + self.cells.shape[0], dtype=np.int64)

    def rotated(self, rotation: npt.ArrayLike) -> MeshPart:
        """The same block with its points turned: ``points @ rotation.T``."""
        turn = np.asarray(rotation, dtype=np.float64)
        return MeshPart(self.points @ turn.T, self.cells, self.cell_tags, self.node_start,
                        self.cell_start, self.num_nodes, self.num_cells)


def scatter_rows(comm: Any, array: npt.NDArray[Any] | None) -> npt.NDArray[Any]:
    """This rank's block (:func:`block_bounds`) of rank 0's ``array`` (collective).

    Args:
        comm: The communicator.
        array: (N, ...) on rank 0 (ignored elsewhere; give None).

    Returns:
        (N_r, ...) rows of this rank's block, received straight into their own buffer.
    """
    header = None
    if comm.rank == 0:
        assert array is not None
        source = np.ascontiguousarray(array)
        header = (source.dtype.str, source.shape)
    dtype_str, shape = comm.bcast(header, root=0)
    bounds = block_bounds(int(shape[0]), comm.size)
    width = int(np.prod(shape[1:], dtype=np.int64))
    counts = np.diff(bounds) * width
    out = np.empty((int(bounds[comm.rank + 1] - bounds[comm.rank]), *shape[1:]),
                   dtype=np.dtype(dtype_str))
    send = [source.reshape(-1), counts] if comm.rank == 0 else None
    comm.Scatterv(send, out.reshape(-1), root=0)
    return out


def scatter_part(comm: Any, mesh: TetMesh | None) -> MeshPart:
    """This rank's :class:`MeshPart` of the mesh rank 0 holds (collective; None elsewhere)."""
    points = scatter_rows(comm, None if mesh is None else mesh.points)
    cells = scatter_rows(comm, None if mesh is None else mesh.cells)
    tags = scatter_rows(comm, None if mesh is None else mesh.cell_tags)
    counts = comm.bcast(None if mesh is None else (mesh.num_nodes, mesh.num_cells), root=0)
    node_start = int(block_bounds(counts[0], comm.size)[comm.rank])
    cell_start = int(block_bounds(counts[1], comm.size)[comm.rank])
    return MeshPart(points, cells, tags, node_start, cell_start, int(counts[0]),
                    int(counts[1]))


def fetch_rows(comm: Any, block: npt.NDArray[Any], num_rows: int,
               wanted: npt.ArrayLike) -> npt.NDArray[Any]:
    """Rows ``wanted`` of a block-distributed array (collective).

    Args:
        comm: The communicator.
        block: (N_r, ...) this rank's block of the (num_rows, ...) array
            (:func:`block_bounds`); the same dtype and trailing shape on every rank.
        num_rows: Rows of the whole array.
        wanted: (w,) global row numbers this rank needs (any order, repeats allowed).

    Returns:
        (w, ...) those rows, in the order asked. Only the rows asked for travel; the whole
        array is never formed.
    """
    wanted = np.asarray(wanted, dtype=np.int64).reshape(-1)
    bounds = block_bounds(num_rows, comm.size)
    if block.shape[0] != bounds[comm.rank + 1] - bounds[comm.rank]:
        raise ValueError(f"rank {comm.rank} holds {block.shape[0]} rows, its block has "
                         f"{bounds[comm.rank + 1] - bounds[comm.rank]}")
    if wanted.size and (wanted.min() < 0 or wanted.max() >= num_rows):
        raise ValueError(f"rows asked for lie outside 0..{num_rows - 1}")
    shape = block.shape[1:]
    width = int(np.prod(shape, dtype=np.int64))
    flat = np.ascontiguousarray(block).reshape(block.shape[0], width)
    owner = np.searchsorted(bounds, wanted, side="right") - 1
    order, request_counts, serve_counts = _route(comm, owner)
    asked = _exchange(comm, wanted[order], request_counts, serve_counts)
    received = _exchange(comm, flat[asked - bounds[comm.rank]], serve_counts, request_counts)
    out = np.empty_like(received)
    out[order] = received
    return out.reshape(wanted.size, *shape)


def push_rows(comm: Any, ids: npt.ArrayLike, values: npt.NDArray[Any], num_rows: int, *,
              fill: float | None = None) -> FloatArray:
    """This rank's block of the array whose rows ``ids`` the ranks hold (collective).

    The inverse of :func:`fetch_rows`: each rank sends the rows it holds to the ranks whose
    blocks they fall in (one ``Alltoallv`` for the numbers, one for the rows).

    Args:
        comm: The communicator.
        ids: (k,) global row numbers of this rank's ``values``.
        values: (k, ...) rows; the same trailing shape on every rank.
        num_rows: Rows of the whole array.
        fill: Value of the rows no rank holds; None: every row must be held by some rank.

    Returns:
        (N_r, ...) float64 block of this rank (:func:`block_bounds`).

    Raises:
        ValueError: on every rank, when ``fill`` is None and some row is held by no rank.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    shape = values.shape[1:]
    width = int(np.prod(shape, dtype=np.int64))
    flat = np.ascontiguousarray(values, dtype=np.float64).reshape(ids.size, width)
    bounds = block_bounds(num_rows, comm.size)
    dest = np.searchsorted(bounds, ids, side="right") - 1
    order, send_counts, recv_counts = _route(comm, dest)
    recv_ids = _exchange(comm, ids[order], send_counts, recv_counts)
    received = _exchange(comm, flat[order], send_counts, recv_counts)
    start, stop = int(bounds[comm.rank]), int(bounds[comm.rank + 1])
    block = np.full((stop - start, width), np.nan if fill is None else float(fill))
    block[recv_ids - start] = received
    if fill is None:
        held = np.zeros(stop - start, dtype=bool)
        held[recv_ids - start] = True
        missing = int(comm.allreduce(int(np.count_nonzero(~held))))
        if missing:
            raise ValueError(f"{missing} rows are held by no rank (give a fill value)")
    return block.reshape(stop - start, *shape)
