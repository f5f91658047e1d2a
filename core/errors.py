"""Domain exceptions shared by every stage.

Each carries a one-line message naming the problem and a ``hint`` naming the fix; the CLI
catches :class:`OsteofeError` once and prints ``error: <message> (hint: <hint>)``.
"""

from __future__ import annotations

__all__ = ["ImageReadError", "InputError", "MeshQualityError", "MeshingError", "OsteofeError"]


class OsteofeError(Exception):
    """Base class of all expected, user-facing osteofe errors.

    Args:
        message: What is wrong, naming the offending file/value.
        hint: How to fix it.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class InputError(OsteofeError):
    """A user-supplied input (file, label, value) is missing, malformed or inconsistent."""


class ImageReadError(InputError):
    """An image file could not be read as a 3-D volume."""


class MeshingError(OsteofeError):
    """Surface extraction or volume meshing failed."""


class MeshQualityError(MeshingError):
    """The mesh has inverted or too badly shaped elements to be solved reliably."""
