"""Imaging, segmentation handling, the synthetic phantom, surfaces and tetrahedral meshing.

Knows nothing of dolfinx; library objects (gmsh, SimpleITK, VTK) stay inside adapter modules.
"""

from meshing.errors import ImageReadError, InputError, MeshingError, MeshQualityError, OsteofeError
from meshing.types import CTVolume, ImageGrid, LabelMap, SurfaceMesh, TetMesh

__all__ = [
    "CTVolume",
    "ImageGrid",
    "ImageReadError",
    "InputError",
    "LabelMap",
    "MeshQualityError",
    "MeshingError",
    "OsteofeError",
    "SurfaceMesh",
    "TetMesh",
]
