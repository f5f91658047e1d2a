"""A module imported on its first use (for heavy libraries that only some runs need)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["LazyModule"]


class LazyModule:
    """Stands for a module; imports it when one of its attributes is first read.

    Why: a process that never reads an image (every MPI rank but the one preparing, a
    cohort's scheduler) then never pays the library's resident memory (SimpleITK: ~95 MB),
    which it could not give back. Type checkers see the real module (import it under
    ``TYPE_CHECKING`` and bind this only at run time).

    Args:
        name: The module's import name, e.g. ``"SimpleITK"``.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name!r} ({state})>"
