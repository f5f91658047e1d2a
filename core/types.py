"""Array types shared by every stage (one row per entity, dtype in the name).

Also the two helpers every frozen record of arrays uses: read-only array fields
(:func:`freeze_arrays`) and JSON-plain copies (:func:`json_plain`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

__all__ = ["ArrayRecord", "BoolArray", "FloatArray", "IntArray", "freeze_arrays", "json_plain"]

#: float64 array (coordinates in mm, moduli in MPa, strains, ...).
FloatArray = npt.NDArray[np.float64]
#: int64 array (0-based node, cell and face indices).
IntArray = npt.NDArray[np.int64]
#: bool array (masks).
BoolArray = npt.NDArray[np.bool_]


def freeze_arrays(record: object, *names: str) -> None:
    """Make the named array fields of a frozen record read-only copies.

    Call it from ``__post_init__``: each field ``name`` is replaced by ``np.array(value)``
    (a copy, dtype kept or inferred) with ``writeable = False``, so neither the caller's array
    nor the record's can change the other.
    """
    for name in names:
        value = np.array(getattr(record, name), copy=True)
        value.flags.writeable = False
        object.__setattr__(record, name, value)


def json_plain(value: Any) -> Any:
    """A JSON-ready deep copy of ``value``.

    Mappings become dicts (keys as str); lists, tuples and arrays become lists; numpy scalars
    Python numbers; paths str; anything else is returned as it is.
    """
    if isinstance(value, Mapping):
        return {str(k): json_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


class ArrayRecord:
    """Base of a frozen dataclass record of numbers and arrays.

    The fields named in ``ARRAYS`` become read-only copies (:func:`freeze_arrays`);
    :meth:`to_dict` gives every field in order, JSON-plain.
    """

    ARRAYS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        freeze_arrays(self, *self.ARRAYS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (arrays as lists, a non-finite scalar as None)."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = json_plain(getattr(self, f.name))
            out[f.name] = None if isinstance(value, float) and not math.isfinite(value) \
                else value
        return out
