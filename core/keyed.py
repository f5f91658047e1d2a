"""Read-only tables of records by their key (citations, thresholds, table columns)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import attrgetter
from types import MappingProxyType
from typing import Any

__all__ = ["keyed"]


def keyed[T](*entries: T, key: Callable[[T], str] = attrgetter("key")) -> Mapping[str, T]:
    """A read-only mapping of ``entries`` by ``key(entry)`` (default: its ``key`` field).

    Args:
        entries: The records, in the order the table lists them.
        key: What a record is found by.

    Raises:
        ValueError: If two records have the same key (one would silently replace the other).
    """
    table: dict[str, Any] = {}
    for entry in entries:
        name = key(entry)
        if name in table:
            raise ValueError(f"two entries have the key {name!r}")
        table[name] = entry
    return MappingProxyType(table)
