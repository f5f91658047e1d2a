"""The one Abaqus/CalculiX deck writer of the mesh part: nodes, elements, sets.

:mod:`meshing.meshio_io` (mesh export), :mod:`osteofe.mapping_tool` (CT-mapped materials)
and :mod:`fea.calculix` (solvable models) all write their ``*NODE``, ``*ELEMENT`` and set
lines with these functions, so that the three decks agree on numbering (node ``i`` is node
``i + 1``, cell ``j`` is element ``j + 1``), element types (C3D4; C3D10, whose node order is
VTK's: corners, then the edges 1-2, 2-3, 3-1, 1-4, 2-4, 3-4) and number formats.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt

from core.types import IntArray

__all__ = [
    "EXACT_FMT",
    "REAL_FMT",
    "element_blocks",
    "element_type",
    "format_rows",
    "id_lines",
    "node_block",
]

#: Real numbers for CalculiX: 13 significant digits, because ccx reads each number from a
#: field of at most 20 characters and "-1.234567890123e-05" (13 digits) is 19 long.
REAL_FMT = "%.13g"
#: Real numbers that read back bit-identical (17 digits), for decks read by other tools.
EXACT_FMT = "%.17g"


def element_type(order: int) -> str:
    """``"C3D4"`` for 4-node, ``"C3D10"`` for 10-node tetrahedra."""
    return "C3D4" if order == 1 else "C3D10"


def format_rows(rows: npt.NDArray[np.generic], fmt: str) -> str:
    """Rows formatted line by line with ``fmt`` (``numpy.savetxt`` into a string)."""
    if rows.shape[0] == 0:
        return ""
    buf = io.StringIO()
    np.savetxt(buf, rows, fmt=fmt)
    return buf.getvalue()


def id_lines(ids: npt.ArrayLike, per_line: int = 10) -> str:
    """Ids (already 1-based) as comma-separated data lines of at most ``per_line`` values."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    full = (ids.size // per_line) * per_line
    text = format_rows(ids[:full].reshape(-1, per_line), ", ".join(["%d"] * per_line))
    if full < ids.size:
        text += ", ".join(str(int(i)) for i in ids[full:]) + "\n"
    return text


def node_block(points: npt.ArrayLike, real_fmt: str = REAL_FMT, nset: str = "NALL") -> str:
    """``*NODE, NSET=<nset>`` and one ``id, x, y, z`` line per point (ids from 1).

    Args:
        points: (n, 3) coordinates, mm.
        real_fmt: printf format of a coordinate (:data:`REAL_FMT` or :data:`EXACT_FMT`).
        nset: Name of the set of all nodes.
    """
    pts = np.asarray(points, dtype=np.float64)
    rows = np.column_stack([np.arange(1, pts.shape[0] + 1), pts])
    return f"*NODE, NSET={nset}\n" + format_rows(rows, ", ".join(["%d"] + [real_fmt] * 3))


def element_blocks(cells: IntArray, order: int, group: IntArray, names: list[str]) -> str:
    """One ``*ELEMENT, TYPE=..., ELSET=<name>`` block per group, elements numbered ``j + 1``.

    Args:
        cells: (m, 4) or (m, 10) 0-based node indices per cell, VTK order.
        order: 1 or 2 (element type C3D4 or C3D10).
        group: (m,) 0-based group of each cell; groups are written in increasing order,
            the cells of one group in increasing cell order.
        names: Element set name of each group (``len(names)`` groups).

    Returns:
        The deck text.
    """
    cells = np.asarray(cells, dtype=np.int64)
    group = np.asarray(group, dtype=np.int64).reshape(-1)
    etype = element_type(order)
    sort = np.argsort(group, kind="stable")
    rows = np.column_stack([sort + 1, cells[sort] + 1])
    lines = np.asarray(format_rows(rows, ", ".join(["%d"] * rows.shape[1])).splitlines(),
                       dtype=object)
    starts = np.searchsorted(group[sort], np.arange(len(names)))
    headers = np.asarray([f"*ELEMENT, TYPE={etype}, ELSET={name}" for name in names],
                         dtype=object)
    return "\n".join(np.insert(lines, starts, headers).tolist()) + "\n"
