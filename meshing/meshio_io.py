"""Bring-your-own tetrahedral meshes: read and write FE mesh files (meshio adapter).

:func:`read_mesh` turns a user's volume mesh into a checked :class:`TetMesh` plus its
per-element arrays; :func:`write_mesh` writes one, with its region tags, for other codes.

Formats (by file suffix):

=========  ======================================  ==========================================
suffix     read                                    write
=========  ======================================  ==========================================
``.msh``   gmsh 2.x/4.x via gmsh itself [1]_       MSH 4.1 (or 2.2), a physical group per tag
``.vtu``   VTK XML                                 VTK XML (zlib), tags as ``cell_tags``
``.vtk``   VTK legacy                              VTK legacy (binary)
``.inp``   Abaqus/CalculiX                         Abaqus/CalculiX, an ``*ELSET`` per tag [2]_
``.xdmf``  XDMF 3 (+ .h5)                          XDMF 3 with an HDF5 file beside it
``.med``   MED/Salome (read only)                  -
=========  ======================================  ==========================================

.. [1] meshio's MSH 2.2 reader fails on files gmsh writes with several volumes, and its MSH
   4.1 writer drops physical groups, so .msh goes through gmsh: read in a child process
   (:func:`meshing.msh.read_msh_isolated`, gmsh can crash on a malformed file), written by
   :func:`meshing.volume.write_msh`.
.. [2] Abaqus decks carry no per-element arrays: ``cell_data`` is dropped with a WARNING.

Node order of 10-node cells. osteofe uses the VTK order (4 vertices, then the mid-nodes of
edges 01, 12, 02, 03, 13, 23). meshio converts gmsh's order (last two mid-nodes swapped) to
it and uses it unchanged for VTK, XDMF (``Tet_10``), Abaqus ``C3D10`` (the same order) and
MED ``T10`` (same edges; MED numbers cells with the opposite orientation, see below). Because
files in the wild do not always follow their format's order, :func:`read_mesh` also checks
geometrically that each mid-node sits next to the edge its slot stands for, and reorders the
mid-nodes when the whole file uses another consistent permutation (logged).

Orientation. A tetrahedron whose corner nodes are numbered with negative orientation
(negative signed volume: MED/Salome files, some exporters) is REORIENTED (vertices 1 and 2
swapped, with the matching mid-nodes), with a WARNING giving the count, provided the mesh is
not folded. Cells that are degenerate (zero volume), 10-node cells still inverted after that
(a curved element whose Jacobian changes sign), and meshes whose cells overlap across a face
(:func:`meshing.quality.topology_check`) are REFUSED with :class:`InputError`:
renumbering cannot repair them. ``reorient=False`` refuses every inverted cell instead.

One solid piece. :func:`require_one_piece` (used on the strength pipeline's ``--mesh``)
merges coincident duplicate nodes - multi-region exports write an interface's nodes once per
region, so the regions touch without sharing nodes and the solver sees separate bodies - when
that makes the mesh one connected piece of valid cells, and says so; a mesh that stays in
several pieces, or whose merge makes cells invalid, is REFUSED.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.atomic import atomic_path
from meshing import inp
from meshing.errors import InputError
from meshing.msh import read_msh_isolated
from meshing.quality import jacobian_determinants, topology_check
from meshing.types import TetMesh
from meshing.volume import BONE_TAG, TAG_NAMES, write_msh

__all__ = ["READ_SUFFIXES", "TAG_ARRAY_NAMES", "WRITE_SUFFIXES", "coincident_nodes", "mesh_pieces",
           "read_mesh", "require_one_piece", "write_mesh"]

_LOG = logging.getLogger(__name__)

#: File suffixes :func:`read_mesh` accepts and :func:`write_mesh` writes.
READ_SUFFIXES = (".msh", ".vtu", ".vtk", ".inp", ".xdmf", ".med")
WRITE_SUFFIXES = (".msh", ".vtu", ".vtk", ".inp", ".xdmf")
#: Per-cell arrays taken as region tags, first found wins: osteofe's own, gmsh physical
#: groups, the ``region_tag`` of osteofe's field output, MED cell families (negative by MED
#: convention).
TAG_ARRAY_NAMES = ("cell_tags", "gmsh:physical", "region_tag")
#: meshio reader of each suffix read through meshio.
_MESHIO_FORMATS = {".vtu": "vtu", ".vtk": "vtk", ".inp": "abaqus", ".xdmf": "xdmf",
                   ".med": "med"}
#: Prefix of the per-cell membership arrays made from named cell sets (Abaqus ELSETs, ...).
SET_PREFIX = "set:"

#: VTK tet10 edges: mid-node slot 4 + e lies on edge _EDGES[e].
_EDGES = np.array([[0, 1], [1, 2], [0, 2], [0, 3], [1, 3], [2, 3]])
#: Column permutations that flip a tetrahedron (swap vertices 1 and 2, mid-nodes to match).
_FLIP_TET4 = np.array([0, 2, 1, 3])
_FLIP_TET10 = np.array([0, 2, 1, 3, 6, 5, 4, 7, 9, 8])
#: A cell counts as degenerate below this |volume| / (longest edge)^3 (a regular tet: 0.118).
_DEGENERATE_RATIO = 1e-10
#: Share of cells whose mid-nodes must agree on a slot permutation for it to be applied.
_MIDNODE_AGREEMENT = 0.95
#: Abaqus data lines hold at most 16 entries.
_INP_PER_LINE = 16
#: Largest coordinate magnitude accepted, mm (a kilometre): beyond it a file is in the wrong
#: units or corrupt, and volumes computed from it lose all precision or overflow.
MAX_COORDINATE_MM = 1e6


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def read_mesh(path: str | os.PathLike[str], *, reorient: bool = True,
              unit_scale: float = 1.0) -> tuple[TetMesh, dict[str, np.ndarray]]:
    """Read a tetrahedral volume mesh and its per-element arrays, checked and in osteofe order.

    Tetrahedra (4- or 10-node) are kept; other cells are dropped (surface, line and point
    cells silently at INFO, other volume cells with a WARNING, since the mesh then has
    holes), and nodes no tetrahedron uses are removed. Region tags come from the first of
    :data:`TAG_ARRAY_NAMES` present, else from named cell sets with the names
    :func:`write_mesh` gives (``BONE``, ``LESION``, ``CORTEX``, ``TAG<n>``, any case), else
    all cells are tagged 1. 10-node node order and orientation are checked and repaired or
    refused as described in the module docstring.

    Args:
        path: Mesh file; see :data:`READ_SUFFIXES`.
        reorient: Reorient negatively numbered cells (True) or refuse them (False).
        unit_scale: Factor to millimetres applied to the coordinates (1000 for a file in
            metres).

    Returns:
        ``(mesh, cell_data)``: the mesh, and every per-element array of the file by name
        (``(m,)`` or ``(m, k)``, native byte order, rows matching ``mesh.cells``), plus one
        bool membership array ``"set:<name>"`` per named cell set (Abaqus ELSETs, gmsh
        physical names read by meshio, ...).

    Raises:
        InputError: Missing file, unsupported suffix, unreadable file (also one that crashes
            gmsh), no tetrahedra, mixed 4-/10-node tetrahedra, cells that reference missing
            nodes, NaN/inf coordinates or coordinates beyond :data:`MAX_COORDINATE_MM`,
            degenerate, inverted (curved) or overlapping cells, or inverted cells with
            ``reorient=False``.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(f"mesh file not found: {file}", hint="check the path")
    suffix = file.suffix.lower()
    if suffix not in READ_SUFFIXES:
        raise InputError(f"unsupported mesh format {file.suffix!r}: {file}",
                         hint=f"convert it to one of {', '.join(READ_SUFFIXES)}")
    if not (np.isfinite(unit_scale) and unit_scale > 0.0):
        raise InputError(f"unit_scale must be positive, got {unit_scale}",
                         hint="use 1 for a file in mm, 1000 for a file in metres")
    if suffix == ".msh":
        # gmsh can crash the interpreter on a malformed file: read it in a child process.
        mesh, arrays = read_msh_isolated(file)
    else:
        mesh, arrays = _read_meshio(file)
    points = mesh.points * float(unit_scale)
    cells = mesh.cells
    _check_coordinates(points[np.unique(cells)], file)
    if mesh.order == 2:
        cells = _fix_midnode_order(points, cells, file)
    cells = _orient(points, cells, file, reorient)
    used, inverse = np.unique(cells, return_inverse=True)
    if used.shape[0] < points.shape[0]:
        _LOG.info("read_mesh: %s: removed %d nodes no tetrahedron uses", file.name,
                  points.shape[0] - used.shape[0])
    result = TetMesh(points[used], inverse.reshape(cells.shape), mesh.cell_tags)
    if result.order == 2:
        _check_curved(result, file)
    problem = topology_check(result)
    if problem is not None:
        raise InputError(f"{file.name}: the mesh is not valid: {problem}",
                         hint="remesh the volume (overlapping or duplicated cells cannot be "
                              "repaired by renumbering)")
    extent = float(np.ptp(result.points, axis=0).max())
    if extent < 5.0:
        _LOG.warning("read_mesh: %s spans only %.3g mm: if it is in metres, pass "
                     "unit_scale=1000", file.name, extent)
    _LOG.info("read_mesh: %s: %d %d-node tetrahedra, %d nodes, tags %s, arrays %s",
              file.name, result.num_cells, result.cells.shape[1], result.num_nodes,
              np.unique(result.cell_tags).tolist(), sorted(arrays))
    return result, arrays


def _check_coordinates(points: np.ndarray, file: Path) -> None:
    """Refuse non-finite coordinates and coordinates beyond :data:`MAX_COORDINATE_MM`."""
    finite = np.all(np.isfinite(points), axis=1)
    if not finite.all():
        raise InputError(f"{file.name}: {int(np.count_nonzero(~finite))} node(s) of the "
                         "tetrahedra have NaN or infinite coordinates",
                         hint="the file is corrupt: re-export the mesh")
    largest = float(np.abs(points).max(initial=0.0))
    if largest > MAX_COORDINATE_MM:
        raise InputError(f"{file.name}: a node lies {largest:g} mm from the origin, beyond the "
                         f"{MAX_COORDINATE_MM:g} mm accepted",
                         hint="check the file's units (unit_scale converts them to mm) and "
                         "that it is not corrupt")


def _read_meshio(file: Path) -> tuple[TetMesh, dict[str, np.ndarray]]:
    """Tetrahedra, tags, cell arrays and cell sets of a file meshio reads."""
    import meshio

    try:
        # An explicit format: otherwise meshio calls sys.exit() when its reader fails.
        data = meshio.read(str(file), file_format=_MESHIO_FORMATS[file.suffix.lower()])
    except (Exception, SystemExit) as exc:  # meshio raises ReadError, KeyError, ...
        raise InputError(f"could not read mesh {file}: {type(exc).__name__}: {exc}",
                         hint="check that the file is a valid volume mesh") from exc
    try:
        points = np.asarray(data.points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{file}: the node coordinates are not numbers ({exc})",
                         hint="the file is corrupt: re-export the mesh") from exc
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(f"{file} has {points.shape[-1]}-D points, not 3-D",
                         hint="osteofe meshes are 3-D (x, y, z in mm)")
    # Empty blocks (an Abaqus *ELEMENT card without data lines) hold nothing to read.
    blocks = [i for i, block in enumerate(data.cells)
              if block.type in ("tetra", "tetra10") and np.size(block.data)]
    _note_dropped(file, [(b.type, len(b.data)) for i, b in enumerate(data.cells)
                         if i not in blocks and np.size(b.data)])
    if not blocks:
        raise InputError(f"{file} contains no tetrahedra",
                         hint="mesh the volume with tetrahedra (4- or 10-node)")
    if len({data.cells[i].type for i in blocks}) > 1:
        raise InputError(f"{file} mixes 4-node and 10-node tetrahedra",
                         hint="export one element order")
    width = 4 if data.cells[blocks[0]].type == "tetra" else 10
    parts = [np.asarray(data.cells[i].data) for i in blocks]
    if any(p.ndim != 2 or p.shape[1] != width or not np.issubdtype(p.dtype, np.integer)
           for p in parts):
        raise InputError(f"{file}: the {width}-node tetrahedra do not list {width} integer "
                         "node numbers each", hint="the file is corrupt: re-export the mesh")
    cells = np.concatenate([p.astype(np.int64) for p in parts])
    if cells.min() < 0 or cells.max() >= points.shape[0]:
        bad = int(np.count_nonzero(np.any((cells < 0) | (cells >= points.shape[0]), axis=1)))
        raise InputError(f"{file}: {bad} tetrahedra reference nodes that do not exist (the "
                         f"file has {points.shape[0]} nodes)",
                         hint="the file is corrupt or truncated: re-export the mesh")
    offsets = np.cumsum([0] + [len(data.cells[i].data) for i in blocks])
    arrays: dict[str, np.ndarray] = {}
    for name, per_block in data.cell_data.items():
        try:
            array = _native(np.concatenate([np.asarray(per_block[i]) for i in blocks]))
        except (IndexError, TypeError, ValueError) as exc:
            _LOG.warning("read_mesh: %s: cell array %r skipped (%s)", file.name, name, exc)
            continue
        if array.ndim not in (1, 2) or array.shape[0] != cells.shape[0]:
            _LOG.warning("read_mesh: %s: cell array %r skipped (shape %s for %d cells)",
                         file.name, name, array.shape, cells.shape[0])
            continue
        arrays[str(name)] = array
    for name, per_block in data.cell_sets.items():
        member = _set_membership(per_block, blocks, offsets, len(data.cells))
        if member is None:
            _LOG.info("read_mesh: %s: cell set %r not understood; skipped", file.name, name)
        elif name != "gmsh:bounding_entities":
            arrays[SET_PREFIX + str(name)] = member
    tags = _tags(arrays, cells.shape[0], file)
    try:
        return TetMesh(points, cells, tags), arrays
    except ValueError as exc:
        raise InputError(f"{file}: not a valid tetrahedral mesh: {exc}",
                         hint="the file is corrupt: re-export the mesh") from exc


def _native(array: np.ndarray) -> np.ndarray:
    """A contiguous copy in native byte order (VTK legacy files are big-endian)."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))


def _note_dropped(file: Path, dropped: list[tuple[str, int]]) -> None:
    """Log the non-tetrahedral cells left out (volume cells as a WARNING)."""
    lower = ("vertex", "line", "triangle", "quad", "polygon")
    volume = [(t, n) for t, n in dropped if not t.startswith(lower)]
    other = [(t, n) for t, n in dropped if t.startswith(lower)]
    if volume:
        _LOG.warning("read_mesh: %s: dropped %s (only tetrahedra are supported; the mesh has "
                     "holes where they were)", file.name,
                     ", ".join(f"{n} {t} cells" for t, n in volume))
    if other:
        _LOG.info("read_mesh: %s: ignored %s", file.name,
                  ", ".join(f"{n} {t} cells" for t, n in other))


def _set_membership(per_block: Any, blocks: list[int], offsets: np.ndarray,
                    num_blocks: int) -> np.ndarray | None:
    """(m,) bool membership of the tetrahedra in one meshio cell set, or None if malformed."""
    if not isinstance(per_block, list | tuple) or len(per_block) != num_blocks:
        return None
    member = np.zeros(int(offsets[-1]), dtype=bool)
    for k, i in enumerate(blocks):
        entry = per_block[i]
        if entry is None:
            continue
        index = np.asarray(entry)
        if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
            return None
        if index.size and (index.min() < 0 or index.max() >= offsets[k + 1] - offsets[k]):
            return None
        member[offsets[k] + index.astype(np.int64)] = True
    return member


def _tags(arrays: Mapping[str, np.ndarray], num_cells: int, file: Path) -> np.ndarray:
    """Region tags from a tag array, else from named cell sets, else all 1."""
    for name in TAG_ARRAY_NAMES:
        values = arrays.get(name)
        if values is None:
            continue
        values = np.asarray(values).reshape(num_cells, -1)[:, 0]
        if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype,
                                                                          np.complexfloating):
            _LOG.warning("read_mesh: %s: %r is not numeric; not used as tags", file.name, name)
            continue
        if (np.all(np.isfinite(values)) and np.all(values == np.rint(values))
                and np.all(np.abs(values) < 2**31)):
            _LOG.info("read_mesh: %s: region tags from %r", file.name, name)
            return values.astype(np.int32)
        _LOG.warning("read_mesh: %s: %r does not hold 32-bit integers; not used as tags",
                     file.name, name)
    tags = np.full(num_cells, BONE_TAG, dtype=np.int32)
    by_name = {v.upper(): k for k, v in TAG_NAMES.items()}
    claimed = np.zeros(num_cells, dtype=bool)
    used = []
    for key, member in arrays.items():
        if not key.startswith(SET_PREFIX):
            continue
        name = key[len(SET_PREFIX):].upper()
        match = re.fullmatch(r"TAG_?(-?\d+)", name)
        tag = by_name.get(name, int(match.group(1)) if match else None)
        if tag is None or not member.any():
            continue
        if np.any(claimed & member):
            _LOG.warning("read_mesh: %s: cell sets overlap; tags from sets ignored",
                         file.name)
            return np.full(num_cells, BONE_TAG, dtype=np.int32)
        tags[member] = tag
        claimed |= member
        used.append(key[len(SET_PREFIX):])
    if used:
        _LOG.info("read_mesh: %s: region tags from cell sets %s", file.name, used)
    return tags


def _fix_midnode_order(points: np.ndarray, cells: np.ndarray, file: Path) -> np.ndarray:
    """Check that each mid-node slot holds the node of its VTK edge; fix a global permutation.

    For every slot, the edge whose midpoint is nearest its node is found cell by cell; the
    slot's edge is the one most cells agree on. Identity: nothing to do. Another permutation
    agreed on by nearly all cells: the file uses a different node order; the mid-nodes are
    reordered (WARNING). Anything else: the 10-node cells are not understood (InputError).
    """
    corners = points[cells[:, :4]]
    midpoints = 0.5 * (corners[:, _EDGES[:, 0]] + corners[:, _EDGES[:, 1]])  # (m, 6, 3)
    edge_of_slot = np.empty(6, dtype=np.int64)
    agreement = np.empty(6)
    for slot in range(6):
        node = points[cells[:, 4 + slot]]
        nearest = np.argmin(np.linalg.norm(midpoints - node[:, np.newaxis, :], axis=2), axis=1)
        counts = np.bincount(nearest, minlength=6)
        edge_of_slot[slot] = int(np.argmax(counts))
        agreement[slot] = counts.max() / cells.shape[0]
    if np.array_equal(edge_of_slot, np.arange(6)):
        return cells
    if (np.unique(edge_of_slot).shape[0] < 6 or agreement.min() < _MIDNODE_AGREEMENT):
        raise InputError(
            f"{file.name}: the mid-nodes of the 10-node tetrahedra do not sit on the edges "
            f"of their slots (slots 4-9 are nearest edges {edge_of_slot.tolist()} in "
            f"{100.0 * agreement.min():.0f}% of the cells at worst)",
            hint="export 10-node tetrahedra in the file format's standard node order")
    column = np.empty(10, dtype=np.int64)
    column[:4] = np.arange(4)
    column[4 + edge_of_slot] = 4 + np.arange(6)
    _LOG.warning("read_mesh: %s: 10-node cells store their mid-nodes in another order (slots "
                 "4-9 hold edges %s); reordered to the VTK order", file.name,
                 [f"{a}{b}" for a, b in _EDGES[edge_of_slot]])
    return cells[:, column]


def _orient(points: np.ndarray, cells: np.ndarray, file: Path, reorient: bool) -> np.ndarray:
    """Refuse degenerate cells; reorient (or refuse) negatively numbered ones."""
    p = points[cells[:, :4]]
    d1, d2, d3 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]
    volume6 = np.einsum("ij,ij->i", d1, np.cross(d2, d3))
    longest = np.linalg.norm(p[:, _EDGES[:, 1]] - p[:, _EDGES[:, 0]], axis=2).max(axis=1)
    degenerate = np.abs(volume6) / 6.0 <= _DEGENERATE_RATIO * longest**3
    if degenerate.any():
        first = int(np.flatnonzero(degenerate)[0])
        raise InputError(
            f"{file.name}: {int(degenerate.sum())} of {cells.shape[0]} tetrahedra are "
            f"degenerate (zero volume), e.g. cell {first} at {_where(p[first].mean(axis=0))}",
            hint="remesh the volume or remove the flat cells")
    negative = volume6 < 0.0
    count = int(negative.sum())
    if count == 0:
        return cells
    first = int(np.flatnonzero(negative)[0])
    if not reorient:
        raise InputError(
            f"{file.name}: {count} of {cells.shape[0]} tetrahedra are inverted (negative "
            f"orientation), e.g. cell {first} at {_where(p[first].mean(axis=0))}",
            hint="pass reorient=True to renumber them, or fix the exporter")
    flip = _FLIP_TET4 if cells.shape[1] == 4 else _FLIP_TET10
    cells = cells.copy()
    cells[negative] = cells[negative][:, flip]
    convention = (" (all of them: the MED/Salome numbering convention)"
                  if count == cells.shape[0] else "")
    _LOG.warning("read_mesh: %s: %d of %d tetrahedra had negative orientation%s; reoriented "
                 "(vertices 1 and 2 swapped)", file.name, count, cells.shape[0], convention)
    return cells


def _check_curved(mesh: TetMesh, file: Path) -> None:
    """Refuse 10-node cells whose Jacobian is non-positive somewhere (after reorienting)."""
    inverted = np.any(jacobian_determinants(mesh) <= 0.0, axis=1)
    if inverted.any():
        first = int(np.flatnonzero(inverted)[0])
        raise InputError(
            f"{file.name}: {int(inverted.sum())} of {mesh.num_cells} curved 10-node "
            f"tetrahedra are inverted (non-positive Jacobian), e.g. cell {first} at "
            f"{_where(mesh.centroids()[first])}",
            hint="straighten their edges (mid-nodes at edge midpoints) or remesh")


def _where(x: np.ndarray) -> str:
    """'(x, y, z) mm' with one decimal."""
    return f"({x[0]:.1f}, {x[1]:.1f}, {x[2]:.1f}) mm"


# ---------------------------------------------------------------------------------------------
# one solid piece: coincident nodes, disconnected pieces
# ---------------------------------------------------------------------------------------------


def coincident_nodes(points: npt.ArrayLike, tolerance_mm: float) -> npt.NDArray[np.int64]:
    """The node each node merges into: itself, or the lowest node within the tolerance.

    Nodes closer than ``tolerance_mm`` are grouped transitively (chains of near nodes form one
    group).

    Args:
        points: (n, 3) node coordinates, mm.
        tolerance_mm: Distance below which two nodes are the same point.

    Returns:
        (n,) int64: the lowest node index of each node's group (``out[i] == i`` for nodes
        that merge into nobody).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    xyz = np.asarray(points, dtype=np.float64)
    n = xyz.shape[0]
    pairs = cKDTree(xyz).query_pairs(r=tolerance_mm, output_type="ndarray")
    if pairs.shape[0] == 0:
        return np.arange(n, dtype=np.int64)
    graph = coo_matrix((np.ones(pairs.shape[0]), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    lowest = np.full(group.max() + 1, n, dtype=np.int64)
    np.minimum.at(lowest, group, np.arange(n, dtype=np.int64))
    return lowest[group]


def mesh_pieces(mesh: TetMesh) -> npt.NDArray[np.int64]:
    """Connected piece of every cell (cells sharing a node belong to one piece).

    Args:
        mesh: The mesh.

    Returns:
        (m,) int64 piece number per cell, 0 for the largest piece (most cells), then by size.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    cells = mesh.cells
    width = cells.shape[1]
    first = np.repeat(cells[:, 0], width - 1)
    rest = cells[:, 1:].ravel()
    graph = coo_matrix((np.ones(first.size), (first, rest)),
                       shape=(mesh.num_nodes, mesh.num_nodes))
    _, node_piece = connected_components(graph, directed=False)
    piece = node_piece[cells[:, 0]]
    _, relabel, sizes = np.unique(piece, return_inverse=True, return_counts=True)
    rank = np.empty(sizes.size, dtype=np.int64)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(sizes.size)
    return rank[relabel.ravel()]


def _piece_summary(pieces: npt.NDArray[np.int64]) -> str:
    """'3 pieces (12000, 11980 and 4 cells)'."""
    sizes = np.bincount(pieces)
    shown = [f"{int(v):,}" for v in sizes[:5]]
    more = f" and {sizes.size - 5} more" if sizes.size > 5 else ""
    listing = (", ".join(shown[:-1]) + " and " + shown[-1]) if len(shown) > 1 else shown[0]
    return f"{sizes.size} pieces ({listing}{more} cells)"


def _weld_tolerance(mesh: TetMesh) -> float:
    """1e-6 of the mesh's size, but at most 1% of its shortest corner edge, mm."""
    corners = mesh.points[mesh.vertex_cells()]
    edges = np.linalg.norm(corners[:, _EDGES[:, 1]] - corners[:, _EDGES[:, 0]], axis=2)
    diagonal = float(np.linalg.norm(np.ptp(mesh.points, axis=0)))
    return min(1e-6 * diagonal, 0.01 * float(edges.min()))


def require_one_piece(mesh: TetMesh, name: str = "mesh") -> tuple[TetMesh, list[str]]:
    """Make a user's mesh one solid piece, merging coincident nodes, or refuse it.

    Multi-region exports often write the nodes of a shared interface once per region: the
    regions then touch without sharing nodes, and the solver sees separate bodies (or a
    slit), which gives a plausible but wrong failure load. Nodes closer than 1e-6 of the
    mesh's size (at most 1% of its shortest edge) are merged when that makes the mesh one
    connected piece of valid cells (no cell with a repeated node, no face shared by three
    cells, no overlap: :func:`meshing.quality.topology_check`); the merge is reported in the
    returned messages (and logged). A mesh of several pieces with no coincident nodes to
    merge, or still several after merging, is refused: a piece that is not connected to the
    fixed end is a free body.

    Args:
        mesh: The mesh as read (:func:`read_mesh`).
        name: Name of the mesh in messages (its file name).

    Returns:
        ``(mesh, messages)``: the mesh (renumbered without the merged duplicates, cells in
        the same order, so per-cell arrays still match) and what was done, for the run
        record's warnings (empty when nothing was merged).

    Raises:
        InputError: The mesh is several disconnected pieces, or merging its coincident nodes
            would make cells invalid or leave several pieces.
    """
    target = coincident_nodes(mesh.points, _weld_tolerance(mesh))
    duplicates = int(np.count_nonzero(target != np.arange(mesh.num_nodes)))
    pieces = mesh_pieces(mesh)
    count = int(pieces.max()) + 1
    if duplicates == 0:
        if count > 1:
            raise InputError(
                f"{name}: the mesh is {_piece_summary(pieces)} that share no node: the "
                "pieces not joined to the fixed end are free bodies",
                hint="export the femur as one connected volume (shared nodes at region "
                "interfaces), or remove the stray pieces")
        return mesh, []
    used, inverse = np.unique(target[mesh.cells], return_inverse=True)
    welded = TetMesh(mesh.points[used], inverse.reshape(mesh.cells.shape), mesh.cell_tags)
    problem = topology_check(welded)
    after = mesh_pieces(welded)
    if problem is not None or after.max() > 0:
        why = (f"the merged mesh is not valid: {problem}" if problem is not None
               else f"the mesh is still {_piece_summary(after)}")
        raise InputError(
            f"{name}: the mesh has {duplicates:,} coincident duplicate node(s) "
            f"(within {_weld_tolerance(mesh):.2g} mm); merging them does not make one valid "
            f"solid: {why}",
            hint="export the femur as one connected, conforming volume mesh (shared nodes at "
            "region interfaces)")
    before = f"{_piece_summary(pieces)}" if count > 1 else "one piece with a slit"
    message = (f"mesh {name}: merged {duplicates:,} coincident duplicate node(s) (within "
               f"{_weld_tolerance(mesh):.2g} mm): the mesh was {before}, now one connected "
               "piece")
    _LOG.warning("read_mesh: %s", message)
    return welded, [message]


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def write_mesh(
    path: str | os.PathLike[str],
    mesh: TetMesh,
    cell_data: Mapping[str, npt.ArrayLike] | None = None,
    *,
    tag_names: Mapping[int, str] | None = None,
    msh_version: float = 4.1,
) -> Path:
    """Atomically write a tetrahedral mesh, its region tags and per-element arrays.

    The format follows the suffix (:data:`WRITE_SUFFIXES`). Tags are always written:
    ``cell_tags`` in VTK/XDMF, one physical group per tag in .msh, one ``*ELSET`` per tag
    in .inp (names from ``tag_names``, default :data:`meshing.volume.TAG_NAMES`, else
    ``tag<N>``). The file appears complete or not at all (an XDMF file's .h5 is moved into
    place first).

    Args:
        path: Output file.
        mesh: Mesh to write (4- or 10-node, VTK node order).
        cell_data: name -> (m,) or (m, k) per-cell arrays (E, density, ...). Not written to
            .inp (WARNING). The name ``cell_tags`` is reserved.
        tag_names: tag -> region name.
        msh_version: 4.1 or 2.2 for .msh.

    Returns:
        The path written.

    Raises:
        InputError: Unsupported suffix, a missing output folder, or cell arrays of the
            wrong length.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise InputError(f"unsupported output mesh format {out.suffix!r}: {out}",
                         hint=f"use one of {', '.join(WRITE_SUFFIXES)}")
    if not out.parent.is_dir():
        raise InputError(f"output folder does not exist: {out.parent}",
                         hint="create it first")
    arrays = _checked_arrays(mesh, cell_data)
    if suffix == ".msh":
        return write_msh(out, mesh, arrays, tag_names=tag_names, version=msh_version)
    if suffix == ".inp":
        if arrays:
            _LOG.warning("write_mesh: Abaqus decks hold no per-element arrays; not written: "
                         "%s", sorted(arrays))
        _write_inp(out, mesh, tag_names)
        return out
    _write_meshio(out, mesh, arrays)
    return out


def _checked_arrays(mesh: TetMesh, cell_data: Mapping[str, npt.ArrayLike] | None
                    ) -> dict[str, np.ndarray]:
    """Cell arrays checked against the cell count (the name cell_tags is reserved)."""
    arrays: dict[str, np.ndarray] = {}
    for name, values in (cell_data or {}).items():
        if name == "cell_tags":
            raise InputError("the cell array name 'cell_tags' is reserved for the region tags",
                             hint="put the tags in mesh.cell_tags, or rename the array")
        arr = np.asarray(values)
        if arr.ndim not in (1, 2) or arr.shape[0] != mesh.num_cells:
            raise InputError(f"cell array {name!r} has shape {arr.shape}, expected "
                             f"({mesh.num_cells},) or ({mesh.num_cells}, k)",
                             hint="pass one value (or row) per cell")
        arrays[str(name)] = arr
    return arrays


def _write_meshio(out: Path, mesh: TetMesh, arrays: Mapping[str, np.ndarray]) -> None:
    """VTU / VTK / XDMF through meshio, atomically."""
    import meshio

    cell_type = "tetra" if mesh.order == 1 else "tetra10"
    data = meshio.Mesh(
        mesh.points, [(cell_type, np.asarray(mesh.cells))],
        cell_data={"cell_tags": [np.asarray(mesh.cell_tags, dtype=np.int32)],
                   **{k: [np.asarray(v)] for k, v in arrays.items()}})
    suffix = out.suffix.lower()
    tmp_dir = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.stem}."))
    try:
        # Written under its final name in a private folder, so an XDMF file refers to its
        # .h5 by the right name; the companion file is moved first, the main file last.
        staged = tmp_dir / out.name
        if suffix == ".vtu":
            meshio.write(staged, data, file_format="vtu", compression="zlib")
        elif suffix == ".vtk":
            meshio.write(staged, data, file_format="vtk", binary=True)
        else:
            meshio.write(staged, data, file_format="xdmf")
            h5 = staged.with_suffix(".h5")
            if h5.is_file():
                os.replace(h5, out.with_suffix(".h5"))
        os.replace(staged, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    _LOG.info("write_mesh: %s (%d cells, arrays %s)", out, mesh.num_cells, sorted(arrays))


def _write_inp(out: Path, mesh: TetMesh, tag_names: Mapping[int, str] | None) -> None:
    """Abaqus/CalculiX deck: nodes, elements (ELSET EALL), one ELSET per tag."""
    names = {**TAG_NAMES, **dict(tag_names or {})}
    element = inp.element_type(mesh.order)  # C3D10 node order = VTK order
    text = [f"** osteofe mesh: {mesh.num_nodes} nodes, {mesh.num_cells} {element} "
            "elements, coordinates in mm\n",
            inp.node_block(mesh.points, inp.EXACT_FMT),
            inp.element_blocks(mesh.cells, mesh.order, np.zeros(mesh.num_cells, np.int64),
                               ["EALL"])]
    for tag in np.unique(mesh.cell_tags):
        name = names.get(int(tag), f"tag{int(tag)}").upper()
        text.append(f"*ELSET, ELSET={name}\n"
                    + inp.id_lines(np.flatnonzero(mesh.cell_tags == tag) + 1, _INP_PER_LINE))
    with atomic_path(out, suffix=".inp") as tmp:
        tmp.write_text("".join(text))
    _LOG.info("write_mesh: %s (%d %s elements, ELSETs per tag)", out, mesh.num_cells, element)

