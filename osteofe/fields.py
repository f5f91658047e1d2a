"""Field output for ParaView (meshio adapter): VTU with point and cell data."""

from __future__ import annotations

from pathlib import Path

import meshio
import numpy as np

from core.atomic import atomic_path
from meshing.types import TetMesh

__all__ = ["write_vtu"]


def write_vtu(
    path: str | Path,
    mesh: TetMesh,
    point_data: dict[str, np.ndarray],
    cell_data: dict[str, np.ndarray],
) -> None:
    """Atomically write a mesh with fields as an XML VTU file (ParaView opens it).

    Args:
        path: Output path (.vtu).
        mesh: Tetrahedral mesh (4- or 10-node, VTK node order).
        point_data: name -> (n,) or (n, k) arrays per node.
        cell_data: name -> (m,) or (m, k) arrays per cell.
    """
    cell_type = "tetra" if mesh.order == 1 else "tetra10"
    out = meshio.Mesh(
        mesh.points,
        [(cell_type, mesh.cells)],
        point_data={k: np.asarray(v) for k, v in point_data.items()},
        cell_data={k: [np.asarray(v)] for k, v in cell_data.items()},
    )
    path = Path(path)
    with atomic_path(path, suffix=".vtu") as tmp:
        meshio.write(tmp, out, file_format="vtu", compression="zlib")
