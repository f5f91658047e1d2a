"""Shared base of every stage: domain errors, literature citations, atomic file writes.

``core`` imports nothing of osteofe's stage packages (meshing, material, fea, risk, osteofe):
each of them may import it.
"""

from core.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from core.citation import Citation
from core.errors import ImageReadError, InputError, MeshingError, MeshQualityError, OsteofeError

__all__ = [
    "Citation",
    "ImageReadError",
    "InputError",
    "MeshQualityError",
    "MeshingError",
    "OsteofeError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
]
